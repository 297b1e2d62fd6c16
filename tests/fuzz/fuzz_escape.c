/* SPDX-License-Identifier: MIT */
/* escape_control(): what reaches a terminal or a log line. Nothing below 0x20 (but \n and
 * \t when asked), no DEL, no C1 control, valid UTF-8, always NUL-terminated within the buffer. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* Sometimes too small, to exercise the cut; never 0 (nothing to terminate). */
        size_t room = size ? ESCAPE_CONTROL_MAX(size) - (data[0] % 8) : 1;

        if (room == 0 || room > ESCAPE_CONTROL_MAX(size))
                room = 1;
        char *out;

        if (size > 4096)
                return 0;
        out = malloc(room);
        assert(out);
        for (int flags = 0; flags < 4; flags++) {
                size_t n = escape_control((const char *) data, size, out, room, (EscapeFlags) flags);

                assert(n < room && out[n] == '\0' && strlen(out) == n);
                assert(utf8_valid((const unsigned char *) out, n));
                for (size_t i = 0; i < n; i++) {
                        unsigned char c = (unsigned char) out[i];

                        if ((c == '\n' || c == '\t') && (flags & ESCAPE_KEEP_NEWLINE))
                                continue;
                        assert(c >= 0x20 && c != 0x7f);
                        assert(!(c == 0xc2 && i + 1 < n && (unsigned char) out[i + 1] >= 0x80 &&
                                 (unsigned char) out[i + 1] <= 0x9f));
                }
        }
        free(out);
        return 0;
}
