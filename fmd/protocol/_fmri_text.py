"""The lexical layer of FMRI string forms: percent-escaping, NAME=VALUE pairs, integers.

The escaping rules are described in :mod:`fmd.protocol.fmri`, which is the
only user of this module.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

from fmd.errors import FmriError
from fmd.protocol._common import _U64, _show


def _escape_table(chars: str) -> dict[int, str]:
    table = {ord(c): f"%{ord(c):02X}" for c in chars}
    table.update({i: f"%{i:02X}" for i in range(0x21)})
    table[0x7F] = "%7F"
    return table


_VALUE_ESCAPES: Final = _escape_table("%/:?&")
_NAME_ESCAPES: Final = _escape_table("%/:?&=")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _qv(value: str) -> str:
    return value.translate(_VALUE_ESCAPES)


def _qn(name: str) -> str:
    return name.translate(_NAME_ESCAPES)


def _unquote(part: str, src: str) -> str:
    if "%" not in part:
        return part
    if _BAD_PERCENT.search(part):
        raise FmriError(f"bad FMRI {_show(src)}: '%' not followed by two hex digits in {part!r}")
    try:
        return urllib.parse.unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise FmriError(
            f"bad FMRI {_show(src)}: percent escapes in {part!r} are not valid UTF-8"
        ) from None


def _split_pair(segment: str, src: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` at its first ``=`` and unescape both halves."""
    name, sep, value = segment.partition("=")
    if not sep:
        raise FmriError(f"bad FMRI {_show(src)}: expected NAME=VALUE, found {segment!r}")
    name = _unquote(name, src)
    if not name:
        raise FmriError(f"bad FMRI {_show(src)}: empty member name in {segment!r}")
    return name, _unquote(value, src)


def _parse_uint(value: str, what: str, where: str, limit: int = _U64) -> int:
    """A decimal or ``0x`` hexadecimal unsigned integer; *where* starts the error message."""
    try:
        if value[:2] in ("0x", "0X") and value[2:].isascii() and value[2:].isalnum():
            number = int(value[2:], 16)
        elif value.isascii() and value.isdigit() and len(value) <= 20:
            number = int(value, 10)
        else:
            raise ValueError(value)
    except ValueError:
        raise FmriError(f"{where}: {what} {value!r} is not an integer") from None
    if number > limit:
        raise FmriError(f"{where}: {what} {value!r} is out of range (max {limit})")
    return number
