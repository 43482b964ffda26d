/* The durable job queue (see queue.h).
 *
 * The store is the queue: workers claim the oldest due pending row with one conditional
 * update, so nothing about which job runs lives only in memory and a restart loses nothing.
 * Memory holds only what wakes the workers: a generation counter bumped by every event
 * that may make a job due (a submit, a job put back to pending), and a condition variable.
 * An idle worker sleeps until the next delayed retry is due, or until kicked. */
#include "core/queue.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

/* Upper bound on the worker pool, whatever the configuration says. */
#define MAX_WORKERS 256
/* How long an idle worker sleeps without a kick: a safety net against clock jumps. */
#define IDLE_WAIT_MS 30000
/* Back-off after the store itself failed, so a broken disk does not spin a worker. */
#define STORE_RETRY_MS 1000

struct sbx_queue {
    sbx_core_t *core;
    sbx_store_t *store;
    const sbx_config_t *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    uint64_t gen;      /* bumped when a job may have become due */
    bool stopping;
    pthread_t *workers;
    size_t n_workers;
};

sbx_queue_t *sbx_queue_new(sbx_core_t *core, sbx_store_t *store, const sbx_config_t *cfg, sbx_err_t *err)
{
    sbx_queue_t *q = xcalloc(1, sizeof *q);
    q->core = core;
    q->store = store;
    q->cfg = cfg;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    return q;
}

void sbx_queue_free(sbx_queue_t *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->workers);
    free(q);
}

static void kick(sbx_queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->gen++;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static bool is_stopping(sbx_queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    bool s = q->stopping;
    pthread_mutex_unlock(&q->mu);
    return s;
}

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

/* ---- JSON text of string vectors (the store keeps argv and env as JSON) ---- */

static char *strv_to_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

/* A NULL-terminated vector from a JSON array of strings; NULL if the text is not one. */
static char **strv_from_json(const char *text, size_t *n_out)
{
    json_t *a = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_array(a)) {
        json_decref(a);
        return NULL;
    }
    size_t n = json_array_size(a);
    char **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s) {
            json_decref(a);
            v[i] = NULL;
            strv_free(v);
            return NULL;
        }
        v[i] = xstrdup(s);
    }
    json_decref(a);
    if (n_out)
        *n_out = n;
    return v;
}

/* ---- running one job ---- */

/* Errors that another attempt cannot fix: the sandbox is gone or not running, or the
 * command itself was refused. */
static bool permanent(const sbx_err_t *e)
{
    return e->kind == SBX_E_NOT_FOUND || e->kind == SBX_E_CONFLICT || e->kind == SBX_E_INVALID ||
           e->kind == SBX_E_FORBIDDEN;
}

static int64_t backoff_ms(const sbx_config_t *cfg, int64_t retries)
{
    int64_t d = cfg->queue_retry_base_ms;
    for (int64_t i = 1; i < retries && d < SBX_QUEUE_MAX_BACKOFF_MS; i++)
        d *= 2;
    return d > SBX_QUEUE_MAX_BACKOFF_MS ? SBX_QUEUE_MAX_BACKOFF_MS : d;
}

static void set_error(sbx_job_rec_t *job, const char *msg)
{
    free(job->error);
    job->error = msg ? xstrdup(msg) : NULL;
}

/* One failed attempt: back to pending after a delay, or failed when out of retries. */
static void attempt_failed(sbx_queue_t *q, sbx_job_rec_t *job, const char *msg, int64_t now)
{
    job->retries++;
    set_error(job, msg);
    job->started_at = 0;
    if (job->retries >= job->max_retries) {
        snprintf(job->status, sizeof job->status, "failed");
        job->completed_at = now;
        job->next_attempt_at = 0;
    } else {
        snprintf(job->status, sizeof job->status, "pending");
        job->next_attempt_at = now + backoff_ms(q->cfg, job->retries);
    }
}

static void store_result(sbx_job_rec_t *job, sbx_exec_result_t *res)
{
    job->has_result = true;
    job->exited = res->exited;
    job->exit_code = res->exit_code;
    job->signo = res->signo;
    job->timed_out = res->timed_out;
    job->duration_ms = res->duration_ms;
    job->truncated = res->out_truncated || res->err_truncated;
    job->out = steal_pointer(&res->out);
    job->out_len = res->out_len;
    job->errout = steal_pointer(&res->errout);
    job->err_len = res->err_len;
    res->out_len = res->err_len = 0;
}

