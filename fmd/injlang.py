"""The fminject language: declare event layouts, define events, and script their sending.

This module reads the illumos-style injection language (reference section 9)
and turns it into the wire lines :mod:`fmd.cli.fminject` sends.  It has three
stages: :func:`tokenize` splits the text, :func:`parse_program` parses and
type-checks it into a :class:`Program` (every definition is fully checked
and built here), and :func:`evaluate` runs the program's commands, yielding
``(line, wire_line)`` pairs and :class:`Sleep` instructions.  Every problem is an
:class:`~fmd.errors.InjectSyntaxError` carrying its line; nothing else is raised
on any input.

Grammar (``;`` ends every statement; comments are ``/* ... */``)::

    program    = { statement } ;
    statement  = decl | defn | command ";" ;
    decl       = ("evdef" CLASS | "fmridef" NAME | "authdef" NAME | "listdef" NAME)
                 "{" { member } "}" ";" ;
    member     = type NAME [ "[" [ NUMBER ] "]" ] ";" ;
    type       = "int8_t" | "int16_t" | "int32_t" | "int64_t" | "uint8_t" | "uint16_t"
               | "uint32_t" | "uint64_t" | "boolean" | "boolean_t" | "string"
               | "enum" NAME [ "{" NAME { "," NAME } "}" ]
               | ("event" CLASS | "fmri" NAME | "auth" NAME | "list" NAME) ;
    defn       = ("event" CLASS | "fmri" NAME | "auth" NAME | "list" NAME)
                 NAME "=" list ";" ;
    value      = NUMBER | STRING | NAME | "[" [ value { "," value } ] "]" | list ;
    list       = "{" [ value { "," value } ] "}" ;
    command    = NAME                                     (send a defined event)
               | "repeat" NUMBER ( NAME | randomize )
               | randomize
               | "sleep" NUMBER                           (seconds, real time)
               | "addhrtime" NUMBER UNIT                  (ns us ms s m h d, or long names)
               | "endhrtime" ;
    randomize  = "randomize" "{" "{" NAME "," NUMBER "}" { "," "{" NAME "," NUMBER "}" } "}" ;

Semantics:

* A declaration's name must be new for its kind; a ``fmridef`` needs a scalar
  ``string scheme`` member; no member may be called ``class`` or ``__injected``.
  ``enum E { A, B } m`` declares the enum type ``E`` (its names are global) and
  the member ``m``; a later ``enum E m`` reuses it.  Member types naming another
  declaration must name one declared earlier.
* A definition's values are positional, one per declared member: integers
  (decimal, ``0x`` hex, negative) range-checked against their type, quoted
  strings, ``true``/``false``, enum names (sent as their name), a defined
  fmri/auth/list/event name or an inline ``{...}`` for members of those types,
  and ``[...]`` for arrays (``n[N]`` needs exactly N elements).  On the wire an
  fmri, auth or list value is a JSON object of its members (an fmri object is
  what :func:`fmd.protocol.fmri_from_obj` reads); an event value is an object
  with ``class`` first.
* Sending an event writes ``class``, the members in declared order, a
  generated format-1 ``ena`` unless ``ena`` is a declared member, and
  ``"__injected": true``.  ``randomize`` sends one of its events, chosen with
  the given percentages (which must sum to 100).  ``addhrtime`` and
  ``endhrtime`` send the control event ``resource.fm.fmd.clock.addhrtime``
  with ``delta`` in nanoseconds (``-1`` for ``endhrtime``); they are not marked
  injected.

Limits, so that a few bytes of program cannot expand without bound (each is an
error at the line that crosses it, and nothing is sent): a program sends at
most :data:`MAX_EVENTS` events in all (``repeat`` counts included), a
``repeat`` count and the events it sends are within that bound, an array
declares at most :data:`MAX_ARRAY` elements, declarations nest (a member of a
declared type) at most :data:`MAX_DECL_DEPTH` deep and values (``[`` and
``{``) at most :data:`MAX_VALUE_DEPTH` deep, and a definition's value, with
every definition it names expanded, encodes to at most :data:`MAX_VALUE_BYTES`
bytes holding at most :data:`MAX_VALUE_ITEMS` members and elements (what fmd
accepts in one event).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn, TypeAlias

import orjson

from fmd.errors import InjectSyntaxError
from fmd.protocol import EnaGenerator

# The control class fmd.xprt accepts (not imported: that would pull in the store).
CLOCK_CLASS: Final = "resource.fm.fmd.clock.addhrtime"

KEYWORDS: Final = frozenset(
    {
        "evdef",
        "fmridef",
        "authdef",
        "listdef",
        "event",
        "fmri",
        "auth",
        "list",
        "repeat",
        "randomize",
        "sleep",
        "addhrtime",
        "endhrtime",
    }
)
_RESERVED_NAMES: Final = KEYWORDS | {"true", "false"}
_RESERVED_MEMBERS: Final = frozenset({"class", "__injected"})

_INT_TYPES: Final = {
    f"{'u' if unsigned else ''}int{bits}_t": (
        (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    )
    for bits in (8, 16, 32, 64)
    for unsigned in (False, True)
}

_UNITS: Final = {
    **dict.fromkeys(("ns", "nsec"), 1),
    **dict.fromkeys(("us", "usec"), 1_000),
    **dict.fromkeys(("ms", "msec"), 1_000_000),
    **dict.fromkeys(("s", "sec"), 1_000_000_000),
    **dict.fromkeys(("m", "min"), 60 * 1_000_000_000),
    **dict.fromkeys(("h", "hour"), 3600 * 1_000_000_000),
    **dict.fromkeys(("d", "day"), 86400 * 1_000_000_000),
}

_MAX_DELTA: Final = (1 << 63) - 1
_MAX_SLEEP: Final = (1 << 31) - 1
_MAX_DIGITS: Final = 40  # refuse absurd numbers before converting them

MAX_EVENTS: Final = 1_000_000
"""Events one program may send, ``repeat`` counts included."""
MAX_ARRAY: Final = 4096
"""Elements an array member may declare (fmd accepts 4096 in one payload)."""
MAX_DECL_DEPTH: Final = 8
"""How deep declarations may nest through members of declared types."""
MAX_VALUE_DEPTH: Final = 32
"""How deep ``[ ]`` and ``{ }`` may nest in one written value."""
MAX_VALUE_BYTES: Final = 1 << 20
"""The encoded size of a definition's value with its definitions expanded (fmd's line limit)."""
MAX_VALUE_ITEMS: Final = 4096
"""Members and elements in a definition's expanded value (fmd's payload limit)."""

# -- tokens ---------------------------------------------------------------------

TokenKind: TypeAlias = Literal["name", "num", "str", "punct", "eof"]


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``value`` is the int of a number or the text of a string, else None."""

    kind: TokenKind
    text: str
    line: int
    value: int | str | None = None


