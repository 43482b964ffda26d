/* The namespace backend end to end: a busybox rootfs, a real sandbox, its isolation seen
 * from the host and (through the agent) from inside, and a destroy that leaves nothing. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/ns/cgroup.h"
#include "backend/ns/seccomp.h"
#include "common/util.h"
#include "proto/proto.h"

#define CAPS_EXPECTED "00000000a00405fb"

static char base[128], state_dir[256], run_dir[256], rootfs[256], cg_parent[64];
static const char *agent_path;

static const char *const applets[] = {"sh",   "cat",  "ls",   "id",    "ps",    "hostname",
                                      "stat", "echo", "true", "sleep", "touch", "wc"};

static void make_rootfs(const char *dir)
{
    static const char *const dirs[] = {"", "/bin", "/etc", "/proc", "/dev", "/sys", "/tmp", "/root"};
    char p[512];
    for (size_t i = 0; i < SBX_ARRAY_LEN(dirs); i++) {
        snprintf(p, sizeof p, "%s%s", dir, dirs[i]);
        CHECK(mkdir(p, 0755) == 0);
    }
    size_t len = 0;
    char *bb = sbx_read_file("/bin/busybox", &len, NULL);
    CHECK(bb != NULL);
    snprintf(p, sizeof p, "%s/bin/busybox", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
    CHECK(fd >= 0);
    CHECK(sbx_write_all(fd, bb, len) == 0);
    close(fd);
    free(bb);
    for (size_t i = 0; i < SBX_ARRAY_LEN(applets); i++) {
        snprintf(p, sizeof p, "%s/bin/%s", dir, applets[i]);
        CHECK(symlink("busybox", p) == 0);
    }
    snprintf(p, sizeof p, "%s/etc/secret", dir);
    fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, "s3cret\n", 7) == 7);
    close(fd);
}

static void teardown(void);

/* Prepares a private state dir, rootfs and cgroup parent, and initialises the backend.
 * Every test runs in its own process, so each gets a fresh backend. */
static void setup(void)
{
    if (geteuid() != 0)
        SKIP("needs root (namespaces, mounts, cgroups)");
    agent_path = getenv("SBX_AGENT") ? getenv("SBX_AGENT") : "build/sandbox-agent";
    if (access(agent_path, X_OK) != 0)
        SKIP("no agent binary at %s (make build/sandbox-agent)", agent_path);
    snprintf(base, sizeof base, "/tmp/sbx-nstest-XXXXXX");
    CHECK(mkdtemp(base) != NULL);
    snprintf(state_dir, sizeof state_dir, "%s/state", base);
    snprintf(run_dir, sizeof run_dir, "%s/run", base);
    snprintf(rootfs, sizeof rootfs, "%s/rootfs", base);
    char hex[9];
    sbx_random_hex(hex, 4);
    snprintf(cg_parent, sizeof cg_parent, "sbx-nstest-%s", hex);
    make_rootfs(rootfs);
    atexit(teardown);
    sbx_backend_config_t cfg = {state_dir, run_dir, agent_path, cg_parent};
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_backend_ns.init(&cfg, &err) < 0) {
        fprintf(stderr, "  init: %s\n", err.msg);
        exit(1);
    }
}

/* Ids created by the running test, destroyed at exit even when a CHECK fails. */
static char created[4][40];

static void remember(const char *id)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(created); i++)
        if (!created[i][0]) {
            snprintf(created[i], sizeof created[i], "%s", id);
            return;
        }
}

static void teardown(void)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(created); i++)
        if (created[i][0]) {
            sbx_backend_ns.destroy(created[i], NULL, NULL);
            created[i][0] = '\0';
        }
    static const char *const h[] = {"memory", "cpu", "cpuacct", "pids", "freezer"};
    char p[256];
    for (size_t i = 0; i < SBX_ARRAY_LEN(h); i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/%s", h[i], cg_parent);
        rmdir(p);
    }
    snprintf(p, sizeof p, "/sys/fs/cgroup/%s", cg_parent);
    rmdir(p);
    sbx_rm_rf(base, NULL);
}

