/* SPDX-License-Identifier: MIT */
/*
 * testworker: the worker the integration tests run under bindonce.
 *
 * It reports from inside what a worker got (fds, environment, signal state,
 * process group) and then serves on every socket it was handed, counting what
 * it accepted and what it completed so that a test that SIGKILLs it knows how
 * many requests died with it.
 *
 * Order matters: the fd inventory is taken first thing, before this process
 * opens anything else, so "nothing else open" can be checked. Only the
 * directory fd used to read /proc/self/fd exists during the walk, and it is
 * excluded. sd_listen_fds_with_names() (--via-library) sets FD_CLOEXEC on the
 * fds it returns, so it runs after the inventory.
 *
 * Report: $TW_DIR/report-<pid>.json, written to a dot-file and renamed, so a
 * reader never sees a partial file. Counters: $TW_DIR/count-<pid>, created
 * before the report appears, rewritten in place with one pwrite() at offset 0
 * around every accept and every response:
 *     "accepted=%020llu completed=%020llu window=%c\n"
 * After a SIGKILL, accepted - completed is what died with the worker, exactly, unless
 * the kill landed in one of the two windows no counter can close: window=a (inside
 * accept(): one more connection may have been taken) or window=s (inside send(): the
 * last response may have reached the client). The test widens its bound by one there.
 * Without TW_DIR nothing is written; the worker just serves.
 *
 * SIGTERM: finish the request in hand, then exit 0 (a graceful stop loses
 * nothing). With --ignore-term it is ignored. SIGTERM is blocked except
 * inside ppoll(), so the flag cannot be missed between the check and the wait.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#define MAX_FDS 1024
#define REQ_MAX 8192
#define IO_TIMEOUT_S 5
#define GRANDCHILD_LIFETIME_S 300

struct fdrec {
        int fd;
        char target[PATH_MAX];
        bool cloexec;
        bool nonblock;
        bool is_socket;
        int so_type;
        int so_domain;
        int acceptconn;
        char sockname[sizeof(((struct sockaddr_un *) 0)->sun_path) + 64];
};

/* Options. */
static bool arg_via_library;
static bool arg_ignore_term;
static bool arg_crash_at_start;
static bool arg_grandchild;
static int arg_exit_at_start = -1;
static long arg_delay_ms;
static long arg_serve_ms = -1;

/* What was seen at start. */
static struct fdrec fds_seen[MAX_FDS];
static size_t n_fds_seen;
static bool fds_truncated;

static volatile sig_atomic_t got_term;
static int count_fd = -1;
static unsigned long long n_accepted, n_completed;
/* Which unobservable window the worker is in: '-' none, 'a' inside accept (a connection
 * may be dequeued but is not yet counted), 's' inside send (the response may have reached
 * the client but is not yet counted as completed). */
static char window = '-';
static const char *slot = "?";

static void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warnx_(const char *fmt, ...) {
        char buf[512];
        va_list ap;
        int n = snprintf(buf, sizeof buf, "testworker[%d]: ", (int) getpid());
        if (n < 0)
                return;
        va_start(ap, fmt);
        vsnprintf(buf + n, sizeof buf - (size_t) n, fmt, ap);
        va_end(ap);
        size_t len = strlen(buf);
        if (len < sizeof buf - 1) {
                buf[len++] = '\n';
                buf[len] = 0;
        }
        /* One write, so lines of concurrent workers do not interleave. */
        ssize_t r = write(STDERR_FILENO, buf, len);
        (void) r;
}

static int parse_long(const char *s, long min, long max, long *ret) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end != 0 || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static void usage_exit(const char *what) {
        fprintf(stderr, "testworker: %s\n"
                "usage: testworker [--via-library] [--delay-ms N] [--ignore-term]\n"
                "                  [--exit-at-start CODE] [--crash-at-start] [--grandchild]\n"
                "                  [--serve-ms N]\n", what);
        _exit(64);  /* no atexit work, and no leak report for the start state */
}

