/* Tests of sandbox-agent's file operations (FS sessions) driven over its socket, outside a
 * sandbox: the agent is started with --socket in a temporary directory and every path is
 * a path below that directory.  RESULT texts are parsed with jansson, so each test also
 * checks that the agent's hand-written JSON is valid. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "agent_harness.h"
#include "harness.h"
#include "common/util.h"
#include "proto/proto.h"

#pragma GCC diagnostic ignored "-Woverride-init"

/* Starts a private agent for the calling test; it dies with the test process. */
static void start_agent(void)
{
    start_agent_in("/tmp/sbx-agent-fs-XXXXXX");
}

/* A path below the test's directory (static buffers in rotation). */
static const char *P(const char *rel)
{
    static char bufs[8][PATH_MAX];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, PATH_MAX, "%s/%s", tmpdir, rel);
    return b;
}

static void put(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(sbx_write_all(fd, data, len) == 0);
    close(fd);
}

static void puts_file(const char *path, const char *s)
{
    put(path, s, strlen(s));
}

static char *slurp(const char *path, size_t *len)
{
    sbx_err_t err = SBX_ERR_INIT;
    char *s = sbx_read_file(path, len, &err);
    CHECK(s != NULL);
    return s;
}

/* ---- the client side of the protocol ------------------------------------------------ */

#define NONE INT64_MIN
typedef struct {
    const char *op, *path, *path2, *text, *text2;
    int64_t mode, offset, length, flags, uid, gid;
} fsreq_t;
#define REQ(...)                                                                                             \
    ((fsreq_t){                                                                                              \
        .mode = NONE, .offset = NONE, .length = NONE, .flags = NONE, .uid = NONE, .gid = NONE, __VA_ARGS__})

static void send_req(int fd, const fsreq_t *q)
{
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_FS);
    const struct {
        uint16_t tag;
        const char *s;
    } strs[] = {{SBX_TAG_OP, q->op},
                {SBX_TAG_PATH, q->path},
                {SBX_TAG_PATH2, q->path2},
                {SBX_TAG_TEXT, q->text},
                {SBX_TAG_TEXT2, q->text2}};
    const struct {
        uint16_t tag;
        int64_t v;
    } ints[] = {{SBX_TAG_MODE, q->mode},      {SBX_TAG_OFFSET, q->offset}, {SBX_TAG_LENGTH, q->length},
                {SBX_TAG_FS_FLAGS, q->flags}, {SBX_TAG_UID, q->uid},       {SBX_TAG_GID, q->gid}};
    for (size_t i = 0; i < SBX_ARRAY_LEN(strs); i++)
        if (strs[i].s)
            sbx_msg_add_str(&m, strs[i].tag, strs[i].s);
    for (size_t i = 0; i < SBX_ARRAY_LEN(ints); i++)
        if (ints[i].v != NONE)
            sbx_msg_add_int(&m, ints[i].tag, ints[i].v);
    CHECK_EQ_INT(sbx_msg_send(fd, &m), 0);
    sbx_msg_release(&m);
}

typedef struct {
    uint16_t type;
    json_t *json;   /* RESULT */
    int64_t err;    /* ERROR: ERRNO */
    char msg[1024]; /* ERROR: MESSAGE */
    uint8_t *data;  /* DATA */
    size_t len;
} frame_t;

/* Reads one frame from the agent; type 0 on EOF. */
static void read_frame(int fd, frame_t *f)
{
    memset(f, 0, sizeof *f);
    sbx_frame_hdr_t h;
    uint8_t *p = NULL;
    int rc = sbx_frame_read(fd, &h, &p);
    CHECK(rc >= 0);
    if (rc == 0)
        return;
    f->type = h.type;
    sbx_field_iter_t it;
    sbx_field_t fl;
    sbx_field_iter_init(&it, p, h.len);
    while (sbx_field_next(&it, &fl) > 0) {
        if (fl.tag == SBX_TAG_MESSAGE && h.type == SBX_MSG_RESULT) {
            CHECK(fl.len < SBX_PROTO_MAX_PAYLOAD);
            json_error_t je;
            f->json = json_loadb((const char *)fl.val, fl.len, 0, &je);
            if (!f->json)
                fprintf(stderr, "  bad JSON: %s: %.*s\n", je.text, (int)(fl.len > 300 ? 300 : fl.len),
                        (const char *)fl.val);
            CHECK(f->json != NULL);
        } else if (fl.tag == SBX_TAG_MESSAGE) {
            snprintf(f->msg, sizeof f->msg, "%.*s", (int)fl.len, (const char *)fl.val);
        } else if (fl.tag == SBX_TAG_ERRNO) {
            CHECK(sbx_field_int(&fl, &f->err) == 0);
        } else if (fl.tag == SBX_TAG_DATA) {
            f->data = xmalloc(fl.len + 1);
            memcpy(f->data, fl.val, fl.len);
            f->len = fl.len;
        }
    }
    free(p);
}

/* Runs one request that is answered by a single RESULT or ERROR. */
static void call(fsreq_t q, frame_t *f)
{
    int fd = try_connect();
    CHECK(fd >= 0);
    send_req(fd, &q);
    read_frame(fd, f);
    CHECK(f->type == SBX_MSG_RESULT || f->type == SBX_MSG_ERROR);
    close(fd);
}

/* Expects a RESULT; the caller owns the JSON. */
static json_t *ok(fsreq_t q)
{
    frame_t f;
    call(q, &f);
    if (f.type == SBX_MSG_ERROR)
        fprintf(stderr, "  unexpected ERROR %lld: %s\n", (long long)f.err, f.msg);
    CHECK_EQ_INT(f.type, SBX_MSG_RESULT);
    return f.json;
}

