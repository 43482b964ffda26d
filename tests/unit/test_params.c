/* Request validation: typed parameter reads and the lossy UTF-8 rendering of output. */
#include "harness.h"
#include "api/params.h"
#include "common/util.h"

static json_t *obj(const char *text)
{
    json_t *j = json_loads(text, JSON_ALLOW_NUL, NULL);
    CHECK(j != NULL);
    return j;
}

TEST(ints_accept_numbers_and_numeric_strings)
{
    json_t *p = obj("{\"a\": 5, \"b\": \"7\", \"c\": 2.0, \"d\": 2.5, \"e\": \"x\", \"f\": true, \"g\": -1}");
    sbx_err_t err = SBX_ERR_INIT;
    int64_t v = 0;
    CHECK(sbx_param_int(p, "a", 0, 10, &v, &err) == 1 && v == 5);
    CHECK(sbx_param_int(p, "b", 0, 10, &v, &err) == 1 && v == 7);
    CHECK(sbx_param_int(p, "c", 0, 10, &v, &err) == 1 && v == 2);
    CHECK(sbx_param_int(p, "missing", 0, 10, &v, &err) == 0);
    CHECK(sbx_param_int(p, "d", 0, 10, &v, &err) < 0 && err.kind == SBX_E_INVALID);
    CHECK_EQ_STR(err.code, "S001");
    CHECK(sbx_param_int(p, "e", 0, 10, &v, &err) < 0);
    CHECK(sbx_param_int(p, "f", 0, 10, &v, &err) < 0);
    CHECK(sbx_param_int(p, "g", 0, 10, &v, &err) < 0);
    CHECK(strstr(err.msg, "between 0 and 10") != NULL);
    json_decref(p);
}

TEST(numbers_bools_strings)
{
    json_t *p = obj("{\"n\": 0.5, \"s\": \"1.5\", \"t\": \"true\", \"b\": false, \"x\": 1, \"str\": \"hi\", "
                    "\"nul\": null}");
    sbx_err_t err = SBX_ERR_INIT;
    double d;
    bool b;
    const char *s;
    CHECK(sbx_param_num(p, "n", 0, 4, &d, &err) == 1 && d == 0.5);
    CHECK(sbx_param_num(p, "s", 0, 4, &d, &err) == 1 && d == 1.5);
    CHECK(sbx_param_num(p, "str", 0, 4, &d, &err) < 0);
    CHECK(sbx_param_bool(p, "t", &b, &err) == 1 && b);
    CHECK(sbx_param_bool(p, "b", &b, &err) == 1 && !b);
    CHECK(sbx_param_bool(p, "x", &b, &err) < 0);
    CHECK(sbx_param_str(p, "str", &s, &err) == 1 && !strcmp(s, "hi"));
    CHECK(sbx_param_str(p, "x", &s, &err) < 0);
    CHECK(sbx_param_str(p, "nul", &s, &err) == 0);
    json_decref(p);
}

TEST(env_as_object_or_list)
{
    sbx_err_t err = SBX_ERR_INIT;
    char **env = NULL;
    size_t n = 0;
    json_t *p =
        obj("{\"o\": {\"A\": \"1\", \"B\": \"x=y\"}, \"l\": [\"A=1\", \"B=\"], \"bad1\": [\"NOEQ\"],"
            " \"bad2\": [\"=v\"], \"bad3\": {\"A\": 1}, \"bad4\": \"A=1\", \"bad5\": [\"A=\\u0000\"]}");
    CHECK(sbx_param_env(p, "o", &env, &n, &err) == 1 && n == 2);
    CHECK_EQ_STR(env[0], "A=1");
    CHECK_EQ_STR(env[1], "B=x=y");
    sbx_strv_free(env);
    CHECK(sbx_param_env(p, "l", &env, &n, &err) == 1 && n == 2);
    CHECK_EQ_STR(env[1], "B=");
    sbx_strv_free(env);
    const char *bad[] = {"bad1", "bad2", "bad3", "bad4", "bad5"};
    for (size_t i = 0; i < 5; i++) {
        env = NULL;
        CHECK(sbx_param_env(p, bad[i], &env, &n, &err) < 0);
        CHECK(env == NULL);
    }
    json_decref(p);
}

TEST(string_objects_and_arrays)
{
    sbx_err_t err = SBX_ERR_INIT;
    json_t *p =
        obj("{\"m\": {\"k\": \"v\"}, \"mbad\": {\"k\": 1}, \"a\": [\"x\", \"y\"], \"abad\": [\"x\", 2]}");
    char *text = NULL;
    CHECK(sbx_param_str_object(p, "m", &text, &err) == 1);
    CHECK_EQ_STR(text, "{\"k\":\"v\"}");
    free(text);
    CHECK(sbx_param_str_object(p, "mbad", &text, &err) < 0);
    char **v = NULL;
    size_t n = 0;
    CHECK(sbx_param_strv(p, "a", &v, &n, &err) == 1 && n == 2 && v[2] == NULL);
    sbx_strv_free(v);
    CHECK(sbx_param_strv(p, "abad", &v, &n, &err) < 0);
    json_decref(p);
}

TEST(lossy_utf8)
{
    json_t *s = sbx_json_lossy_string("ok\xff\xfe"
                                      "end",
                                      7);
    CHECK_EQ_STR(json_string_value(s), "ok\xef\xbf\xbd\xef\xbf\xbd"
                                       "end");
    json_decref(s);
    s = sbx_json_lossy_string("h\xc3\xa9llo \xf0\x9f\x98\x80", 11);
    CHECK_EQ_STR(json_string_value(s), "h\xc3\xa9llo \xf0\x9f\x98\x80");
    json_decref(s);
    /* Overlong encodings and surrogates are invalid too. */
    s = sbx_json_lossy_string("\xc0\xaf\xed\xa0\x80", 5);
    CHECK(strstr(json_string_value(s), "\xef\xbf\xbd") != NULL);
    CHECK(strchr(json_string_value(s), '/') == NULL);
    json_decref(s);
    /* A truncated sequence at the end. */
    s = sbx_json_lossy_string("a\xe2\x82", 3);
    CHECK_EQ_STR(json_string_value(s), "a\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(s);
}

SBX_TEST_MAIN()
