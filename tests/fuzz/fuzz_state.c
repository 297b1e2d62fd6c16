/* SPDX-License-Identifier: MIT */
/* state_read(): any text a new bindonce is handed as the state of an upgrade in place is
 * either refused or read into a state that, written again, reads back to the same text;
 * never a crash, never a read past the end. */
#include <assert.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "state_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* An exact copy on the heap: ASan sees any read past the text. */
        char *copy = malloc(size ? size : 1), *text = NULL, *again = NULL, err[256];
        UpgradeState s, t;
        size_t len = 0, len2 = 0;
        int *fds = NULL;

        assert(copy);
        memcpy(copy, data, size);
        if (state_read(copy, size, &s, NULL, err, sizeof err) == 0) {
                assert(state_fds(&s, 2, true, &fds) >= 0);
                free(fds);
                assert(state_format(&s, &text, &len) == 0);
                assert(state_read(text, len, &t, NULL, err, sizeof err) == 0);
                assert(state_format(&t, &again, &len2) == 0);
                assert(len == len2 && memcmp(text, again, len) == 0);
                state_done(&t);
                state_done(&s);
                free(text);
                free(again);
        }
        free(copy);
        return 0;
}
