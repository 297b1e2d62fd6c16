/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>

#include "identity.h"

static const char *env_get(const Identity *id, const char *name) {
        size_t n = strlen(name);

        for (size_t i = 0; i < id->n_env; i++)
                if (strncmp(id->env[i], name, n) == 0 && id->env[i][n] == '=')
                        return id->env[i] + n + 1;
        return NULL;
}

static void test_names_and_numbers(void **state) {
        uid_t uid;
        gid_t gid;

        assert_int_equal(identity_user("root", &uid, &gid), 0);
        assert_int_equal(uid, 0);
        assert_int_equal(gid, 0);
        assert_int_equal(identity_user("0", &uid, &gid), 0);
        assert_int_equal(uid, 0);
        assert_int_equal(gid, 0);
        /* A uid nobody has: known by number only, without a group. */
        assert_null(getpwuid(54321));
        assert_int_equal(identity_user("54321", &uid, &gid), 0);
        assert_int_equal(uid, 54321);
        assert_int_equal(gid, (gid_t) -1);
        assert_int_equal(identity_user("no-such-user-bindonce", &uid, &gid), -ESRCH);
        assert_int_equal(identity_user("-1", &uid, &gid), -ESRCH);
        assert_int_equal(identity_user("4294967295", &uid, &gid), -ESRCH);     /* (uid_t) -1 */

        assert_int_equal(identity_group("root", &gid), 0);
        assert_int_equal(gid, 0);
        assert_int_equal(identity_group("54321", &gid), 0);
        assert_int_equal(gid, 54321);
        assert_int_equal(identity_group("no-such-group-bindonce", &gid), -ESRCH);
}

static void test_resolve(void **state) {
        struct passwd *pw = getpwnam("nobody");
        WorkerSetup setup = WORKER_SETUP_NULL;
        Identity id;

        if (!pw)
                skip();
        assert_int_equal(identity_resolve("nobody", NULL, &setup, &id), 0);
        assert_true(setup.set_ids);
        assert_int_equal(setup.uid, pw->pw_uid);
        assert_int_equal(setup.gid, pw->pw_gid);
        /* initgroups(): the primary group is among them. */
        bool primary = false;
        for (size_t i = 0; i < setup.n_groups; i++)
                primary = primary || setup.groups[i] == pw->pw_gid;
        assert_true(primary);
        assert_string_equal(env_get(&id, "USER"), "nobody");
        assert_string_equal(env_get(&id, "LOGNAME"), "nobody");
        assert_string_equal(env_get(&id, "HOME"), pw->pw_dir);
        assert_string_equal(env_get(&id, "SHELL"), pw->pw_shell);
        identity_done(&id);

        /* --group alone: the gid, no supplementary group, no USER. */
        setup = WORKER_SETUP_NULL;
        assert_int_equal(identity_resolve(NULL, "0", &setup, &id), 0);
        assert_true(setup.set_ids);
        assert_int_equal(setup.uid, (uid_t) -1);
        assert_int_equal(setup.gid, 0);
        assert_int_equal(setup.n_groups, 0);
        assert_null(env_get(&id, "USER"));
        identity_done(&id);

        /* A bare uid needs --group; with it, its number is its name and / its home. */
        setup = WORKER_SETUP_NULL;
        assert_int_equal(identity_resolve("54321", NULL, &setup, &id), -ESRCH);
        identity_done(&id);
        assert_int_equal(identity_resolve("54321", "54321", &setup, &id), 0);
        assert_string_equal(env_get(&id, "USER"), "54321");
        assert_string_equal(env_get(&id, "HOME"), "/");
        assert_int_equal(setup.n_groups, 0);
        identity_done(&id);

        /* Neither: nothing to do. */
        setup = WORKER_SETUP_NULL;
        assert_int_equal(identity_resolve(NULL, NULL, &setup, &id), 0);
        assert_false(setup.set_ids);
        identity_done(&id);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names_and_numbers),
                cmocka_unit_test(test_resolve),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
