/* Files on the `/sandbox` surface (rest-wire.md §7.3) plus raw streaming routes.
 *
 * The JSON routes keep the reference's names and shapes and also take what SDK clients
 * send (§10 items 12 and 14: `path` where the reference wants `paths[]`).  Paths are
 * interpreted inside the sandbox by its agent (relative ones under the workspace), so
 * there is no traversal check here: `..` and symlinks cannot leave the sandbox.  Errors
 * are 4xx with the errno's name as code (docs/api.md, "Files").
 *
 *   GET /{prefix}/sandboxes/:id/files/raw?path=    the bytes, chunked, constant memory
 *   PUT /{prefix}/sandboxes/:id/files/raw?path=    the body streamed into the file */
#include "api/server.h"

#include <stdio.h>
#include <string.h>

#include "api/file_stream.h"
#include "api/params.h"
#include "common/base64.h"
#include "common/util.h"
#include "core/files.h"
#include "proto/proto.h"

/* Largest file files/read returns as text, and files/download as base64. */
#define READ_MAX (10u << 20)
#define DOWNLOAD_MAX (48u << 20)

static const char *workspace(sbx_api_t *api)
{
    const char *w = sbx_core_config(sbx_api_core(api))->workspace_dir;
    return w && *w ? w : "/workspace";
}

/* The first of `keys` present as a string.  Returns 1, 0 when none is, -1 on a bad type. */
static int param_path(json_t *p, const char *const *keys, const char **out, sbx_err_t *err)
{
    for (; *keys; keys++) {
        int r = sbx_param_str(p, *keys, out, err);
        if (r != 0)
            return r;
    }
    return 0;
}

static int require_path(json_t *p, const char **out, sbx_err_t *err)
{
    static const char *const keys[] = {"path", "file", NULL};
    int r = param_path(p, keys, out, err);
    if (r < 0)
        return -1;
    if (r == 0 || !**out)
        return sbx_fail(err, SBX_E_INVALID, "S001", "path is required");
    return 0;
}

/* `path` or `paths[]` into a NULL-terminated vector (caller frees with sbx_strv_free). */
static int path_list(json_t *p, char ***out, size_t *n, bool *plural, sbx_err_t *err)
{
    *out = NULL;
    *n = 0;
    *plural = json_object_get(p, "paths") != NULL;
    if (*plural) {
        if (sbx_param_strv(p, "paths", out, n, err) < 0)
            return -1;
        if (*n == 0) {
            sbx_strv_free(*out);
            *out = NULL;
            return sbx_fail(err, SBX_E_INVALID, "S001", "paths must not be empty");
        }
        for (size_t i = 0; i < *n; i++) {
            if (!(*out)[i][0]) {
                sbx_strv_free(*out);
                *out = NULL;
                return sbx_fail(err, SBX_E_INVALID, "S001", "paths must not contain an empty path");
            }
        }
        return 0;
    }
    const char *path;
    if (require_path(p, &path, err) < 0)
        return -1;
    *out = xcalloc(2, sizeof(char *));
    (*out)[0] = xstrdup(path);
    *n = 1;
    return 0;
}

static int simple_op(sbx_api_t *api, sbx_http_req_t *req, sbx_fs_req_t *fr, json_t **result, sbx_err_t *err)
{
    json_t *res = NULL;
    int rc = sbx_core_fs(sbx_api_core(api), req->path_params[0], fr, &res, err);
    if (result && rc == 0)
        *result = res;
    else
        json_decref(res);
    return rc;
}

static json_t *success(void)
{
    return json_pack("{s:b}", "success", 1);
}

/* ---- stat objects as the reference shapes them ---- */

static int64_t stat_int(json_t *st, const char *key)
{
    json_t *v = json_object_get(st, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    return 0;
}

static const char *stat_str(json_t *st, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(st, key));
    return s ? s : dflt;
}

/* The agent gives mtime in ms, as the reference's modifiedAt. */
static int64_t mtime_ms(json_t *st)
{
    return stat_int(st, "mtime");
}

