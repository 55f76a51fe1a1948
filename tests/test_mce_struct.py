"""Tests for fmd.hw.mce_struct: Linux's binary struct mce into raw MCA wire records."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import EventRejected
from fmd.hw.cpuid import LINUX_VENDORS, XEN_VENDORS
from fmd.hw.cpuid import family_model as cpuid_family_model
from fmd.hw.mce_struct import (
    FIELDS,
    MCE_RECORD_LEN,
    OLDEST_RECORD_LEN,
    MceReject,
    MceWire,
    decode_record,
    decode_records,
    encode_record,
)
from fmd.hw.telemetry import record_from_json

# The uapi asm/mce.h layout written out in full, with its C padding made
# explicit: 4 bytes after microcode so that kflags is 8-byte aligned.
_C_LAYOUT = struct.Struct("<QQQQQQQBBBBIBBBBIIIQQQQI4xQ")

INTEL = {
    "status": 0x9C00004000010091,
    "misc": 0x86,
    "addr": 0x3AB1C7400,
    "mcgstatus": 0x5,
    "ip": 0xFFFFFFFF81234567,
    "tsc": 0x2F1AD9C4E1,
    "time": 1_682_293_811,
    "cpuvendor": 0,
    "cpuid": 0x50657,
    "cs": 0x10,
    "bank": 1,
    "cpu": 3,
    "extcpu": 3,
    "socketid": 0,
    "apicid": 6,
    "mcgcap": 0x1000C16,
    "ppin": 0x1234ABCD,
    "microcode": 0x5003302,
}

AMD = {
    "status": 0xDC2040000000011B,
    "addr": 0x1F075B2040,
    "misc": 0xD01A000101000000,
    "tsc": 0x10,
    "time": 1_682_293_812,
    "cpuvendor": 2,
    "cpuid": 0xA20F10,
    "bank": 17,
    "extcpu": 9,
    "socketid": 1,
    "apicid": 0x12,
    "mcgcap": 0x11C,
    "synd": 0x4D000000,
    "ipid": 0x9600050F00,
}


def test_field_offsets_match_the_c_layout() -> None:
    """Every field sits where the C struct (with its alignment padding) puts it."""
    values = {name: (i + 1) for i, name in enumerate(FIELDS)}
    expected = _C_LAYOUT.pack(*values.values())
    assert _C_LAYOUT.size == MCE_RECORD_LEN
    assert encode_record(values) == expected


def test_intel_record_decodes_to_wire_members() -> None:
    """An Intel record gives cpu from extcpu, vendor, family/model and the registers."""
    got = decode_record(encode_record(INTEL))
    expected = {
        "mca": {
            "cpu": 3,
            "bank": 1,
            "status": "0x9c00004000010091",
            "addr": "0x3ab1c7400",
            "misc": "0x86",
            "mcgstatus": "0x5",
            "tsc": "0x2f1ad9c4e1",
            "ip": "0xffffffff81234567",
            "cs": 0x10,
            "time": 1_682_293_811,
            "vendor": "GenuineIntel",
            "family": 6,
            "model": 85,
            "socket": 0,
            "apicid": 6,
            "mcgcap": "0x1000c16",
            "ppin": "0x1234abcd",
        }
    }
    assert got == MceWire(0, expected)


def test_amd_smca_record_keeps_ipid_and_synd() -> None:
    """An AMD Zen record carries IPID and SYND, family 19h, and no ip when ip is zero."""
    got = decode_record(encode_record(AMD))
    assert isinstance(got, MceWire)
    mca = got.wire["mca"]
    assert (mca["vendor"], mca["family"], mca["model"]) == ("AuthenticAMD", 25, 33)
    assert (mca["cpu"], mca["bank"], mca["socket"], mca["apicid"]) == (9, 17, 1, 0x12)
    assert (mca["ipid"], mca["synd"]) == ("0x9600050f00", "0x4d000000")
    assert "ip" not in mca and "cs" not in mca and "ppin" not in mca


def test_wire_records_are_accepted_by_the_telemetry_reader() -> None:
    """Decoded records are valid raw MCA wire objects."""
    for values in (INTEL, AMD):
        got = decode_record(encode_record(values))
        assert isinstance(got, MceWire)
        record = record_from_json(got.wire["mca"])
        assert record.status == values["status"]


def test_oldest_layout_uses_the_one_byte_cpu_and_no_reserved_fields() -> None:
    """A 72-byte record: cpu from the u8 field; bytes 48-63 and 68-71 are reserved."""
    chunk = bytearray(encode_record(INTEL, OLDEST_RECORD_LEN))
    struct.pack_into("<Q", chunk, 48, 0xDEAD)  # res1: garbage, not a time
    struct.pack_into("<I", chunk, 68, 77)  # pad: not an extcpu
    got = decode_record(bytes(chunk))
    assert isinstance(got, MceWire)
    mca = got.wire["mca"]
    assert mca["cpu"] == 3
    assert {"time", "vendor", "family", "model", "socket", "apicid", "mcgcap"} & set(mca) == set()


def test_shorter_record_lengths_take_the_fields_that_fit() -> None:
    """An 88-byte (2.6.31) record has mcgcap and APIC id, no SMCA or PPIN fields."""
    got = decode_record(encode_record({**INTEL, **AMD}, 88))
    assert isinstance(got, MceWire)
    mca = got.wire["mca"]
    assert (mca["mcgcap"], mca["apicid"], mca["cpu"]) == ("0x11c", 0x12, 9)
    assert {"synd", "ipid", "ppin"} & set(mca) == set()


def test_longer_record_ignores_unknown_trailing_bytes() -> None:
    """A newer kernel's longer record decodes as today's one."""
    longer = encode_record(INTEL) + b"\xff" * 32
    assert decode_record(longer) == decode_record(encode_record(INTEL))


def test_unfinished_record_is_rejected_with_reason() -> None:
    """finished == 0 is a rejection naming the record's bank and status."""
    got = decode_record(encode_record({**INTEL, "finished": 0}), 4)
    assert isinstance(got, MceReject)
    assert got.index == 4
    assert got.reason.startswith("struct mce record not finished: bank 1 status 0x9c00004000010091")


