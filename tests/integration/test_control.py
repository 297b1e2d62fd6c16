"""Issue 4, the control socket and `bindonce ctl` (CONTRACT.md "Issue 4 additions", "Control").

Wire protocol: one request line (<= 4096 bytes, "\\n"-terminated, UTF-8, words separated by
spaces); the answer is "OK\\n<body>" or "ERROR <message>\\n", then the server closes. Bad input
of every kind gets "ERROR ..." and changes nothing; slow or hostile clients never stall the
others; the supervisor's fd count comes back to where it was.
"""

import json
import os
import re
import resource
import selectors
import socket
import stat
import subprocess
import tempfile

import pytest

from testlib import NOTIFY_WORKER, WORKER_DEATH, unix_server_ends
from lifecycle_support import (BINDONCE, CLK_TCK, PYTHON, Instance, alive, boot_time, free_port,  # noqa: F401
                               http_get, instances, monotonic, proc_stat, raw_request, read_to_eof, wait_until)


def assert_healthy(inst, pids, workers=None):
    """bindonce runs, answers status, and kept its workers (same pids, nothing restarted)."""
    assert inst.proc.poll() is None, "bindonce exited (%s); log:\n%s" % (inst.proc.returncode, inst.log())
    st = inst.status()
    assert st["workers"] == (workers or len(pids)), st
    assert inst.pids(st) == pids, "workers changed: %s -> %s" % (pids, inst.pids(st))
    assert st["restarts"] == 0, st
    return st


def wait_fds(inst, baseline, timeout=3):
    wait_until(lambda: inst.fd_count() <= baseline, timeout,
               what=lambda: "bindonce's fd count back to %d (now %d: %s)" % (
                   baseline, inst.fd_count(), sorted(os.listdir("/proc/%d/fd" % inst.pid))))


# ---- status --json against the system ----------------------------------------------------

@pytest.mark.log_expected(WORKER_DEATH)
def test_status_json_matches_proc(instances):
    inst = instances("status", workers=3, backlog=64)
    st = wait_until(lambda: (lambda s: s if all(x["status"] for x in s["slots"]) else None)(inst.status()),
                    5, what="every worker's STATUS=")
    assert st["name"] == "status"
    assert st["pid"] == inst.pid
    assert (st["workers"], st["ready"], st["restarts"], st["reloading"]) == (3, 3, 0, False)
    assert [s["slot"] for s in st["slots"]] == [0, 1, 2]
    btime = boot_time()
    for s in st["slots"]:
        pid = s["pid"]
        ps = proc_stat(pid)
        assert ps is not None, "slot %d: pid %d does not exist" % (s["slot"], pid)
        state, ppid, pgid, start = ps
        assert ppid == inst.pid, "slot %d: pid %d is not a child of bindonce" % (s["slot"], pid)
        assert pgid == pid, "slot %d: pid %d is not in its own process group" % (s["slot"], pid)
        assert state in "RS", state
        assert s["state"] == "running" and s["ready"] is True
        assert abs(s["since"] - (btime + start / CLK_TCK)) < 2.0, (s["since"], btime + start / CLK_TCK)
        assert s["restarts"] == 0 and s["last_exit"] is None
        assert s["status"] == "serving version=v1 mode=ok"
    assert st["sockets"] == [{"address": "127.0.0.1:%d" % inst.port, "name": "status", "type": "stream",
                              "fd": 3, "queue": 0, "queue_max": 64}]

    # The human table says the same.
    r = inst.ctl("status")
    assert r.returncode == 0 and "3/3 workers ready" in r.stdout, r.stdout
    for s in st["slots"]:
        assert re.search(r"^%d\s+%d\s+running\s" % (s["slot"], s["pid"]), r.stdout, re.M), r.stdout

    # A worker killed: its slot counts one restart and shows how it died.
    before = inst.pids(st)
    r = inst.ctl("signal", "KILL", "1")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: inst.status()["slots"][1]["pid"] not in (None, before[1]), 5, what="slot 1 restarted")
    st = inst.wait_settled(3)
    assert st["restarts"] == 1
    assert st["slots"][1]["restarts"] == 1
    assert st["slots"][1]["last_exit"] == {"code": "killed", "status": 9}
    assert inst.pids(st)[0] == before[0] and inst.pids(st)[2] == before[2]
    assert not alive(before[1])

    # A hard restart of slot 0: the worker exits 0 on SIGTERM.
    r = inst.ctl("restart", "0")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: inst.status()["slots"][0]["pid"] not in (None, before[0]), 5, what="slot 0 restarted")
    st = inst.wait_settled(3)
    assert st["slots"][0]["last_exit"] == {"code": "exited", "status": 0}
    assert inst.pids(st)[2] == before[2]


