/* The HTTP front end: libmicrohttpd glue, routing, auth, request parsing and error
 * rendering.  One listener serves every API surface; each surface registers its routes. */
#ifndef SBX_API_SERVER_H
#define SBX_API_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "core/core.h"

typedef struct sbx_api sbx_api_t;

/* Largest request body accepted (413 beyond). */
#define SBX_API_MAX_BODY (64u << 20)

typedef enum { SBX_DIALECT_REST, SBX_DIALECT_V1 } sbx_dialect_t;

/* One request, as handlers see it. */
typedef struct {
    const char *method;
    const char *path;
    sbx_dialect_t dialect;
    const char *body; /* raw body, NUL-terminated (may contain NULs) */
    size_t body_len;
    json_t *body_json; /* the parsed body when it is a JSON object, else NULL */
    json_t *query;     /* query arguments, string values */
    json_t *params;    /* merged: query, then body keys, then path params */
    const char *path_params[4];
    int n_path_params;
    const char *content_type; /* the request's Content-Type header, or NULL */
    uint64_t content_length;  /* the declared body size, or UINT64_MAX when unknown (chunked) */
} sbx_http_req_t;

/* Produces a streamed body: fills buf with up to max bytes and returns the count, or
 * SBX_STREAM_END when the body is complete, or SBX_STREAM_ERROR to abort the connection.
 * It runs on the connection's own thread and may block. */
#define SBX_STREAM_END (-1)
#define SBX_STREAM_ERROR (-2)
typedef long (*sbx_stream_fn)(void *cls, uint64_t pos, char *buf, size_t max);
typedef void (*sbx_stream_free_fn)(void *cls);

/* A handler's answer: a JSON value (owned) with a status, or raw bytes, or a stream. */
typedef struct {
    int status;
    json_t *json;
    /* Raw body (owned, freed with free()) used instead of json when set. */
    char *raw;
    size_t raw_len;
    /* Streamed body used instead of json when stream_fn is set; stream_free runs when the
     * response is done or the client went away. */
    sbx_stream_fn stream_fn;
    void *stream_cls;
    sbx_stream_free_fn stream_free;
    const char *content_type;   /* default application/json */
    const char *header_name[4]; /* extra headers (static or owned by stream_cls) */
    const char *header_value[4];
} sbx_http_resp_t;

typedef int (*sbx_route_fn)(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err);

/* A route that consumes its request body as it arrives (raw uploads of any size), instead
 * of having it buffered (SBX_API_MAX_BODY) and parsed as JSON.  The request given to begin
 * has query and path parameters but no body; begin may refuse (its error is answered at
 * once and the rest of the body is not read).  chunk is called for each piece of the body;
 * after a chunk error the rest is discarded and that error answered.  finish fills the
 * response once the body is complete.  abort runs instead of finish when the request ends
 * early (client gone, an error); exactly one of finish/abort runs after a successful begin. */
typedef struct {
    int (*begin)(sbx_api_t *api, sbx_http_req_t *req, void **state, sbx_err_t *err);
    int (*chunk)(void *state, const char *data, size_t len, sbx_err_t *err);
    int (*finish)(void *state, sbx_http_resp_t *resp, sbx_err_t *err);
    void (*abort)(void *state);
} sbx_upload_ops_t;

typedef struct {
    const char *method;
    const char *pattern; /* segments, ":x" matches one segment; "{prefix}" is the REST prefix */
    sbx_route_fn fn;
    bool open; /* true: no auth (health) */
    sbx_dialect_t dialect;
    const sbx_upload_ops_t *upload; /* set: the body is streamed to these (fn is unused) */
} sbx_route_t;

/* Starts listening.  Borrows core for its whole life. */
sbx_api_t *sbx_api_start(sbx_core_t *core, sbx_err_t *err);
/* Stops accepting new connections (in-flight requests continue). */
void sbx_api_quiesce(sbx_api_t *api);
/* Waits for in-flight requests and frees everything. */
void sbx_api_stop(sbx_api_t *api);

sbx_core_t *sbx_api_core(sbx_api_t *api);

/* The guide's error category (validation, config, internal, transient, execution,
 * platform) of an error's S-code, or one derived from its kind. */
const char *sbx_api_error_type(const sbx_err_t *err);

/* Maps an error to its HTTP status. */
int sbx_api_status_for(const sbx_err_t *err);

/* A surface's routes; server.c lists every table it serves. */
typedef struct {
    const sbx_route_t *routes;
    size_t n;
} sbx_route_table_t;

extern const sbx_route_table_t sbx_rest_table;      /* rest.c: /sandbox lifecycle, images, metrics */
extern const sbx_route_table_t sbx_rest_exec_table; /* rest_exec.c: exec, stream, background, signals */
extern const sbx_route_table_t sbx_v1_table;        /* v1.c: /v1 lifecycle and commands */
extern const sbx_route_table_t sbx_queue_table;     /* rest_queue.c: /sandbox job queue */
extern const sbx_route_table_t sbx_fn_table;        /* functions.c: POST /functions/<function_id> */
extern const sbx_route_table_t sbx_rest_images_table, sbx_v1_images_table; /* rest_images.c, v1_images.c */
extern const sbx_route_table_t sbx_rest_files_table; /* rest_files.c: /sandbox files, raw streams */

#endif
