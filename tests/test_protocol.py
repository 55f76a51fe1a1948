"""Tests for fmd.protocol: ENAs, class patterns, time, suspects, list events and ereports."""

from __future__ import annotations

import contextlib
import math
import re
import threading
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fmd.errors import EventRejected, ProtocolError
from fmd.protocol import (
    FAULT_ACQUITTED,
    FAULT_DEGRADED,
    FAULT_FAULTY,
    FAULT_NOT_PRESENT,
    FAULT_REPAIRED,
    FAULT_REPLACED,
    FAULT_UNUSABLE,
    LIST_CLASSES,
    CpuFmri,
    EnaGenerator,
    EnaParts,
    Ereport,
    FmdFmri,
    Fmri,
    HcFmri,
    ListClass,
    ListEvent,
    MemFmri,
    Suspect,
    WireEreport,
    class_match,
    decode_ena,
    ena_format1,
    ena_format2,
    ereport_from_json_dict,
    is_list_class,
    parse_ena,
    parse_ereport_line,
    parse_time,
    utc_iso,
    validate_class,
    validate_pattern,
)
from fmd.protocol.limits import MEMBER_RANGES

SEC = 1_000_000_000
NOW = 1_700_000_000 * SEC
U64 = 2**64 - 1
MAX_TIME_NS = 2**63  # event times are int64 nanoseconds: up to 2262-04-11
RESERVED = {"class", "ena", "time", "detector", "__injected"}

TYPICAL_LINE = (
    b'{"class":"ereport.cpu.generic-x86.l2cache","ena":"0x1234",'
    b'"detector":"hc://:product-id=fmd-sim:server-id=h/motherboard=0/chip=3/core=0/strand=0",'
    b'"time":1700000000.5,"bank":2,"status":"0x9c00"}'
)

# ---- strategies ------------------------------------------------------------------

components = st.from_regex(r"[A-Za-z0-9_\-]{1,6}", fullmatch=True)
classes = st.lists(components, min_size=1, max_size=5).map(".".join)
ereport_classes = classes.map(lambda c: "ereport." + c)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), U64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
sample_fmris: list[Fmri] = [
    HcFmri(
        authority=(("product-id", "fmd-sim"), ("server-id", "h")),
        hc_list=(("motherboard", "0"), ("chip", "3"), ("core", "0"), ("strand", "0")),
    ),
    HcFmri(hc_list=(("motherboard", "0"),), hc_specific=(("offset", "0x10"),), serial="a b"),
    CpuFmri(cpuid=7, serial="S/N"),
    MemFmri(unum="motherboard=0/chip=0/dimm=1", physaddr=0x1000),
    FmdFmri(mod_name="fmd", mod_version="1.0", authority=(("server-id", "h"),)),
]
fmris = st.sampled_from(sample_fmris)


def gen() -> EnaGenerator:
    return EnaGenerator()


def parse(line: bytes, **kwargs: Any) -> Ereport:
    return parse_ereport_line(line, now_ns=NOW, ena_gen=gen(), **kwargs)


def rejected(line: bytes, **kwargs: Any) -> str:
    with pytest.raises(EventRejected) as info:
        parse(line, **kwargs)
    return str(info.value)


# ---- ENA ---------------------------------------------------------------------------


def test_ena_format1_layout() -> None:
    """Format 1 puts the format in bits 0-1, generation in 2-9, cpuid in 10-19, time above."""
    assert ena_format1(3, 5, 0x123) == (0x123 << 20) | (5 << 10) | (3 << 2) | 1


def test_ena_format1_wraps_fields() -> None:
    """Generation wraps at 256, cpuid at 1024 and only the low 44 bits of time are kept."""
    assert ena_format1(256 + 1, 1024 + 2, (1 << 44) + 3) == ena_format1(1, 2, 3)


@given(st.integers(0, 255), st.integers(0, 1023), st.integers(0, 2**44 - 1))
def test_ena_format1_decodes(generation: int, cpuid: int, time: int) -> None:
    """decode_ena recovers every field of a format-1 ENA."""
    ena = ena_format1(generation, cpuid, time)
    assert 0 <= ena <= U64
    assert decode_ena(ena) == EnaParts(1, generation, cpuid, time)


