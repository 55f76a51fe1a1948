"""The kernel log: its text forms (fmd.hw.kmsg), the /dev/kmsg source, fminject --format kernel."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fmd.cli import fminject
from fmd.hw.events import MEMORY_FAILURE_CLASS, MF_RESULTS
from fmd.hw.kmsg import (
    ALL_FORMS,
    FORM_MEMORY_FAILURE,
    FORM_PAGE,
    MAX_IDLE,
    MCE_FORMS,
    KmsgEvent,
    KmsgFailure,
    KmsgParser,
    KmsgResult,
    Message,
)
from fmd.hw.kmsg_text import looks_like_kernel_log, parse_log_text, split_log_line
from fmd.hw.topo import SimPlatform
from fmd.protocol import EnaGenerator, Ereport, ereport_from_json_dict, utc_iso
from fmd.states import RESPONSE_KERNEL
from fmd.xprts.kmsg import REASON_HEADER, REASON_LOST, KmsgSource, parse_kmsg_record
from fmd.xprts.source import Position
from tests.diagnosis_util import T0
from tests.fmdproc import FmdProcess
from tests.source_harness import SourceBench
from tests.test_retire_cec import ADDR, PFN, list_event, make_rig, page_fault, soft_offlined

DATA = Path(__file__).parent / "data" / "kmsg"
BOOT_NS = 1_795_000_000 * 10**9
BOOT_ID = "3f0b5a8e-6a4c-4f7e-9d7b-2b1b0c6e7a11"
OTHER_BOOT = "b9c0b1f2-0c2d-4a5e-8f1a-6c2d3e4f5a6b"

# What a real Debian 6.1 kernel logged for `mce 1 1 0x9000000000000151 0 0 0` on the
# QEMU monitor (real-kernel-harness.md section 4), and the same with ADDR and MISC.
REAL_BLOCK = [
    "mce: [Hardware Error]: Machine check events logged",
    "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 1: 9000000000000151",
    "mce: [Hardware Error]: TSC 0 ",
    "mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1795987519 SOCKET 0 APIC 1 microcode 1000065",
]
REAL_RECORD = {
    "cpu": 1,
    "bank": 1,
    "status": "0x9000000000000151",
    "mcgstatus": "0x0",
    "tsc": "0x0",
    "apicid": 1,
    "socket": 0,
    "vendor": "AuthenticAMD",
    "family": 15,  # PROCESSOR 2:60fb1: CPUID family 0Fh, model 6Bh
    "model": 0x6B,
    "time": utc_iso(1795987519 * 10**9),
}
# The AMD decoder's report of a Zen (family 19h) UMC corrected DRAM ECC error.
ZEN_UMC = [
    "mce: [Hardware Error]: Machine check events logged",
    "[Hardware Error]: Corrected error, no action required.",
    "[Hardware Error]: CPU:1 (19:18:1) MC17_STATUS[Over|CE|MiscV|AddrV|-|-|SyndV|CECC|-|-|-]: "
    "0xdc2040000000011b",
    "[Hardware Error]: Error Addr: 0x00000001b7c4a040",
    "[Hardware Error]: IPID: 0x0000009600050f00, Syndrome: 0x000000005c0a0a00",
    "[Hardware Error]: Unified Memory Controller Ext. Error Code: 0, DRAM ECC error.",
    "EDAC MC0: 1 CE on mc#0csrow#1channel#0 (csrow:1 channel:0 page:0x1b7c4a offset:0x40 "
    "grain:64 syndrome:0x5c0a)",
    "[Hardware Error]: cache level: L3/ACC, tx: GEN, mem-tx: RD",
]
SBRIDGE_COPY = [
    "mce: [Hardware Error]: Machine check events logged",
    "EDAC sbridge MC1: HANDLING MCE MEMORY ERROR",
    "EDAC sbridge MC1: CPU 1: Machine Check Event: 0 Bank 11: 8c00004f000800c2",
    "EDAC sbridge MC1: TSC 0",
    "EDAC sbridge MC1: ADDR ee30a0000",
    "EDAC sbridge MC1: MISC 900040004001e8c",
    "EDAC sbridge MC1: PROCESSOR 0:306e4 TIME 1519356496 SOCKET 1 APIC 20",
    "EDAC MC1: 1 CE memory scrubbing error on CPU_SrcID#1_Ha#0_Chan#0_DIMM#0 (channel:0 slot:0 "
    "page:0xee30a0 offset:0x0 grain:32 syndrome:0x0 -  area:DRAM err_code:0008:00c2 socket:1 "
    "ha:0 channel_mask:1 rank:0)",
]


def feed(lines: Iterable[str], *, platform: Any = None, forms: Any = ALL_FORMS) -> list[KmsgResult]:
    """Feed ``lines`` as messages 1.. (each logged a second after boot + its number), then flush."""
    parser = KmsgParser(platform, forms)
    out: list[KmsgResult] = []
    for n, text in enumerate(lines, start=1):
        out.extend(parser.feed(Message(n, text, BOOT_NS + n * 10**9)))
    out.extend(parser.flush())
    return out


def events_of(results: list[KmsgResult]) -> list[dict[str, Any]]:
    assert [r for r in results if isinstance(r, KmsgFailure)] == []
    return [r.obj for r in results if isinstance(r, KmsgEvent)]


# -- the parser: each form -------------------------------------------------------------
def test_real_kernel_mce_block_is_one_raw_record() -> None:
    """The 6.1 kernel's mce: block becomes one raw record timed by its own TIME."""
    [result] = feed(REAL_BLOCK)
    assert result == KmsgEvent(2, "mce", {"mca": REAL_RECORD})


def test_mce_block_with_addr_and_misc() -> None:
    """ADDR and MISC on the TSC line are kept; the record is the same otherwise."""
    lines = [*REAL_BLOCK[:2], "mce: [Hardware Error]: TSC 0 ADDR 12345000 MISC 86 ", REAL_BLOCK[3]]
    [obj] = events_of(feed(lines))
    assert obj["mca"] == {**REAL_RECORD, "addr": "0x12345000", "misc": "0x86"}


def test_zen_umc_decoder_block() -> None:
    """The AMD decoder's Zen UMC block gives bank 17, its status and IPID, family/model from
    the hex triple, and the EDAC line printed in its middle stays a memory report of its own."""
    results = feed(ZEN_UMC)
    edac, amd = events_of(results)
    assert amd == {
        "mca": {
            "cpu": 1,
            "bank": 17,
            "status": "0xdc2040000000011b",
            "addr": "0x1b7c4a040",
            "ipid": "0x9600050f00",
            "synd": "0x5c0a0a00",
            "mcgstatus": "0x0",
            "vendor": "AuthenticAMD",
            "family": 0x19,
            "model": 0x18,
            "time": utc_iso(BOOT_NS + 3 * 10**9),
        }
    }
    assert [r.line for r in results] == [7, 3]
    assert (edac["class"], edac["edac_location"], edac["edac_layer_names"]) == (
        "ereport.cpu.generic-x86.mem_ce",
        [1, 0],
        ["csrow", "channel"],
    )
    assert edac["physaddr"] == 0x1B7C4A040


