"""TESTING.md scenarios 8 and 10: a SIGCHLD storm, and a worker out of file descriptors."""

import json
import os
import signal
import socket
import subprocess
import time

from conftest import BINDONCE, EXAMPLE_HTTPD, free_tcp_port


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def status(control):
    r = subprocess.run([BINDONCE, "ctl", "--control", control, "status", "--json"],
                       capture_output=True, text=True, timeout=5)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ready(control, n):
    """True once bindonce answers and has n ready workers (its socket may not exist yet)."""
    r = subprocess.run([BINDONCE, "ctl", "--control", control, "status", "--json"],
                       capture_output=True, text=True, timeout=5)
    return r.returncode == 0 and json.loads(r.stdout)["ready"] == n


def test_sigchld_storm_64_workers_dying_at_once(tmp_path):
    control = str(tmp_path / "ctl.sock")
    port = free_tcp_port()
    log = open(tmp_path / "bindonce.log", "w")
    # Workers that live long enough (1.2 s) for their deaths not to count as early.
    proc = subprocess.Popen([BINDONCE, "-l", "127.0.0.1:%d" % port, "-w", "64", "--control", control,
                             "--", "sleep", "1000"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready(control, 64), 10, "64 workers")
        fds_before = len(os.listdir("/proc/%d/fd" % proc.pid))
        for round_ in range(5):
            time.sleep(1.1)
            old = {s["pid"] for s in status(control)["slots"]}
            # All 64 SIGKILLed within a millisecond: SIGCHLDs coalesce, pidfds do not.
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            st = wait_for(lambda: (lambda s: s if s["ready"] == 64 and not ({x["pid"] for x in s["slots"]} & old)
                                   else None)(status(control)), 10, "all 64 replaced, round %d" % round_)
            assert sorted(x["slot"] for x in st["slots"]) == list(range(64))
        assert status(control)["restarts"] == 5 * 64
        zombies = [p for p in children(proc.pid) if state(p) == "Z"]
        assert zombies == []
        assert len(os.listdir("/proc/%d/fd" % proc.pid)) == fds_before
        assert "restarting in" not in (tmp_path / "bindonce.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log.close()


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


def test_a_worker_out_of_fds_does_not_touch_the_supervisor(tmp_path):
    control = str(tmp_path / "ctl.sock")
    port = free_tcp_port()
    marker = tmp_path / "emfile"
    script = tmp_path / "hoarder.py"
    script.write_text(HOARDER)
    log = open(tmp_path / "bindonce.log", "w")
    proc = subprocess.Popen([BINDONCE, "-l", "127.0.0.1:%d" % port, "-w", "1", "--control", control,
                             "--", "sh", "-c", "ulimit -n 16; exec /usr/bin/python3 %s %s" % (script, marker)],
                            stdout=log, stderr=subprocess.STDOUT)
    idle = []
    try:
        wait_for(lambda: ready(control, 1), 10, "the worker")
        worker = status(control)["slots"][0]["pid"]
        fds_before = len(os.listdir("/proc/%d/fd" % proc.pid))
        # Idle clients until the worker runs out of descriptors.
        for _ in range(40):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        wait_for(marker.exists, 10, "the worker to hit EMFILE")
        t0 = time.monotonic()
        st = status(control)
        assert time.monotonic() - t0 < 1.0, "ctl status slowed down"
        assert st["slots"][0]["pid"] == worker and st["ready"] == 1
        assert proc.poll() is None
        assert len(os.listdir("/proc/%d/fd" % proc.pid)) == fds_before
        # What the worker could not take waits in the queue, where bindonce can see it.
        assert st["sockets"][0]["queue"] > 0
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log.close()
