"""--balance reuseport: a SO_REUSEPORT socket per worker slot, steered by bindonce."""

import socket
import statistics
import threading

import pytest

from conftest import EXAMPLE_HTTPD, proc_fds, read_to_eof
from testlib import WORKER_DEATH, alive, httpd_answer, fd_inode, listening_inodes, monotonic, wait_until


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
    ident = httpd_answer(data)
    return ident[1] if ident else "bad_payload"


def reuseport(bindonce, workers, command, *args):
    b = bindonce(["--balance", "reuseport", "-w", str(workers), *args], command)
    b.wait_status(lambda s: s["ready"] == workers, 10, "%d workers ready" % workers)
    return b


def test_each_slot_gets_its_own_socket_and_an_even_share(bindonce):
    b = reuseport(bindonce, 4, [EXAMPLE_HTTPD])
    # Four listening sockets on one port, one per slot: each worker's fd 3 is another
    # socket, each of them a listener on our port, and bindonce holds them all.
    workers = [s["pid"] for s in b.status()["slots"]]
    inodes = [fd_inode(pid, 3) for pid in workers]
    assert None not in inodes and len(set(inodes)) == 4, inodes
    assert set(inodes) == listening_inodes(b.port), (inodes, listening_inodes(b.port))
    held = {fd_inode(b.pid, fd) for fd in proc_fds(b.pid)}
    assert set(inodes) <= held, "bindonce does not hold every slot's socket"
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
    assert {0, 1, 3} <= set(answers)


def test_scale_down_under_load_drains_and_closes_and_loses_nothing(bindonce):
    """Scaling down in reuseport mode takes the surplus slots' sockets out of the group,
    lets their workers drain them, then closes them: no connection is lost, and the
    port has 2 listeners, then 3 again after a scale up."""
    b = reuseport(bindonce, 4, [EXAMPLE_HTTPD])
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(results) < 50000:
            t = monotonic()
            results.append((t, get(b.port)))

    def served_since(t):
        return sum(1 for t0, a in list(results) if t0 >= t and isinstance(a, int))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: served_since(0) >= 100, 10, "100 answers before the scale down")
        pids = {s["slot"]: s["pid"] for s in b.status()["slots"]}
        t_down = monotonic()
        assert b.ctl("scale", "2").returncode == 0
        # Drained and closed: the surplus workers are gone, their sockets too.
        b.wait_status(lambda s: len(s["slots"]) == 2 and s["ready"] == 2, 10, "2 slots left")
        wait_until(lambda: not any(alive(pids[s]) for s in (2, 3)), 10, "the surplus workers to exit")
        wait_until(lambda: len(listening_inodes(b.port)) == 2, 10,
                   lambda: "2 listeners on the port: %s" % listening_inodes(b.port))
        t_drained = monotonic()
        during = sum(1 for t0, a in list(results) if t_down <= t0 <= t_drained)
        wait_until(lambda: served_since(t_drained) >= 100, 10, "100 answers after the drain")

        assert b.ctl("scale", "3").returncode == 0
        b.wait_status(lambda s: s["ready"] == 3, 10, "3 workers ready")
        wait_until(lambda: len(listening_inodes(b.port)) == 3, 10, "3 listeners on the port")
        t_up = monotonic()
        wait_until(lambda: served_since(t_up) >= 100, 10, "100 answers after the scale up")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    failures = [a for _, a in results if not isinstance(a, int)]
    assert failures == [], "%d failed of %d: %r" % (len(failures), len(results), failures[:5])
    assert during >= 10, "only %d requests overlapped the scale down: the load proves little" % during
    assert {a for t0, a in results if t0 > t_drained + 0.5} - {0, 1, 2} == set()


def test_unix_sockets_stay_shared_with_a_notice(bindonce, short_dir):
    """BALANCING: in reuseport mode an Internet socket gets one socket per slot, a unix
    socket stays one socket shared by every worker; the log and `status --json` say so."""
    path = str(short_dir / "u.sock")
    b = bindonce(["--balance", "reuseport", "-w", "3", "-l", path], ["sleep", "1000"])
    st = b.wait_status(lambda s: s["ready"] == 3, 10, "3 workers")
    log = b.log()
    assert "balance reuseport: a socket per worker for 1 of 2 addresses" in log, log
    assert "unix sockets, and sockets passed without ReusePort=yes, stay shared by all workers" in log, log
    with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
        migrate = f.read().strip() == "1"
    assert st["balance"] == "reuseport" and st["migrate_req"] is migrate, st
    workers = [s["pid"] for s in st["slots"]]
    # fd 3 (127.0.0.1:PORT, from the harness's -l): one per worker; fd 4 (the unix one): shared.
    assert len({fd_inode(p, 3) for p in workers}) == 3
    assert len({fd_inode(p, 4) for p in workers}) == 1 and None not in {fd_inode(p, 4) for p in workers}
