"""Fixtures of the real-systemd suite: one booted Debian 12 container per test session.

    /usr/bin/python3 -m pytest tests/systemd

needs root, systemd-nspawn (systemd-container), debootstrap and nsenter; as root it installs
the two Debian packages when they are missing, otherwise the suite is skipped with the
reason. The rootfs is cached in /var/cache/bindonce-tests (see sysd_rootfs.py); each session
boots a fresh copy of it with bindonce installed by `make install DESTDIR=<copy>`.

bindonce is built for the suite in a build directory of its own (make BUILD=<tmp>), so
that a developer's build/ is neither used stale nor raced with.

Environment:
    BINDONCE_SANITIZE=1         build with `make SANITIZE=1` (AddressSanitizer + UBSan; `make
                                check SANITIZE=1` sets it); any sanitizer report, in the
                                journal or on a command's stderr, fails the session
    BINDONCE_KEEP_CONTAINER=1   leave the container running and its copy in place at the end
                                (the path and init pid are printed) for a look by hand
    BINDONCE_PREBUILT=DIR       do not build: take DIR/bindonce and DIR/httpd as they are and
                                install them (and units/, docs/bindonce.1) by hand
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sysd_rootfs  # noqa: E402
from sysd_container import Container, cleanup_stale_sessions, log, new_session_dir  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
NOTES = []          # printed in the terminal summary: what the harness had to work around
TIMES = {}
# The sanitizer build's flags; its runtime (libasan8, libubsan1) is in the rootfs.
MAKE_VARS = ["SANITIZE=1"] if os.environ.get("BINDONCE_SANITIZE") == "1" else []

# What `make install DESTDIR=...` must produce, and where the harness takes it from when
# the Makefile does not (yet) install it. Unit files may land in any unit directory.
UNIT_DIRS = ("lib/systemd/system", "usr/lib/systemd/system", "etc/systemd/system",
             "usr/local/lib/systemd/system")
UNITS = ("bindonce-example.socket", "bindonce-example.service", "bindonce@.service")


def _build(build):
    """make all into a private build dir; returns it."""
    t0 = time.monotonic()
    r = subprocess.run(["make", "-C", REPO, "BUILD=" + build, *MAKE_VARS, build + "/bindonce", build + "/httpd"],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail("make BUILD=%s failed:\n%s%s" % (build, r.stdout[-3000:], r.stderr[-3000:]))
    TIMES["build"] = time.monotonic() - t0


def _install_by_hand(root, build):
    def put(src, rel, mode):
        dst = os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
        os.chmod(dst, mode)
    put(os.path.join(build, "bindonce"), "usr/local/bin/bindonce", 0o755)
    put(os.path.join(build, "httpd"), "usr/local/lib/bindonce/example-httpd", 0o755)
    put(os.path.join(REPO, "docs/bindonce.1"), "usr/local/share/man/man1/bindonce.1", 0o644)
    put(os.path.join(REPO, "units/bindonce-instance.conf.example"), "etc/bindonce/example.conf", 0o644)
    for u in UNITS:
        put(os.path.join(REPO, "units", u), os.path.join("usr/lib/systemd/system", u), 0o644)


def _install(root, build, prebuilt):
    """Install into root with `make install DESTDIR=root` (BINDONCE_PREBUILT: by hand)."""
    t0 = time.monotonic()
    if prebuilt:
        _install_by_hand(root, build)
        TIMES["make install"] = time.monotonic() - t0
        return
    r = subprocess.run(["make", "-C", REPO, "install", "BUILD=" + build, *MAKE_VARS, "DESTDIR=" + root],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail("make install DESTDIR=%s failed:\n%s%s" % (root, r.stdout[-3000:], r.stderr[-3000:]))

    def have(rel):
        return os.path.exists(os.path.join(root, rel))

    # What operators get from `make install` is what the tests run: nothing is filled in.
    wanted = ["usr/local/bin/bindonce", "usr/local/share/man/man1/bindonce.1",
              "usr/local/lib/bindonce/example-httpd", "etc/bindonce/example.conf"]
    missing = [w for w in wanted if not have(w)]
    missing += [u for u in UNITS if not any(have(os.path.join(d, u)) for d in UNIT_DIRS)]
    if missing:
        pytest.fail("make install DESTDIR=%s did not install: %s" % (root, " ".join(missing)))
    TIMES["make install"] = time.monotonic() - t0


class Build:
    def __init__(self, path, prebuilt):
        self.path, self.prebuilt = path, prebuilt

    def install(self, root):
        _install(root, self.path, self.prebuilt)


KEEP = os.environ.get("BINDONCE_KEEP_CONTAINER") == "1"


@pytest.fixture(scope="session")
def session_dir():
    """/var/tmp/bindonce-systemd-XXXX: the build and the container's root of this session."""
    if os.geteuid() == 0:
        cleanup_stale_sessions()
    d = new_session_dir()
    yield d
    if not KEEP:
        sysd_rootfs.remove_tree(d)


