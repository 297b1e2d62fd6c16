/* SPDX-License-Identifier: MIT */
/* control_request_parse(): whatever a client sends, one of two outcomes: a request whose
 * fields are in range, or an "ERROR ...\n" reply that fits its buffer; never a crash. */
#include <assert.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "control.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ControlRequest req;
        char err[512];
        /* The first byte picks the server's slot count, the rest is the line. */
        unsigned workers = size ? 1 + data[0] % 64 : 4;
        const char *line = size ? (const char *) data + 1 : "";
        size_t len = size ? size - 1 : 0;

        if (len > CONTROL_REQUEST_MAX)
                return 0;
        memset(err, 0x55, sizeof err);
        if (control_request_parse(line, len, workers, &req, err, sizeof err) < 0) {
                size_t n = strnlen(err, sizeof err);
                assert(n < sizeof err);
                assert(strncmp(err, "ERROR ", 6) == 0 && n > 6 && err[n - 1] == '\n');
                return 0;
        }
        assert(req.command >= 0 && req.command < _CONTROL_COMMAND_MAX);
        if (req.command == CONTROL_RESTART || req.command == CONTROL_SIGNAL)
                assert(req.slot >= -1 && req.slot < (int) workers);
        if (req.command == CONTROL_SCALE)
                assert(req.n >= 1);
        if (req.command == CONTROL_SIGNAL)
                assert(req.sig >= 1 && req.sig <= 64);
        if (req.command == CONTROL_UPGRADE)
                assert(strnlen(req.exe, sizeof req.exe) < sizeof req.exe);
        return 0;
}