static void parse_argv(int argc, char **argv) {
        enum { O_VIA = 0x100, O_DELAY, O_IGNTERM, O_EXIT, O_CRASH, O_GRAND, O_SERVE };
        static const struct option opts[] = {
                { "via-library",   no_argument,       NULL, O_VIA },
                { "delay-ms",      required_argument, NULL, O_DELAY },
                { "ignore-term",   no_argument,       NULL, O_IGNTERM },
                { "exit-at-start", required_argument, NULL, O_EXIT },
                { "crash-at-start", no_argument,      NULL, O_CRASH },
                { "grandchild",    no_argument,       NULL, O_GRAND },
                { "serve-ms",      required_argument, NULL, O_SERVE },
                {}
        };
        long v;
        int c;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "+", opts, NULL)) >= 0) {
                switch (c) {
                case O_VIA: arg_via_library = true; break;
                case O_IGNTERM: arg_ignore_term = true; break;
                case O_CRASH: arg_crash_at_start = true; break;
                case O_GRAND: arg_grandchild = true; break;
                case O_DELAY:
                        if (parse_long(optarg, 0, 3600000, &v) < 0)
                                usage_exit("bad --delay-ms");
                        arg_delay_ms = v;
                        break;
                case O_SERVE:
                        if (parse_long(optarg, 0, 86400000, &v) < 0)
                                usage_exit("bad --serve-ms");
                        arg_serve_ms = v;
                        break;
                case O_EXIT:
                        if (parse_long(optarg, 0, 255, &v) < 0)
                                usage_exit("bad --exit-at-start");
                        arg_exit_at_start = (int) v;
                        break;
                default:
                        usage_exit("unknown option");
                }
        }
        if (optind < argc)
                usage_exit("unexpected argument");
}

static void format_sockname(int fd, char *out, size_t outsz) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char host[INET6_ADDRSTRLEN];

        out[0] = 0;
        memset(&ss, 0, sizeof ss);
        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0) {
                snprintf(out, outsz, "error:%s", strerror(errno));
                return;
        }
        switch (ss.ss_family) {
        case AF_INET: {
                const struct sockaddr_in *sin = (const struct sockaddr_in *) &ss;
                inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
                snprintf(out, outsz, "%s:%u", host, ntohs(sin->sin_port));
                break;
        }
        case AF_INET6: {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &ss;
                inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
                if (sin6->sin6_scope_id != 0)
                        snprintf(out, outsz, "[%s%%%u]:%u", host, sin6->sin6_scope_id,
                                 ntohs(sin6->sin6_port));
                else
                        snprintf(out, outsz, "[%s]:%u", host, ntohs(sin6->sin6_port));
                break;
        }
        case AF_UNIX: {
                const struct sockaddr_un *sun = (const struct sockaddr_un *) &ss;
                size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                        ? len - offsetof(struct sockaddr_un, sun_path) : 0;
                if (plen > sizeof sun->sun_path)
                        plen = sizeof sun->sun_path;
                if (plen == 0) {
                        snprintf(out, outsz, "%s", "");
                } else if (sun->sun_path[0] == 0) {
                        /* Abstract: '@' then the name (may hold NULs; shown up to the first). */
                        snprintf(out, outsz, "@%.*s", (int) (plen - 1), sun->sun_path + 1);
                } else {
                        snprintf(out, outsz, "%.*s", (int) strnlen(sun->sun_path, plen),
                                 sun->sun_path);
                }
                break;
        }
        default:
                snprintf(out, outsz, "family:%d", ss.ss_family);
        }
}

