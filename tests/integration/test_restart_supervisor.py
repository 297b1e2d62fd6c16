"""(c) bindonce stopped and started again at once on the same port, with the port's
connections still in TIME_WAIT: the new bindonce binds and serves."""

import subprocess

import pytest

from conftest import TESTWORKER, time_wait_count
from loadclient import request_once, run_load


def test_immediate_restart_with_time_wait(supervisor, free_port):
    port = free_port()
    args = ["-w", "2", "-l", f"127.0.0.1:{port}"]
    first = supervisor("first").start(args, [TESTWORKER], wait_workers=2)

    # Completed connections: the worker closes first, so TIME_WAIT sits on our port.
    res = run_load(("127.0.0.1", port), threads=4, max_requests=50, duration=10)
    assert res.ok == 50, res.summary()
    tw = time_wait_count(port)
    if tw == 0:  # cross-check with ss, in case /proc/net/tcp is filtered
        ss = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( sport = :{port} )"],
                            capture_output=True, text=True, timeout=10)
        tw = len([l for l in ss.stdout.splitlines() if l.strip()])
    if tw == 0:
        total, limit = time_wait_count(None), _max_tw_buckets()
        if limit and total >= limit * 0.9:
            pytest.skip(f"the kernel's TIME_WAIT table is full ({total} of {limit}, "
                        f"net.ipv4.tcp_max_tw_buckets): no TIME_WAIT can be made")
    assert tw > 0, f"no TIME_WAIT on port {port}: the test cannot show what it means to"

    assert first.stop() == 0
    second = supervisor("second").start(args, [TESTWORKER], wait_workers=2)
    assert time_wait_count(port) > 0, "TIME_WAIT gone before the restart: test proves nothing"
    cls, ident, detail = request_once(("127.0.0.1", port))
    assert cls == "ok", f"{cls}: {detail}; stderr:\n{second.log()}"
    assert ident[0] in {r["pid"] for r in second.reports()}
    assert second.stop() == 0


def _max_tw_buckets():
    try:
        with open("/proc/sys/net/ipv4/tcp_max_tw_buckets") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
