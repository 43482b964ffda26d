/* The SQLite implementation of store.h.
 *
 * One connection, guarded by one mutex: SQLite serialises writers anyway, and the daemon's
 * write rate (a few rows per sandbox lifetime) is far below what a single connection
 * sustains.  Every statement is prepared once at open and bound per call; no SQL text is
 * ever built from caller data.
 *
 * Durability: WAL with synchronous=FULL.  With NORMAL a power loss may drop the last
 * committed transactions, yet DESIGN.md promises that every state change a user can
 * observe is committed before it is acknowledged.  FULL costs one fsync of the WAL per
 * commit, which is nothing next to booting a sandbox. */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sqlite3.h>
#include <string.h>

#include "common/util.h"

#define SCHEMA_VERSION 2
#define BUSY_TIMEOUT_MS 5000

/* The column list shared by insert, update and select; the order matches bind_rec() and
 * read_rec(). */
#define REC_COLUMNS                                                                                          \
    "id, name, image, status, created_at, expires_at, last_exec_at, timeout_secs, "                          \
    "idle_timeout_secs, cpus, memory_mb, disk_mb, pids_max, network, env_json, workdir, "                    \
    "metadata_json, config_json, uid_slot, pid, pid_start, sock_path, stop_reason, "                         \
    "stopped_at"

/* The job columns, in the order of bind_job() and read_job(). */
#define JOB_COLUMNS                                                                                          \
    "id, sandbox_id, command, argv_json, env_json, cwd, timeout_ms, status, retries, "                       \
    "max_retries, created_at, started_at, completed_at, next_attempt_at, error, has_result, "                \
    "exited, exit_code, signo, duration_ms, timed_out, truncated, stdout, stderr"

enum {
    Q_INSERT,
    Q_UPDATE,
    Q_GET,
    Q_LIST,
    Q_TOUCH,
    Q_DELETE,
    Q_COUNT_LIVE,
    Q_FREE_SLOT,
    Q_COUNTER_ADD,
    Q_COUNTER_GET,
    Q_JOB_INSERT,
    Q_JOB_GET,
    Q_JOB_CLAIM,
    Q_JOB_NEXT_DUE,
    Q_JOB_SETTLE,
    Q_JOB_CANCEL,
    Q_JOB_LIST,
    Q_JOB_COUNT,
    Q_COUNT,
};

