/* The image store.
 *
 * Layout under <state_dir>/images/:
 *   <name>/rootfs            a finished preset; its presence alone means "ready"
 *   .<name>.build-<hex>/     a build in progress (mmdebstrap writes rootfs/ inside)
 *   .<name>.lock             flock()ed by whoever builds <name>, in any process
 *
 * A build writes into its private directory and rename()s the finished rootfs into place,
 * so a crash at any moment leaves either no image or a whole one, never a half tree a
 * sandbox could boot.  Within the process, a mutex and condition variable per preset make
 * concurrent first uses wait for one build; across processes (a second daemon,
 * `sandboxd build-image` next to a running daemon) the flock does the same. */
#include "image/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "image/internal.h"

extern char **environ;

#define SUITE "bookworm"
#define BUILD_MARK ".build-"

typedef struct {
    const char *name;
    const char *include; /* packages on top of minbase */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool building;
    uint64_t generation; /* bumped when a build finishes; waiters compare it */
    bool failed;         /* the last build in this process failed */
    sbx_err_t last_err;
    char message[256];
    int64_t started_ms;
} preset_t;

struct sbx_image_store {
    char *images_dir;
    char *mmdebstrap;
    preset_t presets[2];
};

static const struct {
    const char *name;
    const char *include;
} preset_defs[] = {
    {"python", "python3,ca-certificates"},
    {"node", "nodejs,ca-certificates"},
};

const char *sbx_image_store_dir(const sbx_image_store_t *st)
{
    return st->images_dir;
}

bool sbx_image_is_preset(const char *name)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(preset_defs); i++)
        if (!strcmp(name, preset_defs[i].name))
            return true;
    return false;
}

static preset_t *find_preset(sbx_image_store_t *st, const char *name)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(st->presets); i++)
        if (!strcmp(st->presets[i].name, name))
            return &st->presets[i];
    return NULL;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static char *final_rootfs(sbx_image_store_t *st, const char *name)
{
    return xasprintf("%s/%s/rootfs", st->images_dir, name);
}

static int open_lock(sbx_image_store_t *st, const char *name, sbx_err_t *err)
{
    _cleanup_free_ char *path = xasprintf("%s/.%s.lock", st->images_dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return sbx_error(err, errno, "open `%s`", path);
    return fd;
}

static int flock_retry(int fd, int op)
{
    int rc;
    do
        rc = flock(fd, op);
    while (rc < 0 && errno == EINTR);
    return rc;
}

/* Removes build directories left by a crashed build.  A directory whose image lock is
 * held belongs to a live build in another process and is left alone. */
static void clean_stale_builds(sbx_image_store_t *st)
{
    DIR *d = opendir(st->images_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *mark = strstr(de->d_name, BUILD_MARK);
        if (de->d_name[0] != '.' || !mark || mark == de->d_name + 1)
            continue;
        _cleanup_free_ char *name = xstrndup(de->d_name + 1, (size_t)(mark - de->d_name - 1));
        _cleanup_close_ int lfd = open_lock(st, name, NULL);
        if (lfd < 0 || flock_retry(lfd, LOCK_EX | LOCK_NB) < 0)
            continue;
        _cleanup_free_ char *path = xasprintf("%s/%s", st->images_dir, de->d_name);
        sbx_err_t e = SBX_ERR_INIT;
        if (sbx_rm_rf(path, &e) < 0)
            log_warn("image store: cannot remove stale build `%s`: %s", path, e.msg);
        else
            log_info("image store: removed stale build `%s`", path);
    }
    closedir(d);
}

sbx_image_store_t *sbx_image_store_new(const char *state_dir, sbx_err_t *err)
{
    sbx_image_store_t *st = xcalloc(1, sizeof *st);
    st->images_dir = xasprintf("%s/images", state_dir);
    if (sbx_mkdir_p(st->images_dir, 0755, err) < 0) {
        sbx_error_wrap(err, "image store");
        free(st->images_dir);
        free(st);
        return NULL;
    }
    /* Read once here: the daemon is multithreaded and nothing may setenv() later. */
    const char *bin = getenv("SANDBOXD_MMDEBSTRAP");
    st->mmdebstrap = xstrdup(bin && *bin ? bin : "mmdebstrap");
    for (size_t i = 0; i < SBX_ARRAY_LEN(preset_defs); i++) {
        preset_t *p = &st->presets[i];
        p->name = preset_defs[i].name;
        p->include = preset_defs[i].include;
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, NULL);
    }
    clean_stale_builds(st);
    sbx_image_oci_clean(st);
    return st;
}

