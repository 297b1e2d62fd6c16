"""Fixtures and helpers for the bindonce integration tests.

Run: /usr/bin/python3 -m pytest -q tests/integration
Env: BINDONCE, TESTWORKER, EXAMPLE_HTTPD (absolute paths; default build/<name> in the repo).

Process hygiene, which every test relies on:
- bindonce is started as a plain child (same process group as pytest): it must get and
  handle signals itself. Its stdout and stderr go to files in the test's directory.
- Every bindonce gets its own TW_DIR; the test worker writes its reports there, and every
  process of the tree inherits TW_DIR, so /proc/<pid>/environ tells exactly which
  processes belong to one Supervisor. Only those, and pids learned from reports, are ever
  signalled, always by pid.
- While a test uses the `supervisor` fixture, pytest is a child subreaper, so whatever
  escapes a tree (a grandchild whose worker died, workers of a bindonce that was
  SIGKILLed) is re-parented to pytest: it is seen, reaped and, if still alive at
  teardown, reported as a failure.
- Every wait is bounded.
"""

import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _binary(var, default):
    return os.environ.get(var) or str(REPO / "build" / default)


BINDONCE = _binary("BINDONCE", "bindonce")
TESTWORKER = _binary("TESTWORKER", "testworker")
EXAMPLE_HTTPD = _binary("EXAMPLE_HTTPD", "httpd")

# Variables that must not reach bindonce from whatever runs pytest.
_SCRUB = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID", "NOTIFY_SOCKET",
          "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "TW_DIR", "BINDONCE_WORKER")