def test_status_queue_counts_connections_waiting(instances):
    inst = instances("queue", workers=2, backlog=128)
    pids = inst.pids()
    k = 7
    r = inst.ctl("signal", "STOP")
    assert r.returncode == 0, r.stderr
    conns = []
    try:
        wait_until(lambda: all(proc_stat(p)[0] == "T" for p in pids.values()), 3, what="workers stopped")
        for _ in range(k):
            conns.append(socket.create_connection(("127.0.0.1", inst.port), timeout=3))
        sock = wait_until(lambda: (lambda s: s if s["queue"] == k else None)(inst.status()["sockets"][0]), 3,
                          what=lambda: "queue == %d: %s" % (k, inst.status()["sockets"]))
        assert sock["queue_max"] == 128
        # Stopped workers are still counted as running and ready (no watchdog).
        assert inst.status()["ready"] == 2
    finally:
        r = inst.ctl("signal", "CONT")
    assert r.returncode == 0, r.stderr
    for c in conns:
        c.settimeout(5)
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = read_to_eof(c)
        c.close()
        assert data.startswith(b"HTTP/1.0 200 ") and b"version=v1" in data, data
    wait_until(lambda: inst.status()["sockets"][0]["queue"] == 0, 3, what="queue drained")
    assert inst.pids() == pids


# ---- ctl exit codes ----------------------------------------------------------------------

def run_ctl(*args):
    return subprocess.run([BINDONCE, "ctl"] + list(args), capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL)


