"""Issue 11: bindonce upgrades itself in place (bindonce(1) UPGRADE IN PLACE).

`ctl upgrade` (or SIGUSR2) checks the new binary with --upgrade-check, then executes it in
the same process: same pid, same workers, the sockets held throughout, nothing refused. A
binary that fails the check never takes over; one that cannot read the state hands it back
to the old binary.

bindonce runs from a copy of the build in the test's directory, so that the test can
replace that file (as `make install` does) and see /proc/PID/exe follow.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import conftest
from conftest import TESTWORKER, proc_stat, wait_until, zombie_children
from loadclient import LoadClient, request_once

UPGRADES = 20


@pytest.fixture
def binary(tmp_path, monkeypatch):
    """bindonce as a file of its own, which the `supervisor` fixture then starts."""
    d = tmp_path / "bin"
    d.mkdir()
    path = d / "bindonce"
    shutil.copy2(conftest.BINDONCE, path)
    monkeypatch.setattr(conftest, "BINDONCE", str(path))
    return path


def replace_file(path, source):
    """As `make install` does: a new file at the path, the running one unlinked."""
    tmp = path.with_name(path.name + ".new")
    shutil.copy2(source, tmp)
    os.rename(tmp, path)


def script(path, text, mode=0o755):
    path.write_text(text)
    path.chmod(mode)
    return path


def ctl(sup, *args, timeout=30):
    return subprocess.run([conftest.BINDONCE, "ctl", "--control", str(sup.control_path), *args],
                          capture_output=True, text=True, timeout=timeout)


def status(sup):
    r = ctl(sup, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ready(sup, n):
    """For wait_until: the status once n workers are ready; None before, also while the
    control socket is not there yet."""
    r = ctl(sup, "status", "--json")
    st = json.loads(r.stdout) if r.returncode == 0 else None
    return st if st and st["ready"] == n else None


def workers_of(st):
    """{slot: (pid, since, restarts)} of the wanted slots."""
    return {s["slot"]: (s["pid"], s["since"], s["restarts"]) for s in st["slots"][:st["workers"]]}


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def start(supervisor, port, workers=4, args=()):
    sup = supervisor().start(["-w", str(workers), "-l", f"127.0.0.1:{port}", *args],
                             [TESTWORKER, "--delay-ms", "2"], wait_workers=workers)
    sup.wait_live_workers(workers)
    wait_until(lambda: ready(sup, workers), 10, f"{workers} workers ready")
    return sup


def assert_serving(port):
    cls, ident, detail = request_once(("127.0.0.1", port))
    assert cls == "ok", f"{cls}: {detail}"


def test_upgrade_under_load_changes_nothing_but_the_binary(supervisor, binary):
    port = conftest.free_tcp_port()
    sup = start(supervisor, port)
    before = workers_of(status(sup))
    fds = fd_count(sup.pid)
    load = LoadClient(("127.0.0.1", port), threads=4, duration=90).start()
    try:
        wait_until(lambda: load.oks() >= 50, 10, "the load to get going")
        for i in range(UPGRADES):
            replace_file(binary, Path(conftest.BINDONCE) if i % 2 else binary.with_name("bindonce"))
            r = ctl(sup, "upgrade")
            assert r.returncode == 0, f"upgrade {i + 1}: {r.stderr}\n{sup.log()}"
            assert r.stdout == f"upgraded to 0.1 (pid {sup.pid})\n"
            assert sup.running()
            # The answered ctl client lingers until it has read its EOF: then the count is back.
            wait_until(lambda: fd_count(sup.pid) == fds, 5,
                       lambda: f"bindonce's fds back to {fds} after upgrade {i + 1}: {os.listdir(f'/proc/{sup.pid}/fd')}")
        oks_during = load.oks()
    finally:
        res = load.stop()
    assert res.counts["client_error"] == 0, res.summary()
    assert res.counts["refused"] == 0 and res.attempts == res.ok, res.summary()
    assert oks_during > 50, res.summary()
    after = status(sup)
    assert workers_of(after) == before, "the same workers, uptimes and restart counts"
    assert after["pid"] == sup.pid and after["version"] == "0.1"
    assert os.readlink(f"/proc/{sup.pid}/exe") == str(binary), "the new file, not a deleted one"
    assert sup.log().count("upgraded in place") == UPGRADES
    assert zombie_children(sup.pid) == []


def test_sigusr2_upgrades_in_place(supervisor, binary):
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=2)
    before = workers_of(status(sup))
    replace_file(binary, conftest.BINDONCE)
    sup.send_signal(signal.SIGUSR2)
    sup.wait_log("upgraded in place")
    assert workers_of(status(sup)) == before
    assert os.readlink(f"/proc/{sup.pid}/exe") == str(binary)
    assert_serving(port)


BROKEN = [
    ("exits-1", "#!/bin/sh\nexit 1\n", 0o755, "exited with status 1"),
    ("not-executable", "#!/bin/sh\nexit 0\n", 0o644, "Permission denied"),
    ("state-format-from-the-future", '#!/bin/sh\nBINDONCE_TEST_STATE_VERSION=99 exec "{real}" "$@"\n', 0o755,
     "reads state format 99, this bindonce writes formats 1 to 3"),
    ("no-state-format", "#!/bin/sh\necho hello\n", 0o755, "reads state format (none)"),
]


@pytest.mark.parametrize("text,mode,why", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_binary_never_takes_over(supervisor, binary, tmp_path, text, mode, why):
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=2)
    # The refusal this test provokes, with its reason.
    sup.expect_log(r"error: upgrade refused: .*%s.*; bindonce \S+ continues$" % re.escape(why))
    before = workers_of(status(sup))
    exe = os.readlink(f"/proc/{sup.pid}/exe")
    bad = script(tmp_path / "new-bindonce", text.format(real=Path(conftest.BINDONCE)), mode)

    r = ctl(sup, "upgrade", "--exe", str(bad))
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("bindonce ctl: upgrade failed: ") and why in r.stderr, r.stderr
    assert sup.running() and os.readlink(f"/proc/{sup.pid}/exe") == exe
    assert workers_of(status(sup)) == before
    assert_serving(port)
    assert "upgrade refused: " in sup.log()
    # Nothing is left of the attempt: the next upgrade goes through.
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr
    assert workers_of(status(sup)) == before


# The new process refuses the state on purpose: both sides say so.
@pytest.mark.log_expected(r"error: upgrade: this bindonce \(\S+\) cannot take over: BINDONCE_TEST_FAIL_RESTORE "
                          r"is set; executing the previous binary again$",
                          r"error: upgrade failed: the new bindonce \S+ could not take over: "
                          r"BINDONCE_TEST_FAIL_RESTORE is set; bindonce \S+ continues$")
def test_new_binary_that_cannot_read_the_state_hands_it_back(supervisor, binary, tmp_path):
    """The check passes, the exec succeeds, and the new process then refuses the state:
    the old binary (kept as an fd, its file replaced meanwhile) comes back with it."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=2)
    before = workers_of(status(sup))
    real = Path(conftest.BINDONCE)
    wrapper = script(tmp_path / "new-bindonce",
                     '#!/bin/sh\n[ "$1" = --upgrade-check ] || export BINDONCE_TEST_FAIL_RESTORE=1\n'
                     f'exec "{real}" "$@"\n')
    replace_file(binary, real)

    r = ctl(sup, "upgrade", "--exe", str(wrapper))
    assert r.returncode == 1, r.stdout
    assert "could not take over: BINDONCE_TEST_FAIL_RESTORE is set" in r.stderr, r.stderr
    assert f"bindonce 0.1 continues (pid {sup.pid})" in r.stderr, r.stderr
    assert sup.running()
    assert os.readlink(f"/proc/{sup.pid}/exe") == str(binary) + " (deleted)", "the old binary, by its fd"
    assert workers_of(status(sup)) == before
    assert_serving(port)
    # And it still upgrades, from the path it was started from.
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr
    assert os.readlink(f"/proc/{sup.pid}/exe") == str(binary)
    assert workers_of(status(sup)) == before


