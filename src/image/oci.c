/* The registry client.  See oci.h for the contract.
 *
 * Auth follows the distribution spec's challenge flow: a request is sent anonymously
 * (or with a token cached from an earlier challenge); a 401 carries
 * `WWW-Authenticate: Bearer realm=...,service=...,scope=...` and we fetch a token from
 * the realm (with basic credentials from the credentials file when it has an entry for
 * the registry), or `Basic realm=...` and we send those credentials directly. */
#include "image/oci.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/util.h"

#define MAX_MANIFEST (4u << 20)
#define MAX_TOKEN (64u << 10)

static const char *const manifest_accept = "Accept: application/vnd.oci.image.index.v1+json, "
                                           "application/vnd.docker.distribution.manifest.list.v2+json, "
                                           "application/vnd.oci.image.manifest.v1+json, "
                                           "application/vnd.docker.distribution.manifest.v2+json";

/* ---- references ---- */

static bool valid_repo(const char *s)
{
    if (!*s || *s == '/' || s[strlen(s) - 1] == '/')
        return false;
    for (const char *p = s; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || strchr("._-/", *p)))
            return false;
        if (*p == '/' && p[1] == '/')
            return false;
    }
    return !strstr(s, "..");
}

static bool valid_tag(const char *s)
{
    if (!*s || strlen(s) > 127 || *s == '.' || *s == '-')
        return false;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("._-", *p)))
            return false;
    return true;
}

static bool valid_host(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr(".-:[]", *p)))
            return false;
    return true;
}

bool sbx_oci_digest_valid(const char *d)
{
    if (strncmp(d, "sha256:", 7) || strlen(d) != 71)
        return false;
    for (const char *p = d + 7; *p; p++)
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
            return false;
    return true;
}

int sbx_oci_ref_parse(const char *s, sbx_oci_ref_t *ref, sbx_err_t *err)
{
    memset(ref, 0, sizeof *ref);
    if (!s || !*s || strlen(s) > 500)
        return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image reference: '%s'", s ? s : "");
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    char *at = strchr(buf, '@');
    if (at) {
        *at = '\0';
        if (!sbx_oci_digest_valid(at + 1))
            return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image reference '%s': bad digest", s);
        snprintf(ref->digest, sizeof ref->digest, "%s", at + 1);
    }
    char *name = buf;
    char *slash = strchr(name, '/');
    if (slash && (memchr(name, '.', (size_t)(slash - name)) || memchr(name, ':', (size_t)(slash - name)) ||
                  !strncmp(name, "localhost/", 10))) {
        *slash = '\0';
        /* Truncating would name another host. */
        if (strlen(name) >= sizeof ref->registry)
            return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image reference '%s': registry too long", s);
        snprintf(ref->registry, sizeof ref->registry, "%.255s", name);
        name = slash + 1;
    } else {
        snprintf(ref->registry, sizeof ref->registry, "docker.io");
    }
    if (!strcmp(ref->registry, "index.docker.io") || !strcmp(ref->registry, "registry-1.docker.io"))
        snprintf(ref->registry, sizeof ref->registry, "docker.io");
    char *lslash = strrchr(name, '/');
    char *colon = strrchr(lslash ? lslash : name, ':');
    if (colon) {
        *colon = '\0';
        if (!valid_tag(colon + 1))
            return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image reference '%s': bad tag", s);
        snprintf(ref->tag, sizeof ref->tag, "%s", colon + 1);
    }
    if (!valid_host(ref->registry) || !valid_repo(name) || strlen(name) > 200)
        return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image reference: '%s'", s);
    if (!strcmp(ref->registry, "docker.io") && !strchr(name, '/'))
        snprintf(ref->repo, sizeof ref->repo, "library/%s", name);
    else
        snprintf(ref->repo, sizeof ref->repo, "%s", name);
    /* The limit holds for the repository as stored ("library/" included), so that a
     * canonical name always parses again. */
    if (strlen(ref->repo) > 200)
        return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image reference: '%s'", s);
    if (!ref->tag[0] && !ref->digest[0])
        snprintf(ref->tag, sizeof ref->tag, "latest");
    snprintf(ref->canon, sizeof ref->canon, "%s/%s%s%s%s%s", ref->registry, ref->repo, ref->tag[0] ? ":" : "",
             ref->tag, ref->digest[0] ? "@" : "", ref->digest);
    return 0;
}

