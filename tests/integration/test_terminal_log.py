"""The log a developer reads (issue 12, point 2; bindonce(1) LOGGING and DEVELOPMENT LOOP).

On a terminal, bindonce's lines start with the local time of day and "bindonce: ", no date,
no pid; a file, a pipe or the journal keep their formats. Under --watch a broken save is
told once: one error line naming the file, what failed, and that the previous version
keeps serving; the roll's own lines ("reload: ... rolling back", "reload failed") go to
debug. A `ctl reload` under --watch is not a save: its lines stay.

bindonce runs here on a real pseudo-terminal (os.openpty(): its stdout and stderr are the
slave); a thread reads the master without blocking and copies what the terminal shows to
the harness's log file, so that the usual teardown checks apply.
"""
import os
import re
import select
import subprocess
import threading

import pytest

from conftest import BINDONCE
from loadclient import request_once
from testlib import editor_save as edit
from testlib import (LIVE, TREE_VAR, Harness, TrackedPopen, clean_env, expected_from_markers, free_tcp_port,
                     quiet_for, wait_until)

PY = "/usr/bin/python3"
REQUEST = b"GET / HTTP/1.0\r\n\r\n"

TERMINAL_LINE = re.compile(r"^\d\d:\d\d:\d\d bindonce: ")
FILE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z bindonce\[\d+\]: ")
TERMINAL_BAD = re.compile(r"^\d\d:\d\d:\d\d bindonce: (?:error|warning): ")