def test_amd_decoder_of_a_3x_kernel_with_node_line_first() -> None:
    """The 3.x form (node line, "Error Status", status with triple, MC4_ADDR) is one record."""
    lines = [
        "[Hardware Error]: MC4 Error (node 3): DRAM ECC error detected on the NB.",
        "[Hardware Error]: Error Status: Corrected error, no action required.",
        "[Hardware Error]: CPU:18 (10:9:1) MC4_STATUS[Over|CE|MiscV|-|AddrV|CECC]: "
        "0xdc5c410004080a13",
        "[Hardware Error]: MC4_ADDR: 0x0000001891a88210",
        "[Hardware Error]: cache level: L3/GEN, mem/io: MEM, mem-tx: RD, part-proc: RES "
        "(no timeout)",
    ]
    [obj] = events_of(feed(lines))
    assert {k: obj["mca"][k] for k in ("cpu", "bank", "status", "addr", "family", "model")} == {
        "cpu": 18,
        "bank": 4,
        "status": "0xdc5c410004080a13",
        "addr": "0x1891a88210",
        "family": 16,
        "model": 9,
    }


NODE_ONLY = [
    "[Hardware Error]: MC4_STATUS[Over|CE|MiscV|-|AddrV|-|-|CECC]: 0xdc10410040080a13",
    "[Hardware Error]: MC4_ADDR: 0x00000000b3b4d3a0",
    "[Hardware Error]: Northbridge Error (node 1): DRAM ECC error detected on the NB.",
    "[Hardware Error]: cache level: L3/GEN, mem/io: MEM, mem-tx: RD, part-proc: RES (no timeout)",
]


def test_amd_node_only_form_takes_the_first_cpu_of_the_node() -> None:
    """Without CPU:n the record is logged by the node's first CPU (platform known)."""
    [obj] = events_of(feed(NODE_ONLY, platform=SimPlatform(hostname="h")))
    assert (obj["mca"]["cpu"], obj["mca"]["bank"], obj["mca"]["addr"]) == (4, 4, "0xb3b4d3a0")


def test_amd_node_only_form_without_platform_is_a_reasoned_failure() -> None:
    """Without a platform the node cannot be turned into a CPU: one failure, with why."""
    [failure] = feed(NODE_ONLY)
    assert isinstance(failure, KmsgFailure)
    assert (failure.line, failure.form) == (1, "amd")
    assert "names no CPU (node 1)" in failure.reason


def test_amd_restartable_error_sets_ripv() -> None:
    """'Uncorrected, software restartable error.' means MCG_STATUS.RIPV was set."""
    lines = [
        "[Hardware Error]: Uncorrected, software restartable error.",
        "[Hardware Error]: CPU:2 (17:31:0) MC0_STATUS[-|UE|MiscV|AddrV|-|-|-|-|-|Poison|-]: "
        "0xbc00080001010135",
        "[Hardware Error]: cache level: L1, tx: DATA, mem-tx: DRD",
    ]
    [obj] = events_of(feed(lines))
    assert obj["mca"]["mcgstatus"] == "0x1"


def test_edac_copy_of_an_mce_is_a_raw_record() -> None:
    """The sbridge driver's copy gives the registers with its TIME and TSC, and the EDAC
    line after it a memory report with label, layers, address and detail."""
    copy, edac = events_of(feed(SBRIDGE_COPY))
    assert copy["mca"] == {
        "cpu": 1,
        "bank": 11,
        "status": "0x8c00004f000800c2",
        "mcgstatus": "0x0",
        "addr": "0xee30a0000",
        "misc": "0x900040004001e8c",
        "tsc": "0x0",
        "apicid": 0x20,
        "socket": 1,
        "vendor": "GenuineIntel",
        "family": 6,
        "model": 62,
        "time": utc_iso(1519356496 * 10**9),
    }
    assert edac == {
        "class": "ereport.cpu.generic-x86.mem_ce",
        "edac_error_type": "Corrected",
        "error_count": 1,
        "source": "edac",
        "time": utc_iso(BOOT_NS + 8 * 10**9),
        "edac_mc": 1,
        "edac_location": [0, 0],
        "edac_layer_names": ["channel", "slot"],
        "edac_label": "CPU_SrcID#1_Ha#0_Chan#0_DIMM#0",
        "physaddr": 0xEE30A0000,
        "grain": 32,
        "syndrome": 0,
        "message": "memory scrubbing error",
        "driver_detail": "area:DRAM err_code:0008:00c2 socket:1 ha:0 channel_mask:1 rank:0",
    }


def test_edac_lines_of_every_age() -> None:
    """UE without syndrome, a board label the platform knows, the 2.6 "CE page" form and
    "no information available" are all memory reports."""
    lines = [
        "EDAC MC3: 1 UE memory read error on CPU_SrcID#1_MC#1_Chan#2_DIMM#0 (channel:2 slot:0 "
        "page:0xb757589 offset:0xdc0 grain:32 -  OVERFLOW)",
        "EDAC MC0: 4 CE error on CPU 0 DIMM 1 (channel:0 slot:1 page:0x0 offset:0x0 grain:8 "
        "syndrome:0x0)",
        "EDAC MC0: CE page 0x1e9f0, offset 0x240, grain 8, syndrome 0x5c0a, row 1, channel 0, "
        'label "DIMM_A1": amd64_edac',
        "EDAC MC0: CE - no information available: amd64_edac",
    ]
    ue, ce, old, noinfo = events_of(feed(lines, platform=SimPlatform(hostname="h")))
    assert (ue["class"], ue["error_uncorrected"], ue["physaddr"]) == (
        "ereport.cpu.generic-x86.mem_ue",
        True,
        (0xB757589 << 12) | 0xDC0,
    )
    assert "syndrome" not in ue
    assert (
        ce["error_count"],
        ce["resource"].endswith("chip=0/memory-controller=0/dram-channel=0/dimm=1"),
    ) == (4, True)
    assert "physaddr" not in ce  # page 0 offset 0: no address
    assert (old["physaddr"], old["edac_location"], old["edac_label"], old["syndrome"]) == (
        (0x1E9F0 << 12) | 0x240,
        [1, 0],
        "DIMM_A1",
        0x5C0A,
    )
    assert (noinfo["class"], noinfo["message"]) == (
        "ereport.cpu.generic-x86.mem_ce",
        "no information available",
    )


