/* The spawner: a small helper process that forks each sandbox's first process (C, see
 * child.h) on the daemon's behalf.
 *
 * Forking the daemon itself copies the page tables of its whole address space (every
 * thread's stack and malloc arena, SQLite's cache, the HTTP server's buffers), and C and G
 * then carry that copy until G executes the agent.  The spawner is forked once, at backend
 * init, before the daemon has threads, a database or much memory, so the copies made from
 * it are small.  It keeps nothing but the sealed agent memfd and its end of a socket pair;
 * the daemon sends a finished plan with the three descriptors C needs, the spawner forks
 * C and answers with C's pid and a pidfd for it, and reaps C when it exits.  Everything
 * else (the id maps, mounts, cgroups, the handshake) stays in the daemon, unchanged.
 *
 * C's parent is the spawner, whose parent is the daemon: when C exits, G is re-parented to
 * the daemon, the nearest subreaper, exactly as when the daemon forks C itself.  The
 * spawner dies with the daemon (PR_SET_PDEATHSIG); if it is gone, the daemon forks C
 * itself as before. */
#ifndef SBX_BACKEND_NS_SPAWNER_H
#define SBX_BACKEND_NS_SPAWNER_H

#include <stdbool.h>
#include <sys/types.h>

#include "backend/ns/child.h"
#include "common/err.h"

/* Starts the spawner; the plan template's agent_fd and seccomp must already be set up. */
int sbx_spawner_start(int agent_fd, sbx_err_t *err);

/* Has the spawner fork C for `plan` (ctl_wr, go_rd and sock_fd are passed to it; the
 * caller keeps its own copies).  Returns C's pid and sets *pidfd, or returns -1 when no
 * spawner is available (the caller then forks itself). */
pid_t sbx_spawner_spawn(const sbx_child_plan_t *plan, int *pidfd);

#endif
