/* The core: the sandbox registry and lifecycle state machine, exec sessions and the
 * reaper.  One core call serves every API surface; api/ only parses and renders.
 *
 * Lifecycle: creating -> running -> (stopped | expired | failed) -> record removed.
 * DELETE removes the record at once; the reaper stops sandboxes past their TTL or idle
 * timeout and those whose agent died, keeps their record for stopped_retention_secs (so
 * clients get S004 rather than S002), then removes it.  Every state change is committed
 * to the store before it is acknowledged. */
#ifndef SBX_CORE_CORE_H
#define SBX_CORE_CORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "core/config.h"
#include "image/image.h"
#include "store/store.h"

typedef struct sbx_core sbx_core_t;
/* The backend's function table (backend/backend.h); only core's own files need its
 * definition, so api/ never sees backend/. */
typedef struct sbx_backend sbx_backend_t;

/* Creates the core.  Borrows cfg, store, images and backend for its whole life. */
sbx_core_t *sbx_core_new(const sbx_config_t *cfg, sbx_store_t *store, sbx_image_store_t *images,
                         const sbx_backend_t *backend, sbx_err_t *err);
/* Re-adopts sandboxes whose agent still runs, marks the others failed and cleans up their
 * host resources and any leftovers without a record.  Call once before serving. */
int sbx_core_recover(sbx_core_t *core, sbx_err_t *err);
/* Starts the reaper thread (TTL, idle timeout, dead agents, retention). */
int sbx_core_start(sbx_core_t *core, sbx_err_t *err);
/* Refuses new work, stops every sandbox and the reaper. In-flight execs end with an error. */
void sbx_core_shutdown(sbx_core_t *core);
/* sbx_core_shutdown with a choice: keep_sandboxes = false is sbx_core_shutdown; true only
 * refuses new work and stops the reaper (waiting for background deletes already under
 * way), leaving every live sandbox running and its record "running", so that the next
 * daemon's sbx_core_recover re-adopts it (the upgrade path, SIGUSR2). */
void sbx_core_shutdown_mode(sbx_core_t *core, bool keep_sandboxes);
void sbx_core_free(sbx_core_t *core);

/* A create request; `has_*` tells whether the caller gave the field. */
typedef struct {
    const char *image;
    const char *name;
    bool has_timeout;
    int64_t timeout_secs;
    bool has_cpus;
    double cpus;
    bool has_memory;
    int64_t memory_mb;
    bool has_idle_timeout;
    int64_t idle_timeout_secs;
    bool network;
    char **env; /* "K=V" entries, applied in order */
    size_t n_env;
    const char *workdir;
    const char *metadata_json;   /* a JSON object of strings, or NULL */
    const char *entrypoint_json; /* a JSON array of strings, or NULL */
} sbx_create_req_t;

/* Creates a sandbox and fills *out (caller releases).  Errors: S100 image not allowed
 * (FORBIDDEN), S101 image missing (UNAVAILABLE), S102 build failed, S400 over a cap
 * (INVALID) or over max sandboxes (LIMIT), INVALID for bad values. */
int sbx_core_create(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *out, sbx_err_t *err);
int sbx_core_get(sbx_core_t *core, const char *id, sbx_sandbox_rec_t *out, sbx_err_t *err);
int sbx_core_list(sbx_core_t *core, sbx_sandbox_rec_t **out, size_t *n, sbx_err_t *err);
/* Stops the sandbox (if running) and removes its record.  NOT_FOUND (S002) if unknown. */
int sbx_core_delete(sbx_core_t *core, const char *id, sbx_err_t *err);
/* Checks that the sandbox exists (S002 otherwise), then stops and removes it in the
 * background; shutdown waits for such stops to finish. */
int sbx_core_delete_async(sbx_core_t *core, const char *id, sbx_err_t *err);
/* Number of execs in flight on a sandbox (for listings). */
int sbx_core_execs_in_flight(sbx_core_t *core, const char *id);

typedef struct {
    char **argv; /* NULL-terminated */
    char **env;  /* exec-time "K=V" entries layered over create-time env; may be NULL */
    size_t n_env;
    const char *cwd; /* NULL: the sandbox's workdir; relative: under the workspace */
    const void *stdin_data;
    size_t stdin_len;
    int64_t timeout_ms; /* > 0 */
    int max_concurrent; /* > 0: refuse with S003 when this many execs already run on the
                         * sandbox (the function dialect's rule); 0: no limit */
    size_t max_output;  /* buffered exec: bytes kept per stream; 0 = SBX_EXEC_MAX_OUTPUT */
} sbx_exec_params_t;

typedef struct {
    bool exited; /* false when the agent gave no exit status (exit_code unknown) */
    int64_t exit_code;
    int64_t signo;
    bool timed_out;
    int64_t duration_ms; /* daemon-side wall clock */
    char *out;
    size_t out_len;
    char *errout;
    size_t err_len;
    bool out_truncated, err_truncated;
} sbx_exec_result_t;

/* Largest stdout/stderr kept per stream by a buffered exec; more is dropped and flagged. */
#define SBX_EXEC_MAX_OUTPUT (10u << 20)

/* Runs a command to completion.  Errors: NOT_FOUND (S002), CONFLICT (S004) when the
 * sandbox is not running, UNAVAILABLE/INTERNAL when the agent cannot be reached. */
int sbx_core_exec(sbx_core_t *core, const char *id, const sbx_exec_params_t *p, sbx_exec_result_t *res,
                  sbx_err_t *err);
void sbx_exec_result_release(sbx_exec_result_t *res);

/* The warm pool: how many warm sandboxes are ready, in all and per image (a JSON object
 * image → count; caller decrefs). */
int sbx_core_pool_status(sbx_core_t *core, int *total, json_t **by_image);

/* Counters for /metrics. */
typedef struct {
    int64_t active, total_created, total_killed, total_expired;
    int64_t uptime_secs;
} sbx_core_metrics_t;
int sbx_core_metrics(sbx_core_t *core, sbx_core_metrics_t *m, sbx_err_t *err);

const sbx_config_t *sbx_core_config(sbx_core_t *core);
sbx_image_store_t *sbx_core_images(sbx_core_t *core);

#endif