@given(st.integers(0, 255), st.integers(0, 2**54 - 1))
def test_ena_format2_decodes(generation: int, value: int) -> None:
    """decode_ena recovers generation and value of a format-2 ENA."""
    ena = ena_format2(generation, value)
    assert 0 <= ena <= U64
    assert decode_ena(ena) == EnaParts(2, generation, None, value)


def test_decode_ena_of_unknown_format() -> None:
    """Formats 0 and 3 give only the generation bits."""
    assert decode_ena(0b1111_1100) == EnaParts(0, 0x3F, None, None)


@pytest.mark.parametrize("bad", [-1, 2**64, True])
def test_decode_ena_rejects_non_u64(bad: int) -> None:
    """decode_ena refuses what is not a 64-bit unsigned integer."""
    with pytest.raises(ProtocolError):
        decode_ena(bad)


def test_ena_generator_distinguishes_same_nanosecond() -> None:
    """256 ENAs made in the same nanosecond are all different."""
    g = gen()
    enas = [g.next(NOW, cpuid=1) for _ in range(256)]
    assert len(set(enas)) == 256
    assert {decode_ena(e).cpuid for e in enas} == {1}


def test_ena_generator_wraps_generation() -> None:
    """The generation counter wraps from 255 back to 0."""
    g = EnaGenerator(generation=255)
    assert [decode_ena(g.next(NOW)).generation for _ in range(2)] == [255, 0]


def test_ena_generator_is_thread_safe() -> None:
    """Threads sharing a generator never get the same generation twice within one cycle."""
    g = gen()
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [g.next(NOW) for _ in range(64)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 256


@given(st.integers(0, U64))
def test_parse_ena_forms(value: int) -> None:
    """An ENA may be an integer, a 0x hex string or a decimal string."""
    assert parse_ena(value) == value
    assert parse_ena(hex(value)) == value
    assert parse_ena(hex(value).upper().replace("0X", "0x")) == value
    assert parse_ena(str(value)) == value


@pytest.mark.parametrize(
    "bad",
    [-1, 2**64, True, 1.0, None, [], "0x", "-1", " 12", "1_0", "0x1g", "12a", "0x" + "f" * 17],
)
def test_parse_ena_rejects(bad: Any) -> None:
    """Negative, oversized, boolean and garbage ENAs are rejected."""
    with pytest.raises(EventRejected, match="'ena'"):
        parse_ena(bad)


def test_parse_ena_accepts_leading_zeros() -> None:
    """Leading zeros do not count against the 64-bit limit."""
    assert parse_ena("0x" + "0" * 30 + "1") == 1


@given(st.text())
def test_parse_ena_text_is_int_or_rejected(text: str) -> None:
    """Any string is either a 64-bit ENA or rejected with EventRejected."""
    with contextlib.suppress(EventRejected):
        assert 0 <= parse_ena(text) <= U64


# ---- classes and patterns ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "cls", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", True),
        ("a.*", "a", False),
        ("*", "a", True),
        ("*", "a.b.c", True),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.y.c", False),
        ("a.*.c", "a.x.c.d", False),
        ("*.b", "a.b", True),
        ("*.b", "a.b.c", False),
        ("a.*.*", "a.b.c.d", True),
        ("ereport.cpu.*", "ereport.cpu.intel.l2cache", True),
        ("ereport.cpu.*", "ereport.io.pci", False),
        ("fault.cpu.*", "fault.cpu", False),
    ],
)
def test_class_match_examples(pattern: str, cls: str, expected: bool) -> None:
    """Inner '*' takes one component, trailing '*' one or more, literals only themselves."""
    assert class_match(pattern, cls) is expected


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """An independent statement of the matching rules, as a regular expression."""
    parts = pattern.split(".")
    out = []
    for i, part in enumerate(parts):
        if part != "*":
            out.append(re.escape(part))
        elif i == len(parts) - 1:
            out.append(r"[^.]+(?:\.[^.]+)*")
        else:
            out.append(r"[^.]+")
    return re.compile(r"\.".join(out))


