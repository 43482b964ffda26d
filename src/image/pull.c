/* OCI images in the image store.
 *
 * Layout under <state_dir>/images/oci/:
 *   blobs/sha256/<hex>          verified blobs (compressed layers, configs), stored once
 *   rootfs/<manifest hex>/      an assembled, immutable root filesystem
 *   refs/<sha256 of ref>.json   a pulled reference: its manifest, config, layers, size
 *   tmp/<slug>.<random>/        a rootfs being assembled
 *   locks/<slug>.lock           flock()ed by whoever pulls that reference
 *
 * Layers are shared between images as blobs; each image (manifest) has its own unpacked
 * rootfs.  The order of a pull makes interruption harmless: blobs are renamed into place
 * only once verified, the rootfs is assembled in tmp/ and renamed into rootfs/ when
 * complete, and only then is the ref record written (atomically).  Resolving an image
 * needs the record and its rootfs, so a crash at any point leaves nothing bootable that is
 * not whole.  tmp/ directories whose lock is free are removed when the store opens. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "image/internal.h"
#include "image/unpack.h"

/* Someone interested in a running pull's progress: its starter or a caller that joined. */
typedef struct watcher {
    struct watcher *next;
    sbx_oci_progress_fn fn;
    void *cls;
} watcher_t;

typedef struct job {
    struct job *next;
    char key[600]; /* images dir + canonical ref */
    bool running;
    uint64_t generation;
    bool failed;
    sbx_err_t err;
    /* While running: who watches, and the latest figures per layer, replayed to a caller
     * that joins late so it can draw every layer at once. */
    watcher_t *watchers;
    sbx_image_layer_progress_t *layers;
    size_t n_layers;
} job_t;

static pthread_mutex_t jobs_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cv = PTHREAD_COND_INITIALIZER;
static job_t *jobs;

static const sbx_registry_opts_t default_opts;

void sbx_image_info_release(sbx_image_info_t *i)
{
    if (!i)
        return;
    free(i->ref);
    free(i->id);
    free(i->manifest_digest);
    free(i->created);
    free(i->architecture);
    free(i->os);
    free(i->rootfs);
    memset(i, 0, sizeof *i);
}

static char *oci_path(sbx_image_store_t *st, const char *sub)
{
    return xasprintf("%s/oci/%s", sbx_image_store_dir(st), sub);
}

