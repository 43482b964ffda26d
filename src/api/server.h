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
} sbx_http_req_t;

/* A handler's answer: a JSON value (owned) with a status. */
typedef struct {
    int status;
    json_t *json;
} sbx_http_resp_t;

typedef int (*sbx_route_fn)(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err);

typedef struct {
    const char *method;
    const char *pattern; /* segments, ":x" matches one segment; "{prefix}" is the REST prefix */
    sbx_route_fn fn;
    bool open; /* true: no auth (health) */
    sbx_dialect_t dialect;
} sbx_route_t;

/* Starts listening.  Borrows core for its whole life. */
sbx_api_t *sbx_api_start(sbx_core_t *core, sbx_err_t *err);
/* Stops accepting new connections (in-flight requests continue). */
void sbx_api_quiesce(sbx_api_t *api);
/* Waits for in-flight requests and frees everything. */
void sbx_api_stop(sbx_api_t *api);

sbx_core_t *sbx_api_core(sbx_api_t *api);

/* Maps an error to its HTTP status. */
int sbx_api_status_for(const sbx_err_t *err);

/* The routes of each surface (rest.c). */
extern const sbx_route_t sbx_rest_routes[];
extern const size_t sbx_rest_nroutes;

#endif
