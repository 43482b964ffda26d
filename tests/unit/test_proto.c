/* Unit tests of the agent wire protocol: encoding, decoding and hostile input. */
#include <errno.h>
#include <sys/socket.h>

#include "harness.h"
#include "common/util.h"
#include "proto/proto.h"

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Builds a raw payload field by field, including malformed ones. */
typedef struct {
    uint8_t buf[4096];
    size_t len;
} raw_t;

static void raw_field(raw_t *r, uint16_t tag, const void *val, size_t len)
{
    r->buf[r->len] = (uint8_t)tag;
    r->buf[r->len + 1] = (uint8_t)(tag >> 8);
    put_u32(r->buf + r->len + 2, (uint32_t)len);
    memcpy(r->buf + r->len + 6, val, len);
    r->len += 6 + len;
}

static void raw_str(raw_t *r, uint16_t tag, const char *s)
{
    raw_field(r, tag, s, strlen(s));
}

static void raw_int(raw_t *r, uint16_t tag, int64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)v >> (8 * i));
    raw_field(r, tag, b, 8);
}

static int decode_raw(const raw_t *r)
{
    sbx_exec_req_t req;
    int rc = sbx_exec_req_decode(r->buf, r->len, &req);
    if (rc == 0)
        sbx_exec_req_release(&req);
    return rc;
}

TEST(frame_layout_is_little_endian)
{
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_STDOUT);
    sbx_msg_add_bytes(&m, SBX_TAG_DATA, "abc", 3);
    sbx_msg_add_int(&m, SBX_TAG_PID, 0x0102030405060708LL);
    size_t n = sbx_msg_end(&m);
    CHECK_EQ_INT(n, 12 + 6 + 3 + 6 + 8);
    const uint8_t want_hdr[12] = {23, 0, 0, 0, 65, 0, 0, 0, 0, 0, 0, 0};
    CHECK(!memcmp(m.buf, want_hdr, 12));
    const uint8_t want_f1[9] = {6, 0, 3, 0, 0, 0, 'a', 'b', 'c'};
    CHECK(!memcmp(m.buf + 12, want_f1, 9));
    const uint8_t want_f2[14] = {8, 0, 8, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1};
    CHECK(!memcmp(m.buf + 21, want_f2, 14));

    sbx_frame_hdr_t h;
    CHECK_EQ_INT(sbx_frame_hdr_decode(m.buf, &h), 0);
    CHECK_EQ_INT(h.len, 23);
    CHECK_EQ_INT(h.type, SBX_MSG_STDOUT);

    /* begin reuses the buffer and starts over. */
    sbx_msg_begin(&m, SBX_MSG_PING);
    CHECK_EQ_INT(sbx_msg_end(&m), 12);
    CHECK_EQ_INT(m.buf[0], 0);
    sbx_msg_release(&m);
    CHECK(m.buf == NULL);
}

TEST(header_rejects_oversize_and_reserved)
{
    uint8_t raw[12] = {0};
    sbx_frame_hdr_t h;
    put_u32(raw, SBX_PROTO_MAX_PAYLOAD);
    CHECK_EQ_INT(sbx_frame_hdr_decode(raw, &h), 0);
    put_u32(raw, SBX_PROTO_MAX_PAYLOAD + 1);
    errno = 0;
    CHECK_EQ_INT(sbx_frame_hdr_decode(raw, &h), -1);
    CHECK_EQ_INT(errno, EPROTO);
    put_u32(raw, 0xffffffffu);
    CHECK_EQ_INT(sbx_frame_hdr_decode(raw, &h), -1);

    put_u32(raw, 4);
    raw[6] = 1; /* flags */
    CHECK_EQ_INT(sbx_frame_hdr_decode(raw, &h), -1);
    raw[6] = 0;
    raw[11] = 0x80; /* stream */
    CHECK_EQ_INT(sbx_frame_hdr_decode(raw, &h), -1);
    CHECK_EQ_INT(errno, EPROTO);
}

