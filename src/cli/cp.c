/* `sandbox cp`.  File content moves over the /sandbox raw routes
 * (`GET`/`PUT /sandbox/sandboxes/:id/files/raw?path=`): uploads are read from the local
 * file as libcurl sends them (Content-Length when the size is known, chunked for stdin),
 * downloads are written as they arrive, so any size takes constant memory.  Trees use the
 * function dialect for the rest: `sandbox::fs::stat` to see what a path is,
 * `sandbox::fs::ls` to walk a remote directory, `sandbox::fs::mkdir` to create one. */
#include "cli/cp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/ls.h"
#include "cli/opts.h"
#include "common/util.h"

const char sbx_cp_usage[] =
    "Usage: sandbox cp [flags] SRC DST\n"
    "\n"
    "Copy files between the local machine and a sandbox. One side is local, the other is\n"
    "<sandbox-id>:<path> (a relative path is under the sandbox's workspace; `ID:` alone is\n"
    "the workspace). `-` as the local side reads stdin (upload) or writes stdout (download).\n"
    "\n"
    "  sandbox cp LOCAL ID:PATH        upload a file (or a tree with -r)\n"
    "  sandbox cp ID:PATH LOCAL        download a file (or a tree with -r)\n"
    "  sandbox cp - ID:PATH            upload stdin\n"
    "  sandbox cp ID:PATH -            download to stdout\n"
    "\n"
    "When DST is an existing directory (or ends with `/`), the copy goes inside it under\n"
    "SRC's name, as with cp(1). Permission bits are kept both ways; symbolic links are\n"
    "recreated on download and skipped (with a warning) on upload. Content is streamed:\n"
    "memory use does not depend on the size of the files. A progress line is shown while\n"
    "stderr is a terminal.\n"
    "\n"
    "Flags:\n"
    "  -r, --recursive        copy directories and everything below them\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: 0 on success, 1 when the daemon reports an error or a local file cannot\n"
    "be read or written, 2 for usage errors, 125 when the daemon cannot be reached.\n"
    "\n"
    "Examples:\n"
    "  sandbox cp -r ./src \"$SB\":/workspace/src\n"
    "  sandbox cp \"$SB\":/workspace/out.tar.gz .\n"
    "  tar cz . | sandbox cp - \"$SB\":/tmp/in.tgz\n";

typedef struct {
    sbx_cli_t *cli;
    bool recursive;
    const char *id;
} cp_t;

/* "ID:PATH" -> id and path (path "" means the workspace).  An argument is remote when a
 * colon comes before any slash, so `./a:b` stays a local name. */
static bool parse_remote(const char *arg, char **id, const char **path)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg || memchr(arg, '/', (size_t)(colon - arg)))
        return false;
    *id = xstrndup(arg, (size_t)(colon - arg));
    *path = colon + 1;
    return true;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    if (n == 0)
        return xstrdup(name);
    return xasprintf("%s%s%s", dir, dir[n - 1] == '/' ? "" : "/", name);
}

/* The last component of a path, ignoring trailing slashes ("a/b/" -> "b"). */
static char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    const char *start = path;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/' && i + 1 < n)
            start = path + i + 1;
    return xstrndup(start, (size_t)(path + n - start));
}

static bool ends_with_slash(const char *p)
{
    size_t n = strlen(p);
    return n > 0 && p[n - 1] == '/';
}

/* The progress line: drawn on stderr at most five times a second, only on a terminal. */
typedef struct {
    bool on;
    const char *label;
    long long done, total;
    int64_t last_ms;
} progress_t;

static void human_size(long long n, char *buf, size_t len)
{
    if (n < 1024)
        snprintf(buf, len, "%lld B", n);
    else if (n < 1024LL * 1024)
        snprintf(buf, len, "%.1f KiB", n / 1024.0);
    else if (n < 1024LL * 1024 * 1024)
        snprintf(buf, len, "%.1f MiB", n / 1048576.0);
    else
        snprintf(buf, len, "%.2f GiB", n / 1073741824.0);
}

