"""The workers' output (issue 10, point 5): unchanged by default; with --log-prefix each line
comes through a pipe with "[slot N pid P] " in front, and a worker that floods while nobody
reads bindonce's stdout stalls neither supervision nor the other workers. Under the journal,
see test_journal_forward.py."""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import BINDONCE, free_tcp_port, proc_alive, wait_until

def read_lines(f, n, timeout):
    """n lines from a pipe, waiting at most timeout seconds in all."""
    import select
    fd = f.fileno()
    buf, deadline = b"", time.monotonic() + timeout
    while buf.count(b"\n") < n:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"timed out with {buf!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"EOF with {buf!r}"
        buf += chunk
    return buf.split(b"\n")[:n]


SLOT_LINE = re.compile(rb"^\[slot (\d+) pid (\d+)\] (.*)$")


class Run:
    """bindonce with stdout to a pipe the test reads (or leaves unread), stderr to a file."""

    def __init__(self, tmp_path, args, command, env=None, stderr=None):
        self.port = free_tcp_port()
        self.control = str(tmp_path / "ctl.sock")
        self.stderr_path = tmp_path / "stderr.log"
        err = stderr if stderr is not None else open(self.stderr_path, "wb")
        self.marker = b"BO_OUTPUT_TEST=" + str(tmp_path).encode()
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM"))}
        full_env.update(env or {})
        full_env["BO_OUTPUT_TEST"] = str(tmp_path)
        self.proc = subprocess.Popen([BINDONCE, "-l", f"127.0.0.1:{self.port}", "--control", self.control, *args,
                                      "--", *command], stdout=subprocess.PIPE, stderr=err, env=full_env)
        if stderr is None:
            err.close()

    def log(self):
        return self.stderr_path.read_text(errors="replace")

    def ctl(self, *args):
        return subprocess.run([BINDONCE, "ctl", "--control", self.control, *args], capture_output=True,
                              text=True, timeout=10)

    def status(self):
        r = self.ctl("status", "--json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_status(self, pred, timeout, what):
        def check():
            assert self.proc.poll() is None, f"bindonce exited {self.proc.returncode}:\n{self.log()}"
            st = self.status()
            return st if st and pred(st) else None
        return wait_until(check, timeout, what, interval=0.05)

    def close(self):
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            # Drain stdout meanwhile: the test may have left it unread.
            t = threading.Thread(target=self.proc.stdout.read, daemon=True)
            t.start()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                problems.append("bindonce ignored SIGTERM")
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        deadline = time.monotonic() + 2
        left = []
        while time.monotonic() < deadline:
            left = [p for p in (int(x) for x in os.listdir("/proc") if x.isdigit()) if self._ours(p)]
            if not left:
                break
            time.sleep(0.02)
        for pid in left:
            problems.append(f"left behind: {pid}")
            os.kill(pid, signal.SIGKILL)
        return problems

    def _ours(self, pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return self.marker in f.read().split(b"\0") and proc_alive(pid)
        except OSError:
            return False


@pytest.fixture
def run(tmp_path):
    made = []

    def start(args, command, **kw):
        d = tmp_path / f"run{len(made)}"
        d.mkdir()
        made.append(Run(d, args, command, **kw))
        return made[-1]

    yield start
    problems = [p for r in made for p in r.close()]
    if problems:
        pytest.fail("teardown: " + "; ".join(problems) + "\n" + "\n".join(r.log() for r in made), pytrace=False)


def test_default_output_is_bindonces_own(run):
    r = run([], ["/bin/sh", "-c", "echo plain-line; exec sleep 100"])
    line = r.proc.stdout.readline()
    assert line == b"plain-line\n"


def test_log_prefix_names_slot_and_pid(run):
    r = run(["-w", "2", "--log-prefix"],
            ["/bin/sh", "-c", "echo out-$BINDONCE_WORKER; echo err-$BINDONCE_WORKER >&2; exec sleep 100"])
    st = r.wait_status(lambda s: all(x["pid"] for x in s["slots"]), 10, "2 workers")
    pids = {x["slot"]: x["pid"] for x in st["slots"]}
    seen = set()
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        m = SLOT_LINE.match(r.proc.stdout.readline().rstrip(b"\n"))
        assert m, "a line without its prefix"
        slot, pid, text = int(m.group(1)), int(m.group(2)), m.group(3).decode()
        assert pids[slot] == pid, (slot, pid, pids)
        assert text in (f"out-{slot}", f"err-{slot}")
        seen.add(text)
    assert seen == {"out-0", "err-0", "out-1", "err-1"}


# Writes numbered lines as fast as it can, forever.
FLOOD = ["/usr/bin/python3", "-c",
         "import os, sys\nslot = os.environ['BINDONCE_WORKER']\ni = 0\n"
         "while True:\n    sys.stdout.write('flood %s %08d ' % (slot, i) + 'x' * 100 + '\\n')\n    i += 1\n"]


def test_flood_with_nobody_reading_stalls_nothing(run):
    """Nobody reads bindonce's stdout and a worker floods: bindonce still answers, restarts
    a killed worker, says it drops lines; what comes out afterwards is whole lines."""
    r = run(["-w", "2", "--log-prefix"], FLOOD)
    st = r.wait_status(lambda s: all(x["pid"] for x in s["slots"]), 10, "2 workers")
    wait_until(lambda: "dropping lines" in r.log(), 20, "the drop warning")
    victim = st["slots"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    r.wait_status(lambda s: s["slots"][1]["pid"] not in (None, victim), 10, "slot 1 replaced")
    assert r.log().count("dropping lines") == 1, r.log()
    # Now read: only whole, prefixed lines, each worker's numbers increasing.
    last = {}
    for _ in range(2000):
        line = r.proc.stdout.readline()
        m = SLOT_LINE.match(line.rstrip(b"\n"))
        assert m, line[:200]
        text = m.group(3).split()
        assert text[0] == b"flood" and len(text[3]) == 100, line[:200]
        pid, n = int(m.group(2)), int(text[2])
        assert n > last.get(pid, -1), "lines out of order"
        last[pid] = n
