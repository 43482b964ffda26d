/* Daemon settings: embedded defaults < YAML file < III_* environment < flags.
 *
 * The YAML file is loaded into libyaml's document tree and walked; every key is checked
 * against a table, so a typo fails the start instead of being silently ignored.  Numbers
 * must be plain (unquoted) scalars, so `max_concurrent_sandboxes: "32"` is a type error. */
#include "core/config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "common/util.h"

#define DEFAULT_STATE_DIR "/var/lib/sandboxd"
#define DEFAULT_RUN_DIR "/run/sandboxd"
#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 3111
#define WORKER_NAME "iii-sandbox"

static const char *const preset_names[] = {"python", "node"};

/* ---- small list helpers ---- */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void strv_push(char ***v, size_t *n, const char *s)
{
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = xstrdup(s);
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? xstrdup(s) : NULL;
}

static void custom_images_free(sbx_custom_image_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].ref);
    }
    free(v);
}

static void caps_free(sbx_image_cap_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

/* The directory holding the running executable, from /proc/self/exe. */
static char *self_dir(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return xstrdup(".");
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash == buf)
        return xstrdup("/");
    if (slash)
        *slash = '\0';
    return xstrdup(buf);
}

void sbx_config_defaults(sbx_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_host = xstrdup(DEFAULT_HOST);
    cfg->listen_port = DEFAULT_PORT;
    cfg->state_dir = xstrdup(DEFAULT_STATE_DIR);
    cfg->run_dir = xstrdup(DEFAULT_RUN_DIR);
    _cleanup_free_ char *dir = self_dir();
    cfg->agent_path = xasprintf("%s/sandbox-agent", strcmp(dir, "/") ? dir : "");
    cfg->api_prefix = xstrdup("sandbox");
    cfg->auto_install = true;
    cfg->cgroup_favor_dynmods = true;
    strv_push(&cfg->image_allowlist, &cfg->n_image_allowlist, "python");
    strv_push(&cfg->image_allowlist, &cfg->n_image_allowlist, "node");
    strv_push(&cfg->allowed_images, &cfg->n_allowed_images, "*");
    cfg->default_idle_timeout_secs = 300;
    cfg->max_concurrent_sandboxes = 32;
    cfg->default_cpus = 1;
    cfg->default_memory_mb = 512;
    cfg->default_timeout_secs = 3600;
    cfg->workspace_dir = xstrdup("/workspace");
    cfg->max_cmd_timeout_secs = 300;
    cfg->default_disk_mb = 1024;
    cfg->default_pids_max = 1024;
    cfg->stopped_retention_secs = 300;
    cfg->reaper_interval_secs = 10;
    cfg->max_exec_output_bytes = 1 << 20;
    cfg->max_background_secs = 86400;
    cfg->log_quota_mb = 1024;
    cfg->function_exec_concurrency = 1;
    cfg->queue_workers = 4;
    cfg->queue_retry_base_ms = 1000;
}

void sbx_config_release(sbx_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->listen_host);
    free(cfg->state_dir);
    free(cfg->run_dir);
    free(cfg->config_file);
    free(cfg->agent_path);
    free(cfg->api_prefix);
    free(cfg->auth_token);
    strv_free(cfg->image_allowlist, cfg->n_image_allowlist);
    strv_free(cfg->pool_images, cfg->n_pool_images);
    custom_images_free(cfg->custom_images, cfg->n_custom_images);
    caps_free(cfg->per_image_caps, cfg->n_per_image_caps);
    strv_free(cfg->allowed_images, cfg->n_allowed_images);
    strv_free(cfg->insecure_registries, cfg->n_insecure_registries);
    free(cfg->registry_mirror);
    free(cfg->registry_credentials_file);
    free(cfg->workspace_dir);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- the YAML file ---- */

typedef struct {
    const char *path;
    yaml_document_t *doc;
    sbx_config_t *cfg;
    sbx_err_t *err;
} yctx_t;

