"""Issue 11 under a real systemd (252): `bindonce ctl upgrade` replaces bindonce in place.

What systemd must see (bindonce(1), UPGRADE IN PLACE): the same main process (MainPID,
ExecMainStartTimestamp, NRestarts unchanged), a unit that stays active (RELOADING=1 before
the exec, READY=1 after it, so "running -> reload -> running" and nothing else), the fd store
and the sockets untouched, the watchdog answered by the new program; and what the clients
see: nothing refused, nothing failed, the same workers answering.

The new binary is a copy of the installed one moved over /usr/bin/bindonce (as dpkg or
`make install` do): a new inode at the same path, which /proc/MAINPID/exe names only once
the running bindonce executed it. Every wait is bounded; the load client (on the host, the
container shares its network) stops by itself.
"""

import json
import os
import re
import time

import pytest

from sysd_container import log, wait_for
from sysd_load import Load, free_tcp_port, request_once, summary

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

BINDONCE = "/usr/bin/bindonce"
HTTPD = "/usr/libexec/bindonce/example-httpd"
SOCK = "bindonce-example.socket"
SVC = "bindonce-example.service"
EXAMPLE_PORT = 8080
EXAMPLE_CONTROL = "/run/bindonce-example/example-httpd.sock"
FDSTORE_NAME = "upgfd"
FDSTORE_SVC = "bindonce@%s.service" % FDSTORE_NAME
# The fd-store instance runs with a watchdog: the new program must answer it too.
WATCHDOG_SEC = 2
TESTDIR = "/usr/local/lib/bindonce-test"
WORKERS = 4
UPGRADES = 3

# What PID 1 knows of a unit; these must not change across an upgrade. (Active/Inactive
# EnterTimestamp: reload -> running does not touch them, a stop or a failure would.)
UNCHANGED = ("MainPID", "NRestarts", "ExecMainStartTimestampMonotonic", "ExecMainPID",
             "ActiveEnterTimestampMonotonic", "InactiveEnterTimestampMonotonic",
             "InactiveExitTimestampMonotonic", "NFileDescriptorStore", "FileDescriptorStoreMax",
             "ControlGroup", "Result")


def makefile_version():
    with open(os.path.join(REPO, "Makefile")) as f:
        return re.search(r"^VERSION\s*:?=\s*(\S+)", f.read(), re.M).group(1)


# ---- what the container shows ------------------------------------------------------------

