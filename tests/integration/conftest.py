"""Fixtures for the bindonce integration tests; the helpers live in testlib.py.

Run: make integration (or /usr/bin/python3 -m pytest -q -p skipcheck tests/integration,
with PYTHONPATH=tests/integration). Env: BINDONCE, TESTWORKER, EXAMPLE_HTTPD (absolute
paths; default build/<name> in the repository).

Every bindonce of a test is a testlib.Harness (Supervisor, Bindonce and
lifecycle_support.Instance are its kinds), made through one of the `supervisor`,
`bindonce`, `instances` or `harnesses` fixtures, and finished by one teardown that fails
the test unless: the SIGTERM stop exits 0 (or the test waited for an earlier exit), no
zombie child, bindonce's fd count is back to the value marked at start, no process of the
tree is left, no error/warning line the test did not declare (the log_expected marker or
expect_log()), no sanitizer report.

Process hygiene, which every test relies on:
- bindonce is started as a plain child (same process group as pytest): it must get and
  handle signals itself. Its log goes to a file in the test's directory.
- Every process of a tree inherits BINDONCE_TEST_TREE=<its directory>, so
  /proc/<pid>/environ tells exactly which processes belong to one harness. Only those, and
  pids learned from reports or status, are ever signalled, always by pid.
- While a test uses a harness fixture, pytest is a child subreaper (prctl checked), so
  whatever escapes a tree is re-parented to pytest: it is seen, reaped and, if still
  alive at teardown, reported as a failure.
- Every wait is bounded.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from testlib import (BINDONCE, EXAMPLE_HTTPD, REPO, TESTWORKER, Harness, alive, all_pids,  # noqa: F401
                     expected_from_markers, fd_inode, finish_all, listening_inodes, free_tcp_port, free_udp_port, proc_alive,
                     proc_children, proc_comm, proc_environ_has, proc_fds, proc_stat, read_to_eof,
                     reap_adopted, set_subreaper, unix_server_ends, wait_until, worker_environ,
                     worker_fds, zombie_children)


def pytest_configure(config):
    config.addinivalue_line("markers", "log_expected(*regex): error/warning lines of bindonce's "
                            "log this test provokes on purpose (teardown fails on any other)")


def pytest_collection_modifyitems(config, items):
    missing = [p for p in (BINDONCE, TESTWORKER, EXAMPLE_HTTPD) if not os.access(p, os.X_OK)]
    if missing:
        raise pytest.UsageError("not built: " + ", ".join(missing) + " (run make)")


# ---------------------------------------------------------------------------
# small helpers


def port_bindable(port, host="127.0.0.1"):
    """Can a listener be bound on host:port now (SO_REUSEADDR, so TIME_WAIT is no obstacle)?"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def time_wait_count(port):
    """TIME_WAIT entries whose local port is `port` (None: all), from /proc/net/tcp{,6}."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "06" and (port is None or
                                          int(local.rsplit(":", 1)[1], 16) == port):
                        n += 1
        except FileNotFoundError:
            pass
    return n


def dirty_signal_state():
    """preexec_fn: start bindonce with signals ignored and blocked, as a careless parent would."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM, signal.SIGQUIT,
                                              signal.SIGWINCH})



# ---------------------------------------------------------------------------
# the harness fixtures: every bindonce of a test is a testlib.Harness, and every one of
# them is finished by the same teardown (testlib.Harness.finish)


@pytest.fixture
def harnesses(request):
    """The list of this test's harnesses; all finished at teardown, the test failed with
    every problem found (and the logs)."""
    made = []
    set_subreaper(True)
    yield made
    try:
        problems = finish_all(made)
    finally:
        set_subreaper(False)
        reap_adopted()
    if problems:
        logs = "\n".join("--- %s:\n%s" % (h.log_path, h.log()[-6000:]) for h in made)
        pytest.fail("teardown:\n  " + "\n  ".join(problems) + "\n" + logs, pytrace=False)


