"""Raw hardware telemetry into ereports: the one place records are decoded.

Telemetry sources (the mcelog text form through ``fminject --format mce``, and
later others) send raw machine-check records, not classified ereports: fmd
knows the platform, so it alone decodes them, and every source shares one
decoder (:mod:`fmd.hw.mca`).  On the wire a raw record is a JSON line with an
``mca`` object and no ``class``::

    {"mca": {"cpu": 12, "bank": 2, "status": "0x9c00...", "addr": "0x...",
             "misc": "0x...", "mcgstatus": "0x0", "mcgcap": "0x...",
             "vendor": "GenuineIntel", "family": 6, "model": 85,
             "time": 1700000000}}

Registers are integers or hex strings; the CPU is ``cpu`` (logical id) or
``apicid``.  The record becomes one ereport whose detector is the strand's hc
FMRI:

* a memory error whose address is usable becomes
  ``ereport.cpu.generic-x86.mem_ce`` or ``mem_ue`` with ``physaddr`` and, when
  the platform's address decoder knows the address, ``resource`` (the rank's hc
  FMRI) — the memory diagnosis needs nothing else;
* a memory error without a usable address whose bank names its channel (and
  DIMM) is attributed to that DIMM when exactly one DIMM of the platform fits
  (chip of the reporting CPU, ``dram-channel``, ``dimm``; any memory
  controller): the same memory classes, with the DIMM's hc FMRI as
  ``resource`` and no ``physaddr``, and the memory diagnosis counts it against
  the DIMM.  AMD memory errors (SMCA UMC banks, the legacy northbridge's DRAM
  ECC) take the memory classes even when neither address nor DIMM is known:
  they are never CPU errors.  An Intel memory-controller error that can be
  placed nowhere keeps its gcpu class (``mc``);
* on SMCA parts (family 17h+), a bank of a non-core unit or one that cannot be
  identified from its IPID becomes ``ereport.cpu.amd.smca.<unit>`` or
  ``ereport.cpu.amd.smca.unidentified`` (:mod:`fmd.hw.smca`): stored, never
  diagnosed as a CPU error; core units keep their gcpu class;
* anything else becomes ``ereport.cpu.generic-x86.<leaf>`` with the decoder's
  payload (``compound_errorname``, ``IA32_MCi_STATUS``, ``severity``, ...);
* on AMD families 0Fh/10h, a record :func:`fmd.hw.mca_amd.amd_overlay` covers
  (DC/IC/L2 array errors, NB DRAM ECC) takes its refined
  ``ereport.cpu.amd.<unit>.<leaf>`` class instead, keeping the payload above
  (memory ones with ``physaddr``/``resource``, plus ``syndrome``).

Both carry ``cpuid``.  A record that cannot be decoded (bad values, VAL clear,
a CPU the platform does not have) is rejected with the reason.

Stored form: the error log keeps the raw registers once, not both raw and as
decoded strings.  A decoded record's payload is stored as ``{"__mca": <the
record in wire form, without its time and a zero MCG_STATUS>, "cpuid": ...,
"resource": ...}``: the raw record plus the members that depend on the
platform that received it (a log read on another machine still names the right
rank or DIMM).  MCG_CAP is kept whenever the source gave it, zero included: an
absent ``mcgcap`` means "not reported", which grades differently.  Every other
member (``compound_errorname``, ``severity``, ``physaddr``, the AMD refinement,
...) is a pure function of the registers and is derived again when the record
is read (:func:`expand_stored`).  The payload the modules receive live is made
by that same function from the stored form, so a replayed ereport equals the
live one member for member.  A stored record that no longer decodes is shown
as stored, raw registers included.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from fmd.errors import EventRejected, FmdError
from fmd.hw.mca import (
    MEM_CE_CLASS,
    MEM_UE_CLASS,
    ST_ADDRV,
    ST_UC,
    DecodedMca,
    McaRecord,
    decode,
    memory_class,
    memory_severity_class,
)
from fmd.hw.mca_amd import amd_overlay
from fmd.hw.topo import Platform
from fmd.protocol import EnaGenerator, Ereport, HcFmri, parse_ena, parse_time, utc_iso
from fmd.protocol._common import _show
from fmd.protocol.limits import MAX_PHYSADDR

# JSON member -> McaRecord field, for the integer registers and ids.
_INT_FIELDS = {
    "bank": "bank", "status": "status", "addr": "addr", "misc": "misc",
    "mcgstatus": "mcg_status", "mcgcap": "mcg_cap", "cpu": "cpu", "socket": "socket",
    "core": "core", "thread": "thread", "apicid": "apicid", "family": "family",
    "model": "model", "tsc": "tsc", "ip": "ip", "cs": "cs", "ipid": "ipid",
    "synd": "synd", "ppin": "ppin",
}  # fmt: skip


# Unknown members named in a rejection (the rest are counted).
_SHOWN_MEMBERS = 5

# Members written in decimal by record_to_json (ids and small numbers).
_DECIMAL = frozenset({"bank", "cpu", "socket", "core", "thread", "apicid", "family", "model"})


def _int(name: str, value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            pass
    raise EventRejected(
        f"mca member {_show(name, 40)} must be an integer or hex string, not {_show(value, 40)}"
    )


def record_from_json(obj: Mapping[str, Any]) -> McaRecord:
    """An :class:`McaRecord` from the ``mca`` object of a wire line.

    A member that is ``null`` counts as absent.  Every problem is an
    :class:`EventRejected` naming the member.
    """
    unknown = sorted(set(obj) - set(_INT_FIELDS) - {"vendor", "time"})
    if unknown:
        shown = ", ".join(_show(u, 40) for u in unknown[:_SHOWN_MEMBERS])
        more = f" and {len(unknown) - _SHOWN_MEMBERS} more" if len(unknown) > _SHOWN_MEMBERS else ""
        raise EventRejected(f"mca: unknown members {shown}{more}")
    present = {k: v for k, v in obj.items() if v is not None}
    for required in ("bank", "status"):
        if required not in present:
            raise EventRejected(f"mca: missing member {required!r}")
    fields: dict[str, Any] = {
        _INT_FIELDS[k]: _int(k, v) for k, v in present.items() if k in _INT_FIELDS
    }
    vendor = present.get("vendor")
    if vendor is not None:
        if not isinstance(vendor, str):
            raise EventRejected("mca member 'vendor' must be a string")
        fields["vendor"] = vendor
    if "time" in present:
        fields["time_ns"] = parse_time(present["time"])
    try:
        return McaRecord(**fields)
    except (FmdError, TypeError, ValueError) as exc:
        raise EventRejected(f"mca: {exc}") from None


def record_to_json(record: McaRecord) -> dict[str, Any]:
    """The wire form of a record (registers as hex strings): inverse of record_from_json."""
    out: dict[str, Any] = {}
    for member, name in _INT_FIELDS.items():
        value = getattr(record, name)
        if value is not None:
            out[member] = value if member in _DECIMAL else f"0x{value:x}"
    if record.vendor is not None:
        out["vendor"] = record.vendor
    if record.time_ns is not None:
        out["time"] = utc_iso(record.time_ns)
    return out


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What a record's registers decode to on a platform (everything but its time)."""

    cls: str
    strand: HcFmri
    strand_str: str
    payload: dict[str, Any]
    cpu: int
    # The payload as stored (JSON), encoded once for every record decoding alike.
    payload_text: str


