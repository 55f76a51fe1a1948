"""Tests for fmd.dictionary: message codes, .dict and .po parsing, and dictionary sets."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.dictionary import (
    ALPHABET,
    MAX_VALUE,
    MESSAGE_FIELDS,
    NODIAGCODE,
    Dictionary,
    DictionarySet,
    Message,
    MessageCatalog,
    decode_code,
    default_dict_dirs,
    encode_code,
)
from fmd.errors import DictionaryError

DICT_DIR = Path(__file__).resolve().parents[1] / "dict"

# The first value of each size class.
CLASS_STARTS = [0, 1 << 21, (1 << 21) + (1 << 38), (1 << 21) + (1 << 38) + (1 << 55)]


# ---- codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dict_name", "value", "code"),
    [
        ("GMCA", 1, "GMCA-8000-1K"),
        ("GMCA", 2, "GMCA-8000-21"),
        ("GMCA", 3, "GMCA-8000-3W"),
        ("GMCA", 25, "GMCA-8000-SL"),
        ("FMD", 0, "FMD-8000-0W"),
        ("FMD", 1, "FMD-8000-11"),
        ("FMD", 2, "FMD-8000-2K"),
        ("FMD", 3, "FMD-8000-3F"),
        ("FMD", 4, "FMD-8000-4M"),
        ("FMD", 5, "FMD-8000-58"),
        ("FMD", 6, "FMD-8000-6U"),
        ("AMD", 7, "AMD-8000-7U"),
    ],
)
def test_encode_matches_published_codes(dict_name: str, value: int, code: str) -> None:
    """encode_code() gives the codes illumos publishes, and decode_code() reverses them."""
    assert encode_code(dict_name, value) == code
    assert decode_code(code) == (dict_name, value)


def test_amd_icachedata_value_is_seven() -> None:
    """AMD-8000-7U (fault.cpu.amd.icachedata) is the only small AMD value giving that code."""
    assert [v for v in range(4096) if encode_code("AMD", v) == "AMD-8000-7U"] == [7]


@pytest.mark.parametrize(
    ("value", "layout"),
    [
        (0, [4, 2]),
        (CLASS_STARTS[1] - 1, [4, 2]),
        (CLASS_STARTS[1], [4, 4, 2]),
        (CLASS_STARTS[2], [4, 4, 4, 2]),
        (CLASS_STARTS[3], [4, 4, 4, 4, 2]),
        (MAX_VALUE, [4, 4, 4, 4, 2]),
    ],
)
def test_code_layout_by_size_class(value: int, layout: list[int]) -> None:
    """Each size class has its own dash layout: XXXX-XX up to XXXX-XXXX-XXXX-XXXX-XX."""
    parts = encode_code("TEST", value).split("-")
    assert parts[0] == "TEST"
    assert [len(p) for p in parts[1:]] == layout


@pytest.mark.parametrize("value", [-1, MAX_VALUE + 1, True])
def test_encode_refuses_out_of_range_values(value: int) -> None:
    """Values outside 0..MAX_VALUE (and bools) raise DictionaryError."""
    with pytest.raises(DictionaryError, match="outside"):
        encode_code("TEST", value)


def test_encode_refuses_bad_dictionary_name() -> None:
    """A dictionary name with a dash (or empty) is refused."""
    for name in ("A-B", ""):
        with pytest.raises(DictionaryError, match="dictionary name"):
            encode_code(name, 1)


def test_decode_detects_bad_checksum() -> None:
    """A code with a changed checksum character fails with 'bad checksum'."""
    with pytest.raises(DictionaryError, match="bad checksum"):
        decode_code("GMCA-8000-1L")


def test_checksum_depends_on_dictionary_name() -> None:
    """The same digits under another dictionary name fail the checksum."""
    with pytest.raises(DictionaryError, match="bad checksum"):
        decode_code("AMD-8000-1K")


@pytest.mark.parametrize(
    "code",
    ["GMCA8000", "GMCA-8000", "GMCA-80001K", "GMCA-800-01K", "GMCA-8B00-1K", "GMCA-0000-1K", "-8"],
)
def test_decode_refuses_malformed_codes(code: str) -> None:
    """Codes with a bad shape, bad characters or a bad leading group are refused."""
    with pytest.raises(DictionaryError, match="not a message code"):
        decode_code(code)


@given(
    dict_name=st.from_regex(r"[A-Z][A-Z0-9_]{0,7}", fullmatch=True),
    size=st.integers(0, 3),
    data=st.data(),
)
def test_encode_decode_round_trip_in_every_size_class(
    dict_name: str, size: int, data: st.DataObject
) -> None:
    """decode_code(encode_code(d, v)) == (d, v) for values in all four size classes."""
    width = [21, 38, 55, 72][size]
    value = CLASS_STARTS[size] + data.draw(st.integers(0, (1 << width) - 1))
    code = encode_code(dict_name, value)
    assert decode_code(code) == (dict_name, value)
    assert len(code.split("-")) == size + 3
    assert all(ch in ALPHABET for ch in code[len(dict_name) :].replace("-", ""))


# ---- .dict parsing -------------------------------------------------------------

GOOD_DICT = """\
# a comment
FMDICT: name=TEST version=2 maxkey=2 dictid=0x5445

