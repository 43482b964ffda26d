#include "common/err.h"

#include <stdio.h>
#include <string.h>

static void vset(sbx_err_t *err, const char *fmt, va_list ap)
{
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int sbx_error(sbx_err_t *err, int errnum, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vset(err, fmt, ap);
    va_end(ap);
    err->kind = SBX_E_INTERNAL;
    err->errnum = errnum;
    err->code[0] = '\0';
    if (errnum) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, ": %s", strerror(errnum));
    }
    return -1;
}

int sbx_fail(sbx_err_t *err, sbx_err_kind_t kind, const char *code, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vset(err, fmt, ap);
    va_end(ap);
    err->kind = kind;
    err->errnum = 0;
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    return -1;
}

int sbx_error_wrap(sbx_err_t *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[256];
    char old[sizeof err->msg - sizeof prefix - 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t keep = strnlen(err->msg, sizeof old - 1);
    memcpy(old, err->msg, keep);
    old[keep] = '\0';
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    if (err->kind == SBX_E_NONE)
        err->kind = SBX_E_INTERNAL;
    return -1;
}

void sbx_err_clear(sbx_err_t *err)
{
    if (!err)
        return;
    err->kind = SBX_E_NONE;
    err->errnum = 0;
    err->code[0] = '\0';
    err->msg[0] = '\0';
}

const char *sbx_err_kind_name(sbx_err_kind_t kind)
{
    switch (kind) {
    case SBX_E_NONE: return "none";
    case SBX_E_INVALID: return "invalid";
    case SBX_E_NOT_FOUND: return "not_found";
    case SBX_E_CONFLICT: return "conflict";
    case SBX_E_LIMIT: return "limit";
    case SBX_E_FORBIDDEN: return "forbidden";
    case SBX_E_TOO_LARGE: return "too_large";
    case SBX_E_UNAVAILABLE: return "unavailable";
    case SBX_E_TIMEOUT: return "timeout";
    case SBX_E_INTERNAL: return "internal";
    }
    return "internal";
}
