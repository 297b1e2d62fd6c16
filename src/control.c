/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "escape.h"
#include "escapes.h"
#include "fdbudget.h"
#include "ownership.h"
#include "ratelimit.h"
#include "events.h"
#include "log.h"
#include "slot.h"
#include "util.h"

#ifndef BINDONCE_VERSION
#define BINDONCE_VERSION "0.1"
#endif

#define CLIENTS_MAX 64
#define CLIENT_TIMEOUT_USEC (5 * USEC_PER_SEC)

typedef struct ControlClient ControlClient;

struct ControlClient {
        ControlServer *server;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        char in[CONTROL_REQUEST_MAX + 1];
        size_t in_len;
        char *out;
        size_t out_len, out_pos;
        bool waiting;                   /* for a reload's outcome */
        bool handling;                  /* inside control_execute() */
        bool lingering;                 /* answered; reading what is left until EOF */
        char *pending;                  /* a reply that came while handling */
        ControlClient *next;
};

struct ControlServer {
        sd_event *event;
        const ControlOps *ops;
        void *userdata;                 /* the ops' */
        Listener listener;              /* a unix socket file, removed at the end if still ours */
        sd_event_source *io;
        sd_event_source *resume;        /* accepting paused on EMFILE */
        ControlClient *clients;
        unsigned n_clients;
};

/* ---- replies ------------------------------------------------------------------------------ */

static char *reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *reply(const char *fmt, ...) {
        char *s = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        return s;
}

static void json_string(FILE *f, const char *s) {
        if (!s) {
                fputs("null", f);
                return;
        }
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fprintf(f, "\\%c", *p);
                else if (*p < 0x20)
                        fprintf(f, "\\u%04x", *p);
                else
                        fputc(*p, f);
        }
        fputc('"', f);
}

static bool socket_queue(const Listener *l, unsigned *len, unsigned *max) {
        if (l->address.type != SOCK_STREAM ||
            (l->address.sa.sa_family != AF_INET && l->address.sa.sa_family != AF_INET6))
                return false;
        return listen_queue(l->fd, len, max);
}