/* Expects an ERROR and returns its errno. */
static int64_t fail(fsreq_t q)
{
    frame_t f;
    call(q, &f);
    if (f.type == SBX_MSG_RESULT) {
        char *s = json_dumps(f.json, 0);
        fprintf(stderr, "  unexpected RESULT %s\n", s);
        free(s);
    }
    CHECK_EQ_INT(f.type, SBX_MSG_ERROR);
    CHECK(f.msg[0] != 0);
    return f.err;
}

static void ok_simple(fsreq_t q)
{
    json_t *j = ok(q);
    CHECK(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static long long jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    CHECK(json_is_integer(v));
    return json_integer_value(v);
}

/* Opens a write session and checks for RESULT {"ready":true}; returns the connection. */
static int write_begin(fsreq_t q)
{
    q.op = "write";
    int fd = try_connect();
    CHECK(fd >= 0);
    send_req(fd, &q);
    frame_t f;
    read_frame(fd, &f);
    if (f.type == SBX_MSG_ERROR)
        fprintf(stderr, "  write refused: %lld %s\n", (long long)f.err, f.msg);
    CHECK_EQ_INT(f.type, SBX_MSG_RESULT);
    CHECK(json_is_true(json_object_get(f.json, "ready")));
    json_decref(f.json);
    return fd;
}

static void write_data(int fd, const void *data, size_t len)
{
    const size_t step = 256 * 1024;
    size_t off = 0;
    do {
        size_t k = len - off < step ? len - off : step;
        CHECK_EQ_INT(sbx_proto_send_data(fd, SBX_MSG_DATA, (const uint8_t *)data + off, k), 0);
        off += k;
    } while (off < len);
}

/* Sends END and returns the final RESULT's "size". */
static long long write_end(int fd)
{
    CHECK_EQ_INT(sbx_proto_send_empty(fd, SBX_MSG_END), 0);
    frame_t f;
    read_frame(fd, &f);
    if (f.type == SBX_MSG_ERROR)
        fprintf(stderr, "  write failed: %lld %s\n", (long long)f.err, f.msg);
    CHECK_EQ_INT(f.type, SBX_MSG_RESULT);
    long long size = jint(f.json, "size");
    CHECK(jstr(f.json, "path") != NULL);
    json_decref(f.json);
    close(fd);
    return size;
}

static long long write_file(fsreq_t q, const void *data, size_t len)
{
    int fd = write_begin(q);
    write_data(fd, data, len);
    return write_end(fd);
}

/* Reads through the agent; returns the content (heap) and its RESULT via *stat_out. */
static uint8_t *read_file(fsreq_t q, size_t *len, json_t **stat_out)
{
    q.op = "read";
    int fd = try_connect();
    CHECK(fd >= 0);
    send_req(fd, &q);
    frame_t f;
    read_frame(fd, &f);
    CHECK_EQ_INT(f.type, SBX_MSG_RESULT);
    if (stat_out)
        *stat_out = f.json;
    else
        json_decref(f.json);
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        read_frame(fd, &f);
        if (f.type == SBX_MSG_END)
            break;
        CHECK_EQ_INT(f.type, SBX_MSG_DATA);
        CHECK(f.len <= 256 * 1024);
        while (n + f.len > cap)
            cap *= 2;
        buf = xrealloc(buf, cap);
        memcpy(buf + n, f.data, f.len);
        n += f.len;
        free(f.data);
    }
    close(fd);
    *len = n;
    return buf;
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((i * 2654435761u) >> 13) ^ (uint8_t)(i / 251);
    for (size_t i = 0; i < n; i += 97)
        p[i] = 0;
    return p;
}

/* Counts the entries of dir whose name contains needle. */
static int count_names(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, needle) != NULL;
    closedir(d);
    return n;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    CHECK(lstat(path, &st) == 0);
    return st.st_mode & 07777;
}

/* ---- tests ------------------------------------------------------------------------- */

TEST(stat_result_shapes)
{
    start_agent();
    puts_file(P("f.txt"), "hello");
    CHECK(chmod(P("f.txt"), 0644) == 0);
    CHECK(mkdir(P("d"), 0755) == 0);
    CHECK(symlink("d", P("ld")) == 0);
    CHECK(symlink("f.txt", P("lf")) == 0);

    json_t *j = ok(REQ(.op = "stat", .path = P("f.txt")));
    CHECK_EQ_STR(jstr(j, "path"), P("f.txt"));
    CHECK_EQ_STR(jstr(j, "name"), "f.txt");
    CHECK_EQ_STR(jstr(j, "type"), "file");
    CHECK_EQ_INT(jint(j, "size"), 5);
    CHECK_EQ_INT(jint(j, "mode"), 0644);
    CHECK_EQ_STR(jstr(j, "permissions"), "-rw-r--r--");
    CHECK_EQ_INT(jint(j, "uid"), getuid());
    CHECK_EQ_INT(jint(j, "gid"), getgid());
    if (getuid() == 0) {
        CHECK_EQ_STR(jstr(j, "owner"), "root");
        CHECK_EQ_STR(jstr(j, "group"), "root");
    }
    struct stat st;
    CHECK(stat(P("f.txt"), &st) == 0);
    CHECK_EQ_INT(jint(j, "mtime"), (long long)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000);
    CHECK(json_object_get(j, "target") == NULL);
    json_decref(j);

    j = ok(REQ(.op = "stat", .path = P("d/")));
    CHECK_EQ_STR(jstr(j, "type"), "directory");
    CHECK_EQ_STR(jstr(j, "path"), P("d"));
    CHECK_EQ_STR(jstr(j, "permissions"), "drwxr-xr-x");
    json_decref(j);

    j = ok(REQ(.op = "stat", .path = P("ld")));
    CHECK_EQ_STR(jstr(j, "type"), "symlink");
    CHECK_EQ_STR(jstr(j, "target"), "d");
    CHECK_EQ_STR(jstr(j, "targetType"), "directory");
    CHECK(jstr(j, "permissions")[0] == 'l');
    json_decref(j);

    j = ok(REQ(.op = "stat", .path = P("lf")));
    CHECK_EQ_STR(jstr(j, "target"), "f.txt");
    CHECK_EQ_STR(jstr(j, "targetType"), "file");
    json_decref(j);

    CHECK(chmod(P("f.txt"), 04755) == 0);
    CHECK(chmod(P("d"), 01777) == 0);
    j = ok(REQ(.op = "stat", .path = P("f.txt")));
    CHECK_EQ_STR(jstr(j, "permissions"), "-rwsr-xr-x");
    CHECK_EQ_INT(jint(j, "mode"), 04755);
    json_decref(j);
    j = ok(REQ(.op = "stat", .path = P("d")));
    CHECK_EQ_STR(jstr(j, "permissions"), "drwxrwxrwt");
    json_decref(j);

    CHECK_EQ_INT(fail(REQ(.op = "stat", .path = P("missing"))), ENOENT);
    CHECK_EQ_INT(fail(REQ(.op = "stat", .path = P("f.txt/x"))), ENOTDIR);
}

