/* File operations inside a sandbox (see files.h).
 *
 * Each operation is one connection to the sandbox's agent.  The daemon only builds the
 * request (an absolute path inside the sandbox) and reads the answer; it never looks at a
 * sandbox path on the host.  Everything the agent sends is treated as hostile: frames are
 * size-checked by the protocol layer, results must be JSON objects, data past a requested
 * length is dropped, and every wait has a deadline, so a stuck or malicious agent costs a
 * request at most one timeout.
 *
 * The connection is non-blocking and every send and receive polls against a deadline;
 * the blocking helpers of proto.c would wait forever on an agent that stops reading. */
#include "core/files.h"
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend/backend.h"
#include "common/util.h"
#include "proto/proto.h"

/* DATA frames carry at most this much; larger writes are split, smaller ones coalesced. */
#define FS_CHUNK (256u << 10)
/* Waits for one answer of a simple operation, and for each chunk of a read or write. */
#define FS_TIMEOUT_MS 60000
/* Operations that walk a tree (recursive rm/chmod, search, grep, sed) and the commit of a
 * written file (fsync + rename) may take longer. */
#define FS_LONG_TIMEOUT_MS 300000
/* How long a failed send waits for the agent's explanation (an ERROR frame). */
#define FS_ERROR_GRACE_MS 5000
/* Frame header plus the header of its single DATA field. */
#define DATA_HDR_LEN (SBX_PROTO_HDR_LEN + 6)

/* One agent connection holding a slot on the sandbox (so the reaper's idle timeout does
 * not stop a sandbox in the middle of a transfer). */
typedef struct {
    sbx_core_t *core;
    char *sandbox_id;
    int fd;
    uint8_t *buf; /* the payload of the last frame read */
    size_t cap;
} conn_t;

struct sbx_fs_reader {
    conn_t c;
    int64_t left; /* bytes still wanted; -1 = to the end */
    bool done;
};

struct sbx_fs_writer {
    conn_t c;
    char *path;
    uint8_t *buf; /* DATA_HDR_LEN header room, then up to FS_CHUNK bytes of content */
    size_t len;   /* content bytes buffered */
    bool failed;
};

/* ---- errors ---- */

static const struct {
    int errnum;
    const char *name;
    sbx_err_kind_t kind;
} errno_map[] = {
    {ENOENT, "ENOENT", SBX_E_NOT_FOUND},
    {EEXIST, "EEXIST", SBX_E_CONFLICT},
    {ENOTEMPTY, "ENOTEMPTY", SBX_E_CONFLICT},
    {EBUSY, "EBUSY", SBX_E_CONFLICT},
    {ETXTBSY, "ETXTBSY", SBX_E_CONFLICT},
    {EISDIR, "EISDIR", SBX_E_INVALID},
    {ENOTDIR, "ENOTDIR", SBX_E_INVALID},
    {EINVAL, "EINVAL", SBX_E_INVALID},
    {ENAMETOOLONG, "ENAMETOOLONG", SBX_E_INVALID},
    {ELOOP, "ELOOP", SBX_E_INVALID},
    {EXDEV, "EXDEV", SBX_E_INVALID},
    {EILSEQ, "EILSEQ", SBX_E_INVALID},
    {E2BIG, "E2BIG", SBX_E_INVALID},
    {EOPNOTSUPP, "EOPNOTSUPP", SBX_E_INVALID},
    {EACCES, "EACCES", SBX_E_FORBIDDEN},
    {EPERM, "EPERM", SBX_E_FORBIDDEN},
    {EROFS, "EROFS", SBX_E_FORBIDDEN},
    {ENOSPC, "ENOSPC", SBX_E_TOO_LARGE},
    {EDQUOT, "EDQUOT", SBX_E_TOO_LARGE},
    {EFBIG, "EFBIG", SBX_E_TOO_LARGE},
    {ETIMEDOUT, "ETIMEDOUT", SBX_E_TIMEOUT},
    {EMFILE, "EMFILE", SBX_E_UNAVAILABLE},
    {ENFILE, "ENFILE", SBX_E_UNAVAILABLE},
    {ENOMEM, "ENOMEM", SBX_E_UNAVAILABLE},
    {EIO, "EIO", SBX_E_INTERNAL},
    {EPROTO, "EPROTO", SBX_E_INTERNAL},
};

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    size_t need = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
                  : s[0] >= 0xe0 && s[0] <= 0xef ? 3
                  : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                                 : 0;
    if (!need || need > n)
        return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    /* No overlong forms, surrogates or code points past U+10FFFF. */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) || (s[0] == 0xf0 && s[1] < 0x90) ||
        (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return need;
}