static uint32_t random_uid_base(void)
{
    char hex[5];
    sbx_random_hex(hex, 2);
    return 300000 + (uint32_t)(strtoul(hex, NULL, 16) % 1000) * 65536;
}

static sbx_sandbox_spec_t spec_for(const char *id, uint32_t uid_base)
{
    return (sbx_sandbox_spec_t){
        .id = id,
        .rootfs = rootfs,
        .hostname = "sbxtest",
        .workdir = "/workspace",
        .uid_base = uid_base,
        .memory_mb = 256,
        .cpus = 1.5,
        .pids_max = 128,
        .disk_mb = 64,
        .network = false,
    };
}

/* The value of "Key:" in /proc/<pid>/status, whitespace-trimmed. */
static char *status_field(pid_t pid, const char *key)
{
    static char out[256];
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    char *s = sbx_read_file(p, NULL, NULL);
    CHECK(s != NULL);
    size_t kl = strlen(key);
    out[0] = '\0';
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n"))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            char *v = line + kl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            snprintf(out, sizeof out, "%s", v);
        }
    free(s);
    return out;
}

/* Runs argv in the sandbox through the agent; returns the exit code, stdout in *out. */
static int run_in(const sbx_sandbox_rt_t *rt, char **out, const char *const *argv)
{
    sbx_err_t err = SBX_ERR_INIT;
    int fd = sbx_backend_ns.connect(rt, &err);
    if (fd < 0)
        fprintf(stderr, "  connect: %s\n", err.msg);
    CHECK(fd >= 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_EXEC);
    for (size_t i = 0; argv[i]; i++)
        sbx_msg_add_str(&m, SBX_TAG_ARGV, argv[i]);
    sbx_msg_add_str(&m, SBX_TAG_ENV, "PATH=/bin");
    sbx_msg_end(&m);
    CHECK(sbx_msg_send(fd, &m) == 0);
    sbx_msg_release(&m);
    size_t cap = 1, len = 0;
    char *buf = calloc(1, 1);
    int code = -1;
    for (;;) {
        sbx_frame_hdr_t hdr;
        uint8_t *payload = NULL;
        int r = sbx_frame_read(fd, &hdr, &payload);
        CHECK(r == 1);
        if (hdr.type == SBX_MSG_STDOUT) {
            sbx_field_iter_t it;
            sbx_field_t f;
            sbx_field_iter_init(&it, payload, hdr.len);
            while (sbx_field_next(&it, &f) == 1)
                if (f.tag == SBX_TAG_DATA) {
                    buf = realloc(buf, cap = len + f.len + 1);
                    memcpy(buf + len, f.val, f.len);
                    len += f.len;
                    buf[len] = '\0';
                }
        } else if (hdr.type == SBX_MSG_EXIT) {
            sbx_exit_info_t info;
            CHECK(sbx_exit_decode(payload, hdr.len, &info) == 0);
            code = (int)info.exit_code;
            free(payload);
            break;
        } else if (hdr.type == SBX_MSG_ERROR) {
            fprintf(stderr, "  agent error: %s\n", (char *)payload);
            free(payload);
            break;
        }
        free(payload);
    }
    close(fd);
    (void)cap;
    *out = buf;
    return code;
}

static bool mounted_anywhere(const char *needle)
{
    char *mi = sbx_read_file("/proc/self/mountinfo", NULL, NULL);
    bool found = mi && strstr(mi, needle);
    free(mi);
    return found;
}

static bool pid_gone(pid_t pid)
{
    /* Gone, not a zombie: the backend is the subreaper and must have reaped it. */
    char p[64];
    snprintf(p, sizeof p, "/proc/%d", (int)pid);
    return access(p, F_OK) != 0;
}

