"""AMD Scalable MCA (family 17h and later): which unit a bank belongs to, from its IPID.

On Zen and later parts (and Hygon's), bank numbers are not fixed: bank 17 may
be a memory controller on one part and a PCIe unit on the next.  Each bank
says what it is in ``MCA_IPID``: HardwareID (bits 43:32) and McaType (bits
63:48) name the unit type, InstanceId (bits 31:0) the instance.  The
extended error code (XEC, ``MCA_STATUS`` bits 21:16) then says what failed
inside the unit; the 16-bit architectural code is often uninformative
(mca-decoding.md section 1.5).  This module is pure: registers in, facts out.

Identification of one bank record::

    vendor not AuthenticAMD/HygonGenuine, or family < 17h --> not SMCA (None)
    no IPID, IPID type (0, 0), or (HWID, McaType) unknown --> UNIDENTIFIED
    (HWID, McaType) in the table --> its unit and role:
        CORE    LS LS_V2 IF L2 DE EX FP L3   the generic gcpu class stands
        MEMORY  UMC UMC_V2                   a memory error (mem_ce/mem_ue)
        OTHER   every other unit             ereport.cpu.amd.smca.<unit>

Decisions:

* *Memory units.*  A UMC (unified memory controller) error is a memory error
  whatever its XEC (DRAM ECC, poison, address/command or write CRC errors all
  point at the channel or the DIMM, never at a core), so it is posted as
  ``mem_ce``/``mem_ue`` and is never the basis of a CPU fault.  Its channel is
  the UMC number (InstanceId >> 20: one channel per UMC on CPUs).  For DRAM
  ECC errors (XEC 0) with SyndV set, ``MCA_SYND`` bits 2:0 give the chip
  select, and the DIMM is chip select >> 1 (two chip selects per DIMM), as
  Linux's amd64_edac reads them.  The UMC's address is a normalized DRAM
  address, not a system physical one, unless Poison or PhysAddrV says
  otherwise (:func:`fmd.hw.mca.usable_physaddr` decides that): no physical
  address is invented from it.
* *Core units* keep the gcpu class (a cache or TLB error of a core is what
  the generic rules diagnose), with the unit named in the payload.
* *Other units* (data fabric CS/PIE, PB, PSP, SMU, NBIO, PCIE, XGMI, ...) and
  *unidentified banks* are posted as ``ereport.cpu.amd.smca.<unit>`` and
  ``ereport.cpu.amd.smca.unidentified``: stored and counted, never the basis of
  a CPU fault (no diagnosis engine treats these classes as CPU errors; the
  AMD family 0Fh/10h engine counts them as unrecognized).  An error in the
  PSP or a PCIe unit says nothing about the core that happened to log it.
* The payload names the unit (``smca_bank_type``: ``"LS"``, ``"UMC"``, ...,
  or ``"unidentified"``) and carries ``smca_xec`` and, with an IPID,
  ``smca_hwid``, ``smca_mcatype`` and ``smca_instance_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

SMCA_FIRST_FAMILY: Final = 0x17
SMCA_VENDORS: Final = frozenset({"AuthenticAMD", "HygonGenuine"})
CLASS_PREFIX: Final = "ereport.cpu.amd.smca."
UNIDENTIFIED: Final = "unidentified"
UNIDENTIFIED_CLASS: Final = CLASS_PREFIX + UNIDENTIFIED

# MCA_IPID fields.
_HWID_SHIFT: Final = 32
_HWID_MASK: Final = 0xFFF
_MCATYPE_SHIFT: Final = 48
_MCATYPE_MASK: Final = 0xFFFF
_INSTANCE_MASK: Final = 0xFFFF_FFFF
_UMC_CHANNEL_SHIFT: Final = 20

# MCA_STATUS fields.
_XEC_SHIFT: Final = 16
_XEC_MASK: Final = 0x3F
ST_SYNDV: Final = 1 << 53

# MCA_SYND: the chip select of a DRAM ECC error; two chip selects per DIMM.
_SYND_CS_MASK: Final = 0x7
_CS_PER_DIMM_SHIFT: Final = 1
UMC_XEC_DRAM_ECC: Final = 0x0


class Role(StrEnum):
    """What an SMCA unit is to fmd's diagnosis."""

    CORE = "core"
    MEMORY = "memory"
    OTHER = "other"