# Decoded records by platform and registers: the same few records (a CPU's
# corrected cache errors, a storm on one address) arrive over and over, and
# decoding is pure.  Bounded: past _CACHE_ENTRIES the oldest entry goes.
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], _Decoded]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_ENTRIES: Final = 4096
# The value types a cache key may hold: True == 1 and 1.0 == 1 in a tuple, so a
# bool or a float (which decoding refuses) must never find an int's entry.
_KEYABLE: Final = frozenset({str, int})


def mca_ereport(
    obj: Mapping[str, Any], platform: Platform, *, now_ns: int, ena_gen: EnaGenerator
) -> Ereport:
    """Decode one raw record (the ``mca`` member of ``line``) into an ereport."""
    raw = obj.get("mca")
    if not isinstance(raw, Mapping):
        raise EventRejected("'mca' must be an object of MCA registers")
    decoded, stored_text = _decoded(raw, platform)
    raw_time = raw.get("time")
    time_ns = parse_time(raw_time) if raw_time is not None else now_ns
    injected = obj.get("__injected", False)
    if type(injected) is not bool:
        raise EventRejected("'__injected' must be true or false")
    ena = (
        parse_ena(obj["ena"]) if obj.get("ena") is not None else ena_gen.next(time_ns, decoded.cpu)
    )
    return Ereport(
        cls=decoded.cls,
        ena=ena,
        time_ns=time_ns,
        detector=decoded.strand,
        detector_str=decoded.strand_str,
        payload=dict(decoded.payload),
        injected=injected,
        payload_text=decoded.payload_text if stored_text is None else stored_text,
        # Records that differ only in their TSC are identical for coalescing.
        key_text=decoded.payload_text,
    )


