/* The `/v1` REST surface, compatible with opensbx clients (spec/v1-api.txt, shapes from
 * spec/v1-wire.md): health, sandbox lifecycle, asynchronous commands with ids, their
 * logs and signals, and files.  Errors are rendered by server.c as {"code","message"}; this file only
 * picks the error kind (and so the status) that the reference uses for each case. */
#include "api/server.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/file_stream.h"
#include "api/params.h"
#include "common/util.h"
#include "core/execs.h"
#include "core/files.h"
#include "proto/proto.h"

/* Longest ND-JSON log line: a longer run of bytes without a newline is cut into lines of
 * this size, each ending with "\n" as every streamed line does. */
#define V1_LINE_MAX (64u * 1024)
/* Bytes read from a log per call while streaming. */
#define V1_READ_CHUNK (64u * 1024)
/* Default and largest `limit` of a logs snapshot, per stream. */
#define V1_LOG_LIMIT_DEFAULT (10u << 20)
#define V1_LOG_LIMIT_MAX (64u << 20)
/* How long a kill waits for the command to end before answering (the reference's value). */
#define V1_KILL_WAIT_MS 500
/* A command's deadline when its sandbox never expires. */
#define V1_CMD_MAX_MS (30LL * 86400 * 1000)

/* Boolean query flags are on only when spelled exactly "true" (spec §1). */
static bool query_flag(const sbx_http_req_t *req, const char *key)
{
    json_t *v = json_object_get(req->query, key);
    return json_is_string(v) && !strcmp(json_string_value(v), "true");
}

/* An answer for a route the reference has but sandboxd cannot serve. */
static int not_implemented(sbx_http_resp_t *resp, const char *what)
{
    resp->status = 501;
    resp->json = json_pack("{s:s, s:s}", "code", "NOT_IMPLEMENTED", "message", what);
    return 0;
}

/* Time helpers. */

static json_t *rfc3339(int64_t ms)
{
    if (ms <= 0)
        return json_string("0001-01-01T00:00:00Z");
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char buf[64], out[80];
    gmtime_r(&secs, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof out, "%s.%03dZ", buf, (int)(ms % 1000));
    return json_string(out);
}

/* Docker's wording of a duration ("5 minutes", "About an hour"). */
static void human_duration(int64_t ms, char *out, size_t len)
{
    int64_t s = ms / 1000;
    if (s < 1)
        snprintf(out, len, "Less than a second");
    else if (s < 60)
        snprintf(out, len, "%lld second%s", (long long)s, s == 1 ? "" : "s");
    else if (s < 120)
        snprintf(out, len, "About a minute");
    else if (s < 3600)
        snprintf(out, len, "%lld minutes", (long long)(s / 60));
    else if (s < 7200)
        snprintf(out, len, "About an hour");
    else if (s < 2 * 86400)
        snprintf(out, len, "%lld hours", (long long)(s / 3600));
    else
        snprintf(out, len, "%lld days", (long long)(s / 86400));
}

/* Sandboxes. */

static bool rec_running(const sbx_sandbox_rec_t *r)
{
    return r->status && !strcmp(r->status, "running");
}

/* Docker's machine state for one of our statuses. */
static const char *machine_state(const sbx_sandbox_rec_t *r)
{
    if (!r->status || !strcmp(r->status, "creating"))
        return "created";
    if (rec_running(r))
        return "running";
    return "exited";
}

static void set_expiry(json_t *j, const sbx_sandbox_rec_t *r)
{
    if (rec_running(r) && r->expires_at > 0)
        json_object_set_new(j, "expires_at", rfc3339(r->expires_at));
}

/* SandboxSummary (list). */
static json_t *render_summary(const sbx_sandbox_rec_t *r)
{
    int64_t now = sbx_now_ms();
    char ago[48], status[160];
    if (rec_running(r)) {
        human_duration(now - r->created_at, ago, sizeof ago);
        snprintf(status, sizeof status, "Up %s", ago);
    } else if (!strcmp(machine_state(r), "created")) {
        snprintf(status, sizeof status, "Created");
    } else {
        human_duration(now - (r->stopped_at ? r->stopped_at : r->created_at), ago, sizeof ago);
        snprintf(status, sizeof status, "Exited (%s) %s ago", r->stop_reason ? r->stop_reason : r->status,
                 ago);
    }
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "id", r->id, "name", r->name ? r->name : r->id, "image",
                  r->image ? r->image : "", "status", status, "state", machine_state(r), "ports");
    set_expiry(j, r);
    return j;
}

