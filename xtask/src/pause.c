/* The sandbox ("pause") process of the local pause image: holds the pod's namespaces, reaps
 * orphans (it is PID 1 of a shared PID namespace) and exits 0 on SIGINT/SIGTERM.
 * Built by xtask with `gcc -static -O2`; see xtask/src/images.rs. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_chld(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    if (sigaction(SIGINT, &sa, 0) < 0 || sigaction(SIGTERM, &sa, 0) < 0)
        return 1;
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, 0) < 0)
        return 2;
    for (;;)
        pause();
}
