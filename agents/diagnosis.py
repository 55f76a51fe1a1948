"""The case bookkeeping and suspect building that the CPU/memory diagnosis engines share.

:mod:`agents.cpumem` and :mod:`agents.amd` decide *when* a strand, page or
DIMM is faulty; this module holds what they do the same way once they have:

- resource keys: ``cpu@<strand path>``, ``page@<page address>``,
  ``dimm@<DIMM path>``;
- the "outstanding case" bookkeeping: ``hdl.specific["cases"]`` maps each
  resource key to the uuid of the case it was last diagnosed in.  While
  ``hdl.case_get`` finds that case and it is not yet repaired (solved or
  isolated) a later ereport on the resource joins it instead of being
  diagnosed again; once the case is repaired or gone the key is dropped::

      ereport on key K --> K in cases, case held --> joined (stat "joined")
                           K in cases, case repaired or gone --> K forgotten --> engine decides
                           K not in cases ---------------------> engine decides
      engine decides "faulty" --> diagnose(): case opened, SERD events added,
                                  engine reset, solved, cases[K] = uuid

- SERD engines created on first use from a property group's ``<group>_n`` and
  ``<group>_t``;
- the CPU resource an ereport's evidence names (:meth:`Topology.cpu_target`):
  its detector must be a strand, core or chip of *this* platform's topology
  (an hc FMRI whose path is in the tree and whose authority, if given, is this
  host's; or a ``cpu:///cpuid=N`` of a strand), and a ``cpuid`` member, if
  given, must lie under it.  Anything else is not diagnosed: it is counted
  (``bad_detector``) and logged once per reason, and the event stays stored.
  A diagnosis therefore names exactly the strand, core or chip the evidence
  names, never a motherboard or an empty path that would cover every CPU;
- suspects: a CPU fault's ASRU (a strand's topology ``cpu`` ASRU, or the
  core's or chip's own hc FMRI), FRU (the chip) and location; a memory
  ereport's DIMM and rank, from its ``resource`` member or else the platform's
  address decode, and the page and DIMM suspects built from them;
- memory targets: with a usable ``physaddr``, the page and its DIMM
  (:meth:`Topology.memory_target`), or the page alone when the DIMM cannot be
  told (no ``resource``, and the platform does not decode the address: a
  virtual machine, a host without an EDAC memory topology); without one, the
  DIMM its ``resource`` names, when it names a DIMM or one of its ranks
  (:meth:`Topology.dimm_target`: errors located by channel and DIMM rather
  than by address).  Neither address nor DIMM: counted as ``mem_unresolved``.

A page whose DIMM is unknown is still worth a fault: its ASRU carries the
address the retire agent needs, and its resource key is the page's, so later
errors on it and the kernel's own reports of the page join its case.  Its mem
FMRI needs a unum; :data:`UNKNOWN_UNUM` says plainly that no DIMM is known,
and the suspect names no FRU and no location rather than guess one::

    usable physaddr --> DIMM from resource or address decode --> MemTarget (page, DIMM)
                    --> no DIMM ----------------------------------> PageTarget (page)
    no physaddr ------> resource names a DIMM or rank ------------> DimmTarget (DIMM)
                    --> otherwise --------------------------------> None (mem_unresolved)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from fmd.config import PropSpec, PropType
from fmd.errors import ModuleApiError
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
    parse_fmri_cached,
)

if TYPE_CHECKING:
    from fmd.api import Handle
    from fmd.case import Case
    from fmd.hw.topo import TopoNode

PAGE_SHIFT: Final = 12
# The unum of a page fault whose DIMM cannot be told.
UNKNOWN_UNUM: Final = "unknown"
# Remembered detector lookups of a Topology (see Topology.cpu_target).
_MEMO_ENTRIES: Final = 4096


# -- properties and names ----------------------------------------------------
def time_prop(name: str, default: str, what: str) -> PropSpec:
    """A TIME module property (a SERD T)."""
    return PropSpec(name, PropType.TIME, default, what)


def count_prop(name: str, default: str, what: str) -> PropSpec:
    """A UINT32 module property (a SERD N or a threshold)."""
    return PropSpec(name, PropType.UINT32, default, what)


def hc_path(pairs: Pairs) -> str:
    """``name=inst/name=inst...`` of an hc list."""
    return "/".join(f"{name}={inst}" for name, inst in pairs)


def page_of(physaddr: int) -> int:
    """The address of the page holding ``physaddr``."""
    return (physaddr >> PAGE_SHIFT) << PAGE_SHIFT


def cpu_key(strand_path: str) -> str:
    """The resource key of a strand."""
    return f"cpu@{strand_path}"


def page_key(page: int) -> str:
    """The resource key of a memory page."""
    return f"page@{page:#x}"


def dimm_key(unum: str) -> str:
    """The resource key of a DIMM."""
    return f"dimm@{unum}"


# -- SERD and cases ----------------------------------------------------------
def serd_record(hdl: Handle, engine: str, group: str, ev: Ereport) -> bool:
    """Record the ereport in the engine, created from ``<group>_n``/``<group>_t``
    if new; True when the engine fires."""
    if not hdl.serd_exists(engine):
        hdl.serd_create(
            engine, hdl.props.get_int(f"{group}_n"), hdl.props.get_time_ns(f"{group}_t")
        )
    return hdl.serd_record(engine, ev)


def join(hdl: Handle, key: str, ev: Ereport) -> bool:
    """Add the ereport to the resource's outstanding case, if it has one."""
    cases: dict[str, str] = hdl.specific.setdefault("cases", {})
    uuid = cases.get(key)
    if uuid is None:
        return False
    case = hdl.case_get(uuid)
    if case is None or case.is_repaired:
        # Repaired (and perhaps resolved): the resource may be diagnosed afresh.
        del cases[key]
        return False
    # The case keeps its first ereports and counts the rest (fmd.case): a
    # storm on a diagnosed resource costs the same per event however long it lasts.
    hdl.case_add_ereport(case, ev)
    hdl.stat("joined", "ereports added to an outstanding case").incr()
    return True