/* The inventory: must run before this process opens anything. */
static void record_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        if (!d) {
                warnx_("opendir /proc/self/fd: %s", strerror(errno));
                return;
        }
        int dfd = dirfd(d);
        struct dirent *de;

        while ((de = readdir(d))) {
                long v;
                if (de->d_name[0] == '.' || parse_long(de->d_name, 0, INT_MAX, &v) < 0)
                        continue;
                if (v == dfd)
                        continue;
                if (n_fds_seen >= MAX_FDS) {
                        fds_truncated = true;
                        continue;
                }
                struct fdrec *r = &fds_seen[n_fds_seen++];
                char p[64];
                r->fd = (int) v;
                snprintf(p, sizeof p, "/proc/self/fd/%d", r->fd);
                ssize_t n = readlink(p, r->target, sizeof r->target - 1);
                r->target[n < 0 ? 0 : n] = 0;
                int fl = fcntl(r->fd, F_GETFD);
                r->cloexec = fl >= 0 && (fl & FD_CLOEXEC);
                fl = fcntl(r->fd, F_GETFL);
                r->nonblock = fl >= 0 && (fl & O_NONBLOCK);

                socklen_t l = sizeof r->so_type;
                r->is_socket = getsockopt(r->fd, SOL_SOCKET, SO_TYPE, &r->so_type, &l) == 0;
                if (r->is_socket) {
                        l = sizeof r->so_domain;
                        if (getsockopt(r->fd, SOL_SOCKET, SO_DOMAIN, &r->so_domain, &l) < 0)
                                r->so_domain = -1;
                        l = sizeof r->acceptconn;
                        if (getsockopt(r->fd, SOL_SOCKET, SO_ACCEPTCONN, &r->acceptconn, &l) < 0)
                                r->acceptconn = -1;
                        format_sockname(r->fd, r->sockname, sizeof r->sockname);
                }
        }
        closedir(d);

        /* readdir order is not numeric order everywhere; sort for readers. */
        for (size_t i = 1; i < n_fds_seen; i++)
                for (size_t j = i; j > 0 && fds_seen[j - 1].fd > fds_seen[j].fd; j--) {
                        struct fdrec t = fds_seen[j];
                        fds_seen[j] = fds_seen[j - 1];
                        fds_seen[j - 1] = t;
                }
}

/* ---- JSON output ---- */

static void json_str(FILE *f, const char *s) {
        if (!s) {
                fputs("null", f);
                return;
        }
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fprintf(f, "\\%c", *p);
                else if (*p < 0x20 || *p >= 0x7f)
                        /* Bytes >= 0x80 as U+0080..U+00FF: keeps the file valid UTF-8. */
                        fprintf(f, "\\u%04x", *p);
                else
                        fputc(*p, f);
        }
        fputc('"', f);
}

static const char *type_name(int t) {
        switch (t) {
        case SOCK_STREAM: return "stream";
        case SOCK_DGRAM: return "dgram";
        case SOCK_SEQPACKET: return "seqpacket";
        case SOCK_RAW: return "raw";
        default: return NULL;
        }
}

static const char *domain_name(int d) {
        switch (d) {
        case AF_INET: return "inet";
        case AF_INET6: return "inet6";
        case AF_UNIX: return "unix";
        case AF_NETLINK: return "netlink";
        default: return NULL;
        }
}

static void json_name_or_int(FILE *f, const char *name, int v) {
        if (name)
                json_str(f, name);
        else
                fprintf(f, "%d", v);
}

struct status_lines {
        char sigblk[32], sigign[32], sigcgt[32], sigpnd[32], shdpnd[32];
};

static void read_status(struct status_lines *st) {
        memset(st, 0, sizeof *st);
        FILE *f = fopen("/proc/self/status", "re");
        if (!f)
                return;
        char line[256];
        while (fgets(line, sizeof line, f)) {
                char *dst = NULL;
                if (!strncmp(line, "SigBlk:", 7))
                        dst = st->sigblk;
                else if (!strncmp(line, "SigIgn:", 7))
                        dst = st->sigign;
                else if (!strncmp(line, "SigCgt:", 7))
                        dst = st->sigcgt;
                else if (!strncmp(line, "SigPnd:", 7))
                        dst = st->sigpnd;
                else if (!strncmp(line, "ShdPnd:", 7))
                        dst = st->shdpnd;
                if (!dst)
                        continue;
                const char *v = line + 7;
                v += strspn(v, " \t");
                snprintf(dst, 32, "%.*s", (int) strcspn(v, "\n"), v);
        }
        fclose(f);
}