def test_ghes_records_by_section() -> None:
    """GHES records grouped by {n}: a memory section is a memory report on its DIMM, a
    processor section a firmware section, an ARM section an ARM processor error."""
    text = (DATA / "ghes.txt").read_text()
    now = 1_767_000_000 * 10**9  # 2025-12-29: the syslog dates are of that year
    results = parse_log_text(text, now_ns=now, platform=SimPlatform(hostname="h"))
    memory, generic, arm, copy = events_of(results)
    assert [r.line for r in results] == [1, 12, 24, 43]
    assert memory["class"] == "ereport.cpu.generic-x86.mem_ce"
    assert memory["resource"].endswith("chip=1/memory-controller=0/dram-channel=1/dimm=1")
    assert {k: memory[k] for k in ("source", "severity", "ghes_source", "physaddr")} == {
        "source": "ghes",
        "severity": "corrected",
        "ghes_source": 4,
        "physaddr": 0x6A47D1F540,
    }
    assert memory["cper_location"] == {
        "node": 6,
        "card": 1,
        "module": 0,
        "rank": 1,
        "bank": 2,
        "device": 11,
        "row": 40948,
        "column": 560,
    }
    assert (memory["message"], memory["cper_error_status"]) == (
        "single-bit ECC",
        "0x0000000000000400",
    )
    assert generic["class"] == "ereport.fw.cper.processor_generic"
    assert (generic["severity"], generic["ip"], generic["notes"]) == (
        "recoverable",
        "0xffffffff81234567",
        ["cache error"],
    )
    assert arm["class"] == "ereport.cpu.arm.error"
    assert (arm["midr"], arm["mpidr"]) == ("0x00000000410fd0c0", "0x0000000081000100")
    assert arm["errors"] == [
        {
            "index": 0,
            "num_errors": 1,
            "error_type": 0,
            "error_type_name": "cache error",
            "error_info": "0x0000000020400014",
            "cache_level": 1,
            "physical_fault_address": "0x0000000080000000",
        }
    ]
    assert copy["mca"]["status"] == "0x8c00004000010092"


def test_recoverable_ghes_memory_error_is_uncorrected() -> None:
    """A recoverable (or fatal) memory section is a mem_ue."""
    lines = [
        "{3}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 4",
        "{3}[Hardware Error]: event severity: recoverable",
        "{3}[Hardware Error]:  Error 0, type: recoverable",
        "{3}[Hardware Error]:  fru_text: B1",
        "{3}[Hardware Error]:   section_type: memory error",
        "{3}[Hardware Error]:   physical_address: 0x0000000012345000",
        "some other message closes the record",
    ]
    [obj] = events_of(feed(lines))
    assert (obj["class"], obj["edac_label"], obj["physaddr"]) == (
        "ereport.cpu.generic-x86.mem_ue",
        "B1",
        0x12345000,
    )


def test_thermal_lines() -> None:
    """Core and package throttling are thermal reports; 'normal' lines are not."""
    lines = [
        "CPU3: Core temperature above threshold, cpu clock throttled (total events = 1)",
        "CPU3: Core temperature/speed normal",
        "mce: CPU2: Package temperature above threshold, cpu clock throttled (total events = 7)",
        "CPU2: Package temperature/speed normal",
    ]
    core, package = events_of(feed(lines, platform=SimPlatform(hostname="h")))
    assert (core["class"], core["cpuid"], core["scope"], core["total_events"]) == (
        "ereport.cpu.generic-x86.thermal",
        3,
        "core",
        1,
    )
    assert core["detector"].endswith("chip=0/core=1/strand=1")
    assert (package["cpuid"], package["scope"], package["total_events"]) == (2, "package", 7)


def test_forms_can_be_left_out() -> None:
    """Without the machine-check forms the mce:, AMD and EDAC-copy lines give nothing."""
    results = feed(REAL_BLOCK + ZEN_UMC + SBRIDGE_COPY, forms=ALL_FORMS - MCE_FORMS)
    assert [r.form for r in results] == ["edac", "edac"]


# -- the parser: blocks -------------------------------------------------------------------
def test_other_messages_may_come_between_a_blocks_lines() -> None:
    """A thermal line in the middle of an mce block is read and the block still completes."""
    lines = [
        *REAL_BLOCK[:3],
        "CPU0: Core temperature above threshold, cpu clock throttled",
        REAL_BLOCK[3],
    ]
    results = feed(lines)
    assert [(r.line, r.form) for r in results] == [(4, "thermal"), (2, "mce")]


def test_ghes_records_interleaved_by_number() -> None:
    """Two GHES records printed at once are told apart by their {n} tags."""
    lines = [
        "{7}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 1",
        "{8}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 2",
        "{7}[Hardware Error]:  Error 0, type: corrected",
        "{8}[Hardware Error]:  Error 0, type: corrected",
        "{7}[Hardware Error]:   section_type: memory error",
        "{8}[Hardware Error]:   section_type: memory error",
        "{7}[Hardware Error]:   physical_address: 0x0000000000007000",
        "{8}[Hardware Error]:   physical_address: 0x0000000000008000",
    ]
    objs = events_of(feed(lines))
    assert sorted((o["ghes_source"], o["physaddr"]) for o in objs) == [(1, 0x7000), (2, 0x8000)]


def test_a_block_whose_end_never_comes_is_closed_after_max_idle_messages() -> None:
    """An mce block without its PROCESSOR line is emitted once MAX_IDLE others went by."""
    parser = KmsgParser()
    out: list[KmsgResult] = []
    for n, text in enumerate(REAL_BLOCK[:3], start=1):
        out.extend(parser.feed(Message(n, text, BOOT_NS)))
    for n in range(MAX_IDLE):
        assert parser.feed(Message(10 + n, "unrelated", BOOT_NS)) == []
    [late] = parser.feed(Message(100, "unrelated", BOOT_NS))
    assert isinstance(late, KmsgEvent)
    assert late.obj["mca"]["time"] == utc_iso(BOOT_NS)  # no TIME: the message's own time
    assert parser.pending() == []


def test_pending_messages_resume_a_block() -> None:
    """Feeding a new parser the pending messages of an old one continues its open blocks."""
    first = KmsgParser()
    for n, text in enumerate(REAL_BLOCK[:3], start=1):
        assert first.feed(Message(n, text, BOOT_NS)) == []
    held = first.pending()
    assert [m.line for m in held] == [2, 3]
    second = KmsgParser()
    for msg in held:
        assert second.feed(msg) == []
    [result] = second.feed(Message(4, REAL_BLOCK[3], BOOT_NS))
    assert result == KmsgEvent(2, "mce", {"mca": REAL_RECORD})


