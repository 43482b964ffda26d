/* `sandbox ls`: list a directory inside a sandbox, and the helpers that read the entries
 * of a listing (shared with `sandbox cp -r`). */
#ifndef SBX_CLI_LS_H
#define SBX_CLI_LS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli/cli.h"

/* Calls the function `sandbox::fs::<op>` with `payload` (borrowed).  Returns 0 with the
 * result in *out (caller decrefs), or prints the error and returns the exit code:
 * SBX_EXIT_FAIL for an API error, SBX_EXIT_DAEMON when the daemon cannot be reached. */
int sbx_fs_call(sbx_cli_t *cli, const char *op, json_t *payload, json_t **out);

/* The entries of an fs::ls result (borrowed from it); an empty array when it has none. */
json_t *sbx_fs_entries(json_t *result);
/* Accessors for one entry of a listing or a stat result. */
const char *sbx_fs_entry_name(json_t *e);
bool sbx_fs_entry_is_dir(json_t *e);
bool sbx_fs_entry_is_symlink(json_t *e);
/* Permission bits (07777), or -1 when the entry has none. */
int sbx_fs_entry_mode(json_t *e);
long long sbx_fs_entry_size(json_t *e);
/* Modification time in seconds since the epoch (0 when unknown). */
long long sbx_fs_entry_mtime(json_t *e);

extern const char sbx_ls_usage[];
int sbx_cmd_ls(sbx_cli_t *cli, int argc, char **argv);

#endif
