/* Runs between fork and exec: raw syscalls only (see child.h). */
#include "backend/ns/child.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CAPBIT(c) (UINT64_C(1) << (c))
const uint64_t sbx_child_caps = CAPBIT(CAP_CHOWN) | CAPBIT(CAP_DAC_OVERRIDE) | CAPBIT(CAP_FOWNER) |
                                CAPBIT(CAP_FSETID) | CAPBIT(CAP_KILL) | CAPBIT(CAP_SETGID) |
                                CAPBIT(CAP_SETUID) | CAPBIT(CAP_SETPCAP) | CAPBIT(CAP_NET_BIND_SERVICE) |
                                CAPBIT(CAP_SYS_CHROOT) | CAPBIT(CAP_AUDIT_WRITE) | CAPBIT(CAP_SETFCAP);

/* Fixed fds of the agent: the listening socket is its fd 3 (inherited); the agent memfd
 * and the control pipe only live until execveat (close-on-exec). */
enum { FD_SOCK = 3, FD_AGENT = 4, FD_CTL = 5, FD_FIRST_FREE = 6 };

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
static const char *const dev_links[][2] = {
    {"/proc/self/fd", "dev/fd"},       {"/proc/self/fd/0", "dev/stdin"}, {"/proc/self/fd/1", "dev/stdout"},
    {"/proc/self/fd/2", "dev/stderr"}, {"pts/ptmx", "dev/ptmx"},
};
static const char *const proc_masked_files[] = {
    "proc/kcore",       "proc/keys",          "proc/timer_list",
    "proc/sched_debug", "proc/sysrq-trigger", "proc/latency_stats",
};
static const char *const proc_masked_dirs[] = {"proc/acpi", "proc/scsi", "proc/asound"};
static const char *const proc_readonly[] = {"proc/sys", "proc/bus", "proc/fs", "proc/irq"};
static const char *const sys_masked_dirs[] = {"sys/firmware", "sys/devices/virtual/powercap"};

static void send_rec(sbx_child_plan_t *p, int kind, int value, const char *step)
{
    sbx_child_rec_t r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    r.value = value;
    if (step)
        strncpy(r.step, step, sizeof r.step - 1);
    ssize_t n;
    do
        n = write(p->ctl_wr, &r, sizeof r);
    while (n < 0 && errno == EINTR);
}

__attribute__((noreturn)) static void fail(sbx_child_plan_t *p, const char *step)
{
    send_rec(p, SBX_REC_ERROR, errno ? errno : EIO, step);
    _exit(1);
}

#define TRY(p, expr, step)                                                                                   \
    do {                                                                                                     \
        if ((expr) < 0)                                                                                      \
            fail(p, step);                                                                                   \
    } while (0)

/* A mount target from the image must be a real directory: a symlink there could point
 * anywhere in the host tree the process still sees before pivot_root. */
