/* Unpacks OCI image layers (tar, optionally gzip/zstd compressed) into a root filesystem,
 * applying whiteouts, without letting any entry reach outside that root. */
#ifndef SBX_IMAGE_UNPACK_H
#define SBX_IMAGE_UNPACK_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Normalizes a layer entry's path into `out`: strips a leading "./", drops "." and empty
 * components.  Returns 0 for a usable relative path, 1 for the root itself (nothing to
 * create), -1 for a path that must be rejected (absolute, or holding a ".." component,
 * or too long). */
int sbx_unpack_clean_path(const char *in, char *out, size_t outlen);

typedef struct {
    uint64_t entries; /* entries written */
    uint64_t skipped; /* entries refused (unsafe paths, device nodes, ...) */
    uint64_t whiteouts;
} sbx_unpack_stats_t;

/* Applies the layer in file `layer_path` on top of the tree at `rootfd` (a directory fd
 * the caller owns).  Paths are resolved as if `rootfd` were "/" (RESOLVE_IN_ROOT), so
 * symlinks inside the tree, including absolute ones, never lead outside it, and the last
 * component of an entry is never followed.  Unsafe entries are skipped and counted;
 * a corrupt archive or an I/O error fails the whole layer (UNAVAILABLE, S102). */
int sbx_unpack_layer(int rootfd, const char *layer_path, sbx_unpack_stats_t *stats, sbx_err_t *err);

#endif
