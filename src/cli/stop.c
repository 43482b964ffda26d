#include "cli/stop.h"

#include <stdio.h>

#include "cli/opts.h"
#include "common/util.h"

const char sbx_stop_usage[] =
    "Usage: sandbox stop <sandbox-id> [flags]\n"
    "\n"
    "Stop a sandbox and remove it. Prints nothing on success.\n"
    "\n"
    "Flags:\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Example:\n"
    "  sandbox stop \"$SB\"\n";

int sbx_stop_sandbox(sbx_cli_t *cli, const char *id)
{
    _cleanup_free_ char *esc = sbx_http_escape(id);
    _cleanup_free_ char *path = xasprintf("/sandbox/sandboxes/%s", esc);
    json_t *resp = NULL;
    int rc = sbx_cli_call(cli, "DELETE", path, NULL, SBX_EXIT_FAIL, &resp);
    json_decref(resp);
    return rc < 0 ? SBX_EXIT_DAEMON : rc;
}

int sbx_cmd_stop(sbx_cli_t *cli, int argc, char **argv)
{
    const char *id = NULL;
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    for (;;) {
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_END)
            break;
        if (k == SBX_OPTS_ERROR)
            return sbx_cli_usage_error("stop", "%s", p.errmsg);
        if (k == SBX_OPTS_DASHDASH) {
            if (!id && p.idx < argc)
                id = argv[p.idx++];
            if (p.idx < argc)
                return sbx_cli_usage_error("stop", "unexpected argument `%s`", argv[p.idx]);
            break;
        }
        if (k == SBX_OPTS_ARG) {
            if (id)
                return sbx_cli_usage_error("stop", "unexpected argument `%s`", p.value);
            id = p.value;
            continue;
        }
        if (p.id == OPT_HELP) {
            fputs(sbx_stop_usage, stdout);
            return SBX_EXIT_OK;
        }
        int r = sbx_cli_common_flag(cli, "stop", p.id, p.flag, p.value);
        if (r == 1)
            return sbx_cli_usage_error("stop", "unknown flag %s", p.flag);
        if (r != 0)
            return r;
    }
    if (!id)
        return sbx_cli_usage_error("stop", "missing <sandbox-id>");
    return sbx_stop_sandbox(cli, id);
}
