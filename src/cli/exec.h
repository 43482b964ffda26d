/* `sandbox exec`: run one command in a running sandbox, relay its output live and exit
 * with its exit code.  The exec step is shared with `sandbox run`.
 *
 * The command runs through POST /sandbox/sandboxes/:id/exec/stream, whose Server-Sent
 * Events carry its stdout and stderr (base64) in the order produced and then its exit.
 * While it runs, SIGINT and SIGTERM sent to the CLI are forwarded to it through
 * /exec/signal, and with -i our stdin is forwarded chunk by chunk through /exec/stdin. */
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
    bool use_stdin;       /* -i: forward our stdin while the command runs */
} sbx_exec_opts_t;

void sbx_exec_opts_init(sbx_exec_opts_t *o);
void sbx_exec_opts_release(sbx_exec_opts_t *o);

/* Applies --timeout, -e/--env or -i/--stdin.  Returns 0 if `id` was one of them, 1 if
 * not, SBX_EXIT_USAGE after printing a usage error for a bad value. */
int sbx_exec_apply_flag(sbx_exec_opts_t *o, const char *cmd, int id, const char *flag, const char *value);

/* Runs the command in sandbox `id` and writes its stdout and stderr to ours as they
 * arrive.  Installs the CLI's SIGINT/SIGTERM handler: the first signal is forwarded to
 * the command, the second sends it SIGKILL, and the third stops waiting.  Without -i our
 * stdin is never read (it may be a pipe nobody writes to).
 *
 * When the command ended, returns 0 and the exit code to leave with in *exit_out (the
 * child's, 124 when it timed out, 128+N when signal N ended it without an exit code, or
 * 141 when our stdout or stderr became a broken pipe and the CLI stopped reading).
 * Otherwise prints the error and returns SBX_EXIT_DAEMON (the daemon refused, could not
 * be reached, or the stream ended before the exit event), or -1 after the third signal. */
int sbx_exec_command(sbx_cli_t *cli, const char *id, const sbx_exec_opts_t *o, int *exit_out);

extern const char sbx_exec_usage[];
int sbx_cmd_exec(sbx_cli_t *cli, int argc, char **argv);

#endif
