/* Building blocks of the agent's file operations: request decoding, JSON, the stat
 * object, owner names, the directory walker and temporary files. */
#include "agent/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/session.h"
#include "common/util.h"

/* Deeper trees are not walked: each level holds one fd, and PATH_MAX bounds any
 * reachable path anyway. */
#define WALK_MAX_DEPTH 1024
/* /etc/passwd and /etc/group larger than this are not read for owner names. */
#define IDFILE_MAX (4u << 20)

/* ---- requests ---------------------------------------------------------------------- */

void fs_req_release(fs_req_t *req)
{
    free(req->op);
    free(req->path);
    free(req->path2);
    free(req->text);
    free(req->text2);
    memset(req, 0, sizeof *req);
    req->mode = req->length = req->flags = req->uid = req->gid = -1;
}

int fs_req_decode(const uint8_t *payload, size_t len, fs_req_t *req)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    bool seen[SBX_TAG_FS_FLAGS + 1] = {false};
    int r;
    fs_req_release(req);
    req->flags = 0;
    sbx_field_iter_init(&it, payload, len);
    while ((r = sbx_field_next(&it, &f)) > 0) {
        char **s = NULL;
        int64_t *v = NULL;
        switch (f.tag) {
        case SBX_TAG_OP: s = &req->op; break;
        case SBX_TAG_PATH: s = &req->path; break;
        case SBX_TAG_PATH2: s = &req->path2; break;
        case SBX_TAG_TEXT: s = &req->text; break;
        case SBX_TAG_TEXT2: s = &req->text2; break;
        case SBX_TAG_MODE: v = &req->mode; break;
        case SBX_TAG_OFFSET: v = &req->offset; break;
        case SBX_TAG_LENGTH: v = &req->length; break;
        case SBX_TAG_FS_FLAGS: v = &req->flags; break;
        case SBX_TAG_UID: v = &req->uid; break;
        case SBX_TAG_GID: v = &req->gid; break;
        default: continue; /* unknown tags are skipped so both sides can grow */
        }
        /* A repeated field is ambiguous; refuse rather than guess which one wins. */
        if (seen[f.tag])
            goto bad;
        seen[f.tag] = true;
        if (s) {
            if (memchr(f.val, 0, f.len))
                goto bad;
            *s = xstrndup((const char *)f.val, f.len);
        } else if (sbx_field_int(&f, v) < 0) {
            goto bad;
        }
    }
    if (r < 0)
        goto bad;
    return 0;
bad:
    fs_req_release(req);
    errno = EPROTO;
    return -1;
}

void fs_send_errno(int sock, const fs_req_t *req, const char *path, int err)
{
    sbx_agent_send_error(sock, err, "%s %s: %s", req->op, path ? path : "", strerror(err));
}

/* ---- JSON -------------------------------------------------------------------------- */

void jb_raw(jbuf_t *j, const char *s, size_t n)
{
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 4096;
        while (cap < j->len + n + 1)
            cap *= 2;
        j->buf = xrealloc(j->buf, cap);
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = 0;
}

/* A value or key written after another value needs a comma. */
static void jb_sep(jbuf_t *j)
{
    if (j->len == 0)
        return;
    char c = j->buf[j->len - 1];
    if (c != '{' && c != '[' && c != ':' && c != ',')
        jb_raw(j, ",", 1);
}

void jb_open(jbuf_t *j, char c)
{
    jb_sep(j);
    jb_raw(j, &c, 1);
}

void jb_close(jbuf_t *j, char c)
{
    jb_raw(j, &c, 1);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if it is invalid:
 * overlong forms, surrogates and code points above U+10FFFF are refused. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp, min;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void jb_str(jbuf_t *j, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    jb_sep(j);
    jb_raw(j, "\"", 1);
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned char c = p[i];
        const char *esc = NULL;
        char tmp[8];
        size_t k = 1;
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\r')
            esc = "\\r";
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        } else if (c >= 0x80 && (k = utf8_len(p + i, n - i)) == 0) {
            esc = "\xef\xbf\xbd"; /* U+FFFD for each byte of an invalid sequence */
            k = 1;
        }
        if (!esc) {
            i += k;
            run += k;
            continue;
        }
        jb_raw(j, (const char *)p + i - run, run);
        run = 0;
        jb_raw(j, esc, strlen(esc));
        i += k;
    }
    jb_raw(j, (const char *)p + n - run, run);
    jb_raw(j, "\"", 1);
}

void jb_key(jbuf_t *j, const char *key)
{
    jb_str(j, key, strlen(key));
    jb_raw(j, ":", 1);
}

void jb_kstr(jbuf_t *j, const char *key, const char *s)
{
    jb_key(j, key);
    jb_str(j, s, strlen(s));
}

void jb_kint(jbuf_t *j, const char *key, int64_t v)
{
    char num[32];
    jb_key(j, key);
    jb_raw(j, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)v));
}

void jb_kbool(jbuf_t *j, const char *key, bool v)
{
    jb_key(j, key);
    jb_raw(j, v ? "true" : "false", v ? 4 : 5);
}