static void slug_of(const char *canon, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(canon, strlen(canon), md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32 && i < n; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    out[64] = '\0';
}

static bool is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int flock_retry(int fd, int op)
{
    int rc;
    do
        rc = flock(fd, op);
    while (rc < 0 && errno == EINTR);
    return rc;
}

static int lock_ref(sbx_image_store_t *st, const char *slug, bool wait, sbx_err_t *err)
{
    _cleanup_free_ char *dir = oci_path(st, "locks");
    if (sbx_mkdir_p(dir, 0700, err) < 0)
        return -1;
    _cleanup_free_ char *path = xasprintf("%s/%s.lock", dir, slug);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return sbx_error(err, errno, "open `%s`", path);
    if (flock_retry(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
        int e = errno;
        close(fd);
        return sbx_error(err, e, "lock `%s`", path);
    }
    return fd;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* ---- ref records ---- */

static int info_from_json(sbx_image_store_t *st, json_t *j, sbx_image_info_t *out)
{
    const char *md = jstr(j, "manifest");
    if (!sbx_oci_digest_valid(md) || !*jstr(j, "ref"))
        return -1;
    out->ref = xstrdup(jstr(j, "ref"));
    out->id = xstrdup(jstr(j, "id"));
    out->manifest_digest = xstrdup(md);
    out->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
    out->n_layers = json_array_size(json_object_get(j, "layers"));
    out->created = xstrdup(jstr(j, "created"));
    out->architecture = xstrdup(jstr(j, "architecture"));
    out->os = xstrdup(jstr(j, "os"));
    out->pulled_ms = json_integer_value(json_object_get(j, "pulled_ms"));
    out->rootfs = xasprintf("%s/oci/rootfs/%s", sbx_image_store_dir(st), md + 7);
    return 0;
}

static json_t *load_record_file(const char *path)
{
    json_t *j = json_load_file(path, 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static json_t *load_record(sbx_image_store_t *st, const char *canon)
{
    char slug[65];
    slug_of(canon, slug);
    _cleanup_free_ char *path = xasprintf("%s/oci/refs/%s.json", sbx_image_store_dir(st), slug);
    return load_record_file(path);
}

/* A record whose rootfs exists: the image is bootable. */
static int ready_info(sbx_image_store_t *st, const char *canon, sbx_image_info_t *out)
{
    json_t *j = load_record(st, canon);
    if (!j)
        return -1;
    sbx_image_info_t i = {0};
    int rc = info_from_json(st, j, &i);
    json_decref(j);
    if (rc < 0 || !is_dir(i.rootfs)) {
        sbx_image_info_release(&i);
        return -1;
    }
    *out = i;
    return 0;
}

static int write_record(sbx_image_store_t *st, const char *canon, json_t *j, sbx_err_t *err)
{
    char slug[65];
    slug_of(canon, slug);
    _cleanup_free_ char *dir = oci_path(st, "refs");
    if (sbx_mkdir_p(dir, 0755, err) < 0)
        return -1;
    _cleanup_free_ char *tmp = xasprintf("%s/.%s.tmp", dir, slug);
    _cleanup_free_ char *path = xasprintf("%s/%s.json", dir, slug);
    _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 || sbx_write_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0)
        return sbx_error(err, errno, "write image record `%s`", path);
    return 0;
}

/* ---- the pull ---- */

typedef struct {
    sbx_oci_progress_fn fn;
    void *cls;
    const sbx_oci_manifest_t *m;
} prog_t;

static void on_progress(void *cls, int layer, int n_layers, const char *digest, uint64_t done, uint64_t total)
{
    prog_t *p = cls;
    if (!total && layer >= 0 && (size_t)layer < p->m->n_layers)
        total = p->m->layer_sizes[layer];
    p->fn(p->cls, layer, n_layers, digest, done, total);
}

static json_t *read_config(const char *blobs, const char *digest)
{
    _cleanup_free_ char *path = xasprintf("%s/sha256/%s", blobs, digest + 7);
    struct stat sb;
    if (stat(path, &sb) < 0 || sb.st_size > (16 << 20))
        return NULL;
    return json_load_file(path, 0, NULL);
}

/* Unpacks the layers into tmp/ and renames the result to rootfs/<manifest hex>. */
static int assemble(sbx_image_store_t *st, const char *slug, const sbx_oci_manifest_t *m, const char *blobs,
                    const char *final, sbx_err_t *err)
{
    _cleanup_free_ char *tmpdir = oci_path(st, "tmp");
    _cleanup_free_ char *rootsdir = oci_path(st, "rootfs");
    if (sbx_mkdir_p(tmpdir, 0700, err) < 0 || sbx_mkdir_p(rootsdir, 0755, err) < 0)
        return -1;
    char rnd[17];
    sbx_random_hex(rnd, 8);
    _cleanup_free_ char *work = xasprintf("%s/%s.%s", tmpdir, slug, rnd);
    _cleanup_free_ char *root = xasprintf("%s/rootfs", work);
    int rc = 0;
    if (mkdir(work, 0700) < 0 || mkdir(root, 0755) < 0)
        return sbx_error(err, errno, "mkdir `%s`", root);
    _cleanup_close_ int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        rc = sbx_error(err, errno, "open `%s`", root);
    for (size_t i = 0; rc == 0 && i < m->n_layers; i++) {
        _cleanup_free_ char *blob = xasprintf("%s/sha256/%s", blobs, m->layers[i] + 7);
        sbx_unpack_stats_t s = {0};
        rc = sbx_unpack_layer(rootfd, blob, &s, err);
        if (rc == 0 && s.skipped)
            log_warn("pull: layer %s: %llu unsafe or unsupported entries skipped", m->layers[i],
                     (unsigned long long)s.skipped);
    }
    if (rc == 0 && rename(root, final) < 0 && !((errno == EEXIST || errno == ENOTEMPTY) && is_dir(final)))
        rc = sbx_error(err, errno, "rename rootfs into `%s`", final);
    sbx_err_t e2 = SBX_ERR_INIT;
    if (sbx_rm_rf(work, &e2) < 0)
        log_warn("pull: cannot remove `%s`: %s", work, e2.msg);
    return rc;
}

/* Fetches the config if needed, assembles the rootfs unless it exists, then writes the
 * ref record: the last step, which makes the image bootable.  Called with the ref lock. */
static int install_locked(sbx_image_store_t *st, const char *canon, const char *slug,
                          const sbx_oci_manifest_t *m, sbx_err_t *err)
{
    _cleanup_free_ char *blobs = oci_path(st, "blobs");
    _cleanup_free_ char *final =
        xasprintf("%s/oci/rootfs/%s", sbx_image_store_dir(st), m->manifest_digest + 7);
    json_t *cfg = read_config(blobs, m->config_digest);
    int rc = 0;
    if (!is_dir(final))
        rc = assemble(st, slug, m, blobs, final, err);
    if (rc == 0) {
        json_t *layers = json_array();
        for (size_t i = 0; i < m->n_layers; i++)
            json_array_append_new(layers, json_string(m->layers[i]));
        json_t *rec =
            json_pack("{s:s, s:s, s:s, s:I, s:o, s:s, s:s, s:s, s:I}", "ref", canon, "id", m->config_digest,
                      "manifest", m->manifest_digest, "size", (json_int_t)m->size, "layers", layers,
                      "created", jstr(cfg, "created"), "architecture", jstr(cfg, "architecture"), "os",
                      jstr(cfg, "os"), "pulled_ms", (json_int_t)sbx_now_ms());
        rc = write_record(st, canon, rec, err);
        json_decref(rec);
    }
    json_decref(cfg);
    return rc;
}

int sbx_image_oci_install(sbx_image_store_t *st, const char *canon, const sbx_oci_manifest_t *m,
                          sbx_err_t *err)
{
    char slug[65];
    slug_of(canon, slug);
    _cleanup_close_ int lfd = lock_ref(st, slug, true, err);
    if (lfd < 0)
        return -1;
    return install_locked(st, canon, slug, m, err);
}

char *sbx_image_oci_blobs_dir(sbx_image_store_t *st)
{
    return oci_path(st, "blobs");
}

char *sbx_image_oci_tmp_dir(sbx_image_store_t *st, sbx_err_t *err)
{
    char *dir = oci_path(st, "tmp");
    if (sbx_mkdir_p(dir, 0700, err) < 0) {
        free(dir);
        return NULL;
    }
    return dir;
}

static bool blob_present(const char *blobs, const char *digest)
{
    _cleanup_free_ char *path = xasprintf("%s/sha256/%s", blobs, digest + 7);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int pull_locked(sbx_image_store_t *st, const sbx_oci_ref_t *ref, const sbx_registry_opts_t *opts,
                       sbx_oci_progress_fn progress, void *cls, sbx_err_t *err)
{
    char slug[65];
    slug_of(ref->canon, slug);
    _cleanup_close_ int lfd = lock_ref(st, slug, true, err);
    if (lfd < 0)
        return -1;
    sbx_oci_manifest_t m;
    if (sbx_oci_fetch_manifest(opts, ref, &m, err) < 0)
        return -1;
    int rc = 0;
    _cleanup_free_ char *blobs = oci_path(st, "blobs");
    _cleanup_free_ char *final =
        xasprintf("%s/oci/rootfs/%s", sbx_image_store_dir(st), m.manifest_digest + 7);
    json_t *old = load_record(st, ref->canon);
    bool current = old && !strcmp(jstr(old, "manifest"), m.manifest_digest) && is_dir(final);
    json_decref(old);
    if (current) {
        sbx_oci_manifest_release(&m);
        return 0;
    }
    int64_t t0 = sbx_mono_ms();
    prog_t p = {progress, cls, &m};
    /* Every layer is announced first (cached ones as complete), so a watcher knows them all. */
    for (size_t i = 0; progress && i < m.n_layers; i++)
        on_progress(&p, (int)i, (int)m.n_layers, m.layers[i],
                    blob_present(blobs, m.layers[i]) ? m.layer_sizes[i] : 0, m.layer_sizes[i]);
    for (size_t i = 0; rc == 0 && i < m.n_layers; i++) {
        rc = sbx_oci_fetch_blob(opts, ref, m.layers[i], blobs, progress ? on_progress : NULL, &p, (int)i,
                                (int)m.n_layers, err);
        if (rc == 0 && progress)
            on_progress(&p, (int)i, (int)m.n_layers, m.layers[i], m.layer_sizes[i], m.layer_sizes[i]);
    }
    if (rc == 0)
        rc = sbx_oci_fetch_blob(opts, ref, m.config_digest, blobs, NULL, NULL, -1, (int)m.n_layers, err);
    if (rc == 0)
        rc = install_locked(st, ref->canon, slug, &m, err);
    if (rc == 0)
        log_info("pull %s: %s ready in %.1f s (%zu layers, %llu bytes)", ref->canon, m.manifest_digest,
                 (double)(sbx_mono_ms() - t0) / 1000, m.n_layers, (unsigned long long)m.size);
    sbx_oci_manifest_release(&m);
    return rc;
}

static job_t *find_job(const char *key)
{
    for (job_t *j = jobs; j; j = j->next)
        if (!strcmp(j->key, key))
            return j;
    job_t *j = xcalloc(1, sizeof *j);
    snprintf(j->key, sizeof j->key, "%s", key);
    j->next = jobs;
    jobs = j;
    return j;
}

/* The running pull's progress callback: remembers the figures and passes them to every
 * watcher of the job.  Runs on the pulling thread. */
static void job_progress(void *cls, int layer, int n_layers, const char *digest, uint64_t done,
                         uint64_t total)
{
    job_t *j = cls;
    pthread_mutex_lock(&jobs_mu);
    if (layer >= 0 && n_layers > 0 && layer < n_layers) {
        if ((size_t)n_layers != j->n_layers) {
            j->layers = xrealloc(j->layers, (size_t)n_layers * sizeof *j->layers);
            memset(j->layers, 0, (size_t)n_layers * sizeof *j->layers);
            j->n_layers = (size_t)n_layers;
        }
        sbx_image_layer_progress_t *l = &j->layers[layer];
        snprintf(l->digest, sizeof l->digest, "%s", digest);
        l->done = done;
        l->total = total;
    }
    for (watcher_t *w = j->watchers; w; w = w->next)
        w->fn(w->cls, layer, n_layers, digest, done, total);
    pthread_mutex_unlock(&jobs_mu);
}

/* Adds a watcher to job `j` (jobs_mu held) and replays what is known so far to it. */
static void watch(job_t *j, watcher_t *w)
{
    w->next = j->watchers;
    j->watchers = w;
    for (size_t i = 0; i < j->n_layers; i++)
        if (j->layers[i].digest[0])
            w->fn(w->cls, (int)i, (int)j->n_layers, j->layers[i].digest, j->layers[i].done,
                  j->layers[i].total);
}

static void unwatch(job_t *j, watcher_t *w)
{
    for (watcher_t **pp = &j->watchers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

/* Runs one pull of `ref` at a time in this process; a caller arriving while a pull runs
 * waits for it and shares its result (and, with `progress`, its progress reports). */
static int pull_once(sbx_image_store_t *st, const sbx_oci_ref_t *ref, const sbx_registry_opts_t *opts,
                     sbx_oci_progress_fn progress, void *cls, sbx_err_t *err)
{
    _cleanup_free_ char *key = xasprintf("%s\n%s", sbx_image_store_dir(st), ref->canon);
    watcher_t w = {NULL, progress, cls};
    pthread_mutex_lock(&jobs_mu);
    job_t *j = find_job(key);
    if (j->running) {
        uint64_t gen = j->generation;
        if (progress)
            watch(j, &w);
        while (j->running && j->generation == gen)
            pthread_cond_wait(&jobs_cv, &jobs_mu);
        if (progress && j->generation == gen)
            unwatch(j, &w);
        int rc = j->failed ? -1 : 0;
        if (rc < 0 && err)
            *err = j->err;
        pthread_mutex_unlock(&jobs_mu);
        return rc;
    }
    j->running = true;
    j->watchers = NULL;
    j->n_layers = 0;
    if (progress)
        watch(j, &w);
    pthread_mutex_unlock(&jobs_mu);

    sbx_err_t e = SBX_ERR_INIT;
    int rc = pull_locked(st, ref, opts ? opts : &default_opts, job_progress, j, &e);
    if (rc == 0 && opts && opts->cache_budget_bytes) {
        uint64_t fb = 0, fn = 0;
        sbx_err_t ge = SBX_ERR_INIT;
        if (sbx_image_gc(st, opts->cache_budget_bytes, &fb, &fn, &ge) < 0)
            log_warn("image cache: %s", ge.msg);
    }

    pthread_mutex_lock(&jobs_mu);
    j->running = false;
    j->generation++;
    j->failed = rc < 0;
    j->err = e;
    j->watchers = NULL; /* every watcher leaves with this generation */
    free(j->layers);
    j->layers = NULL;
    j->n_layers = 0;
    pthread_cond_broadcast(&jobs_cv);
    pthread_mutex_unlock(&jobs_mu);
    if (rc < 0 && err)
        *err = e;
    return rc;
}

int sbx_image_pull(sbx_image_store_t *st, const char *name, const sbx_registry_opts_t *opts,
                   sbx_oci_progress_fn progress, void *cls, sbx_image_info_t *out, sbx_err_t *err)
{
    sbx_oci_ref_t ref;
    if (sbx_oci_ref_parse(name, &ref, err) < 0)
        return -1;
    if (pull_once(st, &ref, opts, progress, cls, err) < 0)
        return -1;
    sbx_image_info_t tmp = {0};
    if (ready_info(st, ref.canon, out ? out : &tmp) < 0)
        return sbx_fail(err, SBX_E_INTERNAL, "S102", "pull %s: image not available after pull", ref.canon);
    sbx_image_info_release(&tmp);
    return 0;
}

int sbx_image_oci_ensure(sbx_image_store_t *st, const char *name, const char *refstr,
                         const sbx_registry_opts_t *opts, bool auto_install, char **rootfs, sbx_err_t *err)
{
    sbx_oci_ref_t ref;
    if (sbx_oci_ref_parse(refstr, &ref, err) < 0)
        return -1;
    sbx_image_info_t info = {0};
    if (ready_info(st, ref.canon, &info) < 0) {
        if (!auto_install)
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S101",
                            "image '%s' is not pulled; pre-pull it with: sandbox image pull %s", name,
                            refstr);
        if (pull_once(st, &ref, opts, NULL, NULL, err) < 0)
            return -1;
        if (ready_info(st, ref.canon, &info) < 0)
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "image '%s': not available after pull", name);
    }
    *rootfs = info.rootfs;
    info.rootfs = NULL;
    sbx_image_info_release(&info);
    return 0;
}

/* ---- listing, lookup, removal ---- */

typedef int (*record_fn)(void *cls, json_t *rec, const char *path);

static int each_record(sbx_image_store_t *st, record_fn fn, void *cls)
{
    _cleanup_free_ char *dir = oci_path(st, "refs");
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n < 6 || strcmp(de->d_name + n - 5, ".json"))
            continue;
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, de->d_name);
        json_t *j = load_record_file(path);
        if (j)
            rc = fn(cls, j, path);
        json_decref(j);
    }
    closedir(d);
    return rc;
}

typedef struct {
    sbx_image_store_t *st;
    sbx_image_info_t *v;
    size_t n;
} list_t;

static int list_one(void *cls, json_t *rec, const char *path)
{
    list_t *l = cls;
    sbx_image_info_t i = {0};
    if (info_from_json(l->st, rec, &i) < 0 || !is_dir(i.rootfs)) {
        sbx_image_info_release(&i);
        return 0;
    }
    l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = i;
    return 0;
}

int sbx_image_list(sbx_image_store_t *st, sbx_image_info_t **out, size_t *n, sbx_err_t *err)
{
    list_t l = {st, NULL, 0};
    each_record(st, list_one, &l);
    *out = l.v;
    *n = l.n;
    return 0;
}

static bool id_matches(const char *digest, const char *q)
{
    if (!strcmp(digest, q))
        return true;
    const char *hex = !strncmp(q, "sha256:", 7) ? q + 7 : q;
    size_t n = strlen(hex);
    if (n < 4 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", hex[i]))
            return false;
    return strlen(digest) > 7 && !strncmp(digest + 7, hex, n);
}

int sbx_image_inspect(sbx_image_store_t *st, const char *name, sbx_image_info_t *out, sbx_err_t *err)
{
    memset(out, 0, sizeof *out);
    sbx_oci_ref_t ref;
    if (sbx_oci_ref_parse(name, &ref, NULL) == 0 && ready_info(st, ref.canon, out) == 0)
        return 0;
    sbx_image_info_t *v = NULL;
    size_t n = 0;
    sbx_image_list(st, &v, &n, NULL);
    ssize_t hit = -1;
    int hits = 0;
    size_t nl = strlen(name);
    for (size_t i = 0; i < n; i++) {
        size_t rl = strlen(v[i].ref);
        bool suffix =
            strchr(name, ':') && rl > nl && v[i].ref[rl - nl - 1] == '/' && !strcmp(v[i].ref + rl - nl, name);
        if (id_matches(v[i].id, name) || id_matches(v[i].manifest_digest, name) || suffix) {
            if (hit < 0 || strcmp(v[hit].id, v[i].id))
                hits++;
            if (hit < 0)
                hit = (ssize_t)i;
        }
    }
    int rc = 0;
    if (hits == 1)
        *out = v[hit], memset(&v[hit], 0, sizeof v[hit]);
    else
        rc = sbx_fail(err, hits ? SBX_E_CONFLICT : SBX_E_NOT_FOUND, NULL, "%s: %s",
                      hits ? "ambiguous image name" : "image not found", name);
    for (size_t i = 0; i < n; i++)
        sbx_image_info_release(&v[i]);
    free(v);
    return rc;
}

typedef struct {
    const char *manifest;
    bool used;
} use_t;

static int uses_manifest(void *cls, json_t *rec, const char *path)
{
    use_t *u = cls;
    if (!strcmp(jstr(rec, "manifest"), u->manifest))
        u->used = true;
    return 0;
}

int sbx_image_remove(sbx_image_store_t *st, const char *name, sbx_err_t *err)
{
    sbx_oci_ref_t ref;
    if (sbx_oci_ref_parse(name, &ref, err) < 0)
        return -1;
    char slug[65];
    slug_of(ref.canon, slug);
    _cleanup_close_ int lfd = lock_ref(st, slug, true, err);
    if (lfd < 0)
        return -1;
    json_t *rec = load_record(st, ref.canon);
    if (!rec)
        return sbx_fail(err, SBX_E_NOT_FOUND, NULL, "image not found: %s", name);
    _cleanup_free_ char *manifest = xstrdup(jstr(rec, "manifest"));
    json_decref(rec);
    _cleanup_free_ char *path = xasprintf("%s/oci/refs/%s.json", sbx_image_store_dir(st), slug);
    if (unlink(path) < 0)
        return sbx_error(err, errno, "remove `%s`", path);
    use_t u = {manifest, false};
    each_record(st, uses_manifest, &u);
    if (!u.used && sbx_oci_digest_valid(manifest)) {
        _cleanup_free_ char *root = xasprintf("%s/oci/rootfs/%s", sbx_image_store_dir(st), manifest + 7);
        /* Renamed away first, so no create can resolve a half-deleted tree. */
        _cleanup_free_ char *tmpdir = oci_path(st, "tmp");
        char rnd[17];
        sbx_random_hex(rnd, 8);
        _cleanup_free_ char *gone = xasprintf("%s/removed.%s", tmpdir, rnd);
        sbx_err_t e = SBX_ERR_INIT;
        if (sbx_mkdir_p(tmpdir, 0700, &e) == 0 && rename(root, gone) == 0)
            sbx_rm_rf(gone, &e);
    }
    log_info("image %s removed", ref.canon);
    return 0;
}

/* ---- garbage collection ---- */

typedef struct {
    json_t *keep; /* set of digests / manifests (object keys) */
} keep_t;

static int collect_keep(void *cls, json_t *rec, const char *path)
{
    keep_t *k = cls;
    json_object_set_new(k->keep, jstr(rec, "id"), json_true());
    json_object_set_new(k->keep, jstr(rec, "manifest"), json_true());
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(rec, "layers"), i, l) if (json_is_string(l))
        json_object_set_new(k->keep, json_string_value(l), json_true());
    return 0;
}

int sbx_image_gc(sbx_image_store_t *st, uint64_t budget_bytes, uint64_t *freed_bytes, uint64_t *freed_blobs,
                 sbx_err_t *err)
{
    *freed_bytes = *freed_blobs = 0;
    _cleanup_free_ char *dir = oci_path(st, "blobs/sha256");
    keep_t k = {json_object()};
    each_record(st, collect_keep, &k);
    uint64_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    if (budget_bytes && d) {
        while ((de = readdir(d))) {
            struct stat sb;
            if (de->d_name[0] != '.' && fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0)
                total += (uint64_t)sb.st_size;
        }
        rewinddir(d);
    }
    if (d && (!budget_bytes || total > budget_bytes)) {
        int64_t now = sbx_now_ms();
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            struct stat sb;
            if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            bool partial = !strncmp(de->d_name, ".partial-", 9);
            /* A partial download may belong to a pull running right now. */
            if (partial && now - (int64_t)sb.st_mtime * 1000 < 10 * 60 * 1000)
                continue;
            _cleanup_free_ char *dg = xasprintf("sha256:%s", de->d_name);
            if (!partial && json_object_get(k.keep, dg))
                continue;
            if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
                *freed_bytes += (uint64_t)sb.st_size;
                (*freed_blobs)++;
            }
        }
    }
    if (d)
        closedir(d);
    /* Rootfs trees no record points at (left by a crash between rename and record). */
    _cleanup_free_ char *roots = oci_path(st, "rootfs");
    d = opendir(roots);
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        _cleanup_free_ char *dg = xasprintf("sha256:%s", de->d_name);
        if (json_object_get(k.keep, dg))
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", roots, de->d_name);
        sbx_err_t e = SBX_ERR_INIT;
        if (sbx_rm_rf(p, &e) == 0)
            log_info("image gc: removed unreferenced rootfs %s", de->d_name);
    }
    if (d)
        closedir(d);
    json_decref(k.keep);
    if (*freed_blobs)
        log_info("image gc: removed %llu blobs (%llu bytes)", (unsigned long long)*freed_blobs,
                 (unsigned long long)*freed_bytes);
    return 0;
}

