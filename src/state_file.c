/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state_file.h"

/* Each record is a table of fields, used both to write and to read it: the two cannot
 * drift apart, and a field added to one is added to the other. */
typedef enum FieldType {
        F_U32,          /* unsigned */
        F_I32,          /* int, pid_t */
        F_U64,          /* usec_t, dev_t, ino_t, rlim_t, unsigned long long */
        F_BOOL,
        F_SECONDS,      /* usec_t, written as seconds with six decimals ("%.6f") */
        F_STR,          /* char *, hex; NULL is "-" */
        F_SLOT_STATE,   /* SlotState, by name */
        F_ROLE,         /* StateRole, by name */
        F_ADDR,         /* SocketAddress: its bytes (and so its size), hex */
        F_FDS,          /* int *, with its count at .aux */
} FieldType;

typedef struct Field {
        const char *key;
        FieldType type;
        size_t offset;
        size_t aux;
        unsigned since;         /* the first format with it; 0: every format */
} Field;

static_assert(sizeof(pid_t) == sizeof(int), "pid_t is written as an int");
static_assert(sizeof(dev_t) == 8 && sizeof(ino_t) == 8 && sizeof(rlim_t) == 8, "written as 64-bit numbers");
static_assert(sizeof(usec_t) == 8 && sizeof(unsigned long long) == 8, "written as 64-bit numbers");
static_assert(sizeof(SlotState) == sizeof(int) && sizeof(StateRole) == sizeof(int), "enums are ints");

#define S(k, t, m) { k, t, offsetof(UpgradeState, m), 0, 0 }
static const Field supervisor_fields[] = {
        S("version", F_STR, version),
        S("exe", F_STR, exe),
        S("sockets_kept", F_BOOL, sockets_kept),
        S("notify_fd", F_I32, notify_fd),
        S("notify_address", F_STR, notify_address),
        S("client_fd", F_I32, client_fd),
        S("target", F_U32, target),
        S("last_generation", F_U32, last_generation),
        S("good_generation", F_U32, good_generation),
        S("total_restarts", F_U32, total_restarts),
        S("ready_sent", F_BOOL, ready_sent),
        S("crash_loop", F_BOOL, crash_loop),
        S("crash_loop_logged", F_U64, crash_loop_logged),
        S("exit_code", F_I32, exit_code),
        S("nofile_cur", F_U64, nofile.rlim_cur),
        S("nofile_max", F_U64, nofile.rlim_max),
        S("restore_nofile", F_BOOL, restore_nofile),
};
#undef S

#define L(k, t, m) { k, t, offsetof(Listener, m), 0, 0 }
static const Field listener_fields[] = {
        L("fd", F_I32, fd),
        L("type", F_I32, address.type),
        L("address", F_ADDR, address),
        L("port_only", F_BOOL, address.port_only),
        L("name", F_STR, name),
        L("unlink", F_BOOL, unlink_on_close),
        L("dev", F_U64, dev),
        L("ino", F_U64, ino),
};
#undef L

#define SL(k, t, m) { k, t, offsetof(StateSlot, m), 0, 0 }
static const Field slot_fields[] = {
        SL("index", F_U32, index),
        SL("state", F_SLOT_STATE, state),
        SL("restarts", F_U32, restarts),
        SL("failures", F_U32, counts.failures),
        SL("self_failures", F_U32, counts.self_failures),
        SL("kills_start", F_U64, outside_kills.start),
        SL("kills", F_U32, outside_kills.count),
        SL("exited", F_BOOL, exited),
        SL("last_code", F_I32, last_code),
        SL("last_status", F_I32, last_status),
        SL("backoff_at", F_U64, backoff_at),
        SL("drain_started", F_U64, drain_started),
        SL("fresh", F_BOOL, fresh),
        { "fds", F_FDS, offsetof(StateSlot, fds), offsetof(StateSlot, n_fds), 0 },
};
#undef SL

