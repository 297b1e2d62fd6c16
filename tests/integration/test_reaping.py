"""(f) After 200 worker deaths: no zombies, bindonce's fd count unchanged, all its
fds close-on-exec.

Each worker is killed only after it lived >= 1 s (a stable run), so every restart is
immediate and the test stays short; 50 workers die at once each round (a SIGCHLD storm).
"""

import os
import signal
import time

import pytest

from conftest import TESTWORKER, proc_alive, proc_children, proc_fds, wait_until, zombie_children
from testlib import WORKER_DEATH

# Workers here die on purpose: bindonce logs their deaths as warnings.
pytestmark = pytest.mark.log_expected(WORKER_DEATH)

WORKERS = 50
ROUNDS = 4                   # 4 x 50 = 200 deaths
O_CLOEXEC = 0o2000000


def bindonce_state(pid):
    fds = proc_fds(pid)
    return fds, proc_children(pid), zombie_children(pid)


def test_200_deaths_no_zombie_no_fd_leak(supervisor, free_port):
    sup = supervisor().start(["-w", str(WORKERS), "-l", f"127.0.0.1:{free_port()}"],
                             [TESTWORKER], wait_workers=WORKERS, timeout=20)
    live = sup.wait_live_workers(WORKERS, timeout=20)
    sup.stable_fd_count()       # settled: two reads a poll apart agree
    fds0, kids0, zombies0 = bindonce_state(sup.pid)
    assert len(kids0) == WORKERS and not zombies0

    killed = set()
    for _ in range(ROUNDS):
        # Stable runs only: every worker older than 1 s.
        newest = max(r["_mtime"] for r in live.values())
        time.sleep(max(0.0, newest + 1.05 - time.time()))    # a deliberate age (stable runs)
        for rep in live.values():
            os.kill(rep["pid"], signal.SIGKILL)
            killed.add(rep["pid"])
        live = sup.wait_live_workers(WORKERS, timeout=15, exclude=killed)
    assert len(killed) == WORKERS * ROUNDS
    assert len(sup.reports()) == WORKERS * (ROUNDS + 1), "restarts != deaths"

    # Let the last SIGCHLDs be handled, then look.
    def settled():
        fds, kids, zombies = bindonce_state(sup.pid)
        return (fds, kids, zombies) if len(kids) == WORKERS and not zombies else None
    fds1, kids1, zombies1 = wait_until(settled, 3, lambda: "bindonce to reap and settle: %s"
                                       % (bindonce_state(sup.pid)[1:],))
    fds1 = proc_fds(sup.pid) if sup.stable_fd_count() != len(fds1) else fds1
    assert not zombies1, f"zombies among bindonce's children: {zombies1}"
    assert sorted(kids1) == sorted(r["pid"] for r in live.values())
    assert not (set(kids1) & killed)
    assert len(fds1) == len(fds0), (
        f"bindonce had {len(fds0)} fds after startup, {len(fds1)} after {len(killed)} "
        f"deaths:\nbefore {sorted(fds0.items())}\nafter  {sorted(fds1.items())}")
    not_cloexec = {fd: t for fd, (t, flags) in fds1.items()
                   if fd > 2 and not (flags & O_CLOEXEC)}
    assert not not_cloexec, f"bindonce fds without close-on-exec: {not_cloexec}"
    assert sup.log().count("killed by signal KILL") == len(killed)
    assert sup.stop() == 0
    assert not any(proc_alive(p) for p in kids1)
