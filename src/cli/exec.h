/* `sandbox exec`: run one command in a running sandbox, relay its output and exit with
 * its exit code.  The exec step is shared with `sandbox run`. */
#ifndef SBX_CLI_EXEC_H
#define SBX_CLI_EXEC_H

#include <stdbool.h>

#include "cli/cli.h"
#include "cli/opts.h"

typedef struct {
    char **cmd; /* the command and its arguments, borrowed from argv */
    int ncmd;
    sbx_strv_t env;       /* KEY=VAL entries */
    long long timeout_ms; /* -1 = not given */
    bool use_stdin;       /* -i: send our stdin */
    char *stdin_b64;      /* owned; filled by sbx_exec_read_stdin() */
} sbx_exec_opts_t;

void sbx_exec_opts_init(sbx_exec_opts_t *o);
void sbx_exec_opts_release(sbx_exec_opts_t *o);

/* Applies --timeout, -e/--env or -i/--stdin.  Returns 0 if `id` was one of them, 1 if
 * not, SBX_EXIT_USAGE after printing a usage error for a bad value. */
int sbx_exec_apply_flag(sbx_exec_opts_t *o, const char *cmd, int id, const char *flag, const char *value);

/* With -i, reads all of stdin and keeps it base64-encoded; does nothing otherwise (stdin
 * may be a pipe nobody writes to).  Returns 0 or SBX_EXIT_FAIL after printing why. */
int sbx_exec_read_stdin(sbx_exec_opts_t *o);

/* Runs the command in sandbox `id` and copies its stdout and stderr to ours.  On success
 * returns 0 and the exit code to leave with in *exit_out (the child's, or 124 when it
 * timed out).  Otherwise prints the error and returns SBX_EXIT_DAEMON, or -1 if the
 * request was cancelled. */
int sbx_exec_command(sbx_cli_t *cli, const char *id, const sbx_exec_opts_t *o, int *exit_out);

extern const char sbx_exec_usage[];
int sbx_cmd_exec(sbx_cli_t *cli, int argc, char **argv);

#endif
