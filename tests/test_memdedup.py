"""The same memory error, once: the report forms of one error paired at ingest
(fmd.hw.memdedup, fmd.xprt.Ingest), and EDAC/firmware reports placed on their DIMM
(fmd.hw.events.dimm_of)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.clock import SimulatedClock
from fmd.errors import EventRejected
from fmd.hw import events
from fmd.hw.dedup import HardwareDedup
from fmd.hw.kmsg import ALL_FORMS, KmsgEvent, KmsgFailure, KmsgParser, Message
from fmd.hw.memdedup import (
    FORM_EDAC,
    FORM_GHES,
    FORM_MCE,
    FORMS,
    MAX_PER_SLOT,
    PAIR_WINDOW_NS,
    MemoryPairing,
    MemoryReport,
    form_of,
    same_error,
)
from fmd.hw.topo import SimPlatform
from fmd.hw.tracefs import TraceRecord, parse_trace_line
from fmd.protocol import Ereport
from fmd.xprt import DuplicateEvent, Ingest, XprtStats
from fmd.xprts.source import Batch, Position, Source
from tests.fmdproc import FmdProcess
from tests.source_harness import SourceBench
from tests.test_per_event_cost import assert_constant

SIM = SimPlatform(hostname="h")
MEM_CE = events.MEM_CE_CLASS
MEM_UE = events.MEM_UE_CLASS
# The kernel's TIME of the machine checks below (epoch seconds), and in ns.
TIME_S = 1795987519
T0 = TIME_S * 10**9
S = 10**9
DIMM = "motherboard=0/chip={}/memory-controller=0/dram-channel={}/dimm={}"

# An Intel (Skylake-SP) corrected memory read error on channel 1, address
# 0x12345040 at cache-line granularity (MISC: physical mode, LSB 6): on the sim
# platform chip 0, channel 1 (pa[12]), DIMM 0 (pa[13]), rank 1 (pa[14]).
MCE_BLOCK = [
    "mce: [Hardware Error]: Machine check events logged",
    "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 7: 8c00004000010091",
    "mce: [Hardware Error]: TSC 0 ADDR 12345040 MISC 86 ",
    f"mce: [Hardware Error]: PROCESSOR 0:50654 TIME {TIME_S} SOCKET 0 APIC 1 microcode 2006e05",
]
# The skx_edac report of the same error.
EDAC_LINE = (
    "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0 "
    "page:0x12345 offset:0x40 grain:32 syndrome:0x0 - err_code:0x0000:0x0091)"
)
# An AMD family 15h northbridge DRAM ECC error and amd64_edac's report of it, printed
# in the middle of the decoder's lines (amd64_edac lays its layers out as csrow, channel).
AMD_BLOCK = [
    "[Hardware Error]: CPU:2 (15:2:0) MC4_STATUS[Over|CE|MiscV|-|AddrV|CECC]: 0xdc5c410004080a13",
    "[Hardware Error]: MC4_ADDR: 0x0000000112345040",
    "EDAC MC0: 1 CE on mc#0csrow#1channel#1 (csrow:1 channel:1 page:0x112345 offset:0x40 "
    "grain:64 syndrome:0x5c0a)",
    "[Hardware Error]: cache level: L3/GEN, mem/io: MEM, mem-tx: RD, part-proc: RES (no timeout)",
]
# Firmware first: the CPER memory section, ghes_edac's report, and the machine check
# Linux makes up for it (bank -1, printed as 255; MCACOD 0x9F; MISC = (2 << 6) | LSB).
GHES_BLOCK = [
    "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 4",
    "{1}[Hardware Error]: It has been corrected by h/w and requires no further action",
    "{1}[Hardware Error]: event severity: corrected",
    "{1}[Hardware Error]:  Error 0, type: corrected",
    "{1}[Hardware Error]:   section_type: memory error",
    "{1}[Hardware Error]:   physical_address: 0x0000000012345040",
    "{1}[Hardware Error]:   physical_address_mask: 0xffffffffffffffc0",
    "{1}[Hardware Error]:   node:0 card:1 module:0 rank:1",
    "{1}[Hardware Error]:   error_type: 2, single-bit ECC",
    "{1}[Hardware Error]:   DIMM location: CPU 0 DIMM 2",
]
GHES_EDAC_LINE = (
    "EDAC MC0: 1 CE single-bit ECC on CPU 0 DIMM 2 (memory:2 page:0x12345 offset:0x40 "
    "grain:64 syndrome:0x0 - APEI location: node:0 card:1 module:0 rank:1)"
)


def made_up_block(misc: str = "86") -> list[str]:
    """The kernel's print of the record Linux makes up for a firmware memory section."""
    return [
        "mce: [Hardware Error]: Machine check events logged",
        "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 255: 9c0000000000009f",
        f"mce: [Hardware Error]: TSC 0 ADDR 12345040 MISC {misc} ",
        f"mce: [Hardware Error]: PROCESSOR 0:50654 TIME {TIME_S} SOCKET 0 APIC 0 microcode 1",
    ]


