"""Errors the kernel reports already digested, as wire ereports: one builder per kind.

The host sources (tracefs, the kernel log, EDAC counters, a rasdaemon database)
meet the same few kinds of report in different clothes: an EDAC memory
controller event, the kernel's memory-failure action on a page, a PCIe AER
error, a thermal throttling event, a firmware (CPER) section.  Each builder
here takes the facts by name and returns the wire object (``{"class": ...,
"time": ..., "detector": ..., <payload>}``) that :class:`fmd.xprt.Ingest`
decodes, so every source names and shapes them alike.

Classes::

    ereport.cpu.generic-x86.mem_ce | mem_ue   EDAC/firmware memory errors (diagnosed
                                              by cpumem-diagnosis, like decoded MCA ones)
    ereport.os.linux.memory_failure           the kernel's action on a page (recorded)
    ereport.io.pcie.aer.{ce,nonfatal,fatal}   PCIe AER (stored, not diagnosed yet)
    ereport.cpu.generic-x86.thermal           core/package over temperature (logged)
    ereport.cpu.arm.error                     ARM processor error sections (stored)
    ereport.fw.cper.<kind>                    other firmware sections (stored)

Memory reports are attributed to their DIMM through the platform
(:func:`dimm_of`): by FRU label first (EDAC's label is what the board's
silkscreen says, when configured), then by the EDAC position (controller,
then channel and DIMM as the driver's layer names say: (channel, slot) on
sbridge/skx/i10nm, (csrow, channel) on amd64_edac).  The DIMM's hc FMRI is the
ereport's ``resource`` and its detector.  A report built where no platform is
known (``fminject --format kernel``) carries the EDAC members only, and
:class:`fmd.xprt.Ingest` resolves its DIMM the same way
(:func:`dimm_of_payload`) before storing it.  A report whose DIMM cannot be
told is still stored (without ``resource``); the diagnosis counts it as
unresolved.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final

from fmd.hw.mca import MEM_CE_CLASS, MEM_UE_CLASS
from fmd.hw.topo import Platform
from fmd.protocol import HcFmri

MEMORY_FAILURE_CLASS: Final = "ereport.os.linux.memory_failure"
AER_CLASS_PREFIX: Final = "ereport.io.pcie.aer."
THERMAL_CLASS: Final = "ereport.cpu.generic-x86.thermal"
ARM_CLASS: Final = "ereport.cpu.arm.error"
CPER_CLASS_PREFIX: Final = "ereport.fw.cper."

PAGE_SHIFT: Final = 12

# EDAC error types (the tracepoint's and rasdaemon's words) that are corrected.
_CORRECTED: Final = frozenset({"corrected", "ce", "info"})
# ... and those that are not (Deferred is uncorrected but not yet consumed).
_UNCORRECTED: Final = frozenset({"uncorrected", "ue", "fatal", "deferred"})

# EDAC's layer names (edac_layer_name[] in drivers/edac/edac_mc.c).
LAYER_BRANCH: Final = "branch"
LAYER_CHANNEL: Final = "channel"
LAYER_SLOT: Final = "slot"
LAYER_CSROW: Final = "csrow"
LAYER_MEMORY: Final = "memory"
EDAC_LAYER_NAMES: Final = frozenset(
    {LAYER_BRANCH, LAYER_CHANNEL, LAYER_SLOT, LAYER_CSROW, LAYER_MEMORY}
)
# What layers without names are taken to be.
_DEFAULT_LAYERS: Final = (LAYER_CHANNEL, LAYER_SLOT)
# Chip selects per DIMM, as amd64_edac counts csrows (one per rank, two ranks).
_CSROW_SHIFT: Final = 1
_DEFAULT_LABEL: Final = re.compile(r"mc#\d{1,5}((?:[a-z]{1,16}#\d{1,5}){1,3})")
_DEFAULT_LABEL_LAYER: Final = re.compile(r"([a-z]+)#\d+")
_DIMM_TAIL: Final = ("memory-controller", "dram-channel", "dimm")


# memory_failure_event action results, as the kernel names them.
MF_RESULTS: Final = ("Ignored", "Failed", "Delayed", "Recovered")

# AER severities -> class leaf.
_AER_LEAF: Final = {
    "corrected": "ce",
    "ce": "ce",
    "uncorrected (non-fatal)": "nonfatal",
    "uncorrected, non-fatal": "nonfatal",
    "non-fatal": "nonfatal",
    "nonfatal": "nonfatal",
    "uncorrected (fatal)": "fatal",
    "fatal": "fatal",
}


def is_corrected(err_type: str) -> bool | None:
    """True for a corrected EDAC error type, False for an uncorrected one, None if unknown."""
    word = err_type.strip().lower()
    if word in _CORRECTED:
        return True
    if word in _UNCORRECTED:
        return False
    return None


def layer_names_of_label(label: str | None) -> tuple[str, ...] | None:
    """The layer names a default EDAC label spells out, or None.

    A DIMM no one labelled is named by the EDAC core after its position:
    ``mc#<n>`` and each layer's ``<name>#<n>`` (``mc#0csrow#1channel#0`` on
    amd64_edac), so the label says how the driver lays its layers out even
    where the report itself does not (the ``ras:mc_event`` tracepoint, a
    rasdaemon row).
    """
    if not label:
        return None
    found = _DEFAULT_LABEL.fullmatch(label.strip())
    if found is None:
        return None
    names = tuple(_DEFAULT_LABEL_LAYER.findall(found.group(1)))
    return names if set(names) <= EDAC_LAYER_NAMES else None


def dimm_of(
    platform: Platform | None,
    *,
    label: str | None = None,
    mc: int | None = None,
    layers: Sequence[int] = (),
    layer_names: Sequence[str] | None = None,
) -> HcFmri | None:
    """The DIMM a memory report names: by FRU label, else by EDAC position.

    ``layers`` are EDAC's top/middle/lower layer numbers (-1 = not used) and
    ``layer_names`` what each of them is (EDAC's words: ``channel``, ``slot``,
    ``csrow``, ``branch``, ``memory``).  Without names they are taken from a
    default label (:func:`layer_names_of_label`), else read as (channel, slot),
    the layout of the drivers that name channels and slots (sbridge, skx,
    i10nm, and the ``ras:mc_event`` tracepoint, which carries no names).

    The position is (controller ``mc``, channel, DIMM): a ``slot`` is the DIMM
    of its channel; a ``csrow`` is a chip select, two to a DIMM (amd64_edac),
    so DIMM = csrow >> 1.  A layout without a channel and a DIMM (ghes_edac's
    single ``memory`` layer, a ``branch`` whose channel numbering fmd cannot
    know) names no DIMM by position.  EDAC numbers its controllers across the
    machine, socket after socket; ``mc`` is the platform's ``mc``-th memory
    controller in (chip, controller) order.  Labels that EDAC joins with
    ``" or "`` (a location it cannot narrow down) name no single DIMM.
    """
    if platform is None:
        return None
    if label and " or " not in label:
        found = platform.find_by_label(label)
        if len(found) == 1:
            return found[0]
    if mc is None or mc < 0:
        return None
    names = tuple(layer_names) if layer_names else layer_names_of_label(label)
    where = _position(layers, names if names else _DEFAULT_LAYERS)
    if where is None:
        return None
    controllers = _controllers(platform)
    if mc >= len(controllers):
        return None
    return controllers[mc].get(where)


def _position(layers: Sequence[int], names: Sequence[str]) -> tuple[int, int] | None:
    """(channel, DIMM of the channel) from EDAC layers and their names, or None."""
    found: dict[str, int] = {}
    for name, n in zip(names, layers, strict=False):
        if type(n) is int and n >= 0:
            found.setdefault(name, n)
    if LAYER_BRANCH in found or LAYER_CHANNEL not in found:
        return None
    if LAYER_SLOT in found:
        return found[LAYER_CHANNEL], found[LAYER_SLOT]
    if LAYER_CSROW in found:
        return found[LAYER_CHANNEL], found[LAYER_CSROW] >> _CSROW_SHIFT
    return None


# Per platform: its memory controllers in (chip, controller) order, each a map
# (channel, dimm) -> the DIMM's hc FMRI.
_CONTROLLERS: weakref.WeakKeyDictionary[Any, list[dict[tuple[int, int], HcFmri]]] = (
    weakref.WeakKeyDictionary()
)


def _controllers(platform: Platform) -> list[dict[tuple[int, int], HcFmri]]:
    found = _CONTROLLERS.get(platform)
    if found is not None:
        return found
    by_controller: dict[tuple[tuple[str, int | str], ...], dict[tuple[int, int], HcFmri]] = {}
    for node in platform.nodes():
        pairs = node.fmri.hc_list
        if len(pairs) < len(_DIMM_TAIL) or tuple(n for n, _ in pairs[-3:]) != _DIMM_TAIL:
            continue
        try:
            channel, dimm = int(pairs[-2][1]), int(pairs[-1][1])
        except ValueError:
            continue
        key = tuple((name, _sortable(value)) for name, value in pairs[:-2])
        by_controller.setdefault(key, {})[(channel, dimm)] = node.fmri
    found = [by_controller[k] for k in sorted(by_controller, key=_controller_order)]
    _CONTROLLERS[platform] = found
    return found


def _sortable(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _controller_order(key: tuple[tuple[str, int | str], ...]) -> tuple[tuple[str, int, str], ...]:
    # Numbers before names, numbers by value: chip 2 before chip 10.
    return tuple((name, v, "") if isinstance(v, int) else (name, -1, v) for name, v in key)


def dimm_of_payload(platform: Platform | None, payload: Mapping[str, Any]) -> HcFmri | None:
    """The DIMM an EDAC or firmware memory ereport names by its members, or None.

    Reads what :func:`edac_memory` writes (``edac_label``, ``edac_mc``,
    ``edac_location``, ``edac_layer_names``) from a payload that came over the
    wire: members of the wrong type are ignored, never an error.
    """
    if platform is None:
        return None
    label = payload.get("edac_label")
    mc = payload.get("edac_mc")
    location = payload.get("edac_location")
    names = payload.get("edac_layer_names")
    layers: list[int] = []
    if isinstance(location, list) and all(type(n) is int for n in location):
        layers = location
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None
    return dimm_of(
        platform,
        label=label if isinstance(label, str) else None,
        mc=mc if type(mc) is int else None,
        layers=layers,
        layer_names=names,
    )


def edac_memory(
    platform: Platform | None,
    *,
    err_type: str,
    time: int | str | None,
    mc: int | None = None,
    layers: Sequence[int] = (),
    label: str | None = None,
    physaddr: int | None = None,
    grain: int | None = None,
    syndrome: int | None = None,
    count: int = 1,
    message: str = "",
    detail: str = "",
    source: str = "edac",
    layer_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A memory ereport from an EDAC report (tracepoint, kernel log line, counter).

    ``layer_names`` say what ``layers`` are where the report tells
    (:func:`dimm_of`); they are kept as ``edac_layer_names``.
    """
    corrected = is_corrected(err_type)
    obj: dict[str, Any] = {
        "class": MEM_CE_CLASS if corrected is not False else MEM_UE_CLASS,
        "edac_error_type": err_type,
        "error_count": count,
        "source": source,
    }
    if time is not None:
        obj["time"] = time
    if corrected is False:
        obj["error_uncorrected"] = True
    dimm = dimm_of(platform, label=label, mc=mc, layers=layers, layer_names=layer_names)
    if dimm is not None:
        text = dimm.to_string()
        obj["resource"] = text
        obj["detector"] = text
    if mc is not None:
        obj["edac_mc"] = mc
    if layers:
        obj["edac_location"] = [int(n) for n in layers]
    if layer_names:
        obj["edac_layer_names"] = list(layer_names)
    if label:
        obj["edac_label"] = label
    if physaddr is not None and physaddr > 0:
        obj["physaddr"] = physaddr
    if grain is not None:
        obj["grain"] = grain
    if syndrome is not None:
        obj["syndrome"] = syndrome
    if message:
        obj["message"] = message
    if detail:
        obj["driver_detail"] = detail
    return obj


