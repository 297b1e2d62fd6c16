/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "escape.h"
#include "utf8.h"

size_t escape_control(const char *s, size_t n, char *out, size_t size, EscapeFlags flags) {
        const unsigned char *u = (const unsigned char *) s;
        size_t o = 0;

        if (size == 0)
                return 0;
        for (size_t i = 0; i < n;) {
                unsigned char c = u[i];
                char tmp[16];
                size_t k, used = 1;

                if (c >= 0x80) {
                        size_t len = utf8_sequence_length(u + i, n - i);

                        if (len == 0)           /* not UTF-8: a lone byte, maybe 8-bit CSI */
                                k = (size_t) snprintf(tmp, sizeof tmp, "\\x%02x", c);
                        else if (len == 2 && c == 0xc2 && u[i + 1] <= 0x9f) {
                                /* A C1 control, U+0080..U+009F. */
                                k = (size_t) snprintf(tmp, sizeof tmp, "\\xc2\\x%02x", u[i + 1]);
                                used = 2;
                        } else {
                                memcpy(tmp, u + i, len);
                                k = used = len;
                        }
                } else if ((c == '\n' || c == '\t') && (flags & ESCAPE_KEEP_NEWLINE)) {
                        tmp[0] = (char) c;
                        k = 1;
                } else if (c < 0x20 || c == 0x7f)
                        k = (size_t) snprintf(tmp, sizeof tmp, "\\x%02x", c);
                else if (c == '\\' && (flags & ESCAPE_BACKSLASH))
                        k = (size_t) snprintf(tmp, sizeof tmp, "\\\\");
                else {
                        tmp[0] = (char) c;
                        k = 1;
                }
                if (o + k >= size)
                        break;
                memcpy(out + o, tmp, k);
                o += k;
                i += used;
        }
        out[o] = '\0';
        return o;
}
