#include "store/exec_store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

#define COLS                                                                                                 \
    "id, sandbox_id, kind, argv_json, cwd, started_at, finished_at, pid, running, exited, exit_code, "       \
    "signo, timed_out, error, stdout_bytes, stderr_bytes, truncated"

struct sbx_exec_store {
    pthread_mutex_t mu;
    sqlite3 *db;
};

static int db_fail(sbx_exec_store_t *st, int rc, const char *what, sbx_err_t *err)
{
    sbx_err_kind_t kind = rc == SQLITE_FULL || rc == SQLITE_BUSY ? SBX_E_UNAVAILABLE : SBX_E_INTERNAL;
    return sbx_fail(err, kind, NULL, "exec store: %s: %s", what, st->db ? sqlite3_errmsg(st->db) : "");
}

sbx_exec_store_t *sbx_exec_store_open(const char *path, sbx_err_t *err)
{
    sbx_exec_store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->mu, NULL);
    int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        db_fail(st, rc, "open", err);
        sbx_exec_store_close(st);
        return NULL;
    }
    sqlite3_busy_timeout(st->db, 5000);
    const char *schema = "PRAGMA synchronous = FULL;"
                         "CREATE TABLE IF NOT EXISTS execs (id TEXT PRIMARY KEY NOT NULL, "
                         "sandbox_id TEXT NOT NULL, kind INTEGER NOT NULL, argv_json TEXT NOT NULL, "
                         "cwd TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL, "
                         "pid INTEGER NOT NULL, running INTEGER NOT NULL, exited INTEGER NOT NULL, "
                         "exit_code INTEGER NOT NULL, signo INTEGER NOT NULL, timed_out INTEGER NOT NULL, "
                         "error TEXT, stdout_bytes INTEGER NOT NULL, stderr_bytes INTEGER NOT NULL, "
                         "truncated INTEGER NOT NULL);"
                         "CREATE INDEX IF NOT EXISTS execs_by_sandbox ON execs (sandbox_id, started_at);";
    char *msg = NULL;
    if (sqlite3_exec(st->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        sbx_fail(err, SBX_E_INTERNAL, NULL, "exec store: schema: %s", msg ? msg : "");
        sqlite3_free(msg);
        sbx_exec_store_close(st);
        return NULL;
    }
    return st;
}

void sbx_exec_store_close(sbx_exec_store_t *st)
{
    if (!st)
        return;
    sqlite3_close_v2(st->db);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static void read_rec(sqlite3_stmt *q, sbx_exec_rec_t *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", (const char *)sqlite3_column_text(q, 0));
    snprintf(r->sandbox_id, sizeof r->sandbox_id, "%s", (const char *)sqlite3_column_text(q, 1));
    r->kind = sqlite3_column_int(q, 2);
    r->argv_json = xstrdup((const char *)sqlite3_column_text(q, 3));
    r->cwd = xstrdup((const char *)sqlite3_column_text(q, 4));
    r->started_at = sqlite3_column_int64(q, 5);
    r->finished_at = sqlite3_column_int64(q, 6);
    r->pid = sqlite3_column_int64(q, 7);
    r->running = sqlite3_column_int(q, 8);
    r->exited = sqlite3_column_int(q, 9);
    r->exit_code = sqlite3_column_int64(q, 10);
    r->signo = sqlite3_column_int64(q, 11);
    r->timed_out = sqlite3_column_int(q, 12);
    if (sqlite3_column_type(q, 13) != SQLITE_NULL)
        r->error = xstrdup((const char *)sqlite3_column_text(q, 13));
    r->stdout_bytes = sqlite3_column_int64(q, 14);
    r->stderr_bytes = sqlite3_column_int64(q, 15);
    r->truncated = sqlite3_column_int(q, 16);
}

int sbx_exec_store_put(sbx_exec_store_t *st, const sbx_exec_rec_t *r, sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db,
                                "INSERT OR REPLACE INTO execs (" COLS ") VALUES "
                                "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, r->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 2, r->sandbox_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(q, 3, r->kind);
        sqlite3_bind_text(q, 4, r->argv_json ? r->argv_json : "[]", -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 5, r->cwd ? r->cwd : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(q, 6, r->started_at);
        sqlite3_bind_int64(q, 7, r->finished_at);
        sqlite3_bind_int64(q, 8, r->pid);
        sqlite3_bind_int(q, 9, r->running);
        sqlite3_bind_int(q, 10, r->exited);
        sqlite3_bind_int64(q, 11, r->exit_code);
        sqlite3_bind_int64(q, 12, r->signo);
        sqlite3_bind_int(q, 13, r->timed_out);
        if (r->error)
            sqlite3_bind_text(q, 14, r->error, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(q, 14);
        sqlite3_bind_int64(q, 15, r->stdout_bytes);
        sqlite3_bind_int64(q, 16, r->stderr_bytes);
        sqlite3_bind_int(q, 17, r->truncated);
        rc = sqlite3_step(q);
    }
    int ret = rc == SQLITE_DONE ? 0 : db_fail(st, rc, "save exec", err);
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->mu);
    return ret;
}

int sbx_exec_store_get(sbx_exec_store_t *st, const char *id, sbx_exec_rec_t *out, sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, "SELECT " COLS " FROM execs WHERE id = ?1", -1, &q, NULL);
    int ret;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, id, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
    }
    if (rc == SQLITE_ROW) {
        read_rec(q, out);
        ret = 0;
    } else if (rc == SQLITE_DONE) {
        ret = sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec not found: %s", id);
    } else {
        ret = db_fail(st, rc, "read exec", err);
    }
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->mu);
    return ret;
}

