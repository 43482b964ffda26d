/* Shared by the attack programs of the escape battery.  Each program takes a case name,
 * tries the attack and prints one line per attempt:
 *     BLOCKED <case>: <detail>     the attack failed (what the test expects)
 *     ESCAPED <case>: <detail>     the attack worked: an isolation bug
 * and exits 0 when every attempt was blocked, 1 when any escaped, 2 on a usage error. */
#ifndef ATTACK_H
#define ATTACK_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int escaped;

#define BLOCKED(name, ...)                                                                                   \
    do {                                                                                                     \
        printf("BLOCKED %s: ", name);                                                                        \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
    } while (0)

#define ESCAPED(name, ...)                                                                                   \
    do {                                                                                                     \
        printf("ESCAPED %s: ", name);                                                                        \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        escaped = 1;                                                                                         \
    } while (0)

/* Expects a syscall-style result to be a failure. */
#define EXPECT_FAIL(name, expr)                                                                              \
    do {                                                                                                     \
        errno = 0;                                                                                           \
        long r_ = (long)(expr);                                                                              \
        if (r_ < 0)                                                                                          \
            BLOCKED(name, "%s", strerror(errno));                                                            \
        else                                                                                                 \
            ESCAPED(name, "returned %ld", r_);                                                               \
    } while (0)

/* Expects the failure to come from policy (seccomp, capabilities, permissions), not from
 * bad arguments: a call that reached its real work and failed there would prove nothing. */
#define EXPECT_DENIED(name, expr)                                                                            \
    do {                                                                                                     \
        errno = 0;                                                                                           \
        long r_ = (long)(expr);                                                                              \
        if (r_ < 0 && (errno == EPERM || errno == EACCES || errno == ENOSYS))                                \
            BLOCKED(name, "%s", strerror(errno));                                                            \
        else if (r_ < 0)                                                                                     \
            ESCAPED(name, "reached the kernel: %s", strerror(errno));                                        \
        else                                                                                                 \
            ESCAPED(name, "returned %ld", r_);                                                               \
    } while (0)

struct attack {
    const char *name;
    void (*run)(int argc, char **argv);
};

static int attack_main(const struct attack *list, int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE [ARGS]\n", argv[0]);
        return 2;
    }
    for (const struct attack *a = list; a->name; a++)
        if (!strcmp(a->name, argv[1]) || !strcmp(argv[1], "all")) {
            a->run(argc - 1, argv + 1);
            if (strcmp(argv[1], "all"))
                return escaped;
        }
    if (!strcmp(argv[1], "all"))
        return escaped;
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}

#endif
