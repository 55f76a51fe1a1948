"""fmadm against a real daemon: the repair verbs and how their operands select
suspects (FRU labels, FMRIs with or without authority, case uuids), partial repairs
(list.updated), errors and exit codes, load/unload/reset and log rotation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fmd.store import Store, schema
from tests.fmdproc import PLUGINS, FmdProcess, cli

pytestmark = pytest.mark.e2e


def start(root: Path, fmd_factory: list[FmdProcess], plugins: tuple[str, ...] = ()) -> FmdProcess:
    fmd = FmdProcess(root, plugins=plugins, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    return fmd


def two_suspect_case(fmd: FmdProcess) -> str:
    assert fmd.send_lines([{"class": "ereport.two.x"}])[0]["ok"]
    fmd.quiesce()
    return str(next(e["uuid"] for e in fmd.fltlog_json() if e["class"] == "list.suspect"))


def events(fmd: FmdProcess, uuid: str) -> list[str]:
    return [e["event"] for e in fmd.fltlog_json() if e["uuid"] == uuid]


def faulty(fmd: FmdProcess, *args: str) -> list[dict[str, Any]]:
    out = fmd.cli("fmadm", "faulty", "--json", *args)
    assert out.returncode == 0, out.stderr
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def test_repair_one_suspect_then_the_other(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Repairing one of two suspects logs list.updated and keeps the case faulty;
    acquitting the other (uuid as second operand) repairs and resolves it."""
    fmd = start(root, fmd_factory, ("twosuspects",))
    uuid = two_suspect_case(fmd)
    done = fmd.cli("fmadm", "repaired", "CPU 0")
    assert (done.returncode, done.stderr) == (0, "fmadm: recorded repair to CPU 0\n")
    fmd.quiesce()
    [case] = faulty(fmd)
    assert [(s["class"], s["fru-status"]) for s in case["suspects"]] == [
        ("fault.test.a", "repair attempted"),
        ("fault.test.b", "faulty"),
    ]
    assert events(fmd, uuid) == ["Diagnosed", "Updated"]
    acq = fmd.cli("fmadm", "acquit", uuid, "CPU 1")
    assert (acq.returncode, acq.stderr) == (0, f"fmadm: recorded acquital of {uuid}\n")
    fmd.quiesce()
    assert faulty(fmd) == []
    assert events(fmd, uuid) == ["Diagnosed", "Updated", "Repaired", "Resolved"]
    last = fmd.fltlog_json()[-1]
    assert last["fault-status"] == [0x10, 0x40]
    # The resource cache records why each resource is no longer faulty.
    store = Store("", db_file=fmd.paths.db_file, readonly=True)
    try:
        with store.reader() as conn:
            rows = conn.execute(select(schema.resources.c.fmri, schema.resources.c.reason))
            reasons = dict(rows.all())
    finally:
        store.close()
    assert reasons == {"cpu:///cpuid=1": "repaired", "cpu:///cpuid=5": "acquitted"}


