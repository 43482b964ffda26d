/* The `/sandbox` job queue routes (see rest_queue.h). */
#include "api/rest_queue.h"

#include <limits.h>
#include <stdatomic.h>
#include <string.h>

#include "api/params.h"
#include "api/server.h"
#include "common/util.h"

#define DLQ_DEFAULT_LIMIT 50
#define DLQ_MAX_LIMIT 500
#define DEFAULT_MAX_RETRIES 3

static _Atomic(sbx_queue_t *) attached;

void sbx_rest_queue_attach(sbx_queue_t *q)
{
    atomic_store(&attached, q);
}

static sbx_queue_t *queue_or_fail(sbx_err_t *err)
{
    sbx_queue_t *q = atomic_load(&attached);
    if (!q)
        sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "the job queue is not running");
    return q;
}

/* An ExecResult (rest-wire.md §6) with the blocking exec's extra fields. */
static json_t *render_result(const sbx_job_rec_t *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "exitCode", json_integer(r->exited ? r->exit_code : -1));
    json_object_set_new(j, "exit_code", r->exited ? json_integer(r->exit_code) : json_null());
    json_object_set_new(j, "stdout", sbx_json_lossy_string(r->out ? r->out : "", r->out_len));
    json_object_set_new(j, "stderr", sbx_json_lossy_string(r->errout ? r->errout : "", r->err_len));
    json_object_set_new(j, "duration", json_integer(r->duration_ms));
    json_object_set_new(j, "duration_ms", json_integer(r->duration_ms));
    json_object_set_new(j, "timed_out", json_boolean(r->timed_out));
    json_object_set_new(j, "success", json_boolean(r->exited && r->exit_code == 0 && !r->timed_out));
    if (r->signo)
        json_object_set_new(j, "signal", json_integer(r->signo));
    if (r->truncated)
        json_object_set_new(j, "truncated", json_true());
    return j;
}

/* A QueueJob (rest-wire.md §6), plus nextAttemptAt while a retry waits. */
static json_t *render_job(const sbx_job_rec_t *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(r->id));
    json_object_set_new(j, "sandboxId", json_string(r->sandbox_id));
    json_object_set_new(j, "command", sbx_json_lossy_string(r->command, strlen(r->command)));
    json_object_set_new(j, "status", json_string(r->status));
    json_object_set_new(j, "retries", json_integer(r->retries));
    json_object_set_new(j, "maxRetries", json_integer(r->max_retries));
    json_object_set_new(j, "createdAt", json_integer(r->created_at));
    if (r->has_result)
        json_object_set_new(j, "result", render_result(r));
    if (r->error)
        json_object_set_new(j, "error", sbx_json_lossy_string(r->error, strlen(r->error)));
    if (r->started_at)
        json_object_set_new(j, "startedAt", json_integer(r->started_at));
    if (r->completed_at)
        json_object_set_new(j, "completedAt", json_integer(r->completed_at));
    if (r->next_attempt_at && !strcmp(r->status, "pending"))
        json_object_set_new(j, "nextAttemptAt", json_integer(r->next_attempt_at));
    return j;
}

/* The command of a request: `command` (a shell string) or `cmd` + `args` (an argv). */
static char **parse_command(json_t *p, const char **display, sbx_err_t *err)
{
    const char *command = NULL, *cmd = NULL;
    char **args = NULL, **argv = NULL;
    size_t nargs = 0;
    *display = NULL;
    if (sbx_param_str(p, "command", &command, err) < 0 || sbx_param_str(p, "cmd", &cmd, err) < 0 ||
        sbx_param_strv(p, "args", &args, &nargs, err) < 0)
        return NULL;
    if (command && cmd) {
        sbx_fail(err, SBX_E_INVALID, "S001", "give either command (a shell string) or cmd + args, not both");
    } else if (command && *command) {
        if (strlen(command) != json_string_length(json_object_get(p, "command"))) {
            sbx_fail(err, SBX_E_INVALID, "S001", "command must not contain NUL bytes");
        } else {
            argv = xcalloc(4, sizeof(char *));
            argv[0] = xstrdup("sh");
            argv[1] = xstrdup("-c");
            argv[2] = xstrdup(command);
            *display = command;
        }
    } else if (cmd && *cmd) {
        if (strlen(cmd) != json_string_length(json_object_get(p, "cmd"))) {
            sbx_fail(err, SBX_E_INVALID, "S001", "cmd must not contain NUL bytes");
        } else {
            argv = xcalloc(nargs + 2, sizeof(char *));
            argv[0] = xstrdup(cmd);
            for (size_t i = 0; i < nargs; i++)
                argv[i + 1] = xstrdup(args[i]);
        }
    } else {
        sbx_fail(err, SBX_E_INVALID, "S001", "command is required (or cmd with args)");
    }
    sbx_strv_free(args);
    return argv;
}

