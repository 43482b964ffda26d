/* Connects to HOST:PORT over TCP with a short timeout and reports the outcome:
 *     net connect HOST PORT [TIMEOUT_MS]
 * "BLOCKED" when the connection failed (refused, unreachable, timed out), "ESCAPED" when it
 * was established.  It prints how long the attempt took, so the test can tell an
 * immediate "no route" from a timeout. */
#include "attack.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void do_connect(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "connect HOST PORT [TIMEOUT_MS]\n");
        exit(2);
    }
    int timeout = argc > 3 ? atoi(argv[3]) : 2000;
    char name[96];
    snprintf(name, sizeof name, "connect %s:%s", argv[1], argv[2]);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
        exit(2);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    long t0 = now_ms();
    int rc = connect(s, (struct sockaddr *)&sa, sizeof sa);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {s, POLLOUT, 0};
        if (poll(&p, 1, timeout) == 1) {
            int e = 0;
            socklen_t l = sizeof e;
            getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
            errno = e;
            rc = e ? -1 : 0;
        } else {
            errno = ETIMEDOUT;
        }
    }
    long dt = now_ms() - t0;
    if (rc == 0)
        ESCAPED(name, "connected after %ld ms", dt);
    else
        BLOCKED(name, "%s after %ld ms", strerror(errno), dt);
    close(s);
}

static const struct attack attacks[] = {{"connect", do_connect}, {NULL, NULL}};

int main(int argc, char **argv)
{
    return attack_main(attacks, argc, argv);
}
