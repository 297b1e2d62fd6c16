"""Real servers nobody here wrote, each run under bindonce as docs/WORKERS.md says.

For every recipe of docs/WORKERS.md whose server Debian packages (or that the standard
library of Python, Node.js or Go builds), the same three steps, with 2 workers, under
load from the classifying connection-per-request client (short idempotent requests):

1. SIGKILL one worker. Nothing may be refused: the socket stays open in bindonce, and
   what was queued waits for the other worker or the replacement. The requests the
   killed server had accepted die with it. A third-party server does not count them for
   us, so they are bounded instead: every load thread has at most one request in
   flight, so at most THREADS requests can die, each as a reset, an EOF or an answer
   cut short (never a timeout, a refusal or a wrong answer), and none before the kill.
   bindonce must count exactly that one restart: a worker that exits on its own fails
   the test even when the others answer for it.
2. `bindonce ctl reload`: refused 0, and failed 0 for the servers that finish what they
   accepted on bindonce's stop signal (`drains`); for those that drop their connections
   (see each recipe), the bound of a kill per retired worker.
3. Stop: exit 0, and nothing of the tree left (the `supervisor` fixture checks that).

What the bindonce under test can do is read from its --help: --nonblocking (then the
sockets are passed blocking, as systemd passes them, and the plain blocking-accept
server must work: until then it is an expected failure), --stop-signal (lighttpd's
graceful stop is SIGINT) and --min-ready.

A server that is not installed is skipped, naming the Debian package; .ci/run installs
them all.
"""

import ast
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import loadclient
from conftest import BINDONCE, free_tcp_port, proc_alive, wait_until
from loadclient import LoadClient, request_once

HERE = Path(__file__).resolve().parent / "servers"
EXAMPLES = HERE.parents[2] / "docs" / "examples"         # the documented recipes
GO_EXAMPLE = EXAMPLES / "go" / "server.go"
PY = "/usr/bin/python3"          # Debian's python3, with Debian's packages
THREADS = 4                      # load threads: the bound on the casualties of one kill
WAIT = 60                        # generous bound on every wait (reloads roll one by one)
# A request may wait in the queue while no worker accepts: during a reload with
# --ready exec, the old workers leave as soon as the new ones have exec'd, and twistd
# took 5 s to start on a loaded machine. Waiting is not losing: allow it.
RESPONSE_TIMEOUT = 30.0
LOSS_CLASSES = {"reset_before_response", "eof_before_response", "reset_mid_response"}


# ---------------------------------------------------------------------------
# requests


# "ok ..." from the servers of servers/, "hello from the X example" from docs/examples.
HTTP_OK = re.compile(rb"\AHTTP/1\.[01] 200 [^\r\n]*\r\n(?:[^\r\n]*\r\n)*?\r\n"
                     rb"(?:ok\b|hello from the \w+ example\n\Z)", re.S)


def http_ok(data):
    return True if HTTP_OK.match(data) else None


def dns_query(qid):
    """A DNS query for ok.test (a special-use name kresd answers NXDOMAIN itself)."""
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in (b"ok", b"test"):
        q += bytes([len(label)]) + label
    q += b"\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(q)) + q


def dns_request_once(addr, request=None, connect_timeout=3.0, response_timeout=5.0,
                     validator=None):
    """Like loadclient.request_once, for DNS over TCP: the server keeps the connection
    open after its answer, so the answer ends at its length prefix, not at EOF."""
    qid = int.from_bytes(os.urandom(2), "big")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(connect_timeout)
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return "refused", None, "ECONNREFUSED"
        except socket.timeout:
            return "connect_timeout", None, "connect"
        except OSError as e:
            return "client_error", None, f"connect: {e}"
        deadline = time.monotonic() + response_timeout
        try:
            s.sendall(dns_query(qid))
        except (BrokenPipeError, ConnectionResetError) as e:
            return "reset_before_response", None, f"send: {e}"
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
            left = deadline - time.monotonic()
            if left <= 0:
                return "response_timeout", None, f"{len(data)} bytes"
            s.settimeout(left)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                return "response_timeout", None, f"{len(data)} bytes"
            except ConnectionResetError as e:
                cls = "reset_mid_response" if data else "reset_before_response"
                return cls, None, str(e)
            if not chunk:
                return ("bad_payload" if data else "eof_before_response"), None, "EOF"
            data += chunk
        qr, rcode = data[4] & 0x80, data[5] & 0x0F
        if int.from_bytes(data[2:4], "big") != qid or not qr or rcode not in (0, 3):
            return "bad_payload", None, data[:32].hex()
        return "ok", True, None
    finally:
        s.close()


