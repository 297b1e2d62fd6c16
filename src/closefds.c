/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "closefds.h"

struct linux_dirent64 {
        uint64_t d_ino;
        int64_t d_off;
        unsigned short d_reclen;
        unsigned char d_type;
        char d_name[];
};

static int parse_fd(const char *s) {
        int v = 0;

        if (!*s)
                return -1;
        for (; *s; s++) {
                if (*s < '0' || *s > '9' || v > 100000000)
                        return -1;
                v = v * 10 + (*s - '0');
        }
        return v;
}

/* One pass over /proc/self/fd; closing while listing is safe, and a second pass catches
 * what the first may have skipped. */
static int close_listed(int from) {
        char buf[4096] __attribute__((aligned(8)));

        for (int pass = 0; pass < 2; pass++) {
                int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                long n;

                if (dir < 0)
                        return -errno;
                while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0)
                        for (long off = 0; off < n;) {
                                struct linux_dirent64 *d = (struct linux_dirent64 *) (buf + off);
                                int fd = parse_fd(d->d_name);

                                if (fd >= from && fd != dir)
                                        (void) close(fd);
                                off += d->d_reclen;
                        }
                (void) close(dir);
                if (n < 0)
                        return -errno;
        }
        return 0;
}

int close_from(int from) {
        struct rlimit rl;
        rlim_t limit;

        if (close_range((unsigned) from, ~0U, 0) >= 0)
                return 0;
        if (close_listed(from) >= 0)
                return 0;
        /* No /proc: every number below our own (raised) limit, which no fd can pass. */
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -errno;
        limit = rl.rlim_cur < (1U << 20) ? rl.rlim_cur : (1U << 20);
        for (rlim_t fd = (rlim_t) from; fd < limit; fd++)
                (void) close((int) fd);
        return 0;
}
