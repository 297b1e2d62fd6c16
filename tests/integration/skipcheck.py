"""pytest plugin (-p skipcheck, from the Makefile): fail the run on a skip nobody expected.

A skip hides a test: in CI a whole suite may skip (no root, no cgroups, a missing tool)
and `make check` would still be green. Every skip must match a line of the expected-skips
file ($BINDONCE_EXPECTED_SKIPS, default tests/integration/expected-skips.txt): a regular
expression searched in "NODEID: REASON". The file is empty: CI (root, Debian 12, the
packages of .ci/run) expects none. BINDONCE_ALLOW_SKIPS=1 turns the check off, for a
developer's run without root.
"""

import os
import re
from pathlib import Path

import pytest

DEFAULT = Path(__file__).resolve().parent / "expected-skips.txt"


def _expected():
    path = Path(os.environ.get("BINDONCE_EXPECTED_SKIPS") or DEFAULT)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [re.compile(l) for l in lines if l.strip() and not l.startswith("#")]


def pytest_configure(config):
    config._unexpected_skips = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if reason.startswith("Skipped: "):
            reason = reason[len("Skipped: "):]
        text = "%s: %s" % (item.nodeid, reason)
        if not any(p.search(text) for p in _expected()):
            item.config._unexpected_skips.append(text)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if config._unexpected_skips:
        terminalreporter.write_sep("=", "unexpected skips (skipcheck)", red=True)
        for t in config._unexpected_skips:
            terminalreporter.write_line(t)


def pytest_sessionfinish(session, exitstatus):
    if session.config._unexpected_skips and os.environ.get("BINDONCE_ALLOW_SKIPS") != "1" \
            and session.exitstatus == 0:
        session.exitstatus = 1
