"""TESTING.md scenarios 8 and 10: a SIGCHLD storm, and a worker out of file descriptors."""

import os
import signal
import socket
import time

import pytest

from conftest import wait_until, zombie_children
from testlib import WORKER_DEATH

# Workers here die on purpose: bindonce logs their deaths as warnings.
pytestmark = pytest.mark.log_expected(WORKER_DEATH)


def stop_cleanly(b):
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait_exit(20) == 0, b.log()


def test_sigchld_storm_64_workers_dying_at_once(bindonce):
    # Workers that live long enough (1.1 s) for their deaths not to count as early.
    b = bindonce(["-w", "64"], ["sleep", "1000"])
    b.wait_status(lambda s: s["ready"] == 64, 10, "64 workers")
    fds_before = b.stable_fd_count()
    for round_ in range(5):
        time.sleep(1.1)     # a deliberate age: past 1 s, these deaths are not early
        old = {s["pid"] for s in b.status()["slots"]}
        # All 64 SIGKILLed within a millisecond: SIGCHLDs coalesce, pidfds do not.
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        st = b.wait_status(lambda s: s["ready"] == 64 and not ({x["pid"] for x in s["slots"]} & old), 10,
                           "all 64 replaced, round %d" % round_)
        assert sorted(x["slot"] for x in st["slots"]) == list(range(64))
    assert b.status()["restarts"] == 5 * 64
    assert zombie_children(b.proc.pid) == []
    assert b.stable_fd_count() == fds_before
    assert "restarting in" not in b.log()
    stop_cleanly(b)


HOARDER = r"""
import errno, os, socket, sys, time

marker = sys.argv[1]
s = socket.socket(fileno=3)
s.setblocking(True)
held = []
while True:
    try:
        held.append(s.accept()[0])
    except OSError as e:
        if e.errno != errno.EMFILE:
            raise
        if not os.path.exists(marker):
            held.pop().close()          # one fd back, to say so
            open(marker, "w").write("%d held\n" % len(held))
        time.sleep(0.05)
"""


def test_a_worker_out_of_fds_does_not_touch_the_supervisor(bindonce, tmp_path):
    marker = tmp_path / "emfile"
    script = tmp_path / "hoarder.py"
    script.write_text(HOARDER)
    b = bindonce(["-w", "1"], ["sh", "-c", "ulimit -n 16; exec /usr/bin/python3 %s %s" % (script, marker)])
    worker = b.wait_status(lambda s: s["ready"] == 1, 10, "the worker")["slots"][0]["pid"]
    fds_before = b.stable_fd_count()
    idle = []
    try:
        # Idle clients until the worker runs out of descriptors.
        for _ in range(40):
            idle.append(socket.create_connection(("127.0.0.1", b.port), timeout=2))
        wait_until(marker.exists, 10, "the worker to hit EMFILE")
        # The control socket answers while the worker is out of fds, and (below) while what
        # it could not take still waits in the queue: an order of events, no clock (ctl's
        # own 10 s timeout only stops a hung test).
        st = b.status()
        assert st is not None, "ctl status did not answer while the worker was at EMFILE"
        assert st["slots"][0]["pid"] == worker and st["ready"] == 1
        assert b.proc.poll() is None
        assert b.stable_fd_count() == fds_before
        # What the worker could not take waits in the queue, where bindonce can see it.
        assert st["sockets"][0]["queue"] > 0
    finally:
        for s in idle:
            s.close()
    stop_cleanly(b)