/* An agent's message is hostile input: only printable text reaches a response, and it
 * must stay valid UTF-8 for the JSON error body. */
static void sanitize(char *dst, size_t dstlen, const uint8_t *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < dstlen;) {
        size_t n = src[i] >= 0x80 ? utf8_len(src + i, len - i) : 1;
        if (n > 1 && o + n < dstlen) {
            memcpy(dst + o, src + i, n);
            o += n;
            i += n;
            continue;
        }
        dst[o++] = src[i] >= 0x20 && src[i] < 0x7f ? (char)src[i] : '?';
        i++;
    }
    dst[o] = '\0';
}

/* Turns an ERROR frame into err: the kind from the errno, the errno's name as code. */
static int agent_error(const uint8_t *payload, size_t len, const char *path, sbx_err_t *err)
{
    int64_t errnum = 0;
    char msg[512] = "";
    sbx_field_iter_t it;
    sbx_field_t f;
    sbx_field_iter_init(&it, payload, len);
    while (sbx_field_next(&it, &f) == 1) {
        if (f.tag == SBX_TAG_ERRNO)
            sbx_field_int(&f, &errnum);
        else if (f.tag == SBX_TAG_MESSAGE)
            sanitize(msg, sizeof msg, f.val, f.len);
    }
    sbx_err_kind_t kind = SBX_E_INTERNAL;
    char code[24] = "EAGENT";
    for (size_t i = 0; i < SBX_ARRAY_LEN(errno_map); i++) {
        if (errno_map[i].errnum == errnum) {
            kind = errno_map[i].kind;
            snprintf(code, sizeof code, "%s", errno_map[i].name);
            break;
        }
    }
    if (!msg[0])
        snprintf(msg, sizeof msg, "%s", errnum > 0 && errnum < 4096 ? strerror((int)errnum) : "failed");
    if (path && !strstr(msg, path))
        sbx_fail(err, kind, code, "%s: %s", path, msg);
    else
        sbx_fail(err, kind, code, "%s", msg);
    err->errnum = errnum > 0 && errnum < 4096 ? (int)errnum : 0;
    return -1;
}

/* ---- the connection ---- */

static int not_running(sbx_core_t *core, const char *id, bool stopping, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (sbx_store_sandbox_get(core->store, id, &rec, err) < 0)
        return -1;
    sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: %s%s%s%s",
             stopping ? "stopping" : rec.status, rec.stop_reason ? " (" : "",
             rec.stop_reason ? rec.stop_reason : "", rec.stop_reason ? ")" : "");
    sbx_sandbox_rec_release(&rec);
    return -1;
}

static void conn_close(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->sandbox_id) {
        core_exec_end(c->core, c->sandbox_id);
        free(c->sandbox_id);
        c->sandbox_id = NULL;
    }
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
}

/* Takes a slot on a running sandbox (S002 unknown, S004 not running) and connects to its
 * agent. */