/* Runs a claimed job to its outcome and records it. */
static void run_job(sbx_queue_t *q, sbx_job_rec_t *job)
{
    size_t n_env = 0;
    char **argv = strv_from_json(job->argv_json, NULL);
    char **env = job->env_json ? strv_from_json(job->env_json, &n_env) : NULL;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_exec_result_t res = {0};
    int rc;
    if (!argv || (job->env_json && !env)) {
        rc = sbx_fail(&err, SBX_E_INVALID, "S001", "the stored command of job %s is unreadable", job->id);
    } else {
        sbx_exec_params_t p = {
            .argv = argv,
            .env = env,
            .n_env = n_env,
            .cwd = job->cwd,
            .timeout_ms = job->timeout_ms > 0 ? job->timeout_ms : q->cfg->max_cmd_timeout_secs * 1000,
        };
        log_debug("queue: job %s runs in sandbox %s (attempt %lld)", job->id, job->sandbox_id,
                  (long long)job->retries + 1);
        rc = sbx_core_exec(q->core, job->sandbox_id, &p, &res, &err);
    }
    strv_free(argv);
    strv_free(env);

    int64_t now = sbx_now_ms();
    if (rc == 0) {
        snprintf(job->status, sizeof job->status, "completed");
        store_result(job, &res);
        job->completed_at = now;
        job->next_attempt_at = 0;
        set_error(job, NULL);
    } else if (is_stopping(q)) {
        /* The daemon stopped the sandbox under the command: not the job's fault. */
        snprintf(job->status, sizeof job->status, "pending");
        job->started_at = 0;
        job->next_attempt_at = 0;
    } else if (permanent(&err)) {
        snprintf(job->status, sizeof job->status, "failed");
        set_error(job, err.msg);
        job->completed_at = now;
        job->next_attempt_at = 0;
    } else {
        attempt_failed(q, job, err.msg, now);
    }
    sbx_exec_result_release(&res);

    sbx_err_t serr = SBX_ERR_INIT;
    if (sbx_store_job_settle(q->store, job, &serr) < 0)
        log_error("queue: job %s: recording its outcome failed: %s", job->id, serr.msg);
    else if (!strcmp(job->status, "failed"))
        log_info("queue: job %s failed after %lld retries: %s", job->id, (long long)job->retries,
                 job->error ? job->error : "");
    if (!strcmp(job->status, "pending"))
        kick(q);
}

/* ---- workers ---- */

static void wait_ms(sbx_queue_t *q, int64_t ms)
{
    struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, ms);
    pthread_cond_timedwait(&q->cv, &q->mu, &ts);
}

/* How long to sleep before the next pending job is due (0: one is due now). */
static int64_t idle_delay(sbx_queue_t *q)
{
    sbx_err_t err = SBX_ERR_INIT;
    int64_t at = 0;
    int r = sbx_store_job_next_due(q->store, &at, &err);
    if (r < 0) {
        log_error("queue: %s", err.msg);
        return STORE_RETRY_MS;
    }
    if (r == 0)
        return IDLE_WAIT_MS;
    int64_t d = at - sbx_now_ms();
    return d < 0 ? 0 : d > IDLE_WAIT_MS ? IDLE_WAIT_MS : d;
}