static int yfail(yctx_t *y, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int yfail(yctx_t *y, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sbx_fail(y->err, SBX_E_INVALID, NULL, "%s:%zu: %s", y->path, n ? n->start_mark.line + 1 : 0, msg);
}

static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? "a plain value" : "a quoted string";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a map";
    default: return "nothing";
    }
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int get_bool(yctx_t *y, const char *key, const yaml_node_t *n, bool *out)
{
    if (is_plain(n)) {
        const char *s = scalar(n);
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes")) {
            *out = true;
            return 0;
        }
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no")) {
            *out = false;
            return 0;
        }
    }
    return yfail(y, n, "'%s' must be a boolean (true or false)", key);
}

static int get_pos_int(yctx_t *y, const char *key, const yaml_node_t *n, int64_t *out)
{
    int64_t v;
    if (!is_plain(n) || sbx_parse_i64(scalar(n), &v) < 0 || v <= 0)
        return yfail(y, n, "'%s' must be a positive integer", key);
    *out = v;
    return 0;
}

static int get_nonneg_int(yctx_t *y, const char *key, const yaml_node_t *n, int64_t *out)
{
    int64_t v;
    if (!is_plain(n) || sbx_parse_i64(scalar(n), &v) < 0 || v < 0)
        return yfail(y, n, "'%s' must be a non-negative integer", key);
    *out = v;
    return 0;
}

static int get_pos_number(yctx_t *y, const char *key, const yaml_node_t *n, double *out)
{
    double v;
    if (!is_plain(n) || sbx_parse_double(scalar(n), &v) < 0 || !(v > 0))
        return yfail(y, n, "'%s' must be a number greater than 0", key);
    *out = v;
    return 0;
}

static bool is_preset(const char *name)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(preset_names); i++)
        if (!strcmp(name, preset_names[i]))
            return true;
    return false;
}

static int set_strlist(yctx_t *y, const char *key, const yaml_node_t *n, char ***dst, size_t *ndst)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return yfail(y, n, "'%s' must be a list of strings, not %s", key, node_kind(n));
    char **v = NULL;
    size_t cnt = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = yaml_document_get_node(y->doc, *it);
        if (!e || e->type != YAML_SCALAR_NODE || !*scalar(e)) {
            strv_free(v, cnt);
            return yfail(y, e, "'%s' entries must be non-empty strings", key);
        }
        strv_push(&v, &cnt, scalar(e));
    }
    strv_free(*dst, *ndst);
    *dst = v;
    *ndst = cnt;
    return 0;
}

static int set_registries(yctx_t *y, const char *key, const yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return yfail(y, n, "'%s' must be a list of \"host:port\" strings, not %s", key, node_kind(n));
    char **v = NULL;
    size_t cnt = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = yaml_document_get_node(y->doc, *it);
        if (!e || e->type != YAML_SCALAR_NODE || !*scalar(e) || strchr(scalar(e), '/')) {
            strv_free(v, cnt);
            return yfail(y, e, "'%s' entries must be \"host\" or \"host:port\" strings", key);
        }
        strv_push(&v, &cnt, scalar(e));
    }
    strv_free(y->cfg->insecure_registries, y->cfg->n_insecure_registries);
    y->cfg->insecure_registries = v;
    y->cfg->n_insecure_registries = cnt;
    return 0;
}

static int set_string(yctx_t *y, const char *key, const yaml_node_t *n, char **out)
{
    if (n->type != YAML_SCALAR_NODE || !*scalar(n))
        return yfail(y, n, "'%s' must be a non-empty string", key);
    set_str(out, scalar(n));
    return 0;
}

