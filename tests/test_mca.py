"""Tests for fmd.hw.mca: gcpu classification, payload, severity and memory addresses."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import ProtocolError
from fmd.hw.mca import (
    MEM_CE_CLASS,
    MEM_UE_CLASS,
    McaError,
    McaRecord,
    Severity,
    classify_code,
    decode,
    is_memory_controller_code,
    memory_class,
    severity,
    usable_physaddr,
)

VAL = 1 << 63
OVER = 1 << 62
UC = 1 << 61
EN = 1 << 60
MISCV = 1 << 59
ADDRV = 1 << 58
PCC = 1 << 57
S = 1 << 56
AR = 1 << 55
RIPV, EIPV, MCIP = 1, 2, 4
SER_P = 1 << 24
TES_P = 1 << 11
ICX_CAP = 0x0F000C1C  # Ice Lake-SP MCG_CAP from the reference: SER_P and TES_P set
INTEL = "GenuineIntel"
AMD = "AuthenticAMD"

_LEVELS = ("l0", "l1", "l2", "")
_COMPOUND = (
    {f"{ll}cache" for ll in _LEVELS}
    | {f"{ll}{tt}tlb" for ll in _LEVELS for tt in ("d", "i", "")}
    | {f"{ll}{tt}cache" for ll in _LEVELS for tt in ("d", "i", "")}
    | {"bus_interconnect", "bus_interconnect_memory", "bus_interconnect_io"}
)
DOCUMENTED_LEAVES = (
    {
        "unclassified",
        "microcode_rom_parity",
        "external",
        "frc",
        "internal_parity",
        "internal_timer",
        "internal_unclassified",
        "mc",
        "unknown",
    }
    | _COMPOUND
    | {leaf + "_uc" for leaf in _COMPOUND}
)


def rec(status: int, **kw: object) -> McaRecord:
    """Build a record on bank 0 with VAL forced on."""
    kw.setdefault("bank", 0)
    return McaRecord(status=status | VAL, **kw)  # type: ignore[arg-type]


# --- hand-checked examples from mca-decoding.md ------------------------------------------


@pytest.mark.parametrize(
    ("code", "uc", "leaf", "compound"),
    [
        (0x0000, False, "unknown", None),  # no error: no table entry
        (0x0001, False, "unclassified", None),
        (0x0002, False, "microcode_rom_parity", None),
        (0x0003, False, "external", None),
        (0x0004, False, "frc", None),
        (0x0005, True, "internal_parity", None),  # simple codes never take _uc
        (0x0006, False, "unknown", None),  # SMM handler violation (V43)
        (0x0400, False, "internal_timer", None),
        (0x0401, False, "internal_unclassified", None),
        (0x07FF, False, "internal_unclassified", None),
        (0x0E0B, True, "bus_interconnect_io_uc", "BUSLG__ERR_IO_NOTIMEOUT_ERR"),  # IO MCA
        (0x017A, False, "l2cache", "GCACHEL2_EVICT_ERR"),  # LLC writeback
        (0x0135, False, "l1dcache", "DCACHEL1_DRD_ERR"),
        (0x0134, True, "l0dcache_uc", "DCACHELO_DRD_ERR"),  # data load, letter O
        (0x0150, True, "l0icache_uc", "ICACHELO_IRD_ERR"),  # instruction fetch
        (0x0108, False, "l0cache", "GCACHELO_ERR_ERR"),  # V09 SMCA watchdog code
        (0x000E, False, "l2cache", None),  # generic memhier: no compound name
        (0x100E, True, "l2cache_uc", None),  # F bit ignored for generic memhier
        (0x0011, False, "l1itlb", "ITLBL1_ERR"),
        (0x001F, False, "tlb", "undefinedTLBLG_ERR"),  # TT=11 reserved
        (0x01F5, False, "l1dcache", "DCACHEL1_undefined_ERR"),  # RRRR 1111 reserved
        (0x1135, False, "l1dcache", "DCACHEL1_DRD_ERR"),  # F bit ignored for cache
        (0x00B0, False, "mc", "MC_CH0_ADDR_CMD_ERR"),  # mcelog#90 AC_CHANNEL0
        (0x00C3, True, "mc", "MC_CH3_SCRUB_ERR"),  # mc never takes _uc
        (0x009F, True, "mc", "MC_CH_RD_ERR"),  # firmware-first GHES code, channel unknown
        (0x00EF, False, "mc", "MC_CH_reserved_ERR"),
        (0x10B0, False, "unknown", None),  # filtered MC code (V44)
        (0x0280, False, "unknown", None),  # 2LM MC (V45)
        (0x2420, False, "unknown", None),  # V10
        (0x0813, False, "bus_interconnect_memory", "BUSLG_SRC_RD_M_NOTIMEOUT_ERR"),  # AMD NB
        (0x1F0F, True, "bus_interconnect_uc", "BUSLG__ERR__TIMEOUT_ERR"),
        (0x0A37, False, "bus_interconnect", "BUSLG_RES_DRD_reserved_NOTIMEOUT_ERR"),
    ],
)
def test_reference_examples(code: int, uc: bool, leaf: str, compound: str | None) -> None:
    """Each code from the reference decodes to its documented leaf and compound name."""
    assert (leaf, compound) == classify_code(code, uc)
    decoded = decode(rec(code | (UC if uc else 0)))
    assert leaf == decoded.leaf
    assert "ereport.cpu.generic-x86." + leaf == decoded.ereport_class
    assert compound == decoded.compound_errorname
    assert compound == decoded.payload.get("compound_errorname")


def _sdm_family(code: int) -> str:
    """An independent decode in the SDM order of section 2.2, with gcpu's quirks applied."""
    if code in (0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0400):
        return "simple"
    if 0x0401 <= code <= 0x07FF:
        return "internal_unclassified"
    c = code & 0xEFFF
    if c & 0xFFFC == 0x000C:
        return "generic_cache"
    if c & 0xFFF0 == 0x0010:
        return "tlb"
    if c & 0xFF80 == 0x0080:
        return "mc" if code == c else "unknown"  # quirk 1: filtered MC is unknown
    if c & 0xFF80 == 0x0280:
        return "unknown"  # quirk 2: no 2LM entry
    if c & 0xFF00 == 0x0100:
        return "cache"
    if c & 0xF800 == 0x0800:
        return "bus"
    return "unknown"