def test_worker_killed_during_the_exec_is_restarted(supervisor, binary, tmp_path):
    """The new binary's first instructions (a wrapper script, running as bindonce's pid
    after the exec) SIGKILL a worker: it dies while no bindonce runs, and the new process
    reaps it through the pidfd it opens and restarts its slot."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=4)
    before = workers_of(status(sup))
    victim = before[1][0]
    sup.expect_log(rf"warning: worker 1 \(pid {victim}\) killed by signal KILL$")   # on purpose
    real = Path(conftest.BINDONCE)
    wrapper = script(tmp_path / "new-bindonce",
                     f'#!/bin/sh\n[ "$1" = --upgrade-check ] || kill -KILL {victim}\nexec "{real}" "$@"\n')

    r = ctl(sup, "upgrade", "--exe", str(wrapper))
    assert r.returncode == 0, r.stderr + sup.log()
    sup.wait_log(f"worker 1 (pid {victim}) killed by signal KILL")
    st = wait_until(lambda: (lambda s: s if s["slots"][1]["pid"] not in (None, victim) and s["ready"] == 4 else None)(status(sup)),
                    10, "slot 1 restarted")
    after = workers_of(st)
    assert after[1][2] == before[1][2] + 1, "one restart"
    assert {k: v for k, v in after.items() if k != 1} == {k: v for k, v in before.items() if k != 1}
    assert proc_stat(victim) is None, "reaped"
    assert_serving(port)


@pytest.mark.log_expected(r"warning: upgrade refused: a reload is in progress; upgrade once it has ended$")
def test_upgrade_is_refused_while_a_reload_runs(supervisor, binary):
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=2, args=["--min-ready", "3"])
    reload = subprocess.Popen([conftest.BINDONCE, "ctl", "--control", str(sup.control_path), "reload"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: status(sup)["reloading"], 10, "the reload to start")
        r = ctl(sup, "upgrade")
        assert r.returncode == 1
        assert "cannot upgrade: a reload is in progress; upgrade once it has ended" in r.stderr, r.stderr
    finally:
        out, err = reload.communicate(timeout=30)
    assert reload.returncode == 0, err
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr


def log_time(line):
    """The monotonic-free timestamp of a log line, in seconds (ISO 8601 UTC, ms)."""
    from datetime import datetime
    return datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


# The worker crash-loops on purpose (exit 3 at start), so that a slot is backing off.
@pytest.mark.log_expected(r"warning: worker 0 \(pid \d+\) exited with status 3$",
                          r"error: every worker is crash-looping \(5 or more early failures in a row, "
                          r"last: exit status 3, ")
def test_pending_restart_keeps_its_deadline(supervisor, binary):
    """A slot backing off when the upgrade comes starts again when it was due: not at
    once (the deadline is an absolute CLOCK_MONOTONIC time in the state)."""
    port = conftest.free_tcp_port()
    sup = supervisor().start(["-w", "1", "-l", f"127.0.0.1:{port}", "--give-up", "0"],
                             [TESTWORKER, "--exit-at-start", "3"])
    # The 6th early exit in a row waits 1.6 s (jittered into [0.8, 1.6]), each next one
    # twice that: an upgrade that a loaded machine delays past one backoff is tried again
    # within the next, longer one.
    for k in (6, 7, 8):
        sup.wait_log(f"({k} early exits in a row)", timeout=30)
        r = ctl(sup, "upgrade")
        assert r.returncode == 0, r.stderr
        sup.wait_log(f"({k + 1} early exits in a row)", timeout=30)
        lines = sup.log_lines()
        due = [l for l in lines if f"({k} early exits in a row)" in l][0]
        deadline = log_time(due) + int(due.split("restarting in ")[1].split(" ms")[0]) / 1000
        upgraded = [l for l in lines if "upgraded in place" in l][-1]
        started = [l for l in lines if "worker 0 started" in l][k]
        if log_time(upgraded) < deadline:
            assert log_time(started) >= deadline - 0.002, (due, upgraded, started)
            return
    pytest.fail("three upgrades in a row came after the backoff they were meant to cross had ended")


def test_reuseport_sockets_cross_the_exec(supervisor, binary):
    """--balance reuseport: each slot's own socket (a member of the port's group) is carried
    across, not opened again: the same sockets, by inode, and every slot still served."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=3, args=["--balance", "reuseport"])

    def sockets():
        return sorted(t for t, _ in conftest.proc_fds(sup.pid).values() if t.startswith("socket:"))

    pids = workers_of(status(sup))
    # A ctl connection bindonce is still closing is a socket too: count once settled.
    sup.stable_fd_count()
    before = sockets()
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: sockets() == before, 5, lambda: f"the same sockets: {before} vs {sockets()}")
    assert workers_of(status(sup)) == pids
    res = LoadClient(("127.0.0.1", port), threads=4, max_requests=300, duration=20).run()
    assert res.ok == res.attempts, res.summary()
    assert {slot for _, slot in res.answered} == {0, 1, 2}, "every slot's socket still gets connections"


