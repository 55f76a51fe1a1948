"""Generic x86 Machine Check Architecture decoding: one raw bank record in, one ereport out.

This module turns the registers of one MCA bank (``MCi_STATUS``, ``MCi_ADDR``,
``MCi_MISC``, the bank number and the global ``MCG_STATUS``/``MCG_CAP``) into
what the illumos generic x86 CPU module (gcpu) would post: an ereport class
``ereport.cpu.generic-x86.<leaf>``, a ``compound_errorname`` and the payload
members, plus a ``severity`` computed with the SDM UCR rules.  It is pure: no
I/O, no clock, no global state.  The text forms that produce records live in
:mod:`fmd.hw.mcelog`.

Decoding pipeline::

    McaRecord --(validate: VAL set, values in range)--> McaError on failure
        |
        +-- error_code (bits 15:0) --> gcpu table, first match --> leaf, compound name
        +-- status bits + MCG_CAP/MCG_STATUS --> severity, disp
        +-- code + vendor/bank/XEC + UC/S/PCC + ADDR/MISC --> is_memory, physaddr
        v
    DecodedMca (class, payload) --> memory_class() --> mem_ce / mem_ue / None

Decisions on the gcpu quirks (mca-decoding.md section 2.3), numbered as there:

1. *F bit.*  Copied.  The filter bit is ignored for generic-cache, TLB, cache
   and bus codes but not for memory-controller codes, so a filtered MC code
   (``0x1080``-``0x10FF``) is classified ``unknown``, exactly as gcpu does;
   the simple codes must match exactly.  Class names are what the diagnosis
   rules key on, so they stay compatible.  Memory detection (``is_memory``)
   is computed separately and *does* ignore F, so a filtered memory-controller
   CE still reaches :func:`memory_class`.
2. *Codes with no table entry.*  Copied: ``0x0000``, ``0x0006`` (SMM) and the
   2LM near-memory-cache MC codes ``0x0280``-``0x02FF`` are ``unknown``;
   ``0x0E0B`` (IO MCA) is ``bus_interconnect_io`` named
   ``BUSLG__ERR_IO_NOTIMEOUT_ERR``.  2LM codes still count as memory.
3. *``mc`` never gets ``_uc``.*  Copied; the corrected/uncorrected distinction
   for memory is carried by ``mem_ce``/``mem_ue`` and ``error_uncorrected``.
4. *Out-of-range fields.*  Copied: they print ``undefined``/``reserved`` in the
   compound name and nothing in the leaf; the ``LO`` level mnemonic uses the
   letter O, and a generic participation (PP=11) leaves a double underscore.
5. *8-bit cast bug of 2009.*  Fixed: PP and T are read from bits 10:9 and 8.
6. *Generic memory hierarchy has no compound name.*  Copied: the payload has
   no ``compound_errorname`` member and ``DecodedMca.compound_errorname`` is
   None.
7. *``telemetry_unstable``.*  Not applicable: a record is one snapshot taken by
   whoever read the MSRs; this module never re-reads registers, so it never
   emits that disposition.

Other payload decisions: ``IA32_MCi_ADDR`` is present when ADDRV is set, and
always on AMD family 0Fh (every shipping 0Fh part is rev B or later);
``IA32_MCi_MISC`` only when MISCV; ``threshold_based_error_status`` only when
``MCG_CAP.TES_P``; ``ip`` only with MCIP and EIPV and a known IP;
``bank_msr_offset`` only for a real bank (not the firmware-first bank -1).
``disp`` is always present (possibly empty): ``unconstrained`` for every UC
record, ``processor_context_corrupt`` for PCC taken during a #MC, and
``return_ip_invalid`` added to those when the #MC had RIPV clear.

Severity follows mca-decoding.md section 3.2 (VAL, PCC, UC/deferred, non-SER
UC, SER S/AR, then #MC-without-RIPV escalation); it is recorded in the payload
as ``severity``.  One exception to the escalation, as Linux grades it: an SRAR
taken in user mode (CS known, its RPL 3) with EIPV set stays SRAR although
RIPV is clear, since the kernel kills the task that consumed the data and
carries on.  In kernel mode, with CS unknown, or with EIPV clear as well, it
is fatal.

``McaRecord.mcg_cap`` is None when the source did not report MCG_CAP (the
kernel log never prints it) and an integer when it did, zero included.
Unknown, the CPU is taken to have software error recovery (as if SER_P): S/AR
grade SRAO/SRAR and a UC with neither is UCNA, and the payload says
``ser_assumed``; known with SER_P clear, a UC stays UC.  With MCG_CAP unknown,
a corrected Intel error's non-zero threshold status (bits 54:53) is reported
too (``threshold_based_error_status``), as mcelog does.

Physical addresses follow section 4: Intel needs MISCV, MISC address mode 2
and LSB <= 12 (low LSB bits masked); AMD legacy northbridge DRAM ECC (bank 4,
XEC 8, families before 17h) is used as is; AMD SMCA (family 17h+) needs Poison
or PhysAddrV and takes the LSB from ADDR bits 61:56.

Memory errors: ``is_memory`` for memory-controller codes (F ignored), the
legacy AMD northbridge's DRAM ECC errors, SMCA UMC banks (:mod:`fmd.hw.smca`
identifies SMCA units from IPID, and only UMC banks are memory there, whatever
their architectural code) and Intel software-recoverable errors that log a
physical address (below).  ``memory_only`` marks the AMD ones, which are
memory errors even without an address and never CPU errors.  Where the bank
tells, ``memory_channel``/``memory_dimm`` (also payload members) locate the
error: MCACOD bits 3:0 on Intel (0xF: unspecified), MISC bits 19:18/17:16 on
Nehalem/Westmere (family 6 models 1Ah, 1Eh, 25h, 2Ch, as mcelog's per-DIMM
accounting reads them), the UMC number and the chip select of MCA_SYND on
SMCA.  SMCA records also carry their unit's name (``smca_bank_type``) and
XEC.

Software-recoverable errors (SDM's SRAO and SRAR encodings: UC and S set, PCC
clear, on a CPU with SER) report poisoned data by the physical address of the
memory that holds it, whichever unit met the poison: a patrol scrub or an
explicit writeback (SRAO), a data load or an instruction fetch (SRAR).  Linux
takes that page out of use (``memory_failure``).  So such a record whose ADDR
is valid and whose MISC is valid with a physical address mode is a memory
error at that address (``mem_ue`` when the LSB makes it usable), not a fault of
the cache that consumed the data; its gcpu leaf and compound name stay in the
payload.  Without MISCV or with another address mode the address says nothing
of memory, and the record keeps its gcpu class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from fmd.errors import ProtocolError
from fmd.hw.smca import SmcaBank, is_smca, smca_bank

CLASS_PREFIX: Final = "ereport.cpu.generic-x86."
MEM_CE_CLASS: Final = CLASS_PREFIX + "mem_ce"
MEM_UE_CLASS: Final = CLASS_PREFIX + "mem_ue"

_U64: Final = (1 << 64) - 1

# MCi_STATUS bits (architectural and AMD).
ST_VAL: Final = 1 << 63
ST_OVER: Final = 1 << 62
ST_UC: Final = 1 << 61
ST_EN: Final = 1 << 60
ST_MISCV: Final = 1 << 59
ST_ADDRV: Final = 1 << 58
ST_PCC: Final = 1 << 57
ST_S: Final = 1 << 56
ST_AR: Final = 1 << 55
AMD_PHYSADDRV: Final = 1 << 54
AMD_DEFERRED: Final = 1 << 44
AMD_POISON: Final = 1 << 43

# MCG_STATUS and MCG_CAP bits.
MCG_RIPV: Final = 1 << 0
MCG_EIPV: Final = 1 << 1
MCG_MCIP: Final = 1 << 2
CAP_TES_P: Final = 1 << 11
CAP_SER_P: Final = 1 << 24

_F_BIT: Final = 1 << 12
_AMD_VENDORS: Final = frozenset({"AuthenticAMD", "HygonGenuine"})


class McaError(ProtocolError):
    """An MCA record cannot be decoded (VAL clear, a value out of range, ...)."""

    code = "EFMD_MCA"


class Severity(StrEnum):
    """How bad one bank record is (mca-decoding.md section 3.2)."""

    CE = "CE"
    UCNA = "UCNA"
    SRAO = "SRAO"
    SRAR = "SRAR"
    UC = "UC"
    DEFERRED = "deferred"
    FATAL = "fatal"
    INVALID = "invalid"


@dataclass(frozen=True)
class McaRecord:
    """The raw registers of one MCA bank as logged on one logical CPU.

    ``bank`` is -1 for the record Linux fabricates for firmware-first errors.
    Construction validates ranges and raises :class:`McaError`; VAL is checked
    by :func:`decode`, so a record with VAL clear can still be held and shown.
    """

    bank: int
    status: int
    cpu: int | None = None
    socket: int | None = None
    core: int | None = None
    thread: int | None = None
    apicid: int | None = None
    addr: int | None = None
    misc: int | None = None
    mcg_status: int = 0
    # None: the source did not say (the kernel log never prints MCG_CAP); 0 is
    # a CPU that reported no capabilities (no SER_P, no TES_P).
    mcg_cap: int | None = None
    vendor: str | None = None
    family: int | None = None
    model: int | None = None
    time_ns: int | None = None
    tsc: int | None = None
    ip: int | None = None
    cs: int | None = None
    ipid: int | None = None
    synd: int | None = None
    ppin: int | None = None

    def __post_init__(self) -> None:
        if not -1 <= self.bank <= 255:
            raise McaError(f"MCA bank {self.bank} is out of range: expected -1..255")
        for name in ("status", "addr", "misc", "mcg_status", "mcg_cap", "tsc", "ip"):
            _check_u64(name, getattr(self, name))
        for name in ("ipid", "synd", "ppin"):
            _check_u64(name, getattr(self, name))
        for name in ("cpu", "socket", "core", "thread", "apicid", "family", "model", "cs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise McaError(f"MCA record {name} is negative ({value})")
        if self.time_ns is not None and self.time_ns < 0:
            raise McaError(f"MCA record time_ns is negative ({self.time_ns})")


def _check_u64(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= _U64:
        raise McaError(f"MCA record {name}={value:#x} does not fit in 64 bits")


PayloadValue = int | bool | str


@dataclass(frozen=True)
class DecodedMca:
    """The gcpu view of one bank record plus severity and memory facts."""

    record: McaRecord
    leaf: str
    compound_errorname: str | None
    error_code: int
    model_specific_error_code: int
    severity: Severity
    disp: tuple[str, ...]
    is_memory: bool
    physaddr: int | None
    payload: Mapping[str, PayloadValue] = field(compare=False)
    # Where the bank says a memory error lies, when it says: the channel of its
    # memory controller and the DIMM on that channel (see _memory_location).
    memory_channel: int | None = None
    memory_dimm: int | None = None
    # A memory error that must never be the basis of a CPU fault, address or
    # not: AMD SMCA UMC banks and the legacy northbridge's DRAM ECC errors.
    memory_only: bool = False
    # The SMCA unit of the bank, on family 17h and later.
    smca: SmcaBank | None = None

    @property
    def ereport_class(self) -> str:
        """The full class, ``ereport.cpu.generic-x86.<leaf>``."""
        return CLASS_PREFIX + self.leaf


# ---------------------------------------------------------------------------
# Error-code classification: the gcpu table (mca-decoding.md section 2.3).

_TT_NAME: Final = ("I", "D", "G", "undefined")
_TT_LEAF: Final = ("i", "d", "", "")
_LL_NAME: Final = ("LO", "L1", "L2", "LG")  # letter O, as gcpu spells it
_LL_LEAF: Final = ("l0", "l1", "l2", "")
_RRRR_NAME: Final = (
    "ERR",
    "RD",
    "WR",
    "DRD",
    "DWR",
    "IRD",
    "PREFETCH",
    "EVICT",
    "SNOOP",
    *(["undefined"] * 7),
)
_PP_NAME: Final = ("SRC", "RES", "OBS", "")
_II_NAME: Final = ("M", "reserved", "IO", "")
_II_LEAF: Final = ("_memory", "", "_io", "")
_T_NAME: Final = ("NOTIMEOUT", "TIMEOUT")
_MMM_NAME: Final = ("GEN", "RD", "WR", "ADDR_CMD", "SCRUB", "reserved", "reserved", "reserved")


def _cccc_name(cccc: int) -> str:
    return "CH" if cccc == 0xF else f"CH{cccc}"


def _classify(code: int, uc: bool) -> tuple[str, str | None]:
    """Return (leaf, compound name) for a 16-bit MCA error code, gcpu first-match order."""
    u = "_uc" if uc else ""
    tt, ll = (code >> 2) & 3, code & 3
    rrrr = (code >> 4) & 0xF
    if code == 0x0001:
        return "unclassified", None
    if code == 0x0002:
        return "microcode_rom_parity", None
    if code == 0x0003:
        return "external", None
    if code == 0x0004:
        return "frc", None
    if code == 0x0005:
        return "internal_parity", None
    if code == 0x0400:
        return "internal_timer", None
    if code & 0xF800 == 0 and code & 0x0400:
        return "internal_unclassified", None
    if code & 0xEFF0 == 0 and code & 0x000C == 0x000C:
        return f"{_LL_LEAF[ll]}cache{u}", None
    if code & 0xEFE0 == 0 and code & 0x0010:
        return (f"{_LL_LEAF[ll]}{_TT_LEAF[tt]}tlb{u}", f"{_TT_NAME[tt]}TLB{_LL_NAME[ll]}_ERR")
    if code & 0xEE00 == 0 and code & 0x0100:
        return (
            f"{_LL_LEAF[ll]}{_TT_LEAF[tt]}cache{u}",
            f"{_TT_NAME[tt]}CACHE{_LL_NAME[ll]}_{_RRRR_NAME[rrrr]}_ERR",
        )
    if code & 0xE000 == 0 and code & 0x0800:
        ii, pp, t = tt, (code >> 9) & 3, (code >> 8) & 1
        return (
            f"bus_interconnect{_II_LEAF[ii]}{u}",
            f"BUS{_LL_NAME[ll]}_{_PP_NAME[pp]}_{_RRRR_NAME[rrrr]}_{_II_NAME[ii]}_{_T_NAME[t]}_ERR",
        )
    if code & 0xFF00 == 0 and code & 0x0080:
        return "mc", f"MC_{_cccc_name(code & 0xF)}_{_MMM_NAME[(code >> 4) & 7]}_ERR"
    return "unknown", None


def classify_code(code: int, uncorrected: bool = False) -> tuple[str, str | None]:
    """Return the gcpu leaf and compound name for a 16-bit error code.

    Raises :class:`McaError` when ``code`` is not a 16-bit value.
    """
    if not 0 <= code <= 0xFFFF:
        raise McaError(f"MCA error code {code:#x} is not a 16-bit value")
    return _classify(code, uncorrected)


def is_memory_controller_code(code: int) -> bool:
    """True for memory-controller codes (including 2LM near memory), F bit ignored."""
    c = code & ~_F_BIT & 0xFFFF
    return c & 0xFF80 in (0x0080, 0x0280)


# ---------------------------------------------------------------------------
# Severity and disposition (mca-decoding.md sections 3.2 and 3.4).


def _is_amd(record: McaRecord) -> bool:
    return record.vendor in _AMD_VENDORS


# CS bits 1:0 hold the requested privilege level; 3 is user mode.
_CS_RPL_MASK: Final = 0x3
_USER_RPL: Final = 3


def _user_mode(record: McaRecord) -> bool:
    """Whether the record names the interrupted code's CS and that code ran in user mode."""
    return record.cs is not None and record.cs & _CS_RPL_MASK == _USER_RPL


