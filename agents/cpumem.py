"""cpumem-diagnosis: SERD diagnosis of generic x86 CPU and memory ereports.

The Python counterpart of the illumos eft rules ``gcpu.esc`` and the generic
memory rules (illumos-fma.md sections 3.3 and 11).  It receives
``ereport.cpu.generic-x86.*`` and names faults from dictionary GMCA.

Life of one ereport::

    external, unknown, unrecognized leaf ----------------------> discarded (stat)
    CPU leaf --> fault class F, strand S
        S has an outstanding case ---------------------------> joined to it
        uncorrected or processor_context_corrupt ------------> case F@S solved now
        corrected (overflowed or not: counts once) -> serd F@S --fires--> case F@S
    mem_ue --> page P, DIMM D
        for P, then D: outstanding case ----------------------> joined to it
                       else -----------------------------------> page_ue / dimm_ue now
    mem_ce --> page P, DIMM D
        P outstanding ----------------------------------------> joined
        else serd page@P --fires--> page_ce case; P joins D's faulted pages
        D outstanding ----------------------------------------> joined
        else serd dimm@D --fires--> dimm_ce case
        D's faulted pages reach dimm_pages -------------------> dimm_ce case

"Outstanding" means the case a resource was last diagnosed in is still held
(``hdl.case_get`` finds it: solved or isolated, not yet repaired and resolved).
``hdl.specific["cases"]`` maps each resource key to that case's uuid, so while
a fault is outstanding no second diagnosis of the same resource is made.  The
resource keys are ``cpu@<strand path>``, ``page@<page address>`` and
``dimm@<DIMM path>``; one CPU fault per strand at a time, whatever its class.

SERD engine names, after eft's per-topology-node engines::

    serd.cpu.generic-x86.<fault leaf>@motherboard=0/chip=3/core=1/strand=0
    serd.memory.generic-x86.page_ce@physaddr=0x12345000
    serd.memory.generic-x86.dimm_ce@motherboard=0/chip=0/memory-controller=0/dram-channel=1/dimm=0

Decisions on the status bits: an uncorrected record (``error_uncorrected``, a
``_uc`` leaf or ``mem_ue``) or one with ``processor_context_corrupt`` faults
at once, as eft's ``setserdincrement(N+1)`` does.  An overflowed corrected
record counts once: the errors it lost cannot be counted, and counting them as
more would convict on guesses.  ``external`` and ``unknown`` are upsets and
are discarded even when uncorrected, as ``upset.discard`` does.  A memory
ereport whose DIMM cannot be told (no ``resource`` and no address decode) is
discarded: a page fault needs the DIMM as its unum.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Final

from fmd.case import Case
from fmd.config import PropSpec, PropType
from fmd.errors import ModuleApiError
from fmd.module import Plugin
from fmd.protocol import (
    CpuFmri,
    Ereport,
    FmriError,
    HcFmri,
    MemFmri,
    Pairs,
    Suspect,
    fmri_from_obj,
    hc_fmri,
)

if TYPE_CHECKING:
    from fmd.api import Handle
    from fmd.topo import TopoNode

CLASS_PREFIX: Final = "ereport.cpu.generic-x86."
CPU_FAULT: Final = "fault.cpu.generic-x86."
MEM_FAULT: Final = "fault.memory.generic-x86."
PAGE_SHIFT: Final = 12

# The simple gcpu codes that diagnose as fault.cpu.generic-x86.internal.
_INTERNAL_LEAVES: Final = frozenset(
    {
        "unclassified",
        "microcode_rom_parity",
        "frc",
        "internal_parity",
        "internal_timer",
        "internal_unclassified",
    }
)
_UPSET_LEAVES: Final = frozenset({"external", "unknown"})
_CACHE_RE: Final = re.compile(r"(l[012])?([id])?(cache|tlb)")
_BUS_RE: Final = re.compile(r"bus_interconnect(_memory|_io)?")


def cpu_fault(leaf: str) -> tuple[str, str] | None:
    """The fault leaf and property group (``cache``, ``gcache``, ``bus``,
    ``internal``) of a CPU ereport leaf; None for an upset or unknown leaf.

    ``_uc`` leaves map to the fault of their corrected leaf.
    """
    base = leaf.removesuffix("_uc")
    if base in _INTERNAL_LEAVES:
        return "internal", "internal"
    m = _CACHE_RE.fullmatch(base)
    if m is not None:
        return base, "cache" if m.group(1) else "gcache"
    if _BUS_RE.fullmatch(base) or base == "mc":
        return base, "bus"
    return None


def _time(name: str, default: str, what: str) -> PropSpec:
    return PropSpec(name, PropType.TIME, default, what)


def _count(name: str, default: str, what: str) -> PropSpec:
    return PropSpec(name, PropType.UINT32, default, what)


def _path(pairs: Pairs) -> str:
    return "/".join(f"{name}={inst}" for name, inst in pairs)


class CpumemDiagnosis(Plugin):
    """Diagnoses CPU caches, TLBs, internal and bus errors, memory pages and DIMMs."""

    name = "cpumem-diagnosis"
    version = "1.0"
    description = "generic x86 CPU and memory diagnosis (gcpu.esc rules)"
    subscriptions = ("ereport.cpu.generic-x86.*",)
    dictionaries = ("GMCA",)
    properties: ClassVar[tuple[PropSpec, ...]] = (
        _count("cache_n", "3", "SERD N for a cache or TLB at a specific level"),
        _time("cache_t", "72h", "SERD T for a cache or TLB at a specific level"),
        _count("gcache_n", "12", "SERD N for a generic-level cache or TLB"),
        _time("gcache_t", "72h", "SERD T for a generic-level cache or TLB"),
        _count("bus_n", "10", "SERD N for bus, interconnect and memory-controller errors"),
        _time("bus_t", "72h", "SERD T for bus, interconnect and memory-controller errors"),
        _count("internal_n", "3", "SERD N for internal CPU errors"),
        _time("internal_t", "72h", "SERD T for internal CPU errors"),
        _count("page_n", "2", "SERD N for corrected errors on one memory page"),
        _time("page_t", "72h", "SERD T for corrected errors on one memory page"),
        _count("dimm_n", "10", "SERD N for corrected errors on one DIMM"),
        _time("dimm_t", "1week", "SERD T for corrected errors on one DIMM"),
        _count("dimm_pages", "64", "faulted pages that make their DIMM faulty"),
    )

    def __init__(self) -> None:
        self._index: dict[Pairs, TopoNode] | None = None

    # -- dispatch ------------------------------------------------------------
    def recv(self, hdl: Handle, event: Any) -> None:
        if not isinstance(event, Ereport) or not event.cls.startswith(CLASS_PREFIX):
            return
        leaf = event.cls.removeprefix(CLASS_PREFIX)
        if leaf in ("mem_ce", "mem_ue"):
            self._memory(hdl, event, uncorrected=leaf == "mem_ue")
            return
        fault = cpu_fault(leaf)
        if fault is None:
            if leaf in _UPSET_LEAVES:
                hdl.stat("upsets", "external and unknown ereports discarded as upsets").incr()
            else:
                hdl.stat("unrecognized", "ereports of a leaf this module does not know").incr()
            return
        self._cpu(hdl, event, leaf, *fault)

    # -- CPU -----------------------------------------------------------------
    def _cpu(self, hdl: Handle, ev: Ereport, leaf: str, fault: str, group: str) -> None:
        strand = ev.detector
        if not isinstance(strand, HcFmri):
            hdl.stat("no_detector", "CPU ereports without an hc detector").incr()
            return
        spath = _path(strand.hc_list)
        key = f"cpu@{spath}"
        if self._join(hdl, key, ev):
            return
        p = ev.payload
        immediate = (
            leaf.endswith("_uc")
            or bool(p.get("error_uncorrected"))
            or bool(p.get("processor_context_corrupt"))
        )
        engine = f"serd.cpu.generic-x86.{fault}@{spath}"
        if not immediate:
            if not hdl.serd_exists(engine):
                hdl.serd_create(
                    engine, hdl.props.get_int(f"{group}_n"), hdl.props.get_time_ns(f"{group}_t")
                )
            if not hdl.serd_record(engine, ev):
                return
        node = self._node(hdl, strand.hc_list)
        cpuid = p.get("cpuid")
        asru: CpuFmri | None = None
        if isinstance(cpuid, int) and not isinstance(cpuid, bool):
            asru = CpuFmri(cpuid=cpuid)
        elif node is not None and isinstance(node.asru, CpuFmri):
            asru = node.asru
        if node is not None:
            chip, label = node.fru, node.label
        else:
            chip = self._chip_of(hdl, strand)
            label = hdl.topo.label_of(chip)
        bus = group == "bus"
        suspect = hdl.create_fault(
            CPU_FAULT + fault,
            100,
            asru=asru,
            fru=chip,
            resource=strand,
            location=label,
            retire=not bus,
            response=not bus,
        )
        self._diagnose(hdl, key, ev, engine, suspect, "cpu")

    @staticmethod
    def _chip_of(hdl: Handle, strand: HcFmri) -> HcFmri:
        pairs: list[tuple[str, str]] = []
        for name, inst in strand.hc_list:
            pairs.append((name, inst))
            if name == "chip":
                break
        return hc_fmri(strand.authority, *pairs)

    # -- memory --------------------------------------------------------------
    def _memory(self, hdl: Handle, ev: Ereport, *, uncorrected: bool) -> None:
        p = ev.payload
        physaddr = p.get("physaddr")
        if not isinstance(physaddr, int) or isinstance(physaddr, bool) or physaddr < 0:
            hdl.stat("mem_unresolved", "memory ereports with no usable address or DIMM").incr()
            return
        dimm = self._dimm_of(hdl, p.get("resource"), physaddr)
        if dimm is None:
            hdl.stat("mem_unresolved", "memory ereports with no usable address or DIMM").incr()
            return
        uncorrected = uncorrected or bool(p.get("error_uncorrected"))
        dimm_fmri, dimm_asru, label, rank = dimm
        page = (physaddr >> PAGE_SHIFT) << PAGE_SHIFT
        page_key, dimm_key = f"page@{page:#x}", f"dimm@{dimm_asru.unum}"
        page_engine = f"serd.memory.generic-x86.page_ce@physaddr={page:#x}"
        dimm_engine = f"serd.memory.generic-x86.dimm_ce@{dimm_asru.unum}"
        kind = "ue" if uncorrected else "ce"

        def page_suspect() -> Suspect:
            asru = MemFmri(unum=dimm_asru.unum, serial=dimm_asru.serial, physaddr=page)
            return hdl.create_fault(
                f"{MEM_FAULT}page_{kind}",
                100,
                asru=asru,
                fru=dimm_fmri,
                resource=rank,
                location=label,
                message=False,
            )

        page_fired = False
        if not self._join(hdl, page_key, ev):
            page_fired = uncorrected or self._serd(hdl, page_engine, "page", ev)
            if page_fired:
                self._diagnose(hdl, page_key, ev, page_engine, page_suspect(), "page")
        if self._join(hdl, dimm_key, ev):
            # The DIMM is already faulted: its pages are not counted towards it again.
            return
        pages = self._pages(hdl, dimm_asru.unum)
        if page_fired and page not in pages:
            pages.append(page)
        fired = uncorrected or self._serd(hdl, dimm_engine, "dimm", ev)
        limit = hdl.props.get_int("dimm_pages")
        if not fired and limit > 0 and len(pages) >= limit:
            fired = True
            hdl.stat("dimm_by_pages", "DIMMs faulted for their count of faulted pages").incr()
        if fired:
            suspect = hdl.create_fault(
                f"{MEM_FAULT}dimm_{kind}",
                100,
                asru=dimm_asru,
                fru=dimm_fmri,
                resource=dimm_fmri,
                location=label,
            )
            self._diagnose(hdl, dimm_key, ev, dimm_engine, suspect, "dimm")
            hdl.specific["dimm_pages"].pop(dimm_asru.unum, None)

    @staticmethod
    def _serd(hdl: Handle, engine: str, group: str, ev: Ereport) -> bool:
        if not hdl.serd_exists(engine):
            hdl.serd_create(
                engine, hdl.props.get_int(f"{group}_n"), hdl.props.get_time_ns(f"{group}_t")
            )
        return hdl.serd_record(engine, ev)

    @staticmethod
    def _pages(hdl: Handle, unum: str) -> list[int]:
        pages: list[int] = hdl.specific.setdefault("dimm_pages", {}).setdefault(unum, [])
        return pages

    def _dimm_of(
        self, hdl: Handle, resource: Any, physaddr: int
    ) -> tuple[HcFmri, MemFmri, str | None, HcFmri] | None:
        """(DIMM hc FMRI, DIMM mem FMRI, label, rank hc FMRI) of a memory ereport."""
        if isinstance(resource, list):
            resource = resource[0] if resource else None
        rank: HcFmri | None = None
        if resource is not None:
            try:
                fmri = fmri_from_obj(resource)
            except (FmriError, TypeError, ValueError):
                fmri = None
            if isinstance(fmri, HcFmri):
                rank = fmri
        if rank is None:
            rank = hdl.topo.decode_address(physaddr)
        if rank is None:
            return None
        pairs = rank.hc_list
        if pairs and pairs[-1][0] == "rank":
            pairs = pairs[:-1]
        node = self._node(hdl, pairs)
        if node is not None:
            asru = node.asru if isinstance(node.asru, MemFmri) else MemFmri(unum=_path(pairs))
            return node.fmri, asru, node.label, rank
        dimm = hc_fmri(rank.authority, *pairs)
        return dimm, MemFmri(unum=_path(pairs)), hdl.topo.label_of(dimm), rank

    # -- cases ---------------------------------------------------------------
    @staticmethod
    def _join(hdl: Handle, key: str, ev: Ereport) -> bool:
        """Add the ereport to the resource's outstanding case, if it has one."""
        cases: dict[str, str] = hdl.specific.setdefault("cases", {})
        uuid = cases.get(key)
        if uuid is None:
            return False
        case = hdl.case_get(uuid)
        if case is None:
            # Repaired and resolved: the resource may be diagnosed afresh.
            del cases[key]
            return False
        if ev.id not in case.events:
            hdl.case_add_ereport(case, ev)
        hdl.stat("joined", "ereports added to an outstanding case").incr()
        return True

    @staticmethod
    def _diagnose(
        hdl: Handle, key: str, ev: Ereport, engine: str, suspect: Suspect, kind: str
    ) -> Case:
        """Open, fill and solve a case for one resource; reset its engine."""
        case = hdl.case_open()
        if hdl.serd_exists(engine):
            hdl.case_add_serd(case, engine)
            hdl.serd_reset(engine)
        if ev.id not in case.events:
            hdl.case_add_ereport(case, ev)
        hdl.case_add_suspect(case, suspect)
        hdl.case_solve(case)
        hdl.specific.setdefault("cases", {})[key] = case.uuid
        hdl.stat(f"cases_{kind}", f"{kind} faults diagnosed").incr()
        hdl.log.info("cpumem_diagnosed", uuid=case.uuid, fault=suspect.cls, resource=key)
        return case

    # -- topology ------------------------------------------------------------
    def _node(self, hdl: Handle, pairs: Pairs) -> TopoNode | None:
        if self._index is None:
            try:
                self._index = {n.fmri.hc_list: n for n in hdl.topo.nodes()}
            except ModuleApiError:
                self._index = {}
        return self._index.get(pairs)
