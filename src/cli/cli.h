/* Shared state and helpers of the `sandbox` CLI: where the daemon is, how failures are
 * reported, and the exit codes every subcommand agrees on. */
#ifndef SBX_CLI_CLI_H
#define SBX_CLI_CLI_H

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#include "cli/http.h"

#define SBX_CLI_VERSION "0.1.0"
#define SBX_CLI_DEFAULT_URL "http://127.0.0.1:3111"

/* Exit codes.  The child's own code passes through unchanged; these follow docker run
 * (125 when the sandbox side failed) and coreutils timeout (124). */
enum {
    SBX_EXIT_OK = 0,
    SBX_EXIT_FAIL = 1,
    SBX_EXIT_USAGE = 2,
    SBX_EXIT_TIMEOUT = 124,
    SBX_EXIT_DAEMON = 125,
};

typedef struct {
    sbx_http_t http;
    bool tty; /* stderr is a terminal: show progress and status lines */
} sbx_cli_t;

/* A subcommand's entry point: argv[0] is the subcommand name.  Returns the exit code. */
typedef int (*sbx_cli_cmd_fn)(sbx_cli_t *cli, int argc, char **argv);

/* Fills `cli` from the environment (SANDBOXD_URL, SANDBOXD_TOKEN). */
void sbx_cli_init(sbx_cli_t *cli);
void sbx_cli_release(sbx_cli_t *cli);

/* Points the client at `url` (a copy is kept; a trailing slash is dropped). */
void sbx_cli_set_url(sbx_cli_t *cli, const char *url);

/* Applies the flags every subcommand takes (--url, --port).  Returns 0 if `id` was one of
 * them, 1 if not, or SBX_EXIT_USAGE after printing a usage error. */
int sbx_cli_common_flag(sbx_cli_t *cli, const char *cmd, int id, const char *flag, const char *value);

/* Prints "sandbox: <message>" and a pointer to `sandbox <cmd> --help` on stderr and
 * returns SBX_EXIT_USAGE. */
int sbx_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "sandbox: <message>" on stderr. */
void sbx_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Performs one request and checks its answer.  On a 2xx answer returns 0 and hands the
 * JSON body to *out (may be NULL for an empty body).  Otherwise prints the daemon's
 * message and code (or the network error) and returns the exit code to use:
 * SBX_EXIT_DAEMON for network errors, `fail_code` for daemon errors, or -1 when the
 * request was cancelled (nothing printed). */
int sbx_cli_call(const sbx_cli_t *cli, const char *method, const char *path, json_t *body, int fail_code,
                 json_t **out);

/* SIGINT and SIGTERM while a sandbox or a command is in flight.  Once caught, the
 * handler counts them and remembers the latest; while a notification fd is set it also
 * writes each signal's number there as one byte, so a thread can act on it (a signal
 * handler cannot make HTTP requests). */
extern volatile sig_atomic_t sbx_cli_signals;     /* how many arrived */
extern volatile sig_atomic_t sbx_cli_last_signal; /* the latest one */

/* Installs the handler for SIGINT and SIGTERM (again is harmless).  It does not restart
 * interrupted system calls, so a blocked poll() wakes up. */
void sbx_cli_catch_signals(void);

/* Sets the fd the handler writes to, or -1 for none.  The fd should be the non-blocking
 * write end of a pipe; the caller keeps it open until it sets -1 again. */
void sbx_cli_signal_notify(int fd);

/* Starts a thread with SIGINT and SIGTERM blocked, so the handler always runs on the main
 * thread and interrupts its requests.  Returns 0 or an errno value. */
int sbx_cli_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

#endif
