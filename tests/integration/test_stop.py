"""(e) SIGTERM with a worker that ignores it and leaves a grandchild behind."""

import os
import signal
import time

import pytest

from conftest import TESTWORKER, port_bindable, proc_alive, wait_until
from testlib import WORKER_DEATH


@pytest.mark.log_expected(r"did not stop within", WORKER_DEATH)
def test_sigterm_ignored_worker_is_killed_after_stop_timeout(supervisor, free_port, short_dir):
    port = free_port()
    upath = str(short_dir / "s.sock")
    sup = supervisor().start(
        ["-w", "2", "--stop-timeout", "1", "-l", f"127.0.0.1:{port}", "-l", upath],
        [TESTWORKER, "--ignore-term", "--grandchild"], wait_workers=2)
    reps = sup.reports()
    workers = [r["pid"] for r in reps]
    grandchildren = [r["grandchild"] for r in reps]
    assert all(grandchildren), "test worker did not start its grandchild"
    assert sorted(f for f in sup.tw_files() if f.startswith("grandchild-")) == sorted(
        f"grandchild-{g}" for g in grandchildren)
    # SIGTERM is ignored from the report on; give the workers a moment to get there.
    wait_until(lambda: all(_ignores_term(p) for p in workers + grandchildren), 5,
               "workers and grandchildren to ignore SIGTERM")

    t0 = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=10)
    elapsed = time.monotonic() - t0
    assert code == 0, f"exit {code}; stderr:\n{sup.log()}"
    # Not before --stop-timeout, and the SIGKILL was the stop timeout's (no upper time
    # bound: wait_exit bounds it, the log orders it).
    assert elapsed >= 0.9, f"stopped after {elapsed:.2f}s with --stop-timeout 1"
    assert sup.log().count("did not stop within 1.0 s, sending SIGKILL") == 2, sup.log()

    # Nothing of the tree is left: not the workers, not their grandchildren.
    wait_until(lambda: not any(proc_alive(p) for p in workers + grandchildren), 2,
               "workers and grandchildren to be gone")
    assert not os.path.exists(upath), "unix socket file left after stop"
    assert port_bindable(port), f"port {port} still bound after stop"
    log = sup.log()
    assert "stopping 2 workers" in log, log
    assert "stopped" in log.splitlines()[-1], log


def _ignores_term(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigIgn:"):
                    return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1))
    except FileNotFoundError:
        return False
    return False


@pytest.mark.log_expected(r"stop requested again, sending SIGKILL", WORKER_DEATH)
def test_second_sigterm_kills_at_once(supervisor, free_port):
    """A second SIGTERM during the stop sends SIGKILL at once."""
    sup = supervisor().start(["--stop-timeout", "30", "-l", f"127.0.0.1:{free_port()}"],
                             [TESTWORKER, "--ignore-term"], wait_workers=1)
    [rep] = sup.reports()
    wait_until(lambda: _ignores_term(rep["pid"]), 5, "worker to ignore SIGTERM")
    t0 = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    sup.wait_log("stopping 1 workers", timeout=5)
    sup.send_signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=10)
    assert code == 0, sup.log()
    # The SIGKILL came from the second SIGTERM, not from the 30 s stop timeout.
    assert "stop requested again, sending SIGKILL to 1 workers" in sup.log(), sup.log()
    assert "did not stop within" not in sup.log(), sup.log()
    assert not proc_alive(rep["pid"])