void sbx_image_store_free(sbx_image_store_t *st)
{
    if (!st)
        return;
    sbx_image_oci_drain(st);
    for (size_t i = 0; i < SBX_ARRAY_LEN(st->presets); i++) {
        pthread_mutex_destroy(&st->presets[i].mu);
        pthread_cond_destroy(&st->presets[i].cv);
    }
    free(st->images_dir);
    free(st->mmdebstrap);
    free(st);
}

/* ---- the host's Debian mirror ---- */

/* mmdebstrap without a MIRROR argument always uses deb.debian.org and ignores the host's
 * apt sources, so we look the mirror up ourselves: a host behind a proxy or a local
 * mirror must build from that.  The first "deb" source serving SUITE wins. */
static bool word_in(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n) {
        bool start = p == list || p[-1] == ' ' || p[-1] == '\t';
        bool end = p[n] == '\0' || p[n] == ' ' || p[n] == '\t' || p[n] == '\n';
        if (start && end)
            return true;
    }
    return false;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    if (i)
        memmove(s, s + i, n - i + 1);
}

/* One-line format: "deb [options] URI SUITE COMPONENTS...". */
static bool mirror_from_list(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        trim(line);
        if (strncmp(line, "deb ", 4))
            continue;
        char *p = line + 4;
        while (*p == ' ')
            p++;
        if (*p == '[') {
            char *close = strchr(p, ']');
            if (!close)
                continue;
            p = close + 1;
        }
        char uri[512], suite[128];
        if (sscanf(p, "%511s %127s", uri, suite) == 2 && !strcmp(suite, SUITE)) {
            snprintf(out, outlen, "%s", uri);
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* deb822 format: stanzas of "Key: value" separated by blank lines. */
static bool mirror_from_sources(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[1024], types[256] = "", uris[512] = "", suites[256] = "", enabled[16] = "yes";
    bool found = false, more = true;
    while (!found && more) {
        more = fgets(line, sizeof line, f) != NULL;
        if (more)
            trim(line);
        if (!more || !line[0]) {
            if (word_in(types, "deb") && word_in(suites, SUITE) && strcmp(enabled, "no") && uris[0]) {
                char first[512];
                if (sscanf(uris, "%511s", first) == 1) {
                    snprintf(out, outlen, "%s", first);
                    found = true;
                }
            }
            types[0] = uris[0] = suites[0] = '\0';
            snprintf(enabled, sizeof enabled, "yes");
            continue;
        }
        char *colon = strchr(line, ':');
        if (line[0] == '#' || !colon)
            continue;
        *colon = '\0';
        char *val = colon + 1;
        trim(val);
        if (!strcasecmp(line, "Types"))
            snprintf(types, sizeof types, "%s", val);
        else if (!strcasecmp(line, "URIs"))
            snprintf(uris, sizeof uris, "%s", val);
        else if (!strcasecmp(line, "Suites"))
            snprintf(suites, sizeof suites, "%s", val);
        else if (!strcasecmp(line, "Enabled"))
            snprintf(enabled, sizeof enabled, "%s", val);
    }
    fclose(f);
    return found;
}

static bool host_mirror(char *out, size_t outlen)
{
    if (mirror_from_list("/etc/apt/sources.list", out, outlen))
        return true;
    glob_t g;
    bool found = false;
    if (glob("/etc/apt/sources.list.d/*.sources", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !found; i++)
            found = mirror_from_sources(g.gl_pathv[i], out, outlen);
        globfree(&g);
    }
    if (!found && glob("/etc/apt/sources.list.d/*.list", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !found; i++)
            found = mirror_from_list(g.gl_pathv[i], out, outlen);
        globfree(&g);
    }
    return found;
}

/* ---- running mmdebstrap ---- */

static void set_message(preset_t *p, const char *msg)
{
    pthread_mutex_lock(&p->mu);
    snprintf(p->message, sizeof p->message, "%s", msg);
    pthread_mutex_unlock(&p->mu);
}

/* One line of build output: trimmed, logged, and kept as the progress message. */
static void on_line(preset_t *p, char *line, char *last, size_t lastlen)
{
    trim(line);
    if (!line[0])
        return;
    log_info("build-image %s: %s", p->name, line);
    size_t n = strnlen(line, lastlen - 1);
    memcpy(last, line, n);
    last[n] = '\0';
    set_message(p, last);
}

/* Reads the child's merged stdout/stderr until EOF; lines end at '\n' or '\r' (progress
 * output redraws with '\r'); overlong lines are cut. */
static void pump_output(preset_t *p, int fd, char *last, size_t lastlen)
{
    char buf[4096], line[1024];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' || buf[i] == '\r') {
                line[len] = '\0';
                on_line(p, line, last, lastlen);
                len = 0;
            } else if (len < sizeof line - 1) {
                line[len++] = buf[i];
            }
        }
    }
    if (len) {
        line[len] = '\0';
        on_line(p, line, last, lastlen);
    }
}

