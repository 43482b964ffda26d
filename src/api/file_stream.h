/* A file inside a sandbox as an HTTP body: the bytes stream from the agent to the client
 * one chunk at a time, in constant memory, whatever the surface asking for them. */
#ifndef SBX_API_FILE_STREAM_H
#define SBX_API_FILE_STREAM_H

#include <jansson.h>

#include "api/server.h"
#include "core/files.h"

/* Makes resp an application/octet-stream answer carrying what `r` reads; takes ownership
 * of r.  With `meta` (the file's stat object, borrowed) the headers X-File-Size and
 * X-File-Mode are added. */
void sbx_api_respond_file(sbx_http_resp_t *resp, sbx_fs_reader_t *r, json_t *meta);

#endif
