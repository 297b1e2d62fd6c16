"""The workers' output under the journal (issue 10, point 5): bindonce reads each worker's
pipe and sends each line to journald's native socket as an entry of its own, with
SYSLOG_IDENTIFIER=NAME, SYSLOG_PID, BINDONCE_SLOT and PRIORITY (from a "<N>" prefix), as
the worker itself where it may (CAP_SYS_ADMIN). When journald stops reading, nothing is
dropped: bindonce stops reading the pipes, the workers wait on their writes, supervision
goes on.

No systemd here: in a mount namespace of bindonce's own, /run/systemd/journal is a
directory of the test where a Python datagram server stands in for journald and parses the
native protocol; JOURNAL_STREAM names bindonce's stderr (its log file). The real journald
is tests/systemd/test_journal.py's."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from testlib import (BINDONCE, NEEDS_ROOT_REASON, WORKER_DEATH, fd_inode, free_tcp_port, listening_inodes,
                     wait_until)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT_REASON)

NAME = "jfwd"
SLOW = r"journald does not keep up with the workers' output"


def parse_entry(data):
    """One datagram of the native protocol: {FIELD: [values]} (values as bytes)."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n", data
            i = nl + 10 + size
        assert re.fullmatch(rb"[A-Z0-9_]+", key), data
        fields.setdefault(key.decode(), []).append(value)
    return fields