def _leaf_family(leaf: str) -> str:
    base = leaf.removesuffix("_uc")
    if base in ("unclassified", "microcode_rom_parity", "external", "frc"):
        return "simple"
    if base in ("internal_parity", "internal_timer"):
        return "simple"
    if base.endswith("tlb"):
        return "tlb"
    if base.startswith("bus_interconnect"):
        return "bus"
    if base in ("l0cache", "l1cache", "l2cache", "cache"):
        return "generic_cache|cache"
    if base.endswith("cache"):
        return "cache"
    return base


def test_all_65536_codes_map_to_one_documented_class() -> None:
    """Every 16-bit error code, corrected and uncorrected, lands on one documented leaf."""
    for code in range(0x10000):
        family = _sdm_family(code)
        for uc in (False, True):
            leaf, compound = classify_code(code, uc)
            assert leaf in DOCUMENTED_LEAVES, hex(code)
            assert family in _leaf_family(leaf).split("|"), (hex(code), leaf)
            assert leaf.endswith("_uc") == (
                uc and family in ("generic_cache", "tlb", "cache", "bus")
            )
            assert (compound is None) == (family not in ("tlb", "cache", "bus", "mc")), hex(code)


def test_all_65536_codes_decode_with_random_other_bits() -> None:
    """Every error code decodes, with seeded random other status bits, to its table leaf."""
    rng = random.Random(0x4D4341)
    for code in range(0x10000):
        status = VAL | (rng.getrandbits(63) & ~0xFFFF) | code
        record = McaRecord(
            bank=rng.randrange(-1, 256),
            status=status,
            mcg_status=rng.getrandbits(64),
            mcg_cap=rng.getrandbits(64),
            addr=rng.getrandbits(64),
            misc=rng.getrandbits(64),
            vendor=rng.choice([None, INTEL, AMD]),
            family=rng.choice([None, 0x0F, 0x10, 0x19]),
        )
        decoded = decode(record)
        assert (decoded.leaf, decoded.compound_errorname) == classify_code(code, bool(status & UC))
        assert decoded.severity is not Severity.INVALID


@given(
    code=st.integers(0, 0xFFFF),
    high=st.integers(0, (1 << 63) - 1),
    bank=st.integers(-1, 255),
    mcg_status=st.integers(0, (1 << 64) - 1),
    mcg_cap=st.integers(0, (1 << 64) - 1),
    addr=st.none() | st.integers(0, (1 << 64) - 1),
    misc=st.none() | st.integers(0, (1 << 64) - 1),
    vendor=st.sampled_from([None, INTEL, AMD, "HygonGenuine", "CentaurHauls"]),
    family=st.none() | st.integers(0, 0x1A),
)
def test_decode_never_raises_on_valid_records(
    code: int,
    high: int,
    bank: int,
    mcg_status: int,
    mcg_cap: int,
    addr: int | None,
    misc: int | None,
    vendor: str | None,
    family: int | None,
) -> None:
    """A VAL-set record with any other bits decodes to a documented class and a real severity."""
    status = VAL | (high & ~0xFFFF) | code
    record = McaRecord(
        bank=bank,
        status=status,
        mcg_status=mcg_status,
        mcg_cap=mcg_cap,
        addr=addr,
        misc=misc,
        vendor=vendor,
        family=family,
    )
    decoded = decode(record)
    assert decoded.leaf in DOCUMENTED_LEAVES
    assert (decoded.leaf, decoded.compound_errorname) == classify_code(code, bool(status & UC))
    assert code == decoded.payload["error_code"]
    assert (status >> 16) & 0xFFFF == decoded.payload["model_specific_error_code"]
    assert decoded.severity is not Severity.INVALID
    assert str(decoded.severity) == decoded.payload["severity"]
    assert memory_class(decoded) in (None, MEM_CE_CLASS, MEM_UE_CLASS)