void sbx_image_oci_clean(sbx_image_store_t *st)
{
    _cleanup_free_ char *dir = oci_path(st, "tmp");
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char slug[65];
        snprintf(slug, sizeof slug, "%.64s", de->d_name);
        _cleanup_close_ int lfd =
            strlen(de->d_name) > 65 && de->d_name[64] == '.' ? lock_ref(st, slug, false, NULL) : -2;
        if (lfd == -1)
            continue; /* a pull in another process owns it */
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, de->d_name);
        sbx_err_t e = SBX_ERR_INIT;
        if (sbx_rm_rf(p, &e) == 0)
            log_info("image store: removed leftover of an interrupted pull `%s`", p);
    }
    closedir(d);
}

/* ---- pulls watched from another thread ---- */

struct sbx_image_pull_op {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    sbx_image_store_t *st;
    sbx_registry_opts_t opts;
    char *ref;
    sbx_image_layer_progress_t *layers;
    size_t n_layers;
    uint64_t seq; /* bumped on every change */
    bool finished;
    int rc;
    sbx_image_info_t info;
    sbx_err_t err;
};

static void op_progress(void *cls, int layer, int n_layers, const char *digest, uint64_t done, uint64_t total)
{
    sbx_image_pull_op_t *op = cls;
    if (layer < 0 || n_layers <= 0 || layer >= n_layers)
        return;
    pthread_mutex_lock(&op->mu);
    if ((size_t)n_layers > op->n_layers) {
        op->layers = xrealloc(op->layers, (size_t)n_layers * sizeof *op->layers);
        memset(op->layers + op->n_layers, 0, ((size_t)n_layers - op->n_layers) * sizeof *op->layers);
        op->n_layers = (size_t)n_layers;
    }
    sbx_image_layer_progress_t *l = &op->layers[layer];
    snprintf(l->digest, sizeof l->digest, "%s", digest);
    l->done = done;
    l->total = total;
    op->seq++;
    pthread_cond_broadcast(&op->cv);
    pthread_mutex_unlock(&op->mu);
}

