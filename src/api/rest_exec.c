/* Running commands on the `/sandbox` surface: blocking exec, SSE streaming, background
 * execs with logs on disk, signals, interrupt and streamed stdin (rest-wire.md §7.2, §8). */
#include "api/server.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/exec_req.h"
#include "api/params.h"
#include "common/base64.h"
#include "common/util.h"
#include "core/execs.h"

static int h_exec(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const sbx_config_t *cfg = sbx_core_config(sbx_api_core(api));
    sbx_api_exec_t x;
    if (sbx_api_exec_parse(req->params, cfg, 0, &x, err) < 0)
        return -1;
    x.p.max_output = (size_t)cfg->max_exec_output_bytes;
    sbx_exec_result_t res;
    int rc = sbx_core_exec(sbx_api_core(api), req->path_params[0], &x.p, &res, err);
    if (rc == 0) {
        resp->json = sbx_api_exec_result_json(&res);
        sbx_exec_result_release(&res);
    }
    sbx_api_exec_release(&x);
    return rc;
}

/* ---- Server-Sent Events ---- */

#define SSE_KEEPALIVE_MS 1000

typedef struct {
    sbx_exec_stream_t *s;
    char exec_id[64];
    bool base64;
    bool done;
    char *buf; /* formatted events not yet handed to the connection */
    size_t len, off;
    uint8_t carry[2][4]; /* an incomplete UTF-8 sequence at the end of a chunk, per stream */
    size_t carry_len[2];
} sse_t;

static void sse_emit(sse_t *st, json_t *ev)
{
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    size_t n = strlen(text);
    st->buf = xrealloc(st->buf, st->len + n + 9);
    memcpy(st->buf + st->len, "data: ", 6);
    memcpy(st->buf + st->len + 6, text, n);
    memcpy(st->buf + st->len + 6 + n, "\n\n", 2);
    st->len += n + 8;
    free(text);
}

/* Length of the incomplete UTF-8 sequence at the end of data (0 if it ends cleanly). */
static size_t utf8_tail(const uint8_t *d, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t c = d[n - back];
        if ((c & 0xc0) == 0x80)
            continue;
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Base64 events are the bulk path: written straight into the buffer, since their data
 * needs no JSON escaping. */
static void sse_output_b64(sse_t *st, int which, const uint8_t *data, size_t len, int64_t ts)
{
    char head[64], tail[96];
    int hl =
        snprintf(head, sizeof head, "data: {\"type\":\"%s\",\"data\":\"", which == 0 ? "stdout" : "stderr");
    int tl = snprintf(tail, sizeof tail, "\",\"encoding\":\"base64\",\"timestamp\":%lld}\n\n", (long long)ts);
    char *b = sbx_base64_encode(data, len);
    size_t bl = strlen(b);
    st->buf = xrealloc(st->buf, st->len + (size_t)hl + bl + (size_t)tl + 1);
    memcpy(st->buf + st->len, head, (size_t)hl);
    memcpy(st->buf + st->len + hl, b, bl);
    memcpy(st->buf + st->len + hl + bl, tail, (size_t)tl);
    st->len += (size_t)hl + bl + (size_t)tl;
    free(b);
}

static void sse_output(sse_t *st, int which, const uint8_t *data, size_t len, int64_t ts)
{
    if (st->base64) {
        sse_output_b64(st, which, data, len, ts);
        return;
    }
    /* Text events carry whole characters: a sequence split between chunks waits. */
    json_t *ev = json_object();
    json_object_set_new(ev, "type", json_string(which == 0 ? "stdout" : "stderr"));
    size_t total = st->carry_len[which] + len;
    uint8_t *joined = xmalloc(total + 1);
    memcpy(joined, st->carry[which], st->carry_len[which]);
    memcpy(joined + st->carry_len[which], data, len);
    size_t tail = utf8_tail(joined, total);
    memcpy(st->carry[which], joined + total - tail, tail);
    st->carry_len[which] = tail;
    json_object_set_new(ev, "data", sbx_json_lossy_string((char *)joined, total - tail));
    free(joined);
    json_object_set_new(ev, "timestamp", json_integer(ts));
    sse_emit(st, ev);
}

static void sse_flush_carry(sse_t *st, int64_t ts)
{
    for (int w = 0; w < 2; w++) {
        if (!st->carry_len[w])
            continue;
        json_t *ev = json_pack("{s:s, s:o, s:I}", "type", w == 0 ? "stdout" : "stderr", "data",
                               sbx_json_lossy_string((char *)st->carry[w], st->carry_len[w]), "timestamp",
                               (json_int_t)ts);
        st->carry_len[w] = 0;
        sse_emit(st, ev);
    }
}

/* Produces the next events; blocks on the command like the client expects. */
static void sse_fill(sse_t *st)
{
    sbx_exec_event_t ev;
    sbx_err_t err = SBX_ERR_INIT;
    int r = sbx_core_exec_stream_next_idle(st->s, &ev, SSE_KEEPALIVE_MS, &err);
    if (r == 2) {
        /* A comment line: clients ignore it, and writing it is how a client that went away
         * is noticed (the write fails and the stream is closed, cancelling the command). */
        st->buf = xrealloc(st->buf, st->len + 4);
        memcpy(st->buf + st->len, ":\n\n", 3);
        st->len += 3;
        return;
    }
    if (r == 1 && ev.type != SBX_EV_EXIT) {
        sse_output(st, ev.type == SBX_EV_STDOUT ? 0 : 1, ev.data, ev.len, ev.timestamp);
        return;
    }
    int64_t now = sbx_now_ms();
    sse_flush_carry(st, now);
    if (r == 1) {
        const sbx_exec_info_t *i = ev.info;
        char code[24];
        snprintf(code, sizeof code, "%lld", (long long)(i->exited ? i->exit_code : -1));
        json_t *j = json_pack("{s:s, s:s, s:I, s:b, s:I}", "type", "exit", "data", code, "exitCode",
                              (json_int_t)(i->exited ? i->exit_code : -1), "timedOut", i->timed_out,
                              "timestamp", (json_int_t)now);
        if (i->signo)
            json_object_set_new(j, "signal", json_integer(i->signo));
        sse_emit(st, j);
    } else if (r < 0) {
        /* The SDKs stop at the exit event: end with one so they do not wait forever. */
        sse_emit(st, json_pack("{s:s, s:s, s:s, s:I}", "type", "error", "data", err.msg, "code",
                               err.code[0] ? err.code : "INTERNAL", "timestamp", (json_int_t)now));
        sse_emit(st, json_pack("{s:s, s:s, s:I, s:b, s:I}", "type", "exit", "data", "-1", "exitCode",
                               (json_int_t)-1, "timedOut", 0, "timestamp", (json_int_t)now));
    }
    st->done = true;
}

static long sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    sse_t *st = cls;
    while (st->off == st->len) {
        st->off = st->len = 0;
        if (st->done)
            return SBX_STREAM_END;
        sse_fill(st);
    }
    size_t n = st->len - st->off < max ? st->len - st->off : max;
    memcpy(out, st->buf + st->off, n);
    st->off += n;
    return (long)n;
}

