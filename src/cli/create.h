/* `sandbox create`: boot a long-lived sandbox and print its id.  The sandbox options and
 * the create-with-progress step are shared with `sandbox run`. */
#ifndef SBX_CLI_CREATE_H
#define SBX_CLI_CREATE_H

#include <stdbool.h>

#include "cli/cli.h"
#include "cli/opts.h"

typedef struct {
    const char *image;                      /* borrowed from argv */
    double cpus;                            /* fractional; -1 = not given */
    long long memory_mb, idle_timeout_secs; /* -1 = not given */
    const char *name;
    bool network;
    sbx_strv_t env; /* KEY=VAL entries; ones without '=' never get here */
} sbx_create_opts_t;

void sbx_create_opts_init(sbx_create_opts_t *o);
void sbx_create_opts_release(sbx_create_opts_t *o);

/* Applies one of the sandbox flags (--cpus, --memory, --idle-timeout, --name, --network,
 * -e/--env) to `o`.  Returns 0 if `id` was one of them, 1 if not, SBX_EXIT_USAGE after
 * printing a usage error for a bad value. */
int sbx_create_apply_flag(sbx_create_opts_t *o, const char *cmd, int id, const char *flag, const char *value);

/* Creates the sandbox, showing progress and "✓ sandbox ready in Xs" when stderr is a
 * terminal.  On success returns 0 and a newly allocated id in *id_out.  Otherwise prints
 * the error and returns SBX_EXIT_DAEMON, or -1 if the request was cancelled. */
int sbx_create_sandbox(sbx_cli_t *cli, const sbx_create_opts_t *o, char **id_out);

/* The usage text, and the entry point of `sandbox create`. */
extern const char sbx_create_usage[];
int sbx_cmd_create(sbx_cli_t *cli, int argc, char **argv);

#endif