def has_ser(record: McaRecord) -> bool:
    """Whether the CPU grades uncorrected errors with S/AR (software error recovery).

    MCG_CAP.SER_P says so when MCG_CAP is known.  When it is not (the kernel log
    never prints it), SER is assumed: an S or AR bit only exists on SER parts,
    and every server CPU of the last decade has SER.
    """
    return record.mcg_cap is None or bool(record.mcg_cap & CAP_SER_P)


def severity(record: McaRecord) -> Severity:
    """Grade one record: invalid, CE, deferred, UCNA, SRAO, SRAR, UC or fatal."""
    st = record.status
    if not st & ST_VAL:
        return Severity.INVALID
    if st & ST_PCC:
        return Severity.FATAL
    amd = _is_amd(record)
    if not st & ST_UC:
        return Severity.DEFERRED if amd and st & AMD_DEFERRED else Severity.CE
    if amd or not has_ser(record):
        grade = Severity.UC
    else:
        s, ar = bool(st & ST_S), bool(st & ST_AR)
        if s and ar:
            grade = Severity.FATAL if st & ST_OVER else Severity.SRAR
        elif s:
            grade = Severity.SRAO
        elif ar:
            return Severity.FATAL  # AR without S is an illegal combination
        else:
            return Severity.UCNA
    mcg = record.mcg_status
    if mcg & MCG_MCIP and not mcg & MCG_RIPV and grade is not Severity.FATAL:
        if grade is Severity.SRAR and mcg & MCG_EIPV and _user_mode(record):
            # Poison consumed by a user task: the kernel kills the task, not itself.
            return grade
        return Severity.FATAL
    return grade