bool sbx_oci_looks_like_ref(const char *s)
{
    sbx_oci_ref_t r;
    return s && sbx_oci_ref_parse(s, &r, NULL) == 0;
}

const char *sbx_oci_host_arch(void)
{
    struct utsname u;
    static char arch[32];
    if (uname(&u) < 0)
        return "amd64";
    const char *m = u.machine;
    if (!strcmp(m, "x86_64"))
        return "amd64";
    if (!strcmp(m, "aarch64"))
        return "arm64";
    if (!strncmp(m, "armv7", 5))
        return "arm";
    if (!strcmp(m, "i686") || !strcmp(m, "i386"))
        return "386";
    snprintf(arch, sizeof arch, "%.31s", m);
    return arch;
}

void sbx_oci_manifest_release(sbx_oci_manifest_t *m)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        free(m->layers[i]);
        free(m->layer_media[i]);
    }
    free(m->layers);
    free(m->layer_media);
    free(m->layer_sizes);
    free(m->manifest_json);
    memset(m, 0, sizeof *m);
}

/* ---- hashing ---- */

static void hex_of(const unsigned char *md, unsigned n, char *hex)
{
    for (unsigned i = 0; i < n; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    hex[2 * n] = '\0';
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    hex_of(md, n, hex);
}

int sbx_oci_sha256_file(const char *path, char hex[65], sbx_err_t *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sbx_error(err, errno, "open `%s`", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0)
            EVP_DigestUpdate(ctx, buf, (size_t)n);
    int rc = n < 0 ? sbx_error(err, errno, "read `%s`", path) : 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdn = 0;
    EVP_DigestFinal_ex(ctx, md, &mdn);
    EVP_MD_CTX_free(ctx);
    hex_of(md, mdn, hex);
    return rc;
}

/* ---- one HTTP exchange ---- */

typedef struct {
    const sbx_registry_opts_t *opts;
    const sbx_oci_ref_t *ref;
    char base[512];   /* scheme://endpoint */
    char token[4096]; /* a bearer token from the last challenge, or "" */
    char basic[1024]; /* "user:pass" from the credentials file, or "" */
} client_t;

typedef struct {
    /* memory sink */
    char *buf;
    size_t len, cap, max;
    bool overflow;
    /* file sink */
    int fd;
    EVP_MD_CTX *md;
    uint64_t written;
    bool write_failed;
    /* progress */
    sbx_oci_progress_fn progress;
    void *cls;
    int layer, n_layers;
    const char *digest;
    uint64_t total, last_report;
    /* headers */
    char challenge[2048];
    char content_type[256];
    char docker_digest[128];
} xfer_t;

static size_t on_body(char *data, size_t sz, size_t nm, void *p)
{
    xfer_t *x = p;
    size_t n = sz * nm;
    if (x->fd >= 0) {
        if (sbx_write_all(x->fd, data, n) < 0) {
            x->write_failed = true;
            return 0;
        }
        EVP_DigestUpdate(x->md, data, n);
        x->written += n;
        if (x->progress && (x->written - x->last_report >= (1u << 20) || x->written == x->total)) {
            x->last_report = x->written;
            x->progress(x->cls, x->layer, x->n_layers, x->digest, x->written, x->total);
        }
        return n;
    }
    if (x->len + n > x->max) {
        x->overflow = true;
        return 0;
    }
    if (x->len + n + 1 > x->cap) {
        x->cap = (x->len + n + 1) * 2;
        x->buf = xrealloc(x->buf, x->cap);
    }
    memcpy(x->buf + x->len, data, n);
    x->len += n;
    x->buf[x->len] = '\0';
    return n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t outlen)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) || line[k] != ':')
        return;
    const char *v = line + k + 1;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    snprintf(out, outlen, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *data, size_t sz, size_t nm, void *p)
{
    xfer_t *x = p;
    size_t n = sz * nm;
    if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
        /* A new response (after a redirect): forget the previous one's headers. */
        x->challenge[0] = x->content_type[0] = x->docker_digest[0] = '\0';
        return n;
    }
    header_value(data, n, "WWW-Authenticate", x->challenge, sizeof x->challenge);
    header_value(data, n, "Content-Type", x->content_type, sizeof x->content_type);
    header_value(data, n, "Docker-Content-Digest", x->docker_digest, sizeof x->docker_digest);
    return n;
}