#define W(k, t, m) { k, t, offsetof(StateWorker, m), 0, 0 }
static const Field worker_fields[] = {
        W("slot", F_U32, slot),
        W("role", F_ROLE, role),
        W("pid", F_I32, pid),
        W("starttime", F_U64, starttime),
        { "pidfd_id", F_U64, offsetof(StateWorker, pidfd_id), 0, 2 },
        W("generation", F_U32, generation),
        W("started", F_U64, started),
        W("started_realtime", F_SECONDS, started_realtime),
        W("ready", F_BOOL, ready),
        W("stopping", F_BOOL, stopping),
        W("candidate", F_BOOL, candidate),
        W("proven", F_BOOL, proven),
        W("requested", F_BOOL, requested),
        W("exec_failed", F_BOOL, exec_failed),
        W("kill_at", F_U64, kill_at),
        W("start_at", F_U64, start_at),
        W("watchdog_at", F_U64, watchdog_at),
        W("stable_at", F_U64, stable_at),
        W("proof_at", F_U64, proof_at),
        W("failed", F_STR, failed),
        W("status", F_STR, status),
        { "pidfd", F_I32, offsetof(StateWorker, pidfd), 0, 3 },
};
#undef W

#define P(k, t, m) { k, t, offsetof(StatePipe, m), 0, 0 }
static const Field pipe_fields[] = {
        P("fd", F_I32, fd),
        P("slot", F_U32, slot),
        P("pid", F_I32, pid),
};
#undef P

/* What a slot or worker record starts from when read. From format 3 on, the writer leaves
 * out every key whose value is this one's: a thousand resting workers and their slots are a
 * third of the text, written and read while the upgrade holds the loop. */
static const StateSlot slot_default = {};
static const StateWorker worker_default = { .pidfd = -1 };

static const char *const role_names[] = {
        [STATE_WORKER] = "worker",
        [STATE_NEXT] = "next",
        [STATE_RETIRED] = "retired",
};

/* ---- writing ------------------------------------------------------------------------- */

/* 1,000 workers and their slots are 150 kB of text (445 kB in format 2), written while the
 * upgrade holds the loop: into a buffer of our own, digits by hand, where fprintf() into a
 * memstream took 8 ms. */
typedef struct Out {
        char *p;
        size_t len, cap;
        bool failed;
} Out;

static char *room(Out *o, size_t n) {
        if (o->cap - o->len < n) {
                size_t cap = o->cap ? o->cap : 64 * 1024;
                char *p;

                while (cap - o->len < n)
                        cap *= 2;
                p = o->failed ? NULL : realloc(o->p, cap);
                if (!p) {
                        o->failed = true;
                        o->len = 0;
                        return NULL;
                }
                o->p = p;
                o->cap = cap;
        }
        return o->p + o->len;
}

static void put(Out *o, const void *s, size_t n) {
        char *p = room(o, n);

        if (p) {
                memcpy(p, s, n);
                o->len += n;
        }
}

static void put_str(Out *o, const char *s) {
        put(o, s, strlen(s));
}

static void put_char(Out *o, char c) {
        put(o, &c, 1);
}

static void put_u64(Out *o, uint64_t v) {
        char buf[24], *p = buf + sizeof buf;

        do
                *--p = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        put(o, p, (size_t) (buf + sizeof buf - p));
}

static void put_i64(Out *o, int64_t v) {
        if (v < 0)
                put_char(o, '-');
        put_u64(o, v < 0 ? -(uint64_t) v : (uint64_t) v);
}

/* "%.6f" of a time in microseconds, in integers: every value reads back as itself, which a
 * double in seconds cannot promise (above 2^33 s it has no room for every microsecond). */
static void put_seconds(Out *o, usec_t us) {
        char frac[7];

        put_u64(o, us / USEC_PER_SEC);
        frac[0] = '.';
        us %= USEC_PER_SEC;
        for (int i = 6; i >= 1; i--, us /= 10)
                frac[i] = (char) ('0' + us % 10);
        put(o, frac, 7);
}

