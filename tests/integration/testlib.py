"""The one shared library of bindonce's integration tests: paths, the environment
scrubber, bounded waits, /proc readers, the free-port picker, the example httpd's answer
parser, an sd_notify sender, and the harness every bindonce of a test runs in
(`Harness`, whose `finish()` enforces TESTING.md's after-scenario checks).

Everything is derived from the repository's root (this file is
tests/integration/testlib.py), or from $BINDONCE, $TESTWORKER and $EXAMPLE_HTTPD.
"""

import collections
import ctypes
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _binary(var, default):
    return os.environ.get(var) or str(REPO / "build" / default)


BINDONCE = _binary("BINDONCE", "bindonce")
TESTWORKER = _binary("TESTWORKER", "testworker")
EXAMPLE_HTTPD = _binary("EXAMPLE_HTTPD", "httpd")
LIFECYCLE_WORKER = str(HERE / "lifecycle_worker.py")
PYTHON = sys.executable or "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Where the sanitizer build writes its reports (the Makefile sets it; see SANITIZE=1).
SANITIZER_LOG_DIR = os.environ.get("SANITIZER_LOG_DIR")

# The environment variable that marks every process of one harness's tree (inherited by
# bindonce, its workers and whatever they start): how teardown finds leftovers.
TREE_VAR = "BINDONCE_TEST_TREE"

# Nothing of the environment pytest runs in may reach bindonce as activation input, or as
# a control-socket directory, or as a worker's mode.
SCRUB = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID", "NOTIFY_SOCKET",
         "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FDSTORE", "MAINPID",
         "RUNTIME_DIRECTORY", "TW_DIR", "BINDONCE_WORKER", TREE_VAR,
         "LW_MODE", "LW_MODE_FILE", "LW_VERSION_FILE", "LW_EVENTS", "VERSION")


def clean_env(extra=None, remove=()):
    """os.environ without SCRUB (and `remove`), plus `extra`: the one environment scrubber."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUB and k not in remove}
    env.update(extra or {})
    return env


# ---- waiting ---------------------------------------------------------------------------

def monotonic():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def wait_until(pred, timeout, what="condition", interval=0.02):
    """Poll pred() until it returns a true value (returned), or raise AssertionError after
    timeout seconds; `what` names the event (a callable is asked only then)."""
    deadline = monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s"
                                 % (timeout, what() if callable(what) else what))
        time.sleep(interval)


def quiet_for(seconds, happened, what, interval=0.05):
    """The one "nothing happens for T" window: assert that happened() stays false for
    `seconds`. Such a check can only be as strong as T; callers pick T from the behaviour
    they rule out (several periods of the timer that would fire)."""
    deadline = monotonic() + seconds
    while True:
        v = happened()
        if v:
            raise AssertionError("%s (within a %.1f s window): %r" % (what, seconds, v))
        if monotonic() >= deadline:
            return
        time.sleep(interval)


# ---- /proc -----------------------------------------------------------------------------

ProcStat = collections.namedtuple("ProcStat", "state ppid pgid starttime")


def proc_stat(pid):
    """ProcStat(state, ppid, pgid, starttime) of pid, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return ProcStat(rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19]))


def alive(pid, starttime=None):
    """pid exists, is not a zombie and (with starttime) is still the same process."""
    st = proc_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return starttime is None or st.starttime == starttime


proc_alive = alive


def editor_save(path, old, new):
    """Save as an editor does: write a temporary file, rename it over the original (the
    --watch tests: a rename, not a write in place)."""
    text = path.read_text()
    assert old in text
    tmp = path.with_name("." + path.name + ".swp-save")
    tmp.write_text(text.replace(old, new))
    os.rename(tmp, path)


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def proc_children(pid):
    kids = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                    kids += [int(x) for x in f.read().split()]
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return kids


def descendants(root):
    out, todo = [], [root]
    while todo:
        for c in proc_children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def zombie_children(pid):
    """Children of pid that have died and are not reaped yet."""
    return [k for k in proc_children(pid) if (proc_stat(k) or ("?",))[0] == "Z"]


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_fds(pid):
    """{fd: (target, flags)} of a process (flags from fdinfo, as an int)."""
    out = {}
    for name in os.listdir("/proc/%d/fd" % pid):
        fd = int(name)
        try:
            target = os.readlink("/proc/%d/fd/%d" % (pid, fd))
            flags = None
            with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
                for line in f:
                    if line.startswith("flags:"):
                        flags = int(line.split()[1], 8)
        except FileNotFoundError:
            continue
        out[fd] = (target, flags)
    return out


