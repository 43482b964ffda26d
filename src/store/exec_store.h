/* Persistence of exec records (background execs, /v1 commands, queue runs).  A table of
 * its own in the state database, on a connection of its own, so that exec bookkeeping never
 * waits behind sandbox transactions.  Only store/ includes sqlite3.h. */
#ifndef SBX_STORE_EXEC_STORE_H
#define SBX_STORE_EXEC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct sbx_exec_store sbx_exec_store_t;

typedef struct {
    char id[64];
    char sandbox_id[40];
    int kind;
    char *argv_json; /* JSON array of strings */
    char *cwd;
    int64_t started_at, finished_at, pid;
    bool running, exited;
    int64_t exit_code, signo;
    bool timed_out;
    char *error; /* NULL if none */
    int64_t stdout_bytes, stderr_bytes;
    bool truncated;
} sbx_exec_rec_t;

/* Opens the database file (which sbx_store_open created) and ensures the execs table. */
sbx_exec_store_t *sbx_exec_store_open(const char *path, sbx_err_t *err);
void sbx_exec_store_close(sbx_exec_store_t *st);
/* Inserts or replaces the record with rec->id. */
int sbx_exec_store_put(sbx_exec_store_t *st, const sbx_exec_rec_t *rec, sbx_err_t *err);
/* NOT_FOUND if absent. */
int sbx_exec_store_get(sbx_exec_store_t *st, const char *id, sbx_exec_rec_t *out, sbx_err_t *err);
/* Records of a sandbox (kind < 0: every kind), oldest first. */
int sbx_exec_store_list(sbx_exec_store_t *st, const char *sandbox_id, int kind, sbx_exec_rec_t **out,
                        size_t *n, sbx_err_t *err);
int sbx_exec_store_delete_sandbox(sbx_exec_store_t *st, const char *sandbox_id, sbx_err_t *err);
/* Marks every record still running as finished at `now` with `reason` (after a restart). */
int sbx_exec_store_interrupt_running(sbx_exec_store_t *st, int64_t now, const char *reason, sbx_err_t *err);
void sbx_exec_rec_release(sbx_exec_rec_t *rec);
void sbx_exec_recs_free(sbx_exec_rec_t *recs, size_t n);

#endif
