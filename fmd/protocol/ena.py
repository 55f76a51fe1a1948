"""ENAs: the Error Numeric Association shared by all reports of one error.

Encoding, decoding, generating and parsing 64-bit ENAs::

    format 1: bits 0-1 = 1, 2-9 generation, 10-19 cpuid, 20-63 low 44 bits of hrtime (ns)
    format 2: bits 0-1 = 2, 2-9 generation, 10-63 time or id
"""

from __future__ import annotations

import re
import threading
from typing import Final, NamedTuple

from fmd.errors import EventRejected, ProtocolError
from fmd.protocol._common import _U64, _show

ENA_FORMAT1: Final = 1
ENA_FORMAT2: Final = 2


class EnaParts(NamedTuple):
    """The fields of a decoded ENA; cpuid is None except in format 1."""

    format: int
    generation: int
    cpuid: int | None
    time: int | None


def ena_format1(generation: int, cpuid: int, hrtime_ns: int) -> int:
    """A format-1 ENA (generation mod 256, cpuid mod 1024, low 44 bits of the time)."""
    return (
        ((hrtime_ns & ((1 << 44) - 1)) << 20)
        | ((cpuid & 0x3FF) << 10)
        | ((generation & 0xFF) << 2)
        | ENA_FORMAT1
    )


def ena_format2(generation: int, value: int) -> int:
    """A format-2 ENA (generation mod 256, low 54 bits of *value*)."""
    return ((value & ((1 << 54) - 1)) << 10) | ((generation & 0xFF) << 2) | ENA_FORMAT2


def decode_ena(ena: int) -> EnaParts:
    """Split an ENA into its fields; formats other than 1 and 2 yield only the generation bits."""
    if type(ena) is not int or not 0 <= ena <= _U64:
        raise ProtocolError(f"ENA {_show(ena)} is not a 64-bit unsigned integer")
    fmt = ena & 0x3
    generation = (ena >> 2) & 0xFF
    if fmt == ENA_FORMAT1:
        return EnaParts(fmt, generation, (ena >> 10) & 0x3FF, ena >> 20)
    if fmt == ENA_FORMAT2:
        return EnaParts(fmt, generation, None, ena >> 10)
    return EnaParts(fmt, generation, None, None)


class EnaGenerator:
    """Makes format-1 ENAs for ereports that arrive without one, each unique.

    A format-1 ENA tells two errors apart by its time and its 8-bit generation.
    Many ereports can share a time (a socket chunk is stamped with one receipt
    time; raw records carry whole seconds), so the generator never goes back in
    time: it uses the later of the time given and the last time it used, and
    when the 256 generations of one nanosecond are used up it moves on to the
    next nanosecond.  Every ENA it makes is then distinct (per cpuid, until the
    44-bit time wraps after about 4.9 hours of nanoseconds have been used).
    Safe to share between threads.
    """

    def __init__(self, generation: int = 0) -> None:
        self._lock = threading.Lock()
        self._time = -1
        self._generation = 0
        # The generation of the first ENA made (later times start at 0).
        self._first = generation & _GEN_MASK

    def next(self, hrtime_ns: int, cpuid: int = 0) -> int:
        """A new format-1 ENA for time *hrtime_ns* (or just after the last one made)."""
        with self._lock:
            if hrtime_ns > self._time:
                self._time, self._generation, self._first = hrtime_ns, self._first, 0
            elif self._generation < _GEN_MASK:
                self._generation += 1
            else:
                self._time, self._generation = self._time + 1, 0
            return ena_format1(self._generation, cpuid, self._time)


_GEN_MASK: Final = 0xFF
_ENA_TEXT: Final = re.compile(r"0[xX]([0-9A-Fa-f]+)|([0-9]+)")


def parse_ena(value: int | str) -> int:
    """An ENA from an integer, a ``0x`` hex string or a decimal string; EventRejected otherwise."""
    if type(value) is int:
        if 0 <= value <= _U64:
            return value
        raise EventRejected(f"'ena' {value} is out of range (0 to 2**64-1)")
    if isinstance(value, str):
        # Fast path for the common "0x..." form: at most 16 hex digits always fits.
        if len(value) <= 18 and value[:2] in ("0x", "0X") and value.isascii():
            digits = value[2:]
            if digits.isalnum():
                try:
                    return int(digits, 16)
                except ValueError:
                    raise EventRejected("'ena' must be an integer or hex string") from None
        m = _ENA_TEXT.fullmatch(value)
        if m is not None:
            hex_digits, dec_digits = m.groups()
            digits = (hex_digits or dec_digits).lstrip("0") or "0"
            if len(digits) <= (16 if hex_digits else 20):
                number = int(digits, 16 if hex_digits else 10)
                if number <= _U64:
                    return number
            raise EventRejected(f"'ena' {_show(value, 40)} is out of range (0 to 2**64-1)")
    raise EventRejected("'ena' must be an integer or hex string")