def kernel(lines: Sequence[str], at_ns: int = T0) -> list[dict[str, Any]]:
    """The wire objects of kernel log ``lines`` as fminject makes them (no platform),
    the n-th message logged at ``at_ns`` + n/10 s."""
    parser = KmsgParser(None, ALL_FORMS)
    out = []
    for n, text in enumerate(lines, start=1):
        out.extend(parser.feed(Message(n, text, at_ns + n * S // 10)))
    out.extend(parser.flush())
    assert [r for r in out if isinstance(r, KmsgFailure)] == []
    return [r.obj for r in out if isinstance(r, KmsgEvent)]


def make_ingest(platform: Any = SIM) -> tuple[Ingest, XprtStats, SimulatedClock]:
    clock = SimulatedClock(T0 + 60 * S)
    ingest = Ingest(
        submit=lambda op: None,
        clock=clock,
        kick_timers=lambda: None,
        max_line=1 << 20,
        err_limit=100,
        err_window_ns=60 * S,
        platform=platform,
        dedup=HardwareDedup(),
    )
    return ingest, ingest.register("test", "test"), clock


def decode(ingest: Ingest, stats: XprtStats, objs: Iterable[dict[str, Any]]) -> list[Ereport]:
    """The ereports ``objs`` make through ``ingest`` (duplicates left out)."""
    kept = []
    for obj in objs:
        try:
            ev = ingest.decode(orjson.dumps(obj), stats)
        except DuplicateEvent:
            continue
        assert isinstance(ev, Ereport)
        kept.append(ev)
    return kept


def stored(*objs: dict[str, Any]) -> tuple[list[Ereport], int]:
    """The ereports kept of ``objs`` fed in that order, and the duplicates counted."""
    ingest, stats, _ = make_ingest()
    kept = decode(ingest, stats, objs)
    return kept, stats.duplicates


def form(ev: Ereport) -> str | None:
    return form_of(ev.payload)


# -- pairing, through Ingest --------------------------------------------------------------
def test_intel_machine_check_and_edac_line_are_one_ereport_in_either_order() -> None:
    """The mce: block and the EDAC line of one error make one stored ereport: the first
    to arrive, whichever form; the other is a counted duplicate."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    kept, dups = stored(mce, edac)
    assert ([form(ev) for ev in kept], dups) == ([FORM_MCE], 1)
    kept, dups = stored(edac, mce)
    assert ([form(ev) for ev in kept], dups) == ([FORM_EDAC], 1)
    assert kept[0].payload["physaddr"] == 0x12345040


def test_duplicate_form_is_answered_with_the_kept_ena() -> None:
    """The second form raises DuplicateEvent naming the ENA of the report kept (the
    socket answers ok/duplicate with it), and is counted on its transport."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    ingest, stats, _ = make_ingest()
    first = ingest.decode(orjson.dumps(mce), stats)
    assert isinstance(first, Ereport)
    with pytest.raises(DuplicateEvent) as raised:
        ingest.decode(orjson.dumps(edac), stats)
    assert (raised.value.ena, stats.duplicates, stats.rejected) == (first.ena, 1, 0)


def test_tracepoint_forms_pair() -> None:
    """mce:mce_record and ras:mc_event of one error (the tracefs source) pair too."""
    mce_line = (
        "  kworker/1:1-77 [001] d..1. 100.000250: mce_record: CPU: 1, MCGc/s: f000c14/0, "
        "MC7: 8c00004000010091, IPID: 0000000000000000, "
        "ADDR/MISC/SYND: 0000000012345040/0000000000000086/0000000000000000, "
        "RIP: 00:<0000000000000000>, TSC: 2f1ad9c4e1, PPIN: 0, PROCESSOR: 0:50654, "
        f"TIME: {TIME_S}, SOCKET: 0, APIC: 1, MICROCODE: 2006e05"
    )
    mc_line = (
        "  kworker/u8:2-123 [002] ..... 100.500000: mc_event: 1 Corrected error: memory read "
        "error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (mc:0 location:1:0:-1 address:0x12345040 "
        "grain:32 syndrome:0x00000000 err_code:0x0000:0x0091)"
    )
    boot_ns = T0 - 100 * S
    objs = []
    for line in (mc_line, mce_line):
        parsed = parse_trace_line(line, boot_ns=boot_ns)
        assert isinstance(parsed, TraceRecord), parsed
        objs.append(parsed.obj)
    kept, dups = stored(*objs)
    assert ([form(ev) for ev in kept], dups) == ([FORM_EDAC], 1)


def test_amd_decoder_and_amd64_edac_line_are_one_ereport() -> None:
    """The AMD decoder's northbridge DRAM ECC record and amd64_edac's line pair, and
    the EDAC report (printed first) is placed by its csrow/channel layers."""
    objs = kernel(AMD_BLOCK)
    assert [o.get("class", "mca") for o in objs] == [MEM_CE, "mca"]
    kept, dups = stored(*objs)
    assert ([form(ev) for ev in kept], dups) == ([FORM_EDAC], 1)
    assert kept[0].payload["resource"].endswith(DIMM.format(0, 1, 0))
    kept, dups = stored(*reversed(objs))
    assert ([form(ev) for ev in kept], dups) == ([FORM_MCE], 1)


def test_amd_family_10h_refined_record_is_not_paired() -> None:
    """On family 10h the decoder's record takes its refined ereport.cpu.amd.nb class,
    diagnosed by the AMD engine, not cpumem: it is not paired with the EDAC report."""
    objs = kernel([AMD_BLOCK[0].replace("(15:2:0)", "(10:9:1)"), *AMD_BLOCK[1:]])
    kept, dups = stored(*objs)
    assert ([ev.cls for ev in kept], dups) == ([MEM_CE, "ereport.cpu.amd.nb.mem_ce"], 0)


def test_zen_umc_record_without_an_address_is_not_paired() -> None:
    """A Zen UMC record names no page (its address is a normalized DRAM address): it is
    not paired with amd64_edac's line, which does (both are stored)."""
    objs = kernel(
        [
            "[Hardware Error]: CPU:1 (19:18:1) MC17_STATUS[Over|CE|MiscV|AddrV|-|-|SyndV|CECC|"
            "-|-|-]: 0xdc2040000000011b",
            "[Hardware Error]: Error Addr: 0x00000001b7c4a040",
            "[Hardware Error]: IPID: 0x0000009600050f00, Syndrome: 0x000000005c0a0a00",
            "EDAC MC0: 1 CE on mc#0csrow#1channel#0 (csrow:1 channel:0 page:0x1b7c4a "
            "offset:0x40 grain:64 syndrome:0x5c0a)",
            "[Hardware Error]: cache level: L3/ACC, tx: GEN, mem-tx: RD",
        ]
    )
    kept, dups = stored(*objs)
    assert (len(kept), dups) == (2, 0)
    assert "physaddr" not in kept[1].payload


def test_firmware_first_three_forms_are_one_ereport() -> None:
    """The CPER memory section, ghes_edac's line and Linux's made-up machine check of
    one error make one stored ereport, in any order."""
    objs = [*kernel([*GHES_BLOCK, GHES_EDAC_LINE]), *kernel(made_up_block())]
    assert [form_of(o) if "mca" not in o else FORM_MCE for o in objs] == [
        FORM_GHES,
        FORM_EDAC,
        FORM_MCE,
    ]
    for order in itertools.permutations(objs):
        kept, dups = stored(*order)
        assert (len(kept), dups) == (1, 2)
        assert kept[0].cls == MEM_CE


def test_made_up_record_without_usable_address_is_memory_not_a_cpu_error() -> None:
    """Linux's made-up record whose LSB is wider than a page has no usable address: it
    becomes a memory ereport without physaddr (never the gcpu ``mc`` class a CPU fault
    is diagnosed from), and still pairs with its CPER section by its ADDR's page."""
    [wide] = kernel(made_up_block(misc="9f"))
    [alone], dups = stored(wide)
    assert (alone.cls, "physaddr" in alone.payload, dups) == (MEM_CE, False, 0)
    section, _ = kernel([*GHES_BLOCK, GHES_EDAC_LINE])
    kept, dups = stored(section, wide)
    assert ([form(ev) for ev in kept], dups) == ([FORM_GHES], 1)
    ue = dict(wide["mca"], status="0xbc0000000000009f")
    [ev], _ = stored({"mca": ue})
    assert ev.cls == MEM_UE


def test_made_up_record_on_an_amd_host_is_memory() -> None:
    """On an SMCA host the made-up record is no identifiable bank: it becomes a memory
    ereport too, not ``ereport.cpu.amd.smca.unidentified``."""
    [obj] = kernel(made_up_block())
    raw = dict(obj["mca"], vendor="AuthenticAMD", family=0x19, model=1)
    [ev], _ = stored({"mca": raw})
    assert ev.cls == MEM_CE


def test_two_real_repeats_are_two_ereports() -> None:
    """Two machine checks and two EDAC lines of one page in a second are two errors:
    each kept report absorbs one report of each other form, never two."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    mce2 = {"mca": dict(mce["mca"], tsc="0x1")}  # another record, same page and time
    for order in ((mce, edac, mce2, edac), (mce, mce2, edac, edac), (edac, edac, mce, mce2)):
        kept, dups = stored(*order)
        assert (len(kept), dups) == (2, 2), order


def test_other_page_line_kind_or_time_is_not_paired() -> None:
    """Another page, another cache line (both reports line-precise), the other kind
    (corrected vs uncorrected) or times beyond the window: no pairing."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    other_page = dict(edac, physaddr=0x12346040)
    other_line = dict(edac, physaddr=0x12345080)
    other_kind = dict(edac, **{"class": MEM_UE})
    [late] = kernel([EDAC_LINE], at_ns=T0 + PAIR_WINDOW_NS + 2 * S)
    for obj in (other_page, other_line, other_kind, late):
        kept, dups = stored(mce, obj)
        assert (len(kept), dups) == (2, 0), obj


def test_page_granular_report_pairs_with_any_line_of_its_page() -> None:
    """A report that names only a page (EDAC grain 4096) pairs with a line-precise one
    anywhere in that page: addresses compare at the coarser granularity."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    coarse = dict(edac, physaddr=0x12345000, grain=4096)
    kept, dups = stored(mce, coarse)
    assert (len(kept), dups) == (1, 1)


def test_reports_without_their_own_time_pair_by_receipt() -> None:
    """A log without dates gives its EDAC line no time: it pairs with the machine check
    received with it, by receipt time, whatever the machine check's own TIME."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    undated = {k: v for k, v in edac.items() if k != "time"}
    ingest, stats, clock = make_ingest()
    clock.advance(3600 * S)  # the log is read an hour later
    assert len(decode(ingest, stats, [mce, undated])) == 1
    clock.advance(PAIR_WINDOW_NS + S)
    assert len(decode(ingest, stats, [undated])) == 1


def test_hand_written_and_address_less_memory_ereports_are_never_paired() -> None:
    """Memory ereports of no known form, or without an address, are stored as they come."""
    plain = {"class": MEM_CE, "time": TIME_S, "physaddr": 0x12345040}
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    no_address = {k: v for k, v in edac.items() if k != "physaddr"}
    kept, dups = stored(mce, plain, plain, no_address, no_address)
    assert (len(kept), dups) == (5, 0)


def test_exact_copy_and_another_form_are_both_duplicates() -> None:
    """A record read twice (tracepoint and log) and its EDAC line: one stored ereport,
    two duplicates (the copy by identity, the line by pairing)."""
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    kept, dups = stored(mce, edac, mce)
    assert (len(kept), dups) == (1, 2)


# -- attribution ---------------------------------------------------------------------------
def test_injected_edac_lines_are_placed_on_their_dimm() -> None:
    """fminject sends EDAC lines without a resource (it knows no platform); Ingest places
    them on the sim DIMM by label, or by position read with the driver's layer names."""
    lines = [
        # sbridge/skx: (channel, slot) on memory controller 1 = chip 1.
        "EDAC MC1: 1 CE memory read error on CPU_SrcID#1_Ha#0_Chan#1_DIMM#1 (channel:1 slot:1 "
        "page:0x400001 offset:0x0 grain:32 syndrome:0x0 - area:DRAM)",
        # amd64_edac: (csrow, channel); csrow 3 is the second rank of DIMM 1.
        "EDAC MC2: 1 CE on mc#2csrow#3channel#0 (csrow:3 channel:0 page:0x800003 offset:0x40 "
        "grain:64 syndrome:0x1)",
        # A label the platform knows.
        "EDAC MC0: 1 UE memory read error on CPU 3 DIMM 2 (channel:9 slot:9 page:0x900000 "
        "offset:0x0 grain:32)",
    ]
    evs, dups = stored(*kernel(lines))
    assert dups == 0
    assert [ev.payload["resource"].split("/", 3)[-1] for ev in evs] == [
        DIMM.format(1, 1, 1),
        DIMM.format(2, 0, 1),
        DIMM.format(3, 1, 0),
    ]
    assert [ev.detector_str for ev in evs] == [ev.payload["resource"] for ev in evs]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "EDAC MC1: 1 CE on mc#1csrow#3channel#0 (csrow:3 channel:0 page:0x400001 "
            "offset:0x40 grain:64 syndrome:0x1)",
            DIMM.format(1, 0, 1),
        ),
        (
            "EDAC MC2: CE page 0x800001, offset 0x40, grain 64, syndrome 0x1, row 2, "
            'channel 1, label "": amd64_edac',
            DIMM.format(2, 1, 1),
        ),
    ],
)
def test_parser_with_a_platform_reads_amd64_layers(line: str, expected: str) -> None:
    """The kernel-log parser, given the platform (the /dev/kmsg source), places
    amd64_edac's csrow/channel reports (today's form and the 2.6 one) on the right DIMM."""
    parser = KmsgParser(SIM, ALL_FORMS)
    [result] = [*parser.feed(Message(1, line, T0)), *parser.flush()]
    assert isinstance(result, KmsgEvent)
    assert result.obj["resource"].endswith(expected)


