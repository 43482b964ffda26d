/* `sandbox image`: the daemon's OCI image cache.  A pull on a terminal streams the
 * daemon's per-layer progress and draws one bar per layer; in a pipe it is one blocking
 * request and prints only the manifest digest.  An import sends a tarball as it is, or
 * packs a directory into a tar on the fly (libarchive, on a thread writing into a pipe
 * that the upload reads), so nothing is written to disk on the client side. */
#include "cli/image.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/http.h"
#include "common/util.h"

const char sbx_image_usage[] =
    "Usage: sandbox image <pull|import|ls|inspect|rm|gc> [REF|PATH] [flags]\n"
    "\n"
    "Manage the daemon's cache of OCI images.\n"
    "\n"
    "  pull REF       pull REF (e.g. 127.0.0.1:5000/app:1, python:3.12-slim) into the cache\n"
    "  import PATH    import an OCI image layout directory or a `docker save` tarball\n"
    "                 (--name REF: the name to give it; default: the name the archive holds)\n"
    "  ls             list pulled images\n"
    "  inspect REF    print an image's details as JSON (REF, id or id prefix)\n"
    "  rm REF         remove an image (--force: even while a sandbox uses it)\n"
    "  gc             remove cached layers no image references\n"
    "\n"
    "Flags:\n"
    "  --force                with rm: remove an image in use\n"
    "  --name REF             with import: the reference to import the image as\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n";

static int call(sbx_cli_t *cli, const char *method, const char *path, json_t *body, json_t **out)
{
    int rc = sbx_cli_call(cli, method, path, body, SBX_EXIT_FAIL, out);
    json_decref(body);
    return rc < 0 ? SBX_EXIT_FAIL : rc;
}

static void human(uint64_t n, char *buf, size_t len)
{
    if (n >= (1u << 20))
        snprintf(buf, len, "%.1f MB", (double)n / (1 << 20));
    else
        snprintf(buf, len, "%.1f kB", (double)n / 1024);
}

static int print_error(sbx_http_resp_t *resp)
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

/* The image is ready: a summary on a terminal, the digest on stdout. */
static void report_ready(json_t *out, bool tty)
{
    char sz[32];
    human((uint64_t)json_integer_value(json_object_get(out, "size")), sz, sizeof sz);
    if (tty)
        fprintf(stderr, "%s: %lld layers, %s\n", json_string_value(json_object_get(out, "image")),
                (long long)json_integer_value(json_object_get(out, "layers")), sz);
    printf("%s\n", json_string_value(json_object_get(out, "digest")));
}

/* ---- pull with one progress bar per layer ---- */

#define BAR_WIDTH 30

typedef struct {
    char digest[80];
    uint64_t done, total;
} bar_t;

typedef struct {
    bar_t *bars;
    size_t n, drawn;
    char *line; /* the incomplete line received so far */
    size_t len;
    json_t *final; /* the last line: {"status":"ready",...} or {"error":...} */
    int64_t last_draw;
} pull_view_t;

/* Redraws every bar in place: cursor up over the previous drawing, then one cleared line
 * per layer (plain CUU/EL sequences, which every terminal and tmux understand). */
static void draw(pull_view_t *v, bool force)
{
    int64_t now = sbx_mono_ms();
    if (!force && now - v->last_draw < 100)
        return;
    v->last_draw = now;
    if (v->drawn)
        fprintf(stderr, "\033[%zuA", v->drawn);
    for (size_t i = 0; i < v->n; i++) {
        const bar_t *b = &v->bars[i];
        char bar[BAR_WIDTH + 1], d[32], t[32];
        size_t fill = b->total ? (size_t)((double)b->done / (double)b->total * BAR_WIDTH) : 0;
        for (size_t k = 0; k < BAR_WIDTH; k++)
            bar[k] = k < fill ? '#' : '.';
        bar[BAR_WIDTH] = '\0';
        human(b->done, d, sizeof d);
        human(b->total, t, sizeof t);
        const char *hex = strncmp(b->digest, "sha256:", 7) ? b->digest : b->digest + 7;
        fprintf(stderr, "\r\033[K%.12s [%s] %s / %s%s\n", hex[0] ? hex : "waiting", bar, d, t,
                b->total && b->done >= b->total ? "  done" : "");
    }
    v->drawn = v->n;
    fflush(stderr);
}

