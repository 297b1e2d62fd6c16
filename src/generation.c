/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generation.h"

int generation_new(Generation **ret, unsigned id, const GenerationTemplate *t) {
        Generation *g = calloc(1, sizeof *g);
        char **settings = NULL;
        int r = -ENOMEM;

        if (!g)
                return -ENOMEM;
        g->id = id;
        g->n_ref = 1;
        g->spawn = *t->spawn;
        g->spawn.env = (WorkerEnv) {};
        settings = calloc(t->n_setenv + 1, sizeof *settings);
        if (!settings || asprintf(&g->id_entry, "BINDONCE_GENERATION=%u", id) < 0) {
                g->id_entry = NULL;
                goto fail;
        }
        /* Last, so that neither bindonce's own environment nor -E can set it. */
        for (size_t i = 0; i < t->n_setenv; i++)
                settings[i] = t->setenv[i];
        settings[t->n_setenv] = g->id_entry;
        r = worker_env_build(&g->spawn.env, t->base_env, settings, t->n_setenv + 1, t->spawn->n_fds,
                             t->fdnames, t->notify_socket, t->watchdog_usec);
        free(settings);
        settings = NULL;
        if (r < 0)
                goto fail;
        *ret = g;
        return 0;
fail:
        free(settings);
        free(g->id_entry);
        free(g);
        return r;
}

Generation *generation_ref(Generation *g) {
        if (g)
                g->n_ref++;
        return g;
}

Generation *generation_unref(Generation *g) {
        if (!g || --g->n_ref > 0)
                return NULL;
        worker_env_done(&g->spawn.env);
        free(g->id_entry);
        free(g);
        return NULL;
}
