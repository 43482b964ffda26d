#include "cli/progress.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#define FRAME_MS 100
#define POLL_MS 500

struct sbx_progress {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    sbx_http_t http; /* own copy: never cancelled, short timeout */
    char *image_path;
    char *image;
    int64_t started_ms;
    char status[512];
};

static const char *const frames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};

/* Asks the daemon how the image is coming along and rewrites p->status. */
static void poll_image(sbx_progress_t *p)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_http_resp_t resp;
    char status[sizeof p->status];
    snprintf(status, sizeof status, "starting sandbox…");
    if (sbx_http_request(&p->http, "GET", p->image_path, NULL, &resp, &err) == 0) {
        const char *state = json_string_value(json_object_get(resp.body, "state"));
        if (resp.status == 200 && state && !strcmp(state, "building")) {
            json_t *el = json_object_get(resp.body, "elapsedMs");
            int64_t ms = json_is_integer(el) ? json_integer_value(el) : sbx_mono_ms() - p->started_ms;
            const char *msg = json_string_value(json_object_get(resp.body, "message"));
            int n = snprintf(status, sizeof status, "building image %s (%llds)", p->image,
                             (long long)(ms / 1000));
            if (msg && *msg && n > 0 && (size_t)n < sizeof status)
                snprintf(status + n, sizeof status - n, ": %s", msg);
        }
        sbx_http_resp_release(&resp);
    }
    pthread_mutex_lock(&p->lock);
    memcpy(p->status, status, sizeof status);
    pthread_mutex_unlock(&p->lock);
}

static int term_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 8)
        return ws.ws_col;
    return 80;
}

/* Cuts `s` to at most `cols` code points so the line never wraps; a wrapped line could
 * not be erased with a single \r. */
static void clip_utf8(char *s, int cols)
{
    int seen = 0;
    for (char *c = s; *c; c++) {
        if (((unsigned char)*c & 0xC0) != 0x80 && seen++ == cols) {
            *c = '\0';
            return;
        }
    }
}

static void draw(sbx_progress_t *p, unsigned frame)
{
    char line[600];
    pthread_mutex_lock(&p->lock);
    snprintf(line, sizeof line, "%s %s", frames[frame % SBX_ARRAY_LEN(frames)], p->status);
    pthread_mutex_unlock(&p->lock);
    for (char *c = line; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    clip_utf8(line, term_width() - 1);
    fprintf(stderr, "\r\033[2K%s", line);
    fflush(stderr);
}

static void *progress_main(void *arg)
{
    sbx_progress_t *p = arg;
    unsigned frame = 0;
    int64_t next_poll = 0;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        pthread_mutex_unlock(&p->lock);
        if (sbx_mono_ms() >= next_poll) {
            poll_image(p);
            next_poll = sbx_mono_ms() + POLL_MS;
        }
        draw(p, frame++);
        struct timespec until = sbx_timespec_in(CLOCK_MONOTONIC, FRAME_MS);
        pthread_mutex_lock(&p->lock);
        while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

sbx_progress_t *sbx_progress_start(const sbx_cli_t *cli, const char *image)
{
    if (!cli->tty)
        return NULL;
    sbx_progress_t *p = xcalloc(1, sizeof *p);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->lock, NULL);
    p->http = cli->http;
    p->http.cancel = NULL;
    p->http.cancel_after = 0;
    p->http.timeout_ms = 2000;
    _cleanup_free_ char *esc = sbx_http_escape(image);
    p->image_path = xasprintf("/sandbox/images/%s", esc);
    p->image = xstrdup(image);
    p->started_ms = sbx_mono_ms();
    snprintf(p->status, sizeof p->status, "starting sandbox…");

    /* Signals belong to the main thread, which owns the cleanup they trigger. */
    if (sbx_cli_thread_start(&p->thread, progress_main, p) != 0) {
        free(p->image_path);
        free(p->image);
        free(p);
        return NULL;
    }
    return p;
}

void sbx_progress_stop(sbx_progress_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    fputs("\r\033[2K", stderr);
    fflush(stderr);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->image_path);
    free(p->image);
    free(p);
}
