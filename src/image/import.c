/* Image import.  See import.h for the contract.
 *
 * The archive is read once: each regular file is copied to tmp/import-<random>/<n> while
 * it is hashed, and remembered by its cleaned path.  Links are remembered as the cleaned
 * path they lead to (docker save links repeated layers).  Then the format's JSON files
 * name the blobs; each is looked up, checked against its digest, and renamed into the
 * blob directory; finally the image is installed exactly as a pulled one is. */
#include "image/import.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "image/internal.h"
#include "image/unpack.h"

#define MAX_MEMBERS 100000
#define MAX_JSON (4u << 20)
#define MAX_LINK_HOPS 8

#define ANN_REF "org.opencontainers.image.ref.name"
#define ANN_NAME "io.containerd.image.name"

typedef struct {
    char *path;   /* cleaned path inside the archive */
    char *staged; /* our copy, or NULL for a link */
    char *link;   /* a link's cleaned target, or NULL */
    char hex[65];
    uint64_t size;
    bool stored; /* renamed into the blob directory */
} member_t;

typedef struct {
    sbx_image_store_t *st;
    char *work;
    char *blobs;
    member_t *m;
    size_t n;
} import_t;

static int refuse(sbx_err_t *err, const char *fmt, const char *arg)
{
    return sbx_fail(err, SBX_E_INVALID, "S001", "import refused: %s%s", fmt, arg ? arg : "");
}

int sbx_image_import_tmpfile(sbx_image_store_t *st, char **path, sbx_err_t *err)
{
    _cleanup_free_ char *dir = sbx_image_oci_tmp_dir(st, err);
    if (!dir)
        return -1;
    char rnd[17];
    sbx_random_hex(rnd, 8);
    char *p = xasprintf("%s/upload-%s", dir, rnd);
    int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        sbx_error(err, errno, "create `%s`", p);
        free(p);
        return -1;
    }
    *path = p;
    return fd;
}

/* ---- reading the archive ---- */

/* Joins a symlink's target to the directory holding the link and resolves "." and ".."
 * lexically.  Returns -1 when the result leaves the archive's root or is absolute. */
static int resolve_link(const char *linkpath, const char *target, char *out, size_t outlen)
{
    if (target[0] == '/')
        return -1;
    char buf[4096];
    const char *slash = strrchr(linkpath, '/');
    int n = snprintf(buf, sizeof buf, "%.*s%s%s", slash ? (int)(slash - linkpath) : 0, linkpath,
                     slash ? "/" : "", target);
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    size_t o = 0;
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, "."))
            continue;
        if (!strcmp(c, "..")) {
            if (!o)
                return -1;
            while (o && out[o - 1] != '/')
                o--;
            if (o)
                o--;
            continue;
        }
        size_t k = strlen(c);
        if (o + k + 2 > outlen)
            return -1;
        if (o)
            out[o++] = '/';
        memcpy(out + o, c, k);
        o += k;
    }
    out[o] = '\0';
    return o ? 0 : -1;
}

