"""Fixtures of the real-systemd suite: one booted Debian 12 container per test session.

    /usr/bin/python3 -m pytest tests/systemd

needs root, systemd-nspawn (systemd-container), debootstrap and nsenter; as root it installs
the two Debian packages when they are missing, otherwise the suite is skipped with the
reason. The rootfs is cached in /var/cache/bindonce-tests (see sysd_rootfs.py); each session
boots a fresh copy of it.

bindonce is tested as operators get it: the Debian package (`make deb`), installed with
`dpkg -i` inside the booted container, so that its maintainer scripts run under a real
systemd. The package is built for the suite in the session's own directory (make deb
DEB_DIR=<session dir>/deb), so that a developer's build/ is neither used stale nor raced
with; CI, which has just run `make deb`, names the result in BINDONCE_DEB instead.

Environment:
    BINDONCE_DEB=FILE           do not build the package: install FILE (CI: the .deb that
                                `make deb` built before `make check`)
    BINDONCE_SANITIZE=1         test the sanitizer build instead (`make SANITIZE=1`:
                                AddressSanitizer + UBSan; `make check SANITIZE=1` sets it),
                                installed by `make install` into the copy before it boots,
                                at the package's paths (debian/rules' INSTALL_VARS); the
                                package is a normal build, so its own checks are deselected.
                                Any sanitizer report, in the journal or on a command's
                                stderr, fails the session
    BINDONCE_KEEP_CONTAINER=1   leave the container running and its copy in place at the end
                                (the path and init pid are printed) for a look by hand
"""

import os
import re
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
SANITIZE = os.environ.get("BINDONCE_SANITIZE") == "1"
UNITS = ("bindonce-example.socket", "bindonce-example.service", "bindonce@.service")
# Where the package's .deb waits in the container until it is installed.
DEB_IN_CONTAINER = "/var/tmp/bindonce.deb"


def _makefile_version():
    with open(os.path.join(REPO, "Makefile")) as f:
        return re.search(r"^VERSION\s*:?=\s*(\S+)", f.read(), re.M).group(1)


def _debian_install_vars():
    """debian/rules' INSTALL_VARS (PREFIX=/usr LIBDIR=/usr/libexec ...) and the unit directory
    of the package: `make install` of the sanitizer build puts every file where the package
    does, so that the tests name one set of paths."""
    with open(os.path.join(REPO, "debian/rules")) as f:
        m = re.search(r"^INSTALL_VARS\s*:?=\s*(.*)$", f.read(), re.M)
    return m.group(1).split() + ["UNITDIR=/lib/systemd/system"]


def _run_make(argv, what, timeout, env=None):
    r = subprocess.run(["make", "-C", REPO] + argv, capture_output=True, text=True,
                       timeout=timeout, env=env)
    if r.returncode != 0:
        pytest.fail("%s failed:\n%s%s" % (what, r.stdout[-3000:], r.stderr[-3000:]))


