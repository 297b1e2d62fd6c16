/* SPDX-License-Identifier: MIT */
/*
 * loadclient: the connection-per-request client of bench.py.
 *
 * Every connection attempt ends in exactly one class (see shared/TESTING.md):
 *   ok, refused, connect_timeout, reset_before_response, eof_before_response,
 *   reset_mid_response, response_timeout, bad_payload
 * plus local_error for what is our own fault (no ephemeral port, EMFILE), which
 * must stay 0 for a run to mean anything.
 *
 * Two modes, each printing one JSON object on stdout:
 *
 *   loadclient load --port P [--concurrency C] [--duration-ms D] [--max-requests N]
 *                   [--timeout-ms T] [--kill-every-ms K --kill-children-of PID[,PID...]]
 *                   [--trace FILE]
 *       C connections in flight (epoll, non-blocking), each a fresh connection that
 *       sends "GET / HTTP/1.0" and reads to EOF. Stops starting new ones after D ms or N
 *       attempts, then waits for those in flight (each bounded by T ms). With --kill-every-ms
 *       it SIGKILLs one child, chosen at random, of the given pids every K ms, and lists the
 *       pids it killed, so that the caller can add up what those workers had accepted.
 *       --trace FILE writes every attempt and every kill there once the run is over (kept in
 *       memory meanwhile, so that tracing costs the run nothing but the memory), one a line:
 *         T0 <CLOCK_MONOTONIC µs at the start>
 *         A <start µs> <end µs> <class>      (µs since the start)
 *         K <µs> <pid>
 *
 *   loadclient restart --port P --kill PID [--hold N] [--timeout-ms T]
 *       Restart latency: opens N idle connections first (one is accepted by each of the N
 *       workers, which then sit in recv() for the request: with all of them busy, only the
 *       replacement of the killed worker can answer anything), waits until the listen queue is
 *       empty, then SIGKILLs PID and connects in a tight loop until a response comes from a pid
 *       other than PID. Reports the time from kill() to that response. Without holders (one
 *       worker) the same: the first answer from another pid is the replacement's.
 *
 *   loadclient floor --samples N -- COMMAND [ARG...]
 *       The floor under any restart latency on this machine: binds 127.0.0.1:0 itself and runs
 *       COMMAND with the socket at fd 3 (LISTEN_FDS=1, LISTEN_PID); then N times: SIGKILL it,
 *       wait for its pidfd, reap it, vfork and exec the next, and time kill() to the first
 *       response from the new one (and kill() to the end of waitpid(), reaped_us). No logging,
 *       no bookkeeping, nothing else in between: what a supervisor adds to a restart is its
 *       latency minus this.
 *
 * The response must be "HTTP/1.x 200", with a body that matches Content-Length when there is one,
 * else ends in "\n"; "pid=N" or "(pid N)" in it names the process that answered.
 * Bounded: at most 120 s of load and 10,000,000 attempts, whatever the arguments say.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 1024
#define MAX_DURATION_MS 120000
#define MAX_REQUESTS 10000000L
#define RESP_MAX 2048

enum cls {
        C_OK, C_REFUSED, C_CONNECT_TIMEOUT, C_RESET_BEFORE, C_EOF_BEFORE, C_RESET_MID,
        C_RESPONSE_TIMEOUT, C_BAD_PAYLOAD, C_LOCAL_ERROR, C__MAX
};
static const char *const cls_name[C__MAX] = {
        "ok", "refused", "connect_timeout", "reset_before_response", "eof_before_response",
        "reset_mid_response", "response_timeout", "bad_payload", "local_error",
};

static const char request[] = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: bindonce-bench\r\n\r\n";

static int64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what) {
        fprintf(stderr, "loadclient: %s\n", what);
        exit(64);
}

static long num(const char *s, long min, long max, const char *opt) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max) {
                fprintf(stderr, "loadclient: %s '%s': must be a number from %ld to %ld\n", opt, s, min, max);
                exit(64);
        }
        return v;
}

/* ---- response check ---- */