static const char *const query_sql[Q_COUNT] = {
    [Q_INSERT] = "INSERT INTO sandboxes (" REC_COLUMNS ") VALUES "
                 "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                 "?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    [Q_UPDATE] = "UPDATE sandboxes SET name = ?2, image = ?3, status = ?4, created_at = ?5, "
                 "expires_at = ?6, last_exec_at = ?7, timeout_secs = ?8, idle_timeout_secs = ?9, "
                 "cpus = ?10, memory_mb = ?11, disk_mb = ?12, pids_max = ?13, network = ?14, "
                 "env_json = ?15, workdir = ?16, metadata_json = ?17, config_json = ?18, "
                 "uid_slot = ?19, pid = ?20, pid_start = ?21, sock_path = ?22, "
                 "stop_reason = ?23, stopped_at = ?24 WHERE id = ?1",
    [Q_GET] = "SELECT " REC_COLUMNS " FROM sandboxes WHERE id = ?1",
    [Q_LIST] = "SELECT " REC_COLUMNS " FROM sandboxes ORDER BY created_at, id",
    [Q_TOUCH] = "UPDATE sandboxes SET last_exec_at = ?2 WHERE id = ?1",
    [Q_DELETE] = "DELETE FROM sandboxes WHERE id = ?1",
    [Q_COUNT_LIVE] = "SELECT count(*) FROM sandboxes WHERE status IN ('creating', 'running')",
    /* The lowest free slot is 0 if unused, else one past a used slot whose successor is
     * unused; the uid_slot index makes both probes cheap. */
    [Q_FREE_SLOT] = "SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM sandboxes WHERE uid_slot = 0) "
                    "UNION ALL "
                    "SELECT s.uid_slot + 1 FROM sandboxes s WHERE s.uid_slot >= 0 AND NOT EXISTS "
                    "(SELECT 1 FROM sandboxes t WHERE t.uid_slot = s.uid_slot + 1) "
                    "ORDER BY 1 LIMIT 1",
    [Q_COUNTER_ADD] = "INSERT INTO counters (name, value) VALUES (?1, ?2) "
                      "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
    [Q_COUNTER_GET] = "SELECT value FROM counters WHERE name = ?1",
    [Q_JOB_INSERT] = "INSERT INTO jobs (" JOB_COLUMNS ") VALUES "
                     "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                     "?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    [Q_JOB_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    /* One statement picks and claims, so a concurrent cancel (which only touches pending
     * rows) either happens before it (nothing to claim) or after it (nothing to cancel).
     * FIFO by creation, with the rowid breaking ties within one millisecond. */
    [Q_JOB_CLAIM] = "UPDATE jobs SET status = 'running', started_at = ?1 WHERE rowid = "
                    "(SELECT rowid FROM jobs WHERE status = 'pending' AND next_attempt_at <= ?1 "
                    "ORDER BY created_at, rowid LIMIT 1) AND status = 'pending' "
                    "RETURNING " JOB_COLUMNS,
    [Q_JOB_NEXT_DUE] = "SELECT min(next_attempt_at) FROM jobs WHERE status = 'pending' HAVING count(*) > 0",
    [Q_JOB_SETTLE] = "UPDATE jobs SET status = ?8, retries = ?9, started_at = ?12, completed_at = ?13, "
                     "next_attempt_at = ?14, error = ?15, has_result = ?16, exited = ?17, exit_code = ?18, "
                     "signo = ?19, duration_ms = ?20, timed_out = ?21, truncated = ?22, stdout = ?23, "
                     "stderr = ?24 WHERE id = ?1 AND status = 'running'",
    [Q_JOB_CANCEL] = "UPDATE jobs SET status = 'cancelled', completed_at = ?2, next_attempt_at = 0 "
                     "WHERE id = ?1 AND status = 'pending'",
    [Q_JOB_LIST] = "SELECT " JOB_COLUMNS " FROM jobs WHERE status = ?1 ORDER BY created_at, rowid "
                   "LIMIT ?3 OFFSET ?2",
    [Q_JOB_COUNT] = "SELECT count(*) FROM jobs WHERE status = ?1",
};

/* Migrations, indexed by the user_version they lead to (entry i moves i-1 to i). */
static const char *const migrations[SCHEMA_VERSION + 1] = {
    [1] = "CREATE TABLE sandboxes ("
          " id TEXT PRIMARY KEY NOT NULL,"
          " name TEXT, image TEXT, status TEXT NOT NULL,"
          " created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0,"
          " last_exec_at INTEGER NOT NULL DEFAULT 0, timeout_secs INTEGER NOT NULL DEFAULT 0,"
          " idle_timeout_secs INTEGER NOT NULL DEFAULT 0, cpus REAL NOT NULL DEFAULT 0,"
          " memory_mb INTEGER NOT NULL DEFAULT 0, disk_mb INTEGER NOT NULL DEFAULT 0,"
          " pids_max INTEGER NOT NULL DEFAULT 0, network INTEGER NOT NULL DEFAULT 0,"
          " env_json TEXT, workdir TEXT, metadata_json TEXT, config_json TEXT,"
          " uid_slot INTEGER NOT NULL DEFAULT -1, pid INTEGER NOT NULL DEFAULT 0,"
          " pid_start INTEGER NOT NULL DEFAULT 0, sock_path TEXT, stop_reason TEXT,"
          " stopped_at INTEGER NOT NULL DEFAULT 0);"
          "CREATE INDEX sandboxes_uid_slot ON sandboxes (uid_slot);"
          "CREATE INDEX sandboxes_status ON sandboxes (status);"
          "CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL,"
          " value INTEGER NOT NULL DEFAULT 0);",
    /* Jobs outlive their sandbox on purpose: a job whose sandbox vanished stays in the
     * dead letter queue, so there is no foreign key. */
    [2] = "CREATE TABLE jobs ("
          " id TEXT PRIMARY KEY NOT NULL, sandbox_id TEXT NOT NULL, command TEXT NOT NULL,"
          " argv_json TEXT NOT NULL, env_json TEXT, cwd TEXT,"
          " timeout_ms INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,"
          " retries INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL DEFAULT 3,"
          " created_at INTEGER NOT NULL, started_at INTEGER NOT NULL DEFAULT 0,"
          " completed_at INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL DEFAULT 0,"
          " error TEXT, has_result INTEGER NOT NULL DEFAULT 0, exited INTEGER NOT NULL DEFAULT 0,"
          " exit_code INTEGER NOT NULL DEFAULT 0, signo INTEGER NOT NULL DEFAULT 0,"
          " duration_ms INTEGER NOT NULL DEFAULT 0, timed_out INTEGER NOT NULL DEFAULT 0,"
          " truncated INTEGER NOT NULL DEFAULT 0, stdout BLOB, stderr BLOB);"
          "CREATE INDEX jobs_status_created ON jobs (status, created_at);",
};

struct sbx_store {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
};

/* Maps a SQLite result code to our error kinds: a full disk is a condition the operator can
 * fix and callers may retry, everything else is the host's or our failure. */
static int db_fail(sbx_err_t *err, sqlite3 *db, int rc, const char *what)
{
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int prim = rc & 0xff;
    if (prim == SQLITE_FULL)
        return sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "%s: database or disk is full: %s", what, msg);
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        return sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "%s: database is busy: %s", what, msg);
    return sbx_fail(err, SBX_E_INTERNAL, NULL, "%s: %s", what, msg);
}

