/* The namespace backend: sbx_backend_ns.  docs/isolation.md describes the design; this
 * file is the parent side (the daemon), child.c the side between fork and exec. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/ns/cgroup.h"
#include "backend/ns/child.h"
#include "backend/ns/mounts.h"
#include "backend/ns/seccomp.h"
#include "backend/ns/spawner.h"
#include "common/util.h"

/* Paths here are built from bounded parts (validated ids, state and cgroup directories
 * checked at init) and fit their buffers; GCC cannot see those bounds. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* How long create waits for the sandbox's setup to report success or failure. */
#define SETUP_TIMEOUT_MS 10000
/* How long destroy waits for a killed PID 1 to exit. */
#define KILL_TIMEOUT_MS 2000

/* Filled once by init; read-only afterwards, so every other entry point may run on
 * several threads at once. */
static struct {
    bool ready;
    char state_dir[256]; /* <state_dir>/sandboxes */
    char run_dir[256];   /* <run_dir>/sandboxes */
    int agent_fd;
    struct sock_fprog seccomp;
    int cap_last;
    struct rlimit nofile;
} ns = {.agent_fd = -1};

static bool valid_id(const char *id)
{
    if (!id || !*id || strlen(id) > 64)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-'))
            return false;
    return true;
}

static void sandbox_dir(char *out, size_t n, const char *id)
{
    snprintf(out, n, "%s/%s", ns.state_dir, id);
}

static void sock_path(char *out, size_t n, const char *id)
{
    snprintf(out, n, "%s/%s.sock", ns.run_dir, id);
}

/* --- init ----------------------------------------------------------------------------- */

/* Copies the agent into a sealed memfd: nothing, not even root in a sandbox that takes
 * over the agent, can change the binary other sandboxes will execute. */
static int seal_agent(const char *path, sbx_err_t *err)
{
    _cleanup_close_ int src = open(path, O_RDONLY | O_CLOEXEC);
    if (src < 0)
        return sbx_error(err, errno, "open agent `%s`", path);
    _cleanup_close_ int mfd = memfd_create("sandbox-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0)
        return sbx_error(err, errno, "memfd_create");
    char buf[65536];
    for (;;) {
        ssize_t n = read(src, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sbx_error(err, errno, "read agent `%s`", path);
        if (n == 0)
            break;
        if (sbx_write_all(mfd, buf, (size_t)n) < 0)
            return sbx_error(err, errno, "write agent memfd");
    }
    if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
        return sbx_error(err, errno, "seal agent memfd");
    ns.agent_fd = steal_fd(&mfd);
    return 0;
}

/* Paths go into overlay mount options, where ',' ':' and '\\' are separators. */
static int check_path(const char *what, const char *p, sbx_err_t *err)
{
    if (!p || p[0] != '/' || strpbrk(p, ",:\\\n") || strlen(p) > 200)
        return sbx_fail(err, SBX_E_INVALID, NULL,
                        "%s must be an absolute path of at most 200 bytes without ',' ':' "
                        "or '\\\\': `%s`",
                        what, p ? p : "");
    return 0;
}

/* Moving a process into a cgroup (the write to cgroup.procs that puts C in the sandbox's
 * groups) takes the kernel's cgroup_threadgroup_rwsem for writing, which by default waits
 * for an RCU grace period: 6-13 ms on a small VM, the largest single cost of a create.
 * The "favordynmods" option switches that lock to a mode where writers do not wait, at a
 * small cost to every fork and exit on the host (kernel admin-guide, cgroup-v2).  It is an
 * option of a hierarchy but acts on the lock every hierarchy shares, so mounting one
 * empty named v1 hierarchy with it, in the daemon's private mount namespace, is enough;
 * the hierarchy, and the mode with it, goes when the daemon's mount namespace does.  Best
 * effort: a kernel without v1 cgroups or without the option keeps the default. */
static void favor_dynmods(const char *run_dir)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/cgroup-dynmods", run_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_warn("cgroup favordynmods: mkdir `%s`: %s", dir, strerror(errno));
        return;
    }
    if (mount("cgroup", dir, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "none,name=sandboxd-dynmods,favordynmods") < 0) {
        log_info("cgroup favordynmods not available (%s): cgroup migrations keep the kernel's default speed",
                 strerror(errno));
        return;
    }
    log_info(
        "cgroup favordynmods on: fast migrations into sandbox cgroups (hierarchy name=sandboxd-dynmods)");
}

