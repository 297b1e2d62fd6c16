"""--balance reuseport: a SO_REUSEPORT socket per worker slot, steered by bindonce."""

import re
import socket
import statistics
import threading
import time

import pytest

from conftest import EXAMPLE_HTTPD, proc_fds, read_to_eof
from testlib import WORKER_DEATH


def get(port, timeout=2.0):
    """One request on a new connection: the slot that answered, or an error class."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = read_to_eof(s)
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error:%s" % e.__class__.__name__
    m = re.search(rb"worker (\d+) \(pid", data)
    return int(m.group(1)) if m else "bad_payload"


def reuseport(bindonce, workers, command, *args):
    b = bindonce(["--balance", "reuseport", "-w", str(workers), *args], command)
    b.wait_status(lambda s: s["ready"] == workers, 10, "%d workers ready" % workers)
    return b


def test_each_slot_gets_its_own_socket_and_an_even_share(bindonce):
    b = reuseport(bindonce, 4, [EXAMPLE_HTTPD])
    # Four listening sockets on one port: one per slot, each held by bindonce.
    sockets = {target for target, _ in proc_fds(b.proc.pid).values() if target.startswith("socket:")}
    assert len(sockets) >= 4 + 2, sockets  # + notify and control sockets
    answers = [get(b.port) for _ in range(800)]
    counts = [answers.count(slot) for slot in range(4)]
    assert sum(counts) == 800, set(a for a in answers if not isinstance(a, int))
    cv = statistics.pstdev(counts) / statistics.mean(counts)
    assert cv < 0.15, counts


@pytest.mark.log_expected(WORKER_DEATH)
def test_a_crash_looping_slot_gets_no_connections(bindonce):
    # Slot 2 dies at start, forever: its socket must not collect connections that would
    # wait for a worker that never comes.
    b = bindonce(["--balance", "reuseport", "-w", "4", "--give-up", "0"],
                 ["sh", "-c", '[ "$BINDONCE_WORKER" = 2 ] && exit 1; exec %s' % EXAMPLE_HTTPD])
    # Slot 2 is steered out after its second early death (one may be bad luck).
    b.wait_status(lambda s: s["ready"] >= 3 and s["slots"][2]["restarts"] >= 2, 10,
                  "the 3 healthy workers ready and slot 2 steered out")
    answers = [get(b.port, timeout=1.0) for _ in range(300)]
    failures = [a for a in answers if not isinstance(a, int)]
    assert failures == [], failures[:5]
    assert 2 not in answers
    assert {0, 1, 3} <= set(answers)


def test_scale_down_under_load_loses_nothing(bindonce):
    b = reuseport(bindonce, 4, [EXAMPLE_HTTPD])
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
    failures = [a for a in results if not isinstance(a, int)]
    assert len(results) > 200
    assert failures == [], "%d failed of %d: %r" % (len(failures), len(results), failures[:5])