fault.b=1   # trailing comment
fault.b fault.a=2
fault.c=3
"""


def test_parse_header_and_entries() -> None:
    """Header items are parsed (dictid as hex) and multi-class keys are sorted."""
    d = Dictionary.parse(GOOD_DICT, source="TEST.dict")
    assert (d.name, d.version, d.maxkey, d.dictid) == ("TEST", 2, 2, 0x5445)
    assert d.entries == {("fault.b",): 1, ("fault.a", "fault.b"): 2, ("fault.c",): 3}
    assert d.properties == {"name": "TEST", "version": "2", "maxkey": "2", "dictid": "0x5445"}


def test_lookup_uses_the_sorted_set_of_classes() -> None:
    """lookup() ignores order and repetition, and returns None for an unknown set."""
    d = Dictionary.parse(GOOD_DICT)
    assert d.lookup(["fault.a", "fault.b"]) == encode_code("TEST", 2)
    assert d.lookup(["fault.b", "fault.a", "fault.b"]) == encode_code("TEST", 2)
    assert d.lookup(["fault.a"]) is None
    assert d.classes() == ["fault.a", "fault.b", "fault.c"]
    assert d.key_for(3) == ("fault.c",)
    assert d.key_for(9) is None


def test_header_defaults() -> None:
    """Only name= is required; version and maxkey default to 1, dictid to None."""
    d = Dictionary.parse("FMDICT: name=X\nfault.a=0\n")
    assert (d.version, d.maxkey, d.dictid) == (1, 1, None)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("fault.a=1\n", 1, "before the 'FMDICT"),
        ("# only a comment\n", None, "missing 'FMDICT"),
        ("FMDICT: version=1\n", 1, "no name="),
        ("FMDICT: name=X\nFMDICT: name=Y\n", 2, "second FMDICT header"),
        ("FMDICT: name=X maxkey=one\n", 1, "maxkey='one' is not an integer"),
        ("FMDICT: name=X maxkey=0\n", 1, "maxkey must be at least 1"),
        ("FMDICT: name=X junk\n", 1, "'junk' is not name=value"),
        ("FMDICT: name=X-Y\n", 1, "dictionary name"),
        ("FMDICT: name=X\nfault.a=1\nfault.b=1\n", 3, "duplicate number 1 (already used on line 2"),
        (
            "FMDICT: name=X\nfault.a=1\n\nfault.a=2\n",
            4,
            "duplicate key 'fault.a' (first on line 2)",
        ),
        ("FMDICT: name=X maxkey=2\na b=1\nb a=2\n", 3, "duplicate key 'a b'"),
        ("FMDICT: name=X\nfault.a fault.b=1\n", 2, "more than maxkey=1"),
        ("FMDICT: name=X\nfault.a=one\n", 2, "bad number 'one'"),
        ("FMDICT: name=X\nfault.a=-1\n", 2, "bad number '-1'"),
        ("FMDICT: name=X\nfault.a=\n", 2, "bad number ''"),
        ("FMDICT: name=X\nfault.a\n", 2, "expected '<class>"),
        ("FMDICT: name=X\n=3\n", 2, "no classes"),
        ("FMDICT: name=X maxkey=2\na a=3\n", 2, "same class twice"),
        (f"FMDICT: name=X\na={MAX_VALUE + 1}\n", 2, "larger than the maximum"),
    ],
)
def test_dict_errors_name_file_line_and_problem(text: str, line: int | None, message: str) -> None:
    """Each malformed .dict raises DictionaryError naming the file, the line and the problem."""
    with pytest.raises(DictionaryError) as info:
        Dictionary.parse(text, source="bad.dict")
    prefix = "bad.dict:" if line is None else f"bad.dict:{line}:"
    assert str(info.value).startswith(prefix)
    assert message in str(info.value)


class_name = st.from_regex(r"(fault|defect)\.[a-z]{1,6}(\.[a-z0-9_-]{1,6}){0,2}", fullmatch=True)


@given(
    entries=st.dictionaries(
        st.frozensets(class_name, min_size=1, max_size=3),
        st.integers(0, 10_000),
        max_size=15,
    ).filter(lambda d: len(set(d.values())) == len(d)),
    shuffle=st.randoms(use_true_random=False),
)
def test_dict_parser_round_trips_rendered_entries(
    entries: dict[frozenset[str], int], shuffle: random.Random
) -> None:
    """Rendering arbitrary unique entries in any class order and parsing them gives them back."""
    lines = ["# generated", "FMDICT: name=GEN version=1 maxkey=3"]
    for key, value in entries.items():
        classes = list(key)
        shuffle.shuffle(classes)
        lines.append(f"{' '.join(classes)}={value}")
    parsed = Dictionary.parse("\n".join(lines) + "\n")
    assert parsed.entries == {tuple(sorted(k)): v for k, v in entries.items()}


# ---- .po parsing -------------------------------------------------------------


def po_entry(code: str, **fields: str) -> str:
    return "".join(f'msgid "{code}.{f}"\nmsgstr "{v}"\n' for f, v in fields.items())


FULL = {
    "type": "Fault",
    "severity": "Major",
    "description": "A thing broke.  Refer to %s for more information.",
    "response": "It was retired.",
    "impact": "Less capacity.",
    "action": "Replace it.",
}


def test_po_parses_fields_continuations_and_escapes() -> None:
    """msgid/msgstr pairs, continuation lines and the \\n \\" \\\\ escapes are decoded."""
    text = (
        '# comment\n\nmsgid ""\nmsgstr "Content-Type: text/plain\\n"\n'
        'msgid "T-8000-00.type"\nmsgstr "Fault"\n'
        'msgid "T-8000-00.description"\nmsgstr "Line one\\n"\n  "line \\"two\\" \\\\ end"\n'
        'msgid "template"\n"-continued"\nmsgstr ""\n"a%s"\n'
    )
    cat = MessageCatalog.parse(text, source="T.po")
    assert cat.strings == {
        "T-8000-00.type": "Fault",
        "T-8000-00.description": 'Line one\nline "two" \\ end',
        "template-continued": "a%s",
    }
    assert cat.codes() == ["T-8000-00"]
    assert cat.text("template-continued") == "a%s"
    assert cat.missing_fields("T-8000-00") == ["severity", "response", "impact", "action"]