static void put_hex(Out *o, const void *s, size_t n) {
        static const char digits[] = "0123456789abcdef";
        const unsigned char *b = s;
        char *p = room(o, 1 + 2 * n);

        if (!p)
                return;
        *p++ = 'x';
        for (size_t i = 0; i < n; i++) {
                *p++ = digits[b[i] >> 4];
                *p++ = digits[b[i] & 15];
        }
        o->len += 1 + 2 * n;
}

static void write_field(Out *o, const Field *fl, const void *base) {
        const char *p = (const char *) base + fl->offset;

        put_char(o, ' ');
        put_str(o, fl->key);
        put_char(o, '=');
        switch (fl->type) {
        case F_U32:
                put_u64(o, *(const unsigned *) p);
                break;
        case F_I32:
                put_i64(o, *(const int *) p);
                break;
        case F_U64:
                put_u64(o, *(const uint64_t *) p);
                break;
        case F_BOOL:
                put_char(o, *(const bool *) p ? '1' : '0');
                break;
        case F_SECONDS:
                put_seconds(o, *(const usec_t *) p);
                break;
        case F_STR: {
                const char *str = *(char *const *) p;
                if (str)
                        put_hex(o, str, strlen(str));
                else
                        put_char(o, '-');
                break;
        }
        case F_SLOT_STATE:
                put_str(o, slot_state_to_string(*(const SlotState *) p));
                break;
        case F_ROLE:
                put_str(o, role_names[*(const StateRole *) p]);
                break;
        case F_ADDR: {
                const SocketAddress *a = (const SocketAddress *) p;
                put_hex(o, &a->storage, a->size);
                break;
        }
        case F_FDS: {
                const int *fds = *(int *const *) p;
                size_t n = *(const size_t *) ((const char *) base + fl->aux);
                if (!fds)
                        put_char(o, '-');
                for (size_t i = 0; fds && i < n; i++) {
                        if (i)
                                put_char(o, ',');
                        put_i64(o, fds[i]);
                }
                break;
        }
        }
}

static size_t field_size(const Field *fl) {
        switch (fl->type) {
        case F_U64:
        case F_SECONDS:
                return sizeof(uint64_t);
        case F_BOOL:
                return sizeof(bool);
        case F_STR:
        case F_FDS:
                return sizeof(void *);
        case F_ADDR:
                return sizeof(SocketAddress);
        default:
                return sizeof(int);
        }
}

/* defaults: the record a reader starts from, whose values are left out (format 3 on), or
 * NULL for every key. */
static void write_record(Out *o, unsigned format, const char *name, const Field *fields, size_t n,
                         const void *base, const void *defaults) {
        if (format < 3)
                defaults = NULL;
        put_str(o, name);
        for (size_t i = 0; i < n; i++)
                if (fields[i].since <= format &&
                    !(defaults && memcmp((const char *) base + fields[i].offset,
                                         (const char *) defaults + fields[i].offset, field_size(&fields[i])) == 0))
                        write_field(o, &fields[i], base);
        put_char(o, '\n');
}