/* `ls -l` permissions ("-rw-r--r--"), unless the agent already sent them that way. */
static json_t *ls_permissions(json_t *st)
{
    const char *given = stat_str(st, "permissions", NULL);
    if (given && strlen(given) == 10 && strchr("-dlcbps?", given[0]))
        return json_string(given);
    const char *type = stat_str(st, "type", "file");
    int64_t m = stat_int(st, "mode");
    char s[11];
    s[0] = !strcmp(type, "directory") ? 'd'
           : !strcmp(type, "symlink") ? 'l'
           : !strcmp(type, "file")    ? '-'
                                      : '?';
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        s[1 + i] = (m & (0400 >> i)) ? rwx[i] : '-';
    if (m & 04000)
        s[3] = (m & 0100) ? 's' : 'S';
    if (m & 02000)
        s[6] = (m & 010) ? 's' : 'S';
    if (m & 01000)
        s[9] = (m & 01) ? 't' : 'T';
    s[10] = '\0';
    return json_string(s);
}

static json_t *file_info(json_t *st, const char *dir)
{
    const char *name = stat_str(st, "name", "");
    const char *path = stat_str(st, "path", NULL);
    char *built = NULL;
    if (!path) {
        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/')
            dl--;
        built = xasprintf("%.*s/%s", (int)dl, dir, name);
        path = built;
    }
    /* As in the reference, a symlink to a directory lists as a directory. */
    const char *type = stat_str(st, "type", "");
    bool is_dir = !strcmp(type, "directory") ||
                  (!strcmp(type, "symlink") && !strcmp(stat_str(st, "targetType", ""), "directory"));
    json_t *j = json_pack("{s:s, s:s, s:I, s:b, s:I}", "name", name, "path", path, "size",
                          (json_int_t)stat_int(st, "size"), "isDirectory", is_dir, "modifiedAt",
                          (json_int_t)mtime_ms(st));
    free(built);
    return j;
}

static json_t *file_metadata(json_t *st, const char *path)
{
    const char *type = stat_str(st, "type", "file");
    json_t *j = json_object();
    json_object_set_new(j, "path", json_string(stat_str(st, "path", path)));
    json_object_set_new(j, "name", json_string(stat_str(st, "name", "")));
    json_object_set_new(j, "size", json_integer(stat_int(st, "size")));
    json_object_set_new(j, "permissions", ls_permissions(st));
    json_object_set_new(j, "mode", json_integer(stat_int(st, "mode") & 07777));
    json_object_set_new(j, "owner", json_string(stat_str(st, "owner", "")));
    json_object_set_new(j, "group", json_string(stat_str(st, "group", "")));
    json_object_set_new(j, "uid", json_integer(stat_int(st, "uid")));
    json_object_set_new(j, "gid", json_integer(stat_int(st, "gid")));
    json_object_set_new(j, "type", json_string(type));
    json_object_set_new(j, "isDirectory", json_boolean(!strcmp(type, "directory")));
    json_object_set_new(j, "isSymlink", json_boolean(!strcmp(type, "symlink")));
    json_object_set_new(j, "modifiedAt", json_integer(mtime_ms(st)));
    const char *target = stat_str(st, "target", NULL);
    if (target)
        json_object_set_new(j, "target", json_string(target));
    return j;
}

/* ---- reading and writing whole files ---- */

