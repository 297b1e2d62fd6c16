/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "units.h"
#include "util.h"

char *unit_quote(const char *arg) {
        size_t n = strlen(arg);
        bool plain = n > 0;
        char *out, *p;

        for (const char *c = arg; *c; c++)
                if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@+=:,./-", *c))
                        plain = false;

        /* Worst case every byte becomes four ("\x07"), plus quotes. */
        out = p = malloc(4 * n + 3);
        if (!out)
                return NULL;
        if (!plain)
                *p++ = '"';
        for (const char *c = arg; *c; c++) {
                unsigned char u = (unsigned char) *c;

                if (*c == '%')          /* specifier */
                        p = stpcpy(p, "%%");
                else if (*c == '$')     /* variable expansion */
                        p = stpcpy(p, "$$");
                else if (*c == '"' || *c == '\\')
                        *p++ = '\\', *p++ = *c;
                else if (u < ' ' || u == 0x7f)
                        p += sprintf(p, "\\x%02x", u);
                else
                        *p++ = *c;
        }
        if (!plain)
                *p++ = '"';
        *p = '\0';
        return out;
}

/* Socket units are grouped by fd name: systemd gives all sockets of one unit one name. */
typedef struct SocketUnit {
        const char *fdname;
        char *unit;                     /* "NAME.socket" or "NAME-FDNAME.socket" */
} SocketUnit;

static bool unit_char_ok(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
}

bool unit_prefix_is_valid(const char *name) {
        /* systemd's UNIT_NAME_MAX is 256 with the NUL; ".service" is the longest suffix. */
        if (!*name || *name == '.' || strlen(name) + strlen(".service") > 255)
                return false;
        for (const char *c = name; *c; c++)
                if (!unit_char_ok(*c) && *c != ':')
                        return false;
        return true;
}

/* A free-text value: systemd expands %-specifiers in Description= and FileDescriptorName=. */
static void put_value(FILE *f, const char *s) {
        for (; *s; s++) {
                if (*s == '%')
                        fputc('%', f);
                fputc(*s, f);
        }
}

/* systemd-escape's rule for the free part of a unit name. */
static char *unit_escape(const char *s) {
        char *out = malloc(4 * strlen(s) + 1), *p = out;

        if (!out)
                return NULL;
        for (; *s; s++)
                if (unit_char_ok(*s) && !(p == out && *s == '.'))
                        *p++ = *s;
                else
                        p += sprintf(p, "\\x%02x", (unsigned char) *s);
        *p = '\0';
        return out;
}

static void socket_units_free(SocketUnit *u, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(u[i].unit);
        free(u);
}

static int socket_units(const UnitsRequest *req, SocketUnit **ret, size_t *ret_n) {
        SocketUnit *u = calloc(req->n_listeners, sizeof *u);
        size_t n = 0;

        if (!u)
                return -ENOMEM;
        for (size_t i = 0; i < req->n_listeners; i++) {
                bool seen = false;
                for (size_t j = 0; j < n; j++)
                        seen = seen || strcmp(u[j].fdname, req->listeners[i].name) == 0;
                if (!seen)
                        u[n++].fdname = req->listeners[i].name;
        }
        for (size_t j = 0; j < n; j++) {
                _cleanup_free_ char *esc = NULL;
                int r;

                if (n == 1)
                        r = asprintf(&u[j].unit, "%s.socket", req->name);
                else {
                        esc = unit_escape(u[j].fdname);
                        r = esc ? asprintf(&u[j].unit, "%s-%s.socket", req->name, esc) : -1;
                }
                if (r < 0) {
                        u[j].unit = NULL;
                        socket_units_free(u, n);
                        return -ENOMEM;
                }
        }
        *ret = u;
        *ret_n = n;
        return 0;
}

static const char *listen_directive(int type) {
        switch (type) {
        case SOCK_DGRAM:
                return "ListenDatagram";
        case SOCK_SEQPACKET:
                return "ListenSequentialPacket";
        default:
                return "ListenStream";
        }
}

