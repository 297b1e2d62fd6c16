"""One socket file, whoever binds it: bindonce's default mode is systemd's SocketMode=
default (0666), and generate-units turns the socket options into the socket unit's own
settings instead of repeating them on a command line that would not apply them."""
import os
import stat
import subprocess

from conftest import BINDONCE, TESTWORKER


def test_a_unix_socket_bindonce_binds_is_0666_by_default(bindonce, short_dir):
    path = short_dir / "web.sock"
    b = bindonce(["-l", str(path)], [TESTWORKER])
    b.wait_log(r"all 1 workers ready")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666, oct(os.stat(path).st_mode)


def test_generate_units_writes_socket_options_as_unit_settings():
    r = subprocess.run([BINDONCE, "generate-units", "web", "-l", "/run/web.sock", "-l", "[::1]:8080",
                        "--socket-mode", "0660", "--socket-user=nobody", "--socket-group", "nogroup",
                        "--ipv6-only", "--freebind", "--bind-to-device", "lo", "--nonblocking",
                        "-w", "2", "--", "/bin/true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    socket_unit, service_unit = r.stdout.split("# web.service\n")
    for line in ("SocketMode=0660", "SocketUser=nobody", "SocketGroup=nogroup", "BindIPv6Only=ipv6-only",
                 "FreeBind=yes", "BindToDevice=lo"):
        assert line + "\n" in socket_unit, (line, socket_unit)
    assert "NonBlocking=yes\n" in service_unit, service_unit
    exec_start = next(l for l in service_unit.splitlines() if l.startswith("ExecStart="))
    for option in ("--socket-", "--ipv6-only", "--freebind", "--bind-to-device", "--nonblocking", "nobody", "0660"):
        assert option not in exec_start, exec_start
    assert " -w 2 -- /bin/true" in exec_start, exec_start
