/* Host-side mounts of a sandbox, made in the daemon's own mount namespace.
 *
 * Layout under the sandbox directory <state_dir>/sandboxes/<id>/:
 *   lower/  the image rootfs, read-only, idmapped to the sandbox's user namespace
 *   rw/     a size-capped tmpfs holding upper/ and work/ (owned by uid_base)
 *   root/   overlay of lower + rw/upper: the sandbox's root filesystem */
#ifndef SBX_BACKEND_NS_MOUNTS_H
#define SBX_BACKEND_NS_MOUNTS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* Gives the calling process its own mount namespace, a slave of the host's: host mounts
 * still appear in it, sandbox mounts never leave it, and they vanish with the process.
 * unshare(CLONE_NEWNS) affects only the calling thread, so this must run before the
 * daemon starts any thread.  Returns 0 or -1. */
int sbx_mounts_private_ns(sbx_err_t *err);

/* Mounts lower/, rw/ and root/ in `dir` (which holds those three empty directories).
 * `userns_fd` is the sandbox's user namespace; *idmapped tells whether the lower layer
 * could be idmapped (if not, it is a plain read-only bind: see docs/isolation.md).  On
 * failure, whatever was mounted is unmounted again.  Returns 0 or -1. */
int sbx_mounts_setup(const char *dir, const char *rootfs, int userns_fd, uint32_t uid_base, uint64_t disk_mb,
                     bool *idmapped, sbx_err_t *err);

/* Detaches root/, rw/ and lower/ in `dir` (never following symlinks).  Missing mounts are
 * fine.  Returns 0, or -1 if a mount is still there afterwards. */
int sbx_mounts_teardown(const char *dir, sbx_err_t *err);

#endif
