/* Running one command for an EXEC request: the child's setup between fork and exec, and
 * the session's event loop that moves bytes between the connection and the command. */
#include "agent/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/session.h"
#include "common/util.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

#define FIELD_HDR_LEN 6
#define DATA_HDR_LEN (SBX_PROTO_HDR_LEN + FIELD_HDR_LEN)
/* Output is read and framed in chunks this large; the pipes are grown to hold several, so a
 * fast writer is not woken for every 64 KiB. */
#define OUT_CHUNK (256 * 1024)
#define OUT_PIPE_SIZE (1024 * 1024)
/* After the command exits, output is drained until both pipes reach EOF, but a background
 * process may hold them open forever: stop after DRAIN_QUIET_NS without data, and in any
 * case DRAIN_MAX_NS after the exit (a chatty orphan would otherwise never let go). */
#define DRAIN_QUIET_NS (50 * 1000000LL)
#define DRAIN_MAX_NS (1000 * 1000000LL)
/* Without a pidfd the command's exit is polled for at this interval. */
#define WAIT_POLL_MS 50

/* Where the child's setup failed; sent with errno over the status pipe. */
enum { STAGE_DUP = 1, STAGE_SETGROUPS, STAGE_SETGID, STAGE_SETUID, STAGE_CHDIR, STAGE_EXEC };

struct child_failure {
    int stage;
    int err;
};

/* ---- the child, between fork and exec -------------------------------------------- */

__attribute__((noreturn)) static void child_fail(int status_fd, int stage)
{
    struct child_failure f = {stage, errno};
    /* One small write to a pipe is atomic; nothing useful can be done if it fails. */
    ssize_t n = write(status_fd, &f, sizeof f);
    (void)n;
    _exit(127);
}

/* Moves fd above 2 so that dup2() onto 0/1/2 never clobbers another pipe end. */
static int fd_above_stdio(int fd)
{
    if (fd > 2)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    return n < 0 ? fd : n;
}

/* Marks every fd from 3 up close-on-exec, which also keeps the status pipe open until
 * the exec itself.  Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC; close by hand then. */
