"""Issue 4, worker lifecycle: rolling restart under load, failed rolls, readiness gating,
watchdog, scaling (CONTRACT.md "Issue 4 additions").

Every test runs its own bindonce with lifecycle_worker.py, a --name and a --control of its
own, and stops it by pid at teardown (the `instances` fixture), checking that no process of
its tree is left. Load is connection-per-request and every attempt is classified
(TESTING.md): a rolling restart or a graceful scale-down must have no failure of any class.
"""

import os
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from lifecycle_support import (BINDONCE, Load, alive, free_port, instances,  # noqa: F401 (fixture)
                               monotonic, wait_until)
from conftest import worker_environ
from testlib import WORKER_DEATH, quiet_for


def mixed_path():
    # Some requests stay in flight for a while, so that SIGTERM finds work in hand.
    return "/slow/100" if random.random() < 0.1 else "/"


class Sampler:
    """Polls `ctl status --json` in a thread while something happens."""

    def __init__(self, inst, interval=0.03):
        self.inst = inst
        self.interval = interval
        self.samples = []               # (t asked, t answered, status)
        self.errors = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopping.is_set():
            t = monotonic()
            try:
                st = self.inst.status()
                self.samples.append((t, monotonic(), st))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
            self.stopping.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(15)


def assert_no_losses(load):
    assert load.losses() == {}, "connections lost: " + load.summary()


def assert_no_casualties(inst, pids):
    """Workers that were stopped gracefully completed every connection they accepted."""
    exits = {ev["pid"]: ev for ev in inst.events("exit")}
    for pid in pids:
        assert pid in exits, "worker %d did not exit gracefully (no exit event); log:\n%s" % (pid, inst.log())
        assert exits[pid]["accepted"] == exits[pid]["completed"], exits[pid]


# ---- rolling restart ---------------------------------------------------------------------

@pytest.mark.parametrize("trigger,ready", [("ctl", "notify"), ("sighup", "notify"),
                                           ("ctl", "exec"), ("sighup", "exec")])
def test_rolling_restart_under_load_loses_nothing(instances, trigger, ready):
    n = 4
    # Workers accept only 0.2 s after they start. With --ready exec bindonce does not wait
    # for that: the old workers go at once and connections wait in the queue meanwhile.
    inst = instances("roll-%s-%s" % (trigger, ready), workers=n, args=["--ready", ready],
                     mode="slow-ready 0.2")
    before = inst.pids()
    assert sorted(before) == list(range(n))

    with Load(inst.port, threads=12, path=mixed_path) as load, Sampler(inst) as sampler:
        load.wait_ok(30)
        inst.set_version("v2")
        t0 = monotonic()
        if trigger == "ctl":
            r = inst.ctl("reload", timeout=30)
            assert r.returncode == 0, "ctl reload: exit %d, stderr %r; log:\n%s" % (r.returncode, r.stderr, inst.log())
            assert "reload complete" in r.stdout
        else:
            inst.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload complete" in inst.log(), 30, what="'reload complete' in the log")
        t_done = monotonic()
        after = inst.wait_settled(n)
        # An old worker may still answer a connection it accepted just before its SIGTERM:
        # count only what was answered once all of them were gone.
        wait_until(lambda: not any(alive(p) for p in before.values()), 5, what="old workers gone")
        t_gone = monotonic()
        wait_until(lambda: sum(a[0] > t_gone for a in load.answers) >= 30, 10,
                   what="answers after the reload")

    after = inst.pids(after)
    assert set(after) == set(before), "slots changed: %s -> %s" % (before, after)
    assert not set(after.values()) & set(before.values()), "not every pid replaced: %s -> %s" % (before, after)
    assert_no_losses(load)
    during = sum(a[4] >= t0 and a[0] <= t_done + 0.25 for a in load.answers)
    assert during >= 10, "only %d requests overlapped the roll: the load proves little" % during
    assert_no_casualties(inst, before.values())
    # Each new worker got its slot's BINDONCE_WORKER.
    started = {ev["pid"]: ev["slot"] for ev in inst.events("start")}
    assert {started[pid]: pid for pid in after.values()} == {str(s): p for s, p in after.items()}

    # Readiness never dropped below N while rolling (with --ready exec a worker is ready at
    # exec, so the same holds).
    rolling = [st for t, _, st in sampler.samples if t0 <= t <= t_done]
    assert not sampler.errors, sampler.errors
    assert all(st["ready"] >= n for st in rolling), [(st["ready"], st["workers"]) for st in rolling]
    if ready == "notify":
        # A roll of 4 steps of >= 0.2 s: the sampler must have seen it, and the events say
        # the same in order: each old worker got its SIGTERM only after its replacement
        # had sent READY=1 (the worker logs "ready" just before sending it).
        assert rolling, "no status sample inside the roll"
        ready_at = {int(ev["slot"]): ev["t"] for ev in inst.events("ready") if ev["pid"] in after.values()}
        for slot, pid in before.items():
            term = [ev["t"] for ev in inst.events("sigterm") if ev["pid"] == pid]
            assert term and term[0] >= ready_at[slot], (slot, pid, term, ready_at)
    # With --ready exec a worker counts as ready at exec and the roll takes milliseconds:
    # samples inside it are luck, and no outside event orders exec against SIGTERM.

    # The new version answers from the new pids, each in its own slot.
    new_answers = [a for a in load.answers if a[0] > t_gone]
    assert new_answers
    for _, pid, slot, version, _ in new_answers:
        assert version == "v2" and after.get(slot) == pid, (pid, slot, version, after)
    log = inst.log()
    assert "reload: rolling %d workers" % n in log
    assert "reload complete: %d workers replaced" % n in log