def _decoded(raw: Mapping[str, Any], platform: Platform) -> tuple[_Decoded, str | None]:
    """The record's decoding (from the cache when these registers were seen before),
    and its stored text when it differs from the cached one (a record with a TSC).

    The time and the TSC are different in every record the kernel logs and decide
    nothing of what it decodes to: they are left out of the cache key; the TSC, kept
    in the stored raw record, is put back into the stored text.
    """
    registers = dict(raw)
    registers.pop("time", None)
    tsc = registers.pop("tsc", None)
    found = _decoded_registers(registers, platform)
    if tsc is None:
        return found, None
    value = _int("tsc", tsc)
    if not 0 <= value <= _U64_MAX:
        raise EventRejected(f"mca: MCA record tsc={value:#x} does not fit in 64 bits")
    # The stored text starts with the raw record, a flat object: its first '}'
    # closes it.
    text = found.payload_text
    end = text.index("}")
    return found, f'{text[:end]},"tsc":"0x{value:x}"{text[end:]}'


_U64_MAX: Final = (1 << 64) - 1


def _decoded_registers(registers: dict[str, Any], platform: Platform) -> _Decoded:
    """The decoding of ``registers`` (no time, no TSC), cached per platform."""
    raw = registers
    key: tuple[Any, ...] | None = None
    if {v.__class__ for v in registers.values()} <= _KEYABLE:
        key = tuple(registers.items())
    cache = _CACHE.get(platform)
    if cache is None:
        cache = _CACHE.setdefault(platform, {})
    found = cache.get(key) if key is not None else None
    if found is None:
        found = _decode_registers(raw, platform)
        if key is not None:
            if len(cache) >= _CACHE_ENTRIES:
                del cache[next(iter(cache))]  # the oldest entry makes room
            cache[key] = found
    return found


def _decode_registers(raw: Mapping[str, Any], platform: Platform) -> _Decoded:
    """Decode a record's registers against the platform (EventRejected if it cannot be)."""
    record = record_from_json(raw)
    cpu = record.cpu
    try:
        if cpu is None:
            if record.apicid is None:
                raise EventRejected("mca: the record names no CPU (cpu or apicid)")
            cpu = platform.apic_to_cpu(record.apicid)
        strand = platform.cpu_to_hc(cpu)
    except LookupError as exc:
        raise EventRejected(f"mca: unknown cpu for this platform: {exc}") from None
    try:
        decoded = decode(record)
    except FmdError as exc:
        raise EventRejected(f"mca: {exc}") from None
    physaddr = _memory_address(decoded)
    cls = decoded.ereport_class
    stored: dict[str, Any] = {RAW_MEMBER: _raw_form(record), "cpuid": cpu}
    if decoded.is_memory:
        where = platform.decode_address(physaddr) if physaddr is not None else None
        if where is None:
            where = _dimm_at(platform, cpu, decoded.memory_channel, decoded.memory_dimm)
        if where is not None:
            stored["resource"] = _text(where)
        if physaddr is not None or where is not None or decoded.memory_only:
            cls = memory_severity_class(decoded)
    elif decoded.smca is not None:
        # Non-core SMCA units and unidentified banks: never a CPU error.
        cls = decoded.smca.ereport_class or cls
    # AMD family 0Fh/10h overlay: the refined ereport.cpu.amd.* class (and, for
    # DRAM ECC, the syndrome) replaces the generic class; physaddr/resource stay.
    refined = amd_overlay(record, decoded)
    if refined is not None:
        cls = refined.ereport_class
    if cls in _FIRMWARE_FALLBACK_CLASSES and is_firmware_record(record.bank, record.status):
        # Its address unusable, it is still a memory error (channel unknown), never
        # the basis of a CPU bus fault.
        cls = MEM_UE_CLASS if record.status & ST_UC else MEM_CE_CLASS
    # The live payload is the expansion of the stored form: replay sees the same.
    payload = _expand(record, decoded, stored)
    return _Decoded(cls, strand, _text(strand), payload, cpu, orjson.dumps(stored).decode())


# Linux's made-up record for a firmware (GHES) memory section (apei.c): bank -1,
# which struct mce holds (and the kernel prints) as 255, MCACOD 0x9F, ADDR valid.
FIRMWARE_BANKS: Final = frozenset({-1, 255})
FIRMWARE_MCACOD: Final = 0x9F
_MCACOD_MASK: Final = 0xFFFF
# What such a record decodes to when its address is not usable.
_FIRMWARE_FALLBACK_CLASSES: Final = frozenset(
    {"ereport.cpu.generic-x86.mc", "ereport.cpu.amd.smca.unidentified"}
)


