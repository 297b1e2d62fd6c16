"""Logging: one line per event; sd-daemon priority prefixes when stderr is the journal."""

import os
import re
import subprocess

from conftest import BINDONCE, free_tcp_port


def run_once(tmp_path, journal):
    log = tmp_path / ("journal.log" if journal else "plain.log")
    with open(log, "w") as f:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "JOURNAL_"))}
        if journal:
            st = os.fstat(f.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        code = subprocess.run([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", "none",
                               "--restart", "no", "--", "sh", "-c", "exit 4"],
                              stdout=f, stderr=f, env=env, timeout=10).returncode
    assert code == 4
    return log.read_text().splitlines()


def test_plain_lines_have_timestamps(tmp_path):
    lines = run_once(tmp_path, journal=False)
    assert lines
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z bindonce\[\d+\]: ", line), line
    assert any("worker 0 started, pid" in l for l in lines)
    assert any(re.search(r"warning: worker 0 \(pid \d+\) exited with status 4", l) for l in lines)


def test_journal_lines_have_priorities_and_no_timestamps(tmp_path):
    lines = run_once(tmp_path, journal=True)
    assert lines
    for line in lines:
        assert re.match(r"<[0-7]>", line), line
        assert not re.match(r"<\d>\d{4}-", line), "a timestamp under the journal: " + line
    assert any(re.match(r"<6>listening on 127\.0\.0\.1:\d+", l) for l in lines), lines
    assert any(re.match(r"<4>worker 0 \(pid \d+\) exited with status 4", l) for l in lines), lines


def test_journal_stream_of_another_file_is_ignored(tmp_path):
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    log = tmp_path / "mismatch.log"
    with open(log, "w") as f:
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        subprocess.run([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", "none",
                        "--restart", "no", "--", "true"], stdout=f, stderr=f, env=env, timeout=10)
    assert not log.read_text().startswith("<"), "JOURNAL_STREAM names another file, not our stderr"