/* Runs mmdebstrap into `target`.  posix_spawn, not fork: the daemon is multithreaded and
 * nothing that is not async-signal-safe may run between fork and exec. */
static int run_mmdebstrap(sbx_image_store_t *st, preset_t *p, const char *target, sbx_err_t *err)
{
    char include[128], mirror[512];
    snprintf(include, sizeof include, "--include=%s", p->include);
    char *argv[8];
    int argc = 0;
    argv[argc++] = st->mmdebstrap;
    argv[argc++] = "--variant=minbase";
    argv[argc++] = include;
    argv[argc++] = SUITE;
    argv[argc++] = (char *)target;
    if (host_mirror(mirror, sizeof mirror))
        argv[argc++] = mirror;
    argv[argc] = NULL;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return sbx_error(err, errno, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawnp(&pid, st->mmdebstrap, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "building image '%s' failed: cannot run `%s`: %s",
                        p->name, st->mmdebstrap, strerror(rc));
    }
    log_info("build-image %s: running %s %s %s %s %s%s%s", p->name, argv[0], argv[1], argv[2], argv[3],
             argv[4], argc > 5 ? " " : "", argc > 5 ? argv[5] : "");

    char last[256] = "";
    pump_output(p, fds[0], last, sizeof last);
    close(fds[0]);

    int status = 0;
    pid_t w;
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return sbx_error(err, errno, "waitpid mmdebstrap");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (!is_dir(target))
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S102",
                            "building image '%s' failed: mmdebstrap produced no rootfs", p->name);
        return 0;
    }
    char why[64];
    if (WIFEXITED(status))
        snprintf(why, sizeof why, "mmdebstrap exited with status %d", WEXITSTATUS(status));
    else
        snprintf(why, sizeof why, "mmdebstrap killed by signal %d", WTERMSIG(status));
    return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "building image '%s' failed: %s", p->name,
                    last[0] ? last : why);
}

/* Builds preset `p` unless another process already did; called with no mutex held and
 * p->building set, so no other thread of this process builds it at the same time. */
