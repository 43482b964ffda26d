#include "cli/image.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/http.h"
#include "common/util.h"

const char sbx_image_usage[] =
    "Usage: sandbox image <pull|ls|inspect|rm|gc> [REF] [flags]\n"
    "\n"
    "Manage the daemon's cache of OCI images.\n"
    "\n"
    "  pull REF       pull REF (e.g. 127.0.0.1:5000/app:1, python:3.12-slim) into the cache\n"
    "  ls             list pulled images\n"
    "  inspect REF    print an image's details as JSON (REF, id or id prefix)\n"
    "  rm REF         remove an image (--force: even while a sandbox uses it)\n"
    "  gc             remove cached layers no image references\n"
    "\n"
    "Flags:\n"
    "  --force                with rm: remove an image in use\n"
    "  --url URL              reach the daemon at URL (default $SANDBOXD_URL or " SBX_CLI_DEFAULT_URL ")\n"
    "  -h, --help             show this help\n";

static int call(sbx_cli_t *cli, const char *method, const char *path, json_t *body, json_t **out)
{
    int rc = sbx_cli_call(cli, method, path, body, SBX_EXIT_FAIL, out);
    json_decref(body);
    return rc < 0 ? SBX_EXIT_FAIL : rc;
}

static void human(uint64_t n, char *buf, size_t len)
{
    if (n >= (1u << 20))
        snprintf(buf, len, "%.1f MB", (double)n / (1 << 20));
    else
        snprintf(buf, len, "%.1f kB", (double)n / 1024);
}

static int cmd_pull(sbx_cli_t *cli, const char *ref)
{
    bool tty = isatty(STDERR_FILENO);
    if (tty)
        fprintf(stderr, "pulling %s ...\n", ref);
    json_t *out = NULL;
    int rc = call(cli, "POST", "/sandbox/images/pull", json_pack("{s:s}", "image", ref), &out);
    if (rc == 0) {
        char sz[32];
        human((uint64_t)json_integer_value(json_object_get(out, "size")), sz, sizeof sz);
        if (tty)
            fprintf(stderr, "%s: %lld layers, %s\n", ref,
                    (long long)json_integer_value(json_object_get(out, "layers")), sz);
        printf("%s\n", json_string_value(json_object_get(out, "digest")));
    }
    json_decref(out);
    return rc;
}

static int cmd_ls(sbx_cli_t *cli)
{
    json_t *out = NULL;
    int rc = call(cli, "GET", "/sandbox/images", NULL, &out);
    if (rc)
        return rc;
    bool tty = isatty(STDOUT_FILENO);
    if (tty)
        printf("%-60s %-19s %10s\n", "IMAGE", "ID", "SIZE");
    size_t i;
    json_t *im;
    json_array_foreach(json_object_get(out, "images"), i, im)
    {
        const char *id = json_string_value(json_object_get(im, "id"));
        char sz[32];
        human((uint64_t)json_integer_value(json_object_get(im, "size")), sz, sizeof sz);
        if (tty)
            printf("%-60s %-19.19s %10s\n", json_string_value(json_object_get(im, "image")), id ? id : "",
                   sz);
        else
            printf("%s\t%s\t%lld\n", json_string_value(json_object_get(im, "image")), id ? id : "",
                   (long long)json_integer_value(json_object_get(im, "size")));
    }
    json_decref(out);
    return 0;
}

int sbx_cmd_image(sbx_cli_t *cli, int argc, char **argv)
{
    const char *sub = NULL, *ref = NULL;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(sbx_image_usage, stdout);
            return SBX_EXIT_OK;
        } else if (!strcmp(a, "--force") || !strcmp(a, "-f")) {
            force = true;
        } else if (!strcmp(a, "--url") && i + 1 < argc) {
            sbx_cli_set_url(cli, argv[++i]);
        } else if (a[0] == '-') {
            return sbx_cli_usage_error("image", "unknown flag %s", a);
        } else if (!sub) {
            sub = a;
        } else if (!ref) {
            ref = a;
        } else {
            return sbx_cli_usage_error("image", "unexpected argument `%s`", a);
        }
    }
    if (!sub)
        return sbx_cli_usage_error("image", "missing subcommand (pull, ls, inspect, rm, gc)");
    bool needs_ref = !strcmp(sub, "pull") || !strcmp(sub, "inspect") || !strcmp(sub, "rm");
    if (needs_ref && !ref)
        return sbx_cli_usage_error("image", "missing image reference");
    if (!strcmp(sub, "pull"))
        return cmd_pull(cli, ref);
    if (!strcmp(sub, "ls"))
        return cmd_ls(cli);
    _cleanup_free_ char *esc = ref ? sbx_http_escape(ref) : NULL;
    json_t *out = NULL;
    int rc;
    if (!strcmp(sub, "inspect")) {
        _cleanup_free_ char *path = xasprintf("/sandbox/images?image=%s", esc);
        rc = call(cli, "GET", path, NULL, &out);
        if (rc == 0) {
            _cleanup_free_ char *s = json_dumps(out, JSON_INDENT(2));
            printf("%s\n", s);
        }
    } else if (!strcmp(sub, "rm")) {
        _cleanup_free_ char *path = xasprintf("/sandbox/images?image=%s%s", esc, force ? "&force=true" : "");
        rc = call(cli, "DELETE", path, NULL, &out);
    } else if (!strcmp(sub, "gc")) {
        rc = call(cli, "POST", "/sandbox/images/gc", json_object(), &out);
        if (rc == 0)
            printf("freed %lld blobs, %lld bytes\n",
                   (long long)json_integer_value(json_object_get(out, "freedBlobs")),
                   (long long)json_integer_value(json_object_get(out, "freedBytes")));
    } else {
        return sbx_cli_usage_error("image", "unknown subcommand `%s`", sub);
    }
    json_decref(out);
    return rc;
}
