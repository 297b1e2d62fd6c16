"""--watch: the developer's loop (bindonce(1) DEVELOPMENT LOOP).

A Python server of the kind a developer edits (docs/examples/python/server.py: the plain
blocking accept() loop of the 2009 thread), run under `bindonce --watch DIR`, with a
client loop running all along: a save shows up in the answers, a save that does not run
leaves the previous version serving, and no connection is refused or lost meanwhile.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import BINDONCE
from loadclient import LoadClient, request_once
from testlib import editor_save as edit, free_tcp_port, quiet_for, wait_until

PY = "/usr/bin/python3"


REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def body(data):
    """The example's answer body, or None (a bad payload)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    return rest.decode() if sep and head.startswith(b"HTTP/1.0 200") else None


def answer(port):
    cls, text, detail = request_once(("127.0.0.1", port), REQUEST, response_timeout=10, validator=body)
    assert cls == "ok", (cls, detail)
    return text


def start(bindonce, app, *extra, workers=2):
    b = bindonce(["-w", str(workers), "--watch", str(app), *extra], [PY, str(app / "server.py")])
    b.wait_log(r"all %d workers ready" % workers, timeout=30)
    wait_until(lambda: answer_or_none(b.port) is not None, 30, "a first answer")
    return b


def answer_or_none(port):
    try:
        return answer(port)
    except AssertionError:
        return None


def load(port, duration=60):
    return LoadClient(("127.0.0.1", port), threads=2, duration=duration, request=REQUEST,
                      response_timeout=10, validator=body)


def assert_clean(result):
    assert result.counts["refused"] == 0, result.summary()
    assert result.attempts - result.counts["ok"] == 0, result.summary()


def test_a_save_reaches_the_answers_and_nothing_is_refused(bindonce, app):
    b = start(bindonce, app, workers=1)
    client = load(b.port)
    client.start()
    try:
        for i in range(1, 21):
            edit(app / "server.py", "hello from the python example\\n" if i == 1 else "version %d\\n" % (i - 1),
                 "version %d\\n" % i)
            b.wait_log(r"server\.py changed: reloaded in \d+ ms", count=i, timeout=60)
            wait_until(lambda: answer(b.port) == "version %d\n" % i, 10, "version %d served" % i)
        client.wait_ok(10, timeout=30)
    finally:
        result = client.stop()
    assert_clean(result)
    # The traffic overlapped the saves: enough answers of more than one version.
    assert result.counts["ok"] >= 100, result.summary()


def test_a_broken_save_keeps_the_previous_version_serving(bindonce, app):
    b = start(bindonce, app)
    b.expect_log(r"reload failed", r"server\.py changed: .*still serving the previous version",
                 r"rolling back", r"exited with status 1")
    edit(app / "server.py", "hello from the python example", "good v2")
    b.wait_log(r"server\.py changed: reloaded in", timeout=60)
    client = load(b.port)
    client.start()
    try:
        edit(app / "server.py", "MESSAGE = ", "MESSAGE = (")           # a syntax error
        b.wait_log(r"server\.py changed: .*; still serving the previous version", timeout=60)
        # The error reached the developer: the worker's traceback is on bindonce's stderr.
        assert "SyntaxError" in b.log()
        # Still running and serving the last good version, 10 s on.
        quiet_for(10, lambda: b.proc.poll() is not None or answer(b.port) != "good v2\n",
                  "bindonce exiting or another answer than the last good one")
        edit(app / "server.py", "MESSAGE = (", "MESSAGE = ")          # the fix...
        edit(app / "server.py", "good v2", "fixed v3")
        b.wait_log(r"server\.py changed: reloaded in", count=2, timeout=60)
        wait_until(lambda: answer(b.port) == "fixed v3\n", 10, "the fix served")
    finally:
        result = client.stop()
    assert_clean(result)
    assert b.proc.poll() is None


