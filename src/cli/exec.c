#include "cli/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/sse.h"
#include "common/base64.h"
#include "common/util.h"

/* Our stdin goes to the command in pieces of at most this size. */
#define STDIN_CHUNK (64 * 1024)
/* How long forwarding a signal may take before we give up on it. */
#define SIGNAL_TIMEOUT_MS 10000L

const char sbx_exec_usage[] =
    "Usage: sandbox exec <sandbox-id> [flags] [--] <cmd> [args...]\n"
    "\n"
    "Run a command inside a running sandbox. Its stdout and stderr go to ours as it\n"
    "writes them, and sandbox exits with its exit code (124 if --timeout expired).\n"
    "Ctrl-C is forwarded to the command; a second Ctrl-C kills it, a third stops\n"
    "waiting. The `--` is needed only when <cmd> starts with '-'.\n"
    "\n"
    "Flags:\n"
    "  --timeout DUR          kill the command after this long (30s, 5m, 500ms, 1m30s);\n"
    "                         on expiry exit with 124 like timeout(1)\n"
    "  -e, --env KEY=VAL      environment variable; repeatable; entries without '=' are skipped\n"
    "  -i, --stdin            forward our stdin to the command while it runs\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Example:\n"
    "  sandbox exec \"$SB\" -- python3 -c 'print(2+2)'\n"
    "  sandbox exec -i \"$SB\" -- python3 -    # type a program, end it with Ctrl-D\n";

void sbx_exec_opts_init(sbx_exec_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = -1;
}

void sbx_exec_opts_release(sbx_exec_opts_t *o)
{
    sbx_strv_release(&o->env);
}

int sbx_exec_apply_flag(sbx_exec_opts_t *o, const char *cmd, int id, const char *flag, const char *value)
{
    int64_t ms;
    switch (id) {
    case OPT_TIMEOUT:
        if (sbx_parse_duration_ms(value, &ms) < 0 || ms <= 0)
            return sbx_cli_usage_error(cmd, "invalid %s `%s`: expected a duration such as 30s, 5m or 500ms",
                                       flag, value);
        o->timeout_ms = ms;
        return 0;
    case OPT_ENV:
        if (strchr(value, '='))
            sbx_strv_push(&o->env, value);
        return 0;
    case OPT_STDIN: o->use_stdin = true; return 0;
    default: return 1;
    }
}

static json_t *exec_body(const sbx_exec_opts_t *o)
{
    json_t *b = json_object();
    json_object_set_new(b, "cmd", json_string(o->cmd[0]));
    json_t *args = json_array();
    for (int i = 1; i < o->ncmd; i++)
        json_array_append_new(args, json_string(o->cmd[i]));
    json_object_set_new(b, "args", args);
    if (o->env.n) {
        json_t *env = json_array();
        for (size_t i = 0; i < o->env.n; i++)
            json_array_append_new(env, json_string(o->env.v[i]));
        json_object_set_new(b, "env", env);
    }
    if (o->timeout_ms > 0)
        json_object_set_new(b, "timeout_ms", json_integer(o->timeout_ms));
    /* Base64 event data carries any bytes, NULs and invalid UTF-8 included. */
    json_object_set_new(b, "encoding", json_string("base64"));
    if (o->use_stdin)
        json_object_set_new(b, "stdinStream", json_true());
    return b;
}

/* A command whose output is being streamed: what the main thread (reading the event
 * stream), the signal thread and the stdin thread share. */
typedef struct {
    sbx_http_t side_http;   /* for /exec/stdin: no time limit, abandoned once `over` is set */
    sbx_http_t signal_http; /* for /exec/signal: bounded, abandoned once `over` is set */
    char *signal_path, *stdin_path;
    int wake[2]; /* non-blocking pipe: one byte per signal from the handler, 0 from us */
    int stop[2]; /* non-blocking pipe written once the stream is over */
    volatile sig_atomic_t over;

    pthread_mutex_t lock; /* guards the fields up to the next comment */
    pthread_cond_t cond;
    char exec_id[128]; /* from the X-Exec-Id header; "" until it arrives */
    bool started;      /* the body began, so no X-Exec-Id will come any more */
    bool done;         /* the stream is over: the helper threads leave */

    /* The main thread's own. */
    sbx_sse_t sse;
    char *content_type;
    bool exited;
    int exit_code;
    bool broken_pipe;  /* our stdout or stderr is a pipe nobody reads any more */
    bool write_warned; /* a failed write to them was reported once already */
    bool daemon_error; /* sandboxd reported a failure of its own in an "error" event */
    char *failure;     /* why the stream could not be understood */
} live_t;

