/* search, grep and sed: the operations that look at names and contents of whole trees.
 * Trees are walked with fs_walk (sorted, symlinks never followed, so a link loop is just
 * an entry); a file is read whole but only when it is a regular file of at most 64 MiB
 * without a NUL byte in its first 8 KiB. */
#include "agent/fstext.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/session.h"
#include "common/util.h"

#define SEARCH_DEFAULT_CAP 10000
#define GREP_DEFAULT_CAP 1000
#define TEXT_FILE_MAX (64 << 20)
#define BINARY_PROBE 8192
#define GREP_LINE_MAX 4096
/* A sed result larger than this is refused (EFBIG) rather than built in memory. */
#define SED_OUT_MAX (256u << 20)

/* Appends one element to a result array unless that would make the JSON too large;
 * returns false (and leaves j unchanged) then. */
static bool fits(jbuf_t *j, size_t before)
{
    if (j->len <= FS_JSON_MAX)
        return true;
    j->len = before;
    j->buf[before] = 0;
    return false;
}

/* ---- search ------------------------------------------------------------------------ */

typedef struct {
    const char *pat;
    int fnm;
    size_t rootlen;
    jbuf_t *j;
    int64_t count, cap;
    bool truncated;
} search_ctx_t;

/* A pattern with a '/' is matched against the path relative to the root (where '*' also
 * crosses directories, and a leading "**" + "/" may match nothing); any other pattern
 * against the entry's name. */
static bool glob_match(const char *pat, const char *name, const char *rel, int fl)
{
    if (!strchr(pat, '/'))
        return fnmatch(pat, name, fl) == 0;
    if (fnmatch(pat, rel, fl) == 0)
        return true;
    return !strncmp(pat, "**/", 3) && fnmatch(pat + 3, rel, fl) == 0;
}

static int search_pre(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    search_ctx_t *c = w->ctx;
    if (!w->path_ok)
        return 1;
    const char *rel = w->path + c->rootlen;
    while (*rel == '/')
        rel++;
    if (!glob_match(c->pat, name, rel, c->fnm))
        return 0;
    if (c->count >= c->cap) {
        c->truncated = true;
        return -1;
    }
    size_t before = c->j->len;
    jb_str(c->j, w->path, strlen(w->path));
    if (!fits(c->j, before)) {
        c->truncated = true;
        return -1;
    }
    c->count++;
    return 0;
}

