/* Typed reads from a request's merged parameters.  Each accepts the JSON type and, since
 * query-string values always arrive as strings, the same value spelled as a string.
 * A present value of the wrong type is an INVALID error (S001) naming the field. */
#ifndef SBX_API_PARAMS_H
#define SBX_API_PARAMS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* Each returns 1 if the field is present (value stored), 0 if absent, -1 on a bad value. */
int sbx_param_str(json_t *p, const char *key, const char **out, sbx_err_t *err);
int sbx_param_int(json_t *p, const char *key, int64_t min, int64_t max, int64_t *out, sbx_err_t *err);
int sbx_param_num(json_t *p, const char *key, double min, double max, double *out, sbx_err_t *err);
int sbx_param_bool(json_t *p, const char *key, bool *out, sbx_err_t *err);
/* An array of strings into a NULL-terminated heap vector (free with sbx_strv_free). */
int sbx_param_strv(json_t *p, const char *key, char ***out, size_t *n, sbx_err_t *err);
/* Environment given as {"K":"V"} or ["K=V", ...] into "K=V" entries. */
int sbx_param_env(json_t *p, const char *key, char ***out, size_t *n, sbx_err_t *err);
/* An object whose values are all strings; *out is its compact JSON text (heap). */
int sbx_param_str_object(json_t *p, const char *key, char **out, sbx_err_t *err);
/* A permission mode: a JSON number is the numeric value (0o644 from a client is 420), a
 * string is octal ("644", "0644", "0o644"); 0..07777. */
int sbx_param_mode(json_t *p, const char *key, int64_t *out, sbx_err_t *err);
void sbx_strv_free(char **v);

/* A JSON string from arbitrary bytes: invalid UTF-8 becomes U+FFFD. */
json_t *sbx_json_lossy_string(const char *buf, size_t len);

#endif