static void check_agent_view(const sbx_sandbox_rt_t *rt)
{
    char *out;
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"hostname", NULL}), 0);
    CHECK_EQ_STR(out, "sbxtest\n");
    free(out);
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"id", "-u", NULL}), 0);
    CHECK_EQ_STR(out, "0\n");
    free(out);
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"cat", "/proc/1/cmdline", NULL}), 0);
    CHECK(!memcmp(out,
                  "sandbox-agent\0--listen-fd\0"
                  "3\0",
                  28));
    free(out);
    /* Masked files read as /dev/null (the kernel may lack some of them, e.g. kcore). */
    static const char *const masked[] = {"kcore",       "keys",          "timer_list",
                                         "sched_debug", "sysrq-trigger", "latency_stats"};
    char expect[64] = "", cmd[512] = "for f in";
    for (size_t i = 0; i < SBX_ARRAY_LEN(masked); i++) {
        char hp[64];
        snprintf(hp, sizeof hp, "/proc/%s", masked[i]);
        if (access(hp, F_OK) == 0) {
            strcat(expect, "0\n");
            strcat(cmd, " ");
            strcat(cmd, masked[i]);
        }
    }
    strcat(cmd, "; do wc -c < /proc/$f; done");
    CHECK(expect[0] != '\0');
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"sh", "-c", cmd, NULL}), 0);
    CHECK_EQ_STR(out, expect);
    free(out);
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"cat", "/proc/net/dev", NULL}), 0);
    int ifaces = 0;
    for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n"))
        if (strchr(l, ':')) {
            ifaces++;
            CHECK(strstr(l, "lo:") != NULL);
        }
    CHECK_EQ_INT(ifaces, 1);
    free(out);
    /* Idmapped lower: root-owned image files belong to the sandbox's root. */
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"stat", "-c", "%u:%g", "/bin/busybox", NULL}), 0);
    CHECK_EQ_STR(out, "0:0\n");
    free(out);
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"cat", "/etc/secret", NULL}), 0);
    CHECK_EQ_STR(out, "s3cret\n");
    free(out);
    /* Writable overlay, working directory created. */
    CHECK_EQ_INT(run_in(rt, &out,
                        (const char *const[]){"sh", "-c", "echo hi > /etc/new && cat /etc/new && pwd", NULL}),
                 0);
    CHECK_EQ_STR(out, "hi\n/workspace\n");
    free(out);
    CHECK_EQ_INT(run_in(rt, &out, (const char *const[]){"ls", "/dev", NULL}), 0);
    CHECK(strstr(out, "null") && strstr(out, "pts") && strstr(out, "ptmx") && !strstr(out, "sda"));
    free(out);
    /* Mounting is refused (no CAP_SYS_ADMIN, seccomp), /sys is read-only. */
    CHECK(run_in(rt, &out,
                 (const char *const[]){"sh", "-c", "echo 1 > /proc/sysrq-trigger; touch /sys/x", NULL}) != 0);
    free(out);
}

