/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "balance.h"
#include "fdbudget.h"
#include "supervisor-internal.h"

unsigned long fdbudget_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1UL << 30))
                return 1UL << 30;
        return (unsigned long) rl.rlim_cur;
}

long fdbudget_in_use(void) {
        struct stat st;
        DIR *d;
        long n = 0;

        /* Linux 6.2 and later give the count as the directory's size: no walk over thousands
         * of fds for every control connection. Older kernels say 0. */
        if (stat("/proc/self/fd", &st) >= 0 && st.st_size > 0)
                return (long) st.st_size;
        d = opendir("/proc/self/fd");

        if (!d)
                return errno == ENOENT ? 0 : -errno;    /* no /proc: no budget to keep */
        for (struct dirent *e; (e = readdir(d));)
                n += e->d_name[0] != '.';
        closedir(d);
        return n - 1;   /* the directory's own fd */
}

static unsigned clients;

void fdbudget_client_opened(void) {
        clients++;
}

void fdbudget_client_closed(void) {
        if (clients > 0)
                clients--;
}

static int check(unsigned long used, unsigned reserve) {
        return used + 1 + reserve <= fdbudget_limit() ? 0 : -EMFILE;
}

int fdbudget_check_client(void) {
        long used = fdbudget_in_use();

        return used < 0 ? -EMFILE : check((unsigned long) used, FDBUDGET_RESERVE_CLIENT);
}

/* A worker costs its pidfd, the read end of its output pipe (--log-prefix, the journal),
 * and in reuseport mode a socket of its own per address that can have one (slot 0 uses
 * the ones bound at start). */
static unsigned fds_per_worker(const Supervisor *sup) {
        unsigned n = sup->config.worker_setup.output ? 2 : 1;

        if (sup->config.balance == BALANCE_REUSEPORT)
                for (size_t j = 0; j < sup->n_listeners; j++)
                        n += balance_supported(&sup->listeners[j]);
        return n;
}

/* Counting /proc/self/fd is a pass over every open fd: done before each spawn, a start of
 * 10,000 workers spent most of its time there (quadratic). A count that leaves `room` fds
 * above the reserve is trusted for the next spawns up to half that room, each spawn
 * charged what a worker may hold; the other half is for whatever else opens an fd
 * meanwhile (a timer, the journal, a watch: a few; control clients are counted apart).
 * Near the limit the room is small and every spawn counts again: the reserve stays exact
 * where it matters. A scale check counts anew and drops the credit. */
static unsigned long spawn_credit;

int fdbudget_check_spawn(const Supervisor *sup) {
        unsigned long limit = fdbudget_limit(), per = fds_per_worker(sup);
        long used;

        if (spawn_credit >= per) {
                spawn_credit -= per;
                return 0;
        }
        used = fdbudget_in_use();
        if (used < 0)
                return -EMFILE;
        used -= (long) clients;
        if (used < 0)
                used = 0;
        if (check((unsigned long) used, FDBUDGET_RESERVE_SPAWN) < 0) {
                spawn_credit = 0;
                return -EMFILE;
        }
        spawn_credit = (limit - (unsigned long) used - 1 - FDBUDGET_RESERVE_SPAWN) / 2;
        spawn_credit -= spawn_credit >= per ? per : spawn_credit;
        return 0;
}

int fdbudget_scale_check(const Supervisor *sup, unsigned n, char *why, size_t size) {
        unsigned per = fds_per_worker(sup), have = sup->target, surge = sup->config.max_surge;
        unsigned long limit = fdbudget_limit(), room;
        long used;

        if (n <= have)
                return 0;
        spawn_credit = 0;
        used = fdbudget_in_use();
        if (used >= (long) clients)
                used -= (long) clients;         /* idle clients go; workers stay */
        if (used < 0) {
                snprintf(why, size, "cannot count the open files: %s", strerror((int) -used));
                return (int) used;
        }
        room = (unsigned long) used + FDBUDGET_RESERVE_SCALE + (unsigned long) surge * per < limit
                       ? (limit - (unsigned long) used - FDBUDGET_RESERVE_SCALE - (unsigned long) surge * per) / per : 0;
        if (n - have <= room)
                return 0;
        snprintf(why, size,
                 "the open file limit (%lu, %ld in use) carries at most %lu workers here (%u fds each, "
                 "%u kept for control clients and reaping); raise LimitNOFILE= or ulimit -n",
                 limit, used, have + room, per, FDBUDGET_RESERVE_SCALE);
        return -EMFILE;
}
