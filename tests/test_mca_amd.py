"""The AMD family 0Fh/10h overlay (fmd.hw.mca_amd) and its use by fmd.hw.telemetry."""

from __future__ import annotations

import pytest

from agents.amd import CPU_LEAVES
from fmd.hw.mca import McaRecord, decode
from fmd.hw.mca_amd import CPU_FAULTS, AmdRefinement, amd_overlay, syndrome
from fmd.hw.telemetry import mca_ereport
from fmd.hw.topo import SimPlatform
from fmd.protocol import EnaGenerator

VAL_EN = 0x9000_0000_0000_0000
UC = 1 << 61
ADDRV = 1 << 58
CECC = 1 << 46
UECC = 1 << 45


def xec(value: int) -> int:
    return value << 16


def refine(
    bank: int, status: int, *, family: int = 0x0F, vendor: str = "AuthenticAMD"
) -> AmdRefinement | None:
    record = McaRecord(bank=bank, status=status, cpu=0, vendor=vendor, family=family, addr=0x2040)
    return amd_overlay(record, decode(record))


@pytest.mark.parametrize(
    ("bank", "status", "cls", "fault", "correctable"),
    [
        (1, VAL_EN | 0x0151, "ic.data_par", "fault.cpu.amd.icachedata", True),
        (1, VAL_EN | CECC | 0x0151, "ic.data_par", "fault.cpu.amd.icachedata", True),
        (1, VAL_EN | 0x0171, "ic.tag_par", "fault.cpu.amd.icachetag", True),
        (1, VAL_EN | UC | 0x0181, "ic.stag_par", "fault.cpu.amd.icachestag", False),
        (1, VAL_EN | 0x0011, "ic.l1tlb_par", "fault.cpu.amd.l1itlb", True),
        (1, VAL_EN | xec(1) | 0x0012, "ic.l2tlb_par", "fault.cpu.amd.l2itlb", True),
        (1, VAL_EN | CECC | 0x0152, "ic.inf_l2_ecc1", "fault.cpu.amd.l2cachedata", True),
        (0, VAL_EN | CECC | 0x0135, "dc.data_ecc1", "fault.cpu.amd.dcachedata", True),
        (0, VAL_EN | UC | CECC | 0x0135, "dc.data_ecc1_uc", "fault.cpu.amd.dcachedata", False),
        (0, VAL_EN | UC | UECC | 0x0135, "dc.data_eccm", "fault.cpu.amd.dcachedata", False),
        (0, VAL_EN | UC | 0x0135, "dc.tag_par", "fault.cpu.amd.dcachetag", False),
        (0, VAL_EN | UC | 0x0185, "dc.stag_par", "fault.cpu.amd.dcachestag", False),
        (0, VAL_EN | UC | 0x0015, "dc.l1tlb_par", "fault.cpu.amd.l1dtlb", False),
        (0, VAL_EN | CECC | 0x0136, "dc.inf_l2_ecc1", "fault.cpu.amd.l2cachedata", True),
        (0, VAL_EN | UC | UECC | 0x0136, "dc.inf_l2_eccm", "fault.cpu.amd.l2cachedata", False),
        (2, VAL_EN | CECC | 0x011A, "bu.l2d_ecc1", "fault.cpu.amd.l2cachedata", True),
        (2, VAL_EN | UC | UECC | 0x011A, "bu.l2d_eccm", "fault.cpu.amd.l2cachedata", False),
        (2, VAL_EN | CECC | xec(2) | 0x010A, "bu.l2t_ecc1", "fault.cpu.amd.l2cachetag", True),
        (2, VAL_EN | UC | UECC | xec(2) | 0x010A, "bu.l2t_eccm", "fault.cpu.amd.l2cachetag", False),
        (2, VAL_EN | UC | xec(2) | 0x0152, "bu.l2t_par", "fault.cpu.amd.l2cachetag", False),
    ],
)
def test_cpu_records_get_the_illumos_class_and_fault(
    bank: int, status: int, cls: str, fault: str, correctable: bool
) -> None:
    """Each covered DC/IC/BU record gets its ereport.cpu.amd class, fault and correctability."""
    refined = refine(bank, status)
    assert refined is not None
    actual = (refined.ereport_class, refined.fault_class, refined.correctable, refined.is_memory)
    assert actual == (f"ereport.cpu.amd.{cls}", fault, correctable, False)


def test_family_10h_is_refined_like_0fh() -> None:
    """Family 10h records are refined with the same rules as family 0Fh."""
    refined = refine(1, VAL_EN | 0x0151, family=0x10)
    assert refined is not None and refined.ereport_class == "ereport.cpu.amd.ic.data_par"


@pytest.mark.parametrize(
    ("bank", "status", "family", "vendor"),
    [
        (1, VAL_EN | 0x0151, 0x0F, "GenuineIntel"),
        (1, VAL_EN | 0x0151, 0x15, "AuthenticAMD"),
        (1, VAL_EN | 0x0151, 0x0F, "HygonGenuine"),
        (3, VAL_EN | CECC | 0x0135, 0x0F, "AuthenticAMD"),
        (0, VAL_EN | CECC | xec(3) | 0x0135, 0x0F, "AuthenticAMD"),
        (0, VAL_EN | CECC | 0x0131, 0x0F, "AuthenticAMD"),
        (4, VAL_EN | CECC | xec(1) | 0x0813, 0x0F, "AuthenticAMD"),
        (2, VAL_EN | CECC | 0x0813, 0x0F, "AuthenticAMD"),
    ],
)
def test_records_outside_the_overlay_are_left_alone(
    bank: int, status: int, family: int, vendor: str
) -> None:
    """Other vendors, families, banks, XECs and codes give None: the generic class stands."""
    assert refine(bank, status, family=family, vendor=vendor) is None


