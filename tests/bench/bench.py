#!/usr/bin/python3
"""bench.py: what `make bench` runs. Measures bindonce beside the usual alternatives
and writes docs/PERFORMANCE.md. Medians over repeated runs; never pass/fail.

    make bench                          # everything, about 5 minutes on 2 cores
    make bench BENCH_ARGS="--rows 2,3"  # some rows only (the file says which were run)
    make bench BENCH_ARGS="--quick"     # shorter runs, fewer samples: to try changes out
    make bench BENCH_ARGS="--plots-only" # only the pictures, from short runs of rows 2, 3a
                                        # and 6, into build/bench-plots/; docs/ is left alone
    make bench BENCH_ARGS="--rows 3 --no-write --plots-dir /tmp/p"  # the chaos timeline alone

docs/*.svg are written only with the PERFORMANCE.md that describes them (its Pictures
section, written here too): pictures and tables always come from the same run. A picture
that would leave out a contender (not installed, or its run failed) is not drawn; the run
says so on stderr and in the report, and exits 1 (tests/bench/chaos_selfcheck.py checks that).

Environment (set by make): BINDONCE, TESTWORKER, EXAMPLE_HTTPD. Loopback only. Every
process started here is ended here, by its pid; every load loop is bounded in count and time.
Needs: gcc, wrk; for the alternatives supervisor, gunicorn, systemd (systemd-socket-activate);
a missing one makes its column n/a, loudly, and fails the pictures that compare it. The
pictures (tests/bench/plots.py) need python3-matplotlib; without it they are not drawn, and
the run says so and exits 1.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def tool(var, default):
    return os.path.abspath(os.environ.get(var) or os.path.join(REPO, default))


BINDONCE = tool("BINDONCE", "build/bindonce")
TESTWORKER = tool("TESTWORKER", "build/testworker")
HTTPD = tool("EXAMPLE_HTTPD", "build/httpd")
CLK_TCK = os.sysconf("SC_CLK_TCK")

COLUMNS = ["bindonce", "direct", "naive", "supervisord", "gunicorn", "ssa"]
COLUMN_TITLES = {
    "bindonce": "bindonce",
    "direct": "httpd binds itself",
    "naive": "naive shell loop",
    "supervisord": "supervisord fcgi-program",
    "gunicorn": "gunicorn (WSGI app)",
    "ssa": "systemd-socket-activate",
}


# ---- small helpers ----------------------------------------------------------------------

def now():
    return time.monotonic()


def median(xs):
    return statistics.median(xs) if xs else None


def pctl(xs, p):
    """Nearest-rank percentile."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def fmt_ms(us):
    if us is None:
        return "?"
    ms = us / 1000.0
    if ms >= 100:
        return "%.0f ms" % ms
    if ms >= 10:
        return "%.1f ms" % ms
    return "%.2f ms" % ms


def fmt_int(n):
    return "{:,}".format(int(round(n)))