static void close_other_fds(int keep)
{
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    struct rlimit rl;
    long max = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        max = (long)rl.rlim_cur;
    if (max > 65536)
        max = 65536;
    for (int fd = 3; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

/* SIG_IGN survives exec, and the agent ignores SIGPIPE and blocks SIGCHLD. */
static void reset_signals(void)
{
    /* The raw system call, because glibc's sigaction() refuses the two real-time signals it
     * reserves for itself (32 and 33), and an ignored disposition of those is inherited
     * from whatever started the agent just like any other. */
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } ksa = {SIG_DFL, 0, NULL, 0};
    for (int s = 1; s <= 64; s++)
        if (s != SIGKILL && s != SIGSTOP)
            syscall(SYS_rt_sigaction, s, &ksa, NULL, sizeof ksa.mask);
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
}

/* Switches identity only when asked for a different one, so that a request carrying the
 * agent's own uid/gid (e.g. 0 from a zero-initialised request) never needs privileges. */
static void set_ids(const sbx_exec_req_t *req, int status_fd)
{
    bool new_gid = req->gid >= 0 && (gid_t)req->gid != getegid();
    bool new_uid = req->uid >= 0 && (uid_t)req->uid != geteuid();
    if (!new_gid && !new_uid)
        return;
    /* Supplementary groups of the agent (root) must not follow the command. */
    if (setgroups(0, NULL) < 0)
        child_fail(status_fd, STAGE_SETGROUPS);
    if (new_gid && setgid((gid_t)req->gid) < 0)
        child_fail(status_fd, STAGE_SETGID);
    if (new_uid && setuid((uid_t)req->uid) < 0)
        child_fail(status_fd, STAGE_SETUID);
}

__attribute__((noreturn)) static void exec_child(const sbx_exec_req_t *req, int in_r, int out_w, int err_w,
                                                 int status_fd)
{
    /* Its own session and process group: signals and kills address the whole tree. */
    setsid();
    status_fd = fd_above_stdio(status_fd);
    in_r = fd_above_stdio(in_r);
    out_w = fd_above_stdio(out_w);
    err_w = fd_above_stdio(err_w);
    set_ids(req, status_fd);
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        child_fail(status_fd, STAGE_DUP);
    close_other_fds(status_fd);
    reset_signals();
    if (req->cwd && chdir(req->cwd) < 0)
        child_fail(status_fd, STAGE_CHDIR);
    /* Exactly the request's environment; execvp then searches its PATH (glibc falls back
     * to /bin:/usr/bin when there is none). */
    environ = req->env;
    execvp(req->argv[0], req->argv);
    child_fail(status_fd, STAGE_EXEC);
}

/* ---- reporting a command that could not start ----------------------------------- */

static int64_t elapsed_ms(int64_t start_ns)
{
    return (sbx_mono_ns() - start_ns) / 1000000;
}

static void send_exit(int sock, int64_t code, int64_t signo, bool timed_out, int64_t dur_ms)
{
    sbx_msg_t m = {0};
    sbx_exit_info_t info = {code, signo, timed_out, dur_ms};
    sbx_exit_encode(&m, &info);
    sbx_msg_send(sock, &m);
    sbx_msg_release(&m);
}

/* Reports like a shell would: a STDERR line and exit code 127 for a missing command,
 * 126 for anything else (not executable, bad cwd, identity switch refused). */
static void report_start_failure(int sock, const sbx_exec_req_t *req, const struct child_failure *f,
                                 int64_t start_ns)
{
    char msg[4300];
    const char *why = strerror(f->err);
    switch (f->stage) {
    case STAGE_EXEC: snprintf(msg, sizeof msg, "sandbox-agent: %.4096s: %s\n", req->argv[0], why); break;
    case STAGE_CHDIR: snprintf(msg, sizeof msg, "sandbox-agent: cd %.4096s: %s\n", req->cwd, why); break;
    case STAGE_SETGROUPS: snprintf(msg, sizeof msg, "sandbox-agent: setgroups: %s\n", why); break;
    case STAGE_SETGID:
        snprintf(msg, sizeof msg, "sandbox-agent: setgid %lld: %s\n", (long long)req->gid, why);
        break;
    case STAGE_SETUID:
        snprintf(msg, sizeof msg, "sandbox-agent: setuid %lld: %s\n", (long long)req->uid, why);
        break;
    default: snprintf(msg, sizeof msg, "sandbox-agent: setting up stdio: %s\n", why); break;
    }
    int code = f->stage == STAGE_EXEC && f->err == ENOENT ? 127 : 126;
    if (sbx_proto_send_data(sock, SBX_MSG_STDERR, msg, strlen(msg)) == 0)
        send_exit(sock, code, 0, false, elapsed_ms(start_ns));
}

/* ---- the running command ---------------------------------------------------------- */

struct pump {
    int sock;
    int in_fd, out_fd, err_fd, pidfd;
    pid_t pid;
    bool exited, timed_out, sock_dead;
    int status;
    int64_t start_ns, deadline_ns, exit_ns, last_io_ns, duration_ms;

    /* The incoming frame being assembled from non-blocking reads. */
    uint8_t hdr_raw[SBX_PROTO_HDR_LEN];
    size_t hdr_got, pay_got;
    sbx_frame_hdr_t hdr;
    uint8_t *payload;

    /* Stdin bytes the pipe has not taken yet.  While any are pending the socket is not
     * read, so at most one STDIN frame (<= 1 MiB) is buffered. */
    uint8_t *pend;
    size_t pend_len, pend_off;
    bool eof_after_pend;

    /* Outgoing bytes the socket has not taken yet.  Pipes are not read while any are
     * queued, so this holds at most one output frame plus a few small ones. */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
};

static uint8_t chunk[DATA_HDR_LEN + OUT_CHUNK];

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static bool out_pending(const struct pump *p)
{
    return p->out_off < p->out_len;
}

static void kill_group(struct pump *p)
{
    /* The leader is a session leader, so it cannot leave its group; -pid covers it. */
    kill(-p->pid, SIGKILL);
}

/* Sends as much of the queue as the socket takes without blocking. */
static void flush_out(struct pump *p)
{
    while (out_pending(p) && !p->sock_dead) {
        ssize_t n = send(p->sock, p->out + p->out_off, p->out_len - p->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                p->sock_dead = true;
            return;
        }
        p->out_off += (size_t)n;
        p->last_io_ns = sbx_mono_ns();
    }
    if (!out_pending(p))
        p->out_off = p->out_len = 0;
}

/* Queues a whole frame behind anything already queued, then tries to send. */
static void queue_bytes(struct pump *p, const void *data, size_t len)
{
    if (p->sock_dead)
        return;
    if (p->out_len + len > p->out_cap) {
        size_t cap = p->out_cap ? p->out_cap : 4096;
        while (cap < p->out_len + len)
            cap *= 2;
        p->out = xrealloc(p->out, cap);
        p->out_cap = cap;
    }
    memcpy(p->out + p->out_len, data, len);
    p->out_len += len;
    flush_out(p);
}

static void queue_msg(struct pump *p, sbx_msg_t *m)
{
    size_t len = sbx_msg_end(m);
    queue_bytes(p, m->buf, len);
}

/* Reads one chunk from an output pipe and queues it as a STDOUT/STDERR frame. */
static void pump_output(struct pump *p, int *fd, uint16_t type)
{
    ssize_t n = read(*fd, chunk + DATA_HDR_LEN, OUT_CHUNK);
    if (n < 0) {
        if (errno != EINTR && errno != EAGAIN)
            close_fd(fd);
        return;
    }
    if (n == 0) {
        close_fd(fd);
        return;
    }
    /* The data already sits behind room for the frame and field headers. */
    put_le(chunk, (uint64_t)n + FIELD_HDR_LEN, 4);
    put_le(chunk + 4, type, 2);
    put_le(chunk + 6, 0, 2);
    put_le(chunk + 8, 0, 4);
    put_le(chunk + SBX_PROTO_HDR_LEN, SBX_TAG_DATA, 2);
    put_le(chunk + SBX_PROTO_HDR_LEN + 2, (uint64_t)n, 4);
    p->last_io_ns = sbx_mono_ns();
    queue_bytes(p, chunk, DATA_HDR_LEN + (size_t)n);
}

static void drop_pending_stdin(struct pump *p)
{
    free(p->pend);
    p->pend = NULL;
    p->pend_len = p->pend_off = 0;
}

/* Writes pending stdin without blocking.  A closed reader (EPIPE) discards the rest. */
static void write_stdin(struct pump *p)
{
    while (p->pend && p->pend_off < p->pend_len) {
        ssize_t n = write(p->in_fd, p->pend + p->pend_off, p->pend_len - p->pend_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            drop_pending_stdin(p);
            close_fd(&p->in_fd);
            return;
        }
        p->pend_off += (size_t)n;
    }
    drop_pending_stdin(p);
    if (p->eof_after_pend)
        close_fd(&p->in_fd);
}

/* Takes ownership of a STDIN payload: its DATA fields are packed to the front of the
 * buffer (each value moves backwards, so memmove is safe) and become the pending bytes. */
static void on_stdin(struct pump *p, uint8_t *payload, size_t len)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    size_t packed = 0;
    int r;
    sbx_field_iter_init(&it, payload, len);
    while ((r = sbx_field_next(&it, &f)) > 0) {
        if (f.tag != SBX_TAG_DATA)
            continue;
        memmove(payload + packed, f.val, f.len);
        packed += f.len;
    }
    if (r < 0) {
        p->sock_dead = true; /* a malformed frame ends the connection */
        free(payload);
        return;
    }
    if (p->in_fd < 0 || p->exited || packed == 0) {
        free(payload);
        return;
    }
    p->pend = payload;
    p->pend_len = packed;
    p->pend_off = 0;
    write_stdin(p);
}

