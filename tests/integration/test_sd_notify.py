"""What bindonce tells systemd, read from a notify socket of our own (a stand-in for PID 1)."""

import re
import subprocess
import signal
import socket

import pytest

from testlib import EXAMPLE_HTTPD, BINDONCE, NOTIFY_WORKER, Harness, free_tcp_port, monotonic, proc_children, worker_environ


def messages(sock, until, stop=None):
    """(time received, datagram) pairs until the deadline (or until stop(msgs) is true)."""
    got = []
    while monotonic() < until:
        sock.settimeout(max(0.01, until - monotonic()))
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append((monotonic(), data))
        if stop and stop([m for _, m in got]):
            break
    return got


def texts(got):
    return [m for _, m in got]


@pytest.fixture
def notified(tmp_path, harnesses):
    """notified(env_extra) -> (Harness, its notify socket): bindonce -w 2 with the example
    httpd, NOTIFY_SOCKET set to a datagram socket of this test."""
    socks = []

    def start(env_extra=None, args=(), command=(EXAMPLE_HTTPD,)):
        path = str(tmp_path / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        socks.append(sock)
        h = Harness(tmp_path / "bindonce")
        harnesses.append(h)
        h.popen([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "-w", "2",
                 "--control", str(tmp_path / "ctl.sock")] + list(args) + ["--"] + list(command),
                env_extra=dict(env_extra or {}, NOTIFY_SOCKET=path))
        return h, sock
    yield start
    for s in socks:
        s.close()


def test_ready_status_reloading_stopping(notified):
    h, sock = notified()
    got = texts(messages(sock, monotonic() + 5, lambda m: any("READY=1" in x for x in m)))
    ready = [m for m in got if "READY=1" in m]
    assert ready, got
    assert "STATUS=2/2 workers up, 0 restarts, 127.0.0.1:" in ready[0]

    h.proc.send_signal(signal.SIGHUP)
    got = texts(messages(sock, monotonic() + 5, lambda m: any("READY=1" in x for x in m)))
    reloading = [m for m in got if "RELOADING=1" in m]
    assert reloading and "MONOTONIC_USEC=" in reloading[0], got
    assert got.index(reloading[0]) < max(i for i, m in enumerate(got) if "READY=1" in m)

    h.proc.send_signal(signal.SIGTERM)
    got = texts(messages(sock, monotonic() + 5, lambda m: any("STOPPING=1" in x for x in m)))
    assert any("STOPPING=1" in m for m in got), got
    assert h.wait_exit(10) == 0


def test_watchdog_is_answered_within_its_interval(notified):
    # WatchdogSec=0.4 s: systemd kills a service whose pings are ever more than 0.4 s
    # apart, so the largest gap is what counts, not the number of pings.
    usec = 400000
    h, sock = notified({"WATCHDOG_USEC": str(usec)})
    got = messages(sock, monotonic() + 3.0)
    pings = [t for t, m in got if "WATCHDOG=1" in m]
    assert len(pings) >= 5, texts(got)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < usec / 1e6, "pings %.3f s apart at most, WatchdogSec=%.1f s" % (max(gaps), usec / 1e6)


def test_workers_get_a_notify_socket_of_bindonce_not_systemds(notified):
    h, sock = notified({"WATCHDOG_USEC": "400000"})
    messages(sock, monotonic() + 5, lambda m: any("READY=1" in x for x in m))
    kids = proc_children(h.pid)
    assert len(kids) == 2
    for pid in kids:
        env = worker_environ(pid)
        assert env["NOTIFY_SOCKET"].startswith("@bindonce/"), env.get("NOTIFY_SOCKET")
        assert "WATCHDOG_USEC" not in env  # no --watchdog for the workers


def test_status_text_counts_more_addresses_and_says_reloading(notified, tmp_path):
    """NOTIFYING SYSTEMD: STATUS= names the first address and "+N more", and says
    "reloading" while a rolling restart runs."""
    # Workers ready 0.5 s after start: the roll of two lasts a second, long enough for a
    # STATUS= update in the middle of it.
    h, sock = notified(args=["-l", str(tmp_path / "second.sock"), "--ready", "notify"],
                       command=NOTIFY_WORKER + ["sleep:0.5", "READY=1"])
    got = texts(messages(sock, monotonic() + 5, lambda m: any("READY=1" in x for x in m)))
    ready = [m for m in got if "READY=1" in m]
    assert ready and re.search(r"STATUS=2/2 workers up, 0 restarts, 127\.0\.0\.1:\d+ \+1 more", ready[0]), got
    h.proc.send_signal(signal.SIGHUP)
    got = texts(messages(sock, monotonic() + 10, lambda m: any("READY=1" in x for x in m)))
    assert any(re.search(r"STATUS=\d/2 workers up, \d+ restarts, reloading, 127\.0\.0\.1:\d+ \+1 more", m)
               for m in got), got


def test_a_notify_socket_nobody_reads_stalls_nothing(notified, tmp_path):
    """PID 1 stops reading its notify socket (its queue full): bindonce goes on supervising
    (reloads, ctl status) and stops on SIGTERM at once; what must arrive (RELOADING=1,
    READY=1) waited in order in the kernel's queue and bindonce's own. (What still waits at
    exit, STOPPING=1 here, is lost with the process: systemd sees the exit anyway.)"""
    h, sock = notified(args=["--stop-timeout", "2"])
    messages(sock, monotonic() + 5, lambda m: any("READY=1" in x for x in m))
    # Not read from here on: the kernel queues 10 datagrams (max_dgram_qlen), then senders
    # would wait. Each SIGHUP rolls the 2 workers: STATUS= per event, RELOADING=1, READY=1.
    ctl = [BINDONCE, "ctl", "--control", str(tmp_path / "ctl.sock")]
    for _ in range(4):
        r = subprocess.run(ctl + ["reload"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr + h.log()
    r = subprocess.run(ctl + ["status"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    h.proc.send_signal(signal.SIGTERM)
    # bindonce does not wait for systemd: the stop ends while nobody reads.
    assert h.wait_exit(15) == 0, h.log()
    got = texts(messages(sock, monotonic() + 2))
    kinds = [k for m in got for k in ("RELOADING=1", "READY=1") if k in m]
    assert "RELOADING=1" in kinds and kinds[-1] == "READY=1", got
    assert kinds.index("RELOADING=1") < len(kinds) - 1, got
