#!/usr/bin/python3
"""The developer's loop, measured (bindonce(1) DEVELOPMENT LOOP; issue 12).

Time from a file's write to the first answer from the new code, under
`bindonce --watch DIR -w 1`, for two workers:

- the C example (build/httpd): the "save" is a new build of the binary copied over the
  old one (write a temporary file, rename it, as `install` and editors do); new code is
  an answer from a new pid;
- the Python example (docs/examples/python/server.py): the save rewrites MESSAGE; new
  code is the new text.

Beside it, for reference, the worker's own start time: under bindonce, from SIGKILL to
the first answer of the next pid (C), or a plain `python3 server.py` from exec to its
first answer (Python). The target of issue 12 is the start time plus
less than 150 ms, debounce (0.1 s) included. A client asks every 2 ms; medians and max
of N saves; never pass/fail.

    BINDONCE=build/bindonce EXAMPLE_HTTPD=build/httpd /usr/bin/python3 tests/bench/watch_bench.py [-n 10]
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from testlib import free_tcp_port  # noqa: E402

BINDONCE = os.environ.get("BINDONCE") or str(REPO / "build" / "bindonce")
HTTPD = os.environ.get("EXAMPLE_HTTPD") or str(REPO / "build" / "httpd")
PY = "/usr/bin/python3"


def get(port, timeout=2.0):
    """The body of one answer, or None (refused, reset, timed out)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    head, sep, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace") if sep else None


def until(pred, timeout=30.0, every=0.002):
    """Seconds until pred() is true, polled every 2 ms; None past the timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(every)
    return None


def save(path, data):
    tmp = path.with_name("." + path.name + ".new")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)


def start(argv, port, log):
    p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    if until(lambda: get(port) is not None, 30) is None:
        p.kill()
        sys.exit("watch_bench: %s never answered" % argv)
    return p


def stop(p):
    p.terminate()
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def pid_of(body):
    m = re.search(r"pid (\d+)", body or "")
    return m.group(1) if m else None


def bench_c(n, workdir, log):
    app = workdir / "c"
    app.mkdir()
    exe = app / "httpd"
    shutil.copy(HTTPD, exe)
    port = free_tcp_port()
    p = start([BINDONCE, "-l", "127.0.0.1:%d" % port, "-w", "1", "--control", "none", "--watch", str(app),
               "--", str(exe)], port, log)
    saves, starts = [], []
    try:
        for _ in range(n):
            old = pid_of(get(port))
            save(exe, Path(HTTPD).read_bytes())
            saves.append(until(lambda: pid_of(get(port)) not in (None, old)))
            time.sleep(1.5)     # let the roll finish (--min-ready 1 s) before the next save
        for _ in range(n):
            # The worker's own start, as bindonce does it: SIGKILL, then the first answer
            # of the next pid (bindonce restarts a lone crash at once).
            old = pid_of(get(port))
            os.kill(int(old), signal.SIGKILL)
            starts.append(until(lambda: pid_of(get(port)) not in (None, old)))
            time.sleep(1.2)     # a stable run, so that the next kill is not an early death
    finally:
        stop(p)
    return saves, starts


def bench_python(n, workdir, log):
    app = workdir / "py"
    app.mkdir()
    src = app / "server.py"
    text = (REPO / "docs/examples/python/server.py").read_text()
    src.write_text(text)
    port = free_tcp_port()
    p = start([BINDONCE, "-l", "127.0.0.1:%d" % port, "-w", "1", "--control", "none", "--watch", str(app),
               "--", PY, str(src)], port, log)
    saves = []
    try:
        for i in range(n):
            want = "saved %d\n" % i
            save(src, text.replace("hello from the python example\\n", want.replace("\n", "\\n")).encode())
            saves.append(until(lambda: get(port) == want))
            time.sleep(1.5)
    finally:
        stop(p)
    # The server alone: exec to first answer.
    starts = []
    for _ in range(n):
        port = free_tcp_port()
        plain = text.replace('("127.0.0.1", 8000)', '("127.0.0.1", %d)' % port)
        (app / "alone.py").write_text(plain)
        t0 = time.monotonic()
        q = subprocess.Popen([PY, str(app / "alone.py")], stdout=log, stderr=log)
        until(lambda: get(port, 0.2) is not None, 30, 0.001)
        starts.append(time.monotonic() - t0)
        q.kill()
        q.wait()
    return saves, starts


def row(name, saves, starts):
    ok = [s for s in saves if s is not None]
    ms = lambda v: "%.0f ms" % (v * 1000)
    s_med, st_med = statistics.median(ok), statistics.median(starts)
    print("| %s | %s (max %s, %d of %d seen) | %s | %s |" % (
        name, ms(s_med), ms(max(ok)), len(ok), len(saves), ms(st_med), ms(s_med - st_med)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bo-watch-bench-") as d:
        workdir = Path(d)
        with open(workdir / "log", "wb") as log:
            c = bench_c(args.n, workdir, log)
            py = bench_python(args.n, workdir, log)
    print("| worker | save to first new answer (median) | worker start alone (median) | difference |")
    print("|---|---|---|---|")
    row("C example (build/httpd)", *c)
    row("Python example (server.py)", *py)


if __name__ == "__main__":
    main()
