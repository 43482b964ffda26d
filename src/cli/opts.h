/* Command-line option parsing shared by every subcommand.
 *
 * One table names every flag the CLI knows; each subcommand walks its arguments with
 * sbx_opts_next() and rejects the flags it does not take.  Both `--cpus 2` and `--cpus=2`
 * are accepted, short flags take their value from the next argument or inline (`-eK=V`),
 * and `--` ends the flags. */
#ifndef SBX_CLI_OPTS_H
#define SBX_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    OPT_HELP = 1,
    OPT_URL,
    OPT_PORT,
    OPT_CPUS,
    OPT_MEMORY,
    OPT_IDLE_TIMEOUT,
    OPT_NAME,
    OPT_NETWORK,
    OPT_ENV,
    OPT_TIMEOUT,
    OPT_STDIN,
    OPT_JSON,
    OPT_ALL,
    OPT_VERSION,
    OPT_RECURSIVE,
    OPT_LONG,
} sbx_opt_id_t;

/* What sbx_opts_next() found. */
typedef enum {
    SBX_OPTS_END = 0,  /* no arguments left */
    SBX_OPTS_FLAG,     /* a known flag: see p->id, p->value (NULL for switches) */
    SBX_OPTS_ARG,      /* a positional argument in p->value */
    SBX_OPTS_DASHDASH, /* `--`: the remaining arguments start at p->argv[p->idx] */
    SBX_OPTS_ERROR,    /* a malformed or unknown flag: p->errmsg says why */
} sbx_opts_kind_t;

typedef struct {
    int argc;
    char **argv;
    int idx;           /* next argument to look at */
    sbx_opt_id_t id;   /* for SBX_OPTS_FLAG */
    const char *flag;  /* the flag as spelled, for messages ("--cpus", "-e") */
    const char *value; /* flag value or positional argument; points into argv */
    char flagbuf[64];
    char errmsg[256];
} sbx_opts_t;

/* Starts parsing argv[first..argc). The parser borrows argv. */
void sbx_opts_init(sbx_opts_t *p, int argc, char **argv, int first);

/* Returns the next item; see sbx_opts_kind_t. */
sbx_opts_kind_t sbx_opts_next(sbx_opts_t *p);

/* A growable NULL-terminated vector of borrowed strings. */
typedef struct {
    const char **v;
    size_t n, cap;
} sbx_strv_t;

/* Appends `s` (borrowed, must outlive the vector). */
void sbx_strv_push(sbx_strv_t *sv, const char *s);
/* Frees the array, not the strings. */
void sbx_strv_release(sbx_strv_t *sv);

/* Parses a whole decimal integer in [min, max]. Returns 0 or -1. */
int sbx_opts_int(const char *s, long long min, long long max, long long *out);

#endif
