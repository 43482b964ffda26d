/* The kernel floor of a namespace sandbox: the work sandboxd must do to run `true` in a
 * fresh sandbox, with nothing else (no HTTP, no state, no cgroup, no agent).
 *
 * One round:
 *   clone(user, pid, uts, ipc, cgroup [, net]) of a child that waits on a pipe;
 *   the parent writes its uid/gid maps (0 -> 100000, 65536 ids), builds the sandbox root
 *   in its own private mount namespace: the image rootfs as an idmapped read-only detached
 *   tree (open_tree + mount_setattr with the child's user namespace), a tmpfs for the
 *   upper and work directories, an overlay of the two; then lets the child go;
 *   the child unshares a mount namespace (a copy that holds the overlay), binds the
 *   overlay onto itself, pivot_root's into it, mounts a fresh proc (while the old root is
 *   still visible: a user namespace may mount proc only then), detaches the old root and
 *   execs /bin/true;
 *   the parent waits for it and unmounts the three mounts.
 *
 * Usage: floor ROOTFS            serve: one round per stdin line, "net" or "nonet";
 *                                answers the round's wall time in microseconds, or "error
 *                                STEP: MESSAGE".
 *        floor ROOTFS N [net]    N rounds; prints p50 and p99 in ms.
 * Must run as root (it mounts in the host's user namespace). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UID_BASE 100000

static char lower[256], rw[256], upper[256], work[256], root[256];
static const char *rootfs;

static long sys_open_tree(int dfd, const char *path, unsigned flags)
{
    return syscall(SYS_open_tree, dfd, path, flags);
}

static long sys_mount_setattr(int dfd, const char *path, unsigned flags, struct mount_attr *attr)
{
    return syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof *attr);
}

static long sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned flags)
{
    return syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

static int write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, data, strlen(data));
    close(fd);
    return n == (ssize_t)strlen(data) ? 0 : -1;
}

/* Child side: failures leave with a distinct status, reported by the parent. */
#define CHILD_TRY(expr, code)                                                                                \
    do {                                                                                                     \
        if ((expr) < 0)                                                                                      \
            _exit(code);                                                                                     \
    } while (0)

static void child(int go_rd)
{
    char c;
    if (read(go_rd, &c, 1) != 1)
        _exit(90);
    /* The mount namespace is made only now, so that it copies the overlay the parent built. */
    CHILD_TRY(unshare(CLONE_NEWNS), 91);
    CHILD_TRY(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 92);
    /* The copied overlay is locked (it came from a more privileged namespace): a bind of it
     * made here is not, and pivot_root accepts it. */
    CHILD_TRY(mount(root, root, NULL, MS_BIND | MS_REC, NULL), 93);
    CHILD_TRY(chdir(root), 94);
    CHILD_TRY(syscall(SYS_setresgid, 0, 0, 0), 95);
    CHILD_TRY(syscall(SYS_setresuid, 0, 0, 0), 95);
    CHILD_TRY(syscall(SYS_pivot_root, ".", "."), 96);
    /* The old root is stacked on top of "." now; proc must be mounted while it is visible. */
    CHILD_TRY(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), 97);
    CHILD_TRY(umount2(".", MNT_DETACH), 98);
    CHILD_TRY(chdir("/"), 99);
    char *argv[] = {"true", NULL};
    char *envp[] = {"PATH=/bin", NULL};
    execve("/bin/true", argv, envp);
    _exit(100);
}

static const char *step;