def test_attribution_needs_a_platform_and_readable_members() -> None:
    """Without a platform, or with members of the wrong type, the report is stored as it
    came (no resource), never rejected."""
    [edac] = kernel([EDAC_LINE])
    ingest, stats, _ = make_ingest(platform=None)
    [ev] = decode(ingest, stats, [edac])
    assert "resource" not in ev.payload
    bad = dict(edac, edac_label=["x"], edac_mc="0", edac_location=[1, "0"], edac_layer_names=7)
    [ev], _ = stored(bad)
    assert "resource" not in ev.payload


def test_a_resource_sent_is_kept() -> None:
    """A report that names its resource keeps it (the source knew better)."""
    [edac] = kernel([EDAC_LINE])
    given_resource = "hc://:product-id=p/motherboard=0/chip=3/memory-controller=0"
    [ev], _ = stored(dict(edac, resource=given_resource))
    assert ev.payload["resource"] == given_resource


@pytest.mark.parametrize(
    ("names", "layers", "expected"),
    [
        (None, [1, 1], DIMM.format(1, 1, 1)),  # (channel, slot) by default
        (["channel", "slot"], [0, 1, -1], DIMM.format(1, 0, 1)),
        (["csrow", "channel"], [3, 0], DIMM.format(1, 0, 1)),
        (["csrow", "channel"], [0, 1], DIMM.format(1, 1, 0)),
        (["branch", "channel", "slot"], [0, 1, 1], None),  # branch numbering unknown
        (["memory"], [2], None),  # ghes_edac: a DIMM index, not a position
        (["csrow"], [2], None),  # no channel
    ],
)
def test_dimm_of_reads_layers_by_their_names(
    names: list[str] | None, layers: list[int], expected: str | None
) -> None:
    """dimm_of honours the layer names: a slot is the DIMM, a csrow a chip select (two
    per DIMM); EDAC's controller 1 is the sim platform's second controller (chip 1)."""
    found = events.dimm_of(SIM, mc=1, layers=layers, layer_names=names)
    assert (None if found is None else found.to_string().split("/", 3)[-1]) == expected


