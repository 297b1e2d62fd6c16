"""A connection-per-request load client that classifies every attempt.

Every attempt ends in exactly one class (see shared/TESTING.md):

    ok                     a complete, valid response, then EOF
    refused                connect() failed with ECONNREFUSED (or the unix socket file is gone)
    connect_timeout        connect() did not complete in time
    reset_before_response  ECONNRESET/EPIPE before the first byte of the response
    eof_before_response    EOF before the first byte of the response
    reset_mid_response     ECONNRESET after part of the response
    response_timeout       no complete response in time
    bad_payload            EOF after bytes that are not a valid response

plus `client_error` for failures of the client itself (e.g. EADDRNOTAVAIL when it runs out
of ephemeral ports): not a verdict on the server, and tests require it to be 0 so that a
broken client cannot hide a server failure.

The invariant the fault tests check:

    unexplained = (attempts - ok) - casualties == 0   and   refused == 0

Loopback only: addresses are checked before any connection is made.
"""

import ipaddress
import re
import socket
import threading
import time

CLASSES = ("ok", "refused", "connect_timeout", "reset_before_response", "eof_before_response",
           "reset_mid_response", "response_timeout", "bad_payload", "client_error")

# What the test worker answers: HTTP/1.0 200, headers, then "pid=<pid> slot=<slot>\n".
TESTWORKER_RE = re.compile(rb"\AHTTP/1\.[01] 200 OK\r\n(?:[^\r\n]*\r\n)*?\r\n"
                           rb"pid=(\d+) slot=(\d+)\n\Z")
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
MAX_RESPONSE = 1 << 16


def testworker_validator(data):
    """Return (pid, slot) for a valid test worker response, else None."""
    m = TESTWORKER_RE.match(data)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _check_loopback(addr):
    if isinstance(addr, str):
        return socket.AF_UNIX
    host = addr[0]
    ip = ipaddress.ip_address(host)
    if not ip.is_loopback:
        raise ValueError(f"load client is loopback-only, not {host}")
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def request_once(addr, request=HTTP_REQUEST, connect_timeout=3.0, response_timeout=5.0,
                 validator=testworker_validator):
    """One connection, one request. Returns (class, ident, detail); ident is what
    validator returned for an ok response, detail a short text for the rest."""
    family = _check_loopback(addr)
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(connect_timeout)
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return "refused", None, "ECONNREFUSED"
        except FileNotFoundError:
            return "refused", None, "ENOENT (socket file gone)"
        except socket.timeout:
            return "connect_timeout", None, f"no connection after {connect_timeout}s"
        except (ConnectionResetError, ConnectionAbortedError) as e:
            return "reset_before_response", None, f"connect: {e}"
        except OSError as e:
            return "client_error", None, f"connect: {e}"

        deadline = time.monotonic() + response_timeout
        try:
            s.settimeout(response_timeout)
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            return "reset_before_response", None, f"send: {e}"
        except socket.timeout:
            return "response_timeout", None, "send timed out"
        except OSError as e:
            return "client_error", None, f"send: {e}"

        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "response_timeout", None, f"{len(data)} bytes in {response_timeout}s"
            s.settimeout(left)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                return "response_timeout", None, f"{len(data)} bytes in {response_timeout}s"
            except (ConnectionResetError, ConnectionAbortedError) as e:
                if data:
                    return "reset_mid_response", None, f"after {len(data)} bytes: {e}"
                return "reset_before_response", None, f"recv: {e}"
            except OSError as e:
                return "client_error", None, f"recv: {e}"
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_RESPONSE:
                return "bad_payload", None, "response too long"
        if not data:
            return "eof_before_response", None, "EOF"
        ident = validator(data) if validator else True
        if ident is None:
            return "bad_payload", None, repr(data[:200])
        return "ok", ident, None
    finally:
        s.close()