static int stage_file(import_t *im, struct archive *a, member_t *mb, sbx_err_t *err)
{
    mb->staged = xasprintf("%s/%zu", im->work, im->n);
    _cleanup_close_ int fd = open(mb->staged, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return sbx_error(err, errno, "create `%s`", mb->staged);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    int rc = 0;
    for (;;) {
        const void *buf;
        size_t len;
        la_int64_t off;
        int r = archive_read_data_block(a, &buf, &len, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            rc = refuse(err, "corrupt archive: ", archive_error_string(a));
            break;
        }
        if ((uint64_t)off != mb->size) {
            rc = refuse(err, "sparse files are not supported: ", mb->path);
            break;
        }
        if (sbx_write_all(fd, buf, len) < 0) {
            rc = sbx_error(err, errno, "write `%s`", mb->staged);
            break;
        }
        EVP_DigestUpdate(md, buf, len);
        mb->size += len;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    EVP_DigestFinal_ex(md, d, &dn);
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < dn && i < 32; i++)
        sprintf(mb->hex + 2 * i, "%02x", d[i]);
    if (rc == 0 && fsync(fd) < 0)
        rc = sbx_error(err, errno, "fsync `%s`", mb->staged);
    return rc;
}

/* Records one entry of the archive; directories and special files are ignored. */
static int read_member(import_t *im, struct archive *a, struct archive_entry *e, sbx_err_t *err)
{
    char clean[4096];
    int c = sbx_unpack_clean_path(archive_entry_pathname(e), clean, sizeof clean);
    if (c < 0)
        return refuse(err, "unsafe path in the archive: ", archive_entry_pathname(e));
    mode_t type = archive_entry_filetype(e);
    const char *hard = archive_entry_hardlink(e);
    if (c == 1 || (!hard && type != AE_IFREG && type != AE_IFLNK))
        return 0;
    if (im->n >= MAX_MEMBERS)
        return refuse(err, "too many files in the archive", NULL);
    member_t mb = {.path = xstrdup(clean)};
    char target[4096];
    int rc = 0;
    if (hard) {
        if (sbx_unpack_clean_path(hard, target, sizeof target) != 0)
            rc = refuse(err, "unsafe hardlink in the archive: ", hard);
        else
            mb.link = xstrdup(target);
    } else if (type == AE_IFLNK) {
        const char *t = archive_entry_symlink(e);
        if (!t || resolve_link(clean, t, target, sizeof target) < 0)
            rc = refuse(err, "symlink leaving the archive: ", clean);
        else
            mb.link = xstrdup(target);
    } else {
        rc = stage_file(im, a, &mb, err);
    }
    im->m = xrealloc(im->m, (im->n + 1) * sizeof *im->m);
    im->m[im->n++] = mb;
    return rc;
}

static int read_archive(import_t *im, const char *path, sbx_err_t *err)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    int rc = 0;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        rc = refuse(err, "not a tar archive: ", archive_error_string(a));
    } else {
        struct archive_entry *e;
        int r;
        while (rc == 0 && (r = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
            if (r < ARCHIVE_WARN)
                rc = refuse(err, "not a tar archive: ", archive_error_string(a));
            else
                rc = read_member(im, a, e, err);
        }
    }
    archive_read_free(a);
    return rc;
}

/* The member at `path`, links followed; NULL when absent. */
static member_t *lookup(import_t *im, const char *path)
{
    char cur[4096];
    if (sbx_unpack_clean_path(path, cur, sizeof cur) != 0)
        return NULL;
    for (int hop = 0; hop <= MAX_LINK_HOPS; hop++) {
        member_t *hit = NULL;
        for (size_t i = im->n; i-- > 0;)
            if (!strcmp(im->m[i].path, cur)) {
                hit = &im->m[i];
                break;
            }
        if (!hit || !hit->link)
            return hit;
        snprintf(cur, sizeof cur, "%s", hit->link);
    }
    return NULL;
}

