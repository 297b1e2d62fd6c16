/* SPDX-License-Identifier: MIT */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

/* A listening address in systemd's ListenStream= syntax. */
typedef struct SocketAddress {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
                struct sockaddr_un un;
                struct sockaddr_storage storage;
        };
        socklen_t size;
        int type;               /* SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET */
        bool port_only;         /* "PORT": [::]:PORT, or 0.0.0.0:PORT where there is no IPv6 */
} SocketAddress;

/* Longest text address_format() writes, with the terminating NUL. */
#define ADDRESS_FORMAT_MAX (sizeof(((struct sockaddr_un *) NULL)->sun_path) + 2 + 16)

/* Parses PORT, IPv4:PORT, [IPv6]:PORT, [IPv6%IFACE]:PORT, /path or @abstract. Returns 0, or
 * -EINVAL with *ret_why set to a short cause fit for a usage message. */
int address_parse(const char *s, int type, SocketAddress *ret, const char **ret_why);

/* "127.0.0.1:8080", "[::1]:8080", "/run/x.sock", "@name". */
const char *address_format(const SocketAddress *a, char buf[static ADDRESS_FORMAT_MAX]);

int address_family(const SocketAddress *a);
bool address_is_unix_path(const SocketAddress *a);
unsigned address_port(const SocketAddress *a);
const char *socket_type_name(int type);
