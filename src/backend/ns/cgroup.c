#include "backend/ns/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

/* Paths here are built from bounded parts (validated ids, state and cgroup directories
 * checked at init) and fit their buffers; GCC cannot see those bounds. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* Controllers this module uses.  A v1 hierarchy may carry several (cpu,cpuacct). */
enum {
    C_MEMORY = 1 << 0,
    C_CPU = 1 << 1,
    C_CPUACCT = 1 << 2,
    C_PIDS = 1 << 3,
    C_FREEZER = 1 << 4,
};
static const struct {
    const char *name;
    unsigned bit;
} controllers[] = {
    {"memory", C_MEMORY}, {"cpu", C_CPU}, {"cpuacct", C_CPUACCT}, {"pids", C_PIDS}, {"freezer", C_FREEZER},
};
#define REQUIRED (C_MEMORY | C_CPU | C_PIDS)

struct hierarchy {
    char mnt[PATH_MAX];
    unsigned ctrl;
};

/* Written once by sbx_cgroup_init, read-only afterwards (so the other calls are safe to
 * make from several threads at once). */
static struct {
    int version; /* 0: not initialised, 1, 2 */
    char parent[128];
    struct hierarchy h[8];
    int nh;
} cg;

#define KILL_WAIT_MS 2000

static bool valid_name(const char *s)
{
    if (!s || !*s || strlen(s) > 100 || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-' || *p == '.'))
            return false;
    return true;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static const struct hierarchy *find(unsigned ctrl)
{
    for (int i = 0; i < cg.nh; i++)
        if (cg.h[i].ctrl & ctrl)
            return &cg.h[i];
    return NULL;
}

/* Path of `file` in the sandbox group of the hierarchy (v1) or of the unified tree. */
static void group_path(char *out, size_t n, const struct hierarchy *h, const char *id, const char *file)
{
    snprintf(out, n, "%s/%s%s%s%s%s", h->mnt, cg.parent, id ? "/" : "", id ? id : "", file ? "/" : "",
             file ? file : "");
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static int write_in(const struct hierarchy *h, const char *id, const char *file, const char *val,
                    sbx_err_t *err)
{
    char p[PATH_MAX];
    group_path(p, sizeof p, h, id, file);
    return sbx_write_file(p, val, err);
}

static int read_u64_in(const struct hierarchy *h, const char *id, const char *file, uint64_t *out)
{
    char p[PATH_MAX];
    group_path(p, sizeof p, h, id, file);
    _cleanup_free_ char *s = sbx_read_file(p, NULL, NULL);
    if (!s)
        return -1;
    if (!strncmp(s, "max", 3)) {
        *out = UINT64_MAX;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    *out = v;
    return 0;
}

/* Finds "key <n>" in a flat keyed file (memory.events, memory.oom_control, cpu.stat). */
static int read_key_in(const struct hierarchy *h, const char *id, const char *file, const char *key,
                       uint64_t *out)
{
    char p[PATH_MAX];
    group_path(p, sizeof p, h, id, file);
    _cleanup_free_ char *s = sbx_read_file(p, NULL, NULL);
    if (!s)
        return -1;
    size_t kl = strlen(key);
    for (char *line = s; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (!strncmp(line, key, kl) && line[kl] == ' ') {
            *out = strtoull(line + kl + 1, NULL, 10);
            return 0;
        }
    }
    return -1;
}

/* --- layout detection --------------------------------------------------------------- */

static unsigned v1_controllers(const char *opts)
{
    unsigned mask = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", opts);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        for (size_t i = 0; i < SBX_ARRAY_LEN(controllers); i++)
            if (!strcmp(t, controllers[i].name))
                mask |= controllers[i].bit;
    return mask;
}

static unsigned v2_controllers(const char *mnt)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/cgroup.controllers", mnt);
    _cleanup_free_ char *s = sbx_read_file(p, NULL, NULL);
    if (!s)
        return 0;
    unsigned mask = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
        for (size_t i = 0; i < SBX_ARRAY_LEN(controllers); i++)
            if (!strcmp(t, controllers[i].name))
                mask |= controllers[i].bit;
    /* cpu.stat carries usage in v2: no separate cpuacct.  Freezing is cgroup.freeze. */
    return mask;
}

/* Fills cg.h from /proc/self/mountinfo.  The unified hierarchy wins when it holds the
 * memory, cpu and pids controllers; otherwise the v1 per-controller mounts are used. */
static int detect(sbx_err_t *err)
{
    _cleanup_free_ char *mi = sbx_read_file("/proc/self/mountinfo", NULL, err);
    if (!mi)
        return -1;
    struct hierarchy v1[8];
    int n1 = 0;
    unsigned have1 = 0;
    char v2mnt[PATH_MAX] = "";
    unsigned v2ctrl = 0;
    char *save = NULL;
    for (char *line = strtok_r(mi, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
        char mnt[PATH_MAX], fstype[32], super[512];
        const char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
            sscanf(sep + 3, "%31s %*s %511s", fstype, super) != 2)
            continue;
        if (strchr(mnt, '\\'))
            continue; /* escaped characters: not a mount point we would pick */
        if (!strcmp(fstype, "cgroup2")) {
            unsigned m = v2_controllers(mnt);
            if ((m & REQUIRED) == REQUIRED && !v2mnt[0]) {
                snprintf(v2mnt, sizeof v2mnt, "%s", mnt);
                v2ctrl = m;
            }
        } else if (!strcmp(fstype, "cgroup")) {
            unsigned m = v1_controllers(super) & ~have1;
            if (m && n1 < (int)SBX_ARRAY_LEN(v1)) {
                snprintf(v1[n1].mnt, sizeof v1[n1].mnt, "%s", mnt);
                v1[n1++].ctrl = m;
                have1 |= m;
            }
        }
    }
    if (v2mnt[0]) {
        cg.version = 2;
        cg.nh = 1;
        snprintf(cg.h[0].mnt, sizeof cg.h[0].mnt, "%s", v2mnt);
        cg.h[0].ctrl = v2ctrl;
        return 0;
    }
    if ((have1 & REQUIRED) == REQUIRED) {
        cg.version = 1;
        cg.nh = n1;
        memcpy(cg.h, v1, sizeof(v1[0]) * (size_t)n1);
        return 0;
    }
    return sbx_fail(err, SBX_E_UNAVAILABLE, NULL,
                    "no usable cgroup hierarchy with memory, cpu and pids controllers");
}

/* Enables our controllers for the children of `dir` (v2 only). */
static int v2_enable(const char *dir, sbx_err_t *err)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/cgroup.subtree_control", dir);
    static const char *const want[] = {"+memory", "+cpu", "+pids"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(want); i++)
        if (sbx_write_file(p, want[i], err) < 0)
            return sbx_error_wrap(err, "enable cgroup controllers");
    return 0;
}

int sbx_cgroup_init(const char *parent, sbx_err_t *err)
{
    if (!valid_name(parent))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid cgroup parent name `%s`", parent ? parent : "");
    memset(&cg, 0, sizeof cg);
    snprintf(cg.parent, sizeof cg.parent, "%s", parent);
    if (detect(err) < 0)
        return -1;
    for (int i = 0; i < cg.nh; i++) {
        char p[PATH_MAX];
        group_path(p, sizeof p, &cg.h[i], NULL, NULL);
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return sbx_error(err, errno, "mkdir `%s`", p);
    }
    if (cg.version == 2) {
        char p[PATH_MAX];
        group_path(p, sizeof p, &cg.h[0], NULL, NULL);
        if (v2_enable(cg.h[0].mnt, err) < 0 || v2_enable(p, err) < 0)
            return -1;
    }
    return 0;
}

const char *sbx_cgroup_version(void)
{
    return cg.version == 2 ? "v2" : cg.version == 1 ? "v1" : "none";
}

/* --- per-sandbox groups ------------------------------------------------------------- */

static int apply_v1(const char *id, const sbx_cgroup_limits_t *lim, sbx_err_t *err)
{
    char v[64];
    const struct hierarchy *h;
    if (lim->memory_bytes && (h = find(C_MEMORY))) {
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->memory_bytes);
        if (write_in(h, id, "memory.limit_in_bytes", v, err) < 0)
            return -1;
        /* memory+swap equal to memory: the sandbox cannot swap.  Absent when the kernel
         * runs without swap accounting. */
        char p[PATH_MAX];
        group_path(p, sizeof p, h, id, "memory.memsw.limit_in_bytes");
        if (file_exists(p) && sbx_write_file(p, v, err) < 0)
            return -1;
    }
    if (lim->cpus > 0 && (h = find(C_CPU))) {
        long long quota = (long long)(lim->cpus * 100000.0);
        if (quota < 1000)
            quota = 1000; /* the kernel's minimum is 1 ms */
        snprintf(v, sizeof v, "%lld", quota);
        if (write_in(h, id, "cpu.cfs_period_us", "100000", err) < 0 ||
            write_in(h, id, "cpu.cfs_quota_us", v, err) < 0)
            return -1;
    }
    if (lim->pids_max && (h = find(C_PIDS))) {
        snprintf(v, sizeof v, "%u", lim->pids_max);
        if (write_in(h, id, "pids.max", v, err) < 0)
            return -1;
    }
    return 0;
}

static int apply_v2(const char *id, const sbx_cgroup_limits_t *lim, sbx_err_t *err)
{
    char v[64];
    const struct hierarchy *h = &cg.h[0];
    if (lim->memory_bytes) {
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->memory_bytes);
        if (write_in(h, id, "memory.max", v, err) < 0)
            return -1;
        char p[PATH_MAX];
        group_path(p, sizeof p, h, id, "memory.swap.max");
        if (file_exists(p) && sbx_write_file(p, "0", err) < 0)
            return -1;
    }
    if (lim->cpus > 0) {
        long long quota = (long long)(lim->cpus * 100000.0);
        if (quota < 1000)
            quota = 1000;
        snprintf(v, sizeof v, "%lld 100000", quota);
        if (write_in(h, id, "cpu.max", v, err) < 0)
            return -1;
    }
    if (lim->pids_max) {
        snprintf(v, sizeof v, "%u", lim->pids_max);
        if (write_in(h, id, "pids.max", v, err) < 0)
            return -1;
    }
    return 0;
}

