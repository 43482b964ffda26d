/* The function dialect over HTTP: `POST /functions/<function_id>` runs one of the guide's
 * `sandbox::*` functions (spec/sandbox-guide.txt, spec/sandbox-functions.txt).  The body is
 * the function's payload, the answer its result, or the guide's error envelope
 * `handler error: {"type":...,"code":...,"message":...}` with an S-code.
 *
 * Handlers render their own failures (status + envelope) instead of handing the error back
 * to server.c, whose renderer speaks the /sandbox shape.  Payload keys a function does not
 * know are ignored, as the engine's functions do. */
#include "api/server.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/exec_req.h"
#include "api/file_stream.h"
#include "api/params.h"
#include "common/base64.h"
#include "common/util.h"
#include "core/files.h"
#include "proto/proto.h"

/* The guide's exec default when the payload has no timeout_ms. */
#define FN_DEFAULT_EXEC_TIMEOUT_MS 30000

/* The S-code of an error; errors raised without one get the guide's code of the same
 * meaning, and only our own failures keep a non-S code ("INTERNAL"). */
static const char *fn_error_code(const sbx_err_t *err)
{
    if (err->code[0] == 'S')
        return err->code;
    switch (err->kind) {
    case SBX_E_INVALID:
    case SBX_E_TOO_LARGE: return "S001";
    case SBX_E_NOT_FOUND: return "S002";
    case SBX_E_CONFLICT: return "S004";
    case SBX_E_FORBIDDEN: return "S100";
    case SBX_E_LIMIT: return "S400";
    case SBX_E_TIMEOUT: return "S200";
    case SBX_E_UNAVAILABLE: return "UNAVAILABLE";
    default: return "INTERNAL";
    }
}

/* HTTP status of a function failure: the S-code decides where it has a clear meaning
 * (S003, a busy sandbox, is a conflict whatever kind core gave it), else the error kind. */
static int fn_status(const sbx_err_t *err, const char *code)
{
    if (!strcmp(code, "S001"))
        return 400;
    if (!strcmp(code, "S002"))
        return 404;
    if (!strcmp(code, "S003") || !strcmp(code, "S004"))
        return 409;
    if (!strcmp(code, "S100"))
        return 403;
    if (!strcmp(code, "S101") || !strcmp(code, "S102") || !strcmp(code, "S300"))
        return 503;
    if (!strcmp(code, "S200"))
        return 504;
    static const struct {
        const char *code;
        int status;
    } fs_status[] = {
        {"S201", 404}, {"S202", 400}, {"S203", 403}, {"S204", 413}, {"S205", 400}, {"S206", 409},
    };
    for (size_t i = 0; i < SBX_ARRAY_LEN(fs_status); i++)
        if (!strcmp(code, fs_status[i].code))
            return fs_status[i].status;
    return sbx_api_status_for(err);
}

/* Renders a failure as the guide's envelope: `error` holds the exact string a function
 * caller sees ("handler error: {...}"), the other fields are the same envelope parsed.
 * `extra` (owned, may be NULL) adds fields such as an exec's partial output. */
static void fn_fail(sbx_http_resp_t *resp, const sbx_err_t *err, json_t *extra)
{
    const char *code = fn_error_code(err);
    const char *type = sbx_api_error_type(err);
    json_t *env = json_pack("{s:s, s:s, s:s}", "type", type, "code", code, "message", err->msg);
    char *text = json_dumps(env, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(env);
    char *wrapped = xasprintf("handler error: %s", text ? text : "{}");
    free(text);
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s}", "error", wrapped, "type", type, "code", code, "message", err->msg);
    free(wrapped);
    if (extra) {
        json_object_update_missing(body, extra);
        json_decref(extra);
    }
    json_decref(resp->json);
    resp->json = body;
    resp->status = fn_status(err, code);
    int status = resp->status;
    if (status >= 500 && status != 503 && status != 504)
        log_error("function failed: %s", err->msg);
}

