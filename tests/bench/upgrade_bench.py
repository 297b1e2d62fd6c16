#!/usr/bin/python3
"""Upgrade in place, measured (bindonce(1) UPGRADE IN PLACE; issue 11).

For 4 and for 1,000 workers: N upgrades in a row, alternately by a request written to
the control socket and by the `bindonce ctl upgrade` command, each timed from the request
(or from starting ctl) to the answer, which the new process sends once it has taken over,
with the control socket in hand. bindonce's own log splits each upgrade into the
check of the new binary (`upgrade: checking` -> `upgrade: executing`) and the exec with
the takeover (`executing` -> `upgraded in place`). With 4 workers a classifying load runs
throughout and every failed connection is counted. Medians (and max), never pass/fail.

    BINDONCE=build/bindonce TESTWORKER=build/testworker /usr/bin/python3 tests/bench/upgrade_bench.py [-n 20]
        [--workers 4 1000] [--rounds R] [--no-load]

--rounds R runs the whole thing R times (a fresh bindonce each time) and ends with the
median of the R medians, for a machine shared with other work.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from loadclient import LoadClient  # noqa: E402
from testlib import free_tcp_port as free_port  # noqa: E402

BINDONCE = os.environ.get("BINDONCE") or str(REPO / "build" / "bindonce")
TESTWORKER = os.environ.get("TESTWORKER") or str(REPO / "build" / "testworker")


def log_time(line):
    return datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def ctl(exe, control, *args):
    return subprocess.run([exe, "ctl", "--control", control, *args], capture_output=True, text=True, timeout=60)


def request(control, line):
    """One control request on a socket of our own; the answer, until EOF."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(control)
        s.sendall(line)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def wait_ready(exe, control, n, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = ctl(exe, control, "status")
        if r.returncode == 0 and f" {n}/{n} workers ready" in r.stdout:
            return
        time.sleep(0.1)
    raise SystemExit(f"{n} workers not ready within {timeout} s")


def phases(log):
    """(check, takeover) in ms for each upgrade, from bindonce's log."""
    out, checking, executing = [], None, None
    for line in log.splitlines():
        if "upgrade: checking" in line:
            checking = log_time(line)
        elif "upgrade: executing" in line:
            executing = log_time(line)
        elif "upgraded in place" in line and checking and executing:
            out.append(((executing - checking) * 1000, (log_time(line) - executing) * 1000))
            checking = executing = None
    return out


def run(workers, n, tmp, with_load=True):
    exe = str(tmp / "bindonce")
    shutil.copy2(BINDONCE, exe)
    control = str(tmp / f"ctl-{workers}.sock")
    port = free_port()
    command = [TESTWORKER] if workers <= 64 else ["/usr/bin/sleep", "1000000"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET"))}
    env["TW_DIR"] = str(tmp)
    logf = open(tmp / f"bindonce-{workers}.log", "w")
    proc = subprocess.Popen([exe, "--control", control, "-w", str(workers), "-l", f"127.0.0.1:{port}", "--", *command],
                            stdout=logf, stderr=logf, env=env)
    load = None
    try:
        wait_ready(exe, control, workers)
        if workers <= 64 and with_load:
            load = LoadClient(("127.0.0.1", port), threads=4, duration=120).start()
        fds_before = len(os.listdir(f"/proc/{proc.pid}/fd"))
        times, raw = [], []
        for i in range(n):
            if i % 2:
                # The request on the control socket itself: no ctl process to start.
                t0 = time.monotonic()
                answer = request(control, b"upgrade\n")
                raw.append((time.monotonic() - t0) * 1000)
                if not answer.startswith(b"OK\nupgraded to"):
                    raise SystemExit(f"upgrade failed: {answer!r}")
                continue
            t0 = time.monotonic()
            r = ctl(exe, control, "upgrade")
            times.append((time.monotonic() - t0) * 1000)
            if r.returncode != 0:
                raise SystemExit(f"upgrade failed: {r.stderr}")
        time.sleep(0.2)
        fds_after = len(os.listdir(f"/proc/{proc.pid}/fd"))
        res = load.stop() if load else None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        logf.close()
    split = phases((tmp / f"bindonce-{workers}.log").read_text())
    print(f"{workers} workers, {n} upgrades: the request answered by the new process median "
          f"{statistics.median(raw):.1f} ms (max {max(raw):.1f}), with the ctl process "
          f"median {statistics.median(times):.1f} ms (max {max(times):.1f}); "
          f"check median {statistics.median(c for c, _ in split):.1f} ms, "
          f"exec and takeover median {statistics.median(t for _, t in split):.1f} ms; "
          f"bindonce fds {fds_before} -> {fds_after}")
    if res:
        failed = res.attempts - res.ok
        print(f"  load during the upgrades: {res.attempts} connections, failed {failed}, "
              f"refused {res.counts['refused']}")
    sys.stdout.flush()
    return statistics.median(raw), statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--workers", type=int, nargs="*", default=[4, 1000])
    p.add_argument("--no-load", action="store_true", help="no load during the upgrades of few workers")
    p.add_argument("--rounds", type=int, default=1, help="the whole run this many times, then the median of medians")
    a = p.parse_args()
    medians = {w: [] for w in a.workers}
    for _ in range(a.rounds):
        for w in a.workers:
            with tempfile.TemporaryDirectory(prefix="bo-upg-") as d:
                medians[w].append(run(w, a.n, Path(d), not a.no_load))
    if a.rounds > 1:
        for w, m in medians.items():
            print(f"{w} workers, {a.rounds} rounds of {a.n} upgrades: median of the round medians "
                  f"{statistics.median(r for r, _ in m):.1f} ms (rounds: {', '.join(f'{r:.1f}' for r, _ in m)}), "
                  f"with the ctl process {statistics.median(c for _, c in m):.1f} ms")


if __name__ == "__main__":
    main()