static const char *const env_watch[] = {
        "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
        "BINDONCE_WORKER", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
};

struct start_state {
        pid_t pid, ppid, pgid, sid;
        char *env[sizeof env_watch / sizeof env_watch[0]];
        bool env_present[sizeof env_watch / sizeof env_watch[0]];
        struct status_lines st;
        int lib_n;
        char **lib_names;
        pid_t grandchild;
};

static int write_report(const char *dir, const struct start_state *s, int argc, char **argv) {
        char tmp[PATH_MAX], final[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s/.tmp-report-%d", dir, (int) s->pid);
        snprintf(final, sizeof final, "%s/report-%d.json", dir, (int) s->pid);

        FILE *f = fopen(tmp, "we");
        if (!f) {
                warnx_("cannot create %s: %s", tmp, strerror(errno));
                return -errno;
        }
        fprintf(f, "{\n  \"pid\": %d,\n  \"ppid\": %d,\n  \"pgid\": %d,\n  \"sid\": %d,\n",
                (int) s->pid, (int) s->ppid, (int) s->pgid, (int) s->sid);
        fputs("  \"argv\": [", f);
        for (int i = 0; i < argc; i++) {
                if (i)
                        fputs(", ", f);
                json_str(f, argv[i]);
        }
        fputs("],\n  \"fds_truncated\": ", f);
        fputs(fds_truncated ? "true" : "false", f);
        fputs(",\n  \"fds\": [", f);
        for (size_t i = 0; i < n_fds_seen; i++) {
                const struct fdrec *r = &fds_seen[i];
                fprintf(f, "%s\n    {\"fd\": %d, \"target\": ", i ? "," : "", r->fd);
                json_str(f, r->target);
                fprintf(f, ", \"cloexec\": %s, \"nonblock\": %s, \"socket\": ",
                        r->cloexec ? "true" : "false", r->nonblock ? "true" : "false");
                if (!r->is_socket) {
                        fputs("null}", f);
                        continue;
                }
                fputs("{\"type\": ", f);
                json_name_or_int(f, type_name(r->so_type), r->so_type);
                fputs(", \"domain\": ", f);
                json_name_or_int(f, domain_name(r->so_domain), r->so_domain);
                fprintf(f, ", \"acceptconn\": %s, \"sockname\": ",
                        r->acceptconn < 0 ? "null" : r->acceptconn ? "true" : "false");
                json_str(f, r->sockname);
                fputs("}}", f);
        }
        fputs("\n  ],\n  \"env\": {", f);
        for (size_t i = 0; i < sizeof env_watch / sizeof env_watch[0]; i++) {
                fprintf(f, "%s\n    ", i ? "," : "");
                json_str(f, env_watch[i]);
                fputs(": ", f);
                json_str(f, s->env_present[i] ? s->env[i] : NULL);
        }
        fputs("\n  },\n  \"environ\": [", f);
        extern char **environ;
        for (size_t i = 0; environ && environ[i]; i++) {
                fputs(i ? ", " : "", f);
                json_str(f, environ[i]);
        }
        fputs("],\n", f);
        fputs("  \"sigblk\": ", f); json_str(f, s->st.sigblk);
        fputs(",\n  \"sigign\": ", f); json_str(f, s->st.sigign);
        fputs(",\n  \"sigcgt\": ", f); json_str(f, s->st.sigcgt);
        fputs(",\n  \"sigpnd\": ", f); json_str(f, s->st.sigpnd);
        fputs(",\n  \"shdpnd\": ", f); json_str(f, s->st.shdpnd);
        fputs(",\n  \"fd0\": ", f);
        const char *fd0 = NULL;
        for (size_t i = 0; i < n_fds_seen; i++)
                if (fds_seen[i].fd == 0)
                        fd0 = fds_seen[i].target;
        json_str(f, fd0);
        fputs(",\n  \"library\": ", f);
        if (!arg_via_library) {
                fputs("null", f);
        } else {
                fprintf(f, "{\"n\": %d, \"names\": ", s->lib_n);
                if (s->lib_n < 0 || !s->lib_names) {
                        fputs("null", f);
                } else {
                        fputc('[', f);
                        for (int i = 0; i < s->lib_n; i++) {
                                fputs(i ? ", " : "", f);
                                json_str(f, s->lib_names[i]);
                        }
                        fputc(']', f);
                }
                fputc('}', f);
        }
        fprintf(f, ",\n  \"grandchild\": ");
        if (s->grandchild > 0)
                fprintf(f, "%d", (int) s->grandchild);
        else
                fputs("null", f);
        fputs("\n}\n", f);

        if (fflush(f) != 0 || ferror(f)) {
                int e = errno;
                fclose(f);
                unlink(tmp);
                warnx_("cannot write %s: %s", tmp, strerror(e));
                return -e;
        }
        if (fclose(f) != 0) {
                warnx_("cannot write %s: %s", tmp, strerror(errno));
                unlink(tmp);
                return -errno;
        }
        if (rename(tmp, final) < 0) {
                warnx_("cannot rename %s: %s", tmp, strerror(errno));
                unlink(tmp);
                return -errno;
        }
        return 0;
}

/* ---- counters ---- */

static void counters_store(void) {
        if (count_fd < 0)
                return;
        char buf[80];
        int n = snprintf(buf, sizeof buf, "accepted=%020llu completed=%020llu window=%c\n",
                         n_accepted, n_completed, window);
        ssize_t r;
        do
                r = pwrite(count_fd, buf, (size_t) n, 0);
        while (r < 0 && errno == EINTR);
}

static int counters_open(const char *dir, pid_t pid) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/count-%d", dir, (int) pid);
        count_fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (count_fd < 0) {
                warnx_("cannot create %s: %s", p, strerror(errno));
                return -errno;
        }
        counters_store();
        return 0;
}

