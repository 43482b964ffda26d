/* Shared between the image store's files (image.c, pull.c); not part of its API. */
#ifndef SBX_IMAGE_INTERNAL_H
#define SBX_IMAGE_INTERNAL_H

#include "image/image.h"

/* <state_dir>/images */
const char *sbx_image_store_dir(const sbx_image_store_t *st);

/* Makes sure OCI reference `ref` is pulled (pulling it when auto_install, else S101 with
 * the pre-pull command) and returns its rootfs path (heap) in *rootfs. */
int sbx_image_oci_ensure(sbx_image_store_t *st, const char *name, const char *ref,
                         const sbx_registry_opts_t *opts, bool auto_install, char **rootfs, sbx_err_t *err);

/* Removes leftovers of pulls interrupted by a crash (called when the store opens). */
void sbx_image_oci_clean(sbx_image_store_t *st);

/* Waits for the pulls started with sbx_image_pull_start on `st` whose watchers left
 * (called before the store is freed). */
void sbx_image_oci_drain(sbx_image_store_t *st);

/* Makes the image described by `m` (whose blobs are all verified and in the blob
 * directory) bootable as `canon`: assembles its rootfs unless it exists, then writes the
 * ref record.  Takes the reference's lock. */
int sbx_image_oci_install(sbx_image_store_t *st, const char *canon, const sbx_oci_manifest_t *m,
                          sbx_err_t *err);

/* <state_dir>/images/oci/blobs (heap). */
char *sbx_image_oci_blobs_dir(sbx_image_store_t *st);

/* <state_dir>/images/oci/tmp, created if needed (heap); its entries are removed when the
 * store next opens. */
char *sbx_image_oci_tmp_dir(sbx_image_store_t *st, sbx_err_t *err);

#endif
