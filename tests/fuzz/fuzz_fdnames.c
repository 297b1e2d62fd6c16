/* SPDX-License-Identifier: MIT */
/* LISTEN_FDNAMES as activation_adopt() reads it, with LISTEN_PID our pid and LISTEN_FDS=2
 * naming two real listening sockets at fds 3 and 4: every name list either adopts both,
 * each with a valid name, or is refused. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "activation.h"
#include "listener.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        for (int fd = 3; fd <= 4; fd++) {
                struct sockaddr_un a = { .sun_family = AF_UNIX };
                int s = socket(AF_UNIX, SOCK_STREAM, 0);

                assert(s >= 0);
                /* Autobind: a unique abstract address, nothing on disk. */
                assert(bind(s, (struct sockaddr *) &a, sizeof(sa_family_t)) == 0);
                assert(listen(s, 1) == 0);
                if (s != fd) {
                        assert(dup2(s, fd) == fd);
                        close(s);
                }
        }
        return 0;
}

/* putenv() of buffers of our own: setenv() keeps every value it ever had (glibc), and
 * the fuzzer's memory would grow without end. */
static char env_pid[32], env_fds[] = "LISTEN_FDS=2", env_names[16 + 8192 + 1];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Listener *l = NULL;
        int r;

        if (size > 8192)
                return 0;
        snprintf(env_pid, sizeof env_pid, "LISTEN_PID=%d", (int) getpid());
        memcpy(env_names, "LISTEN_FDNAMES=", 15);
        memcpy(env_names + 15, data, size);
        env_names[15 + size] = '\0';          /* an embedded NUL ends it, as in a real environment */
        putenv(env_pid);
        putenv(env_fds);
        putenv(env_names);
        r = activation_adopt(&l);
        assert(!getenv("LISTEN_FDNAMES"));      /* never passed on */
        if (r > 0) {
                assert(r == 2);
                for (int i = 0; i < r; i++) {
                        assert(l[i].fd == 3 + i);
                        assert(fdname_is_valid(l[i].name));
                        assert(!strchr(l[i].name, ':'));
                        free(l[i].name);
                }
                free(l);
        } else
                assert(r < 0);
        return 0;
}