static int ns_init(const sbx_backend_config_t *cfg, sbx_err_t *err)
{
    if (ns.ready)
        return sbx_fail(err, SBX_E_CONFLICT, NULL, "namespace backend already initialised");
    if (check_path("state_dir", cfg->state_dir, err) < 0 || check_path("run_dir", cfg->run_dir, err) < 0)
        return -1;
    snprintf(ns.state_dir, sizeof ns.state_dir, "%s/sandboxes", cfg->state_dir);
    snprintf(ns.run_dir, sizeof ns.run_dir, "%s/sandboxes", cfg->run_dir);
    if (sbx_mkdir_p(ns.state_dir, 0700, err) < 0 || sbx_mkdir_p(ns.run_dir, 0700, err) < 0)
        return sbx_error_wrap(err, "namespace backend");
    chmod(ns.state_dir, 0700);
    chmod(ns.run_dir, 0700);
    if (sbx_mounts_private_ns(err) < 0)
        return sbx_error_wrap(err, "namespace backend");
    /* Each sandbox's PID 1 is orphaned when its intermediate parent exits.  As subreaper
     * the daemon adopts it instead of the host's init (which may not reap at all), and
     * destroy reaps it. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        return sbx_error(err, errno, "namespace backend: PR_SET_CHILD_SUBREAPER");
    if (sbx_cgroup_init(cfg->cgroup_parent ? cfg->cgroup_parent : "sandboxd", err) < 0)
        return sbx_error_wrap(err, "namespace backend");
    if (cfg->cgroup_favor_dynmods)
        favor_dynmods(cfg->run_dir);
    if (seal_agent(cfg->agent_path, err) < 0)
        return sbx_error_wrap(err, "namespace backend");
    if (sbx_seccomp_build(&ns.seccomp, err) < 0)
        return sbx_error_wrap(err, "namespace backend");
    _cleanup_free_ char *last = sbx_read_file("/proc/sys/kernel/cap_last_cap", NULL, NULL);
    ns.cap_last = last ? atoi(last) : 40;
    /* Raising the hard limit needs CAP_SYS_RESOURCE in the host namespace; stay under it. */
    getrlimit(RLIMIT_NOFILE, &ns.nofile);
    rlim_t want = 1048576;
    if (ns.nofile.rlim_max != RLIM_INFINITY && ns.nofile.rlim_max < want)
        want = ns.nofile.rlim_max;
    ns.nofile.rlim_cur = ns.nofile.rlim_max = want;
    /* Last, while the daemon is still small and has one thread (spawner.h). */
    sbx_err_t e2 = SBX_ERR_INIT;
    if (sbx_spawner_start(ns.agent_fd, &e2) < 0)
        log_warn("%s; sandboxes will be forked by the daemon itself", e2.msg);
    ns.ready = true;
    return 0;
}

/* --- create --------------------------------------------------------------------------- */

/* Field 22 of /proc/<pid>/stat (start time in clock ticks) and field 3 (state). */
static int read_proc_stat(pid_t pid, uint64_t *start, char *state)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may contain spaces and parentheses: parse after the last ')'. */
    char *s = strrchr(buf, ')');
    if (!s || s[1] != ' ')
        return -1;
    s += 2; /* field 3 */
    if (state)
        *state = *s;
    for (int field = 3; field < 22; field++) {
        s = strchr(s, ' ');
        if (!s)
            return -1;
        s++;
    }
    *start = strtoull(s, NULL, 10);
    return 0;
}

static int listen_socket(const char *path, sbx_err_t *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "socket path too long: `%s`", path);
    strcpy(sa.sun_path, path);
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sbx_error(err, errno, "socket");
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return sbx_error(err, errno, "bind `%s`", path);
    if (chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        unlink(path);
        return sbx_error(err, e, "listen on `%s`", path);
    }
    return steal_fd(&fd);
}

static int write_id_map(pid_t pid, const char *file, uint32_t base, sbx_err_t *err)
{
    char p[64], map[64];
    snprintf(p, sizeof p, "/proc/%d/%s", (int)pid, file);
    snprintf(map, sizeof map, "0 %u 65536\n", base);
    return sbx_write_file(p, map, err);
}

/* Reads one record, waiting at most until `deadline` (monotonic ms).  Returns 1, 0 on
 * EOF, -1 on timeout or error. */