def test_truncated_tail_is_one_rejection_after_the_whole_records() -> None:
    """Bytes after the last whole record are one truncated record."""
    data = encode_record(INTEL) + encode_record(AMD) + encode_record(INTEL)[:40]
    got = decode_records(data, MCE_RECORD_LEN, first=10)
    assert [type(r) for r in got] == [MceWire, MceWire, MceReject]
    assert [r.index for r in got] == [10, 11, 12]
    assert got[2] == MceReject(12, "struct mce record truncated: 40 of 128 bytes")


def test_unusable_record_length_rejects_the_data() -> None:
    """A record length shorter than the oldest layout cannot be decoded."""
    got = decode_records(b"\x01" * 100, 50)
    assert len(got) == 1 and isinstance(got[0], MceReject)
    assert got[0].reason.startswith("struct mce record length unusable: 50 bytes")
    assert decode_records(b"", MCE_RECORD_LEN) == []


def test_xen_vendor_numbers() -> None:
    """Xen's one-bit-per-vendor numbers: 1 is Intel on Xen, Cyrix in Linux's numbering."""
    chunk = encode_record({**INTEL, "cpuvendor": 1})
    xen = decode_record(chunk, vendors=XEN_VENDORS)
    linux = decode_record(chunk, vendors=LINUX_VENDORS)
    assert isinstance(xen, MceWire) and isinstance(linux, MceWire)
    assert (xen.wire["mca"]["vendor"], linux.wire["mca"]["vendor"]) == (
        "GenuineIntel",
        "CyrixInstead",
    )
    hygon = decode_record(encode_record({**AMD, "cpuvendor": 16}), vendors=XEN_VENDORS)
    assert isinstance(hygon, MceWire) and hygon.wire["mca"]["vendor"] == "HygonGenuine"


def test_linux_vendor_numbers_follow_the_kernel() -> None:
    """Linux numbers Hygon 9 and Zhaoxin 10 (asm/processor.h X86_VENDOR_*)."""
    assert (LINUX_VENDORS[9], LINUX_VENDORS[10]) == ("HygonGenuine", "  Shanghai  ")


def test_zero_fields_are_left_out() -> None:
    """time, cpuid, ip and mcgcap left at zero (as xen_mcelog does) are not sent."""
    got = decode_record(encode_record({"status": 1 << 63, "bank": 2, "extcpu": 5}))
    assert isinstance(got, MceWire)
    assert set(got.wire["mca"]) == {
        "cpu", "bank", "status", "addr", "misc", "mcgstatus", "tsc", "vendor", "socket", "apicid",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("eax", "expected"),
    [(0x50657, (6, 85)), (0xA20F10, (25, 33)), (0x00100F42, (16, 4)), (0x306C3, (6, 60))],
)
def test_cpuid_family_model(eax: int, expected: tuple[int, int]) -> None:
    """Family and model follow the CPUID extended-field rules."""
    assert cpuid_family_model(eax) == expected


def test_encoder_refuses_unknown_fields_and_bad_values() -> None:
    """The test encoder names what it cannot write."""
    with pytest.raises(ValueError, match="no field"):
        encode_record({"bogus": 1})
    with pytest.raises(ValueError, match="bank"):
        encode_record({"bank": 256})


@given(st.binary(max_size=600), st.integers(min_value=-10, max_value=5000))
def test_decoder_never_raises(data: bytes, record_len: int) -> None:
    """Arbitrary bytes and record lengths give records or reasons, never an exception."""
    for rec in decode_records(data, record_len):
        if isinstance(rec, MceWire):
            # A time past 2262, say, is rejected with a reason on the ingest path.
            with contextlib.suppress(EventRejected):
                record_from_json(rec.wire["mca"])


_U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(
    status=_U64,
    addr=_U64,
    misc=_U64,
    tsc=_U64,
    bank=st.integers(min_value=0, max_value=255),
    extcpu=st.integers(min_value=0, max_value=(1 << 32) - 1),
    record_len=st.sampled_from([73, 88, 104, 112, 120, 128]),
)
def test_encode_decode_round_trip(
    status: int, addr: int, misc: int, tsc: int, bank: int, extcpu: int, record_len: int
) -> None:
    """What the encoder writes, the decoder reads back."""
    values = {"status": status, "addr": addr, "misc": misc, "tsc": tsc}
    got = decode_record(encode_record({**values, "bank": bank, "extcpu": extcpu}, record_len))
    assert isinstance(got, MceWire)
    mca = got.wire["mca"]
    assert {k: int(mca[k], 16) for k in values} == values
    assert (mca["bank"], mca["cpu"]) == (bank, extcpu)
