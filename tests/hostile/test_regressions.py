"""Regression tests for the hostile inputs of issue 8 that made fmd hurt the host or
stop diagnosing, against the real daemon on the sim platform (16 CPUs, sim retire
backend): each failed on the main of the time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fmd.store import Store, hwstate
from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e

STRAND5 = "hc:///motherboard=0/chip=1/core=0/strand=1"  # cpuid 5 on the sim platform
L2_UC = "ereport.cpu.generic-x86.l2cache_uc"
L2_CE = "ereport.cpu.generic-x86.l2cache"


def offline_cpus(root: Path) -> list[int]:
    """The CPUs the sim retire backend has taken offline."""
    store = Store("", db_file=root / "var" / "fm" / "fmd" / "fmd.db", readonly=True)
    try:
        with store.reader() as conn:
            return sorted(r.ident for r in hwstate.hw_states(conn, "cpu") if r.state == "offline")
    finally:
        store.close()


def module_stat(fmd: FmdProcess, module: str, name: str) -> int:
    for s in fmd.adm("module.stats", module=module):
        if s["name"] == name:
            return int(s["value"])
    return 0


def module_status(fmd: FmdProcess) -> dict[str, str]:
    return {m["name"]: m["status"] for m in fmd.adm("config")["modules"]}


@pytest.fixture
def fmd(root: Path, fmd_factory: list[FmdProcess]) -> FmdProcess:
    proc = FmdProcess(root, props={"platform": "sim", "clock": "simulated"})
    fmd_factory.append(proc)
    return proc.start()


def test_motherboard_detector_offlines_nothing(fmd: FmdProcess, root: Path) -> None:
    """An uncorrected L2 error whose detector is the motherboard is stored and counted
    but never diagnosed: no CPU goes offline (it used to offline cpus 0-15)."""
    [reply] = fmd.send_lines([{"class": L2_UC, "detector": "hc:///motherboard=0"}])
    assert reply["ok"] is True
    fmd.quiesce()
    assert offline_cpus(root) == []
    assert fmd.fltlog_json() == []
    assert module_stat(fmd, "cpumem-diagnosis", "bad_detector") == 1
    assert [e["class"] for e in fmd.errlog_json()] == [L2_UC]


def test_empty_path_detector_offlines_nothing(fmd: FmdProcess, root: Path) -> None:
    """Four corrected errors with detector ``hc:///`` (past the SERD threshold) do not
    make a diagnosis either."""
    replies = fmd.send_lines([{"class": L2_CE, "detector": "hc:///"}] * 4)
    assert [r["ok"] for r in replies] == [True] * 4
    fmd.quiesce()
    assert offline_cpus(root) == []
    assert fmd.fltlog_json() == []
    assert module_stat(fmd, "cpumem-diagnosis", "bad_detector") == 4


@pytest.mark.parametrize(
    ("detector", "payload"),
    [
        ("hc://:server-id=another-host/motherboard=0/chip=1/core=0/strand=1", {}),
        ("hc:///motherboard=0/chip=9/core=0/strand=0", {}),
        ("hc:///motherboard=0/chip=1/memory-controller=0", {}),
        (STRAND5, {"cpuid": 12}),
        ("cpu:///cpuid=99", {}),
    ],
    ids=["other-host", "no-such-chip", "not-a-cpu", "cpuid-elsewhere", "no-such-cpuid"],
)
def test_detector_that_is_not_a_cpu_here_is_not_diagnosed(
    fmd: FmdProcess, root: Path, detector: str, payload: dict[str, Any]
) -> None:
    """A detector of another host, outside the topology, not a CPU node, or contradicted
    by the payload's cpuid names no CPU of this platform: counted, never diagnosed."""
    [reply] = fmd.send_lines([{"class": L2_UC, "detector": detector, **payload}])
    assert reply["ok"] is True
    fmd.quiesce()
    assert offline_cpus(root) == []
    assert fmd.fltlog_json() == []
    assert module_stat(fmd, "cpumem-diagnosis", "bad_detector") == 1


def test_strand_detector_offlines_exactly_that_strand(fmd: FmdProcess, root: Path) -> None:
    """The same uncorrected error from a real strand faults and offlines that one CPU."""
    fmd.send_lines([{"class": L2_UC, "detector": STRAND5}])
    fmd.quiesce()
    assert offline_cpus(root) == [5]
    [fault] = [f for f in fmd.fltlog_json() if f["class"] == "list.suspect"]
    suspect = fault["fault-list"][0]
    assert suspect["asru"] == "cpu:///cpuid=5"
    assert suspect["resource"].endswith("/motherboard=0/chip=1/core=0/strand=1")