TEST(requests_are_validated)
{
    start_agent();
    CHECK_EQ_INT(fail(REQ(.op = "stat", .path = "relative/path")), EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "stat", .path = "")), EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "stat")), EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "frobnicate", .path = "/")), EOPNOTSUPP);
    CHECK_EQ_INT(fail(REQ(.path = "/")), EOPNOTSUPP);
    char *longp = xmalloc(8000);
    memset(longp, 'a', 7999);
    longp[0] = '/';
    longp[7999] = 0;
    CHECK_EQ_INT(fail(REQ(.op = "stat", .path = longp)), ENAMETOOLONG);
    CHECK_EQ_INT(fail(REQ(.op = "ls", .path = longp)), ENAMETOOLONG);
    longp[300] = 0;
    CHECK_EQ_INT(fail(REQ(.op = "stat", .path = longp)), ENAMETOOLONG);
    free(longp);

    /* A repeated field is malformed. */
    int fd = try_connect();
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_FS);
    sbx_msg_add_str(&m, SBX_TAG_OP, "stat");
    sbx_msg_add_str(&m, SBX_TAG_PATH, "/");
    sbx_msg_add_str(&m, SBX_TAG_PATH, "/tmp");
    CHECK_EQ_INT(sbx_msg_send(fd, &m), 0);
    sbx_msg_release(&m);
    frame_t f;
    read_frame(fd, &f);
    CHECK_EQ_INT(f.type, SBX_MSG_ERROR);
    CHECK_EQ_INT(f.err, EPROTO);
    close(fd);

    /* The error message names the operation and the path. */
    call(REQ(.op = "stat", .path = P("nope")), &f);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "stat %s: No such file or directory", P("nope"));
    CHECK_EQ_STR(f.msg, want);
}

TEST(ls_lists_sorted_and_recursive)
{
    start_agent();
    CHECK(mkdir(P("t"), 0755) == 0);
    CHECK(mkdir(P("t/b"), 0755) == 0);
    puts_file(P("t/c"), "c");
    puts_file(P("t/a"), "aa");
    puts_file(P("t/b/x"), "x");
    CHECK(symlink("..", P("t/b/up")) == 0);   /* a loop if followed */
    CHECK(symlink("loop", P("t/loop")) == 0); /* a self loop */

    json_t *j = ok(REQ(.op = "ls", .path = P("t")));
    json_t *e = json_object_get(j, "entries");
    CHECK_EQ_INT(json_array_size(e), 4);
    CHECK_EQ_STR(jstr(json_array_get(e, 0), "name"), "a");
    CHECK_EQ_STR(jstr(json_array_get(e, 0), "path"), P("t/a"));
    CHECK_EQ_INT(jint(json_array_get(e, 0), "size"), 2);
    CHECK_EQ_STR(jstr(json_array_get(e, 1), "name"), "b");
    CHECK_EQ_STR(jstr(json_array_get(e, 1), "type"), "directory");
    CHECK_EQ_STR(jstr(json_array_get(e, 2), "name"), "c");
    CHECK_EQ_STR(jstr(json_array_get(e, 3), "name"), "loop");
    CHECK_EQ_STR(jstr(json_array_get(e, 3), "type"), "symlink");
    CHECK(json_is_false(json_object_get(j, "truncated")));
    json_decref(j);

    j = ok(REQ(.op = "ls", .path = P("t"), .flags = SBX_FS_RECURSIVE));
    e = json_object_get(j, "entries");
    const char *want[] = {"t/a", "t/b", "t/b/up", "t/b/x", "t/c", "t/loop"};
    CHECK_EQ_INT(json_array_size(e), SBX_ARRAY_LEN(want));
    for (size_t i = 0; i < SBX_ARRAY_LEN(want); i++)
        CHECK_EQ_STR(jstr(json_array_get(e, i), "path"), P(want[i]));
    json_decref(j);

    j = ok(REQ(.op = "ls", .path = P("t"), .flags = SBX_FS_RECURSIVE, .length = 2));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "entries")), 2);
    CHECK(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);

    CHECK_EQ_INT(fail(REQ(.op = "ls", .path = P("t/a"))), ENOTDIR);
    CHECK_EQ_INT(fail(REQ(.op = "ls", .path = P("none"))), ENOENT);
}