def test_nb_dram_single_bit_ce_is_page_sb() -> None:
    """An NB DRAM ECC CE with a normal (8-bit) syndrome is nb.mem_ce diagnosing page_sb."""
    refined = refine(4, VAL_EN | ADDRV | CECC | xec(8) | (0x5A << 47) | 0x0813)
    assert refined is not None
    assert (refined.ereport_class, refined.faults, refined.correctable, refined.is_memory) == (
        "ereport.cpu.amd.nb.mem_ce",
        ("fault.memory.page_sb",),
        True,
        True,
    )
    assert dict(refined.payload) == {"syndrome": 0x5A, "syndrome-type": "E"}


def test_nb_dram_multi_bit_chipkill_ce_is_page_ck() -> None:
    """A ChipKill CE whose syndrome's low nibble names several bits diagnoses page_ck."""
    refined = refine(4, VAL_EN | ADDRV | CECC | xec(8) | (0x12 << 24) | (0x03 << 47) | 0x0813)
    assert refined is not None
    assert refined.faults == ("fault.memory.page_ck",)
    assert dict(refined.payload) == {"syndrome": 0x1203, "syndrome-type": "C"}


def test_nb_dram_single_symbol_chipkill_ce_is_page_sb() -> None:
    """A ChipKill CE with one bit in the syndrome's low nibble is still single-bit."""
    refined = refine(4, VAL_EN | ADDRV | CECC | xec(8) | (0x12 << 24) | (0x04 << 47) | 0x0813)
    assert refined is not None and refined.faults == ("fault.memory.page_sb",)


def test_nb_dram_ue_is_page_ue_and_dimm_ue() -> None:
    """An uncorrectable NB DRAM ECC error is nb.mem_ue diagnosing page_ue and dimm_ue."""
    refined = refine(4, VAL_EN | UC | ADDRV | UECC | xec(8) | 0x0813)
    assert refined is not None
    assert (refined.ereport_class, refined.faults, refined.correctable) == (
        "ereport.cpu.amd.nb.mem_ue",
        ("fault.memory.page_ue", "fault.memory.dimm_ue"),
        False,
    )


def test_syndrome_joins_low_and_high_bytes() -> None:
    """The syndrome is status bits 54:47 (low byte) and 31:24 (high byte)."""
    assert syndrome((0xA0 << 24) | (0x82 << 47)) == (0xA082, "C")
    assert syndrome(0x82 << 47) == (0x82, "E")


def test_agent_maps_every_refined_cpu_class_to_the_same_fault() -> None:
    """agents.amd diagnoses each refined CPU class to the fault the overlay names."""
    agent = {f"{leaf}": f"fault.cpu.amd.{fault}" for leaf, (fault, _) in CPU_LEAVES.items()}
    assert agent == dict(CPU_FAULTS)


def test_telemetry_posts_the_refined_class_for_an_ic_record() -> None:
    """A raw AMD family 0Fh IC record becomes ereport.cpu.amd.ic.data_par on its strand."""
    raw = {"mca": {"cpu": 9, "bank": 1, "status": hex(VAL_EN | 0x0151),
                   "vendor": "AuthenticAMD", "family": 15}}  # fmt: skip
    ev = mca_ereport(raw, SimPlatform(hostname="h"), now_ns=1, ena_gen=EnaGenerator())
    assert ev.cls == "ereport.cpu.amd.ic.data_par"
    assert (ev.detector_str or "").endswith("/chip=2/core=0/strand=1")
    assert ev.payload["cpuid"] == 9


def test_telemetry_keeps_physaddr_and_resource_for_nb_dram() -> None:
    """A raw NB DRAM ECC CE keeps physaddr and the rank resource and gains the syndrome."""
    status = VAL_EN | ADDRV | CECC | xec(8) | (0x5A << 47) | 0x0813
    raw = {"mca": {"cpu": 1, "bank": 4, "status": hex(status), "addr": "0x2040",
                   "vendor": "AuthenticAMD", "family": 15}}  # fmt: skip
    platform = SimPlatform(hostname="h")
    ev = mca_ereport(raw, platform, now_ns=1, ena_gen=EnaGenerator())
    rank = platform.decode_address(0x2040)
    assert rank is not None
    assert ev.cls == "ereport.cpu.amd.nb.mem_ce"
    assert (ev.payload["physaddr"], ev.payload["resource"]) == (0x2040, rank.to_string())
    assert (ev.payload["syndrome"], ev.payload["syndrome-type"]) == (0x5A, "E")


def test_telemetry_keeps_the_generic_class_for_other_families() -> None:
    """A family 15h record the overlay does not cover keeps its generic-x86 class."""
    raw = {"mca": {"cpu": 9, "bank": 1, "status": hex(VAL_EN | 0x0151),
                   "vendor": "AuthenticAMD", "family": 0x15}}  # fmt: skip
    ev = mca_ereport(raw, SimPlatform(hostname="h"), now_ns=1, ena_gen=EnaGenerator())
    assert ev.cls.startswith("ereport.cpu.generic-x86.")