int state_format(const UpgradeState *s, char **ret, size_t *ret_len) {
        unsigned format = s->format ? s->format : STATE_FORMAT;
        Out o = {};

        if (format < STATE_FORMAT_OLDEST || format > STATE_FORMAT)
                return -EPROTONOSUPPORT;
        put_str(&o, "bindonce-state ");
        put_u64(&o, format);
        put_char(&o, '\n');
        write_record(&o, format, "supervisor", supervisor_fields, ELEMENTSOF(supervisor_fields), s, NULL);
        put_str(&o, "argv");
        for (char **a = s->argv; a && *a; a++) {
                put_char(&o, ' ');
                put_hex(&o, *a, strlen(*a));
        }
        put_char(&o, '\n');
        for (size_t i = 0; i < s->n_listeners; i++)
                write_record(&o, format, "listener", listener_fields, ELEMENTSOF(listener_fields), &s->listeners[i],
                             NULL);
        if (s->control.fd >= 0)
                write_record(&o, format, "control", listener_fields, ELEMENTSOF(listener_fields), &s->control, NULL);
        for (size_t i = 0; i < s->n_slots; i++)
                write_record(&o, format, "slot", slot_fields, ELEMENTSOF(slot_fields), &s->slots[i], &slot_default);
        for (size_t i = 0; i < s->n_workers; i++)
                write_record(&o, format, "worker", worker_fields, ELEMENTSOF(worker_fields), &s->workers[i],
                             &worker_default);
        for (size_t i = 0; i < s->n_pipes; i++)
                write_record(&o, format, "pipe", pipe_fields, ELEMENTSOF(pipe_fields), &s->pipes[i], NULL);
        put_str(&o, "end\n");
        if (o.failed) {
                free(o.p);
                return -ENOMEM;
        }
        *ret = o.p;
        *ret_len = o.len;
        return 0;
}

int state_write(const UpgradeState *s, FILE *f) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = state_format(s, &text, &len);

        if (r < 0)
                return r;
        if (fwrite(text, 1, len, f) != len || ferror(f))
                return -EIO;
        return 0;
}

/* ---- reading ------------------------------------------------------------------------- */