TEST(ls_result_stays_below_the_frame_limit)
{
    start_agent();
    CHECK(mkdir(P("many"), 0755) == 0);
    char name[300];
    for (int i = 0; i < 4000; i++) {
        snprintf(name, sizeof name, "many/%04d-%0200d", i, 0);
        puts_file(P(name), "");
    }
    json_t *j = ok(REQ(.op = "ls", .path = P("many")));
    size_t n = json_array_size(json_object_get(j, "entries"));
    CHECK(n > 100 && n < 4000);
    CHECK(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
}

TEST(mkdir_modes_parents_and_errors)
{
    start_agent();
    ok_simple(REQ(.op = "mkdir", .path = P("m1")));
    CHECK_EQ_INT(mode_of(P("m1")), 0755);
    ok_simple(REQ(.op = "mkdir", .path = P("m2"), .mode = 0700));
    CHECK_EQ_INT(mode_of(P("m2")), 0700);
    CHECK_EQ_INT(fail(REQ(.op = "mkdir", .path = P("m1"))), EEXIST);
    CHECK_EQ_INT(fail(REQ(.op = "mkdir", .path = P("x/y/z"))), ENOENT);
    ok_simple(REQ(.op = "mkdir", .path = P("x/y/z"), .flags = SBX_FS_PARENTS, .mode = 0750));
    CHECK_EQ_INT(mode_of(P("x/y/z")), 0750);
    CHECK_EQ_INT(mode_of(P("x/y")), 0755);
    ok_simple(REQ(.op = "mkdir", .path = P("x/y/z"), .flags = SBX_FS_PARENTS));
    CHECK_EQ_INT(fail(REQ(.op = "mkdir", .path = P("x/y/z"), .flags = SBX_FS_PARENTS | SBX_FS_EXCLUSIVE)),
                 EEXIST);
    puts_file(P("file"), "");
    CHECK_EQ_INT(fail(REQ(.op = "mkdir", .path = P("file"), .flags = SBX_FS_PARENTS)), EEXIST);
    CHECK_EQ_INT(fail(REQ(.op = "mkdir", .path = P("file/sub"), .flags = SBX_FS_PARENTS)), ENOTDIR);
}

TEST(rm_and_rmdir)
{
    start_agent();
    puts_file(P("f"), "x");
    ok_simple(REQ(.op = "rm", .path = P("f")));
    CHECK(access(P("f"), F_OK) != 0);
    CHECK_EQ_INT(fail(REQ(.op = "rm", .path = P("f"))), ENOENT);
    ok_simple(REQ(.op = "rm", .path = P("f"), .flags = SBX_FS_FORCE));

    /* A tree with symlinks pointing out of it: only the links go. */
    CHECK(mkdir(P("keep"), 0755) == 0);
    puts_file(P("keep/precious"), "p");
    CHECK(mkdir(P("tree"), 0755) == 0);
    CHECK(mkdir(P("tree/sub"), 0755) == 0);
    puts_file(P("tree/sub/a"), "a");
    CHECK(symlink(P("keep"), P("tree/sub/link")) == 0);
    CHECK(symlink(P("keep/precious"), P("tree/flink")) == 0);
    CHECK_EQ_INT(fail(REQ(.op = "rm", .path = P("tree"))), EISDIR);
    ok_simple(REQ(.op = "rm", .path = P("tree"), .flags = SBX_FS_RECURSIVE));
    CHECK(access(P("tree"), F_OK) != 0);
    CHECK(access(P("keep/precious"), F_OK) == 0);

    /* rm on a symlink to a directory removes the link. */
    CHECK(symlink(P("keep"), P("dl")) == 0);
    ok_simple(REQ(.op = "rm", .path = P("dl"), .flags = SBX_FS_RECURSIVE));
    CHECK(access(P("keep/precious"), F_OK) == 0);

    CHECK(mkdir(P("e"), 0755) == 0);
    CHECK(mkdir(P("ne"), 0755) == 0);
    puts_file(P("ne/x"), "");
    ok_simple(REQ(.op = "rmdir", .path = P("e")));
    CHECK_EQ_INT(fail(REQ(.op = "rmdir", .path = P("ne"))), ENOTEMPTY);
    CHECK_EQ_INT(fail(REQ(.op = "rmdir", .path = P("ne/x"))), ENOTDIR);
    CHECK_EQ_INT(fail(REQ(.op = "rmdir", .path = P("gone"))), ENOENT);
    ok_simple(REQ(.op = "rmdir", .path = P("ne"), .flags = SBX_FS_RECURSIVE));
    CHECK(access(P("ne"), F_OK) != 0);
    CHECK_EQ_INT(fail(REQ(.op = "rm", .path = "/", .flags = SBX_FS_RECURSIVE)), EBUSY);
}

TEST(mv_rename_noclobber_and_across_filesystems)
{
    start_agent();
    puts_file(P("a"), "A");
    puts_file(P("b"), "B");
    CHECK_EQ_INT(fail(REQ(.op = "mv", .path = P("a"), .path2 = P("b"), .flags = SBX_FS_NO_CLOBBER)), EEXIST);
    CHECK_EQ_INT(fail(REQ(.op = "mv", .path = P("a"))), EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "mv", .path = P("a"), .path2 = "b")), EINVAL);
    ok_simple(REQ(.op = "mv", .path = P("a"), .path2 = P("c"), .flags = SBX_FS_NO_CLOBBER));
    ok_simple(REQ(.op = "mv", .path = P("c"), .path2 = P("b")));
    size_t n;
    char *s = slurp(P("b"), &n);
    CHECK_EQ_STR(s, "A");
    free(s);
    CHECK_EQ_INT(fail(REQ(.op = "mv", .path = P("missing"), .path2 = P("z"))), ENOENT);

    /* /dev/shm is another filesystem than /tmp on most systems: rename gives EXDEV there. */
    struct stat s1, s2;
    if (stat("/dev/shm", &s1) < 0 || stat(tmpdir, &s2) < 0 || s1.st_dev == s2.st_dev)
        SKIP("no second filesystem at /dev/shm for the cross-device move");
    char other[64];
    snprintf(other, sizeof other, "/dev/shm/sbx-fs-test-%d", getpid());
    CHECK(mkdir(other, 0755) == 0);
    char dst[128], dst2[128];
    snprintf(dst, sizeof dst, "%s/moved", other);
    CHECK(chmod(P("b"), 0640) == 0);
    ok_simple(REQ(.op = "mv", .path = P("b"), .path2 = dst));
    CHECK(access(P("b"), F_OK) != 0);
    s = slurp(dst, &n);
    CHECK_EQ_STR(s, "A");
    free(s);
    CHECK_EQ_INT(mode_of(dst), 0640);

    CHECK(mkdir(P("tree"), 0711) == 0);
    CHECK(mkdir(P("tree/sub"), 0755) == 0);
    puts_file(P("tree/sub/f"), "deep");
    CHECK(symlink("sub/f", P("tree/link")) == 0);
    snprintf(dst2, sizeof dst2, "%s/tree", other);
    ok_simple(REQ(.op = "mv", .path = P("tree"), .path2 = dst2));
    CHECK(access(P("tree"), F_OK) != 0);
    char p[200];
    snprintf(p, sizeof p, "%s/sub/f", dst2);
    s = slurp(p, &n);
    CHECK_EQ_STR(s, "deep");
    free(s);
    snprintf(p, sizeof p, "%s/link", dst2);
    char target[64] = {0};
    CHECK(readlink(p, target, sizeof target - 1) > 0);
    CHECK_EQ_STR(target, "sub/f");
    CHECK_EQ_INT(mode_of(dst2), 0711);
    /* Back again, without clobbering an existing destination. */
    puts_file(P("exists"), "");
    CHECK_EQ_INT(fail(REQ(.op = "mv", .path = dst, .path2 = P("exists"), .flags = SBX_FS_NO_CLOBBER)),
                 EEXIST);
    sbx_err_t err = SBX_ERR_INIT;
    sbx_rm_rf(other, &err);
}