def test_default_label_gives_the_layer_names() -> None:
    """A label EDAC made from the position (mc#0csrow#1channel#0) says the layout, so
    the tracepoint's unnamed layers are read right; other labels say nothing."""
    assert events.layer_names_of_label("mc#0csrow#1channel#0") == ("csrow", "channel")
    assert events.layer_names_of_label("CPU_SrcID#0_Ha#0_Chan#0_DIMM#0") is None
    assert events.layer_names_of_label("mc#0bogus#1") is None
    found = events.dimm_of(SIM, label="mc#0csrow#3channel#1", mc=0, layers=[3, 1, -1])
    assert found is not None and found.to_string().endswith(DIMM.format(0, 1, 1))


def test_controller_beyond_the_platform_names_no_dimm() -> None:
    """An EDAC controller number the platform does not have names no DIMM."""
    assert events.dimm_of(SIM, mc=4, layers=[0, 0]) is None
    assert events.dimm_of(SIM, mc=-1, layers=[0, 0]) is None


def test_edac_memory_keeps_the_layer_names_it_is_given() -> None:
    """edac_memory records the layer names and places the DIMM with them."""
    obj = events.edac_memory(
        SIM, err_type="Corrected", time=None, mc=0, layers=[2, 1], layer_names=["csrow", "channel"]
    )
    assert obj["edac_layer_names"] == ["csrow", "channel"]
    assert obj["resource"].endswith(DIMM.format(0, 1, 1))


