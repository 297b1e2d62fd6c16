/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "address.h"
#include "control.h"
#include "listener.h"
#include "ctl.h"
#include "escape.h"
#include "events.h"
#include "log.h"
#include "util.h"

/* Exit codes of `bindonce ctl`, bindonce(1) "EXIT STATUS". */
enum {
        CTL_OK = 0,
        CTL_FAILED = 1,
        CTL_NO_ANSWER = 69,             /* EX_UNAVAILABLE */
};

/* No bindonce answers with more: a status of WORKERS_MAX slots is under 2 MiB. */
#define ANSWER_MAX (16 * 1024 * 1024)
/* Every command but reload answers at once; reload waits for the outcome, which
 * --start-timeout and --min-ready bound on bindonce's side. */
#define TIMEOUT_DEFAULT_SEC 30

static void ctl_help(void) {
        printf("Usage: bindonce ctl [--name NAME | --control PATH] [--json] COMMAND [ARG...]\n"
               "\n"
               "Commands:\n"
               "  status [--json]          Workers and sockets\n"
               "  reload                   Rolling restart; waits for the outcome\n"
               "  restart SLOT|all         Hard restart\n"
               "  scale N                  Run N workers\n"
               "  signal SIG [SLOT|all]    Send SIG to the workers' process groups\n"
               "  stop                     Stop bindonce and its workers\n"
               "  upgrade [--exe PATH]     Execute a new bindonce in place; waits for the outcome\n"
               "  events [--json]          Follow the workers' lives, one line per event, until\n"
               "                           bindonce stops (or drops a follower too slow to read)\n"
               "\n"
               "Options:\n"
               "  --timeout SEC            Give up waiting for the answer after SEC seconds; 0: never\n"
               "                           (default: 30, and never for reload)\n"
               "\n"
               "Without --name or --control, the only bindonce in the default directory answers.\n");
}

/* No name given: the one control socket in the default directory, if there is just one. */
static int find_single(char *path, size_t size) {
        char probe[256], dir[256];
        char found[sizeof dir + 256 + 2] = "";
        unsigned n = 0;
        DIR *d;

        if (control_default_path("x", probe, sizeof probe, dir, sizeof dir) < 0)
                return log_usage("ctl: no default control directory (XDG_RUNTIME_DIR unset); use --control PATH");
        d = opendir(dir);
        if (!d) {
                log_usage("ctl: no bindonce is running here (no %s); use --name or --control", dir);
                return -ENOENT;
        }
        for (struct dirent *e; (e = readdir(d));) {
                size_t len = strlen(e->d_name);
                if (len > 5 && strcmp(e->d_name + len - 5, ".sock") == 0) {
                        n++;
                        snprintf(found, sizeof found, "%s/%s", dir, e->d_name);
                }
        }
        closedir(d);
        if (n == 0) {
                log_usage("ctl: no bindonce is running here (no control socket in %s)", dir);
                return -ENOENT;
        }
        if (n > 1)
                return log_usage("ctl: %u bindonce instances in %s; choose one with --name NAME", n, dir);
        if ((size_t) snprintf(path, size, "%s", found) >= size)
                return log_usage("ctl: the control socket path %s is too long", found);
        return 0;
}

/* Only root or our own user may answer: a socket file in a directory somebody else could
 * write to must not make us print, and act on, a stranger's words. */
/* Does uid own the directory that holds path, one nobody else may write to? A service's
 * RuntimeDirectory= is such a place: root may then trust its bindonce (User=). */
static bool dir_owned_by(const char *path, uid_t uid) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        struct stat st;

        if (!slash)
                return false;
        *(slash == dir ? slash + 1 : slash) = '\0';
        return stat(dir, &st) >= 0 && st.st_uid == uid && !(st.st_mode & (S_IWGRP | S_IWOTH));
}

/* Who answers must be bindonce, not whoever could plant a socket: root, ourselves, or (for
 * root steering a service's bindonce that runs as another user) the owner of the socket's
 * private directory. */
