#include "backend/ns/mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

/* Paths here are built from bounded parts (validated ids, state and cgroup directories
 * checked at init) and fit their buffers; GCC cannot see those bounds. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

int sbx_mounts_private_ns(sbx_err_t *err)
{
    if (unshare(CLONE_NEWNS) < 0)
        return sbx_error(err, errno, "unshare mount namespace");
    /* Slave, not private: host mounts made later (new images on a new disk, say) still
     * show up here, while nothing mounted here propagates back. */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        return sbx_error(err, errno, "make / a slave mount");
    return 0;
}

/* The image as a detached mount tree, read-only and idmapped so that files owned by host
 * uid/gid N appear owned by N inside the sandbox's user namespace (root-owned image files
 * belong to the sandbox's root).  Then attached at lower/. */
static int mount_lower_idmapped(const char *rootfs, const char *lower, int userns_fd, sbx_err_t *err)
{
    _cleanup_close_ int tree =
        open_tree(AT_FDCWD, rootfs, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0)
        return sbx_error(err, errno, "open_tree `%s`", rootfs);
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        .userns_fd = (uint64_t)userns_fd,
    };
    if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        return sbx_error(err, errno, "idmap `%s`", rootfs);
    if (move_mount(tree, "", AT_FDCWD, lower, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return sbx_error(err, errno, "move_mount to `%s`", lower);
    return 0;
}

/* Fallback for kernels or filesystems without idmapped mounts: a plain read-only bind.
 * Image files then belong to unmapped ids (shown as nobody inside), which are readable
 * when world-readable but cannot be modified, chowned or read when root-only. */
static int mount_lower_plain(const char *rootfs, const char *lower, sbx_err_t *err)
{
    if (mount(rootfs, lower, NULL, MS_BIND | MS_REC, NULL) < 0)
        return sbx_error(err, errno, "bind `%s`", rootfs);
    if (mount(NULL, lower, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0) {
        int e = errno;
        umount2(lower, MNT_DETACH);
        return sbx_error(err, e, "remount `%s` read-only", lower);
    }
    return 0;
}

static int mount_rw(const char *rw, uint32_t uid_base, uint64_t disk_mb, sbx_err_t *err)
{
    char opts[64];
    snprintf(opts, sizeof opts, "size=%llum,mode=0755", (unsigned long long)disk_mb);
    /* nodev: device nodes could otherwise be used through this mount. */
    if (mount("tmpfs", rw, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return sbx_error(err, errno, "mount tmpfs at `%s`", rw);
    static const char *const sub[] = {"upper", "work"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(sub); i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", rw, sub[i]);
        if (mkdir(p, 0755) < 0 || lchown(p, uid_base, uid_base) < 0)
            return sbx_error(err, errno, "prepare `%s`", p);
    }
    return 0;
}

int sbx_mounts_setup(const char *dir, const char *rootfs, int userns_fd, uint32_t uid_base, uint64_t disk_mb,
                     bool *idmapped, sbx_err_t *err)
{
    char lower[PATH_MAX], rw[PATH_MAX], root[PATH_MAX], opts[3 * PATH_MAX + 64];
    snprintf(lower, sizeof lower, "%s/lower", dir);
    snprintf(rw, sizeof rw, "%s/rw", dir);
    snprintf(root, sizeof root, "%s/root", dir);
    sbx_err_t idmap_err = SBX_ERR_INIT;
    *idmapped = mount_lower_idmapped(rootfs, lower, userns_fd, &idmap_err) == 0;
    if (!*idmapped) {
        log_warn("idmapped lower layer unavailable (%s); using a plain read-only bind", idmap_err.msg);
        if (mount_lower_plain(rootfs, lower, err) < 0)
            return -1;
    }
    if (mount_rw(rw, uid_base, disk_mb, err) < 0)
        goto fail;
    /* dir is built by the daemon from validated parts and cannot contain the option
     * separators ',' ':' '\\' (checked at init). */
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, rw, rw);
    if (mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, opts) < 0) {
        sbx_error(err, errno, "mount overlay at `%s`", root);
        goto fail;
    }
    return 0;
fail:
    sbx_mounts_teardown(dir, NULL);
    return -1;
}

int sbx_mounts_teardown(const char *dir, sbx_err_t *err)
{
    static const char *const order[] = {"root", "rw", "lower"};
    int rc = 0;
    for (size_t i = 0; i < SBX_ARRAY_LEN(order); i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, order[i]);
        /* Several mounts may be stacked there after a failed or repeated setup. */
        for (int k = 0; k < 8; k++) {
            if (umount2(p, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
                continue;
            if (errno != EINVAL && errno != ENOENT && errno != ENOTDIR)
                rc = sbx_error(err, errno, "unmount `%s`", p);
            break;
        }
    }
    return rc;
}
