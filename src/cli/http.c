#include "cli/http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/util.h"

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

/* One transfer in flight. */
typedef struct {
    const sbx_http_sink_t *sink;     /* NULL: collect the whole body */
    long status;                     /* of the answer being received; 0 before its status line */
    buf_t body;                      /* the collected body */
    bool stopped;                    /* the sink ended the transfer */
    const sbx_http_source_t *source; /* a raw request body, or NULL */
    bool source_failed;
} xfer_t;

void sbx_http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool streaming(const xfer_t *x)
{
    return x->sink && x->status >= 200 && x->status <= 299;
}

static void buf_append(buf_t *b, const char *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer_t *x = ud;
    size_t n = size * nmemb;
    if (!streaming(x)) {
        buf_append(&x->body, ptr, n);
        return n;
    }
    if (x->sink->on_data(x->sink->ud, ptr, n))
        return n;
    /* A short count makes libcurl end the transfer with CURLE_WRITE_ERROR (it never
     * passes an empty piece). */
    x->stopped = true;
    return 0;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* libcurl hands over header lines one by one, each with its line ending. */
static size_t on_header(char *ptr, size_t size, size_t nitems, void *ud)
{
    xfer_t *x = ud;
    size_t n = size * nitems;
    if (n > 5 && !memcmp(ptr, "HTTP/", 5)) {
        /* A status line starts the headers of a new answer ("HTTP/1.1 200 OK"). */
        const char *sp = memchr(ptr, ' ', n);
        x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    const char *colon = memchr(ptr, ':', n);
    if (!x->sink || !x->sink->on_header || !colon)
        return n;
    const char *name = ptr, *name_end = colon, *value = colon + 1, *value_end = ptr + n;
    while (name_end > name && blank(name_end[-1]))
        name_end--;
    while (value < value_end && blank(*value))
        value++;
    while (value_end > value && blank(value_end[-1]))
        value_end--;
    _cleanup_free_ char *k = xstrndup(name, (size_t)(name_end - name));
    _cleanup_free_ char *v = xstrndup(value, (size_t)(value_end - value));
    x->sink->on_header(x->sink->ud, k, v);
    return n;
}

/* libcurl calls this at least once a second, and sooner when a signal interrupts its
 * poll(), which bounds how long an interrupted request lingers. */
static int on_progress(void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
    const sbx_http_t *c = ud;
    /* Atomic: another thread may be the one that sets the counter. */
    return c->cancel && c->cancel_after > 0 &&
           __atomic_load_n(c->cancel, __ATOMIC_RELAXED) >= c->cancel_after;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    xfer_t *x = ud;
    long n = x->source->read(x->source->ud, buf, size * nitems);
    if (n < 0) {
        x->source_failed = true;
        return CURL_READFUNC_ABORT;
    }
    return (size_t)n;
}

static struct curl_slist *make_headers(const sbx_http_t *c, const char *accept, bool raw)
{
    struct curl_slist *h = NULL;
    _cleanup_free_ char *acc = xasprintf("Accept: %s", accept);
    h = curl_slist_append(h,
                          raw ? "Content-Type: application/octet-stream" : "Content-Type: application/json");
    h = curl_slist_append(h, acc);
    /* Large exec bodies (stdin) would otherwise wait a round trip for 100-continue. */
    h = curl_slist_append(h, "Expect:");
    if (c->token && *c->token) {
        _cleanup_free_ char *auth = xasprintf("Authorization: Bearer %s", c->token);
        h = curl_slist_append(h, auth);
    }
    return h;
}

static int is_unreachable(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT;
}

/* Turns libcurl's verdict into ours.  Returns 0, SBX_HTTP_ENET or SBX_HTTP_ECANCEL. */
static int classify(const sbx_http_t *c, CURLcode rc, const xfer_t *x, const char *errbuf, sbx_err_t *err)
{
    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && x->stopped))
        return 0;
    if (x->source_failed) {
        sbx_fail(err, SBX_E_INVALID, NULL, "upload abandoned: the input could not be read");
        return SBX_HTTP_ENET;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        sbx_fail(err, SBX_E_TIMEOUT, NULL, "interrupted");
        return SBX_HTTP_ECANCEL;
    }
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (is_unreachable(rc))
        sbx_fail(err, SBX_E_UNAVAILABLE, NULL,
                 "cannot reach sandboxd at %s: %s (is it running? start it with `sudo build/sandboxd`)",
                 c->base_url, why);
    else
        sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "lost the connection to sandboxd at %s: %s", c->base_url, why);
    return SBX_HTTP_ENET;
}