# ---- failed rolls ------------------------------------------------------------------------

@pytest.mark.parametrize("bad_mode,reason", [
    ("never-ready", r"did not send READY=1 within --start-timeout"),
    ("crash-at-start 3", r"exited with status 3 before it was ready"),
], ids=["never-ready", "crash-at-start"])
@pytest.mark.log_expected(r"reload failed: ", r"did not send READY=1 within", WORKER_DEATH)
def test_failed_roll_keeps_old_workers(instances, bad_mode, reason):
    n = 2
    inst = instances("badroll-" + bad_mode.split()[0], workers=n,
                     args=["--ready", "notify", "--start-timeout", "3"])
    before = inst.pids()

    with Load(inst.port, threads=3) as load:
        load.wait_ok(20)
        inst.set_mode(bad_mode)
        inst.set_version("v2-broken")
        r = inst.ctl("reload", timeout=30)
        load.wait_ok(20)
        after = inst.wait_settled(n)

    assert r.returncode == 1, "ctl reload of a broken version: exit %d (want 1); stderr %r" % (r.returncode, r.stderr)
    assert "reload failed" in r.stderr, r.stderr
    assert re.search(reason, r.stderr), "ctl reload stderr %r does not give the reason (%s); log:\n%s" % (
        r.stderr, reason, inst.log())
    assert inst.pids(after) == before, "old workers replaced by a failed roll"
    assert all(alive(p) for p in before.values())
    assert_no_losses(load)
    assert all(a[3] == "v1" for a in load.answers), "a broken new version answered"
    assert "reload failed" in inst.log()
    # The failed candidates are gone.
    candidates = [ev["pid"] for ev in inst.events("start") if ev["version"] == "v2-broken"]
    assert candidates
    wait_until(lambda: not any(alive(p) for p in candidates), 5, what="failed candidates gone")

    # Fixed: the next reload goes through.
    inst.set_mode("ok")
    inst.set_version("v3")
    r = inst.ctl("reload", timeout=30)
    assert r.returncode == 0, r.stderr
    assert not set(inst.pids().values()) & set(before.values())


