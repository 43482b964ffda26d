/* Layer unpacking: path normalization, escapes refused, whiteouts applied, and OCI
 * reference parsing. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "common/util.h"
#include "harness.h"
#include "image/oci.h"
#include "image/unpack.h"

TEST(clean_path)
{
    char out[256];
    CHECK(sbx_unpack_clean_path("./etc/passwd", out, sizeof out) == 0 && !strcmp(out, "etc/passwd"));
    CHECK(sbx_unpack_clean_path("a//b/./c/", out, sizeof out) == 0 && !strcmp(out, "a/b/c"));
    CHECK(sbx_unpack_clean_path("./", out, sizeof out) == 1);
    CHECK(sbx_unpack_clean_path("/etc/shadow", out, sizeof out) == -1);
    CHECK(sbx_unpack_clean_path("../x", out, sizeof out) == -1);
    CHECK(sbx_unpack_clean_path("a/../../x", out, sizeof out) == -1);
    CHECK(sbx_unpack_clean_path("a/..", out, sizeof out) == -1);
    CHECK(sbx_unpack_clean_path("a/..b/c", out, sizeof out) == 0 && !strcmp(out, "a/..b/c"));
    CHECK(sbx_unpack_clean_path("abcdef", out, 4) == -1);
}

TEST(ref_parse)
{
    sbx_oci_ref_t r;
    CHECK(sbx_oci_ref_parse("busybox", &r, NULL) == 0 &&
          !strcmp(r.canon, "docker.io/library/busybox:latest"));
    CHECK(sbx_oci_ref_parse("python:3.12-slim", &r, NULL) == 0 &&
          !strcmp(r.canon, "docker.io/library/python:3.12-slim"));
    CHECK(sbx_oci_ref_parse("localhost:5000/a/b", &r, NULL) == 0 && !strcmp(r.registry, "localhost:5000") &&
          !strcmp(r.repo, "a/b") && !strcmp(r.tag, "latest"));
    CHECK(sbx_oci_ref_parse("ghcr.io/acme/app:1.2.3", &r, NULL) == 0 && !strcmp(r.registry, "ghcr.io"));
    CHECK(sbx_oci_ref_parse("user/app", &r, NULL) == 0 && !strcmp(r.canon, "docker.io/user/app:latest"));
    const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char buf[200];
    snprintf(buf, sizeof buf, "127.0.0.1:5000/x@%s", d);
    CHECK(sbx_oci_ref_parse(buf, &r, NULL) == 0 && !strcmp(r.digest, d) && !r.tag[0]);
    CHECK(sbx_oci_ref_parse("UPPER/case", &r, NULL) < 0);
    CHECK(sbx_oci_ref_parse("x@sha256:abc", &r, NULL) < 0);
    CHECK(sbx_oci_ref_parse("a/../b", &r, NULL) < 0);
    CHECK(sbx_oci_ref_parse("", &r, NULL) < 0);
}

static void add(struct archive *a, const char *path, mode_t type, const char *link, const char *data)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, 0644);
    if (type == AE_IFLNK)
        archive_entry_set_symlink(e, link);
    else if (link)
        archive_entry_set_hardlink(e, link);
    archive_entry_set_size(e, data ? (la_int64_t)strlen(data) : 0);
    archive_write_header(a, e);
    if (data)
        archive_write_data(a, data, strlen(data));
    archive_entry_free(e);
}

TEST(escapes_are_refused)
{
    char tmpl[] = "/tmp/unpack-test-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    _cleanup_free_ char *root = xasprintf("%s/root", tmpl);
    _cleanup_free_ char *outside = xasprintf("%s/outside", tmpl);
    _cleanup_free_ char *layer = xasprintf("%s/layer.tar.gz", tmpl);
    CHECK(mkdir(root, 0755) == 0 && mkdir(outside, 0755) == 0);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
    CHECK(archive_write_open_filename(a, layer) == ARCHIVE_OK);
    _cleanup_free_ char *dotdot = xasprintf("../outside/dotdot");
    add(a, dotdot, AE_IFREG, NULL, "x");
    add(a, "link", AE_IFLNK, outside, NULL);
    add(a, "link/through", AE_IFREG, NULL, "x");
    add(a, "hl", AE_IFREG, "/etc/passwd", NULL);
    add(a, "dev", AE_IFCHR, NULL, NULL);
    add(a, "ok/file", AE_IFREG, NULL, "fine");
    add(a, "ok/.wh.file", AE_IFREG, NULL, NULL);
    add(a, "ok/kept", AE_IFREG, NULL, "kept");
    archive_write_close(a);
    archive_write_free(a);
    int fd = open(root, O_RDONLY | O_DIRECTORY);
    sbx_unpack_stats_t st = {0};
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_unpack_layer(fd, layer, &st, &err) == 0);
    struct stat sb;
    _cleanup_free_ char *p1 = xasprintf("%s/dotdot", outside);
    _cleanup_free_ char *p2 = xasprintf("%s/through", outside);
    _cleanup_free_ char *p3 = xasprintf("%s/hl", root);
    _cleanup_free_ char *p4 = xasprintf("%s/dev", root);
    _cleanup_free_ char *p5 = xasprintf("%s/ok/file", root);
    _cleanup_free_ char *p6 = xasprintf("%s/ok/kept", root);
    CHECK(lstat(p1, &sb) < 0 && lstat(p2, &sb) < 0 && lstat(p3, &sb) < 0 && lstat(p4, &sb) < 0);
    CHECK(lstat(p5, &sb) < 0 && lstat(p6, &sb) == 0);
    CHECK(st.skipped >= 4);
    close(fd);
    sbx_rm_rf(tmpl, NULL);
}

SBX_TEST_MAIN()