/* Reads a whole file of at most `cap` bytes into a heap buffer. */
static int read_whole(sbx_api_t *api, const char *sid, const char *path, size_t cap, const char *instead,
                      char **out, size_t *len, sbx_err_t *err)
{
    *out = NULL;
    *len = 0;
    json_t *meta = NULL;
    sbx_fs_reader_t *r = sbx_core_fs_read_open(sbx_api_core(api), sid, path, 0, (int64_t)cap + 1, &meta, err);
    if (!r)
        return -1;
    int64_t size = stat_int(meta, "size");
    json_decref(meta);
    if (size > (int64_t)cap) {
        sbx_core_fs_read_close(r);
        return sbx_fail(err, SBX_E_TOO_LARGE, "EFBIG",
                        "%s is %lld bytes, over the %zu MiB limit of this route; use %s", path,
                        (long long)size, cap >> 20, instead);
    }
    size_t have = 0, alloc = size > 0 ? (size_t)size + 1 : 4096;
    char *buf = xmalloc(alloc);
    long n;
    const uint8_t *data;
    while ((n = sbx_core_fs_read_next(r, &data, err)) > 0) {
        if (have + (size_t)n > cap) {
            sbx_core_fs_read_close(r);
            free(buf);
            return sbx_fail(err, SBX_E_TOO_LARGE, "EFBIG",
                            "%s is over the %zu MiB limit of this route; use %s", path, cap >> 20, instead);
        }
        if (have + (size_t)n + 1 > alloc) {
            alloc = (have + (size_t)n + 1) * 2;
            buf = xrealloc(buf, alloc);
        }
        memcpy(buf + have, data, (size_t)n);
        have += (size_t)n;
    }
    sbx_core_fs_read_close(r);
    if (n < 0) {
        free(buf);
        return -1;
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    return 0;
}

static int write_whole(sbx_api_t *api, const char *sid, const char *path, const void *data, size_t len,
                       const sbx_fs_write_opts_t *opts, json_t **result, sbx_err_t *err)
{
    sbx_fs_writer_t *w = sbx_core_fs_write_open(sbx_api_core(api), sid, path, opts, err);
    if (!w)
        return -1;
    if (sbx_core_fs_write(w, data, len, err) < 0) {
        sbx_core_fs_write_abort(w);
        return -1;
    }
    return sbx_core_fs_write_finish(w, result, err);
}

/* The options of a write: mode, append, parents, inPlace. */
static int write_opts(json_t *p, sbx_fs_write_opts_t *o, sbx_err_t *err)
{
    *o = (sbx_fs_write_opts_t){.mode = -1, .uid = -1, .gid = -1};
    bool append = false, parents = false, in_place = false;
    if (sbx_param_mode(p, "mode", &o->mode, err) < 0 || sbx_param_bool(p, "append", &append, err) < 0 ||
        sbx_param_bool(p, "parents", &parents, err) < 0 || sbx_param_bool(p, "inPlace", &in_place, err) < 0)
        return -1;
    o->flags =
        (append ? SBX_FS_APPEND : 0) | (parents ? SBX_FS_PARENTS : 0) | (in_place ? SBX_FS_IN_PLACE : 0);
    return 0;
}

static json_t *write_answer(json_t *result, const char *path, size_t len)
{
    json_t *j = success();
    json_t *p = json_object_get(result, "path");
    json_t *s = json_object_get(result, "size");
    json_object_set_new(j, "path", json_is_string(p) ? json_incref(p) : json_string(path));
    json_object_set_new(j, "size", json_is_integer(s) ? json_incref(s) : json_integer((json_int_t)len));
    json_decref(result);
    return j;
}

/* ---- the JSON routes ---- */

static int h_read(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path;
    char *buf;
    size_t len;
    if (require_path(req->params, &path, err) < 0 ||
        read_whole(api, req->path_params[0], path, READ_MAX, "files/download or GET files/raw", &buf, &len,
                   err) < 0)
        return -1;
    resp->json = sbx_json_lossy_string(buf, len);
    free(buf);
    return 0;
}

static int h_download(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path;
    char *buf;
    size_t len;
    if (require_path(req->params, &path, err) < 0 ||
        read_whole(api, req->path_params[0], path, DOWNLOAD_MAX, "GET files/raw", &buf, &len, err) < 0)
        return -1;
    char *b64 = sbx_base64_encode(buf, len);
    free(buf);
    resp->json = json_string(b64);
    free(b64);
    return 0;
}

static int h_write(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path, *encoding = NULL;
    sbx_fs_write_opts_t o;
    if (require_path(req->params, &path, err) < 0 || write_opts(req->params, &o, err) < 0 ||
        sbx_param_str(req->params, "encoding", &encoding, err) < 0)
        return -1;
    json_t *c = json_object_get(req->params, "content");
    if (!json_is_string(c))
        return sbx_fail(err, SBX_E_INVALID, "S001", c ? "content must be a string" : "content is required");
    const char *text = json_string_value(c);
    size_t len = json_string_length(c);
    unsigned char *bytes = NULL;
    if (encoding && !strcasecmp(encoding, "base64")) {
        if (!(bytes = sbx_base64_decode(text, len, &len)))
            return sbx_fail(err, SBX_E_INVALID, "S001", "content is not valid base64");
        text = (const char *)bytes;
    } else if (encoding && strcasecmp(encoding, "utf8") && strcasecmp(encoding, "utf-8") &&
               strcasecmp(encoding, "text")) {
        return sbx_fail(err, SBX_E_INVALID, "S001", "encoding must be \"utf-8\" or \"base64\"");
    }
    json_t *result = NULL;
    int rc = write_whole(api, req->path_params[0], path, text, len, &o, &result, err);
    free(bytes);
    if (rc == 0)
        resp->json = write_answer(result, path, len);
    return rc;
}

static int h_upload(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path, *content = NULL;
    sbx_fs_write_opts_t o;
    if (require_path(req->params, &path, err) < 0 || write_opts(req->params, &o, err) < 0 ||
        sbx_param_str(req->params, "content", &content, err) < 0)
        return -1;
    if (!content)
        return sbx_fail(err, SBX_E_INVALID, "S001", "content is required");
    size_t len;
    unsigned char *bytes = sbx_base64_decode(content, strlen(content), &len);
    if (!bytes)
        return sbx_fail(err, SBX_E_INVALID, "S001", "Invalid base64: content is not standard base64");
    json_t *result = NULL;
    int rc = write_whole(api, req->path_params[0], path, bytes, len, &o, &result, err);
    free(bytes);
    if (rc == 0)
        resp->json = write_answer(result, path, len);
    return rc;
}

static int h_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path;
    bool recursive = false, force = true;
    if (require_path(req->params, &path, err) < 0 ||
        sbx_param_bool(req->params, "recursive", &recursive, err) < 0 ||
        sbx_param_bool(req->params, "force", &force, err) < 0)
        return -1;
    sbx_fs_req_t fr = {.op = "rm", .path = path, .mode = -1};
    fr.flags = (recursive ? SBX_FS_RECURSIVE : 0) | (force ? SBX_FS_FORCE : 0);
    if (simple_op(api, req, &fr, NULL, err) < 0)
        return -1;
    resp->json = success();
    return 0;
}