small_components = st.sampled_from(["a", "b", "c"])


@given(
    st.lists(small_components | st.just("*"), min_size=1, max_size=4).map(".".join),
    st.lists(small_components, min_size=1, max_size=5).map(".".join),
)
def test_class_match_agrees_with_regex(pattern: str, cls: str) -> None:
    """class_match agrees with a regular-expression statement of the rules."""
    assert class_match(pattern, cls) == bool(pattern_regex(pattern).fullmatch(cls))


@given(classes)
def test_valid_classes_validate(cls: str) -> None:
    """Dot-separated components of [A-Za-z0-9_-] are valid classes and patterns."""
    assert validate_class(cls) == cls
    assert validate_pattern(cls) == cls
    assert class_match(cls, cls)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("", "invalid class '': it is empty"),
        ("ereport..x", "invalid class 'ereport..x': empty component"),
        ("a.", "invalid class 'a.': empty component"),
        ("a.b$", "invalid class 'a.b$': component 'b$' has characters outside [A-Za-z0-9_-]"),
        ("a.*", "component '*' has characters outside"),
        ("a.é", "has characters outside"),
    ],
)
def test_validate_class_rejects(cls: str, message: str) -> None:
    """Invalid classes raise ProtocolError saying what is wrong."""
    with pytest.raises(ProtocolError) as info:
        validate_class(cls)
    assert message in str(info.value)


@pytest.mark.parametrize("pattern", ["*", "a.*", "*.b", "a.*.c", "fault.cpu.*"])
def test_validate_pattern_accepts_star_components(pattern: str) -> None:
    """'*' is allowed in patterns as a whole component."""
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a.b*", "invalid pattern 'a.b*': '*' must be a whole component"),
        ("a..*", "empty component"),
        ("", "it is empty"),
        ("a.b c", "has characters outside"),
    ],
)
def test_validate_pattern_rejects(pattern: str, message: str) -> None:
    """Invalid patterns raise ProtocolError saying what is wrong."""
    with pytest.raises(ProtocolError) as info:
        validate_pattern(pattern)
    assert message in str(info.value)


# ---- time -------------------------------------------------------------------------


def test_utc_iso_examples() -> None:
    """utc_iso writes UTC with microseconds and a Z."""
    assert utc_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert utc_iso(1_700_000_000_500_000_999) == "2023-11-14T22:13:20.500000Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, 1_700_000_000 * SEC),
        (1_700_000_000.5, 1_700_000_000_500_000_000),
        (0, 0),
        ("2023-11-14T22:13:20Z", 1_700_000_000 * SEC),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000_500_000_000),
        ("2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456_789),
        ("2023-11-14T22:13:20.1234567891Z", 1_700_000_000_123_456_789),
        ("2023-11-14T22:13:20,25Z", 1_700_000_000_250_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000 * SEC),
        ("2023-11-14 22:13:20z", 1_700_000_000 * SEC),
        ("2023-11-15T00:13:20+02:00", 1_700_000_000 * SEC),
        ("2023-11-14T20:13:20-0200", 1_700_000_000 * SEC),
        ("2023-11-15T00:13:20+02", 1_700_000_000 * SEC),
    ],
)
def test_parse_time_accepts(value: Any, expected: int) -> None:
    """Epoch seconds and ISO 8601 (Z, offset or naive UTC) convert to nanoseconds."""
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "value",
    [True, None, [], -1, -0.5, math.nan, math.inf, 1e300, "yesterday", "2023-13-01T00:00:00Z",
     "2023-11-14T22:13:60Z", "1969-12-31T23:59:59Z", "2023-11-14T22:13:20+24:00",
     "2023-11-14", "\uff12\uff10\uff12\uff13-11-14T22:13:20Z"],
)  # fmt: skip
def test_parse_time_rejects(value: Any) -> None:
    """Non-finite, negative, out-of-range and malformed times are rejected."""
    with pytest.raises(EventRejected, match="'time'"):
        parse_time(value)