TEST(chmod_octal_symbolic_recursive)
{
    start_agent();
    puts_file(P("f"), "");
    CHECK(chmod(P("f"), 0600) == 0);
    struct {
        const char *spec;
        mode_t want;
    } steps[] = {{"755", 0755}, {"0644", 0644},     {"u+x", 0744},   {"go-r", 0700}, {"a=r,u+w", 0644},
                 {"+x", 0755},  {"g+w,o-rx", 0770}, {"u=g", 0770},   {"o=u", 0777},  {"a-x", 0666},
                 {"+X", 0666},  {"u+s", 04666},     {"4755", 04755}, {"-s", 0755},   {"o+t", 01755}};
    for (size_t i = 0; i < SBX_ARRAY_LEN(steps); i++) {
        json_t *j = ok(REQ(.op = "chmod", .path = P("f"), .text = steps[i].spec));
        CHECK(json_is_true(json_object_get(j, "ok")));
        json_decref(j);
        if (mode_of(P("f")) != steps[i].want)
            fprintf(stderr, "  after %s: %o\n", steps[i].spec, mode_of(P("f")));
        CHECK_EQ_INT(mode_of(P("f")), steps[i].want);
    }
    const char *bad[] = {"", "9", "0888", "77777", "u+q", "x", "u", "u+x,", "rwx", "-1"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(bad); i++)
        CHECK_EQ_INT(fail(REQ(.op = "chmod", .path = P("f"), .text = bad[i])), EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "chmod", .path = P("nope"), .text = "755")), ENOENT);

    CHECK(mkdir(P("d"), 0700) == 0);
    CHECK(mkdir(P("d/s"), 0700) == 0);
    puts_file(P("d/s/g"), "");
    CHECK(chmod(P("d/s/g"), 0600) == 0);
    puts_file(P("d/x"), "");
    CHECK(chmod(P("d/x"), 0700) == 0);
    CHECK(symlink(P("f"), P("d/link")) == 0);
    mode_t before = mode_of(P("f"));
    json_t *j = ok(REQ(.op = "chmod", .path = P("d"), .text = "go+rX", .flags = SBX_FS_RECURSIVE));
    CHECK_EQ_INT(jint(j, "changed"), 4);
    json_decref(j);
    CHECK_EQ_INT(mode_of(P("d")), 0755);
    CHECK_EQ_INT(mode_of(P("d/s")), 0755);
    CHECK_EQ_INT(mode_of(P("d/s/g")), 0644);
    CHECK_EQ_INT(mode_of(P("d/x")), 0755);
    CHECK_EQ_INT(mode_of(P("f")), before); /* the link's target is outside the tree */
}

