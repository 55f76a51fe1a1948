"""Text kernel logs (``dmesg``, ``journalctl -k``, syslog files) as kernel log messages.

``fminject --format kernel`` and anyone holding a saved log read it here:
each line's prefix is taken off (:func:`split_log_line`) and the kernel's
messages are handed to :class:`fmd.hw.kmsg.KmsgParser` with their line
numbers, so every record and every failure names the line it starts on.

Prefixes read, in this order: an ISO 8601 date (``journalctl -o short-iso``,
rsyslog's high-precision format; without a zone it is local time), or a
syslog date (``journalctl -k``'s default; no year: the current one, or the
previous one when that would put the line more than a day in the future;
local time) followed by ``<host> kernel:`` (a dated line of another program
is not the kernel's); a ``<N>`` priority; a ``dmesg -T`` date; the
``[seconds.micro]`` time since boot (``dmesg``; no wall time) or ``dmesg -H``
delta.  The wall time, when a line has one, is its records' time unless a
machine-check block carries its own ``TIME``.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Iterator
from typing import Final

from fmd.hw.kmsg import ALL_FORMS, KmsgEvent, KmsgParser, KmsgResult, Message
from fmd.hw.mcelog import ParsedMca, parse_mce_text
from fmd.hw.topo import Platform

_NS_PER_S: Final = 1_000_000_000

_ISO_PREFIX: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)?\s+"
)
_MONTHS: Final = {
    name: n
    for n, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_SYSLOG_PREFIX: Final = re.compile(r"([A-Z][a-z]{2})\s{1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)\s+")
_DMESG_T: Final = re.compile(
    r"\[(?:[A-Z][a-z]{2} )?([A-Z][a-z]{2})\s{1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})\]\s?"
)
_KERNEL_TAG: Final = re.compile(r"(?:\S+\s+)?kernel:\s?")
_PRIORITY: Final = re.compile(r"<\d{1,3}>")
_MONOTONIC: Final = re.compile(r"\[\s*(\d{1,10})\.(\d{1,9})\]\s?")
_DELTA: Final = re.compile(r"\[\s*[+-]\d+\.\d+\]\s?")
_DAY_S: Final = 86400


def _local_ns(year: int, month: int, day: int, hms: tuple[int, int, int]) -> int | None:
    """Local wall-clock fields as epoch nanoseconds (None when they name no time)."""
    try:
        stamp = time.mktime((year, month, day, *hms, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
    return int(stamp) * _NS_PER_S if stamp >= 0 else None


def split_log_line(line: str, now_ns: int) -> tuple[int | None, bool, str]:
    """A text log line as (wall time ns or None, is a kernel message, the message).

    Reads the prefixes of ``journalctl -k`` (short and ``-o short-iso``),
    syslog files, ``dmesg`` and ``dmesg -T`` output: an ISO 8601 date, a
    syslog date (its year taken from ``now_ns``; local time), a ``dmesg -T``
    date, ``<host> kernel:``, a ``<N>`` priority and the ``[seconds.micro]``
    time since boot.  A line with a date whose tag is not ``kernel:`` is
    another program's message (``is a kernel message`` is then False).
    """
    rest = line.strip()
    when: int | None = None
    dated = False
    iso = _ISO_PREFIX.match(rest)
    syslog = None if iso else _SYSLOG_PREFIX.match(rest)
    if iso is not None:
        dated = True
        when = _iso_ns(iso)
        rest = rest[iso.end() :]
    elif syslog is not None and syslog.group(1) in _MONTHS:
        dated = True
        month, day = _MONTHS[syslog.group(1)], int(syslog.group(2))
        hms = (int(syslog.group(3)), int(syslog.group(4)), int(syslog.group(5)))
        year = time.localtime(now_ns // _NS_PER_S).tm_year
        when = _local_ns(year, month, day, hms)
        if when is not None and when > now_ns + _DAY_S * _NS_PER_S:
            when = _local_ns(year - 1, month, day, hms)  # last year's log
        rest = rest[syslog.end() :]
    if dated:
        tag = _KERNEL_TAG.match(rest)
        if tag is None:
            return when, False, rest
        rest = rest[tag.end() :]
    else:
        tag = _KERNEL_TAG.match(rest)
        if tag is not None:
            rest = rest[tag.end() :]
    prio = _PRIORITY.match(rest)
    if prio is not None:
        rest = rest[prio.end() :]
    stamp = _DMESG_T.match(rest)
    if stamp is not None and stamp.group(1) in _MONTHS and when is None:
        hms = (int(stamp.group(3)), int(stamp.group(4)), int(stamp.group(5)))
        when = _local_ns(int(stamp.group(6)), _MONTHS[stamp.group(1)], int(stamp.group(2)), hms)
        rest = rest[stamp.end() :]
    for relative in (_MONOTONIC, _DELTA):
        found = relative.match(rest)
        if found is not None:
            rest = rest[found.end() :]
            break
    return when, True, rest


def _iso_ns(found: re.Match[str]) -> int | None:
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    fraction, zone = found.group(7), found.group(8)
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (OverflowError, ValueError):
        return None
    if not 1 <= month <= 12 or not 1 <= day <= 31 or seconds < 0:
        return None
    if zone is None:
        local = _local_ns(year, month, day, (hour, minute, second))
        if local is None:
            return None
        seconds = local // _NS_PER_S
    elif zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    ns = int((fraction or "0").ljust(9, "0")[:9])
    return seconds * _NS_PER_S + ns


def parse_log_text(
    text: str,
    *,
    now_ns: int | None = None,
    platform: Platform | None = None,
    forms: Iterable[str] = ALL_FORMS,
) -> list[KmsgResult]:
    """Every record of a text kernel log (dmesg, journalctl -k, a syslog file), in order."""
    now = time.time_ns() if now_ns is None else now_ns
    parser = KmsgParser(platform, forms)
    out: list[KmsgResult] = []
    for msg in log_messages(text.split("\n"), now):
        out.extend(parser.feed(msg))
    out.extend(parser.flush())
    return out


def log_messages(lines: Iterable[str], now_ns: int) -> Iterator[Message]:
    """The kernel messages of text log lines (other programs' lines are left out)."""
    for number, line in enumerate(lines, start=1):
        when, kernel, message = split_log_line(line, now_ns)
        if kernel and message.strip():
            yield Message(number, message, when)


def looks_like_kernel_log(text: str, *, now_ns: int | None = None) -> bool:
    """True when the kernel-log reading of ``text`` finds at least as many records as
    the mcelog reading (and some): dmesg or journalctl output rather than mcelog's."""
    found = sum(isinstance(r, KmsgEvent) for r in parse_log_text(text, now_ns=now_ns))
    if found == 0:
        return False
    mcelog = sum(isinstance(r, ParsedMca) for r in parse_mce_text(text))
    return found >= mcelog