# ---- readiness gate ------------------------------------------------------------------------

def test_notify_old_worker_stops_only_after_new_one_is_ready(instances):
    n, delay = 2, 1.2
    inst = instances("gate", workers=n, args=["--ready", "notify"])
    before = inst.pids()
    inst.set_mode("slow-ready %s" % delay)

    with Sampler(inst, interval=0.05) as sampler:
        t0 = monotonic()
        r = inst.ctl("reload", timeout=30)
        t1 = monotonic()
    assert r.returncode == 0, r.stderr
    assert t1 - t0 >= n * delay, "reload of %d workers slow to get ready took only %.2f s" % (n, t1 - t0)
    after = inst.pids(inst.wait_settled(n))

    starts = {ev["pid"]: ev for ev in inst.events("start")}
    readies = {ev["pid"]: ev["t"] for ev in inst.events("ready")}
    terms = {ev["pid"]: ev["t"] for ev in inst.events("sigterm")}
    for slot in range(n):
        old, new = before[slot], after[slot]
        assert new != old
        assert readies[new] - starts[new]["t"] >= delay - 0.05
        assert terms[old] >= readies[new], (
            "slot %d: old pid %d got SIGTERM %.3f s before its replacement %d sent READY=1"
            % (slot, old, readies[new] - terms[old], new))

    assert not sampler.errors, sampler.errors
    # In every sample: N ready; a replacement still starting was shown as next_pid, not ready,
    # while the old worker of that slot was still the slot's pid.
    saw_next = 0
    for t, _, st in sampler.samples:
        assert st["ready"] >= n, st
        for s in st["slots"]:
            if s.get("next_pid"):
                saw_next += 1
                assert s["pid"] == before[s["slot"]] and s["ready"], s
                if s["next_pid"] in readies and t < readies[s["next_pid"]]:
                    assert s["pid"] in terms and terms[s["pid"]] > t
    assert saw_next >= 5, "status --json hardly showed the replacements while they were starting"


# ---- watchdog ----------------------------------------------------------------------------

@pytest.mark.log_expected(r"missed its watchdog deadline", WORKER_DEATH)
def test_watchdog_replaces_a_worker_that_stops_pinging(instances):
    period = 1.0
    # Slot 1 stops pinging 0.5 s after start, and would ping again 1.8 periods after its
    # last ping: the order check below (a watchdog that waits a second period misses it).
    inst = instances("wdog", workers=2, args=["--watchdog", str(period)],
                     mode="ok\n1: stop-pinging-after 0.5 %.1f" % (1.8 * period))
    before = inst.pids()
    # The first workers have read the mode; the replacement pings.
    inst.set_mode("ok")

    def replaced():
        st = inst.status()
        return st if st["slots"][1]["pid"] not in (None, before[1]) and st["ready"] == 2 else None
    st = wait_until(replaced, 5, what=lambda: "slot 1 replaced by the watchdog; status %s; events %s; log:\n%s"
                    % (inst.status(), inst.events(), inst.log()))
    new = st["slots"][1]["pid"]

    stopped = [ev for ev in inst.events("pings-stopped") if ev["pid"] == before[1]]
    assert stopped, inst.events()
    # From the last WATCHDOG=1 to the replacement's fork ("since", the time of day, as the
    # worker's "rt"): one period, plus what SIGABRT and the restart take.
    took = st["slots"][1]["since"] - stopped[0]["last_ping_rt"]
    # Not before the period.
    assert period - 0.05 <= took, (
        "replaced %.3f s after the last WATCHDOG=1 (period %.1f s)" % (took, period))
    # And within the period after it, as an order of events, not a clock: the worker was
    # killed before its pings resumed (1.8 periods after the last one). A watchdog that
    # waited a period more would have seen them, and kept the worker.
    resumed = [ev for ev in inst.events("pings-resumed") if ev["pid"] == before[1]]
    assert not resumed, "the watchdog let slot 1 live until its pings resumed: %s" % resumed

    log = inst.log()
    assert "watchdog" in log
    assert "worker 1 (pid %d)" % before[1] in log
    assert st["slots"][1]["last_exit"] is not None
    assert st["slots"][1]["last_exit"]["status"] == signal.SIGABRT, st["slots"][1]
    assert st["slots"][1]["restarts"] == 1
    # The worker that kept pinging was left alone, the new one is left alone too: for 3
    # periods (a watchdog armed once, or that kills after 2 periods, shows by then).
    quiet_for(3 * period, lambda: (lambda st: st if (st["slots"][0]["pid"], st["slots"][1]["pid"], st["restarts"])
                                   != (before[0], new, 1) else None)(inst.status()),
              "a pinging worker was replaced")