def unit_props(c, unit, props=UNCHANGED + ("ActiveState", "SubState")):
    out = c.systemctl("show", unit, *("-p" + p for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def workers_up(c, unit, n):
    """MainPID once StatusText says n/n workers up and bindonce has n children."""
    if not c.show(unit, "StatusText").startswith("%d/%d workers up" % (n, n)):
        return None
    main = c.main_pid(unit)
    return main if main and len(c.children(main)) == n else None


def ctl(c, target, *args, timeout=60):
    return c.run([BINDONCE, "ctl"] + list(target) + list(args), check=False, timeout=timeout)


def ctl_status(c, target):
    r = ctl(c, target, "--json", "status")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def workers_of(st):
    """{slot: (pid, since, restarts)}: ctl status's view of the workers."""
    return {s["slot"]: (s["pid"], s["since"], s["restarts"]) for s in st["slots"][:st["workers"]]}


def listener_inode(c, port):
    out = c.run(["ss", "-Hltne", "sport = :%d" % port]).stdout
    m = re.findall(r"ino:(\d+)", out)
    assert len(m) == 1, "expected one listener on port %d, ss says:\n%s" % (port, out)
    return m[0]


def exe(c, pid):
    """(what /proc/PID/exe names, the inode of the file it is)."""
    link = c.run(["readlink", "/proc/%d/exe" % pid]).stdout.strip()
    ino = c.run(["stat", "-L", "-c", "%i", "/proc/%d/exe" % pid]).stdout.strip()
    return link, ino


def file_inode(c, path):
    return c.run(["stat", "-c", "%i", path]).stdout.strip()


def fd_count(c, pid):
    return len(c.run(["ls", "/proc/%d/fd" % pid]).stdout.split())


def init_refs(c, inode):
    """How many fds of the container's PID 1 are the socket `inode`: the socket unit's own,
    or the fd store's entries (read from the host: /proc/<init pid>/fd)."""
    n = 0
    base = "/proc/%d/fd" % c.init_pid
    for fd in os.listdir(base):
        try:
            n += os.readlink(os.path.join(base, fd)) == "socket:[%s]" % inode
        except OSError:
            pass
    return n


def pid1_log(c, unit, cursor):
    return [l for l in c.journal(cursor=cursor, pid=1).splitlines() if l.startswith(unit + ": ")]


def state_changes(lines, unit):
    return [tuple(m.groups()) for l in lines
            for m in [re.fullmatch(r"%s: Changed (\S+) -> (\S+)" % re.escape(unit), l)] if m]


def notifications(lines, unit, pid):
    """The NOTIFY_SOCKET messages PID 1 took from pid (at debug level), in order."""
    prefix = "%s: Got notification message from PID %d (" % (unit, pid)
    return [l[len(prefix):-1] for l in lines if l.startswith(prefix)]


def other_senders(lines, unit, pid):
    return [l for l in lines if re.match(r"%s: Got notification message from PID (?!%d )" % (re.escape(unit), pid), l)]


def bindonce_log(c, cursor):
    # By SYSLOG_IDENTIFIER: journald may attribute a process's first lines to a stale unit.
    return c.journal(cursor=cursor, identifier="bindonce")


def assert_no_errors(c, unit, cursor, allow=()):
    text = (c.journal(cursor=cursor, priority=3, identifier="bindonce") +
            c.journal(unit=unit, cursor=cursor, priority=3))
    lines = [l for l in text.splitlines() if l.strip() and not any(re.search(a, l) for a in allow)]
    assert not lines, "error lines in the journal (%s):\n%s" % (unit, "\n".join(lines))


def wait_running(c, unit):
    """bindonce answers ctl upgrade, then sends READY=1: PID 1 may not have read it yet
    when ctl returns (it is "reloading" meanwhile)."""
    wait_for(lambda: c.show(unit, "SubState") == "running", 10, unit + " running again")


def install_new_binary(c):
    """A copy of /usr/bin/bindonce moved over it: same bytes, a new inode at the path."""
    old = file_inode(c, BINDONCE)
    c.sh("cp -p %s %s.upgrade-test && mv -f %s.upgrade-test %s" % ((BINDONCE,) * 4))
    new = file_inode(c, BINDONCE)
    assert new != old, "the copy has the inode of the old file (%s)" % old
    return new


@pytest.fixture
def debug_pid1(c):
    """PID 1 at debug level: it logs each notification it takes and each state change, which
    no polling of `systemctl show` could catch (the upgrade takes milliseconds)."""
    c.systemctl("log-level", "debug")
    try:
        yield
    finally:
        c.systemctl("log-level", "info", check=False)


@pytest.fixture(scope="module")
def c(container):
    return container


# ---- the two ways bindonce runs under systemd -----------------------------------------------

class Example:
    """bindonce-example.service behind bindonce-example.socket: the socket unit holds the
    port, bindonce runs as a DynamicUser with ProtectSystem=strict."""
    unit = SVC
    port = EXAMPLE_PORT
    target = ("--control", EXAMPLE_CONTROL)
    fd_store = False
    watchdog = False

    def start(self, c):
        if c.show(SOCK, "ActiveState") != "active":
            if request_once("127.0.0.1", EXAMPLE_PORT)[0] != "refused":
                pytest.skip("127.0.0.1:%d is in use on the host; the example units need it" % EXAMPLE_PORT)
            c.systemctl("start", SOCK)
        if c.show(SVC, "ActiveState") != "active":
            c.systemctl("start", SVC, timeout=60)
        return wait_for(lambda: workers_up(c, SVC, WORKERS), 30, "%d/%d workers of %s" % (WORKERS, WORKERS, SVC))

    def stop(self, c):
        c.systemctl("stop", SVC, SOCK, timeout=90, check=False)


class FdStore:
    """bindonce@NAME.service: bindonce binds the port itself and hands it to the fd store
    (FileDescriptorStoreMax=16), runs as root, here with WatchdogSec= too."""
    unit = FDSTORE_SVC
    target = ("--name", FDSTORE_NAME)
    fd_store = True
    watchdog = True
    conf = "/etc/bindonce/%s.conf" % FDSTORE_NAME
    dropin = "/etc/systemd/system/%s.d/watchdog.conf" % FDSTORE_SVC

    def start(self, c):
        self.port = free_tcp_port()
        c.write_file(self.conf, 'BINDONCE_OPTS="-l 127.0.0.1:%d -w %d --stop-timeout 5"\nBINDONCE_COMMAND="%s"\n'
                     % (self.port, WORKERS, HTTPD))
        c.write_file(self.dropin, "[Service]\nWatchdogSec=%ds\n" % WATCHDOG_SEC)
        c.systemctl("daemon-reload")
        c.systemctl("start", FDSTORE_SVC, timeout=60)
        return wait_for(lambda: workers_up(c, FDSTORE_SVC, WORKERS), 30,
                        "%d/%d workers of %s" % (WORKERS, WORKERS, FDSTORE_SVC))

    def stop(self, c):
        c.systemctl("stop", FDSTORE_SVC, timeout=90, check=False)
        c.run(["rm", "-f", self.conf, self.dropin], check=False)
        c.systemctl("daemon-reload", check=False)


KINDS = {"socket-unit": Example, "fd-store": FdStore}


@pytest.fixture(params=list(KINDS))
def svc(request, c):
    s = KINDS[request.param]()
    try:
        s.main = s.start(c)
        yield s
    finally:
        s.stop(c)


def snapshot(c, s):
    """Everything an upgrade must leave as it is."""
    main = c.main_pid(s.unit)
    inode = listener_inode(c, s.port)
    return {
        "unit": unit_props(c, s.unit),
        "workers": workers_of(ctl_status(c, s.target)),
        "children": c.children(main),
        "inode": inode,
        "worker fd 3": {w: c.fd_socket_inode(w, 3) for w in c.children(main)},
        "bindonce fd 3": c.fd_socket_inode(main, 3),
        "PID 1 refs": init_refs(c, inode),
        "cgroup": c.cgroup_procs(c.show(s.unit, "ControlGroup"))[1],
    }


def assert_unchanged(before, after):
    diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not diff, "changed across the upgrade (before, after): %s" % diff


# ---- the upgrade ----------------------------------------------------------------------------

def test_upgrade_in_place_keeps_the_main_pid_workers_and_sockets(c, svc, debug_pid1):
    main = svc.main
    version = makefile_version()
    before = snapshot(c, svc)
    log("upgrade/%s: before %s" % (svc.unit, before))
    assert before["unit"]["ActiveState"] == "active" and before["unit"]["SubState"] == "running", before["unit"]
    assert set(before["worker fd 3"].values()) == {before["inode"]} == {before["bindonce fd 3"]}
    assert sorted(p for p, _, _ in before["workers"].values()) == before["children"]
    assert before["cgroup"] == sorted([main] + before["children"]), before
    if svc.fd_store:
        assert before["unit"]["NFileDescriptorStore"] == "1", before["unit"]
    assert before["PID 1 refs"] == 1, "PID 1 holds the socket once (socket unit or fd store)"
    fds = fd_count(c, main)

    cursor = c.journal_cursor()
    with Load("127.0.0.1", svc.port) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        for i in range(UPGRADES):
            new_inode = install_new_binary(c)
            assert exe(c, main)[0] == BINDONCE + " (deleted)", "the old file runs until the upgrade"
            r = ctl(c, svc.target, "upgrade")
            assert r.returncode == 0, "upgrade %d: exit %d\n%s%s" % (i + 1, r.returncode, r.stdout, r.stderr)
            assert r.stdout == "upgraded to %s (pid %d)\n" % (version, main), r.stdout + r.stderr
            assert exe(c, main) == (BINDONCE, new_inode), "/proc/%d/exe after upgrade %d" % (main, i + 1)
        t1 = time.monotonic()
        overlap = load.attempts_within(t0, t1)
        load.wait_ok(50)
    counts = load.counts()
    log("upgrade/%s: %d upgrades in %.2f s; %s; %d attempts overlapped"
        % (svc.unit, UPGRADES, t1 - t0, summary(counts), overlap))
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert overlap >= 4, "only %d requests overlapped the upgrades" % overlap
    assert counts["refused"] == 0, summary(counts)
    assert counts["ok"] == sum(counts.values()), "%s; failures: %s" % (summary(counts), load.failures()[:10])
    assert load.pids() <= set(before["children"]), "answered by other workers: %s" % (load.pids() - set(before["children"]))

    # The answered ctl client lingers until it has read its EOF: then bindonce's count is back.
    wait_for(lambda: fd_count(c, main) == fds, 10, "bindonce's fd count back to %d" % fds)
    wait_running(c, svc.unit)
    after = snapshot(c, svc)
    assert_unchanged(before, after)
    st = ctl_status(c, svc.target)
    assert st["pid"] == main and st["version"] == version, st
    # The STATUS= of "upgrading to ..." was followed by the usual one.
    assert c.show(svc.unit, "StatusText").startswith("%d/%d workers up" % (WORKERS, WORKERS)), \
        c.show(svc.unit, "StatusText")

    # What systemd saw: RELOADING=1 (with MONOTONIC_USEC) then READY=1 from the same main
    # process for each upgrade, its unit running -> reload -> running, nothing else.
    pid1 = pid1_log(c, svc.unit, cursor)
    said = notifications(pid1, svc.unit, main)
    flags = [m for m in said if "RELOADING=1" in m or "READY=1" in m]
    assert len(flags) == 2 * UPGRADES and all(
        "RELOADING=1" in flags[2 * i] and "MONOTONIC_USEC=" in flags[2 * i] and "READY=1" in flags[2 * i + 1]
        for i in range(UPGRADES)), "bindonce's notifications:\n" + "\n".join(said)
    assert not any("FDSTORE=1" in m or "MAINPID=" in m for m in said), "\n".join(said)
    assert not other_senders(pid1, svc.unit, main), "\n".join(other_senders(pid1, svc.unit, main))
    changes = state_changes(pid1, svc.unit)
    assert changes == [("running", "reload"), ("reload", "running")] * UPGRADES, \
        "state changes %s\n%s" % (changes, "\n".join(pid1))
    bad = [l for l in pid1 if re.search(r"Main process exited|Watchdog timeout|Failed|Scheduled restart|"
                                        r"Killing|Deactivated|Supervising process", l)]
    assert not bad, "\n".join(bad)

    log_ = bindonce_log(c, cursor)
    ups = re.findall(r"upgraded in place from bindonce %s to %s \(pid %d, %s\): %d of %d workers adopted"
                     % (re.escape(version), re.escape(version), main, re.escape(BINDONCE), WORKERS, WORKERS), log_)
    assert len(ups) == UPGRADES, log_
    assert_no_errors(c, svc.unit, cursor)

    if svc.watchdog:
        # The new program pings the watchdog: a ping later than the last upgrade (the
        # container shares the host's CLOCK_MONOTONIC), well within WatchdogSec.
        since = int(time.monotonic() * 1e6)
        wait_for(lambda: int(c.show(svc.unit, "WatchdogTimestampMonotonic") or 0) > since, 5 * WATCHDOG_SEC,
                 "a watchdog ping from the new program")
        assert c.show(svc.unit, "WatchdogUSec") in ("%ds" % WATCHDOG_SEC, str(WATCHDOG_SEC * 1000000))
    # ExecReload= (ctl reload, through the control socket that crossed the exec) still rolls.
    r = c.systemctl("reload", svc.unit, check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: (lambda w: w if w and not set(c.children(w)) & set(before["children"]) else None)
             (workers_up(c, svc.unit, WORKERS)), 30, "every worker replaced by systemctl reload")
    assert c.main_pid(svc.unit) == main
    if svc.fd_store:
        # The store is as consistent as before: a restart adopts the very socket again.
        c.systemctl("restart", svc.unit, timeout=90)
        main2 = wait_for(lambda: (lambda m: m if m and m != main else None)(workers_up(c, svc.unit, WORKERS)),
                         30, "%d workers of a new bindonce" % WORKERS)
        assert c.fd_socket_inode(main2, 3) == before["inode"], "the restart did not get the stored socket back"
        assert c.show(svc.unit, "NFileDescriptorStore") == "1"
        assert init_refs(c, before["inode"]) == 1
    assert request_once("127.0.0.1", svc.port)[0] == "ok"


def test_sigusr2_to_the_main_process_upgrades_in_place(c, debug_pid1):
    """The signal, as an operator sends it under systemd: to the main process only
    (`systemctl kill --kill-who=main`; to the whole unit, the workers would get it too)."""
    s = Example()
    try:
        main = s.start(c)
        before = snapshot(c, s)
        new_inode = install_new_binary(c)
        cursor = c.journal_cursor()
        c.systemctl("kill", "--kill-who=main", "--signal=SIGUSR2", s.unit)
        wait_for(lambda: "upgraded in place" in bindonce_log(c, cursor), 15, "bindonce's \"upgraded in place\"")
        assert exe(c, main) == (BINDONCE, new_inode)
        wait_running(c, s.unit)
        assert_unchanged(before, snapshot(c, s))
        pid1 = pid1_log(c, s.unit, cursor)
        assert state_changes(pid1, s.unit) == [("running", "reload"), ("reload", "running")], "\n".join(pid1)
        assert_no_errors(c, s.unit, cursor)
        assert request_once("127.0.0.1", s.port)[0] == "ok"
    finally:
        s.stop(c)


# ---- a new binary that does not take over -------------------------------------------------------

BAD_CHECK = "#!/bin/sh\nexit 1\n"
# Passes the check (the real binary answers it), then, as the new main process, makes the
# real binary refuse the state: it executes the old program back (kept as an fd).
GIVES_BACK = ('#!/bin/sh\n[ "$1" = --upgrade-check ] || export BINDONCE_TEST_FAIL_RESTORE=1\n'
              'exec %s "$@"\n' % BINDONCE)

REFUSALS = {
    # name: (script, what ctl says, what bindonce logs at error level, systemd notified)
    "check-exits-1": (BAD_CHECK, r"upgrade failed: {exe} --upgrade-check exited with status 1\n$",
                      [r"upgrade refused: {exe} --upgrade-check exited with status 1; bindonce \S+ continues$"],
                      False),
    "new-process-gives-the-state-back": (
        GIVES_BACK, r"upgrade failed: the new bindonce \S+ could not take over: BINDONCE_TEST_FAIL_RESTORE is set; "
                    r"bindonce \S+ continues \(pid {pid}\)\n$",
        [r"upgrade: this bindonce \(\S+\) cannot take over: BINDONCE_TEST_FAIL_RESTORE is set; "
         r"executing the previous binary again$",
         r"upgrade failed: the new bindonce \S+ could not take over: BINDONCE_TEST_FAIL_RESTORE is set; "
         r"bindonce \S+ continues$"],
        True),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_upgrade_to_a_broken_binary_leaves_the_old_one_serving(c, debug_pid1, case):
    script, says, logs, notified = REFUSALS[case]
    s = Example()
    try:
        main = s.start(c)
        bad = "%s/new-bindonce-%s" % (TESTDIR, case)
        c.write_file(bad, script, mode=0o755)
        before = snapshot(c, s)
        running = exe(c, main)
        cursor = c.journal_cursor()
        with Load("127.0.0.1", s.port) as load:
            load.wait_ok(50)
            t0 = time.monotonic()
            r = ctl(c, s.target, "upgrade", "--exe", bad)
            overlap = load.attempts_within(t0, time.monotonic())
            load.wait_ok(50)
        counts = load.counts()
        log("upgrade refused (%s): %s; %d attempts overlapped" % (case, summary(counts), overlap))
        want = says.format(exe=re.escape(bad), pid=main)
        assert r.returncode == 1 and r.stdout == "", "ctl upgrade: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
        assert re.match(r"bindonce ctl: " + want, r.stderr), "ctl said %r, expected /%s/" % (r.stderr, want)
        assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
        assert counts["refused"] == 0, summary(counts)
        assert counts["ok"] == sum(counts.values()), "%s; failures: %s" % (summary(counts), load.failures()[:10])
        assert load.pids() <= set(before["children"])

        wait_running(c, s.unit)
        assert_unchanged(before, snapshot(c, s))
        assert exe(c, main) == running, "not the binary that ran before"
        pid1 = pid1_log(c, s.unit, cursor)
        said = [m for m in notifications(pid1, s.unit, main) if "RELOADING=1" in m or "READY=1" in m]
        changes = state_changes(pid1, s.unit)
        if notified:
            # The exec happened: systemd heard RELOADING=1, then READY=1 from the old program back.
            assert len(said) == 2 and "RELOADING=1" in said[0] and "READY=1" in said[1], "\n".join(pid1)
            assert changes == [("running", "reload"), ("reload", "running")], "%s\n%s" % (changes, "\n".join(pid1))
        else:
            assert said == [] and changes == [], "refused at the check, yet systemd heard:\n" + "\n".join(pid1)
        errors = c.journal(cursor=cursor, priority=3, identifier="bindonce")
        for pattern in logs:
            assert re.search(pattern.format(exe=re.escape(bad)), errors, re.M), errors
        assert_no_errors(c, s.unit, cursor, allow=[p.format(exe=re.escape(bad)) for p in logs])

        # Nothing is left of the attempt: the next upgrade goes through.
        r = ctl(c, s.target, "upgrade")
        assert r.returncode == 0, r.stdout + r.stderr
        assert workers_of(ctl_status(c, s.target)) == before["workers"]
        assert c.main_pid(s.unit) == main
    finally:
        s.stop(c)


# ---- a new program that dies right after the exec ----------------------------------------------

# Answers the check as the real binary does, then, as the new main process, dies before it
# has read the state: the one case the hand-back cannot cover (bindonce(1), UPGRADE IN PLACE).
CRASHES = '#!/bin/sh\n[ "$1" = --upgrade-check ] && exec %s "$@"\nkill -KILL $$\n' % BINDONCE


def test_upgrade_to_a_program_that_dies_after_the_exec_restarts_the_unit(c, svc):
    """What the man page promises under systemd: the main process is gone, systemd stops
    what is left of the unit and (Restart=on-failure) starts it again; the socket, held by
    the socket unit or the fd store, stays bound, so nothing is refused. Only the requests
    the killed workers had in hand may be lost."""
    main = svc.main
    crashes = "%s/new-bindonce-crashes" % TESTDIR
    c.write_file(crashes, CRASHES, mode=0o755)
    before = snapshot(c, svc)
    cursor = c.journal_cursor()
    with Load("127.0.0.1", svc.port) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        r = ctl(c, svc.target, "upgrade", "--exe", crashes)
        main2 = wait_for(lambda: (lambda m: m if m and m != main else None)(workers_up(c, svc.unit, WORKERS)),
                         30, "%d workers of a bindonce started again" % WORKERS)
        overlap = load.attempts_within(t0, time.monotonic())
        load.wait_ok(50)
    counts = load.counts()
    log("upgrade crash/%s: %s; %d attempts overlapped" % (svc.unit, summary(counts), overlap))
    assert r.returncode == 69 and "closed the connection without an answer" in r.stderr, \
        "ctl upgrade: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
    assert overlap >= 4, "only %d requests overlapped" % overlap
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert counts["refused"] == 0 and counts["connect_timeout"] == 0, summary(counts)
    lost = sum(v for k, v in counts.items() if k != "ok")
    assert lost <= WORKERS, "%s; failures: %s" % (summary(counts), load.failures()[:10])

    after = unit_props(c, svc.unit)
    assert after["ActiveState"] == "active" and int(after["NRestarts"]) == int(before["unit"]["NRestarts"]) + 1, after
    assert after["NFileDescriptorStore"] == before["unit"]["NFileDescriptorStore"], after
    assert listener_inode(c, svc.port) == before["inode"], "the port was bound again"
    assert c.fd_socket_inode(main2, 3) == before["inode"]
    assert init_refs(c, before["inode"]) == 1
    assert not set(c.children(main2)) & set(before["children"])
    pid1 = "\n".join(pid1_log(c, svc.unit, cursor))
    assert "%s: Main process exited, code=killed, status=9/KILL" % svc.unit in pid1, pid1
    assert re.search(r"Scheduled restart job, restart counter is at %s\." % after["NRestarts"], pid1), pid1
    assert request_once("127.0.0.1", svc.port)[0] == "ok"


# ---- the package's upgrade, then the upgrade in place -------------------------------------------

@pytest.mark.package
def test_package_upgrade_upgrades_a_running_instance_in_place(c, installation):
    """The operator's way with the package: dpkg -i of the new package replaces
    /usr/bin/bindonce (a new file), and its postinst upgrades each running bindonce@NAME
    in place (`bindonce ctl --name NAME upgrade`): the same main pid runs the new file,
    its workers untouched."""
    s = FdStore()
    try:
        main = s.start(c)
        before = snapshot(c, s)
        r = installation.dpkg_install(c)
        assert r.returncode == 0, "dpkg -i: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
        assert "keeps running the previous" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert c.main_pid(s.unit) == main, "the package's upgrade restarted %s" % s.unit
        assert exe(c, main) == (BINDONCE, file_inode(c, BINDONCE)), "postinst did not upgrade in place"
        wait_running(c, s.unit)
        assert_unchanged(before, snapshot(c, s))
    finally:
        s.stop(c)


# ---- an upgrade before the unit is ready ------------------------------------------------------

def test_upgrade_while_the_unit_is_activating(c, debug_pid1):
    """ctl upgrade before bindonce has sent READY=1 (its workers are not ready yet): the new
    program carries "not ready yet" across the exec and sends READY=1 once the same workers
    are ready, so the start job ends as it would have, with the same MainPID. (RELOADING=1
    in the "start" state changes nothing for systemd.)"""
    name = "upgslow"
    unit = "bindonce@%s.service" % name
    flag = "/run/bindonce-test-%s-go" % name
    conf = "/etc/bindonce/%s.conf" % name
    worker = "%s/ready-on-flag" % TESTDIR
    port = free_tcp_port()
    # Ready only once the test says so (bounded: 60 s), from a helper in its process group.
    c.write_file(worker, "#!/bin/sh\nfor i in $(seq 600); do [ -e %s ] && break; sleep 0.1; done\n"
                 "systemd-notify --ready\nexec %s\n" % (flag, HTTPD), mode=0o755)
    c.write_file(conf, 'BINDONCE_OPTS="-l 127.0.0.1:%d -w 2 --ready notify --notify-access all '
                 '--start-timeout 120"\nBINDONCE_COMMAND="%s"\n' % (port, worker))
    c.run(["rm", "-f", flag])
    try:
        cursor = c.journal_cursor()
        c.systemctl("start", "--no-block", unit)
        main = wait_for(lambda: (lambda m: m if m and len(c.children(m)) == 2 else None)(c.main_pid(unit)),
                        30, "bindonce and its 2 workers, not ready")
        wait_for(lambda: ctl(c, ("--name", name), "status").returncode == 0, 10, "the control socket")
        workers = c.children(main)
        assert c.show(unit, "ActiveState") == "activating"
        install_new_binary(c)
        r = ctl(c, ("--name", name), "upgrade")
        assert r.returncode == 0 and r.stdout == "upgraded to %s (pid %d)\n" % (makefile_version(), main), \
            r.stdout + r.stderr
        assert c.show(unit, "ActiveState") == "activating", "ready before the workers are"
        c.run(["touch", flag])
        wait_for(lambda: c.show(unit, "ActiveState") == "active", 30, unit + " active")
        assert c.main_pid(unit) == main and c.children(main) == workers
        assert exe(c, main) == (BINDONCE, file_inode(c, BINDONCE))
        assert c.show(unit, "NRestarts") == "0"
        pid1 = pid1_log(c, unit, cursor)
        said = [m for m in notifications(pid1, unit, main) if "RELOADING=1" in m or "READY=1" in m]
        assert len(said) == 2 and "RELOADING=1" in said[0] and "READY=1" in said[1], "\n".join(pid1)
        changes = state_changes(pid1, unit)
        assert changes[-1] == ("start", "running") and not [ch for ch in changes if "reload" in ch or
                                                             "failed" in ch or "dead" in ch[1:]], changes
        assert_no_errors(c, unit, cursor)
        assert request_once("127.0.0.1", port)[0] == "ok"
    finally:
        c.systemctl("stop", unit, timeout=90, check=False)
        c.run(["rm", "-f", flag, conf], check=False)