static int h_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    static const char *const keys[] = {"path", "dir", NULL};
    const char *path = NULL;
    int64_t limit = 0;
    if (param_path(req->params, keys, &path, err) < 0 ||
        sbx_param_int(req->params, "limit", 1, 1000000, &limit, err) < 0)
        return -1;
    if (!path || !*path)
        path = workspace(api);
    sbx_fs_req_t fr = {.op = "ls", .path = path, .mode = -1, .limit = limit};
    json_t *res;
    if (simple_op(api, req, &fr, &res, err) < 0)
        return -1;
    json_t *out = json_array(), *e;
    size_t i;
    json_array_foreach(json_object_get(res, "entries"), i, e)
    {
        if (json_is_object(e))
            json_array_append_new(out, file_info(e, path));
    }
    if (json_is_true(json_object_get(res, "truncated"))) {
        resp->header_name[0] = "X-Truncated";
        resp->header_value[0] = "true";
    }
    json_decref(res);
    resp->json = out;
    return 0;
}

static int h_search(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    static const char *const keys[] = {"dir", "path", NULL};
    const char *dir = NULL, *pattern = NULL;
    int64_t limit = 0;
    if (param_path(req->params, keys, &dir, err) < 0 ||
        sbx_param_str(req->params, "pattern", &pattern, err) < 0 ||
        sbx_param_int(req->params, "limit", 1, 1000000, &limit, err) < 0)
        return -1;
    if (!pattern || !*pattern)
        return sbx_fail(err, SBX_E_INVALID, "S001", "pattern is required");
    if (strlen(pattern) > 1024)
        return sbx_fail(err, SBX_E_INVALID, "S001", "pattern is longer than 1024 characters");
    if (!dir || !*dir)
        dir = workspace(api);
    sbx_fs_req_t fr = {.op = "search", .path = dir, .text = pattern, .mode = -1, .limit = limit};
    fr.flags = SBX_FS_RECURSIVE;
    json_t *res;
    if (simple_op(api, req, &fr, &res, err) < 0)
        return -1;
    json_t *out = json_array(), *e;
    size_t i;
    json_array_foreach(json_object_get(res, "matches"), i, e)
    {
        if (json_is_string(e))
            json_array_append(out, e);
    }
    if (json_is_true(json_object_get(res, "truncated"))) {
        resp->header_name[0] = "X-Truncated";
        resp->header_value[0] = "true";
    }
    json_decref(res);
    resp->json = out;
    return 0;
}

static int h_info(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    char **paths;
    size_t n;
    bool plural;
    if (path_list(req->params, &paths, &n, &plural, err) < 0)
        return -1;
    json_t *out = json_array();
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sbx_fs_req_t fr = {.op = "stat", .path = paths[i], .mode = -1};
        json_t *st;
        rc = simple_op(api, req, &fr, &st, err);
        if (rc == 0) {
            json_array_append_new(out, file_metadata(st, paths[i]));
            json_decref(st);
        }
    }
    sbx_strv_free(paths);
    if (rc < 0) {
        json_decref(out);
        return -1;
    }
    resp->json = plural ? json_incref(out) : json_incref(json_array_get(out, 0));
    json_decref(out);
    return 0;
}

