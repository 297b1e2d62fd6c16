"""Boot a throw-away copy of the cached rootfs with systemd-nspawn and drive it.

Only the processes this module starts are ever signalled, always by pid: the
systemd-nspawn process and the container's init (its descendant, found through
/proc/<pid>/task/*/children and NSpid).
"""

import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from sysd_rootfs import pdeathsig, proc_alive, proc_identity, remove_tree

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg):
    sys.stderr.write("[systemd-tests] %s\n" % msg)
    sys.stderr.flush()


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns something truthy; return that, or raise after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:          # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1f s waiting for %s%s"
                               % (timeout, what, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


def _children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _nspid(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except FileNotFoundError:
        pass
    return []


def cgroup_roots():
    """The hierarchies systemd-nspawn places a container in: the unified one, plus the
    name=systemd one on a hybrid (v1) host."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        mounts = {l.split()[4]: l.split(" - ")[1].split() for l in f}
    if mounts.get("/sys/fs/cgroup", [""])[0] == "cgroup2":
        return ["/sys/fs/cgroup"]
    for mp in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        if mp in mounts:
            roots.append(mp)
    return roots


def make_cgroups(name):
    """A cgroup of our own in each hierarchy, so that concurrent containers do not share
    the "payload" and "supervisor" cgroups nspawn --keep-unit creates where it stands."""
    made = []
    for root in cgroup_roots():
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        made.append(d)
    return made


def remove_cgroups(dirs):
    """rmdir the cgroup trees, deepest first (a cgroup goes only when empty)."""
    for top in dirs:
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                log("cannot remove cgroup %s: %s" % (dirpath, e))


def _child_setup(cgroups, deathsig):
    """preexec_fn for systemd-nspawn: move into our cgroups, parent-death signal."""
    def setup():
        for d in cgroups:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")
        if deathsig:
            pdeathsig(deathsig)()
    return setup


SESSION_PREFIX = "bindonce-systemd-"
SESSION_PARENT = "/var/tmp"


def owner_file(workdir):
    return os.path.join(workdir, "owner.json")


def new_session_dir():
    """A work directory for one test session, marked with the identity of this process."""
    d = tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=SESSION_PARENT)
    with open(owner_file(d), "w") as f:
        json.dump({"owner": proc_identity(os.getpid())}, f)
    return d


def update_owner(workdir, **idents):
    with open(owner_file(workdir)) as f:
        data = json.load(f)
    data.update(idents)
    with open(owner_file(workdir) + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(owner_file(workdir) + ".tmp", owner_file(workdir))


def cleanup_stale_sessions():
    """Remove what earlier sessions that were killed (or kept with BINDONCE_KEEP_CONTAINER)
    left behind: their container, found by the pid and start time they recorded, and their
    work directory. Sessions whose pytest still runs are left alone."""
    for d in glob.glob(os.path.join(SESSION_PARENT, SESSION_PREFIX + "*")):
        try:
            with open(owner_file(d)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            try:
                if time.time() - os.stat(d).st_mtime < 3600:
                    continue                # maybe a session that is just starting
            except OSError:
                continue
            data = {}
        if proc_alive(data.get("owner")):
            continue
        for key in ("init", "nspawn"):
            ident = data.get(key)
            if proc_alive(ident):
                log("ending the container of a dead session in %s (%s pid %d)" % (d, key, ident[0]))
                try:
                    os.kill(ident[0], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            wait_for(lambda: not any(proc_alive(data.get(k)) for k in ("init", "nspawn")),
                     15, "the stale container to end")
            remove_cgroups(data.get("cgroups", []))
            remove_tree(d)
        except (OSError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as e:
            log("cannot clean up %s: %s" % (d, e))


# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print (on stderr, by
# default: the journal, for a service) when a `make SANITIZE=1` build finds something.
SANITIZER_SIGNS = re.compile(r"ERROR: (?:Address|Leak)Sanitizer|LeakSanitizer has encountered|"
                             r"runtime error: |SUMMARY: (?:Address|UndefinedBehavior)Sanitizer")


def sanitizer_report(text):
    """The lines of text from the first sanitizer report on, or None."""
    m = SANITIZER_SIGNS.search(text or "")
    if not m:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    return text[start:start + 6000]


class Container:
    def __init__(self, rootfs, workdir):
        self.rootfs_cache = rootfs
        self.workdir = workdir
        self.root = os.path.join(self.workdir, "root")
        self.machine = "bindonce-%s" % uuid.uuid4().hex[:8]
        self.log_path = os.path.join(self.workdir, "nspawn.log")
        self.proc = None
        self.init_pid = None
        self.cgroups = []
        self.sanitizer_reports = []     # [(what ran, report)] seen on a command's stderr

    # ---- life cycle -------------------------------------------------------------------

    def prepare(self):
        t0 = time.monotonic()
        subprocess.run(["cp", "-a", "--reflink=auto", self.rootfs_cache, self.root],
                       check=True, timeout=600)
        log("rootfs copied to %s in %.1f s" % (self.root, time.monotonic() - t0))

    def boot(self, timeout=90, keep=False):
        """keep: the container is to outlive this process (no parent-death signal)."""
        t0 = time.monotonic()
        self._log_file = open(self.log_path, "w")
        self.cgroups = make_cgroups("bindonce-test-" + self.machine)
        update_owner(self.workdir, cgroups=self.cgroups)
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
             "--machine=" + self.machine, "--console=read-only",
             "-D", self.root, "-b"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            # If pytest dies, nspawn gets SIGTERM and powers the container off.
            start_new_session=True,
            preexec_fn=_child_setup(self.cgroups, None if keep else signal.SIGTERM))
        update_owner(self.workdir, nspawn=proc_identity(self.proc.pid))

        def find_init():
            if self.proc.poll() is not None:
                raise RuntimeError("systemd-nspawn exited with %s; log:\n%s"
                                   % (self.proc.returncode, self.nspawn_log()[-3000:]))
            todo = _children(self.proc.pid)
            seen = set()
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                ns = _nspid(p)
                if len(ns) >= 2 and ns[-1] == 1:
                    return p
                todo += _children(p)
            return None

        self.init_pid = wait_for(find_init, 30, "the container's init process")
        # Recorded so that a later session can end this container if we get killed
        # (killing systemd-nspawn does not end the container's init).
        update_owner(self.workdir, init=proc_identity(self.init_pid))
        # is-system-running --wait returns once the boot is done (running or degraded).
        state = wait_for(self._system_state, timeout, "the container to finish booting",
                         interval=0.2)
        log("container %s booted in %.1f s (init pid %d on the host, state %s)"
            % (self.machine, time.monotonic() - t0, self.init_pid, state))
        if state == "degraded":
            log("failed units: " + self.run(["systemctl", "--failed", "--no-legend"],
                                             check=False).stdout.strip())

    def _system_state(self):
        if self.proc.poll() is not None:
            raise RuntimeError("systemd-nspawn exited with %s" % self.proc.returncode)
        r = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
        state = r.stdout.strip()
        return state if state in ("running", "degraded") else None

    def stop_bindonce_units(self):
        """Stop every loaded unit that runs bindonce, so that what it reports at exit
        (LeakSanitizer) is in the journal before it is read."""
        out = self.run(["systemctl", "show", "--type=service", "-p", "Id", "-p", "ExecStart", "*"],
                       check=False).stdout
        units = [b.split("Id=", 1)[1].split("\n", 1)[0] for b in out.split("\n\n")
                 if "Id=" in b and "/bindonce " in b]
        if units:
            self.run(["systemctl", "stop"] + units, check=False, timeout=120)
        return units

    def sanitizer_reports_in_journal(self):
        """Sanitizer reports anywhere in the container's journal, or None."""
        return sanitizer_report(self.run(["journalctl", "--no-pager", "-q", "-o", "short-monotonic"],
                                         check=False, timeout=60).stdout)

    def shutdown(self, timeout=30):
        """Power the container off; kill what we started, by pid, if it does not go."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.init_pid:
            self.run(["systemctl", "--no-block", "poweroff"], check=False, timeout=10)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log("container did not power off within %d s; killing it" % timeout)
        if self.proc.poll() is None:
            # The container's init first (that ends its pid namespace), then nspawn itself.
            if self.init_pid and _nspid(self.init_pid)[-1:] == [1]:
                try:
                    os.kill(self.init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self._log_file.close()
        self.proc = None
        remove_cgroups(self.cgroups)

    def remove(self):
        remove_tree(self.root)

    def nspawn_log(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""

    # ---- commands in the container ----------------------------------------------------

    def run(self, argv, check=True, timeout=60, input=None):
        """Run argv inside the container (all its namespaces), with a clean environment."""
        cmd = ["nsenter", "--target", str(self.init_pid), "--all",
               "/usr/bin/env", "-i", "PATH=" + CONTAINER_PATH, "LANG=C.UTF-8",
               "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"] + list(argv)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        report = sanitizer_report(r.stderr)
        if report:
            self.sanitizer_reports.append((" ".join(map(shlex.quote, argv)), report))
        if check and r.returncode != 0:
            raise AssertionError("in the container: %s\nexit %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(map(shlex.quote, argv)), r.returncode,
                                    r.stdout[-4000:], r.stderr[-4000:]))
        return r

    def popen(self, argv, **kw):
        cmd = ["nsenter", "--target", str(self.init_pid), "--all",
               "/usr/bin/env", "-i", "PATH=" + CONTAINER_PATH, "LANG=C.UTF-8",
               "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"] + list(argv)
        return subprocess.Popen(cmd, **kw)

    def sh(self, script, check=True, timeout=60):
        return self.run(["/bin/sh", "-c", script], check=check, timeout=timeout)

    def write_file(self, path, text, mode=0o644):
        """Write a file into the container's file system (from the host side)."""
        full = os.path.join(self.root, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, mode)

    def systemctl(self, *args, check=True, timeout=60):
        return self.run(["systemctl"] + list(args), check=check, timeout=timeout)

    def show(self, unit, prop):
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self, unit):
        return int(self.show(unit, "MainPID") or 0)

    def children(self, pid):
        r = self.run(["ps", "-o", "pid=", "--ppid", str(pid)], check=False)
        return sorted(int(x) for x in r.stdout.split())

    def environ(self, pid):
        r = self.run(["cat", "/proc/%d/environ" % pid])
        env = {}
        for item in r.stdout.split("\0"):
            if "=" in item:
                k, v = item.split("=", 1)
                env[k] = v
        return env

    def fd_link(self, pid, fd):
        return self.run(["readlink", "/proc/%d/fd/%d" % (pid, fd)]).stdout.strip()

    def fd_socket_inode(self, pid, fd):
        """The inode number of the socket at fd of pid (asserted to be one)."""
        link = self.fd_link(pid, fd)
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        assert m, "fd %d of pid %d is %r, not a socket" % (fd, pid, link)
        return m.group(1)

    def cgroup_procs(self, cgroup):
        """The pids in a unit's cgroup, from whichever hierarchy the container has."""
        pids = set()
        found = False
        for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
            r = self.run(["cat", base + cgroup + "/cgroup.procs"], check=False)
            if r.returncode == 0:
                found = True
                pids.update(int(x) for x in r.stdout.split())
        return found, sorted(pids)

    def journal_cursor(self):
        r = self.run(["journalctl", "-n", "0", "--show-cursor", "-q"], check=False)
        m = re.search(r"-- cursor: (\S+)", r.stdout)
        return m.group(1) if m else None

    def journal_entries(self, cursor=None):
        """Every journal entry after cursor, as dicts (journalctl -o json).

        Filtering is done here, not with journalctl matches: journalctl 252 with
        --after-cursor and a match skips the first matching entry when the cursor's own
        entry does not match."""
        # journald reads its sockets and streams asynchronously: what a unit logged just
        # before `systemctl` returned may not be stored yet. --sync waits until it is.
        self.run(["journalctl", "--sync"], check=False, timeout=60)
        argv = ["journalctl", "--no-pager", "-q", "-o", "json"]
        if cursor:
            argv += ["--after-cursor", cursor]
        out = self.run(argv, check=False, timeout=60).stdout
        entries = []
        for line in out.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            msg = e.get("MESSAGE")
            if isinstance(msg, list):           # non-UTF-8 messages come as byte arrays
                e["MESSAGE"] = bytes(msg).decode("utf-8", "replace")
            elif msg is None:
                e["MESSAGE"] = ""
            entries.append(e)
        return entries

    def journal(self, unit=None, cursor=None, priority=None, identifier=None, pid=None):
        """MESSAGE lines after cursor, like journalctl -u UNIT -p PRIORITY -t IDENT _PID=."""
        lines = []
        for e in self.journal_entries(cursor):
            if unit and unit not in (e.get("_SYSTEMD_UNIT"), e.get("UNIT"),
                                     e.get("OBJECT_SYSTEMD_UNIT")):
                continue
            if priority is not None and int(e.get("PRIORITY", 6)) > priority:
                continue
            if identifier and e.get("SYSLOG_IDENTIFIER") != identifier:
                continue
            if pid is not None and e.get("_PID") != str(pid):
                continue
            lines.append(e["MESSAGE"])
        return "\n".join(lines) + ("\n" if lines else "")