class TerminalBindonce(Harness):
    """bindonce with a pseudo-terminal for stdout and stderr, listening on a free port."""

    def __init__(self, directory, args, command, expected=()):
        super().__init__(directory, expected)
        self.port = free_tcp_port()
        self.control = str(self.dir / "ctl.sock")
        self.argv = [BINDONCE, "-l", f"127.0.0.1:{self.port}", "--control", self.control, *args, "--", *command]
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        env = clean_env()
        env[TREE_VAR] = str(self.dir)
        try:
            self.proc = TrackedPopen(self.argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                     env=env, close_fds=True)
        finally:
            os.close(slave)
        self.remember(self.proc.pid)
        LIVE.append(self)
        self.lock = threading.Lock()
        self.text = ""
        self.done = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        """Until the terminal is closed by all its writers (EIO) or finish(): bounded reads."""
        with open(self.log_path, "a") as log:
            while not self.done.is_set():
                if not select.select([self.master], [], [], 0.1)[0]:
                    continue
                try:
                    data = os.read(self.master, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                text = data.decode(errors="replace").replace("\r\n", "\n")
                with self.lock:
                    self.text += text
                log.write(text)
                log.flush()

    def log(self):
        with self.lock:
            return self.text

    def lines(self):
        return self.log().splitlines()

    def unexpected_log_lines(self):
        # The harness's pattern knows the file and journal formats; these are the terminal's.
        return [l for l in self.lines()
                if TERMINAL_BAD.search(l) and not any(p.search(l) for p in self.expected)]

    def wait_log(self, pattern, count=1, timeout=10):
        def enough():
            if len(re.findall(pattern, self.log(), re.M)) >= count:
                return True
            assert self.proc.poll() is None, f"bindonce exited {self.proc.returncode}; log:\n{self.log()}"
            return False
        wait_until(enough, timeout, f"{count} x {pattern!r} on the terminal")

    def finish(self, stop_timeout=20):
        try:
            return super().finish(stop_timeout)
        finally:
            self.done.set()
            self.reader.join(5)
            os.close(self.master)


@pytest.fixture
def terminal(tmp_path, harnesses, request):
    def start(args, command):
        b = TerminalBindonce(tmp_path / f"tty{len(harnesses)}", args, command, expected_from_markers(request))
        harnesses.append(b)
        return b
    return start


def body(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    return rest.decode() if sep and head.startswith(b"HTTP/1.0 200") else None


def answer(port):
    cls, text, detail = request_once(("127.0.0.1", port), REQUEST, response_timeout=10, validator=body)
    return text if cls == "ok" else None


def bindonce_lines(text, since=0):
    """bindonce's own lines (the workers' output shares the terminal), from line `since`."""
    return [l for l in text.splitlines()[since:] if " bindonce: " in l or " bindonce[" in l]


BROKEN = r"server\.py changed: worker \d+ \(pid \d+\) exited with status 1 .*; still serving the previous version$"


def test_on_a_terminal_the_log_is_short_and_a_broken_save_is_told_once(terminal, app):
    b = terminal(["-w", "2", "--watch", str(app)], [PY, str(app / "server.py")])
    b.wait_log(r"all 2 workers ready", timeout=30)
    wait_until(lambda: answer(b.port) is not None, 30, "a first answer")

    # The short prefix, and nothing of the file format.
    ours = bindonce_lines(b.log())
    assert ours and all(TERMINAL_LINE.match(l) for l in ours), ours
    assert not any("bindonce[" in l or FILE_LINE.match(l) for l in b.lines()), b.log()
    assert any(re.search(r"bindonce: watching 1 directory for changes$", l) for l in ours), ours

    # A good save: one line for the start, one for the outcome. Its new workers, proven
    # by --min-ready, have read their file: the next save cannot reach a worker still
    # starting up with the old one.
    before = len(b.lines())
    edit(app / "server.py", "hello from the python example", "good v2")
    b.wait_log(r"server\.py changed: reloaded in \d+ ms$", timeout=60)
    after = bindonce_lines(b.log(), before)
    assert all(TERMINAL_LINE.match(l) for l in after), after
    assert not any("reload complete" in l or "reload: rolling" in l for l in after), after
    assert len([l for l in after if "server.py changed:" in l]) == 2, after
    wait_until(lambda: answer(b.port) == "good v2\n", 10, "the good save served")

    b.expect_log(BROKEN)
    before = len(b.lines())
    edit(app / "server.py", "MESSAGE = ", "MESSAGE = (")           # a syntax error
    b.wait_log(BROKEN, timeout=60)
    # Nothing more to come about it: the roll's own lines were folded into that one.
    quiet_for(1, lambda: len([l for l in bindonce_lines(b.log(), before) if "error:" in l or "warning:" in l]) > 1,
              "a second line about the broken save")
    after = bindonce_lines(b.log(), before)
    told = [l for l in after if "error:" in l or "warning:" in l]
    assert len(told) == 1, after
    assert TERMINAL_LINE.match(told[0]) and " bindonce: error: server.py changed: " in told[0], told
    assert not any("reload failed" in l or "rolling back" in l for l in after), after
    assert "SyntaxError" in b.log()                                    # the worker's own output
    assert answer(b.port) == "good v2\n"
    assert b.proc.poll() is None
    assert b.stop() == 0


def test_a_file_keeps_the_full_format_and_a_broken_save_is_told_once(bindonce, app):
    b = bindonce(["-w", "1", "--watch", str(app)], [PY, str(app / "server.py")])
    b.wait_log(r"all 1 workers ready", timeout=30)
    wait_until(lambda: answer(b.port) is not None, 30, "a first answer")   # the server has read its file
    lines = bindonce_lines(b.log())
    assert lines and all(FILE_LINE.match(l) for l in lines), lines
    b.expect_log(BROKEN)
    edit(app / "server.py", "MESSAGE = ", "MESSAGE = (")
    b.wait_log(BROKEN, timeout=60)
    quiet_for(1, lambda: "reload failed" in b.log() or "rolling back" in b.log(), "the roll's own lines")
    told = [l for l in bindonce_lines(b.log()) if re.search(r"bindonce\[\d+\]: (?:error|warning): ", l)]
    assert len(told) == 1, b.log()
    assert b.stop() == 0


@pytest.mark.log_expected(r"warning: reload: worker \d+ \(pid \d+\) exited with status 1 .*; rolling back to generation 0$",
                          r"error: reload failed: worker \d+ \(pid \d+\) exited with status 1 ")
def test_a_ctl_reload_under_watch_keeps_its_own_lines(bindonce, app, tmp_path):
    """Not a save (the watched directory is another): the reload tells its failure itself."""
    quiet = tmp_path / "watched"
    quiet.mkdir()
    b = bindonce(["-w", "1", "--watch", str(quiet)], [PY, str(app / "server.py")])
    b.wait_log(r"all 1 workers ready", timeout=30)
    wait_until(lambda: answer(b.port) is not None, 30, "a first answer")
    edit(app / "server.py", "MESSAGE = ", "MESSAGE = (")
    r = b.ctl("reload", timeout=60)
    assert r.returncode == 1 and "reload failed" in r.stderr, (r.returncode, r.stderr)
    b.wait_log(r"error: reload failed: worker \d+ \(pid \d+\) exited with status 1")
    assert "rolling back to generation 0" in b.log()
    assert "changed:" not in b.log()
    assert b.stop() == 0
