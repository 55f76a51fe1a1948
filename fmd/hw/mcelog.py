"""Read the mcelog / kernel / mce-inject machine-check text forms into :class:`McaRecord`.

One function, :func:`parse_mce_text`, reads text that ``mcelog --ascii`` would
accept (linux-xen-peers.md section 2.6) or that ``mce-inject`` would inject,
and returns, in input order, one item per record: a :class:`ParsedMca` (the
record and the 1-based line it started on) or a :class:`ParseFailure` (a line
number and the reason).  It never raises on any input.

Each line is split into whitespace tokens and scanned for keywords; anything
else on a line (syslog prefixes such as ``<4>``, ``[  12.5]``,
``mce: [Hardware Error]:``, dates after ``TIME``, prose of mcelog's decoded
output) is skipped.  Recognised forms:

* headers: ``CPU n BANK b``, ``CPU n b``, the kernel's
  ``CPU n: Machine Check[ Exception]: <mcgstatus> Bank b: <status>``, the
  Xen console's ``... on CPU n.`` followed by ``Bank b: <status> [at <addr>]``,
  and mce-inject's ``MCE`` or ``CPU n`` alone on a line (``BANK b`` then
  follows);
* registers (hex, ``0x`` optional): ``STATUS``, ``MCGSTATUS``, ``MCGCAP``,
  ``ADDR``, ``MISC``, ``TSC``, ``APICID``/``APIC``, ``IPID``, ``SYND``,
  ``PPIN``, ``microcode`` (checked, not kept), ``RIP [!INEXACT!] [cs:]ip``
  (each part hex, ``0x`` optional, ``<ip>`` as the kernel prints it);
* decimal: ``BANK``, ``SOCKETID``/``SOCKET``, ``TIME`` (seconds up to
  2262-04-11, the end of fmd's 64-bit nanosecond times; gives ``time_ns``);
* ``PROCESSOR vendor:cpuid`` (Linux vendor number, CPUID leaf 1 EAX in hex) and
  ``CPUID Vendor V Family F Model M`` (decimal), both read through
  :mod:`fmd.hw.cpuid` (an unassigned number becomes ``vendor-<n>``);
* the mce-inject language (its ``mce.lex``/``mce.y`` grammar): ``STATUS`` and
  ``MCGSTATUS`` take a list of symbolic words and numbers that are OR-ed
  together (below), and the commands ``HOLD``, ``POLL``, ``EXCP``,
  ``NOBROADCAST``, ``IRQBROADCAST``, ``NMIBROADCAST``, ``IN_IRQ``,
  ``IN_PROC`` (how to inject: they change no register and are skipped).

mce-inject words, with their bits (symbols are case-insensitive)::

    STATUS     CORRECTED    VAL|EN              UNCORRECTED  VAL|UC|EN
               FATAL        VAL|UC|EN|PCC       VAL 63  OVER 62  UC 61  EN 60
               MISCV 59     ADDRV 58            PCC 57  S 56  AR 55
               TES_YELLOW   bit 54 (threshold status "yellow")
               UCNA 0       SRAO S              SRAR S|AR
    MCGSTATUS  RIPV 0  EIPV 1  MCIP 2  LMCES 3  TES_P 11  SEAM_NR 12

A list with a symbolic word is mce-inject's: its numbers are C literals
(``0x`` hex, leading ``0`` octal, else decimal), and, as mce-inject does,
``ADDR`` and ``MISC`` in that record set ADDRV and MISCV.  A list of one bare
number is mcelog's (hex, ``0x`` optional), so ``STATUS 1234`` stays 0x1234.
``MISCV`` and ``ADDRV`` are accepted as words although mce-inject's grammar
lacks them.  In a text that used the mce-inject language, a record that is
only a header (``CPU 1 BANK 0`` after a ``HOLD``: an empty companion
injection, status 0) yields nothing instead of a failure.

Record boundaries::

                 header token (CPU ..., MCE)     blank line, "HARDWARE ERROR",
      +------+ ------------------------> +------+ "Hardware event", end of text
      | IDLE |                           | OPEN | ---------------------------> emit
      +------+ <------------------------ +------+
                 (a header while OPEN emits the current record and opens a new one)

A register token while IDLE also opens a record.  Unlike mcelog, a line that
matches nothing does *not* end the record: mcelog's own decoded output puts
prose between register lines, and skipping it lets that form be read back.

Prose is not a record: a register keyword whose value is not a number and
which stands in a sentence — a plain word before it, or a word that is not a
keyword after its value (``checking TSC synchronization across 2 CPUs:
passed.``, ``TSC deadline timer available``) — is ignored.  A malformed value
on a record line (``STATUS 90000g0000000135``, ``RIP zz``, ``STATUS x MISC
0``) is still an error, and a number too wide for its register always is.
The first bad value in a record makes it a failure naming that line; a record
without BANK or STATUS, or with VAL clear, is a failure naming its first line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from fmd.hw.cpuid import family_model, vendor_name, vendor_of_word
from fmd.hw.mca import (
    MCG_EIPV,
    MCG_MCIP,
    MCG_RIPV,
    ST_ADDRV,
    ST_AR,
    ST_EN,
    ST_MISCV,
    ST_OVER,
    ST_PCC,
    ST_S,
    ST_UC,
    ST_VAL,
    McaError,
    McaRecord,
)

_HEX: Final = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
_DEC: Final = re.compile(r"[0-9]+")
_C_NUMBER: Final = re.compile(r"0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*)")
_RIP: Final = re.compile(r"(?:0[xX])?([0-9a-fA-F]+):<?(?:0[xX])?([0-9a-fA-F]+)>?")
_RIP_IP_ONLY: Final = re.compile(r"<?(?:0[xX])?([0-9a-fA-F]+)>?")
# A word of a sentence: letters (an apostrophe or hyphen inside), perhaps ending
# in punctuation.  Values, prefixes ("kernel:", "[12.5]", "(XEN)") are not.
_PROSE_WORD: Final = re.compile(r"[A-Za-z][A-Za-z'-]*[,.;!?]?")
_U64: Final = (1 << 64) - 1
_MAX_DIGITS: Final = 40  # refuse absurd numbers before converting them
_NS_PER_S: Final = 1_000_000_000
# Event times are signed 64-bit nanoseconds: TIME (seconds) up to 2262-04-11.
_MAX_TIME_S: Final = ((1 << 63) - 1) // _NS_PER_S

# Register keywords: token -> (McaRecord field or "" to discard, base).
_REGISTERS: Final = {
    "MCGCAP": ("mcg_cap", 16),
    "ADDR": ("addr", 16),
    "MISC": ("misc", 16),
    "TSC": ("tsc", 16),
    "APICID": ("apicid", 16),
    "APIC": ("apicid", 16),
    "IPID": ("ipid", 16),
    "SYND": ("synd", 16),
    "PPIN": ("ppin", 16),
    "microcode": ("", 16),
    "SOCKETID": ("socket", 10),
    "SOCKET": ("socket", 10),
    "TIME": ("time", 10),
    "BANK": ("bank", 10),
}

# mce-inject's symbolic values (mce.lex), by the keyword whose list they may appear in.
_TES_YELLOW: Final = 1 << 54
_MCG_LMCES: Final = 1 << 3
_MCG_TES_P: Final = 1 << 11
_MCG_SEAM_NR: Final = 1 << 12
_STATUS_WORDS: Final = {
    "CORRECTED": ST_VAL | ST_EN,
    "UNCORRECTED": ST_VAL | ST_UC | ST_EN,
    "FATAL": ST_VAL | ST_UC | ST_EN | ST_PCC,
    "VAL": ST_VAL,
    "OVER": ST_OVER,
    "UC": ST_UC,
    "EN": ST_EN,
    "MISCV": ST_MISCV,
    "ADDRV": ST_ADDRV,
    "PCC": ST_PCC,
    "S": ST_S,
    "AR": ST_AR,
    "TES_YELLOW": _TES_YELLOW,
    "UCNA": 0,
    "SRAO": ST_S,
    "SRAR": ST_S | ST_AR,
}
_MCGSTATUS_WORDS: Final = {
    "RIPV": MCG_RIPV,
    "EIPV": MCG_EIPV,
    "MCIP": MCG_MCIP,
    "LMCES": _MCG_LMCES,
    "TES_P": _MCG_TES_P,
    "SEAM_NR": _MCG_SEAM_NR,
}
_FLAG_KEYWORDS: Final = {
    "STATUS": ("status", _STATUS_WORDS),
    "MCGSTATUS": ("mcg_status", _MCGSTATUS_WORDS),
}
# mce-inject commands: how to inject, not what; no register changes.
_INJECT_COMMANDS: Final = frozenset(
    {"HOLD", "POLL", "EXCP", "NOBROADCAST", "IRQBROADCAST", "NMIBROADCAST", "IN_IRQ", "IN_PROC"}
)
_KEYWORDS: Final = frozenset(
    {*_REGISTERS, *_FLAG_KEYWORDS, *_INJECT_COMMANDS}
    | {"RIP", "PROCESSOR", "CPU", "CPUID", "MCE", "Bank"}
)
# A record of nothing but these fields, in mce-inject text, is an empty injection.
_HEADER_FIELDS: Final = frozenset({"cpu", "bank"})


@dataclass(frozen=True)
class ParsedMca:
    """A record read from the text, with the 1-based line it started on."""

    line: int
    record: McaRecord


@dataclass(frozen=True)
class ParseFailure:
    """A record that could not be read: the 1-based line at fault and why."""

    line: int
    reason: str


ParsedRecord = ParsedMca | ParseFailure


class _Bad(Exception):
    """A value on the current line is malformed; carries the reason.

    ``numeric`` is set when the value was a number that does not fit: that is
    an error wherever it stands, prose or not.
    """

    def __init__(self, reason: str, *, numeric: bool = False) -> None:
        super().__init__(reason)
        self.numeric = numeric


def _number(token: str | None, base: int, what: str) -> int:
    if token is None:
        raise _Bad(f"{what} has no value")
    text = token.rstrip(":,.")
    match = (_HEX if base == 16 else _DEC).fullmatch(text)
    digits = match.group(1) if match and base == 16 else text
    if match is None:
        kind = "hex" if base == 16 else "decimal"
        raise _Bad(f"{what} value {token[:40]!r} is not a {kind} number")
    if len(digits) > _MAX_DIGITS:
        raise _Bad(f"{what} value {token[:40]!r} is too long a number", numeric=True)
    value = int(digits, base)
    if value > _U64:
        raise _Bad(f"{what} value {token[:40]!r} does not fit in 64 bits", numeric=True)
    return value


def _c_number(token: str, what: str) -> int:
    """A C integer literal, as mce-inject reads numbers: 0x hex, 0 octal, decimal."""
    match = _C_NUMBER.fullmatch(token)
    if match is None:
        raise _Bad(f"{what} value {token[:40]!r} is not a number (0x hex, 0 octal or decimal)")
    hexa, octal, dec = match.groups()
    digits = hexa or octal or dec
    if len(digits) > _MAX_DIGITS:
        raise _Bad(f"{what} value {token[:40]!r} is too long a number", numeric=True)
    value = int(hexa, 16) if hexa else int(octal, 8) if octal else int(dec, 10)
    if value > _U64:
        raise _Bad(f"{what} value {token[:40]!r} does not fit in 64 bits", numeric=True)
    return value


def _numeric(token: str) -> bool:
    return _HEX.fullmatch(token) is not None


def _flag_run(tokens: list[str], i: int) -> list[str]:
    """The words and numbers after the STATUS/MCGSTATUS keyword at ``tokens[i]``."""
    words = _FLAG_KEYWORDS[tokens[i]][1]
    run: list[str] = []
    for token in tokens[i + 1 :]:
        if token.upper() not in words and not _numeric(token):
            break
        run.append(token)
    return run


def _symbolic(run: list[str], words: dict[str, int]) -> bool:
    """Whether a STATUS/MCGSTATUS list uses mce-inject's words."""
    return any(token.upper() in words for token in run)


