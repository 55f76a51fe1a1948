"""fmd.hw.cpuid: Linux's x86 vendor numbers and CPUID signatures, as every reader decodes them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.hw import cpuid, rasdaemon
from fmd.hw.kmsg import KmsgEvent, KmsgParser, Message
from fmd.hw.mca import decode
from fmd.hw.mce_struct import MceWire, decode_record, encode_record
from fmd.hw.mcelog import ParsedMca, parse_mce_text
from fmd.hw.telemetry import record_from_json
from fmd.hw.tracefs import TraceRecord, parse_trace_line

# A Hygon Dhyana (family 18h) UMC corrected DRAM error as the kernel logs it:
# PROCESSOR 9 is X86_VENDOR_HYGON, CPUID 900f01 is family 0Fh + 09h, model 0.
HYGON_BLOCK = [
    "mce: [Hardware Error]: CPU 4: Machine Check: 0 Bank 15: dc2040000000011b",
    "mce: [Hardware Error]: TSC 0 ADDR 1b7c4a040 MISC d01a000101000000 SYND 5c0a0a00 "
    "IPID 9600050f00",
    "mce: [Hardware Error]: PROCESSOR 9:900f01 TIME 1700000000 SOCKET 0 APIC 4 microcode 900006",
]
# A record from a Zhaoxin KX-6000 (X86_VENDOR_ZHAOXIN = 10; CPUID 107b5 is family 7,
# model 1Bh: the kernel counts the extended model from family 6 on).
ZHAOXIN_TEXT = """\
CPU 0 BANK 1
STATUS 9000004000010005
PROCESSOR 10:107b5
"""


def test_linux_vendor_numbers_follow_asm_processor_h() -> None:
    """The table is Linux's X86_VENDOR_*: 7 Transmeta, 8 NSC, 9 Hygon, 10 Zhaoxin, 11 Vortex."""
    assert dict(cpuid.LINUX_VENDORS) == {
        0: "GenuineIntel",
        1: "CyrixInstead",
        2: "AuthenticAMD",
        3: "UMC UMC UMC ",
        5: "CentaurHauls",
        7: "GenuineTMx86",
        8: "Geode by NSC",
        9: "HygonGenuine",
        10: "  Shanghai  ",
        11: "Vortex86 SoC",
    }
    assert cpuid.vendor_name(4) is None
    assert cpuid.vendor_name(16, cpuid.XEN_VENDORS) == "HygonGenuine"


def test_mcelog_processor_9_is_hygon_and_gets_amd_decoding() -> None:
    """``PROCESSOR 9:...`` is HygonGenuine family 18h, decoded as an SMCA UMC memory error
    (it was read as "Geode by NSC" and decoded as a generic bank)."""
    [item] = parse_mce_text("\n".join(HYGON_BLOCK))
    assert isinstance(item, ParsedMca)
    record = item.record
    assert (record.vendor, record.family, record.model) == ("HygonGenuine", 0x18, 0)
    decoded = decode(record)
    assert decoded.smca is not None
    assert (decoded.is_memory, decoded.memory_only) == (True, True)


def test_mcelog_processor_10_is_zhaoxin() -> None:
    """``PROCESSOR 10:...`` is Zhaoxin ("  Shanghai  "), family 7 model 1Bh."""
    [item] = parse_mce_text(ZHAOXIN_TEXT)
    assert isinstance(item, ParsedMca)
    assert (item.record.vendor, item.record.family, item.record.model) == ("  Shanghai  ", 7, 0x1B)


def test_mcelog_vendor_words_and_unknown_numbers() -> None:
    """mcelog's short vendor word names the vendor; an unassigned number stays visible."""
    text = "CPU 0 BANK 1\nSTATUS 9000004000010005\nCPUID Vendor Hygon Family 24 Model 0\n"
    [named] = parse_mce_text(text)
    [unknown] = parse_mce_text("CPU 0 BANK 1\nSTATUS 9000004000010005\nPROCESSOR 4:306c3\n")
    assert isinstance(named, ParsedMca) and isinstance(unknown, ParsedMca)
    assert (named.record.vendor, unknown.record.vendor) == ("HygonGenuine", "vendor-4")