void sbx_fs_search(int sock, fs_req_t *r)
{
    if (!r->text || !*r->text) {
        sbx_agent_send_error(sock, EINVAL, "search %s: a glob pattern is required", r->path);
        return;
    }
    int fd = open(r->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fs_send_errno(sock, r, r->path, errno);
    jbuf_t j = {0};
    const char *pat = r->text;
    while (*pat == '/')
        pat++;
    search_ctx_t c = {.pat = pat, .j = &j, .cap = r->length > 0 ? r->length : SEARCH_DEFAULT_CAP};
    c.fnm = r->flags & SBX_FS_ICASE ? FNM_CASEFOLD : 0;
    fs_walk_t *w = xcalloc(1, sizeof *w);
    w->pre = search_pre;
    w->ctx = &c;
    fs_walk_init(w, r->path);
    c.rootlen = w->plen;
    jb_open(&j, '{');
    jb_key(&j, "matches");
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

/* ---- matching ---------------------------------------------------------------------- */

typedef struct {
    bool regex, icase;
    regex_t re;
    const char *lit;
    size_t litlen;
} matcher_t;

static int matcher_init(matcher_t *m, int sock, fs_req_t *r)
{
    memset(m, 0, sizeof *m);
    m->regex = r->flags & SBX_FS_REGEX;
    m->icase = r->flags & SBX_FS_ICASE;
    m->lit = r->text;
    m->litlen = strlen(r->text);
    if (!m->regex)
        return 0;
    int e = regcomp(&m->re, r->text, REG_EXTENDED | (m->icase ? REG_ICASE : 0));
    if (e) {
        char why[256];
        regerror(e, &m->re, why, sizeof why);
        sbx_agent_send_error(sock, EINVAL, "%s %s: invalid regular expression: %s", r->op, r->path, why);
        m->regex = false;
        return -1;
    }
    return 0;
}

static void matcher_release(matcher_t *m)
{
    if (m->regex)
        regfree(&m->re);
}

static inline unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Finds the first match in line[from..n); pm[0] gets its offsets within line and, for a
 * regex, pm[1..9] the groups (-1 when unset). */
static bool matcher_find(matcher_t *m, const char *line, size_t n, size_t from, regmatch_t pm[10])
{
    if (m->regex) {
        /* REG_STARTEND: the line needs no NUL terminator and may not have one. */
        pm[0].rm_so = (regoff_t)from;
        pm[0].rm_eo = (regoff_t)n;
        return regexec(&m->re, line, 10, pm, REG_STARTEND | (from ? REG_NOTBOL : 0)) == 0;
    }
    if (m->litlen > n)
        return false;
    for (size_t i = from; i + m->litlen <= n; i++) {
        size_t k = 0;
        if (m->icase)
            while (k < m->litlen && fold((unsigned char)line[i + k]) == fold((unsigned char)m->lit[k]))
                k++;
        else if (!memcmp(line + i, m->lit, m->litlen))
            k = m->litlen;
        if (k == m->litlen) {
            pm[0].rm_so = (regoff_t)i;
            pm[0].rm_eo = (regoff_t)(i + m->litlen);
            for (int g = 1; g < 10; g++)
                pm[g].rm_so = pm[g].rm_eo = -1;
            return true;
        }
    }
    return false;
}

/* Loads a text file.  Returns 1 with *buf (heap, NUL-terminated) and *len, 0 when the
 * file is skipped (not regular, over 64 MiB, binary), -1 with errno. */
static int load_text(int dfd, const char *name, bool follow, char **buf, size_t *len, struct stat *st)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || st->st_size > TEXT_FILE_MAX) {
        close(fd);
        return 0;
    }
    size_t cap = (size_t)st->st_size, n = 0;
    char *b = xmalloc(cap + 1);
    while (n < cap) {
        ssize_t k = read(fd, b + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    b[n] = 0;
    if (memchr(b, 0, n < BINARY_PROBE ? n : BINARY_PROBE)) {
        free(b);
        return 0;
    }
    *buf = b;
    *len = n;
    return 1;
}

/* ---- grep -------------------------------------------------------------------------- */

typedef struct {
    matcher_t *m;
    jbuf_t *j;
    int64_t count, cap, files;
    bool truncated;
} grep_ctx_t;

/* Greps one file; returns -1 once the result is full. */
static int grep_file(grep_ctx_t *c, int dfd, const char *name, const char *path, bool follow)
{
    char *buf;
    size_t len, pos = 0;
    struct stat st;
    if (load_text(dfd, name, follow, &buf, &len, &st) <= 0)
        return 0;
    c->files++;
    int64_t lineno = 0;
    int rc = 0;
    while (pos < len) {
        const char *line = buf + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        regmatch_t pm[10];
        lineno++;
        pos += n + 1;
        if (!matcher_find(c->m, line, n, 0, pm))
            continue;
        if (c->count >= c->cap) {
            c->truncated = true;
            rc = -1;
            break;
        }
        size_t before = c->j->len;
        jb_open(c->j, '{');
        jb_kstr(c->j, "path", path);
        jb_kint(c->j, "line", lineno);
        jb_key(c->j, "text");
        jb_str(c->j, line, n < GREP_LINE_MAX ? n : GREP_LINE_MAX);
        jb_close(c->j, '}');
        if (!fits(c->j, before)) {
            c->truncated = true;
            rc = -1;
            break;
        }
        c->count++;
    }
    free(buf);
    return rc;
}

static int grep_pre(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    if (!w->path_ok)
        return 1;
    if (S_ISREG(st->st_mode))
        return grep_file(w->ctx, dfd, name, w->path, false) < 0 ? -1 : 0;
    return 0;
}

/* Runs pre over PATH: the file itself, or every entry below the directory. */
static int for_each_file(int sock, fs_req_t *r, fs_walk_fn pre, void *ctx, int (*one)(void *, const char *))
{
    struct stat st;
    if (stat(r->path, &st) < 0) {
        fs_send_errno(sock, r, r->path, errno);
        return -1;
    }
    if (S_ISREG(st.st_mode))
        return one(ctx, r->path);
    if (!S_ISDIR(st.st_mode)) {
        fs_send_errno(sock, r, r->path, EINVAL);
        return -1;
    }
    int fd = open(r->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        fs_send_errno(sock, r, r->path, errno);
        return -1;
    }
    fs_walk_t *w = xcalloc(1, sizeof *w);
    w->pre = pre;
    w->ctx = ctx;
    fs_walk_init(w, r->path);
    int rc = fs_walk(w, fd);
    free(w);
    close(fd);
    return rc < 0 ? 1 : 0;
}

static int grep_one(void *ctx, const char *path)
{
    grep_ctx_t *c = ctx;
    grep_file(c, AT_FDCWD, path, path, true);
    return 0;
}

void sbx_fs_grep(int sock, fs_req_t *r)
{
    matcher_t m;
    if (!r->text) {
        sbx_agent_send_error(sock, EINVAL, "grep %s: a pattern is required", r->path);
        return;
    }
    if (matcher_init(&m, sock, r) < 0)
        return;
    jbuf_t j = {0};
    grep_ctx_t c = {.m = &m, .j = &j, .cap = r->length > 0 ? r->length : GREP_DEFAULT_CAP};
    jb_open(&j, '{');
    jb_key(&j, "matches");
    jb_open(&j, '[');
    if (for_each_file(sock, r, grep_pre, &c, grep_one) >= 0) {
        jb_close(&j, ']');
        jb_kbool(&j, "truncated", c.truncated);
        jb_kint(&j, "files", c.files);
        jb_close(&j, '}');
        fs_send_result(sock, &j);
    }
    jb_release(&j);
    matcher_release(&m);
}

/* ---- sed --------------------------------------------------------------------------- */

typedef struct {
    matcher_t *m;
    const char *rep;
    jbuf_t *j;
    int64_t total;
    bool truncated;
    int err;
    char err_path[PATH_MAX];
} sed_ctx_t;

/* Appends the replacement of one match: literal text, or with a regex sed's rules: & and
 * \0 are the match, \1..\9 its groups, \n a newline, \t a tab, \x any other x. */
static void sed_expand(jbuf_t *out, const matcher_t *m, const char *rep, const char *line,
                       const regmatch_t pm[10])
{
    if (!m->regex) {
        jb_raw(out, rep, strlen(rep));
        return;
    }
    for (const char *p = rep; *p; p++) {
        int g = -1;
        if (*p == '&') {
            g = 0;
        } else if (*p == '\\' && p[1]) {
            p++;
            if (*p >= '0' && *p <= '9')
                g = *p - '0';
            else
                jb_raw(out, *p == 'n' ? "\n" : *p == 't' ? "\t" : p, 1);
        } else {
            jb_raw(out, p, 1);
        }
        if (g >= 0 && pm[g].rm_so >= 0)
            jb_raw(out, line + pm[g].rm_so, (size_t)(pm[g].rm_eo - pm[g].rm_so));
    }
}

/* Replaces every match in every line of buf into out; returns the number replaced or -1
 * (EFBIG) if the result grows past SED_OUT_MAX. */
static int64_t sed_buffer(sed_ctx_t *c, const char *buf, size_t len, jbuf_t *out)
{
    int64_t count = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *line = buf + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos, from = 0;
        regmatch_t pm[10];
        while (from <= n && matcher_find(c->m, line, n, from, pm)) {
            size_t so = (size_t)pm[0].rm_so, eo = (size_t)pm[0].rm_eo;
            jb_raw(out, line + from, so - from);
            sed_expand(out, c->m, c->rep, line, pm);
            count++;
            if (eo == so) {
                /* An empty match: keep one character and look again after it. */
                if (so < n)
                    jb_raw(out, line + so, 1);
                from = so + 1;
            } else {
                from = eo;
            }
            if (out->len > SED_OUT_MAX) {
                errno = EFBIG;
                return -1;
            }
        }
        if (from < n)
            jb_raw(out, line + from, n - from);
        if (nl)
            jb_raw(out, "\n", 1);
        pos += n + 1;
    }
    return count;
}

/* Writes new content over path atomically, keeping the file's mode and owner. */
static int replace_file(const char *path, const struct stat *st, const jbuf_t *out)
{
    char *tmp = xmalloc(PATH_MAX);
    int fd = fs_tmp_open(path, st->st_mode & 07777, tmp), rc = -1;
    if (fd >= 0) {
        /* Ownership first: fchown clears set-id bits that fchmod then restores. */
        if (fchown(fd, st->st_uid, st->st_gid) < 0)
            errno = 0; /* an owner without a mapping: keep the content change anyway */
        if (fchmod(fd, st->st_mode & 07777) == 0 &&
            sbx_write_all(fd, out->buf ? out->buf : "", out->len) == 0)
            rc = fs_tmp_commit(fd, tmp, path, false);
        else
            unlink(tmp);
        int err = errno;
        close(fd);
        errno = err;
    }
    free(tmp);
    return rc;
}

static int sed_file(sed_ctx_t *c, int dfd, const char *name, const char *path, bool follow)
{
    char *buf;
    size_t len;
    struct stat st;
    if (load_text(dfd, name, follow, &buf, &len, &st) <= 0)
        return 0;
    jbuf_t out = {0};
    int64_t n = sed_buffer(c, buf, len, &out);
    free(buf);
    if (n > 0 && replace_file(path, &st, &out) < 0)
        n = -1;
    jb_release(&out);
    if (n < 0) {
        c->err = errno;
        snprintf(c->err_path, sizeof c->err_path, "%s", path);
        return -1;
    }
    if (n == 0)
        return 0;
    c->total += n;
    /* A full result stops the listing, not the replacing. */
    if (c->truncated)
        return 0;
    size_t before = c->j->len;
    jb_open(c->j, '{');
    jb_kstr(c->j, "path", path);
    jb_kint(c->j, "replacements", n);
    jb_close(c->j, '}');
    if (!fits(c->j, before))
        c->truncated = true;
    return 0;
}

static int sed_pre(fs_walk_t *w, int dfd, const char *name, const struct stat *st)
{
    if (!w->path_ok)
        return 1;
    if (S_ISREG(st->st_mode))
        return sed_file(w->ctx, dfd, name, w->path, false);
    return 0;
}

static int sed_one(void *ctx, const char *path)
{
    return sed_file(ctx, AT_FDCWD, path, path, true) < 0 ? 1 : 0;
}

void sbx_fs_sed(int sock, fs_req_t *r)
{
    matcher_t m;
    if (!r->text || !*r->text) {
        sbx_agent_send_error(sock, EINVAL, "sed %s: a non-empty pattern is required", r->path);
        return;
    }
    if (matcher_init(&m, sock, r) < 0)
        return;
    jbuf_t j = {0};
    sed_ctx_t *c = xcalloc(1, sizeof *c);
    c->m = &m;
    c->rep = r->text2 ? r->text2 : "";
    c->j = &j;
    jb_open(&j, '{');
    jb_key(&j, "files");
    jb_open(&j, '[');
    int rc = for_each_file(sock, r, sed_pre, c, sed_one);
    if (rc > 0) {
        fs_send_errno(sock, r, c->err_path, c->err);
    } else if (rc == 0) {
        jb_close(&j, ']');
        jb_kint(&j, "replacements", c->total);
        jb_kbool(&j, "truncated", c->truncated);
        jb_close(&j, '}');
        fs_send_result(sock, &j);
    }
    free(c);
    jb_release(&j);
    matcher_release(&m);
}