/* bindonce's socket options in systemd's words. */
static void print_socket_settings(const UnitsRequest *req, FILE *f) {
        static const struct { const char *key; size_t offset; } names[] = {
                { "SocketUser=",   offsetof(UnitsRequest, socket_user) },
                { "SocketGroup=",  offsetof(UnitsRequest, socket_group) },
                { "BindToDevice=", offsetof(UnitsRequest, bind_to_device) },
        };

        if (req->socket_mode != (mode_t) -1)
                fprintf(f, "SocketMode=%04o\n", (unsigned) req->socket_mode);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                const char *v = *(const char *const *) ((const char *) req + names[i].offset);
                if (v) {
                        fputs(names[i].key, f);
                        put_value(f, v);
                        fputc('\n', f);
                }
        }
        if (req->ipv6_only)
                fprintf(f, "BindIPv6Only=ipv6-only\n");
        if (req->freebind)
                fprintf(f, "FreeBind=yes\n");
}

static void print_socket_unit(const UnitsRequest *req, const SocketUnit *u, FILE *f) {
        char buf[ADDRESS_FORMAT_MAX];

        fprintf(f, "[Unit]\nDescription=%s sockets (", req->name);
        put_value(f, u->fdname);
        fprintf(f, "), run under bindonce\n\n[Socket]\n");
        for (size_t i = 0; i < req->n_listeners; i++) {
                const Listener *l = &req->listeners[i];
                if (strcmp(l->name, u->fdname) != 0)
                        continue;
                /* A bare port stays a bare port: systemd's own dual-stack rule. */
                if (l->address.port_only)
                        fprintf(f, "%s=%u\n", listen_directive(l->address.type), address_port(&l->address));
                else {
                        /* Specifiers expand here too: a '%' in a path is written '%%'. */
                        fprintf(f, "%s=", listen_directive(l->address.type));
                        put_value(f, address_format(&l->address, buf));
                        fputc('\n', f);
                }
        }
        fprintf(f, "FileDescriptorName=");
        put_value(f, u->fdname);
        fprintf(f, "\nService=%s.service\n", req->name);
        if (req->backlog > 0)
                fprintf(f, "Backlog=%d\n", req->backlog);
        if (req->reuse_port)
                fprintf(f, "ReusePort=yes\n");
        print_socket_settings(req, f);
        fprintf(f, "\n[Install]\nWantedBy=sockets.target\n");
}

static int print_service_unit(const UnitsRequest *req, const SocketUnit *u, size_t n, FILE *f) {
        _cleanup_free_ char *self = unit_quote(req->bindonce_path);
        _cleanup_free_ char *quoted_control = unit_quote(req->control ? req->control : req->instance);

        if (!self || !quoted_control)
                return -ENOMEM;
        fprintf(f, "[Unit]\nDescription=%s, run under bindonce\nRequires=", req->name);
        for (size_t j = 0; j < n; j++)
                fprintf(f, "%s%s", j ? " " : "", u[j].unit);
        fprintf(f, "\nAfter=");
        for (size_t j = 0; j < n; j++)
                fprintf(f, "%s%s", j ? " " : "", u[j].unit);
        fprintf(f, "\n\n[Service]\n"
                   "# bindonce says READY=1 once its workers run, and keeps STATUS= current.\n"
                   "Type=notify\n%s"
                   "Sockets=", req->nonblocking ? "# --nonblocking, in systemd's words.\nNonBlocking=yes\n" : "");
        for (size_t j = 0; j < n; j++)
                fprintf(f, "%s%s", j ? " " : "", u[j].unit);
        fprintf(f, "\nExecStart=%s", self);
        for (size_t i = 0; i < req->n_exec_args; i++) {
                _cleanup_free_ char *q = unit_quote(req->exec_args[i]);
                if (!q)
                        return -ENOMEM;
                fprintf(f, " %s", q);
        }
        fprintf(f, " --");
        for (char *const *c = req->command; *c; c++) {
                _cleanup_free_ char *q = unit_quote(*c);
                if (!q)
                        return -ENOMEM;
                fprintf(f, " %s", q);
        }
        fputc('\n', f);
        /* As root (no User= here), the control socket is /run/bindonce/NAME.sock, where
         * `bindonce ctl --name NAME` looks from any root shell too. */
        if (req->no_control)
                fprintf(f, "# A rolling restart, one worker at a time, without closing the sockets\n"
                           "# (with --control none, no `bindonce ctl reload` to wait for its outcome).\n"
                           "ExecReload=/bin/kill -HUP $MAINPID\n");
        else
                fprintf(f, "# A rolling restart, one worker at a time, without closing the sockets; it\n"
                           "# waits for the outcome, so `systemctl reload` fails when the new workers do not\n"
                           "# come up.\n"
                           "ExecReload=%s ctl %s %s reload\n",
                        self, req->control ? "--control" : "--name", quoted_control);
        fprintf(f, ""
                   "# SIGTERM to bindonce alone, which stops its workers in order; SIGKILL to\n"
                   "# whatever is left only at the end.\n"
                   "KillMode=mixed\n"
                   "TimeoutStopSec=%.0f\n"
                   "Restart=on-failure\n",
                req->stop_timeout_sec + 10);
        return 0;
}