void sbx_image_pull_op_unref(sbx_image_pull_op_t *op)
{
    if (!op)
        return;
    pthread_mutex_lock(&op->mu);
    bool last = --op->refs == 0;
    pthread_mutex_unlock(&op->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&op->mu);
    pthread_cond_destroy(&op->cv);
    sbx_image_info_release(&op->info);
    free(op->layers);
    free(op->ref);
    free(op);
}

/* Pull threads still running, per process: the store must outlive them. */
static pthread_mutex_t ops_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ops_cv = PTHREAD_COND_INITIALIZER;
static int ops_running;

void sbx_image_oci_drain(sbx_image_store_t *st)
{
    pthread_mutex_lock(&ops_mu);
    if (ops_running)
        log_info("image store: waiting for %d pull(s) to finish", ops_running);
    while (ops_running)
        pthread_cond_wait(&ops_cv, &ops_mu);
    pthread_mutex_unlock(&ops_mu);
}

static void *op_thread(void *arg)
{
    sbx_image_pull_op_t *op = arg;
    sbx_image_info_t info = {0};
    sbx_err_t e = SBX_ERR_INIT;
    int rc = sbx_image_pull(op->st, op->ref, &op->opts, op_progress, op, &info, &e);
    pthread_mutex_lock(&op->mu);
    op->rc = rc;
    op->info = info;
    op->err = e;
    op->finished = true;
    op->seq++;
    pthread_cond_broadcast(&op->cv);
    pthread_mutex_unlock(&op->mu);
    sbx_image_pull_op_unref(op);
    pthread_mutex_lock(&ops_mu);
    ops_running--;
    pthread_cond_broadcast(&ops_cv);
    pthread_mutex_unlock(&ops_mu);
    return NULL;
}