# -- the pairing memory --------------------------------------------------------------------
def report(
    form: str,
    *,
    address: int = 0x12345040,
    shift: int = 6,
    time_ns: int = T0,
    recv_ns: int = T0,
    own_time: bool = True,
    ena: int = 1,
    uncorrected: bool = False,
) -> MemoryReport:
    return MemoryReport(form, uncorrected, address, shift, time_ns, own_time, recv_ns, ena)


def test_same_error_compares_at_the_coarser_granularity_and_within_the_window() -> None:
    """Line-precise reports compare lines, a page-granular one the page; own times
    within the window, or receipt times when one has no time of its own."""
    a = report(FORM_MCE)
    assert same_error(a, report(FORM_EDAC, address=0x12345058))
    assert not same_error(a, report(FORM_EDAC, address=0x12345080))
    assert same_error(a, report(FORM_EDAC, address=0x12345080, shift=12))
    assert not same_error(a, report(FORM_EDAC, time_ns=T0 + PAIR_WINDOW_NS + 1))
    assert same_error(a, report(FORM_EDAC, time_ns=T0 + 99 * S, own_time=False))
    assert not same_error(a, report(FORM_EDAC, recv_ns=T0 + 99 * S, own_time=False))


def test_a_kept_report_whose_store_failed_is_forgotten() -> None:
    """When the kept report's store fails, the next form of the error is kept instead."""
    pairing = MemoryPairing()
    assert pairing.pair(report(FORM_MCE, ena=7)) is None
    pairing.forget([7])
    assert pairing.pair(report(FORM_EDAC, ena=8)) is None
    assert pairing.pair(report(FORM_MCE, ena=9)) == 8


