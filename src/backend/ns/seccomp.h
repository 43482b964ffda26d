/* The sandbox's seccomp policy, compiled once into a classic BPF program in memory.
 *
 * The daemon is multithreaded, so the code that runs in a sandbox's processes between
 * fork and exec may only make raw syscalls: no malloc, no libseccomp.  The program is
 * therefore built with libseccomp at start-up and handed to the child as a plain
 * `struct sock_fprog`, which the child installs with prctl(PR_SET_SECCOMP). */
#ifndef SBX_BACKEND_NS_SECCOMP_H
#define SBX_BACKEND_NS_SECCOMP_H

#include <linux/filter.h>

#include "common/err.h"

/* Builds the sandbox policy (docs/isolation.md, "Seccomp") and stores the exported BPF
 * program in *prog (prog->filter is heap memory owned by the caller; release it with
 * sbx_seccomp_release).  Returns 0, or -1 with err set. */
int sbx_seccomp_build(struct sock_fprog *prog, sbx_err_t *err);
void sbx_seccomp_release(struct sock_fprog *prog);

#endif