/* SandboxDetail (inspect). */
static json_t *render_detail(const sbx_sandbox_rec_t *r)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:[], s:{s:I, s:f}}", "id", r->id, "name",
                          r->name ? r->name : r->id, "image", r->image ? r->image : "", "status",
                          machine_state(r), "running", rec_running(r), "ports", "resources", "memory",
                          (json_int_t)r->memory_mb, "cpus", r->cpus);
    json_object_set_new(j, "started_at", rfc3339(r->created_at));
    json_object_set_new(j, "finished_at", rfc3339(rec_running(r) ? 0 : r->stopped_at));
    set_expiry(j, r);
    return j;
}

static int h_health(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    resp->json = json_pack("{s:s}", "status", "healthy");
    return 0;
}

/* Rewrites a create error into the kind (hence status) a v1 client expects. */
static int create_error(sbx_err_t *err)
{
    char msg[sizeof err->msg];
    if (err->kind == SBX_E_FORBIDDEN) {
        /* Not on the allowlist: the request names an image this daemon will not run. */
        err->kind = SBX_E_INVALID;
    } else if (err->kind == SBX_E_UNAVAILABLE && !strcmp(err->code, "S101")) {
        snprintf(msg, sizeof msg, "image not found locally (S101): %.960s", err->msg);
        snprintf(err->msg, sizeof err->msg, "%s", msg);
        err->kind = SBX_E_INVALID;
    } else if (err->kind == SBX_E_LIMIT) {
        err->kind = SBX_E_CONFLICT;
    }
    return -1;
}

/* "3000" -> "3000/tcp"; "53/udp" stays.  NULL for an entry that is not a port. */
static char *port_key(const char *s)
{
    char *end;
    long port = strtol(s, &end, 10);
    if (end == s || port < 1 || port > 65535)
        return NULL;
    if (!*end)
        return xasprintf("%ld/tcp", port);
    if (!strcmp(end, "/tcp") || !strcmp(end, "/udp") || !strcmp(end, "/sctp"))
        return xasprintf("%ld%s", port, end);
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* The requested ports, normalised and sorted, as the create answer echoes them. */
static int parse_ports(json_t *body, json_t **out, sbx_err_t *err)
{
    char **v = NULL;
    size_t n = 0;
    if (sbx_param_strv(body, "ports", &v, &n, err) < 0)
        return -1;
    json_t **keys = xcalloc(n + 1, sizeof *keys);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *key = port_key(v[i]);
        if (key)
            keys[k++] = json_string(key);
    }
    qsort(keys, k, sizeof *keys, cmp_str);
    *out = json_array();
    for (size_t i = 0; i < k; i++)
        json_array_append_new(*out, keys[i]);
    free(keys);
    sbx_strv_free(v);
    return 0;
}

static int h_create(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    json_t *b = req->body_json;
    sbx_create_req_t c = {0};
    char **env = NULL;
    size_t n_env = 0;
    json_t *ports = NULL;
    int64_t timeout = 0, memory = 0;
    double cpus = 0;
    int rc = -1;

    if (sbx_param_str(b, "image", &c.image, err) < 0)
        goto out;
    if (!c.image || !*c.image) {
        sbx_fail(err, SBX_E_INVALID, NULL, "image is required");
        goto out;
    }
    if (sbx_param_int(b, "timeout", INT64_MIN, INT64_MAX, &timeout, err) < 0)
        goto out;
    if (timeout < 0) {
        sbx_fail(err, SBX_E_INVALID, NULL, "timeout must be >= 0");
        goto out;
    }
    json_t *res = json_object_get(b, "resources");
    if (res && !json_is_null(res) && !json_is_object(res)) {
        sbx_fail(err, SBX_E_INVALID, NULL, "resources must be an object");
        goto out;
    }
    if (sbx_param_int(res, "memory", INT64_MIN, INT64_MAX, &memory, err) < 0 ||
        sbx_param_num(res, "cpus", -1e300, 1e300, &cpus, err) < 0)
        goto out;
    if (memory < 0 || cpus < 0) {
        sbx_fail(err, SBX_E_INVALID, NULL, "resources.%s must be >= 0", memory < 0 ? "memory" : "cpus");
        goto out;
    }
    if (sbx_param_env(b, "env", &env, &n_env, err) < 0 || parse_ports(b, &ports, err) < 0)
        goto out;

    /* Zero means "the default", as in the reference; the daemon's defaults apply. */
    c.has_timeout = timeout > 0;
    c.timeout_secs = timeout;
    c.has_memory = memory > 0;
    c.memory_mb = memory;
    c.has_cpus = cpus > 0;
    c.cpus = cpus;
    c.env = env;
    c.n_env = n_env;

    sbx_sandbox_rec_t rec = {0};
    if (sbx_core_create(sbx_api_core(api), &c, &rec, err) < 0) {
        create_error(err);
        goto out;
    }
    resp->status = 201;
    resp->json =
        json_pack("{s:s, s:s, s:O}", "id", rec.id, "name", rec.name ? rec.name : rec.id, "ports", ports);
    sbx_sandbox_rec_release(&rec);
    rc = 0;
out:
    json_decref(ports);
    sbx_strv_free(env);
    return rc;
}

