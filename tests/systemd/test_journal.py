"""The workers' output under a real journald (systemd 252): bindonce sends each line a
worker writes as a journal entry of its own, with SYSLOG_IDENTIFIER=--name, SYSLOG_PID and
BINDONCE_SLOT, as the worker itself (bindonce runs as root: CAP_SYS_ADMIN), so journald
records the worker's _PID and `journalctl -u UNIT` shows who said what."""

import json

import pytest

import test_systemd_units as units
from sysd_container import wait_for

NAME = "jtest"
UNIT = NAME + ".service"
SAY = "/usr/local/lib/bindonce-test/jsay"


@pytest.fixture
def service(container):
    """jtest.service: bindonce -w 2 --name jtest, each worker saying two lines with its pid,
    the second at level 3, then holding on."""
    c = container
    c.write_file(SAY, '#!/bin/sh\necho "hello from $$"\necho "<3>trouble in $$"\nexec sleep infinity\n', mode=0o755)
    c.write_file("/etc/systemd/system/" + UNIT,
                 "[Service]\nType=notify\nKillMode=mixed\n"
                 "ExecStart=%s -w 2 --name %s -l 127.0.0.1:%d -- %s\n" % (units.BINDONCE, NAME, units.free_port(), SAY))
    c.systemctl("daemon-reload")
    cursor = c.journal_cursor()
    try:
        c.systemctl("start", UNIT, timeout=90)
        yield c, cursor
    finally:
        c.systemctl("stop", UNIT, check=False, timeout=90)
        c.run(["rm", "-f", SAY, "/etc/systemd/system/" + UNIT], check=False)
        c.systemctl("daemon-reload", check=False)


def test_each_line_an_entry_with_name_slot_and_pid(service):
    c, cursor = service
    wait_for(lambda: units.workers_up(c, UNIT, 2), 30, "2/2 workers of " + UNIT)
    r = c.run([units.BINDONCE, "ctl", "--name", NAME, "status", "--json"])
    slot_of = {s["pid"]: s["slot"] for s in json.loads(r.stdout)["slots"]}
    assert len(slot_of) == 2 and all(slot_of), slot_of

    def ours():
        got = [e for e in c.journal_entries(cursor) if e.get("SYSLOG_IDENTIFIER") == NAME]
        return got if len(got) >= 4 else None
    entries = wait_for(ours, 30, "4 entries of the workers")
    assert len(entries) == 4, entries
    said = set()
    for e in entries:
        word, pid = e["MESSAGE"].split()[0], int(e["MESSAGE"].split()[-1])
        assert pid in slot_of, (e, slot_of)
        assert e["SYSLOG_PID"] == str(pid) and e["_PID"] == str(pid), e
        assert e["BINDONCE_SLOT"] == str(slot_of[pid]), e
        assert e["PRIORITY"] == ("3" if word == "trouble" else "6"), e
        assert e["_TRANSPORT"] == "journal", e
        said.add((word, pid))
    assert said == {(w, p) for w in ("hello", "trouble") for p in slot_of}, said

    # `journalctl -u` finds them: journald put them in the unit (the workers' cgroup). The
    # unit is new in this container, so all of its entries are this test's.
    out = c.run(["journalctl", "--no-pager", "-q", "-o", "json", "-u", UNIT]).stdout
    by_unit = [json.loads(l) for l in out.splitlines() if l.strip()]
    assert len([e for e in by_unit if e.get("SYSLOG_IDENTIFIER") == NAME]) == 4, out

    log = units.bindonce_log(c, cursor)
    assert "lacks CAP_SYS_ADMIN" not in log and "journald cannot be reached" not in log, log
    units.assert_no_errors(c, UNIT, cursor, allow=("trouble in",))
