"""`bindonce generate-units`: what it refuses, how it writes values systemd would expand,
and what it does when it cannot write. (Installing and running the units against a real
systemd is tests/systemd/test_systemd_units.py::test_g_generate_units_install.)"""

import difflib
import os
import shutil
import subprocess

import pytest

from conftest import BINDONCE
from testlib import REPO


def generate(*args, stdout=subprocess.PIPE):
    return subprocess.run([BINDONCE, "generate-units", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=10)


@pytest.mark.parametrize("name", ["a b", "x@y", ".hidden", "a/b", "n" * 248, "caf\u00e9"])
def test_a_name_systemd_would_not_load_is_refused(tmp_path, name):
    r = generate(name, "--install", "--unit-dir", str(tmp_path), "-l", "8080", "--", "/bin/true")
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "unit name" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == [], "files left behind"


def test_the_longest_valid_name_is_accepted():
    r = generate("n" * 247, "-l", "8080", "--", "/bin/true")
    assert r.returncode == 0, r.stderr


def test_specifiers_in_fd_names_are_escaped():
    r = generate("web", "--fdname", "a%b", "-l", "8080", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert "FileDescriptorName=a%%b\n" in r.stdout and "(a%%b)" in r.stdout, r.stdout


def test_without_a_control_socket_reload_is_sighup():
    r = generate("web", "--control", "none", "-l", "8080", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in r.stdout, r.stdout
    r = generate("web", "-l", "8080", "--", "/bin/true")
    assert " ctl --name web reload\n" in r.stdout, r.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_escaped_units_pass_systemd_analyze_verify(tmp_path):
    r = generate("web", "--install", "--unit-dir", str(tmp_path), "--fdname", "a%b",
                 "--control", "none", "-l", "127.0.0.1:8080", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "web.socket"),
                        str(tmp_path / "web.service")], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_failed_write_is_an_error():
    with open("/dev/full", "w") as full:
        r = generate("web", "-l", "8080", "--", "/bin/true", stdout=full)
    assert r.returncode == 71, (r.returncode, r.stderr)
    assert "Cannot write the units" in r.stderr, r.stderr


# ---- golden files ---------------------------------------------------------------------------
#
# The whole output of generate-units for a few command lines, compared byte for byte with
# tests/golden/generate-units-NAME.units ("@BINDONCE@" stands for bindonce's path). After a
# deliberate change of the units, regenerate them with BINDONCE_UPDATE_GOLDEN=1 and review
# the diff.

GOLDEN_DIR = REPO / "tests" / "golden"
GOLDEN = {
    # several sockets by fd name, every socket option, ExecStart quoting and escaping
    "web": ["web", "-w", "4", "--stop-timeout", "20", "--backlog", "512", "--reuse-port",
            "--fdname", "http:dns", "-l", "127.0.0.1:8080", "--listen-datagram", "[::1]:53",
            "--", "/usr/bin/my-server", "--flag", "two words", "100%", "$HOME", 'say "hi"'],
    # no control socket (reload by SIGHUP), a bare port kept bare, a unix path, one fd name
    # with a specifier in it
    "app": ["app", "--control", "none", "--fdname", "a%b", "-l", "8080", "-l", "/run/app.sock",
            "--", "/bin/sh", "-c", "exec app"],
    # sequential-packet unix sockets, an abstract one, an instance name of its own
    "seq": ["seq", "--name", "other", "--seqpacket", "-l", "/run/seq.sock", "-l", "@seq-abstract",
            "--", "/usr/local/bin/seqd"],
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_generated_units_match_the_golden_file(case):
    r = generate(*GOLDEN[case])
    assert r.returncode == 0, r.stderr
    got = r.stdout.replace(BINDONCE, "@BINDONCE@")
    path = GOLDEN_DIR / ("generate-units-%s.units" % case)
    if os.environ.get("BINDONCE_UPDATE_GOLDEN") == "1":
        path.write_text(got)
    want = path.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            str(path), "generate-units " + " ".join(GOLDEN[case])))
        pytest.fail("generated units differ from the golden file:\n" + diff, pytrace=False)