def is_firmware_record(bank: int | None, status: int | None) -> bool:
    """True for the machine check Linux makes up for a firmware memory section."""
    return (
        status is not None
        and bank in FIRMWARE_BANKS
        and status & _MCACOD_MASK == FIRMWARE_MCACOD
        and bool(status & ST_ADDRV)
    )


# The member of a stored payload that holds the raw record.
RAW_MEMBER: Final = "__mca"


def _raw_form(record: McaRecord) -> dict[str, Any]:
    """The record as stored: its wire form without the time (the log row has it)
    and without the global registers when they are zero (their default)."""
    raw = record_to_json(record)
    raw.pop("time", None)
    for name in _DEFAULT_ZERO:
        if raw.get(name) == "0x0":
            del raw[name]
    return raw


# Registers record_from_json takes as zero when absent.  Not mcgcap: an absent
# MCG_CAP is unknown (None), which decodes differently from a reported zero.
_DEFAULT_ZERO: Final = ("mcgstatus",)


# Per platform: (chip, dram-channel) -> [(dimm instance, DIMM hc FMRI)], over
# every memory controller of the chip.
_DIMMS: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], list[tuple[int, HcFmri]]]] = (
    weakref.WeakKeyDictionary()
)
_DIMM_PATH: Final = ("motherboard", "chip", "memory-controller", "dram-channel", "dimm")


def _dimm_index(platform: Platform) -> dict[tuple[int, int], list[tuple[int, HcFmri]]]:
    index = _DIMMS.get(platform)
    if index is None:
        index = {}
        for node in platform.nodes():
            pairs = node.fmri.hc_list
            if tuple(name for name, _ in pairs) != _DIMM_PATH:
                continue
            try:
                chip, channel, dimm = int(pairs[1][1]), int(pairs[3][1]), int(pairs[4][1])
            except ValueError:
                continue
            index.setdefault((chip, channel), []).append((dimm, node.fmri))
        _DIMMS[platform] = index
    return index


def _dimm_at(platform: Platform, cpu: int, channel: int | None, dimm: int | None) -> HcFmri | None:
    """The DIMM a memory error lies on, from the channel (and DIMM, if known) its
    bank names, on the chip of the CPU that logged it; None unless exactly one
    DIMM of the platform fits (the bank does not say which memory controller of
    the chip, so a channel number two controllers share names no DIMM)."""
    if channel is None:
        return None
    try:
        chip = platform.chip_of_cpu(cpu)
    except LookupError:
        return None
    found = [
        fmri
        for d, fmri in _dimm_index(platform).get((chip, channel), ())
        if dimm is None or d == dimm
    ]
    return found[0] if len(found) == 1 else None


def _memory_address(decoded: DecodedMca) -> int | None:
    """The physical address that makes the record a memory ereport, if any.

    An address beyond what x86-64 can address is not usable (a corrupt or
    misread ADDR): such a record stays a non-memory ereport.
    """
    if memory_class(decoded) is None or decoded.physaddr is None:
        return None
    return decoded.physaddr if decoded.physaddr <= MAX_PHYSADDR else None


def _expand(record: McaRecord, decoded: DecodedMca, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The full payload of a stored record: decoded members, then the stored ones."""
    payload: dict[str, Any] = dict(decoded.payload)
    if "cpuid" in stored:
        payload["cpuid"] = stored["cpuid"]
    physaddr = _memory_address(decoded)
    if physaddr is not None:
        payload["physaddr"] = physaddr
    for name, value in stored.items():
        if name != RAW_MEMBER:
            payload[name] = value
    refined = amd_overlay(record, decoded)
    if refined is not None:
        payload.update(refined.payload)
    return payload


def expand_stored(stored: dict[str, Any]) -> dict[str, Any]:
    """The payload of a stored error-log record, decoded members derived again.

    A payload without the raw record (any ereport not decoded by fmd, and logs
    written before the compact form) is returned as it is; so is one whose raw
    record no longer decodes, raw registers included, for the reader to see.
    """
    raw = stored.get(RAW_MEMBER)
    if not isinstance(raw, dict):
        return stored
    try:
        record = record_from_json(raw)
        decoded = decode(record)
    except (EventRejected, FmdError):
        return stored
    return _expand(record, decoded, stored)


# The string forms of the platform's own FMRIs (strands, ranks), which a
# platform hands out as the same objects each time: formatting them is costly.
_TEXTS: dict[int, tuple[HcFmri, str]] = {}


def _text(fmri: HcFmri) -> str:
    found = _TEXTS.get(id(fmri))
    if found is None or found[0] is not fmri:
        if len(_TEXTS) >= _CACHE_ENTRIES:
            _TEXTS.clear()
        found = _TEXTS[id(fmri)] = (fmri, fmri.to_string())
    return found[1]
