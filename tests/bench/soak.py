#!/usr/bin/python3
"""TESTING.md scenario 12, the soak: bindonce under load for a long while, with a worker
SIGKILLed every second and a rolling restart every 10 seconds. A measurement, never a
pass/fail test: it prints the supervisor's memory and fd count over time (they should
stay flat) and the classified connection attempts (refused and unexplained should be 0).

    make soak                       # 30 minutes
    make soak SOAK_MINUTES=2        # a short one

Loopback only; every loop is bounded by the duration; it ends only what it started.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from loadclient import LoadClient  # noqa: E402
# Below the ephemeral range (f74478d): a port from bind(0) may be taken by a client's source port.
from testlib import free_tcp_port as free_port  # noqa: E402


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read().rsplit(")", 1)[1].split()
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "anon_kb": int(fields["RssAnon"].split()[0]),
        "fds": len(os.listdir("/proc/%d/fd" % pid)),
        "cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"),
    }


def counts(tw_dir, pid):
    try:
        with open(os.path.join(tw_dir, "count-%d" % pid)) as f:
            fields = dict(kv.split("=") for kv in f.read().split())
        return int(fields["accepted"]), int(fields["completed"]), fields["window"]
    except FileNotFoundError:
        return 0, 0, "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "30")))
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    bindonce = os.environ.get("BINDONCE", os.path.join(HERE, "..", "..", "build", "bindonce"))
    testworker = os.environ.get("TESTWORKER", os.path.join(HERE, "..", "..", "build", "testworker"))

    scratch = tempfile.mkdtemp(prefix="bindonce-soak-")
    tw_dir = os.path.join(scratch, "tw")
    os.mkdir(tw_dir)
    control = os.path.join(scratch, "ctl.sock")
    port = free_port()
    log = open(os.path.join(scratch, "bindonce.log"), "w")
    env = dict(os.environ, TW_DIR=tw_dir)
    sup = subprocess.Popen([bindonce, "-l", "127.0.0.1:%d" % port, "-w", str(args.workers), "--control", control,
                            "--", testworker, "--delay-ms", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def status():
        r = subprocess.run([bindonce, "ctl", "--control", control, "status", "--json"],
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    deadline = time.monotonic() + 10
    while not (status() or {}).get("ready") == args.workers:
        if time.monotonic() > deadline or sup.poll() is not None:
            sys.exit("bindonce did not start; see %s" % scratch)
        time.sleep(0.1)

    duration = args.minutes * 60
    load = LoadClient(("127.0.0.1", port), threads=4, duration=duration + 5)
    load.start()
    start = time.monotonic()
    baseline = proc_status(sup.pid)
    samples = [(0.0, baseline)]
    killed, reloads, reload_failures = [], 0, 0
    next_kill, next_reload, next_sample = start + 1, start + 10, start + 10
    rng = random.Random(12)
    try:
        while time.monotonic() - start < duration:
            now = time.monotonic()
            if now >= next_kill:
                next_kill += 1
                st = status()
                pids = [s["pid"] for s in (st or {}).get("slots", []) if s["pid"]]
                if pids:
                    victim = rng.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        killed.append(victim)
                    except ProcessLookupError:
                        pass
            if now >= next_reload:
                next_reload += 10
                reloads += 1
                r = subprocess.run([bindonce, "ctl", "--control", control, "reload"],
                                   capture_output=True, text=True, timeout=60)
                reload_failures += r.returncode != 0
            if now >= next_sample:
                next_sample += 10
                samples.append((now - start, proc_status(sup.pid)))
            time.sleep(0.02)
    finally:
        result = load.stop(timeout=30)
        final = proc_status(sup.pid)
        st = status()
        sup.send_signal(signal.SIGTERM)
        code = sup.wait(timeout=60)
        log.close()

    low = high = 0
    for pid in killed:
        a, c, w = counts(tw_dir, pid)
        low += a - c - (1 if w == "s" else 0)
        high += a - c + (1 if w == "a" else 0)
    failed = result.attempts - result.ok
    rss = [s["rss_kb"] for _, s in samples]
    anon = [s["anon_kb"] for _, s in samples]
    fds = [s["fds"] for _, s in samples]

    print("soak: %.1f min, %d workers, a SIGKILL every second, a rolling restart every 10 s" % (args.minutes, args.workers))
    print("  kills %d, reloads %d (%d failed), bindonce restarts %s, exit %d" %
          (len(killed), reloads, reload_failures, (st or {}).get("restarts"), code))
    print("  load: %s" % result.summary())
    print("  refused %d; failed %d; casualties of the killed workers %d..%d; unexplained %d..%d" %
          (result.counts["refused"], failed, low, high, failed - high, failed - low))
    print("  bindonce VmRSS kB first/last/max %d/%d/%d; RssAnon kB %d/%d/%d; fds %d/%d/%d; CPU %.2f s" %
          (rss[0], final["rss_kb"], max(rss + [final["rss_kb"]]), anon[0], final["anon_kb"],
           max(anon + [final["anon_kb"]]), fds[0], final["fds"], max(fds + [final["fds"]]),
           final["cpu_s"] - baseline["cpu_s"]))
    print("  samples (s: RssAnon kB, fds): " + " ".join("%d:%d,%d" % (t, s["anon_kb"], s["fds"]) for t, s in samples))
    print("  logs: %s" % scratch)


if __name__ == "__main__":
    main()