static int h_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_sandbox_rec_t *recs = NULL;
    size_t n = 0;
    if (sbx_core_list(sbx_api_core(api), &recs, &n, err) < 0)
        return -1;
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, render_summary(&recs[i]));
    sbx_sandbox_recs_free(recs, n);
    resp->json = json_pack("{s:o}", "sandboxes", items);
    if (n == 0)
        json_object_set_new(resp->json, "message", json_string("no sandboxes found"));
    return 0;
}

/* The reference says just "sandbox not found"; ours names the id too. */
static int get_sandbox(sbx_api_t *api, const char *id, sbx_sandbox_rec_t *rec, sbx_err_t *err)
{
    return sbx_core_get(sbx_api_core(api), id, rec, err);
}

static int h_get(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (get_sandbox(api, req->path_params[0], &rec, err) < 0)
        return -1;
    resp->json = render_detail(&rec);
    sbx_sandbox_rec_release(&rec);
    return 0;
}

/* Idempotent as in the reference: an unknown id is 204 too. */
static int h_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    if (sbx_core_delete(sbx_api_core(api), req->path_params[0], err) < 0) {
        if (err->kind != SBX_E_NOT_FOUND)
            return -1;
        sbx_err_clear(err);
    }
    resp->status = 204;
    return 0;
}

/* start/stop/restart/pause/resume/renew-expiration/stats/network: a sandbox here is one
 * live process tree that is removed when it stops, so these have no honest mapping yet. */
static int h_unsupported(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (get_sandbox(api, req->path_params[0], &rec, err) < 0)
        return -1;
    sbx_sandbox_rec_release(&rec);
    const char *last = strrchr(req->path, '/');
    last = last && last[1] ? last + 1 : "this operation";
    char msg[256];
    if (!strcmp(last, "stop"))
        snprintf(msg, sizeof msg,
                 "stop is not implemented: sandboxd cannot restart a stopped sandbox; use DELETE "
                 "/v1/sandboxes/:id to stop and remove it");
    else
        snprintf(msg, sizeof msg, "%s is not implemented by sandboxd", last);
    return not_implemented(resp, msg);
}

/* Commands. */

/* CommandDetail. */
static json_t *render_command(const sbx_exec_info_t *in)
{
    json_t *args = json_null();
    if (in->argv && in->argv[0] && in->argv[1]) {
        args = json_array();
        for (char **a = in->argv + 1; *a; a++)
            json_array_append_new(args, json_string(*a));
    }
    json_t *j =
        json_pack("{s:s, s:s, s:o, s:s, s:s, s:I}", "id", in->id, "name",
                  in->argv && in->argv[0] ? in->argv[0] : "", "args", args, "cwd", in->cwd ? in->cwd : "",
                  "sandbox_id", in->sandbox_id, "started_at", (json_int_t)in->started_at);
    if (!in->running) {
        json_object_set_new(j, "exit_code", json_integer(in->exited ? in->exit_code : -1));
        if (in->finished_at > 0)
            json_object_set_new(j, "finished_at", json_integer(in->finished_at));
    }
    return j;
}

static json_t *wrap_command(const sbx_exec_info_t *in)
{
    return json_pack("{s:o}", "command", render_command(in));
}

/* Looks up a command of a sandbox: anything else (unknown id, another sandbox's command,
 * an exec started by another surface) is 404 `command not found`. */
static int find_command(sbx_api_t *api, const char *sandbox_id, const char *cmd_id, sbx_exec_info_t *info,
                        sbx_err_t *err)
{
    sbx_err_t e = SBX_ERR_INIT;
    if (sbx_core_exec_get(sbx_api_core(api), cmd_id, info, &e) < 0) {
        if (e.kind != SBX_E_NOT_FOUND) {
            *err = e;
            return -1;
        }
        return sbx_fail(err, SBX_E_NOT_FOUND, NULL, "command not found");
    }
    if (info->kind != SBX_EXEC_CMD || strcmp(info->sandbox_id, sandbox_id) != 0) {
        sbx_exec_info_release(info);
        memset(info, 0, sizeof *info);
        return sbx_fail(err, SBX_E_NOT_FOUND, NULL, "command not found");
    }
    return 0;
}

/* Pending bytes of a streamed body, handed to the server in pieces. */
typedef struct {
    char *data;
    size_t len, off, cap;
} outbuf_t;

static void outbuf_add(outbuf_t *b, const char *s, size_t n)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* Appends one ND-JSON line and takes ownership of j. */
static void outbuf_add_line(outbuf_t *b, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return;
    outbuf_add(b, text, strlen(text));
    outbuf_add(b, "\n", 1);
    free(text);
}