_DISP_ORDER: Final = (
    "processor_context_corrupt",
    "return_ip_invalid",
    "unconstrained",
)


def _disposition(record: McaRecord) -> tuple[str, ...]:
    st, mcg = record.status, record.mcg_status
    in_mce = bool(mcg & MCG_MCIP)
    found: set[str] = set()
    if st & ST_UC:
        found.add("unconstrained")
    if in_mce and st & ST_PCC:
        found.add("processor_context_corrupt")
    if found and in_mce and not mcg & MCG_RIPV:
        found.add("return_ip_invalid")
    return tuple(d for d in _DISP_ORDER if d in found)


_THRESHOLD_NAMES: Final = (
    "No tracking",
    "Green - below threshold",
    "Yellow - above threshold",
    "Reserved",
)


# ---------------------------------------------------------------------------
# Memory addresses (mca-decoding.md section 4).


def _is_amd_nb_dram(record: McaRecord) -> bool:
    legacy = record.family is None or record.family < 0x17
    return legacy and record.bank == 4 and (record.status >> 16) & 0x1F == 0x8


# Intel MCi_MISC: bits 5:0 the least significant valid bit of MCi_ADDR, bits
# 8:6 the address mode (2: physical).
_MISC_LSB_MASK: Final = 0x3F
_MISC_MODE_SHIFT: Final = 6
_MISC_MODE_MASK: Final = 0x7
_MISC_MODE_PHYSICAL: Final = 2
# An address is usable when it names at least the page (4 KiB).
_PAGE_LSB: Final = 12