static int conn_open(sbx_core_t *core, const char *id, conn_t *c, sbx_err_t *err)
{
    memset(c, 0, sizeof *c);
    c->core = core;
    c->fd = -1;
    if (!id || !*id)
        return sbx_fail(err, SBX_E_INVALID, "S001", "sandbox id is required");
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (!l || l->stopping) {
        bool stopping = l != NULL;
        pthread_mutex_unlock(&core->mu);
        return not_running(core, id, stopping, err);
    }
    l->inflight++;
    sbx_sandbox_rt_t rt = l->rt;
    pthread_mutex_unlock(&core->mu);
    c->sandbox_id = xstrdup(id);
    core_touch(core, id);

    c->fd = core->be->connect(&rt, err);
    if (c->fd < 0) {
        if (!core->be->alive(&rt)) {
            core_mark_failed(core, id, "the sandbox's agent exited");
            sbx_fail(err, SBX_E_CONFLICT, "S004", "sandbox is not running: its agent exited");
        }
        conn_close(c);
        return -1;
    }
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        sbx_error(err, errno, "make the agent connection non-blocking");
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Polls for `events` until the deadline.  Returns the revents (POLLHUP/POLLERR included),
 * 0 on timeout, -1 on error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - sbx_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)(left > 60000 ? 60000 : left));
        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0)
            return pfd.revents;
    }
}

/* Sends the whole iovec before the deadline.  With watch_input, stops early (errno =
 * EINPROGRESS) when the agent has something to say: during a write it only ever speaks
 * to report a failure.  Returns 0 or -1 with errno (ETIMEDOUT at the deadline). */
static int send_iov(int fd, struct iovec *iov, int iovcnt, int64_t deadline, bool watch_input)
{
    while (iovcnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            int rev = wait_fd(fd, (short)(POLLOUT | (watch_input ? POLLIN : 0)), deadline);
            if (rev < 0)
                return -1;
            if (rev == 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            if (watch_input && (rev & (POLLIN | POLLHUP)) && !(rev & POLLOUT)) {
                errno = EINPROGRESS;
                return -1;
            }
            continue;
        }
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

static int send_msg(conn_t *c, sbx_msg_t *m, int64_t deadline, sbx_err_t *err)
{
    size_t total = sbx_msg_end(m);
    if (total - SBX_PROTO_HDR_LEN > SBX_PROTO_MAX_PAYLOAD)
        return sbx_fail(err, SBX_E_INVALID, "S001", "the request is too large");
    struct iovec iov = {.iov_base = m->buf, .iov_len = total};
    if (send_iov(c->fd, &iov, 1, deadline, false) < 0) {
        if (errno == ETIMEDOUT)
            return sbx_fail(err, SBX_E_TIMEOUT, "S200",
                            "the sandbox's agent did not take the request in time");
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S004", "the sandbox's agent closed the connection");
    }
    return 0;
}

/* Reads exactly len bytes before the deadline.  Returns 1, 0 on EOF before the first
 * byte, -1 with errno (ETIMEDOUT, EPIPE for EOF in the middle). */
static int read_exact(int fd, uint8_t *p, size_t len, int64_t deadline)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0) {
            if (got == 0)
                return 0;
            errno = EPIPE;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int rev = wait_fd(fd, POLLIN, deadline);
        if (rev < 0)
            return -1;
        if (rev == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
    }
    return 1;
}

/* Reads one frame into c->buf (NUL-terminated).  The header check caps the payload at
 * SBX_PROTO_MAX_PAYLOAD, so a hostile agent cannot make the daemon allocate more. */
static int read_frame(conn_t *c, sbx_frame_hdr_t *hdr, int64_t deadline, sbx_err_t *err)
{
    uint8_t raw[SBX_PROTO_HDR_LEN];
    int r = read_exact(c->fd, raw, sizeof raw, deadline);
    if (r == 1 && sbx_frame_hdr_decode(raw, hdr) < 0)
        return sbx_fail(err, SBX_E_INTERNAL, "EPROTO", "malformed frame from the sandbox's agent");
    if (r == 1) {
        if (c->cap < (size_t)hdr->len + 1) {
            free(c->buf);
            c->cap = (size_t)hdr->len + 1 > 64 * 1024 ? (size_t)hdr->len + 1 : 64 * 1024;
            c->buf = xmalloc(c->cap);
        }
        if (hdr->len > 0)
            r = read_exact(c->fd, c->buf, hdr->len, deadline);
        if (r == 0) {
            errno = EPIPE;
            r = -1;
        }
        if (r == 1) {
            c->buf[hdr->len] = 0;
            return 0;
        }
    }
    if (r < 0 && errno == ETIMEDOUT)
        return sbx_fail(err, SBX_E_TIMEOUT, "S200", "the sandbox's agent did not answer in time");
    return sbx_fail(err, SBX_E_UNAVAILABLE, "S004", "the sandbox's agent closed the connection");
}

/* Parses a RESULT payload: its MESSAGE must be a JSON object. */
static json_t *parse_result(const uint8_t *payload, size_t len, sbx_err_t *err)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    sbx_field_iter_init(&it, payload, len);
    while (sbx_field_next(&it, &f) == 1) {
        if (f.tag != SBX_TAG_MESSAGE)
            continue;
        json_t *j = json_loadb((const char *)f.val, f.len, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_object(j))
            return j;
        json_decref(j);
        break;
    }
    sbx_fail(err, SBX_E_INTERNAL, "EPROTO", "malformed result from the sandbox's agent");
    return NULL;
}

