/* `sandbox list`: the table of every sandbox the daemon knows about. */
#ifndef SBX_CLI_LIST_H
#define SBX_CLI_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "cli/cli.h"

/* Writes a compact age ("5s", "3m", "2h", "4d") for `ms` milliseconds into buf. */
void sbx_list_humanize_age(int64_t ms, char *buf, size_t len);

extern const char sbx_list_usage[];
int sbx_cmd_list(sbx_cli_t *cli, int argc, char **argv);

#endif