@dataclass
class _Draft:
    """The record being assembled, before validation."""

    line: int
    values: dict[str, int | str] = field(default_factory=dict)
    error: ParseFailure | None = None
    # STATUS was given in mce-inject words: ADDR and MISC then set ADDRV/MISCV.
    symbolic: bool = False

    def set(self, name: str, value: int | str) -> None:
        if name:
            self.values[name] = value

    def finish(self, *, inject: bool) -> ParsedRecord | None:
        if self.error is not None:
            return self.error
        v = self.values
        if inject and set(v) <= _HEADER_FIELDS:
            return None  # mce-inject's empty companion record (e.g. after HOLD)
        if "bank" not in v:
            return ParseFailure(self.line, "record has no BANK (expected 'CPU n BANK b')")
        if "status" not in v:
            return ParseFailure(self.line, "record has no STATUS")
        status = v["status"]
        assert isinstance(status, int)
        if self.symbolic:
            status |= (ST_ADDRV if "addr" in v else 0) | (ST_MISCV if "misc" in v else 0)
            v["status"] = status
        if not status & ST_VAL:
            return ParseFailure(
                self.line, f"STATUS {status:#018x} has VAL (bit 63) clear: not a valid error"
            )
        time = v.pop("time", None)
        if isinstance(time, int):
            v["time_ns"] = time * _NS_PER_S
        try:
            record = McaRecord(**v)  # type: ignore[arg-type]
        except McaError as exc:
            return ParseFailure(self.line, exc.message)
        return ParsedMca(self.line, record)


