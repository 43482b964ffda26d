/* The spawner (spawner.h). */
#include "backend/ns/spawner.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

/* The daemon's side: one request at a time on the socket pair. */
static struct {
    pthread_mutex_t mu;
    int fd; /* -1: no spawner */
    pid_t pid;
} sp = {PTHREAD_MUTEX_INITIALIZER, -1, 0};

typedef struct {
    int32_t pid; /* C's pid, or -errno */
} reply_t;

enum { N_FDS = 3 }; /* ctl_wr, go_rd, sock_fd */

static void reap_children(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

/* Receives one message of exactly `len` bytes with exactly `want` descriptors (at most
 * N_FDS).  Returns 1, 0 on EOF, -1 on error (EPROTO for a message of another shape, whose
 * descriptors are closed). */
static int recv_with_fds(int fd, void *buf, size_t len, int *fds, int want)
{
    union {
        char buf[CMSG_SPACE(N_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {buf, len};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n == 0 ? 0 : -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    int got = 0, in[N_FDS];
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        got = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (got > N_FDS)
        got = N_FDS;
    if (got > 0)
        memcpy(in, CMSG_DATA(c), (size_t)got * sizeof(int));
    if ((size_t)n != len || got != want || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (int i = 0; i < got; i++)
            close(in[i]);
        errno = EPROTO;
        return -1;
    }
    memcpy(fds, in, (size_t)got * sizeof(int));
    return 1;
}

/* Sends one message with up to N_FDS descriptors.  Returns what sendmsg returned. */
static ssize_t send_with_fds(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
    union {
        char buf[CMSG_SPACE(N_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {(void *)buf, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
}

static void send_reply(int fd, int32_t pid, int pidfd)
{
    reply_t r = {pid};
    send_with_fds(fd, &r, sizeof r, &pidfd, pidfd >= 0 ? 1 : 0);
}

/* The spawner process.  Never returns. */
__attribute__((noreturn)) static void spawner_main(int fd, int agent_fd, pid_t daemon)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != daemon)
        _exit(0);
    prctl(PR_SET_NAME, "sandboxd-spawn", 0, 0, 0);
    /* Keep only stdio, the agent memfd and the socket. */
    int lo = fd < agent_fd ? fd : agent_fd, hi = fd < agent_fd ? agent_fd : fd;
    if (lo > 3)
        syscall(SYS_close_range, 3, lo - 1, 0);
    if (hi > lo + 1)
        syscall(SYS_close_range, lo + 1, hi - 1, 0);
    syscall(SYS_close_range, hi + 1, ~0U, 0);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 200);
        reap_children();
        if (pr < 0 && errno != EINTR)
            _exit(1);
        if (pr <= 0)
            continue;
        sbx_child_plan_t plan;
        int fds[N_FDS];
        int r = recv_with_fds(fd, &plan, sizeof plan, fds, N_FDS);
        if (r == 0)
            _exit(0);
        if (r < 0) {
            if (errno != EPROTO)
                _exit(1);
            send_reply(fd, -EPROTO, -1);
            continue;
        }
        plan.ctl_wr = fds[0];
        plan.go_rd = fds[1];
        plan.sock_fd = fds[2];
        plan.ctl_rd = plan.go_wr = -1;
        plan.agent_fd = agent_fd;
        plan.parent_pid = getpid();
        pid_t c = fork();
        if (c == 0) {
            close(fd);
            sbx_child_main(&plan);
        }
        int pidfd = c > 0 ? (int)syscall(SYS_pidfd_open, c, 0) : -1;
        send_reply(fd, c > 0 ? (pidfd >= 0 ? c : -errno) : -errno, pidfd);
        if (c > 0 && pidfd < 0)
            kill(c, SIGKILL);
        if (pidfd >= 0)
            close(pidfd);
        for (int i = 0; i < N_FDS; i++)
            close(fds[i]);
    }
}

int sbx_spawner_start(int agent_fd, sbx_err_t *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return sbx_error(err, errno, "spawner: socketpair");
    pid_t daemon = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return sbx_error(err, e, "spawner: fork");
    }
    if (pid == 0) {
        close(sv[0]);
        spawner_main(sv[1], agent_fd, daemon);
    }
    close(sv[1]);
    pthread_mutex_lock(&sp.mu);
    sp.fd = sv[0];
    sp.pid = pid;
    pthread_mutex_unlock(&sp.mu);
    return 0;
}

/* Called with sp.mu held. */
static void spawner_lost(const char *why)
{
    log_warn("sandbox spawner lost (%s); sandboxes are now forked by the daemon itself", why);
    close(sp.fd);
    sp.fd = -1;
    if (sp.pid > 0) {
        kill(sp.pid, SIGKILL);
        while (waitpid(sp.pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    sp.pid = 0;
}

pid_t sbx_spawner_spawn(const sbx_child_plan_t *plan, int *pidfd)
{
    *pidfd = -1;
    pthread_mutex_lock(&sp.mu);
    if (sp.fd < 0) {
        pthread_mutex_unlock(&sp.mu);
        return -1;
    }
    int fds[N_FDS] = {plan->ctl_wr, plan->go_rd, plan->sock_fd};
    ssize_t n = send_with_fds(sp.fd, plan, sizeof *plan, fds, N_FDS);
    if (n != (ssize_t)sizeof *plan) {
        spawner_lost("cannot send to it");
        pthread_mutex_unlock(&sp.mu);
        return -1;
    }

    /* The spawner answers at once; a stuck one is replaced by forking in place.  A reply
     * carries C's pidfd, or no descriptor and -errno when the fork failed. */
    reply_t r = {0};
    int got_fd = -1;
    struct pollfd p = {.fd = sp.fd, .events = POLLIN};
    int pr;
    do
        pr = poll(&p, 1, 5000);
    while (pr < 0 && errno == EINTR);
    int rr = pr > 0 ? recv_with_fds(sp.fd, &r, sizeof r, &got_fd, 1) : -1;
    if (rr <= 0 && !(rr < 0 && errno == EPROTO && r.pid < 0)) {
        spawner_lost(pr == 0 ? "no answer" : "no reply");
        pthread_mutex_unlock(&sp.mu);
        return -1;
    }
    pthread_mutex_unlock(&sp.mu);
    if (r.pid <= 0) {
        if (got_fd >= 0)
            close(got_fd);
        errno = r.pid < 0 ? (int)-r.pid : EPROTO;
        return -1;
    }
    *pidfd = got_fd;
    return r.pid;
}