static bool is_insecure(const sbx_registry_opts_t *o, const char *host)
{
    for (size_t i = 0; i < o->n_insecure; i++)
        if (!strcmp(o->insecure[i], host))
            return true;
    return false;
}

/* Performs one GET; returns the HTTP status (0 on a transport error, with *cerr set). */
static long do_get(const char *url, const char *auth_header, const char *accept, const char *range, xfer_t *x,
                   CURLcode *cerr, char *errbuf)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (accept)
        h = curl_slist_append(h, accept);
    if (auth_header)
        h = curl_slist_append(h, auth_header);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* No overall timeout (layers can be large); abort a transfer stalled for 60 s. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sandboxd");
    /* Error bodies must never reach a blob file or its hash. */
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    if (range)
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    errbuf[0] = '\0';
    *cerr = curl_easy_perform(c);
    long status = 0;
    if (*cerr == CURLE_OK || *cerr == CURLE_HTTP_RETURNED_ERROR) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        *cerr = CURLE_OK;
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* Reads `key="value"` (or key=value) from a challenge's parameter list. */
static bool challenge_param(const char *ch, const char *key, char *out, size_t outlen)
{
    size_t k = strlen(key);
    for (const char *p = ch; (p = strcasestr(p, key)); p += k) {
        if (p != ch && p[-1] != ' ' && p[-1] != ',')
            continue;
        if (p[k] != '=')
            continue;
        const char *v = p + k + 1;
        const char *end;
        if (*v == '"') {
            v++;
            end = strchr(v, '"');
        } else {
            end = v + strcspn(v, ", ");
        }
        if (!end)
            return false;
        snprintf(out, outlen, "%.*s", (int)(end - v), v);
        return true;
    }
    return false;
}

/* Loads "user:pass" for the registry from a Docker-style config.json. */
static void load_credentials(client_t *cl)
{
    const char *path = cl->opts->credentials_file;
    if (!path || !*path)
        return;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        log_warn("registry credentials `%s`: %s", path, je.text);
        return;
    }
    json_t *auths = json_object_get(root, "auths");
    const char *reg = cl->ref->registry;
    const char *keys[] = {reg, !strcmp(reg, "docker.io") ? "https://index.docker.io/v1/" : NULL};
    for (size_t i = 0; i < SBX_ARRAY_LEN(keys) && !cl->basic[0]; i++) {
        if (!keys[i])
            continue;
        json_t *e = json_object_get(auths, keys[i]);
        const char *a = json_string_value(json_object_get(e, "auth"));
        const char *u = json_string_value(json_object_get(e, "username"));
        const char *pw = json_string_value(json_object_get(e, "password"));
        if (a) {
            size_t n = 0;
            _cleanup_free_ unsigned char *dec = sbx_base64_decode(a, strlen(a), &n);
            if (dec && n < sizeof cl->basic && memchr(dec, ':', n))
                snprintf(cl->basic, sizeof cl->basic, "%.*s", (int)n, (char *)dec);
        } else if (u && pw) {
            snprintf(cl->basic, sizeof cl->basic, "%s:%s", u, pw);
        }
    }
    json_decref(root);
}

