"""amd-diagnosis: SERD diagnosis of AMD family 0Fh/10h CPU and memory ereports.

The Python counterpart of the illumos eft rules ``amd64.esc`` (illumos-fma.md
section 3.3).  It receives the ``ereport.cpu.amd.*`` classes that
:mod:`fmd.mca_amd` gives DC, IC, BU and NB records and names faults from
dictionary AMD.

Life of one ereport::

    unrecognized leaf -----------------------------------------> discarded (stat)
    CPU leaf --> fault class F, group G, strand S
        S has an outstanding case ---------------------------> joined to it
        G = uc, error_uncorrected or processor_context_corrupt
                --> serd F@S with N=uc_n (0) --fires--------> case F@S
        else serd F@S with G's N, T --fires-------------------> case F@S
    UE (nb.mem_ue, *.inf_sys_eccm, bu.s_eccm) --> page P, DIMM D
        for P, then D: outstanding case ----------------------> joined to it
                       else -----------------------------------> page_ue / dimm_ue now
    CE (nb.mem_ce, dc.inf_sys_ecc1, bu.s_ecc1) --> page P, rank R, DIMM D
        P outstanding ----------------------------------------> joined
        R already has 2 x rank_thresh faulted pages ----------> discarded (stat)
        serd page_sb@P or page_ck@P --fires--> page case; P joins R's faulted pages
        D outstanding ----------------------------------------> joined
        R's faulted pages > rank_thresh ----------------------> dimm_sb (most pages
                                                                 single-bit) or dimm_ck

CPU groups and their amd64.esc numbers (module properties): ``icache`` (I$ data
and tag) N=2 T=168h, ``itlb`` (L1/L2 ITLB) N=2 T=168h, ``dcache`` (D$ data)
N=2 T=168h, ``l2`` (L2 data and tag) N=3 T=12h, ``uc`` N=0 T=1h (the
``dc.data_ecc1_uc`` engine; also every multi-bit, parity-UC and snoop-tag
leaf, which amd64.esc faults on the first ereport).  Memory: ``page`` N=2
T=72h and ``rank_thresh`` (128, amd64.esc's RANK_THRESH floor; the rank size
that would raise it is not in our topology).

"Outstanding", the resource keys (``cpu@<strand path>``, ``page@<address>``,
``dimm@<DIMM path>``) and the suspects' ASRU/FRU/resource/location are as in
:mod:`agents.cpumem`: while a resource's case is held no second diagnosis of
it is made, and one CPU fault per strand at a time.

SERD engine names::

    serd.cpu.amd.<fault leaf>@motherboard=0/chip=2/core=0/strand=1
    serd.memory.amd.page_sb@physaddr=0x12345000
"""

from __future__ import annotations

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

CLASS_PREFIX: Final = "ereport.cpu.amd."
CPU_FAULT: Final = "fault.cpu.amd."
MEM_FAULT: Final = "fault.memory."
PAGE_SHIFT: Final = 12

# ereport leaf -> (fault leaf, property group), after amd64.esc.
CPU_LEAVES: Final[dict[str, tuple[str, str]]] = {
    "ic.data_par": ("icachedata", "icache"),
    "ic.tag_par": ("icachetag", "icache"),
    "ic.stag_par": ("icachestag", "uc"),
    "ic.l1tlb_par": ("l1itlb", "itlb"),
    "ic.l2tlb_par": ("l2itlb", "itlb"),
    "ic.inf_l2_ecc1": ("l2cachedata", "l2"),
    "ic.inf_l2_eccm": ("l2cachedata", "uc"),
    "dc.data_ecc1": ("dcachedata", "dcache"),
    "dc.data_ecc1_uc": ("dcachedata", "uc"),
    "dc.data_eccm": ("dcachedata", "uc"),
    "dc.tag_par": ("dcachetag", "uc"),
    "dc.stag_par": ("dcachestag", "uc"),
    "dc.l1tlb_par": ("l1dtlb", "uc"),
    "dc.l2tlb_par": ("l2dtlb", "uc"),
    "dc.inf_l2_ecc1": ("l2cachedata", "l2"),
    "dc.inf_l2_eccm": ("l2cachedata", "uc"),
    "bu.l2d_ecc1": ("l2cachedata", "l2"),
    "bu.l2d_eccm": ("l2cachedata", "uc"),
    "bu.l2t_ecc1": ("l2cachetag", "l2"),
    "bu.l2t_eccm": ("l2cachetag", "uc"),
    "bu.l2t_par": ("l2cachetag", "uc"),
}
MEM_CE_LEAVES: Final = frozenset({"nb.mem_ce", "dc.inf_sys_ecc1", "bu.s_ecc1"})
MEM_UE_LEAVES: Final = frozenset({"nb.mem_ue", "dc.inf_sys_eccm", "ic.inf_sys_eccm", "bu.s_eccm"})


