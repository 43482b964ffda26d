/* `sandbox stop`: stop and remove a sandbox by id. */
#ifndef SBX_CLI_STOP_H
#define SBX_CLI_STOP_H

#include "cli/cli.h"

/* Deletes sandbox `id`.  Returns 0, or prints the error and returns SBX_EXIT_FAIL for a
 * daemon error and SBX_EXIT_DAEMON for a network error. */
int sbx_stop_sandbox(sbx_cli_t *cli, const char *id);

extern const char sbx_stop_usage[];
int sbx_cmd_stop(sbx_cli_t *cli, int argc, char **argv);

#endif