/* ---- time ---- */

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
        struct timespec until;
        if (ms <= 0)
                return;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        /* Absolute deadline: an EINTR does not stretch or shorten the sleep. */
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
                ;
}

/* ---- serving ---- */

static char response[256];
static size_t response_len;
static const char *body;

static bool looks_like_http(const char *buf, size_t n) {
        static const char *const methods[] = { "GET ", "HEAD ", "POST ", "PUT ", "DELETE ",
                                               "OPTIONS " };
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
                size_t l = strlen(methods[i]);
                if (n >= l ? !memcmp(buf, methods[i], l) : !memcmp(buf, methods[i], n))
                        return true;
        }
        return false;
}

static bool request_complete(const char *buf, size_t n) {
        if (looks_like_http(buf, n))
                return memmem(buf, n, "\r\n\r\n", 4) != NULL;
        return memchr(buf, '\n', n) != NULL;
}

static bool send_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return false;
                }
                p += w;
                n -= (size_t) w;
        }
        return true;
}

static void serve_connection(int cfd, int type) {
        struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
        char buf[REQ_MAX];
        size_t n = 0;

        (void) setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

        for (;;) {
                if (n >= sizeof buf)
                        break;  /* oversized: answer anyway */
                ssize_t r = recv(cfd, buf + n, sizeof buf - n, 0);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return;  /* timeout or reset: not completed */
                }
                if (r == 0) {
                        if (n == 0)
                                return;  /* connected and closed without a request */
                        break;           /* half-close after a request without newline */
                }
                n += (size_t) r;
                if (type == SOCK_SEQPACKET || request_complete(buf, n))
                        break;
        }

        sleep_ms(arg_delay_ms);

        window = 's';
        counters_store();
        bool sent = send_all(cfd, response, response_len);
        window = '-';
        if (sent)
                n_completed++;
        counters_store();
}

