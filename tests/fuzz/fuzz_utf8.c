/* SPDX-License-Identifier: MIT */
/* utf8_valid() against a reference written the other way round: decode each sequence to
 * its code point, then reject what is overlong, a surrogate or above U+10FFFF. */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool reference(const uint8_t *s, size_t n) {
        for (size_t i = 0; i < n;) {
                uint32_t cp, min;
                size_t k;

                if (s[i] < 0x80) {
                        i++;
                        continue;
                } else if ((s[i] & 0xe0) == 0xc0)
                        k = 2, cp = s[i] & 0x1f, min = 0x80;
                else if ((s[i] & 0xf0) == 0xe0)
                        k = 3, cp = s[i] & 0x0f, min = 0x800;
                else if ((s[i] & 0xf8) == 0xf0)
                        k = 4, cp = s[i] & 0x07, min = 0x10000;
                else
                        return false;
                if (i + k > n)
                        return false;
                for (size_t j = 1; j < k; j++) {
                        if ((s[i + j] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + j] & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += k;
        }
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        assert(utf8_valid(data, size) == reference(data, size));
        return 0;
}
