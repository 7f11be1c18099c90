#ifndef CLADE_CHILD_SIGNALS_H
#define CLADE_CHILD_SIGNALS_H
#include <signal.h>
#include <string.h>

/// In a forked child, before it runs another program: every signal back to its default action
/// and none blocked, whatever the parent's threads had set. Async-signal-safe.
static inline void clade_reset_child_signals(void) {
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    for (int signal_number = 1; signal_number < NSIG; signal_number++) sigaction(signal_number, &fallback, NULL);
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
}
#endif