static void *worker_main(void *arg)
{
    sbx_queue_t *q = arg;
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        uint64_t gen = q->gen;
        pthread_mutex_unlock(&q->mu);

        sbx_job_rec_t job;
        sbx_err_t err = SBX_ERR_INIT;
        int r = sbx_store_job_claim(q->store, sbx_now_ms(), &job, &err);
        int64_t delay = 0;
        if (r == 1) {
            run_job(q, &job);
            sbx_job_rec_release(&job);
        } else if (r < 0) {
            log_error("queue: %s", err.msg);
            delay = STORE_RETRY_MS;
        } else {
            delay = idle_delay(q);
        }

        pthread_mutex_lock(&q->mu);
        /* A kick between the claim and now means a job may be due: look again at once. */
        if (delay > 0 && !q->stopping && q->gen == gen)
            wait_ms(q, delay);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* A job found running at start was cut short by a crash: that was one failed attempt. */
static int recover(sbx_queue_t *q, sbx_err_t *err)
{
    sbx_job_rec_t *jobs = NULL;
    size_t n = 0;
    int64_t total = 0;
    if (sbx_store_job_list(q->store, "running", 0, INT64_MAX, &jobs, &n, &total, err) < 0)
        return sbx_error_wrap(err, "recover queue jobs");
    int64_t now = sbx_now_ms();
    for (size_t i = 0; i < n; i++) {
        attempt_failed(q, &jobs[i], "interrupted: sandboxd stopped while the job ran", now);
        /* Recovery retries at once: the delay guards against a failing sandbox, and this
         * failure was the daemon's. */
        if (!strcmp(jobs[i].status, "pending"))
            jobs[i].next_attempt_at = now;
        if (sbx_store_job_settle(q->store, &jobs[i], err) < 0) {
            sbx_job_recs_free(jobs, n);
            return sbx_error_wrap(err, "recover queue job %s", jobs[i].id);
        }
        log_info("queue: job %s was interrupted by a restart: %s (retries %lld/%lld)", jobs[i].id,
                 jobs[i].status, (long long)jobs[i].retries, (long long)jobs[i].max_retries);
    }
    sbx_job_recs_free(jobs, n);
    return 0;
}

int sbx_queue_start(sbx_queue_t *q, sbx_err_t *err)
{
    if (recover(q, err) < 0)
        return -1;
    size_t want = (size_t)(q->cfg->queue_workers < 1             ? 1
                           : q->cfg->queue_workers > MAX_WORKERS ? MAX_WORKERS
                                                                 : q->cfg->queue_workers);
    q->workers = xcalloc(want, sizeof *q->workers);
    for (size_t i = 0; i < want; i++) {
        int rc = pthread_create(&q->workers[i], NULL, worker_main, q);
        if (rc) {
            sbx_queue_stop(q);
            return sbx_error(err, rc, "start queue worker");
        }
        q->n_workers++;
    }
    return 0;
}

void sbx_queue_quiesce(sbx_queue_t *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void sbx_queue_stop(sbx_queue_t *q)
{
    if (!q)
        return;
    sbx_queue_quiesce(q);
    for (size_t i = 0; i < q->n_workers; i++)
        pthread_join(q->workers[i], NULL);
    q->n_workers = 0;
}

/* ---- the API's operations ---- */

static char *join_argv(char *const *argv)
{
    size_t len = 1;
    for (char *const *p = argv; *p; p++)
        len += strlen(*p) + 1;
    char *s = xcalloc(1, len);
    for (char *const *p = argv; *p; p++) {
        if (p != argv)
            strcat(s, " ");
        strcat(s, *p);
    }
    return s;
}

int sbx_queue_submit(sbx_queue_t *q, const char *sandbox_id, const sbx_job_req_t *req, sbx_job_rec_t *out,
                     sbx_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!req->argv || !req->argv[0] || !req->argv[0][0])
        return sbx_fail(err, SBX_E_INVALID, "S001", "command is required");
    if (req->max_retries < 0 || req->max_retries > SBX_QUEUE_MAX_RETRIES)
        return sbx_fail(err, SBX_E_INVALID, "S001", "maxRetries must be between 0 and %d",
                        SBX_QUEUE_MAX_RETRIES);
    if (is_stopping(q))
        return sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "sandboxd is shutting down");
    sbx_sandbox_rec_t sb = {0};
    if (sbx_core_get(q->core, sandbox_id, &sb, err) < 0)
        return -1;
    bool running = sb.status && !strcmp(sb.status, "running");
    if (!running) {
        sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: %s",
                 sb.status ? sb.status : "unknown");
        sbx_sandbox_rec_release(&sb);
        return -1;
    }
    sbx_sandbox_rec_release(&sb);

    size_t argc = 0;
    while (req->argv[argc])
        argc++;
    sbx_new_id("job", out->id, sizeof out->id);
    snprintf(out->sandbox_id, sizeof out->sandbox_id, "%s", sandbox_id);
    out->command = req->command ? xstrdup(req->command) : join_argv(req->argv);
    out->argv_json = strv_to_json(req->argv, argc);
    out->env_json = req->n_env ? strv_to_json(req->env, req->n_env) : NULL;
    out->cwd = req->cwd && *req->cwd ? xstrdup(req->cwd) : NULL;
    out->timeout_ms = req->timeout_ms;
    snprintf(out->status, sizeof out->status, "pending");
    out->max_retries = req->max_retries;
    out->created_at = sbx_now_ms();
    if (sbx_store_job_insert(q->store, out, err) < 0) {
        sbx_job_rec_release(out);
        return -1;
    }
    pthread_mutex_lock(&q->mu);
    q->gen++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int sbx_queue_get(sbx_queue_t *q, const char *job_id, sbx_job_rec_t *out, sbx_err_t *err)
{
    return sbx_store_job_get(q->store, job_id, out, err);
}

int sbx_queue_cancel(sbx_queue_t *q, const char *job_id, sbx_err_t *err)
{
    int r = sbx_store_job_cancel(q->store, job_id, sbx_now_ms(), err);
    if (r != 0)
        return r < 0 ? -1 : 0;
    sbx_job_rec_t job;
    if (sbx_store_job_get(q->store, job_id, &job, err) < 0)
        return -1;
    sbx_fail(err, SBX_E_CONFLICT, NULL, "Job is not pending: %s", job.status);
    sbx_job_rec_release(&job);
    return -1;
}

int sbx_queue_dlq(sbx_queue_t *q, int64_t offset, int64_t limit, sbx_job_rec_t **out, size_t *n,
                  int64_t *total, sbx_err_t *err)
{
    return sbx_store_job_list(q->store, "failed", offset, limit, out, n, total, err);
}