def _time(name: str, default: str, what: str) -> PropSpec:
    return PropSpec(name, PropType.TIME, default, what)


def _count(name: str, default: str, what: str) -> PropSpec:
    return PropSpec(name, PropType.UINT32, default, what)


def _path(pairs: Pairs) -> str:
    return "/".join(f"{name}={inst}" for name, inst in pairs)


def single_bit(payload: Any) -> bool:
    """amd64.esc's SINGLE_BIT_CE on an ereport payload (no syndrome: single-bit)."""
    kind = payload.get("syndrome-type", "E")
    synd = payload.get("syndrome", 0)
    if kind != "C" or not isinstance(synd, int):
        return True
    return synd == 0 or synd & 0xF in (0x1, 0x2, 0x4, 0x8)


class AmdDiagnosis(Plugin):
    """Diagnoses AMD caches, TLBs, memory pages and DIMMs from ereport.cpu.amd.*."""

    name = "amd-diagnosis"
    version = "1.0"
    description = "AMD family 0Fh/10h CPU and memory diagnosis (amd64.esc rules)"
    subscriptions = ("ereport.cpu.amd.*",)
    dictionaries = ("AMD",)
    properties: ClassVar[tuple[PropSpec, ...]] = (
        _count("icache_n", "2", "SERD N for I$ data and tag errors on one strand"),
        _time("icache_t", "168h", "SERD T for I$ data and tag errors on one strand"),
        _count("itlb_n", "2", "SERD N for L1/L2 ITLB errors on one strand"),
        _time("itlb_t", "168h", "SERD T for L1/L2 ITLB errors on one strand"),
        _count("dcache_n", "2", "SERD N for corrected D$ data errors on one strand"),
        _time("dcache_t", "168h", "SERD T for corrected D$ data errors on one strand"),
        _count("l2_n", "3", "SERD N for corrected L2 data and tag errors on one strand"),
        _time("l2_t", "12h", "SERD T for corrected L2 data and tag errors on one strand"),
        _count("uc_n", "0", "SERD N for uncorrectable CPU errors (0: fault at once)"),
        _time("uc_t", "1h", "SERD T for uncorrectable CPU errors"),
        _count("page_n", "2", "SERD N for corrected errors on one memory page"),
        _time("page_t", "72h", "SERD T for corrected errors on one memory page"),
        _count("rank_thresh", "128", "faulted pages on one rank beyond which its DIMM is faulty"),
    )

    def __init__(self) -> None:
        self._index: dict[Pairs, TopoNode] | None = None

    # -- dispatch ------------------------------------------------------------
    def recv(self, hdl: Handle, event: Any) -> None:
        if not isinstance(event, Ereport) or not event.cls.startswith(CLASS_PREFIX):
            return
        leaf = event.cls.removeprefix(CLASS_PREFIX)
        if leaf in MEM_CE_LEAVES or leaf in MEM_UE_LEAVES:
            self._memory(hdl, event, uncorrected=leaf in MEM_UE_LEAVES)
            return
        fault = CPU_LEAVES.get(leaf)
        if fault is None:
            hdl.stat("unrecognized", "ereports of a leaf this module does not diagnose").incr()
            return
        self._cpu(hdl, event, *fault)

    # -- CPU -----------------------------------------------------------------
    def _cpu(self, hdl: Handle, ev: Ereport, fault: str, group: str) -> None:
        strand = ev.detector
        if not isinstance(strand, HcFmri):
            hdl.stat("no_detector", "CPU ereports without an hc detector").incr()
            return
        spath = _path(strand.hc_list)
        key = f"cpu@{spath}"
        if self._join(hdl, key, ev):
            return
        p = ev.payload
        if p.get("error_uncorrected") or p.get("processor_context_corrupt"):
            group = "uc"
        engine = f"serd.cpu.amd.{fault}@{spath}"
        if not self._serd(hdl, engine, group, ev):
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
            chip = self._chip_of(strand)
            label = hdl.topo.label_of(chip)
        suspect = hdl.create_fault(
            CPU_FAULT + fault, 100, asru=asru, fru=chip, resource=strand, location=label
        )
        self._diagnose(hdl, key, ev, engine, suspect, "cpu")

    @staticmethod
    def _chip_of(strand: HcFmri) -> HcFmri:
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
        dimm = None
        if isinstance(physaddr, int) and not isinstance(physaddr, bool) and physaddr >= 0:
            dimm = self._dimm_of(hdl, p.get("resource"), physaddr)
        if physaddr is None or dimm is None:
            # amd64.esc's upset.memory.discard: no resource, nothing to diagnose.
            hdl.stat("mem_unresolved", "memory ereports with no usable address or DIMM").incr()
            return
        dimm_fmri, dimm_asru, label, rank = dimm
        page = (physaddr >> PAGE_SHIFT) << PAGE_SHIFT
        page_key, dimm_key = f"page@{page:#x}", f"dimm@{dimm_asru.unum}"
        kind = "ue" if uncorrected else "sb" if single_bit(p) else "ck"
        page_engine = f"serd.memory.amd.page_{kind}@physaddr={page:#x}"

        def suspect(cls: str, *, page_fault: bool) -> Suspect:
            if page_fault:
                asru = MemFmri(unum=dimm_asru.unum, serial=dimm_asru.serial, physaddr=page)
                return hdl.create_fault(
                    MEM_FAULT + cls,
                    100,
                    asru=asru,
                    fru=dimm_fmri,
                    resource=rank,
                    location=label,
                    message=False,
                )
            return hdl.create_fault(
                MEM_FAULT + cls,
                100,
                asru=dimm_asru,
                fru=dimm_fmri,
                resource=dimm_fmri,
                location=label,
            )

        if uncorrected:
            if not self._join(hdl, page_key, ev):
                self._diagnose(
                    hdl, page_key, ev, page_engine, suspect("page_ue", page_fault=True), "page"
                )
            if not self._join(hdl, dimm_key, ev):
                self._diagnose(hdl, dimm_key, ev, "", suspect("dimm_ue", page_fault=False), "dimm")
            return
        if self._join(hdl, page_key, ev):
            return
        faulted: dict[str, list[int]] = hdl.specific.setdefault("rank_pages", {}).setdefault(
            _path(rank.hc_list), {"sb": [], "ck": []}
        )
        thresh = hdl.props.get_int("rank_thresh")
        if len(faulted["sb"]) + len(faulted["ck"]) > 2 * thresh:
            hdl.stat("over_page_limit", "CEs on ranks past their page-fault limit").incr()
            return
        if not self._serd(hdl, page_engine, "page", ev):
            return
        self._diagnose(
            hdl, page_key, ev, page_engine, suspect(f"page_{kind}", page_fault=True), "page"
        )
        if page not in faulted[kind]:
            faulted[kind].append(page)
        if self._join(hdl, dimm_key, ev):
            return
        sb, ck = len(faulted["sb"]), len(faulted["ck"])
        if sb + ck > thresh:
            cls = "dimm_sb" if sb >= ck else "dimm_ck"
            self._diagnose(hdl, dimm_key, ev, "", suspect(cls, page_fault=False), "dimm")

    @staticmethod
    def _serd(hdl: Handle, engine: str, group: str, ev: Ereport) -> bool:
        if not hdl.serd_exists(engine):
            hdl.serd_create(
                engine, hdl.props.get_int(f"{group}_n"), hdl.props.get_time_ns(f"{group}_t")
            )
        return hdl.serd_record(engine, ev)

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
        """Open, fill and solve a case for one resource; reset its engine, if any."""
        case = hdl.case_open()
        if engine and hdl.serd_exists(engine):
            hdl.case_add_serd(case, engine)
            hdl.serd_reset(engine)
        if ev.id not in case.events:
            hdl.case_add_ereport(case, ev)
        hdl.case_add_suspect(case, suspect)
        hdl.case_solve(case)
        hdl.specific.setdefault("cases", {})[key] = case.uuid
        hdl.stat(f"cases_{kind}", f"{kind} faults diagnosed").incr()
        hdl.log.info("amd_diagnosed", uuid=case.uuid, fault=suspect.cls, resource=key)
        return case

    # -- topology ------------------------------------------------------------
    def _node(self, hdl: Handle, pairs: Pairs) -> TopoNode | None:
        if self._index is None:
            try:
                self._index = {n.fmri.hc_list: n for n in hdl.topo.nodes()}
            except ModuleApiError:
                self._index = {}
        return self._index.get(pairs)
