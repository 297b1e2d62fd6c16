"""(d) A command that cannot be executed: bounded respawns, then exit 69."""

import os
import re

import pytest

from testlib import WORKER_DEATH
# Workers here die on purpose: bindonce logs their deaths as warnings.
pytestmark = pytest.mark.log_expected(WORKER_DEATH, r"worker \d+: cannot execute ", r"giving up: every worker failed")


def make_target(kind, d):
    if kind == "missing":
        return str(d / "no-such-dir" / "no-such-worker"), "No such file or directory"
    if kind == "not-executable":
        p = d / "not-executable"
        p.write_text("#!/bin/sh\nexit 0\n")
        os.chmod(p, 0o644)
        return str(p), "Permission denied"
    if kind == "directory":
        p = d / "a-directory"
        p.mkdir()
        return str(p), "Permission denied"
    raise ValueError(kind)


LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:(\d\d\.\d{3}))Z bindonce\[\d+\]: (.*)$")
BACKOFF = re.compile(r"^worker (\d+) restarting in (\d+) ms \((\d+) early exits in a row\)$")


def stamp(hhmmss, sec):
    """Seconds of the day of a log line's time stamp."""
    h, m = int(hhmmss[11:13]), int(hhmmss[14:16])
    return h * 3600 + m * 60 + float(sec)


def check_backoff(log, slot, n):
    """Each "restarting in X ms (K early exits in a row)" of `slot`: X within the contract's
    range for K, and the slot's next attempt logged no sooner than X ms later."""
    announced, pending = [], None
    for line in log.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t, text = stamp(m.group(1), m.group(2)), m.group(3)
        b = BACKOFF.match(text)
        if b and int(b.group(1)) == slot:
            ms, k = int(b.group(2)), int(b.group(3))
            low = 50 * 2 ** (k - 2)
            assert k >= 2 and low <= ms <= 2 * low, f"slot {slot}: {ms} ms after {k} early exits\n{log}"
            announced.append(k)
            pending = (t, ms)
        elif pending and re.match(rf"error: worker {slot}: cannot execute ", text):
            assert t - pending[0] >= pending[1] / 1000 - 0.002, \
                f"slot {slot}: next attempt {t - pending[0]:.3f} s after 'restarting in {pending[1]} ms'\n{log}"
            pending = None
    # Early exits 2 .. n-1 wait; the n-th gives up (or, if another slot has not failed n
    # times yet, waits once more).
    assert announced in (list(range(2, n)), list(range(2, n + 1))), \
        f"slot {slot}: backoffs after {announced} early exits, n = {n}\n{log}"


@pytest.mark.parametrize("kind,workers,give_up", [
    # Standalone, bindonce gives up only when --give-up is given (issue 8): the default
    # value, 5, given explicitly.
    ("missing", 1, 5),
    ("not-executable", 2, 3),
    ("directory", 1, 3),
])
def test_cannot_exec(supervisor, free_port, tmp_path, kind, workers, give_up):
    target, errtext = make_target(kind, tmp_path)
    n = 5 if give_up is None else give_up
    args = ["-w", str(workers), "-l", f"127.0.0.1:{free_port()}"]
    if give_up is not None:
        args += ["--give-up", str(give_up)]
    sup = supervisor()
    sup.start(args, [target])
    code = sup.wait_exit(timeout=15)        # only stops a hung test
    log = sup.log()

    assert code == 69, f"exit {code}, want 69; stderr:\n{log}"
    assert f"cannot execute '{target}': {errtext}" in log, log
    assert "giving up" in log, log
    # Delays per the contract: 0, then 50-100, 100-200, 200-400 ms ...: the delay bindonce
    # announces for each slot is in its range, and it waited at least that long before
    # that slot's next attempt (bindonce's own log timestamps; a lower bound only: how
    # late a loaded machine runs a timer decides nothing here).
    for slot in range(workers):
        check_backoff(log, slot, n)

    # Bounded spawns: each slot failed at least n times, and not many more.
    # A spawn shows as "worker N started" or, when exec fails before that is logged,
    # "worker N: cannot execute"; count the per-slot maximum of the two.
    for slot in range(workers):
        started = len(re.findall(rf"worker {slot} started", log))
        failed = len(re.findall(rf"worker {slot}\b[^\n]*cannot execute", log))
        spawns = max(started, failed)
        assert n <= failed <= n + 1, f"slot {slot}: {failed} exec failures, want {n}..{n + 1}\n{log}"
        assert spawns <= n + 1, f"slot {slot}: {spawns} spawns, want at most {n + 1}\n{log}"
    cannot = log.count(f"cannot execute '{target}'")
    assert n * workers <= cannot <= (n + 1) * workers, f"{cannot} exec failures\n{log}"
    assert sup.tw_files() == []
    # The give-up line is the last word.
    assert "giving up" in sup.log_lines()[-1] or any(
        "giving up" in l for l in sup.log_lines()[-3:]), log