static int set_custom_images(yctx_t *y, const char *key, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE)
        return yfail(y, n, "'%s' must be a map of name to image reference, not %s", key, node_kind(n));
    sbx_custom_image_t *v = NULL;
    size_t cnt = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(y->doc, p->value);
        int rc = 0;
        if (!k || k->type != YAML_SCALAR_NODE || !*scalar(k))
            rc = yfail(y, k, "'%s' names must be non-empty strings", key);
        else if (is_preset(scalar(k)))
            rc = yfail(y, k, "custom_images: '%s' shadows a preset image", scalar(k));
        else if (!val || val->type != YAML_SCALAR_NODE || !*scalar(val))
            rc = yfail(y, val ? val : k,
                       "custom_images: '%s' must be a string (a rootfs directory or an OCI reference)",
                       scalar(k));
        if (rc < 0) {
            custom_images_free(v, cnt);
            return -1;
        }
        v = xrealloc(v, (cnt + 1) * sizeof *v);
        v[cnt].name = xstrdup(scalar(k));
        v[cnt].ref = xstrdup(scalar(val));
        cnt++;
    }
    custom_images_free(y->cfg->custom_images, y->cfg->n_custom_images);
    y->cfg->custom_images = v;
    y->cfg->n_custom_images = cnt;
    return 0;
}

static int parse_cap(yctx_t *y, const char *name, const yaml_node_t *n, sbx_image_cap_t *cap)
{
    if (n->type != YAML_MAPPING_NODE)
        return yfail(y, n, "per_image_caps: '%s' must be a map {max_cpus, max_memory_mb}, not %s", name,
                     node_kind(n));
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(y->doc, p->value);
        const char *kn = k && k->type == YAML_SCALAR_NODE ? scalar(k) : "";
        if (!strcmp(kn, "max_cpus")) {
            if (get_pos_number(y, "per_image_caps.max_cpus", val, &cap->max_cpus) < 0)
                return -1;
        } else if (!strcmp(kn, "max_memory_mb")) {
            if (get_pos_int(y, "per_image_caps.max_memory_mb", val, &cap->max_memory_mb) < 0)
                return -1;
        } else {
            return yfail(y, k, "unknown key 'per_image_caps.%s.%s'", name, kn);
        }
    }
    return 0;
}

static int set_caps(yctx_t *y, const char *key, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE)
        return yfail(y, n, "'%s' must be a map of image name to caps, not %s", key, node_kind(n));
    sbx_image_cap_t *v = NULL;
    size_t cnt = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(y->doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE || !*scalar(k) || !val) {
            caps_free(v, cnt);
            return yfail(y, k, "'%s' names must be non-empty strings", key);
        }
        v = xrealloc(v, (cnt + 1) * sizeof *v);
        v[cnt] = (sbx_image_cap_t){xstrdup(scalar(k)), 0, 0};
        cnt++;
        if (parse_cap(y, scalar(k), val, &v[cnt - 1]) < 0) {
            caps_free(v, cnt);
            return -1;
        }
    }
    caps_free(y->cfg->per_image_caps, y->cfg->n_per_image_caps);
    y->cfg->per_image_caps = v;
    y->cfg->n_per_image_caps = cnt;
    return 0;
}

static int parse_listen(const char *s, char **host, int *port);

static int set_listen(yctx_t *y, const char *key, const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE ||
        parse_listen(scalar(n), &y->cfg->listen_host, &y->cfg->listen_port) < 0)
        return yfail(y, n, "'%s' must be a string \"ADDR:PORT\" with a port in 1..65535", key);
    return 0;
}

static int set_abs_path(yctx_t *y, const char *key, const yaml_node_t *n, char **out)
{
    if (n->type != YAML_SCALAR_NODE || scalar(n)[0] != '/')
        return yfail(y, n, "'%s' must be an absolute path", key);
    set_str(out, scalar(n));
    return 0;
}

static int set_prefix(yctx_t *y, const char *key, const yaml_node_t *n);

