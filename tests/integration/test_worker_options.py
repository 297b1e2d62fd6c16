"""Workers as real servers expect to run (issue 10): blocking sockets as systemd passes them,
--user/--group, --chdir, --umask, --stop-signal, the socket options, LISTEN_PIDFDID, and the
bad input of each new option.

The workers here are small Python programs nobody wrote for bindonce: a plain blocking
accept() loop on socket.socket(fileno=3), and a reporter that writes what it sees of
itself (ids, groups, directory, umask, fd flags, socket options, environment) to a JSON
file, then serves like the test worker so the load client can check every answer."""

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path
import grp
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from conftest import BINDONCE, free_tcp_port, proc_alive, wait_until
from testlib import Harness
from loadclient import LoadClient, request_once

PYTHON = "/usr/bin/python3"

# The server of the 2009 "Address already in use" thread: a blocking accept() on fd 3.
PLAIN_SERVER = r"""
import os, socket, time
s = socket.socket(fileno=3)
slot = os.environ["BINDONCE_WORKER"].encode()
slow = float(os.environ.get("SLOW", "0"))
while True:
    c, _ = s.accept()
    time.sleep(slow)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npid=%d slot=%s\n" % (os.getpid(), slot))
    c.close()
"""

# Writes what it sees of itself to OUT_DIR/report-PID.json, then serves like PLAIN_SERVER.
# With STOP_SIGNAL_LOG it records the signals it gets (and exits on them).
REPORTER = r"""
import fcntl, json, os, select, signal, socket, sys
out = os.environ["OUT_DIR"]
status = {}
with open("/proc/self/status") as f:
    for line in f:
        k, _, v = line.partition(":")
        status[k] = v.split()
s = socket.socket(fileno=3)
# The options of the last socket: the bindonce fixture's own -l 127.0.0.1:PORT comes first.
t = socket.socket(fileno=2 + int(os.environ["LISTEN_FDS"])) if os.environ["LISTEN_FDS"] != "1" else s
fam = t.family
def opt(level, name, size=None):
    try:
        return t.getsockopt(level, name, size) if size else t.getsockopt(level, name)
    except OSError as e:
        return "error %d" % e.errno
rep = {
    "pid": os.getpid(), "uid": status["Uid"], "gid": status["Gid"], "groups": status["Groups"],
    "cwd": os.getcwd(), "umask": int(status["Umask"][0], 8),
    "fd3_flags": fcntl.fcntl(3, fcntl.F_GETFL),
    "v6only": opt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) if fam == socket.AF_INET6 else None,
    "freebind": opt(socket.IPPROTO_IP, 15) if fam != socket.AF_UNIX else None,
    "device": (opt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16) or b"").rstrip(b"\0").decode(errors="replace")
              if fam != socket.AF_UNIX else None,
    "env": dict(os.environ),
}
if os.environ.get("STOP_SIGNAL_LOG"):
    def on_signal(sig, frame):
        with open(os.path.join(out, "signal-%d" % os.getpid()), "w") as f:
            f.write(signal.Signals(sig).name)
        os._exit(0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR2):
        signal.signal(sig, on_signal)
tmp = os.path.join(out, ".report-%d" % os.getpid())
with open(tmp, "w") as f:
    json.dump(rep, f)
os.rename(tmp, os.path.join(out, "report-%d.json" % os.getpid()))
slot = os.environ["BINDONCE_WORKER"].encode()
while True:
    # With --nonblocking, fd 3 is O_NONBLOCK: wait until a connection is queued.
    select.select([s], [], [])
    try:
        c, _ = s.accept()
    except BlockingIOError:
        continue            # another worker took it
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\npid=%d slot=%s\n" % (os.getpid(), slot))
    c.close()
"""

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switching users, chown)")