static int build_preset(sbx_image_store_t *st, preset_t *p, sbx_err_t *err)
{
    _cleanup_close_ int lfd = open_lock(st, p->name, err);
    if (lfd < 0)
        return -1;
    if (flock_retry(lfd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK)
            return sbx_error(err, errno, "lock image '%s'", p->name);
        set_message(p, "waiting for a build in another process");
        log_info("build-image %s: waiting for a build in another process", p->name);
        if (flock_retry(lfd, LOCK_EX) < 0)
            return sbx_error(err, errno, "lock image '%s'", p->name);
    }
    _cleanup_free_ char *final = final_rootfs(st, p->name);
    if (is_dir(final))
        return 0;

    _cleanup_free_ char *parent = xasprintf("%s/%s", st->images_dir, p->name);
    if (sbx_mkdir_p(parent, 0755, err) < 0)
        return -1;
    char hex[17];
    sbx_random_hex(hex, 8);
    _cleanup_free_ char *bdir = xasprintf("%s/.%s" BUILD_MARK "%s", st->images_dir, p->name, hex);
    /* 0755: apt inside mmdebstrap drops to the _apt user, which must reach the lists dir. */
    if (mkdir(bdir, 0755) < 0)
        return sbx_error(err, errno, "mkdir `%s`", bdir);
    _cleanup_free_ char *target = xasprintf("%s/rootfs", bdir);

    int64_t t0 = sbx_mono_ms();
    int rc = run_mmdebstrap(st, p, target, err);
    if (rc == 0 && rename(target, final) < 0)
        rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "building image '%s' failed: rename into `%s`: %s",
                      p->name, final, strerror(errno));
    sbx_err_t e2 = SBX_ERR_INIT;
    if (sbx_rm_rf(bdir, &e2) < 0)
        log_warn("build-image %s: cannot remove `%s`: %s", p->name, bdir, e2.msg);
    if (rc == 0)
        log_info("build-image %s: ready in %.1f s at %s", p->name, (double)(sbx_mono_ms() - t0) / 1000,
                 final);
    else
        log_error("build-image %s: %s", p->name, err ? err->msg : "failed");
    return rc;
}

/* Makes sure preset `p` exists, building it (once, however many callers) if allowed. */
static int ensure_preset(sbx_image_store_t *st, preset_t *p, bool auto_install, sbx_err_t *err)
{
    _cleanup_free_ char *final = final_rootfs(st, p->name);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (is_dir(final)) {
            pthread_mutex_unlock(&p->mu);
            return 0;
        }
        if (p->building) {
            uint64_t gen = p->generation;
            while (p->building && p->generation == gen)
                pthread_cond_wait(&p->cv, &p->mu);
            if (p->failed) {
                if (err)
                    *err = p->last_err;
                pthread_mutex_unlock(&p->mu);
                return -1;
            }
            continue;
        }
        if (!auto_install) {
            pthread_mutex_unlock(&p->mu);
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S101",
                            "image '%s' is not installed; pre-build it with: sandboxd build-image %s",
                            p->name, p->name);
        }
        p->building = true;
        p->failed = false;
        p->started_ms = sbx_now_ms();
        snprintf(p->message, sizeof p->message, "starting build");
        pthread_mutex_unlock(&p->mu);

        sbx_err_t e = SBX_ERR_INIT;
        int rc = build_preset(st, p, &e);

        pthread_mutex_lock(&p->mu);
        p->building = false;
        p->generation++;
        p->failed = rc < 0;
        p->last_err = e;
        if (rc < 0)
            snprintf(p->message, sizeof p->message, "%.255s", e.msg);
        pthread_cond_broadcast(&p->cv);
        if (rc < 0) {
            if (err)
                *err = e;
            pthread_mutex_unlock(&p->mu);
            return -1;
        }
    }
}

static int unknown_image(const char *name, sbx_err_t *err)
{
    return sbx_fail(err, SBX_E_NOT_FOUND, "S100", "unknown image '%s': not a preset or a custom image", name);
}

