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

#include "common/err.h"

typedef struct {
    char *base_url; /* owned; no trailing slash */
    char *token;    /* owned; NULL when unauthenticated */
    /* Optional cancellation: a request in flight is abandoned once *cancel reaches
     * cancel_after (0 disables).  The counter is bumped by signal handlers. */
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

/* Returns a newly allocated percent-encoded copy of `s`, safe as one path segment. */
char *sbx_http_escape(const char *s);

/* Extracts the error message and code from a daemon error body.  Both the flat shape
 * {"error":msg,"code":C,"message":msg} and the nested {"error":{"code","message"}} are
 * understood.  *code is "" when none; the pointers borrow from `body`. */
void sbx_http_error_info(json_t *body, long status, char *msgbuf, size_t msglen, const char **code);

#endif
