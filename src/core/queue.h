/* The durable job queue: commands submitted for later execution in a sandbox, run by a
 * bounded pool of workers, retried with exponential backoff on infrastructure errors, and
 * dead-lettered (status "failed") once out of retries or when their sandbox is gone.
 *
 * Jobs live in the store, so they survive restarts: at start, a job the previous daemon
 * left "running" was interrupted by a crash; it counts as a failed attempt (retried or
 * dead-lettered), and pending jobs run afterwards.  Delivery is at least once: a command
 * interrupted by a crash may run again.
 *
 * Life of a job: pending -> running -> completed (the command ran and exited, whatever its
 * exit code, timeouts included) | pending again (retry after a delay) | failed.  Only a
 * pending job can be cancelled, and a cancelled job never runs: claim and cancel are each
 * one conditional store update. */
#ifndef SBX_CORE_QUEUE_H
#define SBX_CORE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "core/config.h"
#include "core/core.h"
#include "store/store.h"

typedef struct sbx_queue sbx_queue_t;

/* Largest maxRetries a job may ask for. */
#define SBX_QUEUE_MAX_RETRIES 20
/* Longest delay between two attempts of a job. */
#define SBX_QUEUE_MAX_BACKOFF_MS 60000

/* Creates the queue.  Borrows core, store and cfg for its whole life.  No thread runs
 * until sbx_queue_start. */
sbx_queue_t *sbx_queue_new(sbx_core_t *core, sbx_store_t *store, const sbx_config_t *cfg, sbx_err_t *err);
/* Settles the jobs a previous daemon left running (a retry, or failed when out of retries),
 * then starts cfg->queue_workers worker threads.  Call once, after sbx_core_start. */
int sbx_queue_start(sbx_queue_t *q, sbx_err_t *err);
/* Stops claiming jobs and refuses new submissions.  Jobs already running continue until
 * their command ends; when it ends because the daemon is stopping (sbx_core_shutdown stops
 * the sandboxes), the job goes back to pending without counting a retry. */
void sbx_queue_quiesce(sbx_queue_t *q);
/* Quiesces (if not yet done) and waits for every worker to finish.  Call it after
 * sbx_core_shutdown, or it waits for the running commands to end on their own. */
void sbx_queue_stop(sbx_queue_t *q);
void sbx_queue_free(sbx_queue_t *q);

/* A job to submit.  The strings are copied. */
typedef struct {
    char **argv; /* NULL-terminated */
    char **env;  /* "K=V" entries layered over the sandbox's environment; may be NULL */
    size_t n_env;
    const char *cwd;     /* NULL: the sandbox's workdir */
    const char *command; /* for display; NULL: argv joined by spaces */
    int64_t timeout_ms;  /* > 0 */
    int64_t max_retries; /* 0..SBX_QUEUE_MAX_RETRIES */
} sbx_job_req_t;

/* Records a pending job for a sandbox that must be running now, wakes a worker, and fills
 * *out (caller releases).  Errors: NOT_FOUND (S002), CONFLICT (S004) when the sandbox is not
 * running, INVALID (S001) for a bad request, UNAVAILABLE while the daemon shuts down. */
int sbx_queue_submit(sbx_queue_t *q, const char *sandbox_id, const sbx_job_req_t *req, sbx_job_rec_t *out,
                     sbx_err_t *err);
/* Fills *out (caller releases); NOT_FOUND ("Queue job not found: <id>"). */
int sbx_queue_get(sbx_queue_t *q, const char *job_id, sbx_job_rec_t *out, sbx_err_t *err);
/* Cancels a pending job.  NOT_FOUND if unknown, CONFLICT ("Job is not pending: <status>")
 * otherwise. */
int sbx_queue_cancel(sbx_queue_t *q, const char *job_id, sbx_err_t *err);
/* The dead letter queue: failed jobs, oldest first (see sbx_store_job_list). */
int sbx_queue_dlq(sbx_queue_t *q, int64_t offset, int64_t limit, sbx_job_rec_t **out, size_t *n,
                  int64_t *total, sbx_err_t *err);

#endif
