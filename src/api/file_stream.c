#include "api/file_stream.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

typedef struct {
    sbx_fs_reader_t *r;
    const uint8_t *data; /* the reader's current chunk */
    long len, off;
    bool end;
    char size[32], mode[16]; /* header values live as long as the response */
} file_stream_t;

static long file_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    file_stream_t *st = cls;
    if (st->off == st->len) {
        if (st->end)
            return SBX_STREAM_END;
        sbx_err_t err = SBX_ERR_INIT;
        long n = sbx_core_fs_read_next(st->r, &st->data, &err);
        if (n < 0) {
            /* The status line went out already: cutting the body short is how the client
             * learns of the failure. */
            log_warn("file read failed after %llu bytes: %s", (unsigned long long)pos, err.msg);
            return SBX_STREAM_ERROR;
        }
        if (n == 0) {
            st->end = true;
            return SBX_STREAM_END;
        }
        st->len = n;
        st->off = 0;
    }
    size_t n = (size_t)(st->len - st->off) < max ? (size_t)(st->len - st->off) : max;
    memcpy(buf, st->data + st->off, n);
    st->off += (long)n;
    return (long)n;
}

static void file_stream_free(void *cls)
{
    file_stream_t *st = cls;
    sbx_core_fs_read_close(st->r);
    free(st);
}

void sbx_api_respond_file(sbx_http_resp_t *resp, sbx_fs_reader_t *r, json_t *meta)
{
    file_stream_t *st = xcalloc(1, sizeof *st);
    st->r = r;
    int h = 0;
    while (h < 4 && resp->header_name[h])
        h++;
    json_t *size = json_object_get(meta, "size"), *mode = json_object_get(meta, "mode");
    if (json_is_integer(size) && h < 4) {
        snprintf(st->size, sizeof st->size, "%lld", (long long)json_integer_value(size));
        resp->header_name[h] = "X-File-Size";
        resp->header_value[h++] = st->size;
    }
    if (json_is_integer(mode) && h < 4) {
        snprintf(st->mode, sizeof st->mode, "%04llo", (unsigned long long)json_integer_value(mode) & 07777);
        resp->header_name[h] = "X-File-Mode";
        resp->header_value[h++] = st->mode;
    }
    resp->stream_fn = file_stream_read;
    resp->stream_cls = st;
    resp->stream_free = file_stream_free;
    resp->content_type = "application/octet-stream";
}