def notifications(sock, until, stop):
    """(sender pid, text) of each datagram until stop(list) or the deadline."""
    import array
    import socket as so
    got = []
    while time.monotonic() < until and not stop(got):
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            data, anc, _, _ = sock.recvmsg(4096, so.CMSG_SPACE(12) + so.CMSG_SPACE(4 * 16))
        except so.timeout:
            break
        pid = 0
        for level, kind, payload in anc:
            if level == so.SOL_SOCKET and kind == so.SCM_CREDENTIALS:
                pid = array.array("i", payload[:12])[0]
            elif level == so.SOL_SOCKET and kind == so.SCM_RIGHTS:
                for fd in array.array("i", payload[:len(payload) - len(payload) % 4]):
                    os.close(fd)
        got.append((pid, data.decode()))
    return got


@pytest.mark.log_expected(r"error: upgrade refused: \S+/bad --upgrade-check exited with status 1; "
                          r"bindonce \S+ continues$")
def test_systemd_hears_reloading_then_ready_from_the_same_pid(supervisor, binary, tmp_path):
    """What a service manager sees (a notify socket of our own stands in for it): RELOADING=1
    with MONOTONIC_USEC before the exec, READY=1 after it, both from the same main pid; the
    fd store is not touched (no FDSTORE=1 after the start); nothing at all for an upgrade
    refused at the check."""
    import socket as so
    path = str(tmp_path / "notify")
    sock = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    sock.setsockopt(so.SOL_SOCKET, so.SO_PASSCRED, 1)
    sock.bind(path)
    port = conftest.free_tcp_port()
    sup = supervisor().start(["-w", "2", "-l", f"127.0.0.1:{port}", "--fd-store"], [TESTWORKER],
                             env_extra={"NOTIFY_SOCKET": path}, wait_workers=2)
    try:
        start = notifications(sock, time.monotonic() + 10, lambda m: any("READY=1" in t for _, t in m))
        assert any("FDSTORE=1" in t for _, t in start), start
        assert ctl(sup, "upgrade", "--exe", str(script(tmp_path / "bad", "#!/bin/sh\nexit 1\n"))).returncode == 1
        r = ctl(sup, "upgrade")
        assert r.returncode == 0, r.stderr
        got = notifications(sock, time.monotonic() + 10, lambda m: any("READY=1" in t for _, t in m))
        reloading = [i for i, (_, t) in enumerate(got) if "RELOADING=1" in t]
        ready = [i for i, (_, t) in enumerate(got) if "READY=1" in t]
        assert len(reloading) == 1 and ready and reloading[0] < ready[0], got
        assert "MONOTONIC_USEC=" in got[reloading[0]][1]
        assert {pid for pid, t in got if "=1" in t} == {sup.pid}, got
        assert not any("FDSTORE=1" in t for _, t in got), got
    finally:
        sock.close()


