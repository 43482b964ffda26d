/* Per-sandbox cgroups behind a small function table, so cgroup v1 (this machine: one
 * hierarchy per controller) and the unified v2 hierarchy share the callers' code. */
#ifndef SBX_BACKEND_NS_CGROUP_H
#define SBX_BACKEND_NS_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

typedef struct {
    uint64_t memory_bytes; /* 0 = unlimited */
    double cpus;           /* 0 = unlimited */
    uint32_t pids_max;     /* 0 = unlimited */
} sbx_cgroup_limits_t;

/* Detects the cgroup layout of the host and creates the parent group `parent` (e.g.
 * "sandboxd") in every hierarchy used.  Returns 0, or -1 if no usable cgroup exists. */
int sbx_cgroup_init(const char *parent, sbx_err_t *err);
/* "v1" or "v2" after init. */
const char *sbx_cgroup_version(void);
/* Creates the sandbox's group(s) and applies the limits. */
int sbx_cgroup_create(const char *id, const sbx_cgroup_limits_t *lim, sbx_err_t *err);
/* Changes the limits of an existing group (e.g. a warm sandbox handed to a request with
 * other cpus/memory); fields that are 0 are left as they are. */
int sbx_cgroup_update(const char *id, const sbx_cgroup_limits_t *lim, sbx_err_t *err);
/* Moves `pid` into the sandbox's group(s). */
int sbx_cgroup_attach(const char *id, pid_t pid, sbx_err_t *err);
/* Kills every process in the group(s), waits until they are gone (bounded), and removes
 * the group(s).  Idempotent: a missing group is success. */
int sbx_cgroup_destroy(const char *id, sbx_err_t *err);
int sbx_cgroup_stats(const char *id, uint64_t *mem, uint64_t *mem_limit, uint64_t *pids, uint64_t *cpu_ns,
                     bool *oom_killed, sbx_err_t *err);
/* Pids of the processes in the sandbox's group (one hierarchy is enough: every group
 * holds the same processes).  Returns the count and a heap array in *pids (NULL if 0). */
int sbx_cgroup_procs(const char *id, pid_t **pids, sbx_err_t *err);
/* Ids of existing sandbox groups under the parent (heap array of heap strings). */
int sbx_cgroup_list(char ***ids, sbx_err_t *err);

#endif