/* Waits for the answer to a request: RESULT (*result set) or ERROR (err set). */
static int read_answer(conn_t *c, const char *path, int64_t timeout_ms, json_t **result, sbx_err_t *err)
{
    sbx_frame_hdr_t hdr;
    if (read_frame(c, &hdr, sbx_mono_ms() + timeout_ms, err) < 0)
        return -1;
    if (hdr.type == SBX_MSG_ERROR)
        return agent_error(c->buf, hdr.len, path, err);
    if (hdr.type != SBX_MSG_RESULT)
        return sbx_fail(err, SBX_E_INTERNAL, "EPROTO", "unexpected frame %u from the sandbox's agent",
                        hdr.type);
    *result = parse_result(c->buf, hdr.len, err);
    return *result ? 0 : -1;
}

/* ---- requests ---- */

/* The absolute path inside the sandbox: relative paths are under the workspace.  Nothing
 * else is checked here: the agent resolves the path inside the sandbox, where `..` and
 * symlinks cannot lead out. */
static char *resolve(sbx_core_t *core, const char *path, const char *what, sbx_err_t *err)
{
    if (!path || !*path) {
        sbx_fail(err, SBX_E_INVALID, "S001", "%s is required", what);
        return NULL;
    }
    if (strlen(path) > 4096) {
        sbx_fail(err, SBX_E_INVALID, "ENAMETOOLONG", "%s is too long", what);
        return NULL;
    }
    if (path[0] == '/')
        return xstrdup(path);
    const char *ws =
        core->cfg->workspace_dir && *core->cfg->workspace_dir ? core->cfg->workspace_dir : "/workspace";
    size_t wl = strlen(ws);
    return xasprintf("%.*s/%s", (int)(wl > 1 && ws[wl - 1] == '/' ? wl - 1 : wl), ws, path);
}

static bool op_known(const char *op)
{
    static const char *const ops[] = {"stat", "ls",    "mkdir",  "rm",   "rmdir",
                                      "mv",   "chmod", "search", "grep", "sed"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(ops); i++)
        if (!strcmp(op, ops[i]))
            return true;
    return false;
}

static bool op_long(const sbx_fs_req_t *req)
{
    return (req->flags & SBX_FS_RECURSIVE) || !strcmp(req->op, "search") || !strcmp(req->op, "grep") ||
           !strcmp(req->op, "sed");
}

