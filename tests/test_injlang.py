"""The fminject language: tokenizer, parser and type checks, evaluator."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import FmdError, InjectSyntaxError
from fmd.injlang import (
    CLOCK_CLASS,
    KEYWORDS,
    Sleep,
    Token,
    evaluate,
    parse,
    parse_program,
    tokenize,
)
from fmd.protocol import EnaGenerator, decode_ena, ena_format1, fmri_from_obj
from fmd.protocol.fmri import CpuFmri

REFERENCE = """\
fmridef cpu { uint8_t version; string scheme; uint32_t cpuid; };
evdef ereport.cpu.generic-x86.l2cache { uint8_t version; fmri cpu detector;
    uint64_t IA32_MCi_STATUS; boolean error_uncorrected; };
fmri cpu cpu0 = { 1, "cpu", 0 };
event ereport.cpu.generic-x86.l2cache ce = { 0, cpu0, 0x900000400001017a, false };
repeat 4 ce;
addhrtime 1 h;
"""

NOW = 1_000_000_000_000


def run(text: str, seed: int = 0) -> list[Any]:
    """Evaluate *text* with a fixed clock and seed: decoded wire objects and Sleep items."""
    out: list[Any] = []
    for item in evaluate(
        parse(text), rng=random.Random(seed), ena=EnaGenerator(), now_ns=lambda: NOW
    ):
        out.append(item if isinstance(item, Sleep) else (item[0], orjson.loads(item[1])))
    return out


def errors(text: str) -> list[tuple[int, str]]:
    """All errors of *text* as (line, message)."""
    _, errs = parse_program(text)
    return [(e.line, str(e)) for e in errs]


def only_error(text: str) -> tuple[int, str]:
    """The single error of *text*."""
    [err] = errors(text)
    return err


# -- tokenizer --------------------------------------------------------------------


def test_tokens_and_lines() -> None:
    """Names with dots and hyphens, numbers, strings and punctuation carry their line."""
    toks = tokenize('evdef ereport.a-b.c /* x\ny */ {\n -12 0x1F "a\\"b" ;')
    assert toks == [
        Token("name", "evdef", 1),
        Token("name", "ereport.a-b.c", 1),
        Token("punct", "{", 2),
        Token("num", "-12", 3, -12),
        Token("num", "0x1F", 3, 31),
        Token("str", '"a\\"b"', 3, 'a"b'),
        Token("punct", ";", 3),
        Token("eof", "", 3),
    ]


def test_decimal_with_leading_zero() -> None:
    """A decimal number with leading zeros is read as decimal."""
    assert tokenize("007")[0].value == 7


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a\n/* open", 2, "unterminated /* comment"),
        ('\n"abc\n"', 2, "unterminated string"),
        ('"a\\q"', 1, "unknown escape '\\q' in a string"),
        ("x\n\n12ab", 3, "bad number '12ab'"),
        ("a @", 1, "unexpected character '@'"),
        ("1" * 41, 1, "number 11111111111111111111... is too long"),
    ],
)
def test_lexical_errors(text: str, line: int, message: str) -> None:
    """Lexical errors name the line and the problem."""
    with pytest.raises(InjectSyntaxError) as info:
        tokenize(text)
    assert (info.value.line, str(info.value)) == (line, message)


def test_error_is_an_fmd_error() -> None:
    """InjectSyntaxError derives from FmdError with a stable code."""
    assert issubclass(InjectSyntaxError, FmdError)
    assert InjectSyntaxError.code == "EFMD_INJECT"


# -- the reference example -----------------------------------------------------------


def test_reference_example_wire_lines() -> None:
    """The reference program sends 4 identical ereports with distinct ENAs, then addhrtime 1h."""
    items = run(REFERENCE)
    event = {
        "class": "ereport.cpu.generic-x86.l2cache",
        "version": 0,
        "detector": {"version": 1, "scheme": "cpu", "cpuid": 0},
        "IA32_MCi_STATUS": 0x900000400001017A,
        "error_uncorrected": False,
    }
    assert items == [
        (6, {**event, "ena": ena_format1(g, 0, NOW), "__injected": True}) for g in range(4)
    ] + [(7, {"class": "resource.fm.fmd.clock.addhrtime", "delta": 3_600_000_000_000})]
    assert len({obj["ena"] for _, obj in items[:4]}) == 4
    assert decode_ena(items[0][1]["ena"]).format == 1


def test_fmri_value_is_the_wire_object_form() -> None:
    """An fmri value is the object form that fmri_from_obj reads as the same FMRI."""
    detector = run(REFERENCE)[0][1]["detector"]
    assert fmri_from_obj(detector) == CpuFmri(cpuid=0)


def test_clock_class_matches_the_daemon() -> None:
    """The control class is the one fmd.xprt accepts."""
    from fmd.xprt import CLOCK_CLASS as DAEMON_CLOCK_CLASS

    assert CLOCK_CLASS == DAEMON_CLOCK_CLASS


def test_member_order_and_ena_declared() -> None:
    """Members keep declared order; a declared ena is used and none is generated."""
    text = """
        evdef ereport.t { uint64_t ena; string s; int8_t i; };
        event ereport.t e = { 0x1001, "x", -128 };
        e;
    """
    [(line, obj)] = run(text)
    assert line == 4
    assert list(obj.items()) == [
        ("class", "ereport.t"),
        ("ena", 0x1001),
        ("s", "x"),
        ("i", -128),
        ("__injected", True),
    ]


# -- values and types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ty", "lo", "hi"),
    [
        ("int8_t", -128, 127),
        ("int16_t", -(2**15), 2**15 - 1),
        ("int32_t", -(2**31), 2**31 - 1),
        ("int64_t", -(2**63), 2**63 - 1),
        ("uint8_t", 0, 255),
        ("uint16_t", 0, 2**16 - 1),
        ("uint32_t", 0, 2**32 - 1),
        ("uint64_t", 0, 2**64 - 1),
    ],
)
def test_integer_ranges(ty: str, lo: int, hi: int) -> None:
    """Each integer type accepts exactly its range and names it when a value is outside."""
    decl = f"evdef ereport.t {{ {ty} v; }};\n"
    for ok in (lo, hi):
        assert run(decl + f"event ereport.t e = {{ {ok} }};\ne;")[0][1]["v"] == ok
    for bad in (lo - 1, hi + 1):
        assert only_error(decl + f"event ereport.t e = {{ {bad} }};") == (
            2,
            f"e.v: {bad} is out of range for {ty} ({lo} to {hi})",
        )


def test_enum_and_boolean_and_arrays() -> None:
    """Enums send their name; booleans map to JSON; fixed and open arrays keep their elements."""
    text = """
        evdef ereport.t { enum sev { LOW, HIGH } a; enum sev b; boolean_t c;
            uint16_t d[3]; string e[]; };
        event ereport.t x = { HIGH, LOW, true, [1, 2, 0xffff], [] };
        x;
    """
    obj = run(text)[0][1]
    assert (obj["a"], obj["b"], obj["c"], obj["d"], obj["e"]) == (
        "HIGH",
        "LOW",
        True,
        [1, 2, 65535],
        [],
    )


def test_nested_inline_fmri_auth_and_list() -> None:
    """Inline {...} values build fmri, auth and list members, also inside arrays."""
    text = """
        authdef a { string product-id; };
        fmridef hc { uint8_t version; string scheme; auth a authority; };
        listdef pair { string name; uint32_t id; };
        evdef ereport.t { fmri hc resource; list pair path[2]; };
        event ereport.t x = { { 0, "hc", { "prod" } }, [ {"chip", 1}, {"core", 2} ] };
        x;
    """
    obj = run(text)[0][1]
    assert obj["resource"] == {"version": 0, "scheme": "hc", "authority": {"product-id": "prod"}}
    assert obj["path"] == [{"name": "chip", "id": 1}, {"name": "core", "id": 2}]


def test_event_member() -> None:
    """An event-typed member holds the event object with its class first and no ENA."""
    text = """
        evdef ereport.inner { uint8_t n; };
        evdef ereport.outer { event ereport.inner cause; };
        event ereport.inner i = { 7 };
        event ereport.outer o = { i };
        o;
    """
    assert run(text)[0][1]["cause"] == {"class": "ereport.inner", "n": 7}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{ 1 }", "e: event ereport.t has 2 members but 1 values are given"),
        ('{ "1", true }', "e.n: expected an integer (uint8_t), found a string"),
        ("{ 1, 1 }", "e.b: expected true or false, found the number 1"),
        ("{ 1, maybe }", "e.b: expected true or false, found the name 'maybe'"),
        ("[ 1, true ]", "e: a event ereport.t is a list {...}, not an array [...]"),
    ],
)
def test_value_type_errors(body: str, message: str) -> None:
    """Wrong values and a wrong value count are errors on the definition's line."""
    text = f"evdef ereport.t {{ uint8_t n; boolean b; }};\nevent ereport.t e = {body};"
    assert only_error(text) == (2, message)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("evdef ereport.t { uint8_t class; };", (1, "a member may not be called 'class'")),
        (
            "evdef ereport.t { uint8_t a; uint8_t a; };",
            (1, "member a is declared twice in event ereport.t"),
        ),
        (
            "evdef ereport.t { };\nevdef ereport.t { };",
            (2, "event ereport.t is already declared (line 1)"),
        ),
        ("fmridef f { uint8_t version; };", (1, "fmridef f needs a 'string scheme' member")),
        ("evdef ereport.t { fmri nope f; };", (1, "fmri nope is not declared")),
        ("evdef ereport.t { float f; };", (1, "unknown member type 'float'")),
        (
            "evdef ereport.t { enum e x; };",
            (1, "enum e is not declared (give its names: enum e {A, B})"),
        ),
        ("evdef ereport.t { uint8_t a[0]; };", (1, "array size 0 is out of range (1 to 4096)")),
        ("event ereport.t e = { };", (1, "event ereport.t is not declared")),
        (
            "evdef ereport.t { };\nevent ereport.t e = { };\nevent ereport.t e = { };",
            (3, "e is already defined (line 2)"),
        ),
        (
            "evdef ereport.t { };\nevent ereport.t sleep = { };",
            (2, "'sleep' is a keyword and cannot name a definition"),
        ),
        ("ghost;", (1, "ghost is not defined")),
        (
            'fmridef f { string scheme; };\nfmri f x = { "s" };\nx;',
            (3, "x is a fmri, not an event"),
        ),
        (
            "evdef ereport.t { }\nrepeat 1 e;",
            (2, "expected ';' after the declaration, found 'repeat'"),
        ),
        ("sleep -1;", (1, "sleep seconds -1 is out of range (0 to 2147483647)")),
        (
            "addhrtime 1 fortnight;",
            (
                1,
                "unknown time unit 'fortnight' (known: ns, nsec, us, usec, ms, msec,"
                " s, sec, m, min, h, hour, d, day)",
            ),
        ),
        ("addhrtime 200000 d;", (1, "addhrtime 200000 d is too long")),
    ],
)
def test_declaration_and_command_errors(text: str, error: tuple[int, str]) -> None:
    """Bad declarations, definitions and commands are errors naming the line and the problem."""
    assert errors(text)[0] == error


