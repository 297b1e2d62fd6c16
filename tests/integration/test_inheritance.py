"""(a) What a worker inherits: fds, environment, signal state, process group.

Everything is read from inside the test worker (its report), which records its fds
before it opens anything.
"""

import os
import socket

import pytest

from conftest import TESTWORKER, dirty_signal_state
from loadclient import request_once

ZERO_MASK = "0000000000000000"

# What test_stale_activation_env_not_passed gives bindonce; none of it may reach a worker.
STALE_ENV = {
    "LISTEN_PIDFDID": "1",
    "NOTIFY_SOCKET": "/nonexistent/bindonce-test-notify",
    "WATCHDOG_USEC": "1000000",
    "WATCHDOG_PID": "1",
}


def udp_ask(port, timeout=3.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(timeout)
        u.bind(("127.0.0.1", 0))
        u.sendto(b"hello\n", ("127.0.0.1", port))
        data, _ = u.recvfrom(256)
        return data


def check_worker_hygiene(sup, rep, sockets, names, via_library):
    """Assert one worker's report against the contract. sockets: [(type, domain, sockname)]."""
    n = len(sockets)
    pid = rep["pid"]
    fds = {f["fd"]: f for f in rep["fds"]}
    assert not rep["fds_truncated"]
    assert sorted(fds) == list(range(3 + n)), f"open fds {sorted(fds)}, want 0..{2 + n}"

    # 0 is /dev/null; 1 and 2 are bindonce's own (our log files).
    assert rep["fd0"] == "/dev/null"
    assert fds[1]["target"] == str(sup.stdout_path)
    assert fds[2]["target"] == str(sup.stderr_path)

    for i, (typ, domain, sockname) in enumerate(sockets):
        f = fds[3 + i]
        assert f["socket"] is not None, f"fd {3 + i} is not a socket: {f}"
        assert f["cloexec"] is False, f"fd {3 + i} has FD_CLOEXEC set"
        # Blocking, as systemd passes them (issue 10); --nonblocking is tested on its own.
        assert f["nonblock"] is False, f"fd {3 + i} is O_NONBLOCK"
        assert f["socket"]["type"] == typ, f"fd {3 + i}"
        assert f["socket"]["domain"] == domain, f"fd {3 + i}"
        assert f["socket"]["acceptconn"] is (typ != "dgram"), f"fd {3 + i}"
        assert f["socket"]["sockname"] == sockname, f"fd {3 + i}"

    env = rep["env"]
    assert env["LISTEN_PID"] == str(pid)
    assert env["LISTEN_FDS"] == str(n)
    assert env["LISTEN_FDNAMES"] == ":".join(names)
    # The worker's own pidfd inode where the kernel has pidfs; never bindonce's.
    if env["LISTEN_PIDFDID"] is not None:
        pidfd = os.pidfd_open(pid)
        try:
            assert env["LISTEN_PIDFDID"] == str(os.fstat(pidfd).st_ino), "LISTEN_PIDFDID is not the worker's"
        finally:
            os.close(pidfd)
    # bindonce may give workers a NOTIFY_SOCKET of its own; never one it inherited.
    if env["NOTIFY_SOCKET"] is not None:
        assert env["NOTIFY_SOCKET"] != os.environ.get("NOTIFY_SOCKET")
        assert env["NOTIFY_SOCKET"] != STALE_ENV["NOTIFY_SOCKET"]
    if env["WATCHDOG_PID"] is not None:
        assert env["WATCHDOG_PID"] == str(pid), "WATCHDOG_PID names another process"

    assert rep["sigblk"] == ZERO_MASK, "worker starts with signals blocked"
    assert rep["sigign"] == ZERO_MASK, "worker starts with signals ignored"
    assert rep["sigpnd"] == ZERO_MASK

    assert rep["pgid"] == pid, "worker is not the leader of its own process group"
    assert rep["ppid"] == sup.pid, "worker is not a child of bindonce"

    if via_library:
        assert rep["library"] == {"n": n, "names": list(names)}
    else:
        assert rep["library"] is None


@pytest.mark.parametrize("via_library", [False, True], ids=["raw", "library"])
@pytest.mark.parametrize("nsock", [1, 3])
def test_fds_env_signals(supervisor, free_port, free_udp, short_dir, nsock, via_library):
    port = free_port()
    args = ["-l", f"127.0.0.1:{port}"]
    sockets = [("stream", "inet", f"127.0.0.1:{port}")]
    names = ["testworker"]       # the default name: basename of the command
    upath = str(short_dir / "s.sock")
    uport = free_udp()
    if nsock == 3:
        args += ["-l", upath, "--listen-datagram", f"127.0.0.1:{uport}",
                 "--fdname", "web:local", "--fdname", "dns"]
        sockets += [("stream", "unix", upath), ("dgram", "inet", f"127.0.0.1:{uport}")]
        names = ["web", "local", "dns"]
    cmd = [TESTWORKER] + (["--via-library"] if via_library else [])

    sup = supervisor().start(args, cmd, preexec_fn=dirty_signal_state, wait_workers=1)
    [rep] = sup.reports()
    check_worker_hygiene(sup, rep, sockets, names, via_library)
    assert rep["env"]["BINDONCE_WORKER"] == "0"

    # And it serves on each of them.
    cls, ident, detail = request_once(("127.0.0.1", port))
    assert (cls, ident) == ("ok", (rep["pid"], 0)), detail
    if nsock == 3:
        cls, ident, detail = request_once(upath)
        assert (cls, ident) == ("ok", (rep["pid"], 0)), detail
        assert udp_ask(uport) == f"pid={rep['pid']} slot=0\n".encode()

    assert sup.stop() == 0
    if nsock == 3:
        assert not os.path.exists(upath), "unix socket file left after stop"


def test_slots_with_four_workers(supervisor, free_port):
    port = free_port()
    sup = supervisor().start(["-w", "4", "-l", f"127.0.0.1:{port}"], wait_workers=4)
    reps = sup.reports()
    assert len(reps) == 4
    assert sorted(r["env"]["BINDONCE_WORKER"] for r in reps) == ["0", "1", "2", "3"]
    assert len({r["pid"] for r in reps}) == 4
    for rep in reps:
        check_worker_hygiene(sup, rep, [("stream", "inet", f"127.0.0.1:{port}")],
                             ["testworker"], False)
    # All four share the one socket: the same inode.
    inodes = {[f for f in r["fds"] if f["fd"] == 3][0]["target"] for r in reps}
    assert len(inodes) == 1, inodes
    assert sup.stop() == 0


def test_stale_activation_env_not_passed(supervisor, free_port, short_dir):
    """bindonce's own LISTEN_PIDFDID/NOTIFY_SOCKET/WATCHDOG_* never reach a worker;
    -E VAR=VALUE and -E VAR (copied) do."""
    port = free_port()
    extra = dict(STALE_ENV, TW_COPIED="copied-value")
    sup = supervisor().start(["-l", f"127.0.0.1:{port}", "-E", "TW_SET=set-value",
                              "-E", "TW_COPIED"], env_extra=extra, wait_workers=1)
    [rep] = sup.reports()
    check_worker_hygiene(sup, rep, [("stream", "inet", f"127.0.0.1:{port}")],
                         ["testworker"], False)
    for var, value in STALE_ENV.items():
        assert f"{var}={value}" not in rep["environ"], f"{var} leaked to the worker"
    assert "TW_SET=set-value" in rep["environ"]
    assert "TW_COPIED=copied-value" in rep["environ"]
    assert sup.stop() == 0
