"""(d) A command that cannot be executed: bounded respawns, then exit 69."""

import os
import re
import time

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
    t0 = time.monotonic()
    sup.start(args, [target])
    code = sup.wait_exit(timeout=15)
    elapsed = time.monotonic() - t0
    log = sup.log()

    assert code == 69, f"exit {code}, want 69; stderr:\n{log}"
    assert f"cannot execute '{target}': {errtext}" in log, log
    assert "giving up" in log, log
    # Delays per the contract: 0, then 50-100, 100-200, 200-400 ms ...: n attempts per
    # slot take under 1 s for n <= 5; allow generous slack for a loaded machine.
    assert elapsed < 5, f"took {elapsed:.1f}s to give up"

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
