#include "cli/sse.h"

#include <string.h>

#include "common/util.h"

void sbx_sse_init(sbx_sse_t *p)
{
    memset(p, 0, sizeof *p);
}

void sbx_sse_release(sbx_sse_t *p)
{
    free(p->line);
    free(p->data);
    memset(p, 0, sizeof *p);
}

/* Makes room for `more` bytes plus a NUL in a growable buffer. */
static void reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more + 1 <= *cap)
        return;
    size_t want = *cap ? *cap : 256;
    while (want < len + more + 1)
        want *= 2;
    *buf = xrealloc(*buf, want);
    *cap = want;
}

/* Handles one complete line.  Returns false when the callback asked to stop. */
static bool end_line(sbx_sse_t *p, sbx_sse_event_fn on_event, void *ud)
{
    const char *line = p->line ? p->line : "";
    size_t len = p->line_len;
    p->line_len = 0;
    if (len == 0) {
        if (!p->has_data)
            return true;
        p->has_data = false;
        p->data[p->data_len] = '\0';
        size_t n = p->data_len;
        p->data_len = 0;
        return on_event(ud, p->data, n);
    }
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    if (name_len != 4 || memcmp(line, "data", 4) != 0)
        return true; /* a comment (empty name) or a field the CLI has no use for */
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = (size_t)(line + len - value);
    if (value_len && *value == ' ') {
        value++;
        value_len--;
    }
    reserve(&p->data, &p->data_cap, p->data_len, value_len + 1);
    if (p->has_data)
        p->data[p->data_len++] = '\n';
    memcpy(p->data + p->data_len, value, value_len);
    p->data_len += value_len;
    p->has_data = true;
    return true;
}

int sbx_sse_feed(sbx_sse_t *p, const char *buf, size_t len, sbx_sse_event_fn on_event, void *ud)
{
    const char *end = buf + len;
    while (buf < end) {
        if (p->after_cr) {
            p->after_cr = false;
            if (*buf == '\n') {
                buf++;
                continue;
            }
        }
        const char *stop = buf;
        while (stop < end && *stop != '\n' && *stop != '\r')
            stop++;
        size_t n = (size_t)(stop - buf);
        if (p->line_len + p->data_len + n > SBX_SSE_MAX_EVENT)
            return SBX_SSE_TOO_BIG;
        reserve(&p->line, &p->line_cap, p->line_len, n);
        memcpy(p->line + p->line_len, buf, n);
        p->line_len += n;
        p->line[p->line_len] = '\0';
        buf = stop;
        if (buf == end)
            break;
        p->after_cr = *buf == '\r';
        buf++;
        if (!end_line(p, on_event, ud))
            return SBX_SSE_STOPPED;
    }
    return SBX_SSE_MORE;
}
