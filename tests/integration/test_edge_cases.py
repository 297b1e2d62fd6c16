"""Regressions for defects found in review: state-machine corners and inputs that used to
leave a slot dead, a process behind, or the wrong exit code."""

import os
import resource
import shlex
import signal
import socket
import subprocess

import pytest

from testlib import WORKER_DEATH
from conftest import BINDONCE, free_tcp_port, proc_alive
from testlib import NOTIFY_WORKER, Harness, proc_children, proc_comm, wait_until


@pytest.fixture
def shell(bindonce):
    """shell(args, script): bindonce with a shell script as its worker, 1 s stop timeout."""
    return lambda args, script: bindonce(["--stop-timeout", "1", *args], ["sh", "-c", script])


# Ready 1.5 s after start, via READY=1 on the notify socket.
SLOW_READY = "exec " + shlex.join(NOTIFY_WORKER + ["sleep:1.5", "READY=1"])


@pytest.mark.log_expected(WORKER_DEATH)
@pytest.mark.parametrize("workers", [1, 2])
def test_old_worker_dies_during_a_reload_that_is_then_started_over(shell, workers):
    # The slot's old worker dies while its replacement starts; a second reload drops that
    # replacement. The slot must get a worker again (it was left idle; with one worker
    # bindonce exited 0).
    b = shell(["-w", str(workers), "--ready", "notify", "--max-surge", "2"], SLOW_READY)
    b.wait_status(lambda s: s["ready"] == workers, 10, "ready")
    old = b.status()["slots"][0]["pid"]
    reload1 = subprocess.Popen([BINDONCE, "ctl", "--control", b.control, "reload"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        b.wait_status(lambda s: s["slots"][0]["next_pid"], 5, "a replacement starting")
        os.kill(old, signal.SIGKILL)
        # bindonce has reaped the old worker (the state this test is about) before the
        # second reload starts the roll over.
        b.wait_log(r"worker 0 \(pid %d\) killed by signal KILL" % old, timeout=5)
        assert b.ctl("reload").returncode == 0
    finally:
        out, err = reload1.communicate(timeout=30)
    # Every waiting reload gets the outcome of the last round (ROLLING RESTART).
    assert reload1.returncode == 0 and b"reload complete" in out, (reload1.returncode, out, err)
    st = b.wait_status(lambda s: s["ready"] == workers, 15, "every slot ready again")
    assert all(s["state"] == "running" for s in st["slots"]), st
    assert b.proc.poll() is None


def test_scaled_down_and_up_again_under_restart_on_failure(shell):
    # The surplus worker ends (cleanly, on our SIGTERM) after its slot is wanted again:
    # that is our stop, not its exit, so the slot restarts whatever --restart says.
    b = shell(["-w", "2", "--restart", "on-failure"], "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.05; done")
    b.wait_status(lambda s: s["ready"] == 2, 10, "ready")
    assert b.ctl("scale", "1").returncode == 0
    assert b.ctl("scale", "2").returncode == 0
    st = b.wait_status(lambda s: s["ready"] == 2 and all(x["state"] == "running" for x in s["slots"]), 10,
                       "both slots running")
    assert len(st["slots"]) == 2


def test_ctl_restart_starts_a_slot_that_ended(shell, tmp_path):
    # Slot 1 ends on its first run only; under --restart no it stays ended until asked.
    marker = tmp_path / "ended-once"
    b = shell(["--restart", "no", "-w", "2"],
              '[ "$BINDONCE_WORKER" = 1 ] && [ ! -e %s ] && touch %s && exit 0; exec sleep 1000' % (marker, marker))
    b.wait_status(lambda s: s["slots"][1]["state"] == "idle", 10, "slot 1 ended")
    assert b.ctl("restart", "1").returncode == 0
    b.wait_status(lambda s: s["slots"][1]["state"] == "running", 5, "slot 1 started again")


def test_an_escape_never_outlives_bindonce_ending_on_its_own(tmp_path):
    pidfile = tmp_path / "escape"
    log = open(tmp_path / "bindonce.log", "w")
    code = subprocess.run([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", "none", "--restart", "no",
                           "--stop-timeout", "1", "--", "sh", "-c", "setsid sleep 777 & echo $! > %s; exit 3" % pidfile],
                          stdout=log, stderr=subprocess.STDOUT, timeout=15).returncode
    log.close()
    assert code == 3
    escape = int(pidfile.read_text())
    if proc_alive(escape):
        os.kill(escape, signal.SIGKILL)
        pytest.fail("the escape outlived bindonce, holding its socket")


@pytest.mark.parametrize("var", ["LISTEN_PIDFDID=7", "LISTEN_FDS=1", "NOTIFY_SOCKET=/x", "WATCHDOG_USEC=5", "BINDONCE_WORKER"])
def test_setenv_cannot_set_what_bindonce_sets(tmp_path, var):
    r = subprocess.run([BINDONCE, "-E", var, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", "none",
                        "--", "true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64
    assert r.stderr.count("\n") == 1 and var in r.stderr


def test_huge_listen_fds_is_a_broken_environment_not_out_of_memory(tmp_path):
    r = subprocess.run(["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2000000000 exec "$0" -l 127.0.0.1:%d --control none -- true'
                        % free_tcp_port(), BINDONCE], capture_output=True, text=True, timeout=10)
    assert r.returncode == 78, r.stderr
    assert "LISTEN_FDS=2000000000" in r.stderr


def test_bad_adopted_fd_names_are_refused(harnesses, tmp_path):
    # A real listening socket at fd 3 for bindonce's own pid, named with an empty name.
    port = free_tcp_port()
    h = Harness(tmp_path / "bindonce", [r"LISTEN_FDNAMES: name 1 is not"])
    harnesses.append(h)
    h.popen(["systemd-socket-activate", "-l", "127.0.0.1:%d" % port, "-E", "LISTEN_FDNAMES=",
             BINDONCE, "--control", "none", "--", "true"])

    # systemd-socket-activate execs its command on the first connection.
    def connected():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_until(connected, 5, "systemd-socket-activate to listen")
    assert h.wait_exit(10) == 78, h.log()
    assert "LISTEN_FDNAMES" in h.log()


def limits(pid):
    """(soft, hard) open-file limits of pid, as ints (None: unlimited)."""
    for line in open("/proc/%d/limits" % pid):
        if line.startswith("Max open files"):
            return tuple(None if v == "unlimited" else int(v) for v in line.split()[3:5])


def test_workers_get_the_open_file_limit_bindonce_was_given(harnesses, tmp_path):
    """bindonce(1), Resource limits: bindonce raises its own soft limit to the hard one (at
    most 524288) and gives each worker the soft limit it was started with. Started with an
    explicit soft limit of 512, below the hard one, so that both show."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > 512, "the hard open-file limit is %d: nothing to raise" % hard
    h = Harness(tmp_path / "bindonce")
    harnesses.append(h)
    control = str(tmp_path / "ctl.sock")
    h.popen([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", control, "--", "sleep", "1000"],
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard)))
    worker = wait_until(lambda: (proc_children(h.pid) or [None])[0], 10, "the worker")
    wait_until(lambda: proc_comm(worker) == "sleep", 5, "the worker to exec")
    assert limits(h.pid) == (min(hard, 524288), hard), limits(h.pid)
    assert limits(worker) == (512, hard), limits(worker)