# Popen pids of live Supervisors: never reaped behind subprocess' back.
_POPEN_PIDS = set()

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on):
    """Make pytest the child subreaper (only while a `supervisor` fixture is active, so
    that other tests in this directory see the usual re-parenting to init)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def pytest_collection_modifyitems(config, items):
    missing = [p for p in (BINDONCE, TESTWORKER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    skip = pytest.mark.skip(reason="not built: " + ", ".join(missing) + " (run make)")
    for item in items:
        if "supervisor" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


# ---------------------------------------------------------------------------
# small helpers


def wait_until(pred, timeout, what, interval=0.01):
    """Poll pred() until it returns a true value (returned) or timeout seconds pass; what
    names it in the error (a callable is asked only then, for the state at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def proc_stat(pid):
    """(state, ppid, pgid) of pid, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[2])


def proc_comm(pid):
    """The command name of pid, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_alive(pid):
    """Exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def proc_children(pid):
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return kids


def zombie_children(pid):
    """Children of pid that have died and are not reaped yet."""
    return [k for k in proc_children(pid) if (proc_stat(k) or ("?",))[0] == "Z"]


def proc_fds(pid):
    """{fd: (target, flags)} of a process (flags from fdinfo, as an int)."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            flags = None
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("flags:"):
                        flags = int(line.split()[1], 8)
        except FileNotFoundError:
            continue
        out[fd] = (target, flags)
    return out


def proc_environ_has(pid, needle):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def worker_environ(pid, timeout=3.0):
    """A worker's environment as a dict. Waited for: bindonce resumes once the child's exec
    has replaced its memory, a moment before the kernel has laid out the new image's
    environment, and /proc/PID/environ reads empty until then."""
    def read():
        with open(f"/proc/{pid}/environ", "rb") as f:
            return {k.decode(): v.decode(errors="replace")
                    for k, v in (kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)}
    return wait_until(read, timeout, f"the environment of pid {pid}")


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_tcp_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago, taken below the kernel's ephemeral range:
    a port from bind(0) is one that the load clients' outgoing connections may take as
    their local port before bindonce binds it."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_udp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_to_eof(sock, reset_ends=False):
    """Everything the peer sends until it closes; with reset_ends, a reset ends it too
    (a server that closes with unread input resets the connection after answering)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            if not reset_ends:
                raise
            break
        if not chunk:
            return data
        data += chunk
    return data


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


def reap_adopted():
    """Reap zombies re-parented to pytest (the subreaper) that no Popen owns."""
    me = os.getpid()
    for pid in all_pids():
        if pid in _POPEN_PIDS:
            continue
        st = proc_stat(pid)
        if st and st[1] == me and st[0] in ("Z", "X"):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


# ---------------------------------------------------------------------------
# the supervisor under test


class Supervisor:
    """One bindonce run: start, observe through the test worker's reports, stop, clean up."""

    def __init__(self, base: Path, name: str):
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.tw_dir = self.dir / "tw"
        self.tw_dir.mkdir()
        self.stderr_path = self.dir / "stderr.log"
        self.stdout_path = self.dir / "stdout.log"
        self.proc = None
        self.argv = None
        self.known_pids = set()      # worker and grandchild pids learned from reports
        self._reports = {}           # pid -> report dict
        self.marker = b"TW_DIR=" + str(self.tw_dir).encode()
        # A control socket of its own, so that runs never meet in /run/bindonce (two
        # suites at once, or another instance named "testworker"); short path (sun_path).
        self.control_dir = Path(tempfile.mkdtemp(prefix="bo-itc-", dir="/tmp"))
        self.control_path = self.control_dir / "ctl.sock"

    # -- starting

    def start(self, args, command=None, *, env_extra=None, env_remove=(), preexec_fn=None,
              wrapper=(), raw_argv=None, wait_workers=0, timeout=10, control=True):
        """Start `bindonce [--control PATH] ARGS -- COMMAND`; with wait_workers, wait for
        that many reports. raw_argv replaces ARGS -- COMMAND entirely."""
        ctl = ["--control", str(self.control_path)] if control else []
        if raw_argv is not None:
            argv = list(wrapper) + [BINDONCE] + ctl + list(raw_argv)
        else:
            if command is None:
                command = [TESTWORKER]
            argv = list(wrapper) + [BINDONCE] + ctl + list(args) + ["--"] + list(command)
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env["TW_DIR"] = str(self.tw_dir)
        for k in env_remove:
            env.pop(k, None)
        env.update(env_extra or {})
        self.argv = argv
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, preexec_fn=preexec_fn, close_fds=True)
        _POPEN_PIDS.add(self.proc.pid)
        if wait_workers:
            self.wait_reports(wait_workers, timeout=timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- observing

    def reports(self):
        """All reports written so far, oldest first ({'pid', ..., '_mtime'})."""
        for path in self.tw_dir.glob("report-*.json"):
            pid = int(path.name[len("report-"):-len(".json")])
            if pid in self._reports:
                continue
            with open(path) as f:
                rep = json.load(f)
            rep["_mtime"] = path.stat().st_mtime
            self._reports[pid] = rep
            self.known_pids.add(pid)
            if rep.get("grandchild"):
                self.known_pids.add(rep["grandchild"])
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

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"bindonce (pid {self.proc.pid}) still running after "
                                 f"{timeout}s; stderr:\n{self.log()}") from None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.send_signal(sig)
        return self.wait_exit(timeout)

    # -- the tree

    def tree_pids(self):
        """Live (non-zombie) processes of this tree, bindonce included if alive."""
        found = set()
        for pid in all_pids():
            if pid == os.getpid():
                continue
            if proc_environ_has(pid, self.marker) and proc_alive(pid):
                found.add(pid)
        for pid in self.known_pids:
            if proc_alive(pid) and proc_environ_has(pid, self.marker):
                found.add(pid)
        return found

    def cleanup(self):
        """Stop what is left; return a list of problems (empty if the tree ended cleanly)."""
        problems = []
        if self.proc is None:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            return problems
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append(f"bindonce pid {self.proc.pid} ignored SIGTERM for 5s")
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        _POPEN_PIDS.discard(self.proc.pid)
        self.reports()
        # Processes being killed right as bindonce exits (a grandchild hit by the
        # group SIGKILL) may take a moment to go: give them 2 s before calling them left.
        deadline = time.monotonic() + 2
        left = self.tree_pids()
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            reap_adopted()
            left = self.tree_pids()
        if left:
            desc = []
            for pid in sorted(left):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    cmd = b"?"
                desc.append(f"{pid} {proc_stat(pid)} {cmd.decode(errors='replace')}")
            problems.append("processes left after bindonce exited: " + "; ".join(desc))
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_until(lambda: not self.tree_pids(), 5, "leftover processes to die")
        reap_adopted()
        shutil.rmtree(self.control_dir, ignore_errors=True)
        return problems


