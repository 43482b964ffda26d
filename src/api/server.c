/* libmicrohttpd glue: one thread per connection, so handlers may block on a sandbox. */
#include "api/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

struct sbx_api {
    sbx_core_t *core;
    struct MHD_Daemon *mhd;
    char prefix[128]; /* "/sandbox" */
};

/* Every surface served on the listener, matched in this order. */
static const sbx_route_table_t *const tables[] = {
    &sbx_rest_images_table, &sbx_v1_images_table, /* before rest.c's GET images/:name */
    &sbx_rest_table,        &sbx_rest_exec_table, &sbx_v1_table,
    &sbx_queue_table,       &sbx_fn_table,        &sbx_rest_files_table,
};

typedef struct {
    char *body;
    size_t len, cap;
    bool too_large;
    /* A streamed upload (a route with upload ops). */
    const sbx_route_t *route;
    void *ustate;
    bool ubegun;    /* begin succeeded and neither finish nor abort ran yet */
    bool ufailed;   /* a chunk failed: the rest is discarded, uerr is answered */
    bool responded; /* an answer is queued already */
    sbx_err_t uerr;
} conn_ctx_t;

sbx_core_t *sbx_api_core(sbx_api_t *api)
{
    return api->core;
}

int sbx_api_status_for(const sbx_err_t *err)
{
    switch (err->kind) {
    case SBX_E_INVALID: return 400;
    case SBX_E_NOT_FOUND: return 404;
    case SBX_E_CONFLICT: return 409;
    case SBX_E_FORBIDDEN: return 403;
    case SBX_E_TOO_LARGE: return 413;
    case SBX_E_LIMIT: return 503;
    case SBX_E_UNAVAILABLE: return 503;
    case SBX_E_TIMEOUT: return 504;
    case SBX_E_NONE:
    case SBX_E_INTERNAL: break;
    }
    return 500;
}

const char *sbx_api_error_type(const sbx_err_t *err)
{
    static const struct {
        const char *code, *type;
    } by_code[] = {
        {"S001", "validation"}, {"S002", "validation"}, {"S003", "validation"}, {"S004", "validation"},
        {"S100", "config"},     {"S101", "internal"},   {"S102", "transient"},  {"S200", "execution"},
        {"S300", "platform"},   {"S400", "config"},     {"S201", "execution"},  {"S202", "execution"},
        {"S203", "execution"},  {"S204", "execution"},  {"S205", "execution"},  {"S206", "execution"},
    };
    for (size_t i = 0; i < SBX_ARRAY_LEN(by_code); i++)
        if (!strcmp(err->code, by_code[i].code))
            return by_code[i].type;
    switch (err->kind) {
    case SBX_E_INVALID:
    case SBX_E_NOT_FOUND:
    case SBX_E_CONFLICT:
    case SBX_E_TOO_LARGE: return "validation";
    case SBX_E_FORBIDDEN:
    case SBX_E_LIMIT: return "config";
    case SBX_E_UNAVAILABLE: return "transient";
    case SBX_E_TIMEOUT: return "execution";
    default: return "internal";
    }
}

static const char *v1_code(int status)
{
    switch (status) {
    case 400: return "BAD_REQUEST";
    case 401: return "UNAUTHORIZED";
    case 403: return "FORBIDDEN";
    case 413: return "PAYLOAD_TOO_LARGE";
    case 404: return "NOT_FOUND";
    case 408:
    case 504: return "TIMEOUT";
    case 409: return "CONFLICT";
    default: return "INTERNAL_ERROR";
    }
}