static void sse_free(void *cls)
{
    sse_t *st = cls;
    sbx_core_exec_stream_close(st->s); /* a client gone mid-stream cancels the command */
    free(st->buf);
    free(st);
}

static int h_exec_stream(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const sbx_config_t *cfg = sbx_core_config(sbx_api_core(api));
    sbx_api_exec_t x;
    if (sbx_api_exec_parse(req->params, cfg, 0, &x, err) < 0)
        return -1;
    sse_t *st = xcalloc(1, sizeof *st);
    st->base64 = x.base64;
    st->s = sbx_core_exec_stream_open(sbx_api_core(api), req->path_params[0], &x.p, SBX_EXEC_STREAM,
                                      x.stdin_stream, st->exec_id, err);
    sbx_api_exec_release(&x);
    if (!st->s) {
        free(st);
        return -1;
    }
    resp->stream_fn = sse_read;
    resp->stream_cls = st;
    resp->stream_free = sse_free;
    resp->content_type = "text/event-stream";
    resp->header_name[0] = "X-Exec-Id";
    resp->header_value[0] = st->exec_id;
    resp->header_name[1] = "Cache-Control";
    resp->header_value[1] = "no-cache";
    return 0;
}

/* ---- background execs ---- */

static json_t *bg_json(const sbx_exec_info_t *i, const char *display)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(i->id));
    json_object_set_new(j, "sandboxId", json_string(i->sandbox_id));
    if (display) {
        json_object_set_new(j, "command", json_string(display));
    } else if (i->argv && i->argv[0] && i->argv[1] && !strcmp(i->argv[0], "sh") &&
               !strcmp(i->argv[1], "-c") && i->argv[2]) {
        json_object_set_new(j, "command", json_string(i->argv[2]));
    } else {
        json_t *a = json_array();
        for (char **p = i->argv; p && *p; p++)
            json_array_append_new(a, json_string(*p));
        json_object_set_new(j, "command", a);
    }
    json_object_set_new(j, "running", json_boolean(i->running));
    json_object_set_new(j, "startedAt", json_integer(i->started_at));
    if (i->pid)
        json_object_set_new(j, "pid", json_integer(i->pid));
    if (i->exited)
        json_object_set_new(j, "exitCode", json_integer(i->exit_code));
    if (i->finished_at)
        json_object_set_new(j, "finishedAt", json_integer(i->finished_at));
    if (i->timed_out)
        json_object_set_new(j, "timedOut", json_true());
    if (i->signo)
        json_object_set_new(j, "signal", json_integer(i->signo));
    if (i->error)
        json_object_set_new(j, "error", json_string(i->error));
    if (i->truncated)
        json_object_set_new(j, "truncated", json_true());
    return j;
}

