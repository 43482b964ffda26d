/* sandbox-agent: PID 1 inside a sandbox.
 *
 *     sandbox-agent --listen-fd N     serve an already bound, listening unix socket (fd N)
 *     sandbox-agent --socket PATH     bind and listen on PATH itself (tests, debugging)
 *
 * The main process only accepts connections and reaps children; each connection is
 * served by a forked session process (agent/session.h), so a misbehaving operation can
 * never take the agent down.  As init of the sandbox's pid namespace it also reaps every
 * orphan.  It installs no handlers for SIGTERM, SIGINT, SIGHUP and the like on purpose:
 * the kernel drops signals sent to a namespace's init by processes inside it unless init
 * handles them, so code in the sandbox cannot kill the agent.  stdin/stdout/stderr are
 * /dev/null in production; problems are reported over the protocol. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/session.h"
#include "common/util.h"

static __attribute__((noreturn)) void usage(void)
{
    fprintf(stderr, "usage: sandbox-agent --listen-fd N | --socket PATH\n");
    exit(2);
}

static __attribute__((noreturn)) void die(const char *what)
{
    fprintf(stderr, "sandbox-agent: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Makes sure 0, 1 and 2 are open, so that no socket or pipe ever lands on them. */
static void ensure_stdio(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int n = open("/dev/null", O_RDWR);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

static int listen_on_path(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        die(path);
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die(path);
    if (listen(fd, 128) < 0)
        die("listen");
    return fd;
}

static int adopt_listen_fd(const char *arg)
{
    int64_t v;
    if (sbx_parse_i64(arg, &v) < 0 || v < 0 || v > 65535)
        usage();
    int fd = (int)v, on = 0;
    socklen_t len = sizeof on;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0)
        die("--listen-fd");
    if (!on) {
        errno = EINVAL;
        die("--listen-fd is not a listening socket");
    }
    /* Sessions and commands must not inherit it. */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

static void reap_all(int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) > 0)
        ;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

static void accept_one(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        /* Out of fds or memory: back off instead of spinning on a readable socket. */
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
            usleep(10000);
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        sbx_agent_session_run(fd);
    if (pid < 0)
        sbx_agent_send_error(fd, errno, "fork: %s", strerror(errno));
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        usage();
    /* Non-dumpable before anything else: the agent runs as the sandbox's root, the same uid
     * as the commands it starts, so without this any command could PTRACE_ATTACH to PID 1
     * or open /proc/1/mem read-write and take the agent over (its listening socket, every
     * session, what it reports to the daemon).  Tracing a non-dumpable task needs
     * CAP_SYS_PTRACE, which the sandbox's bounding set does not hold.  Sessions fork from
     * here and inherit it; commands they exec become dumpable again, so a sandbox can still
     * debug its own programs.  (Found by tests/security: ptrace_agent.) */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    ensure_stdio();

    /* A daemon that hangs up mid-write must produce EPIPE, not kill the writer. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd");

    int lfd;
    if (!strcmp(argv[1], "--listen-fd"))
        lfd = adopt_listen_fd(argv[2]);
    else if (!strcmp(argv[1], "--socket"))
        lfd = listen_on_path(argv[2]);
    else
        usage();
    int fl = fcntl(lfd, F_GETFL);
    if (fl >= 0)
        fcntl(lfd, F_SETFL, fl | O_NONBLOCK);

    for (;;) {
        struct pollfd fds[2] = {{lfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno != EINTR)
                usleep(10000); /* init must not exit; try again */
            continue;
        }
        if (fds[1].revents)
            reap_all(sfd);
        if (fds[0].revents)
            accept_one(lfd);
    }
}
