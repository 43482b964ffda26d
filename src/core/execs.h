/* Exec sessions: every command that runs in a sandbox, whatever the surface that started it.
 *
 * Each exec has an id and a record: blocking and streaming execs live in memory for as
 * long as they run; background execs, /v1 commands and queue jobs are also persisted in
 * the store and write their output to log files on disk (never kept in memory), so they
 * survive a client disconnect and can be read from any byte offset.  Signals and streamed
 * stdin reach a running exec by id, on the agent connection that exec owns.
 *
 * A sandbox's exec records and logs are removed with the sandbox's record. */
#ifndef SBX_CORE_EXECS_H
#define SBX_CORE_EXECS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "core/core.h"

typedef enum {
    SBX_EXEC_RUN = 0,        /* blocking /exec: memory only */
    SBX_EXEC_STREAM = 1,     /* SSE /exec/stream: memory only */
    SBX_EXEC_BACKGROUND = 2, /* /exec/background: "bg_" ids, persisted, logs on disk */
    SBX_EXEC_CMD = 3,        /* /v1 .../cmd: "cmd_" ids, persisted, logs on disk */
    SBX_EXEC_JOB = 4,        /* a queue job's run: "exec_" ids, persisted, logs on disk */
} sbx_exec_kind_t;

typedef struct {
    char id[64];
    char sandbox_id[40];
    sbx_exec_kind_t kind;
    char **argv;         /* NULL-terminated, owned */
    char *cwd;           /* as requested; "" when the default was used */
    int64_t started_at;  /* epoch ms */
    int64_t finished_at; /* epoch ms, 0 while running */
    int64_t pid;         /* pid inside the sandbox, 0 if unknown */
    bool running;
    bool exited;       /* an exit status is known */
    int64_t exit_code; /* 128+signo when killed; 124 on timeout */
    int64_t signo;
    bool timed_out;
    char *error; /* why it ended without an exit status, or NULL */
    uint64_t stdout_bytes, stderr_bytes;
    bool truncated; /* output past the log quota was dropped */
} sbx_exec_info_t;

void sbx_exec_info_release(sbx_exec_info_t *info);
void sbx_exec_infos_free(sbx_exec_info_t *infos, size_t n);

/* Starts a detached exec (BACKGROUND, CMD or JOB): output goes to log files, the record to
 * the store, and the command keeps running when the caller goes away.  Returns once the
 * agent has started the command (info->running) or reported that it could not (exit 126 or
 * 127 with the reason in the stderr log).  With `stdin_open`, p->stdin_data is sent but the
 * command's stdin stays open for sbx_core_exec_stdin().  Errors: NOT_FOUND (S002),
 * CONFLICT (S004) when the sandbox is not running, S003 over the concurrency limit. */
int sbx_core_exec_start(sbx_core_t *core, const char *sandbox_id, const sbx_exec_params_t *p,
                        sbx_exec_kind_t kind, bool stdin_open, sbx_exec_info_t *info, sbx_err_t *err);

/* A snapshot of one exec; NOT_FOUND if no exec has that id. */
int sbx_core_exec_get(sbx_core_t *core, const char *exec_id, sbx_exec_info_t *info, sbx_err_t *err);
/* The execs of a sandbox (of one kind, or every kind with kind < 0), oldest first. */
int sbx_core_exec_list(sbx_core_t *core, const char *sandbox_id, int kind, sbx_exec_info_t **infos, size_t *n,
                       sbx_err_t *err);
/* Waits until the exec finishes or timeout_ms passes (< 0: forever), then snapshots it. */
int sbx_core_exec_wait(sbx_core_t *core, const char *exec_id, int64_t timeout_ms, sbx_exec_info_t *info,
                       sbx_err_t *err);
/* Sends a signal to the exec's process group.  CONFLICT if it already finished. */
int sbx_core_exec_signal(sbx_core_t *core, const char *exec_id, int signo, sbx_err_t *err);
/* Sends a signal to every running exec of a sandbox (pid == 0) or to one process by its
 * pid inside the sandbox.  Returns the number of execs signalled (0 is not an error). */
int sbx_core_exec_interrupt(sbx_core_t *core, const char *sandbox_id, int64_t pid, int signo, sbx_err_t *err);
/* Writes to the stdin of an exec started with stdin open; eof closes it. */
int sbx_core_exec_stdin(sbx_core_t *core, const char *exec_id, const void *data, size_t len, bool eof,
                        sbx_err_t *err);

typedef enum { SBX_LOG_STDOUT = 1, SBX_LOG_STDERR = 2, SBX_LOG_COMBINED = 3 } sbx_log_stream_t;

/* Reads up to `max` bytes of a detached exec's log from byte `offset`.  *data is a heap
 * buffer (NUL-terminated), *len may be 0 at the end.  NOT_FOUND for memory-only execs. */
int sbx_core_exec_log_read(sbx_core_t *core, const char *exec_id, sbx_log_stream_t stream, uint64_t offset,
                           size_t max, char **data, size_t *len, sbx_err_t *err);
/* Blocks until the log of `stream` grows past `offset`, the exec finishes, or timeout_ms
 * passes.  Returns 1 if there is data past offset, 0 if not (check info via get). */
int sbx_core_exec_log_wait(sbx_core_t *core, const char *exec_id, sbx_log_stream_t stream, uint64_t offset,
                           int64_t timeout_ms, sbx_err_t *err);

/* A streaming exec read by its caller (SSE): events come in the order the agent sent them. */
typedef struct sbx_exec_stream sbx_exec_stream_t;

typedef enum { SBX_EV_STDOUT = 1, SBX_EV_STDERR = 2, SBX_EV_EXIT = 3 } sbx_exec_event_type_t;

typedef struct {
    sbx_exec_event_type_t type;
    const uint8_t *data; /* STDOUT/STDERR: valid until the next call */
    size_t len;
    int64_t timestamp;     /* epoch ms */
    sbx_exec_info_t *info; /* EXIT: the final record, valid until close */
} sbx_exec_event_t;

/* Starts a command whose output the caller reads with _next.  The exec id is written to
 * exec_id (64 bytes).  Errors as sbx_core_exec_start. */
sbx_exec_stream_t *sbx_core_exec_stream_open(sbx_core_t *core, const char *sandbox_id,
                                             const sbx_exec_params_t *p, sbx_exec_kind_t kind,
                                             bool stdin_open, char *exec_id, sbx_err_t *err);
/* Blocks for the next event.  Returns 1 with *ev filled, 0 after EXIT was delivered, -1 on
 * error (the sandbox stopped, the agent failed, the deadline passed). */
int sbx_core_exec_stream_next(sbx_exec_stream_t *s, sbx_exec_event_t *ev, sbx_err_t *err);
/* The same, but returns 2 when `idle_ms` pass without an event, so a streaming caller can
 * send keep-alives (and so notice a client that went away). */
int sbx_core_exec_stream_next_idle(sbx_exec_stream_t *s, sbx_exec_event_t *ev, int64_t idle_ms,
                                   sbx_err_t *err);
/* Ends the stream; a command still running is killed (its process group gets SIGKILL). */
void sbx_core_exec_stream_close(sbx_exec_stream_t *s);

#endif
