/* Running one command for an EXEC request inside sandbox-agent.
 *
 * The command gets its own session and process group, pipes for stdin/stdout/stderr,
 * no other file descriptors, default signal dispositions, an empty signal mask, exactly
 * the request's environment and optionally another uid/gid and working directory.
 * While it runs, the connection carries STDIN/STDIN_EOF/SIGNAL/PING in and STDOUT/
 * STDERR/PONG out; the operation always ends with one EXIT frame unless the connection
 * is lost, in which case the whole process group is killed. */
#ifndef SBX_AGENT_EXEC_H
#define SBX_AGENT_EXEC_H

#include "proto/proto.h"

/* Runs `req` on the connection `sock` (borrowed) and returns once EXIT has been sent or
 * the connection is gone.  Failures before the command starts are reported over the
 * connection (ERROR, or STDERR + EXIT 126/127 for a command that cannot be executed);
 * nothing is returned to the caller. */
void sbx_agent_exec(int sock, const sbx_exec_req_t *req);

#endif