static void on_line(pull_view_t *v, const char *line, size_t len)
{
    json_t *j = json_loadb(line, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    const char *digest = json_string_value(json_object_get(j, "layer"));
    if (!digest) {
        json_decref(v->final);
        v->final = j;
        return;
    }
    size_t idx = (size_t)json_integer_value(json_object_get(j, "index"));
    size_t count = (size_t)json_integer_value(json_object_get(j, "count"));
    if (count > 4096 || idx >= count) {
        json_decref(j);
        return;
    }
    if (count > v->n) {
        v->bars = xrealloc(v->bars, count * sizeof *v->bars);
        memset(v->bars + v->n, 0, (count - v->n) * sizeof *v->bars);
        v->n = count;
    }
    bar_t *b = &v->bars[idx];
    snprintf(b->digest, sizeof b->digest, "%s", digest);
    b->done = (uint64_t)json_integer_value(json_object_get(j, "done"));
    b->total = (uint64_t)json_integer_value(json_object_get(j, "total"));
    json_decref(j);
    draw(v, false);
}

static bool on_pull_data(void *ud, const char *data, size_t len)
{
    pull_view_t *v = ud;
    v->line = xrealloc(v->line, v->len + len + 1);
    memcpy(v->line + v->len, data, len);
    v->len += len;
    char *nl;
    while ((nl = memchr(v->line, '\n', v->len))) {
        size_t n = (size_t)(nl - v->line);
        on_line(v, v->line, n);
        memmove(v->line, nl + 1, v->len - n - 1);
        v->len -= n + 1;
    }
    return true;
}

static int pull_with_progress(sbx_cli_t *cli, const char *ref)
{
    pull_view_t v = {0};
    sbx_http_sink_t sink = {NULL, on_pull_data, &v};
    sbx_http_resp_t resp;
    sbx_err_t err = SBX_ERR_INIT;
    json_t *body = json_pack("{s:s}", "image", ref);
    fprintf(stderr, "pulling %s\n", ref);
    int rc = sbx_http_stream(&cli->http, "POST", "/sandbox/images/pull?progress=true", body,
                             "application/x-ndjson", &sink, &resp, &err);
    json_decref(body);
    if (v.len)
        on_line(&v, v.line, v.len); /* a last line without its newline */
    if (v.n)
        draw(&v, true);
    free(v.line);
    free(v.bars);
    int code = SBX_EXIT_OK;
    if (rc < 0) {
        if (rc != SBX_HTTP_ECANCEL)
            sbx_cli_error("%s", err.msg);
        code = SBX_EXIT_DAEMON;
    } else if (resp.status < 200 || resp.status > 299) {
        code = print_error(&resp);
    } else if (!v.final || json_object_get(v.final, "error")) {
        const char *msg = json_string_value(json_object_get(v.final, "error"));
        const char *c = json_string_value(json_object_get(v.final, "code"));
        sbx_cli_error("%s%s%s%s", msg ? msg : "the pull ended without a result", c ? " (" : "", c ? c : "",
                      c ? ")" : "");
        code = SBX_EXIT_FAIL;
    } else {
        report_ready(v.final, true);
    }
    if (rc >= 0)
        sbx_http_resp_release(&resp);
    json_decref(v.final);
    return code;
}

static int cmd_pull(sbx_cli_t *cli, const char *ref)
{
    if (isatty(STDERR_FILENO))
        return pull_with_progress(cli, ref);
    json_t *out = NULL;
    int rc = call(cli, "POST", "/sandbox/images/pull", json_pack("{s:s}", "image", ref), &out);
    if (rc == 0)
        report_ready(out, false);
    json_decref(out);
    return rc;
}

/* ---- import ---- */

typedef struct {
    char dir[4096];
    int wfd;    /* the pipe the tar goes into */
    int failed; /* set (atomically) before wfd is closed when packing failed */
    char why[512];
} packer_t;

static la_ssize_t pack_write(struct archive *a, void *cls, const void *buf, size_t n)
{
    packer_t *p = cls;
    if (sbx_write_all(p->wfd, buf, n) < 0) {
        archive_set_error(a, errno, "write: %s", strerror(errno));
        return -1;
    }
    return (la_ssize_t)n;
}

static int pack_file(struct archive *w, const char *src, char *why, size_t whylen)
{
    _cleanup_close_ int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open %s: %s", src, strerror(errno));
        return -1;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "cannot read %s: %s", src, strerror(errno));
            return -1;
        }
        if (n == 0)
            return 0;
        if (archive_write_data(w, buf, (size_t)n) != n) {
            snprintf(why, whylen, "%s", archive_error_string(w));
            return -1;
        }
    }
}

/* Walks the directory with libarchive's disk reader (symlinks stored as links) and writes
 * every entry under its path relative to the directory. */