@pytest.mark.log_expected(r"error: upgrade refused: \S+/new-bindonce --upgrade-check did not answer within 5 s; "
                          r"bindonce \S+ continues$")
def test_check_that_hangs_is_refused_after_5_s(supervisor, binary, tmp_path):
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=1)
    before = workers_of(status(sup))
    hang = script(tmp_path / "new-bindonce", "#!/bin/sh\nexec sleep 30\n")
    r = ctl(sup, "upgrade", "--exe", str(hang))
    assert r.returncode == 1
    assert "--upgrade-check did not answer within 5 s" in r.stderr, r.stderr
    assert workers_of(status(sup)) == before
    assert_serving(port)


@pytest.mark.log_expected(r"error: upgrade refused: bindonce is stopping; bindonce \S+ continues$")
def test_stop_during_the_check(supervisor, binary, tmp_path):
    """SIGTERM while the new binary is being checked: the waiting ctl hears why, the check
    is killed, and bindonce stops as always (the fixture checks nothing is left)."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=1)
    slow = script(tmp_path / "new-bindonce", "#!/bin/sh\nexec sleep 30\n")
    waiting = subprocess.Popen([conftest.BINDONCE, "ctl", "--control", str(sup.control_path), "upgrade", "--exe",
                                str(slow)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sup.wait_log("upgrade: checking")
        assert sup.stop() == 0
    finally:
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1 and "upgrade failed: bindonce is stopping" in err, err


def state_keeping_binary(tmp_path, also=""):
    """A new binary that keeps each state it is handed in tmp_path/states (named by the
    time, so that they sort in order), runs the shell `also` ("...; "), then the real one.
    Returns (its path, the directory)."""
    keep = tmp_path / "states"
    keep.mkdir()
    wrapper = script(tmp_path / "new-bindonce",
                     '#!/bin/sh\n[ "$1" = --upgrade-check ] || { '
                     f'cat /proc/self/fd/$BINDONCE_UPGRADE_STATE > "{keep}/$(date +%s%N)"; {also}}}\n'
                     f'exec "{conftest.BINDONCE}" "$@"\n')
    return wrapper, keep


def read_state(path):
    """The records of a state file: [(name, {key: value})], values as written."""
    out = []
    for line in path.read_text().splitlines()[1:]:
        name, _, rest = line.partition(" ")
        out.append((name, dict(kv.split("=", 1) for kv in rest.split() if "=" in kv)))
    return out


def test_deadlines_cross_the_exec_unchanged(supervisor, binary, tmp_path):
    """The state the old program hands over, kept by a wrapper around the new binary, twice:
    each worker's watchdog deadline (never pinged: about started + --watchdog) is the same
    absolute CLOCK_MONOTONIC time in both, so the first new program armed it where the old
    one had it, not --watchdog from its own start."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=2, args=["--watchdog", "30"])
    wrapper, keep = state_keeping_binary(tmp_path)
    for _ in range(2):
        r = ctl(sup, "upgrade", "--exe", str(wrapper))
        assert r.returncode == 0, r.stderr
    first, second = (read_state(p) for p in sorted(keep.iterdir()))
    # (Each worker's pidfd is whichever fd holds it then: not part of what it is.)
    workers = [[{k: v for k, v in rec.items() if k != "pidfd"} for name, rec in s if name == "worker"]
               for s in (first, second)]
    assert len(workers[0]) == 2 and workers[0] == workers[1], workers
    for w in workers[0]:
        # sd-event arms it from the loop's time of that turn, a moment before `started`.
        assert int(w["watchdog_at"]) > int(w["started"]) + 29_000_000, w
    assert [rec for name, rec in first if name == "slot"] == [rec for name, rec in second if name == "slot"]


