"""Tests for the FMRI models of fmd.protocol: string and object forms, escaping, errors."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fmd.errors import FmriError
from fmd.protocol import (
    CpuFmri,
    FmdFmri,
    Fmri,
    HcFmri,
    MemFmri,
    fmri_from_obj,
    fmri_to_json,
    hc_fmri,
    parse_fmri,
    parse_fmri_cached,
    sanitize_authority,
)

# ---- strategies ------------------------------------------------------------

# Any text, with the characters the notation reserves made likely.
odd_text = st.text(alphabet=st.sampled_from("%/:=?&#ab0 \t\n\x00\x7fé☃")) | st.text()
names = odd_text.filter(bool)
ident_free_names = names.filter(lambda n: n not in ("serial", "part", "revision"))


def unique_pairs(keys: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    return st.dictionaries(keys, odd_text, max_size=4).map(lambda d: tuple(d.items()))


hc_fmris = st.builds(
    HcFmri,
    authority=unique_pairs(ident_free_names),
    hc_list=st.lists(st.tuples(names, odd_text), max_size=6).map(tuple),
    serial=st.none() | odd_text,
    part=st.none() | odd_text,
    revision=st.none() | odd_text,
    hc_specific=unique_pairs(names),
)
cpu_fmris = st.builds(CpuFmri, cpuid=st.integers(0, 2**32 - 1), serial=st.none() | odd_text)
mem_fmris = st.builds(
    MemFmri,
    unum=odd_text,
    serial=st.none() | odd_text,
    physaddr=st.none() | st.integers(0, 2**64 - 1),
    offset=st.none() | st.integers(0, 2**64 - 1),
)
fmd_fmris = st.builds(
    FmdFmri,
    mod_name=names,
    mod_version=st.none() | odd_text,
    authority=unique_pairs(names),
)
string_exact_fmris = hc_fmris | cpu_fmris | mem_fmris
all_fmris = string_exact_fmris | fmd_fmris

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)


# ---- round trips -------------------------------------------------------------


@given(string_exact_fmris)
def test_string_form_round_trips(fmri: Fmri) -> None:
    """hc, cpu and mem FMRIs parse back from their string form to an equal FMRI."""
    assert parse_fmri(fmri.to_string()) == fmri


@given(fmd_fmris)
def test_fmd_string_form_round_trips_as_string(fmri: FmdFmri) -> None:
    """An fmd FMRI's string form (module name only) round-trips as a string."""
    parsed = FmdFmri.parse(fmri.to_string())
    assert parsed.to_string() == fmri.to_string()
    assert parsed.mod_name == fmri.mod_name


@given(all_fmris)
def test_object_form_round_trips(fmri: Fmri) -> None:
    """Every FMRI is rebuilt equal from its to_dict() form."""
    assert fmri_from_obj(fmri.to_dict()) == fmri


@given(all_fmris)
def test_object_form_survives_json(fmri: Fmri) -> None:
    """The object form is plain JSON and survives encoding and decoding."""
    assert fmri_from_obj(orjson.loads(orjson.dumps(fmri.to_dict()))) == fmri


@given(all_fmris)
def test_json_form_round_trips(fmri: Fmri) -> None:
    """fmri_to_json gives a form that fmri_from_obj reads back equal."""
    assert fmri_from_obj(fmri_to_json(fmri)) == fmri


@given(all_fmris)
def test_string_form_is_canonical(fmri: Fmri) -> None:
    """Reformatting a parsed string gives the same string."""
    text = fmri.to_string()
    assert parse_fmri(text).to_string() == text


@given(all_fmris)
def test_string_form_has_no_whitespace_or_controls(fmri: Fmri) -> None:
    """String forms are one printable token: no spaces, newlines or control characters."""
    text = fmri.to_string()
    assert not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text)


@given(all_fmris)
def test_str_is_to_string(fmri: Fmri) -> None:
    """str() of an FMRI is its string form."""
    assert str(fmri) == fmri.to_string()


# ---- robustness ------------------------------------------------------------------


@given(st.text())
def test_parse_arbitrary_text_raises_only_fmri_error(text: str) -> None:
    """Any text either parses or raises FmriError."""
    with contextlib.suppress(FmriError):
        parse_fmri(text)


@given(st.sampled_from(["hc://", "cpu://", "mem://", "fmd://", "hc:///", "cpu:///"]), odd_text)
def test_parse_scheme_prefixed_text_raises_only_fmri_error(prefix: str, rest: str) -> None:
    """Text after a known scheme either parses or raises FmriError."""
    with contextlib.suppress(FmriError):
        parse_fmri(prefix + rest)


