/* SPDX-License-Identifier: MIT */
#pragma once

/* Closes every fd from `from` up, in a vfork() child before exec: close_range(), and when
 * the kernel refuses it (ENOSYS before Linux 5.9, EPERM under a seccomp filter), the fds
 * listed by /proc/self/fd read with getdents64 into a stack buffer, or failing that every
 * number up to the open-file limit. Async-signal-safe: no allocation, no stdio. Returns 0,
 * or -errno when not even the last way worked (then the exec must not happen). */
int close_from(int from);
