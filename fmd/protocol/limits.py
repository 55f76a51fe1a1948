"""Bounds on what one event may carry, checked where events enter fmd.

A sender must not be able to make fmd hold unbounded memory, recurse without
end, or hand a module a value it cannot represent.  So every ereport that a
transport accepts has already passed these checks:

* its payload nests at most :data:`MAX_PAYLOAD_DEPTH` objects or arrays deep
  and holds at most :data:`MAX_PAYLOAD_ITEMS` members and elements in all;
* an FMRI string is at most :data:`MAX_FMRI_LEN` characters, and an FMRI has
  at most :data:`MAX_FMRI_PAIRS` authority, path or hc-specific pairs;
* the well-known payload members that diagnosis and response act on hold
  integers in their range (:data:`MEMBER_RANGES`): a CPU id fits the cpu
  scheme (32 bits), a physical address the 52 bits x86-64 allows, a bank
  number the 8 bits of ``MCG_CAP.Count`` (or -1, Linux's firmware-first
  bank), and a machine-check register 64 bits.  Registers may also be given as
  ``"0x..."`` strings, since a JSON number above 2**53 loses bits in many
  tools.

A violation raises :class:`~fmd.errors.EventRejected` naming the member and
the expected range; the transport answers the sender with it.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from fmd.errors import EventRejected
from fmd.protocol._common import _U64, _json_type, _show

MAX_PAYLOAD_DEPTH: Final = 32
MAX_PAYLOAD_ITEMS: Final = 4096
MAX_FMRI_LEN: Final = 4096
MAX_FMRI_PAIRS: Final = 64

PHYSADDR_BITS: Final = 52
MAX_PHYSADDR: Final = (1 << PHYSADDR_BITS) - 1
MAX_CPUID: Final = 0xFFFF_FFFF
MIN_BANK, MAX_BANK = -1, 255


class MemberRange(NamedTuple):
    """The integer range of a well-known payload member, and whether a hex string is allowed."""

    low: int
    high: int
    what: str
    hex_ok: bool = False


_I64_MIN: Final = -(1 << 63)
_REGISTER: Final = MemberRange(0, _U64, "a 64-bit register", hex_ok=True)

MEMBER_RANGES: Final[dict[str, MemberRange]] = {
    "cpuid": MemberRange(0, MAX_CPUID, "a logical CPU id"),
    "apicid": MemberRange(0, MAX_CPUID, "an APIC id"),
    "physaddr": MemberRange(0, MAX_PHYSADDR, f"a physical address of at most {PHYSADDR_BITS} bits"),
    "bank": MemberRange(MIN_BANK, MAX_BANK, "a machine-check bank number"),
    "IA32_MCi_STATUS": _REGISTER,
    "IA32_MCi_ADDR": _REGISTER,
    "IA32_MCi_MISC": _REGISTER,
    "IA32_MCG_STATUS": _REGISTER,
    "IA32_MCG_CAP": _REGISTER,
    "syndrome": _REGISTER,
}


def check_member(name: str, value: object, spec: MemberRange) -> None:
    """Raise EventRejected unless *value* is an integer (or allowed hex string) in range."""
    number: int | None = None
    if value.__class__ is int:
        number = value
    elif spec.hex_ok and isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            number = int(value[2:], 16)
        except ValueError:
            number = None
    if number is None:
        raise EventRejected(
            f"payload member {name!r} must be {spec.what} (an integer), "
            f"not {_json_type(value)} {_show(value, 40)}"
        )
    if not spec.low <= number <= spec.high:
        raise EventRejected(
            f"payload member {name!r} is out of range: {number} is not {spec.what} "
            f"({spec.low}..{spec.high:#x})"
        )


def check_payload(payload: dict[str, Any]) -> None:
    """Check a payload's size, nesting and well-known members; EventRejected if not."""
    for name, spec in MEMBER_RANGES.items():
        if name in payload:
            check_member(name, payload[name], spec)
    check_shape(payload, "payload")


def check_shape(obj: dict[str, Any] | list[Any], what: str) -> None:
    """Bound the nesting depth and the total members of a decoded JSON value, and its
    integers to 64 bits (signed or unsigned, as the store and orjson can hold them).

    Iterative, so that nesting can never exhaust the interpreter's stack.
    """
    items = len(obj)
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        values = node.values() if node.__class__ is dict else node
        for value in values:
            cls = value.__class__
            if cls is dict or cls is list:
                if depth >= MAX_PAYLOAD_DEPTH:
                    raise EventRejected(
                        f"{what} nests deeper than {MAX_PAYLOAD_DEPTH} objects or arrays"
                    )
                items += len(value)
                if items > MAX_PAYLOAD_ITEMS:
                    raise EventRejected(
                        f"{what} holds more than {MAX_PAYLOAD_ITEMS} members and elements"
                    )
                stack.append((value, depth + 1))
            elif cls is int and not _I64_MIN <= value <= _U64:
                # JSON on the wire cannot carry one (it is read as a float), but an
                # event built in Python can; it could not be stored.
                raise EventRejected(
                    f"{what} holds the integer {_show(value, 40)}, outside the 64-bit range "
                    "(-2**63 to 2**64-1)"
                )
    if items > MAX_PAYLOAD_ITEMS:
        raise EventRejected(f"{what} holds more than {MAX_PAYLOAD_ITEMS} members and elements")
