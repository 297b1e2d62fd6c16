"""The fault signals (issue 9, point 1; bindonce(1) SIGNALS).

SEGV, BUS, ILL, FPE, TRAP, ABRT and SYS end a process by default. One that another process
sends (`kill -SEGV <bindonce>`) must not end bindonce nor orphan its workers: it is
logged once, naming the sender, and ignored. A real fault of bindonce's own must still end
it at once, by that signal, as before.

Why blocking them is enough for both (tried on Linux 6.18 and glibc 2.36 with a small C
program that blocks the seven signals, reads them from a signalfd, then faults):
- a signal sent with kill() stays pending while blocked; the signalfd reads it with
  si_code SI_USER and the sender's pid;
- a synchronous fault (a bad access, a division by zero, ud2, int3, a truncated mapping)
  is delivered by the kernel's force_sig_fault(), which unblocks the signal and resets its
  action to the default: the process ends by it (exit 139, 136, 132, 133, 135) with a core
  where cores are enabled;
- glibc's abort() (and so assert()) unblocks SIGABRT before it raises it: exit 134;
- a seccomp filter's SECCOMP_RET_TRAP is forced the same way (force_sig_seccomp()): SIGSYS;
- in the AddressSanitizer build, ASan's handler for SEGV, BUS and FPE is reset by that
  forced delivery too: the fault ends the process by the signal, without ASan's
  "SEGV on unknown address" report. ASan's own checks (heap-buffer-overflow,
  use-after-free) and UBSan's do not go through a signal and still report.

The second half of this file checks the real faults on bindonce itself: a small library
preloaded into it (LD_PRELOAD) replaces accept4(), so that the first control connection
makes bindonce fault for real, inside its event loop, with the signals blocked.
"""

import os
import platform
import re
import resource
import signal
import socket
import subprocess

import pytest

from loadclient import LoadClient

FAULTS = ["SIGABRT", "SIGBUS", "SIGSEGV", "SIGTRAP", "SIGFPE", "SIGILL", "SIGSYS"]