static int setup_mounts(pid_t pid)
{
    char path[64], map[64];
    snprintf(map, sizeof map, "0 %d 65536\n", UID_BASE);
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    step = "uid_map";
    if (write_file(path, map) < 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    step = "gid_map";
    if (write_file(path, map) < 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
    int userns = open(path, O_RDONLY | O_CLOEXEC);
    step = "open userns";
    if (userns < 0)
        return -1;
    step = "open_tree";
    int tree = sys_open_tree(AT_FDCWD, rootfs, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0) {
        close(userns);
        return -1;
    }
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        .userns_fd = (uint64_t)userns,
    };
    step = "mount_setattr idmap";
    int rc = sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr);
    close(userns);
    if (rc == 0) {
        step = "move_mount lower";
        rc = sys_move_mount(tree, "", AT_FDCWD, lower, MOVE_MOUNT_F_EMPTY_PATH);
    }
    close(tree);
    if (rc < 0)
        return -1;
    step = "tmpfs";
    if (mount("tmpfs", rw, "tmpfs", MS_NOSUID | MS_NODEV, "size=1024m,mode=0755") < 0)
        return -1;
    step = "upper/work";
    if (mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0 || chown(upper, UID_BASE, UID_BASE) < 0 ||
        chown(work, UID_BASE, UID_BASE) < 0)
        return -1;
    char opts[1024];
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
    step = "overlay";
    return mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, opts);
}

static void teardown_mounts(void)
{
    umount2(root, MNT_DETACH);
    umount2(rw, MNT_DETACH);
    umount2(lower, MNT_DETACH);
}

/* One round; returns microseconds, or -1 with step and errno describing the failure. */
static long round_us(int net)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int go[2];
    step = "pipe";
    if (pipe2(go, O_CLOEXEC) < 0)
        return -1;
    unsigned long flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
    if (net)
        flags |= CLONE_NEWNET;
    step = "clone";
    /* A raw clone without a new stack behaves like fork, with namespaces. */
    pid_t pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(go[1]);
        child(go[0]);
    }
    close(go[0]);
    int ok = setup_mounts(pid) == 0;
    int e = errno;
    if (ok)
        ok = write(go[1], "g", 1) == 1;
    close(go[1]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    teardown_mounts();
    if (!ok) {
        errno = e;
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        static char buf[64];
        snprintf(buf, sizeof buf, "child exit status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        step = buf;
        errno = 0;
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ROOTFS [ROUNDS [net]]\n", argv[0]);
        return 2;
    }
    rootfs = argv[1];
    char dir[] = "/tmp/sandboxd-floor-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(lower, sizeof lower, "%s/lower", dir);
    snprintf(rw, sizeof rw, "%s/rw", dir);
    snprintf(upper, sizeof upper, "%s/rw/upper", dir);
    snprintf(work, sizeof work, "%s/rw/work", dir);
    snprintf(root, sizeof root, "%s/root", dir);
    if (mkdir(lower, 0755) < 0 || mkdir(rw, 0755) < 0 || mkdir(root, 0755) < 0) {
        perror("mkdir");
        return 1;
    }
    /* All mounts happen in a private mount namespace of this process, as sandboxd's do in
     * its own: nothing leaks to the host, and nothing stays behind if this process dies. */
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        perror("private mount namespace");
        return 1;
    }
    int rc = 0;
    if (argc >= 3) {
        int n = atoi(argv[2]), net = argc >= 4 && strcmp(argv[3], "net") == 0;
        long *s = calloc(n > 0 ? n : 1, sizeof *s);
        for (int i = 0; i < n; i++) {
            s[i] = round_us(net);
            if (s[i] < 0) {
                fprintf(stderr, "floor: %s: %s\n", step, strerror(errno));
                rc = 1;
                break;
            }
        }
        if (rc == 0 && n > 0) {
            qsort(s, n, sizeof *s, cmp_long);
            printf("floor%s: n %d p50 %.2f ms p99 %.2f ms\n", net ? " (net)" : "", n, s[n / 2] / 1000.0,
                   s[(n * 99) / 100] / 1000.0);
        }
        free(s);
    } else {
        char line[64];
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (fgets(line, sizeof line, stdin)) {
            long us = round_us(strncmp(line, "net", 3) == 0);
            if (us < 0)
                printf("error %s: %s\n", step, errno ? strerror(errno) : "failed");
            else
                printf("%ld\n", us);
        }
    }
    rmdir(lower);
    rmdir(rw);
    rmdir(root);
    rmdir(dir);
    return rc;
}