static int exec_sql(sqlite3 *db, const char *sql, sbx_err_t *err)
{
    char *emsg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &emsg);
    if (rc != SQLITE_OK) {
        int prim = rc & 0xff;
        sbx_fail(err, prim == SQLITE_FULL ? SBX_E_UNAVAILABLE : SBX_E_INTERNAL, NULL, "sqlite: %s: %s",
                 emsg ? emsg : sqlite3_errstr(rc), sql);
        sqlite3_free(emsg);
        return -1;
    }
    return 0;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out, sbx_err_t *err)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return db_fail(err, db, rc, sql);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE) {
        db_fail(err, db, rc, sql);
        sqlite3_finalize(s);
        return -1;
    }
    sqlite3_finalize(s);
    return 0;
}

static int migrate(sqlite3 *db, sbx_err_t *err)
{
    int64_t version = 0;
    if (exec_sql(db, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    if (pragma_int(db, "PRAGMA user_version", &version, err) < 0)
        goto fail;
    if (version > SCHEMA_VERSION) {
        sbx_fail(err, SBX_E_INTERNAL, NULL,
                 "database schema version %lld is newer than this sandboxd supports (%d)", (long long)version,
                 SCHEMA_VERSION);
        goto fail;
    }
    for (int64_t v = version + 1; v <= SCHEMA_VERSION; v++) {
        if (exec_sql(db, migrations[v], err) < 0)
            goto fail;
    }
    if (version < SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        if (exec_sql(db, sql, err) < 0)
            goto fail;
    }
    return exec_sql(db, "COMMIT", err);
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

sbx_store_t *sbx_store_open(const char *path, sbx_err_t *err)
{
    sqlite3 *db = NULL;
    int rc =
        sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sbx_fail(err, SBX_E_INTERNAL, NULL, "open database `%s`: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (exec_sql(db,
                 "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                 "PRAGMA foreign_keys = ON;",
                 err) < 0 ||
        migrate(db, err) < 0) {
        sbx_error_wrap(err, "open database `%s`", path);
        sqlite3_close(db);
        return NULL;
    }

    sbx_store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->mu, NULL);
    st->db = db;
    for (int i = 0; i < Q_COUNT; i++) {
        rc = sqlite3_prepare_v3(db, query_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL);
        if (rc != SQLITE_OK) {
            db_fail(err, db, rc, "prepare statement");
            sbx_store_close(st);
            return NULL;
        }
    }
    return st;
}

void sbx_store_close(sbx_store_t *st)
{
    if (!st)
        return;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(st->q[i]);
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* Takes the connection and hands back statement `q`, reset and unbound. */
static sqlite3_stmt *begin(sbx_store_t *st, int q)
{
    pthread_mutex_lock(&st->mu);
    return st->q[q];
}

static void end(sbx_store_t *st, sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->mu);
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static void bind_rec(sqlite3_stmt *s, const sbx_sandbox_rec_t *r)
{
    bind_text(s, 1, r->id);
    bind_text(s, 2, r->name);
    bind_text(s, 3, r->image);
    bind_text(s, 4, r->status ? r->status : "creating");
    sqlite3_bind_int64(s, 5, r->created_at);
    sqlite3_bind_int64(s, 6, r->expires_at);
    sqlite3_bind_int64(s, 7, r->last_exec_at);
    sqlite3_bind_int64(s, 8, r->timeout_secs);
    sqlite3_bind_int64(s, 9, r->idle_timeout_secs);
    sqlite3_bind_double(s, 10, r->cpus);
    sqlite3_bind_int64(s, 11, r->memory_mb);
    sqlite3_bind_int64(s, 12, r->disk_mb);
    sqlite3_bind_int64(s, 13, r->pids_max);
    sqlite3_bind_int(s, 14, r->network ? 1 : 0);
    bind_text(s, 15, r->env_json);
    bind_text(s, 16, r->workdir);
    bind_text(s, 17, r->metadata_json);
    bind_text(s, 18, r->config_json);
    sqlite3_bind_int64(s, 19, r->uid_slot);
    sqlite3_bind_int64(s, 20, r->pid);
    sqlite3_bind_int64(s, 21, r->pid_start);
    bind_text(s, 22, r->sock_path);
    bind_text(s, 23, r->stop_reason);
    sqlite3_bind_int64(s, 24, r->stopped_at);
}

static char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? xstrdup((const char *)t) : NULL;
}

static void read_rec(sqlite3_stmt *s, sbx_sandbox_rec_t *r)
{
    memset(r, 0, sizeof *r);
    const unsigned char *id = sqlite3_column_text(s, 0);
    snprintf(r->id, sizeof r->id, "%s", id ? (const char *)id : "");
    r->name = col_text(s, 1);
    r->image = col_text(s, 2);
    r->status = col_text(s, 3);
    r->created_at = sqlite3_column_int64(s, 4);
    r->expires_at = sqlite3_column_int64(s, 5);
    r->last_exec_at = sqlite3_column_int64(s, 6);
    r->timeout_secs = sqlite3_column_int64(s, 7);
    r->idle_timeout_secs = sqlite3_column_int64(s, 8);
    r->cpus = sqlite3_column_double(s, 9);
    r->memory_mb = sqlite3_column_int64(s, 10);
    r->disk_mb = sqlite3_column_int64(s, 11);
    r->pids_max = sqlite3_column_int64(s, 12);
    r->network = sqlite3_column_int(s, 13) != 0;
    r->env_json = col_text(s, 14);
    r->workdir = col_text(s, 15);
    r->metadata_json = col_text(s, 16);
    r->config_json = col_text(s, 17);
    r->uid_slot = sqlite3_column_int64(s, 18);
    r->pid = sqlite3_column_int64(s, 19);
    r->pid_start = sqlite3_column_int64(s, 20);
    r->sock_path = col_text(s, 21);
    r->stop_reason = col_text(s, 22);
    r->stopped_at = sqlite3_column_int64(s, 23);
}

static int not_found(sbx_err_t *err, const char *id)
{
    return sbx_fail(err, SBX_E_NOT_FOUND, "S002", "sandbox not found: %s", id);
}

int sbx_store_sandbox_insert(sbx_store_t *st, const sbx_sandbox_rec_t *rec, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_INSERT);
    bind_rec(s, rec);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
        ret = sbx_fail(err, SBX_E_CONFLICT, NULL, "sandbox already exists: %s", rec->id);
    else if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, "insert sandbox");
    end(st, s);
    return ret;
}

