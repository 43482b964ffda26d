/* Building blocks of the agent's file operations (agent/fs.h): the decoded FS request,
 * a hand-written JSON builder, the stat object, a directory walker that never follows
 * symlinks, and temporary files for atomic replacement.  Used by agent/fs.c and
 * agent/fstext.c only. */
#ifndef SBX_AGENT_FSUTIL_H
#define SBX_AGENT_FSUTIL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "proto/proto.h"

/* A RESULT's JSON stays this far below the frame maximum (the MESSAGE field header and a
 * closing tail always fit). */
#define FS_JSON_MAX (SBX_PROTO_MAX_PAYLOAD - 8192)

/* The fields of an FS request.  Strings are NUL-terminated heap copies or NULL when
 * absent; integers are -1 when absent, except offset (0). */
typedef struct {
    char *op, *path, *path2, *text, *text2;
    int64_t mode, offset, length, flags, uid, gid;
} fs_req_t;

/* Decodes an FS payload into *req.  Returns 0, or -1 with errno = EPROTO for a malformed
 * payload (a bad field, a string with a NUL byte, a repeated field, an integer that is
 * not 8 bytes); *req is then empty.  Release with fs_req_release. */
int fs_req_decode(const uint8_t *payload, size_t len, fs_req_t *req);
void fs_req_release(fs_req_t *req);

/* Sends ERROR with ERRNO = err and MESSAGE "<op> <path>: <strerror(err)>". */
void fs_send_errno(int sock, const fs_req_t *req, const char *path, int err);

/* A growing JSON text.  Separators are automatic: a key or an array element written
 * after a value gets its comma. */
typedef struct {
    char *buf;
    size_t len, cap;
} jbuf_t;

void jb_raw(jbuf_t *j, const char *s, size_t n);
void jb_open(jbuf_t *j, char c);  /* '{' or '[' (with a separator if needed) */
void jb_close(jbuf_t *j, char c); /* '}' or ']' */
void jb_key(jbuf_t *j, const char *key);
/* A JSON string of n raw bytes: valid UTF-8 passes through, control characters and
 * quotes are escaped, every byte of an invalid sequence becomes U+FFFD. */
void jb_str(jbuf_t *j, const char *s, size_t n);
void jb_kstr(jbuf_t *j, const char *key, const char *s);
void jb_kint(jbuf_t *j, const char *key, int64_t v);
void jb_kbool(jbuf_t *j, const char *key, bool v);
void jb_release(jbuf_t *j);
/* Appends the stat object of an entry: `path` is its full path, `st` its lstat, and
 * (dfd, name) reach it for readlinkat/fstatat when it is a symlink. */
void jb_stat(jbuf_t *j, const char *path, const struct stat *st, int dfd, const char *name);
/* Sends j as a RESULT frame; 0 or -1 with errno. */
int fs_send_result(int sock, const jbuf_t *j);

/* The last component of a path ("/" for the root). */
const char *fs_basename(const char *path);

/* A depth-first walk below one directory, children in byte order of their names.
 * Symlinks are reported, never followed; directories are opened with O_NOFOLLOW relative
 * to their parent's fd.  pre() is called for every entry (path in w->path when
 * w->path_ok, i.e. it fits in PATH_MAX) and returns 0 to go on (descending into a
 * directory), 1 not to descend, -1 to stop.  post() is called for a directory after its
 * children.  A non-strict walk skips what it cannot read; a strict one stops with w->err
 * and w->err_path. */
typedef struct fs_walk fs_walk_t;
typedef int (*fs_walk_fn)(fs_walk_t *w, int dfd, const char *name, const struct stat *st);
struct fs_walk {
    fs_walk_fn pre, post;
    void *ctx;
    bool strict;
    bool path_ok;
    size_t plen;
    int err;
    char path[PATH_MAX];
    char err_path[PATH_MAX];
};

/* Starts w->path at `root` (the path of dfd).  Fields other than pre/post/ctx/strict are
 * reset. */
void fs_walk_init(fs_walk_t *w, const char *root);
/* Walks the children of the directory dfd (borrowed).  Returns 0, or -1 when a callback
 * stopped the walk (w->err = 0) or a strict walk failed (w->err set). */
int fs_walk(fs_walk_t *w, int dfd);
/* For callbacks: records err at the current path and returns -1 in a strict walk; returns
 * 0 (skip and go on) in a non-strict one. */
int fs_walk_fail(fs_walk_t *w, int err);

/* Removes the directory `path` and everything below it without following symlinks.
 * Returns 0 or -1 with errno and the failing path in err_path (PATH_MAX bytes). */
int fs_rm_tree(const char *path, char *err_path);

/* Creates a temporary file ".<name>.sbx-<random>" next to `target` with O_EXCL and the
 * given mode; its path goes to tmp (PATH_MAX bytes).  Returns the fd or -1 with errno. */
int fs_tmp_open(const char *target, mode_t mode, char *tmp);
/* Makes the temporary permanent: fsync, rename over target (or, with noreplace, link it
 * as target, failing with EEXIST if target exists by then), fsync of the directory.  The
 * fd stays open.  On failure tmp is unlinked and -1 returned with errno. */
int fs_tmp_commit(int fd, const char *tmp, const char *target, bool noreplace);

#endif