@dataclass(frozen=True)
class SmcaType:
    """One SMCA bank type: its short name, IPID identity and role."""

    name: str
    hwid: int
    mcatype: int
    role: Role
    description: str


def _t(name: str, hwid: int, mcatype: int, role: Role, description: str) -> SmcaType:
    return SmcaType(name, hwid, mcatype, role, description)


_CORE, _MEM, _OTHER = Role.CORE, Role.MEMORY, Role.OTHER

# (HWID, McaType) -> bank type, after the kernel's and rasdaemon's tables.
TYPES: Final = MappingProxyType(
    {
        (t.hwid, t.mcatype): t
        for t in (
            _t("LS", 0xB0, 0x0, _CORE, "load-store unit"),
            _t("LS_V2", 0xB0, 0x10, _CORE, "load-store unit"),
            _t("IF", 0xB0, 0x1, _CORE, "instruction fetch unit"),
            _t("L2", 0xB0, 0x2, _CORE, "L2 cache"),
            _t("DE", 0xB0, 0x3, _CORE, "decode unit"),
            _t("EX", 0xB0, 0x5, _CORE, "execution unit"),
            _t("FP", 0xB0, 0x6, _CORE, "floating point unit"),
            _t("L3", 0xB0, 0x7, _CORE, "L3 cache"),
            _t("CS", 0x2E, 0x0, _OTHER, "data fabric coherent slave"),
            _t("PIE", 0x2E, 0x1, _OTHER, "data fabric power, interrupts, etc."),
            _t("CS_V2", 0x2E, 0x2, _OTHER, "data fabric coherent slave"),
            _t("MA_LLC", 0x2E, 0x4, _OTHER, "memory attached last level cache"),
            _t("UMC", 0x96, 0x0, _MEM, "unified memory controller"),
            _t("UMC_V2", 0x96, 0x1, _MEM, "unified memory controller"),
            _t("PB", 0x05, 0x0, _OTHER, "parameter block"),
            _t("PSP", 0xFF, 0x0, _OTHER, "platform security processor"),
            _t("PSP_V2", 0xFF, 0x1, _OTHER, "platform security processor"),
            _t("SMU", 0x01, 0x0, _OTHER, "system management unit"),
            _t("SMU_V2", 0x01, 0x1, _OTHER, "system management unit"),
            _t("MP5", 0x01, 0x2, _OTHER, "microprocessor 5 unit"),
            _t("MPDMA", 0x01, 0x3, _OTHER, "MP DMA unit"),
            _t("MPRAS", 0x12, 0x0, _OTHER, "MP RAS unit"),
            _t("NBIO", 0x18, 0x0, _OTHER, "northbridge IO unit"),
            _t("PCIE", 0x46, 0x0, _OTHER, "PCI Express unit"),
            _t("PCIE_V2", 0x46, 0x1, _OTHER, "PCI Express unit"),
            _t("XGMI_PCS", 0x50, 0x0, _OTHER, "external global memory interconnect PCS"),
            _t("SSBDCI", 0x5C, 0x0, _OTHER, "SSB DCI unit"),
            _t("NBIF", 0x6C, 0x0, _OTHER, "NBIF unit"),
            _t("SHUB", 0x80, 0x0, _OTHER, "system hub"),
            _t("SATA", 0xA8, 0x0, _OTHER, "SATA unit"),
            _t("USB", 0xAA, 0x0, _OTHER, "USB unit"),
            _t("MPDACC", 0xBE, 0x0, _OTHER, "MP DACC unit"),
            _t("MPM", 0xF9, 0x0, _OTHER, "MPM unit"),
            _t("MPASP", 0xFD, 0x0, _OTHER, "MP ASP unit"),
            _t("MPASP_V2", 0xFD, 0x1, _OTHER, "MP ASP unit"),
            _t("USR_DP", 0x170, 0x0, _OTHER, "ultra short reach data plane"),
            _t("USR_CP", 0x180, 0x0, _OTHER, "ultra short reach control plane"),
            _t("PCIE_PL", 0x1E1, 0x0, _OTHER, "PCI Express physical layer"),
            _t("GMI_PCS", 0x241, 0x0, _OTHER, "global memory interconnect PCS"),
            _t("XGMI_PHY", 0x259, 0x0, _OTHER, "external global memory interconnect PHY"),
            _t("WAFL_PHY", 0x267, 0x0, _OTHER, "WAFL PHY"),
            _t("GMI_PHY", 0x269, 0x0, _OTHER, "global memory interconnect PHY"),
        )
    }
)