def test_log_prefix_pipes_cross_the_exec(supervisor, binary):
    """--log-prefix: the workers write to pipes bindonce reads. The read ends cross the exec:
    the workers never see EPIPE (they would die of SIGPIPE), and their lines keep coming,
    prefixed, from the new program."""
    port = conftest.free_tcp_port()
    sup = supervisor().start(["-w", "2", "-l", f"127.0.0.1:{port}", "--log-prefix"],
                             ["/bin/sh", "-c", "while :; do echo tick; sleep 0.05; done"])
    wait_until(lambda: ready(sup, 2), 10, "2 workers ready")
    before = workers_of(status(sup))
    wait_until(lambda: sup.stdout_path.read_text().count("tick") >= 4, 10, "ticks before")
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr
    ticks = sup.stdout_path.read_text().count("tick")
    for slot, (pid, _, _) in before.items():
        wait_until(lambda: sup.stdout_path.read_text().count(f"[slot {slot} pid {pid}] tick") >= ticks // 2 + 5, 10,
                   f"more ticks of slot {slot} after the upgrade")
    assert workers_of(status(sup)) == before, "no worker died of SIGPIPE"


def pidfds(pid):
    """The fds of pid that are pidfds."""
    return sorted(fd for fd, (target, _) in conftest.proc_fds(pid).items()
                  if target == "anon_inode:[pidfd]" or target.startswith("pidfd:"))


