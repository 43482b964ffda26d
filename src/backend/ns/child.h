/* The two short-lived processes that build a sandbox, running between fork and exec.
 *
 * The daemon is multithreaded, so these run with only one thread of a copied address
 * space: they make raw syscalls and touch only the plan below, which the parent fills
 * completely before fork (no malloc, no stdio, no locks).  Every failure is reported to
 * the parent as one fixed-size record on the control pipe, then the process _exits.
 *
 *   parent ── fork ──► C: unshare(user); READY; wait for GO;
 *                         unshare(mnt, pid, net, uts, ipc, cgroup); fork G; GPID; exit
 *                      G (PID 1 of the new pid ns): build the root, drop privileges,
 *                         execveat(sealed agent memfd)
 * The control pipe is close-on-exec: once every writer has exited or exec'd, the parent
 * reads EOF, which after a GPID record and no ERROR record means the agent is running. */
#ifndef SBX_BACKEND_NS_CHILD_H
#define SBX_BACKEND_NS_CHILD_H

#include <limits.h>
#include <linux/filter.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

enum { SBX_REC_READY = 1, SBX_REC_GPID = 2, SBX_REC_ERROR = 3 };

/* One control-pipe record; smaller than PIPE_BUF, so each write is atomic. */
typedef struct {
    int32_t kind;  /* SBX_REC_* */
    int32_t value; /* GPID: host pid of G; ERROR: errno */
    char step[56]; /* ERROR: a static name of the step that failed */
} sbx_child_rec_t;

/* Everything C and G need, prepared before fork. */
typedef struct {
    int ctl_rd, ctl_wr; /* control pipe (C, G -> parent), both O_CLOEXEC */
    int go_rd, go_wr;   /* go pipe (parent -> C), both O_CLOEXEC */
    int sock_fd;        /* the agent's listening socket, becomes fd 3 */
    int agent_fd;       /* sealed memfd holding the agent binary */
    pid_t parent_pid;
    const struct sock_fprog *seccomp;
    char root[PATH_MAX];    /* host path of the sandbox's overlay root */
    char workdir[PATH_MAX]; /* absolute path inside the sandbox */
    char hostname[65];
    struct rlimit nofile;
    int cap_last; /* /proc/sys/kernel/cap_last_cap */
} sbx_child_plan_t;

/* Body of process C (see above).  Never returns. */
__attribute__((noreturn)) void sbx_child_main(sbx_child_plan_t *plan);

/* The bounding, permitted and effective capability set of a sandbox: Docker's default
 * minus CAP_NET_RAW and CAP_MKNOD. */
extern const uint64_t sbx_child_caps;

#endif