def is_smca(vendor: str | None, family: int | None) -> bool:
    """True for a record of an SMCA part: AMD or Hygon, family 17h or later."""
    return vendor in SMCA_VENDORS and family is not None and family >= SMCA_FIRST_FAMILY


def bank_type(ipid: int | None) -> SmcaType | None:
    """The bank type an IPID names, or None when there is none or it is unknown."""
    if ipid is None:
        return None
    hwid = (ipid >> _HWID_SHIFT) & _HWID_MASK
    mcatype = (ipid >> _MCATYPE_SHIFT) & _MCATYPE_MASK
    return TYPES.get((hwid, mcatype))


@dataclass(frozen=True)
class SmcaBank:
    """What one SMCA bank record says about its unit, and for a UMC its DIMM position."""

    type: SmcaType | None
    ipid: int | None
    xec: int
    chip_select: int | None

    @property
    def name(self) -> str:
        """The unit's short name (``LS``, ``UMC``, ...) or ``unidentified``."""
        return self.type.name if self.type is not None else UNIDENTIFIED

    @property
    def is_memory(self) -> bool:
        """True for a memory-controller (UMC) bank."""
        return self.type is not None and self.type.role is Role.MEMORY

    @property
    def is_core(self) -> bool:
        """True for a unit of a core (LS, IF, L2, DE, EX, FP, L3)."""
        return self.type is not None and self.type.role is Role.CORE

    @property
    def umc_channel(self) -> int | None:
        """The memory channel of a UMC bank (one channel per UMC on CPUs)."""
        if not self.is_memory or self.ipid is None:
            return None
        return (self.ipid & _INSTANCE_MASK) >> _UMC_CHANNEL_SHIFT

    @property
    def dimm(self) -> int | None:
        """The DIMM on the channel, from the chip select (DRAM ECC errors only)."""
        if self.chip_select is None:
            return None
        return self.chip_select >> _CS_PER_DIMM_SHIFT

    @property
    def ereport_class(self) -> str | None:
        """``ereport.cpu.amd.smca.<unit>`` for a non-core unit or an unidentified bank;
        None for core units (the gcpu class stands) and memory units (mem_ce/mem_ue)."""
        if self.type is None:
            return UNIDENTIFIED_CLASS
        if self.type.role is Role.OTHER:
            return CLASS_PREFIX + self.type.name.lower()
        return None

    def payload(self) -> dict[str, int | str]:
        """The members naming the unit (and, for a UMC, its channel and chip select)."""
        out: dict[str, int | str] = {"smca_bank_type": self.name, "smca_xec": self.xec}
        if self.ipid is not None:
            out["smca_hwid"] = (self.ipid >> _HWID_SHIFT) & _HWID_MASK
            out["smca_mcatype"] = (self.ipid >> _MCATYPE_SHIFT) & _MCATYPE_MASK
            out["smca_instance_id"] = self.ipid & _INSTANCE_MASK
        if self.chip_select is not None:
            out["chip_select"] = self.chip_select
        return out


def smca_bank(status: int, ipid: int | None, synd: int | None) -> SmcaBank:
    """Identify the unit of one SMCA bank record from its registers."""
    kind = bank_type(ipid)
    xec = (status >> _XEC_SHIFT) & _XEC_MASK
    chip_select = None
    is_umc = kind is not None and kind.role is Role.MEMORY
    if is_umc and xec == UMC_XEC_DRAM_ECC and status & ST_SYNDV and synd is not None:
        chip_select = synd & _SYND_CS_MASK
    return SmcaBank(kind, ipid, xec, chip_select)
