/* Small utilities shared by the daemon, the CLI and the agent: allocation that aborts on
 * OOM, cleanup attributes, time, file helpers and logging.  Nothing here links against
 * anything but libc, so the static agent can use it too. */
#ifndef SBX_COMMON_UTIL_H
#define SBX_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>

#include "common/err.h"

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline void cleanup_freep(void *p)
{
    free(*(void **)p);
}
void cleanup_closep(int *fd);
#define _cleanup_free_ __attribute__((cleanup(cleanup_freep)))
#define _cleanup_close_ __attribute__((cleanup(cleanup_closep)))

/* Hands ownership of *pp to the caller and leaves NULL behind. */
#define steal_pointer(pp)                                                                                    \
    ({                                                                                                       \
        __typeof__(*(pp)) _p = *(pp);                                                                        \
        *(pp) = NULL;                                                                                        \
        _p;                                                                                                  \
    })
/* Hands ownership of an fd to the caller and leaves -1 behind. */
static inline int steal_fd(int *fd)
{
    int f = *fd;
    *fd = -1;
    return f;
}

#define SBX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Wall clock in milliseconds since the epoch, and a monotonic clock in ms / ns. */
int64_t sbx_now_ms(void);
int64_t sbx_mono_ms(void);
int64_t sbx_mono_ns(void);
/* Runs fn(arg) on a new detached thread.  Returns 0 or the pthread_create error. */
int sbx_thread_detached(void *(*fn)(void *), void *arg);
/* The time `ms` milliseconds from now on `clock`, for pthread_cond_timedwait and the like. */
struct timespec sbx_timespec_in(clockid_t clock, int64_t ms);

/* Writes `len` bytes, retrying on EINTR and short writes. Returns 0 or -1 with errno. */
int sbx_write_all(int fd, const void *buf, size_t len);
/* Reads exactly `len` bytes. Returns 1 on success, 0 on clean EOF before any byte,
 * -1 on error or EOF in the middle (errno = EPIPE then). */
int sbx_read_exact(int fd, void *buf, size_t len);

/* Writes a small string to a file (open O_WRONLY|O_CLOEXEC, no create). */
int sbx_write_file(const char *path, const char *content, sbx_err_t *err);
/* Reads a whole (small) file into a NUL-terminated heap buffer. */
char *sbx_read_file(const char *path, size_t *len_out, sbx_err_t *err);
/* mkdir -p with the given mode. */
int sbx_mkdir_p(const char *path, mode_t mode, sbx_err_t *err);
/* rm -rf that never crosses into another filesystem and never follows symlinks. */
int sbx_rm_rf(const char *path, sbx_err_t *err);

/* Fills `out` with `nbytes` random bytes as lowercase hex (out needs 2*nbytes+1). */
void sbx_random_hex(char *out, size_t nbytes);
/* A new id "<prefix>_<24 hex>" as rest-wire.md §5 describes (UUIDv4 layout). */
void sbx_new_id(const char *prefix, char *out, size_t outlen);

/* Parses a decimal integer / double strictly (whole string, range-checked). */
int sbx_parse_i64(const char *s, int64_t *out);
int sbx_parse_double(const char *s, double *out);
/* Parses a humantime duration ("30s", "5m", "500ms", "1h30m", bare number = seconds)
 * into milliseconds. Returns -1 if it does not parse. */
int sbx_parse_duration_ms(const char *s, int64_t *out_ms);

/* Constant-time comparison of two strings, including their lengths. */
bool sbx_consttime_equal(const char *a, const char *b);

/* Logging to stderr with a timestamp and level. */
typedef enum { SBX_LOG_DEBUG, SBX_LOG_INFO, SBX_LOG_WARN, SBX_LOG_ERROR } sbx_log_level_t;
void sbx_log_set_level(sbx_log_level_t lvl);
void sbx_log(sbx_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) sbx_log(SBX_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) sbx_log(SBX_LOG_INFO, __VA_ARGS__)
#define log_warn(...) sbx_log(SBX_LOG_WARN, __VA_ARGS__)
#define log_error(...) sbx_log(SBX_LOG_ERROR, __VA_ARGS__)

#endif
