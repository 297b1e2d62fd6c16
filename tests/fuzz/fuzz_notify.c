/* SPDX-License-Identifier: MIT */
/* notify_parse(): any datagram a worker (or anyone) sends gives a message whose STATUS= is
 * a terminated, valid UTF-8 string that fits; never a crash, never a read past the end. */
#include <assert.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "notify.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        NotifyMessage m;
        /* An exact copy on the heap: ASan sees any read past the datagram. */
        char *copy = malloc(size ? size : 1);

        assert(copy);
        memcpy(copy, data, size);
        notify_parse(copy, size, &m);
        if (m.has_status) {
                size_t n = strnlen(m.status, sizeof m.status);
                assert(n < sizeof m.status);
                assert(utf8_valid((const unsigned char *) m.status, n));
        }
        assert(!(m.watchdog_ping && m.watchdog_trigger));
        free(copy);
        return 0;
}
