/* The image store: turns an image name into an unpacked root filesystem on disk.
 * Presets (python, node) are built from Debian packages with mmdebstrap on first use
 * and cached under <state_dir>/images/; custom images name a local rootfs directory
 * (OCI references are a later addition).  Concurrent first uses build once. */
#ifndef SBX_IMAGE_IMAGE_H
#define SBX_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

typedef struct sbx_image_store sbx_image_store_t;

typedef enum { SBX_IMAGE_ABSENT, SBX_IMAGE_BUILDING, SBX_IMAGE_READY, SBX_IMAGE_FAILED } sbx_image_state_t;

typedef struct {
    sbx_image_state_t state;
    char message[256];  /* the latest progress line of a build, or the failure */
    int64_t started_ms; /* epoch ms the build started, 0 if none */
    char rootfs[512];   /* the rootfs path when READY */
} sbx_image_status_t;

/* A custom image source: `ref` is an absolute local directory (or an OCI reference). */
typedef struct {
    const char *name;
    const char *ref;
} sbx_image_source_t;

sbx_image_store_t *sbx_image_store_new(const char *state_dir, sbx_err_t *err);
void sbx_image_store_free(sbx_image_store_t *st);

bool sbx_image_is_preset(const char *name);

/* Resolves `name` to a rootfs path (heap string in *rootfs).  `custom` is the matching
 * custom_images entry or NULL for a preset.  A preset whose rootfs is missing is built
 * (blocking; concurrent callers wait for the same build) when auto_install is true;
 * otherwise UNAVAILABLE with code S101 and the command that pre-builds it.  A build
 * failure is UNAVAILABLE with code S102.  A custom rootfs directory that does not exist
 * is S101. */
int sbx_image_resolve(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                      bool auto_install, char **rootfs, sbx_err_t *err);

/* Builds a preset now (used by `sandboxd build-image NAME`); progress lines go to the log. */
int sbx_image_build(sbx_image_store_t *st, const char *name, sbx_err_t *err);

/* Current state of an image, for progress reporting. */
void sbx_image_status(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                      sbx_image_status_t *out);

#endif
