/* File operations inside sandbox-agent.
 *
 * A session whose first frame is FS runs one file operation (OP: stat, ls, mkdir, rm,
 * rmdir, mv, chmod, read, write, search, grep, sed) on paths inside the sandbox and then
 * ends.  Results are RESULT frames carrying JSON; failures are ERROR frames with ERRNO and
 * "<op> <path>: <reason>".  read streams DATA frames and END after its RESULT; write
 * answers RESULT {"ready":true}, consumes DATA frames up to END and answers a final
 * RESULT.  The shapes are specified in "File operations" in docs/protocol.md. */
#ifndef SBX_AGENT_FS_H
#define SBX_AGENT_FS_H

#include <stddef.h>
#include <stdint.h>

/* Runs the FS request in `payload` on the connection `sock` (borrowed).  Every outcome is
 * reported over the connection; nothing is returned. */
void sbx_agent_fs(int sock, const uint8_t *payload, size_t len);

#endif