sbx_image_pull_op_t *sbx_image_pull_start(sbx_image_store_t *st, const char *ref,
                                          const sbx_registry_opts_t *opts, sbx_err_t *err)
{
    sbx_oci_ref_t parsed;
    if (sbx_oci_ref_parse(ref, &parsed, err) < 0)
        return NULL;
    sbx_image_pull_op_t *op = xcalloc(1, sizeof *op);
    pthread_mutex_init(&op->mu, NULL);
    pthread_cond_init(&op->cv, NULL);
    op->refs = 2; /* the caller's and the thread's */
    op->st = st;
    op->opts = opts ? *opts : default_opts;
    op->ref = xstrdup(ref);
    pthread_mutex_lock(&ops_mu);
    int e = sbx_thread_detached(op_thread, op);
    ops_running += e == 0;
    pthread_mutex_unlock(&ops_mu);
    if (e) {
        op->refs = 1;
        sbx_image_pull_op_unref(op);
        sbx_error(err, e, "start a pull thread");
        return NULL;
    }
    return op;
}

int sbx_image_pull_wait(sbx_image_pull_op_t *op, uint64_t *seq, int timeout_ms,
                        sbx_image_layer_progress_t **layers, size_t *n_layers, sbx_image_info_t *info,
                        sbx_err_t *err)
{
    struct timespec deadline = sbx_timespec_in(CLOCK_REALTIME, timeout_ms);
    pthread_mutex_lock(&op->mu);
    while (op->seq == *seq && !op->finished)
        if (pthread_cond_timedwait(&op->cv, &op->mu, &deadline) == ETIMEDOUT)
            break;
    *seq = op->seq;
    *n_layers = op->n_layers;
    *layers = NULL;
    if (op->n_layers) {
        *layers = xmalloc(op->n_layers * sizeof **layers);
        memcpy(*layers, op->layers, op->n_layers * sizeof **layers);
    }
    int rc = 1;
    if (op->finished) {
        rc = op->rc < 0 ? -1 : 0;
        if (rc < 0 && err)
            *err = op->err;
        if (rc == 0 && info) {
            info->ref = xstrdup(op->info.ref);
            info->id = xstrdup(op->info.id);
            info->manifest_digest = xstrdup(op->info.manifest_digest);
            info->size = op->info.size;
            info->n_layers = op->info.n_layers;
            info->created = xstrdup(op->info.created);
            info->architecture = xstrdup(op->info.architecture);
            info->os = xstrdup(op->info.os);
            info->pulled_ms = op->info.pulled_ms;
            info->rootfs = xstrdup(op->info.rootfs);
        }
    }
    pthread_mutex_unlock(&op->mu);
    return rc;
}