@given(
    st.sampled_from(["hc", "cpu", "mem", "fmd", "dev", 3, None]),
    st.dictionaries(
        st.sampled_from(
            ["version", "hc-root", "hc-list", "hc-list-sz", "authority", "hc-specific", "serial",
             "part", "revision", "cpuid", "unum", "physaddr", "offset", "mod-name",
             "mod-version", "other"]
        ),
        json_values,
    ),
)  # fmt: skip
def test_object_form_of_arbitrary_members_raises_only_fmri_error(
    scheme: object, members: dict[str, object]
) -> None:
    """Any JSON object either builds an FMRI or raises FmriError."""
    with contextlib.suppress(FmriError):
        fmri_from_obj({"scheme": scheme, **members})


# ---- string forms from the reference ---------------------------------------------


def test_hc_string_with_authority() -> None:
    """An hc string with authority pairs and a cpu path parses into its parts."""
    text = "hc://:product-id=X:server-id=Y/motherboard=0/chip=3/core=0/strand=0"
    fmri = parse_fmri(text)
    assert fmri == HcFmri(
        authority=(("product-id", "X"), ("server-id", "Y")),
        hc_list=(("motherboard", "0"), ("chip", "3"), ("core", "0"), ("strand", "0")),
    )
    assert fmri.to_string() == text


def test_hc_string_without_authority() -> None:
    """hc:/// introduces a path without authority."""
    assert parse_fmri("hc:///motherboard=0/chip=0") == HcFmri(
        hc_list=(("motherboard", "0"), ("chip", "0"))
    )


def test_hc_root_string() -> None:
    """An hc FMRI with an empty path is written hc:/// and parses back."""
    assert HcFmri().to_string() == "hc:///"
    assert parse_fmri("hc:///") == HcFmri()


def test_hc_serial_part_revision_follow_authority() -> None:
    """serial, part and revision are written as :name=value after the authority."""
    fmri = HcFmri(
        authority=(("product-id", "P"),),
        hc_list=(("motherboard", "0"), ("dimm", "1")),
        serial="S1",
        part="PN",
        revision="R2",
    )
    text = "hc://:product-id=P:serial=S1:part=PN:revision=R2/motherboard=0/dimm=1"
    assert fmri.to_string() == text
    assert parse_fmri(text) == fmri


def test_hc_specific_is_a_query_string() -> None:
    """hc-specific members follow the path as ?name=value&name=value."""
    fmri = HcFmri(
        hc_list=(("motherboard", "0"), ("chip", "0")),
        hc_specific=(("offset", "0x1000"), ("physaddr", "0x2000")),
    )
    assert fmri.to_string() == "hc:///motherboard=0/chip=0?offset=0x1000&physaddr=0x2000"


def test_reserved_characters_are_percent_encoded() -> None:
    """Reserved characters in values are written %XX and read back."""
    fmri = HcFmri(authority=(("server-id", "a:b/c d"),), hc_list=(("x", "1?2&3%"),))
    assert fmri.to_string() == "hc://:server-id=a%3Ab%2Fc%20d/x=1%3F2%263%25"
    assert parse_fmri(fmri.to_string()) == fmri


def test_cpu_strings() -> None:
    """cpu FMRIs are cpu:///cpuid=N with an optional /serial=S."""
    assert CpuFmri(cpuid=12).to_string() == "cpu:///cpuid=12"
    assert CpuFmri(cpuid=12, serial="ABC").to_string() == "cpu:///cpuid=12/serial=ABC"
    assert parse_fmri("cpu:///cpuid=12/serial=ABC") == CpuFmri(cpuid=12, serial="ABC")


def test_mem_unum_with_hc_path_is_escaped() -> None:
    """An x86 unum (an hc path) keeps '=' but escapes '/' so it stays one member."""
    fmri = MemFmri(unum="motherboard=0/chip=0/dimm=1", physaddr=0x1000, offset=0x40)
    text = "mem:///unum=motherboard=0%2Fchip=0%2Fdimm=1/physaddr=0x1000/offset=0x40"
    assert fmri.to_string() == text
    assert parse_fmri(text) == fmri


def test_mem_accepts_decimal_addresses() -> None:
    """Addresses in a mem string may be decimal; they are written back in hex."""
    assert parse_fmri("mem:///unum=DIMM0/physaddr=4096").to_string() == (
        "mem:///unum=DIMM0/physaddr=0x1000"
    )


