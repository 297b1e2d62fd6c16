/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* Whether dir is a directory (not a symlink) of our own effective uid that nobody else may
 * write to: a control socket created in anything else could be replaced, or listened on
 * first, by another user. 0, or -EPERM/-ENOTDIR/-errno with the reason and the fix in why. */
int dir_check_private(const char *dir, char *why, size_t size);