def test_pidfds_cross_the_exec_and_never_reach_a_worker(supervisor, binary, tmp_path):
    """Each worker's pidfd crosses the exec, named in the state (format 3), so that the new
    program need not open one before it answers: it holds them until it watches each worker
    with a pidfd of sd-event's, then closes them. Afterwards bindonce holds one pidfd a
    worker, every fd close-on-exec (right after the answer too), and a worker started
    afterwards gets 0, 1, 2 and its socket."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=4)
    before = workers_of(status(sup))
    fds = sup.stable_fd_count()
    wrapper, keep = state_keeping_binary(tmp_path,
                                         f'echo "${{BINDONCE_UPGRADE_PIDFDS:-none}}" >> "{tmp_path}/env"; ')
    for _ in range(2):
        r = ctl(sup, "upgrade", "--exe", str(wrapper))
        assert r.returncode == 0, r.stderr + sup.log()
        not_cloexec = {fd: t for fd, (t, flags) in conftest.proc_fds(sup.pid).items()
                       if fd > 2 and flags is not None and not flags & os.O_CLOEXEC}
        assert not_cloexec == {}, not_cloexec
    for state in sorted(keep.iterdir()):
        assert state.read_text().startswith("bindonce-state 3\n")
        workers = [rec for name, rec in read_state(state) if name == "worker"]
        assert len(workers) == 4 and all(int(w["pidfd"]) > 2 and int(w["pidfd_id"]) > 0 for w in workers), workers
    assert (tmp_path / "env").read_text() == "none\nnone\n", "format 3 keeps no pidfds of its own"
    wait_until(lambda: sup.fd_count() == fds, 5, lambda: f"fds back to {fds}: {conftest.proc_fds(sup.pid)}")
    assert len(pidfds(sup.pid)) == 4, conftest.proc_fds(sup.pid)
    # A worker started after the upgrade: exactly stdio and its socket.
    r = ctl(sup, "restart", "1")
    assert r.returncode == 0, r.stderr
    st = wait_until(lambda: (lambda s: s if s["slots"][1]["pid"] not in (None, before[1][0]) and s["ready"] == 4
                             else None)(status(sup)), 10, "slot 1 restarted")
    new = st["slots"][1]["pid"]
    # What it has from bindonce (the test worker opens a file of its own in its directory,
    # once past its dynamic loader, whose libraries are fds for a moment).
    wait_until(lambda: any(t.startswith(str(sup.tw_dir)) for t, _ in conftest.proc_fds(new).values()), 10,
               "the new worker up")
    inherited = {fd: t for fd, (t, _) in conftest.proc_fds(new).items() if not t.startswith(str(sup.tw_dir))}
    assert sorted(inherited) == [0, 1, 2, 3] and inherited[3].startswith("socket:"), str(sorted(inherited.items()))
    assert pidfds(new) == []
    assert workers_of(st)[0] == before[0]


def test_older_formats_for_binaries_that_read_only_them(supervisor, binary, tmp_path):
    """Going back to a bindonce that reads only state format 1: it gets format 1 (workers
    named by pid and start time, no pidfd ids, no pidfds) and adopts every worker; then to
    one that reads up to 2: format 2 (pidfd ids, no pidfds: it opens its own); the next
    upgrade, to a binary that reads 3, writes 3 again, pidfds and all."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=3)
    before = workers_of(status(sup))
    real = Path(conftest.BINDONCE)
    keep = tmp_path / "states"
    keep.mkdir()

    def wrapper(name, env):
        return script(tmp_path / name,
                      f'#!/bin/sh\n{env}\n[ "$1" = --upgrade-check ] || {{ '
                      f'cat /proc/self/fd/$BINDONCE_UPGRADE_STATE > "{keep}/{name}"; '
                      f'echo "${{BINDONCE_UPGRADE_PIDFDS:-none}}" > "{keep}/{name}.kept"; }}\n'
                      f'exec "{real}" "$@"\n')

    r = ctl(sup, "upgrade", "--exe", str(wrapper("old", "export BINDONCE_TEST_STATE_VERSION=1")))
    assert r.returncode == 0, r.stderr + sup.log()
    assert workers_of(status(sup)) == before
    text = (keep / "old").read_text()
    assert text.startswith("bindonce-state 1\n")
    workers = [rec for name, rec in read_state(keep / "old") if name == "worker"]
    assert len(workers) == 3 and all("pidfd_id" not in w and int(w["starttime"]) > 0 for w in workers), workers
    assert (keep / "old.kept").read_text() == "none\n"

    r = ctl(sup, "upgrade", "--exe", str(wrapper("two", "export BINDONCE_TEST_STATE_VERSION='1 2'")))
    assert r.returncode == 0, r.stderr + sup.log()
    assert workers_of(status(sup)) == before
    assert (keep / "two").read_text().startswith("bindonce-state 2\n")
    workers = [rec for name, rec in read_state(keep / "two") if name == "worker"]
    assert len(workers) == 3 and all(int(w["pidfd_id"]) > 0 and w["starttime"] == "0" and "pidfd" not in w
                                     for w in workers), workers
    assert (keep / "two.kept").read_text() == "none\n"

    r = ctl(sup, "upgrade", "--exe", str(wrapper("new", "unset BINDONCE_TEST_STATE_VERSION")))
    assert r.returncode == 0, r.stderr + sup.log()
    assert workers_of(status(sup)) == before
    assert (keep / "new").read_text().startswith("bindonce-state 3\n")
    workers = [rec for name, rec in read_state(keep / "new") if name == "worker"]
    assert len(workers) == 3 and all(int(w["pidfd_id"]) > 0 and "starttime" not in w and int(w["pidfd"]) > 2
                                     for w in workers), workers
    assert_serving(port)


