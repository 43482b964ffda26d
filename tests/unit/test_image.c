#include "harness.h"
#include "common/util.h"
#include "image/image.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>

static char *tmp_dir(void)
{
    char tmpl[] = "/tmp/sbx-image-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    return xstrdup(tmpl);
}

static void write_script(const char *path, const char *body)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(body, f);
    fclose(f);
    CHECK(chmod(path, 0755) == 0);
}

/* A stand-in for mmdebstrap: counts its runs next to itself, prints progress, creates the
 * target (the argument after the suite) and takes a second. */
static const char fake_ok[] = "#!/bin/sh\n"
                              "echo run >> \"$(dirname \"$0\")/runs\"\n"
                              "t=''; prev=''\n"
                              "for a in \"$@\"; do [ \"$prev\" = bookworm ] && t=\"$a\"; prev=\"$a\"; done\n"
                              "echo 'I: chroot architecture amd64'\n"
                              "echo 'I: downloading packages...' >&2\n"
                              "mkdir -p \"$t/bin\" \"$t/usr/bin\" \"$t/etc\"\n"
                              "sleep 1\n"
                              "echo '  I: extracting archives  '\n";

static const char fake_fail[] = "#!/bin/sh\n"
                                "echo run >> \"$(dirname \"$0\")/runs\"\n"
                                "echo 'I: chroot architecture amd64'\n"
                                "echo 'E: cannot fetch bookworm InRelease   ' >&2\n"
                                "echo '' \n"
                                "exit 1\n";

static int count_runs(const char *dir)
{
    _cleanup_free_ char *path = xasprintf("%s/runs", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

/* A store whose mmdebstrap is the given fake script. */
static sbx_image_store_t *store_with(const char *dir, const char *script)
{
    _cleanup_free_ char *bin = xasprintf("%s/fake-mmdebstrap", dir);
    write_script(bin, script);
    setenv("SANDBOXD_MMDEBSTRAP", bin, 1);
    sbx_err_t err = SBX_ERR_INIT;
    _cleanup_free_ char *state = xasprintf("%s/state", dir);
    sbx_image_store_t *st = sbx_image_store_new(state, &err);
    if (!st)
        fprintf(stderr, "  %s\n", err.msg);
    CHECK(st != NULL);
    return st;
}

TEST(presets)
{
    CHECK(sbx_image_is_preset("python"));
    CHECK(sbx_image_is_preset("node"));
    CHECK(!sbx_image_is_preset("ubuntu"));
    CHECK(!sbx_image_is_preset(""));
}

TEST(custom_dir_resolves)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_ok);
    sbx_image_source_t src = {"my-app", dir};
    char *rootfs = NULL;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK_EQ_INT(sbx_image_resolve(st, "my-app", &src, false, &rootfs, &err), 0);
    CHECK_EQ_STR(rootfs, dir);
    free(rootfs);
    sbx_image_status_t s;
    sbx_image_status(st, "my-app", &src, &s);
    CHECK(s.state == SBX_IMAGE_READY);
    CHECK_EQ_STR(s.rootfs, dir);
    sbx_image_store_free(st);
}

TEST(custom_missing_dir_is_s101)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_ok);
    sbx_image_source_t src = {"my-app", "/nonexistent/rootfs"};
    char *rootfs = NULL;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_image_resolve(st, "my-app", &src, true, &rootfs, &err) < 0);
    CHECK(rootfs == NULL);
    CHECK(err.kind == SBX_E_UNAVAILABLE);
    CHECK_EQ_STR(err.code, "S101");
    CHECK(strstr(err.msg, "rootfs directory not found") != NULL);
    CHECK(strstr(err.msg, "/nonexistent/rootfs") != NULL);
    sbx_image_status_t s;
    sbx_image_status(st, "my-app", &src, &s);
    CHECK(s.state == SBX_IMAGE_ABSENT);
    sbx_image_store_free(st);
}