def log_time(line):
    """The time of day (time.time()) of a bindonce log line, or None."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ", line)
    return datetime.fromisoformat(m.group(1) + "+00:00").timestamp() if m else None


def burst_rolled(log, last_write):
    lines = log.splitlines()
    rolling = [i for i, l in enumerate(lines) if "changed: rolling" in l]
    if not rolling or log_time(lines[rolling[-1]]) < last_write - 0.002:   # stamps are in ms
        return False
    return any("changed: reloaded in" in l for l in lines[rolling[-1] + 1:])


def test_an_editor_save_is_one_roll_and_a_burst_a_few(bindonce, app):
    b = start(bindonce, app, "--min-ready", "0.2")
    edit(app / "server.py", "hello from the python example", "v2")
    b.wait_log(r"server\.py changed: reloaded in", timeout=60)
    quiet_for(1, lambda: b.log().count("changed: rolling") > 1, "a second roll for one save")
    assert b.log().count("changed: rolling") == 1

    # 200 writes in about a second: the debounce (0.1 s, capped at 1 s) makes a few rolls.
    t0 = time.monotonic()
    for i in range(200):
        (app / "notes.txt").write_text("note %d\n" % i)
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    last_write = time.time()
    # Wait for the event the count needs: the burst's rolls are over, i.e. a roll started
    # after the last write (a change re-arms the trailing debounce, so there is one) and
    # its outcome is logged (a change during a roll starts it over, one outcome for all).
    wait_until(lambda: burst_rolled(b.log(), last_write), 30, lambda: "the burst's last roll:\n" + b.log())
    rolls = b.log().count("changed: rolling") - 1
    assert 1 <= rolls <= 2 + int(elapsed), (rolls, elapsed)


def test_a_directory_made_later_is_watched(bindonce, app):
    b = start(bindonce, app, "--min-ready", "0.2")
    (app / "pkg").mkdir()
    b.wait_log(r"pkg changed: rolling", timeout=30)
    b.wait_log(r"changed: reloaded in", timeout=60)
    (app / "pkg" / "mod.py").write_text("X = 1\n")
    b.wait_log(r"pkg/mod\.py changed: rolling", timeout=30)
    b.wait_log(r"changed: reloaded in", count=2, timeout=60)


def test_ignored_files_do_not_roll(bindonce, app):
    b = start(bindonce, app, "--watch-ignore", "*.log")
    (app / "debug.log").write_text("x\n")
    (app / ".server.py.swp").write_text("x\n")
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "server.cpython-311.pyc").write_text("x\n")
    quiet_for(1, lambda: "changed" in b.log(), "a roll for an ignored file")


def test_watch_restart_stops_first(bindonce, app):
    b = start(bindonce, app, "--watch-restart", workers=1)
    old = b.wait_status(lambda st: st["slots"][0]["pid"], 10, "a worker")["slots"][0]["pid"]
    edit(app / "server.py", "hello from the python example", "restarted")
    b.wait_log(r"server\.py changed: restarting 1 workers", timeout=30)
    wait_until(lambda: answer_or_none(b.port) == "restarted\n", 30, "the new version served")
    st = b.status()
    assert st["slots"][0]["pid"] != old


@pytest.mark.parametrize("path,code,message", [
    ("missing", 64, r"--watch '.*missing': No such file or directory"),
])
def test_bad_watch_paths(tmp_path, path, code, message):
    r = subprocess.run([BINDONCE, "-l", "127.0.0.1:1", "--control", "none", "--watch",
                        str(tmp_path / path), "--", "true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == code, r
    assert re.search(message, r.stderr), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_unreadable_path_is_77():
    base = Path(tempfile.mkdtemp(prefix="bo-watch-", dir="/tmp"))     # nobody may reach it...
    os.chmod(base, 0o755)
    d = base / "secret"                                                 # ...but not read this
    d.mkdir(mode=0o700)
    try:
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        BINDONCE, "-l", "127.0.0.1:18080", "--control", "none", "--watch", str(d), "--", "true"],
                           capture_output=True, text=True, timeout=10)
    finally:
        shutil.rmtree(base)
    assert r.returncode == 77, r
    assert "--watch '%s'" % d in r.stderr and "Permission denied" in r.stderr, r.stderr


def test_watch_options_need_watch():
    r = subprocess.run([BINDONCE, "-l", "127.0.0.1:1", "--watch-restart", "--", "true"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 64 and "go with --watch" in r.stderr, r


@pytest.mark.parametrize("n", ["1", "3"])
def test_give_up_with_watch_is_refused(tmp_path, n):
    """--give-up N (N > 0) with --watch: a usage error (64) in one line that names both and
    the fix; nothing bound, nothing started."""
    port = free_tcp_port()
    r = subprocess.run([BINDONCE, "-l", f"127.0.0.1:{port}", "--control", "none", "--give-up", n,
                        "--watch", str(tmp_path), "--", "sh", "-c", f"touch {tmp_path}/started"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 64, r
    assert r.stderr == (f"bindonce: --give-up {n} with --watch: with --watch bindonce never gives up; "
                        "drop --give-up\n"), r.stderr
    assert not (tmp_path / "started").exists()


def test_give_up_0_with_watch_is_accepted(bindonce, app):
    """--give-up 0 says what --watch implies (never give up): accepted, it serves."""
    b = start(bindonce, app, "--give-up", "0")
    assert b.proc.poll() is None