static void progress_add(progress_t *p, size_t n)
{
    p->done += (long long)n;
    if (!p->on)
        return;
    int64_t now = sbx_mono_ms();
    if (now - p->last_ms < 200)
        return;
    p->last_ms = now;
    char done[32], total[32];
    human_size(p->done, done, sizeof done);
    if (p->total > 0) {
        human_size(p->total, total, sizeof total);
        fprintf(stderr, "\r\033[K%s  %s / %s (%d%%)", p->label, done, total, (int)(p->done * 100 / p->total));
    } else {
        fprintf(stderr, "\r\033[K%s  %s", p->label, done);
    }
}

static void progress_end(progress_t *p)
{
    if (p->on && p->last_ms)
        fputs("\r\033[K", stderr);
}

/* Prints a failed answer's message and code; returns SBX_EXIT_FAIL. */
static int api_error(sbx_http_resp_t *resp)
{
    char msg[1024];
    const char *code;
    sbx_http_error_info(resp->body, resp->status, msg, sizeof msg, &code);
    if (*code)
        sbx_cli_error("%s (%s)", msg, code);
    else
        sbx_cli_error("%s", msg);
    sbx_http_resp_release(resp);
    return SBX_EXIT_FAIL;
}

/* stat of a remote path.  Returns 0 with *out, 1 when the path does not exist (quietly),
 * or an exit code after printing the error. */
static int remote_stat(cp_t *c, const char *path, json_t **out)
{
    json_t *body = json_pack("{s:s, s:s}", "sandbox_id", c->id, "path", *path ? path : ".");
    sbx_http_resp_t resp;
    sbx_err_t err = SBX_ERR_INIT;
    int rc = sbx_http_request(&c->cli->http, "POST", "/functions/sandbox::fs::stat", body, &resp, &err);
    json_decref(body);
    *out = NULL;
    if (rc < 0) {
        sbx_cli_error("%s", err.msg);
        return SBX_EXIT_DAEMON;
    }
    if (resp.status == 404 && !strcmp(json_string_value(json_object_get(resp.body, "code")) ?: "", "S201")) {
        sbx_http_resp_release(&resp);
        return 1;
    }
    if (resp.status < 200 || resp.status > 299)
        return api_error(&resp);
    *out = steal_pointer(&resp.body);
    return 0;
}

static char *raw_route(cp_t *c, const char *path, int mode)
{
    _cleanup_free_ char *eid = sbx_http_escape(c->id);
    _cleanup_free_ char *epath = sbx_http_escape(*path ? path : ".");
    if (mode >= 0)
        return xasprintf("/sandbox/sandboxes/%s/files/raw?path=%s&mode=%04o", eid, epath, (unsigned)mode);
    return xasprintf("/sandbox/sandboxes/%s/files/raw?path=%s", eid, epath);
}

/* Uploads. */

typedef struct {
    int fd;
    int err; /* errno of a failed read */
    progress_t progress;
} source_t;

static long read_source(void *ud, char *buf, size_t max)
{
    source_t *s = ud;
    for (;;) {
        ssize_t n = read(s->fd, buf, max);
        if (n >= 0) {
            progress_add(&s->progress, (size_t)n);
            return (long)n;
        }
        if (errno != EINTR) {
            s->err = errno;
            return -1;
        }
    }
}

/* Sends the content of fd to `path`; size -1 streams it chunked (stdin, pipes). */
static int upload_fd(cp_t *c, int fd, long long size, int mode, const char *path, const char *label)
{
    source_t s = {.fd = fd, .progress = {.on = c->cli->tty, .label = label, .total = size}};
    sbx_http_source_t src = {.read = read_source, .ud = &s, .size = size};
    _cleanup_free_ char *route = raw_route(c, path, mode);
    sbx_http_resp_t resp;
    sbx_err_t err = SBX_ERR_INIT;
    int rc = sbx_http_upload(&c->cli->http, "PUT", route, &src, NULL, &resp, &err);
    progress_end(&s.progress);
    if (s.err) {
        sbx_cli_error("cannot read %s: %s", label, strerror(s.err));
        return SBX_EXIT_FAIL;
    }
    if (rc < 0) {
        sbx_cli_error("%s", err.msg);
        return SBX_EXIT_DAEMON;
    }
    if (resp.status < 200 || resp.status > 299)
        return api_error(&resp);
    sbx_http_resp_release(&resp);
    return SBX_EXIT_OK;
}