static int ctl_check_peer(int fd, const char *path) {
        struct ucred cred;
        socklen_t n = sizeof cred;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) < 0) {
                int r = -errno;
                log_usage("ctl: cannot tell who answers at %s: %m", path);
                return r;
        }
        if (cred.uid != 0 && cred.uid != geteuid() && !(geteuid() == 0 && dir_owned_by(path, cred.uid))) {
                log_usage("ctl: %s is answered by uid %u, neither root nor you: not trusting it", path,
                          (unsigned) cred.uid);
                return -EPERM;
        }
        return 0;
}

/* For a terminal, nothing of the answer may be an escape sequence; JSON is printed as
 * it came (its strings are escaped by bindonce). */
static void ctl_print(const char *s, size_t n, bool json) {
        _cleanup_free_ char *esc = NULL;

        if (json || !(esc = malloc(ESCAPE_CONTROL_MAX(n)))) {
                fwrite(s, 1, n, stdout);
                return;
        }
        (void) escape_control(s, n, esc, ESCAPE_CONTROL_MAX(n), ESCAPE_KEEP_NEWLINE);
        fputs(esc, stdout);
}

static int connect_to(const char *path) {
        SocketAddress a;
        const char *why;
        int fd;

        if (address_parse(path, SOCK_STREAM, &a, &why) < 0)
                return -ENAMETOOLONG;   /* an absolute path: too long is all that can be wrong */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, &a.sa, a.size) < 0) {
                int r = -errno;
                (void) close(fd);
                return r;
        }
        return fd;
}

/* Copies what came to stdout and keeps the last whole line in `last`. */
static int events_out(const char *data, size_t len, char *line, size_t *line_len, char *last) {
        for (size_t i = 0; i < len; i++) {
                if (data[i] == '\n') {
                        line[*line_len] = '\0';
                        memcpy(last, line, *line_len + 1);
                        *line_len = 0;
                } else if (*line_len < EVENT_LINE_MAX)
                        line[(*line_len)++] = data[i];
        }
        if (len > 0 && (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0))
                return -EPIPE;          /* stdout closed: nobody reads us any more */
        return 0;
}

/* `events`, after "OK\n": every line as it comes (`pending` is what came with the "OK\n"),
 * until bindonce closes the connection. Exits 1 when bindonce dropped us for reading too
 * slowly: its last line says so. */
static int follow_events(int fd, const char *path, const char *pending, size_t len) {
        char buf[16384], line[EVENT_LINE_MAX + 1] = "", last[EVENT_LINE_MAX + 1] = "";
        size_t line_len = 0;

        if (events_out(pending, len, line, &line_len, last) < 0)
                return CTL_FAILED;
        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != ECONNRESET)
                        log_usage("ctl: cannot read events from %s: %m", path);
                if (n <= 0)
                        break;
                if (events_out(buf, (size_t) n, line, &line_len, last) < 0)
                        return CTL_FAILED;
        }
        if (strstr(last, " dropped: ") || strstr(last, "\"event\":\"dropped\"")) {
                fprintf(stderr, "bindonce ctl: bindonce dropped this follower: it read too slowly\n");
                return CTL_FAILED;
        }
        return CTL_OK;
}

/* The whole answer, to EOF; for `events` (follow), the lines as they come once it is OK. */
/* The answer: "OK\n" and the body, or "ERROR ...\n". `follow` (ctl events): from "OK" on,
 * events until bindonce closes, with no timeout. */
