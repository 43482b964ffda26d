/* Exec sessions (see execs.h).
 *
 * Every exec is an entry in core->execs while its agent connection is open.  The thread
 * that opened the exec reads the connection (a streaming client, a blocking request, or the
 * pump thread of a detached exec); signals and streamed stdin are written to the same
 * connection by other threads under the entry's write lock.  Detached execs write their
 * output to three log files (stdout, stderr, and both in arrival order) and keep their
 * record in the exec store. */
#include "core/execs.h"
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "common/util.h"
#include "proto/proto.h"
#include "store/exec_store.h"

#define STDIN_CHUNK (64u << 10)
/* Grace past the command's own timeout before the daemon gives up on the agent. */
#define AGENT_GRACE_MS 10000

typedef struct exec_ent {
    sbx_exec_info_t info; /* guarded by core->mu */
    int fd;               /* the agent connection; closed by the reader */
    pthread_mutex_t wmu;  /* serialises frames written to fd */
    bool stdin_open;      /* stdin may still be written */
    bool detached;
    int refs; /* users besides the reader (signal, stdin writers) */
    struct exec_ent *next;
} exec_ent_t;

struct sbx_exec_stream {
    sbx_core_t *core;
    exec_ent_t *ent;
    int64_t deadline; /* monotonic ms */
    uint8_t *payload; /* the frame the last event points into */
    bool finished;
    bool exit_delivered;
    sbx_exec_info_t final;
    pthread_t stdin_thread;
    bool stdin_threaded;
    const uint8_t *stdin_data;
    size_t stdin_len;
    bool stdin_eof_after;
    int log_fd[3]; /* detached: stdout, stderr, combined */
};

static const char *kind_prefix(sbx_exec_kind_t k)
{
    switch (k) {
    case SBX_EXEC_BACKGROUND: return "bg";
    case SBX_EXEC_CMD: return "cmd";
    default: return "exec";
    }
}

static bool kind_detached(sbx_exec_kind_t k)
{
    return k == SBX_EXEC_BACKGROUND || k == SBX_EXEC_CMD || k == SBX_EXEC_JOB;
}

static char **strv_copy(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **c = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        c[i] = xstrdup(v[i]);
    return c;
}

void sbx_exec_info_release(sbx_exec_info_t *info)
{
    if (!info)
        return;
    core_strv_free(info->argv);
    free(info->cwd);
    free(info->error);
    info->argv = NULL;
    info->cwd = info->error = NULL;
}

void sbx_exec_infos_free(sbx_exec_info_t *infos, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sbx_exec_info_release(&infos[i]);
    free(infos);
}

static void info_copy(sbx_exec_info_t *dst, const sbx_exec_info_t *src)
{
    *dst = *src;
    dst->argv = strv_copy(src->argv);
    dst->cwd = xstrdup(src->cwd ? src->cwd : "");
    dst->error = src->error ? xstrdup(src->error) : NULL;
}

static void rec_from_info(sbx_exec_rec_t *r, const sbx_exec_info_t *i)
{
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", i->id);
    snprintf(r->sandbox_id, sizeof r->sandbox_id, "%s", i->sandbox_id);
    r->kind = i->kind;
    json_t *a = json_array();
    for (char **p = i->argv; p && *p; p++)
        json_array_append_new(a, json_string(*p));
    r->argv_json = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    r->cwd = xstrdup(i->cwd ? i->cwd : "");
    r->started_at = i->started_at;
    r->finished_at = i->finished_at;
    r->pid = i->pid;
    r->running = i->running;
    r->exited = i->exited;
    r->exit_code = i->exit_code;
    r->signo = i->signo;
    r->timed_out = i->timed_out;
    r->error = i->error ? xstrdup(i->error) : NULL;
    r->stdout_bytes = (int64_t)i->stdout_bytes;
    r->stderr_bytes = (int64_t)i->stderr_bytes;
    r->truncated = i->truncated;
}

