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
 * The fault signals (SEGV, BUS, ILL, FPE, TRAP, ABRT, SYS) are blocked like the others:
 * one that another process sends (kill(1), a stray script) is read from the loop, logged
 * with its sender and ignored, so it neither ends bindonce nor orphans its workers. A
 * real fault still ends bindonce at once, with a core, as before (tried on Linux 6.18,
 * glibc 2.36; see the tests/integration/test_fault_signals.py docstring):
 * - the kernel delivers a synchronous fault (a bad access, a division by zero, ud2, int3,
 *   a seccomp trap) with force_sig_fault(): a blocked signal is unblocked and its action
 *   reset to the default, so it ends the process whatever our mask says;
 * - glibc's abort() (assert(), libsystemd's asserts, the sanitizers' abort_on_error)
 *   unblocks SIGABRT before it raises it, and the action is the default.
 * The cost, in the sanitizer build only: ASan's own handler for SEGV, BUS and FPE is reset
 * by that forced delivery too, so such a fault ends bindonce by the kernel's default
 * action, without ASan's "SEGV on unknown address" report. ASan's and UBSan's checks
 * (overflows, use after free, leaks, null pointers, undefined behaviour) do not go
 * through a signal and report as before.
 *
 * Left alone, at their defaults: TSTP-like stops and CONT, which suspend but never end;
 * WINCH and URG, ignored by default (a terminal resize must not fill the log); PIPE,
 * ignored in main(). KILL and STOP cannot be caught. */
typedef enum SignalAction {
        SIGNAL_SUPERVISOR,      /* acted on by the supervisor */
        SIGNAL_IGNORE,          /* logged (rate-limited) and ignored */
        SIGNAL_FAULT,           /* a fault signal: only a sent one reaches the loop; the same */
} SignalAction;

typedef struct SignalEntry {
        int sig;
        SignalAction action;
        const char *why;        /* for SIGNAL_IGNORE: the rest of the log line */
} SignalEntry;

static const char ignored[] = "ignored";
static const char sent_fault[] = "ignored: a fault signal sent by a process, not a fault of bindonce's";

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
        { SIGSTKFLT, SIGNAL_IGNORE, ignored },
        { SIGXCPU,   SIGNAL_IGNORE, "ignored: the CPU time limit (RLIMIT_CPU) is reached; SIGKILL follows at the hard limit" },
        { SIGXFSZ,   SIGNAL_IGNORE, "ignored: the file size limit (RLIMIT_FSIZE) is reached" },
        { SIGABRT,   SIGNAL_FAULT, sent_fault },    /* abort() unblocks it first */
        { SIGBUS,    SIGNAL_FAULT, sent_fault },
        { SIGSEGV,   SIGNAL_FAULT, sent_fault },
        { SIGTRAP,   SIGNAL_FAULT, sent_fault },
        { SIGFPE,    SIGNAL_FAULT, sent_fault },
        { SIGILL,    SIGNAL_FAULT, sent_fault },
        { SIGSYS,    SIGNAL_FAULT, sent_fault },    /* seccomp's is forced through */
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
                return e->action == SIGNAL_SUPERVISOR ? NULL : e->why;
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
        /* si_code > 0 is the kernel's own: for a fault signal one that was not forced on us
         * (a memory error reported ahead, BUS_MCEERR_AO), which has not stopped us either. */
        if (si->ssi_code > 0)
                (void) log_ratelimited(&limits[sig], LOG_WARNING, 0, "%s from the kernel (code %d): %s", name,
                                       (int) si->ssi_code, signals_ignored_why(sig));
        else
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