def test_pending_keeps_what_the_amd_decoder_printed_before_the_status() -> None:
    """The severity line before the AMD decoder's status is held too: a parser resumed from
    pending() still knows the error was software restartable."""
    first = KmsgParser()
    assert (
        first.feed(Message(1, "[Hardware Error]: Uncorrected, software restartable error.")) == []
    )
    second = KmsgParser()
    for msg in first.pending():
        second.feed(msg)
    lines = [
        "[Hardware Error]: CPU:2 (17:31:0) MC0_STATUS[-|UE|MiscV|AddrV|-|-|-|-|-|Poison|-]: "
        "0xbc00080001010135",
        "[Hardware Error]: cache level: L1, tx: DATA, mem-tx: DRD",
    ]
    results = [r for n, text in enumerate(lines, start=2) for r in second.feed(Message(n, text))]
    assert [r.obj["mca"]["mcgstatus"] for r in results if isinstance(r, KmsgEvent)] == ["0x1"]
    assert second.pending() == []


def test_bad_records_are_failures_with_reasons() -> None:
    """A block without its first line, and a status that is not hex, are reasoned failures."""
    lines = [
        "mce: [Hardware Error]: TSC 0 ",
        "mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1795987519 SOCKET 0 APIC 1 microcode 1",
        "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 1: 90000000zz000151",
        "mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1795987519 SOCKET 0 APIC 1 microcode 1",
    ]
    orphan, bad = feed(lines)
    assert isinstance(orphan, KmsgFailure) and isinstance(bad, KmsgFailure)
    assert (orphan.line, bad.line) == (1, 3)
    assert "'CPU n: Machine Check' line" in orphan.reason
    assert "is not a 64-bit hex number" in bad.reason


# -- the parser: pages the kernel took out of use ---------------------------------------
# What a 6.1 host logged when its CEC soft-offlined two pages, the first of which the
# kernel could not take (its soft offline ran into an unhandlable page).
CEC_LOG = [
    "mce: [Hardware Error]: Machine check events logged",
    "RAS: Soft-offlining pfn: 0x10cb39",
    "Memory failure: 0x10cb39: unhandlable page.",
    "RAS: Soft-offlining pfn: 0x61f89",
]


def page_events(results: list[KmsgResult]) -> list[tuple[int, int, str, str]]:
    """(line, pfn, kernel_action, action_result) of the memory_failure reports read."""
    out = []
    for obj in events_of(results):
        assert obj["class"] == MEMORY_FAILURE_CLASS and obj["source"] == "kmsg"
        out.append((obj["pfn"], obj["kernel_action"], obj["action_result"]))
    lines = [r.line for r in results if isinstance(r, KmsgEvent)]
    return [(line, *rest) for line, rest in zip(lines, out, strict=True)]


def test_cec_soft_offline_is_recovered_unless_the_kernel_says_it_failed() -> None:
    """The CEC's "Soft-offlining pfn" line is a soft offline of that page: Recovered when no
    failure follows for it (the kernel logs only failures), Failed when one does."""
    results = feed(CEC_LOG)
    assert page_events(results) == [
        (2, 0x10CB39, "soft_offline", "Failed"),
        (4, 0x61F89, "soft_offline", "Recovered"),
    ]
    failed, recovered = events_of(results)
    assert failed == {
        "class": MEMORY_FAILURE_CLASS,
        "pfn": 0x10CB39,
        "physaddr": 0x10CB39 << 12,
        "page_type": "",
        "action_result": "Failed",
        "source": "kmsg",
        "time": utc_iso(BOOT_NS + 2 * 10**9),  # the time of the CEC's line
        "kernel_action": "soft_offline",
        "detail": "unhandlable page",
    }
    assert "detail" not in recovered


@pytest.mark.parametrize(
    ("outcome", "result"),
    [
        # 6.11 on (pr_fmt "Soft offline: ")
        ("Soft offline: 0x1b7c4a: page migration failed 1, type 0x17ffffc0020018(uptodate|lru)",
         "Failed"),
        ("Soft offline: 0x1b7c4a: page isolation failed, page count 2, type 0x17ffffc0000000()",
         "Failed"),
        ("Soft offline: 0x1b7c4a: thp split failed", "Failed"),
        ("Soft offline: 0x1b7c4a: hugetlb page is ignored", "Failed"),
        ("Soft offline: 0x1b7c4a: page already poisoned", "Recovered"),
        ("Soft offline: 0x1b7c4a: invalidated", "Recovered"),
        # 4.x to 6.10
        ("soft offline: 0x1b7c4a: hugepage migration failed -16, type 0x57ffffc001000c",
         "Failed"),
        ("soft offline: 0x1b7c4a: failed to split THP", "Failed"),
        ("soft offline: 0x1b7c4a page already poisoned", "Recovered"),
        ("soft_offline: 0x1b7c4a: invalidated", "Recovered"),
        ("soft_offline_page: 0x1b7c4a page already poisoned", "Recovered"),
        ("get_any_page: 0x1b7c4a: unknown zero refcount page type 17ffffc0000000", "Failed"),
        ("Memory failure: 0x1b7c4a: unhandlable page.", "Failed"),
    ],
)  # fmt: skip
def test_soft_offline_outcomes_of_every_kernel(outcome: str, result: str) -> None:
    """Each wording soft_offline_page() used for a page ends the soft offline the CEC
    started: "already poisoned" and "invalidated" as Recovered, the rest as Failed."""
    results = feed(["RAS: Soft-offlining pfn: 0x1b7c4a", "kworker/4:2 unrelated", outcome])
    assert page_events(results) == [(1, 0x1B7C4A, "soft_offline", result)]
    [obj] = events_of(results)
    assert obj["detail"] == outcome.split("0x1b7c4a", 1)[1].lstrip(": ").rstrip(".")


def test_soft_offline_by_madvise_and_by_sysfs() -> None:
    """madvise(MADV_SOFT_OFFLINE) names its page as it starts; a soft offline asked for
    through sysfs (as mcelog does) is heard only from its outcome, and alone."""
    lines = [
        "Soft offlining pfn 0x3f2a1 at process virtual address 0x7f0e1c200000",
        "soft offline: 0x55aa: page migration failed 1, type 0x17ffffc0020018(uptodate|lru)",
        "soft offline: 0x55ab page already poisoned",
    ]
    assert page_events(feed(lines)) == [
        (2, 0x55AA, "soft_offline", "Failed"),
        (3, 0x55AB, "soft_offline", "Recovered"),
        (1, 0x3F2A1, "soft_offline", "Recovered"),
    ]


