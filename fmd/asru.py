"""The resource cache as operators see it: which cases name a resource, what
state each suspect is in, and which suspects an ``fmadm`` argument selects.

fmd keeps one suspect row per (case, suspect) with its fault-status bits
(``FAULT_*`` in :mod:`fmd.protocol.events`), written with the owning module's
checkpoints.  This module turns those rows into the view of ``fmadm faulty``
and resolves the operand of ``fmadm repaired|replaced|acquit|flush``: an
ASRU, FRU or resource FMRI (hc FMRIs match with or without their authority)
or a FRU label such as ``CPU 3``.

Status texts (the reference's tables)::

    ASRU bits           text
    none                ok and in service
    DEGRADED            service degraded, but associated components no longer faulty
    FAULTY+DEGRADED     faulted but still providing degraded service
    FAULTY              faulted but still in service
    UNUSABLE            out of service, but associated components no longer faulty
    FAULTY+UNUSABLE     faulted and taken out of service

    FRU: not present, faulty, replaced, repair attempted, acquitted, removed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fmd.errors import FmriError
from fmd.protocol import (
    FAULT_ACQUITTED,
    FAULT_DEGRADED,
    FAULT_FAULTY,
    FAULT_NOT_PRESENT,
    FAULT_REPAIRED,
    FAULT_REPLACED,
    FAULT_UNUSABLE,
    HcFmri,
    parse_fmri,
)
from fmd.states import CaseFlag

# fmadm verbs -> the FAULT_* bit recorded on the suspects they repair.
REASONS: Mapping[str, int] = {
    "repaired": FAULT_REPAIRED,
    "replaced": FAULT_REPLACED,
    "acquit": FAULT_ACQUITTED,
    "flush": FAULT_REPAIRED,
}

# Severity order for fmadm faulty (most severe first).
_SEVERITY_RANK = {"Critical": 0, "Major": 1, "Minor": 2}


def asru_status(bits: int) -> str:
    """The ``Affects`` status text of a suspect's fault-status bits."""
    faulty = bool(bits & FAULT_FAULTY)
    if bits & FAULT_UNUSABLE:
        if faulty:
            return "faulted and taken out of service"
        return "out of service, but associated components no longer faulty"
    if bits & FAULT_DEGRADED:
        if faulty:
            return "faulted but still providing degraded service"
        return "service degraded, but associated components no longer faulty"
    if faulty:
        return "faulted but still in service"
    return "ok and in service"


def fru_status(bits: int) -> str:
    """The ``FRU`` status text of a suspect's fault-status bits."""
    if bits & FAULT_NOT_PRESENT:
        return "not present"
    if bits & FAULT_FAULTY:
        return "faulty"
    if bits & FAULT_REPLACED:
        return "replaced"
    if bits & FAULT_REPAIRED:
        return "repair attempted"
    if bits & FAULT_ACQUITTED:
        return "acquitted"
    return "removed"


def repair_reason(bits: int) -> str | None:
    """What ``fmdump -v`` appends to a suspect that is no longer faulty (Removed,
    Replaced, Repair Attempted, Acquitted), else None."""
    if bits & FAULT_FAULTY:
        return None
    if bits & FAULT_NOT_PRESENT:
        return "Removed"
    if bits & FAULT_REPLACED:
        return "Replaced"
    if bits & FAULT_REPAIRED:
        return "Repair Attempted"
    if bits & FAULT_ACQUITTED:
        return "Acquitted"
    return None


def cache_reason(bits: int) -> str | None:
    """The administrative reason the resource cache records for a suspect:
    replaced, repaired or acquitted, else None."""
    if bits & FAULT_REPLACED:
        return "replaced"
    if bits & FAULT_REPAIRED:
        return "repaired"
    if bits & FAULT_ACQUITTED:
        return "acquitted"
    return None


def rsrc_status(bits: int) -> str:
    """The one-word state of ``fmadm faulty -r``: ok, degraded, unknown or faulted."""
    if bits & FAULT_FAULTY and bits & FAULT_UNUSABLE:
        return "faulted"
    if bits & FAULT_UNUSABLE:
        return "unknown"
    if bits & FAULT_DEGRADED or bits & FAULT_FAULTY:
        return "degraded"
    return "ok"


def normalize_fmri(text: str) -> str:
    """A comparable form of an FMRI string: hc FMRIs lose their authority."""
    text = text.strip()
    try:
        fmri = parse_fmri(text)
    except FmriError:
        return text
    if isinstance(fmri, HcFmri):
        return fmri.model_copy(update={"authority": ()}).to_string()
    return fmri.to_string()


def looks_like_fmri(text: str) -> bool:
    return "://" in text


@dataclass(frozen=True, slots=True)
class Selection:
    """The suspects an fmadm operand selects: case uuid -> suspect indexes."""

    by_case: dict[str, list[int]]

    def __bool__(self) -> bool:
        return bool(self.by_case)


def select_suspects(
    cases: Iterable[Mapping[str, Any]], target: str, uuid: str | None = None
) -> Selection:
    """The suspects whose ASRU, FRU or resource is ``target`` (an FMRI) or whose
    FRU label is ``target``, in case ``uuid`` only when given."""
    fmri = normalize_fmri(target) if looks_like_fmri(target) else None
    found: dict[str, list[int]] = {}
    for case in cases:
        if uuid is not None and case["uuid"] != uuid:
            continue
        for s in case["suspects"]:
            if fmri is not None:
                hit = any(
                    s.get(k) and normalize_fmri(str(s[k])) == fmri
                    for k in ("asru", "fru", "resource")
                )
            else:
                hit = s.get("location") == target
            if hit:
                found.setdefault(case["uuid"], []).append(int(s["idx"]))
    return Selection(found)


def is_visible(case: Mapping[str, Any]) -> bool:
    """Shown by plain ``fmadm faulty``: a visible message and a faulty suspect."""
    invisible = int(case.get("flags", 0)) & CaseFlag.INVISIBLE
    return not invisible and any(int(s["status"]) & FAULT_FAULTY for s in case["suspects"])


def sort_key(case: Mapping[str, Any]) -> tuple[int, int, int]:
    """Severity (Critical first), then diagnosis time, then certainty (highest first)."""
    rank = _SEVERITY_RANK.get(str(case.get("severity") or ""), 3)
    certainty = max((int(s["certainty"]) for s in case["suspects"]), default=0)
    return rank, int(case.get("diag_time_ns") or 0), -certainty