def _physical_lsb(record: McaRecord) -> int | None:
    """The LSB of an Intel record's ADDR when ADDR and MISC are valid and MISC says
    the address is physical; None otherwise."""
    st, misc = record.status, record.misc
    if record.addr is None or not st & ST_ADDRV or misc is None or not st & ST_MISCV:
        return None
    if (misc >> _MISC_MODE_SHIFT) & _MISC_MODE_MASK != _MISC_MODE_PHYSICAL:
        return None
    return misc & _MISC_LSB_MASK


def is_memory_poison(record: McaRecord) -> bool:
    """True for an Intel software-recoverable error (UC and S set, PCC clear, SER)
    that logs a physical address: poisoned data in memory at that address."""
    st = record.status
    return (
        not _is_amd(record)
        and bool(st & ST_UC)
        and bool(st & ST_S)
        and not st & ST_PCC
        and has_ser(record)
        and _physical_lsb(record) is not None
    )


def usable_physaddr(record: McaRecord) -> int | None:
    """The physical address MCi_ADDR names, when the reference rules say it is usable."""
    st, addr = record.status, record.addr
    if addr is None or not st & ST_ADDRV:
        return None
    if _is_amd(record):
        if _is_amd_nb_dram(record):
            return addr
        if (
            record.family is not None
            and record.family >= 0x17
            and st & (AMD_POISON | AMD_PHYSADDRV)
        ):
            lsb = (addr >> 56) & 0x3F
            return (addr & ((1 << 56) - 1)) & ~((1 << lsb) - 1)
        return None
    misc_lsb = _physical_lsb(record)
    if misc_lsb is None or misc_lsb > _PAGE_LSB:
        return None
    return addr & ~((1 << misc_lsb) - 1)