static long outbuf_drain(outbuf_t *b, char *buf, size_t max)
{
    size_t n = b->len - b->off < max ? b->len - b->off : max;
    memcpy(buf, b->data + b->off, n);
    b->off += n;
    return (long)n;
}

/* `?wait=true`: the state now, then the final state once the command ends. */
typedef struct {
    sbx_core_t *core;
    char exec_id[64];
    bool waited;
    outbuf_t out;
} wait_stream_t;

static long wait_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    wait_stream_t *w = cls;
    for (;;) {
        if (w->out.off < w->out.len)
            return outbuf_drain(&w->out, buf, max);
        if (w->waited)
            return SBX_STREAM_END;
        w->waited = true;
        sbx_exec_info_t info = {0};
        sbx_err_t err = SBX_ERR_INIT;
        /* Once the stream has begun an error can only end it, as in the reference. */
        if (sbx_core_exec_wait(w->core, w->exec_id, -1, &info, &err) < 0)
            return SBX_STREAM_END;
        outbuf_add_line(&w->out, wrap_command(&info));
        sbx_exec_info_release(&info);
    }
}

static void wait_stream_free(void *cls)
{
    wait_stream_t *w = cls;
    free(w->out.data);
    free(w);
}

/* Answers a command as JSON, or with `wait` as the two-line ND-JSON stream. */
static int answer_command(sbx_api_t *api, const sbx_exec_info_t *info, bool wait, sbx_http_resp_t *resp)
{
    if (!wait) {
        resp->json = wrap_command(info);
        return 0;
    }
    wait_stream_t *w = xcalloc(1, sizeof *w);
    w->core = sbx_api_core(api);
    snprintf(w->exec_id, sizeof w->exec_id, "%s", info->id);
    outbuf_add_line(&w->out, wrap_command(info));
    resp->stream_fn = wait_stream_read;
    resp->stream_cls = w;
    resp->stream_free = wait_stream_free;
    resp->content_type = "application/x-ndjson";
    return 0;
}

/* A command runs until it ends or its sandbox expires: the reference has no per-command
 * timeout, and the exec layer wants a deadline. */
static int64_t command_deadline_ms(sbx_api_t *api, const char *sandbox_id)
{
    sbx_sandbox_rec_t rec = {0};
    sbx_err_t e = SBX_ERR_INIT;
    int64_t t = V1_CMD_MAX_MS;
    if (sbx_core_get(sbx_api_core(api), sandbox_id, &rec, &e) == 0 && rec.expires_at > 0) {
        t = rec.expires_at - sbx_now_ms();
        if (t < 1000)
            t = 1000;
    }
    sbx_sandbox_rec_release(&rec);
    return t;
}

static int h_cmd_start(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    json_t *b = req->body_json;
    const char *command = NULL, *cwd = NULL;
    char **args = NULL, **argv = NULL, **env = NULL;
    size_t nargs = 0, n_env = 0;
    int rc = -1;

    if (sbx_param_str(b, "command", &command, err) < 0 || sbx_param_strv(b, "args", &args, &nargs, err) < 0 ||
        sbx_param_str(b, "cwd", &cwd, err) < 0 || sbx_param_env(b, "env", &env, &n_env, err) < 0)
        goto out;
    if (!command || !*command) {
        sbx_fail(err, SBX_E_INVALID, NULL, "command is required");
        goto out;
    }
    if (strlen(command) != json_string_length(json_object_get(b, "command"))) {
        sbx_fail(err, SBX_E_INVALID, NULL, "command must not contain NUL bytes");
        goto out;
    }
    argv = xcalloc(nargs + 2, sizeof(char *));
    argv[0] = xstrdup(command);
    for (size_t i = 0; i < nargs; i++)
        argv[i + 1] = xstrdup(args[i]);

    sbx_exec_params_t ep = {
        .argv = argv,
        .env = env,
        .n_env = n_env,
        .cwd = cwd && *cwd ? cwd : NULL,
        .timeout_ms = command_deadline_ms(api, req->path_params[0]),
    };
    sbx_exec_info_t info = {0};
    if (sbx_core_exec_start(sbx_api_core(api), req->path_params[0], &ep, SBX_EXEC_CMD, false, &info, err) < 0)
        goto out;
    rc = answer_command(api, &info, query_flag(req, "wait"), resp);
    sbx_exec_info_release(&info);
out:
    sbx_strv_free(args);
    sbx_strv_free(argv);
    sbx_strv_free(env);
    return rc;
}

