/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "output.h"
#include "util.h"

typedef enum OutputMode {
        OUTPUT_JOURNAL,
        OUTPUT_PREFIX,
} OutputMode;

struct WorkerOutput {
        OutputMode mode;
        /* journal: the stream header journald reads first (identifier, unit, priority,
         * level prefix, forward to syslog, kmsg, console) */
        char header[320];
        size_t header_len;
        struct sockaddr_un journal;
        int child_fd;                   /* prefix: the write end of the pending pipe */
};

static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        return e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) >= 0 &&
               st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

int worker_output_new(WorkerOutput **ret, const char *name, bool prefix) {
        bool journal = stderr_is_journal();
        WorkerOutput *o;
        int n;

        *ret = NULL;
        if (!journal && !prefix)
                return 0;
        o = calloc(1, sizeof *o);
        if (!o)
                return -ENOMEM;
        o->child_fd = -1;
        o->mode = journal ? OUTPUT_JOURNAL : OUTPUT_PREFIX;
        /* SYSLOG_IDENTIFIER=NAME; "<N>" prefixes honoured, as for a service's own stream. */
        n = snprintf(o->header, sizeof o->header, "%s\n\n%d\n1\n0\n0\n0\n", name, LOG_INFO);
        o->header_len = n > 0 && (size_t) n < sizeof o->header ? (size_t) n : 0;
        o->journal.sun_family = AF_UNIX;
        strcpy(o->journal.sun_path, "/run/systemd/journal/stdout");
        *ret = o;
        return 0;
}

WorkerOutput *worker_output_free(WorkerOutput *o) {
        if (!o)
                return NULL;
        closep(&o->child_fd);
        free(o);
        return NULL;
}

int worker_output_open(WorkerOutput *o, unsigned slot) {
        return -1;
}

/* The stream is connected by the worker's own process, so journald records its _PID,
 * _COMM and _CMDLINE, not bindonce's: `journalctl -u UNIT` tells the workers apart. */
static int child_journal_stream(const WorkerOutput *o) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -1;
        if (o->header_len == 0 ||
            connect(fd, (const struct sockaddr *) &o->journal, sizeof o->journal) < 0 ||
            shutdown(fd, SHUT_RD) < 0 ||
            write(fd, o->header, o->header_len) != (ssize_t) o->header_len) {
                (void) close(fd);
                return -1;      /* no journald after all: bindonce's own stderr */
        }
        return fd;
}

int worker_output_child(const WorkerOutput *o, int fd) {
        if (!o)
                return fd;
        return o->mode == OUTPUT_JOURNAL ? child_journal_stream(o) : fd;
}

void worker_output_started(WorkerOutput *o, pid_t pid) {
        closep(&o->child_fd);
        o->child_fd = -1;
}