def _apply_cpuid(draft: _Draft, eax: int) -> None:
    family, model = family_model(eax)
    draft.set("family", family)
    draft.set("model", model)


def _plain_word(token: str) -> bool:
    """A word of a sentence (not a keyword, a value or a log prefix)."""
    return token not in _KEYWORDS and _PROSE_WORD.fullmatch(token) is not None


class _Parser:
    def __init__(self) -> None:
        self.out: list[ParsedRecord] = []
        self.draft: _Draft | None = None
        # The text used mce-inject's own language (symbolic values, commands).
        self.inject = False

    def flush(self) -> None:
        if self.draft is not None:
            item = self.draft.finish(inject=self.inject)
            if item is not None:
                self.out.append(item)
            self.draft = None

    def open(self, lineno: int) -> _Draft:
        if self.draft is None:
            self.draft = _Draft(lineno)
        return self.draft

    def feed(self, lineno: int, line: str) -> None:
        stripped = line.strip()
        if not stripped or "HARDWARE ERROR" in stripped or "Hardware event" in stripped:
            self.flush()
            return
        tokens = stripped.split()
        try:
            self._scan(lineno, tokens)
        except _Bad as exc:
            draft = self.open(lineno)
            if draft.error is None:
                draft.error = ParseFailure(lineno, str(exc))

    def _header(self, lineno: int) -> _Draft:
        self.flush()
        return self.open(lineno)

    def _scan(self, lineno: int, tokens: list[str]) -> None:
        n = len(tokens)
        if tokens == ["MCE"] or (n == 2 and tokens[0] == "CPU" and _DEC.fullmatch(tokens[1])):
            # mce-inject record starts: "MCE", or "CPU n" with BANK on a later line.
            self.inject = True
            draft = self._header(lineno)
            if n == 2:
                draft.set("cpu", _number(tokens[1], 10, "CPU"))
            return
        i = 0
        while i < n:
            tok = tokens[i]
            if tok == "CPU" and i + 1 < n:
                i = self._cpu(lineno, tokens, i)
                continue
            if tok in _INJECT_COMMANDS:
                self.inject = True
                i += 1
                continue
            try:
                i = self._item(lineno, tokens, i)
            except _Bad as exc:
                if exc.numeric or not self._in_prose(tokens, i):
                    raise
                i += 1  # a register word inside a sentence: not a record

    def _in_prose(self, tokens: list[str], i: int) -> bool:
        """Whether the keyword at ``i`` stands in a sentence rather than a record line."""
        if i > 0 and _plain_word(tokens[i - 1]):
            return True
        tok = tokens[i]
        value_end = i + 2  # the token after "KEYWORD value"
        if tok in _FLAG_KEYWORDS and _symbolic(_flag_run(tokens, i), _FLAG_KEYWORDS[tok][1]):
            return False  # mce-inject words: a record line
        if tok == "RIP" and i + 1 < len(tokens) and tokens[i + 1] == "!INEXACT!":
            value_end = i + 3
        elif tok == "Bank":
            value_end = i + 3  # "Bank b: status [at addr]"
            if value_end < len(tokens) and tokens[value_end] == "at":
                return False
        return value_end < len(tokens) and tokens[value_end] not in _KEYWORDS

    def _item(self, lineno: int, tokens: list[str], i: int) -> int:
        """Read the item starting at tokens[i], if it is one; return the next index."""
        n = len(tokens)
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < n else None
        if tok == "Bank" and nxt is not None and nxt.endswith(":"):
            bank = _number(nxt, 10, "Bank")
            status = _number(tokens[i + 2] if i + 2 < n else None, 16, "Bank status")
            addr = None
            j = i + 3
            if j < n and tokens[j] == "at":
                addr = _number(tokens[j + 1] if j + 1 < n else None, 16, "Bank address")
                j += 2
            draft = self.open(lineno)
            draft.set("bank", bank)
            draft.set("status", status)
            if addr is not None:
                draft.set("addr", addr)
            return j
        if tok in _FLAG_KEYWORDS:
            return self._flags(lineno, tokens, i)
        if tok in _REGISTERS:
            name, base = _REGISTERS[tok]
            number = _number(nxt, base, tok)
            if name == "time" and number > _MAX_TIME_S:
                raise _Bad(
                    f"TIME value {number} is out of range: at most {_MAX_TIME_S} seconds "
                    "(2262-04-11 UTC)",
                    numeric=True,
                )
            self.open(lineno).set(name, number)
            return i + 2
        if tok == "RIP":
            j = i + 1 if nxt != "!INEXACT!" else i + 2
            value = tokens[j] if j < n else ""
            cs: int | None = None
            match = _RIP.fullmatch(value)
            if match is not None:
                cs = _number(match.group(1), 16, "RIP cs")
                ip = _number(match.group(2), 16, "RIP ip")
            else:
                only = _RIP_IP_ONLY.fullmatch(value)
                if only is None:
                    raise _Bad(f"RIP value {value[:40]!r} is not '[cs:]ip' in hex")
                ip = _number(only.group(1), 16, "RIP ip")
            draft = self.open(lineno)
            if cs is not None:
                draft.set("cs", cs)
            draft.set("ip", ip)
            return j + 1
        if tok == "PROCESSOR":
            vendor_text, _, cpuid = (nxt or "").partition(":")
            number = _number(vendor_text, 10, "PROCESSOR vendor")
            eax = _number(cpuid, 16, "PROCESSOR cpuid")
            draft = self.open(lineno)
            draft.set("vendor", vendor_name(number) or f"vendor-{number}")
            _apply_cpuid(draft, eax)
            return i + 2
        if tok == "CPUID" and nxt == "Vendor":
            name = tokens[i + 2] if i + 2 < n else ""
            found: dict[str, int] = {}
            j = i + 3
            for key in ("Family", "Model"):
                if j < n and tokens[j] == key:
                    found[key.lower()] = _number(tokens[j + 1] if j + 1 < n else None, 10, key)
                    j += 2
            draft = self.open(lineno)
            draft.set("vendor", vendor_of_word(name))
            for key, number in found.items():
                draft.set(key, number)
            return j
        return i + 1

    def _flags(self, lineno: int, tokens: list[str], i: int) -> int:
        """STATUS / MCGSTATUS: one mcelog hex number, or mce-inject words and numbers."""
        tok = tokens[i]
        name, words = _FLAG_KEYWORDS[tok]
        run = _flag_run(tokens, i)
        if not _symbolic(run, words):
            # mcelog: a single hex number (or no value, or not a number: an error).
            value = _number(tokens[i + 1] if i + 1 < len(tokens) else None, 16, tok)
            self.open(lineno).set(name, value)
            return i + 2
        value = 0
        for word in run:
            bits = words.get(word.upper())
            value |= bits if bits is not None else _c_number(word, tok)
        self.inject = True
        draft = self.open(lineno)
        draft.set(name, value)
        if name == "status":
            draft.symbolic = True
        return i + 1 + len(run)

    def _cpu(self, lineno: int, tokens: list[str], i: int) -> int:
        """Read a CPU header starting at tokens[i] == "CPU"; return the next index."""
        n = len(tokens)
        cpu_tok = tokens[i + 1]
        if cpu_tok.endswith(":"):
            # Kernel form: CPU n: Machine Check[ Exception]: <mcgstatus> Bank b: <status>
            j = i + 2
            if tokens[j : j + 2] != ["Machine", "Check:"] and tokens[j : j + 3] != [
                "Machine",
                "Check",
                "Exception:",
            ]:
                return i + 2  # some other kernel message about a CPU
            j += 2 if tokens[j + 1] == "Check:" else 3
            draft = self._header(lineno)
            draft.set("cpu", _number(cpu_tok, 10, "CPU"))
            draft.set("mcg_status", _number(tokens[j] if j < n else None, 16, "MCG status"))
            return j + 1
        if cpu_tok.endswith(".") and _DEC.fullmatch(cpu_tok[:-1]):
            # Xen console: "... incident occurred on CPU n."
            self._header(lineno).set("cpu", _number(cpu_tok[:-1], 10, "CPU"))
            return i + 2
        if not _DEC.fullmatch(cpu_tok):
            return i + 1  # prose such as "CPU 1 on socket 0 ..." is not a header
        after = tokens[i + 2] if i + 2 < n else None
        if after == "BANK":
            bank_tok = tokens[i + 3] if i + 3 < n else None
            skip = 4
        elif after is not None and _DEC.fullmatch(after):
            bank_tok, skip = after, 3
        else:
            return i + 2
        draft = self._header(lineno)
        draft.set("cpu", _number(cpu_tok, 10, "CPU"))
        draft.set("bank", _number(bank_tok, 10, "BANK"))
        return i + skip


def parse_mce_text(text: str) -> list[ParsedRecord]:
    """Parse mcelog / kernel / mce-inject machine-check text into records and failures."""
    parser = _Parser()
    for lineno, line in enumerate(text.splitlines(), start=1):
        parser.feed(lineno, line)
    parser.flush()
    return parser.out