def diagnose(
    hdl: Handle,
    key: str,
    ev: Ereport,
    engine: str,
    suspect: Suspect,
    kind: str,
    *,
    log_event: str,
) -> Case:
    """Open, fill and solve a case for one resource; reset its engine, if any
    (``engine`` empty: none), and log ``log_event``."""
    case = hdl.case_open()
    if engine and hdl.serd_exists(engine):
        hdl.case_add_serd(case, engine)
        hdl.serd_reset(engine)
    if ev.id is None or not case.contains_event(ev.id):
        hdl.case_add_ereport(case, ev)
    hdl.case_add_suspect(case, suspect)
    hdl.case_solve(case)
    hdl.specific.setdefault("cases", {})[key] = case.uuid
    hdl.stat(f"cases_{kind}", f"{kind} faults diagnosed").incr()
    hdl.log.info(log_event, uuid=case.uuid, fault=suspect.cls, resource=key)
    return case


# -- suspects ----------------------------------------------------------------
class Dimm(NamedTuple):
    """Where a memory ereport lies: its DIMM (hc and mem FMRI), label and rank."""

    fmri: HcFmri
    asru: MemFmri
    label: str | None
    rank: HcFmri


class MemTarget(NamedTuple):
    """Where a memory ereport is diagnosed: its page and DIMM and their resource keys."""

    page: int
    dimm: Dimm
    page_key: str
    dimm_key: str


class PageTarget(NamedTuple):
    """Where a memory ereport whose DIMM cannot be told is diagnosed: its page only."""

    page: int
    page_key: str


class DimmTarget(NamedTuple):
    """Where a memory ereport without a usable address is diagnosed: its DIMM only."""

    dimm: Dimm
    dimm_key: str


class CpuTarget(NamedTuple):
    """The CPU resource a CPU ereport is diagnosed on: its topology node (a strand,
    core or chip), hc path and resource key."""

    node: TopoNode
    path: str
    key: str


# The hc node names a CPU diagnosis may name, and the one that carries a cpuid.
CPU_NODES: Final = frozenset({"strand", "core", "chip"})
STRAND: Final = "strand"
# The hc node name of a DIMM.
DIMM: Final = "dimm"


def page_suspect(hdl: Handle, cls: str, dimm: Dimm, page: int) -> Suspect:
    """A page fault: ASRU the page of the DIMM, resource the rank, no message."""
    asru = MemFmri(unum=dimm.asru.unum, serial=dimm.asru.serial, physaddr=page)
    return hdl.create_fault(
        cls,
        100,
        asru=asru,
        fru=dimm.fmri,
        resource=dimm.rank,
        location=dimm.label,
        message=False,
    )


