/* The `sandbox` command-line client: a thin layer over sandboxd's HTTP API.
 *
 *   sandbox [--url URL | --port P] <command> [flags] [args]
 *
 * Global flags come before the command; every command also takes --url and --port. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cp.h"
#include "cli/create.h"
#include "cli/exec.h"
#include "cli/image.h"
#include "cli/list.h"
#include "cli/ls.h"
#include "cli/opts.h"
#include "cli/run.h"
#include "cli/stop.h"

typedef struct {
    const char *name;
    const char *summary;
    const char *usage;
    sbx_cli_cmd_fn fn;
} command_t;

static const command_t commands[] = {
    {"run", "create a sandbox, run one command in it, stop it", sbx_run_usage, sbx_cmd_run},
    {"create", "boot a long-lived sandbox and print its id", sbx_create_usage, sbx_cmd_create},
    {"exec", "run a command in a running sandbox", sbx_exec_usage, sbx_cmd_exec},
    {"list", "list sandboxes", sbx_list_usage, sbx_cmd_list},
    {"stop", "stop and remove a sandbox", sbx_stop_usage, sbx_cmd_stop},
    {"cp", "copy files and directories into or out of a sandbox", sbx_cp_usage, sbx_cmd_cp},
    {"ls", "list a directory inside a sandbox", sbx_ls_usage, sbx_cmd_ls},
    {"image", "pull, list, inspect and remove OCI images (pull|ls|inspect|rm|gc)", sbx_image_usage,
     sbx_cmd_image},
};

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fputs("Usage: sandbox [--url URL | --port P] <command> [flags] [args]\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs("  help     show help for a command (`sandbox help exec`)\n"
          "\n"
          "Global flags:\n"
          "  --url URL      sandboxd's address (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
          "  --port P       shorthand for --url http://127.0.0.1:P\n"
          "  -h, --help     show this help\n"
          "  --version      print the version\n"
          "\n"
          "Environment:\n"
          "  SANDBOXD_URL    daemon address\n"
          "  SANDBOXD_TOKEN  bearer token sent with every request\n"
          "\n"
          "Quick start:\n"
          "  sandbox run python -- python3 -c 'print(2 ** 10)'\n"
          "  SB=$(sandbox create python --idle-timeout 300)\n"
          "  sandbox exec \"$SB\" -- python3 -c 'print(2+2)'\n"
          "  sandbox cp -r ./project \"$SB\":/workspace/project\n"
          "  sandbox ls -l \"$SB\" /workspace\n"
          "  sandbox stop \"$SB\"\n",
          out);
}

static int help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return SBX_EXIT_OK;
    }
    const command_t *c = find_command(argv[1]);
    if (!c)
        return sbx_cli_usage_error(NULL, "unknown command `%s`", argv[1]);
    fputs(c->usage, stdout);
    return SBX_EXIT_OK;
}

/* Parses the global flags before the command.  Returns the index of the command, or
 * -(exit code + 1) when the program should stop. */
static int parse_global(sbx_cli_t *cli, int argc, char **argv)
{
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    for (;;) {
        int at = p.idx;
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_ARG)
            return at;
        if (k == SBX_OPTS_END || k == SBX_OPTS_DASHDASH) {
            usage(stderr);
            return -(SBX_EXIT_USAGE + 1);
        }
        if (k == SBX_OPTS_ERROR)
            return -(sbx_cli_usage_error(NULL, "%s", p.errmsg) + 1);
        if (p.id == OPT_HELP) {
            usage(stdout);
            return -(SBX_EXIT_OK + 1);
        }
        if (p.id == OPT_VERSION) {
            printf("sandbox %s\n", SBX_CLI_VERSION);
            return -(SBX_EXIT_OK + 1);
        }
        int r = sbx_cli_common_flag(cli, NULL, p.id, p.flag, p.value);
        if (r == 1)
            return -(sbx_cli_usage_error(NULL, "unknown flag %s", p.flag) + 1);
        if (r != 0)
            return -(r + 1);
    }
}

int main(int argc, char **argv)
{
    /* Output to a closed pipe is reported by write(), not by dying mid-way. */
    signal(SIGPIPE, SIG_IGN);
    sbx_http_global_init();
    sbx_cli_t cli;
    sbx_cli_init(&cli);
    int rc;
    int at = parse_global(&cli, argc, argv);
    if (at < 0) {
        rc = -at - 1;
    } else if (!strcmp(argv[at], "help")) {
        rc = help(argc - at, argv + at);
    } else if (!strcmp(argv[at], "version")) {
        printf("sandbox %s\n", SBX_CLI_VERSION);
        rc = SBX_EXIT_OK;
    } else {
        const command_t *c = find_command(argv[at]);
        rc = c ? c->fn(&cli, argc - at, argv + at)
               : sbx_cli_usage_error(NULL, "unknown command `%s`", argv[at]);
    }
    fflush(stdout);
    sbx_cli_release(&cli);
    return rc;
}