/* Runs a statement that changes at most one row of `id`; NOT_FOUND if none changed. */
static int step_one_row(sbx_store_t *st, sqlite3_stmt *s, const char *id, const char *what, sbx_err_t *err)
{
    int rc = sqlite3_step(s), ret = 0;
    if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, what);
    else if (sqlite3_changes(st->db) == 0)
        ret = not_found(err, id);
    end(st, s);
    return ret;
}

/* The UPDATE of a whole row and a counter increment, each one statement run with the
 * connection already held; shared by the single calls and the combined transaction. */
static int run_update(sbx_store_t *st, const sbx_sandbox_rec_t *rec, sbx_err_t *err)
{
    sqlite3_stmt *s = st->q[Q_UPDATE];
    bind_rec(s, rec);
    int rc = sqlite3_step(s), ret = 0;
    if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, "update sandbox");
    else if (sqlite3_changes(st->db) == 0)
        ret = not_found(err, rec->id);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

static int run_counter_add(sbx_store_t *st, const char *name, int64_t delta, sbx_err_t *err)
{
    sqlite3_stmt *s = st->q[Q_COUNTER_ADD];
    bind_text(s, 1, name);
    sqlite3_bind_int64(s, 2, delta);
    int rc = sqlite3_step(s), ret = 0;
    if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, "update counter");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