static int h_cmd_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (get_sandbox(api, req->path_params[0], &rec, err) < 0)
        return -1;
    sbx_sandbox_rec_release(&rec);
    sbx_exec_info_t *infos = NULL;
    size_t n = 0;
    if (sbx_core_exec_list(sbx_api_core(api), req->path_params[0], SBX_EXEC_CMD, &infos, &n, err) < 0)
        return -1;
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, render_command(&infos[i]));
    sbx_exec_infos_free(infos, n);
    resp->json = json_pack("{s:o}", "commands", items);
    return 0;
}

static int h_cmd_get(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_exec_info_t info = {0};
    if (find_command(api, req->path_params[0], req->path_params[1], &info, err) < 0)
        return -1;
    int rc = answer_command(api, &info, query_flag(req, "wait"), resp);
    sbx_exec_info_release(&info);
    return rc;
}

static int h_cmd_kill(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    int64_t signo = 0;
    /* The body first: a missing or zero signal is 400 before any lookup. */
    if (sbx_param_int(req->body_json, "signal", INT64_MIN, INT64_MAX, &signo, err) < 0)
        return -1;
    if (signo == 0)
        return sbx_fail(err, SBX_E_INVALID, NULL, "signal is required (a non-zero POSIX signal number)");
    if (signo < 1 || signo > 64)
        return sbx_fail(err, SBX_E_INVALID, NULL, "signal must be between 1 and 64 (got %lld)",
                        (long long)signo);

    sbx_exec_info_t info = {0};
    if (find_command(api, req->path_params[0], req->path_params[1], &info, err) < 0)
        return -1;
    bool running = info.running;
    sbx_exec_info_release(&info);
    if (!running)
        return sbx_fail(err, SBX_E_CONFLICT, NULL, "command has already finished");
    sbx_err_t e = SBX_ERR_INIT;
    if (sbx_core_exec_signal(core, req->path_params[1], (int)signo, &e) < 0) {
        if (e.kind == SBX_E_CONFLICT)
            return sbx_fail(err, SBX_E_CONFLICT, NULL, "command has already finished");
        *err = e;
        return -1;
    }
    memset(&info, 0, sizeof info);
    if (sbx_core_exec_wait(core, req->path_params[1], V1_KILL_WAIT_MS, &info, err) < 0)
        return -1;
    resp->json = wrap_command(&info);
    sbx_exec_info_release(&info);
    return 0;
}

/* Logs, as a snapshot: the last `limit` bytes of each stream. */
static int read_tail(sbx_core_t *core, const char *id, sbx_log_stream_t s, uint64_t size, size_t limit,
                     json_t **out, bool *truncated, sbx_err_t *err)
{
    uint64_t off = size > limit ? size - limit : 0;
    char *acc = NULL;
    size_t acc_len = 0;
    *truncated = off > 0;
    for (;;) {
        char *data = NULL;
        size_t len = 0;
        if (sbx_core_exec_log_read(core, id, s, off, limit, &data, &len, err) < 0) {
            free(acc);
            return -1;
        }
        if (len == 0) {
            free(data);
            break;
        }
        acc = xrealloc(acc, acc_len + len);
        memcpy(acc + acc_len, data, len);
        acc_len += len;
        off += len;
        free(data);
        /* The log grew while we read: keep its tail only. */
        if (acc_len > limit) {
            memmove(acc, acc + (acc_len - limit), limit);
            acc_len = limit;
            *truncated = true;
        }
    }
    *out = sbx_json_lossy_string(acc, acc_len);
    free(acc);
    return 0;
}

/* `?stream=true`: ND-JSON, one line per output line, followed live, then the exit. */
typedef struct {
    sbx_core_t *core;
    char exec_id[64];
    uint64_t off[2];
    char *part[2]; /* bytes of an unfinished line */
    size_t part_len[2];
    bool done;
    outbuf_t out;
} log_stream_t;

static const char *const stream_name[2] = {"stdout", "stderr"};
static const sbx_log_stream_t stream_id[2] = {SBX_LOG_STDOUT, SBX_LOG_STDERR};

static void emit_line(log_stream_t *l, int s, const char *p, size_t n, bool add_nl)
{
    char *line = xmalloc(n + 1);
    memcpy(line, p, n);
    if (add_nl)
        line[n++] = '\n';
    outbuf_add_line(&l->out,
                    json_pack("{s:s, s:o}", "type", stream_name[s], "data", sbx_json_lossy_string(line, n)));
    free(line);
}

