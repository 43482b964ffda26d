#include "cli/create.h"

#include <stdio.h>
#include <string.h>

#include "cli/progress.h"
#include "common/util.h"

const char sbx_create_usage[] =
    "Usage: sandbox create <image> [flags]\n"
    "\n"
    "Boot a long-lived sandbox and print its id (only the id goes to stdout).\n"
    "The sandbox lives until `sandbox stop <id>` or until its idle timeout fires.\n"
    "\n"
    "Flags:\n"
    "  --cpus N               CPUs, fractional allowed (default 1)\n"
    "  --memory MiB           RAM in MiB (default 512)\n"
    "  --idle-timeout SECS    auto-stop after this many seconds without exec activity\n"
    "                         (default: the daemon's)\n"
    "  --name LABEL           human-readable label, shown in `sandbox list`\n"
    "  --network              enable guest network access (default: daemon policy)\n"
    "  -e, --env KEY=VAL      environment variable; repeatable; entries without '=' are skipped\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Example:\n"
    "  SB=$(sandbox create python --idle-timeout 300)\n";

void sbx_create_opts_init(sbx_create_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->cpus = o->memory_mb = o->idle_timeout_secs = -1;
}

void sbx_create_opts_release(sbx_create_opts_t *o)
{
    sbx_strv_release(&o->env);
}

static int number(const char *cmd, const char *flag, const char *value, long long min, long long max,
                  long long *out)
{
    if (sbx_opts_int(value, min, max, out) < 0)
        return sbx_cli_usage_error(cmd, "invalid %s `%s`: expected a whole number from %lld to %lld", flag,
                                   value, min, max);
    return 0;
}

int sbx_create_apply_flag(sbx_create_opts_t *o, const char *cmd, int id, const char *flag, const char *value)
{
    switch (id) {
    case OPT_CPUS:
        if (sbx_parse_double(value, &o->cpus) < 0 || !(o->cpus > 0) || o->cpus > 1024)
            return sbx_cli_usage_error(
                cmd, "invalid %s `%s`: expected a number of CPUs above 0 (e.g. 0.5, 2)", flag, value);
        return 0;
    case OPT_MEMORY: return number(cmd, flag, value, 1, 16 * 1024 * 1024, &o->memory_mb);
    case OPT_IDLE_TIMEOUT: return number(cmd, flag, value, 0, 365LL * 86400, &o->idle_timeout_secs);
    case OPT_NAME: o->name = value; return 0;
    case OPT_NETWORK: o->network = true; return 0;
    case OPT_ENV:
        /* The guide: entries without '=' are silently skipped. */
        if (strchr(value, '='))
            sbx_strv_push(&o->env, value);
        return 0;
    default: return 1;
    }
}

static json_t *create_body(const sbx_create_opts_t *o)
{
    json_t *b = json_object();
    json_object_set_new(b, "image", json_string(o->image));
    if (o->cpus >= 0)
        json_object_set_new(b, "cpus",
                            o->cpus == (long long)o->cpus ? json_integer((json_int_t)o->cpus)
                                                          : json_real(o->cpus));
    if (o->memory_mb >= 0)
        json_object_set_new(b, "memory_mb", json_integer(o->memory_mb));
    if (o->idle_timeout_secs >= 0)
        json_object_set_new(b, "idle_timeout_secs", json_integer(o->idle_timeout_secs));
    if (o->name)
        json_object_set_new(b, "name", json_string(o->name));
    if (o->network)
        json_object_set_new(b, "network", json_true());
    if (o->env.n) {
        json_t *env = json_array();
        for (size_t i = 0; i < o->env.n; i++)
            json_array_append_new(env, json_string(o->env.v[i]));
        json_object_set_new(b, "env", env);
    }
    return b;
}

int sbx_create_sandbox(sbx_cli_t *cli, const sbx_create_opts_t *o, char **id_out)
{
    json_t *body = create_body(o);
    json_t *resp = NULL;
    int64_t t0 = sbx_mono_ms();
    sbx_progress_t *progress = sbx_progress_start(cli, o->image);
    int rc = sbx_cli_call(cli, "POST", "/sandbox/sandboxes", body, SBX_EXIT_DAEMON, &resp);
    sbx_progress_stop(progress);
    json_decref(body);
    if (rc != 0)
        return rc;
    const char *id = json_string_value(json_object_get(resp, "id"));
    if (!id)
        id = json_string_value(json_object_get(resp, "sandbox_id"));
    if (!id || !*id) {
        sbx_cli_error("sandboxd's answer to create carries no sandbox id");
        json_decref(resp);
        return SBX_EXIT_DAEMON;
    }
    *id_out = xstrdup(id);
    json_decref(resp);
    if (cli->tty)
        fprintf(stderr, "✓ sandbox ready in %.1fs\n", (double)(sbx_mono_ms() - t0) / 1000.0);
    return 0;
}

int sbx_cmd_create(sbx_cli_t *cli, int argc, char **argv)
{
    sbx_create_opts_t o;
    sbx_create_opts_init(&o);
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    int rc = -1;
    bool more = true;
    while (rc < 0 && more) {
        switch (sbx_opts_next(&p)) {
        case SBX_OPTS_END: more = false; break;
        case SBX_OPTS_ERROR: rc = sbx_cli_usage_error("create", "%s", p.errmsg); break;
        case SBX_OPTS_DASHDASH:
            if (p.idx < argc && !o.image)
                o.image = argv[p.idx++];
            if (p.idx < argc)
                rc = sbx_cli_usage_error("create", "unexpected argument `%s`", argv[p.idx]);
            more = false;
            break;
        case SBX_OPTS_ARG:
            if (o.image)
                rc = sbx_cli_usage_error("create", "unexpected argument `%s`", p.value);
            else
                o.image = p.value;
            break;
        case SBX_OPTS_FLAG: {
            if (p.id == OPT_HELP) {
                fputs(sbx_create_usage, stdout);
                rc = SBX_EXIT_OK;
                break;
            }
            int r = sbx_cli_common_flag(cli, "create", p.id, p.flag, p.value);
            if (r == 1)
                r = sbx_create_apply_flag(&o, "create", p.id, p.flag, p.value);
            if (r == 1)
                r = sbx_cli_usage_error("create", "unknown flag %s", p.flag);
            if (r != 0)
                rc = r;
            break;
        }
        }
    }
    if (rc < 0 && !o.image)
        rc = sbx_cli_usage_error("create", "missing <image>");
    if (rc < 0) {
        _cleanup_free_ char *id = NULL;
        rc = sbx_create_sandbox(cli, &o, &id);
        if (rc == 0)
            printf("%s\n", id);
        else if (rc < 0)
            rc = SBX_EXIT_DAEMON;
    }
    sbx_create_opts_release(&o);
    return rc;
}
