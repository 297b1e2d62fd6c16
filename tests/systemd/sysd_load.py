"""The connection-classifying load client, as the systemd tests use it.

The client itself is tests/integration/loadclient.py (LoadClient, one connection per
request, every attempt in exactly one class); this module gives it a validator for the
example httpd's answer (testlib.httpd_answer, HTTP/1.1, Content-Length) and a small
interface.

Used from OUTSIDE the container: the container shares the host's network, so its
127.0.0.1 is ours. Bounded: every request has timeouts, and a run stops by itself after
max_seconds even if nobody calls stop().
"""

import collections
import os
import re
import sys

CLASSES = ("ok", "refused", "connect_timeout", "reset_before_response",
           "eof_before_response", "reset_mid_response", "response_timeout", "bad_payload",
           "client_error")

REQUEST = b"GET / HTTP/1.0\r\nHost: bindonce-test\r\n\r\n"

# One load client for every suite: tests/integration/loadclient.py.
_INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration")
sys.path.insert(0, _INTEGRATION)
import loadclient as _lc          # noqa: E402
from testlib import free_tcp_port, httpd_answer  # noqa: E402,F401
sys.path.remove(_INTEGRATION)


def httpd_validator(data):
    """The worker pid of a valid example-httpd answer (with a matching Content-Length)."""
    ident = httpd_answer(data)
    if not ident or not data.startswith(b"HTTP/1.1 "):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    cl = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if not cl or int(cl.group(1)) != len(body):
        return None
    return ident[0]


def _addr(host, port):
    """(host, port) for TCP; a unix socket path when port is None."""
    return host if port is None else (host, port)


def request_once(host, port, connect_timeout=2.0, response_timeout=5.0):
    """One request to the example httpd: (class, worker pid or None, detail).
    port None: host is the path of a unix socket."""
    return _lc.request_once(_addr(host, port), request=REQUEST, connect_timeout=connect_timeout,
                            response_timeout=response_timeout, validator=httpd_validator)


class Load:
    """loadclient.LoadClient on the example httpd's answer, until stop(); counts() etc.
    after stop(). port None: host is the path of a unix socket."""

    def __init__(self, host, port, threads=4, max_seconds=120,
                 connect_timeout=2.0, response_timeout=5.0):
        self.host, self.port = host, port
        self.nthreads = threads
        self.connect_timeout, self.response_timeout = connect_timeout, response_timeout
        self._client = _lc.LoadClient(_addr(host, port), threads=threads, duration=max_seconds,
                                      request=REQUEST, connect_timeout=connect_timeout,
                                      response_timeout=response_timeout, validator=httpd_validator)

    def start(self):
        self._client.start()
        return self

    def stop(self):
        self._client.stop(self.connect_timeout + self.response_timeout + 10)
        return self.counts()

    def wait_ok(self, n, timeout=15.0):
        """Wait (bounded) for n more ok answers: the load is flowing now."""
        self._client.wait_ok(n, timeout)

    def attempts_within(self, t0, t1):
        """Attempts in flight at some moment of [t0, t1] (time.monotonic)."""
        return self._client.attempts_within(t0, t1)

    def counts(self):
        c = collections.Counter({k: 0 for k in CLASSES})
        c.update(self._client.result.counts)
        return c

    def failures(self):
        return list(self._client.result.failures)

    def pids(self):
        """The worker pids that answered."""
        return set(self._client.result.answered)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def client_name():
    return "tests/integration/loadclient.py"


def summary(counts):
    total = sum(counts.values())
    return "%d attempts: " % total + ", ".join("%s=%d" % (k, counts[k]) for k in CLASSES)