static json_t *load_json(import_t *im, const char *path)
{
    member_t *mb = lookup(im, path);
    if (!mb || mb->size > MAX_JSON)
        return NULL;
    return json_load_file(mb->staged, 0, NULL);
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Moves a verified member into the blob directory under its content's digest. */
static int store_blob(import_t *im, member_t *mb, sbx_err_t *err)
{
    if (mb->stored)
        return 0;
    _cleanup_free_ char *dir = xasprintf("%s/sha256", im->blobs);
    if (sbx_mkdir_p(dir, 0700, err) < 0)
        return -1;
    _cleanup_free_ char *final = xasprintf("%s/%s", dir, mb->hex);
    struct stat sb;
    if (stat(final, &sb) < 0 && rename(mb->staged, final) < 0)
        return sbx_error(err, errno, "store blob `%s`", final);
    mb->stored = true;
    return 0;
}

/* ---- OCI image layouts ---- */

/* The blob a descriptor names, checked against its digest and size. */
static member_t *layout_blob(import_t *im, json_t *desc, sbx_err_t *err)
{
    const char *digest = jstr(desc, "digest");
    if (!sbx_oci_digest_valid(digest)) {
        refuse(err, "unsupported or malformed digest: ", digest);
        return NULL;
    }
    _cleanup_free_ char *path = xasprintf("blobs/sha256/%s", digest + 7);
    member_t *mb = lookup(im, path);
    if (!mb) {
        refuse(err, "blob missing from the layout: ", digest);
        return NULL;
    }
    json_t *size = json_object_get(desc, "size");
    if (strcmp(mb->hex, digest + 7) ||
        (json_is_integer(size) && (uint64_t)json_integer_value(size) != mb->size)) {
        sbx_fail(
            err, SBX_E_INVALID, "S001",
            "import refused: blob %s does not match its digest (its content is sha256:%.12s..., %llu bytes)",
            digest, mb->hex, (unsigned long long)mb->size);
        return NULL;
    }
    return mb;
}

static json_t *layout_json(import_t *im, json_t *desc, sbx_err_t *err)
{
    member_t *mb = layout_blob(im, desc, err);
    if (!mb)
        return NULL;
    json_t *j = mb->size <= MAX_JSON ? json_load_file(mb->staged, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        refuse(err, "not a JSON object: ", jstr(desc, "digest"));
    }
    return j;
}

static bool same_image(const char *a, const char *b)
{
    sbx_oci_ref_t ra, rb;
    return sbx_oci_ref_parse(a, &ra, NULL) == 0 && sbx_oci_ref_parse(b, &rb, NULL) == 0 &&
           !strcmp(ra.canon, rb.canon);
}

/* A full reference an index entry names (a bare tag is not one), or NULL. */
static const char *entry_name(json_t *desc)
{
    json_t *ann = json_object_get(desc, "annotations");
    const char *n = jstr(ann, ANN_NAME);
    if (*n && sbx_oci_looks_like_ref(n))
        return n;
    n = jstr(ann, ANN_REF);
    if (strpbrk(n, "/:") && sbx_oci_looks_like_ref(n))
        return n;
    return NULL;
}

static bool entry_matches(json_t *desc, const char *name)
{
    json_t *ann = json_object_get(desc, "annotations");
    const char *full = entry_name(desc), *ref = jstr(ann, ANN_REF);
    sbx_oci_ref_t r;
    if (full && same_image(full, name))
        return true;
    if (!strcmp(ref, name))
        return true;
    return *ref && sbx_oci_ref_parse(name, &r, NULL) == 0 && !strcmp(ref, r.tag);
}

static json_t *pick_platform(json_t *index)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(index, "manifests"), i, d)
    {
        json_t *p = json_object_get(d, "platform");
        if (!strcmp(jstr(p, "os"), "linux") && !strcmp(jstr(p, "architecture"), sbx_oci_host_arch()))
            return d;
    }
    return NULL;
}

/* Chooses the index entry to import.  *from_name receives the entry's full name if any. */
static json_t *choose_entry(json_t *index, const char *name, const char **from_name, sbx_err_t *err)
{
    json_t *ms = json_object_get(index, "manifests");
    size_t n = json_array_size(ms), i;
    json_t *d, *hit = NULL;
    if (!n) {
        refuse(err, "the layout's index lists no image", NULL);
        return NULL;
    }
    json_array_foreach(ms, i, d)
    {
        if (!hit && name && entry_matches(d, name))
            hit = d;
    }
    if (!hit && n == 1)
        hit = json_array_get(ms, 0);
    if (!hit)
        hit = pick_platform(index);
    if (!hit) {
        sbx_fail(err, SBX_E_INVALID, "S001",
                 "import refused: the layout holds %zu images%s%s; choose one with a name matching its %s "
                 "annotation",
                 n, name ? " and none is " : "", name ? name : "", ANN_REF);
        return NULL;
    }
    *from_name = entry_name(hit);
    return hit;
}

static bool is_index(json_t *desc, json_t *j)
{
    const char *mt = jstr(desc, "mediaType");
    return strstr(mt, "image.index") || strstr(mt, "manifest.list") ||
           (j && json_object_get(j, "manifests") && !json_object_get(j, "layers"));
}