/* ---- the image config of a rootfs ---- */

typedef struct {
    const char *manifest;
    char *id;
} find_id_t;

static int find_id(void *cls, json_t *rec, const char *path)
{
    find_id_t *f = cls;
    if (!f->id && !strcmp(jstr(rec, "manifest"), f->manifest) && sbx_oci_digest_valid(jstr(rec, "id")))
        f->id = xstrdup(jstr(rec, "id"));
    return 0;
}

void sbx_image_config_release(sbx_image_config_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_env; i++)
        free(c->env[i]);
    free(c->env);
    free(c->workdir);
    free(c->user);
    memset(c, 0, sizeof *c);
}

int sbx_image_config(sbx_image_store_t *st, const char *rootfs, sbx_image_config_t *out, sbx_err_t *err)
{
    memset(out, 0, sizeof *out);
    _cleanup_free_ char *prefix = xasprintf("%s/oci/rootfs/", sbx_image_store_dir(st));
    size_t pl = strlen(prefix);
    if (!rootfs || strncmp(rootfs, prefix, pl))
        return 0; /* a preset or a local directory: no image config */
    _cleanup_free_ char *manifest = xasprintf("sha256:%s", rootfs + pl);
    if (!sbx_oci_digest_valid(manifest))
        return 0;
    find_id_t f = {manifest, NULL};
    each_record(st, find_id, &f);
    if (!f.id)
        return 0;
    _cleanup_free_ char *blobs = oci_path(st, "blobs");
    json_t *cfg = read_config(blobs, f.id);
    free(f.id);
    json_t *c = json_object_get(cfg, "config");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(c, "Env"), i, v)
    {
        const char *kv = json_string_value(v);
        if (!kv || !strchr(kv, '=') || kv[0] == '=')
            continue;
        out->env = xrealloc(out->env, (out->n_env + 2) * sizeof *out->env);
        out->env[out->n_env++] = xstrdup(kv);
        out->env[out->n_env] = NULL;
    }
    const char *wd = jstr(c, "WorkingDir");
    if (wd[0] == '/' && strlen(wd) <= 1024)
        out->workdir = xstrdup(wd);
    if (*jstr(c, "User"))
        out->user = xstrdup(jstr(c, "User"));
    json_decref(cfg);
    return 0;
}