TEST(custom_oci_ref_not_pulled_is_s101)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_ok);
    sbx_image_source_t src = {"my-app", "ghcr.io/acme/my-app:1.2.3", NULL};
    char *rootfs = NULL;
    sbx_err_t err = SBX_ERR_INIT;
    /* With auto_install off, a reference not in the cache is S101 naming the pre-pull. */
    CHECK(sbx_image_resolve(st, "my-app", &src, false, &rootfs, &err) < 0);
    CHECK(err.kind == SBX_E_UNAVAILABLE);
    CHECK_EQ_STR(err.code, "S101");
    CHECK(strstr(err.msg, "sandbox image pull ghcr.io/acme/my-app:1.2.3") != NULL);
    CHECK_EQ_INT(count_runs(dir), 0);
    sbx_image_store_free(st);
}

TEST(unknown_image_is_s100)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_ok);
    char *rootfs = NULL;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_image_resolve(st, "ubuntu", NULL, true, &rootfs, &err) < 0);
    CHECK_EQ_STR(err.code, "S100");
    CHECK(sbx_image_build(st, "ubuntu", &err) < 0);
    CHECK_EQ_STR(err.code, "S100");
    CHECK_EQ_INT(count_runs(dir), 0);
    sbx_image_store_free(st);
}

TEST(preset_without_auto_install_is_s101)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_ok);
    char *rootfs = NULL;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_image_resolve(st, "python", NULL, false, &rootfs, &err) < 0);
    CHECK(err.kind == SBX_E_UNAVAILABLE);
    CHECK_EQ_STR(err.code, "S101");
    CHECK(strstr(err.msg, "image 'python' is not installed") != NULL);
    CHECK(strstr(err.msg, "sandboxd build-image python") != NULL);
    CHECK_EQ_INT(count_runs(dir), 0);
    sbx_image_status_t s;
    sbx_image_status(st, "python", NULL, &s);
    CHECK(s.state == SBX_IMAGE_ABSENT);
    sbx_image_store_free(st);
}

struct resolve_arg {
    sbx_image_store_t *st;
    char *rootfs;
    int rc;
    sbx_err_t err;
};

static void *resolve_python(void *p)
{
    struct resolve_arg *a = p;
    a->rc = sbx_image_resolve(a->st, "python", NULL, true, &a->rootfs, &a->err);
    return NULL;
}

TEST(concurrent_resolves_build_once)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_ok);
    pthread_t th[4];
    struct resolve_arg args[4];
    memset(args, 0, sizeof args);
    for (int i = 0; i < 4; i++) {
        args[i].st = st;
        CHECK(pthread_create(&th[i], NULL, resolve_python, &args[i]) == 0);
    }
    usleep(500 * 1000);
    sbx_image_status_t s;
    sbx_image_status(st, "python", NULL, &s);
    CHECK(s.state == SBX_IMAGE_BUILDING);
    CHECK(s.started_ms > 0);
    CHECK(s.message[0] != '\0');
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    _cleanup_free_ char *want = xasprintf("%s/state/images/python/rootfs", dir);
    for (int i = 0; i < 4; i++) {
        if (args[i].rc < 0)
            fprintf(stderr, "  thread %d: %s\n", i, args[i].err.msg);
        CHECK_EQ_INT(args[i].rc, 0);
        CHECK_EQ_STR(args[i].rootfs, want);
        free(args[i].rootfs);
    }
    CHECK_EQ_INT(count_runs(dir), 1);
    _cleanup_free_ char *bin = xasprintf("%s/bin", want);
    struct stat sb;
    CHECK(stat(bin, &sb) == 0 && S_ISDIR(sb.st_mode));
    sbx_image_status(st, "python", NULL, &s);
    CHECK(s.state == SBX_IMAGE_READY);
    CHECK_EQ_STR(s.rootfs, want);

    /* Ready now: neither a resolve nor an explicit build runs the tool again. */
    char *rootfs = NULL;
    sbx_err_t err = SBX_ERR_INIT;
    CHECK_EQ_INT(sbx_image_resolve(st, "python", NULL, false, &rootfs, &err), 0);
    CHECK_EQ_STR(rootfs, want);
    free(rootfs);
    CHECK_EQ_INT(sbx_image_build(st, "python", &err), 0);
    CHECK_EQ_INT(count_runs(dir), 1);
    /* No build directory is left behind. */
    _cleanup_free_ char *images = xasprintf("%s/state/images", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -q build-", images);
    CHECK(system(cmd) != 0);
    sbx_image_store_free(st);
}