static json_t *error_body(sbx_dialect_t d, int status, const sbx_err_t *err)
{
    if (d == SBX_DIALECT_V1)
        return json_pack("{s:s, s:s}", "code", v1_code(status), "message", err->msg);
    char upper[24];
    const char *code = err->code;
    if (!code[0]) {
        const char *k = sbx_err_kind_name(err->kind);
        size_t i = 0;
        for (; k[i] && i < sizeof upper - 1; i++)
            upper[i] = (char)(k[i] >= 'a' && k[i] <= 'z' ? k[i] - 32 : k[i]);
        upper[i] = '\0';
        code = upper;
    }
    return json_pack("{s:s, s:s, s:s, s:s}", "error", err->msg, "code", code, "type", sbx_api_error_type(err),
                     "message", err->msg);
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!text)
        text = xstrdup("{}");
    size_t len = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    sbx_http_resp_t *r = cls;
    long n = r->stream_fn(r->stream_cls, pos, buf, max);
    if (n == SBX_STREAM_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return (ssize_t)n;
}

static void stream_done(void *cls)
{
    sbx_http_resp_t *r = cls;
    if (r->stream_free)
        r->stream_free(r->stream_cls);
    free(r);
}

/* A raw or streamed body, with the handler's content type and extra headers. */
static enum MHD_Result send_body(struct MHD_Connection *c, sbx_http_resp_t *resp)
{
    struct MHD_Response *r;
    if (resp->stream_fn) {
        sbx_http_resp_t *copy = xmalloc(sizeof *copy);
        *copy = *resp;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_reader, copy, stream_done);
    } else {
        r = MHD_create_response_from_buffer(resp->raw_len, resp->raw, MHD_RESPMEM_MUST_FREE);
    }
    MHD_add_response_header(r, "Content-Type", resp->content_type ? resp->content_type : "application/json");
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    for (int i = 0; i < 4 && resp->header_name[i]; i++)
        MHD_add_response_header(r, resp->header_name[i], resp->header_value[i]);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, sbx_dialect_t d, int status, const sbx_err_t *err)
{
    return send_json(c, status, error_body(d, status, err));
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    if (key)
        json_object_set_new((json_t *)cls, key, json_string(value ? value : ""));
    return MHD_YES;
}

/* Splits a path into at most `max` segments (modifies buf). */
static int split_path(char *buf, char **seg, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (n == max)
            return -1;
        seg[n++] = s;
    }
    return n;
}

/* Finds the route for a path.  Returns the route, or NULL with *path_known set when the
 * path exists under another method. */
static const sbx_route_t *match_route(sbx_api_t *api, const char *method, const char *path,
                                      sbx_http_req_t *req, bool *path_known, char *pathbuf,
                                      size_t pathbuf_len)
{
    char *seg[16];
    snprintf(pathbuf, pathbuf_len, "%s", path);
    int n = split_path(pathbuf, seg, 16);
    if (n < 0)
        return NULL;
    const char *prefix = api->prefix + 1; /* without the leading slash */
    for (size_t t = 0; t < SBX_ARRAY_LEN(tables); t++) {
        for (size_t r = 0; r < tables[t]->n; r++) {
            const sbx_route_t *rt = &tables[t]->routes[r];
            char pat[256];
            snprintf(pat, sizeof pat, "%s", rt->pattern);
            char *pseg[16];
            int pn = split_path(pat, pseg, 16);
            if (pn != n)
                continue;
            int np = 0;
            bool ok = true;
            for (int i = 0; i < n && ok; i++) {
                if (!strcmp(pseg[i], "{prefix}"))
                    ok = !strcmp(seg[i], prefix);
                else if (pseg[i][0] == ':')
                    req->path_params[np < 4 ? np++ : 3] = seg[i];
                else
                    ok = !strcmp(pseg[i], seg[i]);
            }
            if (!ok)
                continue;
            if (strcmp(rt->method, method) != 0) {
                *path_known = true;
                continue;
            }
            req->n_path_params = np;
            /* Path parameter names, in pattern order, go into the merged params. */
            int k = 0;
            snprintf(pat, sizeof pat, "%s", rt->pattern);
            pn = split_path(pat, pseg, 16);
            for (int i = 0; i < pn; i++)
                if (pseg[i][0] == ':' && k < np)
                    json_object_set_new(req->params, pseg[i] + 1, json_string(req->path_params[k++]));
            return rt;
        }
    }
    return NULL;
}

