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
#include "ownership.h"
#include "escape.h"
#include "escapes.h"
#include "fdbudget.h"
#include "ratelimit.h"
#include "log.h"
#include "supervisor.h"

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
        Supervisor *sup;
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

static double uptime_of(const Worker *w) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9 - w->started_realtime;
}

static void last_exit_text(const Slot *slot, char *buf, size_t size) {
        if (!slot->exited)
                snprintf(buf, size, "-");
        else if (slot->last_code == CLD_EXITED)
                snprintf(buf, size, "status %d", slot->last_status);
        else
                snprintf(buf, size, "SIG%s", sigabbrev_np(slot->last_status) ?: "?");
}

static char *status_text(Supervisor *sup, bool json) {
        char addr[ADDRESS_FORMAT_MAX], last[32];
        char *buf = NULL;
        size_t size = 0;
        unsigned ready = 0, qlen, qmax;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return NULL;
        for (unsigned i = 0; i < sup->target; i++)
                ready += sup->slots[i]->worker && sup->slots[i]->worker->ready;

        if (json) {
                fprintf(f, "OK\n{\"name\":");
                json_string(f, sup->config.name);
                fprintf(f, ",\"pid\":%d,\"workers\":%u,\"ready\":%u,\"restarts\":%u,\"reloading\":%s,\"stopping\":%s,"
                           "\"balance\":\"%s\",\"migrate_req\":%s,\"escaped_stopped\":%u,\"slots\":[",
                        (int) getpid(), sup->target, ready, sup->total_restarts,
                        sup->roll.active ? "true" : "false", sup->stopping ? "true" : "false",
                        sup->config.balance == BALANCE_REUSEPORT ? "reuseport" : "shared",
                        sup->migrate ? "true" : "false", escapes_stopped());
                for (unsigned i = 0; i < sup->n_slots; i++) {
                        const Slot *slot = sup->slots[i];
                        const Worker *w = slot->worker;

                        fprintf(f, "%s{\"slot\":%u,\"pid\":", i ? "," : "", i);
                        if (w)
                                fprintf(f, "%d", (int) w->pid);
                        else
                                fputs("null", f);
                        fprintf(f, ",\"state\":\"%s\",\"ready\":%s,\"since\":", slot_state_name(slot),
                                w && w->ready ? "true" : "false");
                        if (w)
                                fprintf(f, "%.3f", w->started_realtime);
                        else
                                fputs("null", f);
                        fprintf(f, ",\"restarts\":%u,\"last_exit\":", slot->restarts);
                        if (slot->exited)
                                fprintf(f, "{\"code\":\"%s\",\"status\":%d}",
                                        slot->last_code == CLD_EXITED ? "exited" :
                                        slot->last_code == CLD_DUMPED ? "dumped" : "killed",
                                        slot->last_status);
                        else
                                fputs("null", f);
                        fputs(",\"status\":", f);
                        json_string(f, w ? w->status : NULL);
                        fputs(",\"next_pid\":", f);
                        if (slot->next)
                                fprintf(f, "%d", (int) slot->next->pid);
                        else
                                fputs("null", f);
                        fputc('}', f);
                }
                fputs("],\"sockets\":[", f);
                for (size_t i = 0; i < sup->n_listeners; i++) {
                        const Listener *l = &sup->listeners[i];

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
        } else {
                fprintf(f, "OK\nbindonce %s (pid %d): %u/%u workers ready, %u restarts%s%s",
                        sup->config.name, (int) getpid(), ready, sup->target, sup->total_restarts,
                        sup->roll.active ? ", reloading" : "", sup->stopping ? ", stopping" : "");
                if (escapes_stopped())
                        fprintf(f, ", %u escaped processes stopped", escapes_stopped());
                fputs("\n\n", f);
                fprintf(f, "%-5s %-8s %-9s %-6s %-10s %-9s %-12s %s\n",
                        "SLOT", "PID", "STATE", "READY", "UPTIME", "RESTARTS", "LAST EXIT", "STATUS");
                for (unsigned i = 0; i < sup->n_slots; i++) {
                        const Slot *slot = sup->slots[i];
                        const Worker *w = slot->worker;
                        char pid[16] = "-", up[24] = "-";

                        if (w) {
                                snprintf(pid, sizeof pid, "%d", (int) w->pid);
                                snprintf(up, sizeof up, "%.1fs", uptime_of(w));
                        }
                        char status[ESCAPE_CONTROL_MAX(256)] = "";

                        last_exit_text(slot, last, sizeof last);
                        /* A worker's text, for a terminal: no escape sequence gets through. */
                        if (w && w->status)
                                (void) escape_control(w->status, strlen(w->status), status, sizeof status, ESCAPE_BACKSLASH);
                        fprintf(f, "%-5u %-8s %-9s %-6s %-10s %-9u %-12s %s\n", i, pid, slot_state_name(slot),
                                w && w->ready ? "yes" : "no", up, slot->restarts, last, status);
                }
                fprintf(f, "\n%-32s %-12s %-10s %-4s %s\n", "SOCKET", "NAME", "TYPE", "FD", "QUEUE");
                for (size_t i = 0; i < sup->n_listeners; i++) {
                        const Listener *l = &sup->listeners[i];
                        char queue[32] = "-";

                        if (socket_queue(l, &qlen, &qmax))
                                snprintf(queue, sizeof queue, "%u/%u", qlen, qmax);
                        fprintf(f, "%-32s %-12s %-10s %-4zu %s\n",
                                l->address.size ? address_format(&l->address, addr) : "?", l->name,
                                socket_type_name(l->address.type), 3 + i, queue);
                }
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- requests -------------------------------------------------------------------------- */

static int parse_slot(Supervisor *sup, const char *s, int *ret) {
        unsigned long v;

        if (strcmp(s, "all") == 0) {
                *ret = -1;
                return 0;
        }
        if (sup->target == 0 || parse_uint(s, 0, sup->target - 1, &v) < 0)
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

static void client_reload_done(void *userdata, const char *error);

/* Why the supervisor refused a command, for an ERROR reply. */
static const char *refusal(int r) {
        return r == -ESHUTDOWN ? "bindonce is stopping" : strerror(-r);
}

/* Runs one request line and returns the reply ("OK\n..." or "ERROR ...\n"), or NULL when
 * the reply comes later (reload). */
static char *control_execute(Supervisor *sup, ControlClient *client, const char *line, size_t len) {
        char copy[CONTROL_REQUEST_MAX + 1], *argv[8], *state = NULL;
        size_t argc = 0;
        int r;

        if (len == 0)
                return reply("ERROR empty request; send a command such as 'status'\n");
        if (len > CONTROL_REQUEST_MAX)
                return reply("ERROR request longer than %d bytes\n", CONTROL_REQUEST_MAX);
        if (memchr(line, '\0', len))
                return reply("ERROR request contains a NUL byte\n");
        if (!utf8_valid((const unsigned char *) line, len))
                return reply("ERROR request is not UTF-8 text\n");

        memcpy(copy, line, len);
        copy[len] = '\0';
        for (char *w = strtok_r(copy, " \t\r", &state); w; w = strtok_r(NULL, " \t\r", &state)) {
                if (argc == ELEMENTSOF(argv))
                        return reply("ERROR too many words in the request\n");
                argv[argc++] = w;
        }
        if (argc == 0)
                return reply("ERROR empty request; send a command such as 'status'\n");

        const char *cmd = argv[0];
        if (strcmp(cmd, "status") == 0) {
                bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
                if (argc > 2 || (argc == 2 && !json))
                        return reply("ERROR usage: status [--json]\n");
                char *s = status_text(sup, json);
                return s ? s : reply("ERROR out of memory\n");
        }
        if (strcmp(cmd, "reload") == 0) {
                if (argc != 1)
                        return reply("ERROR usage: reload\n");
                ReloadWaiter waiter = { client_reload_done, client };
                /* Set first: workers ready at exec may finish the roll before this returns. */
                client->waiting = true;
                r = supervisor_reload(sup, &waiter);
                if (r < 0) {
                        client->waiting = false;
                        return reply("ERROR cannot reload: %s\n", refusal(r));
                }
                return NULL;
        }
        if (strcmp(cmd, "restart") == 0) {
                int slot;
                if (argc != 2 || parse_slot(sup, argv[1], &slot) < 0)
                        return reply("ERROR usage: restart SLOT|all, with SLOT from 0 to %u\n", sup->target - 1);
                r = supervisor_restart_slot(sup, slot);
                if (r < 0)
                        return reply("ERROR cannot restart: %s\n", refusal(r));
                return reply("OK\n");
        }
        if (strcmp(cmd, "scale") == 0) {
                unsigned long n;

                if (argc != 2 || parse_uint(argv[1], 1, WORKERS_MAX, &n) < 0)
                        return reply("ERROR usage: scale N, with N from 1 to %d\n", WORKERS_MAX);
                char why[256];
                if (fdbudget_scale_check(sup, (unsigned) n, why, sizeof why) < 0)
                        return reply("ERROR cannot scale to %lu: %s\n", n, why);
                r = supervisor_scale(sup, (unsigned) n);
                if (r < 0)
                        return reply("ERROR cannot scale: %s\n", refusal(r));
                return reply("OK\n");
        }
        if (strcmp(cmd, "signal") == 0) {
                int sig = argc >= 2 ? parse_signal(argv[1]) : -EINVAL, slot = -1;
                if (argc < 2 || argc > 3 || sig < 0 || (argc == 3 && parse_slot(sup, argv[2], &slot) < 0))
                        return reply("ERROR usage: signal SIG [SLOT|all], SIG as TERM, SIGTERM or a number\n");
                r = supervisor_signal_slot(sup, sig, slot);
                if (r < 0)
                        return reply("ERROR cannot signal: %s\n", strerror(-r));
                return reply("OK\n");
        }
        if (strcmp(cmd, "stop") == 0) {
                if (argc != 1)
                        return reply("ERROR usage: stop\n");
                supervisor_stop(sup, EXIT_SUCCESS);
                return reply("OK\n");
        }
        return reply("ERROR unknown command '%.64s'; commands: status [--json], reload, restart SLOT|all, "
                     "scale N, signal SIG [SLOT|all], stop\n", cmd);
}

/* ---- clients ------------------------------------------------------------------------------ */

static bool accept_paused(ControlServer *server);

static void client_free(ControlClient *c) {
        ControlServer *s = c->server;

        if (c->waiting)
                supervisor_forget_waiter(s->sup, c);
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

static void client_reload_done(void *userdata, const char *error) {
        ControlClient *c = userdata;
        char *text = error ? reply("ERROR reload failed: %s\n", error) : reply("OK\nreload complete\n");

        c->waiting = false;
        if (c->handling) {
                /* Still inside client_handle(): it sends this when control_execute() returns. */
                free(c->pending);
                c->pending = text;
        } else
                client_reply(c, text);
}

static void client_handle(ControlClient *c, size_t len) {
        char *text;

        c->handling = true;
        text = control_execute(c->server->sup, c, c->in, len);
        c->handling = false;
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
                r = sd_event_add_io(server->sup->event, &c->io, cfd, EPOLLIN | EPOLLRDHUP, on_client_io, c);
                if (r >= 0)
                        r = sd_event_add_time_relative(server->sup->event, &c->timer, CLOCK_MONOTONIC,
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
        r = sd_event_add_io(s->sup->event, &s->io, s->listener.fd, EPOLLIN, on_accept, s);
        if (r < 0)
                return r;
        /* Made now, while fds are plenty: pausing at EMFILE must not need one (a busy loop). */
        r = sd_event_add_time_relative(s->sup->event, &s->resume, CLOCK_MONOTONIC, USEC_PER_SEC, 0, on_resume, s);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s->resume, SD_EVENT_OFF);
}

int control_server_new(ControlServer **ret, Supervisor *sup) {
        const SupervisorConfig *cfg = &sup->config;
        char path[256], dir[256];
        ControlServer *s;
        int r;

        *ret = NULL;
        if (cfg->control_path && !*cfg->control_path)
                return 0; /* --control none */

        if (cfg->control_path)
                snprintf(path, sizeof path, "%s", cfg->control_path);
        else {
                r = control_default_path(cfg->name, path, sizeof path, dir, sizeof dir);
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
        s->sup = sup;
        s->listener.fd = -1;
        r = control_bind(s, path);
        if (r < 0) {
                bool explicit = cfg->control_path != NULL;
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