int sbx_exec_store_list(sbx_exec_store_t *st, const char *sandbox_id, int kind, sbx_exec_rec_t **out,
                        size_t *n, sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT " COLS " FROM execs WHERE sandbox_id = ?1 AND (?2 < 0 OR kind = ?2) "
                                "ORDER BY started_at, id",
                                -1, &q, NULL);
    size_t cap = 0, len = 0;
    sbx_exec_rec_t *recs = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, sandbox_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(q, 2, kind);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            if (len == cap)
                recs = xrealloc(recs, (cap = cap ? cap * 2 : 8) * sizeof *recs);
            read_rec(q, &recs[len++]);
        }
    }
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = db_fail(st, rc, "list execs", err);
        sbx_exec_recs_free(recs, len);
        recs = NULL;
        len = 0;
    }
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->mu);
    *out = recs;
    *n = len;
    return ret;
}

static int exec_simple(sbx_exec_store_t *st, const char *sql, const char *s1, int64_t i2, const char *s3,
                       sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        if (s1)
            sqlite3_bind_text(q, 1, s1, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(q, 2, i2);
        if (s3)
            sqlite3_bind_text(q, 3, s3, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
    }
    int ret = rc == SQLITE_DONE ? 0 : db_fail(st, rc, "update execs", err);
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->mu);
    return ret;
}

int sbx_exec_store_delete_sandbox(sbx_exec_store_t *st, const char *sandbox_id, sbx_err_t *err)
{
    return exec_simple(st, "DELETE FROM execs WHERE sandbox_id = ?1 AND ?2 = ?2", sandbox_id, 0, NULL, err);
}

int sbx_exec_store_interrupt_running(sbx_exec_store_t *st, int64_t now, const char *reason, sbx_err_t *err)
{
    return exec_simple(st,
                       "UPDATE execs SET running = 0, finished_at = ?2, error = ?3 "
                       "WHERE running = 1 AND ?1 IS NULL",
                       NULL, now, reason, err);
}

void sbx_exec_rec_release(sbx_exec_rec_t *r)
{
    free(r->argv_json);
    free(r->cwd);
    free(r->error);
    r->argv_json = r->cwd = r->error = NULL;
}

void sbx_exec_recs_free(sbx_exec_rec_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sbx_exec_rec_release(&recs[i]);
    free(recs);
}
