/* File operations inside sandbox-agent: request validation and dispatch, the metadata
 * operations (stat, ls, mkdir, rm, rmdir, mv, chmod) and the streams (read, write).
 *
 * The agent is root inside the sandbox and every path is a path of the sandbox, so
 * following a symlink named by the request is harmless; what matters is that recursive
 * operations never follow symlinks found on the way (a link to / would otherwise make
 * `rm -r` empty the whole sandbox) and that nothing hostile in the tree can crash or hang
 * the session. */
#include "agent/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent/fstext.h"
#include "agent/fsutil.h"
#include "agent/session.h"
#include "common/util.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1
#endif

#define READ_CHUNK (256 * 1024)
#define LS_DEFAULT_CAP 10000
#define COPY_MAX_DEPTH 1024

static void send_ok(int sock)
{
    jbuf_t j = {0};
    jb_open(&j, '{');
    jb_kbool(&j, "ok", true);
    jb_close(&j, '}');
    fs_send_result(sock, &j);
    jb_release(&j);
}

/* ---- stat, ls ---------------------------------------------------------------------- */

static void op_stat(int sock, fs_req_t *r)
{
    struct stat st;
    if (lstat(r->path, &st) < 0)
        return fs_send_errno(sock, r, r->path, errno);
    jbuf_t j = {0};
    jb_stat(&j, r->path, &st, AT_FDCWD, r->path);
    fs_send_result(sock, &j);
    jb_release(&j);
}

typedef struct {
    jbuf_t *j;
    int64_t count, cap;
    bool recursive, truncated;
} ls_ctx_t;

static int ls_pre(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    ls_ctx_t *c = w->ctx;
    if (!w->path_ok)
        return 1;
    if (c->count >= c->cap) {
        c->truncated = true;
        return -1;
    }
    size_t before = c->j->len;
    jb_stat(c->j, w->path, st, dfd, name);
    if (c->j->len > FS_JSON_MAX) {
        c->j->len = before;
        c->j->buf[before] = 0;
        c->truncated = true;
        return -1;
    }
    c->count++;
    return c->recursive ? 0 : 1;
}

static void op_ls(int sock, fs_req_t *r)
{
    int fd = open(r->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fs_send_errno(sock, r, r->path, errno);
    jbuf_t j = {0};
    ls_ctx_t c = {.j = &j, .cap = r->length > 0 ? r->length : LS_DEFAULT_CAP};
    c.recursive = r->flags & SBX_FS_RECURSIVE;
    fs_walk_t *w = xcalloc(1, sizeof *w);
    w->pre = ls_pre;
    w->ctx = &c;
    fs_walk_init(w, r->path);
    jb_open(&j, '{');
    jb_key(&j, "entries");
    jb_open(&j, '[');
    fs_walk(w, fd);
    jb_close(&j, ']');
    jb_kbool(&j, "truncated", c.truncated);
    jb_close(&j, '}');
    fs_send_result(sock, &j);
    jb_release(&j);
    free(w);
    close(fd);
}

/* ---- mkdir, rm, rmdir -------------------------------------------------------------- */

/* mkdir -p: missing ancestors get 0755, the last component `mode`.  An existing
 * directory at `path` is fine unless `exclusive`. */
static int mkdir_parents(const char *path, mode_t mode, bool exclusive)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(path, mode) == 0)
        return 0;
    if (errno != EEXIST || exclusive)
        return -1;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    errno = EEXIST;
    return -1;
}

static void op_mkdir(int sock, fs_req_t *r)
{
    mode_t mode = r->mode < 0 ? 0755 : (mode_t)(r->mode & 07777);
    int rc;
    if (r->flags & SBX_FS_PARENTS)
        rc = mkdir_parents(r->path, mode, r->flags & SBX_FS_EXCLUSIVE);
    else
        rc = mkdir(r->path, mode);
    if (rc < 0)
        return fs_send_errno(sock, r, r->path, errno);
    /* mkdir(2) may drop set-id bits; apply them explicitly. */
    if (mode & 07000)
        chmod(r->path, mode);
    send_ok(sock);
}

/* Removes the directory tree at path and reports a failure with the path that failed. */
static int remove_tree(int sock, fs_req_t *r, const char *path)
{
    char *errp = xmalloc(PATH_MAX);
    int rc = fs_rm_tree(path, errp);
    if (rc < 0)
        fs_send_errno(sock, r, errp, errno);
    free(errp);
    return rc;
}