static bool check_auth(struct MHD_Connection *c, const char *token, sbx_dialect_t d)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    sbx_err_t err = SBX_ERR_INIT;
    if (!h) {
        sbx_fail(&err, SBX_E_INVALID, "UNAUTHORIZED", "Missing authorization header");
        send_error(c, d, 401, &err);
        return false;
    }
    const char *v = !strncmp(h, "Bearer ", 7) ? h + 7 : h;
    if (!sbx_consttime_equal(v, token)) {
        sbx_fail(&err, SBX_E_INVALID, "FORBIDDEN", "Invalid token");
        send_error(c, d, d == SBX_DIALECT_V1 ? 401 : 403, &err);
        return false;
    }
    return true;
}

static void fill_request_meta(struct MHD_Connection *c, sbx_http_req_t *req)
{
    req->content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    int64_t n;
    req->content_length = cl && sbx_parse_i64(cl, &n) == 0 && n >= 0 ? (uint64_t)n : UINT64_MAX;
}

static enum MHD_Result dispatch(sbx_api_t *api, struct MHD_Connection *c, const char *url, const char *method,
                                conn_ctx_t *ctx)
{
    sbx_http_req_t req = {
        .method = method, .path = url, .body = ctx->body ? ctx->body : "", .body_len = ctx->len};
    sbx_err_t err = SBX_ERR_INIT;
    req.dialect = !strncmp(url, "/v1/", 4) || !strcmp(url, "/v1") ? SBX_DIALECT_V1 : SBX_DIALECT_REST;
    req.query = json_object();
    req.params = json_object();
    char pathbuf[2048];
    bool path_known = false;
    enum MHD_Result ret;

    if (!strcmp(method, "OPTIONS")) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "*");
        ret = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        goto done;
    }
    const sbx_route_t *rt = match_route(api, method, url, &req, &path_known, pathbuf, sizeof pathbuf);
    if (!rt) {
        if (path_known) {
            sbx_fail(&err, SBX_E_INVALID, "METHOD_NOT_ALLOWED", "method %s not allowed on %s", method, url);
            ret = send_error(c, req.dialect, 405, &err);
        } else {
            sbx_fail(&err, SBX_E_NOT_FOUND, "NOT_FOUND", "route not found: %s %s", method, url);
            ret = send_error(c, req.dialect, 404, &err);
        }
        goto done;
    }
    req.dialect = rt->dialect;
    const char *token = sbx_core_config(api->core)->auth_token;
    if (!rt->open && token && *token && !check_auth(c, token, req.dialect)) {
        ret = MHD_YES;
        goto done;
    }
    if (ctx->too_large) {
        sbx_fail(&err, SBX_E_TOO_LARGE, "S001", "request body exceeds %u bytes", SBX_API_MAX_BODY);
        ret = send_error(c, req.dialect, 413, &err);
        goto done;
    }
    fill_request_meta(c, &req);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, req.query);
    /* Merge order of the reference: query, then body keys, then path params. */
    json_t *path_params = json_deep_copy(req.params);
    json_object_update(req.params, req.query);
    if (ctx->len > 0) {
        json_error_t jerr;
        json_t *body = json_loadb(ctx->body, ctx->len, JSON_REJECT_DUPLICATES, &jerr);
        if (!body) {
            json_decref(path_params);
            sbx_fail(&err, SBX_E_INVALID, "S001", "malformed JSON body: %s (line %d, column %d)", jerr.text,
                     jerr.line, jerr.column);
            ret = send_error(c, req.dialect, 400, &err);
            goto done;
        }
        if (!json_is_object(body)) {
            json_decref(body);
            json_decref(path_params);
            sbx_fail(&err, SBX_E_INVALID, "S001", "the JSON body must be an object");
            ret = send_error(c, req.dialect, 400, &err);
            goto done;
        }
        req.body_json = body;
        json_object_update(req.params, body);
    }
    json_object_update(req.params, path_params);
    json_decref(path_params);

    sbx_http_resp_t resp = {.status = 200};
    if (rt->fn(api, &req, &resp, &err) < 0) {
        json_decref(resp.json);
        free(resp.raw);
        if (resp.stream_free)
            resp.stream_free(resp.stream_cls);
        int status = sbx_api_status_for(&err);
        if (status >= 500 && err.kind != SBX_E_LIMIT && err.kind != SBX_E_UNAVAILABLE)
            log_error("%s %s: %s", method, url, err.msg);
        ret = send_error(c, req.dialect, status, &err);
    } else if (resp.status == 204) {
        json_decref(resp.json);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        ret = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
    } else if (resp.stream_fn || resp.raw) {
        json_decref(resp.json);
        ret = send_body(c, &resp);
    } else {
        ret = send_json(c, resp.status, resp.json ? resp.json : json_object());
    }