def test_unhandlable_page_of_memory_failure_alone_is_not_a_report() -> None:
    """ "unhandlable page" without a soft offline of its page is memory_failure()'s: its own
    verdict line (Ignored) is the report."""
    lines = [
        "Memory failure: 0x2c1d: unhandlable page.",
        "Memory failure: 0x2c1d: recovery action for unknown page: Ignored",
    ]
    assert page_events(feed(lines)) == [(2, 0x2C1D, "memory_failure", "Ignored")]


def test_soft_offline_disabled_fails_the_open_soft_offlines() -> None:
    """With vm.enable_soft_offline at 0 (6.11 on) the kernel says so once: the soft offlines
    open then failed."""
    lines = [
        "RAS: Soft-offlining pfn: 0x4001",
        "Soft offline: disabled by /proc/sys/vm/enable_soft_offline",
    ]
    results = feed(lines)
    assert page_events(results) == [(1, 0x4001, "soft_offline", "Failed")]
    assert events_of(results)[0]["detail"] == "soft offline disabled"


def test_a_second_cec_line_for_the_same_page_joins_its_soft_offline() -> None:
    """Two announcements of one page before its outcome are one soft offline."""
    lines = ["RAS: Soft-offlining pfn: 0x77", "RAS: Soft-offlining pfn: 0x77"]
    assert page_events(feed(lines)) == [(1, 0x77, "soft_offline", "Recovered")]


def test_memory_failure_verdicts_of_every_kernel() -> None:
    """memory_failure()'s verdict line, in its three wordings, is a memory_failure report
    with the kernel's page type and result."""
    lines = [
        "Memory failure: 0x1b7c4a: recovery action for free buddy page: Recovered",
        "Memory failure: 0x1b7c4b: recovery action for dirty LRU page: Delayed",
        "MCE 0x1b7c4c: recovery action for high-order kernel page: Ignored",  # about 4.1 to 4.6
        "MCE 0x1b7c4d: dirty swapcache page recovery: Failed",  # before that
    ]
    objs = events_of(feed(lines))
    assert [(o["pfn"], o["page_type"], o["action_result"], o["kernel_action"]) for o in objs] == [
        (0x1B7C4A, "free buddy page", "Recovered", "memory_failure"),
        (0x1B7C4B, "dirty LRU page", "Delayed", "memory_failure"),
        (0x1B7C4C, "high-order kernel page", "Ignored", "memory_failure"),
        (0x1B7C4D, "dirty swapcache page", "Failed", "memory_failure"),
    ]
    assert {o["action_result"] for o in objs} == set(MF_RESULTS)


def test_page_form_is_not_a_machine_check_form() -> None:
    """The page form is read by default, stays on when the tracepoint carries the machine
    checks, and can be left out."""
    assert FORM_PAGE in ALL_FORMS and FORM_PAGE not in MCE_FORMS
    assert len(events_of(feed(CEC_LOG, forms=ALL_FORMS - MCE_FORMS))) == 2
    assert feed(CEC_LOG, forms=ALL_FORMS - {FORM_PAGE}) == []


def test_memory_failure_verdicts_are_left_to_the_tracepoint_but_soft_offlines_are_not() -> None:
    """Without the memory_failure form (ras:memory_failure_event carries the verdicts) the
    kernel log still reports the soft offlines, which no tracepoint carries."""
    verdict = "Memory failure: 0x38000: recovery action for free buddy page: Recovered"
    objs = events_of(feed([verdict, *CEC_LOG], forms=ALL_FORMS - {FORM_MEMORY_FAILURE}))
    assert [o["kernel_action"] for o in objs] == ["soft_offline", "soft_offline"]
    only = events_of(feed([verdict, *CEC_LOG], forms={FORM_MEMORY_FAILURE}))
    assert [(o["pfn"], o["kernel_action"]) for o in only] == [(0x38000, "memory_failure")]


def test_a_soft_offline_is_closed_after_max_idle_messages_and_resumed_from_pending() -> None:
    """An open soft offline is held in pending() (a restarted source feeds it again) and is
    Recovered once MAX_IDLE messages went by without its outcome."""
    first = KmsgParser()
    assert first.feed(Message(1, CEC_LOG[1], BOOT_NS)) == []
    held = first.pending()
    assert held == [Message(1, CEC_LOG[1], BOOT_NS)]
    second = KmsgParser()
    for msg in held:
        assert second.feed(msg) == []
    [failed] = second.feed(Message(2, CEC_LOG[2], BOOT_NS))
    assert isinstance(failed, KmsgEvent) and failed.obj["action_result"] == "Failed"
    third = KmsgParser()
    third.feed(Message(3, CEC_LOG[3], BOOT_NS))
    for n in range(MAX_IDLE):
        assert third.feed(Message(10 + n, "unrelated", BOOT_NS)) == []
    [late] = third.feed(Message(100, "unrelated", BOOT_NS))
    assert isinstance(late, KmsgEvent) and late.obj["action_result"] == "Recovered"
    assert third.pending() == []


def test_a_page_beyond_52_bits_is_a_reasoned_failure() -> None:
    """A pfn no physical address can hold is refused with the reason, not reported."""
    [bad] = feed(["RAS: Soft-offlining pfn: 0xfffffffffffff"])
    assert isinstance(bad, KmsgFailure)
    reason = "pfn 0xfffffffffffff is beyond a 52-bit physical address"
    assert (bad.form, bad.reason) == ("page", reason)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(["start", "fail", "ok", "other"]), st.integers(1, 4)),
        max_size=30,
    )
)
def test_every_soft_offline_is_reported_once(steps: list[tuple[str, int]]) -> None:
    """Any mix of starts and outcomes: each soft offline is reported exactly once, Failed
    when a failure for its page came while it was open, Recovered otherwise; an outcome of
    no open soft offline is reported alone."""
    texts = {
        "start": "RAS: Soft-offlining pfn: {:#x}",
        "fail": "soft offline: {:#x}: page migration failed 1, type 0x0",
        "ok": "Soft offline: {:#x}: page already poisoned",
        "other": "page allocation stall on pfn {:#x}",
    }
    expected: list[tuple[int, str]] = []
    open_pages: set[int] = set()
    for kind, pfn in steps:
        if kind == "start":
            open_pages.add(pfn)
        elif kind in ("fail", "ok"):
            open_pages.discard(pfn)
            expected.append((pfn, "Failed" if kind == "fail" else "Recovered"))
    expected += [(pfn, "Recovered") for pfn in open_pages]
    objs = events_of(feed([texts[kind].format(pfn) for kind, pfn in steps]))
    assert sorted((o["pfn"], o["action_result"]) for o in objs) == sorted(expected)