# Intel family 6 models whose memory-controller banks put the channel and DIMM
# in MCi_MISC bits 19:18 and 17:16 (Nehalem-EP/EX and Westmere-EP, as mcelog
# reads them).
_MISC_DIMM_MODELS: Final = frozenset({0x1A, 0x1E, 0x25, 0x2C})
_INTEL_FAMILY_6: Final = 6
_MISC_CHANNEL_SHIFT: Final = 18
_MISC_DIMM_SHIFT: Final = 16
_TWO_BITS: Final = 0x3
_CCCC_UNKNOWN: Final = 0xF


def _memory_location(record: McaRecord, code: int) -> tuple[int | None, int | None]:
    """(channel, DIMM) of an Intel/architectural memory-controller error, as far as
    the bank tells: the channel from MCACOD bits 3:0 (0xF: unspecified), and on
    the models that log it, channel and DIMM from MCi_MISC."""
    if not is_memory_controller_code(code):
        return None, None
    cccc = code & 0xF
    channel = None if cccc == _CCCC_UNKNOWN else cccc
    dimm = None
    if (
        record.family == _INTEL_FAMILY_6
        and record.model in _MISC_DIMM_MODELS
        and record.misc is not None
        and record.status & ST_MISCV
    ):
        channel = (record.misc >> _MISC_CHANNEL_SHIFT) & _TWO_BITS
        dimm = (record.misc >> _MISC_DIMM_SHIFT) & _TWO_BITS
    return channel, dimm