static int read_rec(int fd, sbx_child_rec_t *r, int64_t deadline, sbx_err_t *err)
{
    for (;;) {
        int64_t left = deadline - sbx_mono_ms();
        if (left <= 0)
            return sbx_fail(err, SBX_E_TIMEOUT, NULL, "sandbox setup timed out");
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sbx_error(err, errno, "poll setup pipe");
        if (n == 0)
            continue;
        int rc = sbx_read_exact(fd, r, sizeof *r);
        if (rc < 0)
            return sbx_error(err, errno, "read setup pipe");
        return rc;
    }
}

static int setup_error(const sbx_child_rec_t *r, sbx_err_t *err)
{
    char step[sizeof r->step + 1];
    memcpy(step, r->step, sizeof r->step);
    step[sizeof r->step] = '\0';
    return sbx_fail(err, SBX_E_INTERNAL, NULL, "sandbox setup failed at %s: %s", step, strerror(r->value));
}

struct creating {
    const sbx_sandbox_spec_t *spec;
    char dir[512];
    sbx_child_plan_t plan;
    pid_t c_pid;
    pid_t g_pid;
};

/* The parent's half of the handshake with C: maps, mounts and cgroup between READY and
 * GO, then GPID and EOF (or ERROR). */
static int run_handshake(struct creating *cr, sbx_err_t *err)
{
    const sbx_sandbox_spec_t *spec = cr->spec;
    int64_t deadline = sbx_mono_ms() + SETUP_TIMEOUT_MS;
    sbx_child_rec_t r;
    int rc = read_rec(cr->plan.ctl_rd, &r, deadline, err);
    if (rc <= 0)
        return rc < 0 ? -1 : sbx_fail(err, SBX_E_INTERNAL, NULL, "sandbox setup: child exited");
    if (r.kind == SBX_REC_ERROR)
        return setup_error(&r, err);
    if (write_id_map(cr->c_pid, "uid_map", spec->uid_base, err) < 0 ||
        write_id_map(cr->c_pid, "gid_map", spec->uid_base, err) < 0)
        return sbx_error_wrap(err, "sandbox setup");
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/ns/user", (int)cr->c_pid);
    _cleanup_close_ int userns = open(p, O_RDONLY | O_CLOEXEC);
    if (userns < 0)
        return sbx_error(err, errno, "open `%s`", p);
    bool idmapped;
    if (sbx_mounts_setup(cr->dir, spec->rootfs, userns, spec->uid_base, spec->disk_mb, &idmapped, err) < 0)
        return sbx_error_wrap(err, "sandbox setup");
    sbx_cgroup_limits_t lim = {
        .memory_bytes = spec->memory_mb * 1024 * 1024,
        .cpus = spec->cpus,
        .pids_max = spec->pids_max,
    };
    if (sbx_cgroup_create(spec->id, &lim, err) < 0 || sbx_cgroup_attach(spec->id, cr->c_pid, err) < 0)
        return sbx_error_wrap(err, "sandbox setup");
    if (sbx_write_all(cr->plan.go_wr, "g", 1) < 0)
        return sbx_error(err, errno, "sandbox setup: signal child");
    close(cr->plan.go_wr);
    cr->plan.go_wr = -1;
    int failed = 0;
    while ((rc = read_rec(cr->plan.ctl_rd, &r, deadline, err)) == 1) {
        if (r.kind == SBX_REC_GPID)
            cr->g_pid = r.value;
        else if (r.kind == SBX_REC_ERROR && !failed)
            failed = setup_error(&r, err);
    }
    if (rc < 0 || failed)
        return -1;
    if (cr->g_pid <= 0)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "sandbox setup: no init process");
    return 0;
}

static int prepare_dirs(struct creating *cr, sbx_err_t *err)
{
    if (mkdir(cr->dir, 0700) < 0)
        return sbx_error(err, errno, "mkdir `%s`", cr->dir);
    static const char *const sub[] = {"lower", "rw", "root"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(sub); i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", cr->dir, sub[i]);
        if (mkdir(p, 0755) < 0)
            return sbx_error(err, errno, "mkdir `%s`", p);
    }
    return 0;
}