/* Splits what has arrived into lines; with `flush`, the rest becomes a last line. */
static void feed(log_stream_t *l, int s, const char *data, size_t len, bool flush)
{
    size_t have = l->part_len[s];
    l->part[s] = xrealloc(l->part[s], have + len + 1);
    memcpy(l->part[s] + have, data, len);
    have += len;
    char *p = l->part[s];
    size_t start = 0;
    for (;;) {
        char *nl = memchr(p + start, '\n', have - start);
        if (nl && (size_t)(nl - (p + start)) < V1_LINE_MAX) {
            emit_line(l, s, p + start, (size_t)(nl - (p + start)) + 1, false);
            start = (size_t)(nl - p) + 1;
        } else if (have - start >= V1_LINE_MAX) {
            emit_line(l, s, p + start, V1_LINE_MAX, true);
            start += V1_LINE_MAX;
        } else {
            break;
        }
    }
    if (flush && have > start) {
        emit_line(l, s, p + start, have - start, true);
        start = have;
    }
    memmove(p, p + start, have - start);
    l->part_len[s] = have - start;
}

/* Reads what is new in both logs.  Returns the bytes read, or -1 on error. */
static long read_new(log_stream_t *l)
{
    long total = 0;
    for (int s = 0; s < 2; s++) {
        char *data = NULL;
        size_t len = 0;
        sbx_err_t err = SBX_ERR_INIT;
        if (sbx_core_exec_log_read(l->core, l->exec_id, stream_id[s], l->off[s], V1_READ_CHUNK, &data, &len,
                                   &err) < 0)
            return -1;
        if (len) {
            l->off[s] += len;
            feed(l, s, data, len, false);
        }
        free(data);
        total += (long)len;
    }
    return total;
}

static void finish_logs(log_stream_t *l)
{
    long n;
    while ((n = read_new(l)) > 0)
        ;
    for (int s = 0; s < 2; s++)
        feed(l, s, "", 0, true);
    sbx_exec_info_t info = {0};
    sbx_err_t err = SBX_ERR_INIT;
    int64_t code = -1;
    if (sbx_core_exec_get(l->core, l->exec_id, &info, &err) == 0 && info.exited)
        code = info.exit_code;
    sbx_exec_info_release(&info);
    outbuf_add_line(&l->out, json_pack("{s:s, s:I}", "type", "exit", "exit_code", (json_int_t)code));
    l->done = true;
}

static long log_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    log_stream_t *l = cls;
    for (;;) {
        if (l->out.off < l->out.len)
            return outbuf_drain(&l->out, buf, max);
        if (l->done)
            return SBX_STREAM_END;
        long n = read_new(l);
        if (n < 0)
            return SBX_STREAM_END;
        if (n > 0)
            continue;
        sbx_exec_info_t info = {0};
        sbx_err_t err = SBX_ERR_INIT;
        if (sbx_core_exec_get(l->core, l->exec_id, &info, &err) < 0)
            return SBX_STREAM_END;
        bool running = info.running;
        sbx_exec_info_release(&info);
        if (!running) {
            /* The command has ended, so its logs are complete: drain them, then the exit. */
            finish_logs(l);
            continue;
        }
        /* Both logs are followed: wait on each briefly in turn. */
        if (sbx_core_exec_log_wait(l->core, l->exec_id, SBX_LOG_STDOUT, l->off[0], 50, &err) == 0)
            sbx_core_exec_log_wait(l->core, l->exec_id, SBX_LOG_STDERR, l->off[1], 50, &err);
    }
}

static void log_stream_free(void *cls)
{
    log_stream_t *l = cls;
    free(l->part[0]);
    free(l->part[1]);
    free(l->out.data);
    free(l);
}

static int h_cmd_logs(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    int64_t limit = V1_LOG_LIMIT_DEFAULT;
    if (sbx_param_int(req->query, "limit", 0, V1_LOG_LIMIT_MAX, &limit, err) < 0)
        return -1;
    sbx_exec_info_t info = {0};
    if (find_command(api, req->path_params[0], req->path_params[1], &info, err) < 0)
        return -1;

    if (query_flag(req, "stream")) {
        log_stream_t *l = xcalloc(1, sizeof *l);
        l->core = core;
        snprintf(l->exec_id, sizeof l->exec_id, "%s", info.id);
        sbx_exec_info_release(&info);
        resp->stream_fn = log_stream_read;
        resp->stream_cls = l;
        resp->stream_free = log_stream_free;
        resp->content_type = "application/x-ndjson";
        return 0;
    }

    json_t *out = NULL, *errout = NULL;
    bool t_out = false, t_err = false;
    int rc = -1;
    if (read_tail(core, info.id, SBX_LOG_STDOUT, info.stdout_bytes, (size_t)limit, &out, &t_out, err) < 0 ||
        read_tail(core, info.id, SBX_LOG_STDERR, info.stderr_bytes, (size_t)limit, &errout, &t_err, err) < 0)
        goto done;
    resp->json = json_pack("{s:o, s:o}", "stdout", out, "stderr", errout);
    out = errout = NULL;
    if (!info.running)
        json_object_set_new(resp->json, "exit_code", json_integer(info.exited ? info.exit_code : -1));
    if (t_out || t_err)
        json_object_set_new(resp->json, "truncated", json_true());
    rc = 0;
done:
    json_decref(out);
    json_decref(errout);
    sbx_exec_info_release(&info);
    return rc;
}