int sbx_store_sandbox_update(sbx_store_t *st, const sbx_sandbox_rec_t *rec, sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    int ret = run_update(st, rec, err);
    pthread_mutex_unlock(&st->mu);
    return ret;
}

int sbx_store_sandbox_update_counting(sbx_store_t *st, const sbx_sandbox_rec_t *rec, const char *counter,
                                      sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    int ret = exec_sql(st->db, "BEGIN IMMEDIATE", err);
    if (ret == 0) {
        ret = run_update(st, rec, err);
        if (ret == 0)
            ret = run_counter_add(st, counter, 1, err);
        if (ret == 0)
            ret = exec_sql(st->db, "COMMIT", err);
        if (ret < 0)
            exec_sql(st->db, "ROLLBACK", NULL);
    }
    pthread_mutex_unlock(&st->mu);
    return ret;
}

int sbx_store_sandbox_touch(sbx_store_t *st, const char *id, int64_t last_exec_at, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_TOUCH);
    bind_text(s, 1, id);
    sqlite3_bind_int64(s, 2, last_exec_at);
    return step_one_row(st, s, id, "touch sandbox", err);
}

int sbx_store_sandbox_delete(sbx_store_t *st, const char *id, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_DELETE);
    bind_text(s, 1, id);
    return step_one_row(st, s, id, "delete sandbox", err);
}

int sbx_store_sandbox_get(sbx_store_t *st, const char *id, sbx_sandbox_rec_t *out, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_GET);
    bind_text(s, 1, id);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW)
        read_rec(s, out);
    else if (rc == SQLITE_DONE)
        ret = not_found(err, id);
    else
        ret = db_fail(err, st->db, rc, "get sandbox");
    end(st, s);
    return ret;
}

int sbx_store_sandbox_list(sbx_store_t *st, sbx_sandbox_rec_t **out, size_t *n, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_LIST);
    size_t cap = 16, len = 0;
    sbx_sandbox_rec_t *recs = xcalloc(cap, sizeof *recs);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap)
            recs = xrealloc(recs, (cap *= 2) * sizeof *recs);
        read_rec(s, &recs[len++]);
    }
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = db_fail(err, st->db, rc, "list sandboxes");
        sbx_sandbox_recs_free(recs, len);
        recs = NULL;
        len = 0;
    }
    end(st, s);
    *out = recs;
    *n = len;
    return ret;
}

/* Runs a statement that answers one integer; `dflt` when it answers no row. */
static int query_int(sbx_store_t *st, sqlite3_stmt *s, int64_t dflt, int64_t *out, const char *what,
                     sbx_err_t *err)
{
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else if (rc == SQLITE_DONE)
        *out = dflt;
    else
        ret = db_fail(err, st->db, rc, what);
    end(st, s);
    return ret;
}

int sbx_store_sandbox_count_live(sbx_store_t *st, int64_t *n, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_COUNT_LIVE);
    return query_int(st, s, 0, n, "count live sandboxes", err);
}

int sbx_store_free_slot(sbx_store_t *st, int64_t *slot, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_FREE_SLOT);
    return query_int(st, s, 0, slot, "find a free uid slot", err);
}

int sbx_store_counter_add(sbx_store_t *st, const char *name, int64_t delta, sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    int ret = run_counter_add(st, name, delta, err);
    pthread_mutex_unlock(&st->mu);
    return ret;
}

int sbx_store_counter_get(sbx_store_t *st, const char *name, int64_t *out, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_COUNTER_GET);
    bind_text(s, 1, name);
    return query_int(st, s, 0, out, "read counter", err);
}

int sbx_store_check(sbx_store_t *st, sbx_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA integrity_check", -1, &s, NULL);
    int ret = 0;
    if (rc != SQLITE_OK) {
        ret = db_fail(err, st->db, rc, "integrity check");
    } else {
        rc = sqlite3_step(s);
        const unsigned char *t = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
        if (rc != SQLITE_ROW)
            ret = db_fail(err, st->db, rc, "integrity check");
        else if (!t || strcmp((const char *)t, "ok"))
            ret = sbx_fail(err, SBX_E_INTERNAL, NULL, "database integrity check failed: %s",
                           t ? (const char *)t : "(no answer)");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->mu);
    return ret;
}