static void on_signal(struct pump *p, const uint8_t *payload, size_t len)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    int64_t signo = 0;
    sbx_field_iter_init(&it, payload, len);
    while (sbx_field_next(&it, &f) > 0)
        if (f.tag == SBX_TAG_SIGNO && sbx_field_int(&f, &signo) < 0)
            signo = 0;
    /* Once the leader is reaped its pid may be reused, so the group is left alone. */
    if (signo > 0 && signo < NSIG && !p->exited)
        kill(-p->pid, (int)signo);
}

/* Handles one complete incoming frame; takes ownership of p->payload. */
static void dispatch(struct pump *p)
{
    uint8_t *payload = steal_pointer(&p->payload);
    size_t len = p->hdr.len;
    switch (p->hdr.type) {
    case SBX_MSG_STDIN: on_stdin(p, payload, len); return;
    case SBX_MSG_STDIN_EOF:
        if (p->pend)
            p->eof_after_pend = true;
        else
            close_fd(&p->in_fd);
        break;
    case SBX_MSG_SIGNAL: on_signal(p, payload, len); break;
    case SBX_MSG_PING: {
        sbx_msg_t m = {0};
        sbx_msg_begin(&m, SBX_MSG_PONG);
        sbx_msg_add_int(&m, SBX_TAG_VERSION, SBX_PROTO_VERSION);
        sbx_msg_add_int(&m, SBX_TAG_PID, getppid());
        queue_msg(p, &m);
        sbx_msg_release(&m);
        break;
    }
    default: break; /* unknown or out-of-place messages are ignored, so both sides can grow */
    }
    free(payload);
}

