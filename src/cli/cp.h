/* `sandbox cp`: copy files and directory trees into and out of a sandbox over the raw
 * file routes, streaming in constant memory. */
#ifndef SBX_CLI_CP_H
#define SBX_CLI_CP_H

#include "cli/cli.h"

extern const char sbx_cp_usage[];
int sbx_cmd_cp(sbx_cli_t *cli, int argc, char **argv);

#endif
