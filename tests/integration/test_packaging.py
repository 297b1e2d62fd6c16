"""The Debian package and the bash completion.

The package is built once per session with `make deb DEB_DIR=<tmp>` (a copy of the tree,
dpkg-buildpackage -us -uc -b): it holds exactly the files README.md's "Install" section
lists, its bindonce reports the Makefile's VERSION, the paths its units and its
/etc/bindonce/example.conf name are in it, and lintian finds no error and no warning.
Skipped with the reason where dpkg-buildpackage, debhelper or lintian is missing (CI
installs them: .ci/run).

The completion is loaded into a bash (with bash-completion when installed, as a user's
shell has it) and asked what it offers, the way bash asks it at a TAB.
"""

import os
import re
import shutil
import socket
import subprocess

import pytest

from conftest import BINDONCE, REPO, wait_until
from testlib import Harness

COMPLETION = REPO / "completion" / "bindonce.bash"
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"


def makefile_version():
    m = re.search(r"^VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert m, "no VERSION in the Makefile"
    return m.group(1)


def readme_package_files():
    """The paths listed in the code block of README.md's "Install" section."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## Install\n(.*?)^## ", text, re.M | re.S)
    assert m, "README.md has no '## Install' section"
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", m.group(1), re.M | re.S)
    paths = [line.strip() for lang, b in blocks if not lang for line in b.splitlines() if line.startswith("/")]
    assert paths, "README.md's Install section lists no file"
    return paths


def build_env():
    # Run from `make integration`: the outer make's flags must not reach debian/rules.
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


@pytest.fixture(scope="session")
def package(tmp_path_factory):
    """(path of the .deb, path of the .changes), built once for the session."""
    missing = [t for t in ("dpkg-buildpackage", "dh", "dpkg-deb") if not shutil.which(t)]
    if missing:
        pytest.skip("cannot build the package without %s (apt-get install dpkg-dev debhelper)"
                    % ", ".join(missing))
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["make", "-C", str(REPO), "deb", "DEB_DIR=" + str(out)], env=build_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert r.returncode == 0, "make deb failed:\n" + r.stdout[-4000:]
    arch = subprocess.run(["dpkg", "--print-architecture"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.strip()
    version = makefile_version()
    deb = out / ("bindonce_%s_%s.deb" % (version, arch))
    changes = out / ("bindonce_%s_%s.changes" % (version, arch))
    assert deb.is_file(), "make deb did not write %s; it wrote: %s" % (deb, sorted(os.listdir(out)))
    assert changes.is_file(), "make deb did not write %s" % changes
    return deb, changes


@pytest.fixture(scope="session")
def unpacked(package, tmp_path_factory):
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", str(package[0]), str(root)], check=True, timeout=60)
    return root


def package_files(deb):
    """The non-directory entries of the .deb, as absolute paths."""
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], stdout=subprocess.PIPE, text=True,
                             check=True, timeout=60).stdout
    files = set()
    for line in listing.splitlines():
        fields = line.split(None, 5)
        if not fields[0].startswith("d"):
            files.add(fields[5].split(" -> ")[0][1:])   # "./usr/bin/x" -> "/usr/bin/x"
    return files


def test_package_holds_exactly_what_the_readme_lists(package):
    listed = set(readme_package_files())
    # The lintian overrides are the package's own metadata, not what a user installs it for.
    files = {f for f in package_files(package[0]) if not f.startswith("/usr/share/lintian/")}
    assert not listed - files, "README lists what the package lacks: %s" % sorted(listed - files)
    assert not files - listed, "the package holds what README does not list: %s" % sorted(files - listed)


def test_package_version_is_the_makefiles_and_bindonce_says_so(package, unpacked):
    version = makefile_version()
    field = subprocess.run(["dpkg-deb", "-f", str(package[0]), "Version"], stdout=subprocess.PIPE,
                           text=True, check=True).stdout.strip()
    assert field == version
    r = subprocess.run([str(unpacked / "usr/bin/bindonce"), "--version"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=10)
    assert (r.returncode, r.stdout) == (0, "bindonce %s\n" % version), r


def test_units_and_example_config_name_files_of_the_package(package, unpacked):
    """Installed with PREFIX=/usr, nothing may still point into /usr/local."""
    files = package_files(package[0])
    texts = {p: (unpacked / p.lstrip("/")).read_text() for p in files
             if p.startswith("/lib/systemd/system/") or p == "/etc/bindonce/example.conf"}
    assert len(texts) == 4, sorted(texts)
    for path, text in texts.items():
        assert "/usr/local" not in text, path
        named = set(re.findall(r"^(?:ExecStart|ExecReload)=(/\S+)", text, re.M))
        named |= set(re.findall(r'^BINDONCE_COMMAND="(/\S+)"', text, re.M))
        assert named or path.endswith(".socket"), "%s names no program" % path
        assert named <= files, "%s names %s, not in the package" % (path, sorted(named - files))


def test_the_example_worker_in_the_package_runs_and_serves(unpacked, tmp_path, harnesses):
    """bindonce from the package runs the package's example worker on a socket; under the
    harness, so its stop must exit 0 and its log hold no error or warning."""
    sock = str(tmp_path / "http.sock")
    h = Harness(tmp_path / "packaged")
    harnesses.append(h)
    p = h.popen([str(unpacked / "usr/bin/bindonce"), "-l", sock, "--control", "none",
                 "--", str(unpacked / "usr/libexec/bindonce/example-httpd")])
    wait_until(lambda: os.path.exists(sock) or p.poll() is not None, 10, "bindonce binds " + sock)
    assert p.poll() is None, "bindonce exited %s: %s" % (p.returncode, h.log())
    answer = b""
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(10)
    c.connect(sock)     # queued in the backlog until the worker accepts
    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        answer += chunk
    c.close()
    assert answer.startswith(b"HTTP/1.") and b"hello from worker 0" in answer, answer
    h.mark_fds()


def test_lintian_finds_no_error_and_no_unexplained_warning(package):
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed (apt-get install lintian)")
    r = subprocess.run(["lintian", "--fail-on", "error,warning", "--display-info", str(package[1])],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert r.returncode == 0 and not tags, r.stdout


def test_the_package_installs_the_completion_file(unpacked):
    installed = unpacked / "usr/share/bash-completion/completions/bindonce"
    assert installed.read_text() == COMPLETION.read_text()


# ---------------------------------------------------------------------------
# bash completion


def complete(line, env_extra=None, with_bash_completion=True):
    """What the completion offers for LINE, the cursor at its end."""
    script = ""
    if with_bash_completion and os.path.exists(BASH_COMPLETION):
        script += "source %s\n" % BASH_COMPLETION
    script += r'''
source "$COMPLETION" || exit 3
complete -p bindonce >/dev/null || exit 4
COMP_LINE=$LINE COMP_POINT=${#LINE}
read -ra COMP_WORDS <<< "$LINE"
[[ $LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
func=$(complete -p bindonce | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$func" bindonce "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
'''
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "COMPLETION": str(COMPLETION), "LINE": line}
    env.update(env_extra or {})
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0, r
    return [w for w in r.stdout.split("\n") if w]


@pytest.fixture(params=[True, False], ids=["bash-completion", "plain-bash"])
def with_bc(request):
    if request.param and not os.path.exists(BASH_COMPLETION):
        pytest.skip("bash-completion is not installed")
    return request.param


def test_completion_offers_the_ctl_commands(with_bc):
    assert sorted(complete("bindonce ctl ", with_bash_completion=with_bc)) == \
        ["events", "reload", "restart", "scale", "signal", "status", "stop", "upgrade"]
    assert complete("bindonce ctl --json re", with_bash_completion=with_bc) == ["reload", "restart"]
    assert complete("bindonce ctl events --", with_bash_completion=with_bc) == ["--json"]
    assert complete("bindonce ctl st", with_bash_completion=with_bc) == ["status", "stop"]
    assert complete("bindonce ctl upgrade ", with_bash_completion=with_bc) == ["--exe"]


def test_completion_offers_the_subcommands_and_the_options(with_bc):
    assert complete("bindonce ", with_bash_completion=with_bc) == ["ctl", "generate-units"]
    options = complete("bindonce --", with_bash_completion=with_bc)
    for opt in ("--listen", "--workers", "--restart", "--ready", "--balance", "--fd-store",
                "--watchdog", "--control", "--name", "--version"):
        assert opt in options, (opt, options)
    assert complete("bindonce ctl --", with_bash_completion=with_bc) == \
        ["--name", "--control", "--json", "--help"]
    assert complete("bindonce --restart ", with_bash_completion=with_bc) == ["always", "on-failure", "no"]
    assert complete("bindonce -w 2 --ready n", with_bash_completion=with_bc) == ["notify"]


def test_completion_offers_every_long_option_of_the_help():
    """The option list cannot fall behind the program: compared with `bindonce --help`."""
    if not os.access(BINDONCE, os.X_OK):
        pytest.skip("bindonce is not built (run make)")
    help_text = subprocess.run([BINDONCE, "--help"], stdout=subprocess.PIPE, text=True,
                               timeout=10).stdout
    # The option lines of the main form (the synopsis and generate-units' own left out).
    main = set(re.findall(r"^ +(?:-\w )?(--[a-z][a-z0-9-]+)", help_text.split("generate-units:")[0], re.M))
    assert len(main) > 20, help_text
    offered = set(complete("bindonce -"))
    assert not main - offered, "not completed: %s" % sorted(main - offered)


def test_completion_offers_signal_names(with_bc):
    names = complete("bindonce ctl --name web signal ", with_bash_completion=with_bc)
    assert {"HUP", "TERM", "USR1", "USR2", "KILL"} <= set(names), names
    assert complete("bindonce ctl signal SIGTE", with_bash_completion=with_bc) == ["SIGTERM"]
    assert complete("bindonce ctl signal TERM ", with_bash_completion=with_bc) == ["all"]


def test_completion_offers_the_running_instances(tmp_path, with_bc):
    """The names of the sockets in the control directory; a file that is no socket is not
    an instance."""
    listeners = []
    for name in ("web", "api"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / (name + ".sock")))
        listeners.append(s)
    (tmp_path / "stale.sock").write_text("")
    try:
        got = complete("bindonce ctl --name ", {"RUNTIME_DIRECTORY": str(tmp_path)}, with_bc)
        assert sorted(got) == ["api", "web"]
        assert complete("bindonce ctl --name w", {"RUNTIME_DIRECTORY": str(tmp_path)}, with_bc) == ["web"]
        if os.geteuid() != 0:
            xdg = tmp_path / "xdg"
            (xdg / "bindonce").mkdir(parents=True)
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(xdg / "bindonce" / "mine.sock"))
            listeners.append(s)
            assert complete("bindonce ctl --name ", {"XDG_RUNTIME_DIR": str(xdg)}, with_bc) == ["mine"]
    finally:
        for s in listeners:
            s.close()


def test_completion_completes_the_worker_command():
    if not os.path.exists(BASH_COMPLETION):
        pytest.skip("bash-completion is not installed")
    assert "bash" in complete("bindonce -w 4 -- bas")
    assert "bash" in complete("bindonce -l 8080 bas")