/* One move's source and destination, under any of the names clients use. */
static int move_ends(json_t *o, const char **from, const char **to, sbx_err_t *err)
{
    static const char *const src[] = {"from", "source", "oldPath", "src", NULL};
    static const char *const dst[] = {"to", "destination", "newPath", "dest", NULL};
    *from = *to = NULL;
    if (param_path(o, src, from, err) < 0 || param_path(o, dst, to, err) < 0)
        return -1;
    if (!*from || !**from)
        return sbx_fail(err, SBX_E_INVALID, "S001", "from is required");
    if (!*to || !**to)
        return sbx_fail(err, SBX_E_INVALID, "S001", "to is required");
    return 0;
}

static int h_move(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    bool overwrite = true;
    if (sbx_param_bool(req->params, "overwrite", &overwrite, err) < 0)
        return -1;
    json_t *moves = json_object_get(req->params, "moves");
    json_t *single = NULL;
    if (!moves || json_is_null(moves)) {
        single = json_array();
        json_array_append(single, req->params);
        moves = single;
    } else if (!json_is_array(moves) || json_array_size(moves) == 0) {
        return sbx_fail(err, SBX_E_INVALID, "S001", "moves must be a non-empty array of {from, to}");
    }
    /* Validate every move before running any, then run them in order, stopping at the first
     * failure as the reference does. */
    size_t i;
    json_t *mv;
    int rc = 0;
    json_array_foreach(moves, i, mv)
    {
        const char *from, *to;
        if (!json_is_object(mv)) {
            rc = sbx_fail(err, SBX_E_INVALID, "S001", "moves must be a non-empty array of {from, to}");
            break;
        }
        if ((rc = move_ends(mv, &from, &to, err)) < 0)
            break;
    }
    json_array_foreach(moves, i, mv)
    {
        if (rc < 0)
            break;
        const char *from, *to;
        move_ends(mv, &from, &to, err);
        sbx_fs_req_t fr = {.op = "mv", .path = from, .path2 = to, .mode = -1};
        fr.flags = overwrite ? 0 : SBX_FS_NO_CLOBBER;
        rc = simple_op(api, req, &fr, NULL, err);
    }
    json_decref(single);
    if (rc == 0)
        resp->json = success();
    return rc;
}