TEST(frames_round_trip_over_a_socket)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_EQ_INT(sbx_proto_send_empty(sv[0], SBX_MSG_STDIN_EOF), 0);
    CHECK_EQ_INT(sbx_proto_send_data(sv[0], SBX_MSG_STDIN, "a\0b", 3), 0);
    CHECK_EQ_INT(sbx_proto_send_data(sv[0], SBX_MSG_STDOUT, "", 0), 0);
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_SIGNAL);
    sbx_msg_add_int(&m, SBX_TAG_SIGNO, -15);
    CHECK_EQ_INT(sbx_msg_send(sv[0], &m), 0); /* send finishes the frame itself */
    sbx_msg_release(&m);
    close(sv[0]);

    sbx_frame_hdr_t h;
    uint8_t *p;
    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_STDIN_EOF);
    CHECK_EQ_INT(h.len, 0);
    free(p);

    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_STDIN);
    sbx_field_iter_t it;
    sbx_field_t f;
    sbx_field_iter_init(&it, p, h.len);
    CHECK_EQ_INT(sbx_field_next(&it, &f), 1);
    CHECK_EQ_INT(f.tag, SBX_TAG_DATA);
    CHECK_EQ_INT(f.len, 3);
    CHECK(!memcmp(f.val, "a\0b", 3));
    CHECK_EQ_INT(sbx_field_next(&it, &f), 0);
    free(p);

    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_STDOUT);
    sbx_field_iter_init(&it, p, h.len);
    CHECK_EQ_INT(sbx_field_next(&it, &f), 1);
    CHECK_EQ_INT(f.len, 0);
    free(p);

    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_SIGNAL);
    sbx_field_iter_init(&it, p, h.len);
    CHECK_EQ_INT(sbx_field_next(&it, &f), 1);
    int64_t v = 0;
    CHECK_EQ_INT(sbx_field_int(&f, &v), 0);
    CHECK_EQ_INT(v, -15);
    free(p);

    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), 0); /* clean EOF */
    close(sv[1]);
}

TEST(frame_read_rejects_bad_frames)
{
    int sv[2];
    uint8_t raw[12] = {0};
    sbx_frame_hdr_t h;
    uint8_t *p = (uint8_t *)1;

    /* An oversized length is refused before any allocation or read of the payload. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    put_u32(raw, SBX_PROTO_MAX_PAYLOAD + 1);
    CHECK(write(sv[0], raw, 12) == 12);
    errno = 0;
    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), -1);
    CHECK_EQ_INT(errno, EPROTO);
    CHECK(p == NULL);
    close(sv[0]);
    close(sv[1]);

    /* A payload cut short by EOF is an error, not a frame. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    put_u32(raw, 10);
    CHECK(write(sv[0], raw, 12) == 12);
    CHECK(write(sv[0], "abc", 3) == 3);
    close(sv[0]);
    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), -1);
    close(sv[1]);

    /* A header cut short is an error too. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(write(sv[0], raw, 5) == 5);
    close(sv[0]);
    CHECK_EQ_INT(sbx_frame_read(sv[1], &h, &p), -1);
    close(sv[1]);
}

TEST(send_refuses_oversized_payload)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    size_t big = SBX_PROTO_MAX_PAYLOAD;
    char *data = xcalloc(1, big);
    errno = 0;
    CHECK_EQ_INT(sbx_proto_send_data(sv[0], SBX_MSG_STDIN, data, big - 5), -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_STDIN);
    sbx_msg_add_bytes(&m, SBX_TAG_DATA, data, big);
    CHECK_EQ_INT(sbx_msg_send(sv[0], &m), -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    sbx_msg_release(&m);
    free(data);
}

TEST(send_to_closed_peer_is_epipe_not_sigpipe)
{
    /* SIGPIPE is left at its default here: the send itself must not raise it. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[1]);
    errno = 0;
    CHECK_EQ_INT(sbx_proto_send_data(sv[0], SBX_MSG_STDOUT, "x", 1), -1);
    CHECK_EQ_INT(errno, EPIPE);
    CHECK_EQ_INT(sbx_proto_send_empty(sv[0], SBX_MSG_PING), -1);
    close(sv[0]);
}

TEST(send_works_on_a_pipe)
{
    int pp[2];
    CHECK(pipe(pp) == 0);
    CHECK_EQ_INT(sbx_proto_send_data(pp[1], SBX_MSG_STDERR, "hey", 3), 0);
    close(pp[1]);
    sbx_frame_hdr_t h;
    uint8_t *p;
    CHECK_EQ_INT(sbx_frame_read(pp[0], &h, &p), 1);
    CHECK_EQ_INT(h.type, SBX_MSG_STDERR);
    CHECK_EQ_INT(h.len, 9);
    CHECK(!memcmp(p + 6, "hey", 3));
    free(p);
}

TEST(field_iter_rejects_truncation)
{
    raw_t r = {.len = 0};
    raw_str(&r, SBX_TAG_ARGV, "x");
    sbx_field_iter_t it;
    sbx_field_t f;

    /* A truncated field header. */
    for (size_t cut = 1; cut < 6; cut++) {
        sbx_field_iter_init(&it, r.buf, cut);
        CHECK_EQ_INT(sbx_field_next(&it, &f), -1);
    }
    /* A value cut short. */
    sbx_field_iter_init(&it, r.buf, r.len - 1);
    CHECK_EQ_INT(sbx_field_next(&it, &f), -1);
    /* A length far past the end, including one that would wrap a 32-bit sum. */
    put_u32(r.buf + 2, 0xfffffffau);
    sbx_field_iter_init(&it, r.buf, r.len);
    CHECK_EQ_INT(sbx_field_next(&it, &f), -1);
    /* An empty payload has no fields. */
    sbx_field_iter_init(&it, r.buf, 0);
    CHECK_EQ_INT(sbx_field_next(&it, &f), 0);
    sbx_field_iter_init(&it, NULL, 0);
    CHECK_EQ_INT(sbx_field_next(&it, &f), 0);

    /* Integers must be exactly 8 bytes. */
    f.len = 4;
    f.val = (const uint8_t *)"abcd";
    int64_t v;
    CHECK_EQ_INT(sbx_field_int(&f, &v), -1);
}