/* Files (spec §5.5).  Bodies are raw bytes both ways, streamed in constant memory; unlike
 * the reference an empty file can be written and failures are reported (docs/api.md). */

/* The `path` query parameter, required except where `def` is given. */
static int file_path(const sbx_http_req_t *req, const char *def, const char **out, sbx_err_t *err)
{
    const char *p = json_string_value(json_object_get(req->query, "path"));
    if (!p || !*p) {
        if (!def)
            return sbx_fail(err, SBX_E_INVALID, NULL, "path query param is required");
        p = def;
    }
    *out = p;
    return 0;
}

static int h_file_get(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path = NULL;
    if (file_path(req, NULL, &path, err) < 0)
        return -1;
    sbx_fs_reader_t *r =
        sbx_core_fs_read_open(sbx_api_core(api), req->path_params[0], path, 0, -1, NULL, err);
    if (!r)
        return -1;
    sbx_api_respond_file(resp, r, NULL);
    return 0;
}

/* PUT: the body is the content.  Parent directories are created, as in the reference;
 * `mode` (octal) and `append=true` are extensions. */
typedef struct {
    sbx_fs_writer_t *writer;
    char *path;
} file_upload_t;

static int file_put_begin(sbx_api_t *api, sbx_http_req_t *req, void **state, sbx_err_t *err)
{
    const char *path = NULL;
    if (file_path(req, NULL, &path, err) < 0)
        return -1;
    sbx_fs_write_opts_t o = {.mode = -1, .uid = -1, .gid = -1, .flags = SBX_FS_PARENTS};
    const char *mode = json_string_value(json_object_get(req->query, "mode"));
    if (mode && *mode) {
        char *end;
        long m = strtol(mode, &end, 8);
        if (*end || m < 0 || m > 07777 || strlen(mode) > 4)
            return sbx_fail(err, SBX_E_INVALID, NULL, "mode must be octal digits such as 0644");
        o.mode = m;
    }
    if (query_flag(req, "append"))
        o.flags |= SBX_FS_APPEND;
    sbx_fs_writer_t *w = sbx_core_fs_write_open(sbx_api_core(api), req->path_params[0], path, &o, err);
    if (!w)
        return -1;
    file_upload_t *u = xcalloc(1, sizeof *u);
    u->writer = w;
    u->path = xstrdup(path);
    *state = u;
    return 0;
}

static int file_put_chunk(void *state, const char *data, size_t len, sbx_err_t *err)
{
    file_upload_t *u = state;
    return sbx_core_fs_write(u->writer, data, len, err);
}

static int file_put_finish(void *state, sbx_http_resp_t *resp, sbx_err_t *err)
{
    file_upload_t *u = state;
    json_t *result = NULL;
    int rc = sbx_core_fs_write_finish(u->writer, &result, err);
    if (rc == 0) {
        resp->json = json_pack("{s:s, s:s}", "path", u->path, "status", "written");
        json_t *size = json_object_get(result, "size");
        if (json_is_integer(size))
            json_object_set(resp->json, "size", size);
    }
    json_decref(result);
    free(u->path);
    free(u);
    return rc;
}

static void file_put_abort(void *state)
{
    file_upload_t *u = state;
    sbx_core_fs_write_abort(u->writer);
    free(u->path);
    free(u);
}

static const sbx_upload_ops_t file_put_ops = {file_put_begin, file_put_chunk, file_put_finish,
                                              file_put_abort};

/* Recursive and forced, as the reference's `rm -rf`: a missing path is 204 too. */
static int h_file_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_fs_req_t r = {.op = "rm", .mode = -1, .flags = SBX_FS_RECURSIVE | SBX_FS_FORCE};
    json_t *result = NULL;
    if (file_path(req, NULL, &r.path, err) < 0 ||
        sbx_core_fs(sbx_api_core(api), req->path_params[0], &r, &result, err) < 0)
        return -1;
    json_decref(result);
    resp->status = 204;
    return 0;
}