def proc_environ(pid):
    """The environment of pid as a dict ({} if gone or not laid out yet)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return {k.decode(): v.decode(errors="replace")
            for k, v in (kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)}


def worker_environ(pid, timeout=3.0):
    """A worker's environment as a dict. Waited for: bindonce resumes once the child's exec
    has replaced its memory, a moment before the kernel has laid out the new image's
    environment, and /proc/PID/environ reads empty until then."""
    def read():
        with open("/proc/%d/environ" % pid, "rb") as f:
            return {k.decode(): v.decode(errors="replace")
                    for k, v in (kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)}
    return wait_until(read, timeout, "the environment of pid %d" % pid)


def proc_environ_has(pid, needle):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK      # utime + stime


PR_SET_CHILD_SUBREAPER = 36
_subreaper_users = 0


def set_subreaper(on):
    """Make pytest the child subreaper while a harness fixture is active (counted), so
    that whatever escapes a tree is re-parented to pytest, seen and reaped. A failing
    prctl fails the test: the "no process left" check would be blind without it."""
    global _subreaper_users
    _subreaper_users += 1 if on else -1
    want = 1 if _subreaper_users > 0 else 0
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, want, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "prctl(PR_SET_CHILD_SUBREAPER, %d): %s" % (want, os.strerror(e)))


# ---- ports and sockets -----------------------------------------------------------------

def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host="127.0.0.1", kind=socket.SOCK_STREAM):
    """A port that was free a moment ago, taken below the kernel's ephemeral range: a port
    from bind(0) is one that the load clients' outgoing connections (or any client's
    source port) may take before bindonce binds it (f74478d)."""
    low = _ephemeral_low()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port found below %d" % low)


def free_tcp_port(host="127.0.0.1"):
    return free_port(host, socket.SOCK_STREAM)


def free_udp_port(host="127.0.0.1"):
    return free_port(host, socket.SOCK_DGRAM)


def read_to_eof(sock, reset_ends=False):
    """Everything the peer sends until it closes; with reset_ends, a reset ends it too."""
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


def listening_inodes(port):
    """Socket inodes of the TCP listeners on `port` (any address), from /proc/net/tcp{,6}."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        out.add(int(fields[9]))
        except FileNotFoundError:
            pass
    return out


def unix_server_ends(path):
    """Connections to the unix listener at `path` that its server has not closed yet
    (queued or accepted), from /proc/net/unix: after a client closes, 0 means the server
    has processed the connection to its end."""
    n = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[3] != "00010000":
                n += 1
    return n


def fd_inode(pid, fd):
    """The socket inode of pid's fd, or None if it is not a socket."""
    try:
        m = re.match(r"socket:\[(\d+)\]\Z", os.readlink("/proc/%d/fd/%d" % (pid, fd)))
    except OSError:
        return None
    return int(m.group(1)) if m else None


# The example httpd's answer (docs/examples/httpd.c): (pid, slot) or None.
HTTPD_RE = re.compile(rb"\AHTTP/1\.[01] 200 OK\r\n(?:[^\r\n]*\r\n)*?\r\n"
                      rb"hello from worker (\d+) \(pid (\d+)\)\n\Z")


def httpd_answer(data):
    """(pid, slot) of a complete, valid answer of the example httpd, else None."""
    m = HTTPD_RE.match(data)
    return (int(m.group(2)), int(m.group(1))) if m else None


def sd_notify(message, address=None):
    """Send one sd_notify datagram to `address` (default $NOTIFY_SOCKET; '@' = abstract)."""
    address = address or os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message if isinstance(message, bytes) else os.fsencode(message), address)


# A worker command that sends sd_notify messages with the function above: each argument is
# one message (bytes that are not UTF-8 pass through argv as they are), "sleep:SEC" waits,
# and it ends in a long sleep (stopped by bindonce).
NOTIFY_WORKER = [PYTHON, "-c", "import sys, time\nsys.path.insert(0, %r)\nfrom testlib import sd_notify\n"
                 "for a in sys.argv[1:]:\n"
                 "    time.sleep(float(a[6:])) if a.startswith('sleep:') else sd_notify(a)\n"
                 "time.sleep(1000)\n" % str(HERE)]


# ---- the harness -----------------------------------------------------------------------

# bindonce's own error and warning lines, plain or with the journal's <level> prefix.
BAD_LOG_LINE = re.compile(r"bindonce\[\d+\]: (?:error|warning): |^<[0-4]>", re.M)
SANITIZER_LINE = re.compile(r"(?:AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:)")


def sanitizer_reports():
    if not SANITIZER_LOG_DIR:
        return set()
    return {str(p) for p in Path(SANITIZER_LOG_DIR).glob("sanitizer*")}


