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

int fdbudget_check_spawn(void) {
        long used = fdbudget_in_use();

        if (used < 0)
                return -EMFILE;
        used -= (long) clients;
        return check(used > 0 ? (unsigned long) used : 0, FDBUDGET_RESERVE_SPAWN);
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

int fdbudget_scale_check(const Supervisor *sup, unsigned n, char *why, size_t size) {
        unsigned per = fds_per_worker(sup), have = sup->target, surge = sup->config.max_surge;
        unsigned long limit = fdbudget_limit(), room;
        long used;

        if (n <= have)
                return 0;
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
