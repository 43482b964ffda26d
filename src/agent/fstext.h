/* The content operations of sandbox-agent's file API: search (glob over names), grep
 * (lines matching a literal or a POSIX extended regex) and sed (search and replace,
 * rewriting changed files atomically).  Called by agent/fs.c once the request is
 * validated; each sends its own RESULT or ERROR. */
#ifndef SBX_AGENT_FSTEXT_H
#define SBX_AGENT_FSTEXT_H

#include "agent/fsutil.h"

void sbx_fs_search(int sock, fs_req_t *req);
void sbx_fs_grep(int sock, fs_req_t *req);
void sbx_fs_sed(int sock, fs_req_t *req);

#endif