int sbx_cgroup_create(const char *id, const sbx_cgroup_limits_t *lim, sbx_err_t *err)
{
    if (!cg.version)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "cgroups not initialised");
    if (!valid_name(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    for (int i = 0; i < cg.nh; i++) {
        char p[PATH_MAX];
        group_path(p, sizeof p, &cg.h[i], id, NULL);
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            sbx_error(err, errno, "mkdir `%s`", p);
            goto fail;
        }
    }
    if ((cg.version == 1 ? apply_v1(id, lim, err) : apply_v2(id, lim, err)) < 0)
        goto fail;
    return 0;
fail:
    sbx_cgroup_destroy(id, NULL);
    return -1;
}

int sbx_cgroup_update(const char *id, const sbx_cgroup_limits_t *lim, sbx_err_t *err)
{
    if (!cg.version)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "cgroups not initialised");
    if (!valid_name(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    const struct hierarchy *h;
    if (cg.version == 1 && lim->memory_bytes && (h = find(C_MEMORY))) {
        /* v1 insists on memory <= memory+swap at every step: raising needs the memsw limit
         * first, lowering needs it last.  Writing it before (may fail when lowering) and
         * after (must succeed) covers both. */
        char p[PATH_MAX], v[64];
        group_path(p, sizeof p, h, id, "memory.memsw.limit_in_bytes");
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->memory_bytes);
        if (file_exists(p))
            sbx_write_file(p, v, NULL);
    }
    return cg.version == 1 ? apply_v1(id, lim, err) : apply_v2(id, lim, err);
}

