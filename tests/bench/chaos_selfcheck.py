#!/usr/bin/python3
"""chaos_selfcheck.py: bench.py must not drop a contender of the chaos comparison silently.

    BINDONCE=build/bindonce TESTWORKER=build/testworker EXAMPLE_HTTPD=build/httpd \\
        /usr/bin/python3 tests/bench/chaos_selfcheck.py        # about 40 s, loopback only

Runs `bench.py --rows 3 --quick --no-write` in this process with supervisord made to look
not installed and gunicorn replaced by a command that exits at once, the drawing into a
scratch directory. It passes only if the run exits 1, says on stderr which contender was not
run and which failed, names both in their cells, and draws no chaos timeline. docs/ is never
touched. Not part of `make check` (it is about the bench, which CI does not run).
"""
import contextlib
import io
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


class ExitingGunicorn(bench.Gunicorn):
    """A gunicorn whose master exits at once: its run fails at start."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.argv = ["/bin/sh", "-c", "exit 3"]

    def wait_ready(self, timeout=20.0):
        return super().wait_ready(timeout=3)


def main():
    real_have = bench.have
    bench.have = lambda path: False if path == "/usr/bin/supervisord" else real_have(path)
    bench.Gunicorn = ExitingGunicorn
    out_dir = tempfile.mkdtemp(prefix="bindonce-chaos-selfcheck-")
    sys.argv = ["bench.py", "--rows", "3", "--quick", "--no-write", "--plots-dir", out_dir]
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            bench.main()
        except SystemExit as e:
            code = e.code
        except Exception as e:  # a crash is loud too, but says nothing of the others
            code = 1
            print("bench.py crashed: %r" % e, file=sys.stderr)
    text, table = err.getvalue(), out.getvalue()
    sys.stdout.write(table)
    sys.stderr.write(text)
    row3a = next((line for line in table.splitlines() if line.startswith("| **3a**")), "")
    checks = [
        ("the run fails", code not in (0, None)),
        ("supervisord said not run", "supervisord: not run: not installed" in text),
        ("gunicorn said failed", "gunicorn: run failed:" in text),
        ("row 3a's cells name both", "**not run**: not installed" in row3a and "**run failed**" in row3a),
        ("the timeline said not drawn", "chaos-timeline.svg NOT drawn" in text),
        ("no timeline drawn", not os.path.exists(os.path.join(out_dir, "chaos-timeline.svg"))),
    ]
    for name, ok in checks:
        print("%s: %s" % ("ok  " if ok else "FAIL", name))
    shutil.rmtree(out_dir, ignore_errors=True)
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