@pytest.fixture
def short_dir():
    """A directory with a short path (unix socket paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="bo-it-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def supervisor(tmp_path):
    """Factory: supervisor() -> a new Supervisor (not started). All are cleaned up."""
    made = []
    set_subreaper(True)

    def make(name=None):
        sup = Supervisor(tmp_path, name or f"sup{len(made)}")
        made.append(sup)
        return sup

    yield make
    problems = []
    try:
        for sup in made:
            problems += sup.cleanup()
    finally:
        set_subreaper(False)
        reap_adopted()
    if problems:
        logs = "\n".join(f"--- {s.dir.name} stderr:\n{s.log()}" for s in made)
        pytest.fail("teardown: " + "\n".join(problems) + "\n" + logs, pytrace=False)


class Bindonce:
    """One bindonce started by hand, for tests that need no test worker: listening on a
    free 127.0.0.1 port, with its own control socket and its log in `directory`. Every wait
    is bounded; close() stops it by pid."""

    def __init__(self, directory, args, command):
        self.port = free_tcp_port()
        self.control = str(directory / "ctl.sock")
        self.log_path = directory / "bindonce.log"
        self._log = open(self.log_path, "w")
        # Inherited by the workers and whatever they start: how close() finds leftovers.
        self.marker = b"BINDONCE_TEST_TREE=" + str(directory).encode()
        env = {**os.environ, "BINDONCE_TEST_TREE": str(directory)}
        self.proc = subprocess.Popen([BINDONCE, "-l", f"127.0.0.1:{self.port}", "--control", self.control,
                                      *args, "--", *command], stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self):
        return self.log_path.read_text()

    def wait_log(self, pattern, count=1, timeout=10):
        """Until the log matches the regular expression `count` times."""
        def enough():
            if len(re.findall(pattern, self.log())) >= count:
                return True
            assert self.proc.poll() is None, f"bindonce exited {self.proc.returncode}; log:\n{self.log()}"
            return False
        wait_until(enough, timeout, f"{count} x {pattern!r} in the log")

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
        return wait_until(check, timeout, what, interval=0.05)

    def wait_exit(self, timeout=10):
        return self.proc.wait(timeout=timeout)

    def close(self):
        """Stop it (SIGTERM) if still running; return the problems: a stop that did not
        exit 0, processes of its tree left behind (killed then)."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                if self.proc.wait(timeout=20) != 0:
                    problems.append(f"SIGTERM: bindonce exited {self.proc.returncode}, not 0")
            except subprocess.TimeoutExpired:
                problems.append("bindonce ignored SIGTERM for 20 s")
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        # A process being killed as bindonce exits may take a moment to go.
        left = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            left = [p for p in all_pids() if proc_environ_has(p, self.marker) and proc_alive(p)]
            if not left:
                break
            time.sleep(0.02)
        for pid in left:
            problems.append(f"left behind: pid {pid} {proc_stat(pid)}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return problems


@pytest.fixture
def bindonce(tmp_path):
    """bindonce(args, command) -> a started Bindonce, each in a directory of its own,
    all stopped at teardown."""
    made = []

    def start(args, command):
        d = tmp_path / f"bindonce{len(made)}"
        d.mkdir()
        made.append(Bindonce(d, args, command))
        return made[-1]

    yield start
    problems = []
    for b in made:
        problems += [f"{b.log_path.parent.name}: {p}" for p in b.close()]
    if problems:
        logs = "\n".join(f"--- {b.log_path}:\n{b.log()}" for b in made)
        pytest.fail("teardown: " + "; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def free_port():
    """free_port() -> a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_tcp_port


@pytest.fixture
def free_udp():
    return free_udp_port