def memory_failure(
    *, pfn: int, page_type: str, result: str, time: int | str | None, source: str = "kernel"
) -> dict[str, Any]:
    """The kernel's memory-failure handling of one page (it has already acted)."""
    obj: dict[str, Any] = {
        "class": MEMORY_FAILURE_CLASS,
        "pfn": pfn,
        "physaddr": pfn << PAGE_SHIFT,
        "page_type": page_type,
        "action_result": result,
        "source": source,
    }
    if time is not None:
        obj["time"] = time
    return obj


def aer(
    *, dev_name: str, severity: str, message: str, time: int | str | None, source: str = "kernel"
) -> dict[str, Any]:
    """A PCIe AER error (stored; no engine diagnoses PCIe yet)."""
    leaf = _AER_LEAF.get(severity.strip().lower(), "unknown")
    obj: dict[str, Any] = {
        "class": AER_CLASS_PREFIX + leaf,
        "device": dev_name,
        "severity": severity,
        "message": message,
        "source": source,
    }
    if time is not None:
        obj["time"] = time
    return obj


def thermal(
    platform: Platform | None,
    *,
    cpu: int,
    scope: str,
    time: int | str | None,
    source: str = "kernel",
) -> dict[str, Any]:
    """A CPU over-temperature event (``scope`` core or package): logged, not a fault."""
    obj: dict[str, Any] = {"class": THERMAL_CLASS, "cpuid": cpu, "scope": scope, "source": source}
    if platform is not None:
        with contextlib.suppress(LookupError):
            obj["detector"] = platform.cpu_to_hc(cpu).to_string()
    if time is not None:
        obj["time"] = time
    return obj


