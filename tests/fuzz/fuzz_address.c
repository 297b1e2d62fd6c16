/* SPDX-License-Identifier: MIT */
/* address_parse(): every -l, --control and the notify addresses go through it. The first
 * byte picks the socket type, the rest is the text. A parsed address must format within
 * ADDRESS_FORMAT_MAX, and the formatted text must parse again to the same address. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
        char buf[ADDRESS_FORMAT_MAX];
        SocketAddress a, b;
        const char *why = NULL;
        char *text;

        if (size < 1 || size > 4096)
                return 0;
        text = strndup((const char *) data + 1, size - 1);
        if (!text)
                return 0;
        if (address_parse(text, types[data[0] % 3], &a, &why) >= 0) {
                const char *f = address_format(&a, buf);

                assert(strlen(f) < ADDRESS_FORMAT_MAX);
                /* A bare port formats as its wildcard address; abstract names with NULs or
                 * other bytes the text form cannot carry are not expected to round-trip. */
                if (!a.port_only && a.sa.sa_family != AF_UNIX && address_parse(f, a.type, &b, &why) >= 0) {
                        assert(b.size == a.size);
                        assert(memcmp(&b.sa, &a.sa, a.size) == 0);
                }
        } else
                assert(why && *why);
        free(text);
        return 0;
}