static void info_from_rec(sbx_exec_info_t *i, const sbx_exec_rec_t *r)
{
    memset(i, 0, sizeof *i);
    snprintf(i->id, sizeof i->id, "%s", r->id);
    snprintf(i->sandbox_id, sizeof i->sandbox_id, "%s", r->sandbox_id);
    i->kind = (sbx_exec_kind_t)r->kind;
    json_t *a = json_loads(r->argv_json ? r->argv_json : "[]", 0, NULL);
    size_t n = json_array_size(a);
    i->argv = xcalloc(n + 1, sizeof(char *));
    for (size_t k = 0; k < n; k++)
        i->argv[k] =
            xstrdup(json_string_value(json_array_get(a, k)) ? json_string_value(json_array_get(a, k)) : "");
    json_decref(a);
    i->cwd = xstrdup(r->cwd ? r->cwd : "");
    i->started_at = r->started_at;
    i->finished_at = r->finished_at;
    i->pid = r->pid;
    i->running = r->running;
    i->exited = r->exited;
    i->exit_code = r->exit_code;
    i->signo = r->signo;
    i->timed_out = r->timed_out;
    i->error = r->error ? xstrdup(r->error) : NULL;
    i->stdout_bytes = (uint64_t)r->stdout_bytes;
    i->stderr_bytes = (uint64_t)r->stderr_bytes;
    i->truncated = r->truncated;
}

static void persist(sbx_core_t *core, const sbx_exec_info_t *info)
{
    sbx_exec_rec_t rec;
    rec_from_info(&rec, info);
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_exec_store_put(core->xstore, &rec, &err) < 0)
        log_error("exec %s: %s", info->id, err.msg);
    sbx_exec_rec_release(&rec);
}

static exec_ent_t *find_ent(sbx_core_t *core, const char *id)
{
    for (exec_ent_t *e = core->execs; e; e = e->next)
        if (!strcmp(e->info.id, id))
            return e;
    return NULL;
}

static void unlink_ent(sbx_core_t *core, exec_ent_t *target)
{
    for (exec_ent_t **pp = &core->execs; *pp; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            return;
        }
    }
}

static char *log_path(sbx_core_t *core, const char *sandbox_id, const char *exec_id, int which)
{
    static const char *const ext[] = {"out", "err", "all"};
    return xasprintf("%s/%s/%s.%s", core->log_root, sandbox_id, exec_id, ext[which]);
}

