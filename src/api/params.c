#include "api/params.h"

#include <math.h>
#include <string.h>

#include "common/util.h"

int sbx_param_str(json_t *p, const char *key, const char **out, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be a string", key);
    *out = json_string_value(v);
    return 1;
}

int sbx_param_int(json_t *p, const char *key, int64_t min, int64_t max, int64_t *out, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    int64_t x;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v);
    } else if (json_is_string(v) && sbx_parse_i64(json_string_value(v), &x) == 0) {
        ;
    } else {
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be an integer", key);
    }
    if (x < min || x > max)
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be between %lld and %lld (got %lld)", key,
                        (long long)min, (long long)max, (long long)x);
    *out = x;
    return 1;
}

int sbx_param_num(json_t *p, const char *key, double min, double max, double *out, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    double x;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_number(v))
        x = json_number_value(v);
    else if (!(json_is_string(v) && sbx_parse_double(json_string_value(v), &x) == 0))
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be a number", key);
    if (!(x >= min && x <= max))
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be between %g and %g (got %g)", key, min, max,
                        x);
    *out = x;
    return 1;
}

int sbx_param_bool(json_t *p, const char *key, bool *out, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 1;
    }
    if (json_is_string(v) &&
        (!strcmp(json_string_value(v), "true") || !strcmp(json_string_value(v), "false"))) {
        *out = !strcmp(json_string_value(v), "true");
        return 1;
    }
    return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be a boolean", key);
}

int sbx_param_mode(json_t *p, const char *key, int64_t *out, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strncmp(s, "0o", 2))
            s += 2;
        size_t n = strlen(s);
        if (n == 0 || n > 5 || strspn(s, "01234567") != n)
            return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be an octal mode like \"0644\"", key);
        *out = strtoll(s, NULL, 8);
    } else {
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be an octal string or a number", key);
    }
    if (*out < 0 || *out > 07777)
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be between 0 and 07777", key);
    return 1;
}

void sbx_strv_free(char **v)
{
    if (!v)
        return;
    for (char **q = v; *q; q++)
        free(*q);
    free(v);
}

static bool has_nul(json_t *s)
{
    return strlen(json_string_value(s)) != json_string_length(s);
}

int sbx_param_strv(json_t *p, const char *key, char ***out, size_t *n, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be an array of strings", key);
    size_t len = json_array_size(v);
    char **vec = xcalloc(len + 1, sizeof(char *));
    for (size_t i = 0; i < len; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || has_nul(e)) {
            sbx_strv_free(vec);
            return sbx_fail(err, SBX_E_INVALID, "S001", "%s[%zu] must be a string without NUL bytes", key, i);
        }
        vec[i] = xstrdup(json_string_value(e));
    }
    *out = vec;
    *n = len;
    return 1;
}

static bool valid_env_key(const char *k, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (k[i] == '=' || k[i] == '\0')
            return false;
    return true;
}

int sbx_param_env(json_t *p, const char *key, char ***out, size_t *n, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_array(v)) {
        if (sbx_param_strv(p, key, out, n, err) < 0)
            return -1;
        for (size_t i = 0; i < *n; i++) {
            const char *eq = strchr((*out)[i], '=');
            if (!eq || !valid_env_key((*out)[i], (size_t)(eq - (*out)[i]))) {
                sbx_fail(err, SBX_E_INVALID, "S001", "%s entries must look like KEY=VALUE: '%s'", key,
                         (*out)[i]);
                sbx_strv_free(*out);
                *out = NULL;
                return -1;
            }
        }
        return 1;
    }
    if (!json_is_object(v))
        return sbx_fail(err, SBX_E_INVALID, "S001",
                        "%s must be an object of strings or an array of \"KEY=VALUE\"", key);
    size_t len = json_object_size(v), i = 0;
    char **vec = xcalloc(len + 1, sizeof(char *));
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val)
    {
        if (!json_is_string(val) || has_nul(val) || !valid_env_key(k, strlen(k))) {
            sbx_strv_free(vec);
            return sbx_fail(err, SBX_E_INVALID, "S001",
                            "%s.%s must be a string (and the name must not contain '=')", key, k);
        }
        vec[i++] = xasprintf("%s=%s", k, json_string_value(val));
    }
    *out = vec;
    *n = i;
    return 1;
}

int sbx_param_str_object(json_t *p, const char *key, char **out, sbx_err_t *err)
{
    json_t *v = json_object_get(p, key);
    if (!v || json_is_null(v))
        return 0;
    const char *k;
    json_t *val;
    if (!json_is_object(v))
        return sbx_fail(err, SBX_E_INVALID, "S001", "%s must be an object of strings", key);
    json_object_foreach(v, k, val)
    {
        if (!json_is_string(val))
            return sbx_fail(err, SBX_E_INVALID, "S001", "%s.%s must be a string", key, k);
    }
    *out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    return 1;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

json_t *sbx_json_lossy_string(const char *buf, size_t len)
{
    if (!buf)
        return json_string("");
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq(s + i, len - i);
        if (!n)
            break;
        i += n;
    }
    if (i == len)
        return json_stringn(buf, len);
    char *out = xmalloc(len * 3 + 1);
    size_t o = 0;
    for (i = 0; i < len;) {
        size_t n = utf8_seq(s + i, len - i);
        if (n) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}
