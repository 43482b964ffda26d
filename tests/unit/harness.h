/* A tiny unit-test harness: each TEST runs in its own forked child with a timeout, so a
 * crash or hang fails that test alone.  A test may SKIP with the precondition it lacks.
 * main() comes from SBX_TEST_MAIN(); the runner prints one line per test and a summary. */
#ifndef SBX_TESTS_HARNESS_H
#define SBX_TESTS_HARNESS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*sbx_test_fn)(void);
struct sbx_test {
    const char *name;
    sbx_test_fn fn;
    int timeout_s;
};

#define SBX_MAX_TESTS 256
static struct sbx_test sbx_tests[SBX_MAX_TESTS];
static int sbx_ntests;

#define TEST_T(name, timeout)                                                                                \
    static void test_##name(void);                                                                           \
    __attribute__((constructor)) static void reg_##name(void)                                                \
    {                                                                                                        \
        sbx_tests[sbx_ntests++] = (struct sbx_test){#name, test_##name, timeout};                            \
    }                                                                                                        \
    static void test_##name(void)
#define TEST(name) TEST_T(name, 30)

#define SBX_SKIP_CODE 77
#define SKIP(...)                                                                                            \
    do {                                                                                                     \
        fprintf(stderr, "  skip: " __VA_ARGS__);                                                             \
        fputc('\n', stderr);                                                                                 \
        exit(SBX_SKIP_CODE);                                                                                 \
    } while (0)

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                       \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)
#define CHECK_EQ_INT(a, b)                                                                                   \
    do {                                                                                                     \
        long long _a = (long long)(a), _b = (long long)(b);                                                  \
        if (_a != _b) {                                                                                      \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, _a, #b,    \
                    _b);                                                                                     \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)
#define CHECK_EQ_STR(a, b)                                                                                   \
    do {                                                                                                     \
        const char *_a = (a), *_b = (b);                                                                     \
        if (!_a || !_b || strcmp(_a, _b)) {                                                                  \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,              \
                    _a ? _a : "(null)", _b ? _b : "(null)");                                                 \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static int sbx_run_tests(const char *prog, int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < sbx_ntests; i++) {
        const struct sbx_test *t = &sbx_tests[i];
        if (argc > 1 && !strstr(t->name, argv[1]))
            continue;
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm((unsigned)t->timeout_s);
            t->fn();
            exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        const char *res;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            res = "ok";
            passed++;
        } else if (WIFEXITED(st) && WEXITSTATUS(st) == SBX_SKIP_CODE) {
            res = "skip";
            skipped++;
        } else {
            res = WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? "FAIL (timeout)" : "FAIL";
            failed++;
        }
        printf("%s %s.%s\n", res, prog, t->name);
    }
    printf("%s: %d passed, %d failed, %d skipped\n", prog, passed, failed, skipped);
    return failed ? 1 : 0;
}

#define SBX_TEST_MAIN()                                                                                      \
    int main(int argc, char **argv)                                                                          \
    {                                                                                                        \
        const char *p = strrchr(argv[0], '/');                                                               \
        return sbx_run_tests(p ? p + 1 : argv[0], argc, argv);                                               \
    }

#endif