static void client_init(client_t *cl, const sbx_registry_opts_t *opts, const sbx_oci_ref_t *ref)
{
    memset(cl, 0, sizeof *cl);
    cl->opts = opts;
    cl->ref = ref;
    const char *host = ref->registry;
    if (!strcmp(host, "docker.io"))
        host = opts->mirror && *opts->mirror ? opts->mirror : "registry-1.docker.io";
    if (strstr(host, "://"))
        snprintf(cl->base, sizeof cl->base, "%s", host);
    else
        snprintf(cl->base, sizeof cl->base, "%s://%s", is_insecure(opts, host) ? "http" : "https", host);
    size_t n = strlen(cl->base);
    if (n && cl->base[n - 1] == '/')
        cl->base[n - 1] = '\0';
    load_credentials(cl);
}

/* Answers a 401 challenge: fills cl->token (Bearer) or notes basic auth.  Returns 0 when
 * a retry makes sense. */
static int answer_challenge(client_t *cl, const char *challenge, sbx_err_t *err)
{
    if (!strncasecmp(challenge, "Basic", 5)) {
        if (!cl->basic[0])
            return sbx_fail(err, SBX_E_FORBIDDEN, "S102",
                            "registry %s requires credentials; add them to the registry credentials file",
                            cl->ref->registry);
        cl->token[0] = '\0';
        return 0;
    }
    if (strncasecmp(challenge, "Bearer", 6))
        return sbx_fail(err, SBX_E_FORBIDDEN, "S102", "registry %s: unsupported auth challenge '%.60s'",
                        cl->ref->registry, challenge);
    char realm[1024] = "", service[256] = "", scope[512] = "";
    challenge_param(challenge + 6, "realm", realm, sizeof realm);
    challenge_param(challenge + 6, "service", service, sizeof service);
    if (!challenge_param(challenge + 6, "scope", scope, sizeof scope))
        snprintf(scope, sizeof scope, "repository:%s:pull", cl->ref->repo);
    if (strncmp(realm, "https://", 8) && strncmp(realm, "http://", 7))
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "registry %s: bad token realm '%s'",
                        cl->ref->registry, realm);
    CURL *c = curl_easy_init();
    _cleanup_free_ char *es = curl_easy_escape(c, service, 0);
    _cleanup_free_ char *esc = curl_easy_escape(c, scope, 0);
    curl_easy_cleanup(c);
    _cleanup_free_ char *url = xasprintf("%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?",
                                         es ? es : "", esc ? esc : "");
    _cleanup_free_ char *auth = NULL;
    if (cl->basic[0]) {
        _cleanup_free_ char *b = sbx_base64_encode(cl->basic, strlen(cl->basic));
        auth = xasprintf("Authorization: Basic %s", b);
    }
    xfer_t x = {.fd = -1, .max = MAX_TOKEN};
    CURLcode ce;
    char eb[CURL_ERROR_SIZE];
    long st = do_get(url, auth, NULL, NULL, &x, &ce, eb);
    int rc = 0;
    if (st != 200) {
        rc = sbx_fail(err, st == 401 || st == 403 ? SBX_E_FORBIDDEN : SBX_E_UNAVAILABLE, "S102",
                      "registry %s: token request failed: %s", cl->ref->registry,
                      st ? "credentials refused" : (eb[0] ? eb : curl_easy_strerror(ce)));
    } else {
        json_t *j = json_loadb(x.buf ? x.buf : "", x.len, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "token"));
        if (!t)
            t = json_string_value(json_object_get(j, "access_token"));
        if (!t || strlen(t) >= sizeof cl->token)
            rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "registry %s: token response without a token",
                          cl->ref->registry);
        else
            snprintf(cl->token, sizeof cl->token, "%s", t);
        json_decref(j);
    }
    free(x.buf);
    return rc;
}

static char *auth_header(const client_t *cl)
{
    if (cl->token[0])
        return xasprintf("Authorization: Bearer %s", cl->token);
    if (cl->basic[0]) {
        _cleanup_free_ char *b = sbx_base64_encode(cl->basic, strlen(cl->basic));
        return xasprintf("Authorization: Basic %s", b);
    }
    return NULL;
}

static bool transient_status(long st)
{
    return st == 0 || st == 408 || st == 429 || st >= 500;
}

static void backoff(const sbx_registry_opts_t *o, int attempt)
{
    int ms = (o->backoff_ms > 0 ? o->backoff_ms : 200) << (attempt > 6 ? 6 : attempt);
    usleep((useconds_t)ms * 1000);
}