def test_fmd_string() -> None:
    """fmd FMRIs are fmd:///module/NAME."""
    fmri = FmdFmri(mod_name="eft", mod_version="1.16", authority=(("server-id", "h"),))
    assert fmri.to_string() == "fmd:///module/eft"
    assert parse_fmri("fmd:///module/eft") == FmdFmri(mod_name="eft")


def test_fmd_json_form_keeps_version_and_authority() -> None:
    """The JSON form of an fmd FMRI is its object form, which keeps mod-version."""
    fmri = FmdFmri(mod_name="eft", mod_version="1.16", authority=(("server-id", "h"),))
    assert fmri_to_json(fmri) == {
        "scheme": "fmd",
        "version": 0,
        "authority": {"server-id": "h"},
        "mod-name": "eft",
        "mod-version": "1.16",
    }


def test_json_form_of_other_schemes_is_the_string() -> None:
    """hc, cpu and mem FMRIs are written as strings in JSON."""
    assert fmri_to_json(CpuFmri(cpuid=3)) == "cpu:///cpuid=3"


# ---- object forms ---------------------------------------------------------------


def test_hc_object_form_member_names() -> None:
    """The hc object form uses the protocol's member names."""
    fmri = HcFmri(
        authority=(("product-id", "X"),),
        hc_list=(("motherboard", "0"),),
        serial="S",
        hc_specific=(("offset", "0x10"),),
    )
    assert fmri.to_dict() == {
        "scheme": "hc",
        "version": 0,
        "hc-root": "",
        "hc-list": [{"hc-name": "motherboard", "hc-id": "0"}],
        "authority": {"product-id": "X"},
        "serial": "S",
        "hc-specific": {"offset": "0x10"},
    }


def test_cpu_and_mem_object_forms() -> None:
    """cpu and mem object forms use cpuid/serial and unum/physaddr/offset."""
    assert CpuFmri(cpuid=1, serial="s").to_dict() == {
        "scheme": "cpu",
        "version": 1,
        "cpuid": 1,
        "serial": "s",
    }
    assert MemFmri(unum="U", physaddr=4096).to_dict() == {
        "scheme": "mem",
        "version": 0,
        "unum": "U",
        "physaddr": 4096,
    }


def test_object_form_tolerates_pairs_and_integer_ids() -> None:
    """hc-list entries may be [name, id] pairs and ids may be integers."""
    obj = {"scheme": "hc", "hc-list": [["motherboard", 0], {"hc-name": "chip", "hc-id": 3}]}
    assert fmri_from_obj(obj) == HcFmri(hc_list=(("motherboard", "0"), ("chip", "3")))


def test_object_form_accepts_hex_string_addresses() -> None:
    """Integer members of an object form may be given as hex strings."""
    obj = {"scheme": "mem", "unum": "U", "physaddr": "0x1000"}
    assert fmri_from_obj(obj) == MemFmri(unum="U", physaddr=0x1000)


def test_object_form_checks_hc_list_size() -> None:
    """A stated hc-list-sz must agree with hc-list."""
    obj = {"scheme": "hc", "hc-list-sz": 2, "hc-list": [["motherboard", "0"]]}
    with pytest.raises(FmriError, match="hc-list-sz"):
        fmri_from_obj(obj)


def test_fmri_from_obj_accepts_strings_and_fmris() -> None:
    """fmri_from_obj takes a string form or an FMRI as well as an object."""
    fmri = CpuFmri(cpuid=2)
    assert fmri_from_obj("cpu:///cpuid=2") == fmri
    assert fmri_from_obj(fmri) is fmri


