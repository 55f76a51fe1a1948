"""Read the mcelog / kernel machine-check text forms into :class:`fmd.hw.mca.McaRecord`.

One function, :func:`parse_mce_text`, reads text that ``mcelog --ascii`` would
accept (linux-xen-peers.md section 2.6) and returns, in input order, one item
per record: a :class:`ParsedMca` (the record and the 1-based line it started
on) or a :class:`ParseFailure` (a line number and the reason).  It never raises
on any input.

Each line is split into whitespace tokens and scanned for keywords; anything
else on a line (syslog prefixes such as ``<4>``, ``[  12.5]``,
``mce: [Hardware Error]:``, dates after ``TIME``, prose of mcelog's decoded
output) is skipped.  Recognised forms:

* headers: ``CPU n BANK b``, ``CPU n b``, the kernel's
  ``CPU n: Machine Check[ Exception]: <mcgstatus> Bank b: <status>`` and the
  Xen console's ``... on CPU n.`` followed by ``Bank b: <status> [at <addr>]``;
* registers (hex, ``0x`` optional): ``STATUS``, ``MCGSTATUS``, ``MCGCAP``,
  ``ADDR``, ``MISC``, ``TSC``, ``APICID``/``APIC``, ``IPID``, ``SYND``,
  ``PPIN``, ``microcode`` (checked, not kept), ``RIP [!INEXACT!] cs:<ip>``;
* decimal: ``SOCKETID``/``SOCKET``, ``TIME`` (seconds up to 2262-04-11, the
  end of fmd's 64-bit nanosecond times; gives ``time_ns``);
* ``PROCESSOR vendor:cpuid`` (Linux vendor number, CPUID leaf 1 EAX in hex) and
  ``CPUID Vendor V Family F Model M`` (decimal).

Record boundaries::

                 header token (CPU ...)          blank line, "HARDWARE ERROR",
      +------+ ------------------------> +------+ "Hardware event", end of text
      | IDLE |                           | OPEN | ---------------------------> emit
      +------+ <------------------------ +------+
                 (a header while OPEN emits the current record and opens a new one)

A register token while IDLE also opens a record.  Unlike mcelog, a line that
matches nothing does *not* end the record: mcelog's own decoded output puts
prose between register lines, and skipping it lets that form be read back.
The first bad value in a record makes it a failure naming that line; a record
without BANK or STATUS, or with VAL clear, is a failure naming its first line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from fmd.hw.mca import ST_VAL, McaError, McaRecord

_HEX: Final = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
_DEC: Final = re.compile(r"[0-9]+")
_RIP: Final = re.compile(r"([0-9a-fA-F]+):<?(?:0[xX])?([0-9a-fA-F]+)>?")
_U64: Final = (1 << 64) - 1
_MAX_DIGITS: Final = 40  # refuse absurd numbers before converting them
_NS_PER_S: Final = 1_000_000_000
# Event times are signed 64-bit nanoseconds: TIME (seconds) up to 2262-04-11.
_MAX_TIME_S: Final = ((1 << 63) - 1) // _NS_PER_S

# Linux X86_VENDOR_* numbers, as printed after PROCESSOR.
_VENDOR_BY_NUMBER: Final = {
    0: "GenuineIntel",
    1: "CyrixInstead",
    2: "AuthenticAMD",
    3: "UMC UMC UMC ",
    5: "CentaurHauls",
    8: "GenuineTMx86",
    9: "Geode by NSC",
    10: "HygonGenuine",
    11: "  Shanghai  ",
    12: "Vortex86 SoC",
}
_VENDOR_BY_NAME: Final = {
    "intel": "GenuineIntel",
    "amd": "AuthenticAMD",
    "hygon": "HygonGenuine",
    "zhaoxin": "  Shanghai  ",
    "centaur": "CentaurHauls",
}

# Register keywords: token -> (McaRecord field or "" to discard, base).
_REGISTERS: Final = {
    "STATUS": ("status", 16),
    "MCGSTATUS": ("mcg_status", 16),
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
    """A value on the current line is malformed; carries the reason."""


def _number(token: str | None, base: int, what: str) -> int:
    if token is None:
        raise _Bad(f"{what} has no value")
    text = token.rstrip(":,.")
    match = (_HEX if base == 16 else _DEC).fullmatch(text)
    digits = match.group(1) if match and base == 16 else text
    if match is None or len(digits) > _MAX_DIGITS:
        kind = "hex" if base == 16 else "decimal"
        raise _Bad(f"{what} value {token[:40]!r} is not a {kind} number")
    value = int(digits, base)
    if value > _U64:
        raise _Bad(f"{what} value {token[:40]!r} does not fit in 64 bits")
    return value


@dataclass
class _Draft:
    """The record being assembled, before validation."""

    line: int
    values: dict[str, int | str] = field(default_factory=dict)
    error: ParseFailure | None = None

    def set(self, name: str, value: int | str) -> None:
        if name:
            self.values[name] = value

    def finish(self) -> ParsedRecord:
        if self.error is not None:
            return self.error
        v = self.values
        if "bank" not in v:
            return ParseFailure(self.line, "record has no BANK (expected 'CPU n BANK b')")
        if "status" not in v:
            return ParseFailure(self.line, "record has no STATUS")
        status = v["status"]
        assert isinstance(status, int)
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
    base_family = (eax >> 8) & 0xF
    family = base_family + ((eax >> 20) & 0xFF if base_family == 0xF else 0)
    model = (eax >> 4) & 0xF
    if base_family in (0x6, 0xF):
        model |= ((eax >> 16) & 0xF) << 4
    draft.set("family", family)
    draft.set("model", model)


class _Parser:
    def __init__(self) -> None:
        self.out: list[ParsedRecord] = []
        self.draft: _Draft | None = None

    def flush(self) -> None:
        if self.draft is not None:
            self.out.append(self.draft.finish())
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
        i, n = 0, len(tokens)

        def at(k: int) -> str | None:
            return tokens[k] if k < n else None

        while i < n:
            tok = tokens[i]
            nxt = at(i + 1)
            if tok == "CPU" and nxt is not None:
                i = self._cpu(lineno, tokens, i)
            elif tok == "Bank" and nxt is not None and nxt.endswith(":"):
                draft = self.open(lineno)
                draft.set("bank", _number(nxt, 10, "Bank"))
                draft.set("status", _number(at(i + 2), 16, "Bank status"))
                i += 3
                if at(i) == "at":
                    draft.set("addr", _number(at(i + 1), 16, "Bank address"))
                    i += 2
            elif tok in _REGISTERS:
                name, base = _REGISTERS[tok]
                number = _number(nxt, base, tok)
                if name == "time" and number > _MAX_TIME_S:
                    raise _Bad(
                        f"TIME value {number} is out of range: at most {_MAX_TIME_S} seconds "
                        "(2262-04-11 UTC)"
                    )
                self.open(lineno).set(name, number)
                i += 2
            elif tok == "RIP":
                j = i + 1 if at(i + 1) != "!INEXACT!" else i + 2
                value = at(j) or ""
                match = _RIP.fullmatch(value)
                if match is None:
                    raise _Bad(f"RIP value {value[:40]!r} is not 'cs:ip' in hex")
                draft = self.open(lineno)
                draft.set("cs", _number(match.group(1), 16, "RIP cs"))
                draft.set("ip", _number(match.group(2), 16, "RIP ip"))
                i = j + 1
            elif tok == "PROCESSOR":
                vendor, _, cpuid = (nxt or "").partition(":")
                number = _number(vendor, 10, "PROCESSOR vendor")
                draft = self.open(lineno)
                draft.set("vendor", _VENDOR_BY_NUMBER.get(number, f"vendor-{number}"))
                _apply_cpuid(draft, _number(cpuid, 16, "PROCESSOR cpuid"))
                i += 2
            elif tok == "CPUID" and nxt == "Vendor":
                draft = self.open(lineno)
                name = at(i + 2) or ""
                draft.set("vendor", _VENDOR_BY_NAME.get(name.lower(), name))
                i += 3
                for key in ("Family", "Model"):
                    if at(i) == key:
                        draft.set(key.lower(), _number(at(i + 1), 10, key))
                        i += 2
            else:
                i += 1

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
    """Parse mcelog / kernel machine-check text into records and per-record failures."""
    parser = _Parser()
    for lineno, line in enumerate(text.splitlines(), start=1):
        parser.feed(lineno, line)
    parser.flush()
    return parser.out
