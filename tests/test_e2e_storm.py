"""Storms end to end: a solid correctable-error storm on one DIMM is absorbed by the
DIMM's diagnosis at bounded cost (one fault, a bounded case, no per-page cases or
retires), on the real daemon with the sim platform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fmd.case import MAX_CASE_EVENTS
from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e

STRAND0 = "hc:///motherboard=0/chip=0/core=0/strand=0"
# 2**32 decodes to chip 0, channel 0, DIMM 0, rank 0 on the sim platform (bits 12-15
# and 34-35 clear); bits 15 and up pick the page, staying on that DIMM.
BASE = 1 << 32
PAGES = 64


def mem_ce(i: int) -> dict[str, Any]:
    page = BASE + (i % PAGES) * 0x8000
    return {"class": "ereport.cpu.generic-x86.mem_ce", "detector": STRAND0, "physaddr": page}


def test_dimm_storm_gives_one_bounded_fault(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """3,000 corrected errors spread over 64 pages of one DIMM: one DIMM fault and no
    page faults; the DIMM's case keeps its first ereports and counts them all, and
    fmadm faulty says how many."""
    fmd = FmdProcess(root, props={"platform": "sim", "clock": "simulated"}).start()
    fmd_factory.append(fmd)
    n = 3000
    replies = fmd.send_lines(mem_ce(i) for i in range(n))
    assert all(r["ok"] for r in replies)
    fmd.quiesce()
    suspects = [e for e in fmd.fltlog_json() if e["class"] == "list.suspect"]
    assert [s["fault-list"][0]["class"] for s in suspects] == ["fault.memory.generic-x86.dimm_ce"]
    stats = {s["name"]: s["value"] for s in fmd.adm("module.stats", module="cpumem-diagnosis")}
    assert stats["under_faulty_dimm"] == n - 11  # the 11th error faulted the DIMM
    [case] = fmd.adm("faulty", all=True)["cases"]
    assert case["ereports"] == n
    out = fmd.cli("fmadm", "faulty")
    assert f"Ereports    : {n} (the case keeps the first {MAX_CASE_EVENTS})" in out.stdout
    engines = fmd.adm("serd", module="cpumem-diagnosis")
    assert len(engines) <= PAGES + 1


def test_identical_storm_is_stored_as_counts(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """5,000 identical corrected errors on one address: every one is acknowledged, the
    error log keeps a few records whose counts add up to exactly 5,000 (fmdump shows
    them), and the diagnosis counts every error."""
    fmd = FmdProcess(root, props={"platform": "sim", "clock": "simulated"}).start()
    fmd_factory.append(fmd)
    n = 5000
    replies = fmd.send_lines(mem_ce(0) for _ in range(n))
    assert all(r["ok"] for r in replies)
    fmd.quiesce()
    records = fmd.errlog_json()
    assert len(records) < n // 10
    assert sum(r.get("__count", 1) for r in records) == n
    plain = fmd.cli("fmdump", "-e").stdout
    assert " (x" in plain
    classes = [
        e["fault-list"][0]["class"] for e in fmd.fltlog_json() if e["class"] == "list.suspect"
    ]
    assert classes == ["fault.memory.generic-x86.page_ce", "fault.memory.generic-x86.dimm_ce"]
    cases = {c["suspects"][0]["class"]: c["ereports"] for c in fmd.adm("faulty", all=True)["cases"]}
    assert cases["fault.memory.generic-x86.dimm_ce"] == n
    [socket] = [t for t in fmd.adm("stats")["transports"] if t["name"] == "socket"]
    assert socket["accepted"] == n
