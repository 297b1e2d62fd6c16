"""Documented behaviour that had no test (issue 14, point 6), one test each: SIGNALS
(SIGINT as a stop), BINDONCE CTL (`restart all`), RESTART CONTRACT (clean-signal exits
under on-failure, --restart always after exit 0, the status of the last of several
workers), EXIT STATUS (77, 71 and 64 of bindonce, 64 and 69 of ctl) and CONTROL SOCKET
(path resolution, the directory's mode, the fallback, a stale socket, a file in the way,
removal at stop).

Rolling-restart failure semantics and the give-up rule after a reload are tested with the
slot state machine (issue 8), not here.
"""

import grp
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import TESTWORKER
from testlib import BINDONCE, EXAMPLE_HTTPD, NOTIFY_WORKER, WORKER_DEATH, Harness, clean_env, free_port, httpd_answer, wait_until

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = "nogroup" if "nogroup" in {g.gr_name for g in grp.getgrall()} else "nobody"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=" + NOGROUP, "--clear-groups"]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to run as nobody)")


def ctl(*args, env=None, user=False):
    cmd = (AS_NOBODY if user else []) + [BINDONCE, "ctl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env or clean_env(),
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def nobody_dir():
    """A short directory that nobody owns (mode 0700), like an XDG_RUNTIME_DIR."""
    d = tempfile.mkdtemp(prefix="bo-nb-", dir="/tmp")
    os.chown(d, NOBODY, -1)
    os.chmod(d, 0o700)
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


def start_as_nobody(sup, args, env_extra=None, control=False, command=None):
    """bindonce as nobody (its worker `sleep 1000` unless told: the test worker could not
    write its reports into pytest's directories)."""
    return sup.start(args, command or ["sleep", "1000"], wrapper=AS_NOBODY, env_extra=env_extra,
                     control=control)


# ---- SIGNALS and BINDONCE CTL ----------------------------------------------------------

def test_sigint_is_a_stop(supervisor, free_port):
    sup = supervisor().start(["-w", "2", "-l", "127.0.0.1:%d" % free_port()], wait_workers=2)
    workers = [r["pid"] for r in sup.reports()]
    assert sup.stop(signal.SIGINT) == 0, sup.log()
    assert "stopping 2 workers" in sup.log(), sup.log()
    assert not [p for p in workers if os.path.exists("/proc/%d" % p)]


@pytest.mark.log_expected(r"stop requested again, sending SIGKILL", WORKER_DEATH)
def test_a_second_sigint_kills_at_once(supervisor, free_port):
    sup = supervisor().start(["--stop-timeout", "30", "-l", "127.0.0.1:%d" % free_port()],
                             [TESTWORKER, "--ignore-term"], wait_workers=1)
    sup.send_signal(signal.SIGINT)
    sup.wait_log("stopping 1 workers")
    sup.send_signal(signal.SIGINT)
    assert sup.wait_exit(10) == 0, sup.log()
    assert "stop requested again, sending SIGKILL to 1 workers" in sup.log()


def test_ctl_restart_all_replaces_every_worker(supervisor, free_port):
    sup = supervisor().start(["-w", "3", "-l", "127.0.0.1:%d" % free_port()], wait_workers=3)
    before = {s: r["pid"] for s, r in sup.live_workers().items()}
    r = ctl("--control", str(sup.control_path), "restart", "all")
    assert r.returncode == 0, r.stderr
    after = sup.wait_live_workers(3, exclude=set(before.values()))
    assert sorted(after) == [0, 1, 2]
    for slot, pid in before.items():
        assert "worker %d (pid %d): restart requested" % (slot, pid) in sup.log(), sup.log()


# ---- RESTART CONTRACT ---------------------------------------------------------------------

@pytest.mark.log_expected(WORKER_DEATH)
@pytest.mark.parametrize("sig", ["HUP", "INT", "TERM", "PIPE"])
def test_on_failure_a_clean_signal_is_not_restarted(bindonce, sig):
    """Clause 3: under on-failure, a worker killed by SIGHUP, SIGINT, SIGTERM or SIGPIPE
    ended cleanly: not started again; bindonce then exits with its status (clause 4)."""
    b = bindonce(["--restart", "on-failure"], ["sh", "-c", "sleep 0.2; kill -%s $$; sleep 5" % sig])
    assert b.wait_exit(10) == 128 + signal.Signals["SIG" + sig], b.log()
    assert b.log().count("worker 0 started") == 1, b.log()


@pytest.mark.log_expected(WORKER_DEATH)
def test_on_failure_another_signal_is_restarted(bindonce):
    b = bindonce(["--restart", "on-failure", "--give-up", "0"], ["sh", "-c", "sleep 0.2; kill -USR1 $$; sleep 5"])
    b.wait_log(r"worker 0 started", count=2)
    assert b.proc.poll() is None


def test_restart_always_restarts_a_worker_that_exits_0(bindonce):
    b = bindonce(["--restart", "always", "--give-up", "0"], ["sh", "-c", "sleep 0.2; exit 0"])
    b.wait_log(r"worker 0 started", count=2)
    assert b.proc.poll() is None


@pytest.mark.log_expected(WORKER_DEATH)
def test_the_status_of_the_last_of_several_workers(bindonce, tmp_path):
    """Clause 4: with several workers, bindonce exits with the status of the last one."""
    b = bindonce(["-w", "2", "--restart", "no"],
                 ["sh", "-c", '[ "$BINDONCE_WORKER" = 0 ] && exit 3; sleep 0.5; exit 5'])
    assert b.wait_exit(10) == 5, b.log()


# ---- EXIT STATUS of bindonce ------------------------------------------------------------

def one_line(sup):
    """The one error line of a refused start (an info line such as "listening on" may
    come before it)."""
    lines = [l for l in sup.log().splitlines() if "error: " in l or not l.startswith("20")]
    assert len(lines) == 1, sup.log()
    return lines[0]


def test_no_socket_to_listen_on_is_a_usage_error(supervisor):
    sup = supervisor().start([], [TESTWORKER], control=False)
    assert sup.wait_exit(10) == 64, sup.log()
    assert "listen" in one_line(sup).lower(), sup.log()
    assert sup.tw_files() == []


@pytest.mark.log_expected(r"cannot create control socket")
def test_explicit_control_in_a_missing_directory_is_71(supervisor, free_port, short_dir):
    sup = supervisor()
    path = str(short_dir / "missing" / "ctl.sock")
    sup.start(["--control", path, "-l", "127.0.0.1:%d" % free_port()], control=False)
    assert sup.wait_exit(10) == 71, sup.log()
    assert path in one_line(sup)
    assert sup.tw_files() == [] and not os.path.exists(os.path.dirname(path))


@pytest.mark.log_expected(r"cannot create control socket")
def test_a_file_at_the_explicit_control_path_is_left_alone(supervisor, free_port, short_dir):
    path = short_dir / "ctl.sock"
    path.write_text("precious\n")
    sup = supervisor().start(["--control", str(path), "-l", "127.0.0.1:%d" % free_port()], control=False)
    assert sup.wait_exit(10) == 71, sup.log()
    assert str(path) in one_line(sup)
    assert path.read_text() == "precious\n"


@needs_root
@pytest.mark.log_expected(r"cannot listen on")
def test_unix_socket_path_not_writable_is_77(supervisor, short_dir):
    os.chmod(short_dir, 0o755)                  # root's, not writable by nobody
    path = str(short_dir / "s.sock")
    sup = start_as_nobody(supervisor(), ["--control", "none", "-l", path])
    assert sup.wait_exit(10) == 77, sup.log()
    assert path in one_line(sup)
    assert not os.path.exists(path)


@needs_root
def test_generate_units_into_a_directory_not_writable_is_77(tmp_path):
    unit_dir = tmp_path / "units"
    unit_dir.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    r = subprocess.run(AS_NOBODY + [BINDONCE, "generate-units", "web", "--install", "--unit-dir", str(unit_dir),
                                    "-l", "8080", "--", "/bin/true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 77, (r.returncode, r.stderr)
    assert os.listdir(unit_dir) == []


def test_generate_units_that_cannot_all_be_written_writes_none(tmp_path):
    """71, and all or nothing: web.service cannot be written (a directory is in the way),
    so web.socket is not left behind either."""
    (tmp_path / "web.service").mkdir()
    r = subprocess.run([BINDONCE, "generate-units", "web", "--install", "--unit-dir", str(tmp_path),
                        "-l", "8080", "--", "/bin/true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 71, (r.returncode, r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["web.service"], os.listdir(tmp_path)


# ---- EXIT STATUS of bindonce ctl --------------------------------------------------------

def test_ctl_request_too_long_is_64(tmp_path):
    r = ctl("--control", str(tmp_path / "none.sock"), "status", "x" * 5000)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert "too long" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


@needs_root
def test_ctl_name_without_a_default_directory_is_64():
    env = clean_env(remove=("XDG_RUNTIME_DIR",))
    r = ctl("--name", "web", "status", env=env, user=True)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert "XDG_RUNTIME_DIR" in r.stderr, r.stderr


@needs_root
def test_ctl_finds_none_or_too_many_sockets_in_the_default_directory(nobody_dir):
    env = clean_env({"XDG_RUNTIME_DIR": nobody_dir})
    r = ctl("status", env=env, user=True)                   # no bindonce/ directory at all
    assert r.returncode == 69, (r.returncode, r.stderr)
    d = os.path.join(nobody_dir, "bindonce")
    os.mkdir(d, 0o700)
    os.chown(d, NOBODY, -1)
    r = ctl("status", env=env, user=True)                   # an empty one
    assert r.returncode == 69, (r.returncode, r.stderr)
    socks = []
    for name in ("a", "b"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(d, name + ".sock"))
        s.listen(1)
        socks.append(s)
    try:
        r = ctl("status", env=env, user=True)               # two: which one?
        assert r.returncode == 64, (r.returncode, r.stderr)
        assert "a.sock" in r.stderr and "b.sock" in r.stderr or "--name" in r.stderr, r.stderr
    finally:
        for s in socks:
            s.close()


# ---- CONTROL SOCKET ------------------------------------------------------------------------

def status_of(path, env=None, user=False):
    r = ctl("--control", path, "--json", "status", env=env, user=user)
    assert r.returncode == 0, (r.returncode, r.stderr)
    return json.loads(r.stdout)


def test_runtime_directory_is_the_default_and_the_socket_is_0600(supervisor, free_port, short_dir):
    sup = supervisor().start(["--name", "rtd", "-l", "127.0.0.1:%d" % free_port()],
                             env_extra={"RUNTIME_DIRECTORY": "%s:/nonexistent" % short_dir},
                             control=False, wait_workers=1)
    path = str(short_dir / "rtd.sock")
    assert "control socket %s" % path in sup.log(), sup.log()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert status_of(path)["pid"] == sup.pid
    assert sup.stop() == 0
    assert not os.path.exists(path), "the control socket is left after the stop"


@needs_root
def test_root_default_is_run_bindonce(supervisor, free_port):
    name = "bo-test-%d" % os.getpid()
    path = "/run/bindonce/%s.sock" % name
    sup = supervisor().start(["--name", name, "-l", "127.0.0.1:%d" % free_port()], control=False, wait_workers=1)
    assert "control socket %s" % path in sup.log(), sup.log()
    assert stat.S_IMODE(os.stat("/run/bindonce").st_mode) == 0o755
    r = ctl("--name", name, "--json", "status")
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == sup.pid, r.stderr
    assert sup.stop() == 0
    assert not os.path.exists(path)


@needs_root
def test_xdg_runtime_dir_for_a_user_and_ctl_finds_the_one_socket(supervisor, free_port, nobody_dir):
    env = {"XDG_RUNTIME_DIR": nobody_dir}
    sup = start_as_nobody(supervisor(), ["--name", "xdg", "-l", "127.0.0.1:%d" % free_port()], env)
    sup.wait_log("worker 0 started")
    d = os.path.join(nobody_dir, "bindonce")
    path = os.path.join(d, "xdg.sock")
    wait_until(lambda: os.path.exists(path), 5, "the control socket")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700 and os.stat(d).st_uid == NOBODY
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Neither --name nor --control: the one socket of the default directory.
    r = ctl("--json", "status", env=clean_env(env), user=True)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == sup.pid, (r.returncode, r.stderr)
    assert sup.stop() == 0
    assert os.listdir(d) == []


@needs_root
@pytest.mark.log_expected(r"no control socket: set XDG_RUNTIME_DIR or pass --control PATH")
def test_no_default_path_runs_without_a_control_socket(supervisor, free_port):
    port = free_port()
    sup = supervisor()
    start_as_nobody(sup, ["--name", "nox", "-l", "127.0.0.1:%d" % port], env_extra={})
    sup.wait_log("worker 0 started")
    assert "warning: no control socket: set XDG_RUNTIME_DIR or pass --control PATH" in sup.log(), sup.log()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass                                    # it serves
    assert sup.stop() == 0


def test_a_stale_control_socket_is_replaced(supervisor, free_port, short_dir):
    path = str(short_dir / "ctl.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                                   # the file stays, nobody accepts: stale
    sup = supervisor().start(["--control", path, "-l", "127.0.0.1:%d" % free_port()],
                             control=False, wait_workers=1)
    assert status_of(path)["pid"] == sup.pid
    assert sup.stop() == 0
    assert not os.path.exists(path)


def test_the_socket_is_removed_at_stop_only_if_still_its_own(supervisor, free_port, short_dir):
    path = short_dir / "ctl.sock"
    sup = supervisor().start(["--control", str(path), "-l", "127.0.0.1:%d" % free_port()],
                             control=False, wait_workers=1)
    path.unlink()
    path.write_text("someone else's\n")
    assert sup.stop() == 0
    assert path.read_text() == "someone else's\n"



def test_at_most_64_control_clients_at_once_more_wait(supervisor, free_port):
    """CONTROL SOCKET, Limits: 64 clients are served at once, more wait in the backlog: with
    64 idle clients connected, a 65th is answered only once the idle ones are dropped
    (after their 5 s), never refused."""
    sup = supervisor().start(["-l", "127.0.0.1:%d" % free_port()], wait_workers=1)
    base = sup.fd_count()
    idle = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sup.control_path))
            idle.append(s)
        wait_until(lambda: sup.fd_count() >= base + 64, 5, lambda: "64 clients accepted (%d fds)" % sup.fd_count())
        t0 = time.monotonic()
        r = ctl("--control", str(sup.control_path), "status")
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert took >= 4.0, "the 65th client was served after %.1f s, beside 64 others" % took
        for s in idle:                          # dropped by then
            s.settimeout(1)
            assert s.recv(100) == b""
    finally:
        for s in idle:
            s.close()


# ---- SCALING, BINDONCE CTL signal, FD STORE, ADDRESSES -------------------------------------

def test_sigttou_with_one_worker_left_does_nothing(supervisor, free_port):
    sup = supervisor().start(["-l", "127.0.0.1:%d" % free_port()], wait_workers=1)
    [rep] = sup.reports()
    sup.send_signal(signal.SIGTTOU)
    # Two full requests later the loop has handled the signal (it was pending before both).
    for _ in range(2):
        st = status_of(str(sup.control_path))
    assert st["workers"] == 1 and [s["pid"] for s in st["slots"]] == [rep["pid"]], st
    assert "scaling" not in sup.log(), sup.log()


def test_ctl_signal_by_name_with_and_without_sig_and_by_number(bindonce, tmp_path):
    got = tmp_path / "got"
    b = bindonce(["-w", "2"], ["sh", "-c", "trap 'echo $BINDONCE_WORKER >> %s' USR1; "
                               "while :; do sleep 0.05; done" % got])
    b.wait_status(lambda s: s["ready"] == 2, 10, "2 workers")

    def received():
        return sorted(got.read_text().split()) if got.exists() else []
    for args, want in ((["SIGUSR1", "0"], ["0"]), (["USR1", "1"], ["0", "1"]),
                       ([str(int(signal.SIGUSR1))], ["0", "0", "1", "1"])):
        r = b.ctl("signal", *args)
        assert r.returncode == 0, (args, r.stderr)
        wait_until(lambda: received() == want, 5, lambda: "USR1 for %s: %s" % (want, received()))


@pytest.mark.log_expected(r"--fd-store: not running under systemd")
def test_fd_store_without_systemd_is_a_warning_only(supervisor, free_port):
    port = free_port()
    sup = supervisor().start(["--fd-store", "-l", "127.0.0.1:%d" % port], wait_workers=1)
    assert "warning: --fd-store: not running under systemd (NOTIFY_SOCKET is unset); sockets not stored" \
        in sup.log(), sup.log()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b"pid=" in c.recv(4096)


def get_hello(family, addr):
    with socket.socket(family, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(addr)
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                return data
            data += chunk


@pytest.fixture
def bindonce_any(tmp_path, harnesses):
    """bindonce_any(args) -> a Harness running `bindonce --control none ARGS -- httpd`."""
    def start(args):
        h = Harness(tmp_path / ("b%d" % len(harnesses)))
        harnesses.append(h)
        h.popen([BINDONCE, "--control", "none", *args, "--", EXAMPLE_HTTPD])
        wait_until(lambda: "worker 0 started" in h.log() or h.proc.poll() is not None, 10, "the worker")
        assert h.proc.poll() is None, h.log()
        return h
    return start


@pytest.mark.parametrize("kind", ["ipv6", "bare-port", "abstract"])
def test_addresses_are_bound_and_served(bindonce_any, kind):
    """ADDRESSES: [::1]:PORT, a bare PORT (dual-stack [::], reached over IPv4 and IPv6)
    and an abstract @name are bound and served, not only parsed."""
    port = free_port("::")          # free on [::], so on 0.0.0.0 too (dual-stack)
    if kind == "ipv6":
        listen, targets = "[::1]:%d" % port, [(socket.AF_INET6, ("::1", port))]
    elif kind == "bare-port":
        listen, targets = str(port), [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port))]
    else:
        name = "bindonce-test-%d" % os.getpid()
        listen, targets = "@" + name, [(socket.AF_UNIX, "\0" + name)]
    b = bindonce_any(["-l", listen])
    for family, addr in targets:
        answer = get_hello(family, addr)
        assert httpd_answer(answer), (listen, addr, answer[:200])
    assert b.proc.poll() is None


def status_summary(out):
    """The summary of `ctl status`: its first line, and the second that carries what is
    going on when the first would be wider than 80 columns (with the version in it, a
    long enough name or pid pushes it there)."""
    lines = out.splitlines()
    return lines[0] + (", " + lines[1] if len(lines) > 1 and lines[1] else "")


@pytest.mark.log_expected(r"did not stop within", WORKER_DEATH)
def test_human_status_says_reloading_and_stopping(bindonce):
    """BINDONCE CTL status: the summary line ends in ", reloading" during a roll and in
    ", stopping" during a stop."""
    b = bindonce(["--ready", "notify", "--stop-timeout", "2"],
                 NOTIFY_WORKER[:-1] + ["import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                       + NOTIFY_WORKER[-1]] + ["sleep:0.5", "READY=1"])
    b.wait_status(lambda s: s["ready"] == 1, 10, "ready")
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: status_summary(b.ctl("status").stdout).endswith(", reloading"), 5, "', reloading'")
    b.wait_log(r"reload complete")
    b.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: (lambda r: r.returncode == 0 and status_summary(r.stdout).endswith(", stopping"))(b.ctl("status")),
               5, "', stopping'")
    assert b.wait_exit(10) == 0, b.log()
