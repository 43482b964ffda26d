#include "harness.h"
#include "common/util.h"
#include "store/store.h"

#include <pthread.h>

/* Each test runs in its own process, so one static buffer per process is enough. */
static const char *tmp_db(void)
{
    static char path[64];
    char tmpl[] = "/tmp/sbx-store-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    snprintf(path, sizeof path, "%s/sandboxd.db", tmpl);
    return path;
}

static void fill(sbx_sandbox_rec_t *r, const char *id, int64_t created, int64_t slot, const char *status)
{
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    r->name = xstrdup("n-it's \"quoted\"");
    r->image = xstrdup("python");
    r->status = xstrdup(status);
    r->created_at = created;
    r->expires_at = created + 3600000;
    r->last_exec_at = created;
    r->timeout_secs = 3600;
    r->idle_timeout_secs = 300;
    r->cpus = 0.5;
    r->memory_mb = 512;
    r->disk_mb = 1024;
    r->pids_max = 1024;
    r->network = true;
    r->env_json = xstrdup("{\"A\":\"1\"}");
    r->workdir = xstrdup("/workspace");
    r->metadata_json = xstrdup("{}");
    r->config_json = xstrdup("{\"image\":\"python\"}");
    r->uid_slot = slot;
    r->pid = 1234;
    r->pid_start = 99;
    r->sock_path = xstrdup("/run/sandboxd/x.sock");
    r->stop_reason = NULL;
    r->stopped_at = 0;
}

static sbx_store_t *open_or_die(const char *path)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = sbx_store_open(path, &err);
    if (!st)
        fprintf(stderr, "  open: %s\n", err.msg);
    CHECK(st != NULL);
    return st;
}

TEST(insert_get_roundtrip)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    sbx_sandbox_rec_t r, g;
    fill(&r, "sbx_a", 1000, 0, "running");
    CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
    CHECK_EQ_INT(sbx_store_sandbox_get(st, "sbx_a", &g, &err), 0);
    CHECK_EQ_STR(g.id, "sbx_a");
    CHECK_EQ_STR(g.name, r.name);
    CHECK_EQ_STR(g.image, "python");
    CHECK_EQ_STR(g.status, "running");
    CHECK_EQ_INT(g.created_at, 1000);
    CHECK_EQ_INT(g.expires_at, 3601000);
    CHECK_EQ_INT(g.last_exec_at, 1000);
    CHECK_EQ_INT(g.timeout_secs, 3600);
    CHECK_EQ_INT(g.idle_timeout_secs, 300);
    CHECK(g.cpus == 0.5);
    CHECK_EQ_INT(g.memory_mb, 512);
    CHECK_EQ_INT(g.disk_mb, 1024);
    CHECK_EQ_INT(g.pids_max, 1024);
    CHECK(g.network);
    CHECK_EQ_STR(g.env_json, "{\"A\":\"1\"}");
    CHECK_EQ_STR(g.workdir, "/workspace");
    CHECK_EQ_STR(g.metadata_json, "{}");
    CHECK_EQ_STR(g.config_json, "{\"image\":\"python\"}");
    CHECK_EQ_INT(g.uid_slot, 0);
    CHECK_EQ_INT(g.pid, 1234);
    CHECK_EQ_INT(g.pid_start, 99);
    CHECK_EQ_STR(g.sock_path, "/run/sandboxd/x.sock");
    CHECK(g.stop_reason == NULL);
    CHECK_EQ_INT(g.stopped_at, 0);
    sbx_sandbox_rec_release(&g);

    /* A second insert of the same id conflicts. */
    CHECK(sbx_store_sandbox_insert(st, &r, &err) < 0);
    CHECK(err.kind == SBX_E_CONFLICT);
    sbx_sandbox_rec_release(&r);
    sbx_store_close(st);
}

TEST(missing_id_is_s002)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    sbx_sandbox_rec_t r;
    CHECK(sbx_store_sandbox_get(st, "sbx_nope", &r, &err) < 0);
    CHECK(err.kind == SBX_E_NOT_FOUND);
    CHECK_EQ_STR(err.code, "S002");
    CHECK_EQ_STR(err.msg, "sandbox not found: sbx_nope");

    sbx_err_clear(&err);
    fill(&r, "sbx_nope", 1, 0, "running");
    CHECK(sbx_store_sandbox_update(st, &r, &err) < 0);
    CHECK(err.kind == SBX_E_NOT_FOUND && !strcmp(err.code, "S002"));
    sbx_err_clear(&err);
    CHECK(sbx_store_sandbox_delete(st, "sbx_nope", &err) < 0);
    CHECK(err.kind == SBX_E_NOT_FOUND && !strcmp(err.code, "S002"));
    sbx_err_clear(&err);
    CHECK(sbx_store_sandbox_touch(st, "sbx_nope", 5, &err) < 0);
    CHECK(err.kind == SBX_E_NOT_FOUND && !strcmp(err.code, "S002"));
    sbx_sandbox_rec_release(&r);
    sbx_store_close(st);
}

