/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "orphans.h"
#include "util.h"

static int children_fd = -1;

void children_list_close(void) {
        closep(&children_fd);
        children_fd = -1;
}

int children_list_open(void) {
        char path[64];

        if (children_fd >= 0)
                return 0;
        /* Single-threaded: our one task is the process itself. */
        snprintf(path, sizeof path, "/proc/self/task/%d/children", (int) getpid());
        children_fd = open(path, O_RDONLY | O_CLOEXEC);
        return children_fd < 0 ? -errno : 0;
}

int children_list(pid_t *pids, size_t max) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, len = 0, n = 0;

        if (children_fd < 0)
                return -EBADF;
        for (;;) {
                if (size - len < 4096) {
                        char *b = realloc(buf, size + 16384);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        size += 16384;
                }
                /* pread() from where this call got to, starting at 0: the file is generated
                 * anew for every read from its start, so no lseek() is needed between calls. */
                ssize_t k = pread(children_fd, buf + len, size - len, (off_t) len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t) k;
        }

        /* "123 456 789 " */
        for (size_t i = 0; i < len;) {
                long v = 0;

                if (buf[i] < '0' || buf[i] > '9') {
                        i++;
                        continue;
                }
                for (; i < len && buf[i] >= '0' && buf[i] <= '9'; i++)
                        v = v * 10 + (buf[i] - '0');
                if (n < max)
                        pids[n] = (pid_t) v;
                n++;
        }
        return (int) n;
}