@pytest.mark.parametrize("cpuid", [-1, 2**63 - 1, 2**32])
def test_cpuid_out_of_range_is_rejected_and_diagnosis_goes_on(
    fmd: FmdProcess, root: Path, cpuid: int
) -> None:
    """A cpuid outside the cpu scheme's 32 bits is refused at ingest with the member
    named; the diagnosis engines stay active and diagnose the next error."""
    bad, good = fmd.send_lines(
        [
            {"class": L2_UC, "detector": STRAND5, "cpuid": cpuid},
            {"class": L2_UC, "detector": STRAND5, "cpuid": 5},
        ]
    )
    assert bad["ok"] is False
    assert "'cpuid' is out of range" in bad["error"]
    assert good["ok"] is True
    fmd.quiesce()
    assert module_status(fmd)["cpumem-diagnosis"] == "active"
    assert offline_cpus(root) == [5]


def test_amd_engine_survives_a_bad_cpuid(fmd: FmdProcess) -> None:
    """amd-diagnosis sees no out-of-range cpuid either: it is rejected before dispatch."""
    [bad] = fmd.send_lines(
        [{"class": "ereport.cpu.amd.dc.data_eccm", "detector": STRAND5, "cpuid": -1}]
    )
    assert bad["ok"] is False
    fmd.quiesce()
    assert module_status(fmd)["amd-diagnosis"] == "active"


@pytest.mark.parametrize("physaddr", [2**63, 2**64 - 1, 2**52, -4096])
def test_physaddr_out_of_range_is_rejected(fmd: FmdProcess, physaddr: int) -> None:
    """A memory error with an address beyond 52 bits is refused at ingest, so the retire
    agent never sees it (it used to fail with an integer overflow on every restart)."""
    [reply] = fmd.send_lines(
        [
            {
                "class": "ereport.cpu.generic-x86.mem_ue",
                "detector": STRAND5,
                "physaddr": physaddr,
            }
        ]
    )
    assert reply["ok"] is False
    assert "'physaddr' is out of range" in reply["error"]
    fmd.quiesce()
    assert set(module_status(fmd).values()) == {"active"}


def test_register_values_are_range_checked(fmd: FmdProcess) -> None:
    """Machine-check registers take integers or "0x..." strings of 64 bits."""
    replies = fmd.send_lines(
        [
            {"class": L2_CE, "detector": STRAND5, "IA32_MCi_STATUS": "0x9400000000000101"},
            {"class": L2_CE, "detector": STRAND5, "IA32_MCi_STATUS": -1},
            {"class": L2_CE, "detector": STRAND5, "IA32_MCi_STATUS": "0x1" + "0" * 16},
            {"class": L2_CE, "detector": STRAND5, "bank": 300},
        ]
    )
    assert [r["ok"] for r in replies] == [True, False, False, False]


def nested(depth: int) -> bytes:
    return b'{"class":"ereport.x.deep","p":' + b"[" * depth + b"]" * depth + b"}"


def test_bad_lines_are_answered_alone(fmd: FmdProcess) -> None:
    """Bad lines in the middle of one read chunk each get their own error; every good
    line around them is stored and acknowledged, and the rejections are counted."""
    good = [orjson.dumps({"class": f"ereport.x.good{i}"}) for i in range(5)]
    bad = [
        b'{"mca": {"cpu": 1, "bank": 1, "status": null}}',
        b'{"mca": {"cpu": 1, "bank": null, "status": "0x9400000000000101"}}',
        nested(300),
        nested(1000),
    ]
    lines = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], good[4]]
    replies = fmd.send_lines(lines)
    assert [r["ok"] for r in replies] == [True, False] * 4 + [True]
    assert "status" in replies[1]["error"]
    assert "bank" in replies[3]["error"]
    assert "nests deeper than 32" in replies[5]["error"]
    fmd.quiesce()
    stored = [e["class"] for e in fmd.errlog_json()]
    assert stored == [f"ereport.x.good{i}" for i in range(5)]
    [socket] = [t for t in fmd.adm("stats")["transports"] if t["name"] == "socket"]
    assert socket["rejected"] == 4
    assert socket["accepted"] == 5


def test_long_detector_is_rejected(fmd: FmdProcess) -> None:
    """A detector FMRI longer than 4096 characters is refused with the reason."""
    long = "hc:///motherboard=0/chip=" + "1" * 5000
    [reply] = fmd.send_lines([{"class": L2_CE, "detector": long}])
    assert reply["ok"] is False
    assert "longer than 4096 characters" in reply["error"]


def test_payload_with_too_many_members_is_rejected(fmd: FmdProcess) -> None:
    """A payload of more than 4096 members and elements is refused."""
    [reply] = fmd.send_lines([{"class": "ereport.x.wide", "list": list(range(5000))}])
    assert reply["ok"] is False
    assert "more than 4096 members" in reply["error"]
