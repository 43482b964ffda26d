/* Buffered exec: runs one command through the sandbox's agent and collects its output.
 * The connection carries one EXEC; stdin goes out while output comes back, so a command
 * that writes before reading its input cannot deadlock against us. */
#include "core/core.h"
#include "core/internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "proto/proto.h"

#define STDIN_CHUNK (64u << 10)
/* Grace past the command's own timeout before the daemon gives up on the agent. */
#define AGENT_GRACE_MS 10000

typedef struct {
    int fd;
    const uint8_t *data;
    size_t len;
} stdin_job_t;

static int send_stdin(int fd, const uint8_t *data, size_t len)
{
    for (size_t off = 0; off < len; off += STDIN_CHUNK) {
        size_t n = len - off < STDIN_CHUNK ? len - off : STDIN_CHUNK;
        if (sbx_proto_send_data(fd, SBX_MSG_STDIN, data + off, n) < 0)
            return -1;
    }
    return sbx_proto_send_empty(fd, SBX_MSG_STDIN_EOF);
}

static void *stdin_thread(void *arg)
{
    stdin_job_t *job = arg;
    send_stdin(job->fd, job->data, job->len);
    return NULL;
}

static void append(char **buf, size_t *len, bool *truncated, const uint8_t *data, size_t n)
{
    if (*len >= SBX_EXEC_MAX_OUTPUT) {
        *truncated = true;
        return;
    }
    if (*len + n > SBX_EXEC_MAX_OUTPUT) {
        n = SBX_EXEC_MAX_OUTPUT - *len;
        *truncated = true;
    }
    *buf = xrealloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* Reads frames until EXIT, EOF or the deadline.  Returns 0 with res filled, or -1. */
static int collect(int fd, int64_t deadline_ms, sbx_exec_result_t *res, sbx_err_t *err)
{
    for (;;) {
        int64_t left = deadline_ms - sbx_mono_ms();
        if (left <= 0)
            return sbx_fail(err, SBX_E_TIMEOUT, "S200",
                            "the sandbox's agent did not finish the command in time");
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(left > 60000 ? 60000 : left));
        if (pr < 0 && errno != EINTR)
            return sbx_error(err, errno, "poll agent connection");
        if (pr <= 0)
            continue;
        sbx_frame_hdr_t hdr;
        uint8_t *payload = NULL;
        int r = sbx_frame_read(fd, &hdr, &payload);
        if (r <= 0) {
            free(payload);
            if (r == 0 || errno == ECONNRESET || errno == EPIPE)
                return sbx_fail(err, SBX_E_UNAVAILABLE, "S004", "the sandbox stopped while the command ran");
            return sbx_error(err, errno, "read from the sandbox's agent");
        }
        sbx_field_iter_t it;
        sbx_field_t f;
        int done = 0;
        switch (hdr.type) {
        case SBX_MSG_STDOUT:
        case SBX_MSG_STDERR:
            sbx_field_iter_init(&it, payload, hdr.len);
            while (sbx_field_next(&it, &f) == 1) {
                if (f.tag != SBX_TAG_DATA)
                    continue;
                if (hdr.type == SBX_MSG_STDOUT)
                    append(&res->out, &res->out_len, &res->out_truncated, f.val, f.len);
                else
                    append(&res->errout, &res->err_len, &res->err_truncated, f.val, f.len);
            }
            break;
        case SBX_MSG_EXIT: {
            sbx_exit_info_t info;
            if (sbx_exit_decode(payload, hdr.len, &info) < 0) {
                free(payload);
                return sbx_fail(err, SBX_E_INTERNAL, NULL, "malformed EXIT frame from the sandbox's agent");
            }
            res->exited = true;
            res->exit_code = info.exit_code;
            res->signo = info.signo;
            res->timed_out = info.timed_out;
            done = 1;
            break;
        }
        case SBX_MSG_ERROR: {
            char msg[512] = "unknown error";
            sbx_field_iter_init(&it, payload, hdr.len);
            while (sbx_field_next(&it, &f) == 1)
                if (f.tag == SBX_TAG_MESSAGE)
                    snprintf(msg, sizeof msg, "%.*s", (int)(f.len > 500 ? 500 : f.len), (const char *)f.val);
            free(payload);
            return sbx_fail(err, SBX_E_INVALID, "S001", "the command could not be started: %s", msg);
        }
        default: break; /* STARTED, PONG and unknown frames carry nothing we need here. */
        }
        free(payload);
        if (done)
            return 0;
    }
}