def test_reference_to_wrong_declaration() -> None:
    """A defined value of another declaration is refused for an fmri member."""
    text = """
        fmridef a { string scheme; };
        fmridef b { string scheme; };
        evdef ereport.t { fmri a r; };
        fmri b vb = { "b" };
        event ereport.t e = { vb };
    """
    assert only_error(text) == (6, "e.r: vb is a fmri b, not a fmri a")


def test_fixed_array_length() -> None:
    """A fixed-size array needs exactly that many elements."""
    text = "evdef ereport.t { uint8_t a[2]; };\nevent ereport.t e = { [1] };"
    assert only_error(text) == (2, "e.a: expected 2 elements, found 1")


def test_all_errors_collected_in_order() -> None:
    """The parser goes on after an error and reports every bad statement with its line."""
    text = """evdef ereport.t { uint8_t n; };
event ereport.t a = { 256 };
event ereport.t b = { 1 };
sleep x;
b;
randomize { {b, 60} };
"""
    assert errors(text) == [
        (2, "a.n: 256 is out of range for uint8_t (0 to 255)"),
        (4, "expected sleep seconds (an integer), found 'x'"),
        (6, "randomize percentages sum to 60, not 100"),
    ]


# -- commands --------------------------------------------------------------------


TWO = """
evdef ereport.t { uint8_t n; };
event ereport.t one = { 1 };
event ereport.t two = { 2 };
"""