def firmware_section(
    kind: str, payload: dict[str, Any], *, time: int | str | None, source: str = "kernel"
) -> dict[str, Any]:
    """A firmware (CPER) error section fmd stores without diagnosing it."""
    leaf = "".join(c if c.isalnum() or c in "-_" else "_" for c in kind.strip().lower()) or "other"
    obj: dict[str, Any] = {"class": CPER_CLASS_PREFIX + leaf, "source": source, **payload}
    if time is not None:
        obj["time"] = time
    return obj


def arm_processor(
    platform: Platform | None,
    *,
    cpu: int | None,
    severity: str,
    facts: dict[str, Any],
    time: int | str | None,
    source: str = "kernel",
) -> dict[str, Any]:
    """An ARM processor error (UEFI CPER ARM section): stored, not diagnosed yet.

    ``facts`` are the section's members by name (``mpidr``, ``midr``,
    ``affinity_level``, ``error_info``, ...); ``cpu`` is the logical CPU the
    kernel matched the section to, when it says (-1 or None: unknown).
    """
    obj: dict[str, Any] = {"class": ARM_CLASS, "severity": severity, "source": source, **facts}
    if cpu is not None and cpu >= 0:
        obj["cpuid"] = cpu
        if platform is not None:
            with contextlib.suppress(LookupError):
                obj["detector"] = platform.cpu_to_hc(cpu).to_string()
    if time is not None:
        obj["time"] = time
    return obj
