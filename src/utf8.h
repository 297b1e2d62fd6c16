/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Well-formed UTF-8 as RFC 3629 and Unicode 15 table 3-7 define it: no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF. Used to refuse binary garbage in
 * control requests and STATUS= texts (shown by `ctl status`, in JSON too). */
bool utf8_valid(const unsigned char *s, size_t n);

/* The length of the well-formed sequence at s (1..4), or 0 if there is none. */
size_t utf8_sequence_length(const unsigned char *s, size_t n);
