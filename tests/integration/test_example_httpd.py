"""The example worker (docs/examples/httpd.c) under bindonce: every worker serves, and a
SIGTERM stops it cleanly."""

import os
import re

import pytest

from conftest import EXAMPLE_HTTPD, wait_until
from loadclient import run_load

HELLO_RE = re.compile(rb"\AHTTP/1\.[01] 200 OK\r\n(?:[^\r\n]*\r\n)*?\r\n"
                      rb"hello from worker (\d+) \(pid (\d+)\)\n\Z")


def hello_validator(data):
    m = HELLO_RE.match(data)
    return (int(m.group(2)), int(m.group(1))) if m else None


@pytest.mark.skipif(not os.access(EXAMPLE_HTTPD, os.X_OK), reason=f"{EXAMPLE_HTTPD} not built")
def test_example_httpd_serves_from_every_worker(supervisor, free_port):
    port = free_port()
    sup = supervisor().start(["-w", "2", "-l", f"127.0.0.1:{port}"], [EXAMPLE_HTTPD])
    sup.wait_log("worker 1 started", timeout=5)
    seen = set()

    def both_answered():
        res = run_load(("127.0.0.1", port), threads=4, max_requests=40, duration=5,
                       validator=hello_validator)
        assert res.ok == res.attempts, res.summary()
        seen.update(res.answered)
        return {slot for _, slot in seen} == {0, 1}
    wait_until(both_answered, 5, "both httpd workers to answer")
    assert sup.stop() == 0
    assert "exited with status 0" in sup.log()