/* A unit file value is one line, and a backslash at its end joins the next: a path with a
 * control character, or ending in a backslash, cannot be written as a Listen*= value
 * (systemd does not unescape them), and must never become a line of its own (a newline
 * in -l once injected an ExecStartPre=). Refused, with the reason. */
static int listen_values_check(const UnitsRequest *req) {
        for (size_t i = 0; i < req->n_listeners; i++) {
                const Listener *l = &req->listeners[i];
                char buf[ADDRESS_FORMAT_MAX];
                const char *text;
                size_t n;

                if (l->address.port_only)
                        continue;
                text = address_format(&l->address, buf);
                n = strlen(text);
                for (size_t j = 0; j < n; j++)
                        if ((unsigned char) text[j] < 0x20 || text[j] == 0x7f)
                                return log_usage("generate-units: the address '%s' has a control character, which a "
                                                 "unit file cannot carry; choose another path", text);
                if (n > 0 && text[n - 1] == '\\')
                        return log_usage("generate-units: the address '%s' ends in a backslash, which a unit file "
                                         "reads as a line continuation; choose another path", text);
        }
        return 0;
}

int units_print(const UnitsRequest *req, FILE *f) {
        SocketUnit *u;
        size_t n;
        int r;

        r = listen_values_check(req);
        if (r < 0)
                return r;

        r = socket_units(req, &u, &n);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        for (size_t j = 0; j < n; j++) {
                fprintf(f, "# %s\n", u[j].unit);
                print_socket_unit(req, &u[j], f);
                fputc('\n', f);
        }
        fprintf(f, "# %s.service\n", req->name);
        r = print_service_unit(req, u, n, f);
        socket_units_free(u, n);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        if (fflush(f) != 0 || ferror(f))
                return log_error_errno(errno > 0 ? -errno : -EIO, "Cannot write the units: %m");
        return 0;
}