def test_kept_reports_expire_and_are_bounded() -> None:
    """Kept reports go RETAIN after receipt, past the cap, past MAX_PER_SLOT of one form
    on one page, and once they have absorbed every other form."""
    pairing = MemoryPairing(max_entries=8)
    for i in range(20):
        pairing.pair(report(FORM_MCE, address=0x1000 * (i + 1), ena=i))
    assert len(pairing) <= 8
    pairing = MemoryPairing()
    for i in range(MAX_PER_SLOT + 5):
        pairing.pair(report(FORM_MCE, ena=i))
    assert len(pairing) == MAX_PER_SLOT
    late = report(FORM_EDAC, recv_ns=T0 + 3600 * S, own_time=False)
    assert pairing.pair(late) is None  # everything before has expired
    assert len(pairing) == 1
    pairing = MemoryPairing()
    pairing.pair(report(FORM_GHES, ena=1))
    assert (pairing.pair(report(FORM_EDAC)), pairing.pair(report(FORM_MCE))) == (1, 1)
    assert len(pairing) == 0


@given(
    st.integers(1, 6),
    st.sets(st.sampled_from(FORMS), min_size=1),
    st.randoms(use_true_random=False),
)
def test_errors_reported_alike_are_each_kept_once(errors: int, forms: set[str], rng: Any) -> None:
    """However many errors hit one line at one time, when each is reported in the same
    forms (each error's forms in any order), one report of each is kept."""
    pairing = MemoryPairing()
    kept = 0
    ena = itertools.count(1)
    for _ in range(errors):
        order = sorted(forms)
        rng.shuffle(order)
        for f in order:
            kept += pairing.pair(report(f, ena=next(ena))) is None
    assert kept == errors
    assert pairing.paired == errors * (len(forms) - 1)