TEST(build_failure_is_s102_with_last_line)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_image_store_t *st = store_with(dir, fake_fail);
    pthread_t th[3];
    struct resolve_arg args[3];
    memset(args, 0, sizeof args);
    for (int i = 0; i < 3; i++) {
        args[i].st = st;
        CHECK(pthread_create(&th[i], NULL, resolve_python, &args[i]) == 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].rc < 0);
        CHECK(args[i].err.kind == SBX_E_UNAVAILABLE);
        CHECK_EQ_STR(args[i].err.code, "S102");
        CHECK(strstr(args[i].err.msg, "E: cannot fetch bookworm InRelease") != NULL);
    }
    /* Waiters share the result of the one build, unless they arrived after it ended. */
    CHECK(count_runs(dir) >= 1 && count_runs(dir) <= 3);
    sbx_image_status_t s;
    sbx_image_status(st, "python", NULL, &s);
    CHECK(s.state == SBX_IMAGE_FAILED);
    CHECK(strstr(s.message, "E: cannot fetch bookworm InRelease") != NULL);
    _cleanup_free_ char *final = xasprintf("%s/state/images/python/rootfs", dir);
    struct stat sb;
    CHECK(stat(final, &sb) < 0);
    sbx_err_t err = SBX_ERR_INIT;
    CHECK(sbx_image_build(st, "node", &err) < 0);
    CHECK_EQ_STR(err.code, "S102");
    sbx_image_store_free(st);
}

TEST(missing_tool_is_s102)
{
    _cleanup_free_ char *dir = tmp_dir();
    setenv("SANDBOXD_MMDEBSTRAP", "/nonexistent/mmdebstrap", 1);
    _cleanup_free_ char *state = xasprintf("%s/state", dir);
    sbx_err_t err = SBX_ERR_INIT;
    sbx_image_store_t *st = sbx_image_store_new(state, &err);
    CHECK(st != NULL);
    char *rootfs = NULL;
    CHECK(sbx_image_resolve(st, "node", NULL, true, &rootfs, &err) < 0);
    CHECK_EQ_STR(err.code, "S102");
    CHECK(strstr(err.msg, "/nonexistent/mmdebstrap") != NULL);
    sbx_image_store_free(st);
}

TEST(stale_build_dirs_removed)
{
    _cleanup_free_ char *dir = tmp_dir();
    sbx_err_t err = SBX_ERR_INIT;
    _cleanup_free_ char *stale = xasprintf("%s/state/images/.python.build-0123abcd/rootfs/bin", dir);
    _cleanup_free_ char *live = xasprintf("%s/state/images/.node.build-4567cdef/rootfs", dir);
    CHECK_EQ_INT(sbx_mkdir_p(stale, 0755, &err), 0);
    CHECK_EQ_INT(sbx_mkdir_p(live, 0755, &err), 0);
    /* A build of node is running in "another process": its lock is held. */
    _cleanup_free_ char *lock = xasprintf("%s/state/images/.node.lock", dir);
    int lfd = open(lock, O_RDWR | O_CREAT, 0600);
    CHECK(lfd >= 0);
    CHECK(flock(lfd, LOCK_EX) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child has its own open file description, so the parent's flock binds it. */
        sbx_image_store_t *st = store_with(dir, fake_ok);
        sbx_image_status_t s;
        sbx_image_status(st, "node", NULL, &s);
        _exit(s.state == SBX_IMAGE_BUILDING ? 0 : 3);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    _cleanup_free_ char *stale_top = xasprintf("%s/state/images/.python.build-0123abcd", dir);
    struct stat sb;
    CHECK(stat(stale_top, &sb) < 0);
    CHECK(stat(live, &sb) == 0);
    close(lfd);
}

SBX_TEST_MAIN()