TEST(binary_content_round_trips)
{
    start_agent();
    size_t n = 3 * 1024 * 1024 + 11, got;
    uint8_t *data = pattern(n);
    CHECK_EQ_INT(write_file(REQ(.path = P("bin")), data, n), n);
    uint8_t *back = read_file(REQ(.path = P("bin")), &got, NULL);
    CHECK_EQ_INT(got, n);
    CHECK(!memcmp(back, data, n));
    free(back);

    /* OFFSET and LENGTH select a range; the RESULT is the file's stat object. */
    json_t *st;
    back = read_file(REQ(.path = P("bin"), .offset = 1000, .length = 70000), &got, &st);
    CHECK_EQ_INT(got, 70000);
    CHECK(!memcmp(back, data + 1000, 70000));
    CHECK_EQ_STR(jstr(st, "type"), "file");
    CHECK_EQ_INT(jint(st, "size"), n);
    json_decref(st);
    free(back);
    back = read_file(REQ(.path = P("bin"), .offset = (int64_t)n - 5), &got, NULL);
    CHECK_EQ_INT(got, 5);
    free(back);
    back = read_file(REQ(.path = P("bin"), .offset = (int64_t)n + 5), &got, NULL);
    CHECK_EQ_INT(got, 0);
    free(back);

    /* An empty file can be written and read. */
    CHECK_EQ_INT(write_file(REQ(.path = P("empty")), "", 0), 0);
    back = read_file(REQ(.path = P("empty")), &got, NULL);
    CHECK_EQ_INT(got, 0);
    free(back);
    free(data);

    CHECK(mkdir(P("dir"), 0755) == 0);
    CHECK(mkfifo(P("fifo"), 0644) == 0);
    CHECK_EQ_INT(fail(REQ(.op = "read", .path = P("dir"))), EISDIR);
    CHECK_EQ_INT(fail(REQ(.op = "read", .path = P("fifo"))), EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "read", .path = P("none"))), ENOENT);
    CHECK_EQ_INT(fail(REQ(.op = "read", .path = P("bin"), .offset = -1)), EINVAL);
}

TEST_T(large_file_streams_in_and_out, 120)
{
    start_agent();
    size_t n = 50 * 1024 * 1024, got;
    uint8_t *data = pattern(n);
    CHECK_EQ_INT(write_file(REQ(.path = P("big")), data, n), n);
    struct stat st;
    CHECK(stat(P("big"), &st) == 0);
    CHECK_EQ_INT(st.st_size, n);
    uint8_t *back = read_file(REQ(.path = P("big")), &got, NULL);
    CHECK_EQ_INT(got, n);
    CHECK(!memcmp(back, data, n));
    free(back);
    free(data);
}

TEST(atomic_write_keeps_old_content_until_end)
{
    start_agent();
    puts_file(P("f"), "old content");
    CHECK(chmod(P("f"), 0640) == 0);
    int fd = write_begin(REQ(.path = P("f")));
    write_data(fd, "new ", 4);
    write_data(fd, "content!", 8);
    /* A ping-free way to be sure the agent has consumed the frames: the temporary has
     * them once its size says so. */
    for (int i = 0; i < 200; i++) {
        size_t n;
        char *s = slurp(P("f"), &n);
        CHECK_EQ_STR(s, "old content");
        free(s);
        if (count_names(tmpdir, ".sbx-") == 1)
            break;
        usleep(5000);
    }
    CHECK_EQ_INT(count_names(tmpdir, ".sbx-"), 1);
    CHECK_EQ_INT(write_end(fd), 12);
    size_t n;
    char *s = slurp(P("f"), &n);
    CHECK_EQ_STR(s, "new content!");
    free(s);
    CHECK_EQ_INT(mode_of(P("f")), 0640); /* an existing file keeps its mode */
    CHECK_EQ_INT(count_names(tmpdir, ".sbx-"), 0);

    /* Aborted: the connection closes without END. */
    fd = write_begin(REQ(.path = P("f")));
    write_data(fd, "partial", 7);
    close(fd);
    for (int i = 0; i < 200 && count_names(tmpdir, ".sbx-"); i++)
        usleep(10000);
    CHECK_EQ_INT(count_names(tmpdir, ".sbx-"), 0);
    s = slurp(P("f"), &n);
    CHECK_EQ_STR(s, "new content!");
    free(s);

    /* A protocol violation in the middle aborts too. */
    fd = write_begin(REQ(.path = P("f")));
    write_data(fd, "zzz", 3);
    CHECK_EQ_INT(sbx_proto_send_empty(fd, SBX_MSG_PING), 0);
    frame_t f;
    read_frame(fd, &f);
    CHECK_EQ_INT(f.type, SBX_MSG_ERROR);
    CHECK_EQ_INT(f.err, EPROTO);
    close(fd);
    s = slurp(P("f"), &n);
    CHECK_EQ_STR(s, "new content!");
    free(s);
    CHECK_EQ_INT(count_names(tmpdir, ".sbx-"), 0);
}