TEST_T(create_isolates_and_destroy_cleans, 60)
{
    setup();
    char id[40];
    sbx_new_id("sbx", id, sizeof id);
    uint32_t ub = random_uid_base();
    sbx_sandbox_spec_t spec = spec_for(id, ub);
    sbx_sandbox_rt_t rt;
    sbx_err_t err = SBX_ERR_INIT;
    int rc = sbx_backend_ns.create(&spec, &rt, &err);
    if (rc < 0)
        fprintf(stderr, "  create: %s\n", err.msg);
    CHECK(rc == 0);
    remember(id);
    CHECK(rt.pid > 0 && rt.pid_start > 0);
    CHECK(sbx_backend_ns.alive(&rt));

    char p[512], want[64];
    snprintf(p, sizeof p, "/proc/%d/uid_map", (int)rt.pid);
    char *map = sbx_read_file(p, NULL, NULL);
    CHECK(map != NULL);
    unsigned a = 1, b = 0, c = 0;
    CHECK(sscanf(map, "%u %u %u", &a, &b, &c) == 3);
    CHECK(a == 0 && b == ub && c == 65536);
    free(map);
    snprintf(want, sizeof want, "%u\t%u\t%u\t%u", ub, ub, ub, ub);
    CHECK_EQ_STR(status_field(rt.pid, "Uid"), want);
    CHECK_EQ_STR(status_field(rt.pid, "Gid"), want);
    CHECK_EQ_STR(status_field(rt.pid, "Seccomp"), "2");
    CHECK_EQ_STR(status_field(rt.pid, "NoNewPrivs"), "1");
    CHECK_EQ_STR(status_field(rt.pid, "CapBnd"), CAPS_EXPECTED);
    CHECK_EQ_STR(status_field(rt.pid, "CapEff"), CAPS_EXPECTED);
    CHECK_EQ_STR(status_field(rt.pid, "CapInh"), "0000000000000000");
    snprintf(p, sizeof p, "/proc/%d/exe", (int)rt.pid);
    char exe[256] = "";
    CHECK(readlink(p, exe, sizeof exe - 1) > 0);
    CHECK(strstr(exe, "memfd:sandbox-agent") != NULL);

    if (!strcmp(sbx_cgroup_version(), "v1")) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/memory/%s/%s/memory.limit_in_bytes", cg_parent, id);
        char *lim = sbx_read_file(p, NULL, NULL);
        CHECK(lim && strtoull(lim, NULL, 10) == 256ull << 20);
        free(lim);
    }
    sbx_sandbox_stats_t st;
    CHECK(sbx_backend_ns.stats(id, &st, &err) == 0);
    CHECK_EQ_INT(st.memory_limit_bytes, 256ull << 20);
    CHECK(st.pids >= 1);

    check_agent_view(&rt);

    char **ids = NULL;
    int n = sbx_backend_ns.list_leftovers(&ids, &err);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(ids[0], id);
    free(ids[0]);
    free(ids);

    rc = sbx_backend_ns.destroy(id, &rt, &err);
    if (rc < 0)
        fprintf(stderr, "  destroy: %s\n", err.msg);
    CHECK(rc == 0);
    CHECK(!sbx_backend_ns.alive(&rt));
    CHECK(pid_gone(rt.pid));
    snprintf(p, sizeof p, "/sys/fs/cgroup/memory/%s/%s", cg_parent, id);
    CHECK(access(p, F_OK) != 0);
    snprintf(p, sizeof p, "/sys/fs/cgroup/pids/%s/%s", cg_parent, id);
    CHECK(access(p, F_OK) != 0);
    snprintf(p, sizeof p, "%s/sandboxes/%s", state_dir, id);
    CHECK(access(p, F_OK) != 0);
    CHECK(access(rt.sock_path, F_OK) != 0);
    CHECK(!mounted_anywhere(id));
    CHECK(sbx_backend_ns.destroy(id, &rt, &err) == 0); /* idempotent */
    n = sbx_backend_ns.list_leftovers(&ids, &err);
    CHECK_EQ_INT(n, 0);
    free(ids);
    teardown();
}

/* After a daemon restart only the id is known: destroy must still clean up. */
TEST_T(destroy_from_id_alone, 60)
{
    setup();
    char id[40];
    sbx_new_id("sbx", id, sizeof id);
    sbx_sandbox_spec_t spec = spec_for(id, random_uid_base());
    sbx_sandbox_rt_t rt;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_backend_ns.create(&spec, &rt, &err) == 0);
    remember(id);
    CHECK(sbx_backend_ns.destroy(id, NULL, &err) == 0);
    CHECK(pid_gone(rt.pid));
    CHECK(!mounted_anywhere(id));
    char p[512];
    snprintf(p, sizeof p, "%s/sandboxes/%s", state_dir, id);
    CHECK(access(p, F_OK) != 0);
    teardown();
}

TEST(bad_rootfs_fails_and_leaves_nothing)
{
    setup();
    sbx_sandbox_spec_t spec = spec_for("sbx_badrootfs", random_uid_base());
    spec.rootfs = "/nonexistent/rootfs";
    sbx_sandbox_rt_t rt;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_backend_ns.create(&spec, &rt, &err) < 0);
    fprintf(stderr, "  (expected) %s\n", err.msg);
    CHECK(strstr(err.msg, "/nonexistent/rootfs") != NULL);
    char **ids = NULL;
    CHECK_EQ_INT(sbx_backend_ns.list_leftovers(&ids, &err), 0);
    free(ids);
    CHECK(!mounted_anywhere("sbx_badrootfs"));
    teardown();
}

