#include "cli/list.h"

#include <stdio.h>
#include <string.h>

#include "cli/opts.h"
#include "common/util.h"

#define PAGE_SIZE 200
/* A runaway guard: a daemon that keeps answering full pages stops us at 1M sandboxes. */
#define MAX_PAGES 5000

const char sbx_list_usage[] =
    "Usage: sandbox list [flags]\n"
    "\n"
    "Print every sandbox the daemon knows about: ID, NAME, IMAGE, STATUS, AGE.\n"
    "\n"
    "Flags:\n"
    "  --json                 print the raw JSON array of sandbox objects instead\n"
    "  --all                  accepted for compatibility; the list is always complete\n"
    "  --port P               reach the daemon at http://127.0.0.1:P\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n";

void sbx_list_humanize_age(int64_t ms, char *buf, size_t len)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(buf, len, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm", (long long)(s / 60));
    else if (s < 86400)
        snprintf(buf, len, "%lldh", (long long)(s / 3600));
    else
        snprintf(buf, len, "%lldd", (long long)(s / 86400));
}

/* Reads every page into one array.  Returns 0 or an exit code after printing the error. */
static int fetch_all(sbx_cli_t *cli, json_t *all)
{
    for (int page = 1; page <= MAX_PAGES; page++) {
        _cleanup_free_ char *path = xasprintf("/sandbox/sandboxes?pageSize=%d&page=%d", PAGE_SIZE, page);
        json_t *resp = NULL;
        int rc = sbx_cli_call(cli, "GET", path, NULL, SBX_EXIT_FAIL, &resp);
        if (rc != 0)
            return rc < 0 ? SBX_EXIT_DAEMON : rc;
        /* A bare array is a complete, unpaged answer. */
        json_t *items = json_is_array(resp) ? resp : json_object_get(resp, "items");
        if (!json_is_array(items)) {
            json_decref(resp);
            sbx_cli_error("sandboxd's answer to list carries no items");
            return SBX_EXIT_FAIL;
        }
        size_t got = json_array_size(items);
        json_array_extend(all, items);
        json_t *total = json_object_get(resp, "total");
        bool done = json_is_array(resp) || got == 0 ||
                    (json_is_integer(total) ? (json_int_t)json_array_size(all) >= json_integer_value(total)
                                            : got < PAGE_SIZE);
        json_decref(resp);
        if (done)
            return 0;
    }
    return 0;
}

/* Display width of a UTF-8 string, counted in code points. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

enum { COLS = 5 };

static const char *cell(json_t *sb, const char *key)
{
    const char *s = json_string_value(json_object_get(sb, key));
    return s && *s ? s : "-";
}

static void print_row(char *const row[COLS], const size_t w[COLS])
{
    for (int c = 0; c < COLS; c++) {
        if (c == COLS - 1)
            printf("%s\n", row[c]);
        else
            printf("%s%*s", row[c], (int)(w[c] - width(row[c]) + 3), "");
    }
}

static void print_table(json_t *all)
{
    size_t n = json_array_size(all);
    char *(*rows)[COLS] = xcalloc(n + 1, sizeof *rows);
    static const char *const header[COLS] = {"ID", "NAME", "IMAGE", "STATUS", "AGE"};
    size_t w[COLS];
    for (int c = 0; c < COLS; c++) {
        rows[0][c] = xstrdup(header[c]);
        w[c] = strlen(header[c]);
    }
    int64_t now = sbx_now_ms();
    for (size_t i = 0; i < n; i++) {
        json_t *sb = json_array_get(all, i);
        const char *id = json_string_value(json_object_get(sb, "id"));
        char age[32] = "-";
        json_t *created = json_object_get(sb, "createdAt");
        if (json_is_number(created))
            sbx_list_humanize_age(now - (int64_t)json_number_value(created), age, sizeof age);
        rows[i + 1][0] = xstrdup(id && *id ? id : cell(sb, "sandbox_id"));
        rows[i + 1][1] = xstrdup(cell(sb, "name"));
        rows[i + 1][2] = xstrdup(cell(sb, "image"));
        rows[i + 1][3] = xstrdup(cell(sb, "status"));
        rows[i + 1][4] = xstrdup(age);
        for (int c = 0; c < COLS; c++)
            if (width(rows[i + 1][c]) > w[c])
                w[c] = width(rows[i + 1][c]);
    }
    for (size_t i = 0; i <= n; i++) {
        print_row(rows[i], w);
        for (int c = 0; c < COLS; c++)
            free(rows[i][c]);
    }
    free(rows);
}

int sbx_cmd_list(sbx_cli_t *cli, int argc, char **argv)
{
    bool as_json = false;
    sbx_opts_t p;
    sbx_opts_init(&p, argc, argv, 1);
    for (;;) {
        sbx_opts_kind_t k = sbx_opts_next(&p);
        if (k == SBX_OPTS_END || k == SBX_OPTS_DASHDASH) {
            if (k == SBX_OPTS_DASHDASH && p.idx < argc)
                return sbx_cli_usage_error("list", "unexpected argument `%s`", argv[p.idx]);
            break;
        }
        if (k == SBX_OPTS_ERROR)
            return sbx_cli_usage_error("list", "%s", p.errmsg);
        if (k == SBX_OPTS_ARG)
            return sbx_cli_usage_error("list", "unexpected argument `%s`", p.value);
        if (p.id == OPT_HELP) {
            fputs(sbx_list_usage, stdout);
            return SBX_EXIT_OK;
        }
        if (p.id == OPT_JSON) {
            as_json = true;
            continue;
        }
        if (p.id == OPT_ALL)
            continue; /* kept so existing scripts keep working */
        int r = sbx_cli_common_flag(cli, "list", p.id, p.flag, p.value);
        if (r == 1)
            return sbx_cli_usage_error("list", "unknown flag %s", p.flag);
        if (r != 0)
            return r;
    }
    json_t *all = json_array();
    int rc = fetch_all(cli, all);
    if (rc == 0) {
        if (as_json) {
            char *s = json_dumps(all, JSON_INDENT(2));
            printf("%s\n", s ? s : "[]");
            free(s);
        } else {
            print_table(all);
        }
    }
    json_decref(all);
    return rc;
}
