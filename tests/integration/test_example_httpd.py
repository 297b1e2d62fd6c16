"""The example worker (docs/examples/httpd.c) under bindonce: every worker serves, and a
SIGTERM stops it cleanly."""

import fcntl
import os
import signal
import socket
import subprocess

from conftest import EXAMPLE_HTTPD, read_to_eof, wait_until
from loadclient import run_load
from testlib import httpd_answer

# One parser of the example httpd's answer for every suite: testlib.httpd_answer.
hello_validator = httpd_answer


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


def run_activated(env, *socks, serves=False, timeout=5):
    """Run httpd with socks at fd 3.. and env, LISTEN_PID its own pid unless env says. If it
    serves, ask the first socket for a page, then stop it. Returns (exit status, stderr, answer)."""
    def place_sockets():        # in the child: socks at 3.., without one clobbering another
        high = [fcntl.fcntl(sk.fileno(), fcntl.F_DUPFD, 100) for sk in socks]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)

    script = '[ -n "$LISTEN_PID" ] || export LISTEN_PID=$$; exec "$0"'
    proc = subprocess.Popen(["sh", "-c", script, EXAMPLE_HTTPD], env={**env, "PATH": os.environ["PATH"]},
                            preexec_fn=place_sockets, pass_fds=range(3, 3 + len(socks)),
                            stderr=subprocess.PIPE)
    answer = None
    try:
        if serves:
            with socket.create_connection(socks[0].getsockname(), timeout=timeout) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                answer = read_to_eof(c)
            proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, proc.stderr.read().decode(), answer


def test_example_httpd_reads_the_protocol_itself():
    """httpd does without libsystemd: it must read LISTEN_* exactly as sd_listen_fds_with_names()."""
    web = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    web.bind(("127.0.0.1", 0))
    web.listen()
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    with web, dns:
        status, err, answer = run_activated({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:dns",
                                             "BINDONCE_WORKER": "7"}, web, dns, serves=True)
        assert status == 0, err
        assert answer and httpd_answer(answer) and b"worker 7" in answer, answer
        assert "ignoring fd 4 (dns): not a listening stream socket" in err

        # No LISTEN_FDNAMES: each fd is "unknown".
        status, err, _ = run_activated({"LISTEN_FDS": "2"}, web, dns, serves=True)
        assert status == 0 and "ignoring fd 4 (unknown)" in err, err

        # LISTEN_PID of another process: not ours, as if nothing was passed.
        status, err, _ = run_activated({"LISTEN_FDS": "1", "LISTEN_PID": "1"}, web)
        assert status == 1 and "no sockets were passed to me" in err, err

        for env in ({"LISTEN_FDS": "abc"}, {"LISTEN_FDS": "-1"}, {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
                    {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:"},
                    {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}):
            status, err, _ = run_activated(env, web, dns)
            assert status == 1 and "bad socket activation environment" in err, (env, err)

    # A passed fd that is not open.
    status, err, _ = run_activated({"LISTEN_FDS": "1"})
    assert status == 1 and "bad socket activation environment: Bad file descriptor" in err, err