/* Ids come from clients: only our own id alphabet may reach a path. */
static bool safe_id(const char *id)
{
    if (!id || !*id || strlen(id) > 60)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

/* ---- writing frames on behalf of other threads ---- */

static int send_locked(exec_ent_t *e, uint16_t type, const void *data, size_t len, bool with_data)
{
    pthread_mutex_lock(&e->wmu);
    int r = with_data ? sbx_proto_send_data(e->fd, type, data, len) : sbx_proto_send_empty(e->fd, type);
    pthread_mutex_unlock(&e->wmu);
    return r;
}

static int send_stdin(exec_ent_t *e, const uint8_t *data, size_t len, bool eof)
{
    for (size_t off = 0; off < len; off += STDIN_CHUNK) {
        size_t n = len - off < STDIN_CHUNK ? len - off : STDIN_CHUNK;
        if (send_locked(e, SBX_MSG_STDIN, data + off, n, true) < 0)
            return -1;
    }
    return eof ? send_locked(e, SBX_MSG_STDIN_EOF, NULL, 0, false) : 0;
}

static void *stdin_thread(void *arg)
{
    sbx_exec_stream_t *s = arg;
    send_stdin(s->ent, s->stdin_data, s->stdin_len, s->stdin_eof_after);
    return NULL;
}

/* Takes a reference on a running entry so another thread can write to its connection. */
static exec_ent_t *ref_running(sbx_core_t *core, const char *exec_id, sbx_err_t *err)
{
    pthread_mutex_lock(&core->mu);
    exec_ent_t *e = find_ent(core, exec_id);
    if (e && e->info.running) {
        e->refs++;
        pthread_mutex_unlock(&core->mu);
        return e;
    }
    pthread_mutex_unlock(&core->mu);
    if (e)
        sbx_fail(err, SBX_E_CONFLICT, "CONFLICT", "command has already finished: %s", exec_id);
    else {
        sbx_exec_rec_t rec;
        sbx_err_t e2 = SBX_ERR_INIT;
        if (safe_id(exec_id) && sbx_exec_store_get(core->xstore, exec_id, &rec, &e2) == 0) {
            sbx_exec_rec_release(&rec);
            sbx_fail(err, SBX_E_CONFLICT, "CONFLICT", "command has already finished: %s", exec_id);
        } else {
            sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec not found: %s", exec_id);
        }
    }
    return NULL;
}

static void unref(sbx_core_t *core, exec_ent_t *e)
{
    pthread_mutex_lock(&core->mu);
    e->refs--;
    pthread_cond_broadcast(&core->exec_cv);
    pthread_mutex_unlock(&core->mu);
}

/* ---- streams ---- */

sbx_exec_stream_t *sbx_core_exec_stream_open(sbx_core_t *core, const char *sandbox_id,
                                             const sbx_exec_params_t *p, sbx_exec_kind_t kind,
                                             bool stdin_open, char *exec_id, sbx_err_t *err)
{
    if (!p->argv || !p->argv[0] || !p->argv[0][0]) {
        sbx_fail(err, SBX_E_INVALID, "S001", "command is required");
        return NULL;
    }
    sbx_sandbox_rt_t rt;
    char **env = NULL;
    char *cwd = NULL;
    if (core_exec_begin(core, sandbox_id, p, &rt, &env, &cwd, err) < 0)
        return NULL;
    int fd = core->be->connect(&rt, err);
    if (fd < 0) {
        if (!core->be->alive(&rt)) {
            core_mark_failed(core, sandbox_id, "the sandbox's agent exited");
            sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: its agent exited");
        }
        goto fail;
    }

    sbx_exec_req_t req;
    sbx_exec_req_init(&req);
    req.argv = p->argv;
    while (p->argv[req.argc])
        req.argc++;
    req.env = env;
    while (env[req.envc])
        req.envc++;
    req.cwd = cwd;
    req.timeout_ms = p->timeout_ms;
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &req);
    int sent = sbx_msg_send(fd, &m);
    sbx_msg_release(&m);
    if (sent < 0) {
        sbx_error(err, errno, "send the command to the sandbox's agent");
        close(fd);
        goto fail;
    }

    sbx_exec_stream_t *s = xcalloc(1, sizeof *s);
    exec_ent_t *e = xcalloc(1, sizeof *e);
    s->core = core;
    s->ent = e;
    s->log_fd[0] = s->log_fd[1] = s->log_fd[2] = -1;
    s->deadline = sbx_mono_ms() + p->timeout_ms + AGENT_GRACE_MS;
    e->fd = fd;
    e->stdin_open = stdin_open;
    e->detached = kind_detached(kind);
    pthread_mutex_init(&e->wmu, NULL);
    sbx_new_id(kind_prefix(kind), e->info.id, sizeof e->info.id);
    snprintf(e->info.sandbox_id, sizeof e->info.sandbox_id, "%s", sandbox_id);
    e->info.kind = kind;
    e->info.argv = strv_copy(p->argv);
    e->info.cwd = xstrdup(p->cwd ? p->cwd : "");
    e->info.started_at = sbx_now_ms();
    e->info.running = true;
    if (exec_id)
        snprintf(exec_id, 64, "%s", e->info.id);

    /* Small stdin fits in the socket buffer; larger stdin is written by a helper thread so
     * that output keeps flowing while the command consumes its input. */
    s->stdin_data = p->stdin_data;
    s->stdin_len = p->stdin_len;
    s->stdin_eof_after = !stdin_open;
    if (p->stdin_len <= STDIN_CHUNK) {
        send_stdin(e, p->stdin_data, p->stdin_len, !stdin_open);
    } else if (pthread_create(&s->stdin_thread, NULL, stdin_thread, s) == 0) {
        s->stdin_threaded = true;
    } else {
        send_stdin(e, p->stdin_data, p->stdin_len, !stdin_open);
    }
    pthread_mutex_lock(&core->mu);
    e->next = core->execs;
    core->execs = e;
    pthread_mutex_unlock(&core->mu);
    core_strv_free(env);
    free(cwd);
    return s;

fail:
    core_strv_free(env);
    free(cwd);
    core_exec_end(core, sandbox_id);
    return NULL;
}

/* Records how the exec ended and wakes waiters. */
static void finish(sbx_exec_stream_t *s, const sbx_exit_info_t *exit, const char *error)
{
    sbx_core_t *core = s->core;
    exec_ent_t *e = s->ent;
    pthread_mutex_lock(&core->mu);
    e->info.running = false;
    e->info.finished_at = sbx_now_ms();
    if (exit) {
        e->info.exited = true;
        e->info.exit_code = exit->exit_code;
        e->info.signo = exit->signo;
        e->info.timed_out = exit->timed_out;
    } else if (error && !e->info.error) {
        e->info.error = xstrdup(error);
    }
    info_copy(&s->final, &e->info);
    pthread_cond_broadcast(&core->exec_cv);
    pthread_mutex_unlock(&core->mu);
    s->finished = true;
    /* Blocking execs leave no record (they answer with everything); streamed ones do, so
     * a late signal or status query learns that the command finished. */
    if (e->info.kind != SBX_EXEC_RUN)
        persist(core, &s->final);
}

