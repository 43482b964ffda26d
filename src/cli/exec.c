#include "cli/exec.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/util.h"

const char sbx_exec_usage[] =
    "Usage: sandbox exec <sandbox-id> [flags] [--] <cmd> [args...]\n"
    "\n"
    "Run a command inside a running sandbox. Its stdout and stderr go to ours and\n"
    "sandbox exits with its exit code (124 if --timeout expired).\n"
    "The `--` is needed only when <cmd> starts with '-'.\n"
    "\n"
    "Flags:\n"
    "  --timeout DUR          kill the command after this long (30s, 5m, 500ms, 1m30s);\n"
    "                         on expiry exit with 124 like timeout(1)\n"
    "  -e, --env KEY=VAL      environment variable; repeatable; entries without '=' are skipped\n"
    "  -i, --stdin            send all of our stdin to the command\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Example:\n"
    "  sandbox exec \"$SB\" -- python3 -c 'print(2+2)'\n";

void sbx_exec_opts_init(sbx_exec_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = -1;
}

void sbx_exec_opts_release(sbx_exec_opts_t *o)
{
    sbx_strv_release(&o->env);
    free(o->stdin_b64);
    o->stdin_b64 = NULL;
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

int sbx_exec_read_stdin(sbx_exec_opts_t *o)
{
    if (!o->use_stdin || o->stdin_b64)
        return 0;
    size_t len = 0, cap = 65536;
    unsigned char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap)
            buf = xrealloc(buf, cap *= 2);
        ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            sbx_cli_error("cannot read stdin: %s", strerror(errno));
            free(buf);
            return SBX_EXIT_FAIL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    o->stdin_b64 = sbx_base64_encode(buf, len);
    free(buf);
    return 0;
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
    if (o->stdin_b64)
        json_object_set_new(b, "stdin", json_string(o->stdin_b64));
    return b;
}

/* Writes a JSON string's raw bytes (which may include NULs) to `fd`. */
static void relay(json_t *s, int fd)
{
    if (!json_is_string(s) || json_string_length(s) == 0)
        return;
    if (sbx_write_all(fd, json_string_value(s), json_string_length(s)) < 0 && errno != EPIPE)
        sbx_cli_error("cannot write the command's output: %s", strerror(errno));
}

/* The exit code to leave with for an exec result. */
static int exit_code_of(json_t *r)
{
    if (json_is_true(json_object_get(r, "timed_out")))
        return SBX_EXIT_TIMEOUT;
    json_t *code = json_object_get(r, "exit_code");
    if (!json_is_integer(code))
        code = json_object_get(r, "exitCode");
    if (!json_is_integer(code))
        return SBX_EXIT_FAIL; /* killed without an exit status */
    json_int_t c = json_integer_value(code);
    return c >= 0 && c <= 255 ? (int)c : SBX_EXIT_FAIL;
}

int sbx_exec_command(sbx_cli_t *cli, const char *id, const sbx_exec_opts_t *o, int *exit_out)
{
    _cleanup_free_ char *esc = sbx_http_escape(id);
    _cleanup_free_ char *path = xasprintf("/sandbox/sandboxes/%s/exec", esc);
    json_t *body = exec_body(o);
    json_t *resp = NULL;
    int rc = sbx_cli_call(cli, "POST", path, body, SBX_EXIT_DAEMON, &resp);
    json_decref(body);
    if (rc != 0)
        return rc;
    if (!json_is_object(resp)) {
        sbx_cli_error("sandboxd's answer to exec is not a JSON object");
        json_decref(resp);
        return SBX_EXIT_DAEMON;
    }
    relay(json_object_get(resp, "stdout"), STDOUT_FILENO);
    relay(json_object_get(resp, "stderr"), STDERR_FILENO);
    *exit_out = exit_code_of(resp);
    json_decref(resp);
    return 0;
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
    if (rc < 0 && (rc = sbx_exec_read_stdin(&o)) == 0) {
        int code = SBX_EXIT_FAIL;
        rc = sbx_exec_command(cli, id, &o, &code);
        if (rc == 0)
            rc = code;
        else if (rc < 0)
            rc = SBX_EXIT_DAEMON;
    }
    sbx_exec_opts_release(&o);
    return rc;
}
