/* Per-sandbox cgroups: limits land in the right files, a process can be attached, and
 * destroy kills it and removes the group everywhere. */
#include "harness.h"

#include <errno.h>
#include <sys/stat.h>

#include "backend/ns/cgroup.h"
#include "common/util.h"

static char parent[64];

static void setup(void)
{
    if (geteuid() != 0)
        SKIP("needs root to create cgroups");
    char hex[9];
    sbx_random_hex(hex, 4);
    snprintf(parent, sizeof parent, "sbx-test-%s", hex);
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_cgroup_init(parent, &err) < 0) {
        fprintf(stderr, "  cgroup init: %s\n", err.msg);
        exit(1);
    }
}

static void remove_parent(void)
{
    static const char *const v1[] = {"memory", "cpu", "cpuacct", "pids", "freezer", "unified"};
    char p[256];
    for (size_t i = 0; i < SBX_ARRAY_LEN(v1); i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/%s", v1[i], parent);
        rmdir(p);
    }
    snprintf(p, sizeof p, "/sys/fs/cgroup/%s", parent);
    rmdir(p);
}

static long long read_ll(const char *fmt, const char *a, const char *b)
{
    char p[512];
    snprintf(p, sizeof p, fmt, a, b);
    char *s = sbx_read_file(p, NULL, NULL);
    if (!s) {
        fprintf(stderr, "  cannot read %s\n", p);
        return -1;
    }
    long long v = strtoll(s, NULL, 10);
    free(s);
    return v;
}

/* Whether /proc/<pid>/cgroup places pid in <parent>/<id> for the controller. */
static bool in_group(pid_t pid, const char *ctrl, const char *id)
{
    char p[64], want[200];
    snprintf(p, sizeof p, "/proc/%d/cgroup", (int)pid);
    snprintf(want, sizeof want, "/%s/%s\n", parent, id);
    char *s = sbx_read_file(p, NULL, NULL);
    bool found = false;
    for (char *line = s; s && line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            break;
        size_t cl = (size_t)(c2 - c1 - 1);
        bool match = !strcmp(sbx_cgroup_version(), "v2")
                         ? cl == 0
                         : (strncmp(c1 + 1, ctrl, strlen(ctrl)) == 0 &&
                            (c1[1 + strlen(ctrl)] == ':' || c1[1 + strlen(ctrl)] == ','));
        if (match && !strncmp(c2 + 1, want, strlen(want)))
            found = true;
        (void)cl;
    }
    free(s);
    return found;
}

static bool group_exists(const char *ctrl, const char *id)
{
    char p[256];
    if (!strcmp(sbx_cgroup_version(), "v2"))
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/%s", parent, id);
    else
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/%s/%s", ctrl, parent, id);
    struct stat st;
    return stat(p, &st) == 0;
}

TEST(limits_attach_destroy)
{
    setup();
    sbx_err_t err = SBX_ERR_INIT;
    const char *id = "sbx_cgtest1";
    sbx_cgroup_limits_t lim = {.memory_bytes = 64 << 20, .cpus = 0.5, .pids_max = 32};
    int rc = sbx_cgroup_create(id, &lim, &err);
    if (rc < 0)
        fprintf(stderr, "  create: %s\n", err.msg);
    CHECK(rc == 0);
    if (!strcmp(sbx_cgroup_version(), "v1")) {
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/memory/%s/%s/memory.limit_in_bytes", parent, id), 64 << 20);
        if (access("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", F_OK) == 0)
            CHECK_EQ_INT(read_ll("/sys/fs/cgroup/memory/%s/%s/memory.memsw.limit_in_bytes", parent, id),
                         64 << 20);
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/cpu/%s/%s/cpu.cfs_period_us", parent, id), 100000);
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/cpu/%s/%s/cpu.cfs_quota_us", parent, id), 50000);
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/pids/%s/%s/pids.max", parent, id), 32);
    } else {
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/%s/%s/memory.max", parent, id), 64 << 20);
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/%s/%s/cpu.max", parent, id), 50000);
        CHECK_EQ_INT(read_ll("/sys/fs/cgroup/%s/%s/pids.max", parent, id), 32);
    }

    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    CHECK(child > 0);
    CHECK(sbx_cgroup_attach(id, child, &err) == 0);
    CHECK(in_group(child, "memory", id));
    CHECK(in_group(child, "pids", id));
    CHECK(in_group(child, "cpu", id));

    uint64_t mem, mem_limit, pids, cpu;
    bool oom;
    CHECK(sbx_cgroup_stats(id, &mem, &mem_limit, &pids, &cpu, &oom, &err) == 0);
    CHECK_EQ_INT(mem_limit, 64 << 20);
    CHECK_EQ_INT(pids, 1);
    CHECK(!oom);

    char **ids = NULL;
    int n = sbx_cgroup_list(&ids, &err);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(ids[0], id);
    free(ids[0]);
    free(ids);

    rc = sbx_cgroup_destroy(id, &err);
    if (rc < 0)
        fprintf(stderr, "  destroy: %s\n", err.msg);
    CHECK(rc == 0);
    int st = 0;
    CHECK(waitpid(child, &st, 0) == child);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(!group_exists("memory", id));
    CHECK(!group_exists("cpu", id));
    CHECK(!group_exists("pids", id));
    CHECK(!group_exists("freezer", id));
    /* Idempotent. */
    CHECK(sbx_cgroup_destroy(id, &err) == 0);
    remove_parent();
}

/* A group whose members keep forking is still emptied and removed. */
TEST(destroy_kills_forking_group)
{
    setup();
    sbx_err_t err = SBX_ERR_INIT;
    const char *id = "sbx_cgtest2";
    sbx_cgroup_limits_t lim = {.pids_max = 64};
    CHECK(sbx_cgroup_create(id, &lim, &err) == 0);
    pid_t child = fork();
    if (child == 0) {
        for (;;) {
            pid_t p = fork();
            if (p > 0)
                waitpid(p, NULL, 0);
            else if (p == 0)
                _exit(0);
        }
    }
    CHECK(sbx_cgroup_attach(id, child, &err) == 0);
    usleep(20000);
    CHECK(sbx_cgroup_destroy(id, &err) == 0);
    int st = 0;
    CHECK(waitpid(child, &st, 0) == child);
    CHECK(WIFSIGNALED(st));
    CHECK(!group_exists("pids", id));
    remove_parent();
}

TEST(rejects_bad_ids)
{
    setup();
    sbx_err_t err = SBX_ERR_INIT;
    sbx_cgroup_limits_t lim = {0};
    CHECK(sbx_cgroup_create("../escape", &lim, &err) < 0);
    CHECK(sbx_cgroup_create("a/b", &lim, &err) < 0);
    CHECK(sbx_cgroup_destroy("..", &err) < 0);
    remove_parent();
}

SBX_TEST_MAIN()