_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_NUM_RE: Final = re.compile(r"-?(?:0[xX][0-9A-Fa-f]+|[0-9]+)")
_SPACE_RE: Final = re.compile(r"[ \t\r\f\v]+")
_NAME_CHAR: Final = re.compile(r"[A-Za-z0-9_.\-]")
_ESCAPES: Final = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}
_PUNCT: Final = frozenset("{}[];,=")


def _scan(text: str) -> tuple[list[Token], list[InjectSyntaxError]]:
    """Tokens (ending with an eof token) and the lexical errors met on the way."""
    tokens: list[Token] = []
    errors: list[InjectSyntaxError] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif (m := _SPACE_RE.match(text, i)) is not None:
            i = m.end()
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                errors.append(InjectSyntaxError("unterminated /* comment", line))
                break
            line += text.count("\n", i, end)
            i = end + 2
        elif c == '"':
            tok, i, error = _scan_string(text, i, line)
            if error is not None:
                errors.append(error)
            if tok is None:
                break
            tokens.append(tok)
        elif (m := _NUM_RE.match(text, i)) is not None:
            word = m.group()
            i = m.end()
            if i < n and _NAME_CHAR.match(text, i):
                tail = _NAME_RE.match(text, i)
                bad = word + (tail.group() if tail else text[i])
                errors.append(InjectSyntaxError(f"bad number {bad[:40]!r}", line))
                i += len(bad) - len(word)
                continue
            digits = word.lstrip("-")
            if len(digits) > _MAX_DIGITS:
                errors.append(InjectSyntaxError(f"number {word[:20]}... is too long", line))
                continue
            tokens.append(Token("num", word, line, int(word, 0 if "x" in word.lower() else 10)))
        elif (m := _NAME_RE.match(text, i)) is not None:
            tokens.append(Token("name", m.group(), line))
            i = m.end()
        elif c in _PUNCT:
            tokens.append(Token("punct", c, line))
            i += 1
        else:
            errors.append(InjectSyntaxError(f"unexpected character {c!r}", line))
            i += 1
    tokens.append(Token("eof", "", line))
    return tokens, errors


