"""End-to-end: fminject sends programs in the illumos injection language to a real daemon."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.fmdproc import FmdProcess
from tests.test_injlang import REFERENCE

L2 = "ereport.cpu.generic-x86.l2cache"


def start(root: Path, fmd_factory: list[FmdProcess], **props: str) -> FmdProcess:
    fmd = FmdProcess(root, props=props)
    fmd_factory.append(fmd)
    return fmd.start()


@pytest.mark.e2e
def test_reference_program_is_injected(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """The reference example stores 4 injected l2cache ereports and advances the clock 1 h."""
    fmd = start(root, fmd_factory, clock="simulated")
    src = tmp_path / "l2.inj"
    src.write_text(REFERENCE)
    out = fmd.cli("fminject", "-v", str(src))
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:5]] == [f"{src}:6"] * 4 + [f"{src}:7"]
    assert lines[-1] == "fminject: 5 of 5 events accepted"

    # A second program on standard input (detected by its leading comment) after the hour.
    later = "/* one more, an hour later */\n" + REFERENCE.split("repeat", 1)[0] + "ce;\n"
    out = fmd.cli("fminject", "-q", "-", input=later.encode())
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")

    stored = fmd.errlog_json()
    assert [(e["class"], e["__injected"]) for e in stored] == [(L2, True)] * 5
    assert {
        (e["detector"], e["IA32_MCi_STATUS"], e["error_uncorrected"], e["version"]) for e in stored
    } == {("cpu:///cpuid=0", 0x900000400001017A, False, 0)}
    assert len({e["ena"] for e in stored}) == 5
    times = [datetime.fromisoformat(e["time"]) for e in stored]
    assert len(set(times[:4])) == 1
    assert (times[4] - times[0]).total_seconds() == 3600


@pytest.mark.e2e
def test_sleep_waits_between_sends(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """sleep 1 delays the events after it by at least a second; all are accepted."""
    fmd = start(root, fmd_factory)
    src = tmp_path / "sleep.inj"
    src.write_text(
        "evdef ereport.test.s { uint8_t n; };\n"
        "event ereport.test.s a = { 1 };\n"
        "event ereport.test.s b = { 2 };\n"
        "a;\nsleep 1;\nb;\n"
    )
    began = time.monotonic()
    out = fmd.cli("fminject", str(src))
    assert time.monotonic() - began >= 1
    assert (out.returncode, out.stdout, out.stderr) == (
        0,
        "fminject: 2 of 2 events accepted\n",
        "",
    )
    assert [e["n"] for e in fmd.errlog_json()] == [1, 2]


@pytest.mark.e2e
def test_check_only_reports_errors_with_lines(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fminject -n prints file:line: message for each error, exits 1 and sends nothing."""
    fmd = start(root, fmd_factory)
    src = tmp_path / "bad.inj"
    src.write_text(
        "evdef ereport.test.b { uint8_t n; boolean ok; };\n"
        "event ereport.test.b e = { 1, true };\n"
        "event ereport.test.b f = { 256, true };\n"
        "e;\n"
        "g;\n"
    )
    out = fmd.cli("fminject", "-n", str(src))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [
        f"fminject: {src}:3: f.n: 256 is out of range for uint8_t (0 to 255)",
        f"fminject: {src}:5: g is not defined",
    ]
    out = fmd.cli("fminject", str(src))
    assert out.returncode == 1
    assert fmd.adm("stats")["transports"][0]["received"] == 0

    good = tmp_path / "good.txt"
    good.write_text("/* checked as inj */\n" + REFERENCE)
    out = fmd.cli("fminject", "-n", str(good))
    assert (out.returncode, out.stdout, out.stderr) == (
        0,
        "fminject: 5 of 5 events are valid\n",
        "",
    )


def test_endhrtime_runs_every_timer_out(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """'endhrtime;' moves the simulated clock to the last installed deadline: both of
    the timer module's timers expire."""
    fmd = FmdProcess(root, plugins=["timermod"], props={"clock": "simulated"}).start()
    fmd_factory.append(fmd)
    program = root / "end.inj"
    program.write_text(
        "evdef ereport.timer.start { uint8_t version; };\n"
        "event ereport.timer.start go = { 0 };\n"
        "go;\n"
        "endhrtime;\n"
    )
    out = fmd.cli("fminject", str(program))
    assert out.returncode == 0, out.stderr
    fmd.quiesce()
    stats = {s["name"]: s["value"] for s in fmd.adm("module.stats", module="timer-test")}
    assert (stats["fired"], stats["canary"]) == (1, 1)
