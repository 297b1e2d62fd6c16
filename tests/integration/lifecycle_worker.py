#!/usr/bin/python3
"""A worker for the lifecycle and control tests of bindonce (issue 4).

It takes the listening sockets of the systemd protocol (fds 3.., LISTEN_FDS, LISTEN_PID),
serves a one-request-per-connection HTTP answer on each stream socket:

    pid=<pid> slot=<BINDONCE_WORKER> version=<VERSION or the version file>

and speaks sd_notify to $NOTIFY_SOCKET over a raw datagram socket: READY=1 (after an
optional delay), STATUS=..., WATCHDOG=1 every WATCHDOG_USEC/4, STOPPING=1.

Mode, first found wins: a mode file (--mode-file PATH or $LW_MODE_FILE), --mode MODE,
$LW_MODE, "ok". The mode file is read once at start, so a test rewrites it before a reload
to make the reload exec a "new version". A mode is a comma-separated list of:

    ok                      serve, READY=1 at once
    crash-at-start [CODE]   exit CODE (default 3) before READY=1
    never-ready             never send READY=1, never accept (still pings the watchdog)
    slow-ready SEC          send READY=1 after SEC seconds; accept only from then on
    stop-pinging-after SEC [RESUME]
                            stop sending WATCHDOG=1 SEC seconds after start (keeps serving);
                            with RESUME, ping again RESUME seconds after the last ping
    ready-from-child [SEC]  READY=1 comes from a child process (same process group) after SEC
                            (default 0.1), never from the worker itself (--notify-access)
    exit-after SEC [CODE]   serve, then SEC seconds after exec stop as on SIGTERM (the
                            request in hand is finished) and exit CODE (default 0)

A mode-file line "K: MODE" applies to slot K only and wins over a line "gN: MODE", which
applies to the workers of generation N only ($BINDONCE_GENERATION: 0 at start, one more
per reload), and wins over a line without a prefix.

Path "/slow/MS" answers after MS milliseconds (an in-flight request for drain tests).
SIGTERM: stop accepting, finish the request in hand, STOPPING=1, exit 0 (no casualties).

With $LW_EVENTS set, one JSON line per event is appended to that file
(start, ready, pings-stopped, pings-resumed, sigterm, exit), with "t" = CLOCK_MONOTONIC seconds, which
the test process reads on the same clock, and "rt" = the time of day (as in `ctl status`).
"""

import json
import os
import re
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time

SD_LISTEN_FDS_START = 3