def _scan_string(
    text: str, i: int, line: int
) -> tuple[Token | None, int, InjectSyntaxError | None]:
    """The string token starting at the quote at *i*, the index after it, and any error."""
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == '"':
            return Token("str", text[i : j + 1], line, "".join(out)), j + 1, None
        if c == "\n":
            break
        if c == "\\":
            esc = text[j + 1 : j + 2]
            if esc not in _ESCAPES:
                error = InjectSyntaxError(f"unknown escape '\\{esc}' in a string", line)
                return None, j, error
            out.append(_ESCAPES[esc])
            j += 2
        else:
            out.append(c)
            j += 1
    return None, j, InjectSyntaxError("unterminated string", line)


def tokenize(text: str) -> list[Token]:
    """The tokens of *text*, ending with an ``eof`` token; the first lexical error is raised."""
    tokens, errors = _scan(text)
    if errors:
        raise errors[0]
    return tokens


# -- the program ------------------------------------------------------------------

DeclKind: TypeAlias = Literal["event", "fmri", "auth", "list"]
TypeKind: TypeAlias = Literal["int", "bool", "string", "enum", "event", "fmri", "auth", "list"]


@dataclass(frozen=True, slots=True)
class MemberType:
    """A member's element type: ``name`` as written; bounds, enum names or the declaration."""

    kind: TypeKind
    name: str
    lo: int = 0
    hi: int = 0
    names: tuple[str, ...] = ()
    decl: Decl | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A declared member; ``array`` is None (scalar), 0 (``[]``, any length) or the length."""

    name: str
    type: MemberType
    array: int | None


@dataclass(frozen=True, slots=True)
class Decl:
    """An ``evdef`` (kind event, name = the class), ``fmridef``, ``authdef`` or ``listdef``."""

    kind: DeclKind
    name: str
    members: tuple[Member, ...]
    line: int
    depth: int = 1  # 1 + the deepest declaration a member's type names

    def describe(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Defn:
    """A definition: its wire value (event values start with ``class``)."""

    kind: DeclKind
    name: str
    decl: Decl
    value: dict[str, Any]
    line: int


@dataclass(frozen=True, slots=True)
class Send:
    """Send one defined event."""

    line: int
    event: Defn


@dataclass(frozen=True, slots=True)
class Randomize:
    """Send one of the events, chosen with the given percentages (summing to 100)."""

    line: int
    choices: tuple[tuple[Defn, int], ...]


@dataclass(frozen=True, slots=True)
class Repeat:
    """Run a send or a randomize ``count`` times."""

    line: int
    count: int
    body: Send | Randomize


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` of real time (after the events before it were acknowledged)."""

    line: int
    seconds: int


