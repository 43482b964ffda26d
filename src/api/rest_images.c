/* /sandbox image routes: pull (blocking, or streaming per-layer progress), import (the raw
 * body is an image archive), list, inspect, remove and garbage-collect OCI images.
 * References hold '/' and ':', so they travel in the body or the query (?image=), not in
 * a path segment. */
#include "api/rest_images.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "api/params.h"
#include "common/util.h"
#include "image/import.h"

static bool names_image(const sbx_config_t *cfg, const char *image, const char *canon)
{
    sbx_oci_ref_t r;
    const sbx_custom_image_t *c = sbx_config_custom_image(cfg, image);
    const char *ref = c ? c->ref : image;
    return ref[0] != '/' && sbx_oci_ref_parse(ref, &r, NULL) == 0 && !strcmp(r.canon, canon);
}

bool sbx_api_image_in_use(sbx_api_t *api, const char *canon)
{
    sbx_core_t *core = sbx_api_core(api);
    sbx_sandbox_rec_t *v = NULL;
    size_t n = 0;
    sbx_err_t e = SBX_ERR_INIT;
    if (sbx_core_list(core, &v, &n, &e) < 0)
        return true; /* fail safe: refuse the delete */
    bool used = false;
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i].status ? v[i].status : "";
        if ((!strcmp(s, "running") || !strcmp(s, "creating")) && v[i].image &&
            names_image(sbx_core_config(core), v[i].image, canon))
            used = true;
        sbx_sandbox_rec_release(&v[i]);
    }
    free(v);
    return used;
}

int sbx_api_image_pull(sbx_api_t *api, const char *image, sbx_image_info_t *out, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    sbx_registry_opts_t reg;
    sbx_config_registry_opts(sbx_core_config(core), &reg);
    return sbx_image_pull(sbx_core_images(core), image, &reg, NULL, NULL, out, err);
}

int sbx_api_image_remove(sbx_api_t *api, const char *name, bool force, sbx_err_t *err)
{
    sbx_image_store_t *st = sbx_core_images(sbx_api_core(api));
    sbx_image_info_t info;
    if (sbx_image_inspect(st, name, &info, err) < 0)
        return -1;
    int rc = 0;
    if (!force && sbx_api_image_in_use(api, info.ref))
        rc = sbx_fail(err, SBX_E_CONFLICT, NULL,
                      "image %s is in use by a running sandbox (use force to remove it)", info.ref);
    else
        rc = sbx_image_remove(st, info.ref, err);
    sbx_image_info_release(&info);
    return rc;
}

static json_t *render(const sbx_image_info_t *i)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:I}", "image", i->ref, "id", i->id, "digest",
                     i->manifest_digest, "size", (json_int_t)i->size, "layers", (json_int_t)i->n_layers,
                     "created", i->created, "architecture", i->architecture, "os", i->os, "pulledAt",
                     (json_int_t)i->pulled_ms);
}

/* ---- pull with progress: one JSON object per line as the layers arrive ---- */

typedef struct {
    sbx_image_pull_op_t *op;
    uint64_t seq;
    uint64_t *sent; /* the `done` figure last sent per layer, UINT64_MAX for none */
    size_t n_sent;
    char *buf;
    size_t len, off;
    bool done;
} pull_stream_t;

static void emit_line(pull_stream_t *ps, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t n = strlen(s);
    ps->buf = xrealloc(ps->buf, ps->len + n + 2);
    memcpy(ps->buf + ps->len, s, n);
    ps->buf[ps->len + n] = '\n';
    ps->len += n + 1;
    free(s);
}

/* Waits for news of the pull and turns it into lines: changed layers, then the end. */
static void pull_stream_fill(pull_stream_t *ps)
{
    sbx_image_layer_progress_t *l = NULL;
    size_t n = 0;
    sbx_image_info_t info = {0};
    sbx_err_t e = SBX_ERR_INIT;
    int r = sbx_image_pull_wait(ps->op, &ps->seq, 15000, &l, &n, &info, &e);
    if (n > ps->n_sent) {
        ps->sent = xrealloc(ps->sent, n * sizeof *ps->sent);
        for (size_t i = ps->n_sent; i < n; i++)
            ps->sent[i] = UINT64_MAX;
        ps->n_sent = n;
    }
    for (size_t i = 0; i < n; i++) {
        if (!l[i].digest[0] || ps->sent[i] == l[i].done)
            continue;
        ps->sent[i] = l[i].done;
        emit_line(ps, json_pack("{s:s, s:I, s:I, s:I, s:I}", "layer", l[i].digest, "index", (json_int_t)i,
                                "count", (json_int_t)n, "done", (json_int_t)l[i].done, "total",
                                (json_int_t)l[i].total));
    }
    free(l);
    if (r == 0) {
        json_t *j = render(&info);
        json_object_set_new(j, "status", json_string("ready"));
        emit_line(ps, j);
        sbx_image_info_release(&info);
    } else if (r < 0) {
        emit_line(ps, json_pack("{s:s, s:s, s:s}", "error", e.msg, "code", e.code[0] ? e.code : "S102",
                                "type", sbx_api_error_type(&e)));
    }
    ps->done = r <= 0;
}

static long pull_stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    pull_stream_t *ps = cls;
    while (ps->off == ps->len) {
        ps->off = ps->len = 0;
        if (ps->done)
            return SBX_STREAM_END;
        pull_stream_fill(ps);
    }
    size_t n = ps->len - ps->off < max ? ps->len - ps->off : max;
    memcpy(out, ps->buf + ps->off, n);
    ps->off += n;
    return (long)n;
}