static int h_mkdir(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    char **paths;
    size_t n;
    bool plural, parents = true;
    int64_t mode = -1;
    if (sbx_param_mode(req->params, "mode", &mode, err) < 0 ||
        sbx_param_bool(req->params, "parents", &parents, err) < 0 ||
        path_list(req->params, &paths, &n, &plural, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sbx_fs_req_t fr = {
            .op = "mkdir", .path = paths[i], .mode = mode, .flags = parents ? SBX_FS_PARENTS : 0};
        rc = simple_op(api, req, &fr, NULL, err);
    }
    sbx_strv_free(paths);
    if (rc == 0)
        resp->json = success();
    return rc;
}

static int h_rmdir(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    char **paths;
    size_t n;
    bool plural, recursive = true;
    if (sbx_param_bool(req->params, "recursive", &recursive, err) < 0 ||
        path_list(req->params, &paths, &n, &plural, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        /* Like the reference's `rm -rf` by default; recursive:false removes only an empty
         * directory and reports a missing one. */
        sbx_fs_req_t fr = {.op = "rmdir", .path = paths[i], .mode = -1};
        fr.flags = recursive ? SBX_FS_RECURSIVE | SBX_FS_FORCE : 0;
        rc = simple_op(api, req, &fr, NULL, err);
    }
    sbx_strv_free(paths);
    if (rc == 0)
        resp->json = success();
    return rc;
}

/* A chmod mode: 3-4 octal digits, or symbolic clauses `[ugoa]*([-+=][rwxXst]*)+` joined by
 * commas. */
static bool chmod_mode_valid(const char *s)
{
    size_t n = strlen(s);
    if (n >= 1 && n <= 4 && strspn(s, "01234567") == n)
        return true;
    if (n == 0 || n > 64)
        return false;
    const char *p = s;
    for (;;) {
        p += strspn(p, "ugoa");
        if (!strchr("+-=", *p) || !*p)
            return false;
        while (*p && strchr("+-=", *p)) {
            p++;
            p += strspn(p, "rwxXst");
        }
        if (!*p)
            return true;
        if (*p != ',')
            return false;
        p++;
    }
}

static int h_chmod(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path;
    bool recursive = false;
    if (require_path(req->params, &path, err) < 0 ||
        sbx_param_bool(req->params, "recursive", &recursive, err) < 0)
        return -1;
    json_t *v = json_object_get(req->params, "mode");
    char mode[72];
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 07777)
        snprintf(mode, sizeof mode, "%llo", (unsigned long long)json_integer_value(v));
    else if (json_is_string(v) && strlen(json_string_value(v)) < sizeof mode)
        snprintf(mode, sizeof mode, "%s", json_string_value(v));
    else if (!v || json_is_null(v))
        return sbx_fail(err, SBX_E_INVALID, "S001", "mode is required");
    else
        return sbx_fail(err, SBX_E_INVALID, "S001",
                        "Invalid chmod mode: give octal (\"755\") or symbolic (\"u+x\")");
    if (!chmod_mode_valid(mode))
        return sbx_fail(err, SBX_E_INVALID, "S001", "Invalid chmod mode: %s", mode);
    sbx_fs_req_t fr = {.op = "chmod", .path = path, .text = mode, .mode = -1};
    fr.flags = recursive ? SBX_FS_RECURSIVE : 0;
    json_t *res;
    if (simple_op(api, req, &fr, &res, err) < 0)
        return -1;
    resp->json = success();
    json_t *changed = json_object_get(res, "changed");
    if (json_is_integer(changed))
        json_object_set(resp->json, "changed", changed);
    json_decref(res);
    return 0;
}

/* ---- raw streaming ---- */

static int h_raw_get(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *path;
    int64_t offset = 0, length = -1;
    if (require_path(req->params, &path, err) < 0 ||
        sbx_param_int(req->params, "offset", 0, INT64_MAX, &offset, err) < 0 ||
        sbx_param_int(req->params, "length", 0, INT64_MAX, &length, err) < 0)
        return -1;
    json_t *meta = NULL;
    sbx_fs_reader_t *r =
        sbx_core_fs_read_open(sbx_api_core(api), req->path_params[0], path, offset, length, &meta, err);
    if (!r)
        return -1;
    sbx_api_respond_file(resp, r, meta);
    json_decref(meta);
    return 0;
}

typedef struct {
    sbx_fs_writer_t *w;
    char *path;
    uint64_t bytes;
} raw_put_t;

static int raw_put_begin(sbx_api_t *api, sbx_http_req_t *req, void **state, sbx_err_t *err)
{
    const char *path;
    sbx_fs_write_opts_t o;
    if (require_path(req->params, &path, err) < 0 || write_opts(req->params, &o, err) < 0)
        return -1;
    sbx_fs_writer_t *w = sbx_core_fs_write_open(sbx_api_core(api), req->path_params[0], path, &o, err);
    if (!w)
        return -1;
    raw_put_t *st = xcalloc(1, sizeof *st);
    st->w = w;
    st->path = xstrdup(path);
    *state = st;
    return 0;
}

static int raw_put_chunk(void *state, const char *data, size_t len, sbx_err_t *err)
{
    raw_put_t *st = state;
    st->bytes += len;
    return sbx_core_fs_write(st->w, data, len, err);
}

static int raw_put_finish(void *state, sbx_http_resp_t *resp, sbx_err_t *err)
{
    raw_put_t *st = state;
    json_t *result = NULL;
    int rc = sbx_core_fs_write_finish(st->w, &result, err);
    if (rc == 0)
        resp->json = write_answer(result, st->path, (size_t)st->bytes);
    free(st->path);
    free(st);
    return rc;
}

static void raw_put_abort(void *state)
{
    raw_put_t *st = state;
    sbx_core_fs_write_abort(st->w);
    free(st->path);
    free(st);
}

static const sbx_upload_ops_t raw_put_ops = {raw_put_begin, raw_put_chunk, raw_put_finish, raw_put_abort};

static const sbx_route_t routes[] = {
    {"POST", "/{prefix}/sandboxes/:id/files/read", h_read, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/write", h_write, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/delete", h_delete, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/list", h_list, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/search", h_search, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/upload", h_upload, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/download", h_download, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/info", h_info, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/move", h_move, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/mkdir", h_mkdir, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/rmdir", h_rmdir, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/sandboxes/:id/files/chmod", h_chmod, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/sandboxes/:id/files/raw", h_raw_get, false, SBX_DIALECT_REST},
    {"PUT", "/{prefix}/sandboxes/:id/files/raw", NULL, false, SBX_DIALECT_REST, &raw_put_ops},
};
const sbx_route_table_t sbx_rest_files_table = {routes, SBX_ARRAY_LEN(routes)};
