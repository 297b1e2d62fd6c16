"""--balance reuseport: a SO_REUSEPORT socket per worker slot, steered by bindonce."""

import re
import signal
import socket
import statistics
import subprocess
import threading
import time

from conftest import BINDONCE, EXAMPLE_HTTPD, free_tcp_port


def get(port, timeout=2.0):
    """One request on a new connection: the slot that answered, or an error class."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error:%s" % e.__class__.__name__
    m = re.search(rb"worker (\d+) \(pid", data)
    return int(m.group(1)) if m else "bad_payload"


class Bindonce:
    def __init__(self, tmp_path, args, command):
        self.port = free_tcp_port()
        self.control = str(tmp_path / "ctl.sock")
        self.log_path = tmp_path / "bindonce.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([BINDONCE, "-l", "127.0.0.1:%d" % self.port, "--control", self.control,
                                      "--balance", "reuseport"] + args + ["--"] + command,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "all" not in self.log_path.read_text() or "ready" not in self.log_path.read_text():
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.02)

    def ctl(self, *args):
        return subprocess.run([BINDONCE, "ctl", "--control", self.control] + list(args),
                              capture_output=True, text=True, timeout=10)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def test_each_slot_gets_its_own_socket_and_an_even_share(tmp_path):
    b = Bindonce(tmp_path, ["-w", "4"], [EXAMPLE_HTTPD])
    try:
        # Four listening sockets on one port: one per slot, each held by bindonce.
        fds = subprocess.run(["ls", "-l", "/proc/%d/fd" % b.proc.pid], capture_output=True, text=True).stdout
        inodes = set(re.findall(r"socket:\[(\d+)\]", fds))
        assert len(inodes) >= 4 + 2, fds  # + notify and control sockets
        answers = [get(b.port) for _ in range(800)]
        counts = [answers.count(slot) for slot in range(4)]
        assert sum(counts) == 800, set(a for a in answers if not isinstance(a, int))
        cv = statistics.pstdev(counts) / statistics.mean(counts)
        assert cv < 0.15, counts
    finally:
        b.close()


def test_a_crash_looping_slot_gets_no_connections(tmp_path):
    # Slot 2 dies at start, forever: its socket must not collect connections that would
    # wait for a worker that never comes.
    b = Bindonce(tmp_path, ["-w", "4", "--give-up", "0"],
                 ["sh", "-c", '[ "$BINDONCE_WORKER" = 2 ] && exit 1; exec %s' % EXAMPLE_HTTPD])
    try:
        answers = [get(b.port, timeout=1.0) for _ in range(300)]
        failures = [a for a in answers if not isinstance(a, int)]
        assert failures == [], failures[:5]
        assert 2 not in answers
        assert {0, 1, 3} <= set(answers)
    finally:
        b.close()


def test_scale_down_under_load_loses_nothing(tmp_path):
    b = Bindonce(tmp_path, ["-w", "4"], [EXAMPLE_HTTPD])
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(results) < 20000:
            results.append(get(b.port))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        assert b.ctl("scale", "2").returncode == 0
        time.sleep(0.5)
        assert b.ctl("scale", "3").returncode == 0
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        b.close()
    failures = [a for a in results if not isinstance(a, int)]
    assert len(results) > 200
    assert failures == [], "%d failed of %d: %r" % (len(failures), len(results), failures[:5])