@given(st.integers(0, MAX_TIME_NS - 1))
def test_utc_iso_round_trips_to_the_microsecond(time_ns: int) -> None:
    """parse_time(utc_iso(t)) gives t truncated to the microsecond."""
    assert parse_time(utc_iso(time_ns)) == time_ns // 1000 * 1000


@given(st.floats(0, (MAX_TIME_NS - 1) // SEC - 1, allow_nan=False))
def test_float_seconds_are_close(seconds: float) -> None:
    """Float epoch seconds convert to within a microsecond of the float's value."""
    assert abs(parse_time(seconds) - seconds * SEC) <= max(1000, seconds * SEC * 1e-15)


# ---- suspects and list events -----------------------------------------------------


def test_fault_status_bits() -> None:
    """The fault-status bits have the protocol's values."""
    assert (
        FAULT_FAULTY, FAULT_UNUSABLE, FAULT_NOT_PRESENT, FAULT_DEGRADED,
        FAULT_REPAIRED, FAULT_REPLACED, FAULT_ACQUITTED,
    ) == (0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40)  # fmt: skip


def test_list_classes() -> None:
    """The five list classes are known; others are not."""
    assert LIST_CLASSES == (
        "list.suspect", "list.isolated", "list.repaired", "list.updated", "list.resolved"
    )  # fmt: skip
    assert all(is_list_class(c) for c in LIST_CLASSES)
    assert not is_list_class("list.other")
    assert not is_list_class("fault.cpu.x")


def test_suspect_from_json_with_fmri_strings_and_objects() -> None:
    """A suspect takes FMRIs as strings or objects, under the wire member names."""
    s = Suspect.from_json_dict(
        {
            "class": "fault.cpu.intel.l2cache",
            "certainty": 100,
            "asru": "cpu:///cpuid=3",
            "fru": {"scheme": "hc", "hc-list": [{"hc-name": "motherboard", "hc-id": "0"}]},
            "location": "CPU 0",
        }
    )
    assert s.cls == "fault.cpu.intel.l2cache"
    assert s.asru == CpuFmri(cpuid=3)
    assert s.fru == HcFmri(hc_list=(("motherboard", "0"),))
    assert s.resource is None
    assert (s.message, s.retire, s.response) == (True, True, True)


def test_suspect_to_json_writes_fmri_strings() -> None:
    """A suspect's JSON form has the wire names and FMRIs as strings."""
    s = Suspect(cls="fault.memory.page", certainty=90, asru=MemFmri(unum="U"), retire=False)
    assert s.to_json_dict() == {
        "class": "fault.memory.page",
        "certainty": 90,
        "asru": "mem:///unum=U",
        "message": True,
        "retire": False,
        "response": True,
    }


def test_suspect_keeps_extra_members() -> None:
    """Members fmd does not know (a DE's own payload) are kept in the JSON form."""
    s = Suspect.from_json_dict({"class": "fault.zfs.vdev", "certainty": 100, "pool": "tank"})
    assert s.to_json_dict()["pool"] == "tank"


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("class", "ereport.cpu.x", "must start with fault., defect. or upset."),
        ("class", "fault..x", "empty component"),
        ("certainty", 101, "certainty"),
        ("certainty", True, "certainty"),
        ("asru", "cpu:///cpuid=x", "asru: bad FMRI 'cpu:///cpuid=x'"),
        ("fru", 5, "fru: expected an FMRI string or object, not integer"),
        ("message", "yes", "message"),
    ],
)
def test_suspect_rejects(member: str, value: Any, message: str) -> None:
    """Bad suspect members raise ProtocolError naming the member."""
    data = {"class": "fault.cpu.x", "certainty": 50, member: value}
    with pytest.raises(ProtocolError) as info:
        Suspect.from_json_dict(data)
    assert message in str(info.value)
    assert str(info.value).startswith("invalid suspect: ")


DE = FmdFmri(mod_name="eft", mod_version="1.16", authority=(("server-id", "h"),))


