/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

typedef enum EscapeFlags {
        ESCAPE_BACKSLASH = 1 << 0,      /* "\\": for text escaped once, here */
        ESCAPE_KEEP_NEWLINE = 1 << 1,   /* \n and \t pass: multi-line text for a terminal */
} EscapeFlags;

/* Text from outside (a worker's STATUS=, a socket path, an fd name) shown on a terminal
 * or written as one log line: control characters (C0, DEL, and the C1 range U+0080..U+009F,
 * which a terminal may take as escape sequences) and bytes that are not UTF-8 (a lone 0x9b
 * is CSI to an 8-bit terminal) become "\xNN", and with ESCAPE_BACKSLASH a backslash "\\",
 * so that nothing can move the cursor, recolour the screen or start a new log line. The
 * output is valid UTF-8. Writes at most size bytes with the NUL, cutting at a whole
 * escape; returns the length written. */
size_t escape_control(const char *s, size_t n, char *out, size_t size, EscapeFlags flags);

/* Room for escape_control() of n bytes without cutting. */
#define ESCAPE_CONTROL_MAX(n) (4 * (n) + 1)