/* Fills `m` from the manifest `mj` (digest `digest`), checking every blob it names. */
static int manifest_from_layout(import_t *im, json_t *mj, const char *digest, sbx_oci_manifest_t *m,
                                sbx_err_t *err)
{
    json_t *cfg = json_object_get(mj, "config");
    json_t *layers = json_object_get(mj, "layers");
    member_t *cm = cfg ? layout_blob(im, cfg, err) : NULL;
    if (!cm || !json_is_array(layers))
        return cm ? refuse(err, "the manifest lists no layers", NULL) : -1;
    snprintf(m->manifest_digest, sizeof m->manifest_digest, "%s", digest);
    snprintf(m->config_digest, sizeof m->config_digest, "%s", jstr(cfg, "digest"));
    size_t n = json_array_size(layers);
    m->layers = xcalloc(n + 1, sizeof *m->layers);
    m->layer_media = xcalloc(n + 1, sizeof *m->layer_media);
    m->layer_sizes = xcalloc(n + 1, sizeof *m->layer_sizes);
    member_t **mbs = xcalloc(n + 1, sizeof *mbs);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *l = json_array_get(layers, i);
        if (!(mbs[i] = layout_blob(im, l, err)))
            rc = -1;
        else {
            m->layers[i] = xstrdup(jstr(l, "digest"));
            m->layer_media[i] = xstrdup(jstr(l, "mediaType"));
            m->layer_sizes[i] = mbs[i]->size;
            m->size += mbs[i]->size;
            m->n_layers++;
        }
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = store_blob(im, mbs[i], err);
    if (rc == 0)
        rc = store_blob(im, cm, err);
    free(mbs);
    return rc;
}

static int import_layout(import_t *im, const char *name, sbx_oci_manifest_t *m, char **found_name,
                         sbx_err_t *err)
{
    json_t *index = load_json(im, "index.json");
    if (!json_is_object(index)) {
        json_decref(index);
        return refuse(err, "index.json is not a JSON object", NULL);
    }
    const char *from = NULL;
    json_t *desc = choose_entry(index, name, &from, err);
    if (from)
        *found_name = xstrdup(from);
    json_t *j = desc ? layout_json(im, desc, err) : NULL;
    json_t *owned = NULL; /* a descriptor taken from a nested index */
    char digest[80] = "";
    if (desc)
        snprintf(digest, sizeof digest, "%s", jstr(desc, "digest"));
    /* A nested index (a multi-platform image) is narrowed to linux/<host arch>. */
    for (int depth = 0; j && is_index(desc, j); depth++) {
        json_t *next = depth < 4 ? pick_platform(j) : NULL;
        if (!next) {
            sbx_fail(err, SBX_E_INVALID, "S001", "import refused: the image has no linux/%s manifest",
                     sbx_oci_host_arch());
            json_decref(j);
            j = NULL;
            break;
        }
        next = json_deep_copy(next);
        snprintf(digest, sizeof digest, "%s", jstr(next, "digest"));
        json_decref(j);
        j = layout_json(im, next, err);
        json_decref(owned);
        desc = owned = next;
    }
    int rc = j ? manifest_from_layout(im, j, digest, m, err) : -1;
    if (rc == 0)
        m->manifest_json = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    json_decref(owned);
    json_decref(index);
    return rc;
}

/* ---- docker save archives ---- */

/* The SHA-256 of a layer's uncompressed stream (for a compressed layer tar). */
static int uncompressed_hex(const char *path, char hex[65])
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    int rc = -1;
    if (archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK &&
        archive_read_next_header(a, &e) == ARCHIVE_OK) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        char buf[65536];
        la_ssize_t n;
        while ((n = archive_read_data(a, buf, sizeof buf)) > 0)
            EVP_DigestUpdate(md, buf, (size_t)n);
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned dn = 0;
        EVP_DigestFinal_ex(md, d, &dn);
        EVP_MD_CTX_free(md);
        for (unsigned i = 0; i < dn && i < 32; i++)
            sprintf(hex + 2 * i, "%02x", d[i]);
        rc = n < 0 ? -1 : 0;
    }
    archive_read_free(a);
    return rc;
}

