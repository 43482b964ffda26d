/* Request bodies of every dialect: the bytes are parsed as the HTTP layer parses a body
 * (json_loadb with duplicate keys refused, an object required), then read by the same
 * exported validators the handlers use: the exec request (sbx_api_exec_parse), the REST
 * and v1 create fields, file-operation fields, signals, and the lossy UTF-8 conversion
 * applied to command output.  An exec request that validates must also encode into an
 * agent EXEC frame that the agent's decoder accepts unchanged. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/exec_req.h"
#include "api/params.h"
#include "core/config.h"
#include "proto/proto.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

static const sbx_config_t *config(void)
{
    static sbx_config_t cfg;
    static int ready;
    if (!ready) {
        sbx_config_defaults(&cfg);
        ready = 1;
    }
    return &cfg;
}

/* What a failed read must leave behind: a message to show the client. */
static void check_failed(int r, const sbx_err_t *err)
{
    if (r < 0)
        CHECK(err->kind != SBX_E_NONE && err->msg[0]);
}

/* The exec request sent to the agent must decode to the same argv, env and cwd. */
static void check_roundtrip(const sbx_api_exec_t *x)
{
    sbx_exec_req_t req;
    sbx_exec_req_init(&req);
    req.argv = x->p.argv;
    req.env = x->p.env;
    req.envc = x->p.n_env;
    req.cwd = (char *)x->p.cwd;
    req.timeout_ms = x->p.timeout_ms;
    sbx_msg_t m = {0};
    sbx_exec_req_encode(&m, &req);
    if (m.len - SBX_PROTO_HDR_LEN <= SBX_PROTO_MAX_PAYLOAD) {
        sbx_exec_req_t back;
        CHECK(sbx_exec_req_decode(m.buf + SBX_PROTO_HDR_LEN, m.len - SBX_PROTO_HDR_LEN, &back) == 0);
        for (size_t i = 0; i < back.argc; i++)
            CHECK(!strcmp(back.argv[i], x->p.argv[i]));
        CHECK(!x->p.argv[back.argc]);
        CHECK(back.envc == x->p.n_env);
        for (size_t i = 0; i < back.envc; i++)
            CHECK(!strcmp(back.env[i], x->p.env[i]));
        CHECK(!x->p.cwd == !back.cwd && (!back.cwd || !strcmp(back.cwd, x->p.cwd)));
        CHECK(back.timeout_ms == x->p.timeout_ms);
        sbx_exec_req_release(&back);
    }
    sbx_msg_release(&m);
}

static void exec_request(json_t *p)
{
    const sbx_config_t *cfg = config();
    static const int64_t defaults[] = {0, 30000};
    for (size_t d = 0; d < 2; d++) {
        sbx_api_exec_t x;
        sbx_err_t err = SBX_ERR_INIT;
        int r = sbx_api_exec_parse(p, cfg, defaults[d], &x, &err);
        check_failed(r, &err);
        if (r < 0)
            continue;
        CHECK(x.p.argv && x.p.argv[0] && x.p.argv[0][0] && x.display);
        CHECK(x.p.timeout_ms > 0 && x.p.timeout_ms <= cfg->max_cmd_timeout_secs * 1000);
        for (size_t i = 0; i < x.p.n_env; i++)
            CHECK(strchr(x.p.env[i], '=') && x.p.env[i][0] != '=');
        check_roundtrip(&x);
        sbx_api_exec_release(&x);
    }
}

/* The fields of POST /sandbox/sandboxes, read as that handler reads them. */
static void rest_create(json_t *p)
{
    sbx_err_t err = SBX_ERR_INIT;
    const char *s;
    int64_t i;
    double d;
    bool b;
    char **v = NULL;
    size_t n = 0;
    char *text = NULL;
    check_failed(sbx_param_str(p, "template", &s, &err), &err);
    check_failed(sbx_param_str(p, "image", &s, &err), &err);
    check_failed(sbx_param_str(p, "name", &s, &err), &err);
    check_failed(sbx_param_int(p, "timeout", 1, 30LL * 86400, &i, &err), &err);
    if (sbx_param_int(p, "memory", 1, 1048576, &i, &err) > 0)
        CHECK(i >= 1 && i <= 1048576);
    check_failed(sbx_param_int(p, "memory_mb", 1, 1048576, &i, &err), &err);
    if (sbx_param_num(p, "cpu", 0.01, 1024, &d, &err) > 0)
        CHECK(d >= 0.01 && d <= 1024);
    check_failed(sbx_param_num(p, "cpus", 0.01, 1024, &d, &err), &err);
    check_failed(sbx_param_int(p, "idle_timeout_secs", 0, 30LL * 86400, &i, &err), &err);
    check_failed(sbx_param_bool(p, "network", &b, &err), &err);
    if (sbx_param_env(p, "env", &v, &n, &err) > 0) {
        for (size_t k = 0; k < n; k++)
            CHECK(v[k] && strchr(v[k], '='));
        CHECK(!v[n]);
        sbx_strv_free(v);
    }
    if (sbx_param_str_object(p, "metadata", &text, &err) > 0) {
        json_t *back = json_loads(text, 0, NULL);
        CHECK(json_is_object(back));
        json_decref(back);
        free(text);
    }
    v = NULL;
    if (sbx_param_strv(p, "entrypoint", &v, &n, &err) > 0)
        sbx_strv_free(v);
}

/* POST /v1/sandboxes: the same readers over a nested resources object. */
static void v1_create(json_t *b)
{
    sbx_err_t err = SBX_ERR_INIT;
    int64_t i;
    double d;
    char **v = NULL;
    size_t n = 0;
    check_failed(sbx_param_int(b, "timeout", INT64_MIN, INT64_MAX, &i, &err), &err);
    json_t *res = json_object_get(b, "resources");
    check_failed(sbx_param_int(res, "memory", INT64_MIN, INT64_MAX, &i, &err), &err);
    check_failed(sbx_param_num(res, "cpus", -1e300, 1e300, &d, &err), &err);
    if (sbx_param_strv(b, "ports", &v, &n, &err) > 0)
        sbx_strv_free(v);
}

/* File routes and the function dialect's scalar fields. */
static void file_fields(json_t *p)
{
    sbx_err_t err = SBX_ERR_INIT;
    int64_t mode, i;
    bool b;
    if (sbx_param_mode(p, "mode", &mode, &err) > 0)
        CHECK(mode >= 0 && mode <= 07777);
    check_failed(sbx_param_mode(p, "permissions", &mode, &err), &err);
    check_failed(sbx_param_int(p, "offset", 0, INT64_MAX, &i, &err), &err);
    check_failed(sbx_param_int(p, "length", -1, INT64_MAX, &i, &err), &err);
    check_failed(sbx_param_bool(p, "recursive", &b, &err), &err);
    int sig = sbx_api_parse_signal(json_object_get(p, "signal"));
    CHECK(sig == -1 || (sig >= 1 && sig <= 64));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Command output of any bytes must become a valid JSON string. */
    json_t *s = sbx_json_lossy_string((const char *)data, size);
    CHECK(s);
    json_decref(s);

    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return 0;
    if (json_is_object(body)) {
        exec_request(body);
        rest_create(body);
        v1_create(body);
        file_fields(body);
        /* Fields one level down are read the same way (v1 "resources", nested bodies). */
        const char *k;
        json_t *val;
        json_object_foreach(body, k, val)
        {
            if (json_is_object(val)) {
                exec_request(val);
                file_fields(val);
            }
        }
    }
    json_decref(body);
    return 0;
}