# ---- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("motherboard=0", "bad FMRI 'motherboard=0': expected 'SCHEME://...'"),
        ("dev:///pci@0", "unknown FMRI scheme 'dev' in 'dev:///pci@0' (known: cpu, fmd, hc, mem)"),
        ("cpu:///serial=A", "bad FMRI 'cpu:///serial=A': missing cpuid"),
        ("cpu:///cpuid=x", "bad FMRI 'cpu:///cpuid=x': cpuid 'x' is not an integer"),
        ("cpu:///cpuid=1/color=red", "bad FMRI 'cpu:///cpuid=1/color=red': unknown member 'color'"),
        ("mem:///serial=S", "bad FMRI 'mem:///serial=S': missing unum"),
        ("mem:///unum=a%zz", "bad FMRI 'mem:///unum=a%zz': '%' not followed by two hex digits"),
        ("hc:///motherboard", "bad FMRI 'hc:///motherboard': expected NAME=VALUE"),
        ("hc://:serial=1:serial=2/", "'serial' appears twice"),
        ("hc://:a=1:a=2/", "authority member 'a' appears twice"),
        ("fmd:///eft", "expected 'fmd:///module/NAME'"),
    ],
)
def test_parse_errors_name_input_and_problem(text: str, message: str) -> None:
    """Parse errors are FmriError naming the input and what is wrong with it."""
    with pytest.raises(FmriError) as info:
        parse_fmri(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"cpuid": 1}, "missing 'scheme'"),
        ({"scheme": "zfs"}, "unknown FMRI scheme 'zfs'"),
        ({"scheme": "cpu"}, "missing 'cpuid'"),
        ({"scheme": "cpu", "cpuid": True}, "'cpuid' must be an integer, not boolean"),
        ({"scheme": "cpu", "cpuid": 1, "cpumask": 3}, "unknown member 'cpumask'"),
        ({"scheme": "hc", "hc-root": "/x"}, "'hc-root' must be empty"),
        ({"scheme": "mem", "unum": 5}, "'unum' must be a string, not integer"),
    ],
)
def test_object_errors_name_input_and_problem(obj: dict[str, object], message: str) -> None:
    """Object-form errors are FmriError naming the object and what is wrong with it."""
    with pytest.raises(FmriError) as info:
        fmri_from_obj(obj)
    assert message in str(info.value)
    assert "bad FMRI object" in str(info.value) or "FMRI scheme" in str(info.value)


def test_fmri_from_obj_rejects_other_types() -> None:
    """Neither a string nor an object is an FmriError."""
    with pytest.raises(FmriError, match="not integer"):
        fmri_from_obj(5)  # type: ignore[arg-type]


def test_subclass_parse_insists_on_its_scheme() -> None:
    """CpuFmri.parse refuses an FMRI of another scheme."""
    with pytest.raises(FmriError, match="is a hc FMRI, not a CpuFmri"):
        CpuFmri.parse("hc:///motherboard=0")


def test_authority_may_not_use_hc_identity_names() -> None:
    """An authority member called serial would not round-trip, so it is refused."""
    with pytest.raises(ValidationError):
        HcFmri(authority=(("serial", "x"),))


def test_cpuid_must_be_an_integer() -> None:
    """cpuid is a strict non-negative integer."""
    with pytest.raises(ValidationError):
        CpuFmri(cpuid=True)
    with pytest.raises(ValidationError):
        CpuFmri(cpuid=-1)


# ---- helpers ---------------------------------------------------------------------


def test_sanitize_authority() -> None:
    """':', '=', '/' and whitespace in authority values become '-'."""
    assert sanitize_authority("Sun Fire X4200:rev=2/a\tb") == "Sun-Fire-X4200-rev-2-a-b"


def test_hc_fmri_helper_builds_and_sanitizes() -> None:
    """hc_fmri sanitizes authority values and stringifies instance numbers."""
    fmri = hc_fmri({"product-id": "Sun Fire"}, ("motherboard", 0), ("chip", 3), serial="S")
    assert fmri == HcFmri(
        authority=(("product-id", "Sun-Fire"),),
        hc_list=(("motherboard", "0"), ("chip", "3")),
        serial="S",
    )
    assert hc_fmri([("server-id", "h")], ("motherboard", 0)).to_string() == (
        "hc://:server-id=h/motherboard=0"
    )
    assert hc_fmri(None, hc_specific={"offset": "0x8"}).to_string() == "hc:///?offset=0x8"


def test_hc_fmri_helper_raises_fmri_error() -> None:
    """hc_fmri reports an invalid member as FmriError."""
    with pytest.raises(FmriError, match="empty member name"):
        hc_fmri(None, ("", 0))


def test_parse_fmri_cached_returns_equal_fmri() -> None:
    """The cached parser returns the same FMRI as the plain one, and reuses it."""
    text = "hc:///motherboard=0/chip=1"
    assert parse_fmri_cached(text) == parse_fmri(text)
    assert parse_fmri_cached(text) is parse_fmri_cached(text)


@given(all_fmris)
def test_fmris_are_hashable_values(fmri: Fmri) -> None:
    """Equal FMRIs hash equal, so they can key dicts and sets."""
    again = fmri_from_obj(fmri.to_dict())
    assert hash(again) == hash(fmri)
    assert {fmri: 1}[again] == 1


def test_fmris_are_immutable() -> None:
    """FMRIs are frozen."""
    fmri = CpuFmri(cpuid=1)
    with pytest.raises(ValidationError):
        fmri.cpuid = 2  # type: ignore[misc]