static void op_rm(int sock, fs_req_t *r)
{
    struct stat st;
    /* Emptying the whole sandbox is never what a file API call means. */
    if (!strcmp(r->path, "/"))
        return fs_send_errno(sock, r, r->path, EBUSY);
    if (lstat(r->path, &st) < 0) {
        if (errno == ENOENT && (r->flags & SBX_FS_FORCE))
            return send_ok(sock);
        return fs_send_errno(sock, r, r->path, errno);
    }
    if (S_ISDIR(st.st_mode)) {
        if (!(r->flags & SBX_FS_RECURSIVE))
            return fs_send_errno(sock, r, r->path, EISDIR);
        if (remove_tree(sock, r, r->path) < 0)
            return;
    } else if (unlink(r->path) < 0 && !(errno == ENOENT && (r->flags & SBX_FS_FORCE))) {
        return fs_send_errno(sock, r, r->path, errno);
    }
    send_ok(sock);
}

static void op_rmdir(int sock, fs_req_t *r)
{
    struct stat st;
    if (!strcmp(r->path, "/"))
        return fs_send_errno(sock, r, r->path, EBUSY);
    if (lstat(r->path, &st) < 0)
        return fs_send_errno(sock, r, r->path, errno);
    if (!S_ISDIR(st.st_mode))
        return fs_send_errno(sock, r, r->path, ENOTDIR);
    if (r->flags & SBX_FS_RECURSIVE) {
        if (remove_tree(sock, r, r->path) < 0)
            return;
    } else if (rmdir(r->path) < 0) {
        return fs_send_errno(sock, r, r->path, errno);
    }
    send_ok(sock);
}

/* ---- mv ---------------------------------------------------------------------------- */

static int copy_any(const char *src, const char *dst, const struct stat *st, int depth);

/* Copies keep their owner where the sandbox can represent it; an id without a mapping
 * must not make the whole move fail. */
static void keep_owner(const char *path, const struct stat *st)
{
    if (lchown(path, st->st_uid, st->st_gid) < 0)
        return;
}

/* Copies a regular file into a temporary next to dst and renames it over dst, so a
 * failed copy never leaves a partial dst behind. */
static int copy_file(const char *src, const char *dst, const struct stat *st)
{
    int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (in < 0)
        return -1;
    char *tmp = xmalloc(PATH_MAX);
    int out = fs_tmp_open(dst, st->st_mode & 07777, tmp), rc = -1;
    if (out < 0)
        goto done;
    char *buf = xmalloc(READ_CHUNK);
    ssize_t n;
    while ((n = read(in, buf, READ_CHUNK)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || sbx_write_all(out, buf, (size_t)n) < 0)
            break;
    }
    free(buf);
    if (n == 0) {
        /* As in keep_owner: the content matters more than an unmappable owner. */
        if (fchown(out, st->st_uid, st->st_gid) < 0)
            errno = 0;
        fchmod(out, st->st_mode & 07777);
        struct timespec ts[2] = {st->st_atim, st->st_mtim};
        futimens(out, ts);
        rc = fs_tmp_commit(out, tmp, dst, false);
    } else {
        int err = errno;
        unlink(tmp);
        errno = err;
    }
    int err = errno;
    close(out);
    errno = err;
done:
    free(tmp);
    int err2 = errno;
    close(in);
    errno = err2;
    return rc;
}

static int copy_dir(const char *src, const char *dst, const struct stat *st, int depth)
{
    if (mkdir(dst, 0700) < 0)
        return -1;
    int fd = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *s = xasprintf("%s/%s", src, e->d_name), *t = xasprintf("%s/%s", dst, e->d_name);
        struct stat cst;
        if (strlen(s) >= PATH_MAX || strlen(t) >= PATH_MAX) {
            errno = ENAMETOOLONG;
            rc = -1;
        } else if (lstat(s, &cst) == 0) {
            rc = copy_any(s, t, &cst, depth + 1);
        } else if (errno != ENOENT) {
            rc = -1;
        }
        free(s);
        free(t);
    }
    int err = errno;
    closedir(d);
    if (rc == 0) {
        keep_owner(dst, st);
        chmod(dst, st->st_mode & 07777);
        struct timespec ts[2] = {st->st_atim, st->st_mtim};
        utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
    }
    errno = err;
    return rc;
}

