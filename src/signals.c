/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "ratelimit.h"
#include "signals.h"
#include "util.h"

/* What bindonce does with each signal; bindonce(1) SIGNALS documents the same table.
 *
 * Left alone, at their defaults: the synchronous faults (SEGV, BUS, ILL, FPE, TRAP, ABRT):
 * blocking one would not survive a real fault (the kernel unblocks it and resets the
 * handler, taking a sanitizer's report with it); TSTP/TTIN-like stops and CONT, which
 * suspend but never end; WINCH and URG, ignored by default (a terminal resize must not
 * fill the log); PIPE, ignored in main(). KILL and STOP cannot be caught. */
typedef enum SignalAction {
        SIGNAL_SUPERVISOR,      /* acted on by the supervisor */
        SIGNAL_IGNORE,          /* logged (rate-limited) and ignored */
} SignalAction;

typedef struct SignalEntry {
        int sig;
        SignalAction action;
        const char *why;        /* for SIGNAL_IGNORE: the rest of the log line */
} SignalEntry;

static const char ignored[] = "ignored";

static const SignalEntry table[] = {
        { SIGTERM,   SIGNAL_SUPERVISOR, NULL },     /* graceful stop; again: SIGKILL */
        { SIGINT,    SIGNAL_SUPERVISOR, NULL },     /* the same */
        { SIGQUIT,   SIGNAL_SUPERVISOR, NULL },     /* stop now: SIGKILL to every worker */
        { SIGHUP,    SIGNAL_SUPERVISOR, NULL },     /* rolling restart */
        { SIGTTIN,   SIGNAL_SUPERVISOR, NULL },     /* one worker more */
        { SIGTTOU,   SIGNAL_SUPERVISOR, NULL },     /* one worker fewer */
        { SIGCHLD,   SIGNAL_SUPERVISOR, NULL },     /* added by the supervisor itself */
        { SIGUSR1,   SIGNAL_IGNORE, "ignored; to signal the workers, use 'bindonce ctl signal USR1'" },
        { SIGUSR2,   SIGNAL_SUPERVISOR, NULL },     /* upgrade in place (upgrade.c) */
        { SIGALRM,   SIGNAL_IGNORE, ignored },
        { SIGVTALRM, SIGNAL_IGNORE, ignored },
        { SIGPROF,   SIGNAL_IGNORE, ignored },
        { SIGIO,     SIGNAL_IGNORE, ignored },      /* = SIGPOLL */
        { SIGPWR,    SIGNAL_IGNORE, ignored },
        { SIGSYS,    SIGNAL_IGNORE, ignored },      /* seccomp's is forced through anyway */
        { SIGSTKFLT, SIGNAL_IGNORE, ignored },
        { SIGXCPU,   SIGNAL_IGNORE, "ignored: the CPU time limit (RLIMIT_CPU) is reached; SIGKILL follows at the hard limit" },
        { SIGXFSZ,   SIGNAL_IGNORE, "ignored: the file size limit (RLIMIT_FSIZE) is reached" },
};

static RateLimit limits[_NSIG];

static const SignalEntry *lookup(int sig) {
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].sig == sig)
                        return &table[i];
        return NULL;
}

/* The real-time signals glibc leaves to applications: their default is to end the process. */
static bool is_realtime(int sig) {
        return sig >= SIGRTMIN && sig <= SIGRTMAX;
}

const char *signals_ignored_why(int sig) {
        const SignalEntry *e = lookup(sig);

        if (e)
                return e->action == SIGNAL_IGNORE ? e->why : NULL;
        return is_realtime(sig) ? ignored : NULL;
}

void signals_block(void) {
        sigset_t mask;

        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                sigaddset(&mask, table[i].sig);
        for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
                sigaddset(&mask, sig);
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);
}

static void signal_text(int sig, char *buf, size_t size) {
        const char *n = sigabbrev_np(sig);

        if (is_realtime(sig))
                snprintf(buf, size, "SIGRTMIN+%d", sig - SIGRTMIN);
        else
                snprintf(buf, size, "SIG%s", n ? n : "?");
}

static int on_ignored(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        int sig = (int) si->ssi_signo;
        char name[24];

        signal_text(sig, name, sizeof name);
        (void) log_ratelimited(&limits[sig], LOG_WARNING, 0, "%s from pid %d (uid %u): %s", name,
                               (int) si->ssi_pid, (unsigned) si->ssi_uid, signals_ignored_why(sig));
        return 0;
}

int signals_attach(sd_event *e, sd_event_signal_handler_t handler, void *userdata) {
        int r;

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                if (table[i].sig == SIGCHLD)
                        continue;
                r = sd_event_add_signal(e, NULL, table[i].sig,
                                        table[i].action == SIGNAL_SUPERVISOR ? handler : on_ignored,
                                        table[i].action == SIGNAL_SUPERVISOR ? userdata : NULL);
                if (r < 0)
                        return r;
        }
        for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++) {
                r = sd_event_add_signal(e, NULL, sig, on_ignored, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}