def free_port():
    """Below the ephemeral range (f74478d): a port from bind(0) may be taken by a load
    client's source port before bindonce binds it."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
    try:
        from testlib import free_tcp_port
    finally:
        sys.path.pop(0)
    return free_tcp_port()


def listeners_on(port):
    """How many listening IPv4 sockets have this port (/proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                n += 1
    return n


def http_ok(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
    except OSError:
        return False


# ---- /proc ------------------------------------------------------------------------------

def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def stat_fields(pid):
    """Fields of /proc/PID/stat after the comm, so that index 0 is field 3 (state)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()


def starttime(pid):
    f = stat_fields(pid)
    return int(f[19]) if f else None


def alive(pid):
    f = stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def uptime_of(pid):
    st = starttime(pid)
    if st is None:
        return None
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - st / CLK_TCK


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append((c, starttime(c)))
            todo.append(c)
    return out


def cpu_ns(pid):
    """CPU time of all threads of pid, in ns (schedstat: finer than utime+stime's ticks)."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
    except OSError:
        return None
    return total


def cpu_ticks_s(pid):
    f = stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else None


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def wakeup_counters(pid):
    st = proc_status(pid)
    runs = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                runs += int(f.read().split()[2])
    except OSError:
        pass
    return {
        "cpu_ns": cpu_ns(pid),
        "cpu_ticks_s": cpu_ticks_s(pid),
        "runs": runs,
        "ctxt": int(st.get("voluntary_ctxt_switches", 0)) + int(st.get("nonvoluntary_ctxt_switches", 0)),
    }


# ---- the bench: scratch dir, processes, commands ------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bindonce-bench-")
        self.procs = []         # every Popen we started, for the final sweep
        self.commands = {}      # label -> the exact command line, for PERFORMANCE.md
        self.leftovers = []     # processes that outlived their stop (should stay empty)
        self.notes = []
        self.cells = {}         # (row, column) -> text
        self.details = {}       # row -> list of text lines
        self.summary = []       # computed sentences for the top of PERFORMANCE.md
        self.plots = {}         # what the pictures are drawn from: "chaos", "restart", "reload"
        self.pictures = []      # [(file name in docs/, what it shows)] written by this run
        self.picture_failures = []  # [(file name, why it was not drawn)]: the run fails
        self.seq = 0

    def record(self, label, argv, env=None):
        text = shlex.join(argv)
        if env:
            text = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in env.items()) + " " + text
        self.commands.setdefault(label, text)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def name(self, prefix):
        self.seq += 1
        return "%s-%d" % (prefix, self.seq)

    def popen(self, argv, log, env=None, **kw):
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        logf = open(self.path(log), "ab")
        p = subprocess.Popen(argv, stdin=kw.pop("stdin", subprocess.DEVNULL), stdout=logf, stderr=logf,
                             env=full_env, start_new_session=True, **kw)
        logf.close()
        self.procs.append(p)
        return p

    def cell(self, row, column, text):
        self.cells[(row, column)] = text

    def detail(self, row, text):
        self.details.setdefault(row, []).append(text)
        print("    " + text, flush=True)


def stop_tree(bench, tops, sig=signal.SIGTERM, timeout=15.0):
    """Stops processes we started (tops: Popen) and whatever they left behind, by pid."""
    tree = []
    for p in tops:
        if p.poll() is None:
            tree += descendants(p.pid)
    for p in tops:
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
    deadline = now() + timeout
    for p in tops:
        try:
            p.wait(max(0.1, deadline - now()))
        except subprocess.TimeoutExpired:
            bench.leftovers.append("%d %s (did not stop on %s)" % (p.pid, p.args[0], signal.Signals(sig).name))
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    # Grandchildren (the naive loop's httpd, a worker that escaped): by pid, if still theirs.
    left = [(pid, st) for pid, st in tree if alive(pid) and starttime(pid) == st]
    deadline = now() + 2.0
    while left and now() < deadline:
        time.sleep(0.02)
        left = [(pid, st) for pid, st in left if alive(pid) and starttime(pid) == st]
    for pid, st in left:
        if alive(pid) and starttime(pid) == st:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return left


# ---- the servers ---------------------------------------------------------------------------

class Server:
    column = "?"

    def __init__(self, bench, n, label):
        self.bench, self.n, self.label = bench, n, label
        self.port = free_port()
        self.tops = []

    def parents(self):
        """The pids whose children are the workers."""
        return [p.pid for p in self.tops]

    def workers(self):
        out = []
        for p in self.parents():
            out += children(p)
        return out

    def pick_victim(self, min_uptime):
        """The oldest worker, if it has lived at least min_uptime seconds."""
        best = None
        for w in self.workers():
            up = uptime_of(w)
            if up is not None and up >= min_uptime and (best is None or up > best[1]):
                best = (w, up)
        return best[0] if best else None

    def wait_ready(self, timeout=20.0):
        deadline = now() + timeout
        while now() < deadline:
            if self.is_ready():
                return True
            time.sleep(0.05)
        raise RuntimeError("%s: not ready within %.0f s (log: %s)" % (self.label, timeout, self.log))

    def is_ready(self):
        return len(self.workers()) >= self.n and http_ok(self.port)

    def stop(self):
        left = stop_tree(self.bench, self.tops)
        for pid, _ in left:
            self.bench.leftovers.append("%d (left behind by %s)" % (pid, self.label))


class Bindonce(Server):
    column = "bindonce"

    def __init__(self, bench, n, cmd, extra=(), env=None, label="bindonce", http=True):
        super().__init__(bench, n, label)
        self.name = bench.name("bench")
        self.control = bench.path(self.name + ".sock")
        self.log = self.name + ".log"
        self.http = http
        self.env = env or {}
        self.argv = [BINDONCE, "-l", "127.0.0.1:%d" % self.port, "-w", str(n), "--name", self.name,
                     "--control", self.control, *extra, "--", *cmd]

    def start(self):
        self.tops = [self.bench.popen(self.argv, self.log, env=self.env)]
        self.pid = self.tops[0].pid
        return self

    def ctl(self, *args, timeout=30):
        return subprocess.run([BINDONCE, "ctl", "--control", self.control, *args],
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        r = self.ctl("--json", "status")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def is_ready(self):
        if self.tops[0].poll() is not None:
            raise RuntimeError("bindonce exited with %s; log: %s" % (self.tops[0].returncode, self.bench.path(self.log)))
        if not os.path.exists(self.control):
            return False
        st = self.status()
        return bool(st) and st["ready"] >= self.n and (not self.http or http_ok(self.port))

    def log_text(self):
        with open(self.bench.path(self.log), errors="replace") as f:
            return f.read()


class Direct(Server):
    """httpd --bind: n copies that bind the port themselves (SO_REUSEPORT when n > 1)."""
    column = "direct"

    def __init__(self, bench, n, label="direct"):
        super().__init__(bench, n, label)
        self.log = bench.name("direct") + ".log"
        self.argv = [HTTPD, "--bind", "127.0.0.1:%d" % self.port] + (["--reuse-port"] if n > 1 else [])

    def start(self):
        self.tops = [self.bench.popen(self.argv, self.log) for _ in range(self.n)]
        return self

    def workers(self):
        return [p.pid for p in self.tops if p.poll() is None]

    def is_ready(self):
        return listeners_on(self.port) >= self.n and http_ok(self.port)


class Naive(Server):
    """The way without a supervisor of sockets: a shell loop that restarts httpd, which binds
    again (SO_REUSEADDR). n > 1: n loops sharing the port with SO_REUSEPORT."""
    column = "naive"

    def __init__(self, bench, n, label="naive"):
        super().__init__(bench, n, label)
        self.log = bench.name("naive") + ".log"
        httpd = shlex.join([HTTPD, "--bind", "127.0.0.1:%d" % self.port] + (["--reuse-port"] if n > 1 else []))
        # Bounded: at most 100,000 restarts, and stopped with the bench anyway.
        self.argv = ["/bin/sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); %s; done" % httpd]

    def start(self):
        self.tops = [self.bench.popen(self.argv, self.log) for _ in range(self.n)]
        return self

    def is_ready(self):
        return listeners_on(self.port) >= self.n and http_ok(self.port)

    def stop(self):
        # The shells first (else they would restart httpd), then the httpd they leave behind.
        kids = [(pid, starttime(pid)) for pid in self.workers()]
        stop_tree(self.bench, self.tops)
        for pid, st in kids:
            if alive(pid) and starttime(pid) == st:
                os.kill(pid, signal.SIGTERM)
        deadline = now() + 5
        while now() < deadline and any(alive(pid) and starttime(pid) == st for pid, st in kids):
            time.sleep(0.02)
        for pid, st in kids:
            if alive(pid) and starttime(pid) == st:
                self.bench.leftovers.append("%d (httpd of the naive loop ignored SIGTERM)" % pid)
                os.kill(pid, signal.SIGKILL)


class Supervisord(Server):
    """supervisord's [fcgi-program]: supervisord binds the socket and passes it as fd 0 to
    numprocs processes (httpd --fd 0); it closes the socket when none of them is running."""
    column = "supervisord"

    def __init__(self, bench, n, label="supervisord", cmd=None, fcgi=True):
        super().__init__(bench, n, label)
        name = bench.name("supervisord")
        self.dir = bench.path(name)
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.log = name + ".log"
        self.fcgi = fcgi
        cmd = cmd or [HTTPD, "--fd", "0"]
        section = ("[fcgi-program:httpd]\nsocket=tcp://127.0.0.1:%d\nsocket_backlog=4096\n" % self.port
                   if fcgi else "[program:httpd]\n")
        with open(self.conf, "w") as f:
            f.write(
                "[supervisord]\nnodaemon=true\n%(user)slogfile=%(d)s/supervisord.log\n"
                "pidfile=%(d)s/supervisord.pid\nchildlogdir=%(d)s\n"
                "[unix_http_server]\nfile=%(d)s/supervisor.sock\n"
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
                "[supervisorctl]\nserverurl=unix://%(d)s/supervisor.sock\n"
                "%(section)s"
                "command=%(cmd)s\nprocess_name=%%(program_name)s_%%(process_num)02d\nnumprocs=%(n)d\n"
                # startsecs=0: a process counts as started at once, so that quick deaths are
                # restarted rather than put in BACKOFF/FATAL (the fairest setting for row 3).
                "startsecs=0\nautorestart=true\nstartretries=1000\nstopsignal=TERM\nstopwaitsecs=10\n"
                "stdout_logfile=%(d)s/httpd.log\nredirect_stderr=true\n"
                % {"d": self.dir, "user": "user=root\n" if os.getuid() == 0 else "",
                   "section": section, "cmd": shlex.join(cmd), "n": n})
        self.argv = ["/usr/bin/supervisord", "-c", self.conf]

    def start(self):
        self.tops = [self.bench.popen(self.argv, self.log)]
        return self

    def is_ready(self):
        if self.tops[0].poll() is not None:
            raise RuntimeError("supervisord exited; see %s" % self.dir)
        if not self.fcgi:
            return len(self.workers()) >= self.n
        return super().is_ready()

    def ctl(self, *args, timeout=60):
        return subprocess.run(["/usr/bin/supervisorctl", "-c", self.conf, *args],
                              capture_output=True, text=True, timeout=timeout)


class Gunicorn(Server):
    """gunicorn's pre-fork master: it binds, forks n sync workers running a WSGI app."""
    column = "gunicorn"

    def __init__(self, bench, n, label="gunicorn"):
        super().__init__(bench, n, label)
        self.log = bench.name("gunicorn") + ".log"
        self.argv = ["/usr/bin/gunicorn", "-w", str(n), "-b", "127.0.0.1:%d" % self.port,
                     "--chdir", HERE, "--worker-tmp-dir", bench.tmp, "wsgiapp:app"]

    def start(self):
        self.tops = [self.bench.popen(self.argv, self.log, env={"PYTHONDONTWRITEBYTECODE": "1"})]
        return self


class SocketActivate(Server):
    """systemd-socket-activate -l PORT httpd: binds, waits for the first connection, then
    execs httpd in its own place (one process; without --accept nothing is restarted)."""
    column = "ssa"

    def __init__(self, bench, label="ssa"):
        super().__init__(bench, 1, label)
        self.log = bench.name("ssa") + ".log"
        self.argv = ["/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:%d" % self.port, HTTPD]

    def start(self):
        self.tops = [self.bench.popen(self.argv, self.log)]
        return self

    def workers(self):
        return [self.tops[0].pid]

    def is_ready(self):
        return listeners_on(self.port) >= 1 and http_ok(self.port)


def start_all(servers):
    for s in servers:
        s.start()
    for s in servers:
        s.wait_ready()


def stop_all(servers):
    for s in servers:
        s.stop()


def have(path):
    return os.path.exists(path) and os.access(path, os.X_OK)


HAVE = {}
MISSING = {}    # column -> why it is not run; the report and the pictures name it


def available(column):
    """Whether a contender is installed; a missing one is said loudly, once (its column is
    n/a and the pictures that compare it are not drawn)."""
    need, package = {"supervisord": ("/usr/bin/supervisord", "supervisor"),
                     "gunicorn": ("/usr/bin/gunicorn", "gunicorn"),
                     "ssa": ("/usr/bin/systemd-socket-activate", "systemd")}.get(column, (None, None))
    if need is None:
        return True
    if column not in HAVE:
        HAVE[column] = have(need)
        if not HAVE[column]:
            MISSING[column] = "not installed (%s is missing: apt-get install %s, or make bench as root)" % (
                need, package)
            print("bench.py: WARNING: %s %s; its column is n/a and the pictures comparing it are not drawn" % (
                column, MISSING[column]), file=sys.stderr, flush=True)
    return HAVE[column]


# ---- tools built here -------------------------------------------------------------------

def build_tools(bench):
    out = {}
    for name, static in (("loadclient", False), ("miniworker", True)):
        src = os.path.join(HERE, name + ".c")
        exe = bench.path(name)
        base = ["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe, src]
        r = subprocess.run(base[:1] + (["-static"] if static else []) + base[1:], capture_output=True, text=True)
        if r.returncode != 0 and static:
            bench.notes.append("miniworker: static linking failed (no libc.a?), built dynamic")
            r = subprocess.run(base, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("bench.py: cannot build %s:\n%s" % (src, r.stderr))
        bench.record("build " + name, base[:1] + (["-static"] if static else []) + base[1:])
        out[name] = exe
    # The example httpd as it would be if it called sd_listen_fds() from libsystemd: the
    # same code with libsystemd and its dependencies loaded at every start.
    exe = bench.path("httpd-libsystemd")
    argv = ["gcc", "-std=gnu11", "-O2", "-o", exe, os.path.join(REPO, "docs/examples/httpd.c"),
            "-Wl,--no-as-needed", "-lsystemd"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench.py: cannot build httpd-libsystemd:\n%s" % r.stderr)
    bench.record("build httpd-libsystemd", argv)
    out["httpd-libsystemd"] = exe
    return out


def loadclient(bench, *args, timeout=120):
    argv = [bench.tools["loadclient"], *[str(a) for a in args]]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if not r.stdout.strip():
        raise RuntimeError("loadclient failed: %s %s" % (shlex.join(argv), r.stderr))
    return json.loads(r.stdout)


def failures_of(res):
    return sum(v for k, v in res["classes"].items() if k != "ok")


def classes_text(res):
    bad = {k: v for k, v in res["classes"].items() if k != "ok" and v}
    return ", ".join("%s %d" % (k, v) for k, v in bad.items()) or "none"


# ---- row 1: throughput ------------------------------------------------------------------

WRK_UNITS = {"us": 1, "ms": 1000, "s": 1000000}


def wrk(bench, port, seconds, label):
    argv = ["wrk", "-t2", "-c50", "-d%ds" % seconds, "--latency", "http://127.0.0.1:%d/" % port]
    bench.record("wrk", argv[:-1] + ["http://127.0.0.1:PORT/"])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    out = r.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res = {"rps": float(m.group(1)) if m else 0.0, "errors": 0}
    for pct in ("50", "99"):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % pct, out)
        res["p" + pct] = float(m.group(1)) * WRK_UNITS[m.group(2)] if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    return res


def row_throughput(bench):
    q = bench.args.quick
    secs, reps = (2, 2) if q else (5, 3)
    print("row 1: throughput (wrk -t2 -c50 -d%ds, %d runs each, interleaved)" % (secs, reps), flush=True)
    servers = {"bindonce": Bindonce(bench, 2, [HTTPD]), "direct": Direct(bench, 2)}
    if available("supervisord"):
        servers["supervisord"] = Supervisord(bench, 2)
    if available("gunicorn"):
        servers["gunicorn"] = Gunicorn(bench, 2)
    if available("ssa"):
        servers["ssa"] = SocketActivate(bench)
    for s in servers.values():
        bench.record("row1 " + s.label, s.argv)
    try:
        start_all(servers.values())
        for name, s in servers.items():
            wrk(bench, s.port, 1, name)            # warm-up, not counted
        runs = {name: [] for name in servers}
        for _ in range(reps):
            for name, s in servers.items():
                runs[name].append(wrk(bench, s.port, secs, name))
    finally:
        stop_all(servers.values())

    # Ratios of runs taken side by side (round k of one against round k of direct), so that a
    # change in the machine's load between rounds cancels out; then their median.
    direct = [r["rps"] for r in runs["direct"]]
    for name, rs in runs.items():
        rps = [r["rps"] for r in rs]
        m = median(rps)
        ratio = median([a / b for a, b in zip(rps, direct)])
        errs = sum(r["errors"] for r in rs)
        text = "%s req/s" % fmt_int(m)
        if name == "bindonce":
            text += "; **%.2f** × direct" % ratio
        elif name != "direct":
            text += "; %.2f × direct" % ratio
        if errs:
            text += "; %d errors" % errs
        bench.cell("1", name, text)
        bench.detail("1", "%-12s req/s %s; ratio to direct, run by run: %s; wrk latency p50 %s, p99 %s (medians); "
                          "errors %d" % (name, " ".join(fmt_int(x) for x in rps),
                                         " ".join("%.2f" % (a / b) for a, b in zip(rps, direct)),
                                         fmt_ms(median([r["p50"] for r in rs])), fmt_ms(median([r["p99"] for r in rs])),
                                         errs))
    bo = [r["rps"] for r in runs["bindonce"]]
    line = ("Throughput: bindonce -w 2 served %s req/s, %.2f × two copies of the same httpd that bind the "
            "port themselves (SO_REUSEPORT; target ≥ 0.98: bindonce is not in the request path)" % (
                fmt_int(median(bo)), median([a / b for a, b in zip(bo, direct)])))
    if "supervisord" in runs:
        line += ", %.2f × supervisord passing one shared socket to 2 copies (the same one-queue model)" % median(
            [a / b for a, b in zip(bo, [r["rps"] for r in runs["supervisord"]])])
    bench.summary.append(line + ".")
    bench.cell("1", "naive", "as direct (the same httpd --bind; the loop only acts when it dies)")
    if "ssa" in runs:
        bench.cell("1", "ssa", bench.cells[("1", "ssa")] + "; 1 process")
    bench.cell("1", "direct", bench.cells[("1", "direct")] + "; 2 processes, SO_REUSEPORT")


# ---- row 2: restart latency ---------------------------------------------------------------

def sample_restarts(bench, plan, budget_s):
    """plan: list of dicts {key, server, holds, want}; round-robin over them, each victim
    having lived > 1.1 s (so that bindonce's backoff sees a stable run and restarts at once)."""
    deadline = now() + budget_s
    for e in plan:
        e["samples"], e["invalid"] = [], 0
    while now() < deadline:
        pending = [e for e in plan if len(e["samples"]) < e["want"]]
        if not pending:
            break
        progressed = False
        for e in pending:
            if "floor" in e:
                # One floor sample per round, so that the floor sees the same machine as the rest.
                r = loadclient(bench, "floor", "--samples", 1, "--timeout-ms", 5000, "--", e["floor"])
                if r["latency_us"][0] >= 0:
                    e["samples"].append({"latency_us": r["latency_us"][0], "reaped_us": r["reaped_us"][0],
                                         "classes": {"refused": 0}})
                else:
                    e["invalid"] += 1
                continue
            s = e["server"]
            victim = s.pick_victim(1.1)
            if victim is None:
                continue
            before = set(s.workers())
            progressed = True
            try:
                r = loadclient(bench, "restart", "--port", s.port, "--kill", victim, "--hold", e["holds"],
                               "--timeout-ms", 5000, timeout=30)
            except RuntimeError as err:
                # e.g. a worker did not take its holding connection: no kill was sent.
                e["invalid"] += 1
                e.setdefault("errors", []).append(str(err).rsplit("loadclient: ", 1)[-1].strip())
                continue
            ok = r["latency_us"] >= 0 and r["new_pid"] not in before
            if e["holds"] and r["holds_closed"] != 1:
                ok = False      # the victim was not among the holders: the probe proves nothing
            if ok:
                e["samples"].append(r)
            else:
                e["invalid"] += 1
        if not progressed:
            time.sleep(0.02)


def latency_text(samples):
    lat = [r["latency_us"] for r in samples]
    if not lat:
        return "no samples"
    return "%s / %s / %s (n=%d)" % (fmt_ms(median(lat)), fmt_ms(pctl(lat, 90)), fmt_ms(max(lat)), len(lat))


def row_restart(bench):
    q = bench.args.quick
    want, want_slow = (8, 3) if q else (30, 5)
    print("row 2: restart latency (median / p90 / max)", flush=True)
    one = {"bindonce": Bindonce(bench, 1, [HTTPD]),
           "bindonce-mini": Bindonce(bench, 1, [bench.tools["miniworker"]], label="bindonce-mini"),
           "bindonce-sd": Bindonce(bench, 1, [bench.tools["httpd-libsystemd"]], label="bindonce-sd"),
           "naive": Naive(bench, 1)}
    four = {"bindonce": Bindonce(bench, 4, [HTTPD])}
    if available("supervisord"):
        one["supervisord"] = Supervisord(bench, 1)
        four["supervisord"] = Supervisord(bench, 4)
    if available("gunicorn"):
        one["gunicorn"] = Gunicorn(bench, 1)
        four["gunicorn"] = Gunicorn(bench, 4)
    for k, s in one.items():
        bench.record("row2 %s (1 worker)" % k, s.argv)
    for k, s in four.items():
        bench.record("row2 %s (4 workers)" % k, s.argv)
    plan = []
    for k, s in one.items():
        plan.append({"key": ("2a", k), "server": s, "holds": 0, "want": want_slow if k == "supervisord" else want})
    for k, s in four.items():
        plan.append({"key": ("2b", k), "server": s, "holds": 4, "want": want_slow if k == "supervisord" else want})
    for k, cmd in (("httpd", HTTPD), ("miniworker", bench.tools["miniworker"])):
        plan.append({"key": ("floor", k), "floor": cmd, "want": want})
        bench.record("row2 floor " + k, [bench.tools["loadclient"], "floor", "--samples", "1", "--timeout-ms", "5000",
                                         "--", cmd])
    bench.record("row2 probe", [bench.tools["loadclient"], "restart", "--port", "PORT", "--kill", "PID",
                                "--hold", "0|4", "--timeout-ms", "5000"])
    try:
        start_all(list(one.values()) + list(four.values()))
        idle = IdleWindow(bench)        # row 4 runs its 30 idle seconds meanwhile
        sample_restarts(bench, plan, 45 if q else 120)
        idle.finish()
        restarts_bindonce = {e["key"]: e["server"].status()["restarts"] for e in plan
                             if isinstance(e.get("server"), Bindonce)}
    finally:
        stop_all(list(one.values()) + list(four.values()))
        if "idle" in locals():
            idle.stop()

    floors = {e["key"][1]: e["samples"] for e in plan if "floor" in e}
    for e in plan:
        row, k = e["key"]
        bench.plots.setdefault("restart", {}).setdefault(row, {})[k] = [r["latency_us"] for r in e["samples"]]
    for e in plan:
        row, k = e["key"]
        if row == "floor":
            continue
        col = "bindonce" if k.startswith("bindonce") else k
        text = latency_text(e["samples"])
        refused = [r["classes"]["refused"] for r in e["samples"]]
        if any(refused):
            text += "; refused during every restart (median %s in a tight loop)" % fmt_int(median(refused))
        if e["invalid"]:
            text += "; %d samples discarded" % e["invalid"]
            for err in sorted(set(e.get("errors", []))):
                bench.notes.append("row %s %s: a sample failed: %s" % (row, k, err))
        if k == "bindonce-mini":
            bench.detail("2a", "bindonce -w 1 -- miniworker (static, no libsystemd): %s" % text)
            continue
        if k == "bindonce-sd":
            bench.detail("2a", "bindonce -w 1 -- httpd linked with libsystemd: %s" % text)
            continue
        bench.cell(row, col, text)
        bench.detail(row, "%-12s %s; latencies µs: %s" % (k, text, " ".join(str(int(r["latency_us"])) for r in e["samples"])))
    for (row, k), n in restarts_bindonce.items():
        bench.detail(row, "%s: bindonce counted %d restarts" % (k, n))
    for k, fl in floors.items():
        good = [r["latency_us"] for r in fl]
        bench.detail("2a", "floor for %s: SIGKILL, pidfd, reap, vfork+exec, first response, nothing else: "
                           "%s / %s / %s (n=%d), of which kill() to reaped: %s (median)" % (
                               k, fmt_ms(median(good)), fmt_ms(pctl(good, 90)), fmt_ms(max(good)), len(good),
                               fmt_ms(median([r["reaped_us"] for r in fl]))))
    by_key = {e["key"]: [r["latency_us"] for r in e["samples"]] for e in plan}
    fl = {k: median([r["latency_us"] for r in v]) for k, v in floors.items()}
    if by_key.get(("2a", "bindonce")) and by_key.get(("2a", "bindonce-mini")):
        bench.summary.append(
            "Restart latency, 1 worker: %s with build/httpd, against a floor of %s for the same kill, reap, "
            "vfork, exec and first answer with nothing else in between (difference %+.2f ms); %s with a static "
            "worker (floor %s); %s with the same httpd linked with libsystemd, the difference being the "
            "loading of its shared libraries at every start. The worker's own start dominates." % (
                fmt_ms(median(by_key[("2a", "bindonce")])), fmt_ms(fl["httpd"]),
                (median(by_key[("2a", "bindonce")]) - fl["httpd"]) / 1e3,
                fmt_ms(median(by_key[("2a", "bindonce-mini")])), fmt_ms(fl["miniworker"]),
                fmt_ms(median(by_key[("2a", "bindonce-sd")])) if by_key.get(("2a", "bindonce-sd")) else "n/a"))
    bench.cell("2a", "direct", "n/a: nothing restarts it")
    bench.cell("2b", "direct", "n/a: nothing restarts it")
    bench.cell("2b", "naive", "n/a: each process its own SO_REUSEPORT queue; the probe cannot be steered to the new one")
    bench.cell("2a", "ssa", "n/a: it execs httpd in its own place; a kill closes the port")
    bench.cell("2b", "ssa", "n/a: one process")


# ---- row 4: idle supervisor, measured while row 2 runs ---------------------------------------

class IdleWindow:
    """bindonce, supervisord and gunicorn (4 workers each) left alone for 30 s (10 s with
    --quick): CPU time and wakeups of the supervising process, then its memory."""

    def __init__(self, bench):
        self.bench = bench
        self.seconds = 10 if bench.args.quick else 30
        self.servers = {"bindonce": Bindonce(bench, 4, [HTTPD])}
        if available("supervisord"):
            self.servers["supervisord"] = Supervisord(bench, 4)
        if available("gunicorn"):
            self.servers["gunicorn"] = Gunicorn(bench, 4)
        for k, s in self.servers.items():
            bench.record("row4 %s (idle)" % k, s.argv)
        start_all(self.servers.values())
        time.sleep(1.0)
        self.t0 = now()
        self.c0 = {k: wakeup_counters(s.tops[0].pid) for k, s in self.servers.items()}
        # The second sample exactly self.seconds later, whatever the main thread is doing.
        self.timer = threading.Timer(self.seconds, self.sample)
        self.timer.start()

    def sample(self):
        self.t1 = now()
        self.c1 = {k: wakeup_counters(s.tops[0].pid) for k, s in self.servers.items()}

    def finish(self):
        self.timer.join()
        t = self.t1 - self.t0
        for k, s in self.servers.items():
            pid = s.tops[0].pid
            c1 = self.c1[k]
            c0 = self.c0[k]
            st = proc_status(pid)
            nfd = len(os.listdir("/proc/%d/fd" % pid))
            cpu_ms = (c1["cpu_ns"] - c0["cpu_ns"]) / 1e6
            runs = c1["runs"] - c0["runs"]
            self.bench.cell("4a", k, "VmRSS %s, RssAnon %s; %d fds" % (st.get("VmRSS"), st.get("RssAnon"), nfd))
            self.bench.cell("4b", k, "%.2f ms CPU, %d wakeups in %.0f s" % (cpu_ms, runs, t))
            self.bench.detail("4b", "%-12s pid %d: cpu %.3f ms (utime+stime delta %.2f s), schedstat runs %d, "
                                    "context switches %d, over %.1f s" % (
                                        k, pid, cpu_ms, c1["cpu_ticks_s"] - c0["cpu_ticks_s"], runs,
                                        c1["ctxt"] - c0["ctxt"], t))
            self.bench.detail("4a", "%-12s %s" % (k, ", ".join("%s %s" % (f, st.get(f)) for f in
                                                               ("VmRSS", "RssAnon", "RssFile", "VmSize", "Threads"))))
        self.bench.idle_seconds = t

    def stop(self):
        self.timer.cancel()
        stop_all(self.servers.values())


# ---- row 3: SIGKILL one of 4 workers every K ms --------------------------------------------

def count_files(d):
    acc = comp = 0
    per_pid = {}
    for name in os.listdir(d):
        if name.startswith("count-"):
            with open(os.path.join(d, name)) as f:
                m = re.match(r"accepted=(\d+) completed=(\d+)", f.read())
            if m:
                a, c = int(m.group(1)), int(m.group(2))
                acc += a
                comp += c
                per_pid[int(name[6:])] = (a, c)
    return acc, comp, per_pid


def kill_run(bench, server, every_ms, seconds, conc=8, trace=None):
    args = ["load", "--port", server.port, "--concurrency", conc, "--duration-ms", seconds * 1000,
            "--timeout-ms", 5000, "--kill-every-ms", every_ms, "--kill-children-of",
            ",".join(str(p) for p in server.parents())]
    bench.record("row3 load", [bench.tools["loadclient"]] + [str(a) for a in args[:-1]] + ["PARENT_PIDS"])
    if trace:
        args += ["--trace", trace]
    return loadclient(bench, *args, timeout=seconds + 60)


def chaos_trace(bench, row, column, every_ms, seconds):
    """Row 3a's runs keep every attempt and kill for the timeline picture (--trace), with the
    load average at their start (the end is added by chaos_done)."""
    if row != "3a":
        return None
    path = bench.path("trace-3a-%s.txt" % column)
    bench.plots.setdefault("chaos", {})[column] = {"trace": path, "every_ms": every_ms, "seconds": seconds,
                                                  "load0": loadavg().split()[0]}
    return path


def chaos_done(bench, row, column, res, parents):
    """After a row 3 run: a run without a single kill or answer compared nothing; say so
    (RuntimeError, which chaos_failed records). Row 3a: the load at the end, for the picture."""
    if not res["killed"]:
        raise RuntimeError("no worker was killed (loadclient found no children of %s)" % parents)
    if not res["classes"].get("ok"):
        raise RuntimeError("no connection was answered in %d attempts" % res["attempts"])
    d = bench.plots.get("chaos", {}).get(column) if row == "3a" else None
    if d is not None:
        d["load"] = "%s to %s" % (d.pop("load0"), loadavg().split()[0])


def chaos_failed(bench, row, column, label, why, what="run failed"):
    """A contender whose row 3 run failed or could not start: loud on stderr, in its cell,
    and its panel of the timeline marked failed (plots.py then draws no timeline at all)."""
    why = " ".join(str(why).split())[:300]
    print("bench.py: WARNING: row %s: %s: %s: %s" % (row, label, what, why), file=sys.stderr, flush=True)
    bench.cell(row, column, "**%s**: %s" % (what, why))
    bench.notes.append("row %s, %s: %s: %s" % (row, label, what, why))
    if row == "3a":
        bench.plots.setdefault("chaos", {})[column] = {"failed": why}


def row_kills(bench):
    q = bench.args.quick
    seconds = 4 if q else 10
    print("row 3: SIGKILL one of 4 workers every 100 ms / 20 ms for %d s, connection-per-request load" % seconds,
          flush=True)
    bench.row3_cpu = []
    # --plots-only: the 100 ms run alone, which the timeline shows.
    for row, every in (("3a", 100),) if bench.args.plots_only else (("3a", 100), ("3b", 20)):
        t_row = now()
        # bindonce with testworker: what the killed workers had accepted is known exactly.
        twdir = bench.path("tw-%d" % every)
        os.makedirs(twdir)
        s = Bindonce(bench, 4, [TESTWORKER], env={"TW_DIR": twdir})
        bench.record("row3 bindonce", s.argv, env={"TW_DIR": "DIR"})
        try:
            start_all([s])
            time.sleep(1.2)     # every first run stable, as in production
            st0 = s.status()
            c0 = cpu_ns(s.pid)
            res = kill_run(bench, s, every, seconds, trace=chaos_trace(bench, row, "bindonce", every, seconds))
            chaos_done(bench, row, "bindonce", res, s.parents())
            c1 = cpu_ns(s.pid)
            time.sleep(0.3)
            st1 = s.status()
        finally:
            s.stop()
        acc, comp, per_pid = count_files(twdir)
        killed = res["killed"]
        casualties = sum(per_pid[p][0] - per_pid[p][1] for p in killed if p in per_pid)
        others = (acc - comp) - casualties
        fails = failures_of(res)
        restarts = st1["restarts"] - st0["restarts"]
        # A worker killed after it sent its answer but before it counted it as completed makes a
        # casualty the client never saw fail: casualties is an allowance, losses cannot go below 0.
        losses = max(0, fails - casualties)
        bench.cell(row, "bindonce", "refused %d; failed %d, casualties %d: **losses %d**; %s ok/s; %d kills, %d restarts" % (
            res["classes"]["refused"], fails, casualties, losses, fmt_int(res["rate"]), len(killed), restarts))
        bench.detail(row, "bindonce+testworker: %d attempts, ok %d (%s/s), failures: %s; kills %d, restarts %d; "
                          "workers alive at a kill tick: %.2f on average, none at %d ticks; latency p50 %s p99 %s "
                          "max %s; accepted-completed of workers not killed: %d; bindonce CPU %.1f ms = %.0f µs "
                          "per restart" % (
                              res["attempts"], res["classes"]["ok"], fmt_int(res["rate"]), classes_text(res),
                              len(killed), restarts, res["alive_at_kills"], res["kill_skipped"],
                              fmt_ms(res["latency_us"]["p50"]), fmt_ms(res["latency_us"]["p99"]),
                              fmt_ms(res["latency_us"]["max"]), others, (c1 - c0) / 1e6,
                              (c1 - c0) / 1e3 / max(1, restarts)))
        bench.row3_cpu.append(((c1 - c0) / max(1, restarts), restarts))
        if row == "3a":
            bench.plots["chaos"]["bindonce"]["note"] = ", all accepted by the killed workers: losses %d" % losses \
                if fails and not losses else "; losses %d" % losses if fails else ""
        line = ("SIGKILL of one of 4 workers every %d ms: refused %d, losses %d (failures beyond what the killed "
                "workers had accepted); %s ok/s, %.2f workers alive on average at a kill tick" % (
                    every, res["classes"]["refused"], losses, fmt_int(res["rate"]), res["alive_at_kills"]))
        if res["kill_skipped"]:
            line += (" (none at %d of %d ticks: the kills outran the restarts, which the backoff spaced out)" % (
                res["kill_skipped"], res["kill_skipped"] + len(killed)))
        bench.summary.append(line + ".")

        # The alternatives have no backoff to settle: no pause; at 20 ms only half the time.
        alt_seconds = seconds if every >= 100 else max(2, seconds // 2)
        for column, make in (("naive", Naive), ("supervisord", Supervisord), ("gunicorn", Gunicorn)):
            if not available(column):
                chaos_failed(bench, row, column, column, MISSING[column], what="not run")
                continue
            kill_alternative(bench, make(bench, 4), row, every, seconds, alt_seconds)
        if row == "3a":
            bench.chaos_seconds = now() - t_row
            print("    (row 3a, the runs of the chaos timeline: %.0f s)" % bench.chaos_seconds, flush=True)
        bench.cell(row, "direct", "n/a: nothing restarts it")
        bench.cell(row, "ssa", "n/a: one process, not restarted")


def kill_alternative(bench, a, row, every, seconds, alt_seconds):
    """One alternative's row 3 run; a failure is recorded (chaos_failed), not raised, so that
    the other contenders still run and the report says which one failed and why."""
    bench.record("row3 %s" % a.label, a.argv)
    try:
        try:
            start_all([a])
            res = kill_run(bench, a, every, alt_seconds, trace=chaos_trace(bench, row, a.column, every, alt_seconds))
            chaos_done(bench, row, a.column, res, a.parents())
        finally:
            a.stop()
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        chaos_failed(bench, row, a.column, a.label, e)
        return
    fails = failures_of(res)
    killed = len(res["killed"])
    bench.cell(row, a.column, "refused %d; failed %d, kills %d: ≥ %d lost beyond casualties; %s ok/s%s" % (
        res["classes"]["refused"], fails, killed, max(0, fails - killed), fmt_int(res["rate"]),
        "" if alt_seconds == seconds else " (%d s)" % alt_seconds))
    bench.detail(row, "%s: %d attempts, ok %d (%s/s), failures: %s; kills %d; workers alive at a kill "
                      "tick: %.2f on average, none at %d ticks; latency p50 %s p99 %s max %s%s" % (
                          a.label, res["attempts"], res["classes"]["ok"], fmt_int(res["rate"]),
                          classes_text(res), killed, res["alive_at_kills"], res["kill_skipped"],
                          fmt_ms(res["latency_us"]["p50"]), fmt_ms(res["latency_us"]["p99"]),
                          fmt_ms(res["latency_us"]["max"]),
                          "; a bad payload: %r" % res["bad_payload_sample"] if res["bad_payload_sample"] else ""))


# ---- row 5: scale -------------------------------------------------------------------------

class NotifySink:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: counts what bindonce sends."""

    def __init__(self, bench):
        self.path = bench.path("notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.settimeout(0.2)
        self.count, self.last, self.running = 0, None, True
        self.thread = threading.Thread(target=self.drain, daemon=True)
        self.thread.start()

    def drain(self):
        while self.running:
            try:
                m = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.count += 1
            self.last = m

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


def row_scale(bench):
    q = bench.args.quick
    n = 200 if q else 1000
    reps = 2 if q else 3
    print("row 5: %d workers: start, restart all, stop (%d runs)" % (n, reps), flush=True)
    starts, restarts_t, per_restart, per_spawn, stops, status_cost, mems = [], [], [], [], [], [], []
    notify = {}
    # The last run has NOTIFY_SOCKET set, as under systemd (Type=notify): what it costs.
    for rep in range(reps + 1):
        sink = NotifySink(bench) if rep == reps else None
        env = {"NOTIFY_SOCKET": sink.path} if sink else None
        s = Bindonce(bench, n, ["/usr/bin/sleep", "1000"], extra=["--stop-timeout", "5"], http=False, env=env)
        bench.record("row5 bindonce" + (" (NOTIFY_SOCKET)" if sink else ""), s.argv,
                     env={"NOTIFY_SOCKET": "PATH"} if sink else None)
        try:
            t0 = now()
            s.start()
            s.wait_ready(timeout=60)
            t_start = now() - t0
            spawn_cpu = cpu_ns(s.pid) / n
            m_start = sink.count if sink else 0
            # What one `ctl status --json` costs with this many workers.
            c0 = cpu_ns(s.pid)
            t0 = now()
            s.status()
            st_wall, st_cpu = now() - t0, cpu_ns(s.pid) - c0
            # Stable runs (> 1 s), so that every restart is immediate.
            time.sleep(1.2)
            old = set(s.workers())
            mem0 = (proc_status(s.pid).get("RssAnon"), len(os.listdir("/proc/%d/fd" % s.pid)))
            c0 = cpu_ns(s.pid)
            m0 = sink.count if sink else 0
            t0 = now()
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            deadline = now() + 60
            while now() < deadline:
                cur = set(s.workers())
                if len(cur) >= n and not (cur & old):
                    break
                time.sleep(0.005)
            t_restart = now() - t0
            c1 = cpu_ns(s.pid)
            mem1 = (proc_status(s.pid).get("RssAnon"), len(os.listdir("/proc/%d/fd" % s.pid)))
            time.sleep(0.2)
            m_restart = (sink.count - m0) if sink else 0
            last = sink.last if sink else None
            st = s.status()
            if st["restarts"] != n:
                bench.notes.append("row 5: bindonce counted %d restarts for %d kills" % (st["restarts"], n))
            t0 = now()
            s.tops[0].send_signal(signal.SIGTERM)
            s.tops[0].wait(30)
            t_stop = now() - t0
        finally:
            s.stop()
            if sink:
                sink.close()
        if sink:
            notify = {"start": t_start, "per_restart": (c1 - c0) / n, "msgs_start": m_start,
                      "msgs_restart": m_restart, "last": last}
            continue
        mems.append((mem0, mem1))
        starts.append(t_start)
        per_spawn.append(spawn_cpu)
        status_cost.append((st_wall, st_cpu))
        restarts_t.append(t_restart)
        per_restart.append((c1 - c0) / n)
        stops.append(t_stop)
    bench.cell("5a", "bindonce", "%.2f s to ready == %d; stop %.2f s" % (median(starts), n, median(stops)))
    bench.summary.append(
        "%d workers: ready after %.2f s, i.e. %.2f ms per worker, of which %.0f µs is bindonce's CPU: each "
        "spawn waits for that child's exec before the next. %.0f µs of CPU per restart." % (
            n, median(starts), median(starts) / n * 1e3, median(per_spawn) / 1e3, median(per_restart) / 1e3))
    if notify:
        bench.summary.append(
            "Under systemd (NOTIFY_SOCKET) bindonce sends %.1f notify messages per spawn at start and %.1f per "
            "restart (one STATUS= per event)." % (notify["msgs_start"] / n, notify["msgs_restart"] / n))
    r3 = [c for c, _ in getattr(bench, "row3_cpu", [])]
    bench.cell("5b", "bindonce", "%.0f µs per restart (%d killed at once)%s" % (
        median(per_restart) / 1e3, n,
        "; %.0f µs with 4 workers (row 3)" % (median(r3) / 1e3) if r3 else ""))
    bench.detail("5a", "start to ready: %s s; CPU per spawn at start %s µs; all %d killed -> all replaced: %s s; "
                       "stop (SIGTERM to exit): %s s" % (
                           " ".join("%.2f" % x for x in starts), " ".join("%.0f" % (x / 1e3) for x in per_spawn), n,
                           " ".join("%.2f" % x for x in restarts_t), " ".join("%.2f" % x for x in stops)))
    bench.detail("5b", "bindonce CPU per restart, %d killed at once: %s µs" % (
        n, " ".join("%.0f" % (x / 1e3) for x in per_restart)))
    bench.detail("5b", "bindonce's RssAnon and fd count before -> after the %d restarts: %s" % (
        n, "; ".join("%s, %d fds -> %s, %d fds" % (a[0], a[1], b[0], b[1]) for a, b in mems)))
    bench.detail("5a", "one `ctl --json status` with %d workers: %s ms wall, %s ms of bindonce's CPU" % (
        n, " ".join("%.1f" % (w * 1e3) for w, _ in status_cost), " ".join("%.2f" % (c / 1e6) for _, c in status_cost)))
    if notify:
        bench.detail("5b", "with NOTIFY_SOCKET set (a socket of ours in systemd's place, drained at once): "
                           "start %.2f s; %d messages while %d workers started, %d for %d restarts (%.1f per "
                           "restart); CPU per restart %.0f µs; the last one: %r" % (
                               notify["start"], notify["msgs_start"], n, notify["msgs_restart"], n,
                               notify["msgs_restart"] / n, notify["per_restart"] / 1e3, notify["last"]))
    bench.cell("5a", "direct", "n/a")
    bench.cell("5b", "direct", "n/a")

    if available("supervisord"):
        # supervisord with the same tiny worker, as a plain [program] (no socket to share).
        sv = Supervisord(bench, n, cmd=["/usr/bin/sleep", "1000"], fcgi=False)
        bench.record("row5 supervisord", sv.argv)
        try:
            t0 = now()
            sv.start()
            sv.wait_ready(timeout=120)
            t_start = now() - t0
        finally:
            sv.stop()
        bench.cell("5a", "supervisord", "%.2f s until %d processes run (1 run)" % (t_start, n))
    bench.cell("5a", "gunicorn", "n/a: %d Python workers (≈20 MB each)" % n)


# ---- row 6: rolling restart -----------------------------------------------------------------

class WorkerSampler:
    """For the rolling-restart picture: how many children bindonce has (alive) and how many
    slots `status --json` calls ready, asked on the control socket directly (a `bindonce ctl`
    process each time would load the 2 CPUs more than bindonce). Every 2 ms while `fast` is
    set (around a reload, which takes tens of ms), every 20 ms otherwise."""

    def __init__(self, server, period=0.02, fast_period=0.002):
        self.server, self.period, self.fast_period = server, period, fast_period
        self.samples = []       # (monotonic s, alive, ready)
        self.done = threading.Event()
        self.fast = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.done.set()
        if self.thread.ident is not None:
            self.thread.join(10)

    def ready(self):
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(1.0)
            c.connect(self.server.control)
            c.sendall(b"status --json\n")
            c.shutdown(socket.SHUT_WR)
            data = b""
            while len(data) < 1 << 20:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace")
        return json.loads(text[3:])["ready"] if text.startswith("OK\n") else None

    def run(self):
        tick = now()
        while not self.done.is_set():
            t = now()
            try:
                ready = self.ready()
            except (OSError, ValueError, KeyError):
                ready = None
            if ready is not None:
                self.samples.append((t, len(children(self.server.pid)), ready))
            tick = max(tick + (self.fast_period if self.fast.is_set() else self.period), now())
            self.done.wait(max(0.0, tick - now()))


def row_reload(bench):
    q = bench.args.quick
    reloads = 2 if q else 3
    print("row 6: rolling restart of 16 workers under load (%d reloads)" % reloads, flush=True)
    twdir = bench.path("tw-reload")
    os.makedirs(twdir)
    # --min-ready 0: a replacement counts once executed, as before issue 8; row 9 measures
    # the default (1 s).
    s = Bindonce(bench, 16, [TESTWORKER], extra=["--min-ready", "0"], env={"TW_DIR": twdir})
    bench.record("row6 bindonce", s.argv, env={"TW_DIR": "DIR"})
    bench.record("row6 reload", [BINDONCE, "ctl", "--control", "PATH", "reload"])
    walls = []
    # The picture: every request (--trace), workers alive and ready, the reloads' times.
    picture = {"trace": bench.path("trace-6-bindonce.txt"), "reloads": [], "workers": 16}
    sampler = WorkerSampler(s)
    try:
        start_all([s])
        time.sleep(1.2)
        res_box = {}
        total_ms = 1500 * (reloads + 1)
        t = threading.Thread(target=lambda: res_box.update(loadclient(
            bench, "load", "--port", s.port, "--concurrency", 8, "--duration-ms", total_ms, "--timeout-ms", 5000,
            "--trace", picture["trace"], timeout=60)))
        sampler.start()
        t.start()
        for _ in range(reloads):
            time.sleep(0.95)
            sampler.fast.set()
            time.sleep(0.05)
            t0 = now()
            r = s.ctl("reload")
            walls.append(now() - t0)
            picture["reloads"].append((t0, now()))
            time.sleep(0.1)
            sampler.fast.clear()
            if r.returncode != 0:
                bench.notes.append("row 6: ctl reload failed: %s" % r.stderr.strip())
        t.join(90)
    finally:
        sampler.stop()
        s.stop()
    picture["samples"] = sampler.samples
    bench.plots["reload"] = picture
    res = res_box
    acc, comp, _ = count_files(twdir)
    logged = [int(x) for x in re.findall(r"reload complete: \d+ workers replaced in (\d+) ms", s.log_text())]
    bench.cell("6", "bindonce", "reload %s (ctl wall, median of %d); failed %d of %s under load" % (
        fmt_ms(median(walls) * 1e6), len(walls), failures_of(res), fmt_int(res["attempts"])))
    bench.detail("6", "bindonce: ctl reload wall %s ms; logged 'replaced in' %s ms; load: %s; failures %s; "
                      "accepted-completed %d; latency p50 %s p99 %s max %s" % (
                          " ".join("%.1f" % (w * 1e3) for w in walls), " ".join(map(str, logged)),
                          "%d attempts, %s ok/s" % (res["attempts"], fmt_int(res["rate"])), classes_text(res),
                          acc - comp, fmt_ms(res["latency_us"]["p50"]), fmt_ms(res["latency_us"]["p99"]),
                          fmt_ms(res["latency_us"]["max"])))

    # The alternatives' nearest thing: gunicorn's SIGHUP (new workers, then the old ones
    # stop gracefully) and supervisord's `supervisorctl restart` (stop all, then start).
    alts = []
    if available("gunicorn"):
        alts.append(Gunicorn(bench, 16))
    if available("supervisord"):
        alts.append(Supervisord(bench, 16))
    alt_reloads = min(reloads, 2)
    total_ms = 1500 * (alt_reloads + 1)
    for a in alts:
        bench.record("row6 %s" % a.label, a.argv)
        walls = []
        try:
            start_all([a])
            time.sleep(1.2)
            res_box = {}
            t = threading.Thread(target=lambda: res_box.update(loadclient(
                bench, "load", "--port", a.port, "--concurrency", 8, "--duration-ms", total_ms,
                "--timeout-ms", 5000, timeout=60)))
            t.start()
            for _ in range(alt_reloads):
                time.sleep(1.0)
                old = set(a.workers())
                t0 = now()
                if isinstance(a, Gunicorn):
                    os.kill(a.tops[0].pid, signal.SIGHUP)
                    deadline = now() + 30
                    while now() < deadline:
                        cur = set(a.workers())
                        if len(cur) == 16 and not (cur & old):
                            break
                        time.sleep(0.002)
                else:
                    a.ctl("restart", "httpd:*")
                walls.append(now() - t0)
            t.join(90)
        finally:
            a.stop()
        res = res_box
        how = "SIGHUP until 16 new workers" if isinstance(a, Gunicorn) else "supervisorctl restart httpd:*"
        bench.cell("6", a.column, "%s %s; failed %d of %s" % (
            how, fmt_ms(median(walls) * 1e6), failures_of(res), fmt_int(res["attempts"])))
        bench.detail("6", "%s: %s: %s ms; load: %d attempts; failures %s" % (
            a.label, how, " ".join("%.1f" % (w * 1e3) for w in walls), res["attempts"], classes_text(res)))
    bench.cell("6", "naive", "n/a: a restart is the gap of row 2")
    bench.cell("6", "direct", "n/a")


# ---- row 8: --balance reuseport -------------------------------------------------------------

def cv(counts):
    if len(counts) < 2:
        return None
    m = statistics.mean(counts)
    return statistics.pstdev(counts) / m if m else None


def row_balance(bench):
    q = bench.args.quick
    r = subprocess.run([BINDONCE, "--help"], capture_output=True, text=True)
    if "--balance" not in r.stdout:
        for row in ("8a", "8b", "8c", "8d", "8e"):
            bench.cell(row, "bindonce", "TODO: bindonce --help shows no --balance yet")
        return
    reps, secs = (2, 1) if q else (3, 2)
    print("row 8: --balance shared vs reuseport (4 workers; %d runs of %d s)" % (reps, secs), flush=True)
    servers = {
        "shared": Bindonce(bench, 4, [HTTPD], extra=["--balance", "shared"]),
        "reuseport": Bindonce(bench, 4, [HTTPD], extra=["--balance", "reuseport"]),
        "direct": Direct(bench, 4),
    }
    for k, s in servers.items():
        bench.record("row8 %s" % k, s.argv)
    runs = {k: [] for k in servers}
    try:
        start_all(servers.values())
        for _ in range(reps):
            for k, s in servers.items():
                runs[k].append(loadclient(bench, "load", "--port", s.port, "--concurrency", 16,
                                          "--duration-ms", secs * 1000, "--timeout-ms", 5000))
    finally:
        stop_all(servers.values())
    summary = {}
    for k, rs in runs.items():
        cvs = [cv(list(r["pids"].values())) for r in rs]
        lat = {p: median([r["latency_us"][p] for r in rs]) for p in ("p50", "p99", "p999")}
        summary[k] = (median(cvs), lat, median([r["rate"] for r in rs]), sum(failures_of(r) for r in rs))
        bench.detail("8a", "%-9s CV of requests per worker %s; per-worker counts of the last run %s; ok/s %s; "
                           "latency p50 %s p99 %s p99.9 %s; failures %d" % (
                               k, " ".join("%.3f" % c for c in cvs), sorted(rs[-1]["pids"].values()),
                               fmt_int(summary[k][2]), fmt_ms(lat["p50"]), fmt_ms(lat["p99"]), fmt_ms(lat["p999"]),
                               summary[k][3]))
    bench.cell("8a", "bindonce", "CV shared %.3f, reuseport %.3f" % (summary["shared"][0], summary["reuseport"][0]))
    bench.cell("8a", "direct", "CV %.3f (kernel's SO_REUSEPORT hash)" % summary["direct"][0])
    bench.cell("8b", "bindonce", "shared %s / %s / %s; reuseport %s / %s / %s" % tuple(
        fmt_ms(summary[m][1][p]) for m in ("shared", "reuseport") for p in ("p50", "p99", "p999")))
    bench.cell("8b", "direct", "%s / %s / %s" % tuple(fmt_ms(summary["direct"][1][p]) for p in ("p50", "p99", "p999")))

    # SIGKILL every 100 ms in reuseport mode: a dead worker's socket stays with bindonce, so
    # what is queued on it waits for the replacement (row 3a has the shared mode).
    twdir = bench.path("tw-kill-reuseport")
    os.makedirs(twdir)
    s = Bindonce(bench, 4, [TESTWORKER], extra=["--balance", "reuseport"], env={"TW_DIR": twdir})
    bench.record("row8 kills reuseport", s.argv, env={"TW_DIR": "DIR"})
    try:
        start_all([s])
        time.sleep(1.2)
        res = kill_run(bench, s, 100, 3 if q else 5)
    finally:
        s.stop()
    _, _, per_pid = count_files(twdir)
    casualties = sum(per_pid[p][0] - per_pid[p][1] for p in res["killed"] if p in per_pid)
    fails = failures_of(res)
    bench.cell("8d", "bindonce", "reuseport: refused %d; failed %d, casualties %d: **losses %d**; max latency %s" % (
        res["classes"]["refused"], fails, casualties, max(0, fails - casualties), fmt_ms(res["latency_us"]["max"])))
    bench.detail("8d", "reuseport, SIGKILL every 100 ms for %d s: %d attempts, %s ok/s, failures: %s; kills %d; "
                       "latency p50 %s p99 %s max %s" % (
                           3 if q else 5, res["attempts"], fmt_int(res["rate"]), classes_text(res),
                           len(res["killed"]), fmt_ms(res["latency_us"]["p50"]), fmt_ms(res["latency_us"]["p99"]),
                           fmt_ms(res["latency_us"]["max"])))

    # Scale 4 -> 2 under load: graceful, so every failure is a connection the removal dropped.
    down = {}
    for mode in ("shared", "reuseport"):
        down[mode] = []
        for i in range(1):
            twdir = bench.path("tw-scale-%s-%d" % (mode, i))
            os.makedirs(twdir)
            s = Bindonce(bench, 4, [TESTWORKER], extra=["--balance", mode], env={"TW_DIR": twdir})
            bench.record("row8 scale %s" % mode, s.argv, env={"TW_DIR": "DIR"})
            try:
                start_all([s])
                box = {}
                t = threading.Thread(target=lambda: box.update(loadclient(
                    bench, "load", "--port", s.port, "--concurrency", 16, "--duration-ms", 3000,
                    "--timeout-ms", 5000, timeout=60)))
                t.start()
                time.sleep(1.0)
                s.ctl("scale", "2")
                t.join(60)
            finally:
                s.stop()
            acc, comp, _ = count_files(twdir)
            down[mode].append((failures_of(box), box, acc - comp))
            bench.detail("8c", "%s: scale 4 -> 2 under load: %d attempts, failures %s, accepted-completed %d" % (
                mode, box["attempts"], classes_text(box), acc - comp))
    # The same removal without a supervisor: one of 4 httpd --bind --reuse-port stops (SIGTERM).
    d = Direct(bench, 4)
    bench.record("row8 scale direct", d.argv)
    try:
        start_all([d])
        box = {}
        t = threading.Thread(target=lambda: box.update(loadclient(
            bench, "load", "--port", d.port, "--concurrency", 16, "--duration-ms", 3000, "--timeout-ms", 5000,
            timeout=60)))
        t.start()
        time.sleep(1.0)
        d.tops[-1].send_signal(signal.SIGTERM)
        d.tops[-2].send_signal(signal.SIGTERM)
        t.join(60)
    finally:
        d.stop()
    bench.detail("8c", "direct: 2 of 4 httpd --reuse-port stopped (SIGTERM) under load: %d attempts, failures %s" % (
        box["attempts"], classes_text(box)))
    bench.cell("8c", "bindonce", "failed: shared %s, reuseport %s" % (
        "+".join(str(f) for f, _, _ in down["shared"]), "+".join(str(f) for f, _, _ in down["reuseport"])))
    bench.cell("8c", "direct", "failed %d (2 of 4 stopped, SIGTERM)" % failures_of(box))

    # One slot crash-looping (its worker exits at start, so bindonce backs it off), 3 healthy:
    # in shared mode the 3 take everything; in reuseport mode the dead slot's socket still
    # gets its share of new connections, which wait there.
    loop = {}
    for mode in ("shared", "reuseport"):
        cmd = ["/bin/sh", "-c", '[ "$BINDONCE_WORKER" = 0 ] && exit 3; exec "$0"', HTTPD]
        s = Bindonce(bench, 4, cmd, extra=["--balance", mode], http=False)
        s.n = 3
        bench.record("row8 crash-looping slot %s" % mode, s.argv)
        try:
            start_all([s])
            res = loadclient(bench, "load", "--port", s.port, "--concurrency", 8, "--duration-ms", 3000,
                             "--timeout-ms", 2000)
        finally:
            s.stop()
        loop[mode] = res
        bench.detail("8e", "%s: %d attempts, %s ok/s, failures: %s; latency p50 %s p99 %s max %s" % (
            mode, res["attempts"], fmt_int(res["rate"]), classes_text(res), fmt_ms(res["latency_us"]["p50"]),
            fmt_ms(res["latency_us"]["p99"]), fmt_ms(res["latency_us"]["max"])))
    bench.summary.append(
        "--balance with one of 4 slots crash-looping: reuseport %s ok/s, %d of %d connections failed "
        "(%s); shared %s ok/s, %d failed. A connection steered to the dead slot's socket waits there." % (
            fmt_int(loop["reuseport"]["rate"]), failures_of(loop["reuseport"]), loop["reuseport"]["attempts"],
            classes_text(loop["reuseport"]), fmt_int(loop["shared"]["rate"]), failures_of(loop["shared"])))
    bench.cell("8e", "bindonce", "shared: %s ok/s, failed %d; reuseport: %s ok/s, failed %d (of %s)" % (
        fmt_int(loop["shared"]["rate"]), failures_of(loop["shared"]), fmt_int(loop["reuseport"]["rate"]),
        failures_of(loop["reuseport"]), fmt_int(loop["reuseport"]["attempts"])))


# ---- the report -------------------------------------------------------------------------------

ROWS = [
    ("1", "HTTP throughput, build/httpd, wrk -t2 -c50 -d5s, median of 3 (connection per request)"),
    ("2a", "Restart latency, 1 worker: SIGKILL to the first response from the replacement, median / p90 / max"),
    ("2b", "Restart latency, 4 workers (the other 3 held busy, so only the replacement can answer)"),
    ("3a", "SIGKILL one of 4 workers every 100 ms for 10 s, connection-per-request load (8 in flight)"),
    ("3b", "SIGKILL one of 4 workers every 20 ms for 10 s"),
    ("4a", "Supervisor memory with 4 workers (the supervising process only)"),
    ("4b", "Supervisor CPU and wakeups, idle, 4 workers"),
    ("5a", "1,000 workers (/usr/bin/sleep): start until `ctl status` shows ready == 1000"),
    ("5b", "Supervisor CPU per restart"),
    ("6", "Rolling restart of 16 workers (ready at exec, --min-ready 0) under load"),
    ("8a", "--balance: spread of requests over 4 workers (coefficient of variation, lower is even)"),
    ("8b", "--balance: request latency p50 / p99 / p99.9 under load (16 in flight)"),
    ("8c", "--balance: scale 4 -> 2 under load: failed connections"),
    ("8d", "--balance reuseport: SIGKILL one of 4 every 100 ms for 5 s (as row 3a)"),
    ("8e", "--balance: 4 slots, one crash-looping (exits at start), 8 in flight, 2 s timeout, 3 s"),
    ("9a", "Rolling restart of 16 workers, defaults (--ready exec, --min-ready 1): ctl reload wall"),
    ("9b", "Rolling restart of 16 workers, --ready notify (Python worker, READY=1 at once): ctl reload wall"),
    ("10", "10,000 workers (/usr/bin/sleep): start until bindonce logs all ready (then `ctl status` shows ready == 10000); RssAnon"),
]


def row_roll16(bench):
    """Row 9: what a fail-safe roll costs: each replacement waits --min-ready (1 s by default
    with --ready exec) before the next, or READY=1 with --ready notify."""
    reloads = 1 if bench.args.quick else 2
    worker = os.path.join(REPO, "tests", "integration", "lifecycle_worker.py")
    print("row 9: rolling restart of 16 workers, defaults and --ready notify (%d reloads)" % reloads, flush=True)
    for row, extra, cmd in (("9a", [], [TESTWORKER]),
                            ("9b", ["--ready", "notify"], ["/usr/bin/python3", worker])):
        s = Bindonce(bench, 16, cmd, extra=extra, http=row == "9a")
        bench.record("row%s bindonce" % row, s.argv)
        walls = []
        try:
            start_all([s])
            for _ in range(reloads):
                t0 = now()
                r = s.ctl("reload", timeout=120)
                walls.append(now() - t0)
                if r.returncode != 0:
                    bench.notes.append("row %s: ctl reload failed: %s" % (row, r.stderr.strip()))
        finally:
            s.stop()
        bench.cell(row, "bindonce", "%.2f s (median of %d), %.0f ms per worker" % (
            median(walls), len(walls), median(walls) / 16 * 1e3))
        bench.detail(row, "ctl reload wall: %s s" % " ".join("%.2f" % w for w in walls))


def wait_log_line(server, text, timeout):
    """When `text` appeared in the server's log (read as it grows, every 20 ms: no client
    of the server's own); an error if it exits first or the time runs out."""
    deadline = now() + timeout
    seen = b""
    with open(server.bench.path(server.log), "rb") as f:
        while now() < deadline:
            chunk = f.read()
            if chunk:
                seen = seen[-len(text):] + chunk
                if text.encode() in seen:
                    return now()
            elif server.tops[0].poll() is not None:
                raise RuntimeError("%s exited before %r" % (server.label, text))
            time.sleep(0.02)
    raise RuntimeError("%s: no %r within %.0f s" % (server.label, text, timeout))


def row_10k(bench):
    """Row 10: 10,000 workers: the time until all are ready, and what bindonce holds."""
    n = 2000 if bench.args.quick else 10000
    print("row 10: %d workers of /usr/bin/sleep" % n, flush=True)
    s = Bindonce(bench, n, ["/usr/bin/sleep", "1000"], extra=["--stop-timeout", "5"], http=False)
    bench.record("row10 bindonce", s.argv)
    try:
        t0 = now()
        s.start()
        # Polled, `ctl --json status` with 10,000 workers (a client, a reply of 10,000 entries,
        # its parsing) took CPU from the starts it measured on 2 cores: the log line bindonce
        # writes once all are ready is the event; `ctl status` then confirms it once.
        t_ready = wait_log_line(s, "all %d workers ready" % n, 600) - t0
        cpu = cpu_ns(s.pid) / 1e9      # bindonce's own, until all were ready: what the load changes least
        s.wait_ready(timeout=60)
        st = proc_status(s.pid)
        nfd = len(os.listdir("/proc/%d/fd" % s.pid))
        t0 = now()
        s.tops[0].send_signal(signal.SIGTERM)
        s.tops[0].wait(120)
        t_stop = now() - t0
    finally:
        s.stop()
    bench.cell("10", "bindonce", "%.1f s to ready == %d (bindonce's CPU %.2f s); RssAnon %s; %d fds" % (
        t_ready, n, cpu, st.get("RssAnon"), nfd))
    bench.detail("10", "%d workers: ready after %.1f s (%.2f ms per worker, of which %.0f µs bindonce's CPU), "
                       "stop %.1f s, VmRSS %s, RssAnon %s, %d fds; load average %s at the end" % (
                           n, t_ready, t_ready / n * 1e3, cpu / n * 1e6, t_stop, st.get("VmRSS"), st.get("RssAnon"),
                           nfd, loadavg()))
    bench.cell("10", "direct", "n/a")


def machine():
    info = {}
    info["nproc"] = len(os.sched_getaffinity(0))
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info["model"] = model
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                info["memory"] = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    info["kernel"] = platform.release()
    try:
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        info["debian"] = "?"
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"
    info["versions"] = {
        "bindonce": version([BINDONCE, "--version"]),
        "git": version(["git", "-C", REPO, "describe", "--always", "--dirty"]),
        "wrk": version(["wrk", "-v"]),
        "supervisord": version(["/usr/bin/supervisord", "--version"]),
        "gunicorn": version(["/usr/bin/gunicorn", "--version"]),
        "systemd-socket-activate": version(["/usr/bin/systemd-socket-activate", "--version"]),
        "gcc": version(["gcc", "--version"]),
        "python3": version(["/usr/bin/python3", "--version"]),
    }
    for k in ("tcp_migrate_req",):
        try:
            with open("/proc/sys/net/ipv4/" + k) as f:
                info[k] = f.read().strip()
        except OSError:
            info[k] = "?"
    return info


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def table(bench):
    cols = [c for c in COLUMNS]
    lines = ["| row | " + " | ".join(COLUMN_TITLES[c] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row, title in ROWS:
        if not any((row, c) in bench.cells for c in cols):
            continue
        cells = [bench.cells.get((row, c), "n/a" if c != "bindonce" else "not run") for c in cols]
        lines.append("| **%s** %s | " % (row, title) + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(bench, info, rows_run, started, load0, load1, elapsed):
    out = []
    w = out.append
    w("# bindonce: performance\n")
    w("Written by `make bench` (tests/bench/bench.py); do not edit by hand, run it again. "
      "Every number is a median over repeated runs unless it says otherwise; nothing here is "
      "pass/fail. Loopback only.\n")
    w("## Machine\n")
    w("- %d CPUs (%s), %s memory; kernel %s; Debian %s" % (info["nproc"], info["model"], info["memory"],
                                                          info["kernel"], info["debian"]))
    w("- run %s, %.0f s; load average %s at the start, %s at the end (anything above ~0.3 that is not "
      "ours means the machine was shared and the numbers are noisier)" % (info["date"], elapsed, load0, load1))
    w("- net.ipv4.tcp_migrate_req = %s; time per row: %s" % (info["tcp_migrate_req"], ", ".join(bench.timings)))
    w("- " + "; ".join("%s: %s" % (k, v) for k, v in info["versions"].items()))
    if rows_run != "all":
        w("- rows run: %s (others not run this time)" % rows_run)
    if bench.args.quick:
        w("- **--quick**: shorter runs and fewer samples than the rows' titles say")
    w("")
    if bench.summary:
        w("## In short (computed from this run)\n")
        for line in bench.summary:
            w("- " + line)
        w("")
    w("## Results\n")
    w(table(bench))
    w("")
    if bench.pictures or bench.picture_failures or bench.args.no_plots:
        out.extend(pictures_section(bench, info))
    w("Columns: **bindonce** `-l 127.0.0.1:PORT -w N -- build/httpd` (rows 3 and 6: build/testworker, "
      "which counts what it accepted and completed); **httpd binds itself**: `httpd --bind 127.0.0.1:PORT "
      "--reuse-port`, N processes with their own SO_REUSEPORT sockets; **naive shell loop**: `while :; do "
      "httpd --bind ...; done` (1 loop without SO_REUSEPORT for row 2; 4 loops with it for row 3); "
      "**supervisord**: `[fcgi-program]`, supervisord binds and passes the socket as fd 0 to numprocs "
      "`httpd --fd 0` (startsecs=0, autorestart=true); **gunicorn**: pre-fork master with sync workers; "
      "it cannot run a C worker, so it serves tests/bench/wsgiapp.py (same answer, a Python app); "
      "**systemd-socket-activate** `-l PORT httpd`: binds, waits for the first connection, execs httpd "
      "in its own place (one process; --accept would start one process per connection, which httpd "
      "does not do).\n")
    for row, title in ROWS:
        if row in bench.details:
            w("### %s %s\n" % (row, title))
            for line in bench.details[row]:
                w("- " + line)
            w("")
    w("## How each row is measured\n")
    w(METHOD)
    if bench.notes or bench.leftovers:
        w("## Notes from this run\n")
        for n in bench.notes:
            w("- " + n)
        for l in bench.leftovers:
            w("- process left behind and killed: " + l)
        w("")
    w("## Exact commands\n")
    w("PORT, PID, DIR, PATH and PARENT_PIDS stand for the values of each run; "
      "the scratch directory is a fresh mkdtemp.\n")
    w("```")
    for label, cmd in bench.commands.items():
        w("# %s\n%s" % (label, cmd.replace(bench.tmp, "$TMP").replace(REPO + "/", "")))
    w("```")
    text = "\n".join(out) + "\n"
    path = os.path.join(REPO, "docs", "PERFORMANCE.md")
    with open(path, "w") as f:
        f.write(text)
    return path


METHOD = """\
1. **Throughput.** All servers up at once on their own ports (idle ones cost nothing);
   one 1 s warm-up each, then 3 rounds of `wrk -t2 -c50 -d5s --latency` taking the servers in turn,
   so that drift on the machine hits every column alike. httpd answers `Connection: close`, so
   every request is a new connection: accept() is the hot path, and bindonce is not in it
   (its workers accept on the socket directly). The ratio compares with 2 copies of the same
   binary that bind the port themselves with SO_REUSEPORT, round by round, and takes the
   median of the 3 ratios. wrk, the workers and the kernel share the 2 CPUs: this measures
   whether bindonce costs anything, not how fast httpd can go.
2. **Restart latency.** `loadclient restart` SIGKILLs the victim and connects in a tight loop
   until a response names a pid other than the victim's; the time is from kill() to that
   response. Every victim has lived more than 1.1 s: bindonce restarts a slot at once unless it
   died within 1 s of starting twice in a row (then 100 ms, 200 ms, ... up to 10 s), and
   this row is about the immediate restart. With 4 workers, the probe first opens 4 idle
   connections, which the 4 workers accept and sit on waiting for a request (the listen queue
   is checked to be empty), then kills one: the 3 others are busy, so the first answer can
   only come from the replacement. A sample whose victim did not hold one of those connections
   is discarded. The configurations are sampled in turn, 30 samples each (supervisord 5: each
   takes about a second; they vary by less than 1%). The floor is what an ideal supervisor
   would take on this machine: `loadclient floor` runs the worker itself with the socket at
   fd 3, SIGKILLs it, waits on its pidfd, reaps it, vforks and execs the next, and times kill()
   to the first answer, one sample per round beside the others. bindonce's own cost in a
   restart is its latency minus that floor.
3. **Kills under load.** `loadclient load`: 8 connections in flight, each a new connection with
   one `GET`, read to EOF, classified (ok, refused, connect_timeout, reset_before_response,
   eof_before_response, reset_mid_response, response_timeout, bad_payload; timeouts 5 s).
   Every 100 ms (20 ms) it SIGKILLs a random child of the supervisor. bindonce runs
   build/testworker, whose count files give, for every killed pid, what it had accepted but not
   completed: the casualties. losses = failed - casualties, the invariant of shared/TESTING.md.
   The alternatives run httpd, which serves one connection at a time, so each kill takes at
   most one accepted connection with it: failed - kills is a lower bound of their losses.
   At these rates every death comes within 1 s of the worker's start, which the restart
   contract calls early; how fast the slots come back anyway shows in ok/s and in "workers
   alive at a kill tick" (details). bindonce gets 1.2 s after start, so that its first
   workers count as stable; the alternatives have no such state and are loaded at once, for
   10 s at 100 ms and 5 s at 20 ms (to keep the whole bench near 5 minutes).
   A truncated answer (headers, then EOF) counts as bad_payload.
4. **Supervisor footprint.** A separate bindonce, supervisord and gunicorn with 4 workers each
   are left alone for 30 s while row 2 runs on other ports: CPU from /proc/PID/schedstat
   (ns) and utime+stime, wakeups = scheduler runs from schedstat, plus context switches; then
   VmRSS and RssAnon from /proc/PID/status, and the fd count.
5. **Scale.** `bindonce -w 1000 -- /usr/bin/sleep 1000`, timed from exec to the first
   `ctl status` that reports ready == 1000 (3 runs). Then all 1000 SIGKILLed at once, waited
   for by /proc (no control requests meanwhile), and bindonce's CPU (schedstat) divided by 1000.
   The 4-worker figure comes from row 3 (CPU during the 100 ms and 20 ms runs / restarts).
   A fourth run has NOTIFY_SOCKET pointing at a datagram socket of ours, drained by a thread,
   which counts the sd_notify messages systemd would get. supervisord is timed starting 1000
   `sleep 1000` as a plain `[program]` with numprocs=1000, until 1000 children exist.
6. **Rolling restart.** `bindonce -w 16 -- testworker`; `bindonce ctl reload` timed by its wall
   clock, 3 times, under the load of row 3 without kills. gunicorn: SIGHUP, timed until 16 new
   worker pids; supervisord: `supervisorctl restart httpd:*` (it stops all, then starts);
   2 times each. For the picture, a thread asks bindonce for `status --json` on its control
   socket every 10 ms and counts its children, and the load client keeps every request.
8. **--balance.** 4 httpd workers under `loadclient load` with 16 in flight; the answers name
   the pid, so the spread over workers is exact. Scale-down: `ctl scale 2` under load with
   testworker (graceful: SIGTERM, the in-hand request finishes), so every failed connection is
   one dropped by the removal of a slot (a queued connection reset with its socket); the
   same removal without a supervisor is 2 of 4 `httpd --bind --reuse-port` getting SIGTERM.
   8d repeats row 3a in reuseport mode. 8e runs 4 slots whose slot 0 exits at once every time
   (`sh -c '[ "$BINDONCE_WORKER" = 0 ] && exit 3; exec httpd'`), so bindonce backs it off,
   while 3 slots serve: the closed-loop client shows whether new connections avoid the dead slot.
9. **Fail-safe roll.** `bindonce -w 16`, `ctl reload` timed by its wall clock, 2 reloads each
   (no load): 9a with the defaults (build/testworker, `--ready exec`, so `--min-ready 1`: every
   replacement must stay up 1 s before the next old worker goes), 9b with `--ready notify`
   (tests/integration/lifecycle_worker.py sends READY=1 at once; `--min-ready 0`).
10. **10,000 workers.** `bindonce -w 10000 -- /usr/bin/sleep 1000`, timed from exec to the log
   line "all 10000 workers ready" (read as the log grows; then `ctl status` confirms it once);
   bindonce's CPU until then from /proc/PID/schedstat, RssAnon and fds from /proc. Each spawn
   waits for that child's exec, and the 10,000 sleeps' own starts share the 2 CPUs: on a shared
   machine the time moves with the load, bindonce's CPU much less. Then SIGTERM, timed to its exit.
"""


# ---- pictures ------------------------------------------------------------------------------------

PICTURE_TEXT = {
    "chaos-timeline.svg": "Row 3a, one run per peer: every connection attempt is a mark at its start "
                          "time and the time it took (green ok, red refused, orange failed), every SIGKILL "
                          "a grey line. A failure is a connection the killed worker had accepted or, for "
                          "the naive loops (a SO_REUSEPORT socket each), one still queued on its socket; "
                          "with one socket shared by all workers, nothing queued is lost. A stretch "
                          "without marks is time in which no attempt started: the 8 in flight were all "
                          "waiting (their marks sit at its start, high up); when they all end together and "
                          "ok, the whole machine stalled (a shared machine's load), not the supervisor.",
    "restart-latency.svg": "Row 2, every sample: from SIGKILL to the first answer of the replacement, "
                           "per peer, against the floor of the same kill, reap and exec with nothing else.",
    "rolling-restart.svg": "Row 6, bindonce: its children (new, old and exiting workers) and its ready slots, "
                           "sampled every 2 ms around each reload, and the requests answered per 10 ms while "
                           "`ctl reload` replaces the 16 workers one by one (shaded).",
}


def picture_run(bench, info):
    """The stamp of this run in every picture's title: the same date and time as the
    Machine section of PERFORMANCE.md, so that a picture and its tables can be matched."""
    how = "make bench" if len(sys.argv) == 1 else "bench.py " + " ".join(sys.argv[1:])
    return "%s, %s%s" % (how, info["date"], ", short runs" if bench.args.quick else "")


def draw_pictures(bench, info):
    """The SVGs of this run's rows 2, 3a and 6 into --plots-dir (tests/bench/plots.py). A
    picture not drawn (a contender missing or failed, matplotlib missing) is said loudly
    and goes into bench.picture_failures: main() then exits 1, after writing the report."""
    if not any(bench.plots.get(k) for k in ("chaos", "restart", "reload")):
        return
    try:
        import plots
    except ImportError as e:
        bench.picture_failures.append(("all pictures", "%s (apt-get install python3-matplotlib)" % e))
        print("bench.py: WARNING: pictures not drawn: %s" % e, file=sys.stderr, flush=True)
        return
    run = picture_run(bench, info)
    bench.plots["missing"] = dict(MISSING)
    os.makedirs(bench.args.plots_dir, exist_ok=True)
    # What they are drawn from, kept with --keep: `plots.py $TMP/plots.json` draws them again.
    with open(bench.path("plots.json"), "w") as f:
        json.dump({"plots": bench.plots, "titles": COLUMN_TITLES, "run": run}, f)
    try:
        bench.pictures, failed = plots.write_all(bench.plots, COLUMN_TITLES, bench.args.plots_dir, run)
    except Exception as e:      # a bug in plots.py: the report is still written, the run fails
        bench.pictures, failed = [], [("all pictures", repr(e))]
    bench.picture_failures += failed
    for name, what in bench.pictures:
        print("    picture: %s (%s)" % (os.path.join(bench.args.plots_dir, name), what), flush=True)
    for name, why in failed:
        print("bench.py: WARNING: %s NOT drawn: %s" % (name, why), file=sys.stderr, flush=True)


def pictures_section(bench, info):
    """The Pictures section of PERFORMANCE.md: the pictures this run drew (the same run as the
    tables), those it could not draw and why, the load while the chaos runs ran."""
    out = ["## Pictures (drawn by this run)\n"]
    if bench.args.no_plots:
        return out + ["Not drawn by this run (--no-plots): any docs/*.svg are from an earlier run.\n"]
    if not bench.pictures:
        out.append("This run drew no picture: any docs/*.svg are from an earlier run.\n")
    rel = os.path.relpath(bench.args.plots_dir, os.path.join(REPO, "docs"))
    text = ("Drawn by tests/bench/plots.py from this run's own data, stamped with its date (%s) in "
            "their titles. The load average over the whole run is under Machine" % info["date"])
    if bench.plots.get("chaos"):
        text += ("; every panel of the chaos timeline gives the 1-minute load average at the start and end "
                 "of that peer's run. The timeline compares counts (refused, failed; losses for bindonce), "
                 "not speed; a loaded machine runs fewer attempts and can fail more of them for every peer, "
                 "so compare the panels of one run with each other. The chaos runs (row 3a, 4 peers) took "
                 "%.0f s" % getattr(bench, "chaos_seconds", 0))
    if bench.pictures:
        out.append(text + ".\n")
    for name, _ in bench.pictures:
        out.append("![%s](%s)\n" % (PICTURE_TEXT.get(name, name).split(":")[0],
                                       name if rel == "." else os.path.join(rel, name)))
        out.append(PICTURE_TEXT.get(name, "") + "\n")
    for name, why in bench.picture_failures:
        out.append("**%s was not drawn** (the file in docs/, if any, is not from this run): %s\n" % (name, why))
    return out


# ---- main ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="bindonce benchmarks; writes docs/PERFORMANCE.md")
    ap.add_argument("--rows", default="all", help="comma-separated: 1,2,3,5,6,8,9,10 (4 runs with 2)")
    ap.add_argument("--quick", action="store_true", help="short runs, few samples (for trying changes)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/PERFORMANCE.md alone")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    ap.add_argument("--plots-only", action="store_true",
                    help="only the pictures, into build/bench-plots/: short runs of rows 2, 3a and 6; "
                         "docs/ is left alone")
    ap.add_argument("--no-plots", action="store_true", help="no pictures (docs/*.svg are left alone)")
    ap.add_argument("--plots-dir", help="where the SVGs go (default: docs/ beside the PERFORMANCE.md this run "
                                        "writes; build/bench-plots/ with --no-write or --plots-only)")
    args = ap.parse_args()
    if args.plots_only:
        args.rows, args.quick, args.no_write = "2,3,6", True, True
    # docs/*.svg illustrate docs/PERFORMANCE.md's tables: they are written together or not at all.
    if args.plots_dir is None:
        args.plots_dir = os.path.join(REPO, "build", "bench-plots") if args.no_write else os.path.join(REPO, "docs")

    for exe in (BINDONCE, TESTWORKER, HTTPD):
        if not have(exe):
            sys.exit("bench.py: %s is missing; run 'make all' first" % exe)
    rows = {"1", "2", "3", "5", "6", "8", "9", "10"} if args.rows == "all" else set(args.rows.split(","))
    if "1" in rows and not shutil.which("wrk"):
        sys.exit("bench.py: wrk is missing (apt-get install wrk)")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    bench = Bench(args)
    started = now()
    load0 = loadavg()
    info = machine()
    print("bindonce bench: %d CPUs, %s, kernel %s; scratch %s; load average %s" % (
        info["nproc"], info["model"], info["kernel"], bench.tmp, load0), flush=True)
    bench.timings = []
    try:
        bench.tools = build_tools(bench)
        for key, fn in (("1", row_throughput), ("2", row_restart), ("3", row_kills), ("5", row_scale),
                        ("6", row_reload), ("8", row_balance), ("9", row_roll16), ("10", row_10k)):
            if key in rows:
                t0 = now()
                fn(bench)
                bench.timings.append("row %s%s: %.0f s" % (key, " (and 4)" if key == "2" else "", now() - t0))
                print("    (%s)" % bench.timings[-1], flush=True)
        if not args.no_plots:
            draw_pictures(bench, info)
    finally:
        for p in bench.procs:
            if p.poll() is None:
                bench.leftovers.append("%d %s (still running at the end)" % (p.pid, p.args[0]))
                stop_tree(bench, [p], timeout=5)
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    elapsed = now() - started
    load1 = loadavg()
    print()
    print(table(bench))
    if bench.leftovers:
        print("\nprocesses left behind (killed): " + "; ".join(bench.leftovers))
    if not args.no_write:
        path = write_report(bench, info, args.rows, started, load0, load1, elapsed)
        print("\nwritten: %s (%.0f s)" % (os.path.relpath(path, REPO), elapsed))
    if bench.picture_failures:
        sys.exit("bench.py: FAILED: not drawn: " + "; ".join("%s: %s" % f for f in bench.picture_failures))


if __name__ == "__main__":
    main()