# --- invalid records ----------------------------------------------------------------------


def test_val_clear_raises_naming_the_reason() -> None:
    """Decoding a record with VAL clear raises McaError that mentions VAL."""
    with pytest.raises(McaError, match="VAL"):
        decode(McaRecord(bank=1, status=UC | 0x0135))


def test_mca_error_is_a_protocol_error() -> None:
    """McaError sits under ProtocolError in the one error hierarchy."""
    assert issubclass(McaError, ProtocolError)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"bank": 256, "status": VAL}, "bank 256"),
        ({"bank": -2, "status": VAL}, "bank -2"),
        ({"bank": 0, "status": 1 << 64}, "status"),
        ({"bank": 0, "status": VAL, "addr": -1}, "addr"),
        ({"bank": 0, "status": VAL, "cpu": -3}, "cpu"),
        ({"bank": 0, "status": VAL, "time_ns": -1}, "time_ns"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, int], needle: str) -> None:
    """A record with an out-of-range value cannot be built; the message names the field."""
    with pytest.raises(McaError, match=needle):
        McaRecord(**kwargs)  # type: ignore[arg-type]


def test_classify_code_refuses_wide_codes() -> None:
    """classify_code refuses a value that is not 16 bits wide."""
    with pytest.raises(McaError, match="16-bit"):
        classify_code(0x10000)


# --- severity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "mcg_status", "mcg_cap", "vendor", "expected"),
    [
        (0x0135, 0, ICX_CAP, INTEL, Severity.CE),
        (EN | 0x0135, 0, 0, INTEL, Severity.CE),
        ((1 << 44) | 0x0135, 0, 0, AMD, Severity.DEFERRED),
        ((1 << 44) | 0x0135, 0, 0, INTEL, Severity.CE),  # bit 44 means nothing on Intel
        (UC | EN | 0x0135, 0, 0, AMD, Severity.UC),
        (UC | EN | S | AR | 0x0134, RIPV | EIPV | MCIP, 0, INTEL, Severity.UC),  # no SER_P
        (UC | EN | S | AR | 0x0134, RIPV | MCIP, ICX_CAP, INTEL, Severity.SRAR),
        (OVER | UC | EN | S | AR | 0x0134, RIPV | MCIP, ICX_CAP, INTEL, Severity.FATAL),
        (UC | EN | S | 0x017A, RIPV | MCIP, ICX_CAP, INTEL, Severity.SRAO),
        (UC | EN | AR | 0x0134, RIPV | MCIP, ICX_CAP, INTEL, Severity.FATAL),  # AR without S
        (UC | EN | 0x00C0, 0, ICX_CAP, INTEL, Severity.UCNA),
        (OVER | UC | 0x00C0, 0, ICX_CAP, INTEL, Severity.UCNA),  # OVER ignored for UCNA
        (PCC | 0x0135, 0, ICX_CAP, INTEL, Severity.FATAL),
        (PCC | UC | 0x0135, 0, 0, AMD, Severity.FATAL),
        (UC | EN | S | 0x017A, MCIP, ICX_CAP, INTEL, Severity.FATAL),  # #MC, RIPV clear
        (UC | EN | S | AR | 0x0134, EIPV | MCIP, ICX_CAP, INTEL, Severity.FATAL),
        (UC | EN | 0x0135, MCIP, 0, AMD, Severity.FATAL),  # UC escalates too
        (UC | EN | 0x00C0, MCIP, ICX_CAP, INTEL, Severity.UCNA),  # UCNA does not escalate
        (UC | EN | S | 0x017A, 0, ICX_CAP, INTEL, Severity.SRAO),  # polled: no escalation
    ],
)
def test_severity_rules(
    status: int, mcg_status: int, mcg_cap: int, vendor: str, expected: Severity
) -> None:
    """Severity follows the section 3.2 order: PCC, CE/deferred, non-SER UC, S/AR, escalation."""
    record = rec(status, mcg_status=mcg_status, mcg_cap=mcg_cap, vendor=vendor)
    assert expected == severity(record)
    assert expected == decode(record).severity
    assert str(expected) == decode(record).payload["severity"]


def test_val_clear_is_invalid_severity() -> None:
    """severity() grades a VAL-clear record as invalid instead of raising."""
    assert severity(McaRecord(bank=0, status=UC | PCC)) == Severity.INVALID


# --- payload -------------------------------------------------------------------------------


