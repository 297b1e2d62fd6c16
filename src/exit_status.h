/* SPDX-License-Identifier: MIT */
#pragma once

/* The one place that maps what went wrong to bindonce's documented exit status
 * (bindonce(1) EXIT STATUS; the values are in util.h). */

/* An OS error (-errno) met while setting up or running: 77 for a permission problem, 71
 * for anything else. */
int exit_status_from_errno(int error);

/* How a process ended, shell style: its exit status, or 128+N when signal N killed it.
 * code is a siginfo si_code (CLD_EXITED, CLD_KILLED, CLD_DUMPED). */
int exit_status_from_death(int code, int status);
