"""The time syntax of ``fmdump -t``/``-T``: absolute local times and "that long ago".

Accepted forms (local time; any absolute form may end in ``.fraction`` of a
second)::

    mm/dd/yy[yy] [hh:mm[:ss]]      12/25/2023 10:30
    yyyy-mm-dd[Thh:mm[:ss]]        2023-12-25T10:30:05 (two-digit years too)
    ddMonyy[yy] [hh:mm[:ss]]       25Dec2023 10:30
    Mon dd hh:mm:ss                Dec 25 10:30:05 (this year)
    hh:mm[:ss]                     10:30 (today)
    <int><unit>                    30min: that long before now; units are
                                   ns nsec us usec ms msec s sec m min h hour d day

:func:`parse_time` raises only :class:`TimeSpecError`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

__all__ = ["TimeSpecError", "parse_time"]

_NS: Final = 10**9
_UNITS: Final = {
    "ns": 1,
    "nsec": 1,
    "us": 1000,
    "usec": 1000,
    "ms": 10**6,
    "msec": 10**6,
    "s": _NS,
    "sec": _NS,
    "m": 60 * _NS,
    "min": 60 * _NS,
    "h": 3600 * _NS,
    "hour": 3600 * _NS,
    "d": 86400 * _NS,
    "day": 86400 * _NS,
}
_MONTHS: Final = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}

_CLOCK = r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?"
_FORMS: Final = (
    re.compile(rf"(?P<mo>\d{{1,2}})/(?P<d>\d{{1,2}})/(?P<y>\d{{2}}|\d{{4}})(?:\s+{_CLOCK})?"),
    re.compile(rf"(?P<y>\d{{4}}|\d{{2}})-(?P<mo>\d{{1,2}})-(?P<d>\d{{1,2}})(?:T{_CLOCK})?"),
    re.compile(rf"(?P<d>\d{{1,2}})(?P<mon>[A-Za-z]{{3}})(?P<y>\d{{4}}|\d{{2}})(?:\s+{_CLOCK})?"),
    re.compile(rf"(?P<mon>[A-Za-z]{{3}})\s+(?P<d>\d{{1,2}})\s+{_CLOCK}"),
    re.compile(_CLOCK),
)
_RELATIVE: Final = re.compile(r"(?P<n>\d+)(?P<unit>[a-z]+)")
# Longer numbers can only name times before 1970 (and Python refuses to convert
# very long digit strings).
_MAX_DIGITS: Final = 30
_FRACTION: Final = re.compile(r"(?P<rest>.*\d)\.(?P<frac>\d+)")


class TimeSpecError(ValueError):
    """A -t/-T argument that is not one of the accepted forms."""


def _year(text: str) -> int:
    # Two-digit years follow POSIX strptime %y: 69-99 are 19xx, 00-68 are 20xx.
    y = int(text)
    if len(text) == 2:
        return y + (1900 if y >= 69 else 2000)
    return y


def _absolute(text: str, now_ns: int) -> int | None:
    frac_ns = 0
    m = _FRACTION.fullmatch(text)
    if m is not None:
        text = m["rest"]
        frac_ns = int((m["frac"] + "0" * 9)[:9])
    today = datetime.fromtimestamp(now_ns // _NS).date()
    for form in _FORMS:
        g = form.fullmatch(text)
        if g is None:
            continue
        parts = g.groupdict()
        if parts.get("mon") is not None:
            month = _MONTHS.get(parts["mon"].lower())
            if month is None:
                raise TimeSpecError(f"unknown month name {parts['mon']!r}")
        elif parts.get("mo") is not None:
            month = int(parts["mo"])
        else:
            month = today.month
        day = int(parts["d"]) if parts.get("d") is not None else today.day
        year = _year(parts["y"]) if parts.get("y") is not None else today.year
        try:
            when = datetime(
                year,
                month,
                day,
                int(parts["H"] or 0),
                int(parts["M"] or 0),
                int(parts["S"] or 0),
            )
            seconds = int(when.timestamp())
        except (ValueError, OverflowError, OSError) as exc:
            raise TimeSpecError(f"{text!r} is not a valid date and time: {exc}") from None
        return seconds * _NS + frac_ns
    return None


def parse_time(text: str, now_ns: int) -> int:
    """The time ``text`` names, in nanoseconds since the epoch (``now_ns`` anchors
    relative forms and the "today"/"this year" defaults)."""
    spec = text.strip()
    rel = _RELATIVE.fullmatch(spec)
    if rel is not None:
        unit = _UNITS.get(rel["unit"])
        if unit is None:
            raise TimeSpecError(
                f"unknown time unit {rel['unit']!r} in {text!r} (use one of {', '.join(_UNITS)})"
            )
        if len(rel["n"]) > _MAX_DIGITS:
            raise TimeSpecError(f"{text[:40]!r}: the number has more than {_MAX_DIGITS} digits")
        when = now_ns - int(rel["n"]) * unit
        if when < 0:
            raise TimeSpecError(f"{text!r} ago is before 1970")
        return when
    try:
        result = _absolute(spec, now_ns)
    except TimeSpecError:
        raise
    except (ValueError, OverflowError, OSError) as exc:
        raise TimeSpecError(f"{text!r} is not a valid time: {exc}") from None
    if result is None:
        raise TimeSpecError(
            f"{text!r} is not a time: use mm/dd/yy[yy] [hh:mm[:ss]], "
            "yyyy-mm-dd[Thh:mm[:ss]], ddMonyy[yy] [hh:mm[:ss]], Mon dd hh:mm:ss, "
            "hh:mm[:ss] or <number><unit> (e.g. 30min, 2h, 1day)"
        )
    if result < 0:
        raise TimeSpecError(f"{text!r} is before 1970")
    return result