static int copy_any(const char *src, const char *dst, const struct stat *st, int depth)
{
    if (depth > COPY_MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    if (S_ISREG(st->st_mode))
        return copy_file(src, dst, st);
    if (S_ISDIR(st->st_mode))
        return copy_dir(src, dst, st, depth);
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof target - 1);
        if (n < 0)
            return -1;
        target[n] = 0;
        if (symlink(target, dst) < 0) {
            if (errno != EEXIST || unlink(dst) < 0 || symlink(target, dst) < 0)
                return -1;
        }
        keep_owner(dst, st);
        return 0;
    }
    if (mknod(dst, st->st_mode, st->st_rdev) < 0)
        return -1;
    keep_owner(dst, st);
    return 0;
}

/* rename(2) across filesystems: copy, then delete the source.  Mirrors rename's rules:
 * a directory replaces only an empty directory, a non-directory never a directory. */
static void move_across(int sock, fs_req_t *r, bool noclobber)
{
    struct stat st, dt;
    if (lstat(r->path, &st) < 0)
        return fs_send_errno(sock, r, r->path, errno);
    bool dexists = lstat(r->path2, &dt) == 0;
    if (dexists && noclobber)
        return fs_send_errno(sock, r, r->path2, EEXIST);
    if (dexists && S_ISDIR(st.st_mode)) {
        if (!S_ISDIR(dt.st_mode))
            return fs_send_errno(sock, r, r->path2, ENOTDIR);
        if (rmdir(r->path2) < 0)
            return fs_send_errno(sock, r, r->path2, errno);
    } else if (dexists && S_ISDIR(dt.st_mode)) {
        return fs_send_errno(sock, r, r->path2, EISDIR);
    }
    if (copy_any(r->path, r->path2, &st, 0) < 0) {
        int err = errno;
        if (S_ISDIR(st.st_mode)) {
            char *errp = xmalloc(PATH_MAX);
            fs_rm_tree(r->path2, errp);
            free(errp);
        }
        return fs_send_errno(sock, r, r->path, err);
    }
    if (S_ISDIR(st.st_mode)) {
        if (remove_tree(sock, r, r->path) < 0)
            return;
    } else if (unlink(r->path) < 0) {
        return fs_send_errno(sock, r, r->path, errno);
    }
    send_ok(sock);
}

static void op_mv(int sock, fs_req_t *r)
{
    if (!r->path2 || r->path2[0] != '/') {
        sbx_agent_send_error(sock, EINVAL, "mv %s: the destination must be an absolute path", r->path);
        return;
    }
    bool noclobber = r->flags & SBX_FS_NO_CLOBBER;
    int rc;
    if (noclobber) {
        rc = (int)syscall(SYS_renameat2, AT_FDCWD, r->path, AT_FDCWD, r->path2, RENAME_NOREPLACE);
        /* Filesystems without RENAME_NOREPLACE: check, then rename (racy, but only
         * against the sandbox's own processes). */
        if (rc < 0 && (errno == EINVAL || errno == ENOSYS)) {
            struct stat st;
            if (lstat(r->path2, &st) == 0) {
                errno = EEXIST;
            } else {
                rc = rename(r->path, r->path2);
            }
        }
    } else {
        rc = rename(r->path, r->path2);
    }
    if (rc < 0 && errno == EXDEV)
        return move_across(sock, r, noclobber);
    if (rc < 0)
        return fs_send_errno(sock, r, errno == EEXIST ? r->path2 : r->path, errno);
    send_ok(sock);
}

/* ---- chmod ------------------------------------------------------------------------- */

/* Applies a chmod(1) mode to `old`: octal ("755", "0644", "4755") or symbolic clauses
 * separated by commas ("u+x", "go-w", "a=r,u+w", "+x", "u=g", "+X").  Without a who
 * letter a clause applies to all (the agent's umask is 0).  Returns -1 if invalid. */