/* The pid named in the body ("pid=123" or "(pid 123)"), 0 if none. */
static long body_pid(const char *body, size_t n) {
        const char *p = memmem(body, n, "pid", 3);
        if (!p)
                return 0;
        p += 3;
        const char *end = body + n;
        while (p < end && (*p == '=' || *p == ' '))
                p++;
        long v = 0;
        while (p < end && *p >= '0' && *p <= '9')
                v = v * 10 + (*p++ - '0');
        return v;
}

static enum cls check_response(const char *buf, size_t n, long *pid) {
        *pid = 0;
        if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || memcmp(buf + 8, " 200", 4) != 0)
                return C_BAD_PAYLOAD;
        const char *sep = memmem(buf, n, "\r\n\r\n", 4);
        if (!sep)
                return C_BAD_PAYLOAD;
        const char *body = sep + 4;
        size_t blen = n - (size_t) (body - buf);
        const char *cl = memmem(buf, (size_t) (sep - buf), "Content-Length:", 15);
        if (cl) {
                if ((size_t) strtoul(cl + 15, NULL, 10) != blen)
                        return C_BAD_PAYLOAD;
        } else if (blen == 0 || body[blen - 1] != '\n')
                return C_BAD_PAYLOAD;
        *pid = body_pid(body, blen);
        return C_OK;
}

/* ---- pid tally: open addressing, enough for the few thousand pids of a run ---- */

#define PIDTAB 65536
static struct { long pid; long count; } pidtab[PIDTAB];
static long n_pids, pid_overflow;

static void pid_count(long pid) {
        if (pid <= 0)
                return;
        size_t h = ((unsigned long) pid * 2654435761u) % PIDTAB;
        for (size_t i = 0; i < PIDTAB; i++, h = (h + 1) % PIDTAB) {
                if (pidtab[h].pid == pid) {
                        pidtab[h].count++;
                        return;
                }
                if (pidtab[h].pid == 0) {
                        if (n_pids >= PIDTAB / 2) {
                                pid_overflow++;
                                return;
                        }
                        pidtab[h].pid = pid;
                        pidtab[h].count = 1;
                        n_pids++;
                        return;
                }
        }
}

/* ---- sockets ---- */

static struct sockaddr_in target;