TEST(exec_round_trip)
{
    char *argv[] = {"sh", "-c", "echo \"$X\"", "", NULL};
    char *env[] = {"X=1", "PATH=/bin", "EMPTY=", NULL};
    sbx_exec_req_t in;
    sbx_exec_req_init(&in);
    CHECK_EQ_INT(in.uid, -1);
    CHECK_EQ_INT(in.gid, -1);
    in.argv = argv; /* counts of 0: walked up to NULL */
    in.env = env;
    in.cwd = "/workspace";
    in.timeout_ms = 1500;
    in.uid = 1000;
    in.gid = 0;
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &in);
    size_t n = sbx_msg_end(&m);

    sbx_frame_hdr_t h;
    CHECK_EQ_INT(sbx_frame_hdr_decode(m.buf, &h), 0);
    CHECK_EQ_INT(h.type, SBX_MSG_EXEC);
    CHECK_EQ_INT(h.len, n - 12);

    sbx_exec_req_t out;
    CHECK_EQ_INT(sbx_exec_req_decode(m.buf + 12, h.len, &out), 0);
    CHECK_EQ_INT(out.argc, 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_STR(out.argv[i], argv[i]);
    CHECK(out.argv[4] == NULL);
    CHECK_EQ_INT(out.envc, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_STR(out.env[i], env[i]);
    CHECK(out.env[3] == NULL);
    CHECK_EQ_STR(out.cwd, "/workspace");
    CHECK_EQ_INT(out.timeout_ms, 1500);
    CHECK_EQ_INT(out.flags, 0);
    CHECK_EQ_INT(out.uid, 1000);
    CHECK_EQ_INT(out.gid, 0);
    sbx_exec_req_release(&out);
    CHECK(out.argv == NULL && out.env == NULL && out.cwd == NULL);

    /* Minimal request: absent optional fields decode as their defaults. */
    char *argv2[] = {"true", NULL};
    sbx_exec_req_init(&in);
    in.argv = argv2;
    in.argc = 1;
    sbx_exec_req_encode(&m, &in);
    sbx_msg_end(&m);
    CHECK_EQ_INT(sbx_exec_req_decode(m.buf + 12, m.len - 12, &out), 0);
    CHECK_EQ_INT(out.argc, 1);
    CHECK_EQ_INT(out.envc, 0);
    CHECK(out.env != NULL && out.env[0] == NULL);
    CHECK(out.cwd == NULL);
    CHECK_EQ_INT(out.timeout_ms, 0);
    CHECK_EQ_INT(out.uid, -1);
    CHECK_EQ_INT(out.gid, -1);
    sbx_exec_req_release(&out);
    sbx_msg_release(&m);
}

TEST(exec_repeated_tags_keep_order_and_unknown_tags_are_skipped)
{
    raw_t r = {.len = 0};
    raw_str(&r, SBX_TAG_ENV, "A=1");
    raw_str(&r, SBX_TAG_ARGV, "prog");
    raw_str(&r, 999, "future field");
    raw_str(&r, SBX_TAG_ENV, "B=2");
    raw_str(&r, SBX_TAG_ARGV, "one");
    raw_str(&r, SBX_TAG_ENV, "A=3");
    raw_str(&r, SBX_TAG_ARGV, "two");
    sbx_exec_req_t req;
    CHECK_EQ_INT(sbx_exec_req_decode(r.buf, r.len, &req), 0);
    CHECK_EQ_INT(req.argc, 3);
    CHECK_EQ_STR(req.argv[0], "prog");
    CHECK_EQ_STR(req.argv[1], "one");
    CHECK_EQ_STR(req.argv[2], "two");
    CHECK_EQ_INT(req.envc, 3);
    CHECK_EQ_STR(req.env[0], "A=1");
    CHECK_EQ_STR(req.env[1], "B=2");
    CHECK_EQ_STR(req.env[2], "A=3");
    sbx_exec_req_release(&req);
}

TEST(exec_rejects_hostile_requests)
{
    raw_t r;

    /* Missing argv. */
    r.len = 0;
    raw_str(&r, SBX_TAG_ENV, "A=1");
    CHECK_EQ_INT(decode_raw(&r), -1);
    CHECK_EQ_INT(errno, EPROTO);
    r.len = 0;
    CHECK_EQ_INT(decode_raw(&r), -1);

    /* Empty argv[0] (a later empty argument is fine). */
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "");
    raw_str(&r, SBX_TAG_ARGV, "x");
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_str(&r, SBX_TAG_ARGV, "");
    CHECK_EQ_INT(decode_raw(&r), 0);

    /* NUL inside argv, env or cwd. */
    r.len = 0;
    raw_field(&r, SBX_TAG_ARGV, "a\0b", 3);
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_field(&r, SBX_TAG_ENV, "A=\0", 3);
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_field(&r, SBX_TAG_CWD, "/tmp\0", 5);
    CHECK_EQ_INT(decode_raw(&r), -1);

    /* Truncated field and a length past the end. */
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_str(&r, SBX_TAG_ARGV, "yz");
    CHECK_EQ_INT(decode_raw(&r), 0);
    r.len -= 1;
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len += 1;
    put_u32(r.buf + 7 + 2, 3); /* second field claims 3 bytes, 2 present */
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 7 + 3; /* a dangling partial field header */
    CHECK_EQ_INT(decode_raw(&r), -1);

    /* Integer fields of the wrong size, negative timeout, uid out of range. */
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_field(&r, SBX_TAG_TIMEOUT_MS, "1234", 4);
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_int(&r, SBX_TAG_TIMEOUT_MS, -1);
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_int(&r, SBX_TAG_UID, (int64_t)UINT32_MAX);
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_int(&r, SBX_TAG_GID, -5);
    CHECK_EQ_INT(decode_raw(&r), -1);

    /* A repeated scalar is ambiguous. */
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_str(&r, SBX_TAG_CWD, "/a");
    raw_str(&r, SBX_TAG_CWD, "/b");
    CHECK_EQ_INT(decode_raw(&r), -1);
    r.len = 0;
    raw_str(&r, SBX_TAG_ARGV, "x");
    raw_int(&r, SBX_TAG_UID, 1);
    raw_int(&r, SBX_TAG_UID, 0);
    CHECK_EQ_INT(decode_raw(&r), -1);
}