static int check_spec(const sbx_sandbox_spec_t *spec, sbx_err_t *err)
{
    if (!ns.ready)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "namespace backend not initialised");
    if (!valid_id(spec->id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    if (!spec->rootfs || spec->rootfs[0] != '/')
        return sbx_fail(err, SBX_E_INVALID, NULL, "rootfs must be an absolute path");
    struct stat st;
    if (stat(spec->rootfs, &st) < 0 || !S_ISDIR(st.st_mode))
        return sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "rootfs `%s` is not a directory", spec->rootfs);
    const char *wd = spec->workdir && *spec->workdir ? spec->workdir : "/";
    if (wd[0] != '/' || strlen(wd) >= PATH_MAX || strstr(wd, "/../") ||
        (strlen(wd) >= 3 && !strcmp(wd + strlen(wd) - 3, "/..")))
        return sbx_fail(err, SBX_E_INVALID, NULL, "workdir must be an absolute path");
    if (spec->hostname && strlen(spec->hostname) > 64)
        return sbx_fail(err, SBX_E_INVALID, NULL, "hostname longer than 64 bytes");
    if ((uint64_t)spec->uid_base + 65536 > UINT32_MAX || spec->uid_base == 0)
        return sbx_fail(err, SBX_E_INVALID, NULL, "uid_base out of range");
    if (spec->network)
        return sbx_fail(err, SBX_E_INVALID, NULL, "network access is not supported by this backend yet");
    if (spec->disk_mb == 0)
        return sbx_fail(err, SBX_E_INVALID, NULL, "disk_mb must be positive");
    return 0;
}