static int custom_rootfs(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                         bool auto_install, char **rootfs, sbx_err_t *err)
{
    const char *ref = custom->ref ? custom->ref : "";
    if (ref[0] != '/')
        return sbx_image_oci_ensure(st, name, ref, custom->registry, auto_install, rootfs, err);
    if (!is_dir(ref))
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S101", "image '%s': rootfs directory not found: %s", name,
                        ref);
    *rootfs = xstrdup(ref);
    return 0;
}

int sbx_image_resolve(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                      bool auto_install, char **rootfs, sbx_err_t *err)
{
    *rootfs = NULL;
    if (custom)
        return custom_rootfs(st, name, custom, auto_install, rootfs, err);
    preset_t *p = find_preset(st, name);
    if (!p)
        return unknown_image(name, err);
    if (ensure_preset(st, p, auto_install, err) < 0)
        return -1;
    *rootfs = final_rootfs(st, name);
    return 0;
}

int sbx_image_build(sbx_image_store_t *st, const char *name, sbx_err_t *err)
{
    preset_t *p = find_preset(st, name);
    if (!p)
        return sbx_fail(err, SBX_E_NOT_FOUND, "S100",
                        "unknown image '%s': only the presets python and node can be built", name);
    _cleanup_free_ char *final = final_rootfs(st, name);
    if (is_dir(final)) {
        log_info("build-image %s: already built at %s", name, final);
        return 0;
    }
    return ensure_preset(st, p, true, err);
}

/* True while some process (this one or another) holds the build lock of `name`. */
static bool lock_held_elsewhere(sbx_image_store_t *st, const char *name)
{
    _cleanup_free_ char *path = xasprintf("%s/.%s.lock", st->images_dir, name);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    return flock_retry(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

void sbx_image_status(sbx_image_store_t *st, const char *name, const sbx_image_source_t *custom,
                      sbx_image_status_t *out)
{
    memset(out, 0, sizeof *out);
    if (custom) {
        char *rootfs = NULL;
        sbx_err_t e = SBX_ERR_INIT;
        if (custom_rootfs(st, name, custom, false, &rootfs, &e) == 0) {
            out->state = SBX_IMAGE_READY;
            snprintf(out->rootfs, sizeof out->rootfs, "%s", rootfs);
            free(rootfs);
        } else {
            out->state = SBX_IMAGE_ABSENT;
            snprintf(out->message, sizeof out->message, "%.255s", e.msg);
        }
        return;
    }
    preset_t *p = find_preset(st, name);
    if (!p) {
        out->state = SBX_IMAGE_ABSENT;
        snprintf(out->message, sizeof out->message, "unknown image '%s'", name);
        return;
    }
    _cleanup_free_ char *final = final_rootfs(st, name);
    pthread_mutex_lock(&p->mu);
    if (p->building) {
        out->state = SBX_IMAGE_BUILDING;
        out->started_ms = p->started_ms;
        snprintf(out->message, sizeof out->message, "%s", p->message);
    } else if (is_dir(final)) {
        out->state = SBX_IMAGE_READY;
        snprintf(out->rootfs, sizeof out->rootfs, "%s", final);
    } else if (p->failed) {
        out->state = SBX_IMAGE_FAILED;
        out->started_ms = p->started_ms;
        snprintf(out->message, sizeof out->message, "%s", p->message);
    } else {
        out->state = SBX_IMAGE_ABSENT;
        snprintf(out->message, sizeof out->message, "not built yet");
    }
    pthread_mutex_unlock(&p->mu);
    if (out->state != SBX_IMAGE_BUILDING && out->state != SBX_IMAGE_READY && lock_held_elsewhere(st, name)) {
        out->state = SBX_IMAGE_BUILDING;
        snprintf(out->message, sizeof out->message, "being built by another process");
    }
}