static int ensure_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (lstat(path, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* /dev: a small tmpfs holding bind mounts of the harmless host device nodes (mknod is not
 * allowed in a user namespace), a private devpts instance and a tmpfs /dev/shm. */
static void setup_dev(sbx_child_plan_t *p)
{
    TRY(p, ensure_dir("dev", 0755), "mkdir /dev");
    TRY(p, mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k"), "mount /dev");
    for (size_t i = 0; i < sizeof dev_nodes / sizeof dev_nodes[0]; i++) {
        char dst[32], src[32];
        strcpy(dst, "dev/");
        strcat(dst, dev_nodes[i]);
        strcpy(src, "/dev/");
        strcat(src, dev_nodes[i]);
        int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        TRY(p, fd, "create /dev node");
        close(fd);
        TRY(p, mount(src, dst, NULL, MS_BIND, NULL), "bind /dev node");
    }
    TRY(p, mkdir("dev/pts", 0755), "mkdir /dev/pts");
    TRY(p,
        mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "mount /dev/pts");
    TRY(p, mkdir("dev/shm", 01777), "mkdir /dev/shm");
    TRY(p, mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"),
        "mount /dev/shm");
    for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++)
        TRY(p, symlink(dev_links[i][0], dev_links[i][1]), "symlink in /dev");
}

static int mount_empty_ro(const char *target)
{
    return mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555,size=4k");
}

static int bind_ro(const char *path)
{
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        return -1;
    return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* A fresh proc for the new pid namespace.  It must be mounted while the host's /proc is
 * still visible in this mount namespace: the kernel lets a user namespace mount proc only
 * if an unobstructed proc is already visible (mount_too_revealing), so this runs before
 * pivot_root. */
static void setup_proc(sbx_child_plan_t *p)
{
    TRY(p, ensure_dir("proc", 0555), "mkdir /proc");
    TRY(p, mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount /proc");
    for (size_t i = 0; i < sizeof proc_masked_files / sizeof proc_masked_files[0]; i++)
        if (exists(proc_masked_files[i]))
            TRY(p, mount("/dev/null", proc_masked_files[i], NULL, MS_BIND, NULL), "mask /proc file");
    for (size_t i = 0; i < sizeof proc_masked_dirs / sizeof proc_masked_dirs[0]; i++)
        if (exists(proc_masked_dirs[i]))
            TRY(p, mount_empty_ro(proc_masked_dirs[i]), "mask /proc dir");
    for (size_t i = 0; i < sizeof proc_readonly / sizeof proc_readonly[0]; i++)
        if (exists(proc_readonly[i]))
            TRY(p, bind_ro(proc_readonly[i]), "read-only /proc dir");
}

/* A fresh read-only sysfs: allowed because the sandbox owns its net namespace.  If the
 * kernel refuses, an empty read-only tmpfs keeps /sys from showing the host's. */
static void setup_sys(sbx_child_plan_t *p)
{
    TRY(p, ensure_dir("sys", 0555), "mkdir /sys");
    if (mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        TRY(p, mount_empty_ro("sys"), "mount /sys");
        return;
    }
    for (size_t i = 0; i < sizeof sys_masked_dirs / sizeof sys_masked_dirs[0]; i++)
        if (exists(sys_masked_dirs[i]))
            TRY(p, mount_empty_ro(sys_masked_dirs[i]), "mask /sys dir");
}

/* mkdir -p of an absolute path, resolved inside the new root. */
static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        buf[i] = c;
    }
    return 0;
}

/* Becomes root of the user namespace (host uid_base).  Until now the process still had
 * the daemon's host uid 0, which is unmapped inside (so it cannot own files on the
 * sandbox's own mounts).  Leaving host root for the namespace's root keeps every
 * capability: the kernel only clears them when leaving the namespace's own root uid. */
static void become_ns_root(sbx_child_plan_t *p)
{
    TRY(p, syscall(SYS_setgroups, 0, NULL), "setgroups");
    TRY(p, syscall(SYS_setresgid, 0, 0, 0), "setresgid");
    TRY(p, syscall(SYS_setresuid, 0, 0, 0), "setresuid");
}

static void setup_root(sbx_child_plan_t *p)
{
    /* Nothing done from here on may propagate back to the daemon's namespace. */
    TRY(p, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make mounts private");
    /* The overlay came from the daemon's (more privileged) mount namespace, so it is
     * locked here and pivot_root refuses it; a bind of it made here is not locked.  The
     * sandbox directory is root-only on the host: enter it while still host root. */
    TRY(p, mount(p->root, p->root, NULL, MS_BIND | MS_REC, NULL), "bind new root");
    TRY(p, chdir(p->root), "chdir to new root");
    become_ns_root(p);
    setup_dev(p);
    setup_proc(p);
    setup_sys(p);
    if (ensure_dir("tmp", 01777) == 0)
        chmod("tmp", 01777);
    /* pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
     * only the new root, with no directory needed for the old one. */
    TRY(p, syscall(SYS_pivot_root, ".", "."), "pivot_root");
    TRY(p, umount2(".", MNT_DETACH), "detach old root");
    TRY(p, chdir("/"), "chdir /");
    TRY(p, mkdir_p(p->workdir), "create workdir");
    TRY(p, chdir(p->workdir), "chdir to workdir");
}

static void setup_net_uts(sbx_child_plan_t *p)
{
    TRY(p, sethostname(p->hostname, strlen(p->hostname)), "sethostname");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    TRY(p, s, "socket for loopback");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    TRY(p, ioctl(s, SIOCGIFFLAGS, &ifr), "get loopback flags");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    TRY(p, ioctl(s, SIOCSIFFLAGS, &ifr), "bring up loopback");
    close(s);
}

/* Keeps only sbx_child_caps (bounding, permitted, effective; inheritable and ambient
 * empty) and the sandbox's rlimits. */
static void drop_privileges(sbx_child_plan_t *p)
{
    struct rlimit core = {0, 0};
    TRY(p, setrlimit(RLIMIT_CORE, &core), "setrlimit core");
    TRY(p, setrlimit(RLIMIT_NOFILE, &p->nofile), "setrlimit nofile");
    for (int c = 0; c <= p->cap_last && c < 64; c++)
        if (!(sbx_child_caps & CAPBIT(c)))
            TRY(p, prctl(PR_CAPBSET_DROP, c, 0, 0, 0), "drop bounding capability");
    TRY(p, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient caps");
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(sbx_child_caps >> (32 * i));
        data[i].permitted = data[i].effective;
        /* Inheritable stays empty, as in Docker since CVE-2022-24769. */
    }
    TRY(p, syscall(SYS_capset, &hdr, data), "capset");
}

/* Leaves exactly fds 0-2 (/dev/null), 3 (socket), 4 (agent memfd) and 5 (control pipe). */
static void arrange_fds(sbx_child_plan_t *p)
{
    int top = p->sock_fd;
    if (p->agent_fd > top)
        top = p->agent_fd;
    if (p->ctl_wr > top)
        top = p->ctl_wr;
    if (top < FD_FIRST_FREE)
        top = FD_FIRST_FREE;
    /* Move all three above every target first, so no dup3 overwrites a source. */
    int s = fcntl(p->sock_fd, F_DUPFD_CLOEXEC, top + 1);
    int a = fcntl(p->agent_fd, F_DUPFD_CLOEXEC, top + 1);
    int c = fcntl(p->ctl_wr, F_DUPFD_CLOEXEC, top + 1);
    if (c >= 0)
        p->ctl_wr = c;
    TRY(p, s | a | c, "dup fds");
    TRY(p, dup3(c, FD_CTL, O_CLOEXEC), "dup control pipe");
    p->ctl_wr = FD_CTL;
    TRY(p, dup3(s, FD_SOCK, 0), "dup socket");
    TRY(p, dup3(a, FD_AGENT, O_CLOEXEC), "dup agent fd");
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    TRY(p, null, "open /dev/null");
    for (int fd = 0; fd < 3; fd++)
        TRY(p, dup3(null, fd, 0), "stdio to /dev/null");
    TRY(p, syscall(SYS_close_range, FD_FIRST_FREE, ~0U, 0), "close other fds");
}

static void reset_signals(void)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored signals stay ignored across exec; handled ones are reset by exec anyway. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
}

__attribute__((noreturn)) static void sandbox_init_main(sbx_child_plan_t *p)
{
    reset_signals();
    setup_root(p);
    setup_net_uts(p);
    drop_privileges(p);
    arrange_fds(p);
    TRY(p, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
    TRY(p, prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p->seccomp, 0, 0), "seccomp");
    static char *const argv[] = {"sandbox-agent", "--listen-fd", "3", NULL};
    static char *const envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                 "HOME=/root", NULL};
    syscall(SYS_execveat, FD_AGENT, "", argv, envp, AT_EMPTY_PATH);
    fail(p, "exec agent");
}

void sbx_child_main(sbx_child_plan_t *p)
{
    close(p->ctl_rd);
    close(p->go_wr);
    /* If the daemon dies before C is done, C goes too (G, once started, is on its own). */
    TRY(p, prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig");
    if (getppid() != p->parent_pid)
        _exit(1);
    TRY(p, unshare(CLONE_NEWUSER), "unshare user namespace");
    send_rec(p, SBX_REC_READY, 0, NULL);
    char go;
    ssize_t n;
    do
        n = read(p->go_rd, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(1); /* the parent gave up */
    close(p->go_rd);
    TRY(p, unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP),
        "unshare namespaces");
    pid_t g = fork();
    TRY(p, g, "fork sandbox init");
    if (g == 0)
        sandbox_init_main(p);
    send_rec(p, SBX_REC_GPID, g, NULL);
    _exit(0);
}