static int read_answer(int fd, const char *path, bool follow, bool json, long timeout) {
        _cleanup_free_ char *answer = NULL;
        size_t len = 0, size = 0;

        for (;;) {
                if (size - len < 4096) {
                        char *a = realloc(answer, size + 65536);
                        if (!a) {
                                log_usage("ctl: out of memory reading the answer from %s", path);
                                return EXIT_OSERR;
                        }
                        answer = a;
                        size += 65536;
                }
                if (len >= ANSWER_MAX) {
                        log_usage("ctl: the answer from %s is longer than %d MiB: not bindonce's", path,
                                  ANSWER_MAX / (1024 * 1024));
                        return CTL_NO_ANSWER;
                }
                ssize_t n = read(fd, answer + len, size - len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                log_usage("ctl: no answer from %s within %ld s; bindonce may be busy or hung "
                                          "(see --timeout)", path, timeout);
                                return CTL_NO_ANSWER;
                        }
                        if (errno == ECONNRESET && len > 0)
                                break;
                        log_usage("ctl: cannot read the answer from %s: %m", path);
                        return CTL_NO_ANSWER;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (follow && len >= 3 && strncmp(answer, "OK\n", 3) == 0) {
                        struct timeval none = {};

                        /* Events come when they come: no timeout from here on. */
                        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
                        return follow_events(fd, path, answer + 3, len - 3);
                }
        }
        answer[len] = '\0';

        if (strncmp(answer, "OK\n", 3) == 0) {
                ctl_print(answer + 3, len - 3, json);
                return CTL_OK;
        }
        if (strncmp(answer, "ERROR ", 6) == 0) {
                fprintf(stderr, "bindonce ctl: %s", answer + 6);
                if (len == 0 || answer[len - 1] != '\n')
                        fputc('\n', stderr);
                return strstr(answer, "permission denied") ? EXIT_NOPERM : CTL_FAILED;
        }
        log_usage("ctl: %s closed the connection without an answer", path);
        return CTL_NO_ANSWER;
}

/* ctl's own options. */
typedef struct CtlArgs {
        const char *name, *control;
        bool json;
        long timeout;                   /* -1: the command's default */
} CtlArgs;

/* Returns -1 to go on, else the exit status (after --help, or a usage error). */
static int ctl_parse(int argc, char *argv[], CtlArgs *a) {
        static const struct option options[] = {
                { "name",    required_argument, NULL, 'n' },
                { "control", required_argument, NULL, 'c' },
                { "json",    no_argument,       NULL, 'j' },
                { "timeout", required_argument, NULL, 't' },
                { "help",    no_argument,       NULL, 'h' },
                {}
        };
        unsigned long v;
        int c;

        *a = (CtlArgs) { .timeout = -1 };
        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, "+:h", options, NULL)) >= 0)
                switch (c) {
                case 'n':
                        /* It names a file in the control directory: nothing that leaves it. */
                        if (!fdname_is_valid(optarg) || strchr(optarg, '/'))
                                return log_usage("ctl --name '%s': must be 1 to 255 printable characters without "
                                                 "':' or '/'", optarg), EXIT_USAGE;
                        a->name = optarg;
                        break;
                case 'c':
                        a->control = optarg;
                        break;
                case 'j':
                        a->json = true;
                        break;
                case 't':
                        if (parse_uint(optarg, 0, 86400, &v) < 0)
                                return log_usage("ctl --timeout '%s': must be whole seconds from 0 (never) to 86400",
                                                 optarg), EXIT_USAGE;
                        a->timeout = (long) v;
                        break;
                case 'h':
                        ctl_help();
                        return CTL_OK;
                case ':':
                        log_usage("ctl: option '%s' needs a value; see 'bindonce ctl --help'", argv[optind - 1]);
                        return EXIT_USAGE;
                default:
                        log_bad_option(argv[optind - 1], optopt, "bindonce ctl --help");
                        return EXIT_USAGE;
                }
        if (optind >= argc)
                return log_usage("ctl: no command; see 'bindonce ctl --help'"), EXIT_USAGE;
        return -1;
}

/* One line: the words joined by spaces, and --json when given before the command. Returns
 * its length, or 0 (logged). */
static size_t ctl_request(char **words, int n, bool json, char *request, size_t size) {
        size_t len = 0;

        for (int i = 0; i <= n; i++) {
                const char *word = i < n ? words[i] : json ? "--json" : NULL;
                size_t k;

                if (!word)
                        break;
                k = strlen(word);
                if (len + k + 2 > size || strpbrk(word, " \n")) {
                        log_usage("ctl: the request is too long or has spaces or newlines inside a word");
                        return 0;
                }
                if (i > 0)
                        request[len++] = ' ';
                memcpy(request + len, word, k);
                len += k;
        }
        request[len++] = '\n';
        return len;
}

