"""bindonce under a real systemd (252, Debian 12) in a systemd-nspawn container.

The load client runs on the host: the container shares the host's network, so the
sockets its units bind on 127.0.0.1 are ours. Every wait is bounded.
"""

import errno
import os
import re
import socket
import subprocess
import tempfile
import time

import pytest

from sysd_container import wait_for, log
from sysd_load import Load, free_tcp_port, request_once, summary

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

SOCK = "bindonce-example.socket"
SVC = "bindonce-example.service"
EXAMPLE_PORT = 8080
# Where the Debian package puts them (and `make install` of the sanitizer pass, given
# debian/rules' INSTALL_VARS).
HTTPD = "/usr/libexec/bindonce/example-httpd"
BINDONCE = "/usr/bin/bindonce"
UNITS = ("bindonce-example.socket", "bindonce-example.service", "bindonce@.service")


# ---- helpers ---------------------------------------------------------------------------

def port_in_use(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return False
    except OSError as e:
        return e.errno == errno.EADDRINUSE
    finally:
        s.close()


def free_port():
    # Below the ephemeral range (f74478d): the load clients' source ports never take it.
    return free_tcp_port()


def workers_up(c, unit, n):
    """True once StatusText says n/n workers up and bindonce has n children."""
    status = c.show(unit, "StatusText")
    if not status.startswith("%d/%d workers up" % (n, n)):
        return False
    main = c.main_pid(unit)
    return main and len(c.children(main)) == n and main


def listener_inode(c, port):
    """The inode of the socket listening on 127.0.0.1:port in the container (ss -e)."""
    out = c.run(["ss", "-Hltne", "sport = :%d" % port]).stdout
    m = re.findall(r"ino:(\d+)", out)
    assert len(m) == 1, "expected one listener on port %d, ss says:\n%s" % (port, out)
    return m[0]


def bindonce_log(c, cursor):
    """What bindonce processes (and their workers, which share bindonce's stderr) logged
    since cursor. Selected by SYSLOG_IDENTIFIER, not by unit: journald attributes the
    first lines of a process to the unit it finds in its cache, which can be stale."""
    return c.journal(cursor=cursor, identifier="bindonce")


def assert_no_errors(c, unit, cursor, allow=()):
    """No line of priority err or worse from bindonce (it logs with <N> prefixes) or from
    the unit since cursor."""
    text = (c.journal(cursor=cursor, priority=3, identifier="bindonce") +
            c.journal(unit=unit, cursor=cursor, priority=3))
    lines = [l for l in text.splitlines() if l.strip() and not any(a in l for a in allow)]
    assert not lines, "error lines in the journal (%s):\n%s" % (unit, "\n".join(lines))


def state_changes(c, unit, cursor):
    """PID 1's debug lines "UNIT: Changed A -> B" since cursor, as [(A, B), ...]."""
    out = c.journal(cursor=cursor, pid=1)
    return re.findall(r"^%s: Changed (\S+) -> (\S+)$" % re.escape(unit), out, re.M)


def ensure_example_running(c):
    if port_in_use(EXAMPLE_PORT) and c.show(SOCK, "ActiveState") != "active":
        pytest.skip("127.0.0.1:%d is in use on the host; the example units need it" % EXAMPLE_PORT)
    c.systemctl("start", SOCK)
    if c.show(SVC, "ActiveState") != "active":
        cls, _, detail = request_once("127.0.0.1", EXAMPLE_PORT, response_timeout=30)
        assert cls == "ok", "activating request: %s %s" % (cls, detail)
    wait_for(lambda: c.show(SVC, "ActiveState") == "active", 30, SVC + " active")
    return wait_for(lambda: workers_up(c, SVC, 4), 30, "4/4 workers of " + SVC)


@pytest.fixture(scope="module")
def c(container):
    return container


# ---- the installation ------------------------------------------------------------------

def readme_package_files():
    """The list the README's Install section gives after "`dpkg -L bindonce` lists:"."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(r"`dpkg -L bindonce`[^`]*?lists:\s*```\n(.*?)```", text, re.S)
    assert m, "README.md: no file list after \"`dpkg -L bindonce` lists:\""
    files = m.group(1).split()
    assert files and all(f.startswith("/") for f in files), files
    return files


def makefile_version():
    with open(os.path.join(REPO, "Makefile")) as f:
        return re.search(r"^VERSION\s*:?=\s*(\S+)", f.read(), re.M).group(1)


@pytest.mark.package
def test_package_installed_as_the_readme_says(c, installation):
    """dpkg -i in the booted container (the maintainer scripts ran under systemd, before
    any test) left the package configured, holding every file the README lists."""
    status = c.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "bindonce"]).stdout
    assert status == "install ok installed " + makefile_version(), \
        "%s\ndpkg -i said:\n%s" % (status, installation.dpkg_output)
    listed = set(c.run(["dpkg", "-L", "bindonce"]).stdout.split())
    missing = [f for f in readme_package_files() if f not in listed]
    assert not missing, "dpkg -L bindonce lacks what the README lists: %s\n%s" \
        % (" ".join(missing), "\n".join(sorted(listed)))
    for f in readme_package_files():
        assert os.path.isfile(os.path.join(c.root, f.lstrip("/"))), "listed but not on disk: " + f
    # dpkg and the maintainer scripts (deb-systemd-helper, daemon-reload) said nothing amiss.
    assert not re.search(r"warning|error|fail", installation.dpkg_output, re.I), installation.dpkg_output


def test_installed_version_and_no_unit_enabled_or_started(c):
    """bindonce --version is the Makefile's VERSION; installing enabled and started
    nothing (the package: dh_installsystemd --no-enable --no-start)."""
    r = c.run([BINDONCE, "--version"])
    assert r.stdout.strip() == "bindonce " + makefile_version(), \
        "bindonce --version: %r, the Makefile's VERSION is %s" % (r.stdout + r.stderr, makefile_version())
    # "indirect": the example service has only Also=bindonce-example.socket in [Install]
    # (systemctl's exit status counts that as enabled, so the states are compared).
    r = c.systemctl("is-enabled", *UNITS, check=False)
    assert dict(zip(UNITS, r.stdout.split())) == {
        "bindonce-example.socket": "disabled", "bindonce-example.service": "indirect",
        "bindonce@.service": "disabled"}, "systemctl is-enabled %s:\n%s" % (" ".join(UNITS), r.stdout + r.stderr)
    wants = c.sh("find /etc/systemd/system -name 'bindonce*' | sort").stdout
    assert not wants.strip(), "installing enabled something:\n" + wants
    # First in the file: no test has started the example yet.
    for u in (SOCK, SVC):
        assert c.show(u, "ActiveState") == "inactive", "%s is %s after installing" % (u, c.show(u, "ActiveState"))


# ---- the unit files -------------------------------------------------------------------

def test_units_verify_in_container(c):
    """The installed units pass systemd-analyze verify with the real binary paths.
    (--man=no: neither the container nor CI has the man page in man's path; the host
    test checks that docs/bindonce.1, which make install installs, exists.)"""
    r = c.run(["systemd-analyze", "verify", "--man=no", SOCK, SVC, "bindonce@example.service"],
              check=False)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), \
        "systemd-analyze verify: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)


def test_units_verify_host(installation):
    """Same on the host, against a --root holding the installed files and the host's
    own unit directory; no file outside /tmp is written."""
    if subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode != 0:
        pytest.skip("no systemd-analyze on the host")
    with tempfile.TemporaryDirectory(prefix="bindonce-verify-") as root:
        installation.unpack(root)
        os.makedirs(os.path.join(root, "usr/lib/systemd"), exist_ok=True)
        subprocess.run(["cp", "-a", "/usr/lib/systemd/system", os.path.join(root, "usr/lib/systemd/")],
                       check=True)
        if not os.path.lexists(os.path.join(root, "lib")):
            os.symlink("usr/lib", os.path.join(root, "lib"))
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
        if not os.path.exists(os.path.join(root, "bin/kill")):
            subprocess.run(["cp", "/bin/kill", os.path.join(root, "bin/kill")], check=True)
        # The units as installed (by name, from the unit path under --root).
        r = subprocess.run(["systemd-analyze", "verify", "--root=" + root, "--man=no",
                            SOCK, SVC, "bindonce@example.service"],
                           capture_output=True, text=True, timeout=120, cwd=root)
        assert r.returncode == 0 and not r.stderr.strip(), \
            "systemd-analyze verify: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
        assert os.path.exists(os.path.join(REPO, "docs/bindonce.1")), "Documentation=man:bindonce(1)"


# ---- a. socket activation -------------------------------------------------------------

def test_a_socket_activation(c):
    if port_in_use(EXAMPLE_PORT):
        pytest.skip("127.0.0.1:%d is in use on the host; the example units need it" % EXAMPLE_PORT)
    cursor = c.journal_cursor()
    c.systemctl("start", SOCK)
    assert c.show(SOCK, "ActiveState") == "active"
    assert c.show(SVC, "ActiveState") == "inactive", "the service must wait for a connection"

    cls, pid, detail = request_once("127.0.0.1", EXAMPLE_PORT, response_timeout=30)
    assert cls == "ok", "the first connection: %s %s" % (cls, detail)
    wait_for(lambda: c.show(SVC, "ActiveState") == "active", 30, SVC + " active")
    main = wait_for(lambda: workers_up(c, SVC, 4), 30, "4/4 workers up")

    status = c.systemctl("status", "--no-pager", "-n0", SVC, check=False).stdout
    assert re.search(r'Status: "4/4 workers up', status), status

    workers = c.children(main)
    assert len(workers) == 4
    slots = set()
    pidfdids = set()
    for w in workers:
        env = c.environ(w)
        assert env.get("LISTEN_FDNAMES") == "http", (w, env)
        assert env.get("LISTEN_FDS") == "1", (w, env)
        assert env.get("LISTEN_PID") == str(w), (w, env)
        for leaked in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            assert leaked not in env, "%s reached worker %d" % (leaked, w)
        # Where the kernel has pidfs, each worker's own pidfd inode (systemd 252 sets none
        # for bindonce itself, so none can leak); elsewhere none.
        if "LISTEN_PIDFDID" in env:
            assert env["LISTEN_PIDFDID"].isdigit() and env["LISTEN_PIDFDID"] not in pidfdids, (w, env)
            pidfdids.add(env["LISTEN_PIDFDID"])
        # NOTIFY_SOCKET is always set, to bindonce's own abstract socket, never systemd's.
        assert env.get("NOTIFY_SOCKET", "").startswith("@bindonce/"), (w, env)
        slots.add(env.get("BINDONCE_WORKER"))
    assert slots == {"0", "1", "2", "3"}

    # The worker's fd 3 is the socket systemd bound.
    inode = listener_inode(c, EXAMPLE_PORT)
    for w in workers:
        assert c.fd_socket_inode(w, 3) == inode

    log_ = bindonce_log(c, cursor)
    assert re.search(r"socket activation: adopted 1 sockets? from systemd", log_), log_
    assert "listening on 127.0.0.1:%d (fd 3, name http, stream, from systemd)" % EXAMPLE_PORT in log_, log_
    assert_no_errors(c, SVC, cursor)


# ---- blocking or not: what systemd 252 passes, what the workers get (issue 10) -----------

O_NONBLOCK = 0o4000


def fd_flags(c, pid, fd):
    """The file status flags of pid's fd, from /proc/PID/fdinfo/FD ("flags:" is octal)."""
    out = c.run(["cat", "/proc/%d/fdinfo/%d" % (pid, fd)]).stdout
    m = re.search(r"^flags:\s*([0-7]+)$", out, re.M)
    assert m, "no flags in /proc/%d/fdinfo/%d:\n%s" % (pid, fd, out)
    return int(m.group(1), 8)


def test_socket_activation_blocking_as_the_service_says(c):
    """systemd 252 passes the sockets of a socket unit blocking (it clears O_NONBLOCK)
    unless the service says NonBlocking=yes (a [Service] option: systemd.socket has no
    such key), and bindonce hands them on as they came: its workers find fd 3 blocking,
    or non-blocking with NonBlocking=yes; --nonblocking sets O_NONBLOCK on a socket systemd
    passed blocking. The worker records its fd 3's flags itself (/proc/$$/fdinfo/3,
    "flags:" in octal) and never changes them: the example httpd sets O_NONBLOCK on the
    shared open file description, which would hide what it was given."""
    cases = {   # name: (the service's NonBlocking= line, bindonce option, O_NONBLOCK expected)
        "nbtest-default": ("", "", False),
        "nbtest-yes": ("NonBlocking=yes\n", "", True),
        "nbtest-option": ("", "--nonblocking ", True),
    }
    units = ["/etc/systemd/system/%s.%s" % (n, t) for n in cases for t in ("socket", "service")]
    c.write_file("/usr/local/lib/bindonce-test/fdflags",
                 "#!/bin/sh\n# fd 3's flags as this worker got them; then hold it, untouched.\n"
                 "grep '^flags:' /proc/$$/fdinfo/3 >/run/bindonce-test-nb/$1.$BINDONCE_WORKER.tmp\n"
                 "mv /run/bindonce-test-nb/$1.$BINDONCE_WORKER.tmp /run/bindonce-test-nb/$1.$BINDONCE_WORKER\n"
                 "exec sleep infinity\n", mode=0o755)
    c.run(["mkdir", "-p", "/run/bindonce-test-nb"])
    for name, (nb, opt, _) in cases.items():
        port = free_port()
        c.write_file("/etc/systemd/system/%s.socket" % name,
                     "[Socket]\nListenStream=127.0.0.1:%d\n" % port)
        c.write_file("/etc/systemd/system/%s.service" % name,
                     "[Service]\nType=notify\nKillMode=mixed\n%s"
                     "ExecStart=%s -w 2 %s-l 127.0.0.1:%d -- /usr/local/lib/bindonce-test/fdflags %s\n"
                     % (nb, BINDONCE, opt, port, name))
    c.systemctl("daemon-reload")
    cursor = c.journal_cursor()
    try:
        c.systemctl("start", *("%s.socket" % n for n in cases))
        c.systemctl("start", *("%s.service" % n for n in cases), timeout=90)
        got = {}
        for name in cases:
            main = wait_for(lambda: workers_up(c, name + ".service", 2), 30, "2/2 workers of " + name)
            log_ = bindonce_log(c, cursor)
            assert re.search(r"socket activation: adopted 1 sockets? from systemd", log_), log_
            for slot in ("0", "1"):
                rec = wait_for(lambda: c.run(["cat", "/run/bindonce-test-nb/%s.%s" % (name, slot)],
                                             check=False).stdout, 15, "worker %s of %s" % (slot, name))
                m = re.fullmatch(r"flags:\s*([0-7]+)\n", rec)
                assert m, "%s worker %s: %r" % (name, slot, rec)
                got["%s/%s" % (name, slot)] = bool(int(m.group(1), 8) & O_NONBLOCK)
            # The same open file description in bindonce, as the workers left it.
            got[name + "/bindonce"] = bool(fd_flags(c, main, 3) & O_NONBLOCK)
            assert_no_errors(c, name + ".service", cursor)
        want = {k: cases[k.split("/")[0]][2] for k in got}
        assert got == want, "O_NONBLOCK of fd 3 (True: non-blocking): got %s, expected %s" % (got, want)
    finally:
        c.systemctl("stop", *(os.path.basename(u) for u in units), check=False, timeout=90)
        c.run(["rm", "-rf", "/run/bindonce-test-nb"] + units, check=False)
        c.systemctl("daemon-reload", check=False)


# ---- b. SIGKILL of workers under load ---------------------------------------------------

def test_b_sigkill_workers_under_load(c):
    main = ensure_example_running(c)
    cursor = c.journal_cursor()
    killed = set()      # a victim not yet reaped is still listed: never count it twice
    with Load("127.0.0.1", EXAMPLE_PORT) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        for i in range(20):
            victims = [p for p in c.children(main) if p not in killed]
            if victims:
                v = victims[i % len(victims)]
                if c.run(["kill", "-KILL", str(v)], check=False).returncode == 0:
                    killed.add(v)
            time.sleep(0.15)        # the kill pacing is the scenario
        overlap = load.attempts_within(t0, time.monotonic())
        load.wait_ok(50)
    assert overlap >= 100, "only %d requests overlapped the kills" % overlap
    kills = len(killed)
    counts = load.counts()
    log("b: %d kills; %s" % (kills, summary(counts)))
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert counts["ok"] > 100, summary(counts)
    assert counts["refused"] == 0, summary(counts)
    assert counts["connect_timeout"] == 0, summary(counts)
    # A killed httpd takes at most the one connection it was serving with it.
    casualties = sum(v for k, v in counts.items() if k != "ok")
    assert casualties <= kills, "%s; failures: %s" % (summary(counts), load.failures()[:10])
    assert c.main_pid(SVC) == main, "bindonce itself must not have been replaced"
    wait_for(lambda: workers_up(c, SVC, 4), 30, "4/4 workers up again")
    m = re.search(r"(\d+) restarts", c.show(SVC, "StatusText"))
    assert m and int(m.group(1)) >= kills, c.show(SVC, "StatusText")
    assert_no_errors(c, SVC, cursor)


# ---- c. systemctl reload: rolling restart ---------------------------------------------

def test_c_reload_rolls_every_worker(c):
    main = ensure_example_running(c)
    old = set(c.children(main))
    # PID 1 at debug level logs "UNIT: Changed running -> reload": the state transitions,
    # which no polling could catch reliably (a roll of 4 workers takes milliseconds).
    c.systemctl("log-level", "debug")
    try:
        cursor = c.journal_cursor()
        with Load("127.0.0.1", EXAMPLE_PORT) as load:
            load.wait_ok(50)
            t0 = time.monotonic()
            c.systemctl("reload", SVC, timeout=60)
            reload_s = time.monotonic() - t0
            new = wait_for(lambda: (lambda s: s if len(s) == 4 and not (s & old) else None)
                           (set(c.children(main))), 30, "every worker replaced")
            overlap = load.attempts_within(t0, time.monotonic())
            wait_for(lambda: c.show(SVC, "ActiveState") == "active", 30, SVC + " active again")
            wait_for(lambda: workers_up(c, SVC, 4), 30, "4/4 workers up")
            load.wait_ok(50)
    finally:
        c.systemctl("log-level", "info")
    log("c: systemctl reload returned after %.3f s" % reload_s)
    counts = load.counts()
    log("c: %s" % summary(counts))
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert overlap >= 4, "only %d requests overlapped the reload" % overlap
    assert c.main_pid(SVC) == main, "reload must not replace bindonce"
    assert not (new & old), (old, new)
    assert counts["ok"] > 50 and counts["ok"] == sum(counts.values()), \
        "%s; failures: %s" % (summary(counts), load.failures()[:10])
    # Served by the new workers at the end.
    assert load.pids() & new, (load.pids(), new)

    changes = state_changes(c, SVC, cursor)
    log("c: state changes: %s" % changes)
    assert ("running", "reload") in changes, changes
    assert changes[-1] == ("reload", "running"), changes
    # bindonce told systemd about the roll itself (RELOADING=1 ... READY=1), so the unit
    # is "reloading" for the length of the roll, not only while `kill -HUP` runs: in PID 1's
    # own log (one process, so in order) RELOADING=1, then READY=1, then reload -> running.
    pid1 = c.journal(cursor=cursor, pid=1).splitlines()
    prefix = "%s: Got notification message from PID %d (" % (SVC, main)
    i_reloading = next((i for i, l in enumerate(pid1)
                        if l.startswith(prefix) and "RELOADING=1" in l), None)
    assert i_reloading is not None, "no RELOADING=1 from bindonce:\n" + "\n".join(pid1[-40:])
    i_ready = next((i for i, l in enumerate(pid1) if i > i_reloading and l.startswith(prefix)
                    and "READY=1" in l), None)
    assert i_ready is not None, "no READY=1 after RELOADING=1:\n" + "\n".join(pid1[-40:])
    i_running = max(i for i, l in enumerate(pid1) if l == SVC + ": Changed reload -> running")
    assert i_running > i_ready, "\n".join(pid1[-40:])
    assert_no_errors(c, SVC, cursor)


def test_c_reload_by_ctl_waits_for_a_slow_roll_and_reports_failure(c):
    """ExecReload=/bin/kill -HUP returns at once, and on systemd 252 (no Type=notify-reload)
    PID 1 may reap kill before bindonce's RELOADING=1 arrives: the reload job then ends and
    `systemctl reload` returns while the roll is still running (seen in about 1 run in 6
    with the 2 s roll below). The drop-in the units suggest,
    ExecReload=bindonce ctl --name %i reload, waits for the roll's outcome: this checks that
    with workers that take 0.5 s to get ready (a 2 s roll) `systemctl reload` returns only
    when every worker is replaced, and fails when the roll fails."""
    port = free_port()
    flag = "/run/bindonce-test-fail-ready"
    # The worker: 0.5 s of "start-up", READY=1 from a helper in its process group (hence
    # --notify-access all), then the example httpd in the same pid (LISTEN_PID stays right).
    # With the flag file present it exits 3 before getting ready.
    c.write_file("/usr/local/lib/bindonce-test/slowready",
                 "#!/bin/sh\n[ -e %s ] && exit 3\nsleep 0.5\nsystemd-notify --ready\nexec %s\n"
                 % (flag, HTTPD), mode=0o755)
    c.write_file("/etc/bindonce/slowready.conf",
                 'BINDONCE_OPTS="-l 127.0.0.1:%d -w 4 --ready notify --notify-access all"\n'
                 'BINDONCE_COMMAND="/usr/local/lib/bindonce-test/slowready"\n' % port)
    inst = "bindonce@slowready.service"
    dropin = "/etc/systemd/system/%s.d/reload-by-ctl.conf" % inst
    c.write_file(dropin, "[Service]\nExecReload=\nExecReload=%s ctl --name %%i reload\n" % BINDONCE)
    c.systemctl("daemon-reload")
    c.systemctl("start", inst, timeout=60)
    try:
        main = wait_for(lambda: workers_up(c, inst, 4), 30, "4/4 workers of " + inst)
        old = set(c.children(main))
        with Load("127.0.0.1", port) as load:
            load.wait_ok(50)
            t0 = time.monotonic()
            r = c.systemctl("reload", inst, check=False, timeout=60)
            took = time.monotonic() - t0
            overlap = load.attempts_within(t0, time.monotonic())
            # No waiting here: when systemctl returns, the roll must be over.
            state_after = c.show(inst, "ActiveState")
            new = set(c.children(main)) - old     # the last old one may still be exiting
            wait_for(lambda: not (set(c.children(main)) & old), 15, "the old workers to exit")
            load.wait_ok(50)
        counts = load.counts()
        log("c/ctl: reload took %.2f s; %s" % (took, summary(counts)))
        assert r.returncode == 0, r.stdout + r.stderr
        assert took >= 1.5, "systemctl reload returned after %.2f s, before the roll ended" % took
        assert overlap >= 50, "only %d requests overlapped the 2 s roll" % overlap
        assert state_after == "active"
        assert len(new) == 4, (old, new)
        assert counts["ok"] > 50 and counts["ok"] == sum(counts.values()), \
            "%s; failures: %s" % (summary(counts), load.failures()[:10])

        # A roll whose new workers never get ready: `systemctl reload` fails, the old
        # workers go on serving, the unit stays active.
        c.run(["touch", flag])
        r = c.systemctl("reload", inst, check=False, timeout=60)
        c.run(["rm", "-f", flag])
        assert r.returncode != 0, "systemctl reload succeeded although the roll failed"
        assert c.show(inst, "ActiveState") == "active"
        assert set(c.children(main)) == new
        assert request_once("127.0.0.1", port)[0] == "ok"
    finally:
        c.run(["rm", "-f", flag, dropin], check=False)
        c.systemctl("stop", inst, timeout=90, check=False)
        c.systemctl("daemon-reload", check=False)


# ---- d. systemctl restart under the socket unit ------------------------------------------

def test_d_restart_under_socket_unit(c):
    main = ensure_example_running(c)
    inode = listener_inode(c, EXAMPLE_PORT)
    cursor = c.journal_cursor()
    with Load("127.0.0.1", EXAMPLE_PORT) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        c.systemctl("restart", SVC, timeout=90)
        new_main = wait_for(lambda: workers_up(c, SVC, 4), 30, "4/4 workers of the new bindonce")
        overlap = load.attempts_within(t0, time.monotonic())
        load.wait_ok(50)
    counts = load.counts()
    log("d: %s; %d attempts overlapped the restart" % (summary(counts), overlap))
    # Every thread had a request in flight across the restart: "refused 0" means something.
    assert overlap >= 4, "only %d requests overlapped the restart" % overlap
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert new_main != main
    assert counts["refused"] == 0, summary(counts)
    # A graceful stop loses nothing: the socket unit queues what arrives meanwhile.
    assert counts["ok"] == sum(counts.values()), \
        "%s; failures: %s" % (summary(counts), load.failures()[:10])
    assert listener_inode(c, EXAMPLE_PORT) == inode, "the port was rebound"
    assert c.show(SVC, "ActiveState") == "active"
    assert_no_errors(c, SVC, cursor)


@pytest.mark.package
def test_d_package_upgrade_upgrades_the_example_in_place(c, installation):
    """dpkg -i over the installed package (an upgrade, to the same version): its postinst
    upgrades a running bindonce-example.service in place (`bindonce ctl upgrade`): the
    same main pid now runs the new /usr/bin/bindonce, the same workers serve, the socket
    unit is left alone, and every request is answered."""
    main = ensure_example_running(c)
    workers = sorted(c.children(main))
    inode = listener_inode(c, EXAMPLE_PORT)
    cursor = c.journal_cursor()
    with Load("127.0.0.1", EXAMPLE_PORT) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        r = installation.dpkg_install(c)
        dpkg_said = "dpkg -i: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
        overlap = load.attempts_within(t0, time.monotonic())
        load.wait_ok(50)
    counts = load.counts()
    log("d/upgrade: %s; %d attempts overlapped" % (summary(counts), overlap))
    assert r.returncode == 0 and not re.search(r"warning|error|fail|not starting|keeps running",
                                               dpkg_said[8:], re.I), dpkg_said
    # In place: the same process, now running the file dpkg installed (not "(deleted)").
    assert c.main_pid(SVC) == main, "the package's upgrade restarted %s\n%s" % (SVC, dpkg_said)
    assert c.run(["readlink", "/proc/%d/exe" % main]).stdout.strip() == "/usr/bin/bindonce", dpkg_said
    assert sorted(c.children(main)) == workers, "the workers were restarted"
    assert "upgraded in place" in c.journal(cursor=cursor, identifier="bindonce")
    assert overlap >= 4, "only %d requests overlapped the upgrade" % overlap
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert counts["refused"] == 0, summary(counts)
    assert counts["ok"] == sum(counts.values()), \
        "%s; failures: %s" % (summary(counts), load.failures()[:10])
    assert listener_inode(c, EXAMPLE_PORT) == inode, "the upgrade rebound the port"
    assert c.show(SOCK, "ActiveState") == "active"
    assert c.show(SVC, "UnitFileState") == "indirect", "the upgrade enabled the example"
    assert_no_errors(c, SVC, cursor)


# ---- e. bindonce@ with the fd store --------------------------------------------------------

def start_fdtest(c, port):
    """Start bindonce@fdtest on 127.0.0.1:port; return its main pid once 4 workers are up."""
    inst = "bindonce@fdtest.service"
    c.write_file("/etc/bindonce/fdtest.conf",
                 'BINDONCE_OPTS="-l 127.0.0.1:%d -w 4 --stop-timeout 5"\n'
                 'BINDONCE_COMMAND="%s"\n' % (port, HTTPD))
    c.systemctl("start", inst, timeout=60)
    return wait_for(lambda: workers_up(c, inst, 4), 30, "4/4 workers of " + inst)


def test_e_fd_store_restart_and_kill(c):
    port = free_port()
    inst = "bindonce@fdtest.service"
    cursor = c.journal_cursor()
    main1 = start_fdtest(c, port)
    inode = c.fd_socket_inode(main1, 3)
    assert listener_inode(c, port) == inode, "bindonce's fd 3 is not the listener on %d" % port
    assert c.show(inst, "NFileDescriptorStore") == "1", \
        "the socket must be in the fd store (NFileDescriptorStore=%s)" % c.show(inst, "NFileDescriptorStore")
    for w in c.children(main1):
        assert c.environ(w).get("LISTEN_FDNAMES") == "fdtest"
        assert c.fd_socket_inode(w, 3) == inode

    # systemctl restart: a graceful stop, then a new bindonce adopts the stored socket.
    with Load("127.0.0.1", port) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        c.systemctl("restart", inst, timeout=90)
        main2 = wait_for(lambda: (lambda m: m if m and m != main1 else None)
                         (workers_up(c, inst, 4)), 30, "4/4 workers of a new bindonce")
        overlap = load.attempts_within(t0, time.monotonic())
        load.wait_ok(50)
    counts = load.counts()
    log("e/restart: %s; %d attempts overlapped" % (summary(counts), overlap))
    assert overlap >= 4, "only %d requests overlapped the restart" % overlap
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert counts["refused"] == 0, summary(counts)
    assert counts["ok"] == sum(counts.values()), \
        "%s; failures: %s" % (summary(counts), load.failures()[:10])
    assert c.fd_socket_inode(main2, 3) == inode, "restart: not the same socket"
    assert listener_inode(c, port) == inode
    log_ = bindonce_log(c, cursor)
    assert re.search(r"socket activation: adopted 1 sockets? from systemd", log_), log_

    # kill -9 of bindonce: systemd SIGKILLs the workers (KillMode=mixed) and restarts it.
    with Load("127.0.0.1", port) as load:
        load.wait_ok(50)
        t0 = time.monotonic()
        c.run(["kill", "-KILL", str(main2)])
        main3 = wait_for(lambda: (lambda m: m if m and m != main2 else None)
                         (workers_up(c, inst, 4)), 30, "4/4 workers after kill -9 of bindonce")
        overlap = load.attempts_within(t0, time.monotonic())
        load.wait_ok(50)
    counts = load.counts()
    log("e/kill -9: %s; %d attempts overlapped" % (summary(counts), overlap))
    assert overlap >= 4, "only %d requests overlapped the kill -9" % overlap
    assert counts["client_error"] == 0, "the load client failed: %s" % summary(counts)
    assert counts["refused"] == 0, summary(counts)
    assert counts["connect_timeout"] == 0, summary(counts)
    # Only the connections the four killed workers had in hand may be lost.
    lost = sum(v for k, v in counts.items() if k != "ok")
    assert lost <= 4, "%s; failures: %s" % (summary(counts), load.failures()[:10])
    assert c.fd_socket_inode(main3, 3) == inode, "kill -9: not the same socket"
    assert listener_inode(c, port) == inode
    assert int(c.show(inst, "NRestarts")) >= 1
    assert_no_errors(c, inst, cursor)


def test_shipped_instance_conf(c):
    """/etc/bindonce/example.conf as installed: bindonce@example serves 127.0.0.1:8081."""
    if port_in_use(8081):
        pytest.skip("127.0.0.1:8081 is in use on the host; bindonce@example needs it")
    inst = "bindonce@example.service"
    c.systemctl("start", inst, timeout=60)
    try:
        wait_for(lambda: workers_up(c, inst, 4), 30, "4/4 workers of " + inst)
        cls, _, detail = request_once("127.0.0.1", 8081)
        assert cls == "ok", (cls, detail)
    finally:
        c.systemctl("stop", inst, timeout=90, check=False)


# ---- the control socket where the units put it (issue 4) ----------------------------------

def test_ctl_reaches_bindonce_under_the_units(c):
    """bindonce@ runs as root: /run/bindonce/NAME.sock, found by `ctl --name`. The example
    runs as a DynamicUser with /run read-only: its RuntimeDirectory= holds the socket."""
    import json
    inst = "bindonce@fdtest.service"
    if c.show(inst, "ActiveState") != "active":       # run alone (-k): start it here
        start_fdtest(c, free_port())
    r = c.run([BINDONCE, "ctl", "--name", "fdtest", "--json", "status"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["pid"] == c.main_pid(inst) and st["ready"] == 4, st
    assert [s["name"] for s in st["sockets"]] == ["fdtest"], st

    main = ensure_example_running(c)
    r = c.run([BINDONCE, "ctl", "--control", "/run/bindonce-example/example-httpd.sock",
               "--json", "status"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["pid"] == main and st["ready"] == 4, st
    assert [s["name"] for s in st["sockets"]] == ["http"], st

    # The ExecReload= drop-in the example unit suggests works for its DynamicUser too:
    # when `systemctl reload` returns, every worker has been replaced.
    dropin = "/etc/systemd/system/%s.d/reload-by-ctl.conf" % SVC
    c.write_file(dropin, "[Service]\nExecReload=\nExecReload=%s ctl --control "
                 "%%t/bindonce-example/example-httpd.sock reload\n" % BINDONCE)
    c.systemctl("daemon-reload")
    try:
        old = set(c.children(main))
        r = c.systemctl("reload", SVC, check=False, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        # Four new workers at once; the last old one may still be finishing (SIGTERMed
        # when its successor got ready, which ends the roll).
        new = set(c.children(main)) - old
        assert len(new) == 4, (old, new)
        wait_for(lambda: not (set(c.children(main)) & old), 15, "the old workers to exit")
    finally:
        c.run(["rm", "-f", dropin], check=False)
        c.systemctl("daemon-reload", check=False)


def test_e_fd_store_unix_socket_keeps_its_path(c):
    """A unix socket in the fd store: after `systemctl restart` (and kill -9) the new
    bindonce adopts the very same socket, and clients must still find it at its path.
    bindonce must therefore not unlink the socket file of a socket it handed to the fd
    store when it stops: the socket lives on in systemd and serves the next bindonce."""
    name = "unixfd"
    inst = "bindonce@%s.service" % name
    path = "/run/bindonce-test-%s.sock" % name
    host_path = "/proc/%d/root%s" % (c.init_pid, path)      # the container's /run, from here
    c.write_file("/etc/bindonce/%s.conf" % name,
                 'BINDONCE_OPTS="-l %s -w 2 --stop-timeout 5"\nBINDONCE_COMMAND="%s"\n' % (path, HTTPD))
    c.systemctl("start", inst, timeout=60)
    try:
        main = wait_for(lambda: workers_up(c, inst, 2), 30, "2/2 workers of " + inst)
        inode = c.fd_socket_inode(main, 3)
        assert request_once(host_path, None)[0] == "ok"

        for how in ("restart", "kill -9"):
            with Load(host_path, None) as load:
                load.wait_ok(50)
                t0 = time.monotonic()
                if how == "restart":
                    c.systemctl("restart", inst, timeout=90)
                else:
                    c.run(["kill", "-KILL", str(main)])
                main = wait_for(lambda: (lambda m: m if m and m != main else None)
                                (workers_up(c, inst, 2)), 30, "2/2 workers after " + how)
                overlap = load.attempts_within(t0, time.monotonic())
                load.wait_ok(50)
            counts = load.counts()
            log("e/unix %s: %s; %d attempts overlapped" % (how, summary(counts), overlap))
            assert overlap >= 4, "%s: only %d requests overlapped" % (how, overlap)
            assert c.fd_socket_inode(main, 3) == inode, how + ": not the same socket"
            assert os.path.exists(host_path), \
                "%s: %s is gone, the adopted socket cannot be reached (%s)" % (how, path, summary(counts))
            assert counts["refused"] == 0, "%s: %s; failures: %s" % (how, summary(counts), load.failures()[:5])
            assert counts["client_error"] == 0, summary(counts)
    finally:
        c.systemctl("stop", inst, timeout=90, check=False)


# ---- f. systemctl stop -------------------------------------------------------------------

def _stop_and_check(c, unit):
    cg = c.show(unit, "ControlGroup")
    assert cg, "no ControlGroup for %s" % unit
    cursor = c.journal_cursor()
    c.systemctl("stop", unit, timeout=90)
    assert c.show(unit, "ActiveState") == "inactive", c.show(unit, "ActiveState")
    found, procs = c.cgroup_procs(cg)
    assert procs == [], "processes left in %s: %s" % (cg, procs)
    # Result=/ExecMainStatus= cannot be read afterwards: an inactive unit nothing refers
    # to is unloaded at once and `systemctl show` then reports defaults. PID 1's log says.
    # At PID 1's default log level "Main process exited" shows only for a failure.
    pid1 = c.journal(cursor=cursor, pid=1, unit=unit)
    assert re.search(r"^%s: Deactivated successfully\.$" % re.escape(unit), pid1, re.M), pid1
    assert "Failed with result" not in pid1 and "Main process exited" not in pid1, pid1
    log_ = bindonce_log(c, cursor)
    assert "stopped" in log_, log_
    return cursor


def test_f_stop_leaves_nothing(c):
    ensure_example_running(c)
    cursor = _stop_and_check(c, SVC)
    # The socket unit refers to the service, so it stays loaded and its result readable.
    assert c.show(SVC, "Result") == "success"
    assert (c.show(SVC, "ExecMainCode"), c.show(SVC, "ExecMainStatus")) == ("1", "0"), \
        "bindonce's exit: code %s status %s" % (c.show(SVC, "ExecMainCode"), c.show(SVC, "ExecMainStatus"))
    assert_no_errors(c, SVC, cursor)
    # The socket unit still holds the port; stop it too.
    c.systemctl("stop", SOCK)
    assert request_once("127.0.0.1", EXAMPLE_PORT)[0] == "refused"


def test_f_stop_fd_store_instance_and_escaped_grandchild(c):
    """A worker that leaves a grandchild in a session of its own: bindonce cannot see it;
    KillMode=mixed's final SIGKILL of the cgroup must."""
    port = free_port()
    c.write_file("/usr/local/lib/bindonce-test/escaper",
                 "#!/bin/sh\nsetsid sleep 1000 </dev/null >/dev/null 2>&1 &\nexec %s\n" % HTTPD,
                 mode=0o755)
    c.write_file("/etc/bindonce/escape.conf",
                 'BINDONCE_OPTS="-l 127.0.0.1:%d -w 2 --stop-timeout 5"\n'
                 'BINDONCE_COMMAND="/usr/local/lib/bindonce-test/escaper"\n' % port)
    inst = "bindonce@escape.service"
    c.systemctl("start", inst, timeout=60)
    wait_for(lambda: workers_up(c, inst, 2), 30, "2/2 workers of " + inst)
    cg = c.show(inst, "ControlGroup")
    # A worker counts as up at exec of the escaper, before it has forked its sleep.
    wait_for(lambda: len(c.cgroup_procs(cg)[1]) >= 5, 15, "bindonce + 2 workers + 2 escaped sleeps in " + cg)
    assert request_once("127.0.0.1", port)[0] == "ok"
    _stop_and_check(c, inst)
    # The fd store is emptied on stop: the port is free again.
    assert request_once("127.0.0.1", port)[0] == "refused"
    assert c.show(inst, "NFileDescriptorStore") == "0"

    # And the fd-store instance of test e, if it is still there.
    if c.show("bindonce@fdtest.service", "ActiveState") == "active":
        _stop_and_check(c, "bindonce@fdtest.service")


@pytest.mark.package
def test_package_remove_stops_what_runs_from_it(c, installation):
    """dpkg -r: the prerm stops the example and every bindonce@NAME instance before their
    binary goes, nothing of bindonce is left running, the configuration stays (removed, not
    purged). The package is installed again at the end, for the tests after this one."""
    ensure_example_running(c)
    port = free_port()
    c.write_file("/etc/bindonce/pkgrm.conf",
                 'BINDONCE_OPTS="-l 127.0.0.1:%d -w 2 --stop-timeout 5"\nBINDONCE_COMMAND="%s"\n'
                 % (port, HTTPD))
    inst = "bindonce@pkgrm.service"
    try:
        c.systemctl("start", inst, timeout=60)
        wait_for(lambda: workers_up(c, inst, 2), 30, "2/2 workers of " + inst)
        r = c.run(["dpkg", "-r", "bindonce"], check=False, timeout=300)
        assert r.returncode == 0, "dpkg -r: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
        running = {u: c.show(u, "ActiveState") for u in (SOCK, SVC, inst)}
        assert set(running.values()) == {"inactive"}, "after dpkg -r: %s" % running
        left = c.run(["pgrep", "-a", "-f", "bindonce|example-httpd"], check=False).stdout
        assert not left.strip(), "still running after dpkg -r:\n" + left
        assert not os.path.exists(os.path.join(c.root, BINDONCE.lstrip("/")))
        assert os.path.exists(os.path.join(c.root, "etc/bindonce/example.conf")), "a conffile went"
        assert request_once("127.0.0.1", EXAMPLE_PORT)[0] == "refused"
    finally:
        r = installation.dpkg_install(c)
        c.run(["rm", "-f", "/etc/bindonce/pkgrm.conf"], check=False)
    assert r.returncode == 0, "dpkg -i again: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)


# ---- g. bindonce generate-units ------------------------------------------------------------

def test_g_generate_units_install(c):
    port = free_port()
    name = "gentest"
    r = c.run([BINDONCE, "generate-units", name, "--install", "-l", "127.0.0.1:%d" % port,
               "-w", "2", "--", HTTPD])
    out = r.stdout + r.stderr
    assert "daemon-reload" in out and "enable --now %s.socket" % name in out, out
    for u in (name + ".socket", name + ".service"):
        assert os.path.exists(os.path.join(c.root, "etc/systemd/system", u)), u
    svc_text = open(os.path.join(c.root, "etc/systemd/system", name + ".service")).read()
    assert re.search(r"^ExecStart=%s .*-- %s$" % (re.escape(BINDONCE), re.escape(HTTPD)), svc_text, re.M), svc_text
    assert re.search(r"^Type=notify$", svc_text, re.M), svc_text
    assert re.search(r"^KillMode=mixed$", svc_text, re.M), svc_text
    r = c.run(["systemd-analyze", "verify", "--man=no",
               "/etc/systemd/system/%s.socket" % name, "/etc/systemd/system/%s.service" % name],
              check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr

    c.systemctl("daemon-reload")
    c.systemctl("enable", "--now", name + ".socket")
    try:
        cls, pid, detail = request_once("127.0.0.1", port, response_timeout=30)
        assert cls == "ok", (cls, detail)
        wait_for(lambda: workers_up(c, name + ".service", 2), 30, "2/2 workers of " + name)
        assert c.show(name + ".service", "ActiveState") == "active"
        assert c.show(name + ".socket", "UnitFileState") == "enabled"
    finally:
        c.systemctl("disable", "--now", name + ".socket", name + ".service", check=False)
