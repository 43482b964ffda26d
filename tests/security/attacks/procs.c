/* Attacks on other processes and on the agent: ptrace, process_vm_readv, signals to PID 1,
 * rewriting the agent binary through /proc/1/exe, and fds leaked into the sandbox. */
#include "attack.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* ptrace of PID 1, the agent: tracing it would let code inside run anything with the
 * agent's listening socket and speak for the sandbox to the daemon. */
static void ptrace_agent(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_DENIED("ptrace attach pid 1", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
    EXPECT_DENIED("ptrace seize pid 1", ptrace(PTRACE_SEIZE, 1, NULL, NULL));
    char buf[64];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    EXPECT_DENIED("process_vm_readv pid 1", syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0));
    int fd = open("/proc/1/mem", O_RDWR);
    if (fd >= 0) {
        ESCAPED("open /proc/1/mem", "opened read-write");
        close(fd);
    } else {
        BLOCKED("open /proc/1/mem", "%s", strerror(errno));
    }
    int pfd = (int)syscall(SYS_pidfd_open, 1, 0);
    EXPECT_DENIED("pidfd_getfd of pid 1 fd 3", pfd < 0 ? pfd : syscall(SYS_pidfd_getfd, pfd, 3, 0));
}

/* ptrace of another process of the same sandbox (argv[1]): the documented policy is that
 * this WORKS (debuggers, strace), as in Docker: every process a sandbox can see is its own.
 * Exits 0 when the attach succeeded. */
static void ptrace_sibling(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "ptrace_sibling PID\n");
        exit(2);
    }
    pid_t pid = atoi(argv[1]);
    if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) < 0) {
        printf("DENIED ptrace sibling %d: %s\n", pid, strerror(errno));
        exit(3);
    }
    printf("ALLOWED ptrace sibling %d\n", pid);
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
}

static void kill_agent(int argc, char **argv)
{
    (void)argc, (void)argv;
    /* A namespace's init ignores every signal from inside the namespace that it has no
     * handler for, SIGKILL and SIGSTOP included. */
    int sigs[] = {SIGKILL, SIGTERM, SIGSTOP, SIGINT, SIGHUP, SIGSEGV, SIGABRT};
    char name[48];
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        kill(1, sigs[i]);
        usleep(20000);
        /* PID 1 is still there and not stopped. */
        char path[] = "/proc/1/stat", st[512] = "";
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, st, sizeof st - 1) : -1;
        if (fd >= 0)
            close(fd);
        char *p = n > 0 ? strrchr(st, ')') : NULL;
        snprintf(name, sizeof name, "kill(1, %s)", strsignal(sigs[i]));
        if (p && (p[2] == 'S' || p[2] == 'R'))
            BLOCKED(name, "pid 1 state %c", p[2]);
        else
            ESCAPED(name, "pid 1 state %c", p ? p[2] : '?');
    }
}

static void overwrite_agent(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_FAIL("open /proc/1/exe for write", open("/proc/1/exe", O_WRONLY));
    EXPECT_FAIL("open /proc/1/exe O_RDWR", open("/proc/1/exe", O_RDWR));
    /* Through a read-only fd reopened for writing via /proc/self/fd (the CVE-2019-5736
     * path): the memfd's write seal refuses it even if the open were allowed. */
    int ro = open("/proc/1/exe", O_RDONLY | O_CLOEXEC);
    if (ro < 0) {
        BLOCKED("reopen /proc/1/exe rw via /proc/self/fd", "open ro: %s", strerror(errno));
    } else {
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", ro);
        int rw = open(p, O_WRONLY);
        if (rw < 0) {
            BLOCKED("reopen /proc/1/exe rw via /proc/self/fd", "%s", strerror(errno));
        } else {
            ssize_t w = write(rw, "\x7f", 1);
            if (w == 1)
                ESCAPED("reopen /proc/1/exe rw via /proc/self/fd", "wrote into the agent binary");
            else
                BLOCKED("reopen /proc/1/exe rw via /proc/self/fd", "opened, write: %s", strerror(errno));
            close(rw);
        }
        EXPECT_FAIL("ftruncate /proc/1/exe", ftruncate(ro, 0));
        close(ro);
    }
    /* Our own exe lives on the sandbox's overlay: rewriting it changes nothing outside. */
}

/* Prints every fd of a process with its target, one per line: "FD <pid> <n> <target>". */
static void list_fds(int argc, char **argv)
{
    const char *pid = argc > 1 ? argv[1] : "self";
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%s/fd", pid);
    DIR *d = opendir(dir);
    if (!d) {
        printf("NOFDS %s %s\n", pid, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char link[320], target[512];
        snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n < 0)
            snprintf(target, sizeof target, "<denied: %s>", strerror(errno));
        else
            target[n] = '\0';
        printf("FD %s %s %s\n", pid, e->d_name, target);
        /* A directory fd from outside the new root would let openat("..") walk the host. */
        struct stat st;
        if (stat(link, &st) == 0 && S_ISDIR(st.st_mode)) {
            int fd = open(link, O_RDONLY | O_DIRECTORY);
            int up = fd >= 0 ? openat(fd, "../../../../../../..", O_RDONLY | O_DIRECTORY) : -1;
            if (up >= 0 && faccessat(up, "sys/fs/cgroup/memory/tasks", F_OK, 0) == 0)
                ESCAPED("directory fd", "%s leads outside the sandbox root", link);
        }
    }
    closedir(d);
}

static const struct attack attacks[] = {
    {"ptrace_agent", ptrace_agent}, {"ptrace_sibling", ptrace_sibling},
    {"kill_agent", kill_agent},     {"overwrite_agent", overwrite_agent},
    {"list_fds", list_fds},         {NULL, NULL},
};

int main(int argc, char **argv)
{
    return attack_main(attacks, argc, argv);
}
