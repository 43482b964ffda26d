/* The `/sandbox` REST surface (spec/sandbox-rest-api.txt, shapes from rest-wire.md). */
#include "api/server.h"

#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "api/params.h"
#include "common/base64.h"
#include "common/util.h"

static char worker_id[96];

static const char *get_worker_id(void)
{
    if (!worker_id[0]) {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(worker_id, sizeof worker_id, "sandboxd-%s", host);
    }
    return worker_id;
}

static json_t *load_or(const char *text, json_t *fallback)
{
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    if (!j)
        return fallback;
    json_decref(fallback);
    return j;
}

/* A Sandbox object (rest-wire.md §6) plus the guide's list fields. */
static json_t *render_sandbox(sbx_api_t *api, const sbx_sandbox_rec_t *r)
{
    int64_t now = sbx_now_ms();
    bool running = !strcmp(r->status, "running");
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(r->id));
    json_object_set_new(j, "sandbox_id", json_string(r->id));
    json_object_set_new(j, "name", json_string(r->name));
    json_object_set_new(j, "image", json_string(r->image));
    json_object_set_new(j, "status", json_string(r->status));
    json_object_set_new(j, "createdAt", json_integer(r->created_at));
    json_object_set_new(j, "expiresAt", json_integer(r->expires_at));
    json_object_set_new(j, "lastExecAt", json_integer(r->last_exec_at));
    json_object_set_new(j, "config", load_or(r->config_json, json_object()));
    json_object_set_new(j, "metadata", load_or(r->metadata_json, json_object()));
    json_object_set_new(j, "workerId", json_string(get_worker_id()));
    json_object_set_new(j, "cpus", json_real(r->cpus));
    json_object_set_new(j, "memory_mb", json_integer(r->memory_mb));
    json_object_set_new(j, "network", json_boolean(r->network));
    json_object_set_new(j, "idle_timeout_secs", json_integer(r->idle_timeout_secs));
    json_object_set_new(j, "age_secs", json_integer((now - r->created_at) / 1000));
    json_object_set_new(j, "exec_in_progress",
                        json_boolean(running && sbx_core_execs_in_flight(sbx_api_core(api), r->id) > 0));
    json_object_set_new(j, "stopped", json_boolean(!running && strcmp(r->status, "creating") != 0));
    if (r->stop_reason)
        json_object_set_new(j, "stopReason", json_string(r->stop_reason));
    if (r->stopped_at)
        json_object_set_new(j, "stoppedAt", json_integer(r->stopped_at));
    return j;
}

static int h_health(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    resp->json = json_pack("{s:s}", "status", "healthy");
    return 0;
}

static int h_create(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    json_t *p = req->params;
    sbx_create_req_t c = {0};
    char **env = NULL;
    size_t n_env = 0;
    _cleanup_free_ char *metadata = NULL;
    _cleanup_free_ char *entrypoint = NULL;
    int64_t mem_rest = 0, mem_guide = 0;
    double cpu_rest = 0, cpu_guide = 0;
    int rc = -1;
    const char *tmpl = NULL;
    json_t *ep;

    if (sbx_param_str(p, "template", &tmpl, err) < 0)
        goto out;
    if (tmpl) {
        sbx_fail(err, SBX_E_NOT_FOUND, "S002", "Template not found: %s", tmpl);
        goto out;
    }
    if (sbx_param_str(p, "image", &c.image, err) < 0 || sbx_param_str(p, "name", &c.name, err) < 0 ||
        sbx_param_str(p, "workdir", &c.workdir, err) < 0)
        goto out;
    if (!c.image || !*c.image) {
        sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
        goto out;
    }
    int r = sbx_param_int(p, "timeout", 1, 30LL * 86400, &c.timeout_secs, err);
    if (r < 0)
        goto out;
    c.has_timeout = r;
    int rm = sbx_param_int(p, "memory", 1, 1048576, &mem_rest, err);
    int gm = sbx_param_int(p, "memory_mb", 1, 1048576, &mem_guide, err);
    if (rm < 0 || gm < 0)
        goto out;
    c.has_memory = rm || gm;
    c.memory_mb = gm ? mem_guide : mem_rest;
    int rcpu = sbx_param_num(p, "cpu", 0.01, 1024, &cpu_rest, err);
    int gcpu = sbx_param_num(p, "cpus", 0.01, 1024, &cpu_guide, err);
    if (rcpu < 0 || gcpu < 0)
        goto out;
    c.has_cpus = rcpu || gcpu;
    c.cpus = gcpu ? cpu_guide : cpu_rest;
    r = sbx_param_int(p, "idle_timeout_secs", 0, 30LL * 86400, &c.idle_timeout_secs, err);
    if (r < 0)
        goto out;
    c.has_idle_timeout = r;
    if (sbx_param_bool(p, "network", &c.network, err) < 0 || sbx_param_env(p, "env", &env, &n_env, err) < 0 ||
        sbx_param_str_object(p, "metadata", &metadata, err) < 0)
        goto out;
    ep = json_object_get(p, "entrypoint");
    if (ep && !json_is_null(ep)) {
        char **v = NULL;
        size_t n = 0;
        if (sbx_param_strv(p, "entrypoint", &v, &n, err) < 0)
            goto out;
        sbx_strv_free(v);
        entrypoint = json_dumps(ep, JSON_COMPACT);
    }
    c.env = env;
    c.n_env = n_env;
    c.metadata_json = metadata;
    c.entrypoint_json = entrypoint;

    sbx_sandbox_rec_t rec = {0};
    if (sbx_core_create(sbx_api_core(api), &c, &rec, err) < 0)
        goto out;
    resp->json = render_sandbox(api, &rec);
    sbx_sandbox_rec_release(&rec);
    rc = 0;
out:
    sbx_strv_free(env);
    return rc;
}

