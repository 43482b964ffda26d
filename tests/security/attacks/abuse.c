/* Resource abuse that must stay inside one sandbox, each bounded in time:
 *     abuse forkbomb SECS     fork as fast as possible; children sleep then exit
 *     abuse membomb MB        allocate and touch memory, 16 MiB at a time
 *     abuse cpuspin N SECS    N busy processes
 *     abuse flood SECS        write to stdout as fast as possible
 *     abuse files N           create N small files in the current directory
 *     abuse ignoreterm SECS   ignore SIGTERM (and SIGINT, SIGHUP) and sleep
 * Each prints a summary line; exits 0 unless its own setup failed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int forkbomb(double secs)
{
    long ok = 0, failed = 0;
    double end = now() + secs;
    while (now() < end) {
        pid_t p = fork();
        if (p == 0) {
            /* Each child forks too, until the limit stops it or the time is up. */
            while (now() < end && fork() >= 0)
                ;
            double left = end - now();
            if (left > 0)
                usleep((useconds_t)(left * 1e6));
            _exit(0);
        }
        if (p < 0) {
            failed++;
            usleep(1000);
        } else {
            ok++;
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
    while (wait(NULL) > 0)
        ;
    printf("forkbomb: %ld forks, %ld refused\n", ok, failed);
    return 0;
}

static int membomb(long mb)
{
    long got = 0;
    for (; got < mb; got += 16) {
        char *p = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            break;
        memset(p, 1, 16 << 20);
    }
    printf("membomb: survived with %ld MiB\n", got);
    return 0;
}

static int cpuspin(int n, double secs)
{
    double end = now() + secs;
    for (int i = 0; i < n; i++)
        if (fork() == 0) {
            volatile unsigned long x = 0;
            while (now() < end)
                x++;
            _exit(0);
        }
    while (wait(NULL) > 0)
        ;
    printf("cpuspin: %d spinners done\n", n);
    return 0;
}

static int flood(double secs)
{
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    for (size_t i = 127; i < sizeof buf; i += 128)
        buf[i] = '\n';
    double end = now() + secs;
    long long total = 0;
    while (now() < end) {
        ssize_t n = write(1, buf, sizeof buf);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            break;
        if (n > 0)
            total += n;
    }
    fprintf(stderr, "flood: %lld bytes\n", total);
    return 0;
}

static int files(long n)
{
    long made = 0;
    char name[32];
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "f%06ld", i);
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            break;
        if (write(fd, "x\n", 2) == 2)
            made++;
        close(fd);
    }
    printf("files: %ld created\n", made);
    return 0;
}

static int ignoreterm(double secs)
{
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    printf("ignoreterm: ready\n");
    fflush(stdout);
    double end = now() + secs;
    while (now() < end)
        sleep(1);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "forkbomb"))
        return forkbomb(atof(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "membomb"))
        return membomb(atol(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "cpuspin"))
        return cpuspin(atoi(argv[2]), atof(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "flood"))
        return flood(atof(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "files"))
        return files(atol(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "ignoreterm"))
        return ignoreterm(atof(argv[2]));
    fprintf(stderr, "usage: abuse forkbomb|membomb|cpuspin|flood|files|ignoreterm ARGS\n");
    return 2;
}