def test_payload_members_for_a_corrected_cache_error() -> None:
    """A corrected L1 data cache error carries the gcpu payload members with their values."""
    status = VAL | EN | MISCV | ADDRV | (0x0001 << 16) | 0x0135
    record = McaRecord(
        bank=1, status=status, addr=0x1234, misc=0x86, mcg_status=0, mcg_cap=0x1000C18
    )
    decoded = decode(record)
    assert {
        "IA32_MCG_STATUS": 0,
        "machine_check_in_progress": False,
        "bank_number": 1,
        "bank_msr_offset": 0x404,
        "IA32_MCi_STATUS": status,
        "overflow": False,
        "error_uncorrected": False,
        "error_enabled": True,
        "processor_context_corrupt": False,
        "threshold_based_error_status": "No tracking",
        "error_code": 0x0135,
        "model_specific_error_code": 1,
        "IA32_MCi_ADDR": 0x1234,
        "IA32_MCi_MISC": 0x86,
        "compound_errorname": "DCACHEL1_DRD_ERR",
        "disp": "",
        "severity": "CE",
    } == dict(decoded.payload)


@pytest.mark.parametrize(
    ("bits", "text"),
    [
        (0, "No tracking"),
        (1, "Green - below threshold"),
        (2, "Yellow - above threshold"),
        (3, "Reserved"),
    ],
)
def test_threshold_status_strings(bits: int, text: str) -> None:
    """With TES_P, bits 54:53 become gcpu's threshold strings."""
    decoded = decode(rec((bits << 53) | 0x000E, mcg_cap=TES_P))
    assert text == decoded.payload["threshold_based_error_status"]


def test_threshold_status_absent_without_tes_p() -> None:
    """Without MCG_CAP.TES_P there is no threshold member (AMD's bit 46 is not a count)."""
    decoded = decode(rec(0xD4004000 << 32 | 0x0813, vendor=AMD, family=0x10, bank=4))
    assert "threshold_based_error_status" not in decoded.payload


def test_addr_and_misc_only_when_valid() -> None:
    """IA32_MCi_ADDR needs ADDRV and IA32_MCi_MISC needs MISCV."""
    decoded = decode(rec(0x0135, addr=0x1000, misc=0x86))
    assert "IA32_MCi_ADDR" not in decoded.payload
    assert "IA32_MCi_MISC" not in decoded.payload


def test_amd_family_0f_always_carries_addr() -> None:
    """On AMD family 0Fh the address is added even with ADDRV clear."""
    decoded = decode(rec(0x0813, addr=0xF075B2000, vendor=AMD, family=0x0F, bank=4))
    assert decoded.payload["IA32_MCi_ADDR"] == 0xF075B2000


def test_ip_only_during_mce_with_eipv() -> None:
    """ip is reported only when MCIP and EIPV are both set; privileged comes from CS."""
    with_ip = decode(rec(UC | 0x0134, mcg_status=MCIP | EIPV | RIPV, ip=0xFFFF1000, cs=0x33))
    assert with_ip.payload["ip"] == 0xFFFF1000
    assert False is with_ip.payload["privileged"]
    without = decode(rec(UC | 0x0134, mcg_status=MCIP | RIPV, ip=0xFFFF1000, cs=0x10))
    assert "ip" not in without.payload
    assert True is without.payload["privileged"]


@pytest.mark.parametrize(
    ("status", "mcg_status", "disp"),
    [
        (0x0135, MCIP, ()),
        (UC | 0x0135, 0, ("unconstrained",)),
        (UC | 0x0135, MCIP | RIPV, ("unconstrained",)),
        (
            UC | PCC | 0x0135,
            MCIP,
            ("processor_context_corrupt", "return_ip_invalid", "unconstrained"),
        ),
        (PCC | 0x0135, 0, ()),  # PCC only counts during a #MC
        (PCC | 0x0135, MCIP | RIPV, ("processor_context_corrupt",)),
    ],
)
def test_disposition(status: int, mcg_status: int, disp: tuple[str, ...]) -> None:
    """disp lists gcpu dispositions in their fixed order."""
    decoded = decode(rec(status, mcg_status=mcg_status))
    assert disp == decoded.disp
    assert ",".join(disp) == decoded.payload["disp"]


def test_firmware_first_bank_has_no_msr_offset() -> None:
    """Linux's GHES record on bank -1 decodes as memory with no bank_msr_offset."""
    status = VAL | EN | ADDRV | MISCV | 0x009F
    decoded = decode(McaRecord(bank=-1, status=status, addr=0x4ABFFC123, misc=(2 << 6) | 12))
    assert "bank_msr_offset" not in decoded.payload
    assert decoded.payload["bank_number"] == -1
    assert decoded.is_memory
    assert decoded.physaddr == 0x4ABFFC000
    assert memory_class(decoded) == MEM_CE_CLASS


# --- memory addresses -----------------------------------------------------------------------


def test_intel_mc_ce_with_line_granularity() -> None:
    """A corrected MC error with MISC mode 2, LSB 6 gives a masked address and mem_ce."""
    decoded = decode(rec(MISCV | ADDRV | 0x0090, addr=0x1E9F07F, misc=(2 << 6) | 6))
    assert decoded.is_memory
    assert decoded.physaddr == 0x1E9F040
    assert memory_class(decoded) == MEM_CE_CLASS