/* Applies one key of the sandbox configuration block. */
static int apply_key(yctx_t *y, const char *key, const yaml_node_t *k, const yaml_node_t *v)
{
    sbx_config_t *c = y->cfg;
#define IS(name) (!strcmp(key, name))
    if (IS("auto_install"))
        return get_bool(y, key, v, &c->auto_install);
    if (IS("cgroup_favor_dynmods"))
        return get_bool(y, key, v, &c->cgroup_favor_dynmods);
    if (IS("image_allowlist"))
        return set_strlist(y, key, v, &c->image_allowlist, &c->n_image_allowlist);
    if (IS("pool_images")) {
        c->pool_images_set = true;
        return set_strlist(y, key, v, &c->pool_images, &c->n_pool_images);
    }
    if (IS("pool_size"))
        return get_nonneg_int(y, key, v, &c->pool_size);
    if (IS("default_idle_timeout_secs"))
        return get_nonneg_int(y, key, v, &c->default_idle_timeout_secs);
    if (IS("max_concurrent_sandboxes"))
        return get_pos_int(y, key, v, &c->max_concurrent_sandboxes);
    if (IS("default_cpus"))
        return get_pos_number(y, key, v, &c->default_cpus);
    if (IS("default_memory_mb"))
        return get_pos_int(y, key, v, &c->default_memory_mb);
    if (IS("per_image_caps"))
        return set_caps(y, key, v);
    if (IS("custom_images"))
        return set_custom_images(y, key, v);
    if (IS("insecure_registries"))
        return set_registries(y, key, v);
    if (IS("registry_mirror"))
        return set_string(y, key, v, &c->registry_mirror);
    if (IS("registry_credentials_file"))
        return set_abs_path(y, key, v, &c->registry_credentials_file);
    if (IS("image_cache_budget_mb"))
        return get_nonneg_int(y, key, v, &c->image_cache_budget_mb);
    if (IS("listen"))
        return set_listen(y, key, v);
    if (IS("state_dir"))
        return set_abs_path(y, key, v, &c->state_dir);
    if (IS("api_prefix"))
        return set_prefix(y, key, v);
    if (IS("workspace_dir"))
        return set_abs_path(y, key, v, &c->workspace_dir);
    if (IS("max_cmd_timeout_secs"))
        return get_pos_int(y, key, v, &c->max_cmd_timeout_secs);
    if (IS("default_timeout_secs"))
        return get_pos_int(y, key, v, &c->default_timeout_secs);
    if (IS("default_disk_mb"))
        return get_pos_int(y, key, v, &c->default_disk_mb);
    if (IS("default_pids_max"))
        return get_pos_int(y, key, v, &c->default_pids_max);
    if (IS("stopped_retention_secs"))
        return get_nonneg_int(y, key, v, &c->stopped_retention_secs);
    if (IS("reaper_interval_secs"))
        return get_pos_int(y, key, v, &c->reaper_interval_secs);
    if (IS("max_exec_output_bytes"))
        return get_pos_int(y, key, v, &c->max_exec_output_bytes);
    if (IS("max_background_secs"))
        return get_pos_int(y, key, v, &c->max_background_secs);
    if (IS("log_quota_mb"))
        return get_pos_int(y, key, v, &c->log_quota_mb);
    if (IS("function_exec_concurrency"))
        return get_nonneg_int(y, key, v, &c->function_exec_concurrency);
    if (IS("queue_workers"))
        return get_pos_int(y, key, v, &c->queue_workers);
    if (IS("queue_retry_base_ms"))
        return get_nonneg_int(y, key, v, &c->queue_retry_base_ms);
#undef IS
    return yfail(y, k, "unknown key '%s'", key);
}

static int apply_block(yctx_t *y, const yaml_node_t *map, bool top);

/* `workers:` is the engine's list of workers; only the iii-sandbox entry concerns us, the
 * others belong to other workers of the same engine file. */