@pytest.mark.log_expected(r"missed its watchdog deadline", r"did not stop within", WORKER_DEATH)
def test_watchdog_replaces_a_hung_worker_while_the_others_serve(instances):
    """TESTING.md scenario 5: a worker SIGSTOPped (hung: its pings stop with it) is replaced
    by the watchdog: SIGABRT stays pending on a stopped process, so the SIGKILL after
    --stop-timeout ends it. Meanwhile the others serve; only the one connection the hung
    worker had in hand, if any, fails."""
    period, stop_timeout = 1.0, 1.0
    inst = instances("hung", workers=3, args=["--watchdog", str(period), "--stop-timeout", str(stop_timeout)])
    before = inst.pids()
    with Load(inst.port, threads=6) as load:
        load.wait_ok(30)
        t0 = monotonic()
        os.kill(before[1], signal.SIGSTOP)
        st = wait_until(lambda: (lambda st: st if st["slots"][1]["pid"] not in (None, before[1])
                                 and st["ready"] == 3 else None)(inst.status()), 15,
                        what=lambda: "slot 1 replaced; log:\n" + inst.log())
        t_replaced = monotonic()
        load.wait_ok(30)
    took = t_replaced - t0
    # The last ping came at most a quarter period before the SIGSTOP; the SIGKILL then
    # comes --stop-timeout after the SIGABRT that a stopped process keeps pending.
    assert took >= period * 0.75 + stop_timeout - 0.05, took
    # No upper bound as pass/fail (the house rules): on a loaded machine the replacement's
    # start once made it 5.2 s.
    # Served meanwhile by the others (slot 1's replacement may answer before the status
    # poll sees it ready), never by the stopped worker.
    during = [a for a in load.answers if t0 < a[0] and a[4] < t_replaced]
    assert len([a for a in during if a[2] in (0, 2)]) >= 10, len(during)
    assert not [a for a in load.answers if a[0] > t0 and a[1] == before[1]], "the stopped worker answered"
    losses = load.losses()
    assert set(losses) <= {"eof_before_response", "reset_before_response"} and sum(losses.values()) <= 1, losses
    log = inst.log()
    assert "worker 1 (pid %d) missed its watchdog deadline" % before[1] in log, log
    assert st["slots"][1]["last_exit"]["status"] == signal.SIGKILL, st["slots"][1]
    assert inst.pids(st)[0] == before[0] and inst.pids(st)[2] == before[2]


# ---- scaling -------------------------------------------------------------------------------