/* The control socket's path: --control, --name's default, or the one socket there is.
 * Returns -1 to go on, else the exit status. */
static int ctl_path(const CtlArgs *a, char *path, size_t size) {
        char dir[256];
        int r;

        if (a->control)
                snprintf(path, size, "%s", a->control);
        else if (a->name) {
                if (control_default_path(a->name, path, size, dir, sizeof dir) < 0)
                        return log_usage("ctl: no default control directory (XDG_RUNTIME_DIR unset); use "
                                         "--control PATH"), EXIT_USAGE;
        } else {
                r = find_single(path, size);
                if (r < 0)
                        return r == -ENOENT ? CTL_NO_ANSWER : EXIT_USAGE;
        }
        return -1;
}

/* Connects, checks who answers, sends. Returns the fd, or -(exit status). */
static int ctl_send(const char *path, const char *request, size_t len, long timeout) {
        _cleanup_close_ int fd = connect_to(path);

        if (fd < 0) {
                if (fd == -EACCES || fd == -EPERM) {
                        log_usage("ctl: permission denied connecting to %s; run as root or as bindonce's user", path);
                        return -EXIT_NOPERM;
                }
                errno = -fd;
                log_usage("ctl: no bindonce answers at %s: %m", path);
                return -CTL_NO_ANSWER;
        }
        if (ctl_check_peer(fd, path) < 0)
                return -EXIT_NOPERM;
        if (timeout > 0) {
                struct timeval tv = { .tv_sec = timeout };
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        }
        /* A refused client is answered and closed before it may finish sending: read the
         * answer anyway. */
        if (send(fd, request, len, MSG_NOSIGNAL) != (ssize_t) len && errno != EPIPE && errno != ECONNRESET) {
                log_usage("ctl: cannot send to %s: %m", path);
                return -CTL_NO_ANSWER;
        }
        (void) shutdown(fd, SHUT_WR);
        return TAKE_FD(fd);
}

int ctl_main(int argc, char *argv[]) {
        char path[256], request[CONTROL_REQUEST_MAX + 2];
        _cleanup_free_ char *exe = NULL;
        _cleanup_close_ int fd = -1;
        size_t request_len;
        CtlArgs a;
        int r;

        r = ctl_parse(argc, argv, &a);
        if (r >= 0)
                return r;
        char **words = argv + optind;
        int n = argc - optind;

        /* upgrade --exe PATH: relative to ctl's directory, not bindonce's. */
        if (n == 3 && strcmp(words[0], "upgrade") == 0 && strcmp(words[1], "--exe") == 0 && words[2][0] != '/') {
                exe = realpath(words[2], NULL);
                if (!exe)
                        return log_usage("ctl upgrade --exe '%s': %m", words[2]), EXIT_USAGE;
                words[2] = exe;
        }
        request_len = ctl_request(words, n, a.json, request, sizeof request);
        if (request_len == 0)
                return EXIT_USAGE;
        r = ctl_path(&a, path, sizeof path);
        if (r >= 0)
                return r;
        /* A reload or an upgrade takes as long as it takes: bindonce bounds it itself. */
        if (a.timeout < 0)
                a.timeout = strcmp(words[0], "reload") == 0 || strcmp(words[0], "upgrade") == 0 ? 0
                                                                                                 : TIMEOUT_DEFAULT_SEC;
        fd = ctl_send(path, request, request_len, a.timeout);
        if (fd < 0)
                return -fd;

        /* "status --json" as words of the command asks for JSON too. */
        bool json = a.json;
        for (int i = 0; i < n; i++)
                json = json || strcmp(words[i], "--json") == 0;
        return read_answer(fd, path, strcmp(words[0], "events") == 0, json, a.timeout);
}
