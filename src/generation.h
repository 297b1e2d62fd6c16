/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "spawn.h"

/* What it takes to start a worker of one generation: a snapshot of the spawn parameters
 * (command, environment with BINDONCE_GENERATION, sockets count, signal and limit resets).
 * A reload starts a new generation; a failed roll starts workers of the previous one
 * again, so a generation lives as long as a worker or the supervisor holds it. */
typedef struct Generation {
        unsigned id;
        unsigned n_ref;
        SpawnParams spawn;
        char *id_entry;                 /* "BINDONCE_GENERATION=id", in spawn.env */
} Generation;

typedef struct GenerationTemplate {
        const SpawnParams *spawn;       /* argv, n_fds, devnull, signals, limits; env unused */
        char *const *base_env;
        char *const *setenv;
        size_t n_setenv;
        const char *fdnames;
        const char *notify_socket;
        uint64_t watchdog_usec;
} GenerationTemplate;

int generation_new(Generation **ret, unsigned id, const GenerationTemplate *t);
Generation *generation_ref(Generation *g);
Generation *generation_unref(Generation *g);