static int bad(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

static int unhex(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "x..." into n bytes (and a NUL after them, room for it included). */
static int read_hex(const char *v, char **ret, size_t *ret_len) {
        size_t len = strlen(v);
        char *s;

        if (v[0] != 'x' || len % 2 == 0)
                return -EINVAL;
        s = malloc(len / 2 + 1);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < len / 2; i++) {
                int hi = unhex(v[1 + 2 * i]), lo = unhex(v[2 + 2 * i]);
                if (hi < 0 || lo < 0) {
                        free(s);
                        return -EINVAL;
                }
                s[i] = (char) (hi << 4 | lo);
        }
        s[len / 2] = '\0';
        *ret = s;
        if (ret_len)
                *ret_len = len / 2;
        return 0;
}

/* Decimal digits only, no sign, no blanks, no overflow (what strtoull would let through
 * is refused here: the writer never writes it). */
static int read_u64(const char *v, uint64_t *ret) {
        uint64_t x = 0;

        if (!*v)
                return -EINVAL;
        for (; *v; v++) {
                unsigned d = (unsigned) (*v - '0');
                if (d > 9 || x > (UINT64_MAX - d) / 10)
                        return -EINVAL;
                x = x * 10 + d;
        }
        *ret = x;
        return 0;
}

static int read_i32(const char *v, int *ret) {
        bool negative = *v == '-';
        uint64_t x;

        if (read_u64(v + negative, &x) < 0 || x > (negative ? (uint64_t) INT32_MAX + 1 : (uint64_t) INT32_MAX))
                return -EINVAL;
        *ret = negative ? (int) -(int64_t) x : (int) x;
        return 0;
}

/* What put_seconds() writes, and what every earlier bindonce wrote ("%.6f"): whole seconds,
 * then up to six decimals; nothing finer, no sign, no exponent. */
static int read_seconds(const char *v, usec_t *ret) {
        uint64_t sec = 0, frac = 0, scale = USEC_PER_SEC;
        const char *p = v;

        for (; *p >= '0' && *p <= '9'; p++) {
                unsigned d = (unsigned) (*p - '0');
                if (sec > (UINT64_MAX / USEC_PER_SEC - d) / 10)
                        return -EINVAL;
                sec = sec * 10 + d;
        }
        if (p == v)
                return -EINVAL;
        if (*p == '.') {
                if (!p[1])
                        return -EINVAL;
                for (p++; *p >= '0' && *p <= '9' && scale > 1; p++)
                        frac += (uint64_t) (*p - '0') * (scale /= 10);
        }
        if (*p || sec * USEC_PER_SEC > UINT64_MAX - frac)
                return -EINVAL;
        *ret = sec * USEC_PER_SEC + frac;
        return 0;
}

static int read_fds(const char *v, int **ret, size_t *ret_n) {
        _cleanup_free_ int *fds = NULL;
        size_t n = 0;

        if (strcmp(v, "-") == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        for (const char *p = v; p;) {
                const char *comma = strchr(p, ',');
                char num[16];
                size_t len = comma ? (size_t) (comma - p) : strlen(p);
                int *a, fd;

                if (len == 0 || len >= sizeof num)
                        return -EINVAL;
                memcpy(num, p, len);
                num[len] = '\0';
                if (read_i32(num, &fd) < 0 || fd < 0)
                        return -EINVAL;
                a = realloc(fds, (n + 1) * sizeof *a);
                if (!a)
                        return -ENOMEM;
                fds = a;
                fds[n++] = fd;
                p = comma ? comma + 1 : NULL;
        }
        *ret = TAKE_PTR(fds);
        *ret_n = n;
        return 0;
}

static int read_enum(const char *v, const char *(*name_of)(int), int max, int *ret) {
        for (int i = 0; i < max; i++)
                if (strcmp(v, name_of(i)) == 0) {
                        *ret = i;
                        return 0;
                }
        return -EINVAL;
}

static const char *slot_state_name(int i) {
        return slot_state_to_string((SlotState) i);
}

static const char *role_name(int i) {
        return role_names[i];
}

static int read_value(const Field *fl, const char *v, void *base) {
        char *p = (char *) base + fl->offset;
        uint64_t u;
        int r;

        switch (fl->type) {
        case F_U32:
                r = read_u64(v, &u);
                if (r >= 0 && u > UINT32_MAX)
                        r = -EINVAL;
                if (r >= 0)
                        *(unsigned *) p = (unsigned) u;
                return r;
        case F_I32:
                return read_i32(v, (int *) p);
        case F_U64:
                return read_u64(v, (uint64_t *) p);
        case F_BOOL:
                if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
                        return -EINVAL;
                *(bool *) p = v[0] == '1';
                return 0;
        case F_SECONDS:
                return read_seconds(v, (usec_t *) p);
        case F_STR:
                if (strcmp(v, "-") == 0)
                        return 0;
                free(*(char **) p);
                *(char **) p = NULL;
                return read_hex(v, (char **) p, NULL);
        case F_SLOT_STATE:
                return read_enum(v, slot_state_name, _SLOT_STATE_MAX, (int *) p);
        case F_ROLE:
                return read_enum(v, role_name, (int) ELEMENTSOF(role_names), (int *) p);
        case F_ADDR: {
                SocketAddress *a = (SocketAddress *) p;
                _cleanup_free_ char *bytes = NULL;
                size_t n;

                r = read_hex(v, &bytes, &n);
                if (r < 0)
                        return r;
                if (n > sizeof a->storage)
                        return -EINVAL;
                memcpy(&a->storage, bytes, n);
                a->size = (socklen_t) n;
                return 0;
        }
        case F_FDS:
                free(*(int **) p);
                *(int **) p = NULL;
                return read_fds(v, (int **) p, (size_t *) ((char *) base + fl->aux));
        }
        return -EINVAL;
}

/* The field named key among those of the format, or n. The writer follows the table, so
 * the one after the previous is tried first: a worker's 20 keys cost 20 comparisons. */
static size_t find_field(const Field *fields, size_t n, unsigned format, const char *key, size_t next) {
        if (next < n && fields[next].since <= format && strcmp(fields[next].key, key) == 0)
                return next;
        for (size_t i = 0; i < n; i++)
                if (fields[i].since <= format && strcmp(fields[i].key, key) == 0)
                        return i;
        return n;
}

/* The words after the record's name, each "key=value", the fields of the table that the
 * format has, in any order, each once: every one of them, unless the record has defaults
 * (a slot or a worker, from format 3 on), which base already holds. */
static int read_record(char *words, unsigned format, const char *name, const Field *fields, size_t n,
                       void *base, bool defaults, char *err, size_t size) {
        bool seen[32] = {};
        size_t i = (size_t) -1;

        assert(n <= ELEMENTSOF(seen));
        /* One pass over each word (strtok_r() and strchr() went over it twice). */
        for (char *w = words, *next; *w; w = next) {
                char *end = strchrnul(w, ' '), *eq;

                next = *end ? end + 1 : end;
                *end = '\0';
                if (w == end)
                        continue;
                eq = memchr(w, '=', (size_t) (end - w));
                if (!eq)
                        return bad(err, size, "%s: '%.32s' is not key=value", name, w);
                *eq = '\0';
                i = find_field(fields, n, format, w, i + 1);
                if (i == n)
                        return bad(err, size, "%s: unknown key '%.32s'", name, w);
                if (seen[i])
                        return bad(err, size, "%s: key '%s' given twice", name, w);
                seen[i] = true;
                int r = read_value(&fields[i], eq + 1, base);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return bad(err, size, "%s: bad value for '%s'", name, w);
        }
        for (size_t k = 0; k < n && !(defaults && format >= 3); k++)
                if (!seen[k] && fields[k].since <= format)
                        return bad(err, size, "%s: key '%s' missing", name, fields[k].key);
        return 0;
}

static int read_argv(char *words, UpgradeState *s, char *err, size_t size) {
        char *state = NULL;
        size_t n = 0;

        if (s->argv)
                return bad(err, size, "argv: given twice");

        for (char *w = strtok_r(words, " ", &state); w; w = strtok_r(NULL, " ", &state)) {
                char **a = realloc(s->argv, (n + 2) * sizeof *a);
                if (!a)
                        return -ENOMEM;
                s->argv = a;
                /* Both: state_done() frees up to the first NULL, also after a bad word. */
                s->argv[n] = s->argv[n + 1] = NULL;
                if (read_hex(w, &s->argv[n], NULL) < 0)
                        return bad(err, size, "argv: word %zu is not hex text", n + 1);
                n++;
        }
        return n > 0 ? 0 : bad(err, size, "argv: empty");
}

/* Grows an array of records by one, zeroed; the new element in *ret. The room doubles
 * (at every power of two), so that 16384 workers cost no quadratic copying. */
static int grow(void **array, size_t *n, size_t elem, void **ret) {
        char *a = *array;

        if ((*n & (*n - 1)) == 0) {
                a = realloc(*array, (*n ? 2 * *n : 1) * elem);
                if (!a)
                        return -ENOMEM;
        }
        memset(a + *n * elem, 0, elem);
        *array = a;
        *ret = a + *n * elem;
        (*n)++;
        return 0;
}

static int read_line(char *line, unsigned format, UpgradeState *s, bool *have_supervisor, char *err, size_t size) {
        char *rest = strchrnul(line, ' ');
        void *rec;
        int r;

        if (*rest)
                *rest++ = '\0';
        if (strcmp(line, "supervisor") == 0) {
                *have_supervisor = true;
                return read_record(rest, format, line, supervisor_fields, ELEMENTSOF(supervisor_fields), s, false, err,
                                   size);
        }
        if (strcmp(line, "argv") == 0)
                return read_argv(rest, s, err, size);
        if (strcmp(line, "listener") == 0) {
                r = grow((void **) &s->listeners, &s->n_listeners, sizeof *s->listeners, &rec);
                if (r < 0)
                        return r;
                ((Listener *) rec)->fd = -1;
                return read_record(rest, format, line, listener_fields, ELEMENTSOF(listener_fields), rec, false, err,
                                   size);
        }
        if (strcmp(line, "control") == 0)
                return read_record(rest, format, line, listener_fields, ELEMENTSOF(listener_fields), &s->control, false,
                                   err, size);
        if (strcmp(line, "slot") == 0) {
                r = grow((void **) &s->slots, &s->n_slots, sizeof *s->slots, &rec);
                if (r < 0)
                        return r;
                *(StateSlot *) rec = slot_default;
                return read_record(rest, format, line, slot_fields, ELEMENTSOF(slot_fields), rec, true, err, size);
        }
        if (strcmp(line, "worker") == 0) {
                r = grow((void **) &s->workers, &s->n_workers, sizeof *s->workers, &rec);
                if (r < 0)
                        return r;
                *(StateWorker *) rec = worker_default;
                return read_record(rest, format, line, worker_fields, ELEMENTSOF(worker_fields), rec, true, err, size);
        }
        if (strcmp(line, "pipe") == 0) {
                r = grow((void **) &s->pipes, &s->n_pipes, sizeof *s->pipes, &rec);
                return r < 0 ? r : read_record(rest, format, line, pipe_fields, ELEMENTSOF(pipe_fields), rec, false, err,
                                               size);
        }
        return bad(err, size, "unknown record '%.32s'", line);
}

static int int_compare(const void *a, const void *b) {
        return (*(const int *) a > *(const int *) b) - (*(const int *) a < *(const int *) b);
}

/* What the records must agree on, beyond each one's syntax. */
static int state_check(const UpgradeState *s, char *err, size_t size) {
        _cleanup_free_ int *fds = NULL;
        int n;

        if (!s->argv || s->n_listeners == 0 || s->notify_fd < 0 || !s->notify_address)
                return bad(err, size, "no command line, socket or notify socket");
        if (s->target == 0 || s->target > s->n_slots || s->n_slots > WORKERS_MAX)
                return bad(err, size, "%u workers wanted of %zu slots", s->target, s->n_slots);
        for (size_t i = 0; i < s->n_slots; i++) {
                if (s->slots[i].index != i)
                        return bad(err, size, "slot %zu is numbered %u", i, s->slots[i].index);
                if (s->slots[i].fds && s->slots[i].n_fds != s->n_listeners)
                        return bad(err, size, "slot %zu has %zu sockets, not %zu", i, s->slots[i].n_fds,
                                   s->n_listeners);
        }
        for (size_t i = 0; i < s->n_pipes; i++)
                if (s->pipes[i].fd < 0)
                        return bad(err, size, "pipe %zu: fd %d", i, s->pipes[i].fd);
        for (size_t i = 0; i < s->n_workers; i++) {
                const StateWorker *w = &s->workers[i];

                if (w->pid <= 0 || w->slot >= s->n_slots)
                        return bad(err, size, "worker %zu: pid %d of slot %u", i, (int) w->pid, w->slot);
                if (w->pidfd != -1 && (w->pidfd < 3 || !w->pidfd_id))
                        return bad(err, size, "worker %zu: pidfd %d%s", i, w->pidfd,
                                   w->pidfd_id ? "" : " without a pidfd_id");
        }
        /* Each fd is one thing: the new bindonce closes a worker's pidfd once it watches it. */
        n = state_fds(s, 0, true, &fds);
        if (n < 0)
                return n;
        qsort(fds, (size_t) n, sizeof *fds, int_compare);
        for (int i = 1; i < n; i++)
                if (fds[i] == fds[i - 1])
                        return bad(err, size, "fd %d named twice", fds[i]);
        return 0;
}

int state_read(const char *buf, size_t len, UpgradeState *ret, unsigned *ret_format, char *err, size_t size) {
        _cleanup_free_ char *copy = malloc(len + 1);

        if (!copy)
                return -ENOMEM;
        memcpy(copy, buf, len);
        copy[len] = '\0';
        return state_read_in_place(copy, len, ret, ret_format, err, size);
}

int state_read_in_place(char *text, size_t len, UpgradeState *ret, unsigned *ret_format, char *err, size_t size) {
        UpgradeState s = { .control.fd = -1, .notify_fd = -1, .client_fd = -1 };
        bool have_supervisor = false, ended = false;
        char *state = NULL, *line;
        unsigned long format;
        int r = 0;

        if (strlen(text) != len)
                return bad(err, size, "the state holds a NUL byte");
        line = strtok_r(text, "\n", &state);
        if (!line || strncmp(line, "bindonce-state ", 15) != 0 || parse_uint(line + 15, 0, UINT32_MAX, &format) < 0)
                return bad(err, size, "not a bindonce state (no 'bindonce-state N' first line)");
        if (format < STATE_FORMAT_OLDEST || format > STATE_FORMAT) {
                if (ret_format)
                        *ret_format = (unsigned) format;
                (void) snprintf(err, size, "state format %lu, this bindonce reads formats %d to %d", format,
                                STATE_FORMAT_OLDEST, STATE_FORMAT);
                return -EPROTONOSUPPORT;
        }
        while (r >= 0 && (line = strtok_r(NULL, "\n", &state))) {
                if (ended)
                        r = bad(err, size, "text after 'end'");
                else if (strcmp(line, "end") == 0)
                        ended = true;
                else
                        r = read_line(line, (unsigned) format, &s, &have_supervisor, err, size);
        }
        if (r >= 0 && (!ended || !have_supervisor))
                r = bad(err, size, "the state is cut short (no %s)", have_supervisor ? "'end'" : "supervisor record");
        if (r >= 0)
                r = state_check(&s, err, size);
        if (r < 0) {
                state_done(&s);
                return r;
        }
        s.format = (unsigned) format;
        *ret = s;
        return 0;
}

void state_done(UpgradeState *s) {
        free(s->version);
        free(s->exe);
        for (char **a = s->argv; a && *a; a++)
                free(*a);
        free(s->argv);
        for (size_t i = 0; i < s->n_listeners; i++)
                free(s->listeners[i].name);
        free(s->listeners);
        free(s->control.name);
        free(s->notify_address);
        for (size_t i = 0; i < s->n_slots; i++)
                free(s->slots[i].fds);
        free(s->slots);
        for (size_t i = 0; i < s->n_workers; i++) {
                free(s->workers[i].failed);
                free(s->workers[i].status);
        }
        free(s->workers);
        free(s->pipes);
        *s = (UpgradeState) { .control.fd = -1, .notify_fd = -1, .client_fd = -1 };
}

int state_fds(const UpgradeState *s, size_t extra, bool pidfds, int **ret) {
        size_t n = 0, max = s->n_listeners + 3 + s->n_pipes + s->n_workers + extra;
        int *fds;

        for (size_t i = 0; i < s->n_slots; i++)
                max += s->slots[i].n_fds;
        fds = calloc(max, sizeof *fds);
        if (!fds)
                return -ENOMEM;
#define ADD(fd) do { if ((fd) >= 0) fds[n++] = (fd); } while (0)
        for (size_t i = 0; i < s->n_listeners; i++)
                ADD(s->listeners[i].fd);
        ADD(s->control.fd);
        ADD(s->notify_fd);
        ADD(s->client_fd);
        for (size_t i = 0; i < s->n_slots; i++)
                for (size_t j = 0; s->slots[i].fds && j < s->slots[i].n_fds; j++)
                        /* Slot 0's and unix sockets are the shared ones, counted above. */
                        if (s->slots[i].fds[j] != s->listeners[j].fd)
                                ADD(s->slots[i].fds[j]);
        for (size_t i = 0; i < s->n_pipes; i++)
                ADD(s->pipes[i].fd);
        for (size_t i = 0; pidfds && i < s->n_workers; i++)
                ADD(s->workers[i].pidfd);
#undef ADD
        *ret = fds;
        return (int) n;
}