void jb_release(jbuf_t *j)
{
    free(j->buf);
    memset(j, 0, sizeof *j);
}

int fs_send_result(int sock, const jbuf_t *j)
{
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_RESULT);
    sbx_msg_add_bytes(&m, SBX_TAG_MESSAGE, j->buf ? j->buf : "", j->len);
    int r = sbx_msg_send(sock, &m);
    sbx_msg_release(&m);
    return r;
}

/* ---- owner names ------------------------------------------------------------------- */

/* The names of one /etc/passwd-style file, loaded on first use.  The agent cannot use
 * getpwuid (static glibc would want NSS modules), and the sandbox's own files are the
 * ones that matter anyway. */
typedef struct {
    const char *file;
    bool loaded;
    size_t n;
    struct {
        uint32_t id;
        char *name;
    } * ent;
} idmap_t;

static void idmap_load(idmap_t *m)
{
    m->loaded = true;
    int fd = open(m->file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > IDFILE_MAX) {
        close(fd);
        return;
    }
    char *buf = xmalloc((size_t)st.st_size + 1);
    size_t len = 0;
    ssize_t r;
    while (len < (size_t)st.st_size && (r = read(fd, buf + len, (size_t)st.st_size - len)) > 0)
        len += (size_t)r;
    close(fd);
    buf[len] = 0;
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        /* name:password:id:... */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c1 || !c2 || c1 == line)
            continue;
        char *end;
        errno = 0;
        unsigned long id = strtoul(c2 + 1, &end, 10);
        if (errno || end == c2 + 1 || *end != ':' || id > UINT32_MAX)
            continue;
        m->ent = xrealloc(m->ent, (m->n + 1) * sizeof *m->ent);
        m->ent[m->n].id = (uint32_t)id;
        m->ent[m->n].name = xstrndup(line, (size_t)(c1 - line));
        m->n++;
    }
    free(buf);
}

/* Writes the name of `id` (or the number when it has none) into out. */
static void id_name(idmap_t *m, uint32_t id, char *out, size_t outlen)
{
    if (!m->loaded)
        idmap_load(m);
    for (size_t i = 0; i < m->n; i++)
        if (m->ent[i].id == id) {
            snprintf(out, outlen, "%s", m->ent[i].name);
            return;
        }
    snprintf(out, outlen, "%u", id);
}

static idmap_t users = {.file = "/etc/passwd"};
static idmap_t groups = {.file = "/etc/group"};

/* ---- the stat object --------------------------------------------------------------- */

const char *fs_basename(const char *path)
{
    const char *s = strrchr(path, '/');
    if (!s)
        return path;
    return s[1] ? s + 1 : path;
}

static const char *type_name(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "directory";
    if (S_ISLNK(m))
        return "symlink";
    return "other";
}

/* ls -l style: type, then rwx triplets with s/S and t/T for the special bits. */
static void permissions(mode_t m, char out[11])
{
    out[0] = S_ISDIR(m)    ? 'd'
             : S_ISLNK(m)  ? 'l'
             : S_ISCHR(m)  ? 'c'
             : S_ISBLK(m)  ? 'b'
             : S_ISFIFO(m) ? 'p'
             : S_ISSOCK(m) ? 's'
                           : '-';
    static const char rwx[] = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[1 + i] = m & (0400 >> i) ? rwx[i] : '-';
    if (m & S_ISUID)
        out[3] = m & S_IXUSR ? 's' : 'S';
    if (m & S_ISGID)
        out[6] = m & S_IXGRP ? 's' : 'S';
    if (m & S_ISVTX)
        out[9] = m & S_IXOTH ? 't' : 'T';
    out[10] = 0;
}

void jb_stat(jbuf_t *j, const char *path, const struct stat *st, int dfd, const char *name)
{
    char perms[11], owner[64], group[64];
    permissions(st->st_mode, perms);
    id_name(&users, st->st_uid, owner, sizeof owner);
    id_name(&groups, st->st_gid, group, sizeof group);
    jb_open(j, '{');
    jb_kstr(j, "path", path);
    jb_kstr(j, "name", fs_basename(path));
    jb_kstr(j, "type", type_name(st->st_mode));
    jb_kint(j, "size", st->st_size);
    jb_kint(j, "mode", st->st_mode & 07777);
    jb_kstr(j, "permissions", perms);
    jb_kint(j, "uid", st->st_uid);
    jb_kint(j, "gid", st->st_gid);
    jb_kstr(j, "owner", owner);
    jb_kstr(j, "group", group);
    jb_kint(j, "mtime", (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000);
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(dfd, name, target, sizeof target);
        if (n >= 0) {
            jb_key(j, "target");
            jb_str(j, target, (size_t)n);
        }
        struct stat ts;
        if (fstatat(dfd, name, &ts, 0) == 0)
            jb_kstr(j, "targetType", type_name(ts.st_mode));
    }
    jb_close(j, '}');
}

/* ---- walking ----------------------------------------------------------------------- */