/* The exit code to leave with for an exit event, or -1 when it has no exit status to
 * pass on. */
static int exit_code_of(json_t *ev)
{
    if (json_is_true(json_object_get(ev, "timedOut")) || json_is_true(json_object_get(ev, "timed_out")))
        return SBX_EXIT_TIMEOUT;
    json_t *code = json_object_get(ev, "exitCode");
    if (!json_is_integer(code))
        code = json_object_get(ev, "exit_code");
    json_int_t c = json_is_integer(code) ? json_integer_value(code) : -1;
    int64_t parsed;
    const char *data = json_string_value(json_object_get(ev, "data"));
    if (!json_is_integer(code) && data && sbx_parse_i64(data, &parsed) == 0)
        c = parsed;
    if (c >= 0 && c <= 255)
        return (int)c;
    json_t *sig = json_object_get(ev, "signal");
    if (json_is_integer(sig) && json_integer_value(sig) > 0 && json_integer_value(sig) < 128)
        return 128 + (int)json_integer_value(sig);
    return -1;
}

/* Prints an "error" event: sandboxd lost the command (it follows with an exit event). */
static void report_error_event(live_t *x, json_t *ev)
{
    const char *msg = json_string_value(json_object_get(ev, "data"));
    if (!msg || !*msg)
        msg = json_string_value(json_object_get(ev, "message"));
    const char *code = json_string_value(json_object_get(ev, "code"));
    if (code && *code)
        sbx_cli_error("%s (%s)", msg && *msg ? msg : "sandboxd reported an error", code);
    else
        sbx_cli_error("%s", msg && *msg ? msg : "sandboxd reported an error");
    x->daemon_error = true;
}

/* Writes one stdout or stderr event to `fd`.  Returns false to stop reading. */
static bool relay_chunk(live_t *x, json_t *ev, int fd)
{
    json_t *data = json_object_get(ev, "data");
    if (!json_is_string(data))
        return true;
    const char *enc = json_string_value(json_object_get(ev, "encoding"));
    const char *bytes = json_string_value(data);
    size_t len = json_string_length(data);
    _cleanup_free_ unsigned char *decoded = NULL;
    if (enc && !strcmp(enc, "base64")) {
        decoded = sbx_base64_decode(bytes, len, &len);
        if (!decoded) {
            x->failure = xstrdup("sandboxd sent command output that is not valid base64");
            return false;
        }
        bytes = (const char *)decoded;
    }
    if (len == 0 || sbx_write_all(fd, bytes, len) == 0)
        return true;
    if (errno == EPIPE) {
        /* Like a local command writing into a closed pipe: stop here. */
        x->broken_pipe = true;
        return false;
    }
    if (!x->write_warned)
        sbx_cli_error("cannot write the command's output: %s", strerror(errno));
    x->write_warned = true;
    return true;
}

static bool on_event(void *ud, const char *data, size_t len)
{
    live_t *x = ud;
    json_error_t jerr;
    json_t *ev = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
    const char *type = json_string_value(json_object_get(ev, "type"));
    bool more = true;
    /* Events of other types, or that are not JSON, are not meant for us. */
    if (type && !strcmp(type, "stdout")) {
        more = relay_chunk(x, ev, STDOUT_FILENO);
    } else if (type && !strcmp(type, "stderr")) {
        more = relay_chunk(x, ev, STDERR_FILENO);
    } else if (type && !strcmp(type, "error")) {
        report_error_event(x, ev);
    } else if (type && !strcmp(type, "exit")) {
        int code = exit_code_of(ev);
        x->exited = true;
        /* Without an exit status, the command was lost on sandboxd's side if it said so. */
        x->exit_code = code >= 0 ? code : x->daemon_error ? SBX_EXIT_DAEMON : SBX_EXIT_FAIL;
        more = false; /* nothing follows the exit; do not wait for the daemon to hang up */
    }
    json_decref(ev);
    return more;
}

static void wake(int fd)
{
    unsigned char b = 0;
    ssize_t n = write(fd, &b, 1);
    (void)n; /* a full pipe holds enough wake-ups already */
}