def kernel_reports(lines: list[str]) -> list[Ereport]:
    """The memory_failure reports the parser reads from ``lines`` (logged at T0 + n s), as
    fmd decodes them."""
    parser = KmsgParser()
    results = [r for n, t in enumerate(lines, 1) for r in parser.feed(Message(n, t, T0 + n))]
    results += parser.flush()
    return [
        ereport_from_json_dict(obj, now_ns=T0, ena_gen=EnaGenerator()) for obj in events_of(results)
    ]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (None, (RESPONSE_KERNEL, "retired by the kernel (memory_failure: Recovered)")),
        (
            f"Soft offline: {PFN:#x}: page isolation failed, page count 2, type 0x0()",
            ("retire", f"retired page 0x{ADDR:x} (the kernel could not: memory_failure: Failed)"),
        ),
    ],
)
def test_the_retire_agent_learns_of_the_cecs_soft_offline(
    tmp_path: Path, outcome: str | None, expected: tuple[str, str]
) -> None:
    """A corrected-error page left to the CEC is retired by the kernel when the log says the
    CEC soft-offlined it, and by fmd itself when the log says the soft offline failed."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    lines = [f"RAS: Soft-offlining pfn: {PFN:#x}", *([] if outcome is None else [outcome])]
    for report in kernel_reports(lines):
        rig.send(report)
    action, detail = expected
    assert rig.last_response() == (0, action, True, detail)
    assert soft_offlined(rig) == ({} if outcome is None else {"soft": PFN << 12})
    assert rig.closed == ["u-1"]


REAL_FRAGMENTS = [
    *REAL_BLOCK,
    *CEC_LOG,
    "Memory failure: 0x1b7c4b: recovery action for dirty LRU page: Delayed",
    "Soft offline: 0x1b7c4a: page isolation failed, page count 2, type 0x17ffffc0000000()",
    *ZEN_UMC,
    *SBRIDGE_COPY,
    *NODE_ONLY,
    "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 1",
    "{1}[Hardware Error]:  Error 0, type: corrected",
    "{1}[Hardware Error]:   section_type: ARM processor error",
    "{1}[Hardware Error]:   Error info structure 0:",
    "{1}[Hardware Error]:   node: 1 card: 4 module: 0 rank: 0",
    "CPU3: Core temperature above threshold, cpu clock throttled (total events = 1)",
]


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(REAL_FRAGMENTS),
            st.text(max_size=120),
            st.builds(
                lambda a, b: a[: len(a) // 2] + b, st.sampled_from(REAL_FRAGMENTS), st.text()
            ),
        ),
        max_size=40,
    )
)
def test_parser_never_raises(lines: list[str]) -> None:
    """Any text, real lines cut and mixed with garbage: events or reasoned failures, never an
    exception, and every event encodes as JSON."""
    for result in feed(lines):
        assert isinstance(result, KmsgEvent | KmsgFailure)
        if isinstance(result, KmsgEvent):
            orjson.dumps(result.obj)
        else:
            assert result.form != "parser", result.reason


@given(st.binary(max_size=200))
def test_kmsg_header_never_raises(data: bytes) -> None:
    """Arbitrary bytes give a record or None."""
    record = parse_kmsg_record(data)
    assert record is None or record.seq >= 0


@given(st.text(max_size=200))
def test_log_line_split_never_raises(line: str) -> None:
    """Arbitrary text log lines split without an exception."""
    when, _kernel, _message = split_log_line(line, BOOT_NS)
    assert when is None or isinstance(when, int)


# -- text logs ------------------------------------------------------------------------------
def test_kmsg_record_header_and_escapes() -> None:
    """A /dev/kmsg record: header fields, \\xNN escapes undone, continuation lines dropped."""
    record = parse_kmsg_record(
        b"4,812,123456789,-,caller=T1;[Hardware Error]: CPU:18\\x09MC4_STATUS[-]: 0x1\n"
        b" SUBSYSTEM=cpu\n DEVICE=+cpu:18\n"
    )
    assert record is not None
    assert (record.priority, record.facility, record.seq, record.usec) == (4, 0, 812, 123456789)
    assert record.text == "[Hardware Error]: CPU:18\tMC4_STATUS[-]: 0x1"
    assert parse_kmsg_record(b"no header here") is None
    assert parse_kmsg_record(b"4,x,1,-;text") is None


def test_log_line_prefixes() -> None:
    """journalctl/syslog dates, ISO dates with a zone, dmesg -T dates, 'host kernel:', the
    boot-relative stamp and priorities are taken off; other programs' lines are not kernel's."""
    now = 1_700_000_000 * 10**9
    iso = split_log_line("2023-11-14T22:13:20.5+01:00 host kernel: [  12.345678] EDAC MC0: x", now)
    assert iso == (1_699_996_400 * 10**9 + 500_000_000, True, "EDAC MC0: x")
    when, kernel, message = split_log_line("Nov 14 22:13:20 host kernel: <4>mce: hello", now)
    local = int(time.mktime((2023, 11, 14, 22, 13, 20, 0, 0, -1))) * 10**9
    assert (when, kernel, message) == (local, True, "mce: hello")
    assert split_log_line("Nov 14 22:13:20 host mcelog[99]: CPU 0 BANK 2", now)[1] is False
    assert split_log_line("[Tue Nov 14 22:13:20 2023] mce: x", now) == (local, True, "mce: x")
    assert split_log_line(" kernel:[Hardware Error]: MC4 Error", now) == (
        None,
        True,
        "[Hardware Error]: MC4 Error",
    )


def test_kernel_log_is_told_from_mcelog_text() -> None:
    """dmesg with kernel records is a kernel log; mcelog's own output, even with the
    kernel's 'events logged' line among it, is not."""
    assert looks_like_kernel_log("\n".join(REAL_BLOCK)) is True
    assert looks_like_kernel_log((DATA / "dmesg-mixed.txt").read_text()) is True
    abrt = (
        Path(__file__).parents[2] / "shared/conformance/mcelog-ascii/abrt-nonfatal-mce-journal.txt"
    )
    if abrt.exists():
        assert looks_like_kernel_log(abrt.read_text()) is False
    assert looks_like_kernel_log("CPU 0 BANK 2\nSTATUS 9c00000000000151\n") is False


# -- the /dev/kmsg source -----------------------------------------------------------------
def kmsg_lines(start: int, messages: Iterable[str], *, priority: int = 4) -> str:
    """Records seq start.. of ``messages`` (usec = seq seconds), each with a continuation line."""
    out = []
    for seq, text in enumerate(messages, start=start):
        out.append(f"{priority},{seq},{seq * 1_000_000},-;{text}\n SUBSYSTEM=cpu\n")
    return "".join(out)


