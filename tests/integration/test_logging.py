"""Logging: one line per event; sd-daemon priority prefixes when stderr is the journal."""

import os
import re

import pytest

from testlib import BINDONCE, Harness, free_tcp_port


@pytest.fixture
def run_once(tmp_path, harnesses):
    """run_once(journal_stream, command) -> the log lines of `bindonce --restart no` with one
    worker; journal_stream(log_path) gives JOURNAL_STREAM (None: unset)."""
    def run(journal_stream, command, want_code, expected=()):
        h = Harness(tmp_path / ("run%d" % len(harnesses)), expected)
        harnesses.append(h)
        h.log_path.touch()
        env = {}
        stream = journal_stream(h.log_path)
        if stream:
            env["JOURNAL_STREAM"] = stream
        h.popen([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", "none",
                 "--restart", "no", "--"] + command, env_extra=env)
        code = h.wait_exit(10)
        assert code == want_code, "exit %d, want %d; log:\n%s" % (code, want_code, h.log())
        lines = h.log().splitlines()
        assert lines, "nothing logged"
        return lines
    return run


def dev_ino(path):
    st = os.stat(path)
    return "%d:%d" % (st.st_dev, st.st_ino)


DEATH_4 = r"worker 0 \(pid \d+\) exited with status 4"
TIMESTAMPED = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z bindonce\[\d+\]: "


def test_plain_lines_have_timestamps(run_once):
    lines = run_once(lambda log: None, ["sh", "-c", "exit 4"], 4, [DEATH_4])
    for line in lines:
        assert re.match(TIMESTAMPED, line), line
    assert any("worker 0 started, pid" in l for l in lines)
    assert any(re.search(r"warning: " + DEATH_4, l) for l in lines)


def test_journal_lines_have_priorities_and_no_timestamps(run_once):
    lines = run_once(dev_ino, ["sh", "-c", "exit 4"], 4, [DEATH_4])
    for line in lines:
        assert re.match(r"<[0-7]>", line), line
        assert not re.match(r"<\d>\d{4}-", line), "a timestamp under the journal: " + line
    assert any(re.match(r"<6>listening on 127\.0\.0\.1:\d+", l) for l in lines), lines
    assert any(re.match(r"<4>" + DEATH_4, l) for l in lines), lines


def test_journal_stream_of_another_file_is_ignored(run_once, tmp_path):
    other = tmp_path / "other"
    other.write_text("")
    lines = run_once(lambda log: dev_ino(other), ["true"], 0)
    # Plain lines, as on a terminal: JOURNAL_STREAM names another file, not our stderr.
    for line in lines:
        assert re.match(TIMESTAMPED, line), line
    assert any("worker 0 started, pid" in l for l in lines)
