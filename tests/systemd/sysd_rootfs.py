"""A cached Debian 12 (bookworm) root file system for the real-systemd tests.

The rootfs is built once with debootstrap (minbase + systemd + a few tools) and cached
outside the repo, in /var/cache/bindonce-tests/rootfs-bookworm-<key>, where <key> hashes
everything that goes into it (suite, mirror, package list, setup steps). It is built in
a temporary directory next to the cache and renamed into place only when complete, so a
build that is killed never leaves a half cache; the leftovers of such a build are removed
(after unmounting anything debootstrap left mounted in it) by the next build.

Run directly to warm the cache:  /usr/bin/python3 tests/systemd/sysd_rootfs.py
"""

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time

CACHE_DIR = os.environ.get("BINDONCE_ROOTFS_CACHE", "/var/cache/bindonce-tests")
SUITE = "bookworm"
VARIANT = "minbase"
# systemd + systemd-sysv: an init that nspawn -b can boot; dbus: systemctl talks to PID 1
# through it for some verbs and it is what a real install has; libsystemd0: bindonce's
# library (pulled in by systemd anyway, named for clarity); procps: /bin/kill for the
# units' ExecReload= and ps/pgrep for debugging; iproute2: ss for debugging sockets;
# libasan8, libubsan1: the runtime of a `make SANITIZE=1` bindonce, which the suite runs
# in the sanitizer pass of `make check`.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "libsystemd0", "procps", "iproute2", "libasan8", "libubsan1")
# Bump when the post-debootstrap setup below changes: it is part of the cache key.
SETUP_VERSION = "2"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT = 1800            # seconds; debootstrap over the network


def host_mirror():
    """The Debian mirror the host's apt uses for the main archive (deb822 or one-line)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            if SUITE not in fields.get("suites", "").split():
                continue
            for uri in fields.get("uris", "").split():
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                rest = [p for p in parts[1:] if not p.startswith("[")]
                if len(rest) >= 2 and rest[1] == SUITE and rest[0].rstrip("/").endswith("/debian"):
                    return rest[0].rstrip("/")
    return DEFAULT_MIRROR


def cache_key(mirror):
    h = hashlib.sha256()
    h.update(repr((SUITE, VARIANT, mirror, sorted(PACKAGES), SETUP_VERSION)).encode())
    return h.hexdigest()[:16]


def rootfs_path(mirror=None):
    mirror = mirror or host_mirror()
    return os.path.join(CACHE_DIR, "rootfs-%s-%s" % (SUITE, cache_key(mirror)))


def mounts_under(path):
    """Mount points at or below path, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def remove_tree(path):
    """rm -rf that first unmounts whatever is mounted inside and never crosses file systems."""
    if not os.path.lexists(path):
        return
    for _ in range(3):
        mps = mounts_under(path)
        if not mps:
            break
        for mp in mps:
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    if mounts_under(path):
        raise RuntimeError("cannot unmount everything under %s; refusing to remove it" % path)
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=True)


# ---- processes this suite started, identified across runs -------------------------------

def proc_start_time(pid):
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def proc_identity(pid):
    """(pid, start time): names one process, immune to pid reuse."""
    return [pid, proc_start_time(pid)]


def proc_alive(ident):
    return bool(ident) and ident[1] is not None and proc_start_time(ident[0]) == ident[1]


def kill_chrooted_into(path):
    """SIGKILL the processes whose root directory is path (the leftovers of a killed
    debootstrap, chrooted into our own build directory). Returns how many."""
    try:
        target = os.stat(path)
    except OSError:
        return 0
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            st = os.stat("/proc/%s/root/" % d)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            try:
                os.kill(int(d), 9)
                n += 1
            except ProcessLookupError:
                pass
    return n


def pdeathsig(sig):
    """A preexec_fn: the child gets sig when the test process dies."""
    def set_it():
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)   # PR_SET_PDEATHSIG
    return set_it