class Fake:
    """A fake /dev/kmsg (a file of records) and boot id file under a test directory."""

    def __init__(self, directory: Path) -> None:
        self.kmsg = directory / "kmsg"
        self.boot_id = directory / "boot_id"
        self.kmsg.write_text("")
        self.boot_id.write_text(BOOT_ID + "\n")
        self.sources: list[KmsgSource] = []

    def close(self) -> None:
        for src in self.sources:
            src.close()

    def append(self, text: str) -> None:
        with self.kmsg.open("a") as fh:
            fh.write(text)

    def source(self, bench: SourceBench, start: Position | None = None, **kw: Any) -> KmsgSource:
        """A source on this log from ``start`` (default: what ``bench`` committed)."""
        src = KmsgSource(
            bench.ingest,
            start if start is not None else bench.position("kmsg"),
            path=self.kmsg,
            boot_id_path=self.boot_id,
            boot_ns=BOOT_NS,
            **kw,
        )
        self.sources.append(src)
        return src


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    """A fake kernel log; the sources made on it are closed when the test ends (a "killed"
    source is simply never used again: closing its file commits nothing)."""
    made = Fake(tmp_path)
    yield made
    made.close()


MIXED = [
    "Linux version 6.1.0-57-amd64",
    *REAL_BLOCK,
    "EDAC MC0: 1 CE memory read error on CPU 0 DIMM 1 (channel:0 slot:1 page:0x849923 "
    "offset:0x380 grain:32 syndrome:0x0)",
    "CPU3: Core temperature above threshold, cpu clock throttled (total events = 1)",
]


def classes(bench: SourceBench) -> list[str]:
    return [ev.cls for ev in bench.ereports()]


def test_source_stores_what_it_recognises_and_commits_the_sequence(
    tmp_path: Path, fake: Fake
) -> None:
    """Kernel records become ereports; the position is the boot id and the last sequence
    number; user-space records (facility != 0) are read past but never believed."""
    fake.append(kmsg_lines(0, MIXED))
    fake.append(
        kmsg_lines(
            len(MIXED),
            ["mce: [Hardware Error]: CPU 9: Machine Check: 0 Bank 1: 9000000000000151"],
            priority=12,
        )
    )
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        assert classes(bench) == [
            "ereport.cpu.amd.ic.data_par",  # PROCESSOR 2:...: AMD family 0Fh, bank 1
            "ereport.cpu.generic-x86.mem_ce",
            "ereport.cpu.generic-x86.thermal",
        ]
        mca, edac, _thermal = bench.ereports()
        assert edac.time_ns == BOOT_NS + 5 * 10**9  # boot time + the record's 5 s
        assert edac.payload["resource"].endswith("chip=0/memory-controller=0/dram-channel=0/dimm=1")
        assert (mca.payload["cpuid"], mca.time_ns) == (1, 1795987519 * 10**9)
        pos = bench.position("kmsg")
        assert pos is not None and (pos.ident, pos.offset) == (BOOT_ID, len(MIXED))
        assert (src.stats.rejected, src.stats.state) == (0, "run")


def test_records_appended_later_are_read(tmp_path: Path, fake: Fake) -> None:
    """A second read takes only the records appended since the first."""
    fake.append(kmsg_lines(0, MIXED[:3]))
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        assert classes(bench) == []  # the mce block is not complete yet
        fake.append(kmsg_lines(3, MIXED[3:]))
        bench.poll_once(src)
        assert len(classes(bench)) == 3


def test_kill_and_restart_reads_nothing_twice_and_skips_nothing(tmp_path: Path, fake: Fake) -> None:
    """A source killed with half an mce block read (its lines committed as pending), and a
    second one started from the committed position, store every record exactly once."""
    fake.append(kmsg_lines(0, MIXED[:3]))  # up to the TSC line of the block
    with SourceBench(tmp_path / "db") as bench:
        first = fake.source(bench)
        bench.poll_once(first)
        pos = bench.position("kmsg")
        assert pos is not None and pos.offset == 2
        assert [m[0] for m in pos.document()["pending"]] == [2]
        # "kill": the first source is dropped without stop or close.
    fake.append(kmsg_lines(3, MIXED[3:]))
    with SourceBench(tmp_path / "db") as bench:
        second = fake.source(bench)
        bench.poll_once(second)
        bench.poll_once(second)
        assert len(bench.ereports()) == 3
        assert bench.ereports()[0].payload["cpuid"] == 1  # the block, completed
        pos = bench.position("kmsg")
        assert pos is not None
        assert (pos.offset, pos.document()) == (len(MIXED) - 1, {"at": fake.kmsg.stat().st_size})
    with SourceBench(tmp_path / "db") as bench:
        third = fake.source(bench)
        bench.poll_once(third)
        assert len(bench.ereports()) == 3


def test_a_soft_offline_across_a_restart_is_stored_once_with_its_outcome(
    tmp_path: Path, fake: Fake
) -> None:
    """A source killed after the CEC's line (held as pending) and one restarted from the
    committed position store one memory_failure report, with the failure that came later."""
    fake.append(kmsg_lines(0, CEC_LOG[:2]))
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
        pos = bench.position("kmsg")
        assert pos is not None and [m[0] for m in pos.document()["pending"]] == [1]
    fake.append(kmsg_lines(2, CEC_LOG[2:3]))
    with SourceBench(tmp_path / "db") as bench:
        second = fake.source(bench)
        bench.poll_once(second)
        bench.poll_once(second)
        [report] = bench.ereports()
        assert (report.cls, report.payload["pfn"], report.payload["action_result"]) == (
            MEMORY_FAILURE_CLASS,
            0x10CB39,
            "Failed",
        )
        assert report.time_ns == BOOT_NS + 1 * 10**9  # the CEC line's record (1 s)
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
        assert len(bench.ereports()) == 1


def test_restart_by_sequence_number_alone(tmp_path: Path, fake: Fake) -> None:
    """A position without a byte offset (as /dev/kmsg commits) skips by sequence number."""
    fake.append(kmsg_lines(0, MIXED))
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench, Position(BOOT_ID, 5))
        bench.poll_once(src)
        assert classes(bench) == ["ereport.cpu.generic-x86.thermal"]


def test_a_new_boot_starts_from_the_beginning(tmp_path: Path, fake: Fake) -> None:
    """After a reboot (another boot id) the log is read from its first record, and the
    previous boot's half-read block is stored as it was."""
    fake.append(kmsg_lines(0, MIXED[:3]))
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
    fake.kmsg.write_text(kmsg_lines(0, MIXED[4:]))  # the new boot's log
    fake.boot_id.write_text(OTHER_BOOT)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        old, edac, thermal = bench.ereports()
        # The old block had no PROCESSOR line: its time is its first record's.
        assert (old.payload["cpuid"], old.time_ns) == (1, BOOT_NS + 2 * 10**9)
        assert (edac.cls, thermal.cls) == (
            "ereport.cpu.generic-x86.mem_ce",
            "ereport.cpu.generic-x86.thermal",
        )
        pos = bench.position("kmsg")
        assert pos is not None and (pos.ident, pos.offset) == (OTHER_BOOT, 2)