def test_acquit_whole_case_by_uuid(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """'fmadm acquit UUID' acquits every suspect of the case."""
    fmd = start(root, fmd_factory, ("twosuspects",))
    uuid = two_suspect_case(fmd)
    assert fmd.cli("fmadm", "-q", "acquit", uuid).returncode == 0
    fmd.quiesce()
    assert events(fmd, uuid) == ["Diagnosed", "Repaired", "Resolved"]


def test_replaced_by_fmri_without_authority(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """An hc FRU FMRI matches with or without its authority; a cpu ASRU by its string."""
    fmd = start(root, fmd_factory, ("twosuspects",))
    uuid = two_suspect_case(fmd)
    assert fmd.cli("fmadm", "replaced", "hc:///motherboard=0/chip=1").returncode == 0
    assert fmd.cli("fmadm", "replaced", "cpu:///cpuid=1").returncode == 0
    fmd.quiesce()
    assert events(fmd, uuid) == ["Diagnosed", "Updated", "Repaired", "Resolved"]


def test_unknown_resource_is_an_error(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A label no open case names: a clear message and exit 1; nothing changes."""
    fmd = start(root, fmd_factory, ("twosuspects",))
    uuid = two_suspect_case(fmd)
    out = fmd.cli("fmadm", "replaced", "CPU 7")
    assert out.returncode == 1
    assert out.stderr == (
        "fmadm: failed to record replacement of CPU 7: CPU 7 is not a suspect of any "
        "diagnosis that is still open; see 'fmadm faulty -a'\n"
    )
    assert events(fmd, uuid) == ["Diagnosed"]


def test_flush_forgets_the_fault(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """'fmadm flush FMRI' clears the resource's faults in every case."""
    fmd = start(root, fmd_factory, ("twosuspects",))
    uuid = two_suspect_case(fmd)
    out = fmd.cli("fmadm", "flush", "cpu:///cpuid=5", "cpu:///cpuid=1")
    assert out.returncode == 0, out.stderr
    fmd.quiesce()
    assert faulty(fmd) == []
    assert events(fmd, uuid)[-1] == "Resolved"


def test_faulty_views(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """-s, -r and -u show the case; -a also shows a case with nothing faulty left."""
    fmd = start(root, fmd_factory, ("twosuspects",))
    uuid = two_suspect_case(fmd)
    summary = fmd.cli("fmadm", "faulty", "-s").stdout.splitlines()
    assert summary[1].startswith("TIME            EVENT-ID")
    assert summary[3].split()[3:5] == [uuid, "FMD-8000-11"]
    rows = fmd.cli("fmadm", "faulty", "-r").stdout.splitlines()
    assert rows == [f"{'cpu:///cpuid=1':<69} degraded", f"{'cpu:///cpuid=5':<69} degraded"]
    one = fmd.cli("fmadm", "faulty", "-u", uuid).stdout
    assert "Fault class : fault.test.a 50%" in one
    assert "Fault class : fault.test.b 50%" in one


def test_no_daemon_is_exit_1(root: Path) -> None:
    """Without a running fmd every subcommand says so and exits 1."""
    for args in (("faulty",), ("replaced", "CPU 3"), ("config",), ("rotate", "errlog")):
        out = cli("fmadm", *args, root=root)
        assert out.returncode == 1
        assert out.stderr.startswith("fmadm: ") and "fmd is not running" in out.stderr


def test_usage_error_is_exit_2(root: Path) -> None:
    """A missing operand or an unknown log is a usage error (exit 2)."""
    assert cli("fmadm", "replaced", root=root).returncode == 2
    assert cli("fmadm", "rotate", "infolog", root=root).returncode == 2


def test_load_unload_reset(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A plug-in file is loaded at run time, reset keeps it loaded with fresh state,
    and unload removes it from fmadm config."""
    fmd = start(root, fmd_factory)
    path = root / "counter.py"
    path.write_text((PLUGINS / "counter.py").read_text())
    out = fmd.cli("fmadm", "load", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stderr == "fmadm: loaded module counter (active)\n"
    assert fmd.send_lines([{"class": "ereport.count.a"}])[0]["ok"]
    fmd.quiesce()
    stats = {s["name"]: s["value"] for s in fmd.adm("module.stats", module="counter")}
    assert stats["received"] == 1
    assert fmd.cli("fmadm", "reset", "counter").returncode == 0
    names = [m["name"] for m in fmd.adm("config")["modules"]]
    assert "counter" in names
    assert fmd.cli("fmadm", "unload", "counter").returncode == 0
    assert "counter" not in [m["name"] for m in fmd.adm("config")["modules"]]
    again = fmd.cli("fmadm", "unload", "counter")
    assert again.returncode == 1
    assert "no module named 'counter'" in again.stderr


def test_reset_one_serd_engine(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """'fmadm reset -s ENGINE MODULE' empties that engine; an unknown engine is an error."""
    fmd = start(root, fmd_factory, ("serdtest",))
    fmd.send_lines([{"class": "ereport.test.a"}])
    fmd.quiesce()
    [engine] = fmd.adm("serd", module="serd-test")
    assert engine["count"] == 1
    assert fmd.cli("fmadm", "reset", "-s", engine["name"], "serd-test").returncode == 0
    assert fmd.adm("serd", module="serd-test")[0]["count"] == 0
    bad = fmd.cli("fmadm", "reset", "-s", "nope", "serd-test")
    assert bad.returncode == 1 and "has no SERD engine 'nope'" in bad.stderr


def test_ids_continue_after_everything_was_rotated(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """When rotation moved every event out of the live log, a restarted fmd still
    numbers new events above the archived ones, so fmdump shows them all."""
    fmd = start(root, fmd_factory, ("counter",))
    fmd.send_lines([{"class": "ereport.count.x", "n": i} for i in range(3)])
    fmd.quiesce()
    assert fmd.cli("fmadm", "rotate", "errlog").returncode == 0
    assert fmd.stop() == 0
    fmd.start()
    fmd.send_lines([{"class": "ereport.count.x", "n": 3}])
    fmd.quiesce()
    assert [e["n"] for e in fmd.errlog_json()] == [0, 1, 2, 3]


def test_rotate_errlog_keeps_every_event_visible(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """After 'fmadm rotate errlog' the settled events are in errlog.0 and fmdump -e
    still prints each event once."""
    fmd = start(root, fmd_factory, ("counter",))
    fmd.send_lines([{"class": "ereport.count.x", "n": i} for i in range(5)])
    fmd.quiesce()
    before = [e["n"] for e in fmd.errlog_json()]
    out = fmd.cli("fmadm", "rotate", "errlog")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("fmadm: errlog has been rotated out")
    assert (root / "var" / "fm" / "fmd" / "errlog.0").exists()
    assert [e["n"] for e in fmd.errlog_json()] == before == list(range(5))
    archive = str(root / "var" / "fm" / "fmd" / "errlog.0")
    archived = subprocess.run(
        [sys.executable, "-m", "fmd.cli.fmdump", "--json", archive],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [json.loads(line)["n"] for line in archived.stdout.splitlines()] == list(range(5))
