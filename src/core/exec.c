/* The buffered exec: a stream (execs.c) read to its end, output collected in memory up to
 * a per-stream cap.  Also the exec slot accounting every exec goes through. */
#include "core/core.h"
#include "core/execs.h"
#include "core/internal.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

int core_exec_begin(sbx_core_t *core, const char *id, const sbx_exec_params_t *p, sbx_sandbox_rt_t *rt,
                    char ***env, char **cwd, sbx_err_t *err)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (l && l->pooled) {
        pthread_mutex_unlock(&core->mu);
        return sbx_fail(err, SBX_E_NOT_FOUND, "S002", "sandbox not found: %s", id);
    }
    if (!l || l->stopping) {
        pthread_mutex_unlock(&core->mu);
        sbx_sandbox_rec_t rec = {0};
        if (sbx_core_get(core, id, &rec, err) < 0)
            return -1;
        sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: %s%s%s%s", l ? "stopping" : rec.status,
                 rec.stop_reason ? " (" : "", rec.stop_reason ? rec.stop_reason : "",
                 rec.stop_reason ? ")" : "");
        sbx_sandbox_rec_release(&rec);
        return -1;
    }
    if (p->max_concurrent > 0 && l->inflight >= p->max_concurrent) {
        pthread_mutex_unlock(&core->mu);
        return sbx_fail(err, SBX_E_CONFLICT, "S003", "another exec is in flight on sandbox %s", id);
    }
    l->inflight++;
    *rt = l->rt;
    *env = core_merge_env(l, p->env, p->n_env);
    if (!p->cwd || !*p->cwd)
        *cwd = xstrdup(l->workdir);
    else if (p->cwd[0] == '/')
        *cwd = xstrdup(p->cwd);
    else
        *cwd = xasprintf("%s/%s", core->cfg->workspace_dir, p->cwd);
    pthread_mutex_unlock(&core->mu);
    core_touch(core, id);
    return 0;
}

void core_exec_end(sbx_core_t *core, const char *id)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (l && l->inflight > 0)
        l->inflight--;
    pthread_mutex_unlock(&core->mu);
    core_touch(core, id);
}

static void append(char **buf, size_t *len, bool *truncated, size_t cap, const uint8_t *data, size_t n)
{
    if (*len >= cap) {
        *truncated = n > 0;
        return;
    }
    if (*len + n > cap) {
        n = cap - *len;
        *truncated = true;
    }
    *buf = xrealloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

int sbx_core_exec(sbx_core_t *core, const char *id, const sbx_exec_params_t *p, sbx_exec_result_t *res,
                  sbx_err_t *err)
{
    memset(res, 0, sizeof *res);
    int64_t t0 = sbx_mono_ms();
    size_t cap = p->max_output ? p->max_output : SBX_EXEC_MAX_OUTPUT;
    sbx_exec_stream_t *s = sbx_core_exec_stream_open(core, id, p, SBX_EXEC_RUN, false, NULL, err);
    if (!s)
        return -1;
    int rc;
    sbx_exec_event_t ev;
    while ((rc = sbx_core_exec_stream_next(s, &ev, err)) == 1) {
        if (ev.type == SBX_EV_STDOUT)
            append(&res->out, &res->out_len, &res->out_truncated, cap, ev.data, ev.len);
        else if (ev.type == SBX_EV_STDERR)
            append(&res->errout, &res->err_len, &res->err_truncated, cap, ev.data, ev.len);
        else if (ev.type == SBX_EV_EXIT) {
            res->exited = ev.info->exited;
            res->exit_code = ev.info->exit_code;
            res->signo = ev.info->signo;
            res->timed_out = ev.info->timed_out;
        }
    }
    sbx_core_exec_stream_close(s);
    res->duration_ms = sbx_mono_ms() - t0;
    if (rc < 0) {
        sbx_exec_result_release(res);
        return -1;
    }
    return 0;
}

void sbx_exec_result_release(sbx_exec_result_t *res)
{
    free(res->out);
    free(res->errout);
    res->out = res->errout = NULL;
    res->out_len = res->err_len = 0;
}