/* "12.3s", "4m05s", "3h07m", "12d04h": at most 7 columns. */
static void uptime_text(double since, char *buf, size_t size) {
        double up = (double) clock_usec(CLOCK_REALTIME) / USEC_PER_SEC - since;
        unsigned long s;

        if (up < 0)
                up = 0;
        s = (unsigned long) up;
        if (up < 60)
                snprintf(buf, size, "%.1fs", up);
        else if (s < 3600)
                snprintf(buf, size, "%lum%02lus", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%luh%02lum", s / 3600, s % 3600 / 60);
        else
                snprintf(buf, size, "%lud%02luh", s / 86400, s % 86400 / 3600);
}

static void last_exit_text(const SlotSnapshot *slot, char *buf, size_t size) {
        if (!slot->exited)
                snprintf(buf, size, "-");
        else if (slot->last_code == CLD_EXITED)
                snprintf(buf, size, "status %d", slot->last_status);
        else
                snprintf(buf, size, "SIG%s", sigabbrev_np(slot->last_status) ?: "?");
}

/* At most `width` characters of s (UTF-8 counted by code points), control characters as
 * '?', and "…" where it was cut. */
static void fit(const char *s, size_t width, char *buf, size_t size) {
        const unsigned char *p = (const unsigned char *) (s ?: "");
        size_t cols = 0, n = 0;

        for (; *p && n + 4 < size; p++) {
                bool start = (*p & 0xc0) != 0x80;

                if (start && cols == width - 1) {
                        /* One column left: the rest, if it is one character, else "…". */
                        const unsigned char *q = p + 1;
                        while (*q && (*q & 0xc0) == 0x80)
                                q++;
                        if (*q) {
                                memcpy(buf + n, "\xe2\x80\xa6", 3);
                                n += 3;
                                break;
                        }
                }
                if (start)
                        cols++;
                buf[n++] = *p < 0x20 || *p == 0x7f ? '?' : (char) *p;
        }
        buf[n] = '\0';
}

static void json_pid(FILE *f, pid_t pid) {
        if (pid)
                fprintf(f, "%d", (int) pid);
        else
                fputs("null", f);
}

static void status_json_slot(FILE *f, const SlotSnapshot *slot) {
        fprintf(f, "{\"slot\":%u,\"pid\":", slot->slot);
        json_pid(f, slot->pid);
        fprintf(f, ",\"state\":\"%s\",\"ready\":%s,\"since\":", slot->state, slot->ready ? "true" : "false");
        if (slot->pid)
                fprintf(f, "%.3f", slot->since);
        else
                fputs("null", f);
        fprintf(f, ",\"generation\":%u,\"restarts\":%u,\"last_exit\":", slot->generation, slot->restarts);
        if (slot->exited)
                fprintf(f, "{\"code\":\"%s\",\"status\":%d}",
                        slot->last_code == CLD_EXITED ? "exited" : slot->last_code == CLD_DUMPED ? "dumped" : "killed",
                        slot->last_status);
        else
                fputs("null", f);
        fputs(",\"status\":", f);
        json_string(f, slot->status);
        fputs(",\"next_pid\":", f);
        json_pid(f, slot->next_pid);
        fputc('}', f);
}

static void status_json(FILE *f, const StatusSnapshot *st) {
        char addr[ADDRESS_FORMAT_MAX];
        unsigned qlen, qmax;

        fprintf(f, "OK\n{\"name\":");
        json_string(f, st->name);
        fprintf(f, ",\"version\":\"%s\"", BINDONCE_VERSION);
        fprintf(f, ",\"pid\":%d,\"workers\":%u,\"ready\":%u,\"restarts\":%u,\"generation\":%u,\"reloading\":%s,"
                   "\"stopping\":%s,\"crash_loop\":%s,\"balance\":\"%s\",\"migrate_req\":%s,"
                   "\"escaped_stopped\":%u,\"advice\":",
                (int) getpid(), st->workers, st->ready, st->restarts, st->generation,
                st->reloading ? "true" : "false", st->stopping ? "true" : "false",
                st->crash_loop ? "true" : "false", st->reuseport ? "reuseport" : "shared",
                st->migrate ? "true" : "false", escapes_stopped());
        json_string(f, st->advice);
        fputs(",\"slots\":[", f);
        for (size_t i = 0; i < st->n_slots; i++) {
                fputs(i ? "," : "", f);
                status_json_slot(f, &st->slots[i]);
        }
        fputs("],\"sockets\":[", f);
        for (size_t i = 0; i < st->n_listeners; i++) {
                const Listener *l = &st->listeners[i];

                fprintf(f, "%s{\"address\":", i ? "," : "");
                json_string(f, l->address.size ? address_format(&l->address, addr) : NULL);
                fputs(",\"name\":", f);
                json_string(f, l->name);
                fprintf(f, ",\"type\":\"%s\",\"fd\":%zu,", socket_type_name(l->address.type), 3 + i);
                if (socket_queue(l, &qlen, &qmax))
                        fprintf(f, "\"queue\":%u,\"queue_max\":%u}", qlen, qmax);
                else
                        fputs("\"queue\":null,\"queue_max\":null}", f);
        }
        fputs("]}\n", f);
}

/* The table fits 80 columns: the slot columns take 52, STATUS= the other 28, cut with "…". */
#define STATUS_COLUMNS 28

static void status_table_slots(FILE *f, const StatusSnapshot *st) {
        fprintf(f, "%-5s %-7s %-9s %-7s %-8s %-10s %s\n", "SLOT", "PID", "STATE", "UPTIME", "RESTARTS",
                "LAST EXIT", "STATUS");
        for (size_t i = 0; i < st->n_slots; i++) {
                const SlotSnapshot *slot = &st->slots[i];
                char pid[16] = "-", up[24] = "-", last[32], status[STATUS_COLUMNS * 4 + 4];

                if (slot->pid) {
                        snprintf(pid, sizeof pid, "%d", (int) slot->pid);
                        uptime_text(slot->since, up, sizeof up);
                }
                char escaped[ESCAPE_CONTROL_MAX(256)] = "";

                last_exit_text(slot, last, sizeof last);
                /* A worker's text, for a terminal: no escape sequence gets through. */
                if (slot->status)
                        (void) escape_control(slot->status, strlen(slot->status), escaped, sizeof escaped,
                                              ESCAPE_BACKSLASH);
                fit(escaped, STATUS_COLUMNS, status, sizeof status);
                fprintf(f, "%-5u %-7s %-9s %-7s %-8u %-10s %s\n", slot->slot, pid, slot->state, up, slot->restarts,
                        last, status);
        }
}

/* "bindonce NAME (pid N): 2/2 workers ready, 0 restarts" and what is going on (crash
 * loop, reload, stop): on one line when it fits 80 columns, else on a second one; a name
 * too long for the line is cut. */
static void status_head(FILE *f, const StatusSnapshot *st) {
        char head[512], flags[160], escaped[64] = "", line[80 * 4 + 4];

        if (escapes_stopped())
                snprintf(escaped, sizeof escaped, ", %u escaped processes stopped", escapes_stopped());
        snprintf(flags, sizeof flags, "%s%s%s%s", st->crash_loop ? ", every worker crash-looping" : "",
                 st->reloading ? ", reloading" : "", st->stopping ? ", stopping" : "", escaped);
        snprintf(head, sizeof head, "bindonce %s (pid %d, version %s): %u/%u workers ready, %u restarts%s",
                 st->name, (int) getpid(), BINDONCE_VERSION, st->ready, st->workers, st->restarts, flags);
        if (strlen(head) <= 80) {
                fprintf(f, "%s\n", head);
                return;
        }
        snprintf(head, sizeof head, "bindonce %s (pid %d, version %s): %u/%u workers ready, %u restarts",
                 st->name, (int) getpid(), BINDONCE_VERSION, st->ready, st->workers, st->restarts);
        fit(head, 80, line, sizeof line);
        fprintf(f, "%s\n", line);
        if (*flags)
                fprintf(f, "%s\n", flags + 2);
}

/* What bindonce noticed and the operator should act on, cut to the table's width. */
static void status_advice(FILE *f, const StatusSnapshot *st) {
        char line[80 * 4 + 4];

        if (!st->advice)
                return;
        fit(st->advice, 80, line, sizeof line);
        fprintf(f, "%s\n", line);
}

static void status_table(FILE *f, const StatusSnapshot *st) {
        char addr[ADDRESS_FORMAT_MAX];
        unsigned qlen, qmax;

        fputs("OK\n", f);
        status_head(f, st);
        status_advice(f, st);
        fputc('\n', f);
        status_table_slots(f, st);
        fprintf(f, "\n%-38s %-16s %-9s %-3s %s\n", "SOCKET", "NAME", "TYPE", "FD", "QUEUE");
        for (size_t i = 0; i < st->n_listeners; i++) {
                const Listener *l = &st->listeners[i];
                char queue[32] = "-", a[38 * 4 + 4], name[16 * 4 + 4];

                if (socket_queue(l, &qlen, &qmax))
                        snprintf(queue, sizeof queue, "%u/%u", qlen, qmax);
                fit(l->address.size ? address_format(&l->address, addr) : "?", 38, a, sizeof a);
                fit(l->name, 16, name, sizeof name);
                fprintf(f, "%-38s %-16s %-9s %-3zu %s\n", a, name, socket_type_name(l->address.type), 3 + i, queue);
        }
}

static char *status_text(ControlServer *server, bool json) {
        StatusSnapshot st = {};
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        if (server->ops->snapshot(server->userdata, &st) < 0)
                return NULL;
        f = open_memstream(&buf, &size);
        if (f) {
                if (json)
                        status_json(f, &st);
                else
                        status_table(f, &st);
                if (fclose(f) != 0) {
                        free(buf);
                        buf = NULL;
                }
        }
        status_snapshot_done(&st);
        return buf;
}

void status_snapshot_done(StatusSnapshot *s) {
        free(s->slots);
        *s = (StatusSnapshot) {};
}

/* ---- requests -------------------------------------------------------------------------- */

static int parse_slot(unsigned workers, const char *s, int *ret) {
        unsigned long v;

        if (strcmp(s, "all") == 0) {
                *ret = -1;
                return 0;
        }
        if (workers == 0 || parse_uint(s, 0, workers - 1, &v) < 0)
                return -EINVAL;
        *ret = (int) v;
        return 0;
}

static int parse_signal(const char *s) {
        unsigned long v;

        if (strncmp(s, "SIG", 3) == 0)
                s += 3;
        for (int sig = 1; sig < NSIG; sig++) {
                const char *n = sigabbrev_np(sig);
                if (n && strcmp(n, s) == 0)
                        return sig;
        }
        if (parse_uint(s, 1, NSIG - 1, &v) < 0)
                return -EINVAL;
        return (int) v;
}

static int fail(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* The words of a request: at most 8, split at blanks. Returns how many, or -EINVAL. */
static int split_words(const char *line, size_t len, char *copy, char *argv[8], char *err, size_t size) {
        char *state = NULL;
        int argc = 0;

        if (len == 0)
                return fail(err, size, "ERROR empty request; send a command such as 'status'\n");
        if (len > CONTROL_REQUEST_MAX)
                return fail(err, size, "ERROR request longer than %d bytes\n", CONTROL_REQUEST_MAX);
        if (memchr(line, '\0', len))
                return fail(err, size, "ERROR request contains a NUL byte\n");
        if (!utf8_valid((const unsigned char *) line, len))
                return fail(err, size, "ERROR request is not UTF-8 text\n");
        memcpy(copy, line, len);
        copy[len] = '\0';
        for (char *w = strtok_r(copy, " \t\r", &state); w; w = strtok_r(NULL, " \t\r", &state)) {
                if (argc == 8)
                        return fail(err, size, "ERROR too many words in the request\n");
                argv[argc++] = w;
        }
        if (argc == 0)
                return fail(err, size, "ERROR empty request; send a command such as 'status'\n");
        return argc;
}

int control_request_parse(const char *line, size_t len, unsigned workers, ControlRequest *ret,
                          char *err, size_t size) {
        char copy[CONTROL_REQUEST_MAX + 1], *argv[8];
        ControlRequest req = { .slot = -1 };
        unsigned long n;
        int argc = split_words(line, len, copy, argv, err, size);
        const char *cmd = argc > 0 ? argv[0] : "";

        if (argc < 0)
                return argc;
        if (strcmp(cmd, "status") == 0) {
                req.command = CONTROL_STATUS;
                req.json = argc == 2 && strcmp(argv[1], "--json") == 0;
                if (argc > 2 || (argc == 2 && !req.json))
                        return fail(err, size, "ERROR usage: status [--json]\n");
        } else if (strcmp(cmd, "reload") == 0) {
                req.command = CONTROL_RELOAD;
                if (argc != 1)
                        return fail(err, size, "ERROR usage: reload\n");
        } else if (strcmp(cmd, "restart") == 0) {
                req.command = CONTROL_RESTART;
                if (argc != 2 || parse_slot(workers, argv[1], &req.slot) < 0)
                        return fail(err, size, "ERROR usage: restart SLOT|all, with SLOT from 0 to %u\n", workers - 1);
        } else if (strcmp(cmd, "scale") == 0) {
                req.command = CONTROL_SCALE;
                if (argc != 2 || parse_uint(argv[1], 1, WORKERS_MAX, &n) < 0)
                        return fail(err, size, "ERROR usage: scale N, with N from 1 to %d\n", WORKERS_MAX);
                req.n = (unsigned) n;
        } else if (strcmp(cmd, "signal") == 0) {
                req.command = CONTROL_SIGNAL;
                req.sig = argc >= 2 ? parse_signal(argv[1]) : -EINVAL;
                if (argc < 2 || argc > 3 || req.sig < 0 || (argc == 3 && parse_slot(workers, argv[2], &req.slot) < 0))
                        return fail(err, size, "ERROR usage: signal SIG [SLOT|all], SIG as TERM, SIGTERM or a number\n");
        } else if (strcmp(cmd, "stop") == 0) {
                req.command = CONTROL_STOP;
                if (argc != 1)
                        return fail(err, size, "ERROR usage: stop\n");
        } else if (strcmp(cmd, "events") == 0) {
                req.command = CONTROL_EVENTS;
                req.json = argc == 2 && strcmp(argv[1], "--json") == 0;
                if (argc > 2 || (argc == 2 && !req.json))
                        return fail(err, size, "ERROR usage: events [--json]\n");
        } else if (strcmp(cmd, "upgrade") == 0) {
                req.command = CONTROL_UPGRADE;
                if (argc != 1 && (argc != 3 || strcmp(argv[1], "--exe") != 0 || argv[2][0] != '/'))
                        return fail(err, size, "ERROR usage: upgrade [--exe PATH], with PATH absolute\n");
                if (argc == 3)
                        snprintf(req.exe, sizeof req.exe, "%s", argv[2]);
        } else
                return fail(err, size, "ERROR unknown command '%.64s'; commands: status [--json], reload, "
                            "restart SLOT|all, scale N, signal SIG [SLOT|all], stop, events [--json], "
                            "upgrade [--exe PATH]\n", cmd);
        *ret = req;
        return 0;
}

static void client_reload_done(void *userdata, const char *error, bool restarting);
static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

/* `events`: the connection goes to the supervisor's followers (one io source per fd: this
 * one goes first). Returns NULL when handed over (client_handle() then frees the rest). */
static char *client_follow(ControlServer *server, ControlClient *c, bool json) {
        int r;

        c->io = sd_event_source_disable_unref(c->io);
        r = server->ops->follow(server->userdata, c->fd, json);
        if (r >= 0) {
                c->fd = -1;
                return NULL;
        }
        if (sd_event_add_io(server->event, &c->io, c->fd, EPOLLIN | EPOLLRDHUP, on_client_io, c) < 0)
                return NULL;    /* fd still ours: client_handle() closes it */
        return r == -EBUSY ? reply("ERROR cannot follow: %d followers already; try again later\n", FOLLOWERS_MAX)
                           : reply("ERROR cannot follow: %s\n", strerror(-r));
}

static void client_upgrade_done(void *userdata, const char *error, bool restarting);

/* Why the supervisor refused a command, for an ERROR reply. */
static const char *refusal(int r) {
        return r == -ESHUTDOWN ? "bindonce is stopping" : strerror(-r);
}

/* Runs one request line and returns the reply ("OK\n..." or "ERROR ...\n"), or NULL when
 * the reply comes later (reload). */
static char *control_execute(ControlServer *server, ControlClient *client, const char *line, size_t len) {
        const ControlOps *ops = server->ops;
        void *ud = server->userdata;
        ControlRequest req;
        char err[256];
        int r;

        if (control_request_parse(line, len, ops->workers(ud), &req, err, sizeof err) < 0)
                return strdup(err);

        switch (req.command) {
        case CONTROL_STATUS: {
                char *s = status_text(server, req.json);
                return s ? s : reply("ERROR out of memory\n");
        }
        case CONTROL_RELOAD: {
                ReloadWaiter waiter = { client_reload_done, client };
                /* Set first: the roll may end before this returns. */
                client->waiting = true;
                r = ops->reload(ud, &waiter);
                if (r < 0) {
                        client->waiting = false;
                        return reply("ERROR cannot reload: %s\n", refusal(r));
                }
                return NULL;
        }
        case CONTROL_RESTART:
                r = ops->restart(ud, req.slot);
                return r < 0 ? reply("ERROR cannot restart: %s\n", refusal(r)) : reply("OK\n");
        case CONTROL_SCALE: {
                char why[256];

                if (ops->scale_check(ud, req.n, why, sizeof why) < 0)
                        return reply("ERROR cannot scale to %u: %s\n", req.n, why);
                r = ops->scale(ud, req.n);
                return r < 0 ? reply("ERROR cannot scale: %s\n", refusal(r)) : reply("OK\n");
        }
        case CONTROL_SIGNAL:
                r = ops->signal(ud, req.sig, req.slot);
                return r < 0 ? reply("ERROR cannot signal: %s\n", strerror(-r)) : reply("OK\n");
        case CONTROL_STOP:
                ops->stop(ud);
                return reply("OK\n");
        case CONTROL_EVENTS:
                return client_follow(server, client, req.json);
        case CONTROL_UPGRADE: {
                ReloadWaiter waiter = { client_upgrade_done, client };

                client->waiting = true;
                r = ops->upgrade(ud, req.exe[0] ? req.exe : NULL, &waiter, client->fd);
                if (r < 0) {
                        client->waiting = false;
                        return reply("ERROR cannot upgrade: %s\n",
                                     r == -EBUSY ? "a reload is in progress; upgrade once it has ended" :
                                     r == -EALREADY ? "an upgrade is already in progress" : refusal(r));
                }
                return NULL;
        }
        case _CONTROL_COMMAND_MAX:
                break;
        }
        return reply("ERROR unknown command\n");
}

/* ---- clients ------------------------------------------------------------------------------ */

static bool accept_paused(ControlServer *server);

static void client_free(ControlClient *c) {
        ControlServer *s = c->server;

        if (c->waiting)
                s->ops->forget_waiter(s->userdata, c);
        for (ControlClient **p = &s->clients; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        if (c->fd >= 0) {
                (void) close(c->fd);
                fdbudget_client_closed();
        }
        free(c->out);
        free(c->pending);
        free(c);

        /* A place is free again. */
        if (s->n_clients-- == CLIENTS_MAX && s->io && !accept_paused(s))
                (void) sd_event_source_set_enabled(s->io, SD_EVENT_ON);
}

static int client_flush(ControlClient *c) {
        while (c->out_pos < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return sd_event_source_set_io_events(c->io, EPOLLOUT);
                        return -errno;
                }
                c->out_pos += (size_t) n;
        }
        return 1; /* all sent */
}

/* Answered: closing now with unread input would reset the connection, and the client
 * could lose the answer. Shut down our side, then discard its input until it closes (or
 * the timeout drops it). */
static void client_linger(ControlClient *c) {
        if (shutdown(c->fd, SHUT_WR) < 0 || sd_event_source_set_io_events(c->io, EPOLLIN) < 0) {
                client_free(c);
                return;
        }
        c->lingering = true;
}

/* Queues the reply and sends what the client takes; the rest waits for EPOLLOUT. */
static void client_reply(ControlClient *c, char *text) {
        int r;

        if (!text)
                text = strdup("ERROR out of memory\n");
        if (!text) {
                client_free(c);
                return;
        }
        free(c->out);
        c->out = text;
        c->out_len = strlen(text);
        c->out_pos = 0;
        c->waiting = false;
        /* A fresh deadline for reading the reply. */
        (void) sd_event_source_set_time_relative(c->timer, CLIENT_TIMEOUT_USEC);
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);

        r = client_flush(c);
        if (r > 0)
                client_linger(c);
        else if (r < 0)
                client_free(c); /* the client is gone */
}

/* The answer to a client that waited for an outcome (reload, upgrade). */
static void client_answer(ControlClient *c, char *text) {
        c->waiting = false;
        if (c->handling) {
                /* Still inside client_handle(): it sends this when control_execute() returns. */
                free(c->pending);
                c->pending = text;
        } else
                client_reply(c, text);
}

static void client_reload_done(void *userdata, const char *error, bool restarting) {
        client_answer(userdata, error ? reply("ERROR reload failed: %s\n", error) : reply("OK\nreload complete\n"));
}

/* A failed upgrade; a successful one is answered by the new bindonce. */
static void client_upgrade_done(void *userdata, const char *error, bool restarting) {
        client_answer(userdata, reply("ERROR upgrade failed: %s\n", error ? error : "no reason given"));
}

static void client_handle(ControlClient *c, size_t len) {
        char *text;

        c->handling = true;
        text = control_execute(c->server, c, c->in, len);
        c->handling = false;
        if (!c->io) {
                /* `events`: the fd was handed over (or could not be watched again). */
                client_free(c);
                return;
        }
        if (!text && !c->waiting)
                text = TAKE_PTR(c->pending);

        if (text)
                client_reply(c, text);
        else {
                /* A reload: wait for its outcome, but notice if the client goes away. Not
                 * EPOLLRDHUP: a client that shut down its sending side still reads. EPOLLHUP
                 * comes when it closed both. */
                (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                (void) sd_event_source_set_io_events(c->io, EPOLLHUP);
        }
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlClient *c = userdata;

        if (c->lingering) {
                char discard[4096];
                ssize_t n = recv(fd, discard, sizeof discard, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                        client_free(c);
                return 0;
        }
        if (c->out) {
                int r = client_flush(c);
                if (r > 0)
                        client_linger(c);
                else if (r < 0)
                        client_free(c);
                return 0;
        }
        if (c->waiting) {
                if (revents & (EPOLLHUP | EPOLLERR))
                        client_free(c);
                return 0;
        }

        ssize_t n = recv(fd, c->in + c->in_len, sizeof c->in - c->in_len, MSG_DONTWAIT);
        if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                        client_free(c);
                return 0;
        }
        char *nl = memchr(c->in + c->in_len, '\n', (size_t) n);
        c->in_len += (size_t) n;
        if (nl)
                client_handle(c, (size_t) (nl - c->in));
        else if (n == 0)
                /* A request ends with its newline: what came before EOF is cut short, and
                 * "scale 1" of a vanished "scale 16" must not run. */
                client_reply(c, c->in_len == 0 ? reply("ERROR empty request; send a command such as 'status'\n")
                                               : reply("ERROR truncated request: it must end with a newline\n"));
        else if (c->in_len == sizeof c->in)
                client_reply(c, reply("ERROR request longer than %d bytes\n", CONTROL_REQUEST_MAX));
        return 0;
}

static int on_client_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlClient *c = userdata;

        log_debug("control client too slow: dropped");
        client_free(c);
        return 0;
}

static bool peer_allowed(int fd, uid_t *uid) {
        struct ucred cred;
        socklen_t n = sizeof cred;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) < 0)
                return false;
        *uid = cred.uid;
        return cred.uid == 0 || cred.uid == geteuid();
}