static int perform(const sbx_http_t *c, const char *method, const char *path, json_t *body,
                   const char *accept, xfer_t *x, sbx_http_resp_t *resp, sbx_err_t *err)
{
    resp->status = 0;
    resp->body = NULL;
    CURL *h = curl_easy_init();
    if (!h)
        return sbx_fail(err, SBX_E_INTERNAL, NULL, "cannot initialise libcurl"), SBX_HTTP_ENET;
    _cleanup_free_ char *url = xasprintf("%s%s", c->base_url, path);
    _cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *headers = make_headers(c, accept, x->source != NULL);
    char errbuf[CURL_ERROR_SIZE] = "";

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sandbox/" SBX_CLI_VERSION);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c);
    if (x->source) {
        /* libcurl sends the body as it reads it: with Content-Length when the size is
         * known, chunked otherwise. */
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, x);
        if (x->source->size >= 0)
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->source->size);
    } else if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
    }

    int ret = classify(c, curl_easy_perform(h), x, errbuf, err);
    if (ret != SBX_HTTP_ECANCEL)
        resp->status = x->status;
    if (ret == 0 && x->body.len) {
        json_error_t jerr;
        /* Exec output may legitimately contain NUL bytes. */
        resp->body = json_loadb(x->body.data, x->body.len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    }
    free(x->body.data);
    x->body = (buf_t){0};
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return ret;
}

int sbx_http_request(const sbx_http_t *c, const char *method, const char *path, json_t *body,
                     sbx_http_resp_t *resp, sbx_err_t *err)
{
    xfer_t x = {0};
    return perform(c, method, path, body, "application/json", &x, resp, err);
}

int sbx_http_stream(const sbx_http_t *c, const char *method, const char *path, json_t *body,
                    const char *accept, const sbx_http_sink_t *sink, sbx_http_resp_t *resp, sbx_err_t *err)
{
    xfer_t x = {.sink = sink};
    return perform(c, method, path, body, accept, &x, resp, err);
}

int sbx_http_upload(const sbx_http_t *c, const char *method, const char *path,
                    const sbx_http_source_t *source, const sbx_http_sink_t *sink, sbx_http_resp_t *resp,
                    sbx_err_t *err)
{
    xfer_t x = {.sink = sink, .source = source};
    return perform(c, method, path, NULL, "application/json", &x, resp, err);
}

void sbx_http_resp_release(sbx_http_resp_t *resp)
{
    json_decref(resp->body);
    resp->body = NULL;
}

char *sbx_http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = xmalloc(n * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
            *p == '_' || *p == '.' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

static const char *str_field(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && *s ? s : NULL;
}

void sbx_http_error_info(json_t *body, long status, char *msgbuf, size_t msglen, const char **code)
{
    const char *msg = NULL;
    *code = NULL;
    if (json_is_object(body)) {
        json_t *nested = json_object_get(body, "error");
        msg = str_field(body, "message");
        if (!msg)
            msg = str_field(body, "error");
        *code = str_field(body, "code");
        if (json_is_object(nested)) {
            if (!msg)
                msg = str_field(nested, "message");
            if (!*code)
                *code = str_field(nested, "code");
        }
    }
    if (!*code)
        *code = "";
    if (msg)
        snprintf(msgbuf, msglen, "%s", msg);
    else
        snprintf(msgbuf, msglen, "sandboxd answered HTTP %ld", status);
}
