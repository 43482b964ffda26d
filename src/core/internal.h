/* State shared by the core's own files (sandbox.c, exec.c); not part of its contract. */
#ifndef SBX_CORE_INTERNAL_H
#define SBX_CORE_INTERNAL_H

#include <pthread.h>

#include "backend/backend.h"
#include "core/core.h"

/* The runtime side of a running sandbox.  Guarded by core->mu. */
typedef struct live {
    char id[40];
    sbx_sandbox_rt_t rt;
    char **env; /* create-time environment, NULL-terminated "K=V" */
    size_t n_env;
    char *workdir;
    int inflight;         /* execs in progress */
    uint64_t log_bytes;   /* bytes of exec logs written for this sandbox since the daemon started */
    int64_t last_exec_at; /* the last activity, ms (the record's copy may lag, core_touch) */
    int64_t touched_at;   /* when last_exec_at was last written to the record */
    bool stopping;        /* a stop is tearing it down */
    bool pooled;          /* a warm sandbox waiting in the pool, not yet handed to anyone */
    bool deleted;         /* deleted: its teardown runs in the background, nothing of it shows */
    char *image;          /* the image it runs */
    struct live *next;
} live_t;

struct exec_ent;
struct sbx_exec_store;

struct sbx_core {
    const sbx_config_t *cfg;
    sbx_store_t *store;
    sbx_image_store_t *images;
    const sbx_backend_t *be;
    pthread_mutex_t mu;
    pthread_cond_t reaper_cv;
    pthread_t reaper;
    bool reaper_started;
    bool shutting_down;
    live_t *live;
    int64_t started_ms;
    /* Exec sessions (execs.c), guarded by mu; exec_cv is broadcast on every change. */
    struct sbx_exec_store *xstore;
    struct exec_ent *execs;
    pthread_cond_t exec_cv;
    char *log_root;        /* <state_dir>/logs */
    pthread_t pool_thread; /* the warm pool's filler (pool.c) */
    bool pool_started;
    pthread_cond_t pool_cv;
    int async_deletes;   /* background deletes still running (guarded by mu) */
    int teardowns;       /* deleted sandboxes whose teardown runs in the background (mu) */
    int64_t activity_ms; /* monotonic ms of the last create, delete, exec or file request (atomic) */
};

live_t *core_find_live(sbx_core_t *core, const char *id);
/* true while a deleted sandbox is being torn down (its records are then hidden); mu held. */
bool core_deleted_locked(sbx_core_t *core, const char *id);
/* The complete environment of an exec: base + create-time + the exec's own entries. */
char **core_merge_env(const live_t *l, char **extra, size_t n_extra);
void core_strv_free(char **v);
void core_mark_failed(sbx_core_t *core, const char *id, const char *reason);
/* Records activity on a sandbox for its idle timeout and lastExecAt: in memory at once, in
 * the database at most once a second, so execs do not each wait for a durable commit (a
 * daemon restarted after a crash sees an idle clock up to a second old). */
void core_touch(sbx_core_t *core, const char *id);
/* Notes that a request is being served now (the warm pool refills in the quiet between). */
void core_activity(sbx_core_t *core);

/* Takes an exec slot on a running sandbox (S002/S004/S003 otherwise) and copies what the
 * exec needs; exec_end gives the slot back. */
int core_exec_begin(sbx_core_t *core, const char *id, const sbx_exec_params_t *p, sbx_sandbox_rt_t *rt,
                    char ***env, char **cwd, sbx_err_t *err);
void core_exec_end(sbx_core_t *core, const char *id);
/* The warm pool (pool.c). */
int core_pool_start(sbx_core_t *core, sbx_err_t *err);
void core_pool_stop(sbx_core_t *core);
/* Creates a sandbox for the pool (status "pooled") with the image's defaults. */
int core_create_pooled(sbx_core_t *core, const char *image, sbx_err_t *err);
/* Warm sandboxes in the pool (of one image, or all with NULL); the caller holds mu. */
int core_pool_count(sbx_core_t *core, const char *image);
/* Hands a pooled sandbox to a create request: 1 done (*out filled), 0 none fits. */
int core_pool_take(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *out, sbx_err_t *err);

/* Exec sessions' share of start-up, recovery and sandbox removal (execs.c). */
int core_execs_init(sbx_core_t *core, sbx_err_t *err);
void core_execs_recover(sbx_core_t *core);
void core_execs_forget_sandbox(sbx_core_t *core, const char *sandbox_id);
void core_execs_release(sbx_core_t *core);

#endif
