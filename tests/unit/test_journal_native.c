/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include "journal_native.h"

static int level_of(const char *s, const char **rest) {
        size_t len = strlen(s);
        int level = journal_level_prefix(&s, &len, LOG_INFO);

        assert_int_equal(len, strlen(s));
        *rest = s;
        return level;
}

/* As journald takes a level prefix from a service's own output (syslog_parse_priority()
 * without a facility). */
static void test_level_prefix(void **state) {
        const char *rest;

        assert_int_equal(level_of("<3>boom", &rest), 3);
        assert_string_equal(rest, "boom");
        assert_int_equal(level_of("<0>", &rest), 0);
        assert_string_equal(rest, "");
        assert_int_equal(level_of("<07>x", &rest), 7);
        assert_string_equal(rest, "x");
        assert_int_equal(level_of("<004>x", &rest), 4);
        assert_string_equal(rest, "x");
        /* Not a level: the line stays whole, at the default level. */
        static const char *const not_levels[] = {
                "<8>x", "<10>x", "<0004>x", "<>x", "<a>x", "<3x", "3>x", "<-1>x", "< 3>x", "", "<", "<3",
        };
        for (size_t i = 0; i < sizeof not_levels / sizeof not_levels[0]; i++) {
                assert_int_equal(level_of(not_levels[i], &rest), LOG_INFO);
                assert_ptr_equal(rest, not_levels[i]);
        }
}

static ssize_t send_and_receive(const JournalLine *l, bool credentials, char *buf, size_t size, struct ucred *cred) {
        int sv[2], one = 1;
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(struct ucred))];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control };
        ssize_t n;

        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
        assert_int_equal(journal_send_line(sv[0], l, credentials), 0);
        n = recvmsg(sv[1], &mh, MSG_DONTWAIT);
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
                        memcpy(cred, CMSG_DATA(c), sizeof *cred);
        close(sv[0]);
        close(sv[1]);
        return n;
}

/* The datagram, byte for byte: MESSAGE in the binary-safe form, whatever the line holds. */
static void test_entry_bytes(void **state) {
        static const char line[] = "<3>a\tb\0c";
        static const char want[] = "PRIORITY=3\nSYSLOG_IDENTIFIER=app\nSYSLOG_PID=4242\nBINDONCE_SLOT=7\n"
                                   "MESSAGE\n\x05\0\0\0\0\0\0\0a\tb\0c\n";
        JournalLine l = { .identifier = "app", .pid = 4242, .slot = 7, .text = line, .len = sizeof line - 1 };
        struct ucred cred = {};
        char buf[512];
        ssize_t n = send_and_receive(&l, false, buf, sizeof buf, &cred);

        assert_int_equal(n, sizeof want - 1);
        assert_memory_equal(buf, want, sizeof want - 1);
        /* Without credentials the kernel names the sender. */
        assert_int_equal(cred.pid, getpid());

        l = (JournalLine) { .identifier = "app", .pid = 1, .slot = 0, .text = "", .len = 0 };
        n = send_and_receive(&l, false, buf, sizeof buf, &cred);
        static const char empty[] = "PRIORITY=6\nSYSLOG_IDENTIFIER=app\nSYSLOG_PID=1\nBINDONCE_SLOT=0\nMESSAGE\n\0\0\0\0\0\0\0\0\n";
        assert_int_equal(n, sizeof empty - 1);
        assert_memory_equal(buf, empty, sizeof empty - 1);
}

/* Credentials of our own are always allowed; a pid that does not exist never is. */
static void test_credentials(void **state) {
        JournalLine l = { .identifier = "app", .pid = getpid(), .uid = getuid(), .gid = getgid(), .text = "x", .len = 1 };
        struct ucred cred = {};
        char buf[512];
        int sv[2];

        assert_true(send_and_receive(&l, true, buf, sizeof buf, &cred) > 0);
        assert_int_equal(cred.pid, getpid());
        assert_int_equal(cred.uid, getuid());

        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        l.pid = 0x3ffffffe;     /* above any pid_max */
        int r = journal_send_line(sv[0], &l, true);
        assert_true(r == -ESRCH || r == -EPERM);
        close(sv[0]);
        close(sv[1]);
}

/* A reader that does not read: -EAGAIN, never a wait. */
static void test_full_queue_is_eagain(void **state) {
        JournalLine l = { .identifier = "app", .pid = 1, .text = "flood", .len = 5 };
        int sv[2], r = 0;
        unsigned sent = 0;

        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
        while (sent < 1000000 && (r = journal_send_line(sv[0], &l, false)) == 0)
                sent++;
        assert_int_equal(r, -EAGAIN);
        assert_true(sent > 0);
        close(sv[0]);
        close(sv[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_level_prefix),
                cmocka_unit_test(test_entry_bytes),
                cmocka_unit_test(test_credentials),
                cmocka_unit_test(test_full_queue_is_eagain),
        };
        return cmocka_run_group_tests_name("journal_native", tests, NULL, NULL);
}