static int pack_dir(packer_t *p, struct archive *w)
{
    struct archive *disk = archive_read_disk_new();
    archive_read_disk_set_symlink_physical(disk);
    archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
                                             ARCHIVE_READDISK_NO_FFLAGS);
    int rc = 0;
    if (archive_read_disk_open(disk, p->dir) != ARCHIVE_OK) {
        snprintf(p->why, sizeof p->why, "%s", archive_error_string(disk));
        rc = -1;
    }
    size_t dl = strlen(p->dir);
    while (rc == 0) {
        struct archive_entry *e = archive_entry_new();
        int r = archive_read_next_header2(disk, e);
        if (r == ARCHIVE_EOF) {
            archive_entry_free(e);
            break;
        }
        if (r < ARCHIVE_WARN) {
            snprintf(p->why, sizeof p->why, "%s", archive_error_string(disk));
            archive_entry_free(e);
            rc = -1;
            break;
        }
        archive_read_disk_descend(disk);
        const char *full = archive_entry_pathname(e);
        const char *rel = strlen(full) > dl ? full + dl : "";
        while (*rel == '/')
            rel++;
        if (*rel) {
            _cleanup_free_ char *src = xstrdup(archive_entry_sourcepath(e));
            archive_entry_set_pathname(e, rel);
            if (archive_write_header(w, e) < ARCHIVE_WARN) {
                snprintf(p->why, sizeof p->why, "%s", archive_error_string(w));
                rc = -1;
            } else if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
                rc = pack_file(w, src, p->why, sizeof p->why);
            }
        }
        archive_entry_free(e);
    }
    archive_read_free(disk);
    return rc;
}

static void *pack_thread(void *arg)
{
    packer_t *p = arg;
    struct archive *w = archive_write_new();
    archive_write_set_format_pax_restricted(w);
    archive_write_set_bytes_in_last_block(w, 1);
    int rc = archive_write_open(w, p, NULL, pack_write, NULL) == ARCHIVE_OK ? pack_dir(p, w) : -1;
    if (rc == 0 && archive_write_close(w) != ARCHIVE_OK) {
        snprintf(p->why, sizeof p->why, "%s", archive_error_string(w));
        rc = -1;
    }
    archive_write_free(w);
    if (rc < 0)
        __atomic_store_n(&p->failed, 1, __ATOMIC_SEQ_CST);
    close(p->wfd);
    return NULL;
}

typedef struct {
    int fd;
    int err;
    packer_t *packer; /* NULL when sending a file as it is */
} import_src_t;

static long import_read(void *ud, char *buf, size_t max)
{
    import_src_t *s = ud;
    for (;;) {
        ssize_t n = read(s->fd, buf, max);
        if (n > 0)
            return (long)n;
        if (n == 0)
            return s->packer && __atomic_load_n(&s->packer->failed, __ATOMIC_SEQ_CST) ? -1 : 0;
        if (errno != EINTR) {
            s->err = errno;
            return -1;
        }
    }
}

static int cmd_import(sbx_cli_t *cli, const char *path, const char *name)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        sbx_cli_error("cannot open %s: %s", path, strerror(errno));
        return SBX_EXIT_FAIL;
    }
    import_src_t s = {.fd = -1};
    packer_t packer = {.wfd = -1};
    pthread_t t;
    bool started = false;
    long long size = -1;
    if (S_ISDIR(st.st_mode)) {
        int fds[2];
        snprintf(packer.dir, sizeof packer.dir, "%s", path);
        for (size_t n = strlen(packer.dir); n > 1 && packer.dir[n - 1] == '/'; n--)
            packer.dir[n - 1] = '\0';
        if (pipe2(fds, O_CLOEXEC) < 0) {
            sbx_cli_error("pipe: %s", strerror(errno));
            return SBX_EXIT_FAIL;
        }
        s.fd = fds[0];
        packer.wfd = fds[1];
        s.packer = &packer;
        int e = sbx_cli_thread_start(&t, pack_thread, &packer);
        if (e) {
            close(fds[0]);
            close(fds[1]);
            sbx_cli_error("cannot start a thread: %s", strerror(e));
            return SBX_EXIT_FAIL;
        }
        started = true;
    } else {
        s.fd = open(path, O_RDONLY | O_CLOEXEC);
        if (s.fd < 0) {
            sbx_cli_error("cannot open %s: %s", path, strerror(errno));
            return SBX_EXIT_FAIL;
        }
        if (S_ISREG(st.st_mode))
            size = (long long)st.st_size;
    }
    _cleanup_free_ char *esc = name ? sbx_http_escape(name) : NULL;
    _cleanup_free_ char *route = xasprintf("/sandbox/images/import%s%s", esc ? "?name=" : "", esc ? esc : "");
    sbx_http_source_t src = {.read = import_read, .ud = &s, .size = size};
    sbx_http_resp_t resp;
    sbx_err_t err = SBX_ERR_INIT;
    bool tty = isatty(STDERR_FILENO);
    if (tty)
        fprintf(stderr, "importing %s ...\n", path);
    int rc = sbx_http_upload(&cli->http, "POST", route, &src, NULL, &resp, &err);
    close(s.fd); /* a packer still writing gets EPIPE and stops */
    if (started)
        pthread_join(t, NULL);
    if (packer.failed) {
        sbx_cli_error("cannot pack %s: %s", path, packer.why);
        if (rc >= 0)
            sbx_http_resp_release(&resp);
        return SBX_EXIT_FAIL;
    }
    if (s.err) {
        sbx_cli_error("cannot read %s: %s", path, strerror(s.err));
        if (rc >= 0)
            sbx_http_resp_release(&resp);
        return SBX_EXIT_FAIL;
    }
    if (rc < 0) {
        sbx_cli_error("%s", err.msg);
        return SBX_EXIT_DAEMON;
    }
    if (resp.status < 200 || resp.status > 299)
        return print_error(&resp);
    report_ready(resp.body, tty);
    sbx_http_resp_release(&resp);
    return SBX_EXIT_OK;
}

