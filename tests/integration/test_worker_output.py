"""The workers' output (issue 10, point 5): unchanged by default; with --log-prefix each line
comes through a pipe with "[slot N pid P] " in front, and a worker that floods while nobody
reads bindonce's stdout stalls neither supervision nor the other workers. Under the journal,
see test_journal_forward.py."""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import Bindonce
from testlib import expected_from_markers, wait_until

SLOT_LINE = re.compile(rb"^\[slot (\d+) pid (\d+)\] (.*)$")


class Run(Bindonce):
    """bindonce with stdout to a pipe the test reads (or leaves unread), its log (stderr)
    to a file: a Bindonce, so the harness teardown checks the stop's exit code, the log
    lines, the fd count, leftovers and sanitizer reports."""

    def __init__(self, directory, args, command, expected=()):
        super().__init__(directory, args, command, expected, stdout=subprocess.PIPE)

    def finish(self, stop_timeout=20):
        # Drain stdout while bindonce stops: the test may have left it unread, and a
        # worker blocked on a full pipe would hold the stop up.
        if self.proc is not None and self.proc.stdout is not None:
            threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        try:
            return super().finish(stop_timeout)
        finally:
            if self.proc is not None and self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def run(tmp_path, harnesses, request):
    """run(args, command) -> a started Run, finished by the harness teardown."""
    def start(args, command):
        r = Run(tmp_path / f"run{len(harnesses)}", args, command, expected_from_markers(request))
        harnesses.append(r)
        return r
    return start


def test_default_output_is_bindonces_own(run):
    r = run([], ["/bin/sh", "-c", "echo plain-line; exec sleep 100"])
    line = r.proc.stdout.readline()
    assert line == b"plain-line\n"
    r.wait_log(r"worker 0 started")        # and the fd count teardown compares is marked


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
    # What this test provokes: the drop warning, its tally (at the latest at the stop), the kill.
    r.expect_log(r"warning: the reader of bindonce's standard output is too slow: dropping lines "
                 r"of the workers' output$",
                 r"warning: \d+ lines of the workers' output were dropped$",
                 rf"warning: worker 1 \(pid {victim}\) killed by signal KILL$")
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
