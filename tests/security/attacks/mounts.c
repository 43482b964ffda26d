/* Mount-table attacks: classic mount(2), umount of a mask, pivot_root and the new mount
 * API (fsopen/fsmount, open_tree, move_mount, mount_setattr). */
#include "attack.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void classic(int argc, char **argv)
{
    (void)argc, (void)argv;
    mkdir("/tmp/m", 0755);
    EXPECT_DENIED("mount tmpfs", mount("none", "/tmp/m", "tmpfs", 0, NULL));
    EXPECT_DENIED("bind mount /", mount("/", "/tmp/m", NULL, MS_BIND | MS_REC, NULL));
    EXPECT_DENIED("remount /proc/sys rw", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
    EXPECT_DENIED("mount proc", mount("proc", "/tmp/m", "proc", 0, NULL));
    EXPECT_DENIED("mount sysfs", mount("sysfs", "/tmp/m", "sysfs", 0, NULL));
    /* cgroupfs would expose release_agent (the classic v1 escape). */
    EXPECT_DENIED("mount cgroup v1", mount("cgroup", "/tmp/m", "cgroup", 0, "memory"));
    EXPECT_DENIED("mount cgroup v1 rdma", mount("cgroup", "/tmp/m", "cgroup", 0, "rdma"));
    EXPECT_DENIED("mount cgroup2", mount("cgroup2", "/tmp/m", "cgroup2", 0, NULL));
}

static void umounts(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_FAIL("umount /proc/kcore mask", umount2("/proc/kcore", MNT_DETACH));
    EXPECT_FAIL("umount /proc/sysrq-trigger mask", umount2("/proc/sysrq-trigger", MNT_DETACH));
    EXPECT_FAIL("umount /proc", umount2("/proc", MNT_DETACH));
    EXPECT_FAIL("umount /", umount2("/", MNT_DETACH));
}

static void pivot(int argc, char **argv)
{
    (void)argc, (void)argv;
    mkdir("/tmp/old", 0755);
    EXPECT_FAIL("pivot_root", syscall(SYS_pivot_root, "/", "/tmp/old"));
    EXPECT_FAIL("pivot_root dot", syscall(SYS_pivot_root, ".", "."));
    /* chroot is allowed (CAP_SYS_CHROOT, as in Docker); the classic escape, chroot into a
     * subdirectory while holding a directory fd outside it, then chdir("..") many times and
     * chroot("."), must still end in the sandbox's own root: the host file given as
     * argv[1] must stay out of reach. */
    const char *marker = argc > 1 ? argv[1] : "/etc/host-marker";
    mkdir("/tmp/jail", 0755);
    int fd = open("/", O_RDONLY | O_DIRECTORY);
    if (chroot("/tmp/jail") < 0) {
        BLOCKED("chroot breakout", "chroot: %s", strerror(errno));
        return;
    }
    fchdir(fd);
    for (int i = 0; i < 64; i++)
        chdir("..");
    chroot(".");
    if (access(marker, F_OK) == 0)
        ESCAPED("chroot breakout", "host file %s is visible", marker);
    else
        BLOCKED("chroot breakout", "%s: %s", marker, strerror(errno));
}

static void new_api(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_DENIED("fsopen tmpfs", syscall(SYS_fsopen, "tmpfs", 0));
    EXPECT_DENIED("fsopen proc", syscall(SYS_fsopen, "proc", 0));
    EXPECT_DENIED("fspick /", syscall(SYS_fspick, AT_FDCWD, "/", 0));
    EXPECT_DENIED("open_tree clone /", syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE | AT_RECURSIVE));
    EXPECT_DENIED("open_tree clone /proc", syscall(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE));
    int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_PATH);
    EXPECT_DENIED("move_mount /proc",
                  syscall(SYS_move_mount, fd, "", AT_FDCWD, "/tmp", MOVE_MOUNT_F_EMPTY_PATH));
    struct mount_attr attr = {.attr_clr = MOUNT_ATTR_RDONLY};
    EXPECT_DENIED("mount_setattr /proc/sys rw",
                  syscall(SYS_mount_setattr, AT_FDCWD, "/proc/sys", 0, &attr, sizeof attr));
    EXPECT_DENIED("mount_setattr /sys rw",
                  syscall(SYS_mount_setattr, AT_FDCWD, "/sys", 0, &attr, sizeof attr));
}

static const struct attack attacks[] = {
    {"mount", classic}, {"umount", umounts}, {"pivot_root", pivot}, {"new_mount_api", new_api}, {NULL, NULL},
};

int main(int argc, char **argv)
{
    return attack_main(attacks, argc, argv);
}