class Package:
    """The Debian package: copied into the container's root before it boots, installed
    with dpkg -i once it runs."""
    kind = "package"

    def __init__(self, deb):
        self.deb = deb
        self.dpkg_output = None

    def put(self, root):
        dst = os.path.join(root, DEB_IN_CONTAINER.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(self.deb, dst)

    def dpkg_install(self, c):
        """dpkg -i of the package in the container (again: an upgrade to the same version)."""
        return c.run(["dpkg", "-i", DEB_IN_CONTAINER], check=False, timeout=300)

    def install_in(self, c):
        t0 = time.monotonic()
        r = self.dpkg_install(c)
        self.dpkg_output = r.stdout + r.stderr
        if r.returncode != 0:
            pytest.fail("dpkg -i %s in the container: exit %d\n%s"
                        % (os.path.basename(self.deb), r.returncode, self.dpkg_output[-4000:]))
        TIMES["dpkg -i"] = time.monotonic() - t0

    def unpack(self, root):
        """The package's files under root, as on the target (no maintainer scripts)."""
        subprocess.run(["dpkg-deb", "-x", self.deb, root], check=True, timeout=120)


class SanitizerBuild:
    """`make SANITIZE=1` in a build directory of the suite's own, installed with
    `make install DESTDIR=<the container's root>` before it boots."""
    kind = "make install"

    def __init__(self, build):
        self.build = build

    def put(self, root):
        t0 = time.monotonic()
        _run_make(["install", "BUILD=" + self.build, "SANITIZE=1", "DESTDIR=" + root]
                  + _debian_install_vars(), "make install DESTDIR=%s" % root, 600)
        TIMES["make install"] = time.monotonic() - t0

    def install_in(self, c):
        """Only a check: what runs is the sanitizer build (else its reports could not fail
        the session)."""
        r = c.run(["ldd", "/usr/bin/bindonce"], check=False)
        if "libasan" not in r.stdout:
            pytest.fail("BINDONCE_SANITIZE=1 but /usr/bin/bindonce in the container is not the "
                        "sanitizer build:\n" + r.stdout + r.stderr)

    unpack = put


def _build_deb(deb_dir):
    """make deb into deb_dir; returns the .deb. nocheck: the unit tests run in make check,
    and the package's files are the same without them."""
    t0 = time.monotonic()
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck")
    for k in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(k, None)
    _run_make(["deb", "DEB_DIR=" + deb_dir], "make deb DEB_DIR=%s" % deb_dir, 1800, env=env)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    TIMES["make deb"] = time.monotonic() - t0
    return os.path.join(deb_dir, "bindonce_%s_%s.deb" % (_makefile_version(), arch))


def _build_sanitizer(build):
    t0 = time.monotonic()
    _run_make(["BUILD=" + build, "SANITIZE=1", build + "/bindonce", build + "/httpd"],
              "make BUILD=%s SANITIZE=1" % build, 900)
    TIMES["build"] = time.monotonic() - t0
    return SanitizerBuild(build)


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
def installation(session_dir):
    """What the container gets: the package (built here, or BINDONCE_DEB), or with
    BINDONCE_SANITIZE=1 the sanitizer build."""
    if SANITIZE:
        return _build_sanitizer(os.path.join(session_dir, "build"))
    deb = os.environ.get("BINDONCE_DEB")
    if deb:
        if not os.path.isfile(deb):
            pytest.fail("BINDONCE_DEB=%s: no such file (make deb builds build/deb/bindonce_VERSION_ARCH.deb)" % deb)
        return Package(os.path.abspath(deb))
    return Package(_build_deb(os.path.join(session_dir, "deb")))


@pytest.fixture(scope="session")
def container(request, session_dir):
    if os.geteuid() != 0:
        pytest.skip("the systemd suite needs root (systemd-nspawn, debootstrap, nsenter)")
    if not sysd_rootfs.ensure_host_tools(log=log):
        pytest.skip("missing host tools: %s (apt-get install debootstrap systemd-container "
                    "util-linux)" % " ".join(sysd_rootfs.host_tools_missing()))
    if not os.path.isdir("/sys/fs/cgroup"):
        pytest.skip("no /sys/fs/cgroup: cannot boot a systemd container here")

    installation = request.getfixturevalue("installation")
    t0 = time.monotonic()
    rootfs = sysd_rootfs.ensure_rootfs(log=log)
    TIMES["rootfs (cached or built)"] = time.monotonic() - t0

    c = Container(rootfs, session_dir)
    try:
        t0 = time.monotonic()
        c.prepare()
        TIMES["rootfs copy"] = time.monotonic() - t0
        installation.put(c.root)
        t0 = time.monotonic()
        c.boot(keep=KEEP)
        TIMES["container boot"] = time.monotonic() - t0
        installation.install_in(c)
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


def pytest_configure(config):
    config.addinivalue_line("markers", "package: checks the Debian package itself (deselected "
                            "in the sanitizer pass, which installs the sanitizer build instead)")


def pytest_collection_modifyitems(config, items):
    """The sanitizer pass installs `make install`'s files, not the package: the package's
    own checks run in the normal pass. Deselected, not skipped: nothing is missing here."""
    if not SANITIZE:
        return
    drop = [i for i in items if i.get_closest_marker("package")]
    if drop:
        items[:] = [i for i in items if not i.get_closest_marker("package")]
        config.hook.pytest_deselected(items=drop)
        NOTES.append("BINDONCE_SANITIZE=1: the sanitizer build is installed by make install, "
                     "so the package's own checks are deselected (they run in the normal pass): "
                     + ", ".join(i.name for i in drop))


def pytest_terminal_summary(terminalreporter):
    import sysd_load
    if TIMES:
        terminalreporter.write_line("systemd suite load client: " + sysd_load.client_name())
    if TIMES:
        terminalreporter.write_line("systemd suite timings: " + ", ".join(
            "%s %.1f s" % kv for kv in TIMES.items()))
    for n in dict.fromkeys(NOTES):
        terminalreporter.write_line("systemd suite note: " + n)
