/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>

#include "exit_status.h"
#include "util.h"

int exit_status_from_errno(int error) {
        switch (error < 0 ? -error : error) {
        case EACCES:
        case EPERM:
                return EXIT_NOPERM;
        default:
                return EXIT_OSERR;
        }
}

int exit_status_from_death(int code, int status) {
        return code == CLD_EXITED ? status : 128 + status;
}