@pytest.fixture
def out_dir():
    """A directory any user may reach and write to (pytest's own tmp_path is root's alone):
    the reporter runs as nobody in some tests."""
    d = Path(tempfile.mkdtemp(prefix="bo-wo-", dir="/tmp"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def script(out_dir, name, text):
    path = out_dir / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def reports(out_dir, n, timeout=10):
    def enough():
        reps = [json.loads(p.read_text()) for p in out_dir.glob("report-*.json")]
        return reps if len(reps) >= n else None
    return wait_until(enough, timeout, f"{n} reports in {out_dir}")


def start_reporter(bindonce, out_dir, args, env=(), workers=1):
    reporter = script(out_dir, "reporter.py", REPORTER)
    envs = ["-E", f"OUT_DIR={out_dir}"] + [x for kv in env for x in ("-E", kv)]
    b = bindonce(["-w", str(workers), *envs, *args], [PYTHON, reporter])
    reps = reports(out_dir, workers)
    b.mark_fds_when_settled()               # the fd count teardown finds again
    return b, reps


# ---------------------------------------------------------------------------
# 1. blocking sockets


def test_plain_blocking_server_survives_a_kill_under_load(bindonce, out_dir):
    """The plain Python server serves with 2 workers; a SIGKILL of one under load refuses
    nothing, and it is replaced."""
    server = script(out_dir, "plain.py", PLAIN_SERVER)
    b = bindonce(["-w", "2"], [PYTHON, server])
    b.wait_log(r"all 2 workers ready")
    first = request_once(("127.0.0.1", b.port))
    assert first[0] == "ok", f"{first}; log:\n{b.log()}"
    victim = b.wait_status(lambda st: all(s.get("pid") for s in st["slots"]), 10, "2 pids")["slots"][0]["pid"]
    b.expect_log(rf"warning: worker 0 \(pid {victim}\) killed by signal KILL$")      # the kill below

    load = LoadClient(("127.0.0.1", b.port), threads=8, duration=3.0).start()
    wait_until(lambda: load.oks() >= 50, 10, "50 answers before the kill")
    os.kill(victim, signal.SIGKILL)
    b.wait_log(r"worker 0 started, pid", count=2)
    res = load.join()

    assert res.counts["refused"] == 0, res.summary()
    assert res.counts["client_error"] == 0, res.summary()
    # One request at a time per worker: what the killed one had accepted, at most one, is lost.
    assert res.attempts - res.ok <= 1, res.summary()
    assert "BlockingIOError" not in b.log(), b.log()


def test_sockets_are_blocking_unless_nonblocking(bindonce, out_dir, tmp_path):
    _, reps = start_reporter(bindonce, out_dir, [])
    assert reps[0]["fd3_flags"] & os.O_NONBLOCK == 0, reps[0]

    out2 = tmp_path / "out2"
    out2.mkdir()
    _, reps = start_reporter(bindonce, out2, ["--nonblocking"])
    assert reps[0]["fd3_flags"] & os.O_NONBLOCK, reps[0]


def test_reuseport_siblings_are_blocking_too(bindonce, out_dir):
    _, reps = start_reporter(bindonce, out_dir, ["--balance", "reuseport"], workers=2)
    assert [r["fd3_flags"] & os.O_NONBLOCK for r in reps] == [0, 0], reps


@pytest.mark.parametrize("unit_nonblocking,flag,want", [(False, False, False), (True, False, True),
                                                        (False, True, True)],
                         ids=["unit-blocking", "unit-NonBlocking=yes", "unit-blocking+--nonblocking"])
def test_adopted_sockets_keep_the_units_choice(harnesses, tmp_path, out_dir, unit_nonblocking, flag, want):
    """Sockets from systemd stay as the socket unit made them, unless --nonblocking."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(not unit_nonblocking)
    fd = listener.fileno()
    reporter = script(out_dir, "reporter.py", REPORTER)
    argv = [BINDONCE, "--control", "none", "-E", f"OUT_DIR={out_dir}"] + (["--nonblocking"] if flag else []) + \
        ["--", PYTHON, reporter]
    # Under the harness: bash execs bindonce, so its pid is bindonce's, and teardown
    # checks the stop's exit code, the log, the fd count and leftovers.
    h = Harness(tmp_path / "adopted")
    harnesses.append(h)
    try:
        h.popen(["bash", "-c", f"exec 3<&{fd} {fd}<&-; export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$@\"",
                 "bash", *argv], pass_fds=(fd,))
        r = reports(out_dir, 1)[0]
        assert bool(r["fd3_flags"] & os.O_NONBLOCK) is want, r
        # The flag lives on the shared open file description: our own fd shows the same.
        import fcntl
        assert bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK) is want
        assert "adopted 1 sockets from systemd" in h.log()
        h.mark_fds()
    finally:
        listener.close()


# ---------------------------------------------------------------------------
# 2. --user, --group


@root_only
def test_user_runs_workers_as_nobody(bindonce, out_dir):
    nobody = pwd.getpwnam("nobody")
    groups = sorted({nobody.pw_gid} | {g.gr_gid for g in grp.getgrall() if "nobody" in g.gr_mem})
    b, reps = start_reporter(bindonce, out_dir, ["--user", "nobody"])
    r = reps[0]
    assert r["uid"] == [str(nobody.pw_uid)] * 4, r
    assert r["gid"] == [str(nobody.pw_gid)] * 4, r
    assert sorted(int(g) for g in r["groups"]) == groups, r
    assert r["env"]["USER"] == "nobody" and r["env"]["LOGNAME"] == "nobody", r["env"]
    assert r["env"]["HOME"] == nobody.pw_dir and r["env"]["SHELL"] == nobody.pw_shell, r["env"]
    assert request_once(("127.0.0.1", b.port))[0] == "ok"
    # bindonce itself keeps its privileges.
    assert open(f"/proc/{b.proc.pid}/status").read().count("Uid:\t0\t0\t0\t0") == 1


NOTIFIER = r"""
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    s.sendto(b"READY=1\nSTATUS=uid %d" % os.getuid(), "\0" + addr[1:] if addr.startswith("@") else addr)
while True:
    time.sleep(1000)
"""


@root_only
def test_user_with_ready_notify(bindonce, out_dir):
    """A worker running as nobody reaches bindonce's notify socket (abstract: no file mode
    in the way)."""
    notifier = script(out_dir, "notifier.py", NOTIFIER)
    b = bindonce(["--user", "nobody", "--ready", "notify", "--start-timeout", "20"], [PYTHON, notifier])
    b.wait_log(r"worker 0 \(pid \d+\) is ready")
    uid = pwd.getpwnam("nobody").pw_uid
    b.wait_status(lambda st: st["slots"][0]["status"] == f"uid {uid}", 10, "the worker's STATUS=")


@root_only
def test_group_and_numeric_ids(bindonce, out_dir):
    _, reps = start_reporter(bindonce, out_dir, ["--user", "65534", "--group", "0"], env=["USER=override"])
    r = reps[0]
    assert r["uid"] == ["65534"] * 4 and r["gid"] == ["0"] * 4, r
    # -E wins over what --user sets, as Environment= does over User=.
    assert r["env"]["USER"] == "override", r["env"]


@root_only
@pytest.mark.log_expected(r"error: worker 0: cannot change to its --chdir directory: Permission denied$",
                          r"error: giving up: every worker failed 2 times in a row within 1 s of starting "
                          r"\(last: exit status 126\)")
def test_user_failure_is_a_failed_start(bindonce, out_dir, tmp_path):
    """A worker that cannot enter its --chdir as nobody never runs, as nobody or as root."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    reporter = script(out_dir, "reporter.py", REPORTER)
    b = bindonce(["--user", "nobody", "--chdir", str(private), "--give-up", "2", "-E", f"OUT_DIR={out_dir}"],
                 [PYTHON, reporter])
    assert b.wait_exit(timeout=20) == 69, b.log()
    assert "cannot change to its --chdir directory: Permission denied" in b.log(), b.log()
    assert not list(out_dir.glob("report-*.json"))


# ---------------------------------------------------------------------------
# 3. --chdir, --umask


def test_chdir_and_umask(bindonce, out_dir, tmp_path):
    _, reps = start_reporter(bindonce, out_dir, ["--chdir", str(tmp_path), "--umask", "027"])
    assert reps[0]["cwd"] == str(tmp_path), reps[0]
    assert reps[0]["umask"] == 0o027, reps[0]


def test_relative_command_is_found_from_chdir(bindonce, out_dir):
    script(out_dir, "reporter.py", f"#!{PYTHON}\n" + REPORTER)
    bindonce(["--chdir", str(out_dir), "-E", f"OUT_DIR={out_dir}"], ["./reporter.py"])
    assert reports(out_dir, 1)[0]["cwd"] == str(out_dir)


def test_umask_default_is_bindonces(bindonce, out_dir):
    old = os.umask(0o022)
    try:
        _, reps = start_reporter(bindonce, out_dir, [])
    finally:
        os.umask(old)
    assert reps[0]["umask"] == 0o022, reps[0]


# A server that checks LISTEN_PID, as sd_listen_fds() does, and finds it is not its own
# (a shell without exec sits between): it never touches fd 3.
CHECKS_LISTEN_PID = r"""
import os, time
if os.environ.get("LISTEN_PID") != str(os.getpid()):
    while True:
        time.sleep(1000)
"""


def test_nobody_accepts_is_reported(bindonce, out_dir):
    """`sh -c 'cd DIR && app'` without exec: the log and STATUS name the socket and the fix,
    once the queue has grown for 5 s with a worker 'ready'."""
    server = script(out_dir, "checks.py", CHECKS_LISTEN_PID)
    b = bindonce([], ["/bin/sh", "-c", f"cd {out_dir} && {PYTHON} {server}; exit 0"])
    b.wait_log(r"all 1 workers ready")
    clients = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.connect(("127.0.0.1", b.port))   # completes: the kernel queues it
            clients.append(c)
        b.wait_log(rf"no worker accepts on 127\.0\.0\.1:{b.port} \(queue 3\): .*LISTEN_PID\? run it with exec",
                   timeout=30)
        assert b.log().count("no worker accepts") == 1, b.log()
        b.expect_log(rf"warning: no worker accepts on 127\.0\.0\.1:{b.port} \(queue 3\): ")   # the point, checked above
    finally:
        for c in clients:
            c.close()


def test_a_busy_server_is_not_taken_for_one_that_accepts_nothing(bindonce, out_dir):
    """A queue that stays about the same length for 12 s, because 8 clients wait on 2 slow
    workers, is a busy server: no warning."""
    server = script(out_dir, "plain.py", PLAIN_SERVER)
    b = bindonce(["-w", "2", "-E", "SLOW=0.05"], [PYTHON, server])
    b.wait_log(r"all 2 workers ready")
    res = LoadClient(("127.0.0.1", b.port), threads=8, duration=12.0).run()
    assert res.counts["refused"] == 0 and res.ok > 100, res.summary()
    assert "no worker accepts" not in b.log(), b.log()


# ---------------------------------------------------------------------------
# 4. --stop-signal


def signals_seen(out_dir):
    """{pid: signal name} of the workers that recorded one (a file just created reads
    empty until the worker has written the name: not seen yet)."""
    seen = {int(p.name.split("-")[1]): p.read_text() for p in out_dir.glob("signal-*")}
    return {pid: name for pid, name in seen.items() if name}


def test_stop_signal_at_stop_and_reload(bindonce, out_dir):
    b, reps = start_reporter(bindonce, out_dir, ["--stop-signal", "INT"], env=["STOP_SIGNAL_LOG=1"])
    old = reps[0]["pid"]
    r = b.ctl("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: old in signals_seen(out_dir), 10, "the retired worker's signal")
    assert signals_seen(out_dir)[old] == "SIGINT"
    new = [x["pid"] for x in reports(out_dir, 2) if x["pid"] != old][0]
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait_exit() == 0, b.log()
    assert signals_seen(out_dir)[new] == "SIGINT", signals_seen(out_dir)


def test_stop_signal_at_scale_down(bindonce, out_dir):
    b, reps = start_reporter(bindonce, out_dir, ["--stop-signal", "SIGUSR2"], env=["STOP_SIGNAL_LOG=1"],
                             workers=2)
    r = b.ctl("scale", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: signals_seen(out_dir), 10, "the scaled-down worker's signal")
    assert list(signals_seen(out_dir).values()) == ["SIGUSR2"]


# ---------------------------------------------------------------------------
# 7. LISTEN_PIDFDID and the socket options


def test_listen_pidfdid_is_the_workers_own(bindonce, out_dir):
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open")
    fd = os.pidfd_open(os.getpid())
    try:
        pidfs = subprocess.run(["stat", "-f", "-c", "%t", f"/proc/self/fd/{fd}"], capture_output=True,
                               text=True, pass_fds=[fd]).stdout.strip() == "50494446"
    finally:
        os.close(fd)
    check = script(out_dir, "pidfdid.py", REPORTER.replace(
        'rep = {', 'pfd = os.pidfd_open(os.getpid())\nrep = {"own_pidfdid": str(os.fstat(pfd).st_ino), '))
    os.rename(check, out_dir / "reporter.py")
    # A stale one in bindonce's own environment never reaches a worker.
    b = bindonce(["-E", f"OUT_DIR={out_dir}"], [PYTHON, str(out_dir / "reporter.py")])
    r = reports(out_dir, 1)[0]
    if pidfs:
        assert r["env"].get("LISTEN_PIDFDID") == r["own_pidfdid"], r["env"]
    else:
        assert "LISTEN_PIDFDID" not in r["env"], r["env"]
    assert r["env"]["LISTEN_PID"] == str(r["pid"])


@root_only
def test_unix_socket_mode_and_owner(supervisor, short_dir, out_dir):
    path = short_dir / "s.sock"
    sup = supervisor()
    sup.start(["-l", str(path), "--socket-mode", "0660", "--socket-user", "nobody", "--socket-group", "0"],
              ["/usr/bin/sleep", "1000"])
    wait_until(lambda: path.exists(), 10, "the socket file")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam("nobody").pw_uid, 0)


def test_inet_socket_options(bindonce, out_dir):
    port = free_tcp_port()
    b, reps = start_reporter(bindonce, out_dir, ["-l", f"[::]:{port}", "--ipv6-only", "--freebind"])
    r = reps[0]
    assert r["v6only"] == 1 and r["freebind"] == 1, r
    # IPv6 only: the IPv4 loopback is not served on that port.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@root_only
def test_bind_to_device(bindonce, out_dir):
    _, reps = start_reporter(bindonce, out_dir, ["--bind-to-device", "lo"])
    assert reps[0]["device"] == "lo", reps[0]


def test_freebind_binds_an_address_not_here(bindonce, out_dir):
    """192.0.2.1 (TEST-NET-1) is on no interface: only IP_FREEBIND lets it bind."""
    port = free_tcp_port()
    _, reps = start_reporter(bindonce, out_dir, ["-l", f"192.0.2.1:{port}", "--freebind"])
    assert reps[0]["freebind"] == 1


# ---------------------------------------------------------------------------
# bad input: exit 64 or 78 before anything is bound, one line naming the value

BAD = [
    ("user-unknown", ["--user", "no-such-user-bo"], 78, "no-such-user-bo"),
    ("group-unknown", ["--group", "no-such-group-bo"], 78, "no-such-group-bo"),
    ("uid-without-group", ["--user", "54321"], 78, "54321"),
    ("chdir-missing", ["--chdir", "/nonexistent-bo-dir"], 78, "/nonexistent-bo-dir"),
    ("chdir-relative", ["--chdir", "relative"], 64, "relative"),
    ("chdir-file", ["--chdir", "/etc/passwd"], 78, "/etc/passwd"),
    ("stop-signal-bogus", ["--stop-signal", "SIGBOGUS"], 64, "SIGBOGUS"),
    ("stop-signal-stop", ["--stop-signal", "STOP"], 64, "STOP"),
    ("stop-signal-0", ["--stop-signal", "0"], 64, "'0'"),
    ("umask-9", ["--umask", "099"], 64, "099"),
    ("umask-big", ["--umask", "01777"], 64, "01777"),
    ("socket-mode-bad", ["--socket-mode", "rw"], 64, "rw"),
    ("socket-user-unknown", ["--socket-user", "no-such-user-bo"], 78, "no-such-user-bo"),
    ("socket-group-unknown", ["--socket-group", "no-such-group-bo"], 78, "no-such-group-bo"),
    ("device-too-long", ["--bind-to-device", "x" * 16], 64, "x" * 16),
    ("device-missing", ["--bind-to-device", "nosuchif0"], 78, "nosuchif0"),
    ("nonblocking-value", ["--nonblocking=yes"], 64, "--nonblocking"),
]


@pytest.mark.parametrize("args,code,names", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(tmp_path, args, code, names):
    port = free_tcp_port()
    ctl = tmp_path / "ctl.sock"
    marker = tmp_path / "started"
    p = subprocess.run([BINDONCE, "-l", f"127.0.0.1:{port}", "--control", str(ctl), *args, "--",
                        "/usr/bin/touch", str(marker)], capture_output=True, text=True, timeout=10)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == code, p.stderr
    assert len(lines) == 1 and names in lines[0], p.stderr
    assert "listening" not in p.stderr and not marker.exists() and not ctl.exists()


@root_only
def test_socket_user_without_root_exits_77(short_dir):
    os.chmod(short_dir, 0o777)
    p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", BINDONCE,
                        "--control", "none", "-l", str(short_dir / "s.sock"), "--socket-user", "root", "--",
                        "/usr/bin/true"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 77, p.stderr
    assert p.stderr.count("\n") == 1 and "--socket-user 'root'" in p.stderr, p.stderr
    assert not (short_dir / "s.sock").exists()


@root_only
def test_user_without_root_exits_77(tmp_path):
    os.chmod(tmp_path, 0o755)
    p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", BINDONCE,
                        "--control", "none", "-l", f"127.0.0.1:{free_tcp_port()}", "--user", "root", "--",
                        "/usr/bin/true"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 77, p.stderr
    assert p.stderr.count("\n") == 1 and "--user 'root'" in p.stderr, p.stderr