int sbx_core_exec_stream_next(sbx_exec_stream_t *s, sbx_exec_event_t *ev, sbx_err_t *err)
{
    return sbx_core_exec_stream_next_idle(s, ev, -1, err);
}

int sbx_core_exec_stream_next_idle(sbx_exec_stream_t *s, sbx_exec_event_t *ev, int64_t idle_ms,
                                   sbx_err_t *err)
{
    exec_ent_t *e = s->ent;
    int64_t idle_until = idle_ms >= 0 ? sbx_mono_ms() + idle_ms : INT64_MAX;
    free(s->payload);
    s->payload = NULL;
    if (s->exit_delivered)
        return 0;
    for (;;) {
        int64_t left = s->deadline - sbx_mono_ms();
        if (left <= 0) {
            finish(s, NULL, "the sandbox's agent did not finish the command in time");
            return sbx_fail(err, SBX_E_TIMEOUT, "S200",
                            "the sandbox's agent did not finish the command in time");
        }
        int64_t idle_left = idle_until - sbx_mono_ms();
        if (idle_left <= 0)
            return 2;
        if (left > idle_left)
            left = idle_left;
        struct pollfd pfd = {.fd = e->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(left > 60000 ? 60000 : left));
        if (pr < 0 && errno != EINTR)
            return sbx_error(err, errno, "poll agent connection");
        if (pr <= 0)
            continue;
        sbx_frame_hdr_t hdr;
        uint8_t *payload = NULL;
        int r = sbx_frame_read(e->fd, &hdr, &payload);
        if (r <= 0) {
            free(payload);
            finish(s, NULL, "the sandbox stopped while the command ran");
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S004", "the sandbox stopped while the command ran");
        }
        sbx_field_iter_t it;
        sbx_field_t f;
        sbx_field_iter_init(&it, payload, hdr.len);
        switch (hdr.type) {
        case SBX_MSG_STARTED:
            while (sbx_field_next(&it, &f) == 1) {
                int64_t pid;
                if (f.tag == SBX_TAG_PID && sbx_field_int(&f, &pid) == 0) {
                    pthread_mutex_lock(&s->core->mu);
                    e->info.pid = pid;
                    pthread_cond_broadcast(&s->core->exec_cv);
                    pthread_mutex_unlock(&s->core->mu);
                }
            }
            break;
        case SBX_MSG_STDOUT:
        case SBX_MSG_STDERR:
            while (sbx_field_next(&it, &f) == 1) {
                if (f.tag != SBX_TAG_DATA || f.len == 0)
                    continue;
                ev->type = hdr.type == SBX_MSG_STDOUT ? SBX_EV_STDOUT : SBX_EV_STDERR;
                ev->data = f.val;
                ev->len = f.len;
                ev->timestamp = sbx_now_ms();
                ev->info = NULL;
                s->payload = payload;
                pthread_mutex_lock(&s->core->mu);
                if (ev->type == SBX_EV_STDOUT)
                    e->info.stdout_bytes += f.len;
                else
                    e->info.stderr_bytes += f.len;
                pthread_mutex_unlock(&s->core->mu);
                return 1;
            }
            break;
        case SBX_MSG_EXIT: {
            sbx_exit_info_t info;
            if (sbx_exit_decode(payload, hdr.len, &info) < 0) {
                free(payload);
                finish(s, NULL, "malformed EXIT frame from the sandbox's agent");
                return sbx_fail(err, SBX_E_INTERNAL, NULL, "malformed EXIT frame from the sandbox's agent");
            }
            free(payload);
            finish(s, &info, NULL);
            s->exit_delivered = true;
            ev->type = SBX_EV_EXIT;
            ev->data = NULL;
            ev->len = 0;
            ev->timestamp = sbx_now_ms();
            ev->info = &s->final;
            return 1;
        }
        case SBX_MSG_ERROR: {
            char msg[512] = "unknown error";
            while (sbx_field_next(&it, &f) == 1)
                if (f.tag == SBX_TAG_MESSAGE)
                    snprintf(msg, sizeof msg, "%.*s", (int)(f.len > 500 ? 500 : f.len), (const char *)f.val);
            free(payload);
            finish(s, NULL, msg);
            return sbx_fail(err, SBX_E_INVALID, "S001", "the command could not be started: %s", msg);
        }
        default: break;
        }
        free(payload);
    }
}

