#include "cli/run.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/create.h"
#include "cli/exec.h"
#include "cli/stop.h"
#include "common/util.h"

const char sbx_run_usage[] =
    "Usage: sandbox run <image> [flags] [--] <cmd> [args...]\n"
    "\n"
    "Create a sandbox, run one command in it, then stop it. The command's stdout and\n"
    "stderr go to ours as it writes them. Exits with the command's exit code (124 if\n"
    "--timeout expired, 125 if the sandbox could not be created or the command could\n"
    "not be started). Ctrl-C while the command runs is forwarded to it (a second one\n"
    "kills it, a third stops waiting); the sandbox is stopped in every case.\n"
    "\n"
    "Flags:\n"
    "  --cpus N               CPUs, fractional allowed (default 1)\n"
    "  --memory MiB           RAM in MiB (default 512)\n"
    "  --idle-timeout SECS    auto-stop after this many seconds without exec activity\n"
    "  --name LABEL           human-readable label, shown in `sandbox list`\n"
    "  --network              enable guest network access (default: daemon policy)\n"
    "  -e, --env KEY=VAL      environment variable; repeatable; entries without '=' are skipped\n"
    "  --timeout DUR          kill the command after this long (30s, 5m, 500ms)\n"
    "  -i, --stdin            forward our stdin to the command while it runs\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Example:\n"
    "  sandbox run python --cpus 2 --memory 512 -- python3 -c 'print(2 ** 10)'\n";

typedef struct {
    sbx_create_opts_t create;
    sbx_exec_opts_t exec;
} run_opts_t;

static int apply_flag(sbx_cli_t *cli, run_opts_t *o, const sbx_opts_t *p)
{
    int r = sbx_cli_common_flag(cli, "run", p->id, p->flag, p->value);
    if (r == 1)
        r = sbx_create_apply_flag(&o->create, "run", p->id, p->flag, p->value);
    /* -e goes to both the sandbox and the command, so it holds however the daemon scopes
     * sandbox-wide environment. */
    if (r == 0 && p->id == OPT_ENV)
        r = sbx_exec_apply_flag(&o->exec, "run", p->id, p->flag, p->value);
    if (r == 1)
        r = sbx_exec_apply_flag(&o->exec, "run", p->id, p->flag, p->value);
    if (r == 1)
        r = sbx_cli_usage_error("run", "unknown flag %s", p->flag);
    return r;
}

/* Parses `run`'s arguments.  Returns -1 to go ahead, or an exit code. */
static int parse(sbx_cli_t *cli, run_opts_t *o, int argc, char **argv)
{
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    while (!o->exec.cmd) {
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_END)
            break;
        if (k == SBX_OPTS_ERROR)
            return sbx_cli_usage_error("run", "%s", p.errmsg);
        if (k == SBX_OPTS_DASHDASH || (k == SBX_OPTS_ARG && o->create.image)) {
            if (k == SBX_OPTS_DASHDASH && !o->create.image && p.idx < argc)
                o->create.image = argv[p.idx++];
            int first = k == SBX_OPTS_ARG ? p.idx - 1 : p.idx;
            if (first < argc) {
                o->exec.cmd = argv + first;
                o->exec.ncmd = argc - first;
            }
            break;
        }
        if (k == SBX_OPTS_ARG) {
            o->create.image = p.value;
            continue;
        }
        if (p.id == OPT_HELP) {
            fputs(sbx_run_usage, stdout);
            return SBX_EXIT_OK;
        }
        int r = apply_flag(cli, o, &p);
        if (r != 0)
            return r;
    }
    if (!o->create.image)
        return sbx_cli_usage_error("run", "missing <image>");
    if (!o->exec.cmd)
        return sbx_cli_usage_error("run", "missing <cmd>");
    return -1;
}

/* Creates, executes and always stops.  Returns the exit code. */
static int create_exec_stop(sbx_cli_t *cli, run_opts_t *o)
{
    _cleanup_free_ char *id = NULL;
    sbx_cli_catch_signals();
    cli->http.cancel = &sbx_cli_signals;
    /* A first signal during create lets the request finish so the new sandbox can be
     * removed; a second one abandons it. */
    cli->http.cancel_after = 2;
    int rc = sbx_create_sandbox(cli, &o->create, &id);
    cli->http.cancel_after = 0;
    if (rc < 0) {
        sbx_cli_error("interrupted while the sandbox was starting; it may be left behind "
                      "(see `sandbox list`)");
        return 128 + sbx_cli_last_signal;
    }
    if (rc != 0)
        return rc;

    /* While the command runs, signals go to it and its exit code is ours (see
     * sbx_exec_command); only a signal before it starts, or the third one, makes us give
     * up on it. */
    bool interrupted = sbx_cli_signals > 0;
    int code = SBX_EXIT_DAEMON;
    if (!interrupted) {
        rc = sbx_exec_command(cli, id, &o->exec, &code);
        if (rc > 0)
            code = rc;
        interrupted = rc < 0;
    }
    if (interrupted) {
        code = 128 + sbx_cli_last_signal;
        if (cli->tty)
            fprintf(stderr, "sandbox: interrupted, stopping sandbox %s\n", id);
    }
    if (sbx_stop_sandbox(cli, id) != 0)
        sbx_cli_error("sandbox %s may still be running; stop it with `sandbox stop %s`", id, id);
    return code;
}

int sbx_cmd_run(sbx_cli_t *cli, int argc, char **argv)
{
    run_opts_t o;
    sbx_create_opts_init(&o.create);
    sbx_exec_opts_init(&o.exec);
    int rc = parse(cli, &o, argc, argv);
    if (rc < 0)
        rc = create_exec_stop(cli, &o);
    sbx_exec_opts_release(&o.exec);
    sbx_create_opts_release(&o.create);
    return rc;
}
