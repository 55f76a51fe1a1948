"""Every parser of hostile input, fuzzed in-process: arbitrary input either parses or
raises fmd's own error class (never anything else), what parses keeps the limits, and
what parses round-trips where the format promises it.

Parsers: the ereport wire lines (``decode_line``, ``parse_ereport_line``,
``ereport_from_json_dict``), FMRI strings and objects, raw ``{"mca": ...}`` records
against the sim platform, the mcelog / kernel machine-check text, the injection
language, ``.conf`` files and property values, and fmdump's time forms.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fmd.adm.server import AdmServer
from fmd.cli.timespec import TimeSpecError
from fmd.cli.timespec import parse_time as parse_timespec
from fmd.config import DAEMON_PROPERTIES, parse_conf, parse_value
from fmd.errors import ConfigError, EventRejected, FmdError, FmriError, InjectSyntaxError
from fmd.hw.mcelog import ParsedMca, ParseFailure, parse_mce_text
from fmd.hw.telemetry import mca_ereport, record_from_json, record_to_json
from fmd.hw.topo import SimPlatform
from fmd.injlang import (
    MAX_ARRAY,
    MAX_EVENTS,
    MAX_VALUE_BYTES,
    MAX_VALUE_ITEMS,
    Repeat,
    evaluate,
    parse_program,
)
from fmd.protocol import (
    EnaGenerator,
    Ereport,
    HcFmri,
    decode_line,
    ereport_from_decoded,
    ereport_from_json_dict,
    fmri_from_obj,
    parse_ereport_line,
    parse_fmri,
)
from fmd.protocol.limits import (
    MAX_FMRI_LEN,
    MAX_FMRI_PAIRS,
    MAX_PAYLOAD_DEPTH,
    MAX_PAYLOAD_ITEMS,
    MEMBER_RANGES,
    check_payload,
)
from tests.hostile.fuzzlines import (
    MCA_MEMBERS,
    RESERVED,
    SEED_MCE,
    SEED_PROGRAMS,
    conformance_mce,
    expansion_program,
    mutate_mce,
    mutate_program,
)
from tests.test_fmri import all_fmris, string_exact_fmris

NOW = 1_700_000_000 * 10**9
REPO = Path(__file__).resolve().parents[2]
PLATFORM = SimPlatform(hostname="h")
MCE_SEEDS = list(SEED_MCE) + conformance_mce(REPO)

# -- JSON values: deep, huge, long, and null in every member ------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),
    st.sampled_from([2**64 - 1, 2**64, -(2**63) - 1, 2**52, 2**32, 10**30, -1]),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["0x9400000000000101", "0x", "0x1g", "x" * 5000, "ereport.", "\0"]),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """A value nested 1 to 200 arrays or objects deep."""
    depth = draw(st.integers(1, 200))
    value: Any = draw(_scalars)
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {draw(st.text(max_size=3)): value}
    return value


_keys = st.sampled_from([*RESERVED, "mca", "cpuid", "apicid", "physaddr", "bank", "syndrome",
                         "IA32_MCi_STATUS", "IA32_MCG_CAP", "p", ""])  # fmt: skip
_classes = st.sampled_from(
    ["ereport.cpu.generic-x86.l2cache", "ereport.x", "ereport.", "fault.x", "ereport.a b"]
)
wire_objects = st.dictionaries(_keys, json_values | nested() | _classes, max_size=8) | (
    st.fixed_dictionaries({"class": _classes}, optional={k: json_values for k in RESERVED[1:]})
)


def _encode(obj: Any) -> bytes | None:
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return None  # beyond what JSON on the wire can carry


def _expect_fmd_error(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``, or None when it raises one of fmd's own errors."""
    try:
        return fn(*args, **kwargs)
    except FmdError:
        return None


def _within_limits(ev: Ereport) -> None:
    """An accepted ereport keeps the payload limits and its reserved members out."""
    check_payload(ev.payload)
    assert set(ev.payload) & set(RESERVED) == set()
    assert ev.cls.startswith("ereport.")
    assert 0 <= ev.ena < 2**64
    assert 0 <= ev.time_ns < 2**63