def test_pairing_costs_the_same_per_event() -> None:
    """A storm of one form on one page, and of paired forms over many pages: pairing's
    work per report does not grow with the run, and what it keeps stays bounded."""

    def run(n: int) -> tuple[Callable[[Any], object], list[Any]]:
        # A cap both runs reach: each is measured in its steady state.
        pairing = pairings[0] = MemoryPairing(max_entries=256)
        reports = []
        for i in range(n):
            t = T0 + i * 10**6
            reports.append(report(FORM_MCE, time_ns=t, recv_ns=t, ena=2 * i))
            page = (i % 512) << 12
            reports.append(report(FORM_EDAC, address=page, time_ns=t, recv_ns=t, ena=2 * i + 1))
            reports.append(report(FORM_MCE, address=page, time_ns=t, recv_ns=t, ena=2 * i + 1))
        return pairing.pair, reports

    pairings = [MemoryPairing()]
    assert_constant(run)
    assert len(pairings[0]) <= pairings[0].max_entries


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_MEMBERS = st.sampled_from(
    [
        "physaddr", "grain", "cper_physical_address_mask", "IA32_MCi_STATUS", "IA32_MCi_ADDR",
        "bank_number", "source", "cper_severity", "edac_error_type", "edac_label", "edac_mc",
        "edac_location", "edac_layer_names", "resource",
    ]
)  # fmt: skip


@given(st.sampled_from([MEM_CE, MEM_UE]), st.dictionaries(_MEMBERS, _JSON, max_size=8))
def test_any_memory_payload_is_stored_or_rejected_never_a_defect(
    cls: str, members: dict[str, Any]
) -> None:
    """Whatever a memory ereport's members hold, pairing and attribution store it, pair
    it or leave it to the usual checks: never an exception of fmd's own."""
    ingest, stats, _ = make_ingest()
    obj = {"class": cls, "time": TIME_S, **members}
    for _ in range(2):
        try:
            ingest.decode(orjson.dumps(obj), stats)
        except DuplicateEvent:
            pass
        except EventRejected as exc:
            assert not str(exc).startswith("cannot decode this line"), exc


