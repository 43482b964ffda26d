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

/* Receives one plan with its descriptors.  1, 0 on EOF, -1 on error. */
static int recv_plan(int fd, sbx_child_plan_t *plan, int fds[N_FDS])
{
    union {
        char buf[CMSG_SPACE(N_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {plan, sizeof *plan};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n == 0 ? 0 : -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    int got = 0;
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        got = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (got > 0)
        memcpy(fds, CMSG_DATA(c), (size_t)(got < N_FDS ? got : N_FDS) * sizeof(int));
    if ((size_t)n != sizeof *plan || got != N_FDS || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (int i = 0; i < got && i < N_FDS; i++)
            close(fds[i]);
        errno = EPROTO;
        return -1;
    }
    return 1;
}

static void send_reply(int fd, int32_t pid, int pidfd)
{
    reply_t r = {pid};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {&r, sizeof r};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pidfd >= 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
    }
    while (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
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
        int r = recv_plan(fd, &plan, fds);
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
    union {
        char buf[CMSG_SPACE(N_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {(void *)plan, sizeof *plan};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t n;
    do
        n = sendmsg(sp.fd, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof *plan) {
        spawner_lost("cannot send to it");
        pthread_mutex_unlock(&sp.mu);
        return -1;
    }

    reply_t r = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ru;
    iov = (struct iovec){&r, sizeof r};
    struct msghdr rh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ru.buf, .msg_controllen = sizeof ru.buf};
    /* The spawner answers at once; a stuck one is replaced by forking in place. */
    struct pollfd p = {.fd = sp.fd, .events = POLLIN};
    int pr;
    do
        pr = poll(&p, 1, 5000);
    while (pr < 0 && errno == EINTR);
    do
        n = pr > 0 ? recvmsg(sp.fd, &rh, MSG_CMSG_CLOEXEC) : -1;
    while (n < 0 && errno == EINTR && pr > 0);
    int got_fd = -1;
    struct cmsghdr *rc = n > 0 ? CMSG_FIRSTHDR(&rh) : NULL;
    if (rc && rc->cmsg_level == SOL_SOCKET && rc->cmsg_type == SCM_RIGHTS &&
        rc->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(&got_fd, CMSG_DATA(rc), sizeof(int));
    if (n != (ssize_t)sizeof r) {
        if (got_fd >= 0)
            close(got_fd);
        spawner_lost(pr == 0 ? "no answer" : "no reply");
        pthread_mutex_unlock(&sp.mu);
        return -1;
    }
    pthread_mutex_unlock(&sp.mu);
    if (r.pid <= 0 || got_fd < 0) {
        if (got_fd >= 0)
            close(got_fd);
        errno = r.pid < 0 ? -r.pid : EPROTO;
        return -1;
    }
    *pidfd = got_fd;
    return r.pid;
}

void sbx_spawner_stop(void)
{
    pthread_mutex_lock(&sp.mu);
    if (sp.fd >= 0) {
        close(sp.fd);
        sp.fd = -1;
        if (sp.pid > 0)
            while (waitpid(sp.pid, NULL, 0) < 0 && errno == EINTR) {
            }
        sp.pid = 0;
    }
    pthread_mutex_unlock(&sp.mu);
}