def test_po_get_returns_message_or_none() -> None:
    """get() builds a Message from the six fields and returns None for an unknown code."""
    cat = MessageCatalog.parse(po_entry("T-8000-00", **FULL))
    assert cat.get("T-8000-00") == Message(code="T-8000-00", **FULL)
    assert cat.get("T-8000-11") is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('msgstr "x"\n', 1, "msgstr without a preceding msgid"),
        ('msgid "a"\nmsgid "b"\nmsgstr "x"\n', 2, "msgid on line 1 has no msgstr"),
        ('msgid "a"\n', 1, "no msgstr before the end"),
        ('msgid "a"\nmsgstr "x"\nmsgstr "y"\n', 3, "msgstr without a preceding msgid"),
        ('"orphan"\n', 1, "continued string outside"),
        (
            'msgid "a"\nmsgstr "x"\nmsgid "a"\nmsgstr "y"\n',
            3,
            "duplicate msgid 'a' (first on line 1)",
        ),
        ('msgid "a\\t"\nmsgstr "x"\n', 1, "unsupported escape"),
        ('msgid "a\nmsgstr "x"\n', 1, "unterminated string"),
        ('msgid "a" junk\nmsgstr "x"\n', 1, "after the closing quote"),
        ("msgid a\nmsgstr x\n", 1, "expected a double-quoted string"),
        ('msgctxt "a"\n', 1, "expected msgid, msgstr"),
        ('msgid "T-8000-00.colour"\nmsgstr "x"\n', 1, "unknown field 'colour'"),
    ],
)
def test_po_errors_name_file_line_and_problem(text: str, line: int, message: str) -> None:
    """Each malformed .po raises DictionaryError naming the file, the line and the problem."""
    with pytest.raises(DictionaryError) as info:
        MessageCatalog.parse(text, source="bad.po")
    assert str(info.value).startswith(f"bad.po:{line}:")
    assert message in str(info.value)