class _Watched(MemoryPairing):
    """A pairing memory that notes every report it is asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[MemoryReport] = []

    def pair(self, report: MemoryReport) -> int | None:
        self.seen.append(report)
        return super().pair(report)


def test_only_memory_ereports_reach_pairing() -> None:
    """Only memory classes are looked at: another class (and a raw record that decodes
    to one) is decoded as before, without a look at its payload."""
    ingest, stats, _ = make_ingest()
    ingest.pairing = watched = _Watched()
    mce, edac = kernel([*MCE_BLOCK, EDAC_LINE])
    cache = {"mca": dict(mce["mca"], bank=1, status="0x9000000000000151")}
    decode(ingest, stats, [{"class": "ereport.io.pcie.aer.ce", "time": TIME_S}, cache])
    assert watched.seen == []
    decode(ingest, stats, [mce, edac])
    assert [r.form for r in watched.seen] == [FORM_MCE, FORM_EDAC]


# -- through a store, and through the daemon -------------------------------------------------
class _Objects(Source):
    """A source that yields given wire objects, one batch each."""

    kind = "test"

    def __init__(self, bench: SourceBench, objs: list[dict[str, Any]]) -> None:
        super().__init__(bench.ingest, "objects", None)
        self.objs = objs

    def probe(self) -> str | None:
        return None

    def read(self) -> list[Batch]:
        return [Batch([obj], Position("b", i)) for i, obj in enumerate(self.objs)]


def test_a_source_stores_one_ereport_per_error(tmp_path: Path) -> None:
    """Through a real store: the three firmware-first forms and a second error's two
    Intel forms are two stored ereports and three duplicates."""
    objs = [
        *kernel([*GHES_BLOCK, GHES_EDAC_LINE]),
        *kernel(made_up_block()),
        *kernel([*MCE_BLOCK, EDAC_LINE], at_ns=T0 + 60 * S),
    ]
    objs[-2]["mca"]["time"] = TIME_S + 60
    with SourceBench(tmp_path) as bench:
        bench.ingest.dedup = HardwareDedup()
        src = _Objects(bench, objs)
        bench.poll_once(src)
        assert (len(bench.ereports()), src.stats.duplicates, src.stats.rejected) == (2, 3, 0)


KERNEL_LOG = f"""\
[  100.000000] mce: [Hardware Error]: Machine check events logged
[  100.000001] mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 7: 8c00004000010091
[  100.000002] mce: [Hardware Error]: TSC 0 ADDR 12345040 MISC 86\x20
[  100.000003] mce: [Hardware Error]: PROCESSOR 0:50654 TIME {TIME_S} SOCKET 0 APIC 1 microcode 1
[  100.000010] {EDAC_LINE}
[  200.000000] EDAC MC1: 1 CE on mc#1csrow#3channel#0 (csrow:3 channel:0 page:0x400001 \
offset:0x40 grain:64 syndrome:0x1)
"""


@pytest.mark.e2e
def test_fminject_of_both_forms_stores_one_ereport(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A kernel log holding the mce: block and the EDAC line of one error, and an EDAC
    line of another: two ereports stored, one duplicate said and counted, and the lone
    EDAC report placed on its DIMM by the daemon."""
    fmd = FmdProcess(root, props={"platform": "sim"})
    fmd_factory.append(fmd)
    fmd.start()
    src = tmp_path / "dmesg.txt"
    src.write_text(KERNEL_LOG)
    out = fmd.cli("fminject", str(src))
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert out.stdout.splitlines()[-1] == (
        "fminject: 3 of 3 events accepted (1 already stored, not stored again)"
    )
    stored_events = fmd.errlog_json()
    assert [e["class"] for e in stored_events] == [MEM_CE, MEM_CE]
    first, second = stored_events
    assert "IA32_MCi_STATUS" in first
    assert second["resource"].endswith(DIMM.format(1, 0, 1))
    out = fmd.cli("fmstat", "-t", "--json")
    [row] = [r for r in orjson.loads(out.stdout) if r["module"] == "socket"]
    assert row["ev_dup"] == 1