TEST(write_modes_flags_and_errors)
{
    start_agent();
    CHECK_EQ_INT(write_file(REQ(.path = P("new")), "abc", 3), 3);
    CHECK_EQ_INT(mode_of(P("new")), 0644);
    CHECK_EQ_INT(write_file(REQ(.path = P("new600"), .mode = 0600), "x", 1), 1);
    CHECK_EQ_INT(mode_of(P("new600")), 0600);

    CHECK_EQ_INT(write_file(REQ(.path = P("new"), .flags = SBX_FS_APPEND), "def", 3), 6);
    size_t n;
    char *s = slurp(P("new"), &n);
    CHECK_EQ_STR(s, "abcdef");
    free(s);

    struct stat before, after;
    CHECK(stat(P("new"), &before) == 0);
    CHECK_EQ_INT(write_file(REQ(.path = P("new"), .flags = SBX_FS_IN_PLACE), "XY", 2), 2);
    CHECK(stat(P("new"), &after) == 0);
    CHECK_EQ_INT(after.st_ino, before.st_ino); /* the same file, truncated */
    s = slurp(P("new"), &n);
    CHECK_EQ_STR(s, "XY");
    free(s);
    CHECK_EQ_INT(write_file(REQ(.path = P("appended-new"), .flags = SBX_FS_APPEND), "1", 1), 1);

    CHECK_EQ_INT(fail(REQ(.op = "write", .path = P("new"), .flags = SBX_FS_EXCLUSIVE)), EEXIST);
    CHECK_EQ_INT(write_file(REQ(.path = P("excl"), .flags = SBX_FS_EXCLUSIVE), "e", 1), 1);
    CHECK_EQ_INT(fail(REQ(.op = "write", .path = P("no/such/dir/f"))), ENOENT);
    CHECK_EQ_INT(write_file(REQ(.path = P("no/such/dir/f"), .flags = SBX_FS_PARENTS), "p", 1), 1);
    CHECK_EQ_INT(mode_of(P("no/such")), 0755);
    CHECK(mkdir(P("adir"), 0755) == 0);
    CHECK_EQ_INT(fail(REQ(.op = "write", .path = P("adir"))), EISDIR);
    CHECK_EQ_INT(fail(REQ(.op = "write", .path = P("adir"), .flags = SBX_FS_IN_PLACE)), EISDIR);
    CHECK_EQ_INT(fail(REQ(.op = "write", .path = P("x"), .uid = -5)), EINVAL);

    /* Through a symlink, the target is replaced and the link stays. */
    CHECK(symlink("new", P("lnk")) == 0);
    CHECK_EQ_INT(write_file(REQ(.path = P("lnk")), "via link", 8), 8);
    struct stat ls;
    CHECK(lstat(P("lnk"), &ls) == 0 && S_ISLNK(ls.st_mode));
    s = slurp(P("new"), &n);
    CHECK_EQ_STR(s, "via link");
    free(s);

    if (getuid() != 0)
        SKIP("ownership checks need root");
    CHECK_EQ_INT(write_file(REQ(.path = P("owned"), .uid = 1234, .gid = 4321), "o", 1), 1);
    CHECK(stat(P("owned"), &after) == 0);
    CHECK_EQ_INT(after.st_uid, 1234);
    CHECK_EQ_INT(after.st_gid, 4321);
    /* An atomic rewrite keeps the owner of the file it replaces. */
    CHECK_EQ_INT(write_file(REQ(.path = P("owned")), "again", 5), 5);
    CHECK(stat(P("owned"), &after) == 0);
    CHECK_EQ_INT(after.st_uid, 1234);
    CHECK_EQ_INT(after.st_gid, 4321);
    json_t *j = ok(REQ(.op = "stat", .path = P("owned")));
    CHECK(jstr(j, "owner") != NULL);
    json_decref(j);
}

TEST(unicode_spaces_quotes_and_invalid_utf8_in_names)
{
    start_agent();
    CHECK(mkdir(P("u"), 0755) == 0);
    const char *names[] = {"h\xc3\xa9llo w\xc3\xb6rld.txt", "with \"quotes\" and 'single'.txt", "back\\slash",
                           "tab\there", "\xe6\x97\xa5\xe6\x9c\xac\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(names); i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "u/%s", names[i]);
        CHECK_EQ_INT(write_file(REQ(.path = P(rel)), names[i], strlen(names[i])), strlen(names[i]));
        size_t n;
        char *s = slurp(P(rel), &n);
        CHECK_EQ_STR(s, names[i]);
        free(s);
        json_t *j = ok(REQ(.op = "stat", .path = P(rel)));
        CHECK_EQ_STR(jstr(j, "name"), names[i]);
        json_decref(j);
    }
    puts_file(P("u/bad\xff\xfe.bin"), "");
    json_t *j = ok(REQ(.op = "ls", .path = P("u")));
    json_t *e = json_object_get(j, "entries");
    CHECK_EQ_INT(json_array_size(e), SBX_ARRAY_LEN(names) + 1);
    bool found = false;
    for (size_t i = 0; i < json_array_size(e); i++)
        found |= !strcmp(jstr(json_array_get(e, i), "name"), "bad\xef\xbf\xbd\xef\xbf\xbd.bin");
    CHECK(found);
    json_decref(j);
}

static void make_tree(void)
{
    CHECK(mkdir(P("src"), 0755) == 0);
    CHECK(mkdir(P("src/lib"), 0755) == 0);
    puts_file(P("src/main.c"), "int main(void)\n{\n    return helper(42);\n}\n");
    puts_file(P("src/lib/helper.c"), "int helper(int x)\n{\n    return x + 1; /* Helper */\n}\n");
    puts_file(P("src/README.txt"), "call helper() from main\nno newline at the end: helper");
    put(P("src/blob.bin"), "helper\0helper\0", 14);
    CHECK(symlink("..", P("src/lib/up")) == 0);
    CHECK(symlink("self", P("src/self")) == 0);
}

TEST(search_globs)
{
    start_agent();
    make_tree();
    json_t *j = ok(REQ(.op = "search", .path = P("src"), .text = "*.c"));
    json_t *m = json_object_get(j, "matches");
    CHECK_EQ_INT(json_array_size(m), 2);
    CHECK_EQ_STR(json_string_value(json_array_get(m, 0)), P("src/lib/helper.c"));
    CHECK_EQ_STR(json_string_value(json_array_get(m, 1)), P("src/main.c"));
    CHECK(json_is_false(json_object_get(j, "truncated")));
    json_decref(j);

    j = ok(REQ(.op = "search", .path = P("src"), .text = "lib/*.c"));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 1);
    json_decref(j);
    j = ok(REQ(.op = "search", .path = P("src"), .text = "**/main.c"));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 1);
    json_decref(j);
    j = ok(REQ(.op = "search", .path = P("src"), .text = "*.C", .flags = SBX_FS_ICASE));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 2);
    json_decref(j);
    j = ok(REQ(.op = "search", .path = P("src"), .text = "*", .length = 3));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 3);
    CHECK(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
    CHECK_EQ_INT(fail(REQ(.op = "search", .path = P("src/main.c"), .text = "*")), ENOTDIR);
    CHECK_EQ_INT(fail(REQ(.op = "search", .path = P("src"))), EINVAL);
}

