/* The isolation backend: one function table behind which the namespace backend (now) and
 * a microVM backend (later) live.  core/ talks to sandboxes only through this table and
 * the agent protocol on the connection `connect` hands back; nothing above this layer
 * knows how a sandbox is isolated. */
#ifndef SBX_BACKEND_BACKEND_H
#define SBX_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

/* Host-wide settings, given once at start-up. */
typedef struct {
    const char *state_dir;     /* e.g. /var/lib/sandboxd; sandboxes live in <state_dir>/sandboxes/<id> */
    const char *run_dir;       /* e.g. /run/sandboxd; agent sockets live in <run_dir>/sandboxes/ */
    const char *agent_path;    /* path of the sandbox-agent binary to seal into a memfd */
    const char *cgroup_parent; /* cgroup directory name under each hierarchy, e.g. "sandboxd" */
    bool cgroup_favor_dynmods; /* make task migrations between cgroups fast (isolation.md) */
} sbx_backend_config_t;

/* What a sandbox should be.  All strings are borrowed for the duration of the call. */
typedef struct {
    const char *id;       /* "sbx_<24 hex>": names directories, sockets and cgroups */
    const char *rootfs;   /* the image's unpacked root filesystem, shared read-only */
    const char *hostname; /* set in the sandbox's UTS namespace */
    const char *workdir;  /* created inside the sandbox if missing, e.g. /workspace */
    uint32_t uid_base;    /* first host uid/gid of the sandbox's 65536-id range */
    uint64_t memory_mb;   /* memory (+swap) limit */
    double cpus;          /* CPU quota in cores, fractional */
    uint32_t pids_max;    /* process limit */
    uint64_t disk_mb;     /* size cap of the writable layer */
    bool network;         /* false: loopback only */
} sbx_sandbox_spec_t;

/* What the daemon keeps about a running sandbox (persisted by core/ in the store), enough
 * to reconnect after a daemon restart and to clean up after a crash. */
typedef struct {
    pid_t pid;           /* host pid of the sandbox's PID 1 (the agent) */
    uint64_t pid_start;  /* its start time (field 22 of /proc/<pid>/stat) */
    char sock_path[256]; /* host path of the agent's listening socket */
} sbx_sandbox_rt_t;

/* Resource usage of a sandbox, for metrics and tests. */
typedef struct {
    uint64_t memory_bytes;
    uint64_t memory_limit_bytes;
    uint64_t pids;
    uint64_t cpu_usage_ns;
    bool oom_killed; /* an OOM kill happened in the sandbox at least once */
} sbx_sandbox_stats_t;

typedef struct sbx_backend {
    const char *name;
    /* Prepares the host (directories, cgroup parents, sealed agent memfd, seccomp
     * program).  Called once before anything else. */
    int (*init)(const sbx_backend_config_t *cfg, sbx_err_t *err);
    /* Starts a sandbox whose agent is ready to accept connections when this returns.
     * On failure nothing of the sandbox remains on the host. */
    int (*create)(const sbx_sandbox_spec_t *spec, sbx_sandbox_rt_t *rt, sbx_err_t *err);
    /* Returns a new connection (fd, O_CLOEXEC) to the sandbox's agent. */
    int (*connect)(const sbx_sandbox_rt_t *rt, sbx_err_t *err);
    /* true while the sandbox's PID 1 is the same process that was started (pid + start time). */
    bool (*alive)(const sbx_sandbox_rt_t *rt);
    /* Kills every process of the sandbox and removes its mounts, cgroups, sockets and
     * files.  Idempotent, and works from only the id (rt may be NULL or stale), so a
     * restarted daemon can clean up what a crashed one left. */
    int (*destroy)(const char *id, const sbx_sandbox_rt_t *rt, sbx_err_t *err);
    /* Sends SIGKILL to the sandbox's PID 1 if rt still names it, without waiting: its
     * whole pid namespace dies with it.  destroy, called later, reaps and cleans up. */
    void (*kill)(const sbx_sandbox_rt_t *rt);
    int (*stats)(const char *id, sbx_sandbox_stats_t *out, sbx_err_t *err);
    /* Applies spec's memory_mb, cpus and pids_max to a running sandbox. */
    int (*update)(const char *id, const sbx_sandbox_spec_t *spec, sbx_err_t *err);
    /* Lists the ids of sandboxes that have host resources (directories, cgroups), so the
     * daemon can clean up those it has no record of.  Returns count, *ids heap array. */
    int (*list_leftovers)(char ***ids, sbx_err_t *err);
} sbx_backend_t;

/* The namespace backend. */
extern const sbx_backend_t sbx_backend_ns;

#endif
