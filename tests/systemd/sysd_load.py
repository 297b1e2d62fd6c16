"""The connection-classifying load client, as the systemd tests use it.

The client itself is tests/integration/loadclient.py (LoadClient, one connection per
request, every attempt in exactly one class); this module gives it a validator for the
example httpd's answer and a small interface. When that module is absent (this suite
copied alone), a minimal client of the same classes below takes its place.

Used from OUTSIDE the container: the container shares the host's network, so its
127.0.0.1 is ours. Bounded: every request has timeouts, and a run stops by itself after
max_seconds even if nobody calls stop().
"""

import collections
import errno
import os
import re
import socket
import sys
import threading
import time

CLASSES = ("ok", "refused", "connect_timeout", "reset_before_response",
           "eof_before_response", "reset_mid_response", "response_timeout", "bad_payload",
           "client_error")

BODY_RE = re.compile(rb"hello from worker (\d+) \(pid (\d+)\)\n\Z")
HTTPD_RE = re.compile(rb"\AHTTP/1\.1 200 OK\r\n(?:[^\r\n]*\r\n)*?\r\n"
                      rb"hello from worker (\d+) \(pid (\d+)\)\n\Z")
REQUEST = b"GET / HTTP/1.0\r\nHost: bindonce-test\r\n\r\n"

_INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration")
try:
    sys.path.insert(0, _INTEGRATION)
    import loadclient as _lc          # noqa: E402
    if not hasattr(_lc, "LoadClient"):
        _lc = None
except ImportError:
    _lc = None
finally:
    sys.path.remove(_INTEGRATION)


def httpd_validator(data):
    """The worker pid of a valid example-httpd answer (with a matching Content-Length)."""
    m = HTTPD_RE.match(data)
    if not m:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    cl = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if not cl or int(cl.group(1)) != len(body):
        return None
    return int(m.group(2))


def _addr(host, port):
    """(host, port) for TCP; a unix socket path when port is None."""
    return host if port is None else (host, port)


def _request_once_minimal(host, port, connect_timeout=2.0, response_timeout=5.0):
    """One connection, one request (fallback client). Returns (class, worker pid, detail)."""
    s = socket.socket(socket.AF_UNIX if port is None else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(connect_timeout)
        try:
            s.connect(_addr(host, port))
        except ConnectionRefusedError:
            return "refused", None, ""
        except FileNotFoundError:
            return "refused", None, "ENOENT (socket file gone)"
        except socket.timeout:
            return "connect_timeout", None, ""
        except (ConnectionResetError, ConnectionAbortedError) as e:
            return "reset_before_response", None, "connect: %s" % e
        except OSError as e:
            return "client_error", None, "connect: %s" % e
        s.settimeout(response_timeout)
        try:
            s.sendall(REQUEST)
        except OSError as e:
            return "reset_before_response", None, "send: %s" % e
        data = b""
        deadline = time.monotonic() + response_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "response_timeout", None, repr(data[:80])
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return "response_timeout", None, repr(data[:80])
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                    return ("reset_mid_response" if data else "reset_before_response"), None, ""
                return "client_error", None, str(e)
            if not chunk:
                break
            data += chunk
        if not data:
            return "eof_before_response", None, ""
        pid = httpd_validator(data)
        if pid is None:
            return "bad_payload", None, repr(data[:200])
        return "ok", pid, ""
    finally:
        s.close()


def request_once(host, port, connect_timeout=2.0, response_timeout=5.0):
    """One request to the example httpd: (class, worker pid or None, detail).
    port None: host is the path of a unix socket."""
    if _lc:
        return _lc.request_once(_addr(host, port), request=REQUEST, connect_timeout=connect_timeout,
                                response_timeout=response_timeout, validator=httpd_validator)
    return _request_once_minimal(host, port, connect_timeout, response_timeout)


class Load:
    """Threads sending requests back to back until stop(); counts() etc. after stop().
    port None: host is the path of a unix socket."""

    def __init__(self, host, port, threads=4, max_seconds=120,
                 connect_timeout=2.0, response_timeout=5.0):
        self.host, self.port = host, port
        self.nthreads, self.max_seconds = threads, max_seconds
        self.connect_timeout, self.response_timeout = connect_timeout, response_timeout
        self._client = None
        self._results = []              # fallback client: (monotonic time, class, pid, detail)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._counts = None

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            r = _request_once_minimal(self.host, self.port, self.connect_timeout,
                                      self.response_timeout)
            with self._lock:
                self._results.append((t,) + r)

    def start(self):
        if _lc:
            self._client = _lc.LoadClient(_addr(self.host, self.port), threads=self.nthreads,
                                          duration=self.max_seconds, request=REQUEST,
                                          connect_timeout=self.connect_timeout,
                                          response_timeout=self.response_timeout,
                                          validator=httpd_validator)
            self._client.start()
            return self
        for _ in range(self.nthreads):
            th = threading.Thread(target=self._run, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self):
        if self._client:
            self._client.stop(self.connect_timeout + self.response_timeout + 10)
        else:
            self._stop.set()
            for th in self._threads:
                th.join(self.connect_timeout + self.response_timeout + 5)
        return self.counts()

    def counts(self):
        c = collections.Counter({k: 0 for k in CLASSES})
        if self._client:
            c.update(self._client.result.counts)
        else:
            with self._lock:
                c.update(r[1] for r in self._results)
        return c

    def failures(self):
        if self._client:
            return list(self._client.result.failures)
        with self._lock:
            return [(r[0], r[1], r[3]) for r in self._results if r[1] != "ok"]

    def pids(self):
        """The worker pids that answered."""
        if self._client:
            return set(self._client.result.answered)
        with self._lock:
            return {r[2] for r in self._results if r[1] == "ok"}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def client_name():
    return "tests/integration/loadclient.py" if _lc else "the minimal client in sysd_load.py"


def summary(counts):
    total = sum(counts.values())
    return "%d attempts: " % total + ", ".join("%s=%d" % (k, counts[k]) for k in CLASSES)
