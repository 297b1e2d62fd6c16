"""Issue 8: rolling restarts that fail safe with the default options, and a standalone
bindonce that never closes its port because of a crash loop.

A bad deploy is a reload whose new generation fails before it proved itself (ready, and up
for --min-ready: 1 s with --ready exec). The mode file gives the new generation its
behaviour with a "gN:" line (lifecycle_worker.py reads $BINDONCE_GENERATION), so a worker
of the old generation started again after the failure behaves as the old one did.
"""

import os
import re
import signal
import socket
import subprocess

import pytest

from lifecycle_support import BINDONCE, Load, alive, instances, monotonic, wait_until  # noqa: F401 (fixture)
from testlib import Harness, free_tcp_port, proc_fds, quiet_for


def assert_no_losses(load):
    assert load.losses() == {}, "connections lost: " + load.summary()


def nothing_changes_for(inst, seconds, pids):
    """The point of the test: for `seconds`, bindonce keeps running and the same workers
    keep serving (testlib.quiet_for over the status)."""
    def changed():
        if inst.proc.poll() is not None:
            return "bindonce exited (%s); log:\n%s" % (inst.proc.returncode, inst.log())
        now = inst.pids()
        return None if now == pids else "workers changed %s -> %s; log:\n%s" % (pids, now, inst.log())
    quiet_for(seconds, changed, "bindonce or its workers changed", interval=0.25)


def pidfds(pid):
    return sum(1 for target, _ in proc_fds(pid).values() if target == "anon_inode:[pidfd]")


def generations(st):
    return [s["generation"] for s in st["slots"][:st["workers"]]]


# ---- the bad deploy ----------------------------------------------------------------------

BAD_DEPLOYS = [
    # (id, bindonce options, mode of the new generation, how its first worker ended)
    ("crash-at-once", [], "crash-at-start 3", r"exited with status 3"),
    ("crash-after-200ms", [], "exit-after 0.2 1", r"exited with status 1"),
    ("exit-0-after-500ms", [], "exit-after 0.5 0", r"exited with status 0"),
    # --start-timeout is the only option that is not the default: 60 s would only make the
    # test slow, the failure is the same.
    ("never-ready", ["--ready", "notify", "--start-timeout", "2"], "never-ready",
     r"did not send READY=1 within --start-timeout"),
]


@pytest.mark.parametrize("args,bad_mode,how", [d[1:] for d in BAD_DEPLOYS], ids=[d[0] for d in BAD_DEPLOYS])
def test_bad_deploy_keeps_the_old_workers_serving(instances, args, bad_mode, how):
    n = 4
    inst = instances("bad-deploy", workers=n, args=args)
    # The failed roll, as bindonce reports it: one warning when it rolls back, one error
    # for the reload (both name the worker and how it ended).
    inst.expect_log(r"warning: reload: worker \d+ \(pid \d+\) " + how + r".*; rolling back to generation 0$",
                    r"error: reload failed: worker \d+ \(pid \d+\) " + how)
    if bad_mode == "never-ready":
        # ... and the worker that never got ready is stopped, loudly.
        inst.expect_log(r"error: worker \d+ \(pid \d+\) did not send READY=1 within 2\.0 s: stopping it$")
    before = inst.pids()

    with Load(inst.port, threads=4) as load:
        load.wait_ok(20)
        inst.set_mode("g1: " + bad_mode)
        inst.set_version("v2-broken")
        r = inst.ctl("reload", timeout=60)
        t_failed = monotonic()
        load.wait_ok(20)
        st = inst.wait_settled(n)

    assert r.returncode == 1, "ctl reload of a broken version: exit %d; stderr %r; log:\n%s" % (
        r.returncode, r.stderr, inst.log())
    # The reason names the slot, the pid and how it ended.
    assert re.search(r"reload failed: worker \d+ \(pid \d+\) " + how, r.stderr), (r.stderr, inst.log())
    assert inst.pids(st) == before, "the old workers were replaced by a failed roll; log:\n" + inst.log()
    assert generations(st) == [0] * n
    assert_no_losses(load)
    # A new worker may answer in the 0.2 s it lives (it shares the queue): not once the
    # reload failed.
    assert all(a[3] == "v1" for a in load.answers if a[0] > t_failed), "a broken new version answered"
    candidates = [ev["pid"] for ev in inst.events("start") if ev["generation"] == "1"]
    assert candidates, "no worker of the new generation was started"
    wait_until(lambda: not any(alive(p) for p in candidates), 5, what="the failed new workers gone")
    nothing_changes_for(inst, 10, before)
    assert "giving up" not in inst.log()