static void set_linger0(int fd) {
        /* When we are the one to give up, leave no TIME_WAIT behind on our side. */
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

static enum cls classify_errno(int err, size_t got, bool connected) {
        switch (err) {
        case ECONNREFUSED:
                return connected ? C_RESET_BEFORE : C_REFUSED;
        case ETIMEDOUT:
                return connected ? C_RESPONSE_TIMEOUT : C_CONNECT_TIMEOUT;
        case ECONNRESET:
        case EPIPE:
        case ECONNABORTED:
                return got ? C_RESET_MID : C_RESET_BEFORE;
        default:
                return C_LOCAL_ERROR;
        }
}

/* ---- load mode ---- */

enum state { S_FREE, S_CONNECTING, S_READING };

struct conn {
        int fd;
        enum state state;
        int64_t started, deadline;
        size_t got;
        char buf[RESP_MAX];
};

static struct conn conns[MAX_CONCURRENCY];
static long counts[C__MAX];
static long attempts;
static uint32_t *lat;           /* µs of every ok request */
static size_t n_lat, cap_lat;
static int epfd;
static long timeout_ms = 3000, connect_timeout_ms = 3000;

#define FAIL_SAMPLES 200
static struct { int64_t t; int cls; } fail_sample[FAIL_SAMPLES];
static size_t n_fail_sample;
static int64_t t_begin;
static char bad_sample[200];
static size_t bad_sample_len;

/* --trace: every attempt (start, end, class) and every kill (time, pid), µs since t_begin. */
struct trace_event { int64_t start, end; long what; };   /* what: class, or -pid for a kill */
static const char *trace_path;
static struct trace_event *trace;
static size_t n_trace, cap_trace;

static void trace_add(int64_t start, int64_t end, long what) {
        if (!trace_path)
                return;
        if (n_trace == cap_trace) {
                cap_trace = cap_trace ? cap_trace * 2 : 65536;
                trace = realloc(trace, cap_trace * sizeof *trace);
                if (!trace)
                        die("out of memory");
        }
        trace[n_trace++] = (struct trace_event) { start - t_begin, end - t_begin, what };
}

static void trace_write(void) {
        FILE *f;

        if (!trace_path)
                return;
        f = fopen(trace_path, "we");
        if (!f)
                die("cannot write the --trace file");
        fprintf(f, "T0 %lld\n", (long long) t_begin);
        for (size_t i = 0; i < n_trace; i++)
                if (trace[i].what < 0)
                        fprintf(f, "K %lld %ld\n", (long long) trace[i].start, -trace[i].what);
                else
                        fprintf(f, "A %lld %lld %s\n", (long long) trace[i].start, (long long) trace[i].end,
                                cls_name[trace[i].what]);
        if (fclose(f) != 0)
                die("cannot write the --trace file");
}

static void finish(struct conn *c, enum cls k, long pid) {
        counts[k]++;
        trace_add(c->started, now_us(), k);
        if (k == C_OK) {
                pid_count(pid);
                if (n_lat == cap_lat) {
                        cap_lat = cap_lat ? cap_lat * 2 : 65536;
                        lat = realloc(lat, cap_lat * sizeof *lat);
                        if (!lat)
                                die("out of memory");
                }
                int64_t d = now_us() - c->started;
                lat[n_lat++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t) d;
        } else if (k == C_BAD_PAYLOAD && !bad_sample_len && c->got) {
                bad_sample_len = c->got < sizeof bad_sample ? c->got : sizeof bad_sample;
                memcpy(bad_sample, c->buf, bad_sample_len);
        }
        if (k != C_OK && n_fail_sample < FAIL_SAMPLES) {
                fail_sample[n_fail_sample].t = now_us() - t_begin;
                fail_sample[n_fail_sample++].cls = k;
        }
        if (c->fd >= 0) {
                if (k != C_OK)
                        set_linger0(c->fd);
                close(c->fd);
        }
        c->fd = -1;
        c->state = S_FREE;
}

static void send_request(struct conn *c) {
        ssize_t w = send(c->fd, request, sizeof request - 1, MSG_NOSIGNAL);
        if (w != (ssize_t) sizeof request - 1) {
                finish(c, w < 0 ? classify_errno(errno, 0, true) : C_LOCAL_ERROR, 0);
                return;
        }
        c->state = S_READING;
        c->deadline = now_us() + timeout_ms * 1000;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                finish(c, C_LOCAL_ERROR, 0);
}

static void start_conn(struct conn *c) {
        attempts++;
        c->got = 0;
        c->started = now_us();
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
                finish(c, C_LOCAL_ERROR, 0);
                return;
        }
        int r = connect(c->fd, (struct sockaddr *) &target, sizeof target);
        if (r < 0 && errno != EINPROGRESS) {
                finish(c, classify_errno(errno, 0, false), 0);
                return;
        }
        c->state = S_CONNECTING;
        c->deadline = c->started + connect_timeout_ms * 1000;
        struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
                finish(c, C_LOCAL_ERROR, 0);
                return;
        }
        if (r == 0)
                send_request(c);
}

static void on_event(struct conn *c, uint32_t events) {
        if (c->state == S_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err) {
                        finish(c, classify_errno(err, 0, false), 0);
                        return;
                }
                send_request(c);
                return;
        }
        if (c->state != S_READING)
                return;
        for (;;) {
                if (c->got >= sizeof c->buf) {
                        finish(c, C_BAD_PAYLOAD, 0);
                        return;
                }
                ssize_t n = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, 0);
                if (n > 0) {
                        c->got += (size_t) n;
                        continue;
                }
                if (n == 0) {
                        long pid;
                        if (c->got == 0)
                                finish(c, C_EOF_BEFORE, 0);
                        else {
                                enum cls k = check_response(c->buf, c->got, &pid);
                                finish(c, k, pid);
                        }
                        return;
                }
                if (errno == EAGAIN || errno == EINTR)
                        return;
                finish(c, classify_errno(errno, c->got, true), 0);
                return;
        }
        (void) events;
}

/* ---- killing ---- */

static pid_t parents[16];
static size_t n_parents;
static long *killed;
static size_t n_killed, cap_killed;
static long kill_skipped, kill_ticks, alive_at_ticks;

/* Not a zombie: kill() on one succeeds and does nothing, which would count as a kill. */
static bool running(long pid) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')');
        return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* The running children of the given pids, from /proc/PID/task/PID/children. */