/* A failure inside the sandbox's setup is reported with its step and cleaned up. */
TEST(setup_failure_is_reported_and_cleaned)
{
    setup();
    /* A workdir under a regular file cannot be created. */
    char p[512];
    snprintf(p, sizeof p, "%s/etc/afile", rootfs);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    close(fd);
    sbx_sandbox_spec_t spec = spec_for("sbx_badworkdir", random_uid_base());
    spec.workdir = "/etc/afile/sub";
    sbx_sandbox_rt_t rt;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_backend_ns.create(&spec, &rt, &err) < 0);
    fprintf(stderr, "  (expected) %s\n", err.msg);
    CHECK(strstr(err.msg, "sandbox setup failed at create workdir") != NULL);
    char **ids = NULL;
    CHECK_EQ_INT(sbx_backend_ns.list_leftovers(&ids, &err), 0);
    free(ids);
    CHECK(!mounted_anywhere("sbx_badworkdir"));
    teardown();
}

TEST(destroy_unknown_id_succeeds)
{
    setup();
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_backend_ns.destroy("sbx_000000000000000000000000", NULL, &err) == 0);
    CHECK(sbx_backend_ns.destroy("../../etc", NULL, &err) < 0);
    teardown();
}

/* The seccomp program on its own, in a throwaway child. */
TEST(seccomp_policy)
{
    struct sock_fprog prog;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_seccomp_build(&prog, &err) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
            _exit(10);
        if (getpid() <= 0)
            _exit(11);
        if (unshare(CLONE_NEWUSER) == 0 || errno != EPERM)
            _exit(12);
        if (mount("none", "/tmp", "tmpfs", 0, NULL) == 0 || errno != EPERM)
            _exit(13);
        if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
            _exit(14);
        if (syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0) != -1 || errno != EPERM)
            _exit(15);
        if (personality(READ_IMPLIES_EXEC) != -1 || errno != EPERM)
            _exit(16);
        if (personality(0xffffffff) == -1)
            _exit(17);
        if (socket(AF_PACKET, SOCK_RAW, 0) != -1 || errno != EPERM)
            _exit(18);
        if (socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, 1) != -1 || errno != EPERM)
            _exit(19);
        int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
        if (nl < 0)
            _exit(20);
        if (syscall(SYS_bpf, 0, NULL, 0) != -1 || errno != EPERM)
            _exit(21);
        pid_t c = fork(); /* plain fork still works */
        if (c == 0)
            _exit(0);
        if (c < 0)
            _exit(22);
        waitpid(c, NULL, 0);
        /* An x32 syscall number kills the process. */
        syscall(0x40000000 | SYS_getpid);
        _exit(23);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    if (WIFEXITED(st))
        fprintf(stderr, "  child exited with %d\n", WEXITSTATUS(st));
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS);
    sbx_seccomp_release(&prog);
}

TEST_T(create_destroy_timing, 120)
{
    setup();
    const int rounds = 20;
    int64_t total_c = 0, total_d = 0, max_c = 0;
    for (int i = 0; i < rounds; i++) {
        char id[40];
        sbx_new_id("sbx", id, sizeof id);
        sbx_sandbox_spec_t spec = spec_for(id, random_uid_base());
        sbx_sandbox_rt_t rt;
        sbx_err_t err = SBX_ERR_INIT;
        int64_t t0 = sbx_mono_ns();
        int rc = sbx_backend_ns.create(&spec, &rt, &err);
        if (rc < 0)
            fprintf(stderr, "  create: %s\n", err.msg);
        CHECK(rc == 0);
        int64_t t1 = sbx_mono_ns();
        CHECK(sbx_backend_ns.destroy(id, &rt, &err) == 0);
        int64_t t2 = sbx_mono_ns();
        total_c += t1 - t0;
        total_d += t2 - t1;
        if (t1 - t0 > max_c)
            max_c = t1 - t0;
    }
    fprintf(stderr, "  %d rounds: create avg %.2f ms (max %.2f), destroy avg %.2f ms\n", rounds,
            total_c / 1e6 / rounds, max_c / 1e6, total_d / 1e6 / rounds);
    teardown();
}

SBX_TEST_MAIN()