TEST(exec_entry_cap)
{
    /* 65536 entries are accepted, 65537 are not (empty env strings keep it small). */
    size_t cap = 6 * 65538 + 16;
    uint8_t *buf = xmalloc(cap);
    size_t len = 0;
    buf[len++] = SBX_TAG_ARGV;
    buf[len++] = 0;
    put_u32(buf + len, 1);
    len += 4;
    buf[len++] = 'x';
    for (int i = 0; i < 65536; i++) {
        buf[len] = SBX_TAG_ENV;
        buf[len + 1] = 0;
        put_u32(buf + len + 2, 0);
        len += 6;
    }
    sbx_exec_req_t req;
    CHECK_EQ_INT(sbx_exec_req_decode(buf, len, &req), 0);
    CHECK_EQ_INT(req.envc, 65536);
    sbx_exec_req_release(&req);
    buf[len] = SBX_TAG_ENV;
    buf[len + 1] = 0;
    put_u32(buf + len + 2, 0);
    len += 6;
    CHECK_EQ_INT(sbx_exec_req_decode(buf, len, &req), -1);
    free(buf);
}

TEST(exec_decoder_survives_garbage)
{
    /* Deterministic pseudo-random payloads, many with plausible tags: the decoder must
     * never crash and must leave *req empty when it refuses. */
    uint32_t s = 12345;
    uint8_t buf[512];
    int accepted = 0;
    for (int round = 0; round < 200000; round++) {
        size_t len = 0;
        s = s * 1103515245u + 12345u;
        size_t want = (s >> 16) % sizeof buf;
        while (len < want) {
            s = s * 1103515245u + 12345u;
            uint8_t b = (uint8_t)(s >> 16);
            /* Bias towards small values so tags and lengths are often meaningful. */
            buf[len++] = (s >> 28) < 10 ? (uint8_t)(b % 20) : b;
        }
        sbx_exec_req_t req;
        if (sbx_exec_req_decode(buf, len, &req) == 0) {
            accepted++;
            CHECK(req.argc >= 1 && req.argv[0][0] != 0);
            CHECK(req.argv[req.argc] == NULL && req.env[req.envc] == NULL);
            sbx_exec_req_release(&req);
        } else {
            CHECK(req.argv == NULL && req.env == NULL && req.cwd == NULL);
        }
        sbx_exit_info_t ei;
        (void)sbx_exit_decode(buf, len, &ei);
    }
    (void)accepted;
}