static int on_resume(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlServer *server = userdata;

        /* A oneshot: off again by itself. */
        if (server->n_clients < CLIENTS_MAX)
                (void) sd_event_source_set_enabled(server->io, SD_EVENT_ON);
        return 0;
}

static bool accept_paused(ControlServer *server) {
        int enabled = SD_EVENT_OFF;

        return server->resume && sd_event_source_get_enabled(server->resume, &enabled) >= 0 &&
               enabled != SD_EVENT_OFF;
}

/* Out of fds (or at the clients' reserve): accepting pauses for 100 ms rather than spin on
 * a listening socket that stays readable; said at most once a second. */
static void accept_pause(ControlServer *server, int error) {
        static RateLimit rl;

        (void) log_ratelimited(&rl, LOG_WARNING, error, "control socket: cannot accept: %m; pausing for 100 ms");
        if (sd_event_source_set_time_relative(server->resume, 100 * USEC_PER_MSEC) >= 0 &&
            sd_event_source_set_enabled(server->resume, SD_EVENT_ONESHOT) >= 0)
                (void) sd_event_source_set_enabled(server->io, SD_EVENT_OFF);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlServer *server = userdata;

        while (server->n_clients < CLIENTS_MAX) {
                ControlClient *c;
                uid_t uid = (uid_t) -1;
                int cfd, r;

                /* A client must not take the fds a restart needs (fdbudget.h). */
                if (fdbudget_check_client() < 0) {
                        accept_pause(server, -EMFILE);
                        return 0;
                }
                cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (cfd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                                accept_pause(server, -errno);
                        return 0;
                }

                c = calloc(1, sizeof *c);
                if (!c) {
                        (void) close(cfd);
                        return 0;
                }
                fdbudget_client_opened();
                c->server = server;
                c->fd = cfd;
                c->next = server->clients;
                server->clients = c;
                server->n_clients++;
                r = sd_event_add_io(server->event, &c->io, cfd, EPOLLIN | EPOLLRDHUP, on_client_io, c);
                if (r >= 0)
                        r = sd_event_add_time_relative(server->event, &c->timer, CLOCK_MONOTONIC,
                                                       CLIENT_TIMEOUT_USEC, 100 * USEC_PER_MSEC, on_client_timeout, c);
                if (r < 0) {
                        client_free(c);
                        continue;
                }
                if (!peer_allowed(cfd, &uid)) {
                        log_notice("control socket: refused a client of uid %u", (unsigned) uid);
                        client_reply(c, reply("ERROR permission denied: only root and bindonce's own user may steer it\n"));
                }
        }
        /* Full: the rest wait in the listen backlog until a client is done. */
        (void) sd_event_source_set_enabled(server->io, SD_EVENT_OFF);
        return 0;
}

