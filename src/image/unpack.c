/* Layer extraction.  We do not use archive_write_disk: every entry is created with *at()
 * calls relative to the rootfs fd, the parent directory being resolved by openat2() with
 * RESOLVE_IN_ROOT, so an entry's path is interpreted exactly as a process chrooted into
 * the image would see it.  A symlink planted by an earlier entry (absolute or full of
 * "..") therefore cannot carry a later entry out of the tree, and the final component is
 * always created with O_NOFOLLOW / O_EXCL semantics.
 *
 * Whiteouts (OCI image spec, "layer changesets"): ".wh.NAME" removes NAME from the lower
 * layers; ".wh..wh..opq" in DIR hides everything lower layers put in DIR.  Because the
 * opaque marker may come after entries of the same layer in DIR, we remember the paths
 * this layer created and the marker removes only what is not among them. */
#include "image/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

#define WH ".wh."
#define WH_OPQ ".wh..wh..opq"

int sbx_unpack_clean_path(const char *in, char *out, size_t outlen)
{
    if (!in || in[0] == '/')
        return -1;
    size_t o = 0;
    const char *p = in;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return -1;
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (o + n + 2 > outlen)
                return -1;
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    if (outlen)
        out[o < outlen ? o : outlen - 1] = '\0';
    return o == 0 ? 1 : 0;
}

/* ---- a set of the paths one layer created ---- */

typedef struct {
    char **slot;
    size_t cap, n;
} pathset_t;

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void set_add(pathset_t *s, const char *p);

static void set_grow(pathset_t *s)
{
    pathset_t big = {xcalloc(s->cap ? s->cap * 2 : 1024, sizeof(char *)), s->cap ? s->cap * 2 : 1024, 0};
    for (size_t i = 0; i < s->cap; i++)
        if (s->slot[i]) {
            set_add(&big, s->slot[i]);
            free(s->slot[i]);
        }
    free(s->slot);
    *s = big;
}

static void set_add(pathset_t *s, const char *p)
{
    if ((s->n + 1) * 2 > s->cap)
        set_grow(s);
    for (size_t i = fnv(p) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slot[i]) {
            s->slot[i] = xstrdup(p);
            s->n++;
            return;
        }
        if (!strcmp(s->slot[i], p))
            return;
    }
}

static bool set_has(const pathset_t *s, const char *p)
{
    if (!s->cap)
        return false;
    for (size_t i = fnv(p) & (s->cap - 1); s->slot[i]; i = (i + 1) & (s->cap - 1))
        if (!strcmp(s->slot[i], p))
            return true;
    return false;
}

static void set_free(pathset_t *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slot[i]);
    free(s->slot);
}

/* ---- filesystem helpers, all relative to directory fds ---- */

static int openat2_in_root(int rootfd, const char *rel)
{
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    long fd;
    do
        fd = syscall(SYS_openat2, rootfd, rel[0] ? rel : ".", &how, sizeof how);
    while (fd < 0 && errno == EINTR);
    return (int)fd;
}

static void split(const char *path, char *parent, size_t plen, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (slash) {
        snprintf(parent, plen, "%.*s", (int)(slash - path), path);
        *base = slash + 1;
    } else {
        parent[0] = '\0';
        *base = path;
    }
}

/* Opens directory `rel` inside the root, creating missing directories (0755, root-owned)
 * when `create` is set.  Returns an O_PATH fd or -1 with errno. */
static int open_dir(int rootfd, const char *rel, bool create)
{
    int fd = openat2_in_root(rootfd, rel);
    if (fd >= 0 || errno != ENOENT || !create || !rel[0])
        return fd;
    char parent[4096];
    const char *base;
    split(rel, parent, sizeof parent, &base);
    _cleanup_close_ int pfd = open_dir(rootfd, parent, true);
    if (pfd < 0)
        return -1;
    if (mkdirat(pfd, base, 0755) < 0 && errno != EEXIST)
        return -1;
    return openat2_in_root(rootfd, rel);
}

/* Removes `name` in `dirfd` and, for a directory, everything below it; never follows a
 * symlink. */