def test_intel_mc_ue_is_mem_ue() -> None:
    """An uncorrected MC error (UCNA, patrol scrub) with a page-granular address is mem_ue."""
    decoded = decode(
        rec(UC | EN | MISCV | ADDRV | 0x00C0, addr=0x12345678, misc=(2 << 6) | 12, mcg_cap=ICX_CAP)
    )
    assert decoded.severity == Severity.UCNA
    assert decoded.physaddr == 0x12345000
    assert memory_class(decoded) == MEM_UE_CLASS


@pytest.mark.parametrize(
    ("status", "misc"),
    [
        (ADDRV | 0x0090, (2 << 6) | 6),  # MISCV clear
        (MISCV | 0x0090, (2 << 6) | 6),  # ADDRV clear
        (MISCV | ADDRV | 0x0090, (1 << 6) | 6),  # linear address mode
        (MISCV | ADDRV | 0x0090, (2 << 6) | 13),  # wider than a page
    ],
)
def test_intel_address_not_usable(status: int, misc: int) -> None:
    """Without ADDRV, MISCV, physical mode and LSB <= 12 there is no physaddr and no mem_*."""
    decoded = decode(rec(status, addr=0x1000, misc=misc))
    assert decoded.is_memory
    assert decoded.physaddr is None
    assert memory_class(decoded) is None


def test_filtered_mc_code_is_unknown_but_memory() -> None:
    """A filtered MC code is gcpu-unknown (quirk 1) yet still a memory error for mem_ce."""
    decoded = decode(rec(MISCV | ADDRV | 0x1090, addr=0x2000, misc=(2 << 6) | 6))
    assert decoded.leaf == "unknown"
    assert memory_class(decoded) == MEM_CE_CLASS


def test_2lm_code_is_memory() -> None:
    """A 2LM near-memory-cache MC code is memory although gcpu names it unknown."""
    assert is_memory_controller_code(0x0281)
    assert not is_memory_controller_code(0x0135)


# --- software-recoverable errors: poison in memory ----------------------------------------

# What a Linux 6.1 guest under QEMU (Intel vCPU, family 6 model 85) logged for the
# machine checks QEMU delivers for host poison: MCG_CAP with SER_P, bank 9.
QEMU_CAP = 0x100010A
QEMU_BANK = 9
QEMU_SRAO = 0xBD000000000000C0  # VAL UC EN MISCV ADDRV S, MCACOD 0xC0 (memory scrub)
QEMU_SRAR = 0xBD80000000000134  # VAL UC EN MISCV ADDRV S AR, MCACOD 0x134 (data load)
QEMU_MISC = 0x86  # physical address mode, LSB 6
SRAO_ADDR = 0x20000000
SRAR_ADDR = 0x20100000
KERNEL_CS = 0x10
USER_CS = 0x33
USER_IP = 0x55E3A96BB290
KERNEL_IP = 0xFFFFFFFF8EC592EB
# MCi_MISC: bits 5:0 the address's LSB, bits 8:6 its mode.
MISC_LSB_MASK = 0x3F
MISC_MODE_SHIFT = 6
MISC_MODE_MASK = 0x7
MODE_LINEAR = 1
MODE_PHYSICAL = 2
PAGE_LSB = 12
LINE_LSB = 6
MISC_PHYS_PAGE = (MODE_PHYSICAL << MISC_MODE_SHIFT) | PAGE_LSB  # QEMU's KVM path
MISC_LINEAR = (MODE_LINEAR << MISC_MODE_SHIFT) | LINE_LSB
MCACOD_MASK = 0xFFFF
SRAR_DATA_LOAD = 0x0134
SRAR_FETCH = 0x0150
FAMILY_6 = 6
SKYLAKE_SP = 85
MAX_ADDR = (1 << 52) - 1
U64 = (1 << 64) - 1


def qemu_record(
    status: int, addr: int, mcg_status: int, cs: int | None, ip: int | None, **kw: object
) -> McaRecord:
    """A record with QEMU's MCG_CAP and bank, as the guest kernel logged it."""
    kw.setdefault("misc", QEMU_MISC)
    return McaRecord(
        bank=QEMU_BANK,
        status=status,
        addr=addr,
        mcg_status=mcg_status,
        mcg_cap=QEMU_CAP,
        cs=cs,
        ip=ip,
        vendor=INTEL,
        family=FAMILY_6,
        model=SKYLAKE_SP,
        **kw,  # type: ignore[arg-type]
    )


def test_qemu_srao_scrub_is_mem_ue_at_its_address() -> None:
    """QEMU's SRAO memory scrub is an SRAO memory error at its address: mem_ue."""
    decoded = decode(qemu_record(QEMU_SRAO, SRAO_ADDR, MCIP | RIPV, KERNEL_CS, KERNEL_IP))
    assert (decoded.severity, decoded.is_memory, decoded.physaddr) == (
        Severity.SRAO,
        True,
        SRAO_ADDR,
    )
    assert memory_class(decoded) == MEM_UE_CLASS


