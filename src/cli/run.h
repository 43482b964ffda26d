/* `sandbox run`: create a sandbox, run one command in it, and stop it whatever happens
 * (the command fails, the exec request fails, or we get SIGINT/SIGTERM). */
#ifndef SBX_CLI_RUN_H
#define SBX_CLI_RUN_H

#include "cli/cli.h"

extern const char sbx_run_usage[];
int sbx_cmd_run(sbx_cli_t *cli, int argc, char **argv);

#endif
