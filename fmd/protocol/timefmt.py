"""Event times: nanoseconds since the epoch, parsed from and written as wire text."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from time import gmtime
from typing import Final

from fmd.errors import EventRejected
from fmd.protocol._common import _show

_NS_PER_S: Final = 1_000_000_000
_MAX_EPOCH_S: Final = 253_402_300_800  # 10000-01-01T00:00:00Z: datetime's limit
_EPOCH_ORDINAL: Final = datetime(1970, 1, 1, tzinfo=UTC).toordinal()
_ISO_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_TIME_TYPE_MESSAGE: Final = "'time' must be epoch seconds or an ISO 8601 string"


def utc_iso(time_ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` for nanoseconds since the epoch (truncated to µs)."""
    sec, ns = divmod(time_ns, _NS_PER_S)
    t = gmtime(sec)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ns // 1000:06d}Z"
    )


def _iso_to_ns(text: str) -> int:
    m = _ISO_RE.fullmatch(text)
    if m is None:
        raise EventRejected(f"{_TIME_TYPE_MESSAGE}, not {_show(text, 60)}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7), m.group(8)
    try:
        days = datetime(year, month, day, hour, minute, second).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise EventRejected(f"'time' {_show(text, 60)} is not a valid date: {exc}") from None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if zone and zone not in "Zz":
        digits = zone[1:].replace(":", "")
        off_h, off_m = int(digits[:2]), int(digits[2:] or "0")
        if off_h > 23 or off_m > 59:
            raise EventRejected(f"'time' {_show(text, 60)} has a bad UTC offset")
        offset = off_h * 3600 + off_m * 60
        seconds += -offset if zone[0] == "+" else offset
    ns = int((fraction or "")[:9].ljust(9, "0"))
    return _time_in_range(seconds * _NS_PER_S + ns, text)


# Event times are stored as signed 64-bit nanoseconds: 1970 up to 2262-04-11.
_MAX_TIME_NS: Final = 2**63


def _time_in_range(time_ns: int, shown: object) -> int:
    if not 0 <= time_ns < _MAX_TIME_NS:
        raise EventRejected(
            f"'time' {_show(shown, 60)} is out of range (1970-01-01 to 2262-04-11 UTC)"
        )
    return time_ns


def parse_time(value: object) -> int:
    """Nanoseconds since the epoch from epoch seconds (int or float) or an ISO 8601 string.

    An ISO string without a zone is taken as UTC.  Raises EventRejected.
    """
    if type(value) is int:
        return _time_in_range(value * _NS_PER_S, value)
    if type(value) is float:
        if not math.isfinite(value):
            raise EventRejected(f"'time' {value} is not a finite number")
        if not 0 <= value < _MAX_EPOCH_S:
            return _time_in_range(-1, value)
        sec = int(value)
        return _time_in_range(sec * _NS_PER_S + round((value - sec) * _NS_PER_S), value)
    if isinstance(value, str):
        return _iso_to_ns(value)
    raise EventRejected(_TIME_TYPE_MESSAGE)