static json_t *choose_docker_entry(json_t *mj, const char *name, sbx_err_t *err)
{
    size_t i, k;
    json_t *e, *t;
    json_array_foreach(mj, i, e)
    {
        json_array_foreach(json_object_get(e, "RepoTags"), k, t)
        {
            if (name && json_is_string(t) && same_image(json_string_value(t), name))
                return e;
        }
    }
    if (json_array_size(mj) == 1)
        return json_array_get(mj, 0);
    sbx_fail(err, SBX_E_INVALID, "S001",
             "import refused: the archive holds %zu images; choose one by its tag", json_array_size(mj));
    return NULL;
}

static int docker_layers(import_t *im, json_t *layers, json_t *diff_ids, sbx_oci_manifest_t *m,
                         member_t **mbs, sbx_err_t *err)
{
    size_t n = json_array_size(layers);
    if (json_array_size(diff_ids) != n)
        return refuse(err, "the image config's diff_ids do not match its layers", NULL);
    for (size_t i = 0; i < n; i++) {
        const char *p = json_string_value(json_array_get(layers, i));
        const char *want = json_string_value(json_array_get(diff_ids, i));
        member_t *mb = p ? lookup(im, p) : NULL;
        if (!mb || !mb->staged)
            return refuse(err, "layer missing from the archive: ", p ? p : "?");
        char hex[65];
        bool ok = want && !strncmp(want, "sha256:", 7) &&
                  (!strcmp(want + 7, mb->hex) ||
                   (uncompressed_hex(mb->staged, hex) == 0 && !strcmp(want + 7, hex)));
        if (!ok)
            return sbx_fail(err, SBX_E_INVALID, "S001",
                            "import refused: layer %s does not match its digest %s in the image config", p,
                            want ? want : "(none)");
        mbs[i] = mb;
        m->layers[i] = xasprintf("sha256:%s", mb->hex);
        m->layer_media[i] = xstrdup("application/vnd.docker.image.rootfs.diff.tar");
        m->layer_sizes[i] = mb->size;
        m->size += mb->size;
        m->n_layers++;
    }
    return 0;
}

/* A manifest for the archive's image, as a registry would hold it, so the image gets a
 * manifest digest like every other. */
static void synthesize_manifest(sbx_oci_manifest_t *m, uint64_t config_size)
{
    json_t *layers = json_array();
    for (size_t i = 0; i < m->n_layers; i++)
        json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType", m->layer_media[i], "digest",
                                                m->layers[i], "size", (json_int_t)m->layer_sizes[i]));
    json_t *j = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
                          "application/vnd.docker.distribution.manifest.v2+json", "config", "mediaType",
                          "application/vnd.docker.container.image.v1+json", "digest", m->config_digest,
                          "size", (json_int_t)config_size, "layers", layers);
    m->manifest_json = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    EVP_Digest(m->manifest_json, strlen(m->manifest_json), d, &dn, EVP_sha256(), NULL);
    char hex[65];
    for (unsigned i = 0; i < dn && i < 32; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
    snprintf(m->manifest_digest, sizeof m->manifest_digest, "sha256:%s", hex);
}

static int import_docker(import_t *im, const char *name, sbx_oci_manifest_t *m, char **found_name,
                         sbx_err_t *err)
{
    json_t *mj = load_json(im, "manifest.json");
    json_t *entry = json_is_array(mj) ? choose_docker_entry(mj, name, err) : NULL;
    int rc = -1;
    if (!json_is_array(mj))
        refuse(err, "manifest.json is not a JSON array", NULL);
    json_t *tag = json_array_get(json_object_get(entry, "RepoTags"), 0);
    if (json_is_string(tag))
        *found_name = xstrdup(json_string_value(tag));
    member_t *cm = entry ? lookup(im, jstr(entry, "Config")) : NULL;
    json_t *cfg = cm && cm->staged && cm->size <= MAX_JSON ? json_load_file(cm->staged, 0, NULL) : NULL;
    if (entry && !json_is_object(cfg))
        refuse(err, "image config missing from the archive: ", jstr(entry, "Config"));
    if (json_is_object(cfg)) {
        json_t *layers = json_object_get(entry, "Layers");
        size_t n = json_array_size(layers);
        m->layers = xcalloc(n + 1, sizeof *m->layers);
        m->layer_media = xcalloc(n + 1, sizeof *m->layer_media);
        m->layer_sizes = xcalloc(n + 1, sizeof *m->layer_sizes);
        member_t **mbs = xcalloc(n + 1, sizeof *mbs);
        snprintf(m->config_digest, sizeof m->config_digest, "sha256:%s", cm->hex);
        rc = docker_layers(im, layers, json_object_get(json_object_get(cfg, "rootfs"), "diff_ids"), m, mbs,
                           err);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = store_blob(im, mbs[i], err);
        if (rc == 0)
            rc = store_blob(im, cm, err);
        if (rc == 0)
            synthesize_manifest(m, cm->size);
        free(mbs);
    }
    json_decref(cfg);
    json_decref(mj);
    return rc;
}