TEST(update_touch_delete)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    sbx_sandbox_rec_t r, g;
    fill(&r, "sbx_u", 10, 3, "running");
    CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
    free(r.status);
    r.status = xstrdup("stopped");
    r.stop_reason = xstrdup("user");
    r.stopped_at = 77;
    r.pid = 0;
    free(r.workdir);
    r.workdir = NULL;
    CHECK_EQ_INT(sbx_store_sandbox_update(st, &r, &err), 0);
    CHECK_EQ_INT(sbx_store_sandbox_touch(st, "sbx_u", 555, &err), 0);
    CHECK_EQ_INT(sbx_store_sandbox_get(st, "sbx_u", &g, &err), 0);
    CHECK_EQ_STR(g.status, "stopped");
    CHECK_EQ_STR(g.stop_reason, "user");
    CHECK_EQ_INT(g.stopped_at, 77);
    CHECK_EQ_INT(g.pid, 0);
    CHECK(g.workdir == NULL);
    CHECK_EQ_INT(g.last_exec_at, 555);
    sbx_sandbox_rec_release(&g);
    CHECK_EQ_INT(sbx_store_sandbox_delete(st, "sbx_u", &err), 0);
    CHECK(sbx_store_sandbox_get(st, "sbx_u", &g, &err) < 0);
    CHECK(err.kind == SBX_E_NOT_FOUND);
    sbx_sandbox_rec_release(&r);
    sbx_store_close(st);
}

TEST(list_ordered_and_count_live)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    const char *ids[] = {"sbx_c", "sbx_a", "sbx_b", "sbx_d"};
    int64_t created[] = {30, 10, 20, 40};
    const char *status[] = {"running", "creating", "stopped", "failed"};
    for (int i = 0; i < 4; i++) {
        sbx_sandbox_rec_t r;
        fill(&r, ids[i], created[i], i, status[i]);
        CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
        sbx_sandbox_rec_release(&r);
    }
    sbx_sandbox_rec_t *recs;
    size_t n;
    CHECK_EQ_INT(sbx_store_sandbox_list(st, &recs, &n, &err), 0);
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_STR(recs[0].id, "sbx_a");
    CHECK_EQ_STR(recs[1].id, "sbx_b");
    CHECK_EQ_STR(recs[2].id, "sbx_c");
    CHECK_EQ_STR(recs[3].id, "sbx_d");
    sbx_sandbox_recs_free(recs, n);
    int64_t live = -1;
    CHECK_EQ_INT(sbx_store_sandbox_count_live(st, &live, &err), 0);
    CHECK_EQ_INT(live, 2);
    sbx_store_close(st);
}

TEST(free_slot_reuses_gaps)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    int64_t slot = -1;
    CHECK_EQ_INT(sbx_store_free_slot(st, &slot, &err), 0);
    CHECK_EQ_INT(slot, 0);
    char id[16];
    for (int i = 0; i < 5; i++) {
        sbx_sandbox_rec_t r;
        snprintf(id, sizeof id, "sbx_%d", i);
        fill(&r, id, i, i, "running");
        CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
        sbx_sandbox_rec_release(&r);
    }
    CHECK_EQ_INT(sbx_store_free_slot(st, &slot, &err), 0);
    CHECK_EQ_INT(slot, 5);
    CHECK_EQ_INT(sbx_store_sandbox_delete(st, "sbx_3", &err), 0);
    CHECK_EQ_INT(sbx_store_sandbox_delete(st, "sbx_1", &err), 0);
    CHECK_EQ_INT(sbx_store_free_slot(st, &slot, &err), 0);
    CHECK_EQ_INT(slot, 1);
    CHECK_EQ_INT(sbx_store_sandbox_delete(st, "sbx_0", &err), 0);
    CHECK_EQ_INT(sbx_store_free_slot(st, &slot, &err), 0);
    CHECK_EQ_INT(slot, 0);
    /* Rows without a slot (-1) do not count. */
    sbx_sandbox_rec_t r;
    fill(&r, "sbx_noslot", 9, -1, "creating");
    CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
    sbx_sandbox_rec_release(&r);
    CHECK_EQ_INT(sbx_store_free_slot(st, &slot, &err), 0);
    CHECK_EQ_INT(slot, 0);
    sbx_store_close(st);
}

TEST(counters)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    int64_t v = -1;
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalCreated", &v, &err), 0);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(sbx_store_counter_add(st, "totalCreated", 1, &err), 0);
    CHECK_EQ_INT(sbx_store_counter_add(st, "totalCreated", 4, &err), 0);
    CHECK_EQ_INT(sbx_store_counter_add(st, "totalKilled", -2, &err), 0);
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalCreated", &v, &err), 0);
    CHECK_EQ_INT(v, 5);
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalKilled", &v, &err), 0);
    CHECK_EQ_INT(v, -2);
    sbx_store_close(st);
}

