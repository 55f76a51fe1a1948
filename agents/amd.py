"""amd-diagnosis: SERD diagnosis of AMD family 0Fh/10h CPU and memory ereports.

The Python counterpart of the illumos eft rules ``amd64.esc`` (illumos-fma.md
section 3.3).  It receives the ``ereport.cpu.amd.*`` classes that
:mod:`fmd.hw.mca_amd` gives DC, IC, BU and NB records and names faults from
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
    UE or CE at a usable address whose DIMM cannot be told --> page P alone
        P outstanding ----------------------------------------> joined
        UE ---------------------------------------------------> page_ue now
        CE --> serd page_sb@P or page_ck@P --fires------------> page case
    UE or CE without a usable address ------------------------> discarded (stat)

CPU groups and their amd64.esc numbers (module properties): ``icache`` (I$ data
and tag) N=2 T=168h, ``itlb`` (L1/L2 ITLB) N=2 T=168h, ``dcache`` (D$ data)
N=2 T=168h, ``l2`` (L2 data and tag) N=3 T=12h, ``uc`` N=0 T=1h (the
``dc.data_ecc1_uc`` engine; also every multi-bit, parity-UC and snoop-tag
leaf, which amd64.esc faults on the first ereport).  Memory: ``page`` N=2
T=72h and ``rank_thresh`` (128, amd64.esc's RANK_THRESH floor; the rank size
that would raise it is not in our topology).

A memory ereport at a usable address whose DIMM cannot be told (no
``resource`` and no address decode) is diagnosed on its page alone
(``page_only``), as :mod:`agents.cpumem` does: the page engines and the
immediate ``page_ue`` as above, a suspect naming the page under the unum
``unknown`` and no FRU, and no rank or DIMM bookkeeping.  Without a usable
address it is amd64.esc's ``upset.memory.discard`` (``mem_unresolved``).

"Outstanding", the resource keys (``cpu@<strand path>``, ``page@<address>``,
``dimm@<DIMM path>``) and the suspects' ASRU/FRU/resource/location are those of
:mod:`agents.diagnosis`, shared with :mod:`agents.cpumem`: while a resource's
case is held no second diagnosis of it is made, and one CPU fault per strand at
a time.

SERD engine names::

    serd.cpu.amd.<fault leaf>@motherboard=0/chip=2/core=0/strand=1
    serd.memory.amd.page_sb@physaddr=0x12345000
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from agents.diagnosis import (
    PageTarget,
    Topology,
    count_prop,
    diagnose,
    dimm_suspect,
    hc_path,
    join,
    page_only_suspect,
    page_suspect,
    serd_record,
    time_prop,
)
from fmd.config import PropSpec, PropType
from fmd.module import Plugin
from fmd.protocol import Ereport

if TYPE_CHECKING:
    from fmd.api import Handle

CLASS_PREFIX: Final = "ereport.cpu.amd."
CPU_FAULT: Final = "fault.cpu.amd."
MEM_FAULT: Final = "fault.memory."
LOG_EVENT: Final = "amd_diagnosed"

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
        count_prop("icache_n", "2", "SERD N for I$ data and tag errors on one strand"),
        time_prop("icache_t", "168h", "SERD T for I$ data and tag errors on one strand"),
        count_prop("itlb_n", "2", "SERD N for L1/L2 ITLB errors on one strand"),
        time_prop("itlb_t", "168h", "SERD T for L1/L2 ITLB errors on one strand"),
        count_prop("dcache_n", "2", "SERD N for corrected D$ data errors on one strand"),
        time_prop("dcache_t", "168h", "SERD T for corrected D$ data errors on one strand"),
        count_prop("l2_n", "3", "SERD N for corrected L2 data and tag errors on one strand"),
        time_prop("l2_t", "12h", "SERD T for corrected L2 data and tag errors on one strand"),
        count_prop("uc_n", "0", "SERD N for uncorrectable CPU errors (0: fault at once)"),
        time_prop("uc_t", "1h", "SERD T for uncorrectable CPU errors"),
        count_prop("page_n", "2", "SERD N for corrected errors on one memory page"),
        time_prop("page_t", "72h", "SERD T for corrected errors on one memory page"),
        count_prop(
            "rank_thresh", "128", "faulted pages on one rank beyond which its DIMM is faulty"
        ),
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
        target = self._topo.cpu_target(hdl, ev)
        if target is None:
            return
        p = ev.payload
        if p.get("error_uncorrected") or p.get("processor_context_corrupt"):
            group = "uc"
        engine = f"serd.cpu.amd.{fault}@{target.path}"
        if not serd_record(hdl, engine, group, ev):
            return
        suspect = self._topo.cpu_suspect(hdl, CPU_FAULT + fault, target)
        diagnose(hdl, target.key, ev, engine, suspect, "cpu", log_event=LOG_EVENT)

    # -- memory --------------------------------------------------------------
    def _memory(self, hdl: Handle, ev: Ereport, *, uncorrected: bool) -> None:
        p = ev.payload
        # No usable address is amd64.esc's upset.memory.discard: nothing to diagnose.
        target = self._topo.memory_target(hdl, p)
        if target is None:
            return
        if isinstance(target, PageTarget):
            self._page_only(hdl, ev, target, uncorrected=uncorrected)
            return
        page, dimm, pkey, dkey = target
        if not uncorrected and not hdl.prop("pages_under_dimm") and join(hdl, dkey, ev):
            # A faulty DIMM covers its pages: the error joins the DIMM's case.
            hdl.stat("under_faulty_dimm", "corrected errors on a DIMM already faulty").incr()
            return
        kind = "ue" if uncorrected else "sb" if single_bit(p) else "ck"
        page_engine = f"serd.memory.amd.page_{kind}@physaddr={page:#x}"

        def fault_page(cls: str) -> None:
            suspect = page_suspect(hdl, MEM_FAULT + cls, dimm, page)
            diagnose(hdl, pkey, ev, page_engine, suspect, "page", log_event=LOG_EVENT)

        def fault_dimm(cls: str) -> None:
            suspect = dimm_suspect(hdl, MEM_FAULT + cls, dimm)
            diagnose(hdl, dkey, ev, "", suspect, "dimm", log_event=LOG_EVENT)

        if uncorrected:
            if not join(hdl, pkey, ev):
                fault_page("page_ue")
            if not join(hdl, dkey, ev):
                fault_dimm("dimm_ue")
            return
        if join(hdl, pkey, ev):
            return
        faulted: dict[str, list[int]] = hdl.specific.setdefault("rank_pages", {}).setdefault(
            hc_path(dimm.rank.hc_list), {"sb": [], "ck": []}
        )
        thresh = hdl.props.get_int("rank_thresh")
        if len(faulted["sb"]) + len(faulted["ck"]) > 2 * thresh:
            hdl.stat("over_page_limit", "CEs on ranks past their page-fault limit").incr()
            return
        if not serd_record(hdl, page_engine, "page", ev):
            return
        fault_page(f"page_{kind}")
        if page not in faulted[kind]:
            faulted[kind].append(page)
        if join(hdl, dkey, ev):
            return
        sb, ck = len(faulted["sb"]), len(faulted["ck"])
        if sb + ck > thresh:
            fault_dimm("dimm_sb" if sb >= ck else "dimm_ck")

    @staticmethod
    def _page_only(hdl: Handle, ev: Ereport, target: PageTarget, *, uncorrected: bool) -> None:
        """A memory error at a usable address whose DIMM cannot be told: the page's
        engines count it (no rank or DIMM to count it against)."""
        hdl.stat(
            "page_only", "memory ereports diagnosed on their page alone: the DIMM is not known"
        ).incr()
        if join(hdl, target.page_key, ev):
            return
        kind = "ue" if uncorrected else "sb" if single_bit(ev.payload) else "ck"
        engine = f"serd.memory.amd.page_{kind}@physaddr={target.page:#x}"
        if uncorrected or serd_record(hdl, engine, "page", ev):
            suspect = page_only_suspect(hdl, f"{MEM_FAULT}page_{kind}", target.page)
            diagnose(hdl, target.page_key, ev, engine, suspect, "page", log_event=LOG_EVENT)