TEST(exit_round_trip_and_rejects)
{
    sbx_exit_info_t in = {137, 9, true, 1234}, out;
    sbx_msg_t m = {0};
    sbx_exit_encode(&m, &in);
    sbx_msg_end(&m);
    CHECK_EQ_INT(m.buf[4], SBX_MSG_EXIT);
    CHECK_EQ_INT(sbx_exit_decode(m.buf + 12, m.len - 12, &out), 0);
    CHECK_EQ_INT(out.exit_code, 137);
    CHECK_EQ_INT(out.signo, 9);
    CHECK(out.timed_out);
    CHECK_EQ_INT(out.duration_ms, 1234);
    /* Truncated. */
    CHECK_EQ_INT(sbx_exit_decode(m.buf + 12, m.len - 13, &out), -1);
    sbx_msg_release(&m);

    raw_t r = {.len = 0};
    raw_int(&r, SBX_TAG_DURATION_MS, 5);
    CHECK_EQ_INT(sbx_exit_decode(r.buf, r.len, &out), -1); /* no exit code */
    raw_int(&r, SBX_TAG_EXIT_CODE, 3);
    raw_str(&r, 4242, "unknown");
    CHECK_EQ_INT(sbx_exit_decode(r.buf, r.len, &out), 0);
    CHECK_EQ_INT(out.exit_code, 3);
    CHECK_EQ_INT(out.signo, 0);
    CHECK(!out.timed_out);
    r.len = 0;
    raw_int(&r, SBX_TAG_EXIT_CODE, 256);
    CHECK_EQ_INT(sbx_exit_decode(r.buf, r.len, &out), -1);
    r.len = 0;
    raw_int(&r, SBX_TAG_EXIT_CODE, -1);
    CHECK_EQ_INT(sbx_exit_decode(r.buf, r.len, &out), -1);
    r.len = 0;
    raw_field(&r, SBX_TAG_EXIT_CODE, "\0\0\0\0", 4);
    CHECK_EQ_INT(sbx_exit_decode(r.buf, r.len, &out), -1);
    CHECK_EQ_INT(errno, EPROTO);
}

SBX_TEST_MAIN()
