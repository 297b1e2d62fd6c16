/* SPDX-License-Identifier: MIT */
#pragma once

/* `bindonce ctl ...`: argv starts at "ctl". Returns the exit code. */
int ctl_main(int argc, char *argv[]);
