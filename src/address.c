/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"

static int parse_port(const char *s, uint16_t *ret, const char **why) {
        unsigned long v = 0;

        /* Digits only: no sign, no spaces, no service names such as "http" (systemd takes none). */
        if (*s == '\0')
                return *why = "missing port after ':'", -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return *why = "port must be a number from 1 to 65535", -EINVAL;
                v = v * 10 + (unsigned long) (*p - '0');
                if (v > 65535)
                        return *why = "port must be a number from 1 to 65535", -EINVAL;
        }
        if (v == 0)
                return *why = "port must be a number from 1 to 65535", -EINVAL;

        *ret = (uint16_t) v;
        return 0;
}

static int parse_ipv6(const char *s, SocketAddress *a, const char **why) {
        const char *close = strchr(s, ']');
        char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
        uint16_t port;
        unsigned scope = 0;
        int r;

        if (!close)
                return *why = "IPv6 address lacks its closing ']'", -EINVAL;
        if (close[1] != ':')
                return *why = "expected ':PORT' after ']'", -EINVAL;
        if ((size_t) (close - s - 1) >= sizeof host)
                return *why = "not an IPv6 address", -EINVAL;
        memcpy(host, s + 1, (size_t) (close - s - 1));
        host[close - s - 1] = '\0';

        char *pct = strchr(host, '%');
        if (pct) {
                *pct++ = '\0';
                scope = if_nametoindex(pct);
                if (scope == 0)
                        return *why = "no such network interface after '%'", -EINVAL;
        }
        r = parse_port(close + 2, &port, why);
        if (r < 0)
                return r;
        if (inet_pton(AF_INET6, host, &a->in6.sin6_addr) != 1)
                return *why = "not an IPv6 address", -EINVAL;

        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons(port);
        a->in6.sin6_scope_id = scope;
        a->size = sizeof a->in6;
        return 0;
}

static int parse_unix(const char *s, SocketAddress *a, const char **why) {
        size_t n = strlen(s);
        bool abstract = s[0] == '@';

        /* sun_path holds 108 bytes: a path needs its NUL, an abstract name its leading NUL. */
        if (n >= sizeof a->un.sun_path)
                return *why = abstract ? "abstract socket name longer than 107 bytes"
                                       : "unix socket path longer than 107 bytes", -EINVAL;
        if (n < 2)
                return *why = abstract ? "empty abstract socket name" : "empty unix socket path", -EINVAL;

        a->un.sun_family = AF_UNIX;
        memcpy(a->un.sun_path, s, n);
        if (abstract) {
                a->un.sun_path[0] = '\0';
                a->size = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n);
        } else
                a->size = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
}

int address_parse(const char *s, int type, SocketAddress *ret, const char **ret_why) {
        SocketAddress a = { .type = type };
        const char *why = NULL;
        uint16_t port;
        int r;

        if (!s || !*s)
                return *ret_why = "empty address", -EINVAL;

        if (s[0] == '/' || s[0] == '@')
                r = parse_unix(s, &a, &why);
        else if (s[0] == '[')
                r = parse_ipv6(s, &a, &why);
        else {
                const char *colon = strrchr(s, ':');

                if (!colon) {
                        /* A bare port: systemd binds [::] (dual stack) and falls back to IPv4. */
                        r = parse_port(s, &port, &why);
                        if (r >= 0) {
                                a.in6.sin6_family = AF_INET6;
                                a.in6.sin6_addr = in6addr_any;
                                a.in6.sin6_port = htons(port);
                                a.size = sizeof a.in6;
                                a.port_only = true;
                        }
                } else if (memchr(s, ':', (size_t) (colon - s)))
                        why = "IPv6 addresses need brackets, as in [::1]:8080", r = -EINVAL;
                else {
                        char host[INET_ADDRSTRLEN];

                        if ((size_t) (colon - s) >= sizeof host)
                                why = "not an IPv4 address (host names are not resolved)", r = -EINVAL;
                        else {
                                memcpy(host, s, (size_t) (colon - s));
                                host[colon - s] = '\0';
                                r = parse_port(colon + 1, &port, &why);
                                if (r >= 0 && inet_pton(AF_INET, host, &a.in.sin_addr) != 1)
                                        why = "not an IPv4 address (host names are not resolved)", r = -EINVAL;
                                if (r >= 0) {
                                        a.in.sin_family = AF_INET;
                                        a.in.sin_port = htons(port);
                                        a.size = sizeof a.in;
                                }
                        }
                }
        }
        if (r < 0) {
                *ret_why = why;
                return r;
        }
        if (type == SOCK_SEQPACKET && a.sa.sa_family != AF_UNIX)
                return *ret_why = "sequential-packet sockets are unix sockets only", -EINVAL;

        *ret = a;
        return 0;
}

int address_family(const SocketAddress *a) {
        return a->sa.sa_family;
}

bool address_is_unix_path(const SocketAddress *a) {
        return a->sa.sa_family == AF_UNIX && a->un.sun_path[0] != '\0';
}

unsigned address_port(const SocketAddress *a) {
        switch (a->sa.sa_family) {
        case AF_INET:
                return ntohs(a->in.sin_port);
        case AF_INET6:
                return ntohs(a->in6.sin6_port);
        default:
                return 0;
        }
}

const char *address_format(const SocketAddress *a, char buf[static ADDRESS_FORMAT_MAX]) {
        char host[INET6_ADDRSTRLEN];
        char ifname[IF_NAMESIZE];

        switch (a->sa.sa_family) {
        case AF_INET:
                inet_ntop(AF_INET, &a->in.sin_addr, host, sizeof host);
                snprintf(buf, ADDRESS_FORMAT_MAX, "%s:%u", host, address_port(a));
                break;
        case AF_INET6:
                inet_ntop(AF_INET6, &a->in6.sin6_addr, host, sizeof host);
                if (a->in6.sin6_scope_id != 0 && if_indextoname(a->in6.sin6_scope_id, ifname))
                        snprintf(buf, ADDRESS_FORMAT_MAX, "[%s%%%s]:%u", host, ifname, address_port(a));
                else
                        snprintf(buf, ADDRESS_FORMAT_MAX, "[%s]:%u", host, address_port(a));
                break;
        case AF_UNIX: {
                size_t n = a->size - offsetof(struct sockaddr_un, sun_path);

                if (a->un.sun_path[0] == '\0')
                        snprintf(buf, ADDRESS_FORMAT_MAX, "@%.*s", (int) (n - 1), a->un.sun_path + 1);
                else
                        snprintf(buf, ADDRESS_FORMAT_MAX, "%s", a->un.sun_path);
                break;
        }
        default:
                snprintf(buf, ADDRESS_FORMAT_MAX, "(unknown family %d)", a->sa.sa_family);
        }
        return buf;
}

const char *socket_type_name(int type) {
        switch (type) {
        case SOCK_STREAM:
                return "stream";
        case SOCK_DGRAM:
                return "datagram";
        case SOCK_SEQPACKET:
                return "seqpacket";
        default:
                return "unknown";
        }
}