def _wire_round_trip(ev: Ereport) -> None:
    """The ereport's wire form parses back to the same ereport (time to the microsecond)."""
    again = parse_ereport_line(orjson.dumps(ev.to_json_dict()), now_ns=0, ena_gen=EnaGenerator())
    expected = (ev.cls, ev.ena, ev.time_ns // 1000, ev.detector, ev.payload, ev.injected)
    actual = (again.cls, again.ena, again.time_ns // 1000, again.detector, again.payload,
              again.injected)  # fmt: skip
    assert actual == expected


# -- ereport lines -----------------------------------------------------------------------


@settings(max_examples=300)
@given(line=st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_are_rejected(line: bytes) -> None:
    """Arbitrary bytes become an ereport within the limits or raise EventRejected."""
    ev = _expect_fmd_error(parse_ereport_line, line, now_ns=NOW, ena_gen=EnaGenerator())
    if ev is not None:
        _within_limits(ev)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(obj=wire_objects)
def test_arbitrary_json_objects_parse_or_are_rejected(obj: dict[str, Any]) -> None:
    """Any JSON object (line or dict) is a bounded ereport that round-trips, or EventRejected."""
    from_dict = _expect_fmd_error(ereport_from_json_dict, obj, now_ns=NOW, ena_gen=EnaGenerator())
    line = _encode(obj)
    from_line = None
    if line is not None:
        from_line = _expect_fmd_error(parse_ereport_line, line, now_ns=NOW, ena_gen=EnaGenerator())
        decoded = _expect_fmd_error(decode_line, line)
        if decoded is not None:
            _expect_fmd_error(ereport_from_decoded, decoded, NOW, EnaGenerator())
    for ev in (from_dict, from_line):
        if ev is not None:
            _within_limits(ev)
            _wire_round_trip(ev)


@settings(max_examples=100)
@given(value=json_values | nested(), member=st.sampled_from(RESERVED))
def test_any_value_in_a_reserved_member(value: Any, member: str) -> None:
    """A reserved member takes only its own type (never null); a rejection names it."""
    obj = {"class": "ereport.x", member: value}
    try:
        ev = ereport_from_json_dict(obj, now_ns=NOW, ena_gen=EnaGenerator())
    except EventRejected as exc:
        assert member in str(exc)
        return
    _within_limits(ev)
    assert value is not None


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(-(1 << 63), True), ((1 << 64) - 1, True), (-(1 << 63) - 1, False), (1 << 64, False)],
)
def test_payload_integers_beyond_64_bits_are_rejected(value: int, accepted: bool) -> None:
    """An event built in Python (not read from JSON, where such a number becomes a float)
    with an integer outside the 64-bit range, at any depth, is rejected with a reason:
    it could not be stored."""
    for payload in ({"mca": value}, {"p": {"q": [value]}}):
        obj = {"class": "ereport.cpu.generic-x86.l2cache", **payload}
        try:
            ev = ereport_from_json_dict(obj, now_ns=NOW, ena_gen=EnaGenerator())
        except EventRejected as exc:
            assert accepted is False
            assert "outside the 64-bit range" in str(exc)
        else:
            assert accepted is True
            _wire_round_trip(ev)


