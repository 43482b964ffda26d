/* Persistence.  All SQL of the project lives in store/; callers see plain records.
 * SQLite in WAL mode today; the interface is what a PostgreSQL store would implement.
 * Every function is safe to call from any thread (one connection behind a mutex). */
#ifndef SBX_STORE_STORE_H
#define SBX_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct sbx_store sbx_store_t;

/* One sandbox row.  Strings are heap-owned by the record (release frees them);
 * JSON-valued columns are stored and returned as JSON text. */
typedef struct {
    char id[40];
    char *name;
    char *image;               /* the requested image name */
    char *status;              /* creating | running | stopped | expired | failed */
    int64_t created_at;        /* epoch ms */
    int64_t expires_at;        /* epoch ms; 0 = never */
    int64_t last_exec_at;      /* epoch ms; starts at created_at */
    int64_t timeout_secs;      /* TTL */
    int64_t idle_timeout_secs; /* 0 = none */
    double cpus;
    int64_t memory_mb;
    int64_t disk_mb;
    int64_t pids_max;
    bool network;
    char *env_json; /* JSON object text, e.g. {"A":"1"} */
    char *workdir;
    char *metadata_json; /* JSON object text */
    char *config_json;   /* the SandboxConfig object as answered to clients */
    int64_t uid_slot;    /* index of the host id range */
    int64_t pid;         /* host pid of PID 1, 0 if none */
    int64_t pid_start;
    char *sock_path;
    char *stop_reason;  /* why it stopped (NULL while running) */
    int64_t stopped_at; /* epoch ms, 0 while running */
} sbx_sandbox_rec_t;

/* Opens (creating if needed) the database at `path`, in WAL mode, and migrates the schema. */
sbx_store_t *sbx_store_open(const char *path, sbx_err_t *err);
void sbx_store_close(sbx_store_t *st);

/* Inserts a new row; CONFLICT if the id exists. */
int sbx_store_sandbox_insert(sbx_store_t *st, const sbx_sandbox_rec_t *rec, sbx_err_t *err);
/* Replaces every column of the row with rec's values; NOT_FOUND (code S002) if absent. */
int sbx_store_sandbox_update(sbx_store_t *st, const sbx_sandbox_rec_t *rec, sbx_err_t *err);
/* The same, and adds 1 to counter `counter` in the same transaction (one commit). */
int sbx_store_sandbox_update_counting(sbx_store_t *st, const sbx_sandbox_rec_t *rec, const char *counter,
                                      sbx_err_t *err);
/* Fills *out (caller releases); NOT_FOUND (code S002, "sandbox not found: <id>") if absent. */
int sbx_store_sandbox_get(sbx_store_t *st, const char *id, sbx_sandbox_rec_t *out, sbx_err_t *err);
/* All rows ordered by created_at; *out is a heap array (release with sbx_sandbox_recs_free). */
int sbx_store_sandbox_list(sbx_store_t *st, sbx_sandbox_rec_t **out, size_t *n, sbx_err_t *err);
/* Sets last_exec_at. */
int sbx_store_sandbox_touch(sbx_store_t *st, const char *id, int64_t last_exec_at, sbx_err_t *err);
/* Deletes the row; NOT_FOUND if absent. */
int sbx_store_sandbox_delete(sbx_store_t *st, const char *id, sbx_err_t *err);
/* Number of rows whose status is creating or running. */
int sbx_store_sandbox_count_live(sbx_store_t *st, int64_t *n, sbx_err_t *err);
/* The lowest uid slot (>= 0) that no row uses. */
int sbx_store_free_slot(sbx_store_t *st, int64_t *slot, sbx_err_t *err);

/* Counters kept across restarts (totalCreated, totalKilled, ...). */
int sbx_store_counter_add(sbx_store_t *st, const char *name, int64_t delta, sbx_err_t *err);
int sbx_store_counter_get(sbx_store_t *st, const char *name, int64_t *out, sbx_err_t *err);

/* Runs PRAGMA integrity_check; 0 when the database reports "ok". */
int sbx_store_check(sbx_store_t *st, sbx_err_t *err);

void sbx_sandbox_rec_release(sbx_sandbox_rec_t *rec);
void sbx_sandbox_recs_free(sbx_sandbox_rec_t *recs, size_t n);

/* One queue job row (the `/sandbox` dialect's exec queue).  Strings and output buffers are
 * heap-owned by the record; argv and env are stored as JSON text (an array of strings). */
typedef struct {
    char id[40];
    char sandbox_id[40];
    char *command;   /* for display: the shell string, or argv joined by spaces */
    char *argv_json; /* JSON array of strings */
    char *env_json;  /* JSON array of "K=V" strings, or NULL */
    char *cwd;       /* NULL: the sandbox's workdir */
    int64_t timeout_ms;
    char status[16]; /* pending | running | completed | failed | cancelled */
    int64_t retries, max_retries;
    int64_t created_at, started_at, completed_at, next_attempt_at; /* epoch ms; 0 = unset */
    char *error;                                                   /* last failure, or NULL */
    /* The exec result, when has_result (a completed job). */
    bool has_result;
    bool exited;
    int64_t exit_code, signo, duration_ms;
    bool timed_out, truncated;
    char *out, *errout; /* NUL-terminated, may hold NULs */
    size_t out_len, err_len;
} sbx_job_rec_t;

/* Inserts a new job; CONFLICT if the id exists. */
int sbx_store_job_insert(sbx_store_t *st, const sbx_job_rec_t *rec, sbx_err_t *err);
/* Fills *out (caller releases); NOT_FOUND ("Queue job not found: <id>") if absent. */
int sbx_store_job_get(sbx_store_t *st, const char *id, sbx_job_rec_t *out, sbx_err_t *err);
/* Atomically moves the oldest pending job that is due at `now` (next_attempt_at <= now) to
 * running with started_at = now, and fills *out with it.  Returns 1 if a job was claimed,
 * 0 if none is due, -1 on error.  Two callers never claim the same job. */
int sbx_store_job_claim(sbx_store_t *st, int64_t now, sbx_job_rec_t *out, sbx_err_t *err);
/* The earliest next_attempt_at of the pending jobs: returns 1 with *at set, 0 if no job is
 * pending. */
int sbx_store_job_next_due(sbx_store_t *st, int64_t *at, sbx_err_t *err);
/* Writes the outcome of a running job: status, retries, timestamps, error and result from
 * rec.  Only a row that is still running changes; CONFLICT otherwise. */
int sbx_store_job_settle(sbx_store_t *st, const sbx_job_rec_t *rec, sbx_err_t *err);
/* Moves a pending job to cancelled with completed_at = now, in one statement, so a job is
 * either claimed or cancelled, never both.  Returns 1 if cancelled, 0 if the job is absent
 * or not pending. */
int sbx_store_job_cancel(sbx_store_t *st, const char *id, int64_t now, sbx_err_t *err);
/* The jobs with `status`, oldest first, skipping `offset` and returning at most `limit`;
 * *total counts them all.  *out is a heap array (release with sbx_job_recs_free). */
int sbx_store_job_list(sbx_store_t *st, const char *status, int64_t offset, int64_t limit,
                       sbx_job_rec_t **out, size_t *n, int64_t *total, sbx_err_t *err);
void sbx_job_rec_release(sbx_job_rec_t *rec);
void sbx_job_recs_free(sbx_job_rec_t *recs, size_t n);

#endif