static int max_attempts(const sbx_registry_opts_t *o)
{
    return o->max_attempts > 0 ? o->max_attempts : 4;
}

/* GETs `path` (below /v2/) with auth and retries.  Sets *status to the last status. */
static int get_with_auth(client_t *cl, const char *path, const char *accept, const char *range, xfer_t *x,
                         long *status, sbx_err_t *err)
{
    _cleanup_free_ char *url = xasprintf("%s/v2/%s", cl->base, path);
    bool answered = false;
    for (;;) {
        _cleanup_free_ char *ah = auth_header(cl);
        CURLcode ce;
        char eb[CURL_ERROR_SIZE];
        long st = do_get(url, ah, accept, range, x, &ce, eb);
        *status = st;
        if (st == 401 && !answered) {
            answered = true;
            if (answer_challenge(cl, x->challenge, err) < 0)
                return -1;
            x->len = 0;
            continue;
        }
        if (st == 0 && !x->write_failed && !x->overflow)
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "registry %s: %s", cl->ref->registry,
                            eb[0] ? eb : curl_easy_strerror(ce));
        return 0;
    }
}

/* ---- manifests ---- */

static bool is_index(const char *mt)
{
    return strstr(mt, "image.index") || strstr(mt, "manifest.list");
}

static int fetch_json(client_t *cl, const char *reference, json_t **out, char digest_out[80], sbx_err_t *err)
{
    _cleanup_free_ char *path = xasprintf("%s/manifests/%s", cl->ref->repo, reference);
    for (int attempt = 0;; attempt++) {
        xfer_t x = {.fd = -1, .max = MAX_MANIFEST};
        long st = 0;
        sbx_err_t e = SBX_ERR_INIT;
        int rc = get_with_auth(cl, path, manifest_accept, NULL, &x, &st, &e);
        if (rc == 0 && st == 200) {
            char hex[65];
            sha256_hex(x.buf ? x.buf : "", x.len, hex);
            snprintf(digest_out, 80, "sha256:%s", hex);
            if (sbx_oci_digest_valid(reference) && strcmp(reference, digest_out)) {
                free(x.buf);
                if (attempt + 1 < max_attempts(cl->opts)) {
                    backoff(cl->opts, attempt);
                    continue;
                }
                return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "manifest %s of %s does not match its digest",
                                reference, cl->ref->canon);
            }
            json_error_t je;
            *out = json_loadb(x.buf ? x.buf : "", x.len, 0, &je);
            free(x.buf);
            if (!json_is_object(*out)) {
                json_decref(*out);
                *out = NULL;
                return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "manifest of %s is not JSON: %s",
                                cl->ref->canon, je.text);
            }
            if (!json_object_get(*out, "mediaType") && x.content_type[0])
                json_object_set_new(*out, "mediaType", json_string(x.content_type));
            return 0;
        }
        free(x.buf);
        if (rc < 0 && e.kind == SBX_E_FORBIDDEN) {
            if (err)
                *err = e;
            return -1;
        }
        if (rc == 0 && (st == 404 || st == 401 || st == 403))
            return sbx_fail(err, st == 404 ? SBX_E_NOT_FOUND : SBX_E_FORBIDDEN, "S102", "image %s: %s",
                            cl->ref->canon,
                            st == 404 ? "manifest unknown to the registry" : "access denied by the registry");
        if (x.overflow)
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "manifest of %s is larger than 4 MiB",
                            cl->ref->canon);
        if ((rc < 0 || transient_status(st)) && attempt + 1 < max_attempts(cl->opts)) {
            backoff(cl->opts, attempt);
            continue;
        }
        if (rc < 0) {
            if (err)
                *err = e;
            return -1;
        }
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "image %s: registry answered HTTP %ld",
                        cl->ref->canon, st);
    }
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Picks linux/<host arch> from an index; fills `digest`. */
static int pick_platform(const sbx_oci_ref_t *ref, json_t *index, char digest[80], sbx_err_t *err)
{
    const char *arch = sbx_oci_host_arch();
    json_t *ms = json_object_get(index, "manifests");
    size_t i;
    json_t *m;
    char seen[256] = "";
    json_array_foreach(ms, i, m)
    {
        json_t *p = json_object_get(m, "platform");
        const char *os = jstr(p, "os"), *a = jstr(p, "architecture");
        if (strlen(seen) + strlen(os) + strlen(a) + 4 < sizeof seen && *os)
            snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s%s/%s", seen[0] ? ", " : "", os, a);
        if (!strcmp(os, "linux") && !strcmp(a, arch) && sbx_oci_digest_valid(jstr(m, "digest"))) {
            snprintf(digest, 80, "%s", jstr(m, "digest"));
            return 0;
        }
    }
    return sbx_fail(err, SBX_E_UNAVAILABLE, "S102",
                    "image %s has no linux/%s manifest (the host architecture is %s; the image offers: %s)",
                    ref->canon, arch, arch, seen[0] ? seen : "nothing");
}