@given(depth=st.integers(0, 2 * MAX_PAYLOAD_DEPTH), member=st.sampled_from(["p", "detector"]))
def test_payload_depth_limit(depth: int, member: str) -> None:
    """A payload nested at most 32 deep (itself included) is accepted, deeper is rejected."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    line = orjson.dumps({"class": "ereport.x", member: value})
    try:
        parse_ereport_line(line, now_ns=NOW, ena_gen=EnaGenerator())
        accepted = True
    except EventRejected as exc:
        accepted = False
        message = str(exc)
    if member == "p":
        assert accepted == (depth + 2 <= MAX_PAYLOAD_DEPTH)
        if not accepted:
            assert message == f"payload nests deeper than {MAX_PAYLOAD_DEPTH} objects or arrays"
    else:
        assert accepted is False  # a list is never an FMRI
        assert "detector" in message


@given(n=st.integers(MAX_PAYLOAD_ITEMS - 3, MAX_PAYLOAD_ITEMS + 3), wide=st.booleans())
def test_payload_member_limit(n: int, wide: bool) -> None:
    """A payload of at most 4096 members and elements is accepted, more is rejected."""
    obj: dict[str, Any] = {"class": "ereport.x"}
    if wide:
        obj.update({f"m{i}": i for i in range(n)})
    else:
        obj["list"] = list(range(n - 1))
    try:
        parse_ereport_line(orjson.dumps(obj), now_ns=NOW, ena_gen=EnaGenerator())
        accepted = True
    except EventRejected as exc:
        assert str(exc) == f"payload holds more than {MAX_PAYLOAD_ITEMS} members and elements"
        accepted = False
    assert accepted == (n <= MAX_PAYLOAD_ITEMS)


@given(length=st.integers(MAX_FMRI_LEN - 3, MAX_FMRI_LEN + 3))
def test_detector_length_limit(length: int) -> None:
    """A detector FMRI of at most 4096 characters is accepted, a longer one rejected."""
    base = "cpu:///cpuid=3/serial="
    detector = base + "s" * (length - len(base))
    line = orjson.dumps({"class": "ereport.x", "detector": detector})
    try:
        ev = parse_ereport_line(line, now_ns=NOW, ena_gen=EnaGenerator())
    except EventRejected as exc:
        assert f"longer than {MAX_FMRI_LEN} characters" in str(exc)
        assert length > MAX_FMRI_LEN
        return
    assert (length, ev.detector_str) == (len(detector), detector)
    assert length <= MAX_FMRI_LEN


_range_values = st.sampled_from(sorted(MEMBER_RANGES)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.one_of(
            st.integers(MEMBER_RANGES[name].low - 2, MEMBER_RANGES[name].low + 2),
            st.integers(MEMBER_RANGES[name].high - 2, MEMBER_RANGES[name].high + 2),
            st.integers(MEMBER_RANGES[name].low, MEMBER_RANGES[name].high),
            st.integers(),
        ),
        st.sampled_from(["int", "hex", "float", "str", "null", "bool"]),
    )
)


@given(spec=_range_values)
def test_member_ranges(spec: tuple[str, int, str]) -> None:
    """Well-known members are accepted inside their integer ranges, else rejected by name."""
    name, number, form = spec
    rng = MEMBER_RANGES[name]
    value: Any = {
        "int": number,
        "hex": hex(number) if number >= 0 else f"-0x{-number:x}",
        "float": float(number),
        "str": str(number),
        "null": None,
        "bool": number % 2 == 0,
    }[form]
    inside = rng.low <= number <= rng.high
    expected = inside and (form == "int" or (form == "hex" and rng.hex_ok and number >= 0))
    line = _encode({"class": "ereport.x", name: value})
    assume(line is not None)
    assert line is not None
    try:
        parse_ereport_line(line, now_ns=NOW, ena_gen=EnaGenerator())
        accepted = True
    except EventRejected as exc:
        assert f"payload member {name!r}" in str(exc)
        accepted = False
    assert accepted == expected


# -- FMRIs ---------------------------------------------------------------------------------

_fmri_texts = st.one_of(
    st.text(max_size=80),
    st.tuples(
        st.sampled_from(["hc://", "hc:///", "cpu:///", "mem:///", "fmd:///module/", "x://"]),
        st.text(alphabet="%/:=?&#0123456789abcdefxABCDEF serialcpuid\x00é", max_size=60),
    ).map("".join),
    st.integers(0, 3 * MAX_FMRI_LEN).map(lambda n: "hc:///" + "/".join(["a=1"] * (n // 4))),
)


@settings(max_examples=300)
@given(text=_fmri_texts)
def test_arbitrary_fmri_strings(text: str) -> None:
    """Any string is an FMRI whose canonical form parses back the same, or FmriError."""
    fmri = _expect_fmd_error(parse_fmri, text)
    if fmri is None:
        return
    canonical = fmri.to_string()
    assert len(text) <= MAX_FMRI_LEN
    if fmri.scheme != "fmd":
        assert parse_fmri(canonical) == fmri
    assert parse_fmri(canonical).to_string() == canonical


_fmri_objects = st.fixed_dictionaries(
    {"scheme": st.sampled_from(["hc", "cpu", "mem", "fmd", "dev", None, 1])},
    optional={
        name: json_values
        for name in ("version", "cpuid", "serial", "unum", "physaddr", "offset", "hc-root",
                     "hc-list", "hc-list-sz", "authority", "hc-specific", "mod-name",
                     "mod-version", "bogus")
    },
)  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_fmri_objects | json_values)
def test_arbitrary_fmri_objects(obj: Any) -> None:
    """Any JSON value is an FMRI that round-trips through its object form, or FmriError."""
    fmri = _expect_fmd_error(fmri_from_obj, obj)
    if fmri is not None:
        assert fmri_from_obj(fmri.to_dict()) == fmri


@given(fmri=string_exact_fmris)
def test_valid_fmris_round_trip_or_name_the_limit(fmri: Any) -> None:
    """hc, cpu, mem FMRIs round-trip as strings up to 4096 characters, else FmriError."""
    text = fmri.to_string()
    if len(text) <= MAX_FMRI_LEN:
        assert parse_fmri(text) == fmri
    else:
        with pytest.raises(FmriError, match=f"longer than {MAX_FMRI_LEN} characters"):
            parse_fmri(text)


def test_detector_object_keeps_the_length_limit() -> None:
    """A detector object whose FMRI is over 4096 characters is refused like its string."""
    detector = {"scheme": "cpu", "cpuid": 3, "serial": "s" * 6000}
    line = orjson.dumps({"class": "ereport.x", "detector": detector})
    with pytest.raises(EventRejected, match=f"longer than {MAX_FMRI_LEN} characters"):
        parse_ereport_line(line, now_ns=NOW, ena_gen=EnaGenerator())


@given(pairs=st.integers(0, 2 * MAX_FMRI_PAIRS))
def test_hc_path_pair_limit(pairs: int) -> None:
    """An hc path of at most 64 pairs parses and round-trips; more is an FmriError."""
    text = "hc:///" + "/".join(f"n{i}={i}" for i in range(pairs))
    try:
        fmri = parse_fmri(text)
    except FmriError:
        assert pairs > MAX_FMRI_PAIRS
        return
    assert isinstance(fmri, HcFmri)
    assert (len(fmri.hc_list), parse_fmri(fmri.to_string())) == (pairs, fmri)


@given(fmri=all_fmris)
def test_valid_fmris_survive_the_object_form(fmri: Any) -> None:
    """Every generated FMRI round-trips through its object form as JSON."""
    assert fmri_from_obj(orjson.loads(orjson.dumps(fmri.to_dict()))) == fmri


# -- raw machine-check records ---------------------------------------------------------

_register = st.one_of(
    st.integers(0, 2**64 - 1).map(lambda v: v | (1 << 63)),
    st.integers(0, 2**64 - 1).map(hex),
    st.integers(-5, 2**65),
    st.sampled_from(["0x", "0x1g", " 0x10 ", "12", "-1", "0x" + "f" * 17, "1" * 5000]),
    json_values,
)
_mca_members = st.fixed_dictionaries(
    {},
    optional={
        **{name: _register for name in MCA_MEMBERS},
        "cpu": st.integers(-2, 20) | st.integers() | json_values,
        "bank": st.integers(-2, 300) | json_values,
        "vendor": st.sampled_from(["GenuineIntel", "AuthenticAMD", "", "x" * 100]) | json_values,
        "family": st.sampled_from([6, 15, 16, 23]) | st.integers(),
        "time": st.integers(-10, 2**40) | st.text(max_size=30) | json_values,
        "bogus": json_values,
    },
)
_mca_objects = st.fixed_dictionaries(
    {"mca": _mca_members | json_values},
    optional={"ena": json_values, "__injected": json_values, "class": json_values},
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_mca_objects)
def test_raw_mca_records(obj: dict[str, Any]) -> None:
    """Any {"mca": ...} object is a bounded ereport from a platform strand, or EventRejected."""
    try:
        ev = mca_ereport(obj, PLATFORM, now_ns=NOW, ena_gen=EnaGenerator())
    except EventRejected:
        return
    _within_limits(ev)
    _wire_round_trip(ev)
    assert ev.detector == PLATFORM.cpu_to_hc(ev.payload["cpuid"])
    record = record_from_json(obj["mca"])
    assert record.time_ns is None or record.time_ns >= 0
    again = record_from_json(orjson.loads(orjson.dumps(record_to_json(record))))
    micro = None if record.time_ns is None else record.time_ns // 1000 * 1000
    assert again == replace(record, time_ns=micro)


@pytest.mark.parametrize(
    "record",
    [
        {"cpu": 1, "bank": 1, "status": "x" * 100_000},
        {"cpu": 1, "bank": 1, "status": ["x" * 100] * 900},
        {"cpu": 1, "bank": 1, "status": "0x9400000000000101", "y" * 100_000: 1},
    ],
    ids=["long-string", "long-array", "long-member-name"],
)
def test_mca_rejection_messages_are_short(record: dict[str, Any]) -> None:
    """A raw record rejected for a huge value says so in a message of one short line."""
    with pytest.raises(EventRejected) as info:
        mca_ereport({"mca": record}, PLATFORM, now_ns=NOW, ena_gen=EnaGenerator())
    assert len(str(info.value)) <= 300


# -- machine-check text -----------------------------------------------------------------


def _check_mce(text: str) -> list[ParsedMca | ParseFailure]:
    items = parse_mce_text(text)
    lines = max(1, len(text.splitlines()))
    assert all(isinstance(i, ParsedMca | ParseFailure) for i in items)
    assert all(1 <= i.line <= lines for i in items)
    for item in items:
        if isinstance(item, ParsedMca):
            assert -1 <= item.record.bank <= 255
            assert 0 <= item.record.status < 2**64
            assert item.record.status >> 63 == 1  # VAL
    return items


@settings(max_examples=300)
@given(text=st.text(max_size=400))
def test_mcelog_arbitrary_text(text: str) -> None:
    """Any text parses into records and per-record failures, never an exception."""
    _check_mce(text)


@settings(max_examples=300)
@given(seed=st.integers(0, 2**32))
def test_mcelog_mutated_real_records(seed: int) -> None:
    """Real mcelog, kernel and Xen records, mutated, give records and failures, never raise."""
    _check_mce(mutate_mce(random.Random(seed), MCE_SEEDS))


def test_mcelog_real_records_parse() -> None:
    """The unmutated seed records are read (the mutations start from real input)."""
    parsed = [i for text in SEED_MCE for i in _check_mce(text) if isinstance(i, ParsedMca)]
    assert len(parsed) >= 5


def test_mcelog_xen_header_with_a_huge_cpu_number() -> None:
    """A Xen header naming a CPU with thousands of digits is a failure, not an exception."""
    items = parse_mce_text("(XEN) incident occurred on CPU " + "1" * 5000 + ".\n")
    assert [type(i) for i in items] == [ParseFailure]


def test_mcelog_xen_header_cpu_fits_the_wire() -> None:
    """Every record parse_mce_text returns can be written as a {"mca": ...} wire line."""
    text = "(XEN) incident occurred on CPU " + "1" * 50 + ".\n(XEN) Bank 2: d400008000040150\n"
    lines = []
    for item in parse_mce_text(text):
        if isinstance(item, ParsedMca):
            lines.append(orjson.dumps({"mca": record_to_json(item.record)}))
    assert len(lines) <= 1


# -- the injection language ---------------------------------------------------------------


def _expanded_items(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_expanded_items(v) for v in value.values())
    if isinstance(value, list):
        return len(value) + sum(_expanded_items(v) for v in value)
    return 0


def _check_program(text: str) -> None:
    """parse_program never raises; a program without errors keeps every documented limit,
    and its first events evaluate to wire lines."""
    program, errors = parse_program(text)
    assert all(isinstance(e, InjectSyntaxError) and e.line >= 1 for e in errors)
    if errors:
        return
    events = sum(c.count if isinstance(c, Repeat) else 1 for c in program.commands)
    assert events <= MAX_EVENTS
    for defn in program.defs.values():
        assert len(orjson.dumps(defn.value)) <= MAX_VALUE_BYTES
        assert _expanded_items(defn.value) <= MAX_VALUE_ITEMS
        for member in defn.decl.members:
            value = defn.value.get(member.name)
            if isinstance(value, list):
                assert len(value) <= MAX_ARRAY
    for item in zip(range(50), evaluate(program, rng=random.Random(0)), strict=False):
        if isinstance(item[1], tuple):
            line = item[1][1]
            assert orjson.loads(line)["class"]


@settings(max_examples=300)
@given(seed=st.integers(0, 2**32))
def test_injlang_mutated_programs(seed: int) -> None:
    """Mutated valid programs never raise, and any that still parses keeps the limits."""
    _check_program(mutate_program(random.Random(seed), SEED_PROGRAMS))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_injlang_expansion_is_bounded(seed: int) -> None:
    """Programs built to expand are refused past the documented limits or stay within them."""
    _check_program(expansion_program(random.Random(seed)))


@given(counts=st.lists(st.integers(0, MAX_EVENTS), max_size=4))
def test_injlang_event_total(counts: list[int]) -> None:
    """repeat counts are accepted up to 1,000,000 events in all, and refused beyond."""
    text = "evdef ereport.t { uint8_t n; };\nevent ereport.t e = { 1 };\n" + "".join(
        f"repeat {n} e;\n" for n in counts
    )
    _, errors = parse_program(text)
    assert (errors == []) == (sum(counts) <= MAX_EVENTS)


@settings(max_examples=200)
@given(text=st.text(max_size=300))
def test_injlang_arbitrary_text(text: str) -> None:
    """Any text parses into a program and errors without raising anything else."""
    _check_program(text)


# -- configuration files and property values -----------------------------------------------


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conf")


_conf_text = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(["setprop", "subscribe", "dictionary", '"', "\\", "#", " ", "\t",
                         "\n", "a", "x=y", "ereport.*", "store.batch", "1k", '""', "é"]),
        max_size=40,
    ).map("".join),
)  # fmt: skip


def _quote(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_conf_text | st.binary(max_size=200))
def test_conf_files(conf_dir: Path, content: str | bytes) -> None:
    """Any .conf text parses (and reads back the same quoted) or raises ConfigError."""
    path = conf_dir / "fuzz.conf"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(content)
    try:
        conf = parse_conf(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    lines = [f"setprop {_quote(n)} {_quote(v)}" for n, v, _ in conf.setprops]
    lines += [f"subscribe {_quote(p)}" for p, _ in conf.subscriptions]
    lines += [f"dictionary {_quote(d)}" for d, _ in conf.dictionaries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    again = parse_conf(path)
    assert [(n, v) for n, v, _ in again.setprops] == [(n, v) for n, v, _ in conf.setprops]
    assert [p for p, _ in again.subscriptions] == [p for p, _ in conf.subscriptions]
    assert [d for d, _ in again.dictionaries] == [d for d, _ in conf.dictionaries]


_value_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{0,5})?\s?(ns|us|ms|s|min|h|d|week|k|m|g|t|b|x)?",
                  fullmatch=True),
    st.sampled_from(["1" * 5000, "0x" + "f" * 5000, "1e999", "true", "on", "1.5m", "-1"]),
)  # fmt: skip


@settings(max_examples=300)
@given(spec=st.sampled_from(DAEMON_PROPERTIES), text=_value_text)
def test_property_values(spec: Any, text: str) -> None:
    """Any text for any daemon property is a value that reads back the same, or ConfigError."""
    try:
        value = parse_value(spec, text)
    except ConfigError as exc:
        assert repr(spec.name) in str(exc)
        return
    if isinstance(value, bool):
        assert parse_value(spec, "true" if value else "false") == value
    elif isinstance(value, int):
        assert parse_value(spec, str(value)) == value
    else:
        assert parse_value(spec, value) == value


# -- fmdump time forms ---------------------------------------------------------------------


@settings(max_examples=300)
@given(
    text=st.text(max_size=40)
    | st.from_regex(r"[0-9]{1,30}(ns|us|ms|s|sec|m|min|h|hour|d|day|y|)", fullmatch=True)
    | st.from_regex(
        r"[0-9]{1,4}[-/][0-9]{1,4}[-/][0-9]{1,4}([ T][0-9]{1,2}:[0-9]{2}(:[0-9]{2})?)?"
        r"(\.[0-9]{1,12})?",
        fullmatch=True,
    )
)
def test_time_forms(text: str) -> None:
    """Any -t/-T argument is a time after 1970 or raises TimeSpecError."""
    try:
        when = parse_timespec(text, NOW)
    except TimeSpecError:
        return
    assert when >= 0


@given(moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_time_forms_round_trip(moment: datetime) -> None:
    """An absolute local time written in each accepted form reads back as that second."""
    moment = moment.replace(microsecond=0)
    expected = int(moment.timestamp()) * 10**9
    forms = [
        moment.strftime("%m/%d/%Y %H:%M:%S"),
        moment.strftime("%Y-%m-%dT%H:%M:%S"),
        moment.strftime("%d%b%Y %H:%M:%S"),
    ]
    assert [parse_timespec(f, NOW) for f in forms] == [expected] * 3


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["ns", "us", "ms", "s", "min", "h", "d"]))
def test_relative_time_forms(n: int, unit: str) -> None:
    """``<n><unit>`` is that long before now, or refused when that is before 1970."""
    scale = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "min": 60 * 10**9,
             "h": 3600 * 10**9, "d": 86400 * 10**9}[unit]  # fmt: skip
    try:
        when = parse_timespec(f"{n}{unit}", NOW)
    except TimeSpecError:
        assert n * scale > NOW
        return
    assert when == NOW - n * scale


def test_relative_time_with_a_huge_number() -> None:
    """A relative time with thousands of digits is a TimeSpecError like any other bad time."""
    with pytest.raises(TimeSpecError):
        parse_timespec("1" * 5000 + "s", NOW)


# -- the control socket's reply encoding ----------------------------------------------------


def test_unencodable_control_reply_is_still_one_line() -> None:
    """A result JSON cannot hold is answered with one internal-error line."""
    assert AdmServer.encode({"ok": True, "result": 2**70}).endswith(b"\n")
