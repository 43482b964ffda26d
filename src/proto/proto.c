/* The agent wire protocol: frame building, sending, reading and field decoding.
 *
 * Everything here is written for hostile input: a length is never used before it has
 * been checked against the bytes actually present, and no decoder trusts a count. */
#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/util.h"

#define FIELD_HDR_LEN 6
#define MAX_ENTRIES 65536

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void encode_hdr(uint8_t *p, uint32_t len, uint16_t type)
{
    put_u32(p, len);
    put_u16(p + 4, type);
    put_u16(p + 6, 0);
    put_u32(p + 8, 0);
}

/* ---- building ---------------------------------------------------------------------- */

static void msg_reserve(sbx_msg_t *m, size_t extra)
{
    if (extra > SIZE_MAX - m->len)
        abort();
    size_t need = m->len + extra;
    if (need <= m->cap)
        return;
    size_t cap = m->cap ? m->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    m->buf = xrealloc(m->buf, cap);
    m->cap = cap;
}

void sbx_msg_begin(sbx_msg_t *m, uint16_t type)
{
    m->len = 0;
    msg_reserve(m, SBX_PROTO_HDR_LEN);
    encode_hdr(m->buf, 0, type);
    m->len = SBX_PROTO_HDR_LEN;
}

void sbx_msg_add_bytes(sbx_msg_t *m, uint16_t tag, const void *data, size_t len)
{
    /* A field that cannot be represented is a programming error, not input. */
    if (len > UINT32_MAX)
        abort();
    msg_reserve(m, FIELD_HDR_LEN + len);
    uint8_t *p = m->buf + m->len;
    put_u16(p, tag);
    put_u32(p + 2, (uint32_t)len);
    if (len)
        memcpy(p + FIELD_HDR_LEN, data, len);
    m->len += FIELD_HDR_LEN + len;
}

void sbx_msg_add_str(sbx_msg_t *m, uint16_t tag, const char *s)
{
    sbx_msg_add_bytes(m, tag, s, strlen(s));
}

void sbx_msg_add_int(sbx_msg_t *m, uint16_t tag, int64_t v)
{
    uint8_t raw[8];
    put_u64(raw, (uint64_t)v);
    sbx_msg_add_bytes(m, tag, raw, sizeof raw);
}

size_t sbx_msg_end(sbx_msg_t *m)
{
    size_t payload = m->len - SBX_PROTO_HDR_LEN;
    put_u32(m->buf, payload > UINT32_MAX ? UINT32_MAX : (uint32_t)payload);
    return m->len;
}

void sbx_msg_release(sbx_msg_t *m)
{
    free(m->buf);
    m->buf = NULL;
    m->len = m->cap = 0;
}

/* ---- sending ----------------------------------------------------------------------- */