static size_t list_children(long *out, size_t max) {
        size_t n = 0;
        for (size_t i = 0; i < n_parents; i++) {
                char path[64];
                snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int) parents[i], (int) parents[i]);
                FILE *f = fopen(path, "re");
                if (!f)
                        continue;
                long p;
                while (n < max && fscanf(f, "%ld", &p) == 1)
                        if (running(p))
                                out[n++] = p;
                fclose(f);
        }
        return n;
}

static void kill_one(void) {
        long kids[4096];
        size_t n = list_children(kids, 4096);
        kill_ticks++;
        alive_at_ticks += (long) n;
        if (n == 0) {
                kill_skipped++;
                return;
        }
        long victim = kids[(size_t) random() % n];
        if (kill((pid_t) victim, SIGKILL) < 0) {
                kill_skipped++;
                return;
        }
        if (n_killed == cap_killed) {
                cap_killed = cap_killed ? cap_killed * 2 : 1024;
                killed = realloc(killed, cap_killed * sizeof *killed);
                if (!killed)
                        die("out of memory");
        }
        killed[n_killed++] = victim;
        trace_add(now_us(), 0, -victim);
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

static double pct(double p) {
        if (n_lat == 0)
                return 0;
        size_t i = (size_t) (p / 100.0 * (double) (n_lat - 1) + 0.5);
        return lat[i];
}

static volatile sig_atomic_t stop_flag;
static void on_stop(int sig) {
        (void) sig;
        stop_flag = 1;
}

static int run_load(int concurrency, long duration_ms, long max_requests, long kill_every_ms) {
        epfd = epoll_create1(EPOLL_CLOEXEC);
        if (epfd < 0)
                die("epoll_create1 failed");
        for (int i = 0; i < concurrency; i++)
                conns[i].fd = -1;

        t_begin = now_us();
        int64_t end = t_begin + duration_ms * 1000;
        int64_t next_kill = kill_every_ms > 0 ? t_begin + kill_every_ms * 1000 : INT64_MAX;
        bool issuing = true;
        struct epoll_event evs[MAX_CONCURRENCY];

        for (;;) {
                int64_t now = now_us();
                if (issuing && (now >= end || attempts >= max_requests || stop_flag))
                        issuing = false;
                if (!issuing)
                        next_kill = INT64_MAX;
                if (now >= next_kill) {
                        kill_one();
                        next_kill += kill_every_ms * 1000;
                        if (next_kill < now)    /* we fell behind: no burst to catch up */
                                next_kill = now + kill_every_ms * 1000;
                }

                int busy = 0, idle = 0;
                int64_t wake = issuing ? (end < next_kill ? end : next_kill) : INT64_MAX;
                for (int i = 0; i < concurrency; i++) {
                        struct conn *c = &conns[i];
                        if (c->state == S_FREE && issuing && attempts < max_requests)
                                start_conn(c);
                        if (c->state == S_FREE) {
                                idle++;
                                continue;
                        }
                        if (now >= c->deadline) {
                                finish(c, c->state == S_CONNECTING ? C_CONNECT_TIMEOUT : C_RESPONSE_TIMEOUT, 0);
                                if (issuing && attempts < max_requests)
                                        i--;    /* start a fresh one in its place */
                                continue;
                        }
                        busy++;
                        if (c->deadline < wake)
                                wake = c->deadline;
                }
                if (!issuing && busy == 0)
                        break;

                int64_t wait_us = wake - now_us();
                int ms = wait_us <= 0 || (issuing && idle) ? 0 : (int) ((wait_us + 999) / 1000);
                if (ms > 1000)
                        ms = 1000;
                int n = epoll_wait(epfd, evs, MAX_CONCURRENCY, ms);
                if (n < 0 && errno != EINTR)
                        die("epoll_wait failed");
                for (int i = 0; i < n; i++)
                        on_event(evs[i].data.ptr, evs[i].events);
        }
        int64_t elapsed = now_us() - t_begin;

        trace_write();
        qsort(lat, n_lat, sizeof *lat, cmp_u32);
        printf("{\"attempts\": %ld, \"elapsed_s\": %.3f, \"rate\": %.1f, \"classes\": {",
               attempts, elapsed / 1e6, counts[C_OK] / (elapsed / 1e6));
        for (int k = 0; k < C__MAX; k++)
                printf("%s\"%s\": %ld", k ? ", " : "", cls_name[k], counts[k]);
        printf("}, \"latency_us\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"p999\": %.0f, \"max\": %.0f}",
               pct(50), pct(90), pct(99), pct(99.9), pct(100));
        printf(", \"pids\": {");
        bool first = true;
        for (size_t i = 0; i < PIDTAB; i++)
                if (pidtab[i].pid) {
                        printf("%s\"%ld\": %ld", first ? "" : ", ", pidtab[i].pid, pidtab[i].count);
                        first = false;
                }
        printf("}, \"pid_overflow\": %ld, \"killed\": [", pid_overflow);
        for (size_t i = 0; i < n_killed; i++)
                printf("%s%ld", i ? ", " : "", killed[i]);
        printf("], \"kill_skipped\": %ld, \"alive_at_kills\": %.2f, \"bad_payload_sample\": \"",
               kill_skipped, kill_ticks ? (double) alive_at_ticks / kill_ticks : 0.0);
        for (size_t i = 0; i < bad_sample_len; i++) {
                unsigned char ch = (unsigned char) bad_sample[i];
                if (ch == '"' || ch == '\\')
                        printf("\\%c", ch);
                else if (ch < 0x20 || ch >= 0x7f)
                        printf("\\u%04x", ch);
                else
                        putchar(ch);
        }
        printf("\", \"failures_sample\": [");
        for (size_t i = 0; i < n_fail_sample; i++)
                printf("%s[%.1f, \"%s\"]", i ? ", " : "", fail_sample[i].t / 1000.0, cls_name[fail_sample[i].cls]);
        printf("]}\n");
        return 0;
}

/* ---- restart mode ---- */

/* Sum of the accept queues of the listening sockets on the port, from /proc/net/tcp. */
static long listen_queue(int port) {
        FILE *f = fopen("/proc/net/tcp", "re");
        if (!f)
                return -1;
        char line[512];
        long total = 0;
        while (fgets(line, sizeof line, f)) {
                unsigned lport, st;
                unsigned long txq, rxq;
                if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %lx:%lx", &lport, &st, &txq, &rxq) == 4 &&
                    (int) lport == port && st == 0x0A)
                        total += (long) rxq;
        }
        fclose(f);
        return total;
}