void sbx_core_exec_stream_close(sbx_exec_stream_t *s)
{
    if (!s)
        return;
    sbx_core_t *core = s->core;
    exec_ent_t *e = s->ent;
    if (!s->finished)
        finish(s, NULL, "cancelled: the client went away");
    /* Closing the connection makes the agent kill a command that still runs. */
    shutdown(e->fd, SHUT_RDWR);
    if (s->stdin_threaded)
        pthread_join(s->stdin_thread, NULL);
    /* Writers (signal, stdin) hold references while they use the connection; no new one
     * can start, since the entry no longer runs. */
    pthread_mutex_lock(&core->mu);
    while (e->refs > 0)
        pthread_cond_wait(&core->exec_cv, &core->mu);
    pthread_mutex_unlock(&core->mu);
    close(e->fd);
    for (int i = 0; i < 3; i++)
        if (s->log_fd[i] >= 0)
            close(s->log_fd[i]);
    core_exec_end(core, e->info.sandbox_id);
    /* Unlinking is the last use of the core: shutdown waits for the list to empty and may
     * free the core right after. */
    pthread_mutex_lock(&core->mu);
    unlink_ent(core, e);
    pthread_cond_broadcast(&core->exec_cv);
    pthread_mutex_unlock(&core->mu);
    pthread_mutex_destroy(&e->wmu);
    sbx_exec_info_release(&e->info);
    free(e);
    sbx_exec_info_release(&s->final);
    free(s->payload);
    free(s);
}

/* ---- detached execs ---- */

/* Appends output to the logs within the sandbox's log quota. */
static void log_append(sbx_exec_stream_t *s, int which, const uint8_t *data, size_t len, uint64_t *written)
{
    sbx_core_t *core = s->core;
    uint64_t quota = (uint64_t)core->cfg->log_quota_mb << 20;
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, s->ent->info.sandbox_id);
    uint64_t used = l ? l->log_bytes : 0;
    /* Each byte is written twice (its stream and the combined log). */
    size_t room = used + 2 * (uint64_t)len > quota ? (size_t)((quota > used ? quota - used : 0) / 2) : len;
    if (room < len) {
        s->ent->info.truncated = true;
        len = room;
    }
    if (l)
        l->log_bytes += 2 * (uint64_t)len;
    pthread_mutex_unlock(&core->mu);
    if (!len)
        return;
    if (sbx_write_all(s->log_fd[which], data, len) < 0 || sbx_write_all(s->log_fd[2], data, len) < 0) {
        pthread_mutex_lock(&s->core->mu);
        s->ent->info.truncated = true;
        pthread_mutex_unlock(&s->core->mu);
        return;
    }
    *written += len;
}

static void *pump_main(void *arg)
{
    sbx_exec_stream_t *s = arg;
    sbx_core_t *core = s->core;
    uint64_t written[2] = {0, 0};
    for (;;) {
        sbx_exec_event_t ev;
        sbx_err_t err = SBX_ERR_INIT;
        int r = sbx_core_exec_stream_next(s, &ev, &err);
        if (r <= 0)
            break;
        if (ev.type == SBX_EV_STDOUT || ev.type == SBX_EV_STDERR) {
            int which = ev.type == SBX_EV_STDOUT ? 0 : 1;
            log_append(s, which, ev.data, ev.len, &written[which]);
            pthread_mutex_lock(&core->mu);
            pthread_cond_broadcast(&core->exec_cv);
            pthread_mutex_unlock(&core->mu);
        }
    }
    sbx_core_exec_stream_close(s);
    return NULL;
}

int sbx_core_exec_start(sbx_core_t *core, const char *sandbox_id, const sbx_exec_params_t *p,
                        sbx_exec_kind_t kind, bool stdin_open, sbx_exec_info_t *info, sbx_err_t *err)
{
    if (!kind_detached(kind))
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "exec kind %d cannot run detached", kind);
    char id[64];
    sbx_exec_stream_t *s = sbx_core_exec_stream_open(core, sandbox_id, p, kind, stdin_open, id, err);
    if (!s)
        return -1;
    _cleanup_free_ char *dir = xasprintf("%s/%s", core->log_root, sandbox_id);
    sbx_mkdir_p(dir, 0700, NULL);
    for (int i = 0; i < 3; i++) {
        _cleanup_free_ char *path = log_path(core, sandbox_id, id, i);
        s->log_fd[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        if (s->log_fd[i] < 0) {
            sbx_error(err, errno, "create log `%s`", path);
            sbx_core_exec_stream_close(s);
            return -1;
        }
    }
    pthread_mutex_lock(&core->mu);
    sbx_exec_info_t snap;
    info_copy(&snap, &s->ent->info);
    pthread_mutex_unlock(&core->mu);
    persist(core, &snap);
    sbx_exec_info_release(&snap);

    int rc = sbx_thread_detached(pump_main, s);
    if (rc) {
        sbx_core_exec_stream_close(s);
        return sbx_error(err, rc, "start the output pump");
    }
    /* Answer once the command runs (or could not start), so callers see its pid. */
    return sbx_core_exec_wait(core, id, -2, info, err);
}