def page_only_suspect(hdl: Handle, cls: str, page: int) -> Suspect:
    """A page fault on a page whose DIMM is unknown: ASRU and resource the page
    (unum :data:`UNKNOWN_UNUM`), no FRU, no location, no message."""
    asru = MemFmri(unum=UNKNOWN_UNUM, physaddr=page)
    return hdl.create_fault(
        cls,
        100,
        asru=asru,
        fru=None,
        resource=asru,
        location=None,
        message=False,
    )


def dimm_suspect(hdl: Handle, cls: str, dimm: Dimm) -> Suspect:
    """A DIMM fault: ASRU the DIMM's mem FMRI, FRU and resource the DIMM."""
    return hdl.create_fault(
        cls,
        100,
        asru=dimm.asru,
        fru=dimm.fmri,
        resource=dimm.fmri,
        location=dimm.label,
    )


class Topology:
    """The module's view of the topology: its nodes indexed by hc list, read once."""

    def __init__(self) -> None:
        self._index: dict[Pairs, TopoNode] | None = None
        self._logged: set[str] = set()
        # (detector, cpuid) -> (node, problem): the same few detectors arrive over
        # and over; bounded, since a sender may invent detectors.
        self._nodes: dict[tuple[str | None, Any], tuple[TopoNode | None, str]] = {}
        self._targets: dict[int, CpuTarget] = {}

    def cpu_target(self, hdl: Handle, ev: Ereport) -> CpuTarget | None:
        """The strand, core or chip to diagnose a CPU ereport on; None when its
        evidence names no CPU resource of this platform (counted as
        ``bad_detector``) or the resource's outstanding case took it."""
        cpuid = ev.payload.get("cpuid")
        memo = (ev.detector_str, cpuid if cpuid.__class__ is int else repr(cpuid))
        found = self._nodes.get(memo)
        if found is None:
            found = self._cpu_node(hdl, ev)
            if len(self._nodes) >= _MEMO_ENTRIES:
                self._nodes.clear()
            self._nodes[memo] = found
        node, problem = found
        if node is None:
            hdl.stat(
                "bad_detector", "CPU ereports not naming a CPU of this platform (not diagnosed)"
            ).incr()
            if problem not in self._logged and len(self._logged) < 64:
                self._logged.add(problem)
                hdl.log.warning(
                    "cpu_detector_rejected",
                    detector=ev.detector_str,
                    event_class=ev.cls,
                    reason=problem,
                    note="not diagnosed; further ereports with this problem are only counted",
                )
            return None
        target = self._targets.get(id(node))
        if target is None or target.node is not node:
            path = hc_path(node.fmri.hc_list)
            target = self._targets[id(node)] = CpuTarget(node, path, cpu_key(path))
        if join(hdl, target.key, ev):
            return None
        return target

    def _cpu_node(self, hdl: Handle, ev: Ereport) -> tuple[TopoNode | None, str]:
        """The topology node the ereport's detector names, or None and why not."""
        det = ev.detector
        node: TopoNode | None = None
        if isinstance(det, CpuFmri):
            try:
                node = self.node(hdl, hdl.topo.cpu_to_hc(det.cpuid).hc_list)
            except (LookupError, ModuleApiError):
                return None, "the detector's cpuid is not a CPU of this platform"
        elif isinstance(det, HcFmri):
            if not _same_host(det.authority, _authority(hdl)):
                return None, "the detector names another host (its authority differs)"
            node = self.node(hdl, det.hc_list)
        else:
            return None, "the detector is not an hc or cpu FMRI"
        if node is None or not node.fmri.hc_list:
            return None, "the detector is not in this platform's topology"
        kind = node.fmri.hc_list[-1][0]
        if kind not in CPU_NODES:
            return None, f"the detector is a {kind}, not a strand, core or chip"
        cpuid = ev.payload.get("cpuid")
        if cpuid is not None and not self._cpu_under(hdl, cpuid, node):
            return None, "the payload's cpuid is not a strand of the detector"
        return node, ""

    def _cpu_under(self, hdl: Handle, cpuid: Any, node: TopoNode) -> bool:
        """Whether ``cpuid`` is a strand at or under ``node``."""
        if not isinstance(cpuid, int) or isinstance(cpuid, bool):
            return False
        try:
            strand = hdl.topo.cpu_to_hc(cpuid)
        except (LookupError, ModuleApiError):
            return False
        pairs = node.fmri.hc_list
        return strand.hc_list[: len(pairs)] == pairs

    def node(self, hdl: Handle, pairs: Pairs) -> TopoNode | None:
        """The topology node at ``pairs``; None if absent or no topology."""
        if self._index is None:
            try:
                self._index = {n.fmri.hc_list: n for n in hdl.topo.nodes()}
            except ModuleApiError:
                self._index = {}
        return self._index.get(pairs)

    def cpu_suspect(
        self,
        hdl: Handle,
        cls: str,
        target: CpuTarget,
        *,
        retire: bool = True,
        response: bool = True,
    ) -> Suspect:
        """A CPU fault on the target: resource its node; ASRU the strand's cpu-scheme
        ASRU, or the core's or chip's own hc FMRI (what a retire covers is
        never wider than that); FRU the chip."""
        node = target.node
        asru: CpuFmri | HcFmri = node.asru if isinstance(node.asru, CpuFmri) else node.fmri
        return hdl.create_fault(
            cls,
            100,
            asru=asru,
            fru=node.fru,
            resource=node.fmri,
            location=node.label,
            retire=retire,
            response=response,
        )

    def memory_target(self, hdl: Handle, payload: Any) -> MemTarget | PageTarget | None:
        """The page and DIMM of a memory ereport; its page alone when the DIMM cannot
        be told; None (counted as ``mem_unresolved``) when it has no usable address."""
        physaddr = usable_physaddr(payload)
        if physaddr is None:
            _unresolved(hdl)
            return None
        page = page_of(physaddr)
        dimm = self.dimm_of(hdl, payload.get("resource"), physaddr)
        if dimm is None:
            return PageTarget(page, page_key(page))
        return MemTarget(page, dimm, page_key(page), dimm_key(dimm.asru.unum))

    def dimm_target(self, hdl: Handle, payload: Any) -> DimmTarget | None:
        """The DIMM of a memory ereport that has no usable address but names its DIMM
        (or a rank of it) in ``resource``, as errors located by channel and DIMM
        (the bank's own fields, EDAC) do; None (counted as ``mem_unresolved``)
        when ``resource`` names no DIMM of this platform's kind."""
        dimm = self.dimm_of(hdl, payload.get("resource"), None)
        if dimm is None or not dimm.fmri.hc_list or dimm.fmri.hc_list[-1][0] != DIMM:
            _unresolved(hdl)
            return None
        return DimmTarget(dimm, dimm_key(dimm.asru.unum))

    def dimm_of(self, hdl: Handle, resource: Any, physaddr: int | None) -> Dimm | None:
        """The DIMM and rank of a memory ereport, from its ``resource`` member (an
        hc FMRI of the rank or the DIMM) or else the platform's decode of
        ``physaddr``, if any."""
        if isinstance(resource, list):
            resource = resource[0] if resource else None
        rank: HcFmri | None = None
        if resource is not None:
            try:
                fmri = (
                    parse_fmri_cached(resource)
                    if isinstance(resource, str)
                    else fmri_from_obj(resource)
                )
            except (FmriError, TypeError, ValueError):
                fmri = None
            if isinstance(fmri, HcFmri):
                rank = fmri
        if rank is None and physaddr is not None:
            try:
                rank = hdl.topo.decode_address(physaddr)
            except ModuleApiError:
                rank = None  # no topology: the DIMM cannot be told
        if rank is None:
            return None
        pairs = rank.hc_list
        if pairs and pairs[-1][0] == "rank":
            pairs = pairs[:-1]
        node = self.node(hdl, pairs)
        if node is not None:
            asru = node.asru if isinstance(node.asru, MemFmri) else MemFmri(unum=hc_path(pairs))
            return Dimm(node.fmri, asru, node.label, rank)
        dimm = hc_fmri(rank.authority, *pairs)
        return Dimm(dimm, MemFmri(unum=hc_path(pairs)), hdl.topo.label_of(dimm), rank)


def usable_physaddr(payload: Any) -> int | None:
    """The ereport's ``physaddr`` when it is a non-negative integer, else None."""
    physaddr = payload.get("physaddr")
    if isinstance(physaddr, int) and not isinstance(physaddr, bool) and physaddr >= 0:
        return physaddr
    return None


def _unresolved(hdl: Handle) -> None:
    hdl.stat("mem_unresolved", "memory ereports with no usable address or DIMM").incr()


def _authority(hdl: Handle) -> Pairs:
    try:
        return tuple(hdl.topo.authority)
    except ModuleApiError:
        return ()


def _same_host(given: Pairs, ours: Pairs) -> bool:
    """An FMRI's authority names this host when every member it shares with the
    platform's authority (product-id, chassis-id, server-id) has our value."""
    mine = dict(ours)
    return all(mine.get(name, value) == value for name, value in given)
