"""The restart contract of bindonce(1), clause by clause, against real processes.

Workers here are small shell scripts: what matters is how and when they end.
"""

import os
import re
import signal
import socket
import time

import pytest

from testlib import EXAMPLE_HTTPD, WORKER_DEATH, cpu_seconds, proc_alive, quiet_for, read_to_eof, wait_until

# Workers here die on purpose: their deaths are logged as warnings.
pytestmark = pytest.mark.log_expected(WORKER_DEATH, r"giving up: every worker failed")
# The error a crash loop of "exit 1" workers gets after its 5th early death in a row.
CRASH_LOOP = r"error: every worker is crash-looping \(5 or more early failures in a row, last: exit status 1, "


@pytest.fixture
def run(bindonce):
    """run(args, script): bindonce with a shell script as its worker, 1 s stop timeout."""
    return lambda args, script: bindonce(["--stop-timeout", "1", *args], ["sh", "-c", script])


def started_times(log):
    """Wall-clock seconds of each 'worker N started' line."""
    out = []
    for m in re.finditer(r"T(\d\d):(\d\d):(\d\d\.\d+)Z bindonce\[\d+\]: worker \d+ started", log):
        h, mi, s = m.groups()
        out.append(int(h) * 3600 + int(mi) * 60 + float(s))
    return out


def kill_worker_0(r, started):
    """SIGKILL worker 0 once its start number `started` is logged."""
    r.wait_log(r"worker 0 started, pid (\d+)", count=started)
    os.kill(int(re.findall(r"worker 0 started, pid (\d+)", r.log())[-1]), signal.SIGKILL)


def counted_script(tmp_path, *runs):
    """A worker script whose N-th run (from 1) does runs[N-1] (the last one from then on):
    the run number is kept in a state file."""
    state = tmp_path / "runs"
    cases = "".join("  %d) %s ;;\n" % (i + 1, r) for i, r in enumerate(runs[:-1]))
    return ('n=$(($(cat %s 2>/dev/null || echo 0) + 1)); echo $n > %s\n'
            'case $n in\n%s  *) %s ;;\nesac\n' % (state, state, cases, runs[-1]))


def delay_lines(log):
    """The early-exit counts of the 'restarting in' lines, in order."""
    return [int(n) for n in re.findall(r"restarting in \d+ ms \((\d+) early exits", log)]


def test_1_stable_runs_reset_the_count(run, tmp_path):
    # Two early deaths (the second is delayed), then a stable run (1.5 s), then an early
    # death: with the count reset by the stable run it is the first of a new streak and is
    # restarted at once; without the reset it would be the third in a row and delayed.
    r = run(["--give-up", "0"], counted_script(tmp_path, "exit 1", "exit 1", "sleep 1.5; exit 1",
                                               "exit 1", "exec sleep 1000"))
    r.wait_log(r"worker 0 started", count=5, timeout=15)
    r.wait_log(WORKER_DEATH, count=4)
    assert delay_lines(r.log()) == [2], "only the 2nd death may be delayed:\n" + r.log()
    assert r.proc.poll() is None


@pytest.mark.log_expected(CRASH_LOOP)
def test_2_first_early_death_is_immediate_then_backoff_doubles(run):
    r = run(["--give-up", "0"], "exit 1")
    r.wait_log(r"restarting in \d+ ms \(5 early exits", timeout=10)
    log = r.log()
    delays = {int(n): int(ms) for ms, n in re.findall(r"restarting in (\d+) ms \((\d+) early exits", log)}
    # No delay line for the first early death; then [d/2, d] with d = 100 ms * 2^(n-2).
    assert 1 not in delays
    for n in (2, 3, 4, 5):
        d = 100 * 2 ** (n - 2)
        assert d // 2 - 1 <= delays[n] <= d, "failure %d: %d ms not in [%d, %d]" % (n, delays[n], d // 2, d)
    # The first restart came at once: the log has no delay line for it (above). And the
    # delays were really waited for.
    t = started_times(log)
    assert t[2] - t[1] >= 0.045 and t[4] - t[3] >= 0.19