/* ---- queue jobs ---- */

static void bind_blob(sqlite3_stmt *s, int i, const char *data, size_t len)
{
    if (data)
        sqlite3_bind_blob64(s, i, data, len, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static void bind_job(sqlite3_stmt *s, const sbx_job_rec_t *r)
{
    bind_text(s, 1, r->id);
    bind_text(s, 2, r->sandbox_id);
    bind_text(s, 3, r->command ? r->command : "");
    bind_text(s, 4, r->argv_json ? r->argv_json : "[]");
    bind_text(s, 5, r->env_json);
    bind_text(s, 6, r->cwd);
    sqlite3_bind_int64(s, 7, r->timeout_ms);
    bind_text(s, 8, r->status[0] ? r->status : "pending");
    sqlite3_bind_int64(s, 9, r->retries);
    sqlite3_bind_int64(s, 10, r->max_retries);
    sqlite3_bind_int64(s, 11, r->created_at);
    sqlite3_bind_int64(s, 12, r->started_at);
    sqlite3_bind_int64(s, 13, r->completed_at);
    sqlite3_bind_int64(s, 14, r->next_attempt_at);
    bind_text(s, 15, r->error);
    sqlite3_bind_int(s, 16, r->has_result ? 1 : 0);
    sqlite3_bind_int(s, 17, r->exited ? 1 : 0);
    sqlite3_bind_int64(s, 18, r->exit_code);
    sqlite3_bind_int64(s, 19, r->signo);
    sqlite3_bind_int64(s, 20, r->duration_ms);
    sqlite3_bind_int(s, 21, r->timed_out ? 1 : 0);
    sqlite3_bind_int(s, 22, r->truncated ? 1 : 0);
    bind_blob(s, 23, r->out, r->out_len);
    bind_blob(s, 24, r->errout, r->err_len);
}

static char *col_blob(sqlite3_stmt *s, int i, size_t *len)
{
    const void *b = sqlite3_column_blob(s, i);
    size_t n = (size_t)sqlite3_column_bytes(s, i);
    *len = 0;
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return NULL;
    char *out = xmalloc(n + 1);
    if (n)
        memcpy(out, b, n);
    out[n] = '\0';
    *len = n;
    return out;
}

static void read_job(sqlite3_stmt *s, sbx_job_rec_t *r)
{
    memset(r, 0, sizeof *r);
    const unsigned char *t = sqlite3_column_text(s, 0);
    snprintf(r->id, sizeof r->id, "%s", t ? (const char *)t : "");
    t = sqlite3_column_text(s, 1);
    snprintf(r->sandbox_id, sizeof r->sandbox_id, "%s", t ? (const char *)t : "");
    r->command = col_text(s, 2);
    r->argv_json = col_text(s, 3);
    r->env_json = col_text(s, 4);
    r->cwd = col_text(s, 5);
    r->timeout_ms = sqlite3_column_int64(s, 6);
    t = sqlite3_column_text(s, 7);
    snprintf(r->status, sizeof r->status, "%s", t ? (const char *)t : "");
    r->retries = sqlite3_column_int64(s, 8);
    r->max_retries = sqlite3_column_int64(s, 9);
    r->created_at = sqlite3_column_int64(s, 10);
    r->started_at = sqlite3_column_int64(s, 11);
    r->completed_at = sqlite3_column_int64(s, 12);
    r->next_attempt_at = sqlite3_column_int64(s, 13);
    r->error = col_text(s, 14);
    r->has_result = sqlite3_column_int(s, 15) != 0;
    r->exited = sqlite3_column_int(s, 16) != 0;
    r->exit_code = sqlite3_column_int64(s, 17);
    r->signo = sqlite3_column_int64(s, 18);
    r->duration_ms = sqlite3_column_int64(s, 19);
    r->timed_out = sqlite3_column_int(s, 20) != 0;
    r->truncated = sqlite3_column_int(s, 21) != 0;
    r->out = col_blob(s, 22, &r->out_len);
    r->errout = col_blob(s, 23, &r->err_len);
}

int sbx_store_job_insert(sbx_store_t *st, const sbx_job_rec_t *rec, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_JOB_INSERT);
    bind_job(s, rec);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
        ret = sbx_fail(err, SBX_E_CONFLICT, NULL, "queue job already exists: %s", rec->id);
    else if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, "insert queue job");
    end(st, s);
    return ret;
}