int sbx_cgroup_attach(const char *id, pid_t pid, sbx_err_t *err)
{
    if (!cg.version || !valid_name(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    char v[32];
    snprintf(v, sizeof v, "%d", (int)pid);
    for (int i = 0; i < cg.nh; i++)
        if (write_in(&cg.h[i], id, "cgroup.procs", v, err) < 0)
            return sbx_error_wrap(err, "attach pid %d to cgroup", (int)pid);
    return 0;
}

/* Sends SIGKILL to every process listed in `procs`; returns how many were listed, or -1
 * if the file cannot be read (the group is gone). */
static int kill_listed(const char *procs)
{
    _cleanup_free_ char *s = sbx_read_file(procs, NULL, NULL);
    if (!s)
        return -1;
    int n = 0;
    for (char *p = s; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 0) {
            kill((pid_t)pid, SIGKILL);
            n++;
        }
        p = end;
        while (*p == '\n')
            p++;
    }
    return n;
}

/* v1: freeze the group so nothing forks while we kill it, SIGKILL every member, thaw so
 * the signals are delivered, and repeat until the group is empty or the deadline. */
static void kill_v1(const char *id, int64_t deadline)
{
    const struct hierarchy *fz = find(C_FREEZER);
    const struct hierarchy *pr = find(C_PIDS);
    char procs[PATH_MAX], state[PATH_MAX];
    group_path(procs, sizeof procs, pr, id, "cgroup.procs");
    if (fz)
        group_path(state, sizeof state, fz, id, "freezer.state");
    for (;;) {
        bool frozen = fz && sbx_write_file(state, "FROZEN", NULL) == 0;
        if (frozen) {
            /* Wait (briefly) for FREEZING to settle so no member can still fork. */
            for (int i = 0; i < 50; i++) {
                _cleanup_free_ char *st = sbx_read_file(state, NULL, NULL);
                if (!st || !strncmp(st, "FROZEN", 6))
                    break;
                sleep_ms(1);
            }
        }
        int n = kill_listed(procs);
        if (frozen)
            sbx_write_file(state, "THAWED", NULL);
        if (n <= 0 || sbx_mono_ms() > deadline)
            return;
        sleep_ms(5);
    }
}

static void kill_v2(const char *id, int64_t deadline)
{
    const struct hierarchy *h = &cg.h[0];
    char p[PATH_MAX];
    group_path(p, sizeof p, h, id, "cgroup.kill");
    bool killed = file_exists(p) && sbx_write_file(p, "1", NULL) == 0;
    group_path(p, sizeof p, h, id, "cgroup.procs");
    for (;;) {
        /* Without cgroup.kill (kernels before 5.14) kill member by member. */
        int n = killed ? 0 : kill_listed(p);
        if (killed) {
            _cleanup_free_ char *s = sbx_read_file(p, NULL, NULL);
            n = s && *s ? 1 : 0;
        }
        if (n <= 0 || sbx_mono_ms() > deadline)
            return;
        sleep_ms(5);
    }
}

int sbx_cgroup_destroy(const char *id, sbx_err_t *err)
{
    if (!cg.version)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "cgroups not initialised");
    if (!valid_name(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    int64_t deadline = sbx_mono_ms() + KILL_WAIT_MS;
    if (cg.version == 1)
        kill_v1(id, deadline);
    else
        kill_v2(id, deadline);
    /* A group whose last task just exited may still report EBUSY for a moment. */
    for (int i = 0; i < cg.nh; i++) {
        char p[PATH_MAX];
        group_path(p, sizeof p, &cg.h[i], id, NULL);
        for (;;) {
            if (rmdir(p) == 0 || errno == ENOENT)
                break;
            if (errno != EBUSY || sbx_mono_ms() > deadline)
                return sbx_error(err, errno, "rmdir `%s`", p);
            sleep_ms(5);
        }
    }
    return 0;
}

int sbx_cgroup_stats(const char *id, uint64_t *mem, uint64_t *mem_limit, uint64_t *pids, uint64_t *cpu_ns,
                     bool *oom_killed, sbx_err_t *err)
{
    if (!cg.version || !valid_name(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    *mem = *mem_limit = *pids = *cpu_ns = 0;
    *oom_killed = false;
    uint64_t v = 0;
    if (cg.version == 2) {
        const struct hierarchy *h = &cg.h[0];
        char p[PATH_MAX];
        group_path(p, sizeof p, h, id, NULL);
        if (!file_exists(p))
            return sbx_fail(err, SBX_E_NOT_FOUND, NULL, "no cgroup for sandbox %s", id);
        read_u64_in(h, id, "memory.current", mem);
        read_u64_in(h, id, "memory.max", mem_limit);
        read_u64_in(h, id, "pids.current", pids);
        if (read_key_in(h, id, "cpu.stat", "usage_usec", &v) == 0)
            *cpu_ns = v * 1000;
        if (read_key_in(h, id, "memory.events", "oom_kill", &v) == 0)
            *oom_killed = v > 0;
        return 0;
    }
    const struct hierarchy *hm = find(C_MEMORY), *hp = find(C_PIDS), *ha = find(C_CPUACCT);
    char p[PATH_MAX];
    group_path(p, sizeof p, hm, id, NULL);
    if (!file_exists(p))
        return sbx_fail(err, SBX_E_NOT_FOUND, NULL, "no cgroup for sandbox %s", id);
    read_u64_in(hm, id, "memory.usage_in_bytes", mem);
    read_u64_in(hm, id, "memory.limit_in_bytes", mem_limit);
    read_u64_in(hp, id, "pids.current", pids);
    if (ha)
        read_u64_in(ha, id, "cpuacct.usage", cpu_ns);
    /* oom_kill in memory.oom_control counts kills (4.13+); failcnt only says the limit
     * was hit, which reclaim may have absorbed, so it is the fallback. */
    if (read_key_in(hm, id, "memory.oom_control", "oom_kill", &v) == 0)
        *oom_killed = v > 0;
    else if (read_u64_in(hm, id, "memory.failcnt", &v) == 0)
        *oom_killed = v > 0;
    return 0;
}

int sbx_cgroup_procs(const char *id, pid_t **pids, sbx_err_t *err)
{
    *pids = NULL;
    if (!cg.version || !valid_name(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    const struct hierarchy *h = cg.version == 2 ? &cg.h[0] : find(C_PIDS);
    char p[PATH_MAX];
    group_path(p, sizeof p, h, id, "cgroup.procs");
    _cleanup_free_ char *s = sbx_read_file(p, NULL, NULL);
    if (!s)
        return 0;
    pid_t *out = NULL;
    int n = 0;
    for (char *q = s; *q;) {
        char *end;
        long v = strtol(q, &end, 10);
        if (end == q)
            break;
        if (v > 0) {
            out = xrealloc(out, sizeof *out * (size_t)(n + 1));
            out[n++] = (pid_t)v;
        }
        for (q = end; *q == '\n';)
            q++;
    }
    *pids = out;
    return n;
}

int sbx_cgroup_list(char ***ids, sbx_err_t *err)
{
    *ids = NULL;
    if (!cg.version)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "cgroups not initialised");
    char **out = NULL;
    int n = 0;
    for (int i = 0; i < cg.nh; i++) {
        char p[PATH_MAX];
        group_path(p, sizeof p, &cg.h[i], NULL, NULL);
        DIR *d = opendir(p);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_type != DT_DIR || !valid_name(de->d_name))
                continue;
            bool dup = false;
            for (int j = 0; j < n && !dup; j++)
                dup = !strcmp(out[j], de->d_name);
            if (dup)
                continue;
            out = xrealloc(out, sizeof *out * (size_t)(n + 1));
            out[n++] = xstrdup(de->d_name);
        }
        closedir(d);
    }
    *ids = out;
    return n;
}
