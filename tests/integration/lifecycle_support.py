"""Helpers for test_lifecycle.py and test_control.py (issue 4: readiness, rolling restart,
watchdog, scaling, the control socket and `bindonce ctl`).

- Instance: one bindonce running tests/integration/lifecycle_worker.py, with its own
  --name and --control under a short private directory; stopped by pid at teardown, after
  which no process of its tree may be left.
- Load: connection-per-request HTTP load; every attempt is classified by
  loadclient.request_once (TESTING.md's classes, plus client_error), and each ok answer is
  kept with its time and the (pid, slot, version) that gave it.
- raw_request: a control-socket client that sends exact bytes.
"""

import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from loadclient import CLASSES, LoadClient  # noqa: F401
from testlib import (BINDONCE, CLK_TCK, LIFECYCLE_WORKER as WORKER, PYTHON, Harness, alive,  # noqa: F401
                     all_pids, descendants, expected_from_markers, fd_count, free_tcp_port as free_port,
                     monotonic, proc_stat, read_to_eof, wait_until)

# What lifecycle_worker.py answers.
ANSWER_RE = re.compile(rb"\AHTTP/1\.0 200 OK\r\n(?:[^\r\n]*\r\n)*?\r\n"
                       rb"pid=(\d+) slot=(\d+) version=(\S+)\n\Z")


def answer_validator(data):
    """(pid, slot, version) of a valid lifecycle_worker answer, else None."""
    m = ANSWER_RE.match(data)
    return (int(m.group(1)), int(m.group(2)), m.group(3).decode()) if m else None


def boot_time():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


# ---- the control socket ---------------------------------------------------------------------

