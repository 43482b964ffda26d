/* File operations inside a sandbox.  Every one runs in the sandbox's agent on a connection
 * of its own (docs/protocol.md, "File operations"): the daemon never resolves a sandbox path
 * on the host, so no symlink, `..`, bind trick or race inside the sandbox can make it touch
 * a host file.  Paths are absolute inside the sandbox or relative to its workspace.
 *
 * Errors carry the errno the agent reported, mapped to kinds:
 *   ENOENT -> NOT_FOUND, EEXIST/ENOTEMPTY/EBUSY -> CONFLICT, EISDIR/ENOTDIR/EINVAL/ENAMETOOLONG/ELOOP
 *   -> INVALID, EACCES/EPERM/EROFS -> FORBIDDEN, ENOSPC/EDQUOT/EFBIG -> TOO_LARGE;
 * err->errnum keeps the errno and err->code is its name ("ENOENT"), so each API surface
 * can choose its own codes. */
#ifndef SBX_CORE_FILES_H
#define SBX_CORE_FILES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "core/core.h"

typedef struct {
    const char *op;    /* stat ls mkdir rm rmdir mv chmod search grep sed */
    const char *path;  /* absolute, or relative to the workspace */
    const char *path2; /* mv destination (same rules) */
    const char *text;  /* chmod mode ("755", "u+x,go-w"), glob, or grep/sed pattern */
    const char *text2; /* sed replacement */
    int64_t mode;      /* mkdir mode; -1 = default (0755) */
    int64_t limit;     /* ls/search/grep result cap; 0 = the agent's default */
    unsigned flags;    /* SBX_FS_* from proto/proto.h */
} sbx_fs_req_t;

/* Runs one non-streaming operation; *result is the agent's JSON answer (caller decrefs).
 * Errors: NOT_FOUND S002 / CONFLICT S004 for the sandbox, then the errno mapping above. */
int sbx_core_fs(sbx_core_t *core, const char *sandbox_id, const sbx_fs_req_t *req, json_t **result,
                sbx_err_t *err);

/* Reading a file as a stream of chunks, in constant memory. */
typedef struct sbx_fs_reader sbx_fs_reader_t;
/* Opens `path` for reading from `offset`, at most `length` bytes (-1: to the end).  *meta
 * (optional) receives the file's stat object (caller decrefs). */
sbx_fs_reader_t *sbx_core_fs_read_open(sbx_core_t *core, const char *sandbox_id, const char *path,
                                       int64_t offset, int64_t length, json_t **meta, sbx_err_t *err);
/* Returns the size of the next chunk (>0) with *data valid until the next call, 0 at the
 * end of the file, -1 on error. */
long sbx_core_fs_read_next(sbx_fs_reader_t *r, const uint8_t **data, sbx_err_t *err);
void sbx_core_fs_read_close(sbx_fs_reader_t *r);

/* Writing a file from a stream of chunks, in constant memory.  Unless SBX_FS_APPEND or
 * SBX_FS_IN_PLACE is given the write is atomic: the agent writes a temporary file in the
 * same directory, fsyncs and renames it over the target only at finish, so readers never
 * see a half-written file and an aborted write leaves the old content. */
typedef struct sbx_fs_writer sbx_fs_writer_t;
typedef struct {
    int64_t mode;     /* permission bits of a new file; -1 = 0644 */
    int64_t uid, gid; /* owner inside the sandbox; -1 = the sandbox's root */
    unsigned flags;   /* SBX_FS_APPEND, SBX_FS_IN_PLACE, SBX_FS_PARENTS, SBX_FS_EXCLUSIVE */
} sbx_fs_write_opts_t;
/* Opens the target; errors that the path alone causes (missing directory, a directory in
 * the way, permission) are reported here, before any data is sent. */
sbx_fs_writer_t *sbx_core_fs_write_open(sbx_core_t *core, const char *sandbox_id, const char *path,
                                        const sbx_fs_write_opts_t *opts, sbx_err_t *err);
int sbx_core_fs_write(sbx_fs_writer_t *w, const void *data, size_t len, sbx_err_t *err);
/* Commits the file (fsync + rename when atomic); *result (optional) is {"path","size"}.
 * Frees the writer whatever the outcome.  A full writable layer is TOO_LARGE. */
int sbx_core_fs_write_finish(sbx_fs_writer_t *w, json_t **result, sbx_err_t *err);
/* Abandons the write: the target keeps its old content (atomic mode).  Frees the writer. */
void sbx_core_fs_write_abort(sbx_fs_writer_t *w);

#endif