def test_sleep_endhrtime_and_units() -> None:
    """sleep yields a Sleep item; addhrtime scales by its unit; endhrtime sends delta -1."""
    items = run(TWO + "sleep 2;\naddhrtime 3 ms;\naddhrtime 2 day;\nendhrtime;\n")
    assert items == [
        Sleep(5, 2),
        (6, {"class": CLOCK_CLASS, "delta": 3_000_000}),
        (7, {"class": CLOCK_CLASS, "delta": 2 * 86400 * 10**9}),
        (8, {"class": CLOCK_CLASS, "delta": -1}),
    ]


def test_control_events_are_not_injected() -> None:
    """Clock control lines carry no __injected member."""
    [(_, obj)] = run("addhrtime 5 s;")
    assert obj == {"class": CLOCK_CLASS, "delta": 5 * 10**9}


def test_repeat_zero_and_repeat_randomize() -> None:
    """repeat 0 sends nothing; repeat N randomize picks N times."""
    assert run(TWO + "repeat 0 one;") == []
    items = run(TWO + "repeat 5 randomize { {one, 50}, {two, 50} };")
    assert [line for line, _ in items] == [5] * 5
    assert {obj["n"] for _, obj in items} <= {1, 2}


def test_randomize_distribution_seeded() -> None:
    """randomize follows its percentages (seeded), and a 0% event is never chosen."""
    text = (
        TWO
        + "event ereport.t three = { 3 };\n"
        + "repeat 10000 randomize { {one, 70}, {two, 30}, {three, 0} };"
    )
    counts = Counter(obj["n"] for _, obj in run(text, seed=42))
    assert set(counts) == {1, 2}
    assert 6700 < counts[1] < 7300
    assert counts[1] + counts[2] == 10000
    assert run(text, seed=42) == run(text, seed=42)


