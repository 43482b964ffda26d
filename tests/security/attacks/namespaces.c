/* Namespace attacks: unshare/clone of new namespaces (above all a nested user namespace,
 * in which the caller would become root with a full capability set), setns into PID 1's
 * namespaces, and using the capabilities a nested user namespace hands out. */
#include "attack.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct {
    const char *name;
    int flag;
} ns_flags[] = {
    {"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},  {"pid", CLONE_NEWPID},       {"net", CLONE_NEWNET},
    {"uts", CLONE_NEWUTS},   {"ipc", CLONE_NEWIPC}, {"cgroup", CLONE_NEWCGROUP}, {"time", CLONE_NEWTIME},
};

static int child_fn(void *arg)
{
    (void)arg;
    /* Inside the new namespaces: try to use the capabilities they would grant. */
    if (mount("none", "/tmp", "tmpfs", 0, NULL) == 0)
        return 42;
    return 0;
}

static void do_unshare(int argc, char **argv)
{
    (void)argc, (void)argv;
    char name[64];
    for (size_t i = 0; i < sizeof ns_flags / sizeof ns_flags[0]; i++) {
        snprintf(name, sizeof name, "unshare %s", ns_flags[i].name);
        pid_t p = fork();
        if (p == 0)
            _exit(unshare(ns_flags[i].flag) == 0 ? 1 : 0);
        int st = 0;
        waitpid(p, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            BLOCKED(name, "refused");
        else
            ESCAPED(name, "succeeded");
    }
}

static void nested_userns(int argc, char **argv)
{
    (void)argc, (void)argv;
    /* clone(2) with CLONE_NEWUSER: a nested user namespace would give a fresh full
     * capability set over new mount/net namespaces (the path to many kernel bugs). */
    static char stack[1 << 16];
    pid_t p = clone(child_fn, stack + sizeof stack, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, NULL);
    if (p < 0) {
        BLOCKED("clone newuser|newns", "%s", strerror(errno));
    } else {
        int st = 0;
        waitpid(p, &st, 0);
        ESCAPED("clone newuser|newns", "child ran (mount inside: %s)",
                WIFEXITED(st) && WEXITSTATUS(st) == 42 ? "worked" : "refused");
    }
    p = clone(child_fn, stack + sizeof stack, CLONE_NEWUSER | SIGCHLD, NULL);
    if (p < 0) {
        BLOCKED("clone newuser", "%s", strerror(errno));
    } else {
        waitpid(p, NULL, 0);
        ESCAPED("clone newuser", "a nested user namespace was created");
    }
    /* clone3 carries its flags in memory the filter cannot read: it must be refused as a
     * whole (ENOSYS makes libc fall back to clone, which the filter can check). */
    struct clone_args ca = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
    long r = syscall(SYS_clone3, &ca, sizeof ca);
    if (r == 0)
        _exit(0);
    if (r < 0) {
        BLOCKED("clone3 newuser", "%s", strerror(errno));
    } else {
        waitpid((pid_t)r, NULL, 0);
        ESCAPED("clone3 newuser", "created child %ld", r);
    }
}

static void do_setns(int argc, char **argv)
{
    (void)argc, (void)argv;
    const char *kinds[] = {"user", "mnt", "pid", "net", "uts", "ipc", "cgroup"};
    char path[64], name[64];
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(path, sizeof path, "/proc/1/ns/%s", kinds[i]);
        snprintf(name, sizeof name, "setns %s of pid 1", kinds[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            BLOCKED(name, "open: %s", strerror(errno));
            continue;
        }
        EXPECT_FAIL(name, setns(fd, 0));
        close(fd);
    }
    /* A pidfd as the setns target (5.8+). */
    int pfd = (int)syscall(SYS_pidfd_open, 1, 0);
    if (pfd < 0)
        BLOCKED("setns pidfd of pid 1", "pidfd_open: %s", strerror(errno));
    else
        EXPECT_FAIL("setns pidfd of pid 1", setns(pfd, CLONE_NEWNS | CLONE_NEWNET));
}

static const struct attack attacks[] = {
    {"unshare", do_unshare},
    {"nested_userns", nested_userns},
    {"setns", do_setns},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return attack_main(attacks, argc, argv);
}