class TrackedPopen(subprocess.Popen):
    """A Popen that remembers whether the test waited for its exit status."""
    exit_checked = False

    def wait(self, timeout=None):
        rc = super().wait(timeout)
        self.exit_checked = True
        return rc


class Harness:
    """One bindonce of a test, and its teardown.

    Every process of its tree carries TREE_VAR=<its directory>. finish() stops it by pid
    and returns the problems that fail the test:
      - the SIGTERM stop did not exit 0 (or bindonce had exited earlier and the test never
        waited for its status);
      - bindonce had an unreaped zombie child, or its fd count did not come back to the
        value marked by mark_fds() (polled, bounded);
      - a process of the tree is left;
      - an error or warning line in its log that the test did not declare with
        expect_log() or the log_expected marker;
      - a sanitizer report.
    """

    def __init__(self, directory, expected=()):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "bindonce.log"
        self.proc = None
        self.argv = None
        self.seen = {}                  # pid -> starttime of processes known to be ours
        self.expected = [re.compile(p) for p in expected]
        self.fd_start = None
        self.marker = ("%s=%s" % (TREE_VAR, self.dir)).encode()

    # -- starting

    def popen(self, argv, env_extra=None, env_remove=(), stdout=None, cwd=None, preexec_fn=None,
              pass_fds=()):
        """Start argv with the scrubbed environment and the tree marker; stderr goes to the
        log (stdout too, unless `stdout` is a path, or subprocess.PIPE for the test to read)."""
        env = clean_env(env_extra, env_remove)
        env[TREE_VAR] = str(self.dir)
        self.argv = list(argv)
        with open(self.log_path, "ab") as log:
            to_file = stdout is not None and stdout != subprocess.PIPE
            out = open(stdout, "ab") if to_file else (stdout or log)
            try:
                self.proc = TrackedPopen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                         env=env, cwd=cwd, preexec_fn=preexec_fn, close_fds=True,
                                         pass_fds=pass_fds)
            finally:
                if to_file:
                    out.close()
        self.remember(self.proc.pid)
        if self not in LIVE:
            LIVE.append(self)
        return self.proc

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- the log

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def expect_log(self, *patterns):
        """Declare error/warning lines (regular expressions) this test provokes on purpose."""
        self.expected += [re.compile(p) for p in patterns]

    def unexpected_log_lines(self):
        out = []
        for line in self.log().splitlines():
            if BAD_LOG_LINE.search(line) and not any(p.search(line) for p in self.expected):
                out.append(line)
        return out

    # -- fds

    def fd_count(self):
        """bindonce's fds, less sd-event's timerfds: sd-event creates one per clock the
        first time a timer of that clock is armed (a stop timer, say) and keeps it, so
        their number may grow once after start; bindonce itself never makes one."""
        n = 0
        for name in os.listdir("/proc/%d/fd" % self.pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (self.pid, name)) != "anon_inode:[timerfd]":
                    n += 1
            except OSError:
                pass
        return n

    def base_fd_count(self):
        """The fd count mark_fds() takes and teardown compares: fd_count() here; a kind of
        harness whose worker count changes during a test counts only the fds that do not
        come and go with its workers (see worker_fds_excluded)."""
        return self.fd_count()

    def stable_fd_count(self, timeout=5, count=None):
        """bindonce's fd count once two reads a poll apart agree (a ctl client it still
        lingers on, a worker being reaped, may hold one for a moment)."""
        last = [None]
        count = count or self.fd_count

        def settled():
            n = count()
            same, last[0] = n == last[0], n
            return n if same else None
        return wait_until(settled, timeout, "a stable fd count of bindonce", interval=0.05)

    def mark_fds(self):
        """Take the fd count teardown must find again (call it once the tree is settled)."""
        if self.running():
            self.fd_start = self.stable_fd_count(count=self.base_fd_count)
        return self.fd_start

    # -- the tree

    def remember(self, pid):
        st = proc_stat(pid)
        if st and pid not in self.seen:
            self.seen[pid] = st.starttime

    def tree_pids(self):
        """Live processes of this tree: marked, or seen (same start time)."""
        me = os.getpid()
        found = {p for p, start in self.seen.items() if p != me and alive(p, start)}
        for pid in all_pids():
            if pid != me and pid not in found and proc_environ_has(pid, self.marker) and alive(pid):
                found.add(pid)
        return found

    # -- stopping

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("bindonce (pid %d) still running after %d s; log:\n%s"
                                 % (self.proc.pid, timeout, self.log())) from None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        for p in descendants(self.proc.pid):
            self.remember(p)
        self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def finish(self, stop_timeout=20):
        """Stop what is left and return the list of problems (empty: a clean end)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            problems += self._check_running()
            for p in descendants(self.proc.pid):
                self.remember(p)
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=stop_timeout)
                if rc != 0:
                    problems.append("the SIGTERM stop exited %d, not 0" % rc)
            except subprocess.TimeoutExpired:
                problems.append("bindonce pid %d ignored SIGTERM for %d s" % (self.proc.pid, stop_timeout))
                self.proc.kill()
                self.proc.wait(timeout=5)
        elif not self.proc.exit_checked:
            problems.append("bindonce exited %d before teardown and the test never checked "
                            "its exit status" % self.proc.returncode)
        problems += self._check_leftovers()
        problems += ["unexpected log line: " + l for l in self.unexpected_log_lines()]
        problems += ["sanitizer: " + l for l in self.log().splitlines() if SANITIZER_LINE.search(l)]
        return problems

    def _check_running(self):
        problems = []
        try:
            wait_until(lambda: not zombie_children(self.proc.pid), 3, "bindonce to reap its children")
        except AssertionError:
            problems.append("bindonce leaves zombie children: %s" % zombie_children(self.proc.pid))
        if self.fd_start is not None:
            try:
                wait_until(lambda: self.base_fd_count() == self.fd_start, 5,
                           "bindonce's fd count back to %d" % self.fd_start, interval=0.05)
            except AssertionError:
                problems.append("bindonce's fd count is %d, %d at start: %s"
                                % (self.base_fd_count(), self.fd_start, sorted(proc_fds(self.proc.pid).values())))
        return problems

    def _check_leftovers(self):
        # A process being killed right as bindonce exits (a grandchild hit by the group
        # SIGKILL) may take a moment to go.
        problems = []
        try:
            wait_until(lambda: (reap_adopted(), not self.tree_pids())[1], 3, "the tree to end")
        except AssertionError:
            left = self.tree_pids()
            problems.append("processes left after bindonce exited: " + "; ".join(
                "%d %s %s" % (p, proc_stat(p), proc_cmdline(p)) for p in sorted(left)))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        reap_adopted()
        return problems


def worker_fds(pid):
    """The fds of bindonce `pid` that exist because a process lives (fds above stdio): a
    pidfd of a live process (a reaped one reads Pid: -1 in fdinfo: a leak, not counted
    here), and a pipe that a live descendant also holds (a worker's output pipe). What is
    left of its fds is constant for the life of bindonce once its first worker started."""
    live_pipes = set()
    for d in descendants(pid):
        try:
            for name in os.listdir("/proc/%d/fd" % d):
                try:
                    t = os.readlink("/proc/%d/fd/%s" % (d, name))
                except OSError:
                    continue
                if t.startswith("pipe:"):
                    live_pipes.add(t)
        except OSError:
            pass
    out = set()
    for name in os.listdir("/proc/%d/fd" % pid):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            t = os.readlink("/proc/%d/fd/%d" % (pid, fd))
            if t == "anon_inode:[pidfd]":
                with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
                    m = re.search(r"^Pid:\s*(-?\d+)", f.read(), re.M)
                if m and int(m.group(1)) > 0:
                    out.add(fd)
            elif t in live_pipes:
                out.add(fd)
        except OSError:
            pass
    return out


# Harnesses of the running test whose bindonce runs: their Popen pids are never reaped
# behind subprocess' back.
LIVE = []


def reap_adopted():
    """Reap zombies re-parented to pytest (the subreaper) that no Popen owns."""
    mine = {h.proc.pid for h in LIVE if h.proc is not None and h.proc.returncode is None}
    for pid in proc_children(os.getpid()):
        st = proc_stat(pid)
        if st and st.state in ("Z", "X") and pid not in mine:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def finish_all(made):
    """The teardown of every harness fixture: finish each one (all, even after a failure),
    then fail the test with every problem and the logs."""
    problems = []
    for h in made:
        try:
            problems += ["%s: %s" % (h.dir.name, p) for p in h.finish()]
        except Exception as e:  # noqa: BLE001 - report every harness, not just the first
            problems.append("%s: teardown raised %r" % (h.dir.name, e))
        finally:
            if h in LIVE:
                LIVE.remove(h)
    return problems


def expected_from_markers(request):
    """Regular expressions of the log_expected markers on a test."""
    out = []
    for m in request.node.iter_markers("log_expected"):
        out += list(m.args)
    return out


# Warnings a test provokes on purpose, for its log_expected marker or expect_log().
WORKER_DEATH = r"worker \d+ \(pid \d+\) (?:exited with status \d+|killed by signal \w+)"

# Tests that need root skip without it, with this reason; `make check` (CI runs as root)
# fails on such a skip unless the skip is listed as expected (see skipcheck.py).
NEEDS_ROOT_REASON = "needs root"
