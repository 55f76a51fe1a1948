"""Raw machine-check telemetry through the real daemon: fmd decodes the records
against its platform (``fminject --format mce`` and ``{"mca": ...}`` lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e

# An L2 cache CE on CPU 5 (sim: chip 1, core 0, strand 1) and a memory CE on
# CPU 1 whose address (MISC: physical mode, LSB 6) decodes on the sim platform
# to chip 0, channel 0, dimm 1, rank 0: the DIMM labelled "CPU 0 DIMM 1".
MCE_TEXT = """\
CPU 5 BANK 2
STATUS 0x940000000000010a
MCGSTATUS 0x0
TIME 1700000000

CPU 1 BANK 8
STATUS 0x8c00004000010090
ADDR 0x2040
MISC 0x86
MCGSTATUS 0x0
PROCESSOR 0:0x50654
TIME 1700000100

CPU 99 BANK 1
STATUS 0x940000000000010a

CPU 2 BANK 1
STATUS 0x140000000000010a
"""


def test_mce_text_is_decoded_by_fmd(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """mcelog text becomes classified ereports with hc detectors, memory errors carry
    the DIMM rank from the platform's address decoder, and bad records are reported
    with their line numbers."""
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    src = root / "mce.txt"
    src.write_text(MCE_TEXT)
    out = fmd.cli("fminject", str(src))
    assert out.returncode == 1
    assert f"{src}:14: mca: unknown cpu for this platform" in out.stderr
    assert f"{src}:17:" in out.stderr and "VAL" in out.stderr
    fmd.quiesce()
    events = fmd.errlog_json()
    assert [e["class"] for e in events] == [
        "ereport.cpu.generic-x86.l2cache",
        "ereport.cpu.generic-x86.mem_ce",
    ]
    cache, mem = events
    assert cache["detector"].endswith("/motherboard=0/chip=1/core=0/strand=1")
    assert (cache["cpuid"], cache["compound_errorname"]) == (5, "GCACHEL2_ERR_ERR")
    assert cache["__injected"] is True
    assert cache["time"].startswith("2023-11-14T22:13:20")
    assert mem["detector"].endswith("/chip=0/core=0/strand=1")
    assert mem["physaddr"] == 0x2040
    assert mem["resource"].endswith(
        "/motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm=1/rank=0"
    )


def test_raw_mca_lines_on_the_socket(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A raw {"mca": ...} line is decoded and acknowledged; bad registers are rejected."""
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    replies = fmd.send_lines(
        [
            {"mca": {"cpu": 3, "bank": 2, "status": "0x940000000000010a"}},
            {"mca": {"cpu": 3, "bank": 2, "status": "zz"}},
            {"mca": {"cpu": 3, "status": "0x940000000000010a"}},
        ]
    )
    assert replies[0]["ok"] is True
    assert "'status' must be an integer or hex string" in replies[1]["error"]
    assert replies[2]["error"] == "mca: missing member 'bank'"
