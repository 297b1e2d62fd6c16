"""Socket activation input (issue 3, TESTING.md "activation environment"): what bindonce
does with every kind of LISTEN_* it may be started with. fd 3 is prepared by the test; the
LISTEN_PID that names bindonce's own pid is set by a shell that then execs bindonce."""

import os
import re
import socket

import pytest

from conftest import BINDONCE, free_tcp_port, port_bindable, proc_children, worker_environ
from testlib import Harness, expected_from_markers, wait_until


@pytest.fixture
def run(tmp_path, harnesses, request):
    """run(env, fd3=None, listen=True) starts `bash -c 'export VARS; exec bindonce ...'` in a
    harness; returns (exit code or None if it is running, its log so far, the harness, the
    -l port). LISTEN_PID=self means the pid of bindonce."""
    def start(env, fd3=None, listen=True, timeout=10):
        h = Harness(tmp_path / ("b%d" % len(harnesses)), expected_from_markers(request))
        harnesses.append(h)
        port = free_tcp_port()
        exports = " ".join("%s=%s" % (k, "$$" if v == "self" else "'%s'" % v) for k, v in env.items())
        # The shell puts the prepared fd at 3 (and closes its original), then becomes bindonce.
        move = "exec 3<&%d %d<&-; " % (fd3, fd3) if fd3 is not None else ""
        cmd = move + ("export %s; " % exports if exports else "") + 'exec "$@"'
        argv = [BINDONCE, "--control", "none"] + (["-l", "127.0.0.1:%d" % port] if listen else []) + \
            ["--", "sleep", "1000"]
        h.popen(["bash", "-c", cmd, "bash"] + argv, pass_fds=() if fd3 is None else (fd3,))
        wait_until(lambda: h.proc.poll() is not None or "worker 0 started" in h.log(), timeout,
                   "bindonce to exit or start its worker")
        return h.proc.poll(), h.log(), h, port
    return start


def listening_socket():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("env,why", [
    ({"LISTEN_PID": "abc", "LISTEN_FDS": "1"}, "LISTEN_PID='abc' is not a process id"),
    ({"LISTEN_PID": "-1", "LISTEN_FDS": "1"}, "LISTEN_PID='-1' is not a process id"),
    ({"LISTEN_PID": "99999999999999999999", "LISTEN_FDS": "1"}, "is not a process id"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "-1"}, "LISTEN_FDS='-1' is not a number of fds"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "abc"}, "LISTEN_FDS='abc' is not a number of fds"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "3x"}, "LISTEN_FDS='3x' is not a number of fds"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "2"}, "LISTEN_FDS=2, but fd 4 is not open"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, "more names than"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": ""}, "LISTEN_FDNAMES: name 1"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x" * 256}, "LISTEN_FDNAMES: name 1"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a\tb"}, "LISTEN_FDNAMES: name 1"),
])
def test_broken_environment_exits_78(run, env, why):
    s = listening_socket()
    try:
        code, err, p, port = run(env, fd3=s.fileno())
        code = p.wait_exit(10)
        err = p.log()
        assert code == 78, err
        lines = err.splitlines()
        assert len(lines) == 1 and why in lines[0], err
        p.expect_log(re.escape(lines[0]))      # the one line, checked above
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["regular file", "connected socket"])
def test_fd3_not_a_listening_socket_exits_78(run, tmp_path, kind):
    if kind == "regular file":
        f = open(tmp_path / "file", "w")
        fd, keep = f.fileno(), [f]
        why = "is not a socket"
    else:
        server = listening_socket()
        client = socket.create_connection(server.getsockname())
        fd, keep = client.fileno(), [server, client]
        why = "is a connected socket, not a listening one"
    try:
        code, err, p, port = run({"LISTEN_PID": "self", "LISTEN_FDS": "1"}, fd3=fd)
        assert p.wait_exit(10) == 78, p.log()
        assert why in p.log()
        p.expect_log(re.escape(why))
    finally:
        for k in keep:
            k.close()


@pytest.mark.parametrize("env,note", [
    ({"LISTEN_FDS": "1"}, "LISTEN_FDS is set without LISTEN_PID"),
    ({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "is not our pid"),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "0"}, None),
])
def test_not_for_us_falls_back_to_binding(run, env, note):
    # Not an activation of bindonce: it binds its -l as if run by hand, and says why.
    code, err, p, port = run(env)
    assert code is None, err
    assert "listening on 127.0.0.1:%d (fd 3" % port in err
    if note:
        assert note in err
        p.expect_log(re.escape(note))
    assert "from systemd" not in err


def test_adopted_sockets_are_served_and_the_listen_options_not_bound(run):
    s = listening_socket()
    adopted_port = s.getsockname()[1]
    try:
        code, err, p, port = run({"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"},
                                 fd3=s.fileno())
        assert code is None, err
        assert "socket activation: adopted 1 sockets from systemd; --listen options not bound" in err
        assert "listening on 127.0.0.1:%d (fd 3, name web, stream, from systemd)" % adopted_port in err
        # The -l port was never bound.
        assert port_bindable(port)
        # The worker got the adopted socket, by name, and its own LISTEN_PID.
        worker = proc_children(p.pid)[0]
        env = worker_environ(worker)
        assert env["LISTEN_FDNAMES"] == "web" and env["LISTEN_PID"] == str(worker)
        assert os.readlink("/proc/%d/fd/3" % worker) == os.readlink("/proc/self/fd/%d" % s.fileno())
    finally:
        s.close()