def test_3_restart_on_failure_and_no(run):
    clean = run(["--restart", "on-failure"], "sleep 0.1; exit 0")
    assert clean.wait_exit() == 0, clean.log()
    assert len(started_times(clean.log())) == 1

    failing = run(["--restart", "on-failure", "--give-up", "0"], "sleep 0.05; exit 3")
    # It fails until teardown: on a slow machine long enough to be reported as a crash loop.
    failing.expect_log(CRASH_LOOP.replace("status 1", "status 3"))
    failing.wait_log(r"worker 0 started", count=3)

    never = run(["--restart", "no"], "sleep 0.05; exit 3")
    # Clause 4: no worker left, none to start: the last worker's status, shell style.
    assert never.wait_exit() == 3, never.log()
    assert len(started_times(never.log())) == 1


def test_4_last_status_shell_style_for_a_signal(run):
    r = run(["--restart", "no"], "kill -KILL $$")
    assert r.wait_exit() == 128 + signal.SIGKILL, r.log()


def test_5_one_flapping_slot_never_gives_up(run):
    # Slot 0 dies at once every time; slot 1 is healthy: the application is not broken.
    r = run(["-w", "2", "--give-up", "2"],
            '[ "$BINDONCE_WORKER" = 0 ] && exit 1; exec sleep 1000')
    r.wait_log(r"worker 0 \(pid \d+\) exited with status 1", count=5, timeout=10)
    assert r.proc.poll() is None, r.log()
    assert "giving up" not in r.log()


def test_5_deaths_from_outside_never_give_up(run):
    # Killed with SIGKILL while young, over and over: counted for the delay, never for giving up.
    r = run(["--give-up", "2"], "exec sleep 1000")
    for i in range(4):
        kill_worker_0(r, started=i + 1)
        r.wait_log(r"killed by signal KILL", count=i + 1)
    r.wait_log(r"worker 0 started", count=5)
    assert r.proc.poll() is None, r.log()
    assert "giving up" not in r.log()


def test_1_outside_kills_restart_at_once_within_the_allowance(run):
    # A young worker killed from outside (an operator, a chaos test) is not a crash: up to
    # 10 a second per slot restart with no delay at all.
    r = run(["--give-up", "2"], "exec sleep 1000")
    for i in range(6):
        kill_worker_0(r, started=i + 1)
    r.wait_log(r"worker 0 started", count=7)
    assert "restarting in" not in r.log(), r.log()


def test_1_an_outside_kill_loop_still_backs_off(run):
    # Past 10 a second (an OOM-kill loop looks like this), outside kills count as early deaths.
    # --give-up 2: however many, outside kills never count toward giving up (clause 5).
    r = run(["--give-up", "2"], "kill -KILL $$")
    r.wait_log(r"restarting in \d+ ms \(3 early exits", timeout=10)
    assert r.proc.poll() is None
    assert "giving up" not in r.log()
    starts = started_times(r.log())
    assert len(starts) >= 11, r.log()


def test_5_every_slot_failing_by_itself_gives_up(run):
    r = run(["-w", "2", "--give-up", "3"], "exit 7")
    assert r.wait_exit() == 69, r.log()
    assert re.search(r"giving up: every worker failed 3 times in a row within 1 s of starting \(last: exit status 7\)",
                     r.log()), r.log()


def test_6_the_rest_of_a_process_group_dies_with_its_worker(run, tmp_path):
    pidfile = tmp_path / "helper.pid"
    r = run(["--restart", "no"], "sleep 1000 & echo $! > %s; sleep 0.3" % pidfile)
    assert r.wait_exit() == 0, r.log()
    helper = int(pidfile.read_text())
    try:
        wait_until(lambda: not proc_alive(helper), 5, "the worker's helper to die with it")
    finally:
        if proc_alive(helper):
            os.kill(helper, signal.SIGKILL)


def test_7_ctl_restart_restarts_under_restart_no(run):
    r = run(["--restart", "no"], "exec sleep 1000")
    r.wait_log(r"worker 0 started")
    res = r.ctl("restart", "0")
    assert res.returncode == 0, res.stderr
    r.wait_log(r"worker 0 started", count=2)
    assert r.proc.poll() is None


