#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/opts.h"
#include "common/util.h"

void sbx_cli_init(sbx_cli_t *cli)
{
    memset(cli, 0, sizeof *cli);
    const char *url = getenv("SANDBOXD_URL");
    sbx_cli_set_url(cli, url && *url ? url : SBX_CLI_DEFAULT_URL);
    const char *token = getenv("SANDBOXD_TOKEN");
    cli->http.token = token && *token ? xstrdup(token) : NULL;
    cli->tty = isatty(STDERR_FILENO) == 1;
}

void sbx_cli_release(sbx_cli_t *cli)
{
    free(cli->http.base_url);
    free(cli->http.token);
    memset(cli, 0, sizeof *cli);
}

void sbx_cli_set_url(sbx_cli_t *cli, const char *url)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    free(cli->http.base_url);
    cli->http.base_url = xstrndup(url, n);
}

int sbx_cli_common_flag(sbx_cli_t *cli, const char *cmd, int id, const char *flag, const char *value)
{
    if (id == OPT_URL) {
        if (!*value)
            return sbx_cli_usage_error(cmd, "%s needs a non-empty URL", flag);
        sbx_cli_set_url(cli, value);
        return 0;
    }
    if (id == OPT_PORT) {
        long long port;
        if (sbx_opts_int(value, 1, 65535, &port) < 0)
            return sbx_cli_usage_error(cmd, "invalid %s `%s`: expected a port number 1-65535", flag, value);
        _cleanup_free_ char *url = xasprintf("http://127.0.0.1:%lld", port);
        sbx_cli_set_url(cli, url);
        return 0;
    }
    return 1;
}

int sbx_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sandbox: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "\nRun `sandbox %s --help` for usage.\n", cmd);
    else
        fputs("\nRun `sandbox --help` for usage.\n", stderr);
    return SBX_EXIT_USAGE;
}

void sbx_cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sandbox: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int sbx_cli_call(const sbx_cli_t *cli, const char *method, const char *path, json_t *body, int fail_code,
                 json_t **out)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_http_resp_t resp;
    *out = NULL;
    int rc = sbx_http_request(&cli->http, method, path, body, &resp, &err);
    if (rc == SBX_HTTP_ECANCEL)
        return -1;
    if (rc < 0) {
        sbx_cli_error("%s", err.msg);
        return SBX_EXIT_DAEMON;
    }
    if (resp.status < 200 || resp.status > 299) {
        char msg[1024];
        const char *code;
        sbx_http_error_info(resp.body, resp.status, msg, sizeof msg, &code);
        if (*code)
            sbx_cli_error("%s (%s)", msg, code);
        else
            sbx_cli_error("%s", msg);
        sbx_http_resp_release(&resp);
        return fail_code;
    }
    *out = steal_pointer(&resp.body);
    return 0;
}

volatile sig_atomic_t sbx_cli_signals;
volatile sig_atomic_t sbx_cli_last_signal;
static volatile sig_atomic_t notify_fd = -1;

static void on_signal(int sig)
{
    int saved = errno;
    sbx_cli_last_signal = sig;
    sbx_cli_signals++;
    int fd = notify_fd;
    if (fd >= 0) {
        unsigned char b = (unsigned char)sig;
        /* A full pipe already holds enough wake-ups; the count above still moves on. */
        ssize_t n = write(fd, &b, 1);
        (void)n;
    }
    errno = saved;
}

void sbx_cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void sbx_cli_signal_notify(int fd)
{
    notify_fd = fd;
}

int sbx_cli_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