/* ---- queries ---- */

int sbx_core_exec_get(sbx_core_t *core, const char *exec_id, sbx_exec_info_t *info, sbx_err_t *err)
{
    pthread_mutex_lock(&core->mu);
    exec_ent_t *e = find_ent(core, exec_id);
    if (e) {
        bool gone = core_deleted_locked(core, e->info.sandbox_id);
        if (!gone)
            info_copy(info, &e->info);
        pthread_mutex_unlock(&core->mu);
        return gone ? sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec not found: %s", exec_id) : 0;
    }
    pthread_mutex_unlock(&core->mu);
    if (!safe_id(exec_id))
        return sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec not found: %s", exec_id);
    sbx_exec_rec_t rec;
    if (sbx_exec_store_get(core->xstore, exec_id, &rec, err) < 0)
        return -1;
    /* The records of a deleted sandbox go with its teardown; until then they are hidden. */
    pthread_mutex_lock(&core->mu);
    bool gone = core_deleted_locked(core, rec.sandbox_id);
    pthread_mutex_unlock(&core->mu);
    if (gone) {
        sbx_exec_rec_release(&rec);
        return sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec not found: %s", exec_id);
    }
    info_from_rec(info, &rec);
    sbx_exec_rec_release(&rec);
    return 0;
}

int sbx_core_exec_list(sbx_core_t *core, const char *sandbox_id, int kind, sbx_exec_info_t **infos, size_t *n,
                       sbx_err_t *err)
{
    sbx_exec_rec_t *recs = NULL;
    size_t nr = 0;
    if (sbx_exec_store_list(core->xstore, sandbox_id, kind, &recs, &nr, err) < 0)
        return -1;
    size_t cap = nr + 8, len = 0;
    sbx_exec_info_t *out = xcalloc(cap, sizeof *out);
    for (size_t i = 0; i < nr; i++)
        info_from_rec(&out[len++], &recs[i]);
    sbx_exec_recs_free(recs, nr);
    pthread_mutex_lock(&core->mu);
    for (exec_ent_t *e = core->execs; e; e = e->next) {
        if (strcmp(e->info.sandbox_id, sandbox_id) != 0 || (kind >= 0 && (int)e->info.kind != kind))
            continue;
        size_t i = 0;
        while (i < len && strcmp(out[i].id, e->info.id) != 0)
            i++;
        if (i < len) {
            sbx_exec_info_release(&out[i]); /* the live entry is fresher */
        } else {
            if (len == cap)
                out = xrealloc(out, (cap *= 2) * sizeof *out);
            len++;
        }
        info_copy(&out[i], &e->info);
    }
    pthread_mutex_unlock(&core->mu);
    *infos = out;
    *n = len;
    return 0;
}

/* timeout_ms: < 0 forever; -2 (internal) until the command started or finished. */
int sbx_core_exec_wait(sbx_core_t *core, const char *exec_id, int64_t timeout_ms, sbx_exec_info_t *info,
                       sbx_err_t *err)
{
    int64_t deadline = timeout_ms >= 0 ? sbx_mono_ms() + timeout_ms : INT64_MAX;
    pthread_mutex_lock(&core->mu);
    for (;;) {
        exec_ent_t *e = find_ent(core, exec_id);
        if (!e || !e->info.running || (timeout_ms == -2 && e->info.pid > 0))
            break;
        int64_t left = deadline - sbx_mono_ms();
        if (left <= 0)
            break;
        if (left > 1000)
            left = 1000;
        struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, left);
        pthread_cond_timedwait(&core->exec_cv, &core->mu, &ts);
    }
    pthread_mutex_unlock(&core->mu);
    return sbx_core_exec_get(core, exec_id, info, err);
}

/* ---- signals and stdin ---- */

