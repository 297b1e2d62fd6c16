"""What escapes a worker's process group (TESTING.md scenarios 9 and 11).

bindonce is a subreaper: a grandchild that left its worker's process group with setsid
is re-parented to it. Such orphans are reaped while bindonce runs, and stopped with the
workers, so that nothing keeps the listening socket after a stop. As PID 1 of a pid
namespace, bindonce reaps orphans and still stops on SIGTERM.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import BINDONCE, EXAMPLE_HTTPD, free_tcp_port as free_port


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


def state_of(pid):
    """The state letter from /proc/PID/stat, or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def children_of(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def port_is_free(port):
    """Bindable without SO_REUSEPORT: nobody holds a listening socket on it."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_escaped_grandchildren_are_stopped_with_the_workers(tmp_path):
    port = free_port()
    pids_file = tmp_path / "escaped"
    # Each worker leaves two escapes that inherit the listening socket: one that dies on
    # SIGTERM, one that ignores it.
    script = ('setsid sleep 1000 & echo $! >> {f}; '
              'setsid sh -c "trap \'\' TERM; exec sleep 1001" & echo $! >> {f}; '
              'exec {httpd}').format(f=pids_file, httpd=EXAMPLE_HTTPD)
    log = open(tmp_path / "bindonce.log", "w")
    proc = subprocess.Popen([BINDONCE, "-l", "127.0.0.1:%d" % port, "-w", "2", "--control", "none",
                             "--stop-timeout", "1", "--", "sh", "-c", script],
                            stdout=log, stderr=subprocess.STDOUT)
    escaped = []
    try:
        escaped = wait_for(lambda: [int(p) for p in pids_file.read_text().split()]
                           if pids_file.exists() and len(pids_file.read_text().split()) == 4 else None,
                           5, "4 escaped pids")
        for pid in escaped:
            assert state_of(pid) not in (None, "Z"), "escape %d did not start" % pid
            assert os.getpgid(pid) == pid, "escape %d is not in a session of its own" % pid

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, (tmp_path / "bindonce.log").read_text()
        for pid in escaped:
            assert state_of(pid) in (None, "Z"), "escape %d outlived bindonce" % pid
        assert port_is_free(port), "a process still holds the listening socket"
        assert "left behind by workers" in (tmp_path / "bindonce.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in escaped:
            if state_of(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
        log.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="a pid namespace needs root (unshare -p)")
def test_pid1_in_a_pid_namespace_reaps_orphans_and_stops(tmp_path):
    port = free_port()
    log = open(tmp_path / "bindonce.log", "w")
    # The worker's short-lived children are orphaned at once (their parent subshell exits)
    # and re-parented to PID 1: bindonce.
    script = "(sleep 0.1 & sleep 0.1 & sleep 0.1 &); exec sleep 1000"
    proc = subprocess.Popen(["unshare", "--fork", "--pid", "--mount-proc", BINDONCE,
                             "-l", "127.0.0.1:%d" % port, "--control", "none", "--stop-timeout", "1",
                             "--", "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        bindonce = wait_for(lambda: (children_of(proc.pid) or [None])[0], 5, "bindonce in the namespace")
        wait_for(lambda: "bindonce[1]: worker 0 started" in (tmp_path / "bindonce.log").read_text(),
                 5, "worker start")
        time.sleep(0.4)  # the sleeps end and are re-parented to bindonce
        zombies = [p for p in children_of(bindonce) if state_of(p) == "Z"]
        assert zombies == [], "unreaped orphans: %r" % zombies
        assert len(children_of(bindonce)) == 1, "only the worker should be left"

        os.kill(bindonce, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, (tmp_path / "bindonce.log").read_text()
        assert "stopped" in (tmp_path / "bindonce.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
