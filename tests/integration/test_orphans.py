"""What escapes a worker's process group (TESTING.md scenarios 9 and 11).

bindonce is a subreaper: a grandchild that left its worker's process group with setsid
is re-parented to it. Such orphans are reaped while bindonce runs, and stopped with the
workers, so that nothing keeps the listening socket after a stop. As PID 1 of a pid
namespace, bindonce reaps orphans and still stops on SIGTERM.
"""

import os
import signal

import pytest

from conftest import (BINDONCE, EXAMPLE_HTTPD, free_tcp_port as free_port, port_bindable, proc_alive,
                      proc_children, proc_comm, proc_stat, wait_until)
from testlib import NEEDS_ROOT_REASON, Harness


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode() for a in f.read().split(b"\0")]
    except OSError:
        return []


@pytest.fixture
def harness(tmp_path, harnesses):
    h = Harness(tmp_path / "bindonce")
    harnesses.append(h)
    return h


def test_escaped_grandchildren_are_stopped_with_the_workers(harness, tmp_path):
    port = free_port()
    pids_file = tmp_path / "escaped"
    # Each worker leaves two escapes that inherit the listening socket: one that dies on
    # SIGTERM, one that ignores it.
    script = ('setsid sleep 1000 & echo $! >> {f}; '
              'setsid sh -c "trap \'\' TERM; exec sleep 1001" & echo $! >> {f}; '
              'exec {httpd}').format(f=pids_file, httpd=EXAMPLE_HTTPD)
    harness.expect_log(r"processes left behind by workers did not stop within 1\.0 s, sent SIGKILL",
                       # the escapes keep the listening socket they inherited
                       r"warning: pid \d+ \(sleep\), left behind by a worker, still holds a "
                       r"listening socket: sending SIGTERM$")
    harness.popen([BINDONCE, "-l", "127.0.0.1:%d" % port, "-w", "2", "--control", "none",
                   "--stop-timeout", "1", "--", "sh", "-c", script])
    escaped = wait_until(lambda: [int(p) for p in pids_file.read_text().split()]
                         if pids_file.exists() and len(pids_file.read_text().split()) == 4 else None,
                         5, "4 escaped pids")
    # $! is the forked shell, written before it has run setsid(1) and exec'd sleep:
    # wait until each escape is the sleep it becomes, in a session of its own.
    for pid in escaped:
        harness.remember(pid)
        wait_until(lambda: proc_comm(pid) == "sleep", 5, "escape %d to exec sleep" % pid)
        assert os.getsid(pid) == pid, "escape %d is not in a session of its own" % pid

    assert harness.stop() == 0, harness.log()
    for pid in escaped:
        assert not proc_alive(pid), "escape %d outlived bindonce" % pid
    assert port_bindable(port), "a process still holds the listening socket"
    assert "left behind by workers" in harness.log()


@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT_REASON + " (unshare -p)")
def test_pid1_in_a_pid_namespace_reaps_orphans_and_stops(harness):
    port = free_port()
    # The worker's short-lived children are orphaned at once (their parent subshell exits)
    # and re-parented to PID 1: bindonce.
    script = "(sleep 0.1 & sleep 0.1 & sleep 0.1 &); exec sleep 1000"
    proc = harness.popen(["unshare", "--fork", "--pid", "--mount-proc", BINDONCE,
                          "-l", "127.0.0.1:%d" % port, "--control", "none", "--stop-timeout", "1",
                          "--", "sh", "-c", script])
    bindonce = wait_until(lambda: (proc_children(proc.pid) or [None])[0], 5, "bindonce in the namespace")
    # The worker execs sleep 1000 once its subshell has forked the three short sleeps.
    wait_until(lambda: any(proc_cmdline(p)[:2] == ["sleep", "1000"] for p in proc_children(bindonce)),
               5, "the worker to exec sleep 1000")
    # They end 0.1 s later, are re-parented to bindonce (the children file lists zombies
    # too) and must be reaped.
    wait_until(lambda: len(proc_children(bindonce)) == 1, 5,
               lambda: "orphans reaped; children of bindonce: %r" % [
                   (p, proc_stat(p)) for p in proc_children(bindonce)])

    os.kill(bindonce, signal.SIGTERM)
    assert harness.wait_exit(10) == 0, harness.log()
    assert "stopped" in harness.log()
