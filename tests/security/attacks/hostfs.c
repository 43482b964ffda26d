/* Reaching host files and host-wide kernel knobs from inside: /proc/1/root, /proc/kcore,
 * /proc/sysrq-trigger, /proc/sys (core_pattern above all), /sys, cgroup release_agent. */
#include "attack.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static void write_file(const char *name, const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        BLOCKED(name, "open %s: %s", path, strerror(errno));
        return;
    }
    ssize_t n = write(fd, data, strlen(data));
    if (n < 0)
        BLOCKED(name, "write %s: %s", path, strerror(errno));
    else
        ESCAPED(name, "wrote %zd bytes to %s", n, path);
    close(fd);
}

/* argv[1]: a host path that must not be readable (the test creates it on the host). */
static void host_file(int argc, char **argv)
{
    const char *marker = argc > 1 ? argv[1] : "/etc/host-marker";
    char p[512];
    const char *prefixes[] = {"", "/proc/1/root", "/proc/self/root", "/proc/1/cwd/../../../../..",
                              "/proc/self/exe/.."};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        snprintf(p, sizeof p, "%s%s", prefixes[i], marker);
        char name[80];
        snprintf(name, sizeof name, "read host file via '%s'", prefixes[i]);
        int fd = open(p, O_RDONLY);
        if (fd < 0) {
            BLOCKED(name, "%s", strerror(errno));
        } else {
            ESCAPED(name, "opened %s", p);
            close(fd);
        }
    }
}

static void kcore(int argc, char **argv)
{
    (void)argc, (void)argv;
    const char *files[] = {"/proc/kcore", "/proc/kallsyms", "/proc/keys", "/proc/timer_list",
                           "/dev/mem",    "/dev/kmem",      "/dev/port",  "/proc/kmsg"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char buf[64], name[64];
        snprintf(name, sizeof name, "read %s", files[i]);
        int fd = open(files[i], O_RDONLY);
        if (fd < 0) {
            BLOCKED(name, "%s", strerror(errno));
            continue;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        close(fd);
        if (n <= 0) {
            BLOCKED(name, "reads as empty (%s)", n < 0 ? strerror(errno) : "masked");
            continue;
        }
        /* kallsyms is world-readable; the kernel shows zero addresses without
         * CAP_SYSLOG in the host namespace. */
        if (!strcmp(files[i], "/proc/kallsyms") && !strncmp(buf, "0000000000000000", 16))
            BLOCKED(name, "addresses hidden");
        else
            ESCAPED(name, "read %zd bytes", n);
    }
}

static void sysrq(int argc, char **argv)
{
    (void)argc, (void)argv;
    /* 'h' only prints help to the kernel log: harmless should it ever get through. */
    write_file("write /proc/sysrq-trigger", "/proc/sysrq-trigger", "h");
    write_file("write /proc/sys/kernel/sysrq", "/proc/sys/kernel/sysrq", "1");
}

/* argv[1]: the value to try (the test checks the host's value afterwards). */
static void core_pattern(int argc, char **argv)
{
    const char *v = argc > 1 ? argv[1] : "|/tmp/x";
    write_file("write /proc/sys/kernel/core_pattern", "/proc/sys/kernel/core_pattern", v);
    write_file("write /proc/sys/kernel/modprobe", "/proc/sys/kernel/modprobe", "/tmp/x");
    write_file("write /proc/sys/fs/suid_dumpable", "/proc/sys/fs/suid_dumpable", "2");
    write_file("write /proc/sys/vm/overcommit_memory", "/proc/sys/vm/overcommit_memory", "1");
    write_file("write /proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_forward", "1");
    EXPECT_FAIL("create in /proc/sys", open("/proc/sys/kernel/sbx", O_WRONLY | O_CREAT, 0644));
}

static void sysfs(int argc, char **argv)
{
    (void)argc, (void)argv;
    write_file("write /sys/kernel/uevent_helper", "/sys/kernel/uevent_helper", "/tmp/x");
    write_file("write /sys/kernel/mm/transparent_hugepage/enabled",
               "/sys/kernel/mm/transparent_hugepage/enabled", "never");
    write_file("write /sys/power/state", "/sys/power/state", "bogus");
    write_file("write /sys/class/net/lo/mtu", "/sys/class/net/lo/mtu", "1500");
    EXPECT_FAIL("create in /sys", open("/sys/sbx", O_WRONLY | O_CREAT, 0644));
}

/* The cgroup v1 release_agent escape: find any writable release_agent or notify_on_release
 * (there is none: no cgroupfs is mounted and mounting one is refused). */
static void release_agent(int argc, char **argv)
{
    (void)argc, (void)argv;
    const char *paths[] = {"/sys/fs/cgroup/release_agent",
                           "/sys/fs/cgroup/memory/release_agent",
                           "/sys/fs/cgroup/rdma/release_agent",
                           "/sys/fs/cgroup/pids/release_agent",
                           "/sys/fs/cgroup/memory/notify_on_release",
                           "/sys/fs/cgroup/notify_on_release"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "write %s", paths[i]);
        write_file(name, paths[i], strstr(paths[i], "notify") ? "1" : "/tmp/x");
    }
    mkdir("/tmp/cg", 0755);
    const char *opts[] = {"memory", "rdma", "pids", "none,name=sbx", "cpu,cpuacct"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "mount cgroup -o %s", opts[i]);
        EXPECT_DENIED(name, mount("cgroup", "/tmp/cg", "cgroup", 0, opts[i]));
    }
}

static const struct attack attacks[] = {
    {"host_file", host_file},
    {"kcore", kcore},
    {"sysrq", sysrq},
    {"core_pattern", core_pattern},
    {"sysfs", sysfs},
    {"release_agent", release_agent},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return attack_main(attacks, argc, argv);
}