# ---------------------------------------------------------------------------
# Decoding.


def decode(record: McaRecord) -> DecodedMca:
    """Decode one valid bank record; raise :class:`McaError` when VAL is clear."""
    st = record.status
    if not st & ST_VAL:
        raise McaError(
            f"MCA bank {record.bank} status {st:#018x} has VAL (bit 63) clear: "
            "the bank holds no error; skip it"
        )
    code, mscod = st & 0xFFFF, (st >> 16) & 0xFFFF
    uc = bool(st & ST_UC)
    leaf, compound = _classify(code, uc)
    grade = severity(record)
    disp = _disposition(record)
    amd = _is_amd(record)
    smca = (
        smca_bank(st, record.ipid, record.synd) if is_smca(record.vendor, record.family) else None
    )
    channel: int | None
    dimm: int | None
    if smca is not None:
        # SMCA: the unit comes from IPID; the architectural code says little.
        is_memory = memory_only = smca.is_memory
        channel, dimm = smca.umc_channel, smca.dimm
    else:
        nb_dram = amd and _is_amd_nb_dram(record)
        is_memory = is_memory_controller_code(code) or nb_dram or is_memory_poison(record)
        memory_only = nb_dram
        channel, dimm = (None, None) if amd else _memory_location(record, code)
    physaddr = usable_physaddr(record)

    mcg = record.mcg_status
    payload: dict[str, PayloadValue] = {
        "IA32_MCG_STATUS": mcg,
        "machine_check_in_progress": bool(mcg & MCG_MCIP),
    }
    if mcg & MCG_MCIP and mcg & MCG_EIPV and record.ip is not None:
        payload["ip"] = record.ip
    if mcg & MCG_MCIP and record.cs is not None:
        payload["privileged"] = not _user_mode(record)
    payload["bank_number"] = record.bank
    if record.bank >= 0:
        payload["bank_msr_offset"] = 0x400 + 4 * record.bank
    payload.update(
        {
            "IA32_MCi_STATUS": st,
            "overflow": bool(st & ST_OVER),
            "error_uncorrected": uc,
            "error_enabled": bool(st & ST_EN),
            "processor_context_corrupt": bool(st & ST_PCC),
        }
    )
    threshold = (st >> 53) & 3
    if record.mcg_cap is not None and record.mcg_cap & CAP_TES_P:
        payload["threshold_based_error_status"] = _THRESHOLD_NAMES[threshold]
    elif record.mcg_cap is None and not amd and not uc and threshold:
        # MCG_CAP unknown: a corrected error that reports a threshold status was
        # logged by a CPU that tracks one (mcelog reads it likewise).
        payload["threshold_based_error_status"] = _THRESHOLD_NAMES[threshold]
    payload["error_code"] = code
    payload["model_specific_error_code"] = mscod
    always_addr = amd and record.family == 0x0F
    if record.addr is not None and (st & ST_ADDRV or always_addr):
        payload["IA32_MCi_ADDR"] = record.addr
    if record.misc is not None and st & ST_MISCV:
        payload["IA32_MCi_MISC"] = record.misc
    if compound is not None:
        payload["compound_errorname"] = compound
    if smca is not None:
        payload.update(smca.payload())
    if channel is not None:
        payload["memory_channel"] = channel
    if dimm is not None:
        payload["memory_dimm"] = dimm
    payload["disp"] = ",".join(disp)
    payload["severity"] = str(grade)
    if uc and not amd and record.mcg_cap is None:
        # Graded with S/AR although MCG_CAP (SER_P) was not reported.
        payload["ser_assumed"] = True
    return DecodedMca(
        record=record,
        leaf=leaf,
        compound_errorname=compound,
        error_code=code,
        model_specific_error_code=mscod,
        severity=grade,
        disp=disp,
        is_memory=is_memory,
        physaddr=physaddr,
        payload=MappingProxyType(payload),
        memory_channel=channel,
        memory_dimm=dimm,
        memory_only=memory_only,
        smca=smca,
    )


def memory_class(decoded: DecodedMca) -> str | None:
    """``...mem_ce`` or ``...mem_ue`` for a memory error with a usable address, else None.

    Uncorrected and AMD deferred errors are ``mem_ue``; corrected ones ``mem_ce``.
    """
    if not decoded.is_memory or decoded.physaddr is None:
        return None
    return memory_severity_class(decoded)


def memory_severity_class(decoded: DecodedMca) -> str:
    """``...mem_ce`` for a corrected error, ``...mem_ue`` for anything worse, whatever
    the address: the class of a memory error attributed some other way."""
    return MEM_CE_CLASS if decoded.severity is Severity.CE else MEM_UE_CLASS