/* Takes a reference on a running sandbox for one exec, copying what the exec needs. */
static int exec_begin(sbx_core_t *core, const char *id, const sbx_exec_params_t *p, sbx_sandbox_rt_t *rt,
                      char ***env, char **cwd, sbx_err_t *err)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (!l || l->stopping) {
        pthread_mutex_unlock(&core->mu);
        sbx_sandbox_rec_t rec = {0};
        if (sbx_store_sandbox_get(core->store, id, &rec, err) < 0)
            return -1;
        sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: %s%s%s", l ? "stopping" : rec.status,
                 rec.stop_reason ? " (" : "", rec.stop_reason ? rec.stop_reason : "");
        if (rec.stop_reason)
            strncat(err->msg, ")", sizeof err->msg - strlen(err->msg) - 1);
        sbx_sandbox_rec_release(&rec);
        return -1;
    }
    l->inflight++;
    *rt = l->rt;
    *env = core_merge_env(l, p->env, p->n_env);
    const char *ws = core->cfg->workspace_dir;
    if (!p->cwd || !*p->cwd)
        *cwd = xstrdup(l->workdir);
    else if (p->cwd[0] == '/')
        *cwd = xstrdup(p->cwd);
    else
        *cwd = xasprintf("%s/%s", ws, p->cwd);
    pthread_mutex_unlock(&core->mu);
    sbx_store_sandbox_touch(core->store, id, sbx_now_ms(), NULL);
    return 0;
}

static void exec_end(sbx_core_t *core, const char *id)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (l && l->inflight > 0)
        l->inflight--;
    pthread_mutex_unlock(&core->mu);
    sbx_store_sandbox_touch(core->store, id, sbx_now_ms(), NULL);
}

int sbx_core_exec(sbx_core_t *core, const char *id, const sbx_exec_params_t *p, sbx_exec_result_t *res,
                  sbx_err_t *err)
{
    memset(res, 0, sizeof *res);
    if (!p->argv || !p->argv[0] || !p->argv[0][0])
        return sbx_fail(err, SBX_E_INVALID, "S001", "command is required");
    sbx_sandbox_rt_t rt;
    char **env = NULL;
    _cleanup_free_ char *cwd = NULL;
    if (exec_begin(core, id, p, &rt, &env, &cwd, err) < 0)
        return -1;

    int64_t t0 = sbx_mono_ms();
    int rc = -1;
    _cleanup_close_ int fd = core->be->connect(&rt, err);
    if (fd < 0) {
        if (!core->be->alive(&rt)) {
            core_mark_failed(core, id, "the sandbox's agent exited");
            sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: its agent exited");
        }
        goto out;
    }

    sbx_exec_req_t req;
    sbx_exec_req_init(&req);
    size_t argc = 0;
    while (p->argv[argc])
        argc++;
    size_t envc = 0;
    while (env[envc])
        envc++;
    req.argv = p->argv;
    req.argc = argc;
    req.env = env;
    req.envc = envc;
    req.cwd = cwd;
    req.timeout_ms = p->timeout_ms;
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &req);
    sbx_msg_end(&m);
    int sent = sbx_msg_send(fd, &m);
    sbx_msg_release(&m);
    if (sent < 0) {
        sbx_error(err, errno, "send the command to the sandbox's agent");
        goto out;
    }

    /* Small stdin fits in the socket buffer; larger stdin is written by a helper thread so
     * that output keeps flowing while the command consumes its input. */
    pthread_t th;
    bool threaded = false;
    stdin_job_t job = {fd, p->stdin_data, p->stdin_len};
    if (p->stdin_len <= STDIN_CHUNK) {
        if (send_stdin(fd, p->stdin_data, p->stdin_len) < 0) {
            sbx_error(err, errno, "send stdin to the sandbox's agent");
            goto out;
        }
    } else if (pthread_create(&th, NULL, stdin_thread, &job) == 0) {
        threaded = true;
    } else {
        sbx_error(err, errno, "start stdin writer");
        goto out;
    }

    rc = collect(fd, t0 + p->timeout_ms + AGENT_GRACE_MS, res, err);
    if (threaded) {
        shutdown(fd, SHUT_RDWR); /* unblocks the writer if the command never read its stdin */
        pthread_join(th, NULL);
    }
    if (rc < 0 && err->kind == SBX_E_UNAVAILABLE && !core->be->alive(&rt))
        core_mark_failed(core, id, "the sandbox's agent exited");
out:
    res->duration_ms = sbx_mono_ms() - t0;
    core_strv_free(env);
    exec_end(core, id);
    if (rc < 0) {
        sbx_exec_result_release(res);
        res->duration_ms = sbx_mono_ms() - t0;
    }
    return rc;
}

void sbx_exec_result_release(sbx_exec_result_t *res)
{
    free(res->out);
    free(res->errout);
    res->out = res->errout = NULL;
    res->out_len = res->err_len = 0;
}