static int rm_rf_at(int dirfd, const char *name)
{
    struct stat sb;
    if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode))
        return unlinkat(dirfd, name, 0);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && rm_rf_at(fd, de->d_name) < 0)
            rc = -1;
    closedir(d);
    if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
        rc = -1;
    return rc;
}

/* Hides what lower layers put below directory `rel` (the opaque marker).  Entries this
 * layer created stay; directories among them are searched for lower content too. */
static int make_opaque(int dfd, const char *rel, const pathset_t *mine)
{
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *child = rel[0] ? xasprintf("%s/%s", rel, de->d_name) : xstrdup(de->d_name);
        if (!set_has(mine, child)) {
            if (rm_rf_at(fd, de->d_name) < 0)
                rc = -1;
            continue;
        }
        struct stat sb;
        if (fstatat(fd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode)) {
            _cleanup_close_ int cfd = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0 || make_opaque(cfd, child, mine) < 0)
                rc = -1;
        }
    }
    closedir(d);
    return rc;
}

static void set_times(int fd, const char *name, struct archive_entry *e, int flags)
{
    struct timespec ts[2] = {{archive_entry_mtime(e), archive_entry_mtime_nsec(e)},
                             {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}};
    utimensat(fd, name, ts, flags);
}

static int write_file(struct archive *a, struct archive_entry *e, int pfd, const char *base, sbx_err_t *err)
{
    _cleanup_close_ int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return sbx_error(err, errno, "create `%s`", archive_entry_pathname(e));
    const void *buf;
    size_t size;
    la_int64_t off;
    int r;
    while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
        const char *p = buf;
        while (size > 0) {
            ssize_t w = pwrite(fd, p, size, off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return sbx_error(err, errno, "write `%s`", archive_entry_pathname(e));
            p += w;
            off += w;
            size -= (size_t)w;
        }
    }
    if (r != ARCHIVE_EOF)
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "layer data: %s", archive_error_string(a));
    if (ftruncate(fd, archive_entry_size(e)) < 0)
        return sbx_error(err, errno, "truncate `%s`", archive_entry_pathname(e));
    /* chown before chmod: chown clears set-id bits. */
    if (fchown(fd, archive_entry_uid(e), archive_entry_gid(e)) < 0 ||
        fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return sbx_error(err, errno, "set owner/mode of `%s`", archive_entry_pathname(e));
    struct timespec ts[2] = {{archive_entry_mtime(e), archive_entry_mtime_nsec(e)},
                             {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}};
    futimens(fd, ts);
    return 0;
}