def raw_request(path, data, half_close=True, timeout=3.0, fds=None):
    """Sends exact bytes to the control socket, returns everything it answers until EOF."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        try:
            if fds:
                socket.send_fds(s, [data], fds)
            else:
                s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: read that answer
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return read_to_eof(s, reset_ends=True)
    finally:
        s.close()


# ---- one bindonce --------------------------------------------------------------------------

class Instance(Harness):
    """bindonce -l 127.0.0.1:PORT -w N --name NAME --control DIR/ctl.sock ... -- lifecycle_worker."""

    def __init__(self, name, workers=2, args=(), mode="ok", version="v1", backlog=None,
                 stop_timeout=3, expected=()):
        # AF_UNIX paths are limited to 107 bytes: a short directory of our own, not tmp_path.
        super().__init__(tempfile.mkdtemp(prefix="bo-lc-"), expected)
        self.name = name
        self.control = os.path.join(self.dir, "ctl.sock")
        self.mode_file = os.path.join(self.dir, "mode")
        self.version_file = os.path.join(self.dir, "version")
        self.events_file = os.path.join(self.dir, "events")
        self.log_file = str(self.log_path)
        self.workers = workers
        self.args = list(args)
        self.backlog = backlog
        self.stop_timeout = stop_timeout
        self.port = None
        self.set_mode(mode)
        self.set_version(version)

    # files the workers read at start
    def set_mode(self, mode):
        with open(self.mode_file + ".tmp", "w") as f:
            f.write(mode + "\n")
        os.rename(self.mode_file + ".tmp", self.mode_file)

    def set_version(self, version):
        with open(self.version_file + ".tmp", "w") as f:
            f.write(version + "\n")
        os.rename(self.version_file + ".tmp", self.version_file)

    def command(self):
        cmd = [BINDONCE, "-l", "127.0.0.1:%d" % self.port, "-w", str(self.workers),
               "--name", self.name, "--control", self.control,
               "--stop-timeout", str(self.stop_timeout)]
        if self.backlog:
            cmd += ["--backlog", str(self.backlog)]
        return cmd + self.args + ["--", PYTHON, WORKER]

    def start(self, wait=True):
        env = dict(LW_MODE_FILE=self.mode_file, LW_VERSION_FILE=self.version_file, LW_EVENTS=self.events_file)
        for _ in range(5):
            self.port = free_port()
            self.popen(self.command(), env_extra=env, cwd=self.dir)
            # Up when the control socket accepts (the file exists from bind(), before
            # listen()); a lost race for the port exits 71.
            wait_until(lambda: self.proc.poll() is not None or self.control_accepts(), 10,
                       "bindonce's control socket", interval=0.01)
            if self.proc.poll() == 71 and "in use" in self.log():
                self.proc.wait()
                self.log_path.write_text("")
                continue
            break
        assert self.proc.poll() is None, "bindonce exited at start (%s):\n%s" % (self.proc.returncode, self.log())
        if wait:
            self.wait_settled(self.workers)
            self.mark_fds()
        return self

    def control_accepts(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(self.control)
                return True
            except OSError:
                return False

    def events(self, kind=None):
        out = []
        try:
            with open(self.events_file) as f:
                for line in f:
                    if line.endswith("\n"):
                        ev = json.loads(line)
                        if kind is None or ev["event"] == kind:
                            out.append(ev)
        except FileNotFoundError:
            pass
        return out

    def ctl_command(self, *args):
        return [BINDONCE, "ctl", "--control", self.control] + list(args)

    def ctl(self, *args, timeout=30, control=True, user=None):
        cmd = [BINDONCE, "ctl"] + (["--control", self.control] if control else []) + list(args)
        if user:
            cmd = ["setpriv", "--reuid=%s" % user[0], "--regid=%s" % user[1], "--clear-groups"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def status(self):
        r = self.ctl("status", "--json", timeout=10)
        assert r.returncode == 0, "ctl status --json: exit %d: %s" % (r.returncode, r.stderr)
        st = json.loads(r.stdout)
        for s in st["slots"]:
            for key in ("pid", "next_pid"):
                if s.get(key):
                    self.remember(s[key])
        return st

    def pids(self, st=None):
        """{slot: pid} of the active slots (0..workers-1)."""
        st = st or self.status()
        return {s["slot"]: s["pid"] for s in st["slots"][:st["workers"]]}

    def settled(self, n, st):
        active = st["slots"][:st["workers"]]
        return (st["workers"] == n and st["ready"] == n and not st["reloading"]
                and len(st["slots"]) == n
                and all(s["state"] == "running" and s["ready"] and s["pid"] and not s.get("next_pid")
                        for s in active))

    def wait_settled(self, n, timeout=10):
        """n workers, all running and ready, no reload going on, no surplus slot left, and
        each of them has read its mode (with --ready exec, bindonce counts a worker ready
        at exec, before it has read anything)."""
        def check():
            st = self.status()
            if not self.settled(n, st):
                return None
            started = {ev["pid"] for ev in self.events("start")}
            return st if all(s["pid"] in started for s in st["slots"]) else None
        return wait_until(check, timeout, "%d settled workers of %s; log:\n%s" % (n, self.name, self.log()),
                          interval=0.05)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops bindonce by its pid; returns its exit code (the tree is checked at teardown)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            return super().stop(sig, timeout)
        return self.wait_exit(timeout)

    def remember_tree(self):
        for pid in descendants(self.pid):
            self.remember(pid)
        for ev in self.events("start"):
            self.remember(ev["pid"])

    def finish(self, stop_timeout=20):
        try:
            return super().finish(stop_timeout)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def instances(harnesses, request):
    """A factory: instances(name, ...) -> a started Instance; all finished at teardown."""
    def make(name, start=True, expected=(), **kw):
        inst = Instance(name, expected=list(expected) + expected_from_markers(request), **kw)
        harnesses.append(inst)
        if start:
            inst.start()
        return inst
    return make


# ---- load -----------------------------------------------------------------------------------

class Load(LoadClient):
    """loadclient.LoadClient on lifecycle_worker's answer, at 127.0.0.1:port: every attempt
    lands in exactly one of CLASSES, and each ok answer is kept in `answers` as
    (t_start, pid, slot, version, t_end). `path` may be a callable (a path per request)."""

    def __init__(self, port, threads=3, path="/", connect_timeout=3.0, response_timeout=8.0,
                 pause=0.0):
        def request():
            p = path() if callable(path) else path
            return b"GET " + p.encode() + b" HTTP/1.0\r\nHost: test\r\n\r\n"
        super().__init__(("127.0.0.1", port), threads=threads, duration=120.0, keep_answers=True,
                         pause=pause, request=request, connect_timeout=connect_timeout,
                         response_timeout=response_timeout, validator=answer_validator)
        self.port = port

    def one(self):
        """One attempt: (class, (pid, slot, version) or a detail)."""
        cls, ident, detail = self._attempt()
        return cls, ident if cls == "ok" else detail

    def stop(self, timeout=None):
        return super().stop(timeout if timeout is not None else
                            self.request_kw["connect_timeout"] + self.request_kw["response_timeout"] + 2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def attempts(self):
        return self.result.attempts

    def losses(self):
        return {c: n for c, n in self.result.counts.items() if c != "ok" and n}

    def summary(self):
        return self.result.summary()


def http_get(port, path="/", timeout=5.0):
    """One request; returns (pid, slot, version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
        data = read_to_eof(s)
    ident = answer_validator(data)
    assert ident, "bad answer %r" % data[:200]
    return ident