static int blocking_conn(long tmo_ms) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        struct timeval tv = { .tv_sec = tmo_ms / 1000, .tv_usec = (tmo_ms % 1000) * 1000 };
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);     /* bounds connect() too */
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return fd;
}

/* One request on a fresh blocking connection: the class, and the pid that answered. */
static enum cls one_request(long tmo_ms, long *pid) {
        char buf[RESP_MAX];
        size_t got = 0;
        *pid = 0;
        int fd = blocking_conn(tmo_ms);
        if (fd < 0)
                return C_LOCAL_ERROR;
        enum cls k;
        if (connect(fd, (struct sockaddr *) &target, sizeof target) < 0) {
                k = errno == EINPROGRESS || errno == EAGAIN ? C_CONNECT_TIMEOUT : classify_errno(errno, 0, false);
                goto out;
        }
        if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t) sizeof request - 1) {
                k = classify_errno(errno, 0, true);
                goto out;
        }
        for (;;) {
                if (got >= sizeof buf) {
                        k = C_BAD_PAYLOAD;
                        goto out;
                }
                ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
                if (n > 0) {
                        got += (size_t) n;
                        continue;
                }
                if (n == 0) {
                        k = got ? check_response(buf, got, pid) : C_EOF_BEFORE;
                        goto out;
                }
                if (errno == EINTR)
                        continue;
                k = errno == EAGAIN ? C_RESPONSE_TIMEOUT : classify_errno(errno, got, true);
                goto out;
        }
out:
        if (k != C_OK)
                set_linger0(fd);
        close(fd);
        return k;
}