def test_scale_up_and_down_under_load(instances):
    inst = instances("scale", workers=4)
    p4 = inst.pids()

    with Load(inst.port, threads=3, path=mixed_path) as load, Sampler(inst) as sampler:
        load.wait_ok(20)

        r = inst.ctl("scale", "8")
        assert r.returncode == 0, r.stderr
        p8 = inst.pids(inst.wait_settled(8))
        assert sorted(p8) == list(range(8))
        assert {s: p8[s] for s in range(4)} == p4, "scaling up touched running workers"
        # What a slot costs bindonce in fds (its worker's pidfd...): teardown checks that
        # the scale-downs gave back exactly that much.
        per_slot, rest = divmod(inst.stable_fd_count() - inst.fd_start, 4)
        assert per_slot > 0 and rest == 0, (per_slot, rest)
        inst.fd_start -= 2 * per_slot
        load.wait_ok(20)

        # -1 stops the highest slot.
        inst.proc.send_signal(signal.SIGTTOU)
        p7 = inst.pids(inst.wait_settled(7))
        assert p7 == {s: p8[s] for s in range(7)}
        wait_until(lambda: not alive(p8[7]), 5, what="slot 7 stopped")

        t_down = monotonic()
        r = inst.ctl("scale", "2")
        assert r.returncode == 0, r.stderr
        t_down_done = monotonic()
        p2 = inst.pids(inst.wait_settled(2))
        assert p2 == {0: p4[0], 1: p4[1]}, "scaling down did not keep the lowest slots"
        stopped = [p8[s] for s in range(2, 8)]
        wait_until(lambda: not any(alive(p) for p in stopped), 5, what="surplus workers gone")
        load.wait_ok(20)

        # +1 adds slot 2 again, -1 takes it away.
        inst.proc.send_signal(signal.SIGTTIN)
        p3 = inst.pids(inst.wait_settled(3))
        assert p3[0] == p4[0] and p3[1] == p4[1] and p3[2] not in p8.values()
        load.wait_ok(10)
        inst.proc.send_signal(signal.SIGTTOU)
        assert inst.pids(inst.wait_settled(2)) == p2
        wait_until(lambda: not alive(p3[2]), 5, what="slot 2 stopped")
        load.wait_ok(10)

    assert_no_losses(load)
    assert_no_casualties(inst, stopped + [p3[2]])
    assert not sampler.errors, sampler.errors
    for t, t_answer, st in sampler.samples:
        # Scaling never takes a kept worker away: until the scale-down to 2 the 4 first
        # workers are ready all along, from then on the 2 kept ones.
        assert st["ready"] <= st["workers"], st
        if t_answer < t_down:
            assert st["ready"] >= 4, st
        elif t > t_down_done:
            assert st["ready"] >= 2, st
    log = inst.log()
    assert "scaling from 4 to 8 workers" in log and "scaling from 7 to 2 workers" in log
    for s in range(2, 8):
        assert "worker %d (pid %d) exited with status 0" % (s, p8[s]) in log
    # What the supervisor counts as restarts: none (stopping a surplus slot is not one).
    assert inst.status()["restarts"] == 0


# ---- the load client itself -------------------------------------------------------------

def test_load_client_classifies_failures():
    """A zero in every failure class above means something only if the client sees failures."""
    def serve(behaviour):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)

        def run():
            conn, _ = srv.accept()
            with conn:
                conn.recv(4096)
                if behaviour == "eof":
                    pass
                elif behaviour == "rst":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif behaviour == "rst-mid":
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\npid=")
                    time.sleep(0.1)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif behaviour == "bad":
                    conn.sendall(b"HTTP/1.0 500 Oops\r\n\r\nno\n")
                elif behaviour == "silent":
                    time.sleep(0.6)
            srv.close()
        threading.Thread(target=run, daemon=True).start()
        return srv.getsockname()[1]

    assert Load(free_port()).one()[0] == "refused"
    assert Load(serve("eof")).one()[0] == "eof_before_response"
    assert Load(serve("rst")).one()[0] == "reset_before_response"
    assert Load(serve("rst-mid")).one()[0] == "reset_mid_response"
    assert Load(serve("bad")).one()[0] == "bad_payload"
    assert Load(serve("silent"), response_timeout=0.3).one()[0] == "response_timeout"


# ---- more of the roll: starting over, surge and unavailable ------------------------------