int sbx_core_fs(sbx_core_t *core, const char *sandbox_id, const sbx_fs_req_t *req, json_t **result,
                sbx_err_t *err)
{
    *result = NULL;
    if (!req->op || !op_known(req->op))
        return sbx_fail(err, SBX_E_INVALID, "S001", "unknown file operation: %s",
                        req->op ? req->op : "(none)");
    bool needs_text = !strcmp(req->op, "chmod") || !strcmp(req->op, "search") || !strcmp(req->op, "grep") ||
                      !strcmp(req->op, "sed");
    if (needs_text && (!req->text || !*req->text))
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s is required",
                        !strcmp(req->op, "chmod") ? "mode" : "pattern");
    if (!strcmp(req->op, "sed") && !req->text2)
        return sbx_fail(err, SBX_E_INVALID, "S001", "replacement is required");
    _cleanup_free_ char *path = resolve(core, req->path, "path", err);
    if (!path)
        return -1;
    _cleanup_free_ char *path2 = NULL;
    if (!strcmp(req->op, "mv") && !(path2 = resolve(core, req->path2, "destination", err)))
        return -1;

    conn_t c;
    if (conn_open(core, sandbox_id, &c, err) < 0)
        return -1;
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_FS);
    sbx_msg_add_str(&m, SBX_TAG_OP, req->op);
    sbx_msg_add_str(&m, SBX_TAG_PATH, path);
    if (path2)
        sbx_msg_add_str(&m, SBX_TAG_PATH2, path2);
    if (req->text)
        sbx_msg_add_str(&m, SBX_TAG_TEXT, req->text);
    if (req->text2)
        sbx_msg_add_str(&m, SBX_TAG_TEXT2, req->text2);
    if (req->mode >= 0)
        sbx_msg_add_int(&m, SBX_TAG_MODE, req->mode);
    if (req->limit > 0)
        sbx_msg_add_int(&m, SBX_TAG_LENGTH, req->limit);
    if (req->flags)
        sbx_msg_add_int(&m, SBX_TAG_FS_FLAGS, (int64_t)req->flags);
    int64_t timeout = op_long(req) ? FS_LONG_TIMEOUT_MS : FS_TIMEOUT_MS;
    int rc = send_msg(&c, &m, sbx_mono_ms() + FS_TIMEOUT_MS, err);
    sbx_msg_release(&m);
    if (rc == 0)
        rc = read_answer(&c, path, timeout, result, err);
    conn_close(&c);
    return rc;
}

/* ---- reading ---- */

sbx_fs_reader_t *sbx_core_fs_read_open(sbx_core_t *core, const char *sandbox_id, const char *path,
                                       int64_t offset, int64_t length, json_t **meta, sbx_err_t *err)
{
    if (meta)
        *meta = NULL;
    if (offset < 0) {
        sbx_fail(err, SBX_E_INVALID, "S001", "offset must not be negative");
        return NULL;
    }
    _cleanup_free_ char *abs = resolve(core, path, "path", err);
    if (!abs)
        return NULL;
    sbx_fs_reader_t *r = xcalloc(1, sizeof *r);
    r->left = length < 0 ? -1 : length;
    if (conn_open(core, sandbox_id, &r->c, err) < 0) {
        free(r);
        return NULL;
    }
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_FS);
    sbx_msg_add_str(&m, SBX_TAG_OP, "read");
    sbx_msg_add_str(&m, SBX_TAG_PATH, abs);
    sbx_msg_add_int(&m, SBX_TAG_OFFSET, offset);
    sbx_msg_add_int(&m, SBX_TAG_LENGTH, r->left);
    int rc = send_msg(&r->c, &m, sbx_mono_ms() + FS_TIMEOUT_MS, err);
    sbx_msg_release(&m);
    json_t *stat = NULL;
    if (rc == 0)
        rc = read_answer(&r->c, abs, FS_TIMEOUT_MS, &stat, err);
    if (rc < 0) {
        sbx_core_fs_read_close(r);
        return NULL;
    }
    if (meta)
        *meta = stat;
    else
        json_decref(stat);
    return r;
}