static void fill_plan(struct creating *cr)
{
    const sbx_sandbox_spec_t *spec = cr->spec;
    sbx_child_plan_t *p = &cr->plan;
    p->agent_fd = ns.agent_fd;
    p->parent_pid = getpid();
    p->seccomp = &ns.seccomp;
    snprintf(p->root, sizeof p->root, "%s/root", cr->dir);
    snprintf(p->workdir, sizeof p->workdir, "%s", spec->workdir && *spec->workdir ? spec->workdir : "/");
    snprintf(p->hostname, sizeof p->hostname, "%s",
             spec->hostname && *spec->hostname ? spec->hostname : "sandbox");
    p->nofile = ns.nofile;
    p->cap_last = ns.cap_last;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int ns_destroy(const char *id, const sbx_sandbox_rt_t *rt, sbx_err_t *err);

static int ns_create(const sbx_sandbox_spec_t *spec, sbx_sandbox_rt_t *rt, sbx_err_t *err)
{
    if (check_spec(spec, err) < 0)
        return -1;
    struct creating cr = {.spec = spec, .c_pid = -1, .g_pid = -1};
    int c_pidfd = -1;
    cr.plan = (sbx_child_plan_t){.ctl_rd = -1, .ctl_wr = -1, .go_rd = -1, .go_wr = -1, .sock_fd = -1};
    sandbox_dir(cr.dir, sizeof cr.dir, spec->id);
    memset(rt, 0, sizeof *rt);
    sock_path(rt->sock_path, sizeof rt->sock_path, spec->id);
    struct stat st;
    if (lstat(cr.dir, &st) == 0)
        return sbx_fail(err, SBX_E_CONFLICT, NULL, "sandbox %s already exists", spec->id);
    int rc = -1;
    if (prepare_dirs(&cr, err) < 0)
        goto out;
    if ((cr.plan.sock_fd = listen_socket(rt->sock_path, err)) < 0)
        goto out;
    int ctl[2], go[2];
    if (pipe2(ctl, O_CLOEXEC) < 0) {
        sbx_error(err, errno, "pipe");
        goto out;
    }
    cr.plan.ctl_rd = ctl[0];
    cr.plan.ctl_wr = ctl[1];
    if (pipe2(go, O_CLOEXEC) < 0) {
        sbx_error(err, errno, "pipe");
        goto out;
    }
    cr.plan.go_rd = go[0];
    cr.plan.go_wr = go[1];
    fill_plan(&cr);
    /* C comes from the spawner when there is one; else from a fork of the daemon (fork,
     * not clone: glibc's fork handlers keep malloc and stdio usable in the parent; the
     * child itself only makes syscalls, child.h). */
    cr.c_pid = sbx_spawner_spawn(&cr.plan, &c_pidfd);
    if (cr.c_pid < 0)
        cr.c_pid = fork();
    if (cr.c_pid < 0) {
        sbx_error(err, errno, "fork");
        goto out;
    }
    if (cr.c_pid == 0)
        sbx_child_main(&cr.plan);
    close_fd(&cr.plan.ctl_wr);
    close_fd(&cr.plan.go_rd);
    rc = run_handshake(&cr, err);
    if (rc == 0) {
        char state = 0;
        rt->pid = cr.g_pid;
        if (read_proc_stat(cr.g_pid, &rt->pid_start, &state) < 0 || state == 'Z')
            rc = sbx_fail(err, SBX_E_INTERNAL, NULL, "sandbox agent exited at start");
    }
out:
    close_fd(&cr.plan.go_wr); /* C, if still waiting for GO, exits on EOF */
    if (c_pidfd >= 0) {
        /* The spawner reaps C; wait until it has exited. */
        if (rc < 0)
            syscall(SYS_pidfd_send_signal, c_pidfd, SIGKILL, NULL, 0);
        struct pollfd p = {.fd = c_pidfd, .events = POLLIN};
        while (poll(&p, 1, KILL_TIMEOUT_MS) < 0 && errno == EINTR) {
        }
        close(c_pidfd);
    } else if (cr.c_pid > 0) {
        if (rc < 0)
            kill(cr.c_pid, SIGKILL);
        while (waitpid(cr.c_pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    close_fd(&cr.plan.ctl_rd);
    close_fd(&cr.plan.ctl_wr);
    close_fd(&cr.plan.go_rd);
    close_fd(&cr.plan.sock_fd);
    if (rc < 0) {
        sbx_sandbox_rt_t dead = {.pid = cr.g_pid};
        if (cr.g_pid > 0)
            read_proc_stat(cr.g_pid, &dead.pid_start, NULL);
        ns_destroy(spec->id, cr.g_pid > 0 ? &dead : NULL, NULL);
        memset(rt, 0, sizeof *rt);
    }
    return rc;
}

/* --- the rest ------------------------------------------------------------------------- */

static int ns_connect(const sbx_sandbox_rt_t *rt, sbx_err_t *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!rt || strlen(rt->sock_path) >= sizeof sa.sun_path || !rt->sock_path[0])
        return sbx_fail(err, SBX_E_INVALID, NULL, "no agent socket");
    strcpy(sa.sun_path, rt->sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sbx_error(err, errno, "socket");
    int r;
    do
        r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        close(fd);
        sbx_error(err, e, "connect to agent `%s`", rt->sock_path);
        err->kind = SBX_E_UNAVAILABLE;
        return -1;
    }
    return fd;
}

static bool ns_alive(const sbx_sandbox_rt_t *rt)
{
    if (!rt || rt->pid <= 0)
        return false;
    uint64_t start;
    char state;
    if (read_proc_stat(rt->pid, &start, &state) < 0)
        return false;
    return start == rt->pid_start && state != 'Z' && state != 'X';
}

/* Sends SIGKILL to the sandbox's PID 1 (and with it its whole pid namespace) if rt still
 * names it.  Returns a pidfd for that process (caller closes), or -1 if rt names no live
 * process of ours any more.  The pidfd pins the process between the identity check and
 * the signal. */
static int signal_init(const sbx_sandbox_rt_t *rt)
{
    if (!rt || rt->pid <= 0)
        return -1;
    int pfd = (int)syscall(SYS_pidfd_open, rt->pid, 0);
    if (pfd < 0)
        return -1;
    uint64_t start;
    if (read_proc_stat(rt->pid, &start, NULL) < 0 || start != rt->pid_start) {
        close(pfd);
        return -1;
    }
    syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0); /* no-op on a zombie */
    return pfd;
}

/* Kills the sandbox's PID 1 and reaps it: the daemon is its subreaper (init), and
 * waitid(P_PIDFD) reaps exactly that process. */
static void kill_init(const sbx_sandbox_rt_t *rt)
{
    int pfd = signal_init(rt);
    if (pfd >= 0) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        while (poll(&p, 1, KILL_TIMEOUT_MS) < 0 && errno == EINTR) {
        }
        /* ECHILD when another process (a daemon restarted under a different parent, or
         * the host's init) is its parent: then that one reaps it. */
        siginfo_t si;
        waitid((idtype_t)P_PIDFD, (id_t)pfd, &si, WEXITED | WNOHANG);
        close(pfd);
    }
}

static void ns_kill(const sbx_sandbox_rt_t *rt)
{
    int pfd = signal_init(rt);
    if (pfd >= 0)
        close(pfd);
}

static int ns_destroy(const char *id, const sbx_sandbox_rt_t *rt, sbx_err_t *err)
{
    if (!ns.ready)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "namespace backend not initialised");
    if (!valid_id(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    if (rt && rt->pid > 0) {
        kill_init(rt);
    } else {
        /* Only the id is known: the sandbox's init is the group member whose parent is
         * this daemon (its subreaper), if any.  Killing it here also lets it be reaped. */
        pid_t *pids = NULL;
        int n = sbx_cgroup_procs(id, &pids, NULL);
        for (int i = 0; i < n; i++) {
            char p[64];
            snprintf(p, sizeof p, "/proc/%d/status", (int)pids[i]);
            _cleanup_free_ char *st = sbx_read_file(p, NULL, NULL);
            char *pp = st ? strstr(st, "\nPPid:") : NULL;
            if (pp && atoi(pp + 6) == (int)getpid()) {
                sbx_sandbox_rt_t found = {.pid = pids[i]};
                if (read_proc_stat(pids[i], &found.pid_start, NULL) == 0)
                    kill_init(&found);
            }
        }
        free(pids);
    }
    int rc = 0;
    sbx_err_t e2 = SBX_ERR_INIT;
    if (sbx_cgroup_destroy(id, &e2) < 0) {
        rc = -1;
        if (err)
            *err = e2;
    }
    char dir[PATH_MAX], sock[PATH_MAX];
    sandbox_dir(dir, sizeof dir, id);
    struct stat st;
    if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && sbx_mounts_teardown(dir, &e2) < 0) {
        if (rc == 0 && err)
            *err = e2;
        rc = -1;
    }
    /* sbx_rm_rf neither follows symlinks nor crosses into a mount left behind. */
    if (sbx_rm_rf(dir, &e2) < 0) {
        if (rc == 0 && err)
            *err = e2;
        rc = -1;
    }
    sock_path(sock, sizeof sock, id);
    if (unlink(sock) < 0 && errno != ENOENT) {
        if (rc == 0)
            sbx_error(err, errno, "unlink `%s`", sock);
        rc = -1;
    }
    return rc < 0 ? sbx_error_wrap(err, "destroy sandbox %s", id) : 0;
}

static int ns_stats(const char *id, sbx_sandbox_stats_t *out, sbx_err_t *err)
{
    if (!ns.ready || !valid_id(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    memset(out, 0, sizeof *out);
    return sbx_cgroup_stats(id, &out->memory_bytes, &out->memory_limit_bytes, &out->pids, &out->cpu_usage_ns,
                            &out->oom_killed, err);
}

static void add_unique(char ***ids, int *n, const char *id)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp((*ids)[i], id))
            return;
    *ids = xrealloc(*ids, sizeof **ids * (size_t)(*n + 1));
    (*ids)[(*n)++] = xstrdup(id);
}

static int ns_list_leftovers(char ***ids, sbx_err_t *err)
{
    *ids = NULL;
    if (!ns.ready)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "namespace backend not initialised");
    char **out = NULL;
    int n = 0;
    const char *dirs[] = {ns.state_dir, ns.run_dir};
    for (size_t k = 0; k < SBX_ARRAY_LEN(dirs); k++) {
        DIR *d = opendir(dirs[k]);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            char name[256];
            snprintf(name, sizeof name, "%s", de->d_name);
            size_t l = strlen(name);
            if (k == 1 && l > 5 && !strcmp(name + l - 5, ".sock"))
                name[l - 5] = '\0';
            if (valid_id(name))
                add_unique(&out, &n, name);
        }
        closedir(d);
    }
    /* Cgroups alone do not make a leftover: the cgroup parent is shared by every sandboxd
     * on the host (each with its own state directory), and a group without a directory or
     * socket of ours belongs to another daemon.  Ours always have both until destroy. */
    *ids = out;
    return n;
}

static int ns_update(const char *id, const sbx_sandbox_spec_t *spec, sbx_err_t *err)
{
    if (!valid_id(id))
        return sbx_fail(err, SBX_E_INVALID, NULL, "invalid sandbox id");
    sbx_cgroup_limits_t lim = {
        .memory_bytes = spec->memory_mb << 20,
        .cpus = spec->cpus,
        .pids_max = spec->pids_max,
    };
    return sbx_cgroup_update(id, &lim, err);
}

const sbx_backend_t sbx_backend_ns = {
    .name = "ns",
    .init = ns_init,
    .create = ns_create,
    .connect = ns_connect,
    .alive = ns_alive,
    .destroy = ns_destroy,
    .kill = ns_kill,
    .stats = ns_stats,
    .list_leftovers = ns_list_leftovers,
    .update = ns_update,
};