TEST(grep_literal_regex_and_binary)
{
    start_agent();
    make_tree();
    json_t *j = ok(REQ(.op = "grep", .path = P("src"), .text = "helper"));
    json_t *m = json_object_get(j, "matches");
    CHECK_EQ_INT(jint(j, "files"), 3);   /* blob.bin is binary and skipped */
    CHECK_EQ_INT(json_array_size(m), 4); /* "Helper" differs in case */
    json_t *first = json_array_get(m, 0);
    CHECK_EQ_STR(jstr(first, "path"), P("src/README.txt"));
    CHECK_EQ_INT(jint(first, "line"), 1);
    CHECK_EQ_STR(jstr(first, "text"), "call helper() from main");
    CHECK_EQ_INT(jint(json_array_get(m, 1), "line"), 2);
    CHECK_EQ_STR(jstr(json_array_get(m, 2), "path"), P("src/lib/helper.c"));
    CHECK_EQ_STR(jstr(json_array_get(m, 3), "path"), P("src/main.c"));
    CHECK_EQ_INT(jint(json_array_get(m, 3), "line"), 3);
    CHECK(json_is_false(json_object_get(j, "truncated")));
    json_decref(j);

    j = ok(REQ(.op = "grep", .path = P("src"), .text = "HELPER", .flags = SBX_FS_ICASE));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 5);
    json_decref(j);
    j = ok(REQ(.op = "grep", .path = P("src"), .text = "^int [a-z]+\\(", .flags = SBX_FS_REGEX));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 2);
    json_decref(j);
    j = ok(REQ(.op = "grep", .path = P("src/main.c"), .text = "return"));
    CHECK_EQ_INT(jint(j, "files"), 1);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 1);
    json_decref(j);
    j = ok(REQ(.op = "grep", .path = P("src"), .text = "helper", .length = 2));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "matches")), 2);
    CHECK(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);

    CHECK_EQ_INT(fail(REQ(.op = "grep", .path = P("src"), .text = "(unclosed", .flags = SBX_FS_REGEX)),
                 EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "grep", .path = P("nope"), .text = "x")), ENOENT);
    CHECK_EQ_INT(fail(REQ(.op = "grep", .path = P("src"))), EINVAL);
}

TEST(grep_long_lines_are_cut)
{
    start_agent();
    char *line = xmalloc(10002);
    memset(line, 'a', 10000);
    line[10000] = '\n';
    line[10001] = 0;
    puts_file(P("long"), line);
    json_t *j = ok(REQ(.op = "grep", .path = P("long"), .text = "a"));
    CHECK_EQ_INT(strlen(jstr(json_array_get(json_object_get(j, "matches"), 0), "text")), 4096);
    json_decref(j);
    free(line);
}

TEST(sed_literal_and_regex)
{
    start_agent();
    make_tree();
    CHECK(chmod(P("src/main.c"), 0751) == 0);
    json_t *j = ok(REQ(.op = "sed", .path = P("src"), .text = "helper", .text2 = "assist"));
    CHECK_EQ_INT(jint(j, "replacements"), 4);
    json_t *files = json_object_get(j, "files");
    CHECK_EQ_INT(json_array_size(files), 3);
    CHECK_EQ_STR(jstr(json_array_get(files, 0), "path"), P("src/README.txt"));
    CHECK_EQ_INT(jint(json_array_get(files, 0), "replacements"), 2);
    json_decref(j);
    size_t n;
    char *s = slurp(P("src/README.txt"), &n);
    CHECK_EQ_STR(s, "call assist() from main\nno newline at the end: assist");
    free(s);
    s = slurp(P("src/blob.bin"), &n);
    CHECK(n == 14 && !memcmp(s, "helper\0helper\0", 14)); /* binary: untouched */
    free(s);
    CHECK_EQ_INT(mode_of(P("src/main.c")), 0751);
    CHECK_EQ_INT(count_names(P("src"), ".sbx-"), 0);

    j = ok(REQ(.op = "sed", .path = P("src/main.c"), .text = "return ([a-z]+)\\(([0-9]+)\\)",
               .text2 = "return \\2 + \\1(&)", .flags = SBX_FS_REGEX));
    CHECK_EQ_INT(jint(j, "replacements"), 1);
    json_decref(j);
    s = slurp(P("src/main.c"), &n);
    CHECK(strstr(s, "    return 42 + assist(return assist(42));\n") != NULL);
    free(s);

    j = ok(REQ(.op = "sed", .path = P("src/lib/helper.c"), .text = "ASSIST", .text2 = "x",
               .flags = SBX_FS_ICASE));
    CHECK_EQ_INT(jint(j, "replacements"), 1);
    json_decref(j);
    /* Empty regex matches are handled like sed's: around every character. */
    puts_file(P("e"), "abc\n");
    j = ok(REQ(.op = "sed", .path = P("e"), .text = "x*", .text2 = "-", .flags = SBX_FS_REGEX));
    json_decref(j);
    s = slurp(P("e"), &n);
    CHECK_EQ_STR(s, "-a-b-c-\n");
    free(s);
    /* Nothing to replace: the file is not rewritten. */
    struct stat b, a;
    CHECK(stat(P("e"), &b) == 0);
    j = ok(REQ(.op = "sed", .path = P("e"), .text = "zzz", .text2 = "y"));
    CHECK_EQ_INT(jint(j, "replacements"), 0);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "files")), 0);
    json_decref(j);
    CHECK(stat(P("e"), &a) == 0);
    CHECK_EQ_INT(a.st_ino, b.st_ino);

    CHECK_EQ_INT(fail(REQ(.op = "sed", .path = P("e"), .text = "[", .text2 = "", .flags = SBX_FS_REGEX)),
                 EINVAL);
    CHECK_EQ_INT(fail(REQ(.op = "sed", .path = P("e"), .text = "", .text2 = "y")), EINVAL);
}

SBX_TEST_MAIN()