class FakeJournald:
    """A datagram server at DIR/socket that parses the native protocol, with the sender's
    credentials (the _PID journald would record). reading.clear() stops it reading."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bo-jd-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(self.dir / "socket"))
        self.sock.settimeout(0.05)
        self.entries = []               # (fields, sender pid, uid, gid)
        self.lock = threading.Lock()
        self.reading = threading.Event()
        self.reading.set()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        space = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self.stopping:
            if not self.reading.wait(0.05):
                continue
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, space)
            except (socket.timeout, BlockingIOError):
                continue
            cred = (None, None, None)
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    cred = struct.unpack("iII", payload)
            with self.lock:
                self.entries.append((parse_entry(data),) + cred)

    def snapshot(self):
        with self.lock:
            return list(self.entries)

    def messages(self):
        return [e[0]["MESSAGE"][0] for e in self.snapshot()]

    def wait_messages(self, pred, timeout, what):
        return wait_until(lambda: (lambda m: m if pred(m) else None)(self.messages()), timeout, what)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def journald():
    # Tests take it before `supervisor`, so that it outlives bindonce: torn down first, it
    # would leave bindonce's last lines with no journald to go to.
    j = FakeJournald()
    yield j
    j.close()


def in_namespace(journal_dir, prefix=()):
    """A wrapper: bindonce in a mount namespace of its own, where /run/systemd/journal is
    journal_dir (an empty tmpfs on /run first, so the host's /run stays as it is)."""
    script = ('mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/systemd/journal && '
              'mount --bind "$0" /run/systemd/journal && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(journal_dir),
            *prefix]


def start(sup, journal_dir, args, script, prefix=()):
    """bindonce with JOURNAL_STREAM naming its stderr (the harness's log file)."""
    sup.log_path.touch()
    st = os.stat(sup.log_path)
    sup.port = free_tcp_port()
    sup.start(["-l", f"127.0.0.1:{sup.port}", *args], ["/bin/sh", "-c", script], wrapper=in_namespace(journal_dir, prefix),
              env_extra={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    return sup


def status(sup):
    r = subprocess.run([BINDONCE, "ctl", "--control", str(sup.control_path), "status", "--json"],
                       capture_output=True, text=True, timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_status(sup, pred, timeout, what):
    def check():
        assert sup.running(), f"bindonce exited {sup.proc.returncode}:\n{sup.log()}"
        st = status(sup)
        return st if st and pred(st) else None
    return wait_until(check, timeout, what, interval=0.05)


def all_up(n):
    return lambda st: len(st["slots"]) == n and all(s["pid"] for s in st["slots"])


def test_entries_name_slot_pid_and_priority(journald, supervisor):
    """Each line is one entry: SYSLOG_IDENTIFIER=--name, BINDONCE_SLOT the slot `ctl status`
    shows for the worker, SYSLOG_PID and the sender's credentials the worker's pid (so
    journald records its _PID, _COMM, _CMDLINE), a "<3>" line at PRIORITY=3 without its
    prefix, other lines at 6."""
    sup = start(supervisor(), journald.dir, ["-w", "2", "--name", NAME],
                'echo "hello from $$"; echo "<3>trouble in $$"; exec sleep 1000')
    st = wait_status(sup, all_up(2), 10, "2 workers")
    sup.mark_fds()
    slot_of = {s["pid"]: s["slot"] for s in st["slots"]}
    journald.wait_messages(lambda m: len(m) >= 4, 10, "4 entries")
    entries = journald.snapshot()
    assert len(entries) == 4, entries
    seen = set()
    for fields, sender, uid, gid in entries:
        msg = fields["MESSAGE"][0].decode()
        pid = int(msg.split()[-1])
        assert pid in slot_of, (msg, slot_of)
        assert fields["SYSLOG_IDENTIFIER"] == [NAME.encode()]
        assert fields["SYSLOG_PID"] == [str(pid).encode()]
        assert fields["BINDONCE_SLOT"] == [str(slot_of[pid]).encode()]
        assert (sender, uid, gid) == (pid, 0, 0), "sent as the worker itself (root has CAP_SYS_ADMIN)"
        if msg.startswith("trouble"):
            assert fields["PRIORITY"] == [b"3"], fields
        else:
            assert msg.startswith("hello") and fields["PRIORITY"] == [b"6"], fields
        seen.add((msg.split()[0], pid))
    assert len(seen) == 4, seen
    # Nothing of theirs on bindonce's stderr: it carries bindonce's own lines only.
    assert "hello from" not in sup.log() and "trouble in" not in sup.log()
    # The journal's socket came after the listening sockets, which keep fd 3 on (as
    # systemd's fd store and the real-systemd suite expect).
    assert fd_inode(sup.pid, 3) in listening_inodes(sup.port)


@pytest.mark.log_expected(SLOW, WORKER_DEATH)
def test_back_pressure_loses_nothing_and_stalls_nothing(journald, supervisor, tmp_path):
    """journald stops reading and a worker floods: bindonce stops reading its pipe, so the
    worker waits on its writes (it cannot finish), while supervision goes on: `ctl status`
    answers, another worker SIGKILLed is restarted. Once journald reads again, every line
    arrives, once and in order."""
    n = 20000
    done = tmp_path / "flood-done"
    pad = "x" * 100
    script = (f'if [ "$BINDONCE_WORKER" = 0 ]; then seq -f "flood %.0f {pad}" 1 {n}; touch {done}; '
              f'else echo "calm $$"; fi; exec sleep 1000')
    journald.reading.clear()
    sup = start(supervisor(), journald.dir, ["-w", "2", "--name", NAME], script)
    wait_until(lambda: SLOW in sup.log(), 10, "the journald-is-slow warning")
    st = wait_status(sup, all_up(2), 10, "2 workers")
    victim = st["slots"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    st = wait_status(sup, lambda s: s["slots"][1]["pid"] not in (None, victim), 10, "slot 1 restarted")
    assert status(sup) is not None
    # 2 MB cannot fit in a 64 KiB pipe and journald's queue: the flood waits for journald.
    assert not done.exists(), "the flooding worker finished while journald read nothing: lines were dropped"
    assert sup.log().count(SLOW) == 1, sup.log()

    journald.reading.set()
    wait_until(done.exists, 30, "the flood to end once journald reads again")
    flood = journald.wait_messages(lambda m: sum(x.startswith(b"flood ") for x in m) >= n, 30,
                                   f"{n} flood lines")
    numbers = [int(x.split()[1]) for x in flood if x.startswith(b"flood ")]
    assert numbers == list(range(1, n + 1)), "lines lost, repeated or out of order"
    calm = {int(x.split()[1]) for x in journald.messages() if x.startswith(b"calm ")}
    assert {victim, st["slots"][1]["pid"]} <= calm, calm


@pytest.mark.log_expected(SLOW)
def test_last_lines_reach_journald_after_stop(journald, supervisor, tmp_path):
    """What a worker wrote before it ended, read or still in its pipe when bindonce's loop
    ends, is sent before bindonce exits, journald slow or not; a line without its newline
    goes out as a line."""
    n = 3000
    script = f'seq -f "last %.0f" 1 {n}; printf "no newline"; exec sleep 1000'
    journald.reading.clear()
    sup = start(supervisor(), journald.dir, ["--name", NAME], script)
    wait_until(lambda: SLOW in sup.log(), 10, "the journald-is-slow warning")
    sup.proc.send_signal(signal.SIGTERM)
    # bindonce's loop is over once it says "stopped"; journald reads only from then on.
    wait_until(lambda: "<6>stopped\n" in sup.log(), 10, "bindonce to stop its worker")
    journald.reading.set()
    assert sup.wait_exit(20) == 0, sup.log()
    msgs = journald.messages()
    assert [m for m in msgs if m.startswith(b"last ")] == [b"last %d" % i for i in range(1, n + 1)]
    assert msgs[-1] == b"no newline", msgs[-3:]


def test_last_lines_of_a_worker_that_exits(journald, supervisor):
    """A worker that writes and exits at once: its pipe is read to its end, though the worker
    is gone (and reaped) before bindonce has read it all; bindonce then exits with it."""
    n = 2000
    sup = start(supervisor(), journald.dir, ["--name", NAME, "--restart", "no"],
                f'seq -f "bye %.0f" 1 {n}; exit 0')
    assert sup.wait_exit(20) == 0, sup.log()
    msgs = [m for m in journald.messages() if m.startswith(b"bye ")]
    assert msgs == [b"bye %d" % i for i in range(1, n + 1)]


def test_without_cap_sys_admin_entries_are_bindonces(journald, supervisor):
    """Without CAP_SYS_ADMIN the kernel refuses a worker's pid as credentials: bindonce says so
    once and sends as itself (journald records bindonce's _PID); SYSLOG_PID still names the
    worker."""
    drop = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"]
    sup = start(supervisor(), journald.dir, ["-w", "2", "--name", NAME], 'echo "pid $$"; exec sleep 1000', drop)
    st = wait_status(sup, all_up(2), 10, "2 workers")
    journald.wait_messages(lambda m: len(m) >= 2, 10, "2 entries")
    pids = {s["pid"] for s in st["slots"]}
    for fields, sender, _, _ in journald.snapshot():
        pid = int(fields["MESSAGE"][0].split()[-1])
        assert pid in pids
        assert fields["SYSLOG_PID"] == [str(pid).encode()]
        assert sender == sup.pid, "sent as bindonce"
    assert sup.log().count("lacks CAP_SYS_ADMIN") == 1, sup.log()


def test_journald_unreachable_workers_write_to_bindonces_output(supervisor, tmp_path):
    """No journald socket at start: bindonce says so once, and the workers write to
    bindonce's own stdout and stderr, as they would without the journal."""
    empty = Path(tempfile.mkdtemp(prefix="bo-jd-", dir="/tmp"))
    try:
        sup = start(supervisor(), empty, ["--name", NAME],
                    'echo "to stdout $$"; echo "to stderr $$" >&2; exec sleep 1000')
        st = wait_status(sup, all_up(1), 10, "1 worker")
        pid = st["slots"][0]["pid"]
        wait_until(lambda: f"to stderr {pid}\n" in sup.log(), 10, "the worker's line on bindonce's stderr")
        wait_until(lambda: f"to stdout {pid}\n" in sup.stdout_path.read_text(), 10,
                   "the worker's line on bindonce's stdout")
        assert sup.log().count("journald cannot be reached") == 1, sup.log()
    finally:
        shutil.rmtree(empty, ignore_errors=True)


def ctl(sup, *args):
    return subprocess.run([BINDONCE, "ctl", "--control", str(sup.control_path), *args],
                          capture_output=True, text=True, timeout=30)


def test_pipes_cross_an_upgrade_in_place(journald, supervisor):
    """The workers' pipes cross an upgrade in place under the journal too: the same workers
    go on, and each one's numbered lines arrive without a gap, with their slot, before and
    after the exec."""
    sup = start(supervisor(), journald.dir, ["-w", "2", "--name", NAME],
                'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo "tick $$ $i"; sleep 0.01; done')
    st = wait_status(sup, all_up(2), 10, "2 workers")
    slot_of = {s["pid"]: s["slot"] for s in st["slots"]}
    journald.wait_messages(lambda m: len(m) >= 10, 10, "ticks before the upgrade")
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr + sup.log()
    after = len(journald.messages())
    journald.wait_messages(lambda m: len(m) >= after + 20, 10, "ticks after the upgrade")
    st = wait_status(sup, all_up(2), 10, "2 workers")
    assert {s["pid"]: s["slot"] for s in st["slots"]} == slot_of, "the same workers, in the same slots"
    ticks = {}
    for fields, sender, _, _ in journald.snapshot():
        _, pid, n = fields["MESSAGE"][0].split()
        pid = int(pid)
        assert fields["BINDONCE_SLOT"] == [str(slot_of[pid]).encode()] and sender == pid, fields
        ticks.setdefault(pid, []).append(int(n))
    for pid, numbers in ticks.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"worker {pid}: lines lost across the exec"
    assert "upgrade: executing" in sup.log() and "upgrade: journald has no room" not in sup.log()


@pytest.mark.log_expected(r"journald refuses the workers' output")
def test_upgrade_without_journald_keeps_reading_the_pipes(journald, supervisor):
    """journald gone when the new bindonce takes over: the pipes of the running workers are
    still read (else their next write would kill them with SIGPIPE), and their lines go to
    bindonce's standard output, prefixed with slot and pid."""
    sup = start(supervisor(), journald.dir, ["-w", "2", "--name", NAME],
                'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo "tick $$ $i"; sleep 0.01; done')
    st = wait_status(sup, all_up(2), 10, "2 workers")
    slot_of = {s["pid"]: s["slot"] for s in st["slots"]}
    journald.wait_messages(lambda m: len(m) >= 10, 10, "ticks before the upgrade")
    journald.close()                    # the socket file goes: connect() fails from now on
    r = ctl(sup, "upgrade")
    assert r.returncode == 0, r.stderr + sup.log()
    for pid, slot in slot_of.items():
        wait_until(lambda: f"[slot {slot} pid {pid}] tick {pid} " in sup.stdout_path.read_text(), 10,
                   f"worker {pid}'s lines on bindonce's stdout after the upgrade")
    st = wait_status(sup, all_up(2), 10, "2 workers")
    assert {s["pid"]: s["slot"] for s in st["slots"]} == slot_of, "the same workers, alive"
    assert sup.log().count("journald cannot be reached") == 1, sup.log()