@pytest.mark.log_expected(CRASH_LOOP)
def test_7_ctl_restart_starts_a_waiting_slot_at_once_and_resets_its_count(run):
    # A crash loop waits out a backoff of 1.6-3.2 s after its 7th early death (long enough
    # for a ctl to arrive within it on a loaded machine); ctl restart then starts it before
    # that delay is over, and its count starts again: the next delayed restart is for 2
    # early exits in a row, not 8.
    r = run(["--give-up", "0"], "exit 1")
    r.wait_log(r"restarting in \d+ ms \(7 early exits", timeout=20)
    res = r.ctl("restart", "0")
    assert res.returncode == 0, res.stderr
    r.wait_log(r"restarting in \d+ ms \(2 early exits", count=2, timeout=10)
    lines = r.log().splitlines()
    i7 = next(i for i, l in enumerate(lines) if "(7 early exits" in l)
    after = [l for l in lines[i7 + 1:] if re.search(r"worker 0 started|restarting in", l)]
    # An order of events, not a clock: the first start after the 7th delay line is the
    # restart (had the delay run out first, its start would have died and logged "8 early
    # exits" before any "2 early exits"), and the next delay counts from a reset streak.
    assert "worker 0 started" in after[0], after
    assert delay_lines(r.log())[:7] == [2, 3, 4, 5, 6, 7, 2], r.log()
    assert r.proc.poll() is None


@pytest.mark.log_expected(CRASH_LOOP)
def test_crash_loop_then_fixed(bindonce, tmp_path):
    """TESTING.md scenario 6: every worker dies at start for 6 s, then the fault is fixed.
    The backoff bounds the restarts and bindonce's CPU, the socket stays open (a client
    that connects meanwhile is queued, not refused) and is answered after the fix."""
    fixed = tmp_path / "fixed"
    b = bindonce(["-w", "2", "--give-up", "0", "--stop-timeout", "1"],
                 ["sh", "-c", '[ -e %s ] || exit 1; exec %s' % (fixed, EXAMPLE_HTTPD)])
    # The client queued below may wait 10 s or more on a crash loop (backoff delays reach
    # 6.4 s), long enough for the stall check's warning: a known misdiagnosis of a crash
    # loop (see the report of the fixtests branch: the stall check does not know that no
    # worker runs).
    b.expect_log(rf"warning: no worker accepts on 127\.0\.0\.1:{b.port} \(queue 1\): ")
    b.wait_log("restarting in", timeout=5)
    cpu0 = cpu_seconds(b.proc.pid)
    queued = socket.create_connection(("127.0.0.1", b.port), timeout=3)     # refused would raise
    try:
        queued.sendall(b"GET / HTTP/1.0\r\n\r\n")
        starts_before = len(started_times(b.log()))
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            assert b.proc.poll() is None, b.log()
            time.sleep(0.2)     # the 6 s observation of the crash loop is the scenario
        starts = len(started_times(b.log())) - starts_before
        cpu = cpu_seconds(b.proc.pid) - cpu0
        print("crash loop, 6 s: %d starts, %.3f s of bindonce CPU" % (starts, cpu))
        # Delays double from 100 ms (jittered into [d/2, d]): at most 9 starts per slot in 6 s.
        assert 2 <= starts <= 2 * 9, "%d starts in 6 s of crash loop:\n%s" % (starts, b.log())
        assert cpu < 0.5, "bindonce used %.2f s of CPU in 6 s of crash loop" % cpu
        assert "giving up" not in b.log()

        # Fixed: the next start of each slot, at most one delay (<= 6.4 s here) away, serves
        # the connection that waited in the queue all along.
        fixed.touch()
        queued.settimeout(15)
        answer = read_to_eof(queued)
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"hello from worker" in answer, answer
    finally:
        queued.close()
    st = b.wait_status(lambda st: st["ready"] == 2, 15, "both slots serving after the fix")
    pids = [s["pid"] for s in st["slots"]]
    # Past the 1 s of an early death (and a backoff delay), these workers stay.
    quiet_for(1.5, lambda: (lambda now: now if now != pids else None)([s["pid"] for s in b.status()["slots"]]),
              "a fixed worker was replaced")