@pytest.fixture(scope="session")
def bindonce_build(session_dir):
    """bindonce and the example httpd, built in a directory of the suite's own."""
    prebuilt = os.environ.get("BINDONCE_PREBUILT")
    if prebuilt:
        return Build(os.path.abspath(prebuilt), True)
    _build(os.path.join(session_dir, "build"))
    return Build(os.path.join(session_dir, "build"), False)


@pytest.fixture(scope="session")
def container(request, session_dir):
    if os.geteuid() != 0:
        pytest.skip("the systemd suite needs root (systemd-nspawn, debootstrap, nsenter)")
    if not sysd_rootfs.ensure_host_tools(log=log):
        pytest.skip("missing host tools: %s (apt-get install debootstrap systemd-container "
                    "util-linux)" % " ".join(sysd_rootfs.host_tools_missing()))
    if not os.path.isdir("/sys/fs/cgroup"):
        pytest.skip("no /sys/fs/cgroup: cannot boot a systemd container here")

    bindonce_build = request.getfixturevalue("bindonce_build")
    t0 = time.monotonic()
    rootfs = sysd_rootfs.ensure_rootfs(log=log)
    TIMES["rootfs (cached or built)"] = time.monotonic() - t0

    c = Container(rootfs, session_dir)
    try:
        t0 = time.monotonic()
        c.prepare()
        TIMES["rootfs copy"] = time.monotonic() - t0
        bindonce_build.install(c.root)
        t0 = time.monotonic()
        c.boot(keep=KEEP)
        TIMES["container boot"] = time.monotonic() - t0
        yield c
        # Last: what bindonce and its workers reported at exit is in the journal once
        # their units are stopped.
        c.stop_bindonce_units()
        journal = c.sanitizer_reports_in_journal()
        reports = ["in the journal:\n" + journal] if journal else []
        reports += ["%s:\n%s" % r for r in c.sanitizer_reports]
        if reports:
            pytest.fail("sanitizer reports in the container:\n" + "\n".join(reports), pytrace=False)
    finally:
        if KEEP and c.proc is not None:
            NOTES.append("BINDONCE_KEEP_CONTAINER=1: container left running (the next session ends it): "
                "root %s, init pid %s, nspawn pid %s; enter it with: nsenter --target %s --all"
                % (c.root, c.init_pid, c.proc.pid, c.init_pid))
        else:
            t0 = time.monotonic()
            c.shutdown()
            TIMES["container shutdown"] = time.monotonic() - t0


def pytest_terminal_summary(terminalreporter):
    import sysd_load
    if TIMES:
        terminalreporter.write_line("systemd suite load client: " + sysd_load.client_name())
    if TIMES:
        terminalreporter.write_line("systemd suite timings: " + ", ".join(
            "%s %.1f s" % kv for kv in TIMES.items()))
    for n in dict.fromkeys(NOTES):
        terminalreporter.write_line("systemd suite note: " + n)
