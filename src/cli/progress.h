/* The "building image … / starting sandbox…" line shown on a terminal while a sandbox is
 * being created.  A background thread polls GET /sandbox/images/<image> every 500 ms and
 * redraws one stderr line in place; nothing is drawn when stderr is not a terminal. */
#ifndef SBX_CLI_PROGRESS_H
#define SBX_CLI_PROGRESS_H

#include "cli/cli.h"

typedef struct sbx_progress sbx_progress_t;

/* Starts the progress line for creating a sandbox from `image`.  Returns NULL (and shows
 * nothing) when stderr is not a terminal or the thread cannot start. */
sbx_progress_t *sbx_progress_start(const sbx_cli_t *cli, const char *image);

/* Stops the thread, erases the line and frees `p` (NULL is fine). */
void sbx_progress_stop(sbx_progress_t *p);

#endif