def host_tools_missing():
    return [t for t in ("debootstrap", "systemd-nspawn", "nsenter")
            if shutil.which(t) is None and not os.path.exists("/usr/sbin/" + t)]


def ensure_host_tools(log=print):
    """Install debootstrap and systemd-container if missing (root only). True when present."""
    if not host_tools_missing():
        return True
    if os.geteuid() != 0:
        return False
    log("installing host packages: debootstrap systemd-container debian-archive-keyring")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap", "systemd-container",
                    "debian-archive-keyring"],
                   env=env, timeout=900)
    return not host_tools_missing()


def _setup(root):
    """Make the fresh rootfs boot quickly and quietly in systemd-nspawn."""
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write("bindonce-test\n")
    # Timers and units that only add noise or time to a test boot.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                 "e2scrub_reap.service", "fstrim.timer", "systemd-timesyncd.service",
                 "getty@tty1.service", "console-getty.service", "man-db.timer",
                 "dpkg-db-backup.timer"):
        link = os.path.join(root, "etc/systemd/system", unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)
    # Persistent journal off: the container is thrown away anyway.
    os.makedirs(os.path.join(root, "etc/systemd/journald.conf.d"), exist_ok=True)
    with open(os.path.join(root, "etc/systemd/journald.conf.d/bindonce-test.conf"), "w") as f:
        f.write("[Journal]\nStorage=volatile\nRateLimitBurst=0\n")
    # The downloaded .debs are not needed at run time; smaller rootfs = faster copies.
    for deb in glob.glob(os.path.join(root, "var/cache/apt/archives/*.deb")):
        os.unlink(deb)
    for req in ("usr/lib/systemd/systemd", "usr/bin/systemctl", "usr/bin/kill"):
        if not os.path.exists(os.path.join(root, req)):
            raise RuntimeError("debootstrap result lacks /%s" % req)


def ensure_rootfs(log=print):
    """Return the path of the cached rootfs, building it first if needed."""
    mirror = host_mirror()
    final = rootfs_path(mirror)
    if os.path.isdir(final):
        return final
    os.makedirs(CACHE_DIR, exist_ok=True)
    lock = open(os.path.join(CACHE_DIR, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(final):            # another process built it meanwhile
            return final
        for stale in glob.glob(os.path.join(CACHE_DIR, ".build-*")):
            # We hold the lock, so no live build owns it. A killed build may have left
            # chrooted dpkg children and mounts behind; end them, unmount, remove.
            log("removing the leftovers of an interrupted build: %s" % stale)
            for _ in range(10):
                if not kill_chrooted_into(stale):
                    break
                time.sleep(0.5)
            remove_tree(stale)
        tmp = os.path.join(CACHE_DIR, ".build-%s-%d" % (os.path.basename(final), os.getpid()))
        os.makedirs(tmp)
        logpath = os.path.join(CACHE_DIR, "debootstrap-%s.log" % cache_key(mirror))
        cmd = ["debootstrap", "--variant=" + VARIANT, "--components=main",
               "--include=" + ",".join(PACKAGES), SUITE, tmp, mirror]
        log("building the %s rootfs (first run only, several minutes): %s; log: %s"
            % (SUITE, " ".join(cmd), logpath))
        t0 = time.monotonic()
        try:
            with open(logpath, "w") as out:
                r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   timeout=BUILD_TIMEOUT, preexec_fn=pdeathsig(9))
            if r.returncode != 0:
                tail = open(logpath).read()[-3000:]
                raise RuntimeError("debootstrap failed (exit %d); end of %s:\n%s"
                                   % (r.returncode, logpath, tail))
            _setup(tmp)
            os.rename(tmp, final)
        except BaseException:
            kill_chrooted_into(tmp)
            remove_tree(tmp)
            raise
        log("rootfs built in %.0f s: %s" % (time.monotonic() - t0, final))
        return final
    finally:
        lock.close()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("must run as root")
    if not ensure_host_tools():
        sys.exit("missing host tools: %s" % " ".join(host_tools_missing()))
    print(ensure_rootfs())
