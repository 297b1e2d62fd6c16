/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "spawn.h"

/* The workers' --user and --group, resolved once at startup, in bindonce itself. */
typedef struct Identity {
        char *env[4];           /* USER=, LOGNAME=, HOME=, SHELL=, as systemd's User= sets them */
        size_t n_env;
        gid_t *groups;
        size_t n_groups;
} Identity;

/* A user name or a numeric uid; its primary group in *ret_gid ((gid_t) -1 for a uid that
 * the user database does not know). -ESRCH: no such user. */
int identity_user(const char *s, uid_t *ret_uid, gid_t *ret_gid);
/* A group name or a numeric gid. -ESRCH: no such group. */
int identity_group(const char *s, gid_t *ret_gid);

/* Fills setup's ids and id's environment from --user/--group (either may be NULL). Logs
 * one line naming the value and returns -ESRCH (exit 78) or -EINVAL. */
int identity_resolve(const char *user, const char *group, WorkerSetup *setup, Identity *id);
void identity_done(Identity *id);