def list_event(**changes: Any) -> ListEvent:
    fields: dict[str, Any] = {
        "cls": "list.suspect",
        "uuid": "6f1c5a64-2d3f-4a8b-9a52-0c1d2e3f4a5b",
        "code": "AMD-8000-2F",
        "diag_time_ns": 1_700_000_000_123_456_000,
        "de": DE,
        "fault_list": [Suspect(cls="fault.cpu.amd.l2cache", certainty=100, asru=CpuFmri(cpuid=1))],
        "fault_status": [FAULT_FAULTY],
    }
    fields.update(changes)
    return ListEvent(**fields)


def test_list_event_json_form() -> None:
    """A list event's JSON form uses the wire names, [sec, usec] and fault-list-sz."""
    ev = list_event(injected=True)
    assert ev.fault_list_sz == 1
    assert ev.to_json_dict() == {
        "version": 0,
        "class": "list.suspect",
        "uuid": "6f1c5a64-2d3f-4a8b-9a52-0c1d2e3f4a5b",
        "code": "AMD-8000-2F",
        "diag-time": [1_700_000_000, 123_456],
        "de": DE.to_dict(),
        "fault-list-sz": 1,
        "fault-list": [
            {
                "class": "fault.cpu.amd.l2cache",
                "certainty": 100,
                "asru": "cpu:///cpuid=1",
                "message": True,
                "retire": True,
                "response": True,
            }
        ],
        "fault-status": [1],
        "message": True,
        "__injected": True,
    }


def test_list_event_json_round_trip() -> None:
    """to_json_dict, JSON encoding and from_json_dict give back an equal list event."""
    ev = list_event()
    assert ListEvent.from_json_dict(orjson.loads(orjson.dumps(ev.to_json_dict()))) == ev


def test_list_event_pydantic_json_dump_agrees() -> None:
    """model_dump(mode='json', by_alias=True) validates back to the same event."""
    ev = list_event()
    dumped = ev.model_dump(mode="json", by_alias=True)
    assert dumped["diag-time"] == [1_700_000_000, 123_456]
    assert ListEvent.model_validate(dumped) == ev


def test_list_event_accepts_diag_time_in_ns() -> None:
    """diag-time may be given as integer nanoseconds."""
    data = list_event().to_json_dict()
    data["diag-time"] = 1_700_000_000_123_456_789
    assert ListEvent.from_json_dict(data).diag_time_ns == 1_700_000_000_123_456_789


def test_list_event_accepts_de_string() -> None:
    """The de may be given as an fmd FMRI string."""
    data = list_event().to_json_dict()
    data["de"] = "fmd:///module/eft"
    assert ListEvent.from_json_dict(data).de == FmdFmri(mod_name="eft")


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("class", "list.other", "class"),
        ("diag-time", [1, 1_000_000], "'diag-time' must be [seconds, microseconds]"),
        ("diag-time", -1, "diag-time"),
        ("de", "cpu:///cpuid=1", "de"),
        ("fault-list-sz", 2, "'fault-list-sz' is 2 but 'fault-list' has 1"),
        ("fault-status", [1, 1], "'fault-status' has 2 entries but 'fault-list' has 1"),
        ("fault-status", [256], "fault-status"),
        ("uuid", "", "uuid"),
        ("color", "red", "color"),
        ("__injected", 1, "__injected"),
    ],
)
def test_list_event_rejects(member: str, value: Any, message: str) -> None:
    """Bad list-event members raise ProtocolError naming the problem."""
    data = list_event().to_json_dict()
    data[member] = value
    with pytest.raises(ProtocolError) as info:
        ListEvent.from_json_dict(data)
    assert message in str(info.value)
    assert str(info.value).startswith("invalid list event: ")


suspects = st.builds(
    Suspect,
    cls=st.sampled_from(["fault.", "defect.", "upset."]).flatmap(
        lambda p: classes.map(lambda c: p + c)
    ),
    certainty=st.integers(0, 100),
    asru=st.none() | fmris,
    fru=st.none() | fmris,
    resource=st.none() | fmris,
    location=st.none() | st.text(),
    message=st.booleans(),
    retire=st.booleans(),
    response=st.booleans(),
)


