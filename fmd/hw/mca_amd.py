"""AMD family 0Fh/10h overlay on the generic MCA decoder: refined ``ereport.cpu.amd.*`` classes.

The generic decoder (:mod:`fmd.hw.mca`) names every record the way gcpu would.
On AMD families 0Fh and 10h the bank tells the functional unit (0 DC, 1 IC,
2 BU with the L2, 4 NB) and the extended error code (XEC, MCi_STATUS bits
19:16, 20:16 on the NB) together with the architectural code tells which
array failed, so these records can carry the class names of the illumos AMD
CPU module (``ao_mca_disp.in``) that the ``amd64.esc`` rules diagnose.  This
module only refines: it is pure, and returns None for anything it does not
cover, in which case the generic class stands.

Refinement of one record::

    vendor != AuthenticAMD or family not 0Fh/10h ---------------> None
    bank 0 DC / 1 IC / 2 BU: (XEC, code kind, level, type, request)
        + CECC/UECC/UC status bits --> first matching rule ------> unit.leaf
    bank 4 NB, XEC 8 (DRAM ECC): UC or UECC ---------------------> nb.mem_ue
                                 else ---------------------------> nb.mem_ce
    anything else ----------------------------------------------> None

Decisions:

* The IC data and main-tag arrays are parity protected; illumos posts
  ``ic.data_par`` and ``ic.tag_par`` for them with none of CECC/UECC/UC
  set.  We take any IC L1 instruction-array record that is not UC as that
  correctable parity class (the CECC bit, which some logs set, is ignored),
  instruction reads as data and evictions as tag.
* ``bu.l2t_par`` (an L2 tag parity error outside a scrub) may be single- or
  multi-bit; ``amd64.esc`` explains it by the multi-bit path, so we mark it
  uncorrectable and the diagnosis faults at once.
* NB DRAM ECC: the record does not say whether the memory controller runs
  in ChipKill mode (that is the NB configuration, not MCi_STATUS).  The
  syndrome is rebuilt from its low byte (status bits 54:47) and high byte
  (31:24); a non-zero high byte can only come from the 16-bit ChipKill code,
  so we then call the syndrome type ``C``, else ``E``.  A ``C`` syndrome
  whose low nibble has more than one bit set is a multi-bit ChipKill CE,
  which ``amd64.esc`` diagnoses as ``page_ck``; everything else correctable
  is single-bit (``page_sb``).  Uncorrectable gives ``page_ue`` and
  ``dimm_ue``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from fmd.hw.mca import DecodedMca, McaRecord, PayloadValue

CLASS_PREFIX: Final = "ereport.cpu.amd."
FAMILIES: Final = frozenset({0x0F, 0x10})

# AMD legacy MCi_STATUS bits (mca-decoding.md section 1.5).
ST_UC: Final = 1 << 61
AMD_CECC: Final = 1 << 46
AMD_UECC: Final = 1 << 45

NB_DRAM_ECC_XEC: Final = 0x8

# Fault classes of the CPU leaves: the AMD dictionary's names.
CPU_FAULTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ic.data_par": "fault.cpu.amd.icachedata",
        "ic.tag_par": "fault.cpu.amd.icachetag",
        "ic.stag_par": "fault.cpu.amd.icachestag",
        "ic.l1tlb_par": "fault.cpu.amd.l1itlb",
        "ic.l2tlb_par": "fault.cpu.amd.l2itlb",
        "ic.inf_l2_ecc1": "fault.cpu.amd.l2cachedata",
        "ic.inf_l2_eccm": "fault.cpu.amd.l2cachedata",
        "dc.data_ecc1": "fault.cpu.amd.dcachedata",
        "dc.data_ecc1_uc": "fault.cpu.amd.dcachedata",
        "dc.data_eccm": "fault.cpu.amd.dcachedata",
        "dc.tag_par": "fault.cpu.amd.dcachetag",
        "dc.stag_par": "fault.cpu.amd.dcachestag",
        "dc.l1tlb_par": "fault.cpu.amd.l1dtlb",
        "dc.l2tlb_par": "fault.cpu.amd.l2dtlb",
        "dc.inf_l2_ecc1": "fault.cpu.amd.l2cachedata",
        "dc.inf_l2_eccm": "fault.cpu.amd.l2cachedata",
        "bu.l2d_ecc1": "fault.cpu.amd.l2cachedata",
        "bu.l2d_eccm": "fault.cpu.amd.l2cachedata",
        "bu.l2t_ecc1": "fault.cpu.amd.l2cachetag",
        "bu.l2t_eccm": "fault.cpu.amd.l2cachetag",
        "bu.l2t_par": "fault.cpu.amd.l2cachetag",
    }
)

PAGE_SB: Final = "fault.memory.page_sb"
PAGE_CK: Final = "fault.memory.page_ck"
PAGE_UE: Final = "fault.memory.page_ue"
DIMM_UE: Final = "fault.memory.dimm_ue"

# Architectural code fields (mca-decoding.md section 2.2).
_INSTR, _DATA, _GEN = 0, 1, 2  # TT
_L1, _L2 = 1, 2  # LL
_RD_GEN, _RD, _DRD, _DWR, _IRD, _EV, _SNP = 0, 1, 3, 4, 5, 7, 8  # RRRR


@dataclass(frozen=True)
class AmdRefinement:
    """The AMD name of one record: unit and leaf, fault classes, and extra payload."""

    unit: str
    leaf: str
    faults: tuple[str, ...]
    correctable: bool
    payload: Mapping[str, PayloadValue] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ereport_class(self) -> str:
        """``ereport.cpu.amd.<unit>.<leaf>``."""
        return f"{CLASS_PREFIX}{self.unit}.{self.leaf}"

    @property
    def fault_class(self) -> str:
        """The first (page, for memory) fault class this ereport diagnoses to."""
        return self.faults[0]

    @property
    def is_memory(self) -> bool:
        """True for the NB DRAM ECC errors, which keep ``physaddr``/``resource``."""
        return self.unit == "nb"


def _cpu(unit: str, leaf: str, correctable: bool) -> AmdRefinement:
    name = f"{unit}.{leaf}"
    return AmdRefinement(unit, leaf, (CPU_FAULTS[name],), correctable)


def _ecc(unit: str, stem: str, status: int) -> AmdRefinement | None:
    """``<stem>_ecc1`` for a CECC record, ``<stem>_eccm`` for a UECC one."""
    if status & AMD_UECC:
        return _cpu(unit, f"{stem}_eccm", False)
    if status & AMD_CECC and not status & ST_UC:
        return _cpu(unit, f"{stem}_ecc1", True)
    return None


def _dc(xec: int, code: int, status: int) -> AmdRefinement | None:
    uc = bool(status & ST_UC)
    if _is_tlb(code) and xec in (0, 1) and (code >> 2) & 3 == _DATA:
        level = code & 3
        if level in (_L1, _L2):
            return _cpu("dc", f"l{level}tlb_par", False)
        return None
    if xec != 0 or not _is_mem(code):
        return None
    tt, ll, rrrr = (code >> 2) & 3, code & 3, (code >> 4) & 0xF
    if tt != _DATA:
        return None
    if ll == _L2 and rrrr == _DRD:
        return _ecc("dc", "inf_l2", status)
    if ll != _L1:
        return None
    if status & AMD_UECC:
        return _cpu("dc", "data_eccm", False)
    if status & AMD_CECC:
        return _cpu("dc", "data_ecc1_uc", False) if uc else _cpu("dc", "data_ecc1", True)
    if uc and rrrr in (_DRD, _DWR):
        return _cpu("dc", "tag_par", False)
    if uc and rrrr in (_SNP, _EV):
        return _cpu("dc", "stag_par", False)
    return None


def _ic(xec: int, code: int, status: int) -> AmdRefinement | None:
    uc = bool(status & ST_UC)
    if _is_tlb(code) and xec in (0, 1) and (code >> 2) & 3 == _INSTR:
        level = code & 3
        if level in (_L1, _L2):
            return _cpu("ic", f"l{level}tlb_par", not uc)
        return None
    if xec != 0 or not _is_mem(code):
        return None
    tt, ll, rrrr = (code >> 2) & 3, code & 3, (code >> 4) & 0xF
    if tt != _INSTR:
        return None
    if ll == _L2 and rrrr == _IRD:
        return _ecc("ic", "inf_l2", status)
    if ll != _L1 or status & AMD_UECC:
        return None
    if uc:
        return _cpu("ic", "stag_par", False) if rrrr in (_SNP, _EV) else None
    if rrrr == _IRD:
        return _cpu("ic", "data_par", True)
    if rrrr == _EV:
        return _cpu("ic", "tag_par", True)
    return None


def _bu(xec: int, code: int, status: int) -> AmdRefinement | None:
    if not _is_mem(code) or code & 3 != _L2:
        return None
    if xec == 0 and (code >> 2) & 3 == _GEN:
        return _ecc("bu", "l2d", status)
    if xec == 2:
        refined = _ecc("bu", "l2t", status)
        if refined is None and status & ST_UC:
            return _cpu("bu", "l2t_par", False)
        return refined
    return None


def syndrome(status: int) -> tuple[int, str]:
    """The NB ECC syndrome and its type (``E`` normal, ``C`` ChipKill) from MCi_STATUS."""
    synd = ((status >> 47) & 0xFF) | (((status >> 24) & 0xFF) << 8)
    return synd, "C" if synd >> 8 else "E"


def _single_bit(synd: int, kind: str) -> bool:
    """amd64.esc's SINGLE_BIT_CE: normal ECC, or a ChipKill syndrome naming one bit."""
    return kind == "E" or synd == 0 or synd & 0xF in (0x1, 0x2, 0x4, 0x8)