static bool metadata_matches(const sbx_sandbox_rec_t *r, json_t *want)
{
    if (!json_is_object(want))
        return true;
    json_t *have = load_or(r->metadata_json, json_object());
    const char *k;
    json_t *v;
    bool ok = true;
    json_object_foreach(want, k, v)
    {
        if (!json_equal(json_object_get(have, k), v)) {
            ok = false;
            break;
        }
    }
    json_decref(have);
    return ok;
}

static int h_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    json_t *p = req->params;
    const char *status = NULL;
    int64_t page = 1, page_size = 20;
    if (sbx_param_str(p, "status", &status, err) < 0 ||
        sbx_param_int(p, "page", 0, INT_MAX, &page, err) < 0 ||
        sbx_param_int(p, "pageSize", 1, 1000000, &page_size, err) < 0)
        return -1;
    if (page_size > 200)
        page_size = 200;
    sbx_sandbox_rec_t *recs = NULL;
    size_t n = 0;
    if (sbx_core_list(sbx_api_core(api), &recs, &n, err) < 0)
        return -1;
    json_t *items = json_array();
    int64_t total = 0, first = (page - 1) * page_size;
    json_t *meta = json_object_get(p, "metadata");
    for (size_t i = 0; i < n; i++) {
        if (status && strcmp(recs[i].status, status) != 0)
            continue;
        if (!metadata_matches(&recs[i], meta))
            continue;
        if (page >= 1 && total >= first && total < first + page_size)
            json_array_append_new(items, render_sandbox(api, &recs[i]));
        total++;
    }
    sbx_sandbox_recs_free(recs, n);
    resp->json = json_pack("{s:o, s:I, s:I, s:I}", "items", items, "total", (json_int_t)total, "page",
                           (json_int_t)page, "pageSize", (json_int_t)page_size);
    return 0;
}

static int h_get(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (sbx_core_get(sbx_api_core(api), req->path_params[0], &rec, err) < 0)
        return -1;
    resp->json = render_sandbox(api, &rec);
    sbx_sandbox_rec_release(&rec);
    return 0;
}

static int h_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    if (sbx_core_delete(sbx_api_core(api), req->path_params[0], err) < 0)
        return -1;
    resp->json = json_pack("{s:b}", "success", 1);
    return 0;
}

static const char *image_state_name(sbx_image_state_t s)
{
    switch (s) {
    case SBX_IMAGE_BUILDING: return "building";
    case SBX_IMAGE_READY: return "ready";
    case SBX_IMAGE_FAILED: return "failed";
    default: return "absent";
    }
}

/* Build progress of an image, so clients can show it while a create waits on a build. */
static int h_image(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *name = req->path_params[0];
    const sbx_config_t *cfg = sbx_core_config(sbx_api_core(api));
    const sbx_custom_image_t *custom = sbx_config_custom_image(cfg, name);
    if (!custom && !sbx_image_is_preset(name))
        return sbx_fail(err, SBX_E_NOT_FOUND, "S100", "unknown image: %s", name);
    sbx_image_source_t src = {custom ? custom->name : NULL, custom ? custom->ref : NULL};
    sbx_image_status_t st;
    sbx_image_status(sbx_core_images(sbx_api_core(api)), name, custom ? &src : NULL, &st);
    json_t *j = json_pack("{s:s, s:s, s:s, s:b}", "name", name, "state", image_state_name(st.state),
                          "message", st.message, "allowed", sbx_config_image_allowed(cfg, name));
    if (st.started_ms)
        json_object_set_new(j, "elapsedMs", json_integer(sbx_now_ms() - st.started_ms));
    resp->json = j;
    return 0;
}

/* The warm pool, as the reference's pool/status route computes it (total, ready,
 * by_profile; a profile is an image here). */
static int h_pool_status(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    int total = 0;
    json_t *by = NULL;
    if (sbx_core_pool_status(sbx_api_core(api), &total, &by) < 0)
        return -1;
    resp->json = json_pack("{s:i, s:i, s:o, s:I}", "total", total, "ready", total, "by_profile", by, "size",
                           (json_int_t)sbx_core_config(sbx_api_core(api))->pool_size);
    return 0;
}

static int h_metrics(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_core_metrics_t m;
    if (sbx_core_metrics(sbx_api_core(api), &m, err) < 0)
        return -1;
    resp->json =
        json_pack("{s:I, s:I, s:I, s:I, s:I}", "activeSandboxes", (json_int_t)m.active, "totalCreated",
                  (json_int_t)m.total_created, "totalKilled", (json_int_t)m.total_killed, "totalExpired",
                  (json_int_t)m.total_expired, "uptimeSeconds", (json_int_t)m.uptime_secs);
    return 0;
}

static const sbx_route_t sbx_rest_routes[] = {
    {"GET", "/health", h_health, true, SBX_DIALECT_REST},
    {"GET", "/{prefix}/health", h_health, true, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes", h_create, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/sandboxes", h_list, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/sandboxes/:id", h_get, false, SBX_DIALECT_REST},
    {"DELETE", "/{prefix}/sandboxes/:id", h_delete, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/images/:name", h_image, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/metrics", h_metrics, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/pool/status", h_pool_status, false, SBX_DIALECT_REST},
};
const sbx_route_table_t sbx_rest_table = {sbx_rest_routes, SBX_ARRAY_LEN(sbx_rest_routes)};