static int h_bg_start(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const sbx_config_t *cfg = sbx_core_config(sbx_api_core(api));
    sbx_api_exec_t x;
    /* Background commands may run as long as the sandbox lives unless a timeout is given. */
    int64_t cap = cfg->max_background_secs * 1000;
    if (sbx_api_exec_parse(req->params, cfg, cap, &x, err) < 0)
        return -1;
    if (!json_object_get(req->params, "timeout") && !json_object_get(req->params, "timeout_ms"))
        x.p.timeout_ms = cap;
    sbx_exec_info_t info;
    int rc = sbx_core_exec_start(sbx_api_core(api), req->path_params[0], &x.p, SBX_EXEC_BACKGROUND,
                                 x.stdin_stream, &info, err);
    if (rc == 0) {
        resp->json = bg_json(&info, x.display);
        sbx_exec_info_release(&info);
    }
    sbx_api_exec_release(&x);
    return rc;
}

static int bg_lookup(sbx_api_t *api, const char *id, sbx_exec_info_t *info, sbx_err_t *err)
{
    if (sbx_core_exec_get(sbx_api_core(api), id, info, err) < 0 || info->kind != SBX_EXEC_BACKGROUND) {
        if (err->kind == SBX_E_NONE || err->kind == SBX_E_NOT_FOUND || info->kind != SBX_EXEC_BACKGROUND) {
            if (err->kind == SBX_E_NONE)
                sbx_exec_info_release(info);
            return sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "Background exec not found: %s", id);
        }
        return -1;
    }
    return 0;
}

static int h_bg_status(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_exec_info_t info = {0};
    if (bg_lookup(api, req->path_params[0], &info, err) < 0)
        return -1;
    resp->json = bg_json(&info, NULL);
    json_object_set_new(resp->json, "stdoutBytes", json_integer((json_int_t)info.stdout_bytes));
    json_object_set_new(resp->json, "stderrBytes", json_integer((json_int_t)info.stderr_bytes));
    sbx_exec_info_release(&info);
    return 0;
}

/* Logs from a byte cursor: the combined output (stdout and stderr in arrival order, like
 * `2>&1`), or one stream with ?stream=stdout|stderr. */
static int h_bg_logs(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    json_t *p = req->params;
    int64_t cursor = 0, limit = 1 << 20;
    const char *stream = NULL, *enc = NULL;
    if (sbx_param_int(p, "cursor", 0, INT64_MAX / 2, &cursor, err) < 0 ||
        sbx_param_int(p, "limit", 1, 16 << 20, &limit, err) < 0 ||
        sbx_param_str(p, "stream", &stream, err) < 0 || sbx_param_str(p, "encoding", &enc, err) < 0)
        return -1;
    sbx_log_stream_t which = SBX_LOG_COMBINED;
    if (stream && !strcmp(stream, "stdout"))
        which = SBX_LOG_STDOUT;
    else if (stream && !strcmp(stream, "stderr"))
        which = SBX_LOG_STDERR;
    else if (stream && strcmp(stream, "combined") != 0)
        return sbx_fail(err, SBX_E_INVALID, "S001", "stream must be stdout, stderr or combined");
    bool b64 = enc && !strcmp(enc, "base64");
    sbx_exec_info_t info = {0};
    if (bg_lookup(api, req->path_params[0], &info, err) < 0)
        return -1;
    char *data = NULL;
    size_t len = 0;
    int rc = sbx_core_exec_log_read(sbx_api_core(api), info.id, which, (uint64_t)cursor, (size_t)limit, &data,
                                    &len, err);
    if (rc == 0) {
        /* In text mode the answer ends on a character boundary; the cursor says where. */
        if (!b64 && len == (size_t)limit)
            len -= utf8_tail((uint8_t *)data, len);
        json_t *j = json_object();
        if (b64) {
            char *e = sbx_base64_encode(data, len);
            json_object_set_new(j, "output", json_string(e));
            json_object_set_new(j, "encoding", json_string("base64"));
            free(e);
        } else {
            json_object_set_new(j, "output", sbx_json_lossy_string(data, len));
        }
        json_object_set_new(j, "cursor", json_integer(cursor + (json_int_t)len));
        json_object_set_new(j, "running", json_boolean(info.running));
        if (info.exited)
            json_object_set_new(j, "exitCode", json_integer(info.exit_code));
        resp->json = j;
    }
    free(data);
    sbx_exec_info_release(&info);
    return rc;
}