static void handle_listener(int fd, int type) {
        window = 'a';
        counters_store();
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        window = '-';
        if (cfd < 0) {
                int e = errno;
                counters_store();
                errno = e;
                switch (errno) {
                case EAGAIN:
#if EAGAIN != EWOULDBLOCK
                case EWOULDBLOCK:
#endif
                case EINTR:
                        return;  /* another worker took it */
                case ECONNABORTED:
                case EPROTO:
                case ENETDOWN:
                case ENOPROTOOPT:
                case EHOSTDOWN:
                case ENONET:
                case EHOSTUNREACH:
                case EOPNOTSUPP:
                case ENETUNREACH:
                        return;
                case EMFILE:
                case ENFILE:
                case ENOBUFS:
                case ENOMEM:
                        warnx_("accept on fd %d: %s", fd, strerror(errno));
                        sleep_ms(10);
                        return;
                default:
                        warnx_("accept on fd %d: %s", fd, strerror(errno));
                        sleep_ms(10);
                        return;
                }
        }
        n_accepted++;
        counters_store();
        serve_connection(cfd, type);
        close(cfd);
}

static void handle_datagram(int fd) {
        char buf[REQ_MAX];
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        ssize_t r = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *) &peer, &plen);
        if (r < 0)
                return;  /* EAGAIN: another worker took it; EINTR: poll again */
        n_accepted++;
        counters_store();
        sleep_ms(arg_delay_ms);
        if (plen == 0 || (peer.ss_family == AF_UNIX && plen <= offsetof(struct sockaddr_un, sun_path)))
                return;  /* unbound unix peer: nowhere to answer */
        ssize_t w;
        do
                w = sendto(fd, body, strlen(body), MSG_DONTWAIT | MSG_NOSIGNAL,
                           (struct sockaddr *) &peer, plen);
        while (w < 0 && errno == EINTR);
        if (w >= 0) {
                n_completed++;
                counters_store();
        }
}

static void on_term(int sig) {
        (void) sig;
        got_term = 1;
}

static int serve(void) {
        struct pollfd pfd[MAX_FDS];
        int types[MAX_FDS];
        bool listening[MAX_FDS];
        size_t n = 0;
        static char bodybuf[64];

        snprintf(bodybuf, sizeof bodybuf, "pid=%d slot=%s\n", (int) getpid(), slot);
        body = bodybuf;
        response_len = (size_t) snprintf(response, sizeof response,
                                         "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s",
                                         body);

        for (size_t i = 0; i < n_fds_seen; i++) {
                const struct fdrec *r = &fds_seen[i];
                if (r->fd < 3 || !r->is_socket)
                        continue;
                if (r->acceptconn == 1 && (r->so_type == SOCK_STREAM || r->so_type == SOCK_SEQPACKET)) {
                        listening[n] = true;
                } else if (r->so_type == SOCK_DGRAM) {
                        listening[n] = false;
                } else {
                        continue;
                }
                pfd[n] = (struct pollfd) { .fd = r->fd, .events = POLLIN };
                types[n] = r->so_type;
                n++;
                /* bindonce passes blocking sockets, as systemd does. After ppoll() another
                 * worker may take the connection first, and a plain accept() would then wait,
                 * SIGTERM blocked, for the next one. O_NONBLOCK would do, but it lives on the
                 * open file description all workers share, and the report of the workers
                 * started after this one must show what bindonce passed: a receive timeout
                 * (a socket option, not a file flag) bounds the wait instead. */
                struct timeval tv = { .tv_usec = 100 * 1000 };
                (void) setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        }

        /* SIGTERM: blocked except while waiting, so it is never lost between the
         * check and the wait, and never interrupts a request in hand. */
        sigset_t block, waitmask;
        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigprocmask(SIG_BLOCK, &block, &waitmask);
        sigdelset(&waitmask, SIGTERM);
        struct sigaction sa = { .sa_handler = arg_ignore_term ? SIG_IGN : on_term };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);

        int64_t deadline = arg_serve_ms >= 0 ? now_ms() + arg_serve_ms : -1;

        for (;;) {
                if (got_term)
                        return 0;
                struct timespec ts, *tsp = NULL;
                if (deadline >= 0) {
                        int64_t left = deadline - now_ms();
                        if (left <= 0)
                                return 0;
                        ts.tv_sec = left / 1000;
                        ts.tv_nsec = (left % 1000) * 1000000L;
                        tsp = &ts;
                }
                int r = ppoll(pfd, n, tsp, &waitmask);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        warnx_("ppoll: %s", strerror(errno));
                        return 70;
                }
                /* ppoll() runs the handler only when it is interrupted: with fds ready
                 * it restores the mask and a SIGTERM that came meanwhile stays pending.
                 * Under constant load that is forever, so look for it here as well. */
                sigset_t pending;
                if (!arg_ignore_term && sigpending(&pending) == 0 &&
                    sigismember(&pending, SIGTERM))
                        got_term = 1;
                if (got_term)
                        return 0;  /* what is queued stays for the other workers */
                for (size_t i = 0; i < n; i++) {
                        if (!(pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
                                continue;
                        if (listening[i])
                                handle_listener(pfd[i].fd, types[i]);
                        else
                                handle_datagram(pfd[i].fd);
                }
        }
}