def test_reload_during_a_roll_starts_over(instances):
    n = 2
    inst = instances("again", workers=n, args=["--ready", "notify"])
    before = inst.pids()
    inst.set_mode("slow-ready 0.6")
    with Load(inst.port, threads=4) as load:
        load.wait_ok(10)
        inst.set_version("v2")
        first = subprocess.Popen(inst.ctl_command("reload"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: any(s.get("next_pid") for s in inst.status()["slots"]), 5, what="the roll under way")
        inst.set_version("v3")
        second = subprocess.Popen(inst.ctl_command("reload"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out1, err1 = first.communicate(timeout=30)
        out2, err2 = second.communicate(timeout=30)
        st = inst.wait_settled(n)
        load.wait_ok(10)
    assert first.returncode == 0 and second.returncode == 0, (first.returncode, err1, second.returncode, err2)
    assert "reload requested during a reload: starting over" in inst.log()
    after = inst.pids(st)
    assert not set(after.values()) & set(before.values())
    assert all(s["status"].startswith("serving version=v3") for s in st["slots"]), st["slots"]
    v2 = [ev["pid"] for ev in inst.events("start") if ev["version"] == "v2"]
    wait_until(lambda: not any(alive(p) for p in v2), 5, what="v2 workers gone")
    assert_no_losses(load)


@pytest.mark.parametrize("surge,unavailable", [(2, 0), (0, 1)])
def test_roll_respects_surge_and_unavailable(instances, surge, unavailable):
    n, delay = 4, 0.5
    inst = instances("surge-%d-%d" % (surge, unavailable), workers=n,
                     args=["--ready", "notify", "--max-surge", str(surge), "--max-unavailable", str(unavailable)])
    before = inst.pids()
    inst.set_mode("slow-ready %s" % delay)
    with Load(inst.port, threads=6, path=mixed_path) as load, Sampler(inst) as sampler:
        load.wait_ok(20)
        t0 = monotonic()
        r = inst.ctl("reload", timeout=30)
        took = monotonic() - t0
        st = inst.wait_settled(n)
        load.wait_ok(20)
    assert r.returncode == 0, r.stderr
    assert not set(inst.pids(st).values()) & set(before.values())
    assert_no_losses(load)
    assert not sampler.errors, sampler.errors
    rolling = [st for t, _, st in sampler.samples if t0 <= t <= t0 + took]
    assert rolling
    surging = max(sum(bool(s.get("next_pid")) for s in st["slots"]) for st in rolling)
    least_ready = min(st["ready"] for st in rolling)
    assert surging <= surge, "%d replacements at once with --max-surge %d" % (surging, surge)
    assert least_ready >= n - unavailable, "%d ready with --max-unavailable %d" % (least_ready, unavailable)
    if unavailable:
        assert least_ready == n - unavailable, "never used the unavailable allowance"
    # Steps of max(surge, unavailable) workers at a time, each waiting `delay` for READY=1.
    steps = n / max(surge, unavailable)
    assert steps * delay - 0.1 <= took, took
    # The steps did not run one worker at a time (nor more at once than allowed), told by
    # the new workers' own events, not a clock: the most new workers between their start
    # and their READY=1 at one moment.
    new_pids = set(inst.pids(st).values())
    edges = sorted((ev["t"], +1 if ev["event"] == "start" else -1) for ev in inst.events()
                   if ev["pid"] in new_pids and ev["event"] in ("start", "ready"))
    starting = most = 0
    for _, step in edges:
        starting += step
        most = max(most, starting)
    assert len(edges) == 2 * n, edges
    assert most == max(surge, unavailable), "%d new workers starting at once, want %d" % (
        most, max(surge, unavailable))


def test_surge_and_unavailable_both_zero_is_a_usage_error():
    r = subprocess.run([BINDONCE, "-l", "127.0.0.1:1", "--control", "none", "--max-surge", "0",
                        "--max-unavailable", "0", "--", "true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert r.stderr.startswith("bindonce: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("args,mode,line", [
    (["--start-timeout", "1.2"], "never-ready", "did not send READY=1 within 1.2 s"),
    (["--watchdog", "1.2"], "stop-pinging-after 0", "missed its watchdog deadline (1.2 s)"),
], ids=["start-timeout", "watchdog"])
def test_a_worker_stopped_for_readiness_or_watchdog_is_a_failure(instances, args, mode, line):
    """RESTART CONTRACT clauses 1 and 5: a worker stopped for --start-timeout or the
    watchdog is an early failure that the worker caused, however long it ran (1.2 s here,
    past the 1 s of an early death): with --give-up 2, two of them in a row give up."""
    inst = instances("failed-" + mode.split()[0], workers=1, start=False, mode=mode,
                     args=["--ready", "notify", "--give-up", "2"] + args,
                     expected=[re.escape(line), WORKER_DEATH, "giving up: every worker failed"])
    inst.start(wait=False)
    assert inst.wait_exit(20) == 69, inst.log()
    log = inst.log()
    assert log.count(line) == 2, log
    assert "giving up: every worker failed 2 times in a row" in log, log


# ---- who may notify -------------------------------------------------------------------------

@pytest.mark.log_expected(r"did not send READY=1 within", WORKER_DEATH)
@pytest.mark.parametrize("access", ["main", "all"])
def test_notify_access(instances, access):
    """READY=1 from a helper process of the worker's group counts with --notify-access all
    only; with main the worker is not ready and the start timeout replaces it."""
    inst = instances("access-" + access, workers=1, start=False, mode="ready-from-child 0.1",
                     args=["--ready", "notify", "--notify-access", access, "--start-timeout", "3"])
    inst.start(wait=False)
    first = wait_until(lambda: inst.status()["slots"][0]["pid"], 3, what="a first worker")
    wait_until(lambda: [ev for ev in inst.events("child-sent-ready") if ev["worker"] == first], 3,
               what="the helper's READY=1")
    if access == "all":
        st = inst.wait_settled(1, timeout=3)
        assert inst.pids(st) == {0: first} and st["slots"][0]["restarts"] == 0
        assert "worker 0 (pid %d) is ready" % first in inst.log()
    else:
        # The helper's READY=1 is ignored: the start timeout stops the very first worker.
        wait_until(lambda: "worker 0 (pid %d) did not send READY=1 within 3.0 s" % first in inst.log(), 8,
                   what="the start timeout")
        wait_until(lambda: inst.status()["slots"][0]["pid"] not in (None, first), 8, what="a restart")
        assert "worker 0 (pid %d) is ready" % first not in inst.log()


@pytest.mark.log_expected(r"did not send READY=1 within", WORKER_DEATH)
def test_notify_from_a_stranger_is_ignored(instances):
    """Only workers may notify: READY=1 sent by this test process to the workers' notify
    socket changes nothing."""
    inst = instances("stranger", workers=1, start=False, mode="never-ready",
                     args=["--ready", "notify", "--notify-access", "all", "--start-timeout", "2"])
    inst.start(wait=False)
    pid = wait_until(lambda: inst.status()["slots"][0]["pid"], 3, what="a worker")

    env = worker_environ(pid)
    addr = env["NOTIFY_SOCKET"]
    assert addr.startswith("@"), addr
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1\nSTATUS=forged\nWATCHDOG=trigger", "\0" + addr[1:])
    st = inst.status()
    assert st["slots"][0]["status"] != "forged", st
    # The barrier: the worker is stopped for never being ready, long after bindonce read
    # the forged datagram; it was never taken as ready, nor as a watchdog trigger.
    wait_until(lambda: "worker 0 (pid %d) did not send READY=1 within 2.0 s" % pid in inst.log(), 6,
               what="the start timeout")
    log = inst.log()
    assert "worker 0 (pid %d) is ready" % pid not in log, log
    assert "triggered its watchdog" not in log, log