done:
    json_decref(req.query);
    json_decref(req.params);
    json_decref(req.body_json);
    return ret;
}

static enum MHD_Result answer(struct MHD_Connection *c, sbx_dialect_t d, sbx_http_resp_t *resp)
{
    if (resp->stream_fn || resp->raw) {
        json_decref(resp->json);
        return send_body(c, resp);
    }
    if (resp->status == 204) {
        json_decref(resp->json);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        return ret;
    }
    return send_json(c, resp->status, resp->json ? resp->json : json_object());
}

static enum MHD_Result answer_error(struct MHD_Connection *c, sbx_dialect_t d, const char *method,
                                    const char *url, const sbx_err_t *err)
{
    int status = sbx_api_status_for(err);
    if (status >= 500 && err->kind != SBX_E_LIMIT && err->kind != SBX_E_UNAVAILABLE)
        log_error("%s %s: %s", method, url, err->msg);
    return send_error(c, d, status, err);
}

/* The first call of a streamed upload: authenticate, then let the route accept or refuse
 * the body before any of it is read. */
static enum MHD_Result upload_begin(sbx_api_t *api, struct MHD_Connection *c, const char *url,
                                    const char *method, conn_ctx_t *ctx, sbx_http_req_t *req)
{
    const sbx_route_t *rt = ctx->route;
    const char *token = sbx_core_config(api->core)->auth_token;
    if (!rt->open && token && *token && !check_auth(c, token, rt->dialect)) {
        ctx->responded = true;
        return MHD_YES;
    }
    req->dialect = rt->dialect;
    fill_request_meta(c, req);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, req->query);
    json_t *path_params = json_deep_copy(req->params);
    json_object_update(req->params, req->query);
    json_object_update(req->params, path_params);
    json_decref(path_params);
    sbx_err_t err = SBX_ERR_INIT;
    if (rt->upload->begin(api, req, &ctx->ustate, &err) < 0) {
        ctx->responded = true;
        return answer_error(c, rt->dialect, method, url, &err);
    }
    ctx->ubegun = true;
    return MHD_YES;
}