static int h_submit(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const sbx_config_t *cfg = sbx_core_config(sbx_api_core(api));
    sbx_queue_t *q = queue_or_fail(err);
    if (!q)
        return -1;
    json_t *p = req->params;
    const char *cwd = NULL, *workdir = NULL, *display = NULL;
    char **argv = NULL, **env = NULL;
    size_t n_env = 0;
    int64_t timeout_s = 0, timeout_ms = 0, max_retries = DEFAULT_MAX_RETRIES;
    int rc = -1;
    argv = parse_command(p, &display, err);
    if (!argv)
        goto out;
    if (sbx_param_str(p, "cwd", &cwd, err) < 0 || sbx_param_str(p, "workdir", &workdir, err) < 0 ||
        sbx_param_env(p, "env", &env, &n_env, err) < 0 ||
        sbx_param_int(p, "maxRetries", 0, SBX_QUEUE_MAX_RETRIES, &max_retries, err) < 0)
        goto out;
    int has_s = sbx_param_int(p, "timeout", 0, INT_MAX, &timeout_s, err);
    int has_ms = has_s < 0 ? -1 : sbx_param_int(p, "timeout_ms", 0, INT64_MAX / 2, &timeout_ms, err);
    if (has_s < 0 || has_ms < 0)
        goto out;
    /* The same budget rule as the blocking exec: capped at max_cmd_timeout_secs. */
    int64_t cap_ms = cfg->max_cmd_timeout_secs * 1000;
    int64_t t = has_ms ? timeout_ms : has_s ? timeout_s * 1000 : cap_ms;
    if (t > cap_ms)
        t = cap_ms;
    if (t <= 0)
        t = 1;

    sbx_job_req_t jr = {
        .argv = argv,
        .env = env,
        .n_env = n_env,
        .cwd = cwd ? cwd : workdir,
        .command = display,
        .timeout_ms = t,
        .max_retries = max_retries,
    };
    sbx_job_rec_t job;
    if (sbx_queue_submit(q, req->path_params[0], &jr, &job, err) < 0)
        goto out;
    resp->json = render_job(&job);
    sbx_job_rec_release(&job);
    rc = 0;
out:
    sbx_strv_free(argv);
    sbx_strv_free(env);
    return rc;
}

static int h_status(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_queue_t *q = queue_or_fail(err);
    sbx_job_rec_t job;
    if (!q || sbx_queue_get(q, req->path_params[0], &job, err) < 0)
        return -1;
    resp->json = render_job(&job);
    sbx_job_rec_release(&job);
    return 0;
}

static int h_cancel(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_queue_t *q = queue_or_fail(err);
    if (!q || sbx_queue_cancel(q, req->path_params[0], err) < 0)
        return -1;
    resp->json = json_pack("{s:s}", "cancelled", req->path_params[0]);
    return 0;
}

static int h_dlq(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_queue_t *q = queue_or_fail(err);
    if (!q)
        return -1;
    int64_t offset = 0, limit = DLQ_DEFAULT_LIMIT, total = 0;
    if (sbx_param_int(req->params, "offset", 0, INT64_MAX / 2, &offset, err) < 0 ||
        sbx_param_int(req->params, "limit", 0, INT64_MAX / 2, &limit, err) < 0)
        return -1;
    if (limit > DLQ_MAX_LIMIT)
        limit = DLQ_MAX_LIMIT;
    sbx_job_rec_t *jobs = NULL;
    size_t n = 0;
    if (sbx_queue_dlq(q, offset, limit, &jobs, &n, &total, err) < 0)
        return -1;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, render_job(&jobs[i]));
    sbx_job_recs_free(jobs, n);
    resp->json = json_pack("{s:o, s:I}", "jobs", arr, "total", (json_int_t)total);
    return 0;
}

static const sbx_route_t sbx_queue_routes[] = {
    {"POST", "/{prefix}/sandboxes/:id/exec/queue", h_submit, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/queue/dlq", h_dlq, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/queue/:jobId/status", h_status, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/queue/:jobId/cancel", h_cancel, false, SBX_DIALECT_REST},
};
const sbx_route_table_t sbx_queue_table = {sbx_queue_routes, SBX_ARRAY_LEN(sbx_queue_routes)};