static int apply_workers(yctx_t *y, const yaml_node_t *seq)
{
    if (seq->type != YAML_SEQUENCE_NODE)
        return yfail(y, seq, "'workers' must be a list, not %s", node_kind(seq));
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
        yaml_node_t *w = yaml_document_get_node(y->doc, *it);
        if (!w || w->type != YAML_MAPPING_NODE)
            return yfail(y, w, "'workers' entries must be maps {name, config}");
        const yaml_node_t *name = NULL, *conf = NULL;
        for (yaml_node_pair_t *p = w->data.mapping.pairs.start; p < w->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE)
                continue;
            if (!strcmp(scalar(k), "name"))
                name = yaml_document_get_node(y->doc, p->value);
            else if (!strcmp(scalar(k), "config"))
                conf = yaml_document_get_node(y->doc, p->value);
        }
        if (!name || name->type != YAML_SCALAR_NODE || strcmp(scalar(name), WORKER_NAME))
            continue;
        if (!conf)
            continue;
        if (conf->type == YAML_SCALAR_NODE && !*scalar(conf))
            continue; /* `config:` with nothing under it */
        if (apply_block(y, conf, false) < 0)
            return -1;
    }
    return 0;
}

static int apply_block(yctx_t *y, const yaml_node_t *map, bool top)
{
    if (map->type != YAML_MAPPING_NODE)
        return yfail(y, map, "expected a map of settings, not %s", node_kind(map));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE)
            return yfail(y, k, "keys must be strings");
        int rc = top && !strcmp(scalar(k), "workers") ? apply_workers(y, v) : apply_key(y, scalar(k), k, v);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int sbx_config_apply_file(sbx_config_t *cfg, const char *path, sbx_err_t *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return sbx_fail(err, SBX_E_INVALID, NULL, "%s:0: cannot read config file: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int ret = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        char ctx[256] = "";
        if (parser.context)
            snprintf(ctx, sizeof ctx, " (%s at line %zu)", parser.context, parser.context_mark.line + 1);
        ret =
            sbx_fail(err, SBX_E_INVALID, NULL, "%s:%zu: YAML syntax error: %s%s", path,
                     parser.problem_mark.line + 1, parser.problem ? parser.problem : "unreadable file", ctx);
        yaml_parser_delete(&parser);
        fclose(f);
        return ret;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    /* An empty file (or one holding only comments) changes nothing. */
    if (root && !(root->type == YAML_SCALAR_NODE && !*scalar(root))) {
        yctx_t y = {path, &doc, cfg, err};
        ret = apply_block(&y, root, true);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return ret;
}

/* ---- values shared by file, env and flags ---- */

/* "ADDR:PORT", "[V6]:PORT", ":PORT" or "PORT".  An omitted address keeps the current one,
 * so `--listen 8080` stays on loopback unless an address was configured. */
static int parse_listen(const char *s, char **host, int *port)
{
    const char *colon = NULL, *addr = NULL;
    size_t addr_len = 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || close == s + 1)
            return -1;
        addr = s + 1;
        addr_len = (size_t)(close - s - 1);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon) {
            addr = s;
            addr_len = (size_t)(colon - s);
        }
    }
    const char *p = colon ? colon + 1 : s;
    int64_t v;
    if (sbx_parse_i64(p, &v) < 0 || v < 1 || v > 65535 || p[0] == '+' || p[0] == '-')
        return -1;
    if (addr && addr_len > 0) {
        free(*host);
        *host = xstrndup(addr, addr_len);
    }
    *port = (int)v;
    return 0;
}

/* Strips surrounding slashes: "/sandbox/" and "sandbox" are the same prefix.  Inner
 * slashes are allowed ("api/sandbox"); anything that would not be a clean path is not. */
static char *clean_prefix(const char *s)
{
    while (*s == '/')
        s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '_' || ch == '.' || (ch == '/' && s[i + 1] != '/');
        if (!ok)
            return NULL;
    }
    return xstrndup(s, n);
}

static int set_prefix(yctx_t *y, const char *key, const yaml_node_t *n)
{
    char *p = n->type == YAML_SCALAR_NODE ? clean_prefix(scalar(n)) : NULL;
    if (!p)
        return yfail(y, n, "'%s' must be a non-empty path segment such as \"sandbox\"", key);
    free(y->cfg->api_prefix);
    y->cfg->api_prefix = p;
    return 0;
}

