/* Error reporting shared by every module.
 *
 * A function that can fail takes `sbx_err_t *err` as its last parameter and returns a
 * negative value (or NULL).  The error carries a kind, which only api/ maps to an HTTP
 * status, an optional stable code (the guide's S-codes, e.g. "S002"), the errno that
 * caused it (0 if none) and a human message built up with context on the way up. */
#ifndef SBX_COMMON_ERR_H
#define SBX_COMMON_ERR_H

#include <stdarg.h>

typedef enum {
    SBX_E_NONE = 0,
    SBX_E_INVALID,     /* bad input from the caller: 400 */
    SBX_E_NOT_FOUND,   /* no such object: 404 */
    SBX_E_CONFLICT,    /* object in the wrong state: 409 */
    SBX_E_LIMIT,       /* a configured limit or cap was hit */
    SBX_E_FORBIDDEN,   /* not allowed by policy (allowlist): 403 */
    SBX_E_TOO_LARGE,   /* payload or disk quota exceeded: 413 */
    SBX_E_UNAVAILABLE, /* temporarily unable (image missing, building, capacity): 503 */
    SBX_E_TIMEOUT,     /* an operation ran past its deadline */
    SBX_E_INTERNAL,    /* our own failure or the host's: 500 */
} sbx_err_kind_t;

typedef struct {
    sbx_err_kind_t kind;
    int errnum;
    char code[24];
    char msg[1024];
} sbx_err_t;

#define SBX_ERR_INIT                                                                                         \
    {                                                                                                        \
        SBX_E_NONE, 0, "", ""                                                                                \
    }

/* Records an INTERNAL error caused by `errnum` (appends strerror) and returns -1. */
int sbx_error(sbx_err_t *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records an error of the given kind with a stable code (may be NULL) and returns -1. */
int sbx_fail(sbx_err_t *err, sbx_err_kind_t kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes the existing message with context ("ctx: old message") and returns -1. */
int sbx_error_wrap(sbx_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets an error to the empty state. */
void sbx_err_clear(sbx_err_t *err);

const char *sbx_err_kind_name(sbx_err_kind_t kind);

#endif
