/* Tests of sandbox-agent driven over its socket with the protocol functions, outside a
 * sandbox: the agent is started with --socket in a temporary directory.  The test process
 * is a child subreaper, so orphans of commands come back to it and can be checked. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "agent_harness.h"
#include "harness.h"
#include "common/util.h"
#include "proto/proto.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Starts a private agent for the calling test; it dies with the test process.  The test
 * process becomes a subreaper so orphans of commands come back to it. */
static void start_agent(void)
{
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    start_agent_in("/tmp/sbx-agent-test-XXXXXX");
}

/* Like start_agent, but the agent runs as PID 1 of new pid and mount namespaces with
 * their own /proc, as in a sandbox.  Needs root. */
static void start_agent_as_init(void)
{
    const char *bin = agent_binary();
    if (geteuid() != 0)
        SKIP("needs root for a pid namespace");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sbx-agent-test-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    atexit(cleanup);
    snprintf(sock_path, sizeof sock_path, "%s/agent.sock", tmpdir);
    agent_pid = fork();
    CHECK(agent_pid >= 0);
    if (agent_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
            _exit(77);
        pid_t init = fork();
        if (init == 0) {
            /* Init dying takes the whole namespace with it. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                _exit(77);
            execl(bin, bin, "--socket", sock_path, (char *)NULL);
            _exit(127);
        }
        int st = 0;
        waitpid(init, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    }
    for (int i = 0; i < 300; i++) {
        int fd = try_connect();
        if (fd >= 0) {
            close(fd);
            return;
        }
        int st;
        if (waitpid(agent_pid, &st, WNOHANG) == agent_pid) {
            agent_pid = -1;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
                SKIP("cannot create pid/mount namespaces here");
            CHECK(!"agent exited");
        }
        usleep(10000);
    }
    CHECK(!"agent did not start listening");
}

static int connect_agent(void)
{
    int fd = try_connect();
    CHECK(fd >= 0);
    return fd;
}

static void send_exec(int fd, char **argv, char **env, const char *cwd, int64_t timeout_ms)
{
    static char *no_env[] = {NULL};
    sbx_exec_req_t req;
    sbx_exec_req_init(&req);
    req.argv = argv;
    req.env = env ? env : no_env;
    req.cwd = (char *)cwd;
    req.timeout_ms = timeout_ms;
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &req);
    CHECK_EQ_INT(sbx_msg_send(fd, &m), 0);
    sbx_msg_release(&m);
}

static void send_signal(int fd, int signo)
{
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_SIGNAL);
    sbx_msg_add_int(&m, SBX_TAG_SIGNO, signo);
    CHECK_EQ_INT(sbx_msg_send(fd, &m), 0);
    sbx_msg_release(&m);
}

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} bytes_t;

static void bytes_add(bytes_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->buf = xrealloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static const char *bytes_str(bytes_t *b)
{
    return b->buf ? (const char *)b->buf : "";
}

typedef struct {
    bytes_t out, err;
    bool started, exited, errored;
    int64_t pid, error_errno;
    char error_msg[512];
    sbx_exit_info_t exit;
    double secs; /* from the EXEC (or from the call) to EXIT */
} result_t;

static void field_data(const uint8_t *p, size_t len, bytes_t *into)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    int r;
    sbx_field_iter_init(&it, p, len);
    while ((r = sbx_field_next(&it, &f)) > 0)
        if (f.tag == SBX_TAG_DATA)
            bytes_add(into, f.val, f.len);
    CHECK(r == 0);
}

static int64_t field_int(const uint8_t *p, size_t len, uint16_t tag)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    int64_t v = -1;
    sbx_field_iter_init(&it, p, len);
    while (sbx_field_next(&it, &f) > 0)
        if (f.tag == tag)
            CHECK(sbx_field_int(&f, &v) == 0);
    return v;
}