/* Receives without blocking; returns bytes read, or 0 when nothing (more) is available.
 * EOF and errors mark the connection dead. */
static size_t recv_some(struct pump *p, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(p->sock, buf, len, MSG_DONTWAIT);
        if (n > 0)
            return (size_t)n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            p->sock_dead = true;
        return 0;
    }
}

/* Reads and handles frames until the socket has nothing more or stdin is pending. */
static void read_frames(struct pump *p)
{
    while (!p->sock_dead && !(p->pend && !p->exited)) {
        if (p->hdr_got < SBX_PROTO_HDR_LEN) {
            size_t n = recv_some(p, p->hdr_raw + p->hdr_got, SBX_PROTO_HDR_LEN - p->hdr_got);
            if (n == 0)
                return;
            p->hdr_got += n;
            if (p->hdr_got < SBX_PROTO_HDR_LEN)
                continue;
            /* An oversized or malformed frame ends the connection (and the command). */
            if (sbx_frame_hdr_decode(p->hdr_raw, &p->hdr) < 0) {
                p->sock_dead = true;
                return;
            }
            p->payload = xmalloc((size_t)p->hdr.len + 1);
            p->pay_got = 0;
        }
        if (p->pay_got < p->hdr.len) {
            size_t n = recv_some(p, p->payload + p->pay_got, p->hdr.len - p->pay_got);
            if (n == 0)
                return;
            p->pay_got += n;
            if (p->pay_got < p->hdr.len)
                continue;
        }
        p->hdr_got = 0;
        dispatch(p);
    }
}

static void check_exited(struct pump *p)
{
    pid_t r;
    do
        r = waitpid(p->pid, &p->status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r != p->pid)
        return;
    p->exited = true;
    p->exit_ns = p->last_io_ns = sbx_mono_ns();
    p->duration_ms = (p->exit_ns - p->start_ns) / 1000000;
    close_fd(&p->pidfd);
    close_fd(&p->in_fd);
    drop_pending_stdin(p);
}