/* ---- environment ---- */

static int env_bad(sbx_err_t *err, const char *name, const char *val, const char *want)
{
    return sbx_fail(err, SBX_E_INVALID, NULL, "environment variable %s=\"%s\": %s", name, val, want);
}

static int env_pos_int(const char *name, const char *val, int64_t *out, sbx_err_t *err)
{
    int64_t v;
    if (sbx_parse_i64(val, &v) < 0 || v <= 0)
        return env_bad(err, name, val, "expected a positive integer");
    *out = v;
    return 0;
}

static int env_allowed_images(sbx_config_t *cfg, const char *val, sbx_err_t *err)
{
    char **v = NULL;
    size_t cnt = 0;
    const char *p = val;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            _cleanup_free_ char *pat = xstrndup(a, (size_t)(b - a));
            char *star = strchr(pat, '*');
            if (star && star[1] != '\0') {
                strv_free(v, cnt);
                return env_bad(err, "III_ALLOWED_IMAGES", val,
                               "patterns are \"*\", \"prefix*\" or an exact name");
            }
            strv_push(&v, &cnt, pat);
        }
        p = *end ? end + 1 : end;
    }
    if (cnt == 0)
        return env_bad(err, "III_ALLOWED_IMAGES", val, "expected a comma-separated list of image patterns");
    strv_free(cfg->allowed_images, cfg->n_allowed_images);
    cfg->allowed_images = v;
    cfg->n_allowed_images = cnt;
    return 0;
}

static int apply_env_var(sbx_config_t *cfg, const char *name, const char *val, sbx_err_t *err)
{
#define IS(n) (!strcmp(name, n))
    if (IS("III_AUTH_TOKEN")) {
        set_str(&cfg->auth_token, *val ? val : NULL);
        return 0;
    }
    /* Elsewhere an empty value means "not set", as container runtimes often pass them. */
    if (!*val)
        return 0;
    if (IS("III_REST_PORT")) {
        int64_t v;
        if (sbx_parse_i64(val, &v) < 0 || v < 1 || v > 65535)
            return env_bad(err, name, val, "expected a port number 1..65535");
        cfg->listen_port = (int)v;
        return 0;
    }
    if (IS("III_API_PREFIX")) {
        char *p = clean_prefix(val);
        if (!p)
            return env_bad(err, name, val, "expected a path segment such as \"sandbox\"");
        free(cfg->api_prefix);
        cfg->api_prefix = p;
        return 0;
    }
    if (IS("III_MAX_SANDBOXES"))
        return env_pos_int(name, val, &cfg->max_concurrent_sandboxes, err);
    if (IS("III_DEFAULT_TIMEOUT"))
        return env_pos_int(name, val, &cfg->default_timeout_secs, err);
    if (IS("III_DEFAULT_MEMORY"))
        return env_pos_int(name, val, &cfg->default_memory_mb, err);
    if (IS("III_MAX_CMD_TIMEOUT"))
        return env_pos_int(name, val, &cfg->max_cmd_timeout_secs, err);
    if (IS("III_POOL_SIZE")) {
        int64_t n;
        if (sbx_parse_i64(val, &n) < 0 || n < 0 || n > 1000)
            return env_bad(err, name, val, "expected a whole number from 0 to 1000");
        cfg->pool_size = n;
        return 0;
    }
    if (IS("III_DEFAULT_CPU")) {
        double d;
        if (sbx_parse_double(val, &d) < 0 || !(d > 0))
            return env_bad(err, name, val, "expected a number greater than 0");
        cfg->default_cpus = d;
        return 0;
    }
    if (IS("III_ALLOWED_IMAGES"))
        return env_allowed_images(cfg, val, err);
    if (IS("III_WORKSPACE_DIR")) {
        if (val[0] != '/')
            return env_bad(err, name, val, "expected an absolute path");
        set_str(&cfg->workspace_dir, val);
        return 0;
    }
#undef IS
    return 0; /* the reference knows many more III_* settings; they do not apply here */
}