@given(
    st.sampled_from(LIST_CLASSES),
    st.lists(suspects, max_size=4),
    st.integers(0, MAX_TIME_NS // 1000).map(lambda us: us * 1000),
    st.booleans(),
    st.booleans(),
    st.data(),
)
def test_list_event_round_trip_property(
    cls: ListClass,
    faults: list[Suspect],
    diag_time_ns: int,
    message: bool,
    injected: bool,
    data: st.DataObject,
) -> None:
    """Generated list events survive to_json_dict, JSON and from_json_dict unchanged."""
    status = data.draw(st.lists(st.integers(0, 0x7F), min_size=len(faults), max_size=len(faults)))
    ev = ListEvent(
        cls=cls, uuid="u", code="C", diag_time_ns=diag_time_ns, de=DE, fault_list=faults,
        fault_status=status, message=message, injected=injected,
    )  # fmt: skip
    assert ListEvent.from_json_dict(orjson.loads(orjson.dumps(ev.to_json_dict()))) == ev


# ---- ereports: the typical line --------------------------------------------------


def test_parse_typical_line() -> None:
    """A typical line becomes an Ereport with reserved members taken out of the payload."""
    ev = parse(TYPICAL_LINE)
    assert ev == Ereport(
        cls="ereport.cpu.generic-x86.l2cache",
        ena=0x1234,
        time_ns=1_700_000_000_500_000_000,
        detector=sample_fmris[0],
        detector_str="hc://:product-id=fmd-sim:server-id=h/motherboard=0/chip=3/core=0/strand=0",
        payload={"bank": 2, "status": "0x9c00"},
    )


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_trailing_newline_is_stripped(ending: bytes) -> None:
    """A trailing LF or CRLF is allowed."""
    assert parse(TYPICAL_LINE + ending) == parse(TYPICAL_LINE)


def test_missing_ena_and_time_are_filled_in() -> None:
    """Without ena and time, the ENA comes from the generator and the time is now."""
    g = EnaGenerator(generation=7)
    ev = parse_ereport_line(b'{"class":"ereport.x.y"}', now_ns=NOW, ena_gen=g)
    assert ev.time_ns == NOW
    assert decode_ena(ev.ena) == EnaParts(1, 7, 0, NOW & (2**44 - 1))
    assert ev.detector is None and ev.detector_str is None
    assert ev.payload == {}


def test_detector_object_form_and_injected() -> None:
    """A detector may be an FMRI object; __injected marks injected events."""
    ev = parse(b'{"class":"ereport.x","detector":{"scheme":"cpu","cpuid":4},"__injected":true}')
    assert ev.detector == CpuFmri(cpuid=4)
    assert ev.detector_str == "cpu:///cpuid=4"
    assert ev.injected is True


def test_detector_string_is_canonicalised() -> None:
    """detector_str is the canonical string form of the detector."""
    ev = parse(b'{"class":"ereport.x","detector":"mem:///unum=U/physaddr=4096"}')
    assert ev.detector_str == "mem:///unum=U/physaddr=0x1000"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"class":"ereport.x","a":"\xff"}', "line is not valid UTF-8 at byte 26"),
        (b'{"class":', "malformed JSON: "),
        (b"", "malformed JSON: "),
        (b"[1, 2]", "event is not a JSON object"),
        (b'"ereport.x"', "event is not a JSON object"),
        (b'{"ena": 1}', "missing member 'class'"),
        (b'{"class": 5}', "'class' must be a string"),
        (b'{"class": null}', "'class' must be a string"),
        (b'{"class": "fault.x"}', "class 'fault.x' does not start with 'ereport.'"),
        (b'{"class": "ereport..x"}', "invalid class 'ereport..x': empty component"),
        (b'{"class": "ereport.x", "ena": 1.5}', "'ena' must be an integer or hex string"),
        (b'{"class": "ereport.x", "ena": "0xzz"}', "'ena' must be an integer or hex string"),
        (b'{"class": "ereport.x", "ena": -1}', "'ena' -1 is out of range"),
        (b'{"class": "ereport.x", "ena": null}', "'ena' must be an integer or hex string"),
        (b'{"class": "ereport.x", "time": true}', "'time' must be epoch seconds or an ISO 8601"),
        (b'{"class": "ereport.x", "time": "now"}', "'time' must be epoch seconds or an ISO 8601"),
        (b'{"class": "ereport.x", "time": -5}', "'time' -5 is out of range"),
        (b'{"class": "ereport.x", "detector": "cpu:///"}', "bad detector: bad FMRI 'cpu:///'"),
        (b'{"class": "ereport.x", "detector": 3}', "bad detector: expected an FMRI string"),
        (b'{"class": "ereport.x", "__injected": 1}', "'__injected' must be true or false"),
    ],
)
def test_rejections_say_what_was_wrong(line: bytes, message: str) -> None:
    """Each kind of bad line is rejected with a message saying exactly what was wrong."""
    assert rejected(line).startswith(message)