def test_qemu_srar_data_load_in_user_mode_is_recoverable_memory() -> None:
    """QEMU's SRAR data load taken in user mode with RIPV clear stays SRAR (the kernel
    kills the task) and is a memory error at its address, not a data-cache fault."""
    decoded = decode(qemu_record(QEMU_SRAR, SRAR_ADDR, MCIP | EIPV, USER_CS, USER_IP))
    assert (decoded.severity, decoded.is_memory, decoded.physaddr) == (
        Severity.SRAR,
        True,
        SRAR_ADDR,
    )
    assert memory_class(decoded) == MEM_UE_CLASS
    assert decoded.leaf == "l0dcache_uc"  # the gcpu view stays in the payload
    assert decoded.payload["compound_errorname"] == "DCACHELO_DRD_ERR"
    assert decoded.payload["privileged"] is False
    assert decoded.payload["disp"] == "return_ip_invalid,unconstrained"


@pytest.mark.parametrize(
    ("mcg_status", "cs"),
    [
        (MCIP | EIPV, KERNEL_CS),  # kernel mode
        (MCIP | EIPV, None),  # mode unknown
        (MCIP, USER_CS),  # neither restart nor error IP
    ],
)
def test_srar_without_ripv_outside_user_mode_is_fatal(mcg_status: int, cs: int | None) -> None:
    """An SRAR with RIPV clear is fatal in kernel mode, with CS unknown or without EIPV;
    the poison still lies in memory at its address."""
    ip = None if cs is None else USER_IP
    decoded = decode(qemu_record(QEMU_SRAR, SRAR_ADDR, mcg_status, cs, ip))
    assert decoded.severity == Severity.FATAL
    assert memory_class(decoded) == MEM_UE_CLASS


def test_srar_instruction_fetch_with_page_granular_address_is_memory() -> None:
    """An SRAR instruction fetch with QEMU/KVM's MISC (physical, LSB 12) is mem_ue at the page."""
    status = VAL | UC | EN | MISCV | ADDRV | S | AR | SRAR_FETCH
    decoded = decode(
        qemu_record(status, SRAR_ADDR + 0x123, MCIP | EIPV, USER_CS, USER_IP, misc=MISC_PHYS_PAGE)
    )
    assert (decoded.severity, decoded.physaddr) == (Severity.SRAR, SRAR_ADDR)
    assert memory_class(decoded) == MEM_UE_CLASS


@pytest.mark.parametrize(
    ("status", "misc", "mcg_cap"),
    [
        (QEMU_SRAR & ~MISCV, QEMU_MISC, QEMU_CAP),  # MISC not valid
        (QEMU_SRAR, MISC_LINEAR, QEMU_CAP),  # not a physical address
        (QEMU_SRAR & ~ADDRV, QEMU_MISC, QEMU_CAP),  # ADDR not valid
        (QEMU_SRAR | PCC, QEMU_MISC, QEMU_CAP),  # processor context corrupt
        (QEMU_SRAR, QEMU_MISC, QEMU_CAP & ~SER_P),  # no software error recovery
        (QEMU_SRAR & ~(UC | S | AR), QEMU_MISC, QEMU_CAP),  # corrected
        (QEMU_SRAR & ~(S | AR), QEMU_MISC, QEMU_CAP),  # UCNA: no S
    ],
)
def test_data_load_error_without_poison_address_is_not_memory(
    status: int, misc: int, mcg_cap: int
) -> None:
    """A data-load error is memory only when UC, S, SER, no PCC, and a valid physical ADDR."""
    record = McaRecord(
        bank=QEMU_BANK,
        status=status,
        addr=SRAR_ADDR,
        misc=misc,
        mcg_status=MCIP | RIPV | EIPV,
        mcg_cap=mcg_cap,
        vendor=INTEL,
    )
    decoded = decode(record)
    assert (decoded.is_memory, memory_class(decoded)) == (False, None)
    assert decoded.leaf.startswith("l0dcache")


def test_poison_rule_does_not_apply_to_amd() -> None:
    """AMD has no S bit: an AMD data-cache UC with an address is not made a memory error."""
    record = McaRecord(
        bank=0, status=QEMU_SRAR, addr=SRAR_ADDR, misc=QEMU_MISC, vendor=AMD, family=0x10
    )
    assert decode(record).is_memory is False