def test_every_statement_keyword_selects_the_language() -> None:
    """fminject's auto-detection picks the language for text starting with any of its
    statement keywords (and not for JSON or machine-check text)."""
    from fmd.cli.fminject import _detect

    for word in KEYWORDS:
        assert _detect(f"{word} x;\n".encode(), "input") == "inj", word
    assert _detect(b'{"class": "ereport.x"}\n', "input") == "json"
    assert _detect(b"CPU 3 BANK 2\n", "input") == "mce"


# -- robustness ------------------------------------------------------------------

_SOUP = st.sampled_from(
    [
        *'{}[];,="\n -0x1/*',
        *sorted(KEYWORDS),
        *["uint8_t ", "int64_t ", "string ", "boolean ", "enum ", "true", "false", "scheme "],
        *["ereport.t ", "e ", "99999999999999999999999 ", "h ", "\\", "\u0663", "*/"],
    ]
)


def _never_raises_others(text: str) -> None:
    try:
        program, _ = parse_program(text)
        for _item in zip(range(200), evaluate(program, rng=random.Random(0)), strict=False):
            pass
    except InjectSyntaxError:  # pragma: no cover - parse_program collects, never raises
        pass


@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    """Any Unicode text parses (and evaluates) without raising anything."""
    _never_raises_others(text)


@given(st.lists(_SOUP, max_size=80).map("".join))
def test_keyword_soup_never_raises(text: str) -> None:
    """Random sequences of keywords, types and punctuation parse without raising."""
    _never_raises_others(text)


@given(st.text())
def test_parse_raises_only_inject_syntax_error(text: str) -> None:
    """parse raises nothing but InjectSyntaxError, with a positive line number."""
    try:
        parse(text)
    except InjectSyntaxError as exc:
        assert exc.line >= 1


@given(
    edits=st.lists(
        st.tuples(st.integers(0, 500), st.integers(0, 2), st.sampled_from(list('{}[];,=" 0x-\n'))),
        max_size=8,
    )
)
def test_mutated_reference_never_raises(edits: list[tuple[int, int, str]]) -> None:
    """The reference program with characters inserted, deleted or replaced never crashes."""
    text = REFERENCE
    for pos, op, char in edits:
        at = pos % (len(text) + 1)
        if op == 0:
            text = text[:at] + char + text[at:]
        elif op == 1:
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    _never_raises_others(text)


def test_deep_nesting_is_an_error() -> None:
    """Values nested too deep are an error, not a RecursionError."""
    text = "evdef ereport.t { uint8_t a; };\nevent ereport.t e = " + "{" * 5000 + ";"
    assert errors(text)[0] == (2, "values are nested more than 32 deep")