long sbx_core_fs_read_next(sbx_fs_reader_t *r, const uint8_t **data, sbx_err_t *err)
{
    *data = NULL;
    /* Once the requested length arrived the rest is not waited for: closing the connection
     * ends the agent's side, and an agent that floods past the length cannot keep the
     * request busy. */
    if (r->left == 0)
        r->done = true;
    while (!r->done) {
        sbx_frame_hdr_t hdr;
        if (read_frame(&r->c, &hdr, sbx_mono_ms() + FS_TIMEOUT_MS, err) < 0)
            return -1;
        if (hdr.type == SBX_MSG_END) {
            r->done = true;
            break;
        }
        if (hdr.type == SBX_MSG_ERROR)
            return agent_error(r->c.buf, hdr.len, NULL, err);
        if (hdr.type != SBX_MSG_DATA)
            return sbx_fail(err, SBX_E_INTERNAL, "EPROTO", "unexpected frame %u from the sandbox's agent",
                            hdr.type);
        sbx_field_iter_t it;
        sbx_field_t f;
        sbx_field_iter_init(&it, r->c.buf, hdr.len);
        while (sbx_field_next(&it, &f) == 1) {
            if (f.tag != SBX_TAG_DATA || f.len == 0)
                continue;
            /* An agent that sends more than was asked for is cut off at the length. */
            size_t n = f.len;
            if (r->left >= 0 && (int64_t)n > r->left)
                n = (size_t)r->left;
            if (r->left >= 0)
                r->left -= (int64_t)n;
            if (n == 0)
                break;
            *data = f.val;
            return (long)n;
        }
    }
    return 0;
}

void sbx_core_fs_read_close(sbx_fs_reader_t *r)
{
    if (!r)
        return;
    /* Closing the connection early tells the agent to stop reading the file. */
    conn_close(&r->c);
    free(r);
}

/* ---- writing ---- */

sbx_fs_writer_t *sbx_core_fs_write_open(sbx_core_t *core, const char *sandbox_id, const char *path,
                                        const sbx_fs_write_opts_t *opts, sbx_err_t *err)
{
    sbx_fs_write_opts_t dflt = {.mode = -1, .uid = -1, .gid = -1, .flags = 0};
    if (!opts)
        opts = &dflt;
    if (opts->mode > 07777) {
        sbx_fail(err, SBX_E_INVALID, "S001", "mode must be between 0 and 07777");
        return NULL;
    }
    char *abs = resolve(core, path, "path", err);
    if (!abs)
        return NULL;
    sbx_fs_writer_t *w = xcalloc(1, sizeof *w);
    w->path = abs;
    if (conn_open(core, sandbox_id, &w->c, err) < 0) {
        free(w->path);
        free(w);
        return NULL;
    }
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_FS);
    sbx_msg_add_str(&m, SBX_TAG_OP, "write");
    sbx_msg_add_str(&m, SBX_TAG_PATH, abs);
    sbx_msg_add_int(&m, SBX_TAG_MODE, opts->mode >= 0 ? opts->mode : 0644);
    if (opts->uid >= 0)
        sbx_msg_add_int(&m, SBX_TAG_UID, opts->uid);
    if (opts->gid >= 0)
        sbx_msg_add_int(&m, SBX_TAG_GID, opts->gid);
    if (opts->flags)
        sbx_msg_add_int(&m, SBX_TAG_FS_FLAGS, (int64_t)opts->flags);
    int rc = send_msg(&w->c, &m, sbx_mono_ms() + FS_TIMEOUT_MS, err);
    sbx_msg_release(&m);
    json_t *ready = NULL;
    if (rc == 0)
        rc = read_answer(&w->c, abs, FS_TIMEOUT_MS, &ready, err);
    json_decref(ready);
    if (rc < 0) {
        sbx_core_fs_write_abort(w);
        return NULL;
    }
    w->buf = xmalloc(DATA_HDR_LEN + FS_CHUNK);
    return w;
}

