/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "escape.h"

size_t escape_control(const char *s, size_t n, char *out, size_t size, EscapeFlags flags) {
        size_t o = 0;

        if (size == 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                char tmp[9];
                size_t k;

                if (c == 0xc2 && i + 1 < n && (unsigned char) s[i + 1] >= 0x80 && (unsigned char) s[i + 1] <= 0x9f) {
                        /* A C1 control, U+0080..U+009F, in UTF-8. */
                        k = (size_t) snprintf(tmp, sizeof tmp, "\\xc2\\x%02x", (unsigned char) s[i + 1]);
                        i++;
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
        }
        out[o] = '\0';
        return o;
}