class Result:
    def __init__(self):
        self.counts = {c: 0 for c in CLASSES}
        self.answered = set()      # idents (for the test worker: (pid, slot))
        self.failures = []         # (monotonic time, class, detail), first 50
        self.started = self.ended = None

    @property
    def attempts(self):
        return sum(self.counts.values())

    @property
    def ok(self):
        return self.counts["ok"]

    def unexplained(self, casualties):
        return (self.attempts - self.ok) - casualties

    def summary(self):
        nz = {k: v for k, v in self.counts.items() if v}
        dur = (self.ended or 0) - (self.started or 0)
        return (f"attempts={self.attempts} in {dur:.2f}s {nz} "
                f"first failures={self.failures[:10]}")

    def __repr__(self):
        return f"<Result {self.summary()}>"


class LoadClient:
    """K threads, each one connection per request, until stop(), the duration, or the count.

    Always bounded: duration defaults to 60 s at most.
    """

    def __init__(self, addr, threads=8, duration=60.0, max_requests=None, keep_answers=False,
                 pause=0.0, **request_kw):
        """request_kw go to request_once(); its `request` may be a callable, asked for the
        bytes of each attempt. keep_answers keeps (start, *ident, end) of every ok answer
        in self.answers; pause is a wait between one thread's attempts."""
        _check_loopback(addr)
        self.addr = addr
        self.threads = threads
        self.duration = min(duration, 120.0)
        self.max_requests = max_requests
        self.keep_answers = keep_answers
        self.pause = pause
        self.answers = []
        self.request_kw = request_kw
        self.result = Result()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._issued = 0
        self._oks = 0              # live, for a test watching progress during the run
        self._spans = []           # (start, end) of every attempt (bounded by the duration)
        self._workers = []

    def _take_ticket(self):
        with self._lock:
            if self.max_requests is not None and self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _run(self, deadline):
        counts = {c: 0 for c in CLASSES}
        answered = set()
        failures = []
        while not self._stop.is_set() and time.monotonic() < deadline and self._take_ticket():
            t0 = time.monotonic()
            cls, ident, detail = self._attempt()
            with self._lock:
                t1 = time.monotonic()
                self._spans.append((t0, t1))
                if cls == "ok":
                    self._oks += 1
                    if self.keep_answers:
                        self.answers.append((t0,) + tuple(ident) + (t1,))
            counts[cls] += 1
            if cls == "ok":
                answered.add(ident)
            elif len(failures) < 50:
                failures.append((time.monotonic(), cls, detail))
            if self.pause:
                self._stop.wait(self.pause)
        with self._lock:
            for c in CLASSES:
                self.result.counts[c] += counts[c]
            self.result.answered |= answered
            self.result.failures = sorted(self.result.failures + failures)[:50]

    def _attempt(self):
        """One classified attempt: (class, ident, detail)."""
        kw = dict(self.request_kw)
        if callable(kw.get("request")):
            kw["request"] = kw["request"]()
        return request_once(self.addr, **kw)

    def oks(self):
        """ok answers so far, while the load runs."""
        with self._lock:
            return self._oks

    def wait_ok(self, n, timeout=10.0):
        """Wait (bounded) for n more ok answers: the load is flowing now."""
        want = self.oks() + n
        deadline = time.monotonic() + timeout
        while self.oks() < want:
            if time.monotonic() >= deadline:
                raise AssertionError(f"only {self.oks() - want + n} of {n} more ok answers in {timeout} s")
            time.sleep(0.01)

    def attempts_within(self, t0, t1):
        """Attempts in flight at some moment of [t0, t1] (monotonic): how much of the load
        overlapped a fault or a restart."""
        with self._lock:
            return sum(1 for a, b in self._spans if a <= t1 and b >= t0)

    def start(self):
        self.result.started = time.monotonic()
        deadline = self.result.started + self.duration
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self, timeout=15.0):
        """Stop issuing requests, wait for those in flight (bounded), return the Result."""
        self._stop.set()
        return self.join(timeout)

    def join(self, timeout=None):
        end = time.monotonic() + (timeout if timeout is not None else self.duration + 15.0)
        for t in self._workers:
            t.join(max(0.0, end - time.monotonic()))
        alive = [t for t in self._workers if t.is_alive()]
        if alive:
            raise AssertionError(f"{len(alive)} load threads still running")
        self.result.ended = time.monotonic()
        return self.result

    def run(self):
        """Run to the duration or the count, then return the Result."""
        return self.start().join()


def run_load(addr, **kw):
    return LoadClient(addr, **kw).run()