/* Ids are "sbx_" and 24 lowercase hex digits (see sbx_new_id). */
static bool valid_sandbox_id(const char *id)
{
    if (strncmp(id, "sbx_", 4) != 0 || strlen(id) != 28)
        return false;
    for (const char *p = id + 4; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* The required sandbox_id of a payload, checked for shape before any lookup (S001). */
static int get_sandbox_id(json_t *p, const char **id, sbx_err_t *err)
{
    int r = sbx_param_str(p, "sandbox_id", id, err);
    if (r < 0)
        return -1;
    if (r == 0 || !**id)
        return sbx_fail(err, SBX_E_INVALID, "S001", "sandbox_id is required");
    if (!valid_sandbox_id(*id))
        return sbx_fail(err, SBX_E_INVALID, "S001", "bad sandbox id: %.100s", *id);
    return 0;
}

/* The guide takes env only as a list of "KEY=VALUE" strings; an entry without '=' is a
 * malformed request (S001). */
static int get_env_list(json_t *p, char ***env, size_t *n, sbx_err_t *err)
{
    json_t *v = json_object_get(p, "env");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return sbx_fail(err, SBX_E_INVALID, "S001", "env must be a list of \"KEY=VALUE\" strings");
    return sbx_param_env(p, "env", env, n, err);
}

static int fn_create(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_create_req_t c = {0};
    char **env = NULL;
    size_t n_env = 0;
    int rc = -1, r;

    if (sbx_param_str(p, "image", &c.image, err) < 0 || sbx_param_str(p, "name", &c.name, err) < 0)
        goto out;
    if (!c.image || !*c.image) {
        sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
        goto out;
    }
    if ((r = sbx_param_num(p, "cpus", 0.01, 1024, &c.cpus, err)) < 0)
        goto out;
    c.has_cpus = r;
    if ((r = sbx_param_int(p, "memory_mb", 1, 1048576, &c.memory_mb, err)) < 0)
        goto out;
    c.has_memory = r;
    if ((r = sbx_param_int(p, "idle_timeout_secs", 0, 30LL * 86400, &c.idle_timeout_secs, err)) < 0)
        goto out;
    c.has_idle_timeout = r;
    if (sbx_param_bool(p, "network", &c.network, err) < 0 || get_env_list(p, &env, &n_env, err) < 0)
        goto out;
    c.env = env;
    c.n_env = n_env;

    sbx_sandbox_rec_t rec = {0};
    if (sbx_core_create(sbx_api_core(api), &c, &rec, err) < 0)
        goto out;
    resp->json = json_pack("{s:s, s:s}", "sandbox_id", rec.id, "image", rec.image);
    if (rec.name)
        json_object_set_new(resp->json, "name", json_string(rec.name));
    sbx_sandbox_rec_release(&rec);
    rc = 0;
out:
    sbx_strv_free(env);
    return rc;
}

/* A cmd is one binary: whitespace means the caller wrote a shell line. */
static int check_cmd(json_t *p, const char *cmd, sbx_err_t *err)
{
    if (!*cmd)
        return sbx_fail(err, SBX_E_INVALID, "S001", "cmd is required");
    if (strlen(cmd) != json_string_length(json_object_get(p, "cmd")))
        return sbx_fail(err, SBX_E_INVALID, "S001", "cmd must not contain NUL bytes");
    for (const char *c = cmd; *c; c++)
        if (isspace((unsigned char)*c))
            return sbx_fail(err, SBX_E_INVALID, "S001",
                            "cmd must be a single binary without whitespace: put its arguments in args "
                            "(got '%.200s')",
                            cmd);
    return 0;
}

static int fn_exec(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const sbx_config_t *cfg = sbx_core_config(sbx_api_core(api));
    const char *id = NULL, *cmd = NULL, *workdir = NULL, *stdin_b64 = NULL;
    char **args = NULL, **argv = NULL, **env = NULL;
    size_t nargs = 0, n_env = 0, stdin_len = 0;
    unsigned char *stdin_data = NULL;
    int64_t timeout_ms = FN_DEFAULT_EXEC_TIMEOUT_MS;
    int rc = -1;

    if (get_sandbox_id(p, &id, err) < 0 || sbx_param_str(p, "cmd", &cmd, err) < 0)
        goto out;
    if (!cmd) {
        sbx_fail(err, SBX_E_INVALID, "S001", "cmd is required");
        goto out;
    }
    if (check_cmd(p, cmd, err) < 0 || sbx_param_strv(p, "args", &args, &nargs, err) < 0 ||
        get_env_list(p, &env, &n_env, err) < 0 || sbx_param_str(p, "workdir", &workdir, err) < 0 ||
        sbx_param_str(p, "stdin", &stdin_b64, err) < 0 ||
        sbx_param_int(p, "timeout_ms", 0, INT64_MAX / 2, &timeout_ms, err) < 0)
        goto out;
    if (stdin_b64) {
        stdin_data = sbx_base64_decode(stdin_b64, strlen(stdin_b64), &stdin_len);
        if (!stdin_data) {
            sbx_fail(err, SBX_E_INVALID, "S001", "stdin must be base64");
            goto out;
        }
    }
    /* 0 asks for no budget of its own: the daemon's cap is the only limit. */
    int64_t cap_ms = cfg->max_cmd_timeout_secs * 1000;
    if (timeout_ms == 0 || timeout_ms > cap_ms)
        timeout_ms = cap_ms;
    argv = xcalloc(nargs + 2, sizeof(char *));
    argv[0] = xstrdup(cmd);
    for (size_t i = 0; i < nargs; i++)
        argv[i + 1] = xstrdup(args[i]);

    sbx_exec_params_t ep = {
        .argv = argv,
        .env = env,
        .n_env = n_env,
        .cwd = workdir,
        .stdin_data = stdin_data,
        .stdin_len = stdin_len,
        .timeout_ms = timeout_ms,
        .max_concurrent = (int)cfg->function_exec_concurrency,
        .max_output = (size_t)cfg->max_exec_output_bytes,
    };
    sbx_exec_result_t res;
    if (sbx_core_exec(sbx_api_core(api), id, &ep, &res, err) < 0) {
        if (err->kind == SBX_E_TIMEOUT || !strcmp(err->code, "S200"))
            fn_fail(resp, err, json_pack("{s:b}", "timed_out", 1));
        goto out;
    }
    json_t *j = sbx_api_exec_result_json(&res);
    sbx_exec_result_release(&res);
    if (json_is_true(json_object_get(j, "timed_out"))) {
        /* The guide's error handling makes a timeout the S200 error; the output produced
         * before the kill travels along in the envelope's extra fields. */
        sbx_fail(err, SBX_E_TIMEOUT, "S200", "exec timed out after %lldms", (long long)timeout_ms);
        fn_fail(resp, err, j);
        goto out;
    }
    resp->json = j;
    rc = 0;
out:
    sbx_strv_free(args);
    sbx_strv_free(argv);
    sbx_strv_free(env);
    free(stdin_data);
    return rc;
}

static int fn_list(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    sbx_sandbox_rec_t *recs = NULL;
    size_t n = 0;
    if (sbx_core_list(core, &recs, &n, err) < 0)
        return -1;
    int64_t now = sbx_now_ms();
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) {
        const sbx_sandbox_rec_t *r = &recs[i];
        bool running = !strcmp(r->status, "running");
        json_t *s = json_pack("{s:s}", "sandbox_id", r->id);
        if (r->name)
            json_object_set_new(s, "name", json_string(r->name));
        json_object_set_new(s, "image", json_string(r->image));
        json_object_set_new(s, "age_secs", json_integer((now - r->created_at) / 1000));
        json_object_set_new(s, "exec_in_progress",
                            json_boolean(running && sbx_core_execs_in_flight(core, r->id) > 0));
        json_object_set_new(s, "stopped", json_boolean(!running && strcmp(r->status, "creating") != 0));
        json_array_append_new(items, s);
    }
    sbx_sandbox_recs_free(recs, n);
    resp->json = json_pack("{s:o}", "sandboxes", items);
    return 0;
}

static int fn_stop(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    const char *id = NULL;
    bool wait = false;
    if (get_sandbox_id(p, &id, err) < 0 || sbx_param_bool(p, "wait", &wait, err) < 0)
        return -1;
    if (!wait) {
        /* Unknown ids still answer S002 at once; the stop itself runs in the background. */
        if (sbx_core_delete_async(core, id, err) < 0)
            return -1;
        resp->json = json_pack("{s:s, s:b}", "sandbox_id", id, "stopped", 0);
        return 0;
    }
    if (sbx_core_delete(core, id, err) < 0)
        return -1;
    resp->json = json_pack("{s:s, s:b}", "sandbox_id", id, "stopped", 1);
    return 0;
}

/* File operations (sandbox::fs::*).  Each runs inside the sandbox through its agent
 * (core/files.h); this layer only reads payloads, picks flags and renders. */

/* The S2xx code of a file error the agent reported (docs/api.md, "File errors").  Errors
 * that already carry an S-code (S002 unknown sandbox, S004 stopped, S001 bad payload)
 * keep it. */
static const char *fs_code_for(const sbx_err_t *err)
{
    switch (err->errnum) {
    case ENOENT: return "S201";
    case EISDIR:
    case ENOTDIR: return "S202";
    case EACCES:
    case EPERM:
    case EROFS: return "S203";
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return "S204";
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP: return "S205";
    case EEXIST:
    case ENOTEMPTY:
    case EBUSY: return "S206";
    default: break;
    }
    switch (err->kind) {
    case SBX_E_NOT_FOUND: return "S201";
    case SBX_E_FORBIDDEN: return "S203";
    case SBX_E_TOO_LARGE: return "S204";
    case SBX_E_INVALID: return "S205";
    case SBX_E_CONFLICT: return "S206";
    default: return NULL;
    }
}

/* Gives a core file error its S2xx code; returns -1 for the handler to pass on. */
static int fs_error(sbx_err_t *err)
{
    if (err->code[0] == 'S')
        return -1;
    const char *code = fs_code_for(err);
    if (code)
        snprintf(err->code, sizeof err->code, "%s", code);
    return -1;
}

/* The required `path` (or another path field) of a payload: a non-empty string without
 * NUL bytes. */
static int get_path(json_t *p, const char *key, const char **out, sbx_err_t *err)
{
    int r = sbx_param_str(p, key, out, err);
    if (r < 0)
        return -1;
    if (r == 0 || !**out)
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s is required", key);
    if (strlen(*out) != json_string_length(json_object_get(p, key)))
        return sbx_fail(err, SBX_E_INVALID, "S205", "%s must not contain NUL bytes", key);
    return 0;
}

/* Adds `flag` to *flags when the boolean field `key` is true (default `def`). */
static int get_flag(json_t *p, const char *key, bool def, unsigned flag, unsigned *flags, sbx_err_t *err)
{
    bool v = def;
    if (sbx_param_bool(p, key, &v, err) < 0)
        return -1;
    if (v)
        *flags |= flag;
    return 0;
}

/* Runs one non-streaming operation and answers the agent's result as the function's. */
static int fs_run(sbx_api_t *api, const char *id, const sbx_fs_req_t *req, sbx_http_resp_t *resp,
                  sbx_err_t *err)
{
    json_t *result = NULL;
    if (sbx_core_fs(sbx_api_core(api), id, req, &result, err) < 0)
        return fs_error(err);
    resp->json =
        json_is_object(result) ? result : json_pack("{s:o}", "result", result ? result : json_null());
    return 0;
}

static int fn_fs_ls(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    sbx_fs_req_t r = {.op = "ls", .path = ".", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || sbx_param_str(p, "path", &r.path, err) < 0 ||
        get_flag(p, "recursive", false, SBX_FS_RECURSIVE, &r.flags, err) < 0 ||
        sbx_param_int(p, "limit", 0, INT32_MAX, &r.limit, err) < 0)
        return -1;
    if (!*r.path)
        r.path = ".";
    return fs_run(api, id, &r, resp, err);
}

static int fn_fs_stat(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    sbx_fs_req_t r = {.op = "stat", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || get_path(p, "path", &r.path, err) < 0)
        return -1;
    return fs_run(api, id, &r, resp, err);
}

static int fn_fs_mkdir(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    sbx_fs_req_t r = {.op = "mkdir", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || get_path(p, "path", &r.path, err) < 0 ||
        get_flag(p, "parents", false, SBX_FS_PARENTS, &r.flags, err) < 0 ||
        sbx_param_mode(p, "mode", &r.mode, err) < 0)
        return -1;
    return fs_run(api, id, &r, resp, err);
}

static int fn_fs_mv(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    bool overwrite = true;
    sbx_fs_req_t r = {.op = "mv", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || get_path(p, "from", &r.path, err) < 0 ||
        get_path(p, "to", &r.path2, err) < 0 || sbx_param_bool(p, "overwrite", &overwrite, err) < 0)
        return -1;
    if (!overwrite)
        r.flags |= SBX_FS_NO_CLOBBER;
    return fs_run(api, id, &r, resp, err);
}

static int fn_fs_rm(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    sbx_fs_req_t r = {.op = "rm", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || get_path(p, "path", &r.path, err) < 0 ||
        get_flag(p, "recursive", false, SBX_FS_RECURSIVE, &r.flags, err) < 0 ||
        get_flag(p, "force", false, SBX_FS_FORCE, &r.flags, err) < 0)
        return -1;
    return fs_run(api, id, &r, resp, err);
}

/* chmod takes the mode as the agent does: octal digits or symbolic ("u+x,go-w"); a JSON
 * integer is taken as the mode's value (493 = 0755). */
static int fn_fs_chmod(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    char buf[16];
    sbx_fs_req_t r = {.op = "chmod", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || get_path(p, "path", &r.path, err) < 0 ||
        get_flag(p, "recursive", false, SBX_FS_RECURSIVE, &r.flags, err) < 0)
        return -1;
    json_t *m = json_object_get(p, "mode");
    if (json_is_integer(m) && json_integer_value(m) >= 0 && json_integer_value(m) <= 07777) {
        snprintf(buf, sizeof buf, "%04llo", (unsigned long long)json_integer_value(m));
        r.text = buf;
    } else if (json_is_string(m) && *json_string_value(m)) {
        r.text = json_string_value(m);
    } else {
        return sbx_fail(err, SBX_E_INVALID, "S001",
                        "mode is required: octal digits (\"0755\") or symbolic (\"u+x,go-w\")");
    }
    return fs_run(api, id, &r, resp, err);
}

/* The pattern options shared by grep and sed: `regex` (POSIX extended) or a literal
 * string, and `ignore_case`.  A directory is always searched whole, subdirectories
 * included (the agent walks it without following symlinks). */
static int get_pattern(json_t *p, sbx_fs_req_t *r, sbx_err_t *err)
{
    r->flags |= SBX_FS_RECURSIVE;
    if (get_path(p, "pattern", &r->text, err) < 0 ||
        get_flag(p, "regex", false, SBX_FS_REGEX, &r->flags, err) < 0 ||
        get_flag(p, "ignore_case", false, SBX_FS_ICASE, &r->flags, err) < 0 ||
        sbx_param_int(p, "limit", 0, INT32_MAX, &r->limit, err) < 0)
        return -1;
    if (!r->path || !*r->path)
        r->path = ".";
    return 0;
}

static int fn_fs_grep(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    sbx_fs_req_t r = {.op = "grep", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || sbx_param_str(p, "path", &r.path, err) < 0 ||
        get_pattern(p, &r, err) < 0)
        return -1;
    return fs_run(api, id, &r, resp, err);
}

static int fn_fs_sed(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id;
    sbx_fs_req_t r = {.op = "sed", .mode = -1};
    if (get_sandbox_id(p, &id, err) < 0 || sbx_param_str(p, "path", &r.path, err) < 0 ||
        get_pattern(p, &r, err) < 0 || sbx_param_str(p, "replacement", &r.text2, err) < 0)
        return -1;
    if (!r.text2)
        return sbx_fail(err, SBX_E_INVALID, "S001", "replacement is required (it may be empty)");
    return fs_run(api, id, &r, resp, err);
}

static int fn_fs_read(sbx_api_t *api, json_t *p, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *id, *path;
    int64_t offset = 0, length = -1;
    if (get_sandbox_id(p, &id, err) < 0 || get_path(p, "path", &path, err) < 0 ||
        sbx_param_int(p, "offset", 0, INT64_MAX, &offset, err) < 0 ||
        sbx_param_int(p, "length", -1, INT64_MAX, &length, err) < 0)
        return -1;
    json_t *meta = NULL;
    sbx_fs_reader_t *reader = sbx_core_fs_read_open(sbx_api_core(api), id, path, offset, length, &meta, err);
    if (!reader)
        return fs_error(err);
    sbx_api_respond_file(resp, reader, meta);
    json_decref(meta);
    return 0;
}

/* fs::write takes the file's content as the raw request body, streamed to the agent as it
 * arrives; its options come from the query string (docs/api.md).  Failures are answered
 * in the guide's envelope, which server.c's early error path cannot render: a failure to
 * open the target is remembered, the body is drained without being sent anywhere, and
 * finish answers the envelope. */
typedef struct {
    sbx_fs_writer_t *writer;
    bool failed;
    sbx_err_t err;
} fs_upload_t;

static int fs_write_begin(sbx_api_t *api, sbx_http_req_t *req, void **state, sbx_err_t *err)
{
    fs_upload_t *u = xcalloc(1, sizeof *u);
    *state = u;
    json_t *q = req->query;
    const char *id, *path;
    sbx_fs_write_opts_t o = {.mode = -1, .uid = -1, .gid = -1};
    if (get_sandbox_id(q, &id, &u->err) < 0 || get_path(q, "path", &path, &u->err) < 0 ||
        sbx_param_mode(q, "mode", &o.mode, &u->err) < 0 ||
        get_flag(q, "append", false, SBX_FS_APPEND, &o.flags, &u->err) < 0 ||
        get_flag(q, "parents", false, SBX_FS_PARENTS, &o.flags, &u->err) < 0 ||
        get_flag(q, "exclusive", false, SBX_FS_EXCLUSIVE, &o.flags, &u->err) < 0) {
        u->failed = true;
        return 0;
    }
    u->writer = sbx_core_fs_write_open(sbx_api_core(api), id, path, &o, &u->err);
    if (!u->writer) {
        fs_error(&u->err);
        u->failed = true;
    }
    return 0;
}

static int fs_write_chunk(void *state, const char *data, size_t len, sbx_err_t *err)
{
    fs_upload_t *u = state;
    if (u->failed)
        return 0;
    if (sbx_core_fs_write(u->writer, data, len, &u->err) < 0) {
        fs_error(&u->err);
        sbx_core_fs_write_abort(u->writer);
        u->writer = NULL;
        u->failed = true;
    }
    return 0;
}

static int fs_write_finish(void *state, sbx_http_resp_t *resp, sbx_err_t *err)
{
    fs_upload_t *u = state;
    json_t *result = NULL;
    if (!u->failed && sbx_core_fs_write_finish(steal_pointer(&u->writer), &result, &u->err) < 0) {
        fs_error(&u->err);
        u->failed = true;
    }
    if (u->failed)
        fn_fail(resp, &u->err, NULL);
    else
        resp->json = result ? result : json_object();
    free(u);
    return 0;
}

static void fs_write_abort(void *state)
{
    fs_upload_t *u = state;
    if (u->writer)
        sbx_core_fs_write_abort(u->writer);
    free(u);
}

static const sbx_upload_ops_t fs_write_ops = {fs_write_begin, fs_write_chunk, fs_write_finish,
                                              fs_write_abort};

typedef int (*fn_handler_t)(sbx_api_t *api, json_t *payload, sbx_http_resp_t *resp, sbx_err_t *err);

static const struct {
    const char *id;
    fn_handler_t fn;
} functions[] = {
    {"sandbox::create", fn_create},      {"sandbox::exec", fn_exec},        {"sandbox::list", fn_list},
    {"sandbox::stop", fn_stop},          {"sandbox::fs::ls", fn_fs_ls},     {"sandbox::fs::stat", fn_fs_stat},
    {"sandbox::fs::mkdir", fn_fs_mkdir}, {"sandbox::fs::mv", fn_fs_mv},     {"sandbox::fs::rm", fn_fs_rm},
    {"sandbox::fs::chmod", fn_fs_chmod}, {"sandbox::fs::grep", fn_fs_grep}, {"sandbox::fs::sed", fn_fs_sed},
    {"sandbox::fs::read", fn_fs_read},
};

static int h_function(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *name = req->path_params[0];
    fn_handler_t fn = NULL;
    for (size_t i = 0; i < SBX_ARRAY_LEN(functions); i++)
        if (!strcmp(functions[i].id, name))
            fn = functions[i].fn;
    if (!fn) {
        /* A malformed call (S001, validation), answered as a missing resource. */
        sbx_fail(err, SBX_E_NOT_FOUND, "S001", "function not found: %.200s", name);
        fn_fail(resp, err, NULL);
        resp->status = 404;
        return 0;
    }
    /* The payload is the body alone: query arguments and path parameters are not part of
     * a function call. */
    json_t *payload = req->body_json ? json_incref(req->body_json) : json_object();
    int rc = fn(api, payload, resp, err);
    json_decref(payload);
    if (rc < 0 && resp->status < 400)
        fn_fail(resp, err, NULL);
    return 0;
}

static const sbx_route_t sbx_fn_routes[] = {
    /* Before the generic route, which would otherwise buffer the body as JSON. */
    {"POST", "/functions/sandbox::fs::write", NULL, false, SBX_DIALECT_REST, &fs_write_ops},
    {"POST", "/functions/:fn", h_function, false, SBX_DIALECT_REST},
};
const sbx_route_table_t sbx_fn_table = {sbx_fn_routes, SBX_ARRAY_LEN(sbx_fn_routes)};