/* Waits until fd is writable; used when a caller hands us a non-blocking fd. */
static int wait_writable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    for (;;) {
        int r = poll(&pfd, 1, -1);
        if (r >= 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Writes the whole iovec array.  On a socket, sendmsg with MSG_NOSIGNAL keeps a closed
 * peer from raising SIGPIPE; anything else falls back to writev.  The common case is a
 * single system call per frame, so frames from several writers never interleave. */
static int send_iov(int fd, struct iovec *iov, int iovcnt)
{
    bool sock = true;
    while (iovcnt > 0) {
        ssize_t n;
        if (sock) {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
            n = sendmsg(fd, &mh, MSG_NOSIGNAL);
            if (n < 0 && errno == ENOTSOCK) {
                sock = false;
                continue;
            }
        } else {
            n = writev(fd, iov, iovcnt);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait_writable(fd) < 0)
                    return -1;
                continue;
            }
            return -1;
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

int sbx_msg_send(int fd, sbx_msg_t *m)
{
    size_t total = sbx_msg_end(m);
    if (total - SBX_PROTO_HDR_LEN > SBX_PROTO_MAX_PAYLOAD) {
        errno = EMSGSIZE;
        return -1;
    }
    struct iovec iov = {.iov_base = m->buf, .iov_len = total};
    return send_iov(fd, &iov, 1);
}

int sbx_proto_send_empty(int fd, uint16_t type)
{
    uint8_t hdr[SBX_PROTO_HDR_LEN];
    encode_hdr(hdr, 0, type);
    struct iovec iov = {.iov_base = hdr, .iov_len = sizeof hdr};
    return send_iov(fd, &iov, 1);
}

int sbx_proto_send_data(int fd, uint16_t type, const void *data, size_t len)
{
    if (len > SBX_PROTO_MAX_PAYLOAD - FIELD_HDR_LEN) {
        errno = EMSGSIZE;
        return -1;
    }
    uint8_t hdr[SBX_PROTO_HDR_LEN + FIELD_HDR_LEN];
    encode_hdr(hdr, (uint32_t)(len + FIELD_HDR_LEN), type);
    put_u16(hdr + SBX_PROTO_HDR_LEN, SBX_TAG_DATA);
    put_u32(hdr + SBX_PROTO_HDR_LEN + 2, (uint32_t)len);
    struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof hdr},
                           {.iov_base = (void *)data, .iov_len = len}};
    return send_iov(fd, iov, len ? 2 : 1);
}

/* ---- reading ----------------------------------------------------------------------- */

int sbx_frame_hdr_decode(const uint8_t raw[SBX_PROTO_HDR_LEN], sbx_frame_hdr_t *hdr)
{
    hdr->len = get_u32(raw);
    hdr->type = get_u16(raw + 4);
    hdr->flags = get_u16(raw + 6);
    hdr->stream = get_u32(raw + 8);
    if (hdr->len > SBX_PROTO_MAX_PAYLOAD || hdr->flags != 0 || hdr->stream != 0) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int sbx_frame_read(int fd, sbx_frame_hdr_t *hdr, uint8_t **payload)
{
    uint8_t raw[SBX_PROTO_HDR_LEN];
    *payload = NULL;
    int r = sbx_read_exact(fd, raw, sizeof raw);
    if (r <= 0)
        return r;
    if (sbx_frame_hdr_decode(raw, hdr) < 0)
        return -1;
    uint8_t *p = xmalloc((size_t)hdr->len + 1);
    if (hdr->len > 0) {
        r = sbx_read_exact(fd, p, hdr->len);
        if (r <= 0) {
            int saved = r == 0 ? EPIPE : errno;
            free(p);
            errno = saved;
            return -1;
        }
    }
    p[hdr->len] = 0;
    *payload = p;
    return 1;
}

/* ---- fields ------------------------------------------------------------------------ */

void sbx_field_iter_init(sbx_field_iter_t *it, const uint8_t *payload, size_t len)
{
    it->p = payload;
    it->left = payload ? len : 0;
}

int sbx_field_next(sbx_field_iter_t *it, sbx_field_t *f)
{
    if (it->left == 0)
        return 0;
    if (it->left < FIELD_HDR_LEN)
        return -1;
    uint32_t len = get_u32(it->p + 2);
    if (len > it->left - FIELD_HDR_LEN)
        return -1;
    f->tag = get_u16(it->p);
    f->len = len;
    f->val = it->p + FIELD_HDR_LEN;
    it->p += FIELD_HDR_LEN + (size_t)len;
    it->left -= FIELD_HDR_LEN + (size_t)len;
    return 1;
}

int sbx_field_int(const sbx_field_t *f, int64_t *out)
{
    if (f->len != 8)
        return -1;
    *out = (int64_t)get_u64(f->val);
    return 0;
}

/* A protocol string is raw bytes without NUL; returns a heap copy or NULL if invalid. */
static char *field_str(const sbx_field_t *f)
{
    if (memchr(f->val, 0, f->len))
        return NULL;
    return xstrndup((const char *)f->val, f->len);
}

/* ---- EXEC -------------------------------------------------------------------------- */

void sbx_exec_req_init(sbx_exec_req_t *req)
{
    memset(req, 0, sizeof *req);
    req->uid = req->gid = -1;
}

void sbx_exec_req_release(sbx_exec_req_t *req)
{
    if (req->argv)
        for (size_t i = 0; req->argv[i]; i++)
            free(req->argv[i]);
    if (req->env)
        for (size_t i = 0; req->env[i]; i++)
            free(req->env[i]);
    free(req->argv);
    free(req->env);
    free(req->cwd);
    sbx_exec_req_init(req);
}

/* First pass: validates the structure and every scalar, counts argv/env entries. */
static int exec_req_scan(const uint8_t *payload, size_t len, sbx_exec_req_t *req)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    bool seen[SBX_TAG_GID + 1] = {false};
    int r;
    sbx_field_iter_init(&it, payload, len);
    while ((r = sbx_field_next(&it, &f)) > 0) {
        int64_t v = 0;
        switch (f.tag) {
        case SBX_TAG_ARGV:
        case SBX_TAG_ENV:
            if (memchr(f.val, 0, f.len))
                return -1;
            if (f.tag == SBX_TAG_ARGV && req->argc == 0 && f.len == 0)
                return -1;
            if (++*(f.tag == SBX_TAG_ARGV ? &req->argc : &req->envc) > MAX_ENTRIES)
                return -1;
            continue;
        case SBX_TAG_CWD:
            if (seen[f.tag] || memchr(f.val, 0, f.len))
                return -1;
            seen[f.tag] = true;
            continue;
        case SBX_TAG_TIMEOUT_MS:
        case SBX_TAG_FLAGS:
        case SBX_TAG_UID:
        case SBX_TAG_GID:
            /* A repeated scalar is ambiguous; refuse rather than guess which one wins. */
            if (seen[f.tag] || sbx_field_int(&f, &v) < 0)
                return -1;
            seen[f.tag] = true;
            break;
        default: continue; /* unknown tags are skipped so both sides can grow */
        }
        if (f.tag == SBX_TAG_TIMEOUT_MS) {
            if (v < 0)
                return -1;
            req->timeout_ms = v;
        } else if (f.tag == SBX_TAG_FLAGS) {
            req->flags = v;
        } else {
            /* uid_t/gid_t are 32-bit and (uid_t)-1 means "unchanged" to the kernel. */
            if (v < 0 || v >= (int64_t)UINT32_MAX)
                return -1;
            *(f.tag == SBX_TAG_UID ? &req->uid : &req->gid) = v;
        }
    }
    if (r < 0 || req->argc == 0)
        return -1;
    return 0;
}

int sbx_exec_req_decode(const uint8_t *payload, size_t len, sbx_exec_req_t *req)
{
    sbx_exec_req_init(req);
    if (exec_req_scan(payload, len, req) < 0) {
        sbx_exec_req_init(req);
        errno = EPROTO;
        return -1;
    }
    req->argv = xcalloc(req->argc + 1, sizeof(char *));
    req->env = xcalloc(req->envc + 1, sizeof(char *));
    size_t na = 0, ne = 0;
    sbx_field_iter_t it;
    sbx_field_t f;
    sbx_field_iter_init(&it, payload, len);
    /* The scan already validated every field, so this pass cannot fail. */
    while (sbx_field_next(&it, &f) > 0) {
        if (f.tag == SBX_TAG_ARGV)
            req->argv[na++] = field_str(&f);
        else if (f.tag == SBX_TAG_ENV)
            req->env[ne++] = field_str(&f);
        else if (f.tag == SBX_TAG_CWD)
            req->cwd = field_str(&f);
    }
    return 0;
}

static size_t count_strs(char *const *v, size_t n)
{
    if (n || !v)
        return n;
    while (v[n])
        n++;
    return n;
}

void sbx_exec_req_encode(sbx_msg_t *m, const sbx_exec_req_t *req)
{
    sbx_msg_begin(m, SBX_MSG_EXEC);
    size_t argc = count_strs(req->argv, req->argc);
    size_t envc = count_strs(req->env, req->envc);
    for (size_t i = 0; i < argc; i++)
        sbx_msg_add_str(m, SBX_TAG_ARGV, req->argv[i]);
    for (size_t i = 0; i < envc; i++)
        sbx_msg_add_str(m, SBX_TAG_ENV, req->env[i]);
    if (req->cwd)
        sbx_msg_add_str(m, SBX_TAG_CWD, req->cwd);
    if (req->timeout_ms > 0)
        sbx_msg_add_int(m, SBX_TAG_TIMEOUT_MS, req->timeout_ms);
    if (req->flags)
        sbx_msg_add_int(m, SBX_TAG_FLAGS, req->flags);
    if (req->uid >= 0)
        sbx_msg_add_int(m, SBX_TAG_UID, req->uid);
    if (req->gid >= 0)
        sbx_msg_add_int(m, SBX_TAG_GID, req->gid);
    sbx_msg_end(m);
}

/* ---- EXIT -------------------------------------------------------------------------- */

int sbx_exit_decode(const uint8_t *payload, size_t len, sbx_exit_info_t *out)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    bool have_code = false;
    int r;
    memset(out, 0, sizeof *out);
    sbx_field_iter_init(&it, payload, len);
    while ((r = sbx_field_next(&it, &f)) > 0) {
        int64_t v;
        if (f.tag != SBX_TAG_EXIT_CODE && f.tag != SBX_TAG_SIGNO && f.tag != SBX_TAG_TIMED_OUT &&
            f.tag != SBX_TAG_DURATION_MS)
            continue;
        if (sbx_field_int(&f, &v) < 0)
            goto bad;
        switch (f.tag) {
        case SBX_TAG_EXIT_CODE:
            /* Exit codes are 0..255 (128+signo included); anything else is a lie. */
            if (v < 0 || v > 255)
                goto bad;
            out->exit_code = v;
            have_code = true;
            break;
        case SBX_TAG_SIGNO:
            if (v < 0 || v > 127)
                goto bad;
            out->signo = v;
            break;
        case SBX_TAG_TIMED_OUT: out->timed_out = v != 0; break;
        case SBX_TAG_DURATION_MS: out->duration_ms = v < 0 ? 0 : v; break;
        }
    }
    if (r < 0 || !have_code)
        goto bad;
    return 0;
bad:
    memset(out, 0, sizeof *out);
    errno = EPROTO;
    return -1;
}

void sbx_exit_encode(sbx_msg_t *m, const sbx_exit_info_t *info)
{
    sbx_msg_begin(m, SBX_MSG_EXIT);
    sbx_msg_add_int(m, SBX_TAG_EXIT_CODE, info->exit_code);
    sbx_msg_add_int(m, SBX_TAG_SIGNO, info->signo);
    sbx_msg_add_int(m, SBX_TAG_TIMED_OUT, info->timed_out ? 1 : 0);
    sbx_msg_add_int(m, SBX_TAG_DURATION_MS, info->duration_ms);
    sbx_msg_end(m);
}