@given(
    status=st.integers(min_value=0, max_value=U64),
    misc=st.integers(min_value=0, max_value=U64),
    addr=st.integers(min_value=0, max_value=MAX_ADDR),
    mcg_cap=st.sampled_from([None, 0, QEMU_CAP]),
)
def test_cache_code_is_memory_exactly_for_poison_at_a_physical_address(
    status: int, misc: int, addr: int, mcg_cap: int | None
) -> None:
    """An Intel cache-code record is a memory error iff UC and S are set, PCC clear, the
    CPU has SER (or MCG_CAP is unknown), ADDR and MISC valid and MISC's mode physical;
    its physaddr is then ADDR with MISC's LSB masked, when the LSB is at most 12."""
    status = (status & ~MCACOD_MASK) | VAL | SRAR_DATA_LOAD
    record = McaRecord(
        bank=QEMU_BANK, status=status, addr=addr, misc=misc, mcg_cap=mcg_cap, vendor=INTEL
    )
    decoded = decode(record)
    physical = (
        bool(status & ADDRV)
        and bool(status & MISCV)
        and (misc >> MISC_MODE_SHIFT) & MISC_MODE_MASK == MODE_PHYSICAL
    )
    poison = (
        physical
        and bool(status & UC)
        and bool(status & S)
        and not status & PCC
        and (mcg_cap is None or bool(mcg_cap & SER_P))
    )
    assert decoded.is_memory == poison
    lsb = misc & MISC_LSB_MASK
    usable = physical and lsb <= PAGE_LSB
    expected_physaddr = addr & ~((1 << lsb) - 1) if usable else None
    assert decoded.physaddr == expected_physaddr
    assert memory_class(decoded) == (MEM_UE_CLASS if poison and usable else None)


def test_amd_northbridge_dram_ecc() -> None:
    """AMD legacy NB bank 4 with XEC 8 is a memory error and its address is usable."""
    status = EN | ADDRV | (0x8 << 16) | 0x0813
    decoded = decode(rec(status, bank=4, addr=0xF075B2040, vendor=AMD, family=0x10))
    assert decoded.is_memory
    assert decoded.physaddr == 0xF075B2040
    assert memory_class(decoded) == MEM_CE_CLASS
    assert decoded.leaf == "bus_interconnect_memory"


def test_amd_other_bank_is_not_dram() -> None:
    """XEC 8 on a bank other than 4 is not northbridge DRAM ECC."""
    decoded = decode(rec(ADDRV | (0x8 << 16) | 0x0813, bank=2, addr=0x1000, vendor=AMD))
    assert not decoded.is_memory
    assert decoded.physaddr is None


def test_amd_deferred_dram_is_mem_ue() -> None:
    """An AMD deferred DRAM error is graded deferred and reported as mem_ue."""
    status = ADDRV | (1 << 44) | (0x8 << 16) | 0x0813
    decoded = decode(rec(status, bank=4, addr=0x4ABFFC000, vendor=AMD, family=0x15))
    assert decoded.severity == Severity.DEFERRED
    assert memory_class(decoded) == MEM_UE_CLASS


def test_amd_smca_address_needs_poison_or_physaddrv() -> None:
    """On SMCA an address is usable only with Poison or PhysAddrV, masked by ADDR[61:56]."""
    addr = (6 << 56) | 0x12345678
    plain = rec(UC | ADDRV | 0x0135, addr=addr, vendor=AMD, family=0x19, bank=0)
    poisoned = rec(UC | ADDRV | (1 << 43) | 0x0135, addr=addr, vendor=AMD, family=0x19, bank=0)
    assert usable_physaddr(plain) is None
    assert usable_physaddr(poisoned) == 0x12345640


# --- MCG_CAP unknown (the kernel log never prints it) ----------------------------------------


@pytest.mark.parametrize(
    ("status", "mcg_status", "expected"),
    [
        (UC | EN | S | AR | 0x0134, RIPV | EIPV | MCIP, Severity.SRAR),
        (UC | EN | S | 0x017A, RIPV | MCIP, Severity.SRAO),
        (UC | EN | S | 0x017A, 0, Severity.SRAO),  # polled
        (UC | EN | 0x00C0, 0, Severity.UCNA),
        (OVER | UC | EN | S | AR | 0x0134, RIPV | MCIP, Severity.FATAL),
        (UC | EN | AR | 0x0134, RIPV | MCIP, Severity.FATAL),  # AR without S
        (UC | EN | S | 0x017A, MCIP, Severity.FATAL),  # #MC with RIPV clear
        (EN | 0x0135, 0, Severity.CE),
    ],
)
def test_unknown_mcg_cap_grades_as_if_ser_p(
    status: int, mcg_status: int, expected: Severity
) -> None:
    """With MCG_CAP not reported (None), S/AR are read as on a SER_P CPU: SRAO/SRAR,
    UCNA for a UC with neither, not plain UC; the payload says SER was assumed."""
    record = rec(status, mcg_status=mcg_status, vendor=INTEL)
    assert record.mcg_cap is None
    decoded = decode(record)
    assert decoded.severity == expected
    assert decoded.payload.get("ser_assumed", False) == bool(status & UC)


def test_reported_mcg_cap_without_ser_p_stays_uc() -> None:
    """MCG_CAP reported with SER_P clear (zero included) differs from unknown: UC stays UC."""
    status = UC | EN | S | AR | 0x0134
    assert severity(rec(status, mcg_status=RIPV | MCIP, mcg_cap=0)) == Severity.UC
    assert severity(rec(status, mcg_status=RIPV | MCIP, mcg_cap=0x1C09)) == Severity.UC
    assert severity(rec(status, mcg_status=RIPV | MCIP)) == Severity.SRAR
    assert "ser_assumed" not in decode(rec(status, mcg_status=RIPV | MCIP, mcg_cap=0)).payload


