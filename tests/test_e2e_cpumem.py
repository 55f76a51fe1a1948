"""CPU and memory diagnosis end to end: raw machine-check records in, labelled
fault.cpu.* / fault.memory.* diagnoses with GMCA message IDs out, on the real
daemon with the sim platform (chip c holds cpuids 4c..4c+3; its DIMMs are
labelled "CPU c DIMM d")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e

HOUR = 3600
T0 = 1_700_000_000
ICACHE_CE = "0x9400000000000101"  # VAL|EN, code 0x0101: l1icache, corrected
DCACHE_UC = "0xb400000000000105"  # VAL|UC|EN, code 0x0105: l1dcache, uncorrected
MEM_CE = "0x8c00004000010090"  # VAL|MISCV|ADDRV, memory-controller read, corrected
MEM_MISC = "0x86"  # physical address mode, LSB 6


def icache(cpu: int, t: int) -> dict[str, Any]:
    return {"mca": {"cpu": cpu, "bank": 1, "status": ICACHE_CE, "time": t}}


def mem(cpu: int, addr: int, t: int) -> dict[str, Any]:
    return {"mca": {"cpu": cpu, "bank": 8, "status": MEM_CE, "addr": hex(addr),
                    "misc": MEM_MISC, "time": t}}  # fmt: skip


def start(root: Path, fmd_factory: list[FmdProcess]) -> FmdProcess:
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    return fmd


def diagnoses(fmd: FmdProcess) -> list[dict[str, Any]]:
    fmd.quiesce()
    return [e for e in fmd.fltlog_json() if e["class"] == "list.suspect"]


def test_icache_errors_on_chip_3_fault_cpu_3_once(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Corrected icache errors on chip 3 within 72h give exactly one fault on "CPU 3";
    later errors join that case instead of opening another."""
    fmd = start(root, fmd_factory)
    replies = fmd.send_lines(icache(13, T0 + i * HOUR) for i in range(8))
    assert all(r["ok"] for r in replies)
    found = diagnoses(fmd)
    assert len(found) == 1
    suspect = found[0]["fault-list"][0]
    assert (found[0]["code"], suspect["class"]) == (
        "GMCA-8000-Q7",
        "fault.cpu.generic-x86.l1icache",
    )
    assert (suspect["location"], suspect["asru"]) == ("CPU 3", "cpu:///cpuid=13")
    assert suspect["fru"].endswith("/motherboard=0/chip=3")


def test_errors_spread_over_more_than_t_give_no_fault(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """The same number of icache errors spread over more than 72h diagnoses nothing."""
    fmd = start(root, fmd_factory)
    assert all(r["ok"] for r in fmd.send_lines(icache(13, T0 + i * 30 * HOUR) for i in range(8)))
    assert diagnoses(fmd) == []


def test_one_uncorrected_dcache_error_faults_at_once(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A single uncorrected data-cache error is diagnosed immediately."""
    fmd = start(root, fmd_factory)
    fmd.send_lines([{"mca": {"cpu": 6, "bank": 0, "status": DCACHE_UC, "time": T0}}])
    found = diagnoses(fmd)
    assert [f["fault-list"][0]["class"] for f in found] == ["fault.cpu.generic-x86.l1dcache"]
    assert found[0]["fault-list"][0]["location"] == "CPU 1"


def test_memory_errors_on_one_page_and_across_a_dimm(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Repeated CEs on one page give a page fault naming the DIMM label; CEs spread
    over many pages of one DIMM give a DIMM fault on that DIMM."""
    fmd = start(root, fmd_factory)
    page = 0x2040  # chip 0, channel 0, dimm 1, rank 0: "CPU 0 DIMM 1"
    fmd.send_lines(mem(1, page, T0 + i * 60) for i in range(3))
    found = diagnoses(fmd)
    assert [(f["code"], f["fault-list"][0]["class"], f["fault-list"][0]["location"])
            for f in found] == [("GMCA-8000-WT", "fault.memory.generic-x86.page_ce",
                                 "CPU 0 DIMM 1")]  # fmt: skip
    # Eleven more CEs, each on a page of its own of the same DIMM (bits 15+ vary).
    fmd.send_lines(mem(1, page | (k << 15), T0 + 600 + k * 60) for k in range(1, 12))
    found = diagnoses(fmd)
    dimm = [f for f in found if f["fault-list"][0]["class"] == "fault.memory.generic-x86.dimm_ce"]
    assert len(dimm) == 1
    assert dimm[0]["code"] == "GMCA-8000-YN"
    assert dimm[0]["fault-list"][0]["location"] == "CPU 0 DIMM 1"
    assert dimm[0]["fault-list"][0]["fru"].endswith("/dram-channel=0/dimm=1")


def test_restart_keeps_serd_counts(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Errors before and after a restart add up in the same SERD engine."""
    fmd = start(root, fmd_factory)
    fmd.send_lines(icache(13, T0 + i * HOUR) for i in range(3))
    assert diagnoses(fmd) == []
    engines = fmd.adm("serd", module="cpumem-diagnosis")
    assert [e["count"] for e in engines] == [3]
    assert fmd.stop() == 0
    fmd.start()
    assert [e["count"] for e in fmd.adm("serd", module="cpumem-diagnosis")] == [3]
    fmd.send_lines([icache(13, T0 + 3 * HOUR)])
    assert [f["fault-list"][0]["location"] for f in diagnoses(fmd)] == ["CPU 3"]


@pytest.mark.parametrize("restart", ["stop", "kill"])
def test_diagnosed_case_is_joined_and_repaired_after_a_restart(
    root: Path, fmd_factory: list[FmdProcess], restart: str
) -> None:
    """After a restart (clean or SIGKILL) the diagnosed case, restored lazily, still
    takes later errors on its strand and can be repaired by its label."""
    fmd = start(root, fmd_factory)
    fmd.send_lines(icache(13, T0 + i * HOUR) for i in range(4))
    [fault] = diagnoses(fmd)
    if restart == "stop":
        assert fmd.stop() == 0
    else:
        fmd.kill()
    fmd.start()
    fmd.send_lines([icache(13, T0 + 5 * HOUR)])
    assert diagnoses(fmd) == [fault]
    joined = [
        s for s in fmd.adm("module.stats", module="cpumem-diagnosis") if s["name"] == "joined"
    ]
    assert [s["value"] for s in joined] == [1]
    out = fmd.cli("fmadm", "replaced", "CPU 3")
    assert out.returncode == 0, out.stderr
    fmd.quiesce()
    assert [e["event"] for e in fmd.fltlog_json()][-2:] == ["Repaired", "Resolved"]