/* ---- the whole import ---- */

static void import_release(import_t *im)
{
    for (size_t i = 0; i < im->n; i++) {
        free(im->m[i].path);
        free(im->m[i].staged);
        free(im->m[i].link);
    }
    free(im->m);
    if (im->work) {
        sbx_err_t e = SBX_ERR_INIT;
        if (sbx_rm_rf(im->work, &e) < 0)
            log_warn("import: cannot remove `%s`: %s", im->work, e.msg);
    }
    free(im->work);
    free(im->blobs);
}

/* The reference to install under: the one asked for, else the archive's own. */
static int final_name(const char *name, const char *found, sbx_oci_ref_t *ref, sbx_err_t *err)
{
    if (!name && !found)
        return refuse(err, "the archive does not name its image; give it a name", NULL);
    return sbx_oci_ref_parse(name ? name : found, ref, err);
}

int sbx_image_import(sbx_image_store_t *st, const char *path, const char *name, sbx_image_info_t *out,
                     sbx_err_t *err)
{
    sbx_oci_ref_t ref;
    if (name && sbx_oci_ref_parse(name, &ref, err) < 0)
        return -1;
    import_t im = {.st = st, .blobs = sbx_image_oci_blobs_dir(st)};
    _cleanup_free_ char *tmp = sbx_image_oci_tmp_dir(st, err);
    if (!tmp)
        return import_release(&im), -1;
    char rnd[17];
    sbx_random_hex(rnd, 8);
    im.work = xasprintf("%s/import-%s", tmp, rnd);
    if (mkdir(im.work, 0700) < 0) {
        sbx_error(err, errno, "mkdir `%s`", im.work);
        free(im.work);
        im.work = NULL;
        return import_release(&im), -1;
    }
    int64_t t0 = sbx_mono_ms();
    sbx_oci_manifest_t m = {0};
    _cleanup_free_ char *found = NULL;
    int rc = read_archive(&im, path, err);
    if (rc == 0) {
        if (lookup(&im, "index.json"))
            rc = import_layout(&im, name, &m, &found, err);
        else if (lookup(&im, "manifest.json"))
            rc = import_docker(&im, name, &m, &found, err);
        else
            rc = refuse(err,
                        "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
                        NULL);
    }
    if (rc == 0 && !found && !name && lookup(&im, "manifest.json")) {
        /* A layout written by docker save also carries the tags in manifest.json. */
        json_t *mj = load_json(&im, "manifest.json");
        json_t *t = json_array_get(json_object_get(json_array_get(mj, 0), "RepoTags"), 0);
        if (json_is_string(t))
            found = xstrdup(json_string_value(t));
        json_decref(mj);
    }
    if (rc == 0)
        rc = final_name(name, found, &ref, err);
    if (rc == 0)
        rc = sbx_image_oci_install(st, ref.canon, &m, err);
    import_release(&im);
    if (rc == 0)
        log_info("import %s: %s ready in %.1f s (%zu layers, %llu bytes)", ref.canon, m.manifest_digest,
                 (double)(sbx_mono_ms() - t0) / 1000, m.n_layers, (unsigned long long)m.size);
    sbx_oci_manifest_release(&m);
    if (rc < 0)
        return -1;
    sbx_image_info_t tmpi = {0};
    if (sbx_image_inspect(st, ref.canon, out ? out : &tmpi, err) < 0)
        return -1;
    sbx_image_info_release(&tmpi);
    return 0;
}
