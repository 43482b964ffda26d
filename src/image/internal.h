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

#endif
