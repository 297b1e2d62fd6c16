/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ownership.h"

int dir_check_private(const char *dir, char *why, size_t size) {
        struct stat st;

        if (lstat(dir, &st) < 0) {
                snprintf(why, size, "cannot check %s: %s", dir, strerror(errno));
                return -errno;
        }
        if (!S_ISDIR(st.st_mode)) {
                snprintf(why, size, "%s is not a directory (a symlink?); remove it", dir);
                return -ENOTDIR;
        }
        if (st.st_uid != geteuid()) {
                snprintf(why, size, "%s belongs to uid %u, not to uid %u; remove it", dir,
                         (unsigned) st.st_uid, (unsigned) geteuid());
                return -EPERM;
        }
        if (st.st_mode & (S_IWGRP | S_IWOTH)) {
                snprintf(why, size, "%s is writable by others (mode %04o); chmod go-w it", dir,
                         (unsigned) (st.st_mode & 07777));
                return -EPERM;
        }
        return 0;
}
