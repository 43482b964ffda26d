/* A small JSON-over-HTTP client for talking to sandboxd, built on libcurl and jansson.
 *
 * Every request carries `Content-Type: application/json` and, when a token is set,
 * `Authorization: Bearer <token>`.  Requests are independent easy handles, so different
 * threads may issue requests on the same client concurrently once sbx_http_global_init()
 * has run. */
#ifndef SBX_CLI_HTTP_H
#define SBX_CLI_HTTP_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>

#include "common/err.h"

typedef struct {
    char *base_url; /* owned; no trailing slash */
    char *token;    /* owned; NULL when unauthenticated */
    /* Optional cancellation: a request in flight is abandoned once *cancel reaches
     * cancel_after (0 disables).  The counter is bumped by signal handlers, or by another
     * thread with __atomic_store_n(). */
    volatile sig_atomic_t *cancel;
    int cancel_after;
    long timeout_ms; /* whole-request limit; 0 = none (exec and create can be slow) */
} sbx_http_t;

/* What a request that reached the daemon returned. */
typedef struct {
    long status;  /* HTTP status */
    json_t *body; /* parsed JSON body (owned), NULL if empty or not JSON */
} sbx_http_resp_t;

enum {
    SBX_HTTP_ENET = -1,    /* no HTTP answer: err says why (kind UNAVAILABLE) */
    SBX_HTTP_ECANCEL = -2, /* abandoned because of *cancel */
};

/* Initialises libcurl; call once from the main thread before any other thread starts. */
void sbx_http_global_init(void);

/* Sends `method` to base_url + `path` with `body` (borrowed, may be NULL: no body).
 * Returns 0 with *resp filled for any HTTP answer, including errors, or SBX_HTTP_ENET /
 * SBX_HTTP_ECANCEL.  The caller releases resp->body with sbx_http_resp_release(). */
int sbx_http_request(const sbx_http_t *c, const char *method, const char *path, json_t *body,
                     sbx_http_resp_t *resp, sbx_err_t *err);

void sbx_http_resp_release(sbx_http_resp_t *resp);

/* Where a streamed answer goes.  Both callbacks run on the calling thread, inside
 * sbx_http_stream(). */
typedef struct {
    /* Called for each header of the answer, name and value with surrounding blanks
     * removed (borrowed for the call).  May be NULL. */
    void (*on_header)(void *ud, const char *name, const char *value);
    /* Called with the body of a 2xx answer piece by piece, as it arrives.  Returns true
     * to keep reading, false to end the request there (which is not an error). */
    bool (*on_data)(void *ud, const char *data, size_t len);
    void *ud;
} sbx_http_sink_t;

/* Like sbx_http_request(), but the body of a 2xx answer is handed to `sink` as it
 * arrives instead of being collected (resp->body stays NULL then); the body of any other
 * answer is collected and parsed as usual.  `accept` is the Accept header to send.
 * Returns SBX_HTTP_ENET also when the connection breaks in the middle of the body; then
 * resp->status already holds the answer's status. */
int sbx_http_stream(const sbx_http_t *c, const char *method, const char *path, json_t *body,
                    const char *accept, const sbx_http_sink_t *sink, sbx_http_resp_t *resp, sbx_err_t *err);

/* Where the body of an upload comes from: read() fills buf with up to max bytes and
 * returns the count, 0 at the end, or -1 to abandon the request.  It runs on the calling
 * thread, inside sbx_http_upload(). */
typedef struct {
    long (*read)(void *ud, char *buf, size_t max);
    void *ud;
    long long size; /* the body's length when known (Content-Length), else -1 (chunked) */
} sbx_http_source_t;

/* Like sbx_http_stream(), with a raw body (Content-Type: application/octet-stream) read
 * from `source` piece by piece, so a body of any size takes constant memory.  `sink` may
 * be NULL to collect the answer as JSON.  A source that fails makes the request fail with
 * SBX_HTTP_ENET (err says "upload abandoned"). */
int sbx_http_upload(const sbx_http_t *c, const char *method, const char *path,
                    const sbx_http_source_t *source, const sbx_http_sink_t *sink, sbx_http_resp_t *resp,
                    sbx_err_t *err);

/* Returns a newly allocated percent-encoded copy of `s`, safe as one path segment. */
char *sbx_http_escape(const char *s);

/* Extracts the error message and code from a daemon error body.  Both the flat shape
 * {"error":msg,"code":C,"message":msg} and the nested {"error":{"code","message"}} are
 * understood.  *code is "" when none; the pointers borrow from `body`. */
void sbx_http_error_info(json_t *body, long status, char *msgbuf, size_t msglen, const char **code);

#endif