static int ms_until(int64_t when_ns, int64_t now_ns)
{
    int64_t ms = (when_ns - now_ns + 999999) / 1000000;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

static int min_timeout(int a, int b)
{
    return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

/* Decides whether the loop is over; otherwise returns the poll timeout through *tmo. */
static bool pump_done(struct pump *p, int *tmo)
{
    int64_t now = sbx_mono_ns();
    *tmo = -1;
    if (!p->exited) {
        if (p->deadline_ns && !p->timed_out) {
            if (now >= p->deadline_ns) {
                kill_group(p);
                p->timed_out = true;
            } else {
                *tmo = ms_until(p->deadline_ns, now);
            }
        }
        if (p->pidfd < 0)
            *tmo = min_timeout(*tmo, WAIT_POLL_MS);
        return false;
    }
    if (out_pending(p))
        return false;
    if (p->out_fd < 0 && p->err_fd < 0)
        return true;
    int64_t quiet_end = p->last_io_ns + DRAIN_QUIET_NS, hard_end = p->exit_ns + DRAIN_MAX_NS;
    int64_t end = quiet_end < hard_end ? quiet_end : hard_end;
    if (now >= end)
        return true;
    *tmo = ms_until(end, now);
    return false;
}

static void pump_loop(struct pump *p)
{
    for (;;) {
        int tmo;
        if (p->sock_dead || pump_done(p, &tmo))
            return;
        struct pollfd fds[5];
        int nfds = 0, i_sock, i_in = -1, i_out = -1, i_err = -1, i_pid = -1;
        bool stdin_blocked = p->pend && !p->exited;
        i_sock = nfds;
        fds[nfds++] = (struct pollfd){
            p->sock, (short)((stdin_blocked ? 0 : POLLIN) | (out_pending(p) ? POLLOUT : 0)), 0};
        if (stdin_blocked)
            fds[i_in = nfds++] = (struct pollfd){p->in_fd, POLLOUT, 0};
        if (!out_pending(p) && p->out_fd >= 0)
            fds[i_out = nfds++] = (struct pollfd){p->out_fd, POLLIN, 0};
        if (!out_pending(p) && p->err_fd >= 0)
            fds[i_err = nfds++] = (struct pollfd){p->err_fd, POLLIN, 0};
        if (!p->exited && p->pidfd >= 0)
            fds[i_pid = nfds++] = (struct pollfd){p->pidfd, POLLIN, 0};
        if (poll(fds, (nfds_t)nfds, tmo) < 0) {
            if (errno == EINTR)
                continue;
            p->sock_dead = true; /* cannot happen with valid fds; fail safe */
            return;
        }
        short sre = fds[i_sock].revents;
        if (sre & POLLOUT)
            flush_out(p);
        if (sre & POLLIN)
            read_frames(p);
        else if (sre & (POLLHUP | POLLERR | POLLNVAL))
            p->sock_dead = true; /* the daemon hung up while we were not reading */
        if (i_in >= 0 && fds[i_in].revents)
            write_stdin(p);
        if (i_out >= 0 && fds[i_out].revents && !out_pending(p))
            pump_output(p, &p->out_fd, SBX_MSG_STDOUT);
        if (i_err >= 0 && fds[i_err].revents && !out_pending(p))
            pump_output(p, &p->err_fd, SBX_MSG_STDERR);
        if (!p->exited && (p->pidfd < 0 || (i_pid >= 0 && fds[i_pid].revents)))
            check_exited(p);
    }
}

/* Sends EXIT, waiting for the socket as long as it takes (the daemon may be slow). */
static void finish(struct pump *p)
{
    sbx_exit_info_t info = {0, 0, p->timed_out, p->duration_ms};
    if (WIFSIGNALED(p->status)) {
        info.signo = WTERMSIG(p->status);
        info.exit_code = 128 + info.signo;
    } else {
        info.exit_code = WEXITSTATUS(p->status);
    }
    if (p->timed_out)
        info.exit_code = 124;
    sbx_msg_t m = {0};
    sbx_exit_encode(&m, &info);
    queue_msg(p, &m);
    sbx_msg_release(&m);
    while (out_pending(p) && !p->sock_dead) {
        struct pollfd pfd = {p->sock, POLLOUT, 0};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            break;
        flush_out(p);
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Runs a started command until it has exited and its output has been forwarded. */
static void run_started(int sock, pid_t pid, int in_w, int out_r, int err_r, int64_t start_ns,
                        const sbx_exec_req_t *req)
{
    struct pump p = {
        .sock = sock, .in_fd = in_w, .out_fd = out_r, .err_fd = err_r, .pid = pid, .start_ns = start_ns};
    if (req->timeout_ms > 0)
        p.deadline_ns =
            start_ns + (req->timeout_ms > INT64_MAX / 2000000 ? INT64_MAX / 2 : req->timeout_ms * 1000000);
    /* A pidfd makes the exit pollable with no SIGCHLD handling (Linux >= 5.3). */
    p.pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    set_nonblock(in_w);
    set_nonblock(out_r);
    set_nonblock(err_r);

    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_STARTED);
    sbx_msg_add_int(&m, SBX_TAG_PID, pid);
    queue_msg(&p, &m);
    sbx_msg_release(&m);

    pump_loop(&p);
    if (p.sock_dead) {
        if (!p.exited) {
            kill_group(&p);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
    } else {
        finish(&p);
    }
    close_fd(&p.pidfd);
    close_fd(&p.in_fd);
    close_fd(&p.out_fd);
    close_fd(&p.err_fd);
    drop_pending_stdin(&p);
    free(p.payload);
    free(p.out);
}

void sbx_agent_exec(int sock, const sbx_exec_req_t *req)
{
    if (req->flags != 0) {
        sbx_agent_send_error(sock, EOPNOTSUPP, "unsupported exec flags %lld", (long long)req->flags);
        return;
    }
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, st[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(st, O_CLOEXEC) < 0) {
        sbx_agent_send_error(sock, errno, "pipe: %s", strerror(errno));
        goto out;
    }
    /* Best effort: the default 64 KiB pipe makes a streaming command ping-pong with us. */
    fcntl(out[0], F_SETPIPE_SZ, OUT_PIPE_SIZE);
    fcntl(err[0], F_SETPIPE_SZ, OUT_PIPE_SIZE);
    int64_t start_ns = sbx_mono_ns();
    pid_t pid = fork();
    if (pid < 0) {
        sbx_agent_send_error(sock, errno, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0)
        exec_child(req, in[0], out[1], err[1], st[1]);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&st[1]);

    /* EOF on the status pipe means the exec happened (the pipe was close-on-exec). */
    struct child_failure f;
    ssize_t n;
    do
        n = read(st[0], &f, sizeof f);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof f) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        report_start_failure(sock, req, &f, start_ns);
        goto out;
    }
    run_started(sock, pid, steal_fd(&in[1]), steal_fd(&out[0]), steal_fd(&err[0]), start_ns, req);
out:
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&err[i]);
        close_fd(&st[i]);
    }
}