int sbx_core_exec_signal(sbx_core_t *core, const char *exec_id, int signo, sbx_err_t *err)
{
    if (signo < 1 || signo > 64)
        return sbx_fail(err, SBX_E_INVALID, "S001", "invalid signal number: %d", signo);
    exec_ent_t *e = ref_running(core, exec_id, err);
    if (!e)
        return -1;
    pthread_mutex_lock(&e->wmu);
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_SIGNAL);
    sbx_msg_add_int(&m, SBX_TAG_SIGNO, signo);
    int r = sbx_msg_send(e->fd, &m);
    sbx_msg_release(&m);
    pthread_mutex_unlock(&e->wmu);
    unref(core, e);
    if (r < 0)
        return sbx_fail(err, SBX_E_CONFLICT, "CONFLICT", "command has already finished: %s", exec_id);
    return 0;
}

static int kill_pid(sbx_core_t *core, const char *sandbox_id, int64_t pid, int signo, sbx_err_t *err)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, sandbox_id);
    sbx_sandbox_rt_t rt = l ? l->rt : (sbx_sandbox_rt_t){0};
    pthread_mutex_unlock(&core->mu);
    if (!l)
        return sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: %s", sandbox_id);
    _cleanup_close_ int fd = core->be->connect(&rt, err);
    if (fd < 0)
        return -1;
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_KILL);
    sbx_msg_add_int(&m, SBX_TAG_PID, pid);
    sbx_msg_add_int(&m, SBX_TAG_SIGNO, signo);
    int r = sbx_msg_send(fd, &m);
    sbx_msg_release(&m);
    if (r < 0)
        return sbx_error(err, errno, "send to the sandbox's agent");
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) <= 0)
        return sbx_fail(err, SBX_E_TIMEOUT, NULL, "the sandbox's agent did not answer");
    sbx_frame_hdr_t hdr;
    uint8_t *payload = NULL;
    if (sbx_frame_read(fd, &hdr, &payload) <= 0)
        return sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "the sandbox's agent closed the connection");
    int rc = 0;
    if (hdr.type == SBX_MSG_ERROR) {
        sbx_field_iter_t it;
        sbx_field_t f;
        int64_t en = 0;
        sbx_field_iter_init(&it, payload, hdr.len);
        while (sbx_field_next(&it, &f) == 1)
            if (f.tag == SBX_TAG_ERRNO)
                sbx_field_int(&f, &en);
        rc = en == ESRCH ? sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "no process %lld in the sandbox",
                                    (long long)pid)
                         : sbx_fail(err, SBX_E_INVALID, "S001", "cannot signal process %lld: %s",
                                    (long long)pid, strerror((int)en));
    }
    free(payload);
    return rc;
}

int sbx_core_exec_interrupt(sbx_core_t *core, const char *sandbox_id, int64_t pid, int signo, sbx_err_t *err)
{
    if (signo < 1 || signo > 64)
        return sbx_fail(err, SBX_E_INVALID, "S001", "invalid signal number: %d", signo);
    sbx_sandbox_rec_t rec = {0};
    if (sbx_store_sandbox_get(core->store, sandbox_id, &rec, err) < 0)
        return -1;
    sbx_sandbox_rec_release(&rec);
    if (pid > 0)
        return kill_pid(core, sandbox_id, pid, signo, err) < 0 ? -1 : 1;
    char(*ids)[64] = NULL;
    size_t n = 0;
    pthread_mutex_lock(&core->mu);
    for (exec_ent_t *e = core->execs; e; e = e->next) {
        if (!strcmp(e->info.sandbox_id, sandbox_id) && e->info.running) {
            ids = xrealloc(ids, (n + 1) * sizeof *ids);
            snprintf(ids[n++], 64, "%s", e->info.id);
        }
    }
    pthread_mutex_unlock(&core->mu);
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        sbx_err_t e2 = SBX_ERR_INIT;
        if (sbx_core_exec_signal(core, ids[i], signo, &e2) == 0)
            count++;
    }
    free(ids);
    return count;
}

int sbx_core_exec_stdin(sbx_core_t *core, const char *exec_id, const void *data, size_t len, bool eof,
                        sbx_err_t *err)
{
    exec_ent_t *e = ref_running(core, exec_id, err);
    if (!e)
        return -1;
    int rc = 0;
    pthread_mutex_lock(&core->mu);
    bool open_ = e->stdin_open;
    if (eof)
        e->stdin_open = false;
    pthread_mutex_unlock(&core->mu);
    if (!open_)
        rc = sbx_fail(err, SBX_E_CONFLICT, "CONFLICT", "the stdin of %s is closed", exec_id);
    else if (send_stdin(e, data, len, eof) < 0)
        rc = sbx_fail(err, SBX_E_CONFLICT, "CONFLICT", "command has already finished: %s", exec_id);
    unref(core, e);
    return rc;
}