/* ---- signals and stdin ---- */

static int h_interrupt(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    int64_t pid = 0;
    const char *exec_id = NULL;
    if (sbx_param_int(req->params, "pid", 2, INT_MAX, &pid, err) < 0 ||
        sbx_param_str(req->params, "execId", &exec_id, err) < 0)
        return -1;
    int n;
    if (exec_id)
        n = sbx_core_exec_signal(sbx_api_core(api), exec_id, SIGINT, err) < 0 ? -1 : 1;
    else
        n = sbx_core_exec_interrupt(sbx_api_core(api), req->path_params[0], pid, SIGINT, err);
    if (n < 0)
        return -1;
    resp->json = json_pack("{s:b, s:i}", "success", 1, "signalled", n);
    return 0;
}

/* The exec must belong to the sandbox in the path. */
static int check_owner(sbx_api_t *api, const char *sandbox_id, const char *exec_id, sbx_err_t *err)
{
    sbx_exec_info_t info;
    if (sbx_core_exec_get(sbx_api_core(api), exec_id, &info, err) < 0)
        return -1;
    bool mine = !strcmp(info.sandbox_id, sandbox_id);
    sbx_exec_info_release(&info);
    return mine ? 0 : sbx_fail(err, SBX_E_NOT_FOUND, "NOT_FOUND", "exec not found: %s", exec_id);
}

static int h_signal(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *exec_id = NULL;
    if (sbx_param_str(req->params, "execId", &exec_id, err) < 0)
        return -1;
    json_t *sv = json_object_get(req->params, "signal");
    int signo = sv ? sbx_api_parse_signal(sv) : SIGTERM;
    if (signo < 0)
        return sbx_fail(err, SBX_E_INVALID, "S001",
                        "invalid signal: give a number from 1 to 64 or a name like SIGINT");
    int64_t pid = 0;
    if (sbx_param_int(req->params, "pid", 2, INT_MAX, &pid, err) < 0)
        return -1;
    if (!exec_id && !pid)
        return sbx_fail(err, SBX_E_INVALID, "S001", "execId (or pid) is required");
    if (exec_id) {
        if (check_owner(api, req->path_params[0], exec_id, err) < 0 ||
            sbx_core_exec_signal(sbx_api_core(api), exec_id, signo, err) < 0)
            return -1;
    } else if (sbx_core_exec_interrupt(sbx_api_core(api), req->path_params[0], pid, signo, err) < 0) {
        return -1;
    }
    resp->json = json_pack("{s:b, s:i}", "success", 1, "signal", signo);
    return 0;
}

static int h_stdin(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *exec_id = NULL, *data = NULL;
    bool eof = false;
    if (sbx_param_str(req->params, "execId", &exec_id, err) < 0 ||
        sbx_param_str(req->params, "data", &data, err) < 0 ||
        sbx_param_bool(req->params, "eof", &eof, err) < 0)
        return -1;
    if (!exec_id)
        return sbx_fail(err, SBX_E_INVALID, "S001", "execId is required");
    size_t len = 0;
    unsigned char *bytes = NULL;
    if (data) {
        bytes = sbx_base64_decode(data, strlen(data), &len);
        if (!bytes)
            return sbx_fail(err, SBX_E_INVALID, "S001", "data must be base64");
    }
    int rc = check_owner(api, req->path_params[0], exec_id, err);
    if (rc == 0)
        rc = sbx_core_exec_stdin(sbx_api_core(api), exec_id, bytes, len, eof, err);
    free(bytes);
    if (rc == 0)
        resp->json = json_pack("{s:b, s:I}", "success", 1, "written", (json_int_t)len);
    return rc;
}

static const sbx_route_t routes[] = {
    {"POST", "/{prefix}/sandboxes/:id/exec", h_exec, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/exec/stream", h_exec_stream, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/exec/background", h_bg_start, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/exec/background/:id/status", h_bg_status, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/exec/background/:id/logs", h_bg_logs, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/exec/interrupt", h_interrupt, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/exec/signal", h_signal, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/exec/stdin", h_stdin, false, SBX_DIALECT_REST},
};
const sbx_route_table_t sbx_rest_exec_table = {routes, SBX_ARRAY_LEN(routes)};