static void on_stream_header(void *ud, const char *name, const char *value)
{
    live_t *x = ud;
    if (!strcasecmp(name, "Content-Type")) {
        free(x->content_type);
        x->content_type = xstrdup(value);
    } else if (!strcasecmp(name, "X-Exec-Id") && *value && strlen(value) < sizeof x->exec_id) {
        pthread_mutex_lock(&x->lock);
        strcpy(x->exec_id, value);
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->lock);
        wake(x->wake[1]); /* signals that came before the id can go now */
    }
}

static bool on_stream_data(void *ud, const char *data, size_t len)
{
    live_t *x = ud;
    if (!x->started) {
        pthread_mutex_lock(&x->lock);
        x->started = true;
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->lock);
        if (x->content_type && strncasecmp(x->content_type, "text/event-stream", 17) != 0) {
            x->failure = xasprintf("sandboxd answered exec with `%s`, not an event stream", x->content_type);
            return false;
        }
    }
    int rc = sbx_sse_feed(&x->sse, data, len, on_event, x);
    if (rc == SBX_SSE_TOO_BIG)
        x->failure = xstrdup("sandboxd sent an event larger than 64 MiB");
    return rc == SBX_SSE_MORE;
}

/* POSTs `body` (borrowed) to one of the exec's side endpoints.  Returns 0 on success, 1
 * when the command has already finished (409) or the stream is over, or -1 after
 * printing why it failed. */
static int side_post(const sbx_http_t *http, const char *path, json_t *body, const char *what)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_http_resp_t resp;
    int rc = sbx_http_request(http, "POST", path, body, &resp, &err);
    if (rc == SBX_HTTP_ECANCEL)
        return 1;
    if (rc < 0) {
        sbx_cli_error("%s: %s", what, err.msg);
        return -1;
    }
    int ret = 0;
    if (resp.status == 409) {
        ret = 1;
    } else if (resp.status < 200 || resp.status > 299) {
        char msg[1024];
        const char *code;
        sbx_http_error_info(resp.body, resp.status, msg, sizeof msg, &code);
        sbx_cli_error("%s: %s%s%s%s", what, msg, *code ? " (" : "", code, *code ? ")" : "");
        ret = -1;
    }
    sbx_http_resp_release(&resp);
    return ret;
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "SIGKILL";
    }
}

static void forward_signal(live_t *x, const char *exec_id, int sig)
{
    json_t *body = json_pack("{s:s, s:s}", "execId", exec_id, "signal", signal_name(sig));
    _cleanup_free_ char *what = xasprintf("cannot forward %s to the command", signal_name(sig));
    side_post(&x->signal_http, x->signal_path, body, what);
    json_decref(body);
}

/* Forwards the signals the handler reports on the wake pipe: the first as it is, the
 * second as SIGKILL.  Signals that come before the exec id wait for it. */
static void *signal_main(void *arg)
{
    live_t *x = arg;
    int seen = 0, sent = 0, first = 0;
    bool warned = false;
    for (;;) {
        struct pollfd pfd = {.fd = x->wake[0], .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            break;
        unsigned char b[64];
        ssize_t n;
        while ((n = read(x->wake[0], b, sizeof b)) > 0)
            for (ssize_t i = 0; i < n; i++)
                if (b[i] && seen++ == 0)
                    first = b[i];
        char id[sizeof x->exec_id];
        pthread_mutex_lock(&x->lock);
        bool done = x->done, started = x->started;
        memcpy(id, x->exec_id, sizeof id);
        pthread_mutex_unlock(&x->lock);
        if (done)
            break;
        if (!*id && started && seen > sent && !warned) {
            sbx_cli_error("cannot forward %s: sandboxd did not say which exec this is (no X-Exec-Id)",
                          signal_name(first));
            warned = true;
        }
        for (; *id && sent < seen && sent < 2; sent++)
            forward_signal(x, id, sent == 0 ? first : SIGKILL);
    }
    return NULL;
}

/* Waits until the exec id is known and copies it to `id`.  Returns false when it never
 * will be: the stream is over, or began without one. */
static bool wait_for_exec_id(live_t *x, char *id)
{
    pthread_mutex_lock(&x->lock);
    while (!x->exec_id[0] && !x->started && !x->done)
        pthread_cond_wait(&x->cond, &x->lock);
    bool ok = x->exec_id[0] && !x->done;
    bool missing = !x->exec_id[0] && !x->done;
    memcpy(id, x->exec_id, sizeof x->exec_id);
    pthread_mutex_unlock(&x->lock);
    if (missing)
        sbx_cli_error("cannot send stdin: sandboxd did not say which exec this is (no X-Exec-Id)");
    return ok;
}

/* Sends one piece of stdin.  Returns 0 to go on, nonzero to stop. */
static int send_stdin(live_t *x, const char *id, const unsigned char *buf, size_t len, bool eof)
{
    _cleanup_free_ char *b64 = sbx_base64_encode(buf, len);
    json_t *body = json_pack("{s:s, s:s, s:b}", "execId", id, "data", b64, "eof", eof);
    int rc = side_post(&x->side_http, x->stdin_path, body, "cannot send stdin to the command");
    json_decref(body);
    return rc;
}

/* Copies our stdin to the command as it comes, then tells it about the end. */
static void *stdin_main(void *arg)
{
    live_t *x = arg;
    char id[sizeof x->exec_id];
    if (!wait_for_exec_id(x, id))
        return NULL;
    unsigned char *buf = xmalloc(STDIN_CHUNK);
    for (;;) {
        struct pollfd pfd[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = x->stop[0], .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[1].revents)
            break;
        ssize_t n = read(STDIN_FILENO, buf, STDIN_CHUNK);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            sbx_cli_error("cannot read stdin: %s", strerror(errno));
            n = 0; /* end the command's input rather than leave it waiting */
        }
        if (send_stdin(x, id, buf, (size_t)n, n == 0) != 0 || n == 0)
            break;
    }
    free(buf);
    return NULL;
}