def test_kernel_log_block_of_a_hygon_part() -> None:
    """The kernel log's mce: block of a Hygon part carries its vendor through."""
    parser = KmsgParser()
    out = [r for n, t in enumerate(HYGON_BLOCK, 1) for r in parser.feed(Message(n, t))]
    [event] = out
    assert isinstance(event, KmsgEvent)
    assert (event.obj["mca"]["vendor"], event.obj["mca"]["family"]) == ("HygonGenuine", 0x18)


def test_tracepoint_vendor_9_is_hygon() -> None:
    """The mce_record tracepoint's ``PROCESSOR: 9:...`` is Hygon (it was read as nothing)."""
    line = (
        "<idle>-0 [004] d.h2. 51.500000: mce_record: CPU: 4, MCGc/s: 100011c/0, "
        "MC15: dc2040000000011b, IPID: 0000009600050f00, ADDR: 00000001b7c4a040, "
        "MISC: d01a000101000000, SYND: 000000005c0a0a00, RIP: 00:<0000000000000000>, "
        "TSC: 0, PPIN: 0, vendor: 9, CPUID: 900f01, time: 1700000000, socket: 0, APIC: 4"
    )
    parsed = parse_trace_line(line)
    assert isinstance(parsed, TraceRecord)
    mca: dict[str, Any] = parsed.obj["mca"]
    assert (mca["vendor"], mca["family"], mca["model"]) == ("HygonGenuine", 0x18, 0)
    zhaoxin = parse_trace_line(line.replace("vendor: 9", "vendor: 10"))
    assert isinstance(zhaoxin, TraceRecord)
    assert zhaoxin.obj["mca"]["vendor"] == "  Shanghai  "


def test_rasdaemon_and_struct_mce_vendor_9_is_hygon() -> None:
    """rasdaemon's cpuvendor column and struct mce's cpuvendor byte read 9 as Hygon."""
    row = {"bank": 15, "status": 0x1C2040000000011B, "cpuvendor": 9, "cpuid": 0x900F01}
    mca = rasdaemon.mce_item(row)["mca"]
    assert (mca["vendor"], mca["family"]) == ("HygonGenuine", 0x18)
    got = decode_record(encode_record({"status": 1 << 63, "bank": 15, "cpuvendor": 9}))
    assert isinstance(got, MceWire) and got.wire["mca"]["vendor"] == "HygonGenuine"


@pytest.mark.parametrize(
    ("eax", "expected"),
    [
        (0x50657, (6, 0x55)),  # Cascade Lake: extended model counts in family 6
        (0xA20F10, (0x19, 0x21)),  # Zen 3: extended family added to 0Fh
        (0x900F01, (0x18, 0)),  # Hygon Dhyana
        (0x60FB1, (0xF, 0x6B)),  # QEMU's qemu64: family 0Fh, extended model counts
        (0x00100F42, (0x10, 4)),
        (0x000006D8, (6, 0xD)),
        (0x00000F00 | (0xF << 16), (0xF, 0xF0)),
        (0x00F00500 | (0x3 << 16), (5, 0)),  # base family 5: neither extension counts
        (0x000107B5, (7, 0x1B)),  # Zhaoxin KX-6000: family 7 takes the extended model
    ],
)
def test_family_model(eax: int, expected: tuple[int, int]) -> None:
    """Family and model follow the CPUID rules for extended family and model."""
    assert cpuid.family_model(eax) == expected


@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_family_model_is_within_its_fields(eax: int) -> None:
    """Any signature gives a family up to 0Fh + FFh and a model up to FFh; the telemetry
    record accepts both."""
    family, model = cpuid.family_model(eax)
    assert 0 <= family <= 0xF + 0xFF and 0 <= model <= 0xFF
    record_from_json({"cpu": 0, "bank": 0, "status": "0x0", "family": family, "model": model})