def sig_mask(pid, field):
    """A signal mask line of /proc/PID/status (SigBlk, SigIgn, SigCgt) as an int."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def live_pids(sup):
    return sorted(r["pid"] for r in sup.live_workers().values())


@pytest.mark.parametrize("name", FAULTS)
def test_a_sent_fault_signal_is_logged_and_ignored(supervisor, free_port, name):
    """Sent to bindonce under 2 workers and load: bindonce stays, the same workers serve,
    nothing is refused or lost, and one line names the signal and the sender."""
    sig = getattr(signal, name)
    port = free_port()
    sup = supervisor().start(["-l", f"127.0.0.1:{port}", "-w", "2"], wait_workers=2)
    workers = live_pids(sup)
    # Blocked: a real fault is forced through at the default action. (Caught only by
    # ASan's handler in the sanitizer build, for SEGV, BUS and FPE: never by bindonce.)
    assert sig_mask(sup.pid, "SigBlk") & (1 << (sig - 1)), "the signal is not blocked"

    line = rf"warning: {name} from pid {os.getpid()} \(uid {os.getuid()}\): ignored: a fault signal sent by a process"
    sup.expect_log(line)
    client = LoadClient(("127.0.0.1", port), threads=4, duration=30)
    client.start()
    try:
        client.wait_ok(20, timeout=15)
        os.kill(sup.pid, sig)
        sup.wait_log(f"{name} from pid {os.getpid()}")
        client.wait_ok(50, timeout=15)          # still served after it
    finally:
        result = client.stop()

    assert sup.running(), f"bindonce exited {sup.proc.returncode}; log:\n{sup.log()}"
    assert live_pids(sup) == workers, "the workers changed"
    assert result.counts["refused"] == 0, result.summary()
    assert result.attempts - result.ok == 0, result.summary()
    assert len([l for l in sup.log().splitlines() if re.search(line, l)]) == 1, sup.log()
    assert sup.stop() == 0


def test_every_fault_signal_at_once_from_another_process(supervisor, free_port):
    """The seven from a `kill` process (the sender is named by its own pid), then a worker
    killed: the replacement starts with nothing blocked or ignored."""
    sup = supervisor().start(["-l", f"127.0.0.1:{free_port()}", "-w", "2"], wait_workers=2)
    workers = live_pids(sup)
    pids = []
    for n in FAULTS:
        k = subprocess.Popen(["kill", f"-{n[3:]}", str(sup.pid)])
        assert k.wait(timeout=10) == 0
        pids.append(k.pid)
    for n, pid in zip(FAULTS, pids):
        sup.expect_log(rf"warning: {n} from pid {pid} \(uid \d+\): ignored")
    for n, pid in zip(FAULTS, pids):
        sup.wait_log(f"{n} from pid {pid}")
    assert live_pids(sup) == workers

    os.kill(workers[0], signal.SIGKILL)
    sup.expect_log(r"worker \d+ \(pid %d\) killed by signal KILL" % workers[0])
    live = sup.wait_live_workers(2, exclude=(workers[0],))
    fresh = [r for r in live.values() if r["pid"] not in workers]
    assert len(fresh) == 1, live
    assert fresh[0]["sigblk"] == "0000000000000000"
    assert fresh[0]["sigign"] == "0000000000000000"
    assert sup.stop() == 0


# ---------------------------------------------------------------------------
# A real fault still ends bindonce at once.

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* bindonce's control socket accepts with accept4(): at the first connection, fault for
 * real, as BO_FAULT says. Built -O0, so that the faulting code stays. */
int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags) {
        static int (*real)(int, struct sockaddr *, socklen_t *, int);
        const char *f = getenv("BO_FAULT");

        if (f && !strcmp(f, "SIGSEGV")) {
                volatile long addr = 8;
                *(volatile int *) addr = 1;
        } else if (f && !strcmp(f, "SIGBUS")) {
                char path[] = "/tmp/bo-bus-XXXXXX";
                int t = mkstemp(path);
                volatile char *p;

                unlink(path);
                if (ftruncate(t, 4096) == 0) {
                        p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, t, 0);
                        if (p != MAP_FAILED && ftruncate(t, 0) == 0)
                                (void) p[0];
                }
        } else if (f && !strcmp(f, "SIGFPE")) {
                volatile int one = 1, zero = 0, q = one / zero;
                (void) q;
        } else if (f && !strcmp(f, "SIGILL"))
                __builtin_trap();
        else if (f && !strcmp(f, "SIGTRAP"))
                __asm__ volatile("int3");
        else if (f && !strcmp(f, "SIGABRT"))
                abort();
        else if (f && !strcmp(f, "SIGSYS")) {
                /* seccomp: getppid() traps (SECCOMP_RET_TRAP), everything else is allowed. */
                struct sock_filter code[] = {
                        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
                        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
                        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                };
                struct sock_fprog prog = { .len = sizeof code / sizeof *code, .filter = code };

                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
                    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0)
                        (void) syscall(SYS_getppid);
        }
        if (!real)
                real = (int (*)(int, struct sockaddr *, socklen_t *, int)) dlsym(RTLD_NEXT, "accept4");
        return real(fd, a, l, flags);
}
"""

REAL = ["SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGSYS"] + (["SIGTRAP"] if platform.machine() == "x86_64" else [])


@pytest.fixture(scope="module")
def fault_shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    subprocess.run(["cc", "-O0", "-shared", "-fPIC", "-o", str(d / "shim.so"), str(d / "shim.c"), "-ldl"],
                   check=True, capture_output=True, timeout=60)
    return d / "shim.so"


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize("name", REAL)
def test_a_real_fault_still_ends_bindonce_by_its_signal(supervisor, free_port, fault_shim, name):
    sig = getattr(signal, name)
    sup = supervisor()
    # The sanitizer build checks that its runtime comes first; the shim must come first here.
    asan = ":".join(o for o in (os.environ.get("ASAN_OPTIONS", ""), "verify_asan_link_order=0") if o)
    sup.start(["-l", f"127.0.0.1:{free_port()}"], wait_workers=1, preexec_fn=no_core,
              env_extra={"LD_PRELOAD": str(fault_shim), "BO_FAULT": name, "ASAN_OPTIONS": asan})
    worker = live_pids(sup)[0]
    assert sig_mask(sup.pid, "SigBlk") & (1 << (sig - 1))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(str(sup.control_path))
            try:
                c.sendall(b"status\n")
                answer = c.recv(4096)
            except (BrokenPipeError, ConnectionResetError):
                answer = b""                # gone before it could read or answer
            assert answer == b"", "bindonce answered instead of faulting"
        assert sup.wait_exit(timeout=15) == -sig, sup.log()
        # Nothing of it in its own log: the kernel ended it, as it always did.
        assert name not in sup.log(), sup.log()
    finally:
        # The worker it left behind: ours to end, by pid.
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