static int upload_file(cp_t *c, const char *local, const char *remote)
{
    _cleanup_close_ int fd = open(local, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        sbx_cli_error("cannot open %s: %s", local, strerror(errno));
        return SBX_EXIT_FAIL;
    }
    /* Only a regular file has a size known in advance. */
    long long size = S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
    return upload_fd(c, fd, size, (int)(st.st_mode & 07777), remote, local);
}

static int remote_mkdir(cp_t *c, const char *path, int mode)
{
    json_t *body =
        json_pack("{s:s, s:s, s:b, s:i}", "sandbox_id", c->id, "path", path, "parents", 1, "mode", mode);
    json_t *out = NULL;
    int rc = sbx_fs_call(c->cli, "mkdir", body, &out);
    json_decref(body);
    json_decref(out);
    return rc;
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Mirrors the local directory `local` as `remote`, which is created. */
static int upload_tree(cp_t *c, const char *local, const char *remote, int mode)
{
    int rc = remote_mkdir(c, remote, mode);
    if (rc != 0)
        return rc;
    DIR *d = opendir(local);
    if (!d) {
        sbx_cli_error("cannot open directory %s: %s", local, strerror(errno));
        return SBX_EXIT_FAIL;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = xrealloc(names, cap * sizeof *names);
        }
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (n) /* an empty directory leaves names NULL, which qsort must not get */
        qsort(names, n, sizeof *names, by_str);
    for (size_t i = 0; i < n && rc == 0; i++) {
        _cleanup_free_ char *lp = join(local, names[i]);
        _cleanup_free_ char *rp = join(remote, names[i]);
        struct stat st;
        if (lstat(lp, &st) < 0) {
            sbx_cli_error("cannot stat %s: %s", lp, strerror(errno));
            rc = SBX_EXIT_FAIL;
        } else if (S_ISDIR(st.st_mode)) {
            rc = upload_tree(c, lp, rp, (int)(st.st_mode & 07777));
        } else if (S_ISREG(st.st_mode)) {
            rc = upload_file(c, lp, rp);
        } else {
            fprintf(stderr, "sandbox: skipping %s: not a regular file or directory\n", lp);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int cp_up(cp_t *c, const char *local, const char *dst)
{
    if (!strcmp(local, "-"))
        return upload_fd(c, STDIN_FILENO, -1, -1, dst, "stdin");
    struct stat st;
    if (stat(local, &st) < 0) {
        sbx_cli_error("cannot stat %s: %s", local, strerror(errno));
        return SBX_EXIT_FAIL;
    }
    if (S_ISDIR(st.st_mode) && !c->recursive) {
        sbx_cli_error("%s is a directory (use -r to copy it)", local);
        return SBX_EXIT_FAIL;
    }
    /* Into an existing directory, under the source's name, as cp(1) does. */
    json_t *dst_st = NULL;
    int rc = remote_stat(c, dst, &dst_st);
    if (rc > 1)
        return rc;
    _cleanup_free_ char *target = NULL;
    _cleanup_free_ char *name = base_name(local);
    if ((rc == 0 && sbx_fs_entry_is_dir(dst_st)) || ends_with_slash(dst) || !*dst)
        target = join(*dst ? dst : ".", name);
    else
        target = xstrdup(dst);
    json_decref(dst_st);
    if (S_ISDIR(st.st_mode))
        return upload_tree(c, local, target, (int)(st.st_mode & 07777));
    return upload_file(c, local, target);
}

/* Downloads. */

typedef struct {
    int fd;
    int err; /* errno of a failed write */
    progress_t progress;
} sink_t;

static bool write_sink(void *ud, const char *data, size_t len)
{
    sink_t *s = ud;
    if (sbx_write_all(s->fd, data, len) < 0) {
        s->err = errno;
        return false;
    }
    progress_add(&s->progress, len);
    return true;
}

static int download_fd(cp_t *c, const char *remote, int fd, long long size, const char *label)
{
    sink_t s = {.fd = fd,
                .progress = {.on = c->cli->tty && fd != STDOUT_FILENO, .label = label, .total = size}};
    sbx_http_sink_t sink = {.on_data = write_sink, .ud = &s};
    _cleanup_free_ char *route = raw_route(c, remote, -1);
    sbx_http_resp_t resp;
    sbx_err_t err = SBX_ERR_INIT;
    int rc =
        sbx_http_stream(&c->cli->http, "GET", route, NULL, "application/octet-stream", &sink, &resp, &err);
    progress_end(&s.progress);
    if (s.err) {
        sbx_cli_error("cannot write %s: %s", label, strerror(s.err));
        return s.err == EPIPE ? 141 : SBX_EXIT_FAIL;
    }
    if (rc < 0) {
        sbx_cli_error("%s", err.msg);
        return SBX_EXIT_DAEMON;
    }
    if (resp.status < 200 || resp.status > 299)
        return api_error(&resp);
    sbx_http_resp_release(&resp);
    return SBX_EXIT_OK;
}

/* Downloads into a temporary file next to `local`, renamed over it only once complete,
 * so a failed copy never leaves a truncated file behind. */
static int download_file(cp_t *c, const char *remote, const char *local, int mode, long long size)
{
    _cleanup_free_ char *tmp = xasprintf("%s.sandbox-cp-XXXXXX", local);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        sbx_cli_error("cannot create %s: %s", local, strerror(errno));
        return SBX_EXIT_FAIL;
    }
    int rc = download_fd(c, remote, fd, size, local);
    if (rc == 0 && fchmod(fd, (mode_t)(mode >= 0 ? mode : 0644)) < 0) {
        sbx_cli_error("cannot set the mode of %s: %s", local, strerror(errno));
        rc = SBX_EXIT_FAIL;
    }
    if (close(fd) < 0 && rc == 0) {
        sbx_cli_error("cannot write %s: %s", local, strerror(errno));
        rc = SBX_EXIT_FAIL;
    }
    if (rc == 0 && rename(tmp, local) < 0) {
        sbx_cli_error("cannot create %s: %s", local, strerror(errno));
        rc = SBX_EXIT_FAIL;
    }
    if (rc != 0)
        unlink(tmp);
    return rc;
}

static int download_entry(cp_t *c, json_t *st, const char *remote, const char *local);

static int download_tree(cp_t *c, const char *remote, const char *local, int mode)
{
    if (mkdir(local, 0700) < 0 && errno != EEXIST) {
        sbx_cli_error("cannot create directory %s: %s", local, strerror(errno));
        return SBX_EXIT_FAIL;
    }
    json_t *body = json_pack("{s:s, s:s}", "sandbox_id", c->id, "path", remote);
    json_t *listing = NULL;
    int rc = sbx_fs_call(c->cli, "ls", body, &listing);
    json_decref(body);
    if (rc != 0)
        return rc;
    json_t *entries = sbx_fs_entries(listing);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *name = sbx_fs_entry_name(e);
        if (!*name || !strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '/'))
            continue;
        _cleanup_free_ char *rp = join(remote, name);
        _cleanup_free_ char *lp = join(local, name);
        if ((rc = download_entry(c, e, rp, lp)) != 0)
            break;
    }
    json_decref(listing);
    /* The mode last, so a read-only directory can still be filled. */
    if (rc == 0 && chmod(local, (mode_t)(mode >= 0 ? mode : 0755)) < 0) {
        sbx_cli_error("cannot set the mode of %s: %s", local, strerror(errno));
        rc = SBX_EXIT_FAIL;
    }
    return rc;
}

static int download_entry(cp_t *c, json_t *st, const char *remote, const char *local)
{
    if (sbx_fs_entry_is_dir(st))
        return download_tree(c, remote, local, sbx_fs_entry_mode(st));
    if (sbx_fs_entry_is_symlink(st)) {
        const char *target = json_string_value(json_object_get(st, "target"));
        if (!target || symlink(target, local) < 0)
            fprintf(stderr, "sandbox: skipping symbolic link %s: %s\n", remote,
                    target ? strerror(errno) : "its target is unknown");
        return SBX_EXIT_OK;
    }
    return download_file(c, remote, local, sbx_fs_entry_mode(st), sbx_fs_entry_size(st));
}

static int cp_down(cp_t *c, const char *src, const char *local)
{
    json_t *st = NULL;
    int rc = remote_stat(c, src, &st);
    if (rc == 1) {
        sbx_cli_error("%s:%s: no such file or directory", c->id, src);
        return SBX_EXIT_FAIL;
    }
    if (rc != 0)
        return rc;
    if (sbx_fs_entry_is_dir(st) && (!c->recursive || !strcmp(local, "-"))) {
        json_decref(st);
        sbx_cli_error("%s:%s is a directory%s", c->id, src, strcmp(local, "-") ? " (use -r to copy it)" : "");
        return SBX_EXIT_FAIL;
    }
    if (!strcmp(local, "-")) {
        json_decref(st);
        return download_fd(c, src, STDOUT_FILENO, -1, "stdout");
    }
    struct stat lst;
    _cleanup_free_ char *target = NULL;
    if ((stat(local, &lst) == 0 && S_ISDIR(lst.st_mode)) || ends_with_slash(local)) {
        _cleanup_free_ char *name = base_name(*src ? src : ".");
        if (!strcmp(name, ".") || !strcmp(name, "/")) {
            free(name);
            name = xstrdup(sbx_fs_entry_name(st));
        }
        target = join(local, name);
    } else {
        target = xstrdup(local);
    }
    /* Symlinks at the top are followed, as cp(1) follows its arguments. */
    rc = sbx_fs_entry_is_dir(st)
             ? download_tree(c, *src ? src : ".", target, sbx_fs_entry_mode(st))
             : download_file(c, src, target, sbx_fs_entry_mode(st), sbx_fs_entry_size(st));
    json_decref(st);
    return rc;
}

int sbx_cmd_cp(sbx_cli_t *cli, int argc, char **argv)
{
    const char *args[2] = {NULL, NULL};
    int nargs = 0;
    cp_t c = {.cli = cli};
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    for (;;) {
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_END)
            break;
        if (k == SBX_OPTS_ERROR)
            return sbx_cli_usage_error("cp", "%s", p.errmsg);
        if (k == SBX_OPTS_DASHDASH || k == SBX_OPTS_ARG) {
            const char *v = k == SBX_OPTS_ARG ? p.value : (p.idx < argc ? argv[p.idx++] : NULL);
            if (!v)
                continue;
            if (nargs == 2)
                return sbx_cli_usage_error("cp", "unexpected argument `%s`", v);
            args[nargs++] = v;
            continue;
        }
        if (p.id == OPT_HELP) {
            fputs(sbx_cp_usage, stdout);
            return SBX_EXIT_OK;
        }
        if (p.id == OPT_RECURSIVE) {
            c.recursive = true;
            continue;
        }
        int r = sbx_cli_common_flag(cli, "cp", p.id, p.flag, p.value);
        if (r == 1)
            return sbx_cli_usage_error("cp", "unknown flag %s", p.flag);
        if (r != 0)
            return r;
    }
    if (nargs < 2)
        return sbx_cli_usage_error("cp", "expected SRC and DST");
    _cleanup_free_ char *src_id = NULL, *dst_id = NULL;
    const char *src_path = NULL, *dst_path = NULL;
    bool src_remote = parse_remote(args[0], &src_id, &src_path);
    bool dst_remote = parse_remote(args[1], &dst_id, &dst_path);
    if (src_remote == dst_remote)
        return sbx_cli_usage_error("cp", "exactly one of SRC and DST must be <sandbox-id>:<path>");
    if (src_remote) {
        c.id = src_id;
        return cp_down(&c, src_path, args[1]);
    }
    c.id = dst_id;
    return cp_up(&c, args[0], dst_path);
}