static void live_init(live_t *x, const sbx_cli_t *cli, const char *sandbox_id)
{
    memset(x, 0, sizeof *x);
    _cleanup_free_ char *esc = sbx_http_escape(sandbox_id);
    x->signal_path = xasprintf("/sandbox/sandboxes/%s/exec/signal", esc);
    x->stdin_path = xasprintf("/sandbox/sandboxes/%s/exec/stdin", esc);
    x->side_http = cli->http;
    x->side_http.cancel = &x->over;
    x->side_http.cancel_after = 1;
    x->side_http.timeout_ms = 0;
    x->signal_http = x->side_http;
    x->signal_http.timeout_ms = SIGNAL_TIMEOUT_MS;
    x->wake[0] = x->wake[1] = x->stop[0] = x->stop[1] = -1;
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->cond, NULL);
    sbx_sse_init(&x->sse);
}

static void live_release(live_t *x)
{
    for (int i = 0; i < 2; i++) {
        if (x->wake[i] >= 0)
            close(x->wake[i]);
        if (x->stop[i] >= 0)
            close(x->stop[i]);
    }
    pthread_mutex_destroy(&x->lock);
    pthread_cond_destroy(&x->cond);
    sbx_sse_release(&x->sse);
    free(x->signal_path);
    free(x->stdin_path);
    free(x->content_type);
    free(x->failure);
}

/* Tells the helper threads the stream is over and waits for them. */
static void live_finish(live_t *x, pthread_t *threads, int nthreads)
{
    sbx_cli_signal_notify(-1);
    pthread_mutex_lock(&x->lock);
    x->done = true;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
    __atomic_store_n(&x->over, 1, __ATOMIC_RELAXED); /* abandons a stdin POST in flight */
    wake(x->wake[1]);
    wake(x->stop[1]);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
}

/* Reports how a stream that ended without an exit event went.  Returns the exit code. */
static int stream_failed(const sbx_cli_t *cli, int rc, sbx_http_resp_t *resp, const sbx_err_t *err)
{
    if (rc == SBX_HTTP_ENET) {
        sbx_cli_error("%s", err->msg);
    } else if (resp->status < 200 || resp->status > 299) {
        char msg[1024];
        const char *code;
        sbx_http_error_info(resp->body, resp->status, msg, sizeof msg, &code);
        if (*code)
            sbx_cli_error("%s (%s)", msg, code);
        else
            sbx_cli_error("%s", msg);
    } else {
        sbx_cli_error("lost the connection to sandboxd at %s: the stream ended before the command exited",
                      cli->http.base_url);
    }
    return SBX_EXIT_DAEMON;
}