def escape_po(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@given(
    value=st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    cut=st.integers(0, 40),
)
def test_po_string_escaping_round_trips(value: str, cut: int) -> None:
    """Any text, escaped and split over a continuation line, parses back unchanged."""
    head, tail = value[:cut], value[cut:]
    # Escape each half separately so the split never falls inside an escape.
    text = f'msgid "k"\nmsgstr "{escape_po(head)}"\n  "{escape_po(tail)}"\r\n'
    assert MessageCatalog.parse(text).strings == {"k": value}


def test_description_with_url_appends_code_to_directory_url() -> None:
    """%s becomes the URL plus the code when the URL ends in '/', else the URL itself."""
    msg = Message(code="T-8000-00", **FULL)
    assert msg.description_with_url("http://x/msg/") == (
        "A thing broke.  Refer to http://x/msg/T-8000-00 for more information."
    )
    assert msg.description_with_url("http://x/page") == (
        "A thing broke.  Refer to http://x/page for more information."
    )


# ---- DictionarySet -----------------------------------------------------------


def write_dict(directory: Path, name: str, entries: dict[str, int], po: str | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{cls}={value}\n" for cls, value in entries.items())
    (directory / f"{name}.dict").write_text(f"FMDICT: name={name} version=1 maxkey=1\n{body}")
    if po is not None:
        (directory / f"{name}.po").write_text(po)


def full_po(dict_name: str, values: list[int]) -> str:
    return "".join(po_entry(encode_code(dict_name, v), **FULL) for v in values)


def test_set_first_directory_wins(tmp_path: Path) -> None:
    """A dictionary in an earlier directory shadows one of the same name later on."""
    write_dict(tmp_path / "a", "TEST", {"fault.a": 1}, full_po("TEST", [1]))
    write_dict(tmp_path / "b", "TEST", {"fault.b": 2}, full_po("TEST", [2]))
    write_dict(tmp_path / "b", "OTHER", {"fault.c": 3}, full_po("OTHER", [3]))
    dset = DictionarySet.load([tmp_path / "a", tmp_path / "missing", tmp_path / "b"])
    assert dset.names() == ["OTHER", "TEST"]
    assert dset.lookup("TEST", ["fault.a"]) == encode_code("TEST", 1)
    assert dset.lookup("TEST", ["fault.b"]) is None
    assert [d.name for d in dset] == ["OTHER", "TEST"]
    assert dset.validate() == []


def test_set_code_for_falls_back_to_nodiagcode(tmp_path: Path) -> None:
    """code_for() returns FMD-8000-11 for an unknown class set or an unknown dictionary."""
    write_dict(tmp_path, "TEST", {"fault.a": 1}, None)
    dset = DictionarySet.load([tmp_path])
    assert dset.code_for("TEST", ["fault.a"]) == encode_code("TEST", 1)
    assert dset.code_for("TEST", ["fault.zzz"]) == NODIAGCODE
    assert dset.code_for("NOPE", ["fault.a"]) == NODIAGCODE


def test_set_nodiagcode_comes_from_the_fmd_dictionary() -> None:
    """With FMD.dict loaded, nodiagcode is its defect.sunos.fmd.nodiagcode entry."""
    dset = DictionarySet.load([DICT_DIR])
    assert dset.nodiagcode() == "FMD-8000-11"
    assert dset.code_for("FMD", ["defect.sunos.fmd.module"]) == "FMD-8000-2K"


def test_set_message_finds_catalog_by_code_prefix() -> None:
    """message() reads the dictionary name from the code and returns its texts."""
    dset = DictionarySet.load([DICT_DIR])
    msg = dset.message("FMD-8000-2K")
    assert msg is not None
    assert (msg.type, msg.severity) == ("Defect", "Minor")
    assert "fmadm reset" in msg.action
    assert dset.message("NOPE-8000-00") is None


def test_validate_reports_every_kind_of_problem(tmp_path: Path) -> None:
    """validate() lists missing .po, missing/incomplete messages, stray codes and bad names."""
    write_dict(tmp_path, "NOPO", {"fault.a": 1}, None)
    partial = dict(FULL, description="no placeholder")
    del partial["impact"]
    po = (
        po_entry(encode_code("MSGS", 1), **partial)
        + po_entry(encode_code("MSGS", 9), **FULL)
        + po_entry(encode_code("NOPO", 1), **FULL)
        + po_entry("MSGS-8000-00", **FULL)
    )
    write_dict(tmp_path, "MSGS", {"fault.a": 1, "fault.b": 2}, po)
    (tmp_path / "WRONG.dict").write_text("FMDICT: name=RIGHT\nfault.a=1\n")
    problems = DictionarySet.load([tmp_path]).validate()
    text = "\n".join(problems)
    assert "declares dictionary 'RIGHT'; the file must be named RIGHT.dict" in text
    assert "dictionary NOPO has no .po message file" in text
    assert f"message {encode_code('MSGS', 1)} lacks impact" in text
    assert f"message {encode_code('MSGS', 1)} description must contain exactly one %s" in text
    assert f"{encode_code('MSGS', 2)} (fault.b) has no message" in text
    assert f"message {encode_code('MSGS', 9)} (value 9) has no dictionary entry" in text
    assert f"message {encode_code('NOPO', 1)} belongs to dictionary NOPO" in text
    assert "'MSGS-8000-00' has a bad checksum" in text
    assert len(problems) == 8


def test_load_propagates_parse_errors(tmp_path: Path) -> None:
    """A malformed .dict in a searched directory raises DictionaryError naming it."""
    (tmp_path / "BAD.dict").write_text("fault.a=1\n")
    with pytest.raises(DictionaryError, match=r"BAD\.dict:1:"):
        DictionarySet.load([tmp_path])


def test_default_dict_dirs_lists_source_tree_then_prefix() -> None:
    """default_dict_dirs() gives the source tree's dict/ first, then <prefix>/share/fmd/dict."""
    assert default_dict_dirs() == [DICT_DIR, Path(sys.prefix) / "share" / "fmd" / "dict"]


# ---- the shipped dictionaries ----------------------------------------------------


def test_fmd_dictionary_has_the_seven_illumos_entries() -> None:
    """FMD.dict holds exactly the illumos entries with their published codes."""
    d = Dictionary.load(DICT_DIR / "FMD.dict")
    assert (d.name, d.version, d.maxkey, d.dictid) == ("FMD", 1, 1, 0x4D44)
    assert {k[0]: c for c, k in d.codes().items()} == {
        "defect.sunos.fmd.nosub": "FMD-8000-0W",
        "defect.sunos.fmd.nodiagcode": "FMD-8000-11",
        "defect.sunos.fmd.module": "FMD-8000-2K",
        "defect.sunos.fmd.config": "FMD-8000-3F",
        "list.repaired": "FMD-8000-4M",
        "list.updated": "FMD-8000-58",
        "list.resolved": "FMD-8000-6U",
    }


def test_fmd_messages_have_the_documented_types() -> None:
    """FMD.po types: Defect for the defects, Repair/Update/Resolved for the list codes."""
    cat = MessageCatalog.load(DICT_DIR / "FMD.po")
    types = {code: cat.strings[f"{code}.type"] for code in cat.codes()}
    assert types == {
        "FMD-8000-0W": "Defect",
        "FMD-8000-11": "Defect",
        "FMD-8000-2K": "Defect",
        "FMD-8000-3F": "Defect",
        "FMD-8000-4M": "Repair",
        "FMD-8000-58": "Update",
        "FMD-8000-6U": "Resolved",
    }
    assert {cat.strings[f"{code}.severity"] for code in cat.codes()} == {"Minor"}
    template = cat.text("syslog-msgs-message-template")
    assert template is not None
    assert template.splitlines()[0] == "SUNW-MSG-ID: %s, TYPE: %s, VER: 1, SEVERITY: %s"


@pytest.mark.parametrize("dict_path", sorted(DICT_DIR.glob("*.dict")), ids=lambda p: p.name)
def test_shipped_dictionary_is_valid(dict_path: Path) -> None:
    """Every shipped .dict parses (unique numbers and keys), round-trips and has full messages."""
    dictionary = Dictionary.load(dict_path)
    assert dictionary.name == dict_path.stem
    for code, key in dictionary.codes().items():
        assert decode_code(code) == (dictionary.name, dictionary.entries[key])
    catalog = MessageCatalog.load(dict_path.with_suffix(".po"))
    for code in dictionary.codes():
        assert catalog.missing_fields(code) == []
    assert set(catalog.codes()) == set(dictionary.codes())


def test_shipped_dictionary_set_validates_cleanly() -> None:
    """DictionarySet.validate() finds no problem in dict/."""
    dset = DictionarySet.load([DICT_DIR])
    assert dset.validate() == []
    assert set(MESSAGE_FIELDS) == {
        "type",
        "severity",
        "description",
        "response",
        "impact",
        "action",
    }
