#include "cli/ls.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/opts.h"
#include "common/util.h"

const char sbx_ls_usage[] =
    "Usage: sandbox ls <sandbox-id> [PATH] [flags]\n"
    "\n"
    "List a directory inside a sandbox (default: the sandbox's workspace). PATH may also be\n"
    "a file. Names are printed one per line, directories with a trailing `/`.\n"
    "\n"
    "Flags:\n"
    "  -l, --long             permissions, size, modification time (UTC) and name\n"
    "  -r, --recursive        descend into subdirectories (entries are shown by full path)\n"
    "  --json                 print the daemon's JSON listing instead\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: 0 on success, 1 when the daemon reports an error (no such sandbox or path),\n"
    "2 for usage errors, 125 when the daemon cannot be reached.\n"
    "\n"
    "Example:\n"
    "  sandbox ls -l \"$SB\" /workspace\n";

int sbx_fs_call(sbx_cli_t *cli, const char *op, json_t *payload, json_t **out)
{
    _cleanup_free_ char *path = xasprintf("/functions/sandbox::fs::%s", op);
    int rc = sbx_cli_call(cli, "POST", path, payload, SBX_EXIT_FAIL, out);
    return rc < 0 ? SBX_EXIT_DAEMON : rc;
}

json_t *sbx_fs_entries(json_t *result)
{
    static json_t *empty;
    if (json_is_array(result))
        return result;
    json_t *e = json_object_get(result, "entries");
    if (json_is_array(e))
        return e;
    if (!empty)
        empty = json_array();
    return empty;
}

const char *sbx_fs_entry_name(json_t *e)
{
    const char *s = json_string_value(json_object_get(e, "name"));
    if (!s) {
        s = json_string_value(json_object_get(e, "path"));
        const char *slash = s ? strrchr(s, '/') : NULL;
        if (slash && slash[1])
            s = slash + 1;
    }
    return s ? s : "";
}

static const char *entry_type(json_t *e)
{
    const char *t = json_string_value(json_object_get(e, "type"));
    return t ? t : "";
}

bool sbx_fs_entry_is_dir(json_t *e)
{
    const char *t = entry_type(e);
    json_t *m = json_object_get(e, "mode");
    return !strcmp(t, "dir") || !strcmp(t, "directory") || json_is_true(json_object_get(e, "is_dir")) ||
           json_is_true(json_object_get(e, "isDirectory")) ||
           (!*t && json_is_integer(m) && S_ISDIR((mode_t)json_integer_value(m)));
}

bool sbx_fs_entry_is_symlink(json_t *e)
{
    const char *t = entry_type(e);
    json_t *m = json_object_get(e, "mode");
    return !strcmp(t, "symlink") || !strcmp(t, "link") || json_is_true(json_object_get(e, "is_symlink")) ||
           json_is_true(json_object_get(e, "isSymlink")) ||
           (!*t && json_is_integer(m) && S_ISLNK((mode_t)json_integer_value(m)));
}

int sbx_fs_entry_mode(json_t *e)
{
    json_t *m = json_object_get(e, "mode");
    if (json_is_integer(m))
        return (int)(json_integer_value(m) & 07777);
    if (json_is_string(m)) {
        char *end;
        long v = strtol(json_string_value(m), &end, 8);
        if (!*end && v >= 0)
            return (int)(v & 07777);
    }
    return -1;
}

long long sbx_fs_entry_size(json_t *e)
{
    json_t *s = json_object_get(e, "size");
    return json_is_number(s) ? (long long)json_number_value(s) : 0;
}

long long sbx_fs_entry_mtime(json_t *e)
{
    static const char *const keys[] = {"mtime", "modified_at", "modifiedAt", "mtime_ms"};
    for (size_t i = 0; i < SBX_ARRAY_LEN(keys); i++) {
        json_t *v = json_object_get(e, keys[i]);
        if (json_is_number(v)) {
            long long t = (long long)json_number_value(v);
            /* Milliseconds since the epoch are far larger than any date in seconds. */
            return t > 100000000000LL ? t / 1000 : t;
        }
    }
    return 0;
}

