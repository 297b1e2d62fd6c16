/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "address.h"
#include "control.h"
#include "listener.h"
#include "ctl.h"
#include "log.h"
#include "util.h"

/* Exit codes of `bindonce ctl`, bindonce(1) "EXIT STATUS". */
enum {
        CTL_OK = 0,
        CTL_FAILED = 1,
        CTL_NO_ANSWER = 69,             /* EX_UNAVAILABLE */
};

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

int ctl_main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "name",    required_argument, NULL, 'n' },
                { "control", required_argument, NULL, 'c' },
                { "json",    no_argument,       NULL, 'j' },
                { "help",    no_argument,       NULL, 'h' },
                {}
        };
        const char *name = NULL, *control = NULL;
        char path[256], dir[256], request[CONTROL_REQUEST_MAX + 2];
        _cleanup_free_ char *answer = NULL;
        size_t len = 0, size = 0, request_len = 0;
        bool json = false;
        _cleanup_close_ int fd = -1;
        int c;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, "+:h", options, NULL)) >= 0)
                switch (c) {
                case 'n':
                        /* It names a file in the control directory: nothing that leaves it. */
                        if (!fdname_is_valid(optarg) || strchr(optarg, '/')) {
                                log_usage("ctl --name '%s': must be 1 to 255 printable characters without ':' or '/'",
                                          optarg);
                                return EXIT_USAGE;
                        }
                        name = optarg;
                        break;
                case 'c':
                        control = optarg;
                        break;
                case 'j':
                        json = true;
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
        if (optind >= argc) {
                log_usage("ctl: no command; see 'bindonce ctl --help'");
                return EXIT_USAGE;
        }

        /* upgrade --exe PATH: relative to ctl's directory, not bindonce's. */
        _cleanup_free_ char *exe = NULL;
        if (argc - optind == 3 && strcmp(argv[optind], "upgrade") == 0 && strcmp(argv[optind + 1], "--exe") == 0 &&
            argv[optind + 2][0] != '/') {
                exe = realpath(argv[optind + 2], NULL);
                if (!exe) {
                        log_usage("ctl upgrade --exe '%s': %m", argv[optind + 2]);
                        return EXIT_USAGE;
                }
                argv[optind + 2] = exe;
        }

        /* One line: the words joined by spaces. */
        for (int i = optind; i <= argc; i++) {
                const char *word = i < argc ? argv[i] : json ? "--json" : NULL;
                size_t n;

                if (!word)
                        break;
                n = strlen(word);
                if (request_len + n + 2 > sizeof request || strpbrk(word, " \n")) {
                        log_usage("ctl: the request is too long or has spaces or newlines inside a word");
                        return EXIT_USAGE;
                }
                if (i > optind)
                        request[request_len++] = ' ';
                memcpy(request + request_len, word, n);
                request_len += n;
        }
        request[request_len++] = '\n';

        if (control)
                snprintf(path, sizeof path, "%s", control);
        else if (name) {
                if (control_default_path(name, path, sizeof path, dir, sizeof dir) < 0) {
                        log_usage("ctl: no default control directory (XDG_RUNTIME_DIR unset); use --control PATH");
                        return EXIT_USAGE;
                }
        } else {
                int r = find_single(path, sizeof path);
                if (r < 0)
                        return r == -ENOENT ? CTL_NO_ANSWER : EXIT_USAGE;
        }

        fd = connect_to(path);
        if (fd < 0) {
                if (fd == -EACCES || fd == -EPERM) {
                        log_usage("ctl: permission denied connecting to %s; run as root or as bindonce's user", path);
                        return EXIT_NOPERM;
                }
                errno = -fd;
                log_usage("ctl: no bindonce answers at %s: %m", path);
                return CTL_NO_ANSWER;
        }
        /* A refused client is answered and closed before it may finish sending: read the
         * answer anyway. */
        if (send(fd, request, request_len, MSG_NOSIGNAL) != (ssize_t) request_len &&
            errno != EPIPE && errno != ECONNRESET) {
                log_usage("ctl: cannot send to %s: %m", path);
                return CTL_NO_ANSWER;
        }
        (void) shutdown(fd, SHUT_WR);

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
                ssize_t n = read(fd, answer + len, size - len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ECONNRESET && len > 0)
                                break;
                        log_usage("ctl: cannot read the answer from %s: %m", path);
                        return CTL_NO_ANSWER;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        answer[len] = '\0';

        if (strncmp(answer, "OK\n", 3) == 0) {
                fputs(answer + 3, stdout);
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
