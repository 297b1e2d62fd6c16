/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* journald's native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram
 * per entry, sent to this socket, fields as KEY=VALUE lines or, binary-safe, as KEY, a
 * newline, a little-endian 64-bit length, the value and a newline. Written here rather than
 * taken from sd_journal_sendv(), whose socket blocks: nothing in bindonce's loop may. */
#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* One line of a worker's output, as one journal entry. */
typedef struct JournalLine {
        const char *identifier;         /* SYSLOG_IDENTIFIER= */
        pid_t pid;                      /* SYSLOG_PID=, and the credentials' pid */
        uid_t uid;                      /* the credentials' ids: the worker's */
        gid_t gid;
        unsigned slot;                  /* BINDONCE_SLOT= */
        const char *text;               /* the line without its newline; may begin with "<N>" */
        size_t len;
} JournalLine;

/* A "<N>" level prefix as journald takes it from a service's own output ("<N>", "<0N>" or
 * "<00N>", N from 0 to 7): returns N and moves *text and *len past the prefix. Anything
 * else: returns `def` and leaves both alone. */
int journal_level_prefix(const char **text, size_t *len, int def);

/* A datagram socket connected to journald's, close-on-exec and non-blocking: the fd, or
 * -errno (-ENOENT: no journald here). */
int journal_connect(void);

/* Sends one line as one entry (PRIORITY, SYSLOG_IDENTIFIER, SYSLOG_PID, BINDONCE_SLOT,
 * MESSAGE) without waiting. With `credentials`, the datagram carries the worker's pid, uid
 * and gid, so journald records its _PID, _COMM, _CMDLINE; the kernel allows a pid not our
 * own only with CAP_SYS_ADMIN (else -EPERM) and only while that pid exists (else -ESRCH).
 * Returns 0, -EAGAIN when journald's queue (or our send buffer) is full, or -errno. */
int journal_send_line(int fd, const JournalLine *l, bool credentials);