int sbx_store_job_get(sbx_store_t *st, const char *id, sbx_job_rec_t *out, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_JOB_GET);
    bind_text(s, 1, id);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW)
        read_job(s, out);
    else if (rc == SQLITE_DONE)
        ret = sbx_fail(err, SBX_E_NOT_FOUND, NULL, "Queue job not found: %s", id);
    else
        ret = db_fail(err, st->db, rc, "get queue job");
    end(st, s);
    return ret;
}

int sbx_store_job_claim(sbx_store_t *st, int64_t now, sbx_job_rec_t *out, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_JOB_CLAIM);
    sqlite3_bind_int64(s, 1, now);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW) {
        read_job(s, out);
        /* Stepping to the end completes the statement (and its implicit transaction). */
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            ;
        if (rc == SQLITE_DONE) {
            ret = 1;
        } else {
            sbx_job_rec_release(out);
            ret = db_fail(err, st->db, rc, "claim queue job");
        }
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(err, st->db, rc, "claim queue job");
    }
    end(st, s);
    return ret;
}

int sbx_store_job_next_due(sbx_store_t *st, int64_t *at, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_JOB_NEXT_DUE);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW) {
        *at = sqlite3_column_int64(s, 0);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(err, st->db, rc, "find the next due queue job");
    }
    end(st, s);
    return ret;
}

int sbx_store_job_settle(sbx_store_t *st, const sbx_job_rec_t *rec, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_JOB_SETTLE);
    bind_job(s, rec);
    int rc = sqlite3_step(s), ret = 0;
    if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, "update queue job");
    else if (sqlite3_changes(st->db) == 0)
        ret = sbx_fail(err, SBX_E_CONFLICT, NULL, "queue job %s is not running", rec->id);
    end(st, s);
    return ret;
}

int sbx_store_job_cancel(sbx_store_t *st, const char *id, int64_t now, sbx_err_t *err)
{
    sqlite3_stmt *s = begin(st, Q_JOB_CANCEL);
    bind_text(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    int rc = sqlite3_step(s), ret = 0;
    if (rc != SQLITE_DONE)
        ret = db_fail(err, st->db, rc, "cancel queue job");
    else
        ret = sqlite3_changes(st->db) > 0;
    end(st, s);
    return ret;
}

int sbx_store_job_list(sbx_store_t *st, const char *status, int64_t offset, int64_t limit,
                       sbx_job_rec_t **out, size_t *n, int64_t *total, sbx_err_t *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = begin(st, Q_JOB_COUNT);
    bind_text(s, 1, status);
    if (query_int(st, s, 0, total, "count queue jobs", err) < 0)
        return -1;
    s = begin(st, Q_JOB_LIST);
    bind_text(s, 1, status);
    sqlite3_bind_int64(s, 2, offset);
    sqlite3_bind_int64(s, 3, limit);
    size_t cap = 16, len = 0;
    sbx_job_rec_t *recs = xcalloc(cap, sizeof *recs);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap)
            recs = xrealloc(recs, (cap *= 2) * sizeof *recs);
        read_job(s, &recs[len++]);
    }
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = db_fail(err, st->db, rc, "list queue jobs");
        sbx_job_recs_free(recs, len);
        recs = NULL;
        len = 0;
    }
    end(st, s);
    *out = recs;
    *n = len;
    return ret;
}

void sbx_job_rec_release(sbx_job_rec_t *rec)
{
    if (!rec)
        return;
    free(rec->command);
    free(rec->argv_json);
    free(rec->env_json);
    free(rec->cwd);
    free(rec->error);
    free(rec->out);
    free(rec->errout);
    memset(rec, 0, sizeof *rec);
}

void sbx_job_recs_free(sbx_job_rec_t *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        sbx_job_rec_release(&recs[i]);
    free(recs);
}

void sbx_sandbox_rec_release(sbx_sandbox_rec_t *rec)
{
    if (!rec)
        return;
    free(rec->name);
    free(rec->image);
    free(rec->status);
    free(rec->env_json);
    free(rec->workdir);
    free(rec->metadata_json);
    free(rec->config_json);
    free(rec->sock_path);
    free(rec->stop_reason);
    memset(rec, 0, sizeof *rec);
}

void sbx_sandbox_recs_free(sbx_sandbox_rec_t *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        sbx_sandbox_rec_release(&recs[i]);
    free(recs);
}