int sbx_config_apply_env(sbx_config_t *cfg, char **envp, sbx_err_t *err)
{
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, "III_", 4))
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        _cleanup_free_ char *name = xstrndup(*e, (size_t)(eq - *e));
        if (apply_env_var(cfg, name, eq + 1, err) < 0)
            return -1;
    }
    return 0;
}

/* ---- flags ---- */

static const char usage_text[] =
    "usage: sandboxd [--config FILE] [--listen ADDR:PORT] [--state-dir DIR] [--agent PATH] [--debug]\n"
    "\n"
    "  --config FILE       YAML configuration file (see docs/configuration.md)\n"
    "  --listen ADDR:PORT  address to serve HTTP on (also PORT or :PORT); default 127.0.0.1:3111\n"
    "  --state-dir DIR     state directory; default /var/lib/sandboxd\n"
    "  --agent PATH        sandbox-agent binary; default: next to sandboxd\n"
    "  --debug             debug logging\n"
    "  -h, --help          this help\n"
    "\n"
    "Environment (overrides the file, overridden by flags):\n"
    "  III_REST_PORT        port to listen on (3111)\n"
    "  III_API_PREFIX       path prefix of the REST API (sandbox)\n"
    "  III_AUTH_TOKEN       require \"Authorization: Bearer <token>\" (empty: off)\n"
    "  III_MAX_SANDBOXES    max concurrent sandboxes (32)\n"
    "  III_DEFAULT_TIMEOUT  sandbox TTL in seconds (3600)\n"
    "  III_DEFAULT_MEMORY   memory limit in MB (512)\n"
    "  III_DEFAULT_CPU      CPU limit in cores (1)\n"
    "  III_ALLOWED_IMAGES   comma-separated image patterns: *, prefix*, name (*)\n"
    "  III_WORKSPACE_DIR    working directory inside sandboxes (/workspace)\n"
    "  III_MAX_CMD_TIMEOUT  max command timeout in seconds (300)\n"
    "  III_POOL_SIZE        warm sandboxes kept ready per pooled image (0)\n";

typedef struct {
    const char *config, *listen, *state_dir, *agent;
    bool debug, help;
} flags_t;

/* Splits "--name=value" and "--name value"; *i advances past a consumed value. */
static int flag_value(int argc, char **argv, int *i, const char *name, const char **out, sbx_err_t *err)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (a[n] == '=') {
        *out = a + n + 1;
    } else if (*i + 1 < argc) {
        *out = argv[++*i];
    } else {
        return sbx_fail(err, SBX_E_INVALID, NULL, "option %s needs a value", name);
    }
    if (!**out)
        return sbx_fail(err, SBX_E_INVALID, NULL, "option %s needs a non-empty value", name);
    return 0;
}