static enum MHD_Result upload_step(struct MHD_Connection *c, const char *url, const char *method,
                                   conn_ctx_t *ctx, const char *data, size_t *size)
{
    const sbx_route_t *rt = ctx->route;
    if (*size) {
        if (ctx->ubegun && !ctx->ufailed && rt->upload->chunk(ctx->ustate, data, *size, &ctx->uerr) < 0)
            ctx->ufailed = true;
        *size = 0;
        return MHD_YES;
    }
    if (ctx->responded || !ctx->ubegun)
        return MHD_YES;
    ctx->ubegun = false;
    ctx->responded = true;
    if (ctx->ufailed) {
        rt->upload->abort(ctx->ustate);
        return answer_error(c, rt->dialect, method, url, &ctx->uerr);
    }
    sbx_http_resp_t resp = {.status = 200};
    sbx_err_t err = SBX_ERR_INIT;
    if (rt->upload->finish(ctx->ustate, &resp, &err) < 0) {
        json_decref(resp.json);
        return answer_error(c, rt->dialect, method, url, &err);
    }
    return answer(c, rt->dialect, &resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    sbx_api_t *api = cls;
    conn_ctx_t *ctx = *con_cls;
    if (!ctx) {
        ctx = xcalloc(1, sizeof(conn_ctx_t));
        *con_cls = ctx;
        /* Routes that stream their body are known from the first call on. */
        sbx_http_req_t req = {.method = method, .path = url, .params = json_object(), .query = json_object()};
        char pathbuf[2048];
        bool known = false;
        const sbx_route_t *rt = match_route(api, method, url, &req, &known, pathbuf, sizeof pathbuf);
        enum MHD_Result ret = MHD_YES;
        if (rt && rt->upload) {
            ctx->route = rt;
            ret = upload_begin(api, c, url, method, ctx, &req);
        }
        json_decref(req.params);
        json_decref(req.query);
        return ret;
    }
    if (ctx->route)
        return upload_step(c, url, method, ctx, upload_data, upload_data_size);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (ctx->too_large || ctx->len + n > SBX_API_MAX_BODY) {
            ctx->too_large = true;
            return MHD_YES;
        }
        if (ctx->len + n + 1 > ctx->cap) {
            ctx->cap = (ctx->len + n + 1) * 2;
            if (ctx->cap > SBX_API_MAX_BODY + 1)
                ctx->cap = SBX_API_MAX_BODY + 1;
            ctx->body = xrealloc(ctx->body, ctx->cap);
        }
        memcpy(ctx->body + ctx->len, upload_data, n);
        ctx->len += n;
        ctx->body[ctx->len] = '\0';
        return MHD_YES;
    }
    return dispatch(api, c, url, method, ctx);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode t)
{
    conn_ctx_t *ctx = *con_cls;
    if (ctx) {
        if (ctx->ubegun)
            ctx->route->upload->abort(ctx->ustate);
        free(ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    log_warn("http: %s", buf);
}

sbx_api_t *sbx_api_start(sbx_core_t *core, sbx_err_t *err)
{
    const sbx_config_t *cfg = sbx_core_config(core);
    sbx_api_t *api = xcalloc(1, sizeof *api);
    api->core = core;
    snprintf(api->prefix, sizeof api->prefix, "/%s", cfg->api_prefix);

    struct sockaddr_storage ss = {0};
    socklen_t sl;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    unsigned int flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, cfg->listen_host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)cfg->listen_port);
        sl = sizeof *in4;
    } else if (inet_pton(AF_INET6, cfg->listen_host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)cfg->listen_port);
        sl = sizeof *in6;
        flags |= MHD_USE_IPv6;
    } else {
        free(api);
        sbx_fail(err, SBX_E_INVALID, NULL, "listen address must be a numeric IPv4 or IPv6 address: %s",
                 cfg->listen_host);
        return NULL;
    }
    (void)sl;
    api->mhd = MHD_start_daemon(
        flags, (uint16_t)cfg->listen_port, NULL, NULL, on_request, api, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_LIMIT, 1024U, MHD_OPTION_CONNECTION_TIMEOUT, 300U, MHD_OPTION_END);
    if (!api->mhd) {
        free(api);
        sbx_fail(err, SBX_E_INTERNAL, NULL, "cannot listen on %s:%d (address in use or not permitted)",
                 cfg->listen_host, cfg->listen_port);
        return NULL;
    }
    return api;
}

void sbx_api_quiesce(sbx_api_t *api)
{
    if (api && api->mhd) {
        int fd = MHD_quiesce_daemon(api->mhd);
        if (fd >= 0)
            close(fd);
    }
}

void sbx_api_stop(sbx_api_t *api)
{
    if (!api)
        return;
    if (api->mhd)
        MHD_stop_daemon(api->mhd);
    free(api);
}