/* One `ls -l` permission string from a mode and a type. */
static void perm_string(unsigned mode, const char *type, char out[11])
{
    char t = '-';
    if (type) {
        if (!strcmp(type, "dir") || !strcmp(type, "directory"))
            t = 'd';
        else if (!strcmp(type, "symlink") || !strcmp(type, "link"))
            t = 'l';
        else if (!strcmp(type, "fifo"))
            t = 'p';
        else if (!strcmp(type, "socket"))
            t = 's';
        else if (!strcmp(type, "char"))
            t = 'c';
        else if (!strcmp(type, "block"))
            t = 'b';
    }
    const char *rwx = "rwxrwxrwx";
    out[0] = t;
    for (int i = 0; i < 9; i++)
        out[1 + i] = mode & (0400u >> i) ? rwx[i] : '-';
    if (mode & 04000)
        out[3] = out[3] == 'x' ? 's' : 'S';
    if (mode & 02000)
        out[6] = out[6] == 'x' ? 's' : 'S';
    if (mode & 01000)
        out[9] = out[9] == 'x' ? 't' : 'T';
    out[10] = '\0';
}

/* An integer field of an entry under any of its usual names. */
static json_int_t entry_int(json_t *e, const char *a, const char *b, json_int_t def)
{
    json_t *v = json_object_get(e, a);
    if (!json_is_integer(v) && b)
        v = json_object_get(e, b);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

/* The text of `ls -la` (the reference's `output`) from the agent's structured listing. */
static char *render_ls(json_t *result)
{
    json_t *entries = json_is_array(result) ? result : json_object_get(result, "entries");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    fprintf(f, "total %zu\n", json_array_size(entries));
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *type = json_string_value(json_object_get(e, "type"));
        if (!type && json_is_true(json_object_get(e, "is_dir")))
            type = "dir";
        char perms[11];
        const char *p = json_string_value(json_object_get(e, "permissions"));
        if (p && strlen(p) == 10)
            snprintf(perms, sizeof perms, "%s", p);
        else
            perm_string((unsigned)entry_int(e, "mode", NULL, 0), type, perms);
        json_int_t mtime = entry_int(e, "mtime", "modified_at", 0);
        if (mtime > 100000000000LL) /* milliseconds */
            mtime /= 1000;
        time_t t = (time_t)mtime;
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%b %e %H:%M", &tm);
        char owner[32], group[32];
        const char *o = json_string_value(json_object_get(e, "owner"));
        const char *g = json_string_value(json_object_get(e, "group"));
        if (o && *o)
            snprintf(owner, sizeof owner, "%s", o);
        else
            snprintf(owner, sizeof owner, "%lld", (long long)entry_int(e, "uid", NULL, 0));
        if (g && *g)
            snprintf(group, sizeof group, "%s", g);
        else
            snprintf(group, sizeof group, "%lld", (long long)entry_int(e, "gid", NULL, 0));
        fprintf(f, "%s %3lld %-8s %-8s %10lld %s %s", perms, (long long)entry_int(e, "nlink", NULL, 1), owner,
                group, (long long)entry_int(e, "size", NULL, 0), when, name ? name : "?");
        const char *target = json_string_value(json_object_get(e, "target"));
        if (target)
            fprintf(f, " -> %s", target);
        fputc('\n', f);
    }
    fclose(f);
    return out;
}

/* The reference answers `ls -la P` as text; a missing directory is an error here. */
static int h_file_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_fs_req_t r = {.op = "ls", .mode = -1};
    json_t *result = NULL;
    if (file_path(req, "/", &r.path, err) < 0 ||
        sbx_core_fs(sbx_api_core(api), req->path_params[0], &r, &result, err) < 0)
        return -1;
    char *text = render_ls(result);
    json_decref(result);
    resp->json = json_pack("{s:s, s:s}", "path", r.path, "output", text);
    free(text);
    return 0;
}

static const sbx_route_t sbx_v1_routes[] = {
    {"GET", "/v1/health", h_health, true, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes", h_create, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes", h_list, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id", h_get, false, SBX_DIALECT_V1},
    {"DELETE", "/v1/sandboxes/:id", h_delete, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/start", h_unsupported, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/stop", h_unsupported, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/restart", h_unsupported, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/pause", h_unsupported, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/resume", h_unsupported, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/renew-expiration", h_unsupported, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/stats", h_unsupported, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/network", h_unsupported, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/cmd", h_cmd_start, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/cmd", h_cmd_list, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/cmd/:cmdId", h_cmd_get, false, SBX_DIALECT_V1},
    {"POST", "/v1/sandboxes/:id/cmd/:cmdId/kill", h_cmd_kill, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/cmd/:cmdId/logs", h_cmd_logs, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/files", h_file_get, false, SBX_DIALECT_V1},
    {"PUT", "/v1/sandboxes/:id/files", NULL, false, SBX_DIALECT_V1, &file_put_ops},
    {"DELETE", "/v1/sandboxes/:id/files", h_file_delete, false, SBX_DIALECT_V1},
    {"GET", "/v1/sandboxes/:id/files/list", h_file_list, false, SBX_DIALECT_V1},
};
const sbx_route_table_t sbx_v1_table = {sbx_v1_routes, SBX_ARRAY_LEN(sbx_v1_routes)};