void fs_walk_init(fs_walk_t *w, const char *root)
{
    w->err = 0;
    w->err_path[0] = 0;
    w->path_ok = strlen(root) < sizeof w->path;
    snprintf(w->path, sizeof w->path, "%s", w->path_ok ? root : "");
    w->plen = strlen(w->path);
    /* "/" as the root must not produce "//name". */
    if (w->plen == 1 && w->path[0] == '/')
        w->plen = 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the names of dfd's entries (without . and ..), sorted.  Returns the count or -1. */
static ssize_t read_names(int dfd, char ***out)
{
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = xrealloc(names, cap * sizeof *names);
        }
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_names);
    *out = names;
    return (ssize_t)n;
}

static void path_push(fs_walk_t *w, const char *name)
{
    size_t k = strlen(name);
    if (!w->path_ok || w->plen + 1 + k >= sizeof w->path) {
        w->path_ok = false;
        return;
    }
    w->path[w->plen++] = '/';
    memcpy(w->path + w->plen, name, k + 1);
    w->plen += k;
}

int fs_walk_fail(fs_walk_t *w, int err)
{
    if (!w->strict)
        return 0;
    w->err = err;
    snprintf(w->err_path, sizeof w->err_path, "%s", w->path);
    return -1;
}

static int walk_dir(fs_walk_t *w, int dfd, int depth)
{
    if (depth > WALK_MAX_DEPTH)
        return fs_walk_fail(w, ELOOP);
    char **names = NULL;
    ssize_t n = read_names(dfd, &names);
    if (n < 0)
        return fs_walk_fail(w, errno);
    int rc = 0;
    size_t base = w->plen;
    bool base_ok = w->path_ok;
    for (ssize_t i = 0; i < n && rc == 0; i++) {
        struct stat st;
        path_push(w, names[i]);
        if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            /* An entry removed meanwhile is simply gone. */
            if (errno != ENOENT)
                rc = fs_walk_fail(w, errno);
        } else {
            int r = w->pre ? w->pre(w, dfd, names[i], &st) : 0;
            if (r < 0) {
                rc = -1;
            } else if (r == 0 && S_ISDIR(st.st_mode)) {
                int cfd = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (cfd < 0) {
                    rc = fs_walk_fail(w, errno);
                } else {
                    rc = walk_dir(w, cfd, depth + 1);
                    close(cfd);
                    if (rc == 0 && w->post && w->post(w, dfd, names[i], &st) < 0)
                        rc = -1;
                }
            }
        }
        w->plen = base;
        w->path_ok = base_ok;
        if (base_ok)
            w->path[base] = 0;
    }
    for (ssize_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int fs_walk(fs_walk_t *w, int dfd)
{
    return walk_dir(w, dfd, 0);
}

static int rm_pre(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    if (S_ISDIR(st->st_mode))
        return 0;
    if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
        return fs_walk_fail(w, errno);
    return 0;
}

static int rm_post(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return fs_walk_fail(w, errno);
    return 0;
}

int fs_rm_tree(const char *path, char *err_path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err_path, PATH_MAX, "%s", path);
        return -1;
    }
    fs_walk_t *w = xcalloc(1, sizeof *w);
    w->pre = rm_pre;
    w->post = rm_post;
    w->strict = true;
    fs_walk_init(w, path);
    int r = fs_walk(w, fd);
    int err = w->err;
    close(fd);
    if (r == 0 && rmdir(path) < 0) {
        err = errno;
        r = -1;
        snprintf(w->err_path, sizeof w->err_path, "%s", path);
    }
    if (r < 0)
        snprintf(err_path, PATH_MAX, "%s", w->err_path);
    free(w);
    errno = err;
    return r;
}

/* ---- temporary files --------------------------------------------------------------- */

int fs_tmp_open(const char *target, mode_t mode, char *tmp)
{
    const char *name = fs_basename(target);
    size_t dirlen = (size_t)(name - target);
    /* Keep the temporary's name within NAME_MAX whatever the target's. */
    int namelen = (int)strnlen(name, 200);
    for (int tries = 0; tries < 100; tries++) {
        char rnd[13];
        sbx_random_hex(rnd, 6);
        int n = snprintf(tmp, PATH_MAX, "%.*s.%.*s.sbx-%s", (int)dirlen, target, namelen, name, rnd);
        if (n < 0 || n >= PATH_MAX) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

int fs_tmp_commit(int fd, const char *tmp, const char *target, bool noreplace)
{
    int r = fsync(fd);
    if (r == 0)
        r = noreplace ? link(tmp, target) : rename(tmp, target);
    if (r < 0 || noreplace) {
        int err = errno;
        unlink(tmp);
        errno = err;
        if (r < 0)
            return -1;
    }
    /* The rename itself is made durable by syncing the directory; failing that is not
     * worth undoing a completed replacement. */
    const char *name = fs_basename(target);
    char *dir = name == target ? xstrdup(".") : xstrndup(target, (size_t)(name - target));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    return 0;
}
