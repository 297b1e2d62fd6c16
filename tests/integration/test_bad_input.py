"""(g) Bad input: the documented exit code, one line on stderr naming the input, no
worker started, no file left behind."""

import os
import pwd
import shutil
import socket

import pytest

from conftest import TESTWORKER, free_tcp_port
from loadclient import request_once


# (id, args before '--', exit code, what stderr must name). {port} is a free port.
CASES = [
    ("port-65536", ["-l", "127.0.0.1:65536"], 64, "127.0.0.1:65536"),
    ("port-minus-1", ["-l", "127.0.0.1:-1"], 64, "127.0.0.1:-1"),
    ("port-http", ["-l", "127.0.0.1:http"], 64, "127.0.0.1:http"),
    ("bare-port-65536", ["-l", "65536"], 64, "65536"),
    ("bare-port-0", ["-l", "0"], 64, "'0'"),
    ("bare-port-http", ["-l", "http"], 64, "http"),
    ("host-999", ["-l", "999.1.1.1:{port}"], 64, "999.1.1.1"),
    ("ipv6-unclosed", ["-l", "[::1"], 64, "[::1"),
    ("ipv6-bogus-iface", ["-l", "[::1%bogus]:80"], 64, "[::1%bogus]:80"),
    ("empty-address", ["-l", ""], 64, "''"),
    ("datagram-bad-port", ["--listen-datagram", "127.0.0.1:70000"], 64,
     "--listen-datagram '127.0.0.1:70000'"),
    ("seqpacket-inet", ["--listen-seqpacket", "127.0.0.1:{port}"], 64,
     "--listen-seqpacket '127.0.0.1:"),
    ("unknown-option", ["--bogus-option", "-l", "{port}"], 64, "--bogus-option"),
    ("control-path-too-long", ["--control", "/" + "x" * 120, "-l", "127.0.0.1:{port}"], 64,
     "longer than 107 bytes"),
    ("flag-with-value", ["--reuse-port=1", "-l", "{port}"], 64, "'--reuse-port' takes no value"),
    ("short-flag-with-value", ["--datagram=x", "-l", "{port}"], 64, "'--datagram' takes no value"),
    ("workers-0", ["-w", "0", "-l", "{port}"], 64, "'0'"),
    ("workers-neg", ["-w", "-3", "-l", "{port}"], 64, "-3"),
    ("workers-1e9", ["-w", "1e9", "-l", "{port}"], 64, "1e9"),
    ("workers-16385", ["-w", "16385", "-l", "{port}"], 64, "16385"),
    ("workers-empty", ["-w", "", "-l", "{port}"], 64, "--workers"),
    ("stop-timeout-neg", ["--stop-timeout", "-1", "-l", "{port}"], 64, "-1"),
    ("stop-timeout-huge", ["--stop-timeout", "86401", "-l", "{port}"], 64, "86401"),
    ("stop-timeout-abc", ["--stop-timeout", "abc", "-l", "{port}"], 64, "abc"),
    ("give-up-neg", ["--give-up", "-1", "-l", "{port}"], 64, "-1"),
    ("restart-bogus", ["--restart", "sometimes", "-l", "{port}"], 64, "sometimes"),
    ("backlog-neg", ["--backlog", "-5", "-l", "{port}"], 64, "-5"),
    ("fdname-duplicate", ["-l", "{port}", "-l", "{port2}", "--fdname", "a:a"], 64, "'a'"),
    ("fdname-too-many", ["-l", "{port}", "--fdname", "a:b"], 64, "--fdname"),
    ("fdname-256", ["-l", "{port}", "--fdname", "n" * 256], 64, "--fdname"),
    ("fdname-control-char", ["-l", "{port}", "--fdname", "a\tb"], 64, "--fdname"),
]


def run_bad(supervisor, args, command=(TESTWORKER,), raw_argv=None, **kw):
    sup = supervisor()
    sup.start(args, list(command), raw_argv=raw_argv, **kw)
    code = sup.wait_exit(timeout=10)
    return sup, code


def check_rejected(sup, code, want_code, names):
    lines = sup.log_lines()
    assert code == want_code, f"exit {code}, want {want_code}; stderr:\n{sup.log()}"
    assert len(lines) == 1, f"want one line on stderr, got {len(lines)}:\n{sup.log()}"
    assert names in lines[0], f"stderr does not name {names!r}: {lines[0]!r}"
    assert sup.tw_files() == [], f"a worker was started: {sup.tw_files()}"
    assert not os.path.exists(sup.control_path), "control socket left behind"
    assert os.listdir(sup.control_dir) == [], f"files left: {os.listdir(sup.control_dir)}"