/* ---- the socket ------------------------------------------------------------------------ */

static int mkdir_private(const char *dir, mode_t mode) {
        if (mkdir(dir, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int control_default_path(const char *name, char *path, size_t size, char *dir, size_t dir_size) {
        const char *runtime = getenv("RUNTIME_DIRECTORY");
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        int n;

        if (runtime && *runtime) {
                /* systemd passes a colon-separated list for several RuntimeDirectory= values. */
                size_t k = strcspn(runtime, ":");
                n = snprintf(dir, dir_size, "%.*s", (int) k, runtime);
        } else if (geteuid() == 0)
                n = snprintf(dir, dir_size, "/run/bindonce");
        else if (xdg && *xdg)
                n = snprintf(dir, dir_size, "%s/bindonce", xdg);
        else
                return -ENOENT;
        if (n < 0 || (size_t) n >= dir_size)
                return -ENAMETOOLONG;
        n = snprintf(path, size, "%s/%s.sock", dir, name);
        if (n < 0 || (size_t) n >= size)
                return -ENAMETOOLONG;
        return 0;
}

static int control_bind(ControlServer *s, const char *path) {
        const char *why;
        mode_t old;
        int r;

        if (address_parse(path, SOCK_STREAM, &s->listener.address, &why) < 0 ||
            !address_is_unix_path(&s->listener.address))
                return -ENAMETOOLONG;
        /* Born 0600: no window in which another user could connect. */
        old = umask(0177);
        r = listener_open(&s->listener, SOMAXCONN, false);
        umask(old);
        if (r < 0)
                return r;
        r = sd_event_add_io(s->event, &s->io, s->listener.fd, EPOLLIN, on_accept, s);
        if (r < 0)
                return r;
        /* Made now, while fds are plenty: pausing at EMFILE must not need one (a busy loop). */
        r = sd_event_add_time_relative(s->event, &s->resume, CLOCK_MONOTONIC, USEC_PER_SEC, 0, on_resume, s);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s->resume, SD_EVENT_OFF);
}

int control_server_new(ControlServer **ret, sd_event *event, const char *name, const char *control_path,
                       const ControlOps *ops, void *userdata) {
        char path[256], dir[256];
        ControlServer *s;
        int r;

        *ret = NULL;
        if (control_path && !*control_path)
                return 0; /* --control none */

        if (control_path)
                snprintf(path, sizeof path, "%s", control_path);
        else {
                r = control_default_path(name, path, sizeof path, dir, sizeof dir);
                if (r < 0) {
                        log_warning("no control socket: set XDG_RUNTIME_DIR or pass --control PATH");
                        return 0;
                }
                r = mkdir_private(dir, geteuid() == 0 ? 0755 : 0700);
                if (r < 0) {
                        log_warning_errno(r, "no control socket: cannot create %s: %m", dir);
                        return 0;
                }
                char why[PATH_MAX + 128];
                if (dir_check_private(dir, why, sizeof why) < 0) {
                        log_warning("no control socket: %s", why);
                        return 0;
                }
        }

        s = calloc(1, sizeof *s);
        if (!s)
                return log_error_errno(-ENOMEM, "Out of memory");
        s->event = event;
        s->ops = ops;
        s->userdata = userdata;
        s->listener.fd = -1;
        r = control_bind(s, path);
        if (r < 0) {
                bool explicit = control_path != NULL;
                const char *why = r == -EADDRINUSE ? "another bindonce answers there; give this one another --name or --control"
                                : r == -ENAMETOOLONG ? "the path is longer than 107 bytes"
                                : listener_strerror(&s->listener, r);

                control_server_free(s);
                if (explicit) {
                        if (why)
                                return log_error_errno(r, "cannot create control socket %s: %s", path, why);
                        return log_error_errno(r, "cannot create control socket %s: %m", path);
                }
                if (why)
                        log_warning("no control socket at %s: %s", path, why);
                else
                        log_warning_errno(r, "no control socket at %s: %m", path);
                return 0;
        }

        log_info("control socket %s", path);
        *ret = s;
        return 0;
}

ControlServer *control_server_free(ControlServer *s) {
        if (!s)
                return NULL;
        while (s->clients)
                client_free(s->clients);
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->resume);
        listener_close(&s->listener);
        free(s);
        return NULL;
}

/* ---- upgrade in place ------------------------------------------------------------------ */

int control_server_adopt(ControlServer **ret, sd_event *event, Listener *l, const ControlOps *ops, void *userdata) {
        ControlServer *s = calloc(1, sizeof *s);
        int r;

        if (!s)
                return -ENOMEM;
        s->event = event;
        s->ops = ops;
        s->userdata = userdata;
        s->listener = *l;
        r = sd_event_add_io(event, &s->io, s->listener.fd, EPOLLIN, on_accept, s);
        if (r < 0) {
                free(s);        /* the listener is still the caller's */
                return r;
        }
        *l = (Listener) { .fd = -1 };
        *ret = s;
        return 0;
}

const Listener *control_server_listener(const ControlServer *c) {
        return &c->listener;
}

/* A client without a request: only the answer is left to send. */
void control_server_answer(ControlServer *server, int fd, const char *text) {
        ControlClient *c = calloc(1, sizeof *c);
        int r;

        if (!c) {
                (void) close(fd);
                return;
        }
        *c = (ControlClient) { .server = server, .fd = fd, .next = server->clients };
        server->clients = c;
        server->n_clients++;
        r = sd_event_add_io(server->event, &c->io, fd, EPOLLIN, on_client_io, c);
        if (r >= 0)
                r = sd_event_add_time_relative(server->event, &c->timer, CLOCK_MONOTONIC, CLIENT_TIMEOUT_USEC,
                                               100 * USEC_PER_MSEC, on_client_timeout, c);
        if (r < 0) {
                client_free(c);
                return;
        }
        client_reply(c, strdup(text));
}