static void perm_string(json_t *e, char out[11])
{
    int mode = sbx_fs_entry_mode(e);
    const char *rwx = "rwxrwxrwx";
    out[0] = sbx_fs_entry_is_dir(e) ? 'd' : sbx_fs_entry_is_symlink(e) ? 'l' : '-';
    for (int i = 0; i < 9; i++)
        out[1 + i] = mode >= 0 && (mode & (0400 >> i)) ? rwx[i] : '-';
    if (mode >= 0 && (mode & 01000))
        out[9] = out[9] == 'x' ? 't' : 'T';
    out[10] = '\0';
}

static void print_entry(json_t *e, bool lng, bool full)
{
    const char *name = full ? json_string_value(json_object_get(e, "path")) : NULL;
    if (!name)
        name = sbx_fs_entry_name(e);
    const char *suffix = sbx_fs_entry_is_dir(e) ? "/" : "";
    if (!lng) {
        printf("%s%s\n", name, suffix);
        return;
    }
    char perms[11], when[32] = "-";
    perm_string(e, perms);
    time_t t = (time_t)sbx_fs_entry_mtime(e);
    struct tm tm;
    if (t > 0 && gmtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    printf("%s %12lld %16s %s%s", perms, sbx_fs_entry_size(e), when, name, suffix);
    const char *target = json_string_value(json_object_get(e, "target"));
    if (target)
        printf(" -> %s", target);
    putchar('\n');
}

static bool full_paths;

static const char *sort_key(json_t *e)
{
    const char *p = full_paths ? json_string_value(json_object_get(e, "path")) : NULL;
    return p ? p : sbx_fs_entry_name(e);
}

/* A listing is sorted by name, whatever order the sandbox's directory had. */
static int by_name(const void *a, const void *b)
{
    return strcmp(sort_key(*(json_t *const *)a), sort_key(*(json_t *const *)b));
}

static void print_listing(json_t *result, bool lng)
{
    json_t *entries = sbx_fs_entries(result);
    size_t n = json_array_size(entries);
    if (n == 0 && json_is_object(result) &&
        (json_object_get(result, "type") || json_object_get(result, "size"))) {
        /* A stat of a single file. */
        print_entry(result, lng, false);
        return;
    }
    json_t **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(entries, i);
    qsort(v, n, sizeof *v, by_name);
    for (size_t i = 0; i < n; i++)
        print_entry(v[i], lng, full_paths);
    free(v);
}

int sbx_cmd_ls(sbx_cli_t *cli, int argc, char **argv)
{
    const char *id = NULL, *path = NULL;
    bool lng = false, as_json = false, recursive = false;
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    for (;;) {
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_END)
            break;
        if (k == SBX_OPTS_ERROR)
            return sbx_cli_usage_error("ls", "%s", p.errmsg);
        if (k == SBX_OPTS_DASHDASH || k == SBX_OPTS_ARG) {
            /* After `--` every argument is positional, even one starting with `-`. */
            const char *v = k == SBX_OPTS_ARG ? p.value : (p.idx < argc ? argv[p.idx++] : NULL);
            if (!v)
                continue;
            if (!id)
                id = v;
            else if (!path)
                path = v;
            else
                return sbx_cli_usage_error("ls", "unexpected argument `%s`", v);
            continue;
        }
        if (p.id == OPT_HELP) {
            fputs(sbx_ls_usage, stdout);
            return SBX_EXIT_OK;
        }
        if (p.id == OPT_LONG || p.id == OPT_JSON || p.id == OPT_RECURSIVE) {
            lng |= p.id == OPT_LONG;
            as_json |= p.id == OPT_JSON;
            recursive |= p.id == OPT_RECURSIVE;
            continue;
        }
        int r = sbx_cli_common_flag(cli, "ls", p.id, p.flag, p.value);
        if (r == 1)
            return sbx_cli_usage_error("ls", "unknown flag %s", p.flag);
        if (r != 0)
            return r;
    }
    if (!id)
        return sbx_cli_usage_error("ls", "missing <sandbox-id>");
    json_t *payload = json_pack("{s:s, s:b}", "sandbox_id", id, "recursive", recursive);
    if (path)
        json_object_set_new(payload, "path", json_string(path));
    json_t *result = NULL;
    int rc = sbx_fs_call(cli, "ls", payload, &result);
    json_decref(payload);
    if (rc != 0)
        return rc;
    if (as_json) {
        char *s = json_dumps(result, JSON_INDENT(2));
        printf("%s\n", s ? s : "null");
        free(s);
    } else {
        full_paths = recursive;
        print_listing(result, lng);
    }
    json_decref(result);
    return SBX_EXIT_OK;
}
