"""The same hardware event, once: identities of machine-check records and their memory.

One machine check can reach fmd more than once: through the tracepoint and the
kernel log, through /dev/mcelog and the console, an import run twice, or
``journalctl -k | fminject -`` re-run by cron.  A record the kernel logged
carries its own time (``TIME``, the wall clock when it was logged) and/or the
CPU's time-stamp counter (``TSC``); with the CPU, bank and registers they
identify the event.  Records that carry neither (hand-written test input) have
no identity and are never taken for duplicates.

The identity is the CPU (logical id, else APIC id), bank, MCi_STATUS, MCi_ADDR
and MCi_MISC where the status says they are valid (a source that prints the
register only when valid and one that prints zeros then agree), the TSC and
the time in whole seconds.  It is folded into a format-2 ENA
(:func:`identity_ena`): the ENA of every copy of the event is the same, as an
ENA should be, and the error log's ENA column is all that is needed to know,
after a restart, which events are already stored (:meth:`HardwareDedup.preload`
reads the most recent ones, no payload decoding).

:class:`HardwareDedup` remembers the identities of the last
:data:`MAX_ENTRIES` events within ``window_ns`` of the newest event time it has
seen.  A duplicate is counted per transport (``fmstat -t``, the
``duplicates`` counter), answered as stored, and never stored or fed to a SERD
engine again.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Final

from fmd.hw.mca import ST_ADDRV, ST_MISCV
from fmd.protocol import ena_format2
from fmd.protocol.timefmt import parse_time

MAX_ENTRIES: Final = 65536
_U64_MASK: Final = (1 << 64) - 1
DEFAULT_WINDOW_NS: Final = 30 * 24 * 3600 * 10**9
_NS_PER_S: Final = 10**9
# ENA format 2 keeps 54 bits of value.
_VALUE_BITS: Final = 54
_ENA_FORMAT_MASK: Final = 0x3
ENA_FORMAT2: Final = 2
# The generation bits of an identity ENA (any fixed value; 0x3F marks it).
_IDENTITY_GENERATION: Final = 0x3F


def _number(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            return None
    return None


def record_identity(raw: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The identity of a raw record (the ``mca`` wire object), or None if it has none.

    Only records carrying their own time or a non-zero TSC have one.  Values
    that do not parse give None (the decoder rejects the record anyway).
    """
    tsc = _number(raw.get("tsc")) or 0
    time_value = raw.get("time")
    seconds = -1
    if type(time_value) is int:
        seconds = time_value  # epoch seconds, the kernel's own form
    elif time_value is not None:
        try:
            seconds = parse_time(time_value) // _NS_PER_S
        except Exception:
            return None
    if seconds < 0 and tsc == 0:
        return None
    cpu = _number(raw.get("cpu"))
    apic = _number(raw.get("apicid"))
    bank = _number(raw.get("bank"))
    status = _number(raw.get("status"))
    if bank is None or status is None or (cpu is None and apic is None):
        return None
    addr = _number(raw.get("addr")) if status & ST_ADDRV else None
    misc = _number(raw.get("misc")) if status & ST_MISCV else None
    return (
        -1 if cpu is None else cpu,
        -1 if apic is None or cpu is not None else apic,
        bank,
        status,
        -1 if addr is None else addr,
        -1 if misc is None else misc,
        tsc,
        seconds,
    )


def identity_ena(identity: tuple[int, ...]) -> int:
    """The format-2 ENA that stands for ``identity`` (a stable hash: the same in
    every process and version, since stored ENAs are compared after restarts)."""
    packed = struct.pack(f"<{len(identity)}Q", *(v & _U64_MASK for v in identity))
    digest = hashlib.blake2b(packed, digest_size=8).digest()
    value = int.from_bytes(digest, "big") & ((1 << _VALUE_BITS) - 1)
    return ena_format2(_IDENTITY_GENERATION, value)


def is_identity_ena(ena: int) -> bool:
    """True for an ENA :func:`identity_ena` could have made."""
    return ena & _ENA_FORMAT_MASK == ENA_FORMAT2 and (ena >> 2) & 0xFF == _IDENTITY_GENERATION


class HardwareDedup:
    """Identities (as ENAs) of recent hardware events, bounded in count and time."""

    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS, max_entries: int = MAX_ENTRIES) -> None:
        self.window_ns = window_ns
        self.max_entries = max(1, max_entries)
        self._lock = threading.Lock()
        self._seen: OrderedDict[int, int] = OrderedDict()  # ena -> event time (ns)
        self._newest = 0

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, ena: int, time_ns: int) -> bool:
        """Record the event ``ena``; False when it was already recorded (a duplicate)."""
        with self._lock:
            if ena in self._seen:
                return False
            if self.window_ns > 0 and time_ns < self._newest - self.window_ns:
                # Older than anything remembered: it may have been forgotten, so it
                # is taken as new (stored once more rather than lost).
                return True
            self._seen[ena] = time_ns
            if time_ns > self._newest:
                self._newest = time_ns
            self._trim()
            return True

    def forget(self, enas: Iterable[int]) -> None:
        """Drop events whose storing failed (a later copy must then be taken)."""
        with self._lock:
            for ena in enas:
                self._seen.pop(ena, None)

    def preload(self, rows: Iterable[tuple[int, int]]) -> int:
        """Remember stored events given as (ENA, time), oldest first; returns how many."""
        n = 0
        with self._lock:
            for ena, time_ns in rows:
                if is_identity_ena(ena):
                    self._seen[ena] = time_ns
                    self._seen.move_to_end(ena)
                    self._newest = max(self._newest, time_ns)
                    n += 1
            self._trim()
        return n

    def _trim(self) -> None:
        seen = self._seen
        while len(seen) > self.max_entries:
            seen.popitem(last=False)
        if self.window_ns > 0:
            horizon = self._newest - self.window_ns
            while seen:
                ena, t = next(iter(seen.items()))
                if t >= horizon:
                    break
                del seen[ena]
