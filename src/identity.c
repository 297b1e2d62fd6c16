/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"
#include "log.h"
#include "util.h"

int identity_user(const char *s, uid_t *ret_uid, gid_t *ret_gid) {
        unsigned long v;
        struct passwd *pw;

        errno = 0;
        pw = getpwnam(s);
        if (!pw && parse_uint(s, 0, UINT_MAX - 1, &v) >= 0) {
                errno = 0;
                pw = getpwuid((uid_t) v);
                if (!pw) {
                        *ret_uid = (uid_t) v;
                        *ret_gid = (gid_t) -1;
                        return 0;
                }
        }
        if (!pw)
                return -ESRCH;
        *ret_uid = pw->pw_uid;
        *ret_gid = pw->pw_gid;
        return 0;
}

int identity_group(const char *s, gid_t *ret_gid) {
        unsigned long v;
        struct group *gr = getgrnam(s);

        if (gr) {
                *ret_gid = gr->gr_gid;
                return 0;
        }
        if (parse_uint(s, 0, UINT_MAX - 1, &v) < 0)
                return -ESRCH;
        *ret_gid = (gid_t) v;
        return 0;
}

/* The user's groups as initgroups() would set them, with `gid` among them. */
static int user_groups(const char *name, gid_t gid, WorkerSetup *setup, Identity *id) {
        int n = 16;

        for (;;) {
                gid_t *g = realloc(id->groups, (size_t) n * sizeof *g);
                int want = n;

                if (!g)
                        return -ENOMEM;
                id->groups = g;
                if (getgrouplist(name, gid, g, &want) >= 0) {
                        setup->groups = id->groups;
                        setup->n_groups = id->n_groups = (size_t) want;
                        return 0;
                }
                if (want <= n)
                        return -EIO;
                n = want;
        }
}

static int put_env(Identity *id, const char *name, const char *value) {
        if (asprintf(&id->env[id->n_env], "%s=%s", name, value) < 0)
                return -ENOMEM;
        id->n_env++;
        return 0;
}

/* USER, LOGNAME, HOME and SHELL, as systemd sets them for User=; a uid the database does
 * not know gets its number as its name and / as its home, never bindonce's own. */
static int user_env(uid_t uid, Identity *id) {
        struct passwd *pw = getpwuid(uid);
        char digits[16];

        if (!pw) {
                snprintf(digits, sizeof digits, "%u", (unsigned) uid);
                if (put_env(id, "USER", digits) < 0 || put_env(id, "LOGNAME", digits) < 0 ||
                    put_env(id, "HOME", "/") < 0)
                        return -ENOMEM;
                return 0;
        }
        if (put_env(id, "USER", pw->pw_name) < 0 || put_env(id, "LOGNAME", pw->pw_name) < 0 ||
            put_env(id, "HOME", pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/") < 0 ||
            put_env(id, "SHELL", pw->pw_shell && *pw->pw_shell ? pw->pw_shell : "/bin/sh") < 0)
                return -ENOMEM;
        return 0;
}

int identity_resolve(const char *user, const char *group, WorkerSetup *setup, Identity *id) {
        uid_t uid = (uid_t) -1;
        gid_t gid = (gid_t) -1;
        struct passwd *pw;
        int r;

        *id = (Identity) {};
        if (!user && !group)
                return 0;
        if (user && identity_user(user, &uid, &gid) < 0)
                return log_usage("--user '%s': no such user; give a user name or a numeric uid", user), -ESRCH;
        if (group && identity_group(group, &gid) < 0)
                return log_usage("--group '%s': no such group; give a group name or a numeric gid", group), -ESRCH;
        if (gid == (gid_t) -1)
                return log_usage("--user '%s': the user database does not know this uid, so it has no group; "
                                 "add --group GROUP", user), -ESRCH;

        setup->set_ids = true;
        setup->uid = uid;
        setup->gid = gid;
        /* Only the groups of a known user, as initgroups(); --group alone, or a bare uid, gets
         * no supplementary group at all (bindonce's own are dropped). */
        pw = user ? getpwuid(uid) : NULL;
        r = pw ? user_groups(pw->pw_name, gid, setup, id) : 0;
        if (r >= 0 && user)
                r = user_env(uid, id);
        if (r < 0)
                return log_error_errno(r, "Cannot read the groups of user '%s': %m", user);
        return 0;
}

void identity_done(Identity *id) {
        for (size_t i = 0; i < id->n_env; i++)
                free(id->env[i]);
        free(id->groups);
        *id = (Identity) {};
}