@pytest.mark.parametrize("args,want_code,names",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument(supervisor, args, want_code, names):
    p1, p2 = free_tcp_port(), free_tcp_port()
    args = [a.format(port=p1, port2=p2) for a in args]
    sup, code = run_bad(supervisor, args)
    check_rejected(sup, code, want_code, names)


def test_no_command_after_dashdash(supervisor, free_port):
    sup, code = run_bad(supervisor, ["-l", str(free_port())], command=())
    check_rejected(sup, code, 64, "no command")


def test_no_dashdash_no_command(supervisor, free_port):
    sup, code = run_bad(supervisor, None, raw_argv=["-l", str(free_port())])
    check_rejected(sup, code, 64, "command")


def test_unix_path_too_long(supervisor, short_dir):
    path = str(short_dir / ("x" * (108 - len(str(short_dir)) - 1)))
    assert len(path) == 108
    sup, code = run_bad(supervisor, ["-l", path])
    check_rejected(sup, code, 64, path)
    assert not os.path.exists(path)


def test_unix_path_107_bytes_works(supervisor, short_dir):
    """The longest path that fits sun_path (107 bytes + NUL) is accepted."""
    path = str(short_dir / ("y" * (107 - len(str(short_dir)) - 1)))
    assert len(path) == 107
    sup = supervisor().start(["-l", path], wait_workers=1)
    cls, ident, detail = request_once(path)
    assert cls == "ok", detail
    assert sup.stop() == 0
    assert not os.path.exists(path)


def test_unix_path_missing_directory(supervisor, short_dir):
    path = str(short_dir / "missing" / "s.sock")
    sup, code = run_bad(supervisor, ["-l", path])
    check_rejected(sup, code, 71, path)
    assert not os.path.exists(os.path.dirname(path)), "bindonce created the directory"


def test_regular_file_at_unix_path_is_not_deleted(supervisor, short_dir):
    path = short_dir / "not-a-socket"
    path.write_text("precious\n")
    sup, code = run_bad(supervisor, ["-l", str(path)])
    assert code != 0
    check_rejected(sup, code, code, str(path))
    assert code in (71, 64, 77), f"exit {code} is not a documented failure"
    assert path.read_text() == "precious\n", "bindonce deleted or changed a regular file"


def test_stale_unix_socket_is_reclaimed(supervisor, short_dir):
    path = str(short_dir / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                       # the file stays, nobody listens: stale
    assert os.path.exists(path)
    sup = supervisor().start(["-l", path], wait_workers=1)
    cls, ident, detail = request_once(path)
    assert cls == "ok", f"{detail}; stderr:\n{sup.log()}"
    assert sup.stop() == 0
    assert not os.path.exists(path)


def test_live_unix_socket_is_not_taken(supervisor, short_dir):
    """A socket file somebody accepts on is not stale: exit 71, and it keeps working."""
    path = str(short_dir / "live.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        s.listen(4)
        sup, code = run_bad(supervisor, ["-l", path])
        check_rejected(sup, code, 71, path)
        assert os.path.exists(path), "bindonce removed a live socket file"
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(2)
        c.connect(path)             # the original listener still gets connections
        c.close()
    finally:
        s.close()
        if os.path.exists(path):
            os.unlink(path)


def test_port_in_use(supervisor, free_port):
    port = free_port()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(4)
        sup, code = run_bad(supervisor, ["-l", f"127.0.0.1:{port}"])
        check_rejected(sup, code, 71, f"127.0.0.1:{port}")
    finally:
        s.close()


def test_second_socket_fails_first_is_released(supervisor, free_port, short_dir):
    """The first socket bound fine, the second is in use: exit 71, and neither the first
    port nor the unix file is left behind."""
    good, busy = free_port(), free_port()
    upath = str(short_dir / "first.sock")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", busy))
        s.listen(4)
        sup, code = run_bad(supervisor, ["-l", f"127.0.0.1:{good}", "-l", upath,
                                         "-l", f"127.0.0.1:{busy}"])
        assert code == 71, sup.log()
        assert sup.tw_files() == []
        assert not os.path.exists(upath), "unix socket file left after a failed start"
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", good))   # no SO_REUSEADDR: nothing may hold it
        t.close()
    finally:
        s.close()


def _privileged_port():
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            start = int(f.read())
    except OSError:
        start = 1024
    for port in range(min(start, 1024) - 1, 0, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_privileged_port_as_nobody(supervisor, tmp_path):
    port = _privileged_port()
    if port is None:
        pytest.skip("ip_unprivileged_port_start is 0 or no free privileged port: "
                    "any user may bind any port here")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    group = "nogroup"
    try:
        import grp
        grp.getgrnam(group)
    except KeyError:
        group = "nobody"
    # nobody needs a runtime dir of its own for the control socket default.
    rundir = tmp_path / "xdg"
    rundir.mkdir()
    os.chown(rundir, pwd.getpwnam("nobody").pw_uid, -1)
    os.chmod(tmp_path, 0o755)
    sup = supervisor()
    os.chmod(sup.tw_dir, 0o777)
    os.chown(sup.control_dir, pwd.getpwnam("nobody").pw_uid, -1)
    sup.start(["-l", f"127.0.0.1:{port}"],
              wrapper=["setpriv", "--reuid=nobody", f"--regid={group}", "--clear-groups"],
              env_extra={"XDG_RUNTIME_DIR": str(rundir)})
    code = sup.wait_exit(timeout=10)
    check_rejected(sup, code, 77, f"127.0.0.1:{port}")
    line = sup.log_lines()[0].lower()
    assert any(w in line for w in ("privilege", "permission", "root", "cap_net_bind_service")), line
    assert os.listdir(rundir) in ([], ["bindonce"]) and not any(
        files for _, _, files in os.walk(rundir)), "files left in XDG_RUNTIME_DIR"