def test_garbage_records_are_counted_not_fatal(tmp_path: Path, fake: Fake) -> None:
    """Lines without a kmsg header and unreadable blocks are counted with their reason;
    the records around them are stored."""
    fake.append("this is not a kmsg record\n")
    fake.append(
        kmsg_lines(0, ["mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 1: zz", REAL_BLOCK[3]])
    )
    fake.append("4,x,1,-;bad sequence number\n")
    fake.append(kmsg_lines(2, MIXED[-1:]))
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        assert classes(bench) == ["ereport.cpu.generic-x86.thermal"]
        assert src.stats.rejected == 3
        assert src.stats.reasons[REASON_HEADER.split(":")[0][:60]] == 2
        assert src.stats.reasons["unreadable mce record"] == 1


def test_a_gap_in_sequence_numbers_counts_lost_records(tmp_path: Path, fake: Fake) -> None:
    """Records the kernel overwrote before they were read are counted as lost."""
    fake.append(kmsg_lines(0, MIXED[:1]))
    fake.append(kmsg_lines(5, MIXED[-1:]))
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        assert src.stats.reasons[REASON_LOST] == 4
        assert classes(bench) == ["ereport.cpu.generic-x86.thermal"]


def test_an_open_block_is_stored_when_nothing_more_comes(tmp_path: Path, fake: Fake) -> None:
    """A GHES record at the end of the log is stored by the next read that finds nothing new,
    and after a restart in between, by the restarted source: once."""
    lines = (DATA / "ghes.txt").read_text().splitlines()[:11]
    messages = [line.split("kernel: ", 1)[1] for line in lines]
    fake.append(kmsg_lines(0, messages))
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
        assert classes(bench) == []
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        bench.poll_once(src)
        assert classes(bench) == ["ereport.cpu.generic-x86.mem_ce"]
        pos = bench.position("kmsg")
        assert pos is not None and "pending" not in pos.document()


def test_the_source_runs_on_its_thread(tmp_path: Path, fake: Fake) -> None:
    """Started as the daemon starts it, the source stores what the log holds."""
    fake.append(kmsg_lines(0, MIXED))
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench, poll=0.02)
        bench.run_until(src, lambda: len(bench.ereports()) == 3)
        assert src.describe()["position"] == f"{BOOT_ID}:{len(MIXED) - 1}"


def test_probe_says_why_the_source_cannot_run(
    tmp_path: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No log, no boot id, no permission: each is a reason, not an exception."""
    with SourceBench(tmp_path / "db") as bench:
        missing = KmsgSource(bench.ingest, None, path=tmp_path / "nope", boot_id_path=fake.boot_id)
        assert missing.probe() == f"no {tmp_path / 'nope'}"
        no_boot = KmsgSource(bench.ingest, None, path=fake.kmsg, boot_id_path=tmp_path / "nope")
        assert (no_boot.probe() or "").startswith("cannot read the boot id")
        directory = KmsgSource(bench.ingest, None, path=tmp_path, boot_id_path=fake.boot_id)
        assert (
            directory.probe() == f"cannot open {tmp_path}: not a character device or a regular file"
        )

        def denied(*args: Any, **kw: Any) -> int:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(os, "open", denied)
        root_only = KmsgSource(bench.ingest, None, path=fake.kmsg, boot_id_path=fake.boot_id)
        assert root_only.probe() == f"needs root (cannot open {fake.kmsg}: Permission denied)"


REAL_KMSG = Path("/dev/kmsg")
REAL_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@pytest.mark.skipif(not os.access(REAL_KMSG, os.R_OK), reason="/dev/kmsg is not readable here")
def test_the_real_dev_kmsg(tmp_path: Path) -> None:
    """On this machine's own /dev/kmsg the source reads to the end without blocking and
    commits the real boot id with the last sequence number."""
    with SourceBench(tmp_path / "db") as bench:
        src = KmsgSource(bench.ingest, None)
        reason = src.probe()
        if reason is not None:
            pytest.skip(reason)
        bench.poll_once(src)
        src.close()
        pos = bench.position("kmsg")
        assert pos is not None and pos.ident == REAL_BOOT_ID.read_text().strip()
        assert pos.offset >= 0


# -- fminject --format kernel -----------------------------------------------------------------
def test_fminject_checks_a_dmesg_file(tmp_path: Path) -> None:
    """A dmesg file with AMD decoder, EDAC and thermal lines is detected as a kernel log and
    each of its records is a valid event (-n, no daemon)."""
    src = tmp_path / "dmesg.txt"
    src.write_text((DATA / "dmesg-mixed.txt").read_text())
    out = CliRunner().invoke(fminject.cli, ["-n", str(src)])
    assert (out.exit_code, out.output) == (0, "fminject: 5 of 5 events are valid\n")


def test_fminject_kernel_format_reports_bad_records_by_line() -> None:
    """An unreadable record is reported with the line its record starts on."""
    text = "\n".join(
        [
            "[  1.0] boot",
            "[  2.0] mce: [Hardware Error]: TSC 0 ",
            "[  2.1] mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1 SOCKET 0 APIC 1",
        ]
    )
    out = CliRunner().invoke(fminject.cli, ["-n", "--format", "kernel", "-"], input=text)
    assert out.exit_code == 1
    assert out.output.startswith("fminject: <stdin>:2: machine-check lines without")


@pytest.mark.e2e
def test_fminject_sends_a_dmesg_file(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fminject of a dmesg file stores the AMD decoder's record, the EDAC memory report and
    the thermal reports, each marked injected."""
    fmd = FmdProcess(root, props={"platform": "sim"})
    fmd_factory.append(fmd)
    fmd.start()
    src = tmp_path / "dmesg.txt"
    src.write_text((DATA / "dmesg-mixed.txt").read_text())
    out = fmd.cli("fminject", str(src))
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    stored = fmd.errlog_json()
    assert [(e["class"], e["__injected"]) for e in stored] == [
        ("ereport.cpu.generic-x86.mem_ce", True),  # EDAC line in the decoder's output
        ("ereport.cpu.generic-x86.mem_ce", True),  # the Zen UMC record, decoded by fmd
        ("ereport.cpu.generic-x86.mem_ce", True),  # EDAC line
        ("ereport.cpu.generic-x86.thermal", True),
        ("ereport.cpu.generic-x86.thermal", True),
    ]
    umc = stored[1]
    assert (umc["cpuid"], umc["IA32_MCi_STATUS"]) == (1, 0xDC2040000000011B)
