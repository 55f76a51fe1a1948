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
        D outstanding (and not pages_under_dimm) -------------> joined to D's case
        P outstanding ----------------------------------------> joined
        else serd page@P --fires--> page_ce case; P joins D's faulted pages
        D outstanding ----------------------------------------> joined
        else serd dimm@D --fires--> dimm_ce case
        D's faulted pages reach dimm_pages -------------------> dimm_ce case
    mem_ce/mem_ue with a usable physaddr, DIMM unknown --> page P alone
        P outstanding ----------------------------------------> joined
        mem_ue -----------------------------------------------> page_ue now
        mem_ce --> serd page@P --fires------------------------> page_ce case
    mem_ce/mem_ue without a usable physaddr, DIMM D named by resource
        D outstanding ----------------------------------------> joined
        mem_ue -----------------------------------------------> dimm_ue now
        mem_ce --> serd dimm@D --fires------------------------> dimm_ce case
    mem_ce/mem_ue with neither a usable physaddr nor a DIMM --> discarded (stat)
    memory_failure (the kernel acted on page P)
        P outstanding ----------------------------------------> joined
        else -------------------------------------------------> counted, nothing opened

Storms: a DIMM diagnosed faulty covers its pages — a correctable-error storm on
it (a bad pin, a failing rank) joins the DIMM's case, one O(1) step per
ereport, instead of opening a case, SERD engine and page retire for every page
it touches; ``pages_under_dimm`` keeps diagnosing (and so retiring) pages
under a faulty DIMM.  An uncorrected error still faults its page (a page that
may hold poisoned data must be retired), under a faulty DIMM too.