int sbx_oci_fetch_manifest(const sbx_registry_opts_t *opts, const sbx_oci_ref_t *ref, sbx_oci_manifest_t *out,
                           sbx_err_t *err)
{
    memset(out, 0, sizeof *out);
    client_t cl;
    client_init(&cl, opts, ref);
    json_t *j = NULL;
    char digest[80];
    if (fetch_json(&cl, ref->digest[0] ? ref->digest : ref->tag, &j, digest, err) < 0)
        return -1;
    if (is_index(jstr(j, "mediaType")) ||
        (json_object_get(j, "manifests") && !json_object_get(j, "layers"))) {
        char pick[80];
        int rc = pick_platform(ref, j, pick, err);
        json_decref(j);
        j = NULL;
        if (rc < 0 || fetch_json(&cl, pick, &j, digest, err) < 0)
            return -1;
    }
    json_t *cfg = json_object_get(j, "config");
    json_t *layers = json_object_get(j, "layers");
    if (!sbx_oci_digest_valid(jstr(cfg, "digest")) || !json_is_array(layers)) {
        json_decref(j);
        return sbx_fail(err, SBX_E_UNAVAILABLE, "S102",
                        "image %s: unsupported manifest (only OCI and Docker v2 schema 2 are supported)",
                        ref->canon);
    }
    snprintf(out->manifest_digest, sizeof out->manifest_digest, "%s", digest);
    snprintf(out->config_digest, sizeof out->config_digest, "%s", jstr(cfg, "digest"));
    size_t n = json_array_size(layers);
    out->layers = xcalloc(n + 1, sizeof *out->layers);
    out->layer_media = xcalloc(n + 1, sizeof *out->layer_media);
    out->layer_sizes = xcalloc(n + 1, sizeof *out->layer_sizes);
    for (size_t i = 0; i < n; i++) {
        json_t *l = json_array_get(layers, i);
        if (!sbx_oci_digest_valid(jstr(l, "digest"))) {
            sbx_oci_manifest_release(out);
            json_decref(j);
            return sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "image %s: layer %zu has an unsupported digest",
                            ref->canon, i);
        }
        out->layers[i] = xstrdup(jstr(l, "digest"));
        out->layer_media[i] = xstrdup(jstr(l, "mediaType"));
        json_int_t sz = json_integer_value(json_object_get(l, "size"));
        out->layer_sizes[i] = sz > 0 ? (uint64_t)sz : 0;
        out->size += out->layer_sizes[i];
        out->n_layers++;
    }
    out->manifest_json = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return 0;
}

/* ---- blobs ---- */

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