static int run_restart(long victim, int holds) {
        int hold_fd[MAX_CONCURRENCY];
        int port = ntohs(target.sin_port);

        for (int i = 0; i < holds; i++) {
                hold_fd[i] = blocking_conn(2000);
                if (hold_fd[i] < 0 || connect(hold_fd[i], (struct sockaddr *) &target, sizeof target) < 0)
                        die("cannot open the holding connections");
        }
        /* Every holder accepted, i.e. every worker is in recv() on one of them. */
        int64_t until = now_us() + 3000000;
        long q;
        while ((q = listen_queue(port)) != 0 && now_us() < until)
                usleep(200);
        if (q != 0)
                die("the holding connections were not all accepted within 3 s");

        int64_t t0 = now_us();
        if (kill((pid_t) victim, SIGKILL) < 0)
                die("kill failed");

        long tries = 0, cls_seen[C__MAX] = {0}, pid = 0, stale = 0;
        int64_t deadline = t0 + timeout_ms * 1000, t1 = 0;
        while (now_us() < deadline && tries < 1000000) {
                tries++;
                enum cls k = one_request(timeout_ms, &pid);
                if (k == C_OK && pid != victim && pid != 0) {
                        t1 = now_us();
                        break;
                }
                if (k == C_OK)
                        stale++;        /* the victim still answered: kill() is not instant */
                else
                        cls_seen[k]++;
        }

        /* Which holders did the kill close? Exactly one when there were holders. */
        int closed = 0;
        for (int i = 0; i < holds; i++) {
                char b[16];
                ssize_t n = recv(hold_fd[i], b, sizeof b, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN))
                        closed++;
                close(hold_fd[i]);
        }

        printf("{\"latency_us\": %.0f, \"tries\": %ld, \"stale\": %ld, \"new_pid\": %ld, \"holds\": %d, "
               "\"holds_closed\": %d, \"classes\": {",
               t1 ? (double) (t1 - t0) : -1.0, tries, stale, t1 ? pid : 0, holds, closed);
        for (int k = 1; k < C__MAX; k++)
                printf("%s\"%s\": %ld", k > 1 ? ", " : "", cls_name[k], cls_seen[k]);
        printf("}}\n");
        return t1 ? 0 : 1;
}

/* ---- floor mode ---- */

/* The worker's whole environment: nothing but the protocol (built before vfork, so the child
 * only writes its pid into a buffer of ours). */
static char floor_listen_pid[32] = "LISTEN_PID=";
static char *floor_env[] = { "LISTEN_FDS=1", floor_listen_pid, "LISTEN_FDNAMES=floor", NULL };

static pid_t floor_spawn(int lfd, char **cmd) {
        /* vfork(), as a supervisor that cares would: no page tables copied, the parent resumes
         * once the child has exec'd. The child only makes system calls. */
        pid_t pid = vfork();
        if (pid < 0)
                die("vfork failed");
        if (pid == 0) {
                char digits[16], *d = floor_listen_pid + strlen("LISTEN_PID=");
                int n = 0;
                for (unsigned v = (unsigned) getpid(); v; v /= 10)
                        digits[n++] = (char) ('0' + v % 10);
                while (n > 0)
                        *d++ = digits[--n];
                *d = '\0';
                if (dup2(lfd, 3) < 0)
                        _exit(126);
                execve(cmd[0], cmd, floor_env);
                _exit(127);
        }
        return pid;
}

/* Until the first response from pid; the time it came, 0 on timeout. */
static int64_t floor_first_response(pid_t pid) {
        int64_t deadline = now_us() + timeout_ms * 1000;
        long rpid = 0;
        while (now_us() < deadline)
                if (one_request(timeout_ms, &rpid) == C_OK && rpid == pid)
                        return now_us();
        return 0;
}