static pid_t spawn_grandchild(void) {
        pid_t p = fork();
        if (p < 0) {
                warnx_("fork: %s", strerror(errno));
                return -1;
        }
        if (p > 0)
                return p;
        /* The escapee: same process group, keeps the inherited sockets like a
         * "sleep 1000 &" would, and goes away on its own after a bounded time
         * so that a failed test cannot leave it forever. */
        if (arg_ignore_term)
                signal(SIGTERM, SIG_IGN);
        sleep_ms(GRANDCHILD_LIFETIME_S * 1000L);
        _exit(0);
}

int main(int argc, char **argv) {
        struct start_state s = {};

        /* First: the inventory, before anything is opened. */
        record_fds();
        s.pid = getpid();
        s.ppid = getppid();
        s.pgid = getpgrp();
        s.sid = getsid(0);
        for (size_t i = 0; i < sizeof env_watch / sizeof env_watch[0]; i++) {
                const char *v = getenv(env_watch[i]);
                s.env_present[i] = v != NULL;
                s.env[i] = v ? strdup(v) : NULL;
        }
        read_status(&s.st);

        parse_argv(argc, argv);

        const char *w = getenv("BINDONCE_WORKER");
        if (w)
                slot = w;

        if (arg_via_library) {
                s.lib_n = sd_listen_fds_with_names(0, &s.lib_names);
                if (s.lib_n < 0)
                        s.lib_names = NULL;
        }

        const char *dir = getenv("TW_DIR");
        if (dir && !*dir)
                dir = NULL;

        if (arg_grandchild) {
                s.grandchild = spawn_grandchild();
                if (dir && s.grandchild > 0) {
                        char p[PATH_MAX];
                        snprintf(p, sizeof p, "%s/grandchild-%d", dir, (int) s.grandchild);
                        FILE *f = fopen(p, "we");
                        if (f) {
                                fprintf(f, "%d %d\n", (int) s.grandchild, (int) s.pid);
                                fclose(f);
                        }
                }
        }

        if (dir) {
                /* The count file exists before the report does. */
                (void) counters_open(dir, s.pid);
                (void) write_report(dir, &s, argc, argv);
        }

        if (arg_exit_at_start >= 0)
                _exit(arg_exit_at_start);
        if (arg_crash_at_start)
                abort();

        int r = serve();

        for (size_t i = 0; i < sizeof env_watch / sizeof env_watch[0]; i++)
                free(s.env[i]);
        if (s.lib_names) {
                for (int i = 0; i < s.lib_n; i++)
                        free(s.lib_names[i]);
                free(s.lib_names);
        }
        if (count_fd >= 0)
                close(count_fd);
        return r;
}
