/* An incremental parser for a `text/event-stream` body (the WHATWG Server-Sent Events
 * format), fed with whatever pieces the network delivers.
 *
 * Lines end with LF, CRLF or a lone CR, even when the ending is split across two pieces.
 * Only the `data` field matters to the CLI: several `data:` lines of one event are joined
 * with '\n', comments (lines starting with ':') and other fields are skipped, and an event
 * is dispatched at the blank line that ends it.  An event still open when the body ends
 * is dropped, as the format requires. */
#ifndef SBX_CLI_SSE_H
#define SBX_CLI_SSE_H

#include <stdbool.h>
#include <stddef.h>

/* Events larger than this are refused rather than buffered without bound. */
#define SBX_SSE_MAX_EVENT (64u * 1024 * 1024)

/* Receives one event's data (`len` bytes, NUL-terminated, borrowed for the call).
 * Returns true to go on parsing, false to stop. */
typedef bool (*sbx_sse_event_fn)(void *ud, const char *data, size_t len);

typedef struct {
    char *line; /* the line being read, without its ending */
    size_t line_len, line_cap;
    char *data; /* the current event's data */
    size_t data_len, data_cap;
    bool has_data; /* a data line was seen since the last dispatch */
    bool after_cr; /* the last byte was a CR: an LF right after it is part of that ending */
} sbx_sse_t;

void sbx_sse_init(sbx_sse_t *p);
void sbx_sse_release(sbx_sse_t *p);

enum {
    SBX_SSE_MORE = 0,     /* everything was consumed */
    SBX_SSE_STOPPED = 1,  /* the callback returned false; the rest of `buf` was ignored */
    SBX_SSE_TOO_BIG = -1, /* an event grew beyond SBX_SSE_MAX_EVENT */
};

/* Parses `len` more bytes of the body and calls `on_event` for every event they
 * complete.  Returns one of the values above. */
int sbx_sse_feed(sbx_sse_t *p, const char *buf, size_t len, sbx_sse_event_fn on_event, void *ud);

#endif