/* Handles one frame; returns false once the operation is over (EXIT/ERROR/EOF). */
static bool handle_frame(int fd, result_t *r)
{
    sbx_frame_hdr_t h;
    uint8_t *p = NULL;
    int rc = sbx_frame_read(fd, &h, &p);
    if (rc <= 0)
        return false;
    CHECK(!r->exited);
    switch (h.type) {
    case SBX_MSG_STARTED:
        CHECK(!r->started);
        r->started = true;
        r->pid = field_int(p, h.len, SBX_TAG_PID);
        CHECK(r->pid > 0);
        break;
    case SBX_MSG_STDOUT:
        CHECK(r->started);
        field_data(p, h.len, &r->out);
        break;
    case SBX_MSG_STDERR: field_data(p, h.len, &r->err); break;
    case SBX_MSG_EXIT:
        CHECK_EQ_INT(sbx_exit_decode(p, h.len, &r->exit), 0);
        r->exited = true;
        free(p);
        return false;
    case SBX_MSG_ERROR: {
        r->errored = true;
        r->error_errno = field_int(p, h.len, SBX_TAG_ERRNO);
        bytes_t msg = {0};
        sbx_field_iter_t it;
        sbx_field_t f;
        sbx_field_iter_init(&it, p, h.len);
        while (sbx_field_next(&it, &f) > 0)
            if (f.tag == SBX_TAG_MESSAGE)
                bytes_add(&msg, f.val, f.len);
        snprintf(r->error_msg, sizeof r->error_msg, "%s", bytes_str(&msg));
        free(msg.buf);
        free(p);
        return false;
    }
    default: CHECK(!"unexpected frame type from the agent");
    }
    free(p);
    return true;
}

static void collect(int fd, result_t *r, double t0)
{
    while (handle_frame(fd, r))
        ;
    r->secs = now_s() - t0;
}

/* Runs a command to completion with no stdin. */
static void run(char **argv, char **env, const char *cwd, int64_t timeout_ms, result_t *r)
{
    memset(r, 0, sizeof *r);
    int fd = connect_agent();
    double t0 = now_s();
    send_exec(fd, argv, env, cwd, timeout_ms);
    CHECK_EQ_INT(sbx_proto_send_empty(fd, SBX_MSG_STDIN_EOF), 0);
    collect(fd, r, t0);
    close(fd);
}

static void result_free(result_t *r)
{
    free(r->out.buf);
    free(r->err.buf);
}

/* Waits (reaping orphans handed to us as subreaper) until process group `pgid` is gone. */
static bool group_gone(pid_t pgid, double within_s)
{
    double end = now_s() + within_s;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (kill(-pgid, 0) < 0 && errno == ESRCH)
            return true;
        if (now_s() > end)
            return false;
        usleep(10000);
    }
}

/* Writes a file of `n` bytes whose content encodes each position (and contains NULs). */
static uint8_t *pattern(size_t n)
{
    uint8_t *p = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((i * 2654435761u) >> 13) ^ (uint8_t)(i / 251);
    for (size_t i = 0; i < n; i += 97)
        p[i] = 0;
    return p;
}

/* Reads frames until the command has printed "ready" (its background child exists). */
static void wait_ready(int fd, result_t *r)
{
    while (!strstr(bytes_str(&r->out), "ready\n"))
        CHECK(handle_frame(fd, r));
    CHECK(r->started);
}

#define SH(cmd) ((char *[]){"/bin/sh", "-c", cmd, NULL})

TEST(echo_output)
{
    start_agent();
    result_t r;
    run((char *[]){"/bin/sh", "-c", "echo hello world", NULL}, NULL, NULL, 0, &r);
    CHECK(r.started);
    CHECK(r.exited);
    CHECK_EQ_STR(bytes_str(&r.out), "hello world\n");
    CHECK_EQ_INT(r.err.len, 0);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK_EQ_INT(r.exit.signo, 0);
    CHECK(!r.exit.timed_out);
    result_free(&r);
}

TEST(stdout_and_stderr_are_separate)
{
    start_agent();
    result_t r;
    run(SH("echo out1; echo err1 >&2; echo out2; echo err2 >&2"), NULL, NULL, 0, &r);
    CHECK_EQ_STR(bytes_str(&r.out), "out1\nout2\n");
    CHECK_EQ_STR(bytes_str(&r.err), "err1\nerr2\n");
    result_free(&r);
}