static int cmd_ls(sbx_cli_t *cli)
{
    json_t *out = NULL;
    int rc = call(cli, "GET", "/sandbox/images", NULL, &out);
    if (rc)
        return rc;
    bool tty = isatty(STDOUT_FILENO);
    if (tty)
        printf("%-60s %-19s %10s\n", "IMAGE", "ID", "SIZE");
    size_t i;
    json_t *im;
    json_array_foreach(json_object_get(out, "images"), i, im)
    {
        const char *id = json_string_value(json_object_get(im, "id"));
        char sz[32];
        human((uint64_t)json_integer_value(json_object_get(im, "size")), sz, sizeof sz);
        if (tty)
            printf("%-60s %-19.19s %10s\n", json_string_value(json_object_get(im, "image")), id ? id : "",
                   sz);
        else
            printf("%s\t%s\t%lld\n", json_string_value(json_object_get(im, "image")), id ? id : "",
                   (long long)json_integer_value(json_object_get(im, "size")));
    }
    json_decref(out);
    return 0;
}

int sbx_cmd_image(sbx_cli_t *cli, int argc, char **argv)
{
    const char *sub = NULL, *ref = NULL, *name = NULL;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(sbx_image_usage, stdout);
            return SBX_EXIT_OK;
        } else if (!strcmp(a, "--force") || !strcmp(a, "-f")) {
            force = true;
        } else if (!strcmp(a, "--name") && i + 1 < argc) {
            name = argv[++i];
        } else if (!strncmp(a, "--name=", 7)) {
            name = a + 7;
        } else if (!strcmp(a, "--url") && i + 1 < argc) {
            sbx_cli_set_url(cli, argv[++i]);
        } else if (a[0] == '-') {
            return sbx_cli_usage_error("image", "unknown flag %s", a);
        } else if (!sub) {
            sub = a;
        } else if (!ref) {
            ref = a;
        } else {
            return sbx_cli_usage_error("image", "unexpected argument `%s`", a);
        }
    }
    if (!sub)
        return sbx_cli_usage_error("image", "missing subcommand (pull, import, ls, inspect, rm, gc)");
    bool needs_ref = !strcmp(sub, "pull") || !strcmp(sub, "inspect") || !strcmp(sub, "rm");
    if (needs_ref && !ref)
        return sbx_cli_usage_error("image", "missing image reference");
    if (name && strcmp(sub, "import"))
        return sbx_cli_usage_error("image", "--name is only for import");
    if (!strcmp(sub, "pull"))
        return cmd_pull(cli, ref);
    if (!strcmp(sub, "import")) {
        if (!ref)
            return sbx_cli_usage_error("image", "missing the path of an OCI layout directory or a tarball");
        return cmd_import(cli, ref, name);
    }
    if (!strcmp(sub, "ls"))
        return cmd_ls(cli);
    _cleanup_free_ char *esc = ref ? sbx_http_escape(ref) : NULL;
    json_t *out = NULL;
    int rc;
    if (!strcmp(sub, "inspect")) {
        _cleanup_free_ char *path = xasprintf("/sandbox/images?image=%s", esc);
        rc = call(cli, "GET", path, NULL, &out);
        if (rc == 0) {
            _cleanup_free_ char *s = json_dumps(out, JSON_INDENT(2));
            printf("%s\n", s);
        }
    } else if (!strcmp(sub, "rm")) {
        _cleanup_free_ char *path = xasprintf("/sandbox/images?image=%s%s", esc, force ? "&force=true" : "");
        rc = call(cli, "DELETE", path, NULL, &out);
    } else if (!strcmp(sub, "gc")) {
        rc = call(cli, "POST", "/sandbox/images/gc", json_object(), &out);
        if (rc == 0)
            printf("freed %lld blobs, %lld bytes\n",
                   (long long)json_integer_value(json_object_get(out, "freedBlobs")),
                   (long long)json_integer_value(json_object_get(out, "freedBytes")));
    } else {
        return sbx_cli_usage_error("image", "unknown subcommand `%s`", sub);
    }
    json_decref(out);
    return rc;
}