/* Starts the helper threads.  Returns how many started (0 to 2), or -1 on failure. */
static int live_start(live_t *x, const sbx_exec_opts_t *o, pthread_t *threads)
{
    if (pipe2(x->wake, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(x->stop, O_CLOEXEC | O_NONBLOCK) < 0) {
        sbx_cli_error("cannot create a pipe: %s", strerror(errno));
        return -1;
    }
    int n = 0;
    if (sbx_cli_thread_start(&threads[n], signal_main, x) == 0)
        n++;
    if (n == 1 && o->use_stdin && sbx_cli_thread_start(&threads[n], stdin_main, x) == 0)
        n++;
    if (n == (o->use_stdin ? 2 : 1))
        return n;
    sbx_cli_error("cannot start a thread");
    live_finish(x, threads, n);
    return -1;
}

int sbx_exec_command(sbx_cli_t *cli, const char *id, const sbx_exec_opts_t *o, int *exit_out)
{
    live_t x;
    live_init(&x, cli, id);
    pthread_t threads[2];
    int nthreads = live_start(&x, o, threads);
    if (nthreads < 0) {
        live_release(&x);
        return SBX_EXIT_DAEMON;
    }
    sbx_cli_catch_signals();
    sbx_cli_signal_notify(x.wake[1]);
    /* The third signal abandons the stream; the first two go to the command. */
    sbx_http_t http = cli->http;
    http.cancel = &sbx_cli_signals;
    http.cancel_after = sbx_cli_signals + 3;

    _cleanup_free_ char *esc = sbx_http_escape(id);
    _cleanup_free_ char *path = xasprintf("/sandbox/sandboxes/%s/exec/stream", esc);
    json_t *body = exec_body(o);
    sbx_http_sink_t sink = {.on_header = on_stream_header, .on_data = on_stream_data, .ud = &x};
    sbx_http_resp_t resp;
    sbx_err_t err = SBX_ERR_INIT;
    int rc = sbx_http_stream(&http, "POST", path, body, "text/event-stream", &sink, &resp, &err);
    json_decref(body);
    live_finish(&x, threads, nthreads);

    int ret = 0;
    if (x.exited) {
        *exit_out = x.exit_code;
    } else if (x.broken_pipe) {
        *exit_out = 128 + SIGPIPE;
    } else if (rc == SBX_HTTP_ECANCEL) {
        ret = -1;
    } else if (x.failure) {
        sbx_cli_error("%s", x.failure);
        ret = SBX_EXIT_DAEMON;
    } else {
        ret = stream_failed(cli, rc, &resp, &err);
    }
    sbx_http_resp_release(&resp);
    live_release(&x);
    return ret;
}

int sbx_cmd_exec(sbx_cli_t *cli, int argc, char **argv)
{
    sbx_exec_opts_t o;
    sbx_exec_opts_init(&o);
    const char *id = NULL;
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    int rc = -1;
    while (rc < 0 && !o.cmd) {
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_END)
            break;
        if (k == SBX_OPTS_ERROR) {
            rc = sbx_cli_usage_error("exec", "%s", p.errmsg);
        } else if (k == SBX_OPTS_DASHDASH || (k == SBX_OPTS_ARG && id)) {
            /* The command starts here; everything after it is its own. */
            if (k == SBX_OPTS_DASHDASH && !id && p.idx < argc)
                id = argv[p.idx++];
            int first = k == SBX_OPTS_ARG ? p.idx - 1 : p.idx;
            if (first < argc) {
                o.cmd = argv + first;
                o.ncmd = argc - first;
            }
            break;
        } else if (k == SBX_OPTS_ARG) {
            id = p.value;
        } else if (p.id == OPT_HELP) {
            fputs(sbx_exec_usage, stdout);
            rc = SBX_EXIT_OK;
        } else {
            int r = sbx_cli_common_flag(cli, "exec", p.id, p.flag, p.value);
            if (r == 1)
                r = sbx_exec_apply_flag(&o, "exec", p.id, p.flag, p.value);
            if (r == 1)
                r = sbx_cli_usage_error("exec", "unknown flag %s", p.flag);
            if (r != 0)
                rc = r;
        }
    }
    if (rc < 0 && !id)
        rc = sbx_cli_usage_error("exec", "missing <sandbox-id>");
    if (rc < 0 && !o.cmd)
        rc = sbx_cli_usage_error("exec", "missing <cmd>");
    if (rc < 0) {
        int code = SBX_EXIT_FAIL;
        rc = sbx_exec_command(cli, id, &o, &code);
        if (rc == 0)
            rc = code;
        else if (rc < 0)
            rc = 128 + sbx_cli_last_signal; /* we stopped waiting after the third signal */
    }
    sbx_exec_opts_release(&o);
    return rc;
}
