"""What bindonce tells systemd, read from a notify socket of our own (a stand-in for PID 1)."""

import os
import signal
import socket
import subprocess
import time

from conftest import BINDONCE, EXAMPLE_HTTPD, free_tcp_port, proc_children, worker_environ


def messages(sock, until, stop=None):
    """Datagrams received until the deadline (or until stop(msgs) is true)."""
    got = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
        if stop and stop(got):
            break
    return got


def start(tmp_path, env_extra, args=()):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "WATCHDOG_", "NOTIFY_"))}
    env.update(NOTIFY_SOCKET=path, **env_extra)
    log = open(tmp_path / "bindonce.log", "w")
    proc = subprocess.Popen([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "-w", "2",
                             "--control", str(tmp_path / "ctl.sock")] + list(args) + ["--", EXAMPLE_HTTPD],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, sock, log


def test_ready_status_reloading_stopping(tmp_path):
    proc, sock, log = start(tmp_path, {})
    try:
        got = messages(sock, time.monotonic() + 5, lambda m: any("READY=1" in x for x in m))
        ready = [m for m in got if "READY=1" in m]
        assert ready, got
        assert "STATUS=2/2 workers up, 0 restarts, 127.0.0.1:" in ready[0]

        proc.send_signal(signal.SIGHUP)
        got = messages(sock, time.monotonic() + 5, lambda m: any("READY=1" in x for x in m))
        reloading = [m for m in got if "RELOADING=1" in m]
        assert reloading and "MONOTONIC_USEC=" in reloading[0], got
        assert got.index(reloading[0]) < max(i for i, m in enumerate(got) if "READY=1" in m)

        proc.send_signal(signal.SIGTERM)
        got = messages(sock, time.monotonic() + 5, lambda m: any("STOPPING=1" in x for x in m))
        assert any("STOPPING=1" in m for m in got), got
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()


def test_watchdog_is_answered(tmp_path):
    # WatchdogSec=0.4 s: sd-event pings at about half the period.
    proc, sock, log = start(tmp_path, {"WATCHDOG_USEC": "400000"})
    try:
        got = messages(sock, time.monotonic() + 2.0)
        pings = [m for m in got if "WATCHDOG=1" in m]
        assert len(pings) >= 3, got
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        sock.close()
        log.close()


def test_workers_get_a_notify_socket_of_bindonce_not_systemds(tmp_path):
    proc, sock, log = start(tmp_path, {"WATCHDOG_USEC": "400000"})
    try:
        messages(sock, time.monotonic() + 5, lambda m: any("READY=1" in x for x in m))
        kids = proc_children(proc.pid)
        assert len(kids) == 2
        for pid in kids:
            env = worker_environ(pid)
            assert env["NOTIFY_SOCKET"].startswith("@bindonce/"), env.get("NOTIFY_SOCKET")
            assert "WATCHDOG_USEC" not in env  # no --watchdog for the workers
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        sock.close()
        log.close()