# ---------------------------------------------------------------------------
# the recipes: (bindonce options, command) built for a port and a scratch directory


def _www(tmp):
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("ok static\n")
    return www


def _wsgi_app(tmp):
    (tmp / "app.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    body = f'ok wsgi pid={os.getpid()}\\n'.encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
        "                              ('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    return tmp / "app.py"


# Each recipe returns (bindonce options, command, drains): drains says whether the server
# finishes what it accepted when it gets bindonce's stop signal (else a reload may lose
# the requests in flight, as a kill does, and the test bounds them the same way).

def gunicorn(tmp, port):
    _wsgi_app(tmp)
    return [], ["/usr/bin/gunicorn", "--workers", "1", "--chdir", str(tmp), "app:app"], True


def gunicorn_notify(tmp, port):
    opts, cmd, drains = gunicorn(tmp, port)
    return ["--ready", "notify"], cmd, drains


def uwsgi(tmp, port):
    app = _wsgi_app(tmp)
    # A SIGTERM in uwsgi's first moments (before its handlers) is lost: bindonce then
    # SIGKILLs it after --stop-timeout, shortened here to keep the test short.
    return ["--ready", "notify", "--stop-timeout", "3"], [
        "/usr/bin/uwsgi-core", "--plugin", "python3", "--protocol", "http",
        "--wsgi-file", str(app), "--callable", "app", "--master", "--processes", "1",
        "--die-on-term", "--hook-master-start", "unix_signal:15 gracefully_kill_them_all",
        "--disable-logging"], False


def lighttpd(tmp, port):
    conf = tmp / "lighttpd.conf"
    conf.write_text(f'server.document-root = "{_www(tmp)}"\n'
                    'server.systemd-socket-activation = "enable"\n'
                    'index-file.names = ("index.html")\n')
    # SIGTERM stops lighttpd at once; SIGINT is its graceful stop.
    return ["--stop-signal", "INT"], ["/usr/sbin/lighttpd", "-D", "-f", str(conf)], True


def twisted(tmp, port):
    # The reactor drops open connections when it stops.
    return [], ["/usr/bin/twistd3", "--nodaemon", "--pidfile=", "web",
                "--listen", "systemd:domain=INET:index=0", "--path", str(_www(tmp))], False


def node(tmp, port):
    return [], [shutil.which("node") or "node", str(HERE / "node_server.js")], True


def python_script(name):
    def recipe(tmp, port):
        return [], [PY, str(HERE / name)], True
    return recipe


def node_example(tmp, port):
    # As its header says: node server.js (it closes the server on SIGTERM and exits when
    # the connections in hand are done).
    return [], [shutil.which("node") or "node", str(EXAMPLES / "node" / "server.js")], True


def asyncio_example(tmp, port):
    # As its docstring says: python3 server.py (it answers what it accepted on SIGTERM).
    return [], [PY, str(EXAMPLES / "asyncio" / "server.py")], True


def go(tmp, port):
    exe = tmp / "go_server"
    # The build cache outlives the test, so that the second run (CI runs the suite twice)
    # does not compile net/http again.
    cache = os.environ.get("GOCACHE") or os.path.join(tempfile.gettempdir(),
                                                      f"bindonce-test-gocache-{os.getuid()}")
    env = {**os.environ, "GOCACHE": cache, "GOPATH": str(tmp / "gopath"),
           "GO111MODULE": "off", "GOFLAGS": "", "CGO_ENABLED": "0"}
    try:
        r = subprocess.run(["go", "build", "-o", str(exe), str(GO_EXAMPLE)],
                           cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("go build took over 300 s")
    if r.returncode != 0:
        pytest.skip(f"go build failed (offline, or no standard library?): {r.stderr.strip()[:300]}")
    return [], [str(exe)], True


class Backend:
    """A loopback HTTP backend for systemd-socket-proxyd, in a thread of the test."""

    def __init__(self):
        import http.server
        import threading

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "11")
                self.end_headers()
                self.wfile.write(b"ok backend\n")

            def log_message(self, *a):
                pass

            def handle(self):
                try:
                    super().handle()
                except ConnectionError:
                    pass    # the proxy was killed mid-request: not the backend's business

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def socket_proxyd(tmp, port, backend):
    # It exits on SIGTERM at once, closing the connections it is proxying.
    return [], ["/lib/systemd/systemd-socket-proxyd", f"127.0.0.1:{backend.port}"], False


def kresd(tmp, port):
    rundir = tmp / "kresd"
    rundir.mkdir()
    # Local answers only: no trust anchor to fetch, nothing asked of the network.
    (rundir / "config").write_text("trust_anchors.remove('.')\n")
    # It stops at once on SIGTERM, resetting the TCP queries it had not answered yet.
    return [], ["/usr/sbin/kresd", "--noninteractive", "--config", str(rundir / "config"),
                "-S", "3", str(rundir)], False


# id, recipe, executable that must exist, its Debian package, request kind
RECIPES = [
    ("gunicorn", gunicorn, "/usr/bin/gunicorn", "gunicorn", "http"),
    ("gunicorn-notify", gunicorn_notify, "/usr/bin/gunicorn", "gunicorn", "http"),
    ("uwsgi", uwsgi, "/usr/bin/uwsgi-core", "uwsgi-plugin-python3", "http"),
    ("lighttpd", lighttpd, "/usr/sbin/lighttpd", "lighttpd", "http"),
    ("twisted", twisted, "/usr/bin/twistd3", "python3-twisted", "http"),
    ("node", node, "node", "nodejs", "http"),
    ("python-plain", python_script("py_plain.py"), PY, "python3", "http"),
    ("python-socketserver", python_script("py_socketserver.py"), PY, "python3", "http"),
    ("python-http.server", python_script("py_httpserver.py"), PY, "python3", "http"),
    ("python-asyncio", python_script("py_asyncio.py"), PY, "python3", "http"),
    ("go", go, "go", "golang-go", "http"),
    ("node-example", node_example, "node", "nodejs", "http"),
    ("asyncio-example", asyncio_example, PY, "python3", "http"),
    ("systemd-socket-proxyd", socket_proxyd, "/lib/systemd/systemd-socket-proxyd", "systemd",
     "http"),
    ("kresd", kresd, "/usr/sbin/kresd", "knot-resolver", "dns"),
]


def _params():
    for rid, recipe, exe, pkg, kind in RECIPES:
        yield pytest.param(recipe, exe, pkg, kind, id=rid)


# ---------------------------------------------------------------------------
# the run


def ctl(sup, *args, timeout=WAIT + 30):
    return subprocess.run([BINDONCE, "ctl", "--control", str(sup.control_path), *args],
                          capture_output=True, text=True, timeout=timeout)


def status(sup):
    r = ctl(sup, "--json", "status", timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_ready(sup, n, exclude=()):
    """Until n slots have a ready worker whose pid is not in exclude; returns the pids."""
    def ready():
        assert sup.running(), f"bindonce exited {sup.proc.returncode}; stderr:\n{sup.log()}"
        st = status(sup)
        if not st or st["reloading"]:
            return None
        pids = [s["pid"] for s in st["slots"] if s["ready"] and s["pid"] not in exclude]
        return pids if len(pids) >= n else None
    return wait_until(ready, WAIT, lambda: f"{n} ready workers; stderr:\n{sup.log()[-3000:]}",
                      interval=0.05)


def restarts(sup, expected, load=None):
    """bindonce counted exactly `expected` restarts: no worker died but those killed."""
    st = status(sup)
    if st["restarts"] != expected and load is not None:
        load.stop()
    assert st["restarts"] == expected, \
        f"{st['restarts']} restarts, not {expected}: a worker exited on its own; " \
        f"stderr:\n{sup.log()[-3000:]}"


def wait_oks(load, n, sup):
    """Until the load has n more ok answers than now (progress, after an event)."""
    target = load.oks() + n
    wait_until(lambda: load.oks() >= target, WAIT,
               lambda: f"{n} more ok answers ({load.oks()} so far); stderr:\n{sup.log()[-3000:]}")


def truncated(detail):
    """Is a bad_payload's detail (repr of the bytes) an HTTP answer cut short: headers
    with a Content-Length, and fewer body bytes? A killed server's casualty, not a bad
    answer."""
    try:
        data = ast.literal_eval(detail)
    except (ValueError, SyntaxError):
        return False
    head, sep, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    if not head.startswith(b"HTTP/1."):
        return False
    return not sep or (m is not None and len(body) < int(m.group(1)))


def check_losses(res, since, allowed, what):
    """refused 0, no failure but resets, EOFs and answers cut short, at most `allowed`,
    none before `since`."""
    c = dict(res.counts)
    assert c["refused"] == 0, f"{what}: refused connections: {res.summary()}"
    assert c["client_error"] == 0, f"{what}: the client failed: {res.summary()}"
    # The client keeps the first 50 failures: all of them, since at most `allowed` (< 50).
    cut = sum(1 for f in res.failures if f[1] == "bad_payload" and truncated(f[2]))
    c["bad_payload"] -= cut
    bad = {k: v for k, v in c.items() if v and k != "ok" and k not in LOSS_CLASSES}
    assert not bad, f"{what}: failures other than the killed server's resets/EOFs: {res.summary()}"
    lost = res.attempts - res.ok
    assert lost <= allowed, f"{what}: {lost} lost, more than the {allowed} in flight: {res.summary()}"
    early = [f for f in res.failures if f[0] < since]
    assert not early, f"{what}: failures before the event: {early}"
    return lost


@pytest.mark.parametrize("recipe,exe,package,kind", list(_params()))
def test_real_server(supervisor, tmp_path, monkeypatch, recipe, exe, package, kind):
    if not shutil.which(exe):
        pytest.skip(f"{exe} not installed (Debian package {package}; .ci/run installs it)")
    port = free_tcp_port()
    addr = ("127.0.0.1", port)
    backend = None
    if recipe is socket_proxyd:
        backend = Backend()
        opts, command, drains = recipe(tmp_path, port, backend)
    else:
        opts, command, drains = recipe(tmp_path, port)
    kw = {"response_timeout": RESPONSE_TIMEOUT}
    if kind == "dns":
        monkeypatch.setattr(loadclient, "request_once", dns_request_once)
        probe = dns_request_once
    else:
        probe = request_once
        kw["validator"] = http_ok
    sup = supervisor()
    try:
        sup.start(["-l", f"127.0.0.1:{port}", "-w", "2", "--min-ready", "0.2", *opts], command)
        first = wait_ready(sup, 2)
        # Ready by exec comes before the server listens: the first request waits in the
        # queue, bounded by its response timeout, and is asked again until answered.
        wait_until(lambda: probe(addr, **kw)[0] == "ok", WAIT,
                   lambda: f"a first answer; stderr:\n{sup.log()[-3000:]}")

        # 1. SIGKILL one worker under load.
        load = LoadClient(addr, threads=THREADS, duration=WAIT, **kw).start()
        wait_oks(load, 50, sup)
        # No worker may have exited on its own (a crash-looping server can still answer
        # under load: the plain server on an O_NONBLOCK socket dies only when the queue
        # is empty, losing nothing).
        restarts(sup, 0, load)
        victim = first[0]
        t_kill = time.monotonic()
        sup.expect_log(rf"warning: worker \d+ \(pid {victim}\) killed by signal KILL$")     # this kill
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not proc_alive(victim), WAIT, f"pid {victim} to die")
        wait_ready(sup, 2, exclude=(victim,))
        wait_oks(load, 50, sup)
        res = load.stop()
        lost_kill = check_losses(res, t_kill, THREADS, "SIGKILL")
        restarts(sup, 1)

        # 2. A rolling reload under load.
        before = wait_ready(sup, 2)
        load = LoadClient(addr, threads=THREADS, duration=WAIT, **kw).start()
        wait_oks(load, 50, sup)
        t_reload = time.monotonic()
        r = ctl(sup, "reload")
        assert r.returncode == 0 and "reload complete" in r.stdout, \
            f"reload: {r.returncode} {r.stdout} {r.stderr}\n{sup.log()[-3000:]}"
        after = wait_ready(sup, 2, exclude=before)
        wait_oks(load, 50, sup)
        res2 = load.stop()
        if drains:
            assert res2.attempts == res2.ok, f"reload: not every request answered: {res2.summary()}"
        else:
            check_losses(res2, t_reload, 2 * THREADS, "reload")
        assert not set(after) & set(before)
        restarts(sup, 1)                # replacements of a reload are not restarts

        # The server's own listen() sets the queue length (docs/WORKERS.md).
        queue_max = status(sup)["sockets"][0]["queue_max"]

        # 3. Stop: exit 0; the fixture checks that nothing of the tree is left.
        assert sup.stop(timeout=WAIT) == 0, sup.log()[-3000:]
        print(f"\n{Path(command[0]).name}: queue_max {queue_max}; kill: lost {lost_kill} "
              f"{res.summary()}; reload: {res2.summary()}")
    finally:
        if backend:
            backend.close()