/* A client that goes away does not stop the pull: it completes into the cache. */
static void pull_stream_free(void *cls)
{
    pull_stream_t *ps = cls;
    sbx_image_pull_op_unref(ps->op);
    free(ps->sent);
    free(ps->buf);
    free(ps);
}

static int pull_streamed(sbx_api_t *api, const char *image, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    sbx_registry_opts_t reg;
    sbx_config_registry_opts(sbx_core_config(core), &reg);
    sbx_image_pull_op_t *op = sbx_image_pull_start(sbx_core_images(core), image, &reg, err);
    if (!op)
        return -1;
    pull_stream_t *ps = xcalloc(1, sizeof *ps);
    ps->op = op;
    resp->stream_fn = pull_stream_read;
    resp->stream_cls = ps;
    resp->stream_free = pull_stream_free;
    resp->content_type = "application/x-ndjson";
    resp->header_name[0] = "Cache-Control";
    resp->header_value[0] = "no-cache";
    return 0;
}

static int h_pull(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *image = NULL;
    bool progress = false;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0 || sbx_param_bool(req->params, "progress", &progress, err) < 0)
        return -1;
    if (!has || !*image)
        return sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
    if (progress)
        return pull_streamed(api, image, resp, err);
    sbx_image_info_t info;
    if (sbx_api_image_pull(api, image, &info, err) < 0)
        return -1;
    resp->json = render(&info);
    sbx_image_info_release(&info);
    return 0;
}

static int h_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_image_store_t *st = sbx_core_images(sbx_api_core(api));
    const char *image = NULL;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0)
        return -1;
    if (has) {
        sbx_image_info_t info;
        if (sbx_image_inspect(st, image, &info, err) < 0)
            return -1;
        resp->json = render(&info);
        json_object_set_new(resp->json, "inUse", json_boolean(sbx_api_image_in_use(api, info.ref)));
        sbx_image_info_release(&info);
        return 0;
    }
    sbx_image_info_t *v = NULL;
    size_t n = 0;
    if (sbx_image_list(st, &v, &n, err) < 0)
        return -1;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, render(&v[i]));
        sbx_image_info_release(&v[i]);
    }
    free(v);
    resp->json = json_pack("{s:o, s:I}", "images", arr, "total", (json_int_t)n);
    return 0;
}

static int h_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *image = NULL;
    bool force = false;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0 || sbx_param_bool(req->params, "force", &force, err) < 0)
        return -1;
    if (!has || !*image)
        return sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
    if (sbx_api_image_remove(api, image, force, err) < 0)
        return -1;
    resp->json = json_pack("{s:b}", "success", 1);
    return 0;
}

static int h_gc(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    uint64_t bytes = 0, blobs = 0;
    if (sbx_image_gc(sbx_core_images(sbx_api_core(api)), 0, &bytes, &blobs, err) < 0)
        return -1;
    resp->json = json_pack("{s:I, s:I}", "freedBytes", (json_int_t)bytes, "freedBlobs", (json_int_t)blobs);
    return 0;
}

/* ---- import: the raw body is an image archive ---- */

typedef struct {
    sbx_image_store_t *st;
    int fd;
    char *path;
    char *name;
} import_up_t;

static void import_up_free(import_up_t *u)
{
    if (u->fd >= 0)
        close(u->fd);
    if (u->path)
        unlink(u->path);
    free(u->path);
    free(u->name);
    free(u);
}

static int import_begin(sbx_api_t *api, sbx_http_req_t *req, void **state, sbx_err_t *err)
{
    const char *name = NULL;
    int has = sbx_param_str(req->params, "name", &name, err);
    if (has < 0)
        return -1;
    sbx_oci_ref_t r;
    if (has && *name && sbx_oci_ref_parse(name, &r, err) < 0)
        return -1;
    import_up_t *u = xcalloc(1, sizeof *u);
    u->st = sbx_core_images(sbx_api_core(api));
    u->name = has && *name ? xstrdup(name) : NULL;
    u->fd = sbx_image_import_tmpfile(u->st, &u->path, err);
    if (u->fd < 0) {
        import_up_free(u);
        return -1;
    }
    *state = u;
    return 0;
}

static int import_chunk(void *state, const char *data, size_t len, sbx_err_t *err)
{
    import_up_t *u = state;
    if (sbx_write_all(u->fd, data, len) < 0)
        return sbx_error(err, errno, "write the uploaded archive");
    return 0;
}

static int import_finish(void *state, sbx_http_resp_t *resp, sbx_err_t *err)
{
    import_up_t *u = state;
    close(u->fd);
    u->fd = -1;
    sbx_image_info_t info;
    int rc = sbx_image_import(u->st, u->path, u->name, &info, err);
    if (rc == 0) {
        resp->json = render(&info);
        sbx_image_info_release(&info);
    }
    import_up_free(u);
    return rc;
}

static void import_abort(void *state)
{
    import_up_free(state);
}

static const sbx_upload_ops_t import_ops = {import_begin, import_chunk, import_finish, import_abort};

static const sbx_route_t routes[] = {
    {"POST", "/{prefix}/images/import", NULL, false, SBX_DIALECT_REST, &import_ops},
    {"POST", "/{prefix}/images/pull", h_pull, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/images/gc", h_gc, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/images", h_list, false, SBX_DIALECT_REST},
    {"DELETE", "/{prefix}/images", h_delete, false, SBX_DIALECT_REST},
};
const sbx_route_table_t sbx_rest_images_table = {routes, SBX_ARRAY_LEN(routes)};
