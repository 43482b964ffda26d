/* Importing images that do not come from a registry: an OCI image layout (index.json,
 * oci-layout, blobs/sha256/...) or a `docker save` archive (manifest.json, config JSON
 * and layer tars), either one packed as a tar, optionally gzip or zstd compressed.
 *
 * Every blob an image needs is checked before anything of it reaches the cache: in an
 * OCI layout each blob's SHA-256 must equal the digest (and size) its descriptor gives;
 * in a docker archive each layer must hash (uncompressed) to its diff_id in the config.
 * The archive's own entries are never written by their names: each file is copied to a
 * staging file of ours, so no path in the archive can reach outside the cache, and an
 * archive holding an absolute or `..` path, or a link leaving the archive, is refused.
 * Layers are then unpacked with the same code and the same safety as pulled ones. */
#ifndef SBX_IMAGE_IMPORT_H
#define SBX_IMAGE_IMPORT_H

#include "image/image.h"

/* Creates an empty file in the image store's temporary directory to receive an archive
 * (an upload).  Returns its fd (read-write, close-on-exec) and the path (heap) in *path;
 * the caller unlinks it when done.  A daemon restart removes forgotten ones. */
int sbx_image_import_tmpfile(sbx_image_store_t *st, char **path, sbx_err_t *err);

/* Imports the archive in file `path` into the cache under `name` (an OCI reference), or,
 * when `name` is NULL, under the name the archive gives: the layout's
 * io.containerd.image.name or a full org.opencontainers.image.ref.name annotation, or
 * the archive's first RepoTags entry.  A layout holding several images needs `name` to
 * choose one (matched against those annotations); a multi-platform index is narrowed to
 * linux/<host arch>.  Fills *out (may be NULL).  Errors: INVALID S001 for an archive
 * that is neither format, is unsafe, names no image, or holds a blob that does not match
 * its digest; I/O errors from the cache. */
int sbx_image_import(sbx_image_store_t *st, const char *path, const char *name, sbx_image_info_t *out,
                     sbx_err_t *err);

#endif