static int mode_apply(const char *spec, mode_t old, bool isdir, mode_t *out)
{
    mode_t m = old & 07777;
    if (*spec >= '0' && *spec <= '9') {
        unsigned long v = 0;
        size_t n = 0;
        for (const char *p = spec; *p; p++, n++) {
            if (*p < '0' || *p > '7' || n >= 5)
                return -1;
            v = v * 8 + (unsigned long)(*p - '0');
        }
        if (v > 07777)
            return -1;
        *out = (mode_t)v;
        return 0;
    }
    const char *p = spec;
    for (;;) {
        mode_t who = 0;
        for (; *p && strchr("ugoa", *p); p++)
            who |= *p == 'u' ? 04700 : *p == 'g' ? 02070 : *p == 'o' ? 01007 : 07777;
        if (!who)
            who = 07777;
        if (!*p || !strchr("+-=", *p))
            return -1;
        while (*p && strchr("+-=", *p)) {
            char op = *p++;
            mode_t bits = 0;
            if (*p && strchr("ugo", *p)) {
                /* Copy one class's rwx to the classes named. */
                int shift = *p == 'u' ? 6 : *p == 'g' ? 3 : 0;
                mode_t v = (m >> shift) & 7;
                bits = v << 6 | v << 3 | v;
                p++;
            } else {
                for (; *p && strchr("rwxXst", *p); p++) {
                    switch (*p) {
                    case 'r': bits |= 0444; break;
                    case 'w': bits |= 0222; break;
                    case 'x': bits |= 0111; break;
                    case 'X':
                        if (isdir || (m & 0111))
                            bits |= 0111;
                        break;
                    case 's': bits |= 06000; break;
                    case 't': bits |= 01000; break;
                    }
                }
            }
            bits &= who;
            if (op == '+')
                m |= bits;
            else if (op == '-')
                m &= ~bits;
            else
                m = (m & ~who) | bits;
        }
        if (!*p)
            break;
        if (*p++ != ',' || !*p)
            return -1;
    }
    *out = m;
    return 0;
}

typedef struct {
    const char *spec;
    int64_t changed;
} chmod_ctx_t;

static int chmod_pre(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    chmod_ctx_t *c = w->ctx;
    mode_t m;
    /* Linux has no modes on symlinks, and a link's target is not part of the tree. */
    if (S_ISLNK(st->st_mode))
        return 1;
    mode_apply(c->spec, st->st_mode, S_ISDIR(st->st_mode), &m);
    if (m != (st->st_mode & 07777)) {
        if (fchmodat(dfd, name, m, 0) < 0)
            return fs_walk_fail(w, errno);
        c->changed++;
    }
    return 0;
}

