/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "listener.h"

/* Takes the sockets systemd passed us (socket units, or our own fd store given back).
 * Returns the number adopted (>0, *ret set), 0 when nothing was passed to us (bind the -l
 * options instead), or -EBADMSG for a broken activation environment, already logged in one
 * line. Removes LISTEN_* from our environment either way. */
int activation_adopt(Listener **ret);

/* Hands the sockets we bound to systemd's fd store (FDSTORE=1), so that they survive our
 * own restart or crash; a stored unix socket's file is then kept at close. Returns the
 * number stored, or -errno (logged). */
int activation_store(Listener *l, size_t n);