TEST(exit_codes)
{
    start_agent();
    result_t r;
    run(SH("exit 0"), NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    result_free(&r);
    run(SH("exit 3"), NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 3);
    CHECK_EQ_INT(r.exit.signo, 0);
    result_free(&r);
    run(SH("kill -9 $$"), NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 128 + 9);
    CHECK_EQ_INT(r.exit.signo, 9);
    CHECK(!r.exit.timed_out);
    result_free(&r);
    run(SH("sleep 0.3"), NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK(r.exit.duration_ms >= 250 && r.exit.duration_ms < 5000);
    result_free(&r);
}

TEST(stdin_with_nul_bytes_round_trips_through_cat)
{
    start_agent();
    size_t n = 3 * 1024 * 1024 + 7;
    uint8_t *data = pattern(n);
    int fd = connect_agent();
    result_t r = {0};
    double t0 = now_s();
    send_exec(fd, (char *[]){"cat", NULL}, (char *[]){"PATH=/usr/bin:/bin", NULL}, NULL, 0);
    /* A separate writer, so that neither side can deadlock on a full socket buffer. */
    pid_t w = fork();
    CHECK(w >= 0);
    if (w == 0) {
        size_t off = 0, step = 70000;
        while (off < n) {
            size_t k = n - off < step ? n - off : step;
            if (sbx_proto_send_data(fd, SBX_MSG_STDIN, data + off, k) < 0)
                _exit(1);
            off += k;
        }
        _exit(sbx_proto_send_empty(fd, SBX_MSG_STDIN_EOF) < 0);
    }
    collect(fd, &r, t0);
    int st;
    CHECK(waitpid(w, &st, 0) == w && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK_EQ_INT(r.out.len, n);
    CHECK(!memcmp(r.out.buf, data, n));
    close(fd);
    free(data);
    result_free(&r);
}

TEST(env_is_exactly_what_was_sent)
{
    start_agent();
    result_t r;
    /* No PATH at all: execvp falls back to /bin:/usr/bin. */
    run((char *[]){"env", NULL}, (char *[]){"A=1", "B=two words", "EMPTY=", NULL}, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK_EQ_STR(bytes_str(&r.out), "A=1\nB=two words\nEMPTY=\n");
    result_free(&r);
    run((char *[]){"env", NULL}, NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK_EQ_INT(r.out.len, 0);
    result_free(&r);
}

TEST(cwd_is_applied)
{
    start_agent();
    char real[PATH_MAX];
    CHECK(realpath(tmpdir, real) != NULL);
    result_t r;
    run(SH("pwd"), NULL, real, 0, &r);
    char want[PATH_MAX + 2];
    snprintf(want, sizeof want, "%s\n", real);
    CHECK_EQ_STR(bytes_str(&r.out), want);
    result_free(&r);

    run(SH("pwd"), NULL, "/nonexistent-dir-for-test", 0, &r);
    CHECK(!r.started);
    CHECK_EQ_INT(r.exit.exit_code, 126);
    CHECK_EQ_STR(bytes_str(&r.err),
                 "sandbox-agent: cd /nonexistent-dir-for-test: No such file or directory\n");
    result_free(&r);
}

TEST(missing_binary_is_127_with_message)
{
    start_agent();
    result_t r;
    run((char *[]){"no-such-command-xyz", NULL}, (char *[]){"PATH=/usr/bin:/bin", NULL}, NULL, 0, &r);
    CHECK(r.exited);
    CHECK(!r.started);
    CHECK_EQ_INT(r.exit.exit_code, 127);
    CHECK_EQ_STR(bytes_str(&r.err), "sandbox-agent: no-such-command-xyz: No such file or directory\n");
    result_free(&r);

    /* Present but not executable: 126, like a shell. */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/plain", tmpdir);
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(f >= 0);
    close(f);
    run((char *[]){path, NULL}, NULL, NULL, 0, &r);
    CHECK(!r.started);
    CHECK_EQ_INT(r.exit.exit_code, 126);
    CHECK(strstr(bytes_str(&r.err), "Permission denied") != NULL);
    result_free(&r);
}

TEST(timeout_kills_the_process_group)
{
    start_agent();
    result_t r;
    run(SH("sleep 30 & sleep 30"), NULL, NULL, 300, &r);
    CHECK(r.started);
    CHECK_EQ_INT(r.exit.exit_code, 124);
    CHECK(r.exit.timed_out);
    CHECK(r.exit.duration_ms >= 300);
    CHECK(r.secs < 3.0);
    /* The background sleep was in the group and must be gone too. */
    CHECK(group_gone((pid_t)r.pid, 3.0));
    result_free(&r);
}

TEST(signal_frame_terminates_the_command)
{
    start_agent();
    int fd = connect_agent();
    result_t r = {0};
    double t0 = now_s();
    send_exec(fd, (char *[]){"sleep", "30", NULL}, (char *[]){"PATH=/usr/bin:/bin", NULL}, NULL, 0);
    CHECK(handle_frame(fd, &r));
    CHECK(r.started);
    send_signal(fd, SIGTERM);
    collect(fd, &r, t0);
    CHECK(r.exited);
    CHECK_EQ_INT(r.exit.exit_code, 128 + SIGTERM);
    CHECK_EQ_INT(r.exit.signo, SIGTERM);
    CHECK(r.secs < 3.0);
    close(fd);
    result_free(&r);
}

TEST(large_output_arrives_complete_and_in_order)
{
    start_agent();
    size_t n = 20 * 1000 * 1000;
    uint8_t *data = pattern(n);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/big", tmpdir);
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(f >= 0);
    CHECK(sbx_write_all(f, data, n) == 0);
    close(f);
    result_t r;
    run((char *[]){"head", "-c", "20000000", path, NULL}, (char *[]){"PATH=/usr/bin:/bin", NULL}, NULL, 0,
        &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK_EQ_INT(r.out.len, n);
    CHECK(!memcmp(r.out.buf, data, n));
    free(data);
    result_free(&r);
}

TEST(background_child_holding_stdout_does_not_block_exit)
{
    start_agent();
    result_t r;
    run(SH("sleep 5 & echo hi"), NULL, NULL, 0, &r);
    CHECK(r.exited);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    CHECK_EQ_STR(bytes_str(&r.out), "hi\n");
    CHECK(r.secs < 1.5);
    result_free(&r);
}

TEST(concurrent_connections)
{
    start_agent();
    enum { N = 20 };
    int fds[N];
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        fds[i] = connect_agent();
        char env[32];
        snprintf(env, sizeof env, "N=%d", i);
        send_exec(fds[i], SH("echo start-$N; sleep 0.5; echo end-$N >&2; exit $N"), (char *[]){env, NULL},
                  NULL, 0);
    }
    for (int i = 0; i < N; i++) {
        result_t r = {0};
        collect(fds[i], &r, t0);
        char want_out[32], want_err[32];
        snprintf(want_out, sizeof want_out, "start-%d\n", i);
        snprintf(want_err, sizeof want_err, "end-%d\n", i);
        CHECK_EQ_STR(bytes_str(&r.out), want_out);
        CHECK_EQ_STR(bytes_str(&r.err), want_err);
        CHECK_EQ_INT(r.exit.exit_code, i);
        close(fds[i]);
        result_free(&r);
    }
    /* They ran side by side, not one after the other (20 x 0.5 s). */
    CHECK(now_s() - t0 < 4.0);
}

TEST(ping_pong_then_exec)
{
    start_agent();
    int fd = connect_agent();
    CHECK_EQ_INT(sbx_proto_send_empty(fd, SBX_MSG_PING), 0);
    sbx_frame_hdr_t h;
    uint8_t *p;
    CHECK_EQ_INT(sbx_frame_read(fd, &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_PONG);
    CHECK_EQ_INT(field_int(p, h.len, SBX_TAG_VERSION), SBX_PROTO_VERSION);
    /* The agent's own pid (1 when a wrapper runs it in a pid namespace). */
    int64_t pong_pid = field_int(p, h.len, SBX_TAG_PID);
    CHECK(pong_pid == agent_pid || pong_pid == 1);
    free(p);
    /* The connection still accepts its operation afterwards. */
    result_t r = {0};
    send_exec(fd, SH("echo after-ping"), NULL, NULL, 0);
    collect(fd, &r, now_s());
    CHECK_EQ_STR(bytes_str(&r.out), "after-ping\n");
    close(fd);
    result_free(&r);
}

TEST(malformed_exec_gets_error)
{
    start_agent();
    int fd = connect_agent();
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_EXEC);
    sbx_msg_add_str(&m, SBX_TAG_ENV, "A=1"); /* no argv */
    CHECK_EQ_INT(sbx_msg_send(fd, &m), 0);
    sbx_msg_release(&m);
    result_t r = {0};
    collect(fd, &r, now_s());
    CHECK(r.errored);
    CHECK(!r.started);
    CHECK_EQ_INT(r.error_errno, EPROTO);
    CHECK(r.error_msg[0] != 0);
    close(fd);

    /* A first frame that is neither EXEC nor PING is refused too. */
    fd = connect_agent();
    CHECK_EQ_INT(sbx_proto_send_empty(fd, SBX_MSG_STDIN_EOF), 0);
    memset(&r, 0, sizeof r);
    collect(fd, &r, now_s());
    CHECK(r.errored);
    close(fd);
}

TEST(oversized_frame_drops_connection_and_kills_command)
{
    start_agent();
    int fd = connect_agent();
    result_t r = {0};
    send_exec(fd, SH("sleep 30 & echo ready; sleep 30"), NULL, NULL, 0);
    wait_ready(fd, &r);
    uint8_t raw[12] = {0};
    uint32_t big = SBX_PROTO_MAX_PAYLOAD + 1;
    memcpy(raw, &big, 4); /* x86 and arm64 are little-endian like the wire */
    raw[4] = SBX_MSG_STDIN;
    CHECK(write(fd, raw, sizeof raw) == sizeof raw);
    /* The agent hangs up without EXIT. */
    double t0 = now_s();
    collect(fd, &r, t0);
    CHECK(!r.exited);
    CHECK(r.secs < 3.0);
    CHECK(group_gone((pid_t)r.pid, 3.0));
    close(fd);
}

TEST(closing_the_connection_kills_the_command)
{
    start_agent();
    int fd = connect_agent();
    result_t r = {0};
    send_exec(fd, SH("sleep 30 & echo ready; sleep 30"), NULL, NULL, 0);
    wait_ready(fd, &r);
    close(fd);
    CHECK(group_gone((pid_t)r.pid, 3.0));
}

TEST(stdin_to_a_command_that_never_reads_does_not_wedge_the_agent)
{
    start_agent();
    int fd = connect_agent();
    result_t r = {0};
    /* `sleep` never reads stdin: the agent must keep stdin pending, still enforce the
     * timeout and still answer, instead of blocking on the full pipe. */
    send_exec(fd, (char *[]){"sleep", "30", NULL}, (char *[]){"PATH=/usr/bin:/bin", NULL}, NULL, 500);
    pid_t w = fork();
    CHECK(w >= 0);
    if (w == 0) {
        static uint8_t chunk[256 * 1024];
        for (int i = 0; i < 64; i++)
            if (sbx_proto_send_data(fd, SBX_MSG_STDIN, chunk, sizeof chunk) < 0)
                break;
        _exit(0);
    }
    collect(fd, &r, now_s());
    CHECK(r.exited);
    CHECK(r.exit.timed_out);
    CHECK_EQ_INT(r.exit.exit_code, 124);
    CHECK(r.secs < 3.0);
    close(fd);
    kill(w, SIGKILL);
    waitpid(w, NULL, 0);
}

TEST(uid_and_gid_switch)
{
    if (geteuid() != 0)
        SKIP("needs root to switch uid/gid");
    start_agent();
    int fd = connect_agent();
    sbx_exec_req_t req;
    sbx_exec_req_init(&req);
    req.argv = (char *[]){"cat", "/proc/self/status", NULL};
    req.env = (char *[]){"PATH=/usr/bin:/bin", NULL};
    req.uid = 65534;
    req.gid = 65533;
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &req);
    CHECK_EQ_INT(sbx_msg_send(fd, &m), 0);
    sbx_msg_release(&m);
    result_t r = {0};
    collect(fd, &r, now_s());
    CHECK_EQ_INT(r.exit.exit_code, 0);
    const char *s = bytes_str(&r.out);
    CHECK(strstr(s, "\nUid:\t65534\t65534\t65534\t65534\n") != NULL);
    CHECK(strstr(s, "\nGid:\t65533\t65533\t65533\t65533\n") != NULL);
    /* No supplementary groups are left over from the agent. */
    const char *g = strstr(s, "\nGroups:");
    CHECK(g != NULL);
    g += strlen("\nGroups:");
    CHECK(strchr(g, '\n') != NULL);
    CHECK(strspn(g, "\t ") == (size_t)(strchr(g, '\n') - g));
    /* Signals are back to default and unblocked for the command. */
    if (!strstr(s, "\nSigBlk:\t0000000000000000\n") || !strstr(s, "\nSigIgn:\t0000000000000000\n"))
        fprintf(stderr, "  command status:\n%s\n", s);
    CHECK(strstr(s, "\nSigBlk:\t0000000000000000\n") != NULL);
    CHECK(strstr(s, "\nSigIgn:\t0000000000000000\n") != NULL);
    close(fd);
    result_free(&r);
}

TEST(command_gets_only_stdio_fds)
{
    start_agent();
    result_t r;
    /* /proc/self/fd of `ls`-less shells: list via a glob in sh. */
    run(SH("cd /proc/self/fd && echo *"), NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    /* The shell itself may open one fd for the directory it is reading. */
    const char *s = bytes_str(&r.out);
    CHECK(!strncmp(s, "0 1 2", 5));
    CHECK(strlen(s) <= strlen("0 1 2 3\n"));
    result_free(&r);
}

TEST(as_init_it_ignores_signals_from_inside_and_reaps_orphans)
{
    start_agent_as_init();
    result_t r;
    /* Signals from inside the namespace to init are dropped since it has no handlers. */
    run(SH("kill -TERM 1; kill -INT 1; kill -HUP 1; kill -QUIT 1; kill -KILL 1; echo sent"), NULL, NULL, 0,
        &r);
    CHECK_EQ_STR(bytes_str(&r.out), "sent\n");
    result_free(&r);
    /* Orphans are reparented to the agent, which must reap them. */
    run(SH("for i in 1 2 3 4 5 6 7 8; do sleep 0.1 & done; echo forked"), NULL, NULL, 0, &r);
    CHECK_EQ_STR(bytes_str(&r.out), "forked\n");
    result_free(&r);
    usleep(600000);
    run(SH("cat /proc/[0-9]*/stat"), (char *[]){"PATH=/usr/bin:/bin", NULL}, NULL, 0, &r);
    CHECK_EQ_INT(r.exit.exit_code, 0);
    const char *s = bytes_str(&r.out);
    CHECK(strstr(s, "(sandbox-agent) S 0 ") != NULL); /* init is alive, parent 0 */
    CHECK(strstr(s, ") Z ") == NULL);                 /* no zombies */
    CHECK(strstr(s, "(sleep)") == NULL);
    result_free(&r);
    /* And it still answers. */
    int fd = connect_agent();
    CHECK_EQ_INT(sbx_proto_send_empty(fd, SBX_MSG_PING), 0);
    sbx_frame_hdr_t h;
    uint8_t *p;
    CHECK_EQ_INT(sbx_frame_read(fd, &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_PONG);
    CHECK_EQ_INT(field_int(p, h.len, SBX_TAG_PID), 1);
    free(p);
    close(fd);
}

SBX_TEST_MAIN()