static void op_chmod(int sock, fs_req_t *r)
{
    mode_t m;
    const char *spec = r->text ? r->text : "";
    if (mode_apply(spec, 0, false, &m) < 0) {
        sbx_agent_send_error(sock, EINVAL, "chmod %s: invalid mode `%s`", r->path, spec);
        return;
    }
    struct stat st;
    if (stat(r->path, &st) < 0)
        return fs_send_errno(sock, r, r->path, errno);
    chmod_ctx_t c = {.spec = spec};
    mode_apply(spec, st.st_mode, S_ISDIR(st.st_mode), &m);
    if (m != (st.st_mode & 07777)) {
        if (chmod(r->path, m) < 0)
            return fs_send_errno(sock, r, r->path, errno);
        c.changed++;
    }
    if ((r->flags & SBX_FS_RECURSIVE) && S_ISDIR(st.st_mode)) {
        int fd = open(r->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return fs_send_errno(sock, r, r->path, errno);
        fs_walk_t *w = xcalloc(1, sizeof *w);
        w->pre = chmod_pre;
        w->ctx = &c;
        w->strict = true;
        fs_walk_init(w, r->path);
        int rc = fs_walk(w, fd);
        close(fd);
        if (rc < 0)
            fs_send_errno(sock, r, w->err_path, w->err);
        free(w);
        if (rc < 0)
            return;
    }
    jbuf_t j = {0};
    jb_open(&j, '{');
    jb_kbool(&j, "ok", true);
    jb_kint(&j, "changed", c.changed);
    jb_close(&j, '}');
    fs_send_result(sock, &j);
    jb_release(&j);
}

/* ---- read -------------------------------------------------------------------------- */

static void op_read(int sock, fs_req_t *r)
{
    struct stat st;
    if (stat(r->path, &st) < 0)
        return fs_send_errno(sock, r, r->path, errno);
    if (S_ISDIR(st.st_mode))
        return fs_send_errno(sock, r, r->path, EISDIR);
    if (!S_ISREG(st.st_mode) || r->offset < 0)
        return fs_send_errno(sock, r, r->path, EINVAL);
    /* O_NONBLOCK: a FIFO swapped in after the check must not block the open. */
    int fd = open(r->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fs_send_errno(sock, r, r->path, errno);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fs_send_errno(sock, r, r->path, EINVAL);
    }
    jbuf_t j = {0};
    jb_stat(&j, r->path, &st, AT_FDCWD, r->path);
    int rc = fs_send_result(sock, &j);
    jb_release(&j);
    char *buf = xmalloc(READ_CHUNK);
    int64_t off = r->offset, left = r->length < 0 ? INT64_MAX : r->length;
    while (rc == 0 && left > 0) {
        size_t want = left < READ_CHUNK ? (size_t)left : READ_CHUNK;
        ssize_t n = pread(fd, buf, want, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fs_send_errno(sock, r, r->path, errno);
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        rc = sbx_proto_send_data(sock, SBX_MSG_DATA, buf, (size_t)n);
        off += n;
        left -= n;
    }
    if (rc == 0)
        sbx_proto_send_empty(sock, SBX_MSG_END);
    free(buf);
    close(fd);
}

/* ---- write ------------------------------------------------------------------------- */

typedef struct {
    int fd;
    char tmp[PATH_MAX]; /* the temporary of an atomic write, "" otherwise */
    char target[PATH_MAX];
} wfile_t;

static void wfile_abort(wfile_t *f)
{
    if (f->tmp[0])
        unlink(f->tmp);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->tmp[0] = 0;
}

/* Opens the file a write goes to: the file itself (append, in place) or a temporary
 * carrying the mode and owner the result must have.  Returns 0 or -1 with errno. */
static int wfile_open(fs_req_t *r, wfile_t *f)
{
    int64_t fl = r->flags;
    bool excl = fl & SBX_FS_EXCLUSIVE;
    mode_t mode = r->mode < 0 ? 0644 : (mode_t)(r->mode & 07777);
    f->fd = -1;
    f->tmp[0] = 0;
    snprintf(f->target, sizeof f->target, "%s", r->path);
    if (fl & SBX_FS_PARENTS) {
        const char *name = fs_basename(r->path);
        if (name > r->path + 1) {
            char *dir = xstrndup(r->path, (size_t)(name - r->path - 1));
            int rc = mkdir_parents(dir, 0755, false);
            free(dir);
            if (rc < 0)
                return -1;
        }
    }
    struct stat st;
    bool exists = lstat(f->target, &st) == 0;
    if (!exists && errno != ENOENT)
        return -1;
    if (exists && S_ISLNK(st.st_mode)) {
        /* Write through a symlink like a shell redirection would: replace its target. */
        char *real = realpath(f->target, NULL);
        if (real && strlen(real) < sizeof f->target) {
            snprintf(f->target, sizeof f->target, "%s", real);
            exists = lstat(f->target, &st) == 0;
        }
        free(real);
    }
    if (exists && excl)
        return errno = EEXIST, -1;
    if (exists && S_ISDIR(st.st_mode))
        return errno = EISDIR, -1;
    if (exists && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return errno = EINVAL, -1;
    if (fl & (SBX_FS_APPEND | SBX_FS_IN_PLACE)) {
        int of = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        of |= (fl & SBX_FS_APPEND ? O_APPEND : O_TRUNC) | (excl ? O_EXCL : 0);
        f->fd = open(f->target, of, mode);
        if (f->fd < 0)
            return -1;
        struct stat fst;
        if (fstat(f->fd, &fst) < 0 || !S_ISREG(fst.st_mode))
            return errno = EINVAL, -1;
        if ((r->uid >= 0 || r->gid >= 0) && fchown(f->fd, (uid_t)r->uid, (gid_t)r->gid) < 0)
            return -1;
        return 0;
    }
    mode_t m = exists ? st.st_mode & 07777 : mode;
    f->fd = fs_tmp_open(f->target, m, f->tmp);
    if (f->fd < 0) {
        f->tmp[0] = 0;
        return -1;
    }
    uid_t uid = r->uid >= 0 ? (uid_t)r->uid : exists ? st.st_uid : (uid_t)-1;
    gid_t gid = r->gid >= 0 ? (gid_t)r->gid : exists ? st.st_gid : (gid_t)-1;
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(f->fd, uid, gid) < 0)
        return -1;
    /* fchown clears set-id bits, and open applies none beyond the permission bits. */
    if (fchmod(f->fd, m) < 0)
        return -1;
    return 0;
}

/* Writes the DATA fields of one frame.  Returns 0, or -1 with errno (EPROTO for a
 * malformed payload). */
static int write_frame(int fd, const uint8_t *payload, size_t len)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    int r;
    sbx_field_iter_init(&it, payload, len);
    while ((r = sbx_field_next(&it, &f)) > 0)
        if (f.tag == SBX_TAG_DATA && sbx_write_all(fd, f.val, f.len) < 0)
            return -1;
    if (r < 0)
        errno = EPROTO;
    return r;
}

static void op_write(int sock, fs_req_t *r)
{
    if (r->uid < -1 || r->uid >= (int64_t)UINT32_MAX || r->gid < -1 || r->gid >= (int64_t)UINT32_MAX) {
        sbx_agent_send_error(sock, EINVAL, "write %s: uid and gid must be 0..4294967294", r->path);
        return;
    }
    wfile_t *f = xcalloc(1, sizeof *f);
    if (wfile_open(r, f) < 0) {
        int e = errno;
        wfile_abort(f);
        fs_send_errno(sock, r, r->path, e);
        goto out;
    }
    jbuf_t j = {0};
    jb_raw(&j, "{\"ready\":true}", 14);
    int rc = fs_send_result(sock, &j);
    jb_release(&j);
    if (rc < 0)
        goto out;
    for (;;) {
        sbx_frame_hdr_t h;
        uint8_t *p = NULL;
        /* EOF or a broken frame before END: the daemon gave up; the old content stays. */
        if (sbx_frame_read(sock, &h, &p) <= 0)
            goto out;
        if (h.type == SBX_MSG_END) {
            free(p);
            break;
        }
        if (h.type != SBX_MSG_DATA) {
            free(p);
            /* The temporary goes before the answer: whoever reads the error sees no trace. */
            wfile_abort(f);
            sbx_agent_send_error(sock, EPROTO, "write %s: unexpected message type %u", r->path, h.type);
            goto out;
        }
        rc = write_frame(f->fd, p, h.len);
        free(p);
        if (rc < 0) {
            int e = errno;
            wfile_abort(f);
            fs_send_errno(sock, r, r->path, e);
            goto out;
        }
    }
    struct stat st;
    if (fstat(f->fd, &st) < 0) {
        int e = errno;
        wfile_abort(f);
        fs_send_errno(sock, r, r->path, e);
        goto out;
    }
    if (f->tmp[0]) {
        rc = fs_tmp_commit(f->fd, f->tmp, f->target, r->flags & SBX_FS_EXCLUSIVE);
        f->tmp[0] = 0;
    } else {
        rc = fsync(f->fd);
    }
    if (rc < 0) {
        int e = errno;
        wfile_abort(f);
        fs_send_errno(sock, r, r->path, e);
        goto out;
    }
    jb_open(&j, '{');
    jb_kstr(&j, "path", r->path);
    jb_kint(&j, "size", st.st_size);
    jb_close(&j, '}');
    fs_send_result(sock, &j);
    jb_release(&j);
out:
    wfile_abort(f);
    free(f);
}

/* ---- dispatch ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(int sock, fs_req_t *r);
} ops[] = {
    {"stat", op_stat},     {"ls", op_ls},
    {"mkdir", op_mkdir},   {"rm", op_rm},
    {"rmdir", op_rmdir},   {"mv", op_mv},
    {"chmod", op_chmod},   {"read", op_read},
    {"write", op_write},   {"search", sbx_fs_search},
    {"grep", sbx_fs_grep}, {"sed", sbx_fs_sed},
};

/* "/a/b/" names the same directory as "/a/b"; results report paths without the slash. */
static void strip_trailing_slashes(char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = 0;
}

void sbx_agent_fs(int sock, const uint8_t *payload, size_t len)
{
    fs_req_t r;
    memset(&r, 0, sizeof r);
    if (fs_req_decode(payload, len, &r) < 0) {
        sbx_agent_send_error(sock, EPROTO, "malformed FS request");
        return;
    }
    size_t i;
    for (i = 0; r.op && i < SBX_ARRAY_LEN(ops); i++)
        if (!strcmp(r.op, ops[i].name))
            break;
    if (!r.op || i == SBX_ARRAY_LEN(ops)) {
        sbx_agent_send_error(sock, EOPNOTSUPP, "unknown file operation `%.64s`", r.op ? r.op : "");
        goto out;
    }
    if (!r.path || r.path[0] != '/') {
        sbx_agent_send_error(sock, EINVAL, "%s %.256s: the path must be absolute", r.op,
                             r.path ? r.path : "");
        goto out;
    }
    if (strlen(r.path) >= PATH_MAX || (r.path2 && strlen(r.path2) >= PATH_MAX)) {
        sbx_agent_send_error(sock, ENAMETOOLONG, "%s %.256s...: %s", r.op, r.path, strerror(ENAMETOOLONG));
        goto out;
    }
    strip_trailing_slashes(r.path);
    if (r.path2)
        strip_trailing_slashes(r.path2);
    /* Modes are taken literally, and deep trees hold one fd per level. */
    umask(0);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ops[i].run(sock, &r);
out:
    fs_req_release(&r);
}
