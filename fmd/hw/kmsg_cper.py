"""Firmware-first (GHES) error records as the kernel logs them: CPER text into wire objects.

When the firmware reports errors first (APEI GHES), the kernel prints each
record it is handed (``drivers/firmware/efi/cper.c``) as lines tagged
``{n}[Hardware Error]:``, ``n`` counting the records::

    Hardware error from APEI Generic Hardware Error Source: 4     (the header)
    event severity: corrected|recoverable|fatal|info
     Error 0, type: corrected                                      (a section)
     fru_text: D2
      section_type: memory error
      physical_address: 0x0000006a47d1f540
      node:6 card:1 module:0 rank:1 bank:2 device:11 row:40948 column:560
      error_type: 2, single-bit ECC
      DIMM location: CPU 1 DIMM 3

:class:`CperRecord` takes one record's lines (the text after the tag) and
:meth:`CperRecord.wire_objects` makes one wire object per section:

* memory sections: a memory ereport (:func:`fmd.hw.events.edac_memory`,
  source ``ghes``) on the DIMM its location or FRU text names, with the
  physical address and the CPER location, status and error type;
* ARM processor sections: ``ereport.cpu.arm.error`` with MIDR, MPIDR and each
  error-info structure (context dumps are left out);
* every other section (general or IA32/X64 processor, PCIe, unknown GUIDs):
  :func:`fmd.hw.events.firmware_section` with its ``key: value`` fields.

Fields keep their meaning, not their layout: ``0x`` values stay hex strings
(registers and addresses do not fit a JSON number), small decimals become
numbers, ``N, text`` becomes ``key`` and ``key_name``; prose lines are kept
as ``notes``.  Everything is bounded (fields, notes, text lengths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from fmd.hw import events
from fmd.hw.topo import Platform
from fmd.protocol.limits import MAX_PHYSADDR

SOURCE: Final = "ghes"

# Bounds on what one section keeps (its payload must stay well under the
# ereport limits).
MAX_FIELDS: Final = 128
MAX_NOTES: Final = 32
MAX_ARM_ERRORS: Final = 16
MAX_TEXT: Final = 200
# The largest decimal integer a payload keeps as a number.
MAX_PAYLOAD_INT: Final = (1 << 63) - 1

HEADER: Final = re.compile(r"Hardware error from APEI Generic Hardware Error Source: (-?\d{1,10})")
_SEVERITY: Final = re.compile(r"event severity: (\w+)")
_SECTION: Final = re.compile(r"Error (\d{1,5}), type: (\w+)")
_TYPE: Final = re.compile(r"section[_ ]type: (.*)$")
_HEXDUMP: Final = re.compile(r"[0-9a-fA-F]{8}:(?: [0-9a-fA-F]{8}){1,4}")
_KV: Final = re.compile(r"([A-Za-z][A-Za-z0-9_ ()/.-]{0,80}?):\s*(.*)$")
_LOCATION_PAIR: Final = re.compile(r"([a-z_]+):\s*(\d{1,20})")
_NUMBERED: Final = re.compile(r"(\d{1,20}), (.+)$")
_PAREN_HEX: Final = re.compile(r"\((0x[0-9a-fA-F]{1,16})\)\s*$")
_HEX_VALUE: Final = re.compile(r"0[xX][0-9a-fA-F]{1,16}")
_DEC_VALUE: Final = re.compile(r"-?\d{1,18}")
_ARM_ERROR_INFO: Final = re.compile(r"Error info structure (\d{1,5}):")
_ARM_CONTEXT: Final = re.compile(r"(?:Context info structure|Vendor specific error info)")
_MPIDR: Final = "Multiprocessor Affinity Register"
_NOT_PRESENT: Final = "not present"

# Section kinds by their printed type; the kind is the firmware_section leaf.
KIND_MEMORY: Final = "memory"
KIND_ARM: Final = "arm"
KIND_UNKNOWN: Final = "unknown"
_KINDS: Final = {
    "memory error": KIND_MEMORY,
    "general processor error": "processor_generic",
    "ia32/x64 processor error": "processor_ia32x64",
    "arm processor error": KIND_ARM,
    "pcie error": "pcie",
    "firmware error record reference": "firmware_record",
}
# CPER severities as EDAC error types (fmd.hw.events.is_corrected reads these).
_ERROR_TYPE: Final = {
    "corrected": "Corrected",
    "recoverable": "Uncorrected",
    "fatal": "Uncorrected",
    "info": "Info",
}
# Members a field must not overwrite (the ereport's own, and those set here).
_RESERVED: Final = frozenset({"class", "ena", "time", "detector", "__injected", "source"})


def clip(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT` characters."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def payload_physaddr(value: int | None) -> int | None:
    """A physical address an ereport can carry (1 to 52 bits), else None."""
    if value is None or not 0 < value <= MAX_PHYSADDR:
        return None
    return value


@dataclass
class CperSection:
    """One section of a record: its kind and what its lines said."""

    index: int
    severity: str | None
    kind: str | None = None
    type_text: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    location: dict[str, int] = field(default_factory=dict)
    arm_errors: list[dict[str, Any]] = field(default_factory=list)
    in_context: bool = False


@dataclass
class CperRecord:
    """One GHES record being read, line by line."""

    source_id: int | None = None
    severity: str | None = None
    sections: list[CperSection] = field(default_factory=list)

    def add(self, body: str) -> None:
        """One line of the record (the text after its tag, stripped)."""
        header = HEADER.match(body)
        if header is not None:
            self.source_id = int(header.group(1))
            return
        severity = _SEVERITY.match(body)
        if severity is not None and not self.sections:
            self.severity = severity.group(1).lower()
            return
        opened = _SECTION.match(body)
        if opened is not None:
            self.sections.append(CperSection(int(opened.group(1)), opened.group(2).lower()))
            return
        if not self.sections:
            return  # prose before the first section ("It has been corrected by h/w ...")
        section = self.sections[-1]
        kind = _TYPE.match(body)
        if kind is not None and section.kind is None:
            text = kind.group(1).strip()
            section.type_text = clip(text)
            lowered = text.lower()
            section.kind = _KINDS.get(lowered) or (
                KIND_UNKNOWN if lowered.startswith(KIND_UNKNOWN) else _leaf(lowered)
            )
            return
        if _HEXDUMP.match(body):
            return
        if section.kind == KIND_ARM:
            _arm_line(section, body)
        else:
            _field_line(section, body, section.fields)

    def wire_objects(self, platform: Platform | None, when: str | None) -> list[dict[str, Any]]:
        """One wire object per section (none for a record without sections)."""
        out: list[dict[str, Any]] = []
        for section in self.sections:
            common: dict[str, Any] = {"cper_section": section.index}
            if self.source_id is not None:
                common["ghes_source"] = self.source_id
            severity = section.severity or self.severity
            if severity is not None:
                common["severity"] = severity
            fields = {k: v for k, v in section.fields.items() if k not in _RESERVED}
            if section.kind == KIND_MEMORY:
                out.append(_memory(platform, section, severity, when, common))
                continue
            payload = {**fields, **common}
            if section.notes:
                payload["notes"] = section.notes
            if section.kind == KIND_ARM:
                payload.update({"class": events.ARM_CLASS, "source": SOURCE})
                if section.arm_errors:
                    payload["errors"] = section.arm_errors
                if when is not None:
                    payload["time"] = when
                out.append(payload)
                continue
            if section.type_text:
                payload["section_type"] = section.type_text
            kind = section.kind or KIND_UNKNOWN
            out.append(events.firmware_section(kind, payload, time=when, source=SOURCE))
        return out


def _memory(
    platform: Platform | None,
    section: CperSection,
    severity: str | None,
    when: str | None,
    common: dict[str, Any],
) -> dict[str, Any]:
    """A memory section as a memory ereport on the DIMM it names."""
    f = section.fields
    label = f.get("dimm_location")
    if not isinstance(label, str) or label.startswith(_NOT_PRESENT):
        fru = f.get("fru_text")
        label = fru if isinstance(fru, str) else None
    address = f.get("physical_address")
    physaddr = int(address, 16) if isinstance(address, str) and address[:2] == "0x" else None
    message = f.get("error_type_name")
    obj = events.edac_memory(
        platform,
        err_type=_ERROR_TYPE.get((severity or "").lower(), severity or "unknown"),
        time=when,
        label=label,
        physaddr=payload_physaddr(physaddr),
        message=message if isinstance(message, str) else "",
        source=SOURCE,
    )
    obj.update(common)
    if section.location:
        obj["cper_location"] = dict(section.location)
    for name in ("error_status", "physical_address_mask", "error_type"):
        if name in f:
            obj[f"cper_{name}"] = f[name]
    return obj


def _field_line(section: CperSection, body: str, into: dict[str, Any]) -> None:
    """A ``key: value`` line (several ``name:n`` pairs: a memory location), else a note."""
    pairs = _LOCATION_PAIR.findall(body)
    if section.kind == KIND_MEMORY and len(pairs) > 1:
        for name, value in pairs:
            if len(section.location) < MAX_FIELDS:
                section.location[name] = min(int(value), MAX_PAYLOAD_INT)
        return
    kv = _KV.match(body)
    if kv is None:
        if len(section.notes) < MAX_NOTES:
            section.notes.append(clip(body))
        return
    key = _key(kv.group(1))
    if len(into) >= MAX_FIELDS or key in into:
        return
    value = kv.group(2).strip()
    numbered = _NUMBERED.match(value)
    if numbered is not None:
        into[key] = min(int(numbered.group(1)), MAX_PAYLOAD_INT)
        into[f"{key}_name"] = clip(numbered.group(2).strip())
        return
    paren = _PAREN_HEX.search(value)
    if paren is not None:
        into[key] = paren.group(1).lower()
        into[f"{key}_name"] = clip(value[: paren.start()].strip())
        return
    into[key] = _value(value)


def _arm_line(section: CperSection, body: str) -> None:
    """A line of an ARM processor error section."""
    entry = _ARM_ERROR_INFO.match(body)
    if entry is not None:
        section.in_context = False
        if len(section.arm_errors) < MAX_ARM_ERRORS:
            section.arm_errors.append({"index": int(entry.group(1))})
        return
    if _ARM_CONTEXT.match(body):
        section.in_context = True  # register dumps up to the next error-info structure
        return
    if section.in_context:
        return
    if body.startswith(_MPIDR):
        kv = _KV.match(body)
        if kv is not None and "mpidr" not in section.fields:
            section.fields["mpidr"] = _value(kv.group(2).strip())
        return
    into = section.arm_errors[-1] if section.arm_errors else section.fields
    _field_line(section, body, into)


def _key(text: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")[:64] or "field"
    return f"cper_{key}" if key in _RESERVED else key


def _leaf(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")[:48] or KIND_UNKNOWN


def _value(text: str) -> Any:
    """A field's value: hex registers stay ``0x`` strings, small decimals become numbers."""
    if _HEX_VALUE.fullmatch(text):
        return text.lower()
    if _DEC_VALUE.fullmatch(text):
        return int(text)
    return clip(text)