def monotonic():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Worker:
    def __init__(self, argv):
        self.pid = os.getpid()
        self.slot = os.environ.get("BINDONCE_WORKER", "?")
        self.events_path = os.environ.get("LW_EVENTS")
        self.stop = threading.Event()      # set by the main thread only
        self.stopping = False              # set by the SIGTERM handler (no locks in there)
        self.ready = threading.Event()
        self.accepted = 0
        self.completed = 0
        self.exit_code = 0
        self.notify_sock = None
        self.notify_addr = None
        self.notify_lock = threading.Lock()
        self.mode_text, self.mode = self.read_mode(argv)
        self.version = self.read_version(argv)

    # ---- configuration -------------------------------------------------------------------

    @staticmethod
    def arg(argv, name):
        for i, a in enumerate(argv):
            if a == name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(name + "="):
                return a[len(name) + 1:]
        return None

    def read_mode(self, argv):
        text = None
        path = self.arg(argv, "--mode-file") or os.environ.get("LW_MODE_FILE")
        if path:
            try:
                with open(path) as f:
                    general, mine, my_gen = None, None, None
                    generation = os.environ.get("BINDONCE_GENERATION", "?")
                    for line in f:
                        line = line.strip()
                        if not line or line.startswith("#"):
                            continue
                        m = re.match(r"^(g?)(\d+)\s*:\s*(.*)$", line)
                        if m and m.group(1):
                            if m.group(2) == generation:
                                my_gen = m.group(3)
                        elif m:
                            if m.group(2) == self.slot:
                                mine = m.group(3)
                        elif general is None:
                            general = line
                    text = next((t for t in (mine, my_gen, general) if t is not None), None)
            except FileNotFoundError:
                pass
        if not text:
            text = self.arg(argv, "--mode") or os.environ.get("LW_MODE") or "ok"
        return text, self.parse_mode(text)

    @staticmethod
    def parse_mode(text):
        mode = {"crash": None, "ready_delay": 0.0, "never_ready": False, "stop_pinging_after": None,
                "resume_pinging": None,
                "ready_from_child": False, "exit_after": None}
        for item in text.split(","):
            words = item.split()
            if not words:
                continue
            name, args = words[0], words[1:]
            if name == "ok":
                pass
            elif name == "crash-at-start":
                mode["crash"] = int(args[0]) if args else 3
            elif name == "never-ready":
                mode["never_ready"] = True
            elif name in ("slow-ready", "ready-delay"):
                mode["ready_delay"] = float(args[0])
            elif name == "stop-pinging-after":
                mode["stop_pinging_after"] = float(args[0])
                mode["resume_pinging"] = float(args[1]) if len(args) > 1 else None
            elif name == "exit-after":
                mode["exit_after"] = (float(args[0]), int(args[1]) if len(args) > 1 else 0)
            elif name == "ready-from-child":
                mode["ready_from_child"] = True
                mode["ready_delay"] = float(args[0]) if args else 0.1
            else:
                sys.exit("lifecycle_worker: unknown mode %r" % item)
        return mode

    @staticmethod
    def age():
        """Seconds since this process was started (exec'd), from /proc/self/stat."""
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")

    def read_version(self, argv):
        path = self.arg(argv, "--version-file") or os.environ.get("LW_VERSION_FILE")
        if path:
            try:
                with open(path) as f:
                    v = f.read().strip()
                if v:
                    return v
            except FileNotFoundError:
                pass
        return os.environ.get("VERSION", "0")

    # ---- events and notifications --------------------------------------------------------

    def event(self, name, **kw):
        if not self.events_path:
            return
        rec = {"event": name, "pid": self.pid, "slot": self.slot, "t": monotonic(), "rt": time.time()}
        rec.update(kw)
        line = (json.dumps(rec) + "\n").encode()
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)  # one write with O_APPEND: lines of concurrent workers never mix
        finally:
            os.close(fd)

    def notify(self, text):
        if self.notify_addr is None:
            addr = os.environ.get("NOTIFY_SOCKET")
            if not addr:
                return
            self.notify_addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with self.notify_lock:
            try:
                self.notify_sock.sendto(text.encode(), self.notify_addr)
            except OSError as e:
                print("lifecycle_worker %d: notify %r: %s" % (self.pid, text, e), file=sys.stderr)

    def notifier(self):
        """READY=1 after the delay, WATCHDOG=1 every WATCHDOG_USEC/4."""
        start = monotonic()
        wd_usec = os.environ.get("WATCHDOG_USEC")
        wd_pid = os.environ.get("WATCHDOG_PID")
        period = None
        if wd_usec and (not wd_pid or wd_pid == str(self.pid)):
            period = int(wd_usec) / 1e6 / 4
        pinging = period is not None
        next_ping = start
        last_ping = last_ping_rt = None
        ready_at = None if self.mode["never_ready"] else start + self.mode["ready_delay"]
        stop_pinging_at = resume_at = None
        if self.mode["stop_pinging_after"] is not None:
            stop_pinging_at = start + self.mode["stop_pinging_after"]
        while not self.stop.is_set():
            now = monotonic()
            if ready_at is not None and now >= ready_at and not self.ready.is_set():
                self.ready.set()
                self.event("ready")  # before READY=1: its "t" is never later than bindonce's view
                if not self.mode["ready_from_child"]:
                    self.notify("READY=1\nSTATUS=serving version=%s mode=%s" % (self.version, self.mode_text))
            if pinging and stop_pinging_at is not None and now >= stop_pinging_at:
                pinging = False
                self.event("pings-stopped", last_ping=last_ping, last_ping_rt=last_ping_rt)
                self.notify("STATUS=no longer pinging the watchdog")
                if self.mode["resume_pinging"] is not None and period is not None:
                    resume_at = (last_ping if last_ping is not None else now) + self.mode["resume_pinging"]
            if resume_at is not None and now >= resume_at:
                resume_at, stop_pinging_at, pinging, next_ping = None, None, True, now
                self.event("pings-resumed")
            if pinging and now >= next_ping:
                self.notify("WATCHDOG=1")
                last_ping = now
                last_ping_rt = time.time()
                next_ping = now + period
            waits = [0.5]
            if ready_at is not None and not self.ready.is_set():
                waits.append(ready_at - now)
            if pinging:
                waits.append(next_ping - now)
                if stop_pinging_at is not None:
                    waits.append(stop_pinging_at - now)
            if resume_at is not None:
                waits.append(resume_at - now)
            self.stop.wait(max(0.0, min(waits)))

    # ---- serving -------------------------------------------------------------------------

    def listeners(self):
        n = 0
        if os.environ.get("LISTEN_PID") == str(self.pid):
            n = int(os.environ.get("LISTEN_FDS", "0"))
        socks = []
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n):
            s = socket.socket(fileno=fd)
            # Never change the blocking mode: the open file description is shared with
            # bindonce and the other workers. accept() below copes with EAGAIN.
            if s.type == socket.SOCK_STREAM:
                # bindonce passes blocking sockets (as systemd does, unless --nonblocking):
                # a worker that loses the race for a connection select() announced to all
                # would sit in accept(), and a SIGTERM there only interrupts it for Python
                # to call it again (PEP 475), so the worker would never stop once the load
                # ends. SO_RCVTIMEO bounds a blocking accept() (EAGAIN after 0.2 s, nothing
                # taken from the queue); only accept() reads it, and only workers accept.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
                socks.append(s)
            else:
                s.detach()
        return socks

    def handle(self, conn):
        conn.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            m = re.match(rb"^[A-Z]+ /slow/(\d+)", data)
            if m:
                time.sleep(int(m.group(1)) / 1000)
            body = ("pid=%d slot=%s version=%s\n" % (self.pid, self.slot, self.version)).encode()
            head = ("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                    "Connection: close\r\n\r\n" % len(body)).encode()
            conn.sendall(head + body)
            self.completed += 1
        except OSError as e:
            print("lifecycle_worker %d: connection: %s" % (self.pid, e), file=sys.stderr)
        finally:
            conn.close()

    def ready_from_child(self):
        """A helper process sends READY=1 and lives on a while (bindonce looks up its
        process group when the message comes). Forked before any thread exists."""
        child = os.fork()
        if child == 0:
            try:
                time.sleep(self.mode["ready_delay"])
                self.notify_addr = None
                self.pid = os.getpid()
                self.notify("READY=1")
                self.event("child-sent-ready", worker=os.getppid())
                time.sleep(1.0)
            finally:
                os._exit(0)
        threading.Thread(target=os.waitpid, args=(child, 0), daemon=True).start()

    def on_sigterm(self, signo, frame):
        if not self.stopping:
            self.stopping = True
            self.event("sigterm")

    def run(self, argv):
        # A watchdog SIGABRT must not leave core files behind.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)       # a signal ends any select() at once
        signal.signal(signal.SIGTERM, self.on_sigterm)
        socks = self.listeners()
        self.event("start", ppid=os.getppid(), mode=self.mode_text, version=self.version,
                   generation=os.environ.get("BINDONCE_GENERATION"),
                   listen_fds=len(socks), pgid=os.getpgid(0))
        if self.mode["crash"] is not None:
            print("lifecycle_worker %d: crashing at start as told" % self.pid, file=sys.stderr)
            os._exit(self.mode["crash"])
        self.notify("STATUS=starting version=%s mode=%s" % (self.version, self.mode_text))
        if self.mode["ready_from_child"]:
            self.ready_from_child()

        t = threading.Thread(target=self.notifier, daemon=True)
        t.start()
        if self.mode["exit_after"] is not None:
            delay, code = self.mode["exit_after"]

            def leave():
                # Like SIGTERM: stop accepting, finish the request in hand, exit with code.
                # SEC counts from exec (the process's start time), not from when Python got
                # here: "crashes 200 ms after it starts" on a loaded machine too.
                time.sleep(max(0.0, delay - self.age()))
                self.event("exit-after", code=code)
                self.exit_code = code
                self.stopping = True
                os.write(wake_w, b"x")
            threading.Thread(target=leave, daemon=True).start()

        while not self.stopping:
            ready = self.ready.is_set()
            r, _, _ = select.select([wake_r] + (socks if ready else []), [], [], 0.2 if ready else 0.02)
            for s in r:
                if s == wake_r:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                    continue
                if self.stopping:
                    break
                try:
                    conn, _ = s.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another worker took it
                self.accepted += 1
                self.handle(conn)  # finished even if SIGTERM comes meanwhile

        self.stop.set()
        t.join()
        self.notify("STOPPING=1")
        self.event("exit", accepted=self.accepted, completed=self.completed)
        return self.exit_code


if __name__ == "__main__":
    sys.exit(Worker(sys.argv[1:]).run(sys.argv[1:]))
