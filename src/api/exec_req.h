/* The exec request of the /sandbox surface, parsed once for every route that runs a
 * command (blocking, streaming, background, queue). */
#ifndef SBX_API_EXEC_REQ_H
#define SBX_API_EXEC_REQ_H

#include <jansson.h>
#include <stdbool.h>

#include "common/err.h"
#include "core/core.h"

typedef struct {
    sbx_exec_params_t p; /* argv/env/stdin point into this struct's own buffers */
    char *display;       /* the command as shown to clients (the shell string or argv joined) */
    bool base64;         /* "encoding": "base64": stream events carry base64 data */
    bool stdin_stream;   /* "stdinStream": true: stdin stays open for /exec/stdin */
} sbx_api_exec_t;

/* Reads command (shell string, run with sh -c) or cmd + args (argv), env (object or
 * ["K=V"]), cwd/workdir, stdin (base64), timeout (s) / timeout_ms (capped by
 * max_cmd_timeout_secs; default `default_ms`, or the cap when 0), encoding, stdinStream. */
int sbx_api_exec_parse(json_t *params, const sbx_config_t *cfg, int64_t default_ms, sbx_api_exec_t *x,
                       sbx_err_t *err);
void sbx_api_exec_release(sbx_api_exec_t *x);

/* A signal given as a number (2), a name ("SIGINT", "INT", case-insensitive) or a numeric
 * string.  Returns the number or -1. */
int sbx_api_parse_signal(json_t *v);

/* A finished exec as both dialects read it: exitCode/stdout/stderr/duration (the REST
 * reference) and exit_code/timed_out/duration_ms/success (the guide), plus signal and
 * truncated when they apply. */
json_t *sbx_api_exec_result_json(const sbx_exec_result_t *res);

#endif