static int make_dir(struct archive_entry *e, int pfd, const char *base, sbx_err_t *err)
{
    struct stat sb;
    if (fstatat(pfd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(sb.st_mode) && rm_rf_at(pfd, base) < 0)
        return sbx_error(err, errno, "replace `%s`", archive_entry_pathname(e));
    if (mkdirat(pfd, base, 0700) < 0 && errno != EEXIST)
        return sbx_error(err, errno, "mkdir `%s`", archive_entry_pathname(e));
    _cleanup_close_ int fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fchown(fd, archive_entry_uid(e), archive_entry_gid(e)) < 0 ||
        fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return sbx_error(err, errno, "set owner/mode of `%s`", archive_entry_pathname(e));
    return 0;
}

/* One entry; returns 1 when it was skipped as unsafe or unsupported. */
static int apply_entry(struct archive *a, struct archive_entry *e, int rootfd, pathset_t *mine,
                       sbx_unpack_stats_t *st, sbx_err_t *err)
{
    char path[4096], parent[4096];
    const char *raw = archive_entry_pathname(e);
    int c = sbx_unpack_clean_path(raw, path, sizeof path);
    if (c < 0) {
        log_warn("unpack: refusing entry with unsafe path `%s`", raw ? raw : "(null)");
        return 1;
    }
    if (c == 1)
        return 0;
    const char *base;
    split(path, parent, sizeof parent, &base);

    if (!strncmp(base, WH, strlen(WH))) {
        st->whiteouts++;
        _cleanup_close_ int pfd = open_dir(rootfd, parent, !strcmp(base, WH_OPQ));
        if (pfd < 0)
            return 0; /* nothing below to hide */
        if (!strcmp(base, WH_OPQ)) {
            _cleanup_close_ int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0 || make_opaque(dfd, parent, mine) < 0)
                return sbx_error(err, errno, "apply opaque directory `%s`", parent);
            return 0;
        }
        const char *victim = base + strlen(WH);
        if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
            return 1;
        if (rm_rf_at(pfd, victim) < 0)
            return sbx_error(err, errno, "apply whiteout `%s`", path);
        return 0;
    }

    _cleanup_close_ int pfd = open_dir(rootfd, parent, true);
    if (pfd < 0) {
        log_warn("unpack: refusing `%s`: its directory cannot be resolved inside the image: %s", path,
                 strerror(errno));
        return 1;
    }
    const char *hl = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    if (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFSOCK) {
        return 1; /* device nodes never come from images: /dev is the sandbox's own */
    }
    if (type == AE_IFDIR && !hl) {
        if (make_dir(e, pfd, base, err) < 0)
            return -1;
        set_add(mine, path);
        return 0;
    }
    if (rm_rf_at(pfd, base) < 0)
        return sbx_error(err, errno, "replace `%s`", path);
    set_add(mine, path);
    if (hl) {
        char tpath[4096], tparent[4096];
        const char *tbase;
        if (sbx_unpack_clean_path(hl, tpath, sizeof tpath) != 0) {
            log_warn("unpack: refusing hardlink `%s` -> `%s`: target outside the image", path, hl);
            return 1;
        }
        split(tpath, tparent, sizeof tparent, &tbase);
        _cleanup_close_ int tfd = open_dir(rootfd, tparent, false);
        if (tfd < 0 || linkat(tfd, tbase, pfd, base, 0) < 0) {
            log_warn("unpack: refusing hardlink `%s` -> `%s`: %s", path, hl, strerror(errno));
            return 1;
        }
        return 0;
    }
    switch (type) {
    case AE_IFREG: return write_file(a, e, pfd, base, err);
    case AE_IFLNK: {
        const char *target = archive_entry_symlink(e);
        if (!target || symlinkat(target, pfd, base) < 0)
            return sbx_error(err, errno, "symlink `%s`", path);
        if (fchownat(pfd, base, archive_entry_uid(e), archive_entry_gid(e), AT_SYMLINK_NOFOLLOW) < 0)
            return sbx_error(err, errno, "chown symlink `%s`", path);
        set_times(pfd, base, e, AT_SYMLINK_NOFOLLOW);
        return 0;
    }
    case AE_IFIFO:
        if (mkfifoat(pfd, base, 0600) < 0 ||
            fchownat(pfd, base, archive_entry_uid(e), archive_entry_gid(e), AT_SYMLINK_NOFOLLOW) < 0 ||
            fchmodat(pfd, base, archive_entry_perm(e) & 07777, 0) < 0)
            return sbx_error(err, errno, "mkfifo `%s`", path);
        return 0;
    default: return 1;
    }
}

int sbx_unpack_layer(int rootfd, const char *layer_path, sbx_unpack_stats_t *stats, sbx_err_t *err)
{
    sbx_unpack_stats_t local = {0};
    sbx_unpack_stats_t *st = stats ? stats : &local;
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_empty(a);
    int rc = 0;
    if (archive_read_open_filename(a, layer_path, 1 << 16) != ARCHIVE_OK) {
        rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "open layer `%s`: %s", layer_path,
                      archive_error_string(a));
        archive_read_free(a);
        return rc;
    }
    pathset_t mine = {0};
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
        int x = apply_entry(a, e, rootfd, &mine, st, err);
        if (x < 0) {
            rc = -1;
            break;
        }
        if (x == 1)
            st->skipped++;
        else
            st->entries++;
    }
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "layer `%s` is not a valid tar archive: %s", layer_path,
                      archive_error_string(a));
    set_free(&mine);
    archive_read_free(a);
    return rc;
}