def test_unknown_mcg_cap_on_amd_is_still_uc() -> None:
    """AMD has no S/AR bits (bit 56 is ErrCoreIdVal): an unknown MCG_CAP changes nothing."""
    decoded = decode(rec(UC | EN | S | 0x0135, vendor=AMD, family=0x10))
    assert decoded.severity == Severity.UC
    assert "ser_assumed" not in decoded.payload


@pytest.mark.parametrize(
    ("status", "vendor", "expected"),
    [
        ((2 << 53) | EN | 0x0105, INTEL, "Yellow - above threshold"),
        ((1 << 53) | EN | 0x0105, None, "Green - below threshold"),
        (EN | 0x0105, INTEL, None),  # nothing tracked: no member
        ((2 << 53) | UC | EN | 0x0105, INTEL, None),  # undefined when UC
        ((2 << 53) | EN | 0x0105, AMD, None),  # bits 54:53 are PhysAddrV/SyndV on AMD
    ],
)
def test_unknown_mcg_cap_reports_a_threshold_status(
    status: int, vendor: str | None, expected: str | None
) -> None:
    """With MCG_CAP unknown, a corrected Intel error's non-zero threshold status is shown."""
    decoded = decode(rec(status, vendor=vendor))
    assert decoded.payload.get("threshold_based_error_status") == expected


def test_mcg_cap_absent_and_zero_are_kept_apart_on_the_wire() -> None:
    """A record without mcgcap decodes to None, "0x0" to 0, and each writes back as read."""
    from fmd.hw.telemetry import record_from_json, record_to_json

    absent = record_from_json({"bank": 1, "status": "0x9000000000000135"})
    zero = record_from_json({"bank": 1, "status": "0x9000000000000135", "mcgcap": "0x0"})
    assert (absent.mcg_cap, zero.mcg_cap) == (None, 0)
    assert "mcgcap" not in record_to_json(absent)
    assert record_to_json(zero)["mcgcap"] == "0x0"


# --- where a memory error lies (channel and DIMM from the bank) ------------------------------


@pytest.mark.parametrize(
    ("status", "misc", "model", "channel", "dimm"),
    [
        (EN | 0x0092, None, 0x55, 2, None),  # CCCC = 2
        (EN | 0x009F, None, 0x55, None, None),  # CCCC = 0xF: unspecified
        (EN | 0x00C1, None, 0x55, 1, None),  # scrub, channel 1
        (EN | 0x10C1, None, 0x55, 1, None),  # filtered: still memory
        (EN | MISCV | 0x00B1, 0x00040000, 0x1A, 1, 0),  # Nehalem MISC[19:18]/[17:16]
        (EN | MISCV | 0x00B2, 0x00090000, 0x2C, 2, 1),  # Westmere-EP
        (EN | 0x00B2, 0x00090000, 0x1A, 2, None),  # MISC not valid: CCCC only
        (EN | MISCV | 0x00B2, 0x00090000, 0x55, 2, None),  # not a MISC-DIMM model
        (EN | 0x0135, None, 0x55, None, None),  # a cache error has no channel
    ],
)
def test_intel_memory_location(
    status: int, misc: int | None, model: int, channel: int | None, dimm: int | None
) -> None:
    """The channel comes from MCACOD bits 3:0, and on Nehalem/Westmere (with MISCV) channel
    and DIMM from MISC bits 19:18 and 17:16, as mcelog's per-DIMM accounting reads them."""
    decoded = decode(rec(status, misc=misc, vendor=INTEL, family=6, model=model))
    assert (decoded.memory_channel, decoded.memory_dimm) == (channel, dimm)
    assert decoded.payload.get("memory_channel") == channel
    assert decoded.payload.get("memory_dimm") == dimm
    assert decoded.memory_only is False


def test_amd_memory_errors_are_memory_only() -> None:
    """The legacy northbridge's DRAM ECC and SMCA UMC errors are memory errors whatever
    their address; an Intel memory-controller code is memory but not memory-only."""
    nb = decode(rec(EN | (0x8 << 16) | 0x0813, bank=4, vendor=AMD, family=0x15))
    umc = decode(rec(EN | 0x011B, bank=17, vendor=AMD, family=0x19, ipid=0x9600050F00))
    intel = decode(rec(EN | 0x0090, bank=8, vendor=INTEL))
    assert (nb.is_memory, nb.memory_only, nb.physaddr) == (True, True, None)
    # gcpu would read 0x011B as a generic cache error: the UMC identity overrides it.
    assert (umc.is_memory, umc.memory_only, umc.leaf) == (True, True, "cache")
    assert (intel.is_memory, intel.memory_only) == (True, False)


def test_smca_memory_controller_code_is_not_memory_without_a_umc() -> None:
    """On SMCA the architectural code says little: an MC code in an LS bank is not memory."""
    decoded = decode(rec(EN | 0x0090, bank=0, vendor=AMD, family=0x19, ipid=0xB000000000))
    assert decoded.is_memory is False
    assert decoded.payload["smca_bank_type"] == "LS"