@dataclass(frozen=True, slots=True)
class AddHrtime:
    """Send the clock control event with ``delta`` ns (-1 for ``endhrtime``)."""

    line: int
    delta: int


Command: TypeAlias = Send | Randomize | Repeat | Sleep | AddHrtime
Item: TypeAlias = tuple[int, bytes] | Sleep


@dataclass(slots=True)
class Program:
    """The checked program: its commands in order, and the declarations and definitions."""

    commands: list[Command] = field(default_factory=list)
    decls: dict[tuple[DeclKind, str], Decl] = field(default_factory=dict)
    defs: dict[str, Defn] = field(default_factory=dict)
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)


# -- raw values, before they are checked against a member --------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    line: int
    kind: Literal["num", "str", "name", "array", "list"]
    value: int | str | None = None
    items: tuple[_Raw, ...] = ()

    def describe(self) -> str:
        if self.kind == "num":
            return f"the number {self.value}"
        if self.kind == "str":
            return "a string"
        if self.kind == "name":
            return f"the name {self.value!r}"
        return "an array [...]" if self.kind == "array" else "a list {...}"


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the input"
    if tok.kind == "str":
        return "a string"
    return f"{tok.text[:40]!r}"


# -- the parser -------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens, checking every statement as it is read."""

    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.pos = 0
        self.prog = Program()
        self.errors: list[InjectSyntaxError] = []
        self.events = 0  # events the commands so far send
        # (encoded bytes, members and elements) of each definition's value, by id.
        self.sizes: dict[int, tuple[int, int]] = {}

    # -- token helpers
    def peek(self) -> Token:
        return self.toks[self.pos]

    def next(self) -> Token:
        tok = self.toks[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def fail(self, message: str, line: int | None = None) -> NoReturn:
        raise InjectSyntaxError(message, self.peek().line if line is None else line)

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.text == text

    def expect(self, text: str, what: str = "") -> Token:
        tok = self.peek()
        if tok.kind != "punct" or tok.text != text:
            self.fail(f"expected '{text}'{what}, found {_describe(tok)}")
        return self.next()

    def name(self, what: str) -> Token:
        tok = self.peek()
        if tok.kind != "name":
            self.fail(f"expected {what}, found {_describe(tok)}")
        return self.next()

    def number(self, what: str, lo: int, hi: int) -> int:
        tok = self.peek()
        if tok.kind != "num":
            self.fail(f"expected {what} (an integer), found {_describe(tok)}")
        self.next()
        assert isinstance(tok.value, int)
        if not lo <= tok.value <= hi:
            self.fail(f"{what} {tok.text} is out of range ({lo} to {hi})", tok.line)
        return tok.value

    # -- statements
    def program(self) -> Program:
        while self.peek().kind != "eof":
            start = self.pos
            try:
                self.statement()
            except InjectSyntaxError as exc:
                self.errors.append(exc)
                self.recover(start)
        return self.prog

    def recover(self, start: int) -> None:
        """Skip to after the ``;`` that ends the failed statement (at brace depth 0)."""
        depth = 0
        i = start
        while self.toks[i].kind != "eof":
            tok = self.toks[i]
            if tok.kind == "punct":
                if tok.text in "{[":
                    depth += 1
                elif tok.text in "}]":
                    depth -= 1
                elif tok.text == ";" and depth <= 0:
                    self.pos = i + 1
                    return
            i += 1
        self.pos = i

    def statement(self) -> None:
        tok = self.name("a declaration, a definition or a command")
        word = tok.text
        if word in ("evdef", "fmridef", "authdef", "listdef"):
            kind: DeclKind = "event" if word == "evdef" else _decl_kind(word[:-3])
            self.declaration(kind, tok.line)
        elif word in ("event", "fmri", "auth", "list"):
            self.definition(_decl_kind(word), tok.line)
        else:
            cmd = self.command(tok)
            self.expect(";", " after the command")
            self.count_events(cmd, tok.line)
            self.prog.commands.append(cmd)

    def count_events(self, cmd: Command, line: int) -> None:
        """Add what ``cmd`` sends to the program's total; past MAX_EVENTS it is an
        error (reported once)."""
        if self.events > MAX_EVENTS:
            return  # already reported
        if isinstance(cmd, Repeat):
            self.events += cmd.count
        elif not isinstance(cmd, Sleep):
            self.events += 1
        if self.events > MAX_EVENTS:
            self.fail(
                f"the program sends more than {MAX_EVENTS} events; split it into several files",
                line,
            )

    def declaration(self, kind: DeclKind, line: int) -> None:
        what = "an event class" if kind == "event" else f"a name for the {kind}def"
        name = self.name(what).text
        prev = self.prog.decls.get((kind, name))
        if prev is not None:
            self.fail(f"{prev.describe()} is already declared (line {prev.line})", line)
        self.expect("{")
        members: list[Member] = []
        while not self.at("}"):
            if self.peek().kind == "eof":
                self.fail(f"missing '}}' closing the declaration of {kind} {name}")
            member = self.member()
            if any(m.name == member.name for m in members):
                self.fail(f"member {member.name} is declared twice in {kind} {name}")
            members.append(member)
        self.next()
        self.expect(";", " after the declaration")
        if kind == "fmri" and not any(
            m.name == "scheme" and m.type.kind == "string" and m.array is None for m in members
        ):
            self.fail(f"fmridef {name} needs a 'string scheme' member", line)
        depth = 1 + max((m.type.decl.depth for m in members if m.type.decl), default=0)
        self.prog.decls[(kind, name)] = Decl(kind, name, tuple(members), line, depth)

    def member(self) -> Member:
        tok = self.name("a member type")
        word = tok.text
        mtype: MemberType
        if word in _INT_TYPES:
            lo, hi = _INT_TYPES[word]
            mtype = MemberType("int", word, lo, hi)
        elif word in ("boolean", "boolean_t"):
            mtype = MemberType("bool", word)
        elif word == "string":
            mtype = MemberType("string", word)
        elif word == "enum":
            mtype = self.enum_type()
        elif word in ("event", "fmri", "auth", "list"):
            kind = _decl_kind(word)
            ref = self.name(f"the name of an {word} declaration").text
            decl = self.prog.decls.get((kind, ref))
            if decl is None:
                self.fail(f"{word} {ref} is not declared", tok.line)
            if decl.depth >= MAX_DECL_DEPTH:
                self.fail(
                    f"declarations are nested more than {MAX_DECL_DEPTH} deep "
                    f"({word} {ref} already nests {decl.depth} deep)",
                    tok.line,
                )
            mtype = MemberType(kind, f"{word} {ref}", decl=decl)
        else:
            self.fail(f"unknown member type {word!r}", tok.line)
        name = self.name("a member name").text
        if name in _RESERVED_MEMBERS:
            self.fail(f"a member may not be called {name!r}", tok.line)
        array: int | None = None
        if self.at("["):
            self.next()
            array = 0 if self.at("]") else self.number("array size", 1, MAX_ARRAY)
            self.expect("]")
        self.expect(";", f" after member {name}")
        return Member(name, mtype, array)

    def enum_type(self) -> MemberType:
        name = self.name("an enum type name").text
        known = self.prog.enums.get(name)
        if not self.at("{"):
            if known is None:
                self.fail(f"enum {name} is not declared (give its names: enum {name} {{A, B}})")
            return MemberType("enum", f"enum {name}", names=known)
        line = self.next().line
        names: list[str] = []
        while True:
            value = self.name(f"a name of enum {name}").text
            if value in names:
                self.fail(f"enum {name} has {value} twice")
            if value in ("true", "false"):
                self.fail(f"{value} may not be an enum name")
            names.append(value)
            if not self.at(","):
                break
            self.next()
        self.expect("}", f" closing enum {name}")
        if known is not None and known != tuple(names):
            self.fail(f"enum {name} is already declared with other names", line)
        self.prog.enums[name] = tuple(names)
        return MemberType("enum", f"enum {name}", names=tuple(names))

    def definition(self, kind: DeclKind, line: int) -> None:
        what = "an event class" if kind == "event" else f"the name of an {kind}def"
        ref = self.name(what).text
        decl = self.prog.decls.get((kind, ref))
        if decl is None:
            self.fail(f"{kind} {ref} is not declared", line)
        name = self.name(f"a name for the {kind}").text
        if name in _RESERVED_NAMES:
            self.fail(f"{name!r} is a keyword and cannot name a definition", line)
        prev = self.prog.defs.get(name)
        if prev is not None:
            self.fail(f"{name} is already defined (line {prev.line})", line)
        self.expect("=")
        raw = self.value(0)
        self.expect(";", " after the definition")
        value = self.build(decl, raw, name)
        size, items = self.measure(value)
        if items > MAX_VALUE_ITEMS:
            self.fail(
                f"{name}: the value holds {items} members and elements with its definitions "
                f"expanded; at most {MAX_VALUE_ITEMS}",
                line,
            )
        if size > MAX_VALUE_BYTES:
            self.fail(
                f"{name}: the value is {size} bytes with its definitions expanded; "
                f"at most {MAX_VALUE_BYTES}",
                line,
            )
        # Remembered by identity: later definitions embed this very object.
        self.sizes[id(value)] = (size, items)
        self.prog.defs[name] = Defn(kind, name, decl, value, line)

    def measure(self, value: Any) -> tuple[int, int]:
        """The encoded size of a wire value and the members and elements it holds,
        counting each embedded definition from what was remembered of it (so a
        value is measured without being expanded)."""
        known = self.sizes.get(id(value))
        if known is not None:
            return known
        if isinstance(value, dict):
            size, items = 1 + max(1, len(value)), len(value)  # braces and commas
            for key, member in value.items():
                member_size, member_items = self.measure(member)
                size += len(orjson.dumps(key)) + 1 + member_size
                items += member_items
            return size, items
        if isinstance(value, list):
            size, items = 1 + max(1, len(value)), len(value)
            for element in value:
                element_size, element_items = self.measure(element)
                size += element_size
                items += element_items
            return size, items
        return len(orjson.dumps(value)), 0

    # -- values
    def value(self, depth: int) -> _Raw:
        if depth > MAX_VALUE_DEPTH:
            self.fail(f"values are nested more than {MAX_VALUE_DEPTH} deep")
        tok = self.next()
        if tok.kind == "num":
            return _Raw(tok.line, "num", tok.value)
        if tok.kind == "str":
            return _Raw(tok.line, "str", tok.value)
        if tok.kind == "name":
            return _Raw(tok.line, "name", tok.text)
        if tok.kind == "punct" and tok.text in "[{":
            close = "]" if tok.text == "[" else "}"
            items: list[_Raw] = []
            if not self.at(close):
                while True:
                    items.append(self.value(depth + 1))
                    if not self.at(","):
                        break
                    self.next()
            self.expect(close, f" or ',' in the {'array' if close == ']' else 'list'}")
            return _Raw(tok.line, "array" if close == "]" else "list", None, tuple(items))
        self.fail(f"expected a value, found {_describe(tok)}", tok.line)

    def build(self, decl: Decl, raw: _Raw, where: str) -> dict[str, Any]:
        """The wire object of *decl* from a ``{...}`` list of positional values."""
        if raw.kind != "list":
            self.fail(f"{where}: a {decl.describe()} is a list {{...}}, not {raw.describe()}")
        if len(raw.items) != len(decl.members):
            self.fail(
                f"{where}: {decl.describe()} has {len(decl.members)} members"
                f" but {len(raw.items)} values are given",
                raw.line,
            )
        out: dict[str, Any] = {"class": decl.name} if decl.kind == "event" else {}
        for member, item in zip(decl.members, raw.items, strict=True):
            out[member.name] = self.member_value(member, item, f"{where}.{member.name}")
        return out

    def member_value(self, member: Member, raw: _Raw, where: str) -> Any:
        if member.array is None:
            return self.scalar(member.type, raw, where)
        if raw.kind != "array":
            self.fail(f"{where}: expected an array [...], found {raw.describe()}", raw.line)
        if member.array and len(raw.items) != member.array:
            self.fail(
                f"{where}: expected {member.array} elements, found {len(raw.items)}", raw.line
            )
        return [self.scalar(member.type, item, f"{where}[{i}]") for i, item in enumerate(raw.items)]

    def scalar(self, mtype: MemberType, raw: _Raw, where: str) -> Any:
        def wrong() -> NoReturn:
            self.fail(f"{where}: expected {_expected(mtype)}, found {raw.describe()}", raw.line)

        kind = mtype.kind
        if kind == "int":
            if raw.kind != "num" or not isinstance(raw.value, int):
                wrong()
            if not mtype.lo <= raw.value <= mtype.hi:
                self.fail(
                    f"{where}: {raw.value} is out of range for {mtype.name}"
                    f" ({mtype.lo} to {mtype.hi})",
                    raw.line,
                )
            return raw.value
        if kind == "bool":
            if raw.kind != "name" or raw.value not in ("true", "false"):
                wrong()
            return raw.value == "true"
        if kind == "string":
            if raw.kind != "str":
                wrong()
            return raw.value
        if kind == "enum":
            if raw.kind != "name" or raw.value not in mtype.names:
                wrong()
            return raw.value
        assert mtype.decl is not None
        if raw.kind == "list":
            return self.build(mtype.decl, raw, where)
        if raw.kind != "name" or not isinstance(raw.value, str):
            wrong()
        defn = self.prog.defs.get(raw.value)
        if defn is None:
            self.fail(f"{where}: {raw.value} is not defined", raw.line)
        if defn.decl is not mtype.decl:
            self.fail(
                f"{where}: {raw.value} is a {defn.decl.describe()}, not a {mtype.name}", raw.line
            )
        return defn.value

    # -- commands
    def event(self, what: str) -> Defn:
        tok = self.name(what)
        defn = self.prog.defs.get(tok.text)
        if defn is None:
            if tok.text in KEYWORDS:
                self.fail(f"{tok.text} is a keyword, not {what}", tok.line)
            self.fail(f"{tok.text} is not defined", tok.line)
        if defn.kind != "event":
            self.fail(f"{tok.text} is a {defn.kind}, not an event", tok.line)
        return defn

    def command(self, tok: Token) -> Command:
        word = tok.text
        if word == "repeat":
            count = self.number("repeat count", 0, MAX_EVENTS)
            if self.peek().kind == "name" and self.peek().text == "randomize":
                return Repeat(tok.line, count, self.randomize(self.next()))
            return Repeat(tok.line, count, Send(tok.line, self.event("an event to repeat")))
        if word == "randomize":
            return self.randomize(tok)
        if word == "sleep":
            return Sleep(tok.line, self.number("sleep seconds", 0, _MAX_SLEEP))
        if word == "addhrtime":
            amount = self.number("addhrtime amount", 0, _MAX_DELTA)
            unit = self.name("a time unit (ns, us, ms, s, m, h, d)")
            scale = _UNITS.get(unit.text)
            if scale is None:
                self.fail(
                    f"unknown time unit {unit.text!r} (known: {', '.join(_UNITS)})", unit.line
                )
            if amount * scale > _MAX_DELTA:
                self.fail(f"addhrtime {amount} {unit.text} is too long", tok.line)
            return AddHrtime(tok.line, amount * scale)
        if word == "endhrtime":
            return AddHrtime(tok.line, -1)
        self.pos -= 1
        return Send(tok.line, self.event("an event to send"))

    def randomize(self, tok: Token) -> Randomize:
        self.expect("{", " after randomize")
        choices: list[tuple[Defn, int]] = []
        while True:
            self.expect("{", " starting a {event, percent} pair")
            defn = self.event("an event")
            self.expect(",")
            choices.append((defn, self.number("percentage", 0, 100)))
            self.expect("}", " closing the {event, percent} pair")
            if not self.at(","):
                break
            self.next()
        self.expect("}", " closing randomize")
        total = sum(p for _, p in choices)
        if total != 100:
            self.fail(f"randomize percentages sum to {total}, not 100", tok.line)
        return Randomize(tok.line, tuple(choices))


def _decl_kind(word: str) -> DeclKind:
    if word == "event":
        return "event"
    if word == "fmri":
        return "fmri"
    if word == "auth":
        return "auth"
    return "list"


def _expected(mtype: MemberType) -> str:
    if mtype.kind == "int":
        return f"an integer ({mtype.name})"
    if mtype.kind == "bool":
        return "true or false"
    if mtype.kind == "string":
        return "a quoted string"
    if mtype.kind == "enum":
        return f"one of {', '.join(mtype.names)}"
    return f"a defined {mtype.name} or a list {{...}}"


def parse_program(text: str) -> tuple[Program, list[InjectSyntaxError]]:
    """Parse and check *text*: the program and every error found, in line order.

    After an error the parser skips to the end of that statement and goes on,
    so a program with errors is incomplete and must not be run.
    """
    tokens, errors = _scan(text)
    parser = _Parser(tokens)
    program = parser.program()
    return program, sorted(errors + parser.errors, key=lambda e: e.line)


def parse(text: str) -> Program:
    """Parse and check *text*; the first error is raised."""
    program, errors = parse_program(text)
    if errors:
        raise errors[0]
    return program


# -- the evaluator ----------------------------------------------------------------


def _event_line(defn: Defn, ena: EnaGenerator, now_ns: Callable[[], int]) -> bytes:
    obj = dict(defn.value)
    if not any(m.name == "ena" for m in defn.decl.members):
        obj["ena"] = ena.next(now_ns())
    obj["__injected"] = True
    return orjson.dumps(obj)


def _pick(choices: tuple[tuple[Defn, int], ...], rng: random.Random) -> Defn:
    roll = rng.randrange(100)
    for defn, percent in choices:
        if roll < percent:
            return defn
        roll -= percent
    raise AssertionError("randomize percentages are checked to sum to 100")


def evaluate(
    program: Program,
    *,
    rng: random.Random | None = None,
    ena: EnaGenerator | None = None,
    now_ns: Callable[[], int] = time.time_ns,
) -> Iterator[Item]:
    """Run the commands: ``(line, wire_line)`` for each event to send, and Sleep items.

    ENAs are format 1, made by *ena* at *now_ns()*; *rng* chooses in ``randomize``.
    """
    rng = rng if rng is not None else random.Random()
    ena = ena if ena is not None else EnaGenerator()
    for cmd in program.commands:
        if isinstance(cmd, Sleep):
            yield cmd
        elif isinstance(cmd, AddHrtime):
            yield cmd.line, orjson.dumps({"class": CLOCK_CLASS, "delta": cmd.delta})
        elif isinstance(cmd, Send):
            yield cmd.line, _event_line(cmd.event, ena, now_ns)
        elif isinstance(cmd, Randomize):
            yield cmd.line, _event_line(_pick(cmd.choices, rng), ena, now_ns)
        else:
            for _ in range(cmd.count):
                body = cmd.body
                defn = body.event if isinstance(body, Send) else _pick(body.choices, rng)
                yield cmd.line, _event_line(defn, ena, now_ns)