def test_ctl_exit_codes_without_a_server():
    d = tempfile.mkdtemp(prefix="bo-ctl-")
    try:
        missing = os.path.join(d, "missing.sock")
        r = run_ctl("--control", missing, "status")
        assert r.returncode == 69 and missing in r.stderr, (r.returncode, r.stderr)

        # A socket file nobody listens on (a stale one).
        stale = os.path.join(d, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        r = run_ctl("--control", stale, "status")
        assert r.returncode == 69 and stale in r.stderr, (r.returncode, r.stderr)

        regular = os.path.join(d, "regular")
        open(regular, "w").close()
        r = run_ctl("--control", regular, "status")
        assert r.returncode == 69 and regular in r.stderr, (r.returncode, r.stderr)

        # A server that closes without an answer.
        mute = os.path.join(d, "mute.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(mute)
        srv.listen(1)
        p = subprocess.Popen([BINDONCE, "ctl", "--control", mute, "status"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        c, _ = srv.accept()
        c.close()
        out, err = p.communicate(timeout=10)
        srv.close()
        assert p.returncode == 69 and mute in err, (p.returncode, err)
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)

    # Usage: 64, one line on stderr, whatever the path.
    for args, names in (([], "no command"), (["--control", missing], "no command"), (["--bogus", "status"], "'--bogus'"),
                        (["--control"], "'--control' needs a value"), (["--name"], "'--name' needs a value"),
                        (["--json=1", "status"], "'--json' takes no value"),
                        (["--name", "../x", "status"], "--name '../x'")):
        r = run_ctl(*args)
        assert r.returncode == 64, (args, r.returncode, r.stderr)
        assert r.stderr.strip() and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert names in r.stderr, (args, r.stderr)
    r = run_ctl("--help")
    assert r.returncode == 0 and "Usage: bindonce ctl" in r.stdout


def test_ctl_exit_codes_with_a_server(instances):
    inst = instances("codes", workers=2)
    pids = inst.pids()
    r = inst.ctl("status")
    assert r.returncode == 0 and r.stdout.strip() and not r.stderr
    r = inst.ctl("restart", "7")             # no such slot: the command failed
    assert r.returncode == 1 and r.stderr.startswith("bindonce ctl: "), (r.returncode, r.stderr)
    r = inst.ctl("signal", "BOGUS")
    assert r.returncode == 1 and "signal" in r.stderr, (r.returncode, r.stderr)
    r = inst.ctl("frobnicate")
    assert r.returncode == 1 and "unknown command" in r.stderr, (r.returncode, r.stderr)
    r = inst.ctl("scale", "0")
    assert r.returncode == 1 and "scale" in r.stderr, (r.returncode, r.stderr)
    assert_healthy(inst, pids)


# ---- permissions ---------------------------------------------------------------------------

NOBODY = ("nobody", "nogroup")

# A raw client run as another user: prints what the server answered, tolerating a server
# that closes before reading the request (EPIPE on send, ECONNRESET after the answer).
RAW_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except OSError:
    pass
out = b""
while True:
    try:
        chunk = s.recv(4096)
    except ConnectionResetError:
        break
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode("utf-8", "replace"))
"""


def as_nobody(cmd):
    return subprocess.run(["setpriv", "--reuid=%s" % NOBODY[0], "--regid=%s" % NOBODY[1], "--clear-groups"] + cmd,
                          capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run ctl as another user")


@needs_root
def test_control_socket_file_is_closed_to_another_uid(instances):
    inst = instances("perm-file", workers=2)
    pids = inst.pids()
    os.chmod(inst.dir, 0o711)               # traversable for the test's other user
    mode = stat.S_IMODE(os.stat(inst.control).st_mode)
    assert mode & 0o077 == 0, "control socket is %o, open to other users" % mode
    # connect() fails with EACCES.
    for args in (["status"], ["stop"]):
        r = inst.ctl(*args, user=NOBODY)
        assert r.returncode == 77 and "permission denied" in r.stderr.lower(), (args, r.returncode, r.stderr)
    assert_healthy(inst, pids)


@needs_root
def test_control_server_refuses_another_uid(instances):
    """The server's own check (SO_PEERCRED), with the file opened up on purpose."""
    inst = instances("perm-cred", workers=2)
    pids = inst.pids()
    os.chmod(inst.dir, 0o711)
    os.chmod(inst.control, 0o666)
    for req in ("status", "stop", "scale 1", "signal KILL", "reload"):
        r = as_nobody([PYTHON, "-c", RAW_CLIENT, inst.control, req])
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("ERROR permission denied"), (req, r.stdout)
    assert "refused a client of uid 65534" in inst.log()
    assert_healthy(inst, pids)

    # And `bindonce ctl` says so: exit 77 with the server's message.
    codes = []
    for args in (["status"], ["stop"], ["scale", "1"], ["signal", "KILL"], ["reload"]):
        r = inst.ctl(*args, user=NOBODY)
        codes.append((args, r.returncode, r.stderr.strip()))
    assert all(c == 77 and "permission denied" in e for _, c, e in codes), codes
    assert_healthy(inst, pids)


# ---- bad requests ----------------------------------------------------------------------------

BAD_REQUESTS = [
    ("zero-length", b""),
    ("empty-line", b"\n"),
    ("blanks", b"  \t \n"),
    ("truncated-command", b"sta"),
    ("truncated-scale-16", b"scale 1"),     # the first bytes of "scale 16\n": must not scale to 1
    ("oversized-1MiB", b"a" * (1 << 20)),
    ("oversized-line", b"status " + b"x" * 5000 + b"\n"),
    ("non-utf8", b"status \xff\xfe\n"),
    ("overlong-utf8", b"st\xc0\xafatus\n"),
    ("nul-inside", b"sta\x00tus\n"),
    ("nul-after", b"status\x00\n"),
    ("unknown-command", b"frobnicate\n"),
    ("missing-arg-scale", b"scale\n"),
    ("missing-arg-restart", b"restart\n"),
    ("missing-arg-signal", b"signal\n"),
    ("extra-arg-status", b"status --json extra\n"),
    ("extra-arg-status-word", b"status verbose\n"),
    ("extra-arg-reload", b"reload now\n"),
    ("extra-arg-stop", b"stop now\n"),
    ("extra-arg-scale", b"scale 2 3\n"),
    ("extra-arg-restart", b"restart 0 1\n"),
    ("extra-arg-signal", b"signal TERM 0 1\n"),
    ("scale-0", b"scale 0\n"),
    ("scale-16385", b"scale 16385\n"),
    ("scale-negative", b"scale -1\n"),
    ("scale-garbage", b"scale 2x\n"),
    ("scale-plus-sign", b"scale +3\n"),
    ("restart-minus-zero", b"restart -0\n"),
    ("restart-no-such-slot", b"restart 5\n"),
    ("restart-negative", b"restart -1\n"),
    ("signal-bogus", b"signal BOGUS\n"),
    ("signal-0", b"signal 0\n"),
    ("signal-65", b"signal 65\n"),
    ("signal-no-such-slot", b"signal TERM 9\n"),
]


@pytest.mark.parametrize("data", [d for _, d in BAD_REQUESTS], ids=[n for n, _ in BAD_REQUESTS])
def test_bad_request_gets_error_and_changes_nothing(instances, data):
    inst = instances("bad", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()
    answer = raw_request(inst.control, data)
    assert answer.startswith(b"ERROR "), "request %r answered %r" % (data[:80], answer[:200])
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer
    wait_fds(inst, fds)                     # the server is done with the connection
    assert_healthy(inst, pids)


def test_only_the_first_line_counts(instances):
    inst = instances("oneline", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()
    answer = raw_request(inst.control, b"status\nstop\nscale 1\n")
    assert answer.startswith(b"OK\n"), answer
    wait_fds(inst, fds)                     # the server is done with the connection
    assert_healthy(inst, pids)


def test_clients_that_vanish_leave_nothing_behind(instances):
    inst = instances("vanish", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()
    for i in range(60):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(inst.control)
        if i % 3 == 1:
            s.send(b"stat")                 # truncated, then gone
        elif i % 3 == 2:
            s.send(b"status\n")             # gone before the answer
        s.close()
    # A reload whose client goes away before the outcome: the roll still completes.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(inst.control)
    s.send(b"reload\n")
    s.close()
    wait_until(lambda: "reload complete" in inst.log(), 10, what="the abandoned reload to complete")
    st = inst.wait_settled(2)
    assert not set(inst.pids(st).values()) & set(pids.values())
    wait_until(lambda: unix_server_ends(inst.control) == 0, 5, what="the server to close every connection")
    wait_fds(inst, fds)
    assert inst.proc.poll() is None


@pytest.mark.parametrize("data", [b"scale 1", b"stop"], ids=["scale-1-of-16", "stop"])
def test_truncated_request_of_a_vanished_client_is_not_executed(instances, data):
    """A client that dies while writing "scale 16\n" (or "stop now\n") leaves a request
    without its newline: it is not a request line and must not be carried out."""
    inst = instances("trunc", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(inst.control)
    s.sendall(data)
    s.close()
    # The server has seen the EOF and closed its end (it closes only after processing).
    wait_until(lambda: unix_server_ends(inst.control) == 0, 5, what="the server to close the connection")
    wait_fds(inst, fds)
    assert_healthy(inst, pids)


# ---- many, slow and odd clients --------------------------------------------------------

def test_burst_of_1000_connects(instances):
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
    inst = instances("burst", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()

    kinds = {0: b"status\n", 1: b"status --json\n", 2: b"\xff\xfe\n", 3: None}
    socks, results = [], {}
    try:
        for i in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(inst.control)
            req = kinds[i % 4]
            if req is None:
                s.close()                   # connect and go
                continue
            s.sendall(req)
            s.setblocking(False)
            socks.append((i, s))
        sel = selectors.DefaultSelector()
        bufs = {}
        for i, s in socks:
            sel.register(s, selectors.EVENT_READ, i)
            bufs[i] = b""
        open_ = len(socks)
        deadline = monotonic() + 20
        while open_ and monotonic() < deadline:
            for key, _ in sel.select(0.5):
                i = key.data
                try:
                    chunk = key.fileobj.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                    results[i] = "reset"
                if chunk:
                    bufs[i] += chunk
                    continue
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_ -= 1
                results.setdefault(i, bufs[i])
    finally:
        for _, s in socks:
            s.close()
    # The 20 s only stops a hung test; how fast bindonce answers is `make bench`'s business.
    assert open_ == 0, "%d control clients still waiting after 20 s" % open_

    bad = {}
    for i, s in socks:
        got = results.get(i)
        want = b"OK\n" if i % 4 in (0, 1) else b"ERROR "
        if not (isinstance(got, bytes) and got.startswith(want)):
            bad[i] = got[:60] if isinstance(got, bytes) else got
    assert not bad, "%d of %d requests not answered as they should: %s" % (len(bad), len(socks), list(bad.items())[:10])
    json.loads(results[1][3:])
    assert_healthy(inst, pids)
    wait_fds(inst, fds)


def peer_closed(s):
    """Has the server dropped this control connection (EOF, a reset, or the ERROR it may
    send first: it sends nothing else to a client that never sent a whole line)? Peeks."""
    try:
        s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_slow_clients_do_not_stall_others(instances):
    inst = instances("slow", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()
    idle, partial, nonreaders = [], [], []
    t0 = monotonic()
    try:
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(inst.control)
            idle.append(s)                  # never sends
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(inst.control)
            s.sendall(b"stat")              # sends part of a line, then nothing
            partial.append(s)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(inst.control)
            s.sendall(b"status --json\n")   # never reads
            nonreaders.append(s)
        for _ in range(3):
            r = inst.ctl("status", "--json", timeout=10)
            assert r.returncode == 0, r.stderr
            # A status stuck behind the slow clients would wait until bindonce drops them
            # (their 5 s timeout): it was answered while every one of them was still
            # connected. An order of events, not a clock.
            gone = [s for s in idle + partial if peer_closed(s)]
            assert not gone, "ctl status answered only after %d slow clients were dropped" % len(gone)
        assert json.loads(r.stdout)["ready"] == 2

        # Who does not send within 5 s is dropped (EOF, maybe an ERROR first).
        for s in idle + partial:
            s.settimeout(max(0.1, t0 + 10.0 - monotonic()))     # 5 s, with room for a loaded machine
            try:
                while s.recv(4096):
                    pass
            except socket.timeout:
                pytest.fail("a control client that sent no full line was not dropped within 10 s")
            except ConnectionResetError:
                pass
        dropped = monotonic() - t0
        assert dropped >= 4.5, "idle control clients dropped after only %.1f s (contract: 5 s)" % dropped
        # And who does not read the answer is dropped too: the server closes its end of
        # every connection while ours are still open.
        wait_until(lambda: unix_server_ends(inst.control) == 0, 10,
                   what=lambda: "%d control connections still open on the server's side" % unix_server_ends(inst.control))
    finally:
        for s in idle + partial + nonreaders:
            s.close()
    assert_healthy(inst, pids)
    wait_fds(inst, fds)


def test_peer_sending_fds_gets_an_answer_and_no_fd_leaks(instances):
    inst = instances("fds", workers=2)
    pids = inst.pids()
    fds = inst.fd_count()

    def nulls():
        return sum(os.readlink("/proc/%d/fd/%s" % (inst.pid, f)) == "/dev/null"
                   for f in os.listdir("/proc/%d/fd" % inst.pid))
    nulls_before = nulls()
    devnull = [os.open("/dev/null", os.O_RDONLY) for _ in range(8)]
    try:
        for i in range(40):
            req = b"status\n" if i % 2 == 0 else b"\xff garbage\n"
            answer = raw_request(inst.control, req, fds=devnull)
            assert answer.startswith(b"OK\n" if i % 2 == 0 else b"ERROR "), answer[:100]
    finally:
        for fd in devnull:
            os.close(fd)
    assert_healthy(inst, pids)
    wait_fds(inst, fds)
    assert nulls() == nulls_before, "bindonce kept fds passed to its control socket"


# ---- stop, and a path already taken --------------------------------------------------------

def test_control_path_in_use_and_ctl_stop(instances):
    inst = instances("owner", workers=2)
    pids = inst.pids()

    # A second bindonce on the same --control: exit 71, the first one untouched.
    other = Instance("intruder", workers=1)
    other.control = inst.control
    try:
        other.port = None
        env = dict(os.environ)
        other.port = free_port()
        r = subprocess.run(other.command(), capture_output=True, text=True, timeout=15, env=env,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 71, (r.returncode, r.stderr)
        assert inst.control in r.stderr, r.stderr
    finally:
        other.finish()
    assert os.path.exists(inst.control)
    assert_healthy(inst, pids)

    # ctl stop: OK, bindonce exits 0, its control socket is gone, nothing is left.
    r = inst.ctl("stop")
    assert r.returncode == 0, r.stderr
    inst.remember_tree()
    assert inst.proc.wait(15) == 0, inst.log()
    assert not os.path.exists(inst.control), "control socket left behind after stop"
    assert inst.stop() == 0
    assert "stopping 2 workers" in inst.log() and "stopped" in inst.log()
    r = inst.ctl("status")
    assert r.returncode == 69 and inst.control in r.stderr
    with pytest.raises(OSError):
        http_get(inst.port, timeout=1)


# STATUS= of 400 bytes (cut at a character), then one that is not UTF-8 (ignored), then
# READY=1, in this order.
STATUS_SENDER = NOTIFY_WORKER + ["STATUS=" + "\u00e9" * 200, os.fsdecode(b"STATUS=\xff\xfe not UTF-8"), "READY=1"]


def test_worker_status_text_stays_utf8(bindonce):
    """A worker's STATUS= is shown by ctl status --json: cut at a character boundary, and
    text that is not UTF-8 is ignored, so the JSON stays valid."""
    b = bindonce(["--ready", "notify"], STATUS_SENDER)
    st = b.wait_status(lambda s: s["ready"] == 1, 10, "the worker's READY=1")
    status = st["slots"][0]["status"]
    assert status == "\u00e9" * 127, status                  # 254 bytes: the 128th would not fit