static int run_floor(int samples, char **cmd) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof a;
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &a, sizeof a) < 0 || listen(lfd, 128) < 0 ||
            getsockname(lfd, (struct sockaddr *) &target, &alen) < 0)
                die("cannot set up the listening socket");
        /* Out of the way of fd 3, where dup2() in the child puts it without FD_CLOEXEC. */
        int high = fcntl(lfd, F_DUPFD_CLOEXEC, 10);
        if (high < 0)
                die("fcntl failed");
        close(lfd);
        lfd = high;

        /* What the ideal supervisor does, and nothing else: SIGKILL the worker, wait for its
         * pidfd, reap it, fork and exec the next; timed from kill() to the first answer. */
        pid_t pid = floor_spawn(lfd, cmd);
        if (!floor_first_response(pid))
                die("the first worker never answered");
        int64_t *reaped = calloc((size_t) samples, sizeof *reaped);
        if (!reaped)
                die("out of memory");
        printf("{\"latency_us\": [");
        for (int i = 0; i < samples; i++) {
                int pfd = (int) syscall(SYS_pidfd_open, pid, 0);
                if (pfd < 0)
                        die("pidfd_open failed");
                usleep(20000);
                int64_t t0 = now_us();
                kill(pid, SIGKILL);
                struct pollfd p = { .fd = pfd, .events = POLLIN };
                while (poll(&p, 1, -1) < 0 && errno == EINTR)
                        ;
                waitpid(pid, NULL, 0);
                close(pfd);
                reaped[i] = now_us() - t0;
                pid = floor_spawn(lfd, cmd);
                int64_t t1 = floor_first_response(pid);
                printf("%s%.0f", i ? ", " : "", t1 ? (double) (t1 - t0) : -1.0);
        }
        printf("], \"reaped_us\": [");
        for (int i = 0; i < samples; i++)
                printf("%s%lld", i ? ", " : "", (long long) reaped[i]);
        printf("]}\n");
        free(reaped);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 0;
}

int main(int argc, char **argv) {
        if (argc < 2)
                die("usage: loadclient load|restart --port P [options]; see the comment at the top");
        const char *mode = argv[1];
        int port = 0, concurrency = 8, holds = 0;
        long duration_ms = 5000, max_requests = MAX_REQUESTS, kill_every_ms = 0, victim = 0;

        int samples = 30;
        char **cmd = NULL;
        for (int i = 2; i < argc; i++) {
                const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(o, "--")) {
                        cmd = argv + i + 1;
                        break;
                }
                if (!v)
                        die("every option takes a value");
                i++;
                if (!strcmp(o, "--port"))
                        port = (int) num(v, 1, 65535, o);
                else if (!strcmp(o, "--concurrency"))
                        concurrency = (int) num(v, 1, MAX_CONCURRENCY, o);
                else if (!strcmp(o, "--duration-ms"))
                        duration_ms = num(v, 1, MAX_DURATION_MS, o);
                else if (!strcmp(o, "--max-requests"))
                        max_requests = num(v, 1, MAX_REQUESTS, o);
                else if (!strcmp(o, "--timeout-ms"))
                        timeout_ms = connect_timeout_ms = num(v, 1, 60000, o);
                else if (!strcmp(o, "--kill-every-ms"))
                        kill_every_ms = num(v, 1, 60000, o);
                else if (!strcmp(o, "--kill-children-of")) {
                        char *copy = strdup(v), *save = NULL;
                        for (char *t = strtok_r(copy, ",", &save); t && n_parents < 16; t = strtok_r(NULL, ",", &save))
                                parents[n_parents++] = (pid_t) num(t, 2, 1L << 22, o);
                        free(copy);
                } else if (!strcmp(o, "--kill"))
                        victim = num(v, 2, 1L << 22, o);
                else if (!strcmp(o, "--samples"))
                        samples = (int) num(v, 1, 10000, o);
                else if (!strcmp(o, "--hold"))
                        holds = (int) num(v, 0, MAX_CONCURRENCY, o);
                else if (!strcmp(o, "--trace"))
                        trace_path = v;
                else {
                        fprintf(stderr, "loadclient: unknown option %s\n", o);
                        return 64;
                }
        }
        if (!strcmp(mode, "floor")) {
                if (!cmd || !cmd[0])
                        die("floor needs -- COMMAND");
                return run_floor(samples, cmd);
        }
        if (!port)
                die("--port is required");
        target = (struct sockaddr_in) { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
        target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        srandom((unsigned) now_us());

        struct sigaction sa = { .sa_handler = on_stop };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        if (!strcmp(mode, "load")) {
                if (kill_every_ms && !n_parents)
                        die("--kill-every-ms needs --kill-children-of");
                return run_load(concurrency, duration_ms, max_requests, kill_every_ms);
        }
        if (!strcmp(mode, "restart")) {
                if (!victim)
                        die("restart needs --kill PID");
                return run_restart(victim, holds);
        }
        die("mode must be load or restart");
}