def test_line_length_limit() -> None:
    """Lines longer than max_len are rejected, before decoding."""
    assert rejected(TYPICAL_LINE, max_len=50) == "line exceeds 50 bytes"
    assert rejected(b"x" * (1 << 20 + 1)) == "line exceeds 1048576 bytes"
    assert parse(TYPICAL_LINE + b"\n", max_len=len(TYPICAL_LINE)).ena == 0x1234


def test_ereport_from_json_dict_does_not_modify_its_argument() -> None:
    """ereport_from_json_dict leaves the caller's dict as it was."""
    d = orjson.loads(TYPICAL_LINE)
    before = dict(d)
    ev = ereport_from_json_dict(d, now_ns=NOW, ena_gen=gen())
    assert d == before
    assert ev == parse(TYPICAL_LINE)


def test_ereport_from_json_dict_rejects_non_objects() -> None:
    """ereport_from_json_dict refuses anything but a JSON object."""
    with pytest.raises(EventRejected, match="event is not a JSON object"):
        ereport_from_json_dict([], now_ns=NOW, ena_gen=gen())  # type: ignore[arg-type]


def test_ereport_json_form() -> None:
    """to_json_dict writes class, ena, ISO time, detector string, payload and __injected."""
    ev = parse(TYPICAL_LINE)
    ev.injected = True
    assert ev.to_json_dict() == {
        "class": "ereport.cpu.generic-x86.l2cache",
        "ena": 0x1234,
        "time": "2023-11-14T22:13:20.500000Z",
        "detector": "hc://:product-id=fmd-sim:server-id=h/motherboard=0/chip=3/core=0/strand=0",
        "bank": 2,
        "status": "0x9c00",
        "__injected": True,
    }


def test_ereport_json_form_refuses_reserved_payload_names() -> None:
    """A payload member named like a reserved member cannot be written."""
    ev = Ereport("ereport.x", 1, 0, None, None, {"ena": 2})
    with pytest.raises(ProtocolError, match="reserved"):
        ev.to_json_dict()


# ---- ereports: properties ---------------------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_parsed_or_rejected(line: bytes) -> None:
    """Arbitrary bytes either parse or raise EventRejected, nothing else."""
    with contextlib.suppress(EventRejected):
        parse(line)


