/* The agent wire protocol, both directions.  The first byte picks what the rest is fed
 * to, so one corpus covers every decoder: a frame header followed by its payload (as
 * sbx_frame_read sees a stream), the field iterator, the EXEC request the agent decodes,
 * the EXIT message the daemon decodes, and the agent's FS request decoder.  Whatever
 * decodes must encode back to something that decodes to the same values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/fsutil.h"
#include "proto/proto.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

/* Walks every field; the walk must stay inside the payload and end where it says. */
static void fields(const uint8_t *p, size_t len)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    int r;
    size_t seen = 0;
    sbx_field_iter_init(&it, p, len);
    while ((r = sbx_field_next(&it, &f)) > 0) {
        CHECK(f.val >= p && f.val + f.len <= p + len);
        seen += 6 + (size_t)f.len;
        int64_t v;
        if (sbx_field_int(&f, &v) == 0)
            CHECK(f.len == 8);
    }
    if (r == 0)
        CHECK(seen == len);
}

static void exec_req(const uint8_t *p, size_t len)
{
    sbx_exec_req_t req;
    if (sbx_exec_req_decode(p, len, &req) < 0) {
        CHECK(!req.argv && !req.env && !req.cwd);
        return;
    }
    CHECK(req.argc >= 1 && req.argv[0] && req.argv[0][0] && !req.argv[req.argc] && !req.env[req.envc]);
    CHECK(req.timeout_ms >= 0 && req.uid >= -1 && req.gid >= -1);
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &req);
    sbx_exec_req_t back;
    /* Re-encoding drops unknown tags, so it can only be smaller or the same. */
    CHECK(sbx_exec_req_decode(m.buf + SBX_PROTO_HDR_LEN, m.len - SBX_PROTO_HDR_LEN, &back) == 0);
    CHECK(back.argc == req.argc && back.envc == req.envc);
    for (size_t i = 0; i < req.argc; i++)
        CHECK(!strcmp(back.argv[i], req.argv[i]));
    for (size_t i = 0; i < req.envc; i++)
        CHECK(!strcmp(back.env[i], req.env[i]));
    CHECK(!back.cwd == !req.cwd && (!req.cwd || !strcmp(back.cwd, req.cwd)));
    CHECK(back.timeout_ms == req.timeout_ms && back.flags == req.flags);
    CHECK(back.uid == req.uid && back.gid == req.gid);
    sbx_exec_req_release(&back);
    sbx_msg_release(&m);
    sbx_exec_req_release(&req);
}

static void exit_msg(const uint8_t *p, size_t len)
{
    sbx_exit_info_t info;
    if (sbx_exit_decode(p, len, &info) < 0)
        return;
    CHECK(info.exit_code >= 0 && info.exit_code <= 255 && info.signo >= 0 && info.signo <= 127);
    CHECK(info.duration_ms >= 0);
    sbx_msg_t m = {0};
    sbx_exit_encode(&m, &info);
    sbx_exit_info_t back;
    CHECK(sbx_exit_decode(m.buf + SBX_PROTO_HDR_LEN, m.len - SBX_PROTO_HDR_LEN, &back) == 0);
    CHECK(!memcmp(&back, &info, sizeof info));
    sbx_msg_release(&m);
}

static void fs_req(const uint8_t *p, size_t len)
{
    fs_req_t req;
    memset(&req, 0, sizeof req);
    if (fs_req_decode(p, len, &req) == 0) {
        /* Strings are NUL-terminated copies without interior NULs. */
        if (req.op)
            (void)strlen(req.op);
        if (req.path)
            (void)strlen(req.path);
    } else {
        CHECK(!req.op && !req.path && !req.path2 && !req.text && !req.text2);
    }
    fs_req_release(&req);
}

/* A stream of frames, as sbx_frame_read consumes them: each header is validated, then
 * its payload goes to the decoder its type selects. */
static void frames(const uint8_t *p, size_t len)
{
    while (len >= SBX_PROTO_HDR_LEN) {
        sbx_frame_hdr_t h;
        if (sbx_frame_hdr_decode(p, &h) < 0)
            return;
        CHECK(h.len <= SBX_PROTO_MAX_PAYLOAD && h.flags == 0 && h.stream == 0);
        p += SBX_PROTO_HDR_LEN;
        len -= SBX_PROTO_HDR_LEN;
        if (h.len > len)
            return; /* a truncated frame: sbx_frame_read fails with EPIPE */
        /* An exact copy, like the heap buffer sbx_frame_read hands out. */
        uint8_t *payload = malloc((size_t)h.len + 1);
        memcpy(payload, p, h.len);
        payload[h.len] = 0;
        fields(payload, h.len);
        switch (h.type) {
        case SBX_MSG_EXEC: exec_req(payload, h.len); break;
        case SBX_MSG_EXIT: exit_msg(payload, h.len); break;
        case SBX_MSG_FS: fs_req(payload, h.len); break;
        default: break;
        }
        free(payload);
        p += h.len;
        len -= h.len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    switch (sel % 5) {
    case 0: frames(p, len); break;
    case 1: fields(p, len); break;
    case 2: exec_req(p, len); break;
    case 3: exit_msg(p, len); break;
    case 4: fs_req(p, len); break;
    }
    return 0;
}