def test_a_process_with_another_pidfd_id_is_not_adopted(supervisor, binary, tmp_path):
    """The pidfd id in the state is what tells the worker from a process that got its pid
    since, where no pidfd of it crosses the exec (format 2): a wrapper changes worker 1's id
    in the state, and the new program, which finds another id on the pidfd it opens for that
    pid, does not adopt it (its slot starts a new worker), while the others are adopted."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=3)
    before = workers_of(status(sup))
    victim = before[1][0]
    sup.expect_log(rf"warning: upgrade: worker 1 \(pid {victim}\) is no longer our child; its slot starts again$")
    real = Path(conftest.BINDONCE)
    edit = tmp_path / "edit.py"
    edit.write_text(
        "import re, sys\n"
        "path = sys.argv[1]\n"
        "text = open(path).read()\n"
        "line = re.search(r'^worker slot=1 .*$', text, re.M)[0]\n"
        "assert ' pidfd=' not in line, line\n"
        "new = re.sub(r' pidfd_id=(\\d+)', lambda m: ' pidfd_id=' + str(int(m[1]) + 1), line)\n"
        "text = text.replace(line, new)\n"
        "open(path, 'w').write(text)\n")
    wrapper = script(tmp_path / "new-bindonce",
                     "#!/bin/sh\nexport BINDONCE_TEST_STATE_VERSION='1 2'\n"
                     f'[ "$1" = --upgrade-check ] || /usr/bin/python3 "{edit}" '
                     f'/proc/self/fd/$BINDONCE_UPGRADE_STATE\nexec "{real}" "$@"\n')
    try:
        r = ctl(sup, "upgrade", "--exe", str(wrapper))
        assert r.returncode == 0, r.stderr + sup.log()
        st = wait_until(lambda: (lambda s: s if s["slots"][1]["pid"] not in (None, victim) and s["ready"] == 3
                                 else None)(status(sup)), 10, "slot 1 started anew")
        after = workers_of(st)
        assert {k: v for k, v in after.items() if k != 1} == {k: v for k, v in before.items() if k != 1}
        assert "2 of 3 workers adopted" in sup.log()
    finally:
        # No longer bindonce's worker: ours to end.
        if proc_stat(victim) is not None:
            os.kill(victim, signal.SIGKILL)


def test_a_pidfd_that_did_not_come_across_is_opened_again(supervisor, binary, tmp_path):
    """Format 3 names each worker's pidfd, which crosses the exec. One that did not (the
    wrapper, running as bindonce's pid between the two programs, closes worker 1's) is
    forgotten before the new program opens anything of its own, and a pidfd opened for the
    worker's pid, whose id is the state's, identifies it instead: every worker adopted,
    nothing restarted, one pidfd a worker, and the fds as they were."""
    port = conftest.free_tcp_port()
    sup = start(supervisor, port, workers=3)
    before = workers_of(status(sup))
    fds = sup.stable_fd_count()
    real = Path(conftest.BINDONCE)
    closer = tmp_path / "closer.py"
    closer.write_text(
        "import os, re, sys\n"
        "text = open('/proc/self/fd/' + os.environ['BINDONCE_UPGRADE_STATE']).read()\n"
        "fd = int(re.search(r'^worker slot=1 .* pidfd=(\\d+)', text, re.M)[1])\n"
        "os.close(fd)\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n")
    wrapper = script(tmp_path / "new-bindonce",
                     f'#!/bin/sh\n[ "$1" = --upgrade-check ] && exec "{real}" "$@"\n'
                     f'exec /usr/bin/python3 "{closer}" "{real}" "$@"\n')
    r = ctl(sup, "upgrade", "--exe", str(wrapper))
    assert r.returncode == 0, r.stderr + sup.log()
    assert "3 of 3 workers adopted" in sup.log()
    assert workers_of(status(sup)) == before
    wait_until(lambda: sup.fd_count() == fds, 5, lambda: f"fds back to {fds}: {conftest.proc_fds(sup.pid)}")
    assert len(pidfds(sup.pid)) == 3, conftest.proc_fds(sup.pid)
    assert_serving(port)


def test_inherited_children_and_escapes_keep_their_kind_across_the_exec(supervisor, binary, tmp_path):
    """bindonce stops what escaped its workers, never what it inherited (a shell's
    background job): after an upgrade in place both are children of the new process, which
    must still tell them apart, or an escape would outlive the stop holding the socket."""
    bg_file, esc_file = tmp_path / "bg", tmp_path / "escape"
    port = conftest.free_tcp_port()
    # The shell's background job becomes bindonce's child through exec; the worker leaves
    # an escape (setsid) that is re-parented to bindonce, the subreaper.
    wrapper = ["sh", "-c", f'sleep 1000 & echo $! > {bg_file}; exec "$@"', "sh"]
    # (A subshell that exits at once: its sleep is re-parented to bindonce right away.)
    worker = f'[ -e {esc_file} ] || ( setsid sleep 1001 & echo $! > {esc_file} ); exec {TESTWORKER}'
    sup = supervisor()
    sup.expect_log(r"left behind by a worker, still holds a listening socket")
    sup.start(["-w", "1", "-l", f"127.0.0.1:{port}", "--stop-timeout", "1"], ["sh", "-c", worker],
              wrapper=wrapper, wait_workers=1)
    bg = int(wait_until(lambda: bg_file.exists() and bg_file.read_text().strip(), 5, "the background pid"))
    escape = int(wait_until(lambda: esc_file.exists() and esc_file.read_text().strip(), 5, "the escape's pid"))
    sup.remember(escape)
    try:
        wait_until(lambda: proc_stat(escape) and proc_stat(escape).ppid == sup.pid, 5,
                   "the escape re-parented to bindonce")
        wait_until(lambda: ready(sup, 1), 10, "1 worker ready")
        r = ctl(sup, "upgrade")
        assert r.returncode == 0, r.stdout + r.stderr + sup.log()
        assert sup.stop() == 0, sup.log()
        assert not conftest.proc_alive(escape), "the escape outlived bindonce (taken for inherited)"
        assert conftest.proc_alive(bg), "bindonce stopped a process it never started"
    finally:
        for pid in (bg, escape):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_upgrades_back_to_back_with_a_thousand_workers(supervisor, binary, tmp_path):
    """The new program answers before it watches its adopted workers (32 a loop turn); an
    upgrade that comes at once finds some of them not watched yet, and hands over the pidfd
    each was adopted by. Three in a row, each request sent the moment the last was
    answered: every state names a distinct pidfd for each of the 1,000 workers, none is
    restarted, and bindonce's fds come back to what they were (the held pidfds closed as
    the workers get watched). A worker killed right after the last answer is restarted."""
    port = conftest.free_tcp_port()
    sup = supervisor().start(["-w", "1000", "-l", f"127.0.0.1:{port}"], ["/usr/bin/sleep", "100000"])
    wait_until(lambda: ready(sup, 1000), 60, "1000 workers ready")
    sup.mark_fds()
    before = workers_of(status(sup))
    wrapper, keep = state_keeping_binary(tmp_path)
    request = f"upgrade --exe {wrapper}\n".encode()
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(sup.control_path))
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"OK\nupgraded to"), answer + sup.log().encode()
    victim = before[999][0]
    sup.expect_log(rf"warning: worker 999 \(pid {victim}\) killed by signal KILL$")   # on purpose
    os.kill(victim, signal.SIGKILL)
    for state in sorted(keep.iterdir()):
        pidfds_named = [int(rec["pidfd"]) for name, rec in read_state(state) if name == "worker"]
        assert len(pidfds_named) == 1000 and len(set(pidfds_named)) == 1000 and min(pidfds_named) > 2, state
    st = wait_until(lambda: (lambda s: s if s["slots"][999]["pid"] not in (None, victim) and s["ready"] == 1000
                             else None)(status(sup)), 30, "slot 999 restarted")
    after = workers_of(st)
    assert {k: v for k, v in after.items() if k != 999} == {k: v for k, v in before.items() if k != 999}
    wait_until(lambda: len(pidfds(sup.pid)) == 1000, 10, "one pidfd a worker")