/* ---- logs ---- */

static int log_file_of(sbx_core_t *core, const char *exec_id, sbx_log_stream_t stream, char **path,
                       sbx_err_t *err)
{
    if (stream < SBX_LOG_STDOUT || stream > SBX_LOG_COMBINED)
        return sbx_fail(err, SBX_E_INVALID, "S001", "unknown log stream");
    sbx_exec_info_t info;
    if (sbx_core_exec_get(core, exec_id, &info, err) < 0)
        return -1;
    bool detached = kind_detached(info.kind);
    if (detached)
        *path = log_path(core, info.sandbox_id, info.id, (int)stream - 1);
    sbx_exec_info_release(&info);
    if (!detached)
        return sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec %s keeps no logs", exec_id);
    return 0;
}

int sbx_core_exec_log_read(sbx_core_t *core, const char *exec_id, sbx_log_stream_t stream, uint64_t offset,
                           size_t max, char **data, size_t *len, sbx_err_t *err)
{
    _cleanup_free_ char *path = NULL;
    if (log_file_of(core, exec_id, stream, &path, err) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    *data = NULL;
    *len = 0;
    if (fd < 0) {
        if (errno == ENOENT) {
            *data = xstrdup("");
            return 0;
        }
        return sbx_error(err, errno, "open log");
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return sbx_error(err, errno, "stat log");
    uint64_t size = (uint64_t)st.st_size;
    size_t n = offset >= size ? 0 : (size - offset < max ? (size_t)(size - offset) : max);
    char *buf = xmalloc(n + 1);
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(offset + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return 0;
}

int sbx_core_exec_log_wait(sbx_core_t *core, const char *exec_id, sbx_log_stream_t stream, uint64_t offset,
                           int64_t timeout_ms, sbx_err_t *err)
{
    _cleanup_free_ char *path = NULL;
    if (log_file_of(core, exec_id, stream, &path, err) < 0)
        return -1;
    int64_t deadline = sbx_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&core->mu);
    int rc = 0;
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0 && (uint64_t)st.st_size > offset) {
            rc = 1;
            break;
        }
        exec_ent_t *e = find_ent(core, exec_id);
        int64_t left = deadline - sbx_mono_ms();
        if (!e || !e->info.running || left <= 0)
            break;
        struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, left < 200 ? left : 200);
        pthread_cond_timedwait(&core->exec_cv, &core->mu, &ts);
    }
    pthread_mutex_unlock(&core->mu);
    return rc;
}

/* ---- life of the module ---- */

int core_execs_init(sbx_core_t *core, sbx_err_t *err)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&core->exec_cv, &ca);
    pthread_condattr_destroy(&ca);
    core->log_root = xasprintf("%s/logs", core->cfg->state_dir);
    if (sbx_mkdir_p(core->log_root, 0700, err) < 0)
        return -1;
    _cleanup_free_ char *db = xasprintf("%s/sandboxd.db", core->cfg->state_dir);
    core->xstore = sbx_exec_store_open(db, err);
    return core->xstore ? 0 : -1;
}

void core_execs_recover(sbx_core_t *core)
{
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_exec_store_interrupt_running(core->xstore, sbx_now_ms(),
                                         "sandboxd restarted while the command ran", &err) < 0)
        log_error("recovery: %s", err.msg);
}

void core_execs_forget_sandbox(sbx_core_t *core, const char *sandbox_id)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_exec_store_delete_sandbox(core->xstore, sandbox_id, &err);
    if (!safe_id(sandbox_id))
        return;
    _cleanup_free_ char *dir = xasprintf("%s/%s", core->log_root, sandbox_id);
    if (sbx_rm_rf(dir, &err) < 0)
        log_warn("sandbox %s: %s", sandbox_id, err.msg);
}

void core_execs_release(sbx_core_t *core)
{
    /* Readers own their entries; by now every sandbox is stopped, so they are ending. */
    pthread_mutex_lock(&core->mu);
    int64_t deadline = sbx_mono_ms() + 5000;
    while (core->execs && sbx_mono_ms() < deadline) {
        struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, 100);
        pthread_cond_timedwait(&core->exec_cv, &core->mu, &ts);
    }
    pthread_mutex_unlock(&core->mu);
    sbx_exec_store_close(core->xstore);
    core->xstore = NULL;
    pthread_cond_destroy(&core->exec_cv);
    free(core->log_root);
}
