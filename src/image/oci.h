/* OCI references and the registry client (OCI distribution spec over libcurl).
 *
 * A pull fetches the manifest (an index or manifest list is narrowed to linux/<host
 * arch>), then every blob into a content-addressed blob directory.  Every byte is hashed
 * while it streams to disk; a blob whose SHA-256 differs from its digest is deleted and
 * fetched again, and never reaches the unpacker.  Memory use is constant per blob. */
#ifndef SBX_IMAGE_OCI_H
#define SBX_IMAGE_OCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* A parsed reference.  `registry` is the name users write ("docker.io",
 * "localhost:5000"); `endpoint` is the host actually contacted (docker.io becomes
 * registry-1.docker.io or the configured mirror). */
typedef struct {
    char registry[256];
    char repo[256];
    char tag[128];   /* "" when only a digest was given */
    char digest[80]; /* "sha256:<64 hex>" or "" */
    char canon[768]; /* registry/repo[:tag][@digest], the normalized name */
} sbx_oci_ref_t;

/* Parses `s` ("busybox", "user/app:1", "ghcr.io/a/b:1@sha256:...", "localhost:5000/x").
 * Defaults: registry docker.io, "library/" for one-component docker.io repos, tag
 * "latest" when neither tag nor digest is given.  Errors: INVALID (S001). */
int sbx_oci_ref_parse(const char *s, sbx_oci_ref_t *ref, sbx_err_t *err);

/* True if `s` looks like an OCI reference rather than a preset or local name: it holds a
 * '/', ':' or '@', or parses as one.  Used to decide whether a create may pull it. */
bool sbx_oci_looks_like_ref(const char *s);

/* Registry settings (borrowed strings). */
typedef struct {
    char **insecure; /* host:port entries reached over plain http */
    size_t n_insecure;
    const char *mirror;           /* replaces registry-1.docker.io for docker.io, or NULL */
    const char *credentials_file; /* Docker config.json style {"auths":{host:{auth}}}, or NULL */
    int max_attempts;             /* per request; 0 = 4 */
    int backoff_ms;               /* first retry delay, doubled each time; 0 = 200 */
    uint64_t cache_budget_bytes;  /* after a pull, unreferenced blobs are collected when the
                                   * blob cache exceeds this; 0 = no budget */
} sbx_registry_opts_t;

/* Progress of one pull, reported from the pulling thread. */
typedef void (*sbx_oci_progress_fn)(void *cls, int layer, int n_layers, const char *digest, uint64_t done,
                                    uint64_t total);

/* What a resolved manifest says. */
typedef struct {
    char manifest_digest[80];
    char config_digest[80];
    char **layers;      /* layer digests in order (owned) */
    char **layer_media; /* their media types */
    uint64_t *layer_sizes;
    size_t n_layers;
    uint64_t size;       /* sum of the layer sizes */
    char *manifest_json; /* the manifest bytes (owned) */
} sbx_oci_manifest_t;

void sbx_oci_manifest_release(sbx_oci_manifest_t *m);

/* The host's architecture in OCI terms ("amd64", "arm64", ...). */
const char *sbx_oci_host_arch(void);

/* Fetches and resolves the manifest of `ref` for linux/<host arch>.  Errors: NOT_FOUND
 * S102 for an unknown image, UNAVAILABLE S102 for registry/network failures and for an
 * index without a linux/<host arch> entry, FORBIDDEN S102 for refused credentials. */
int sbx_oci_fetch_manifest(const sbx_registry_opts_t *opts, const sbx_oci_ref_t *ref, sbx_oci_manifest_t *out,
                           sbx_err_t *err);

/* Fetches blob `digest` of `ref` into `blobs_dir`/sha256/<hex> unless it is there
 * already.  Verifies the digest; retries transient failures and corrupt transfers,
 * resuming an interrupted transfer with a Range request when the registry allows it. */
int sbx_oci_fetch_blob(const sbx_registry_opts_t *opts, const sbx_oci_ref_t *ref, const char *digest,
                       const char *blobs_dir, sbx_oci_progress_fn progress, void *cls, int layer,
                       int n_layers, sbx_err_t *err);

/* Hashes a file: fills hex (65 bytes).  Errors from open/read. */
int sbx_oci_sha256_file(const char *path, char hex[65], sbx_err_t *err);

/* Checks that `digest` is "sha256:<64 lowercase hex>". */
bool sbx_oci_digest_valid(const char *digest);

#endif