def test_failed_roll_halfway_rolls_back_every_slot(instances):
    n = 8
    inst = instances("halfway", workers=n, args=["--max-surge", "2", "--max-unavailable", "1"])
    inst.expect_log(r"warning: reload: worker \d+ \(pid \d+\) exited with status 1 .*; rolling back to generation 0$",
                    r"error: reload failed: worker \d+ \(pid \d+\) exited with status 1 ",
                    # a generation-1 worker started before the rollback reached its slot dies
                    # as the mode tells it (0.2 s after exec), after the roll was failed
                    r"warning: worker \d+ \(pid \d+\) exited with status 1$")
    inst.set_mode("g1: ok")
    with Load(inst.port, threads=4) as load:
        load.wait_ok(20)
        reload = subprocess.Popen(inst.ctl_command("reload"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        # Halfway: four slots serve the new generation; from now on it crashes.
        wait_until(lambda: generations(inst.status()).count(1) >= 4, 30, what="half of the roll done")
        inst.set_mode("g1: exit-after 0.2 1")
        out, err = reload.communicate(timeout=60)
        st = inst.wait_settled(n, timeout=30)
        load.wait_ok(20)

    assert reload.returncode == 1, (reload.returncode, err, inst.log())
    assert re.search(r"reload failed: worker \d+ \(pid \d+\) exited with status 1", err), err
    # Every slot has a ready worker of the old generation again.
    assert generations(st) == [0] * n, st["slots"]
    assert all(s["ready"] and s["state"] == "running" for s in st["slots"])
    assert_no_losses(load)
    gen1 = [ev["pid"] for ev in inst.events("start") if ev["generation"] == "1"]
    wait_until(lambda: not any(alive(p) for p in gen1), 10, what="every worker of generation 1 gone")
    assert "rolling back to generation 0" in inst.log()


# ---- what happens during a reload ----------------------------------------------------------

def test_a_reload_during_a_failing_reload_starts_over(instances):
    n = 2
    inst = instances("again", workers=n, args=["--ready", "notify"])
    # Generation 1 would fail after a while; generation 2 is good.
    inst.set_mode("g1: slow-ready 2, exit-after 2.5 1\ng2: ok")
    with Load(inst.port, threads=4) as load:
        load.wait_ok(10)
        first = subprocess.Popen(inst.ctl_command("reload"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: any(ev["generation"] == "1" for ev in inst.events("start")), 5,
                   what="a worker of generation 1 running")
        second = inst.ctl("reload", timeout=60)
        out1, err1 = first.communicate(timeout=60)
        st = inst.wait_settled(n)
        load.wait_ok(10)
    # Documented: a reload during a reload starts over; every client gets the outcome of
    # the last round.
    assert first.returncode == 0 and second.returncode == 0, (err1, second.stderr, inst.log())
    assert generations(st) == [2] * n
    gen1 = [ev["pid"] for ev in inst.events("start") if ev["generation"] == "1"]
    assert gen1
    wait_until(lambda: not any(alive(p) for p in gen1), 10, what="generation 1 gone")
    assert_no_losses(load)


def test_a_scale_during_a_reload(instances):
    inst = instances("scale-roll", workers=2, args=["--ready", "notify"])
    inst.set_mode("g1: slow-ready 0.5")
    with Load(inst.port, threads=4) as load:
        load.wait_ok(10)
        reload = subprocess.Popen(inst.ctl_command("reload"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        wait_until(lambda: any(s.get("next_pid") for s in inst.status()["slots"]), 5, what="the roll under way")
        assert inst.ctl("scale", "4").returncode == 0
        out, err = reload.communicate(timeout=60)
        st = inst.wait_settled(4)
        # The fd count teardown compares with was taken with 2 workers (a pidfd each);
        # the scale made it 4: take it again now that the 4 are settled, and the retired
        # workers of the roll are reaped (a pidfd each until then).
        wait_until(lambda: pidfds(inst.pid) == 4, 10, what=lambda: "4 pidfds, not %d" % pidfds(inst.pid))
        inst.mark_fds()
        load.wait_ok(10)
    # Documented: the new slots start the last good generation, and the roll replaces
    # them like the others before it completes.
    assert reload.returncode == 0, (err, inst.log())
    assert generations(st) == [1] * 4
    assert_no_losses(load)


def test_sigterm_during_a_reload(instances):
    inst = instances("term-roll", workers=2, args=["--ready", "notify"])
    inst.expect_log(r"error: reload failed: bindonce is stopping$")     # asserted below, from ctl
    inst.set_mode("g1: slow-ready 5")
    reload = subprocess.Popen(inst.ctl_command("reload"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: any(s.get("next_pid") for s in inst.status()["slots"]), 5, what="the roll under way")
    inst.remember_tree()
    code = inst.stop(signal.SIGTERM)          # fails if any process of its tree is left
    out, err = reload.communicate(timeout=30)
    assert code == 0, inst.log()
    assert reload.returncode == 1 and "reload failed: bindonce is stopping" in err, (reload.returncode, err)


# ---- the give-up rule ---------------------------------------------------------------------

def test_standalone_crash_loop_is_reported_and_the_port_stays_open(instances):
    inst = instances("crashloop", workers=2, mode="crash-at-start 3", start=False,
                     expected=[r"warning: worker \d+ \(pid \d+\) exited with status 3$",
                               r"error: every worker is crash-looping \(5 or more early failures in a row, "
                               r"last: exit status 3, \d+ restarts so far\)"])
    inst.start(wait=False)
    st = wait_until(lambda: (lambda s: s if s["crash_loop"] else None)(inst.status()), 20,
                    what=lambda: "the crash loop in ctl status; log:\n" + inst.log())
    assert st["ready"] == 0
    assert "every worker is crash-looping" in inst.log()
    assert "every worker crash-looping" in inst.ctl("status").stdout
    # The port queues: a client connects (the kernel accepts), and is answered once fixed.
    with Load(inst.port, threads=2, connect_timeout=3, response_timeout=30) as load:
        wait_until(lambda: inst.status()["sockets"][0]["queue"] >= 1, 5, what="a client queued")
        inst.set_mode("ok")
        assert inst.ctl("restart", "all").returncode == 0
        load.wait_ok(10)
    assert_no_losses(load)
    assert inst.proc.poll() is None and "giving up" not in inst.log()
    wait_until(lambda: not inst.status()["crash_loop"], 5, what="the crash loop reported over")


def test_an_explicit_give_up_still_gives_up_standalone(instances):
    inst = instances("giveup", workers=2, mode="crash-at-start 3", args=["--give-up", "3"], start=False,
                     expected=[r"warning: worker \d+ \(pid \d+\) exited with status 3$",
                               r"error: giving up: every worker failed 3 times in a row "])
    inst.start(wait=False)
    inst.proc.wait(timeout=20)
    assert inst.proc.returncode == 69, inst.log()
    assert "giving up: every worker failed 3 times" in inst.log()


def test_a_failed_reload_never_counts_toward_giving_up(instances):
    # --give-up 1 given explicitly: the first self-inflicted early death of every slot
    # would end bindonce. Three failed reloads in a row do not.
    inst = instances("reload-giveup", workers=2, args=["--give-up", "1"],
                     expected=[r"warning: reload: worker \d+ \(pid \d+\) exited with status 3 .*; "
                               r"rolling back to generation 0$",
                               r"error: reload failed: worker \d+ \(pid \d+\) exited with status 3 "])
    before = inst.pids()
    inst.set_mode("g1: crash-at-start 3\ng2: crash-at-start 3\ng3: crash-at-start 3")
    for _ in range(3):
        r = inst.ctl("reload", timeout=60)
        assert r.returncode == 1, (r.stderr, inst.log())
    st = inst.wait_settled(2)
    assert inst.pids(st) == before
    assert inst.proc.poll() is None and "giving up" not in inst.log()


def test_adopted_sockets_keep_the_default_give_up(tmp_path, harnesses):
    # Under a socket unit the sockets outlive bindonce: the default --give-up 5 applies.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    fd = s.fileno()
    # Under the harness (bash execs bindonce): the exit status is checked here, the log
    # lines and leftovers at teardown.
    h = Harness(tmp_path / "adopted", expected=[r"warning: worker [01] \(pid \d+\) exited with status 3$",
                                                r"error: giving up: every worker failed 5 times in a row "])
    harnesses.append(h)
    cmd = "exec 3<&%d %d<&-; export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$@\"" % (fd, fd)
    try:
        h.popen(["bash", "-c", cmd, "bash", BINDONCE, "--control", "none", "-w", "2", "--", "sh", "-c", "exit 3"],
                pass_fds=(fd,))
        assert h.wait_exit(timeout=20) == 69, h.log()
    finally:
        s.close()
    assert "giving up: every worker failed 5 times" in h.log()


class FakeNotify:
    """systemd's side of NOTIFY_SOCKET for a standalone bindonce: a datagram socket read by
    a thread (never left full: bindonce's notifications would wait for room), keeping the
    messages and closing the fds that come with them (the fd store)."""

    def __init__(self, path):
        import threading
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages, self.n_fds, self.done = [], 0, False
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        import array
        while not self.done:
            try:
                msg, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
            except socket.timeout:
                continue
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i", data[:len(data) - len(data) % 4])
                    self.n_fds += len(fds)
                    for fd in fds:
                        os.close(fd)
            self.messages.append(msg.decode(errors="replace"))

    def close(self):
        self.done = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("how", ["--fd-store", "FDSTORE=1"])
def test_the_fd_store_keeps_the_default_give_up(tmp_path, harnesses, how):
    """FD STORE: with --fd-store, or FDSTORE= set by systemd, the sockets outlive bindonce,
    so the default --give-up 5 applies although bindonce bound them itself."""
    notify = FakeNotify(tmp_path / "notify")
    h = Harness(tmp_path / "fdstore", expected=[r"warning: worker [01] \(pid \d+\) exited with status 3$",
                                                r"error: giving up: every worker failed 5 times in a row "])
    harnesses.append(h)
    env = {"NOTIFY_SOCKET": notify.path}
    if how == "FDSTORE=1":
        env["FDSTORE"] = "1"
    try:
        h.popen([BINDONCE, "-l", "127.0.0.1:%d" % free_tcp_port(), "--control", "none", "-w", "2"]
                + ([how] if how.startswith("--") else []) + ["--", "sh", "-c", "exit 3"], env_extra=env)
        assert h.wait_exit(timeout=30) == 69, h.log()
    finally:
        notify.close()
    assert "handed 1 sockets to systemd's fd store" in h.log()
    assert "giving up: every worker failed 5 times" in h.log()
    assert notify.n_fds == 1 and any("FDSTORE=1" in m for m in notify.messages), notify.messages
