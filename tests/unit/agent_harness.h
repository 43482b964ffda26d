/* Starting a private sandbox-agent for a unit test: the agent listens on a socket in a
 * temporary directory and dies with the test process.  Shared by the agent's test files. */
#ifndef SBX_TESTS_AGENT_HARNESS_H
#define SBX_TESTS_AGENT_HARNESS_H

#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "common/util.h"
#include "harness.h"

static pid_t agent_pid = -1;
static char tmpdir[64];
static char sock_path[96];

static void cleanup(void)
{
    if (agent_pid > 0)
        kill(agent_pid, SIGKILL);
    if (tmpdir[0]) {
        sbx_err_t err = SBX_ERR_INIT;
        sbx_rm_rf(tmpdir, &err);
    }
}

static int try_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The agent binary under test (SBX_AGENT, default build/sandbox-agent); skips the test
 * when it has not been built. */
static const char *agent_binary(void)
{
    const char *bin = getenv("SBX_AGENT");
    if (!bin)
        bin = "build/sandbox-agent";
    if (access(bin, X_OK) != 0)
        SKIP("agent binary %s not found (build it with `make build/sandbox-agent`)", bin);
    return bin;
}

/* Starts the agent with --socket in a new directory made from `tmpl` (mkdtemp template).
 * It starts with glibc's two reserved real-time signals ignored, as some process managers
 * leave them: commands must still get default dispositions. */
static void start_agent_in(const char *tmpl)
{
    const char *bin = agent_binary();
    snprintf(tmpdir, sizeof tmpdir, "%s", tmpl);
    CHECK(mkdtemp(tmpdir) != NULL);
    atexit(cleanup);
    snprintf(sock_path, sizeof sock_path, "%s/agent.sock", tmpdir);
    pid_t parent = getpid();
    agent_pid = fork();
    CHECK(agent_pid >= 0);
    if (agent_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        struct {
            void *handler;
            unsigned long flags;
            void *restorer;
            uint64_t mask;
        } ign = {SIG_IGN, 0, NULL, 0};
        syscall(SYS_rt_sigaction, 32, &ign, NULL, sizeof ign.mask);
        syscall(SYS_rt_sigaction, 33, &ign, NULL, sizeof ign.mask);
        execl(bin, bin, "--socket", sock_path, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        int fd = try_connect();
        if (fd >= 0) {
            close(fd);
            return;
        }
        usleep(10000);
    }
    CHECK(!"agent did not start listening");
}

#endif