TEST(update_counting_is_one_transaction)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    sbx_sandbox_rec_t r;
    fill(&r, "sbx_count", 1, 3, "running");
    CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
    free(r.status);
    r.status = xstrdup("deleting");
    CHECK_EQ_INT(sbx_store_sandbox_update_counting(st, &r, "totalKilled", &err), 0);
    sbx_sandbox_rec_t got = {0};
    CHECK_EQ_INT(sbx_store_sandbox_get(st, "sbx_count", &got, &err), 0);
    CHECK_EQ_STR(got.status, "deleting");
    sbx_sandbox_rec_release(&got);
    int64_t v = -1, live = -1;
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalKilled", &v, &err), 0);
    CHECK_EQ_INT(v, 1);
    /* A record being deleted holds its uid slot but no capacity. */
    CHECK_EQ_INT(sbx_store_sandbox_count_live(st, &live, &err), 0);
    CHECK_EQ_INT(live, 0);
    CHECK_EQ_INT(sbx_store_free_slot(st, &v, &err), 0);
    CHECK_EQ_INT(v, 0);
    fill(&got, "sbx_other", 2, 0, "running");
    CHECK_EQ_INT(sbx_store_sandbox_insert(st, &got, &err), 0);
    sbx_sandbox_rec_release(&got);
    CHECK_EQ_INT(sbx_store_free_slot(st, &v, &err), 0);
    CHECK_EQ_INT(v, 1);
    /* An unknown id changes nothing: the counter is rolled back with the update. */
    snprintf(r.id, sizeof r.id, "sbx_missing");
    CHECK_EQ_INT(sbx_store_sandbox_update_counting(st, &r, "totalKilled", &err), -1);
    CHECK_EQ_INT(err.kind, SBX_E_NOT_FOUND);
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalKilled", &v, &err), 0);
    CHECK_EQ_INT(v, 1);
    sbx_sandbox_rec_release(&r);
    sbx_store_close(st);
}

TEST(reopen_persists_and_checks)
{
    sbx_err_t err = SBX_ERR_INIT;
    const char *path = tmp_db();
    sbx_store_t *st = open_or_die(path);
    sbx_sandbox_rec_t r;
    fill(&r, "sbx_keep", 1, 7, "running");
    CHECK_EQ_INT(sbx_store_sandbox_insert(st, &r, &err), 0);
    sbx_sandbox_rec_release(&r);
    CHECK_EQ_INT(sbx_store_counter_add(st, "totalCreated", 3, &err), 0);
    sbx_store_close(st);

    st = open_or_die(path);
    CHECK_EQ_INT(sbx_store_check(st, &err), 0);
    CHECK_EQ_INT(sbx_store_sandbox_get(st, "sbx_keep", &r, &err), 0);
    CHECK_EQ_INT(r.uid_slot, 7);
    sbx_sandbox_rec_release(&r);
    int64_t v;
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalCreated", &v, &err), 0);
    CHECK_EQ_INT(v, 3);
    sbx_store_close(st);
}

TEST(unwritable_path_fails_cleanly)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = sbx_store_open("/nonexistent-dir/sub/sandboxd.db", &err);
    CHECK(st == NULL);
    CHECK(err.kind == SBX_E_INTERNAL);
    CHECK(strstr(err.msg, "/nonexistent-dir/sub/sandboxd.db") != NULL);
}

struct thr_arg {
    sbx_store_t *st;
    int t;
    int failures;
};

static void *insert_many(void *p)
{
    struct thr_arg *a = p;
    for (int i = 0; i < 50; i++) {
        sbx_err_t err = SBX_ERR_INIT;
        sbx_sandbox_rec_t r;
        char id[32];
        snprintf(id, sizeof id, "sbx_t%d_%d", a->t, i);
        fill(&r, id, a->t * 1000 + i, a->t * 1000 + i, "running");
        if (sbx_store_sandbox_insert(a->st, &r, &err) < 0 ||
            sbx_store_counter_add(a->st, "totalCreated", 1, &err) < 0)
            a->failures++;
        sbx_sandbox_rec_release(&r);
    }
    return NULL;
}

TEST(concurrent_inserts)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_store_t *st = open_or_die(tmp_db());
    pthread_t th[8];
    struct thr_arg args[8];
    for (int t = 0; t < 8; t++) {
        args[t] = (struct thr_arg){st, t, 0};
        CHECK(pthread_create(&th[t], NULL, insert_many, &args[t]) == 0);
    }
    for (int t = 0; t < 8; t++) {
        pthread_join(th[t], NULL);
        CHECK_EQ_INT(args[t].failures, 0);
    }
    sbx_sandbox_rec_t *recs;
    size_t n;
    CHECK_EQ_INT(sbx_store_sandbox_list(st, &recs, &n, &err), 0);
    CHECK_EQ_INT(n, 400);
    sbx_sandbox_recs_free(recs, n);
    int64_t v;
    CHECK_EQ_INT(sbx_store_counter_get(st, "totalCreated", &v, &err), 0);
    CHECK_EQ_INT(v, 400);
    CHECK_EQ_INT(sbx_store_check(st, &err), 0);
    sbx_store_close(st);
}

SBX_TEST_MAIN()
