#include "api/exec_req.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/params.h"
#include "common/base64.h"
#include "common/util.h"

static char *join_argv(char **argv)
{
    size_t len = 1;
    for (char **a = argv; *a; a++)
        len += strlen(*a) + 1;
    char *s = xmalloc(len);
    s[0] = '\0';
    for (char **a = argv; *a; a++) {
        if (a != argv)
            strcat(s, " ");
        strcat(s, *a);
    }
    return s;
}

static bool has_nul(json_t *p, const char *key, const char *s)
{
    return strlen(s) != json_string_length(json_object_get(p, key));
}

int sbx_api_exec_parse(json_t *p, const sbx_config_t *cfg, int64_t default_ms, sbx_api_exec_t *x,
                       sbx_err_t *err)
{
    memset(x, 0, sizeof *x);
    const char *command = NULL, *cmd = NULL, *cwd = NULL, *workdir = NULL, *stdin_b64 = NULL, *enc = NULL;
    char **args = NULL;
    size_t nargs = 0;
    int64_t timeout_s = 0, timeout_ms = 0;
    int rc = -1;
    if (sbx_param_str(p, "command", &command, err) < 0 || sbx_param_str(p, "cmd", &cmd, err) < 0 ||
        sbx_param_strv(p, "args", &args, &nargs, err) < 0 || sbx_param_str(p, "cwd", &cwd, err) < 0 ||
        sbx_param_str(p, "workdir", &workdir, err) < 0 || sbx_param_str(p, "stdin", &stdin_b64, err) < 0 ||
        sbx_param_str(p, "encoding", &enc, err) < 0 ||
        sbx_param_bool(p, "stdinStream", &x->stdin_stream, err) < 0 ||
        sbx_param_env(p, "env", &x->p.env, &x->p.n_env, err) < 0)
        goto out;
    int has_s = sbx_param_int(p, "timeout", 0, INT_MAX, &timeout_s, err);
    int has_ms = has_s < 0 ? -1 : sbx_param_int(p, "timeout_ms", 0, INT64_MAX / 2, &timeout_ms, err);
    if (has_s < 0 || has_ms < 0)
        goto out;
    if (enc && strcmp(enc, "base64") != 0 && strcmp(enc, "utf-8") != 0 && strcmp(enc, "utf8") != 0) {
        sbx_fail(err, SBX_E_INVALID, "S001", "encoding must be \"utf-8\" or \"base64\"");
        goto out;
    }
    x->base64 = enc && !strcmp(enc, "base64");
    if (command && cmd) {
        sbx_fail(err, SBX_E_INVALID, "S001", "give either command (a shell string) or cmd + args, not both");
        goto out;
    }
    char **argv;
    if (command) {
        if (!*command || has_nul(p, "command", command)) {
            sbx_fail(err, SBX_E_INVALID, "S001",
                     *command ? "command must not contain NUL bytes" : "command is required");
            goto out;
        }
        argv = xcalloc(4, sizeof(char *));
        argv[0] = xstrdup("sh");
        argv[1] = xstrdup("-c");
        argv[2] = xstrdup(command);
        x->display = xstrdup(command);
    } else if (cmd && *cmd) {
        if (has_nul(p, "cmd", cmd)) {
            sbx_fail(err, SBX_E_INVALID, "S001", "cmd must not contain NUL bytes");
            goto out;
        }
        argv = xcalloc(nargs + 2, sizeof(char *));
        argv[0] = xstrdup(cmd);
        for (size_t i = 0; i < nargs; i++)
            argv[i + 1] = xstrdup(args[i]);
        x->display = join_argv(argv);
    } else {
        sbx_fail(err, SBX_E_INVALID, "S001", "command is required (or cmd with args)");
        goto out;
    }
    x->p.argv = argv;
    if (stdin_b64) {
        size_t len = 0;
        unsigned char *data = sbx_base64_decode(stdin_b64, strlen(stdin_b64), &len);
        if (!data) {
            sbx_fail(err, SBX_E_INVALID, "S001", "stdin must be base64");
            goto out;
        }
        x->p.stdin_data = data;
        x->p.stdin_len = len;
    }
    if (cwd || workdir)
        x->p.cwd = xstrdup(cwd ? cwd : workdir);
    int64_t cap_ms = cfg->max_cmd_timeout_secs * 1000;
    int64_t t = has_ms ? timeout_ms : has_s ? timeout_s * 1000 : (default_ms > 0 ? default_ms : cap_ms);
    if (t > cap_ms)
        t = cap_ms;
    x->p.timeout_ms = t > 0 ? t : 1; /* a zero budget times out at once, as the reference does */
    rc = 0;
out:
    sbx_strv_free(args);
    if (rc < 0)
        sbx_api_exec_release(x);
    return rc;
}

void sbx_api_exec_release(sbx_api_exec_t *x)
{
    sbx_strv_free(x->p.argv);
    sbx_strv_free(x->p.env);
    free((void *)x->p.stdin_data);
    free((void *)x->p.cwd);
    free(x->display);
    memset(x, 0, sizeof *x);
}

int sbx_api_parse_signal(json_t *v)
{
    static const struct {
        const char *name;
        int num;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"STOP", SIGSTOP},
                 {"CONT", SIGCONT}, {"ALRM", SIGALRM}, {"PIPE", SIGPIPE}, {"WINCH", SIGWINCH},
                 {"ABRT", SIGABRT}};
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        return n >= 1 && n <= 64 ? (int)n : -1;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    int64_t n;
    if (sbx_parse_i64(s, &n) == 0)
        return n >= 1 && n <= 64 ? (int)n : -1;
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < SBX_ARRAY_LEN(names); i++)
        if (!strcasecmp(s, names[i].name))
            return names[i].num;
    return -1;
}

json_t *sbx_api_exec_result_json(const sbx_exec_result_t *res)
{
    json_t *j = json_object();
    json_object_set_new(j, "exitCode", json_integer(res->exited ? res->exit_code : -1));
    json_object_set_new(j, "exit_code", res->exited ? json_integer(res->exit_code) : json_null());
    json_object_set_new(j, "stdout", sbx_json_lossy_string(res->out, res->out_len));
    json_object_set_new(j, "stderr", sbx_json_lossy_string(res->errout, res->err_len));
    json_object_set_new(j, "duration", json_integer(res->duration_ms));
    json_object_set_new(j, "duration_ms", json_integer(res->duration_ms));
    json_object_set_new(j, "timed_out", json_boolean(res->timed_out));
    json_object_set_new(j, "success", json_boolean(res->exited && res->exit_code == 0 && !res->timed_out));
    if (res->signo)
        json_object_set_new(j, "signal", json_integer(res->signo));
    if (res->out_truncated || res->err_truncated)
        json_object_set_new(j, "truncated", json_true());
    return j;
}