/* After a failed send: the agent usually said why (ENOSPC, EIO) before it stopped reading. */
static int send_failed(sbx_fs_writer_t *w, int send_errno, sbx_err_t *err)
{
    w->failed = true;
    sbx_frame_hdr_t hdr;
    sbx_err_t rerr = SBX_ERR_INIT;
    if (read_frame(&w->c, &hdr, sbx_mono_ms() + FS_ERROR_GRACE_MS, &rerr) == 0) {
        if (hdr.type == SBX_MSG_ERROR)
            return agent_error(w->c.buf, hdr.len, w->path, err);
        return sbx_fail(err, SBX_E_INTERNAL, "EPROTO", "unexpected frame %u from the sandbox's agent",
                        hdr.type);
    }
    if (send_errno == ETIMEDOUT)
        return sbx_fail(err, SBX_E_TIMEOUT, "S200", "the sandbox's agent stopped taking data");
    return sbx_fail(err, SBX_E_UNAVAILABLE, "S004", "the sandbox's agent closed the connection");
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int flush(sbx_fs_writer_t *w, sbx_err_t *err)
{
    if (!w->len)
        return 0;
    /* Frame header (len, type, flags, stream) then the header of the DATA field (tag, len),
     * little-endian as proto.h describes; the content already follows them in w->buf. */
    uint8_t *h = w->buf;
    put_le(h, (uint32_t)w->len + 6, 4);
    put_le(h + 4, SBX_MSG_DATA, 2);
    put_le(h + 6, 0, 6);
    put_le(h + 12, SBX_TAG_DATA, 2);
    put_le(h + 14, (uint32_t)w->len, 4);
    struct iovec iov = {.iov_base = w->buf, .iov_len = DATA_HDR_LEN + w->len};
    if (send_iov(w->c.fd, &iov, 1, sbx_mono_ms() + FS_TIMEOUT_MS, true) < 0)
        return send_failed(w, errno, err);
    w->len = 0;
    return 0;
}

int sbx_core_fs_write(sbx_fs_writer_t *w, const void *data, size_t len, sbx_err_t *err)
{
    if (w->failed)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "the write already failed");
    const uint8_t *p = data;
    while (len > 0) {
        size_t n = FS_CHUNK - w->len < len ? FS_CHUNK - w->len : len;
        memcpy(w->buf + DATA_HDR_LEN + w->len, p, n);
        w->len += n;
        p += n;
        len -= n;
        if (w->len == FS_CHUNK && flush(w, err) < 0)
            return -1;
    }
    return 0;
}

static void writer_free(sbx_fs_writer_t *w)
{
    conn_close(&w->c);
    free(w->path);
    free(w->buf);
    free(w);
}

int sbx_core_fs_write_finish(sbx_fs_writer_t *w, json_t **result, sbx_err_t *err)
{
    if (result)
        *result = NULL;
    int rc = w->failed ? sbx_fail(err, SBX_E_INTERNAL, NULL, "the write already failed") : flush(w, err);
    if (rc == 0) {
        uint8_t end[SBX_PROTO_HDR_LEN] = {0};
        put_le(end + 4, SBX_MSG_END, 2);
        struct iovec iov = {.iov_base = end, .iov_len = sizeof end};
        if (send_iov(w->c.fd, &iov, 1, sbx_mono_ms() + FS_TIMEOUT_MS, true) < 0)
            rc = send_failed(w, errno, err);
    }
    json_t *res = NULL;
    if (rc == 0)
        rc = read_answer(&w->c, w->path, FS_LONG_TIMEOUT_MS, &res, err);
    if (rc == 0 && result)
        *result = res;
    else
        json_decref(res);
    writer_free(w);
    return rc;
}

void sbx_core_fs_write_abort(sbx_fs_writer_t *w)
{
    if (!w)
        return;
    /* The agent sees the connection close without END and discards the temporary file. */
    if (w->c.fd >= 0)
        shutdown(w->c.fd, SHUT_RDWR);
    writer_free(w);
}