/* Writes path atomically: a temporary file renamed over it. */
static int write_unit(const char *dir, const char *unit, const char *tmpname, char *const text) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        size_t n = strlen(text);

        if (asprintf(&tmp, "%s/.%s.%s", dir, unit, tmpname) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        ssize_t k = write(fd, text, n);
        if (k != (ssize_t) n || fsync(fd) < 0) {
                int r = k >= 0 && k != (ssize_t) n ? -EIO : -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

/* The temporary files renamed to their names, all or none: what would refuse a rename (a
 * directory in the way) is looked for first, and a rename that fails anyway removes the
 * units this call created. (A unit that existed is replaced, and cannot be put back.) */
static int rename_units(const char *dir, char **names, size_t n, const char *tmpname) {
        _cleanup_free_ bool *created = calloc(n ? n : 1, sizeof *created);
        struct stat st;
        size_t j;
        int r = 0;

        if (!created)
                return -ENOMEM;
        for (j = 0; j < n; j++) {
                _cleanup_free_ char *path = NULL;

                if (asprintf(&path, "%s/%s", dir, names[j]) < 0)
                        return -ENOMEM;
                if (lstat(path, &st) >= 0 && S_ISDIR(st.st_mode))
                        return -EISDIR;
                created[j] = lstat(path, &st) < 0;
        }
        for (j = 0; j < n && r >= 0; j++) {
                _cleanup_free_ char *tmp = NULL, *path = NULL;

                if (asprintf(&tmp, "%s/.%s.%s", dir, names[j], tmpname) < 0 ||
                    asprintf(&path, "%s/%s", dir, names[j]) < 0)
                        r = -ENOMEM;
                else if (rename(tmp, path) < 0)
                        r = -errno;
        }
        if (r >= 0) {
                for (j = 0; j < n; j++)
                        printf("wrote %s/%s\n", dir, names[j]);
                return 0;
        }
        for (size_t k = 0; k + 1 < j; k++) {
                _cleanup_free_ char *path = NULL;

                if (created[k] && asprintf(&path, "%s/%s", dir, names[k]) >= 0)
                        (void) unlink(path);
        }
        return r;
}

int units_install(const UnitsRequest *req, const char *dir) {
        SocketUnit *u = NULL;
        char **texts = NULL, **names = NULL;
        size_t n = 0, n_files = 0, written = 0;
        char tmpname[32];
        int r;

        r = listen_values_check(req);
        if (r < 0)
                return r;
        snprintf(tmpname, sizeof tmpname, "%d.tmp", (int) getpid());
        r = socket_units(req, &u, &n);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        n_files = n + 1;
        texts = calloc(n_files, sizeof *texts);
        names = calloc(n_files, sizeof *names);
        if (!texts || !names) {
                r = -ENOMEM;
                goto done;
        }

        for (size_t j = 0; j <= n; j++) {
                size_t size;
                FILE *f = open_memstream(&texts[j], &size);

                if (!f) {
                        r = -ENOMEM;
                        goto done;
                }
                if (j < n) {
                        print_socket_unit(req, &u[j], f);
                        names[j] = strdup(u[j].unit);
                } else {
                        r = print_service_unit(req, u, n, f);
                        if (asprintf(&names[j], "%s.service", req->name) < 0)
                                names[j] = NULL;
                }
                if (fclose(f) != 0 || !names[j] || r < 0) {
                        r = -ENOMEM;
                        goto done;
                }
        }

        /* All temporary files first, then the renames: a failure to write leaves nothing
         * behind. */
        for (written = 0; written < n_files; written++) {
                r = write_unit(dir, names[written], tmpname, texts[written]);
                if (r < 0)
                        goto done;
        }
        r = rename_units(dir, names, n_files, tmpname);
        if (r < 0)
                goto done;
        written = 0;
        printf("\nNext:\n  systemctl daemon-reload\n  systemctl enable --now");
        for (size_t j = 0; j < n; j++)
                printf(" %s", u[j].unit);
        printf("\n  systemctl status %s.service\n", req->name);
        r = 0;

done:
        for (size_t j = 0; j < written && names; j++) {
                _cleanup_free_ char *tmp = NULL;
                if (asprintf(&tmp, "%s/.%s.%s", dir, names[j], tmpname) >= 0)
                        (void) unlink(tmp);
        }
        for (size_t j = 0; j < n_files && texts; j++)
                free(texts[j]);
        for (size_t j = 0; j < n_files && names; j++)
                free(names[j]);
        free(texts);
        free(names);
        socket_units_free(u, n);
        if (r < 0)
                return log_error_errno(r, "Cannot write units into %s: %m", dir);
        return 0;
}