def _nb(status: int) -> AmdRefinement | None:
    if (status >> 16) & 0x1F != NB_DRAM_ECC_XEC:
        return None
    synd, kind = syndrome(status)
    members: dict[str, PayloadValue] = {"syndrome": synd, "syndrome-type": kind}
    payload = MappingProxyType(members)
    if status & (ST_UC | AMD_UECC):
        return AmdRefinement("nb", "mem_ue", (PAGE_UE, DIMM_UE), False, payload)
    page = PAGE_SB if _single_bit(synd, kind) else PAGE_CK
    return AmdRefinement("nb", "mem_ce", (page,), True, payload)


def _is_mem(code: int) -> bool:
    """A memory-hierarchy code 0000 0001 RRRR TTLL (the F bit ignored)."""
    return code & 0xEF00 == 0x0100


def _is_tlb(code: int) -> bool:
    """A TLB code 0000 0000 0001 TTLL (the F bit ignored)."""
    return code & 0xEFF0 == 0x0010


def amd_overlay(record: McaRecord, decoded: DecodedMca) -> AmdRefinement | None:
    """The AMD refinement of a decoded record, or None when the generic class stands."""
    if record.vendor != "AuthenticAMD" or record.family not in FAMILIES:
        return None
    status, code = record.status, decoded.error_code
    xec = (status >> 16) & 0xF
    if record.bank == 0:
        return _dc(xec, code, status)
    if record.bank == 1:
        return _ic(xec, code, status)
    if record.bank == 2:
        return _bu(xec, code, status)
    if record.bank == 4:
        return _nb(status)
    return None