class Supervisor(Harness):
    """One bindonce run with the test worker: start, observe through the test worker's
    reports, stop; finished by the harness teardown."""

    def __init__(self, base: Path, name: str, expected=()):
        super().__init__(base / name, expected)
        self.tw_dir = self.dir / "tw"
        self.tw_dir.mkdir()
        self.stderr_path = self.log_path
        self.stdout_path = self.dir / "stdout.log"
        self.known_pids = set()      # worker and grandchild pids learned from reports
        self._reports = {}           # pid -> report dict
        # A control socket of its own, so that runs never meet in /run/bindonce (two
        # suites at once, or another instance named "testworker"); short path (sun_path).
        self.control_dir = Path(tempfile.mkdtemp(prefix="bo-itc-", dir="/tmp"))
        self.control_path = self.control_dir / "ctl.sock"

    # -- starting

    def start(self, args, command=None, *, env_extra=None, env_remove=(), preexec_fn=None,
              wrapper=(), raw_argv=None, wait_workers=0, timeout=10, control=True):
        """Start `bindonce [--control PATH] ARGS -- COMMAND`; with wait_workers, wait for
        that many reports (and take the fd count teardown compares with). raw_argv
        replaces ARGS -- COMMAND entirely."""
        ctl = ["--control", str(self.control_path)] if control else []
        if raw_argv is not None:
            argv = list(wrapper) + [BINDONCE] + ctl + list(raw_argv)
        else:
            if command is None:
                command = [TESTWORKER]
            argv = list(wrapper) + [BINDONCE] + ctl + list(args) + ["--"] + list(command)
        env = dict(env_extra or {})
        env["TW_DIR"] = str(self.tw_dir)
        self.popen(argv, env_extra=env, env_remove=env_remove, stdout=self.stdout_path,
                   preexec_fn=preexec_fn)
        if wait_workers:
            self.wait_reports(wait_workers, timeout=timeout)
            if not wrapper:
                self.mark_fds()
        return self

    # -- observing

    def reports(self):
        """All reports written so far, oldest first ({'pid', ..., '_mtime'})."""
        for path in self.tw_dir.glob("report-*.json"):
            pid = int(path.name[len("report-"):-len(".json")])
            if pid in self._reports:
                continue
            try:
                with open(path) as f:
                    rep = json.load(f)
            except ValueError:
                continue            # being written
            rep["_mtime"] = path.stat().st_mtime
            self._reports[pid] = rep
            self.known_pids.add(pid)
            self.remember(pid)
            if rep.get("grandchild"):
                self.known_pids.add(rep["grandchild"])
                self.remember(rep["grandchild"])
        return sorted(self._reports.values(), key=lambda r: r["_mtime"])

    def wait_reports(self, n, timeout=10):
        def enough():
            if self.proc.poll() is not None:
                raise AssertionError(f"bindonce exited with {self.proc.returncode} before "
                                     f"{n} workers reported; stderr:\n{self.log()}")
            reps = self.reports()
            return reps if len(reps) >= n else None
        return wait_until(enough, timeout, f"{n} worker reports in {self.tw_dir}")

    def live_workers(self):
        """{slot: report} of the newest report per slot whose process is alive."""
        out = {}
        for rep in self.reports():
            if proc_alive(rep["pid"]):
                out[int(rep["env"]["BINDONCE_WORKER"])] = rep
        return out

    def wait_live_workers(self, n, timeout=10, exclude=()):
        """Wait until n slots have a live worker whose pid is not in exclude."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"bindonce exited with {self.proc.returncode}; "
                                     f"stderr:\n{self.log()}")
            live = {s: r for s, r in self.live_workers().items() if r["pid"] not in exclude}
            return live if len(live) >= n else None
        return wait_until(ready, timeout, f"{n} live workers")

    def counts(self, pid):
        """(accepted, completed, window) from a worker's count file; window is '-', or
        'a'/'s' when the worker was inside accept()/send() (see testworker.c)."""
        with open(self.tw_dir / f"count-{pid}") as f:
            fields = dict(kv.split("=") for kv in f.read().split())
        return int(fields["accepted"]), int(fields["completed"]), fields["window"]

    def casualties(self, pids):
        """(low, high, per-pid counts) of the requests that died with SIGKILLed workers.
        low == high unless a kill landed inside accept() or send()."""
        per = {pid: self.counts(pid) for pid in pids}
        low = high = 0
        for a, c, w in per.values():
            low += a - c - (1 if w == "s" else 0)
            high += a - c + (1 if w == "a" else 0)
        return low, high, per

    def log_lines(self):
        return [l for l in self.log().splitlines() if l.strip()]

    def wait_log(self, substring, timeout=10, count=1):
        return wait_until(lambda: self.log().count(substring) >= count, timeout,
                          f"{count}x {substring!r} in bindonce's stderr")

    def tw_files(self):
        return sorted(p.name for p in self.tw_dir.iterdir())

    # -- stopping

    def send_signal(self, sig):
        assert self.running(), "bindonce is not running"
        os.kill(self.proc.pid, sig)

    def finish(self, stop_timeout=20):
        try:
            return super().finish(stop_timeout)
        finally:
            shutil.rmtree(self.control_dir, ignore_errors=True)


@pytest.fixture
def short_dir():
    """A directory with a short path (unix socket paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="bo-it-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def supervisor(tmp_path, harnesses, request):
    """Factory: supervisor() -> a new Supervisor (not started), finished at teardown."""
    def make(name=None):
        sup = Supervisor(tmp_path, name or f"sup{len(harnesses)}", expected_from_markers(request))
        harnesses.append(sup)
        return sup
    return make


class Bindonce(Harness):
    """One bindonce started by hand, for tests that need no test worker: listening on a
    free 127.0.0.1 port, with its own control socket and its log in `directory`.

    The fd check: its worker count changes during many tests (scale, restarts, backoff),
    so it counts bindonce's fds less those that live with a worker (testlib.worker_fds: a
    pidfd of a live process, a pipe a live worker shares). That count is marked by itself
    the first time a wait_log()/wait_status() (or mark_fds_when_settled()) returns once a
    worker has started and no control client is connected, and teardown finds it again (a pidfd or pipe kept for a
    worker that is gone, a control connection or socket never closed, fails the test)."""

    def __init__(self, directory, args, command, expected=(), stdout=None):
        super().__init__(directory, expected)
        self.port = free_tcp_port()
        self.control = str(self.dir / "ctl.sock")
        self._mark_waited = False
        self.popen([BINDONCE, "-l", f"127.0.0.1:{self.port}", "--control", self.control,
                    *args, "--", *command], stdout=stdout)

    def base_fd_count(self):
        # --balance reuseport holds a listening socket per slot: its listeners on the port
        # are left out too (the balance tests count them against the slots themselves).
        listeners = listening_inodes(self.port)
        own = sum(1 for fd in os.listdir(f"/proc/{self.pid}/fd") if fd_inode(self.pid, int(fd)) in listeners)
        return self.fd_count() - len(worker_fds(self.pid)) - own

    def mark_fds_when_settled(self):
        """Mark the fd count once a worker has started and no control client (a ctl still
        closing, an events follower) is connected; waited for at most once, 2 s."""
        if self.fd_start is not None or not self.running() or not re.search(r"worker \d+ started", self.log()):
            return
        if unix_server_ends(self.control):
            if self._mark_waited:
                return
            self._mark_waited = True
            try:
                wait_until(lambda: not unix_server_ends(self.control), 2, "no control client")
            except AssertionError:
                return
        self.mark_fds()

    def wait_log(self, pattern, count=1, timeout=10):
        """Until the log matches the regular expression `count` times."""
        def enough():
            if len(re.findall(pattern, self.log())) >= count:
                return True
            assert self.proc.poll() is None, f"bindonce exited {self.proc.returncode}; log:\n{self.log()}"
            return False
        wait_until(enough, timeout, f"{count} x {pattern!r} in the log")
        self.mark_fds_when_settled()

    def ctl(self, *args, timeout=30):
        return subprocess.run([BINDONCE, "ctl", "--control", self.control, *args],
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        """`ctl status --json`, or None while bindonce does not answer (yet)."""
        r = self.ctl("status", "--json", timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_status(self, pred, timeout, what):
        """Until pred(status) is true; returns that status."""
        def check():
            st = self.status()
            if st and pred(st):
                return st
            assert self.proc.poll() is None, f"bindonce exited {self.proc.returncode} waiting for {what}"
            return None
        st = wait_until(check, timeout, what, interval=0.05)
        self.mark_fds_when_settled()
        return st


@pytest.fixture
def bindonce(tmp_path, harnesses, request):
    """bindonce(args, command) -> a started Bindonce, each in a directory of its own,
    finished at teardown."""
    def start(args, command):
        b = Bindonce(tmp_path / f"bindonce{len(harnesses)}", args, command, expected_from_markers(request))
        harnesses.append(b)
        return b
    return start


@pytest.fixture
def free_port():
    """free_port() -> a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_tcp_port


@pytest.fixture
def free_udp():
    return free_udp_port


@pytest.fixture
def app(tmp_path):
    """A copy of the Python example server (docs/examples/python/server.py) in a directory
    of its own: what the --watch tests edit and watch."""
    d = tmp_path / "app"
    d.mkdir()
    shutil.copy(REPO / "docs/examples/python/server.py", d / "server.py")
    return d
