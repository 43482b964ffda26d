/* The image store: turns an image name into an unpacked root filesystem on disk.
 * Presets (python, node) are built from Debian packages with mmdebstrap on first use
 * and cached under <state_dir>/images/; custom images name a local rootfs directory
 * or an OCI reference, and any OCI reference can be an image name of its own; those are
 * pulled from their registry (pull.c).  Concurrent first uses build or pull once. */
#ifndef SBX_IMAGE_IMAGE_H
#define SBX_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "image/oci.h"

typedef struct sbx_image_store sbx_image_store_t;

typedef enum { SBX_IMAGE_ABSENT, SBX_IMAGE_BUILDING, SBX_IMAGE_READY, SBX_IMAGE_FAILED } sbx_image_state_t;

typedef struct {
    sbx_image_state_t state;
    char message[256];  /* the latest progress line of a build, or the failure */
    int64_t started_ms; /* epoch ms the build started, 0 if none */
    char rootfs[512];   /* the rootfs path when READY */
} sbx_image_status_t;

/* An image source for resolve/status: a custom_images entry (`ref` an absolute local
 * directory or an OCI reference) or, with name == ref, an OCI reference used directly as
 * the image name.  `registry` carries the registry settings used when it must be pulled
 * (NULL: defaults). */
typedef struct {
    const char *name;
    const char *ref;
    const sbx_registry_opts_t *registry;
} sbx_image_source_t;

/* A pulled OCI image, as listed and inspected. */
typedef struct {
    char *ref;             /* the normalized reference (registry/repo:tag) */
    char *id;              /* "sha256:<hex>" of the image config, as Docker shows ids */
    char *manifest_digest; /* "sha256:<hex>" */
    uint64_t size;         /* compressed layer bytes */
    uint64_t n_layers;
    char *created, *architecture, *os; /* from the image config ("" when absent) */
    int64_t pulled_ms;
    char *rootfs; /* the unpacked rootfs directory */
} sbx_image_info_t;

void sbx_image_info_release(sbx_image_info_t *info);

sbx_image_store_t *sbx_image_store_new(const char *state_dir, sbx_err_t *err);
void sbx_image_store_free(sbx_image_store_t *st);

bool sbx_image_is_preset(const char *name);

/* Resolves `name` to a rootfs path (heap string in *rootfs).  `custom` is the matching
 * custom_images entry or NULL for a preset.  A preset whose rootfs is missing is built
 * (blocking; concurrent callers wait for the same build) when auto_install is true;
 * otherwise UNAVAILABLE with code S101 and the command that pre-builds it.  A build
 * failure is UNAVAILABLE with code S102.  A custom rootfs directory that does not exist
 * is S101. */
/* An OCI reference (custom_images value or a name that is neither a preset nor a
 * custom image) missing locally is pulled when auto_install is true, else S101 naming
 * `sandbox image pull REF`. */
int sbx_image_resolve(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                      bool auto_install, char **rootfs, sbx_err_t *err);

/* Builds a preset now (used by `sandboxd build-image NAME`); progress lines go to the log. */
int sbx_image_build(sbx_image_store_t *st, const char *name, sbx_err_t *err);

/* Current state of an image, for progress reporting. */
void sbx_image_status(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                      sbx_image_status_t *out);

/* Pulls OCI reference `ref` now: asks the registry for its manifest and, unless the
 * cached image already has that manifest, fetches the missing blobs and assembles the
 * rootfs.  Concurrent pulls of one reference (threads or processes) do the work once.
 * `progress` (may be NULL) is called from this thread.  Fills *out when non-NULL.
 * Errors: INVALID S001 bad reference, S102 registry/unpack failures (see oci.h). */
int sbx_image_pull(sbx_image_store_t *st, const char *ref, const sbx_registry_opts_t *opts,
                   sbx_oci_progress_fn progress, void *cls, sbx_image_info_t *out, sbx_err_t *err);

/* One layer of a pull as last reported: bytes fetched of its total (a cached layer is
 * reported complete). */
typedef struct {
    char digest[80];
    uint64_t done, total;
} sbx_image_layer_progress_t;

/* A pull running on a thread of its own, watched by someone else (a streamed HTTP
 * answer).  It joins a pull of the same reference already running, whose progress it then
 * shares.  Shared by the caller and the thread: the pull goes on to its end even after
 * the caller's unref. */
typedef struct sbx_image_pull_op sbx_image_pull_op_t;

/* Starts pulling `ref` (opts copied; its strings are borrowed and must outlive the pull).
 * Errors: INVALID S001 for a bad reference, or a thread that cannot start. */
sbx_image_pull_op_t *sbx_image_pull_start(sbx_image_store_t *st, const char *ref,
                                          const sbx_registry_opts_t *opts, sbx_err_t *err);

/* Waits up to timeout_ms for news newer than *seq (which it updates), then copies every
 * layer's figures into *layers (heap, the caller frees; NULL while none is known).
 * Returns 1 while the pull runs, 0 once it succeeded (*info filled when non-NULL) and -1
 * once it failed (*err is the pull's error). */
int sbx_image_pull_wait(sbx_image_pull_op_t *op, uint64_t *seq, int timeout_ms,
                        sbx_image_layer_progress_t **layers, size_t *n_layers, sbx_image_info_t *info,
                        sbx_err_t *err);

void sbx_image_pull_op_unref(sbx_image_pull_op_t *op);

/* What an OCI image's config asks of its containers.  Only env and workdir are applied to
 * sandboxes (core/sandbox.c); user is reported, never applied. */
typedef struct {
    char **env; /* "K=V" entries in the config's order, NULL-terminated, or NULL */
    size_t n_env;
    char *workdir; /* absolute, or NULL */
    char *user;    /* as written in the config, or NULL */
} sbx_image_config_t;

/* Fills *out from the config of the pulled or imported image whose rootfs is `rootfs` (a
 * path sbx_image_resolve returned).  Presets, local directories and images without a
 * readable config leave *out empty; that is not an error. */
int sbx_image_config(sbx_image_store_t *st, const char *rootfs, sbx_image_config_t *out, sbx_err_t *err);
void sbx_image_config_release(sbx_image_config_t *c);

/* Every pulled image (caller frees each entry and the array). */
int sbx_image_list(sbx_image_store_t *st, sbx_image_info_t **out, size_t *n, sbx_err_t *err);

/* Finds a pulled image by reference (normalized or as written), by id or manifest
 * digest, or by a unique id prefix of at least 4 hex digits.  NOT_FOUND otherwise. */
int sbx_image_inspect(sbx_image_store_t *st, const char *name, sbx_image_info_t *out, sbx_err_t *err);

/* Forgets the pulled image `ref` (normalized) and removes its rootfs when no other
 * reference uses it; blobs stay until sbx_image_gc.  The caller checks "in use". */
int sbx_image_remove(sbx_image_store_t *st, const char *ref, sbx_err_t *err);

/* Removes blobs no pulled image references, stale partial downloads (older than 10
 * minutes) and rootfs trees without a record.  With `budget_bytes` > 0 the blobs are
 * collected only when the blob cache exceeds that size (used after each pull); blobs of
 * pulled images are always kept.  Reports what was freed. */
int sbx_image_gc(sbx_image_store_t *st, uint64_t budget_bytes, uint64_t *freed_bytes, uint64_t *freed_blobs,
                 sbx_err_t *err);

#endif