int sbx_oci_fetch_blob(const sbx_registry_opts_t *opts, const sbx_oci_ref_t *ref, const char *digest,
                       const char *blobs_dir, sbx_oci_progress_fn progress, void *cls, int layer,
                       int n_layers, sbx_err_t *err)
{
    if (!sbx_oci_digest_valid(digest))
        return sbx_fail(err, SBX_E_INVALID, "S102", "invalid blob digest '%s'", digest);
    const char *hex = digest + 7;
    _cleanup_free_ char *dir = xasprintf("%s/sha256", blobs_dir);
    _cleanup_free_ char *final = xasprintf("%s/%s", dir, hex);
    if (file_exists(final))
        return 0;
    if (sbx_mkdir_p(dir, 0700, err) < 0)
        return -1;
    char rnd[17];
    sbx_random_hex(rnd, 8);
    _cleanup_free_ char *part = xasprintf("%s/.partial-%s-%s", dir, hex, rnd);
    client_t cl;
    client_init(&cl, opts, ref);
    _cleanup_free_ char *path = xasprintf("%s/blobs/%s", ref->repo, digest);

    _cleanup_close_ int fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return sbx_error(err, errno, "create `%s`", part);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint64_t have = 0;
    int rc = -1;
    char why[256] = "";
    for (int attempt = 0; attempt < max_attempts(opts); attempt++) {
        if (attempt)
            backoff(opts, attempt - 1);
        xfer_t x = {.fd = fd,
                    .md = md,
                    .written = have,
                    .progress = progress,
                    .cls = cls,
                    .layer = layer,
                    .n_layers = n_layers,
                    .digest = digest};
        char range[48];
        snprintf(range, sizeof range, "%llu-", (unsigned long long)have);
        long st = 0;
        sbx_err_t e = SBX_ERR_INIT;
        int r = get_with_auth(&cl, path, NULL, have ? range : NULL, &x, &st, &e);
        if (r < 0 && e.kind == SBX_E_FORBIDDEN) {
            if (err)
                *err = e;
            goto out;
        }
        if (have && r == 0 && st == 200) {
            /* The registry ignored the range and sent the whole blob after our partial
             * copy: start over with a fresh file and hash. */
            snprintf(why, sizeof why, "registry does not resume transfers");
        }
        if (x.write_failed) {
            rc = sbx_error(err, errno, "write `%s`", part);
            goto out;
        }
        bool complete = r == 0 && (st == 200 || st == 206) && !(have && st == 200);
        if (r == 0 && st == 404) {
            rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "image %s: blob %s unknown to the registry",
                          ref->canon, digest);
            goto out;
        }
        if (complete) {
            unsigned char m[EVP_MAX_MD_SIZE];
            unsigned mn = 0;
            EVP_MD_CTX *copy = EVP_MD_CTX_new();
            EVP_MD_CTX_copy_ex(copy, md);
            EVP_DigestFinal_ex(copy, m, &mn);
            EVP_MD_CTX_free(copy);
            char got[65];
            hex_of(m, mn, got);
            if (!strcmp(got, hex)) {
                if (fsync(fd) < 0 || rename(part, final) < 0) {
                    rc = sbx_error(err, errno, "store blob `%s`", final);
                    goto out;
                }
                rc = 0;
                goto out;
            }
            snprintf(why, sizeof why, "blob %s failed verification (got sha256:%.12s...)", digest, got);
            log_warn("pull %s: %s; fetching it again", ref->canon, why);
        } else if (r < 0) {
            snprintf(why, sizeof why, "%.255s", e.msg);
        } else if (!transient_status(st) && !(have && st == 200) && st != 416) {
            rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "image %s: blob %s: registry answered HTTP %ld",
                          ref->canon, digest, st);
            goto out;
        } else if (!why[0] || st) {
            snprintf(why, sizeof why, "registry answered HTTP %ld", st);
        }
        /* Resume after a broken connection when we got some bytes; restart otherwise. */
        bool resume = r < 0 && x.written > have && x.written < (x.total ? x.total : UINT64_MAX);
        if (resume) {
            have = x.written;
        } else {
            have = 0;
            if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
                rc = sbx_error(err, errno, "truncate `%s`", part);
                goto out;
            }
            EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        }
    }
    rc = sbx_fail(err, SBX_E_UNAVAILABLE, "S102", "image %s: fetching blob %s failed: %s", ref->canon, digest,
                  why);
out:
    EVP_MD_CTX_free(md);
    if (rc < 0)
        unlink(part);
    return rc;
}