"Outstanding" means the case a resource was last diagnosed in is still held
(``hdl.case_get`` finds it: solved or isolated, not yet repaired and resolved).
``hdl.specific["cases"]`` maps each resource key to that case's uuid, so while
a fault is outstanding no second diagnosis of the same resource is made.  The
resource keys are ``cpu@<strand path>``, ``page@<page address>`` and
``dimm@<DIMM path>``; one CPU fault per strand at a time, whatever its class.
That bookkeeping, the SERD engines' creation and the suspects' ASRU, FRU,
resource and location are :mod:`agents.diagnosis`, shared with
:mod:`agents.amd`.

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
ereport with a usable address whose DIMM cannot be told (no ``resource`` and
no address decode: a virtual machine, a host without EDAC memory topology) is
diagnosed on its page alone (``page_only``): the same page engine and
immediate uncorrected faults, a suspect whose ASRU is the page under the unum
``unknown`` with no FRU, and no DIMM engine or DIMM page count, since no DIMM
can be blamed.  The page is still worth retiring, and its case takes the later
errors and the kernel's ``memory_failure`` reports of that page.  One with no
usable address but a ``resource`` naming its DIMM (a memory error the bank
located by channel and DIMM, an EDAC report without a page) feeds only the
DIMM's engine, the same one its page-addressed errors feed: there is no page
to count or retire (``dimm_only``).  One with neither is discarded
(``mem_unresolved``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Final

from agents.diagnosis import (
    PageTarget,
    Topology,
    count_prop,
    diagnose,
    dimm_suspect,
    join,
    page_key,
    page_of,
    page_only_suspect,
    page_suspect,
    serd_record,
    time_prop,
    usable_physaddr,
)
from fmd.config import PropSpec, PropType
from fmd.hw.events import MEMORY_FAILURE_CLASS
from fmd.module import Plugin
from fmd.protocol import Ereport

if TYPE_CHECKING:
    from fmd.api import Handle

CLASS_PREFIX: Final = "ereport.cpu.generic-x86."
CPU_FAULT: Final = "fault.cpu.generic-x86."
MEM_FAULT: Final = "fault.memory.generic-x86."
LOG_EVENT: Final = "cpumem_diagnosed"

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


class CpumemDiagnosis(Plugin):
    """Diagnoses CPU caches, TLBs, internal and bus errors, memory pages and DIMMs."""

    name = "cpumem-diagnosis"
    version = "1.0"
    description = "generic x86 CPU and memory diagnosis (gcpu.esc rules)"
    subscriptions = ("ereport.cpu.generic-x86.*", MEMORY_FAILURE_CLASS)
    dictionaries = ("GMCA",)
    properties: ClassVar[tuple[PropSpec, ...]] = (
        count_prop("cache_n", "3", "SERD N for a cache or TLB at a specific level"),
        time_prop("cache_t", "72h", "SERD T for a cache or TLB at a specific level"),
        count_prop("gcache_n", "12", "SERD N for a generic-level cache or TLB"),
        time_prop("gcache_t", "72h", "SERD T for a generic-level cache or TLB"),
        count_prop("bus_n", "10", "SERD N for bus, interconnect and memory-controller errors"),
        time_prop("bus_t", "72h", "SERD T for bus, interconnect and memory-controller errors"),
        count_prop("internal_n", "3", "SERD N for internal CPU errors"),
        time_prop("internal_t", "72h", "SERD T for internal CPU errors"),
        count_prop("page_n", "2", "SERD N for corrected errors on one memory page"),
        time_prop("page_t", "72h", "SERD T for corrected errors on one memory page"),
        count_prop("dimm_n", "10", "SERD N for corrected errors on one DIMM"),
        time_prop("dimm_t", "1week", "SERD T for corrected errors on one DIMM"),
        count_prop("dimm_pages", "64", "faulted pages that make their DIMM faulty"),
        PropSpec(
            "pages_under_dimm",
            PropType.BOOL,
            "false",
            "Keep diagnosing (and so retiring) pages of a DIMM already diagnosed faulty; by "
            "default the DIMM's fault covers its pages and their errors join its case.",
        ),
    )

    def __init__(self) -> None:
        self._topo = Topology()

    # -- dispatch ------------------------------------------------------------
    def recv(self, hdl: Handle, event: Any) -> None:
        if isinstance(event, Ereport) and event.cls == MEMORY_FAILURE_CLASS:
            self._kernel_action(hdl, event)
            return
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
        target = self._topo.cpu_target(hdl, ev)
        if target is None:
            return
        p = ev.payload
        immediate = (
            leaf.endswith("_uc")
            or bool(p.get("error_uncorrected"))
            or bool(p.get("processor_context_corrupt"))
        )
        engine = f"serd.cpu.generic-x86.{fault}@{target.path}"
        if not immediate and not serd_record(hdl, engine, group, ev):
            return
        bus = group == "bus"
        suspect = self._topo.cpu_suspect(
            hdl, CPU_FAULT + fault, target, retire=not bus, response=not bus
        )
        diagnose(hdl, target.key, ev, engine, suspect, "cpu", log_event=LOG_EVENT)

    # -- the kernel's own page actions ---------------------------------------
    @staticmethod
    def _kernel_action(hdl: Handle, ev: Ereport) -> None:
        """The kernel's memory-failure handling of a page (it has already acted, e.g.
        its correctable-errors collector soft-offlined the page): recorded against the
        page's outstanding case, never the start of a diagnosis of its own."""
        physaddr = ev.payload.get("physaddr")
        if not isinstance(physaddr, int) or isinstance(physaddr, bool) or physaddr < 0:
            hdl.stat("kernel_mf_bad", "kernel memory-failure reports without a page").incr()
            return
        if join(hdl, page_key(page_of(physaddr)), ev):
            hdl.stat("kernel_mf_joined", "kernel page actions recorded in a page case").incr()
        else:
            hdl.stat("kernel_mf_alone", "kernel page actions on pages with no case").incr()

    # -- memory --------------------------------------------------------------
    def _memory(self, hdl: Handle, ev: Ereport, *, uncorrected: bool) -> None:
        p = ev.payload
        uncorrected = uncorrected or bool(p.get("error_uncorrected"))
        if usable_physaddr(p) is None:
            self._dimm_only(hdl, ev, uncorrected=uncorrected)
            return
        target = self._topo.memory_target(hdl, p)
        if target is None:
            return
        if isinstance(target, PageTarget):
            self._page_only(hdl, ev, target, uncorrected=uncorrected)
            return
        page, dimm, pkey, dkey = target
        if not uncorrected and not hdl.prop("pages_under_dimm") and join(hdl, dkey, ev):
            hdl.stat("under_faulty_dimm", "corrected errors on a DIMM already faulty").incr()
            return
        unum = dimm.asru.unum
        page_engine = _page_engine(page)
        dimm_engine = f"serd.memory.generic-x86.dimm_ce@{unum}"
        kind = "ue" if uncorrected else "ce"

        page_fired = False
        if not join(hdl, pkey, ev):
            page_fired = uncorrected or serd_record(hdl, page_engine, "page", ev)
            if page_fired:
                suspect = page_suspect(hdl, f"{MEM_FAULT}page_{kind}", dimm, page)
                diagnose(hdl, pkey, ev, page_engine, suspect, "page", log_event=LOG_EVENT)
        if join(hdl, dkey, ev):
            # The DIMM is already faulted: its pages are not counted towards it again.
            return
        pages = self._pages(hdl, unum)
        if page_fired and page not in pages:
            pages.append(page)
        fired = uncorrected or serd_record(hdl, dimm_engine, "dimm", ev)
        limit = hdl.props.get_int("dimm_pages")
        if not fired and limit > 0 and len(pages) >= limit:
            fired = True
            hdl.stat("dimm_by_pages", "DIMMs faulted for their count of faulted pages").incr()
        if fired:
            suspect = dimm_suspect(hdl, f"{MEM_FAULT}dimm_{kind}", dimm)
            diagnose(hdl, dkey, ev, dimm_engine, suspect, "dimm", log_event=LOG_EVENT)
            hdl.specific["dimm_pages"].pop(unum, None)

    @staticmethod
    def _page_only(hdl: Handle, ev: Ereport, target: PageTarget, *, uncorrected: bool) -> None:
        """A memory error at a usable address whose DIMM cannot be told: the page's
        engine counts it (the DIMM's engine and page count are left alone)."""
        hdl.stat(
            "page_only", "memory ereports diagnosed on their page alone: the DIMM is not known"
        ).incr()
        if join(hdl, target.page_key, ev):
            return
        engine = _page_engine(target.page)
        if uncorrected or serd_record(hdl, engine, "page", ev):
            kind = "ue" if uncorrected else "ce"
            suspect = page_only_suspect(hdl, f"{MEM_FAULT}page_{kind}", target.page)
            diagnose(hdl, target.page_key, ev, engine, suspect, "page", log_event=LOG_EVENT)

    def _dimm_only(self, hdl: Handle, ev: Ereport, *, uncorrected: bool) -> None:
        """A memory error with no usable address, placed on its DIMM by ``resource``:
        the DIMM's engine counts it (no page engine, no page to retire)."""
        target = self._topo.dimm_target(hdl, ev.payload)
        if target is None:
            return
        dimm, dkey = target
        hdl.stat("dimm_only", "memory ereports placed on a DIMM without an address").incr()
        if join(hdl, dkey, ev):
            if not uncorrected:
                hdl.stat("under_faulty_dimm", "corrected errors on a DIMM already faulty").incr()
            return
        engine = f"serd.memory.generic-x86.dimm_ce@{dimm.asru.unum}"
        if uncorrected or serd_record(hdl, engine, "dimm", ev):
            kind = "ue" if uncorrected else "ce"
            suspect = dimm_suspect(hdl, f"{MEM_FAULT}dimm_{kind}", dimm)
            diagnose(hdl, dkey, ev, engine, suspect, "dimm", log_event=LOG_EVENT)

    @staticmethod
    def _pages(hdl: Handle, unum: str) -> list[int]:
        pages: list[int] = hdl.specific.setdefault("dimm_pages", {}).setdefault(unum, [])
        return pages


def _page_engine(page: int) -> str:
    """The SERD engine of a page's corrected errors, whether its DIMM is known or not."""
    return f"serd.memory.generic-x86.page_ce@physaddr={page:#x}"
