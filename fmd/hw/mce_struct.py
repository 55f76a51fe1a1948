"""Linux's binary machine-check record (``struct mce``) into raw MCA wire records.

``/dev/mcelog`` (the legacy driver, and the xen_mcelog driver of a Xen dom0)
hands out records in the kernel's ``struct mce`` layout (uapi
``asm/mce.h``), little-endian, one after another.  The layout only ever grew
at its end, so every field keeps its offset across kernel versions::

    offset size field           offset size field
         0    8 status              66    1 cpu (obsolete: extcpu)
         8    8 misc                67    1 finished
        16    8 addr                68    4 extcpu
        24    8 mcgstatus           72    4 socketid
        32    8 ip                  76    4 apicid
        40    8 tsc                 80    8 mcgcap
        48    8 time (epoch s)      88    8 synd
        56    1 cpuvendor           96    8 ipid
        57    1 inject_flags       104    8 ppin
        58    1 severity           112    4 microcode
        59    1 pad                116    4 (alignment)
        60    4 cpuid (leaf 1 EAX) 120    8 kflags
        64    1 cs                 128      (end)
        65    1 bank

Record lengths met in practice (the driver reports its own with the
``MCE_GET_RECORD_LEN`` ioctl): 72 bytes for the original x86-64 record (no
time, vendor or CPUID yet: bytes 48-63 reserved, and byte 68 on padding, so
the CPU is the one-byte ``cpu``), 88 for the 2.6.31 one (``extcpu`` ..
``mcgcap``), 104 with the AMD SMCA ``synd``/``ipid``, 112 with ``ppin`` (also
the size of later Xen ``struct xen_mce``), 120 with ``microcode`` and 128 with
``kflags`` (today's).  :func:`decode_records` reads any length of at least
:data:`OLDEST_RECORD_LEN`, taking the fields that fit and ignoring bytes past
the fields it knows (a newer kernel's additions).

A decoded record is a raw MCA wire object (``{"mca": {...}}``, see
:mod:`fmd.hw.telemetry`): ``cpu`` from ``extcpu``, ``vendor`` from the
kernel's vendor number, ``family``/``model`` from the CPUID signature, ``time``
from ``time``, and the registers.  Zero means "not filled in" for the fields
the kernel (or Xen) may leave out: ``time``, ``cpuid``, ``ip`` (with ``cs``),
``mcgcap``, ``synd``, ``ipid``, ``ppin``; those are then left out of the
record.  ``severity``, ``inject_flags``, ``microcode`` and ``kflags`` are the
kernel's own and have no wire member.

A record the decoder cannot take is a :class:`MceReject` with the reason: a
truncated record (the bytes left over after the last whole record), a record
whose ``finished`` flag is clear, or a record length shorter than the oldest
layout.  :func:`decode_records` never raises on any input.

Vendor numbers differ between the two producers: Linux numbers vendors
0 Intel, 2 AMD, ..., 9 Hygon, 10 Zhaoxin (:data:`fmd.hw.cpuid.LINUX_VENDORS`),
while the xen_mcelog driver copies Xen's own number, a bit per vendor since
Xen 4.13 and Linux's numbering before (:data:`fmd.hw.cpuid.XEN_VENDORS`
accepts both where they do not clash); the caller chooses the table.
On Xen the CPU number is a *physical* CPU (Xen's ``mc_cpunr``), not a dom0
vCPU: records from a dom0 must be decoded against the Xen physical topology.
:func:`encode_record` writes records in this layout (for tests and dumps).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fmd.hw.cpuid import LINUX_VENDORS, family_model, vendor_name

# The length of today's record, and of the oldest layout this module reads.
MCE_RECORD_LEN: Final = 128
OLDEST_RECORD_LEN: Final = 72
# Records longer than the oldest layout carry extcpu, time, vendor and CPUID.
_EXTENDED_FROM: Final = OLDEST_RECORD_LEN + 1
# A record length beyond this is not a struct mce (refused before slicing).
MAX_RECORD_LEN: Final = 4096

# Field name -> (offset, struct format), little-endian as on x86.
FIELDS: Final[Mapping[str, tuple[int, str]]] = {
    "status": (0, "<Q"),
    "misc": (8, "<Q"),
    "addr": (16, "<Q"),
    "mcgstatus": (24, "<Q"),
    "ip": (32, "<Q"),
    "tsc": (40, "<Q"),
    "time": (48, "<Q"),
    "cpuvendor": (56, "<B"),
    "inject_flags": (57, "<B"),
    "severity": (58, "<B"),
    "pad": (59, "<B"),
    "cpuid": (60, "<I"),
    "cs": (64, "<B"),
    "bank": (65, "<B"),
    "cpu": (66, "<B"),
    "finished": (67, "<B"),
    "extcpu": (68, "<I"),
    "socketid": (72, "<I"),
    "apicid": (76, "<I"),
    "mcgcap": (80, "<Q"),
    "synd": (88, "<Q"),
    "ipid": (96, "<Q"),
    "ppin": (104, "<Q"),
    "microcode": (112, "<I"),
    "kflags": (120, "<Q"),
}

# The fields that sit in reserved bytes of the oldest (72-byte) layout.
_EXTENDED_ONLY: Final = frozenset({"time", "cpuvendor", "inject_flags", "severity", "cpuid"})
# Wire members copied only when non-zero (zero: not filled in).
_NONZERO_ONLY: Final = (("mcgcap", "mcgcap"), ("synd", "synd"), ("ipid", "ipid"), ("ppin", "ppin"))
# Registers always copied, as hex strings.
_REGISTERS: Final = ("status", "addr", "misc", "mcgstatus", "tsc")


@dataclass(frozen=True)
class MceWire:
    """A record decoded into its wire object; ``index`` counts records from 0."""

    index: int
    wire: dict[str, Any]


@dataclass(frozen=True)
class MceReject:
    """A record that could not be decoded, and why (``stable key: details``)."""

    index: int
    reason: str


MceDecoded = MceWire | MceReject


def _fields(chunk: bytes) -> dict[str, int]:
    """The fields that fit in ``chunk`` (which is at least the oldest layout)."""
    extended = len(chunk) >= _EXTENDED_FROM
    out: dict[str, int] = {}
    for name, (offset, fmt) in FIELDS.items():
        if offset + struct.calcsize(fmt) > len(chunk):
            continue
        if not extended and (name in _EXTENDED_ONLY or name == "extcpu"):
            continue
        (out[name],) = struct.unpack_from(fmt, chunk, offset)
    return out


def decode_record(
    chunk: bytes, index: int = 0, *, vendors: Mapping[int, str] = LINUX_VENDORS
) -> MceDecoded:
    """Decode one record of ``len(chunk)`` bytes (its record length)."""
    if len(chunk) < OLDEST_RECORD_LEN:
        return MceReject(
            index,
            f"struct mce record truncated: {len(chunk)} bytes, "
            f"the oldest layout has {OLDEST_RECORD_LEN}",
        )
    f = _fields(chunk)
    if f["finished"] == 0:
        return MceReject(
            index,
            f"struct mce record not finished: bank {f['bank']} status {f['status']:#x} "
            "has its finished flag clear (the kernel had not finished writing it)",
        )
    mca: dict[str, Any] = {"cpu": f.get("extcpu", f["cpu"]), "bank": f["bank"]}
    for name in _REGISTERS:
        mca[name] = f"{f[name]:#x}"
    if f["ip"]:
        mca["ip"] = f"{f['ip']:#x}"
        mca["cs"] = f["cs"]
    if f.get("time"):
        mca["time"] = f["time"]
    vendor = vendor_name(f["cpuvendor"], vendors) if "cpuvendor" in f else None
    if vendor is not None:
        mca["vendor"] = vendor
    if f.get("cpuid"):
        mca["family"], mca["model"] = family_model(f["cpuid"])
    if "socketid" in f:
        mca["socket"] = f["socketid"]
    if "apicid" in f:
        mca["apicid"] = f["apicid"]
    for field, member in _NONZERO_ONLY:
        if f.get(field):
            mca[member] = f"{f[field]:#x}"
    return MceWire(index, {"mca": mca})


def decode_records(
    data: bytes, record_len: int, *, vendors: Mapping[int, str] = LINUX_VENDORS, first: int = 0
) -> list[MceDecoded]:
    """Decode ``data`` holding records of ``record_len`` bytes each, in order.

    ``first`` is the index of the first record (for reasons naming records
    across several reads).  Bytes after the last whole record are one
    truncated record; a record length the decoder cannot use rejects all of
    ``data`` as one record.
    """
    if not data:
        return []
    if not OLDEST_RECORD_LEN <= record_len <= MAX_RECORD_LEN:
        return [
            MceReject(
                first,
                f"struct mce record length unusable: {record_len} bytes "
                f"(expected {OLDEST_RECORD_LEN}..{MAX_RECORD_LEN}); {len(data)} bytes dropped",
            )
        ]
    out: list[MceDecoded] = []
    whole = len(data) - len(data) % record_len
    for n, start in enumerate(range(0, whole, record_len)):
        out.append(decode_record(data[start : start + record_len], first + n, vendors=vendors))
    if whole < len(data):
        out.append(
            MceReject(
                first + len(out),
                f"struct mce record truncated: {len(data) - whole} of {record_len} bytes",
            )
        )
    return out


def encode_record(values: Mapping[str, int], record_len: int = MCE_RECORD_LEN) -> bytes:
    """A record of ``record_len`` bytes holding ``values`` (absent fields are zero).

    ``finished`` defaults to 1.  Fields that do not fit in ``record_len`` are
    dropped, as an older kernel would have.  Raises ValueError for an unknown
    field name or a value that does not fit its field.
    """
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"struct mce has no field(s) {', '.join(unknown)}")
    buf = bytearray(record_len)
    merged = {"finished": 1, **values}
    for name, value in merged.items():
        offset, fmt = FIELDS[name]
        if offset + struct.calcsize(fmt) <= record_len:
            try:
                struct.pack_into(fmt, buf, offset, value)
            except struct.error as exc:
                raise ValueError(f"struct mce field {name}={value!r}: {exc}") from None
    return bytes(buf)
