/* One daemon connection inside sandbox-agent.
 *
 * The agent forks one session process per accepted connection.  The first frame selects
 * the operation: PING is answered with PONG and the session waits for the next frame;
 * EXEC runs a command (agent/exec.h) and ends the session once its EXIT is sent; FS runs
 * one file operation (agent/fs.h) and ends the session; KILL signals a process.  Any
 * other first frame is answered with ERROR and the connection is closed. */
#ifndef SBX_AGENT_SESSION_H
#define SBX_AGENT_SESSION_H

/* Serves the connection `sock` (owned: closed before exiting) and leaves with _exit(0).
 * Must run in a process forked by the agent's main loop: PONG reports the parent's pid
 * (the agent itself, 1 in a sandbox). */
__attribute__((noreturn)) void sbx_agent_session_run(int sock);

/* Sends an ERROR frame with ERRNO = errnum (omitted when 0) and a formatted MESSAGE.
 * Blocking; failures are ignored since the connection is being abandoned anyway. */
void sbx_agent_send_error(int sock, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