static bool flag_is(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_flags(int argc, char **argv, flags_t *f, sbx_err_t *err)
{
    memset(f, 0, sizeof *f);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            f->help = true;
        else if (!strcmp(a, "--debug"))
            f->debug = true;
        else if (flag_is(a, "--config"))
            rc = flag_value(argc, argv, &i, "--config", &f->config, err);
        else if (flag_is(a, "--listen"))
            rc = flag_value(argc, argv, &i, "--listen", &f->listen, err);
        else if (flag_is(a, "--state-dir"))
            rc = flag_value(argc, argv, &i, "--state-dir", &f->state_dir, err);
        else if (flag_is(a, "--agent"))
            rc = flag_value(argc, argv, &i, "--agent", &f->agent, err);
        else if (a[0] == '-')
            rc = sbx_fail(err, SBX_E_INVALID, NULL, "unknown option '%s' (see --help)", a);
        else
            rc = sbx_fail(err, SBX_E_INVALID, NULL, "unexpected argument '%s' (see --help)", a);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Relative paths from the command line are taken against the current directory now,
 * since the daemon may change directory later. */
static char *absolute(const char *p)
{
    if (p[0] == '/')
        return xstrdup(p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return xstrdup(p);
    return xasprintf("%s/%s", cwd, p);
}

static void strip_trailing_slashes(char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
}

/* Derives settings that depend on others once every layer is applied. */
static void finalize(sbx_config_t *cfg)
{
    strip_trailing_slashes(cfg->state_dir);
    free(cfg->run_dir);
    /* Two daemons with different state directories must never share sockets. */
    if (!strcmp(cfg->state_dir, DEFAULT_STATE_DIR))
        cfg->run_dir = xstrdup(DEFAULT_RUN_DIR);
    else
        cfg->run_dir = xasprintf("%s/run", cfg->state_dir);
}

static int load_layers(sbx_config_t *cfg, int argc, char **argv, char **envp, sbx_err_t *err)
{
    flags_t f;
    sbx_config_defaults(cfg);
    if (parse_flags(argc, argv, &f, err) < 0)
        return -1;
    if (f.help) {
        fputs(usage_text, stdout);
        fflush(stdout);
        return 1;
    }
    if (f.config) {
        cfg->config_file = absolute(f.config);
        if (sbx_config_apply_file(cfg, f.config, err) < 0)
            return -1;
    }
    if (sbx_config_apply_env(cfg, envp, err) < 0)
        return -1;
    if (f.listen && parse_listen(f.listen, &cfg->listen_host, &cfg->listen_port) < 0)
        return sbx_fail(err, SBX_E_INVALID, NULL,
                        "option --listen '%s': expected ADDR:PORT, :PORT or PORT with a port in 1..65535",
                        f.listen);
    if (f.state_dir) {
        free(cfg->state_dir);
        cfg->state_dir = absolute(f.state_dir);
    }
    if (f.agent) {
        free(cfg->agent_path);
        cfg->agent_path = absolute(f.agent);
    }
    if (f.debug)
        cfg->debug = true;
    finalize(cfg);
    return 0;
}

int sbx_config_load(sbx_config_t *cfg, int argc, char **argv, char **envp, sbx_err_t *err)
{
    int rc = load_layers(cfg, argc, argv, envp, err);
    /* Nothing is left to release when there is no configuration to run with. */
    if (rc != 0)
        sbx_config_release(cfg);
    return rc;
}

/* ---- lookups ---- */

const sbx_custom_image_t *sbx_config_custom_image(const sbx_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_custom_images; i++)
        if (!strcmp(cfg->custom_images[i].name, name))
            return &cfg->custom_images[i];
    return NULL;
}

const sbx_image_cap_t *sbx_config_image_cap(const sbx_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_per_image_caps; i++)
        if (!strcmp(cfg->per_image_caps[i].name, name))
            return &cfg->per_image_caps[i];
    return NULL;
}

void sbx_config_registry_opts(const sbx_config_t *cfg, sbx_registry_opts_t *out)
{
    memset(out, 0, sizeof *out);
    out->insecure = cfg->insecure_registries;
    out->n_insecure = cfg->n_insecure_registries;
    out->mirror = cfg->registry_mirror;
    out->credentials_file = cfg->registry_credentials_file;
    out->cache_budget_bytes = (uint64_t)cfg->image_cache_budget_mb << 20;
}

static bool pattern_match(const char *pat, const char *name)
{
    size_t n = strlen(pat);
    if (n > 0 && pat[n - 1] == '*')
        return !strncmp(pat, name, n - 1);
    return !strcmp(pat, name);
}

bool sbx_config_image_allowed(const sbx_config_t *cfg, const char *name)
{
    if (!name || !*name)
        return false;
    bool listed = false;
    for (size_t i = 0; i < cfg->n_image_allowlist && !listed; i++)
        listed = !strcmp(cfg->image_allowlist[i], name);
    if (!listed)
        return false;
    for (size_t i = 0; i < cfg->n_allowed_images; i++)
        if (pattern_match(cfg->allowed_images[i], name))
            return true;
    return false;
}
