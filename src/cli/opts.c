#include "cli/opts.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

typedef struct {
    const char *long_name;
    char short_name;
    bool takes_value;
    sbx_opt_id_t id;
} opt_spec_t;

static const opt_spec_t specs[] = {
    {"help", 'h', false, OPT_HELP},
    {"url", 0, true, OPT_URL},
    {"port", 0, true, OPT_PORT},
    {"cpus", 0, true, OPT_CPUS},
    {"memory", 0, true, OPT_MEMORY},
    {"idle-timeout", 0, true, OPT_IDLE_TIMEOUT},
    {"name", 0, true, OPT_NAME},
    {"network", 0, false, OPT_NETWORK},
    {"env", 'e', true, OPT_ENV},
    {"timeout", 0, true, OPT_TIMEOUT},
    {"stdin", 'i', false, OPT_STDIN},
    {"json", 0, false, OPT_JSON},
    {"all", 'a', false, OPT_ALL},
    {"version", 0, false, OPT_VERSION},
    {"recursive", 'r', false, OPT_RECURSIVE},
    {"long", 'l', false, OPT_LONG},
};

void sbx_opts_init(sbx_opts_t *p, int argc, char **argv, int first)
{
    memset(p, 0, sizeof *p);
    p->argc = argc;
    p->argv = argv;
    p->idx = first;
}

static sbx_opts_kind_t fail(sbx_opts_t *p, const char *fmt, const char *what)
{
    snprintf(p->errmsg, sizeof p->errmsg, fmt, what);
    return SBX_OPTS_ERROR;
}

/* Takes the flag's value from `inline_val` or else from the next argument. */
static sbx_opts_kind_t take_value(sbx_opts_t *p, const opt_spec_t *s, const char *inline_val)
{
    p->id = s->id;
    p->value = NULL;
    if (!s->takes_value) {
        if (inline_val)
            return fail(p, "flag %s does not take a value", p->flag);
        return SBX_OPTS_FLAG;
    }
    if (inline_val) {
        p->value = inline_val;
        return SBX_OPTS_FLAG;
    }
    if (p->idx >= p->argc)
        return fail(p, "flag %s needs a value", p->flag);
    p->value = p->argv[p->idx++];
    return SBX_OPTS_FLAG;
}

static sbx_opts_kind_t parse_long(sbx_opts_t *p, const char *arg)
{
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    snprintf(p->flagbuf, sizeof p->flagbuf, "--%.*s", (int)len, name);
    p->flag = p->flagbuf;
    for (size_t i = 0; i < SBX_ARRAY_LEN(specs); i++) {
        if (strlen(specs[i].long_name) == len && !strncmp(specs[i].long_name, name, len))
            return take_value(p, &specs[i], eq ? eq + 1 : NULL);
    }
    return fail(p, "unknown flag %s", p->flag);
}

static sbx_opts_kind_t parse_short(sbx_opts_t *p, const char *arg)
{
    snprintf(p->flagbuf, sizeof p->flagbuf, "-%c", arg[1]);
    p->flag = p->flagbuf;
    for (size_t i = 0; i < SBX_ARRAY_LEN(specs); i++) {
        if (specs[i].short_name && specs[i].short_name == arg[1]) {
            const char *rest = arg[2] ? arg + 2 : NULL;
            /* `-eKEY=VAL` carries its value inline; a switch takes no suffix. */
            if (rest && !specs[i].takes_value)
                return fail(p, "unknown flag %s", arg);
            return take_value(p, &specs[i], rest);
        }
    }
    return fail(p, "unknown flag %s", arg);
}

sbx_opts_kind_t sbx_opts_next(sbx_opts_t *p)
{
    p->value = NULL;
    p->flag = NULL;
    p->errmsg[0] = '\0';
    if (p->idx >= p->argc)
        return SBX_OPTS_END;
    const char *arg = p->argv[p->idx++];
    if (!strcmp(arg, "--"))
        return SBX_OPTS_DASHDASH;
    if (arg[0] == '-' && arg[1] == '-')
        return parse_long(p, arg);
    if (arg[0] == '-' && arg[1])
        return parse_short(p, arg);
    p->value = arg;
    return SBX_OPTS_ARG;
}

void sbx_strv_push(sbx_strv_t *sv, const char *s)
{
    if (sv->n + 2 > sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 8;
        sv->v = xrealloc(sv->v, sv->cap * sizeof *sv->v);
    }
    sv->v[sv->n++] = s;
    sv->v[sv->n] = NULL;
}

void sbx_strv_release(sbx_strv_t *sv)
{
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}

int sbx_opts_int(const char *s, long long min, long long max, long long *out)
{
    int64_t v;
    if (sbx_parse_i64(s, &v) < 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}
