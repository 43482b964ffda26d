/* Image references and layer entry paths: sbx_oci_ref_parse (every image name a client
 * or the config file gives), sbx_oci_looks_like_ref, sbx_oci_digest_valid, and
 * sbx_unpack_clean_path (every path and hardlink target inside a layer).  A parsed
 * reference must be canonical (parsing its canon gives it back) and a cleaned path must
 * be relative, free of "." and ".." components, and fit the buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "image/oci.h"
#include "image/unpack.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

static void reference(const char *s)
{
    sbx_oci_ref_t r;
    sbx_err_t err = SBX_ERR_INIT;
    (void)sbx_oci_looks_like_ref(s);
    (void)sbx_oci_digest_valid(s);
    if (sbx_oci_ref_parse(s, &r, &err) < 0) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(r.registry[0] && r.repo[0] && (r.tag[0] || r.digest[0]));
    CHECK(!r.digest[0] || sbx_oci_digest_valid(r.digest));
    CHECK(!strstr(r.repo, "..") && r.repo[0] != '/');
    sbx_oci_ref_t again;
    CHECK(sbx_oci_ref_parse(r.canon, &again, NULL) == 0);
    CHECK(!strcmp(again.canon, r.canon) && !strcmp(again.registry, r.registry) &&
          !strcmp(again.repo, r.repo));
}

static void clean_path(const char *s, size_t outlen)
{
    char *out = xmalloc(outlen ? outlen : 1);
    int c = sbx_unpack_clean_path(s, out, outlen);
    if (c == 0) {
        size_t n = strlen(out);
        CHECK(n > 0 && n < outlen && out[0] != '/' && out[n - 1] != '/' && !strstr(out, "//"));
        for (char *p = out; p;) {
            char *slash = strchr(p, '/');
            size_t len = slash ? (size_t)(slash - p) : strlen(p);
            CHECK(!(len == 1 && p[0] == '.') && !(len == 2 && p[0] == '.' && p[1] == '.'));
            p = slash ? slash + 1 : NULL;
        }
        /* Cleaning is idempotent. */
        char *again = xmalloc(outlen);
        CHECK(sbx_unpack_clean_path(out, again, outlen) == 0 && !strcmp(again, out));
        free(again);
    } else {
        CHECK(c == 1 || c == -1);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    /* The tail of the input (after the first NUL, if any) is ignored; the first byte of
     * it, when present, picks a small output buffer for the path cleaner. */
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    size_t len = strlen(s);
    size_t outlen = len + 1 < size ? (size_t)(uint8_t)s[len + 1] : 4096;
    reference(s);
    clean_path(s, 4096);
    clean_path(s, outlen);
    free(s);
    return 0;
}