reserved_candidates = st.one_of(
    json_values,
    ereport_classes,
    st.sampled_from(
        ["ereport.", "ereport..x", "fault.x", "0x1234", "0x", "12", "-1", "0x" + "f" * 17,
         "2023-11-14T22:13:20Z", "2023-02-30T00:00:00Z", "hc:///motherboard=0",
         "cpu:///cpuid=x", "fmd:///module/eft"]
    ),
    st.integers(-(2**65), 2**65),
    st.floats(),
    st.fixed_dictionaries({"scheme": st.sampled_from(["cpu", "hc", "x"]), "cpuid": json_values}),
)  # fmt: skip
ena_candidates = st.one_of(
    st.integers(-(2**65), 2**65),
    st.integers(0, U64).map(hex),
    st.integers(0, 2**70).map(str),
    st.sampled_from(["0x", "-1", "0x" + "f" * 17, "0x1g", " 1", "1_0"]),
    json_values,
)
time_candidates = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(),
    st.integers(0, MAX_TIME_NS + SEC).map(lambda t: utc_iso(t).replace("Z", "")),
    st.sampled_from(["2023-11-14T22:13:20+02:00", "2023-02-30T00:00:00Z", "9999-12-31T23:59:59Z",
                     "1970-01-01T00:00:00+01:00", "now"]),
    json_values,
)  # fmt: skip
detector_candidates = st.one_of(
    fmris.map(lambda f: f.to_string()),
    fmris.map(lambda f: f.to_dict()),
    st.sampled_from(["cpu:///cpuid=x", "hc://x", "dev:///x", ""]),
    st.fixed_dictionaries({"scheme": st.sampled_from(["cpu", "hc", "x"]), "cpuid": json_values}),
    json_values,
)
well_formed_wire_objects = st.fixed_dictionaries(
    {"class": ereport_classes},
    optional={
        "ena": ena_candidates,
        "time": time_candidates,
        "detector": detector_candidates,
        "__injected": st.booleans() | json_values,
        "cls": json_values,
        "injected": json_values,
        "bank": json_values,
    },
)
wire_objects = well_formed_wire_objects | st.dictionaries(
    st.sampled_from(sorted(RESERVED | {"cls", "injected", "bank", ""})), reserved_candidates
)


@given(wire_objects)
def test_json_objects_are_parsed_or_rejected(obj: dict[str, Any]) -> None:
    """Any JSON object either becomes an Ereport or raises EventRejected."""
    try:
        line = orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return
    try:
        ev = parse(line)
    except EventRejected:
        return
    assert ev.cls.startswith("ereport.")
    assert not RESERVED & set(ev.payload)


@given(wire_objects)
def test_wire_model_agrees_with_hand_parser(obj: dict[str, Any]) -> None:
    """WireEreport accepts exactly the objects the ingest path accepts."""
    try:
        ereport_from_json_dict(obj, now_ns=NOW, ena_gen=gen())
        hand_ok = True
    except EventRejected:
        hand_ok = False
    try:
        WireEreport.model_validate(obj)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert hand_ok == model_ok


def test_wire_model_json_schema() -> None:
    """The wire schema requires 'class' and allows extra members."""
    schema = WireEreport.model_json_schema()
    assert schema["required"] == ["class"]
    assert schema["additionalProperties"] is True
    assert set(schema["properties"]) == RESERVED


ereports = st.builds(
    Ereport,
    cls=ereport_classes,
    ena=st.integers(0, U64),
    time_ns=st.integers(0, MAX_TIME_NS - 1),
    detector=st.none(),
    detector_str=st.none(),
    # Members with a checked range (registers, ids) have tests of their own.
    payload=st.dictionaries(
        st.text().filter(lambda k: k not in RESERVED and k not in MEMBER_RANGES),
        json_values,
        max_size=5,
    ),
    injected=st.booleans(),
)


@given(ereports, st.none() | fmris)
def test_ereport_round_trips_through_the_wire(ev: Ereport, detector: Fmri | None) -> None:
    """to_json_dict, orjson.dumps and parse_ereport_line give back an equal Ereport."""
    ev.detector = detector
    ev.detector_str = None if detector is None else detector.to_string()
    back = parse(orjson.dumps(ev.to_json_dict()))
    ev.time_ns = ev.time_ns // 1000 * 1000
    assert back == ev


def test_times_beyond_int64_nanoseconds_are_rejected() -> None:
    """Event times must fit the store's signed 64-bit nanoseconds (up to 2262-04-11)."""
    from fmd.protocol import parse_time

    assert parse_time("2262-04-11T00:00:00Z") > 0
    with pytest.raises(EventRejected, match="out of range"):
        parse_time("2300-01-01T00:00:00Z")
    with pytest.raises(EventRejected, match="out of range"):
        parse_time(9_300_000_000)


def test_classes_longer_than_the_store_column_are_rejected() -> None:
    """An ereport class longer than 255 characters is refused at ingest, naming the limit."""
    line = orjson.dumps({"class": "ereport." + "a" * 300})
    with pytest.raises(EventRejected, match="longer than 255"):
        parse_ereport_line(line, now_ns=0, ena_gen=EnaGenerator())
