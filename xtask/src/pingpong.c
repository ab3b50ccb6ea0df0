/* Context-switch load for `cargo xtask bench telemetry`: two processes bounce a byte through
 * two pipes, RATE round trips per second in 1 ms batches (each round trip is 2-4 switches). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long rate = argc > 1 ? atol(argv[1]) : 10000;
    int a[2], b[2];
    char c = 'x';
    if (pipe(a) || pipe(b)) return 1;
    if (fork() == 0) {
        close(a[1]);
        for (;;) {
            if (read(a[0], &c, 1) != 1) _exit(0);
            if (write(b[1], &c, 1) != 1) _exit(0);
        }
    }
    close(a[0]);
    long per = rate / 1000 > 0 ? rate / 1000 : 1;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        for (long i = 0; i < per; i++) {
            if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) return 1;
        }
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
}
