"""AMD SMCA (family 17h+): units identified from IPID, UMC errors as memory errors,
other units never the basis of a CPU fault (fmd.hw.smca through fmd.hw.telemetry)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.amd import AmdDiagnosis
from agents.cpumem import CpumemDiagnosis
from fmd.hw.smca import UNIDENTIFIED_CLASS, Role, bank_type, is_smca, smca_bank
from fmd.hw.telemetry import RAW_MEMBER, mca_ereport
from fmd.hw.topo import SimPlatform
from fmd.protocol import EnaGenerator, Ereport
from fmd.store.codec import ereport_row, row_ereport
from fmd.store.schema import ERRLOG_COLUMNS
from tests.diagnosis_util import HOUR, T0, DiagnosisEnv, make_handle

PLATFORM = SimPlatform(hostname="h")
AMD = "AuthenticAMD"
MEM_CE = "ereport.cpu.generic-x86.mem_ce"
MEM_UE = "ereport.cpu.generic-x86.mem_ue"
DIMM_PREFIX = "motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm="

# The Zen UMC record of the issue: bank 17, a corrected DRAM ECC error (XEC 0,
# CECC, SyndV), IPID HWID 0x96 McaType 0 (UMC) instance 0x50f00 (UMC 0).
ZEN_UMC: dict[str, Any] = {
    "cpu": 1,
    "bank": 17,
    "status": "0xdc2040000000011b",
    "ipid": "0x9600050f00",
    "vendor": AMD,
    "family": 0x19,
}
# The same with MCA_SYND: chip select 3 (bits 2:0), so DIMM 1 of the channel.
ZEN_UMC_SYND = {**ZEN_UMC, "synd": "0x5a000003"}

VAL, UC, EN, ADDRV, PCC = 1 << 63, 1 << 61, 1 << 60, 1 << 58, 1 << 57
SYNDV, DEFERRED, POISON = 1 << 53, 1 << 44, 1 << 43


def ipid(hwid: int, mcatype: int, instance: int = 0) -> int:
    """An MCA_IPID value: McaType 63:48, HardwareID 43:32, InstanceId 31:0."""
    return (mcatype << 48) | (hwid << 32) | instance


def ereport(raw: dict[str, Any], platform: SimPlatform = PLATFORM) -> Ereport:
    """The ereport fmd makes of one raw record on the sim platform."""
    return mca_ereport({"mca": raw}, platform, now_ns=T0, ena_gen=EnaGenerator())


def smca_record(bank: int, status: int, ipid_value: int | None, **extra: Any) -> dict[str, Any]:
    """A family 19h record on CPU 1 with the given registers."""
    raw: dict[str, Any] = {"cpu": 1, "bank": bank, "status": hex(status | VAL)}
    if ipid_value is not None:
        raw["ipid"] = hex(ipid_value)
    return {**raw, "vendor": AMD, "family": 0x19, **extra}


# -- identification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "role"),
    [
        (0x9600050F00, "UMC", Role.MEMORY),
        (ipid(0x96, 1, 0x150F00), "UMC_V2", Role.MEMORY),
        (ipid(0xB0, 0), "LS", Role.CORE),
        (ipid(0xB0, 0x10), "LS_V2", Role.CORE),
        (ipid(0xB0, 1), "IF", Role.CORE),
        (ipid(0xB0, 2), "L2", Role.CORE),
        (ipid(0xB0, 3), "DE", Role.CORE),
        (ipid(0xB0, 5), "EX", Role.CORE),
        (ipid(0xB0, 6), "FP", Role.CORE),
        (ipid(0xB0, 7), "L3", Role.CORE),
        (ipid(0x2E, 0), "CS", Role.OTHER),
        (ipid(0x2E, 1), "PIE", Role.OTHER),
        (ipid(0x05, 0), "PB", Role.OTHER),
        (ipid(0xFF, 1), "PSP_V2", Role.OTHER),
        (ipid(0x01, 0), "SMU", Role.OTHER),
        (ipid(0x01, 2), "MP5", Role.OTHER),
        (ipid(0x18, 0), "NBIO", Role.OTHER),
        (ipid(0x46, 1), "PCIE_V2", Role.OTHER),
        (ipid(0x50, 0), "XGMI_PCS", Role.OTHER),
        (ipid(0x259, 0), "XGMI_PHY", Role.OTHER),
    ],
)
def test_ipid_names_the_unit(value: int, name: str, role: Role) -> None:
    """HardwareID (bits 43:32) and McaType (63:48) of IPID name the bank's unit."""
    found = bank_type(value)
    assert found is not None
    assert (found.name, found.role) == (name, role)


@pytest.mark.parametrize("value", [None, 0, ipid(0xB0, 4), ipid(0x77, 0), ipid(0x96, 7)])
def test_unknown_or_absent_ipid_names_no_unit(value: int | None) -> None:
    """No IPID, the reserved type (0, 0) and unknown (HWID, McaType) pairs name nothing."""
    assert bank_type(value) is None


def test_smca_parts_are_amd_and_hygon_from_family_17h() -> None:
    """SMCA applies to AuthenticAMD and HygonGenuine from family 17h on."""
    assert is_smca("AuthenticAMD", 0x17)
    assert is_smca("HygonGenuine", 0x18)
    assert not is_smca("AuthenticAMD", 0x16)
    assert not is_smca("GenuineIntel", 0x19)
    assert not is_smca(AMD, None)


def test_umc_channel_and_chip_select() -> None:
    """A UMC's channel is InstanceId >> 20; SYND bits 2:0 are the chip select of a
    DRAM ECC error when SyndV is set, and the DIMM is chip select >> 1."""
    bank = smca_bank(VAL | SYNDV, ipid(0x96, 0, 0x350F00), 0x12345675)
    assert (bank.umc_channel, bank.chip_select, bank.dimm) == (3, 5, 2)
    no_syndv = smca_bank(VAL, ipid(0x96, 0, 0x350F00), 0x12345675)
    assert (no_syndv.chip_select, no_syndv.dimm) == (None, None)
    not_ecc = smca_bank(VAL | SYNDV | (4 << 16), ipid(0x96, 0), 0x5)
    assert (not_ecc.xec, not_ecc.chip_select) == (4, None)


# -- the Zen UMC record ------------------------------------------------------------------


def test_zen_umc_record_is_a_memory_ereport() -> None:
    """The issue's Zen record (bank 17, UMC IPID) is a corrected memory error naming its
    unit and channel, with no physical address made up from the normalized address."""
    ev = ereport(ZEN_UMC)
    assert ev.cls == MEM_CE
    p = ev.payload
    assert (p["smca_bank_type"], p["smca_xec"], p["memory_channel"]) == ("UMC", 0, 0)
    assert (p["smca_hwid"], p["smca_mcatype"], p["smca_instance_id"]) == (0x96, 0, 0x50F00)
    assert p["severity"] == "CE"
    assert "physaddr" not in p
    # Channel 0 of chip 0 holds two DIMMs on the sim platform: without SYND no DIMM.
    assert "resource" not in p


def test_zen_umc_with_syndrome_names_its_dimm() -> None:
    """With SYND (chip select 3), the DIMM is the second of channel 0 on the chip of
    the reporting CPU, and its hc FMRI is the resource."""
    ev = ereport(ZEN_UMC_SYND)
    assert ev.cls == MEM_CE
    assert ev.payload["chip_select"] == 3
    assert ev.payload["memory_dimm"] == 1
    assert ev.payload["resource"].endswith("/" + DIMM_PREFIX + "1")
    # CPU 5 is on chip 1; UMC 1 is channel 1.
    other = ereport({**ZEN_UMC_SYND, "cpu": 5, "ipid": hex(ipid(0x96, 0, 0x150F00))})
    assert other.payload["resource"].endswith(
        "/motherboard=0/chip=1/memory-controller=0/dram-channel=1/dimm=1"
    )


def test_umc_uncorrected_and_deferred_errors_are_mem_ue() -> None:
    """A UC or deferred UMC error is mem_ue, never a CPU class."""
    uc = ereport(smca_record(17, UC | EN | PCC | 0x011B, 0x9600050F00))
    deferred = ereport(smca_record(17, DEFERRED | 0x011B, 0x9600050F00))
    assert (uc.cls, deferred.cls) == (MEM_UE, MEM_UE)
    assert deferred.payload["severity"] == "deferred"


def test_umc_poisoned_address_is_a_system_address() -> None:
    """With Poison set, the UMC's ADDR is a usable physical address (LSB from ADDR[61:56])."""
    raw = smca_record(
        17, UC | EN | ADDRV | POISON | 0x011B, 0x9600050F00, addr=hex((6 << 56) | 0x2047)
    )
    ev = ereport(raw)
    assert ev.cls == MEM_UE
    assert ev.payload["physaddr"] == 0x2040
    assert ev.payload["resource"].endswith("/" + DIMM_PREFIX + "1/rank=0")


def test_umc_other_xec_is_memory_too() -> None:
    """A UMC error other than DRAM ECC (address/command parity, XEC 4) is still a memory
    error (the DIMM or channel, not a core)."""
    ev = ereport(smca_record(17, EN | (4 << 16) | 0x011B, 0x9600050F00))
    assert ev.cls == MEM_CE
    assert ev.payload["smca_xec"] == 4


class _Env(DiagnosisEnv):
    """A diagnosis module fed the ereports fmd makes of raw records."""

    def feed_raw(self, raw: dict[str, Any], t_ns: int) -> None:
        ev = ereport({**raw, "time": t_ns // 10**9})
        self.feed(replace(ev, id=self.next_id, ena=self.next_id))
        self.next_id += 1


def cpumem_env() -> _Env:
    plugin = CpumemDiagnosis()
    hdl, writer = make_handle(plugin, "GMCA")
    return _Env(hdl, writer, plugin)


def test_repeated_zen_umc_errors_fault_the_dimm_never_a_cpu() -> None:
    """The Zen UMC record repeated through cpumem-diagnosis gives one DIMM fault (dimm_n
    10: the eleventh error) on the DIMM its chip select names, never a CPU fault."""
    env = cpumem_env()
    for i in range(12):
        env.feed_raw(ZEN_UMC_SYND, T0 + i * HOUR)
    assert env.classes() == ["fault.memory.generic-x86.dimm_ce"]
    (suspect,) = env.suspects()[0].fault_list
    assert suspect.location == "CPU 0 DIMM 1"
    assert env.stat("dimm_only") == 12
    assert env.stat("cases_cpu") == 0


def test_repeated_zen_umc_errors_without_a_dimm_are_never_a_cpu_fault() -> None:
    """Without SYND the DIMM cannot be told on this platform: the errors are counted as
    unresolved memory errors, and no CPU (nor any other) fault is made."""
    env = cpumem_env()
    for i in range(20):
        env.feed_raw(ZEN_UMC, T0 + i * HOUR)
    assert env.suspects() == []
    assert env.stat("mem_unresolved") == 20


# -- other units -------------------------------------------------------------------------


def test_core_unit_keeps_the_gcpu_class_and_names_the_unit() -> None:
    """An LS bank's data-cache error keeps its gcpu class; the payload names the unit."""
    ev = ereport(smca_record(0, EN | 0x0135, ipid(0xB0, 0, 0xB0000)))
    assert ev.cls == "ereport.cpu.generic-x86.l1dcache"
    assert ev.payload["smca_bank_type"] == "LS"


@pytest.mark.parametrize(
    ("hwid", "mcatype", "leaf"),
    [
        (0x05, 0, "pb"),
        (0xFF, 0, "psp"),
        (0x01, 0, "smu"),
        (0x18, 0, "nbio"),
        (0x46, 0, "pcie"),
        (0x2E, 0, "cs"),
        (0x2E, 1, "pie"),
        (0x50, 0, "xgmi_pcs"),
    ],
)
def test_non_core_units_have_their_own_class(hwid: int, mcatype: int, leaf: str) -> None:
    """A non-core unit's error (even an uncorrected cache-like one) is
    ereport.cpu.amd.smca.<unit>, which no engine diagnoses as a CPU fault."""
    ev = ereport(smca_record(20, UC | EN | 0x0135, ipid(hwid, mcatype)))
    assert ev.cls == f"ereport.cpu.amd.smca.{leaf}"
    assert ev.payload["smca_bank_type"] == leaf.upper()
    assert ev.payload["error_uncorrected"] is True


@pytest.mark.parametrize(
    "ipid_value", [None, 0, ipid(0x77, 0), ipid(0xB0, 4)], ids=["none", "zero", "hwid", "type"]
)
def test_unidentified_banks_are_stored_as_unidentified(ipid_value: int | None) -> None:
    """A bank of an SMCA part that cannot be identified is ereport.cpu.amd.smca.unidentified,
    even with a memory-controller or cache code."""
    for code in (0x0090, 0x0135):
        ev = ereport(smca_record(5, UC | EN | code, ipid_value))
        assert ev.cls == UNIDENTIFIED_CLASS
        assert ev.payload["smca_bank_type"] == "unidentified"


def test_non_core_and_unidentified_classes_fault_nothing() -> None:
    """Fed to both CPU diagnosis engines, non-core and unidentified SMCA ereports make no
    case: cpumem does not take them, amd-diagnosis counts them as unrecognized."""
    events = [
        ereport(smca_record(20, UC | EN | 0x0135, ipid(0x05, 0))),
        ereport(smca_record(20, UC | EN | 0x0135, None)),
    ]
    for plugin, dictionary in ((CpumemDiagnosis(), "GMCA"), (AmdDiagnosis(), "AMD")):
        hdl, writer = make_handle(plugin, dictionary)
        env = DiagnosisEnv(hdl, writer, plugin)
        for n, ev in enumerate(events * 5, start=1):
            env.feed(replace(ev, id=n, ena=n))
        assert env.suspects() == []
        assert hdl.cases() == []
    assert env.stat("unrecognized") == 10


def test_hygon_is_smca_and_family_16h_is_not() -> None:
    """Hygon family 18h banks are identified by IPID; an AMD family 16h record is decoded
    by the legacy rules even if it carries an IPID."""
    hygon = ereport({**ZEN_UMC, "vendor": "HygonGenuine", "family": 0x18})
    assert hygon.cls == MEM_CE
    legacy = ereport({**ZEN_UMC, "family": 0x16})
    assert "smca_bank_type" not in legacy.payload


# -- AMD families 11h-16h ----------------------------------------------------------------


@pytest.mark.parametrize("family", [0x11, 0x12, 0x14, 0x15, 0x16])
def test_legacy_northbridge_dram_ecc_is_a_memory_error(family: int) -> None:
    """Families 11h-16h: a northbridge (bank 4) DRAM ECC error (XEC 8) is a memory error,
    addressed when ADDR is valid and a memory class without it, never a bus fault."""
    status = EN | (0x8 << 16) | 0x0813
    plain = ereport(
        {"cpu": 4, "bank": 4, "status": hex(VAL | status), "vendor": AMD, "family": family}
    )
    assert plain.cls == MEM_CE
    assert "physaddr" not in plain.payload
    addressed = ereport(
        {
            "cpu": 4,
            "bank": 4,
            "status": hex(VAL | ADDRV | UC | status),
            "addr": "0x2040",
            "vendor": AMD,
            "family": family,
        }
    )
    assert addressed.cls == MEM_UE
    assert addressed.payload["physaddr"] == 0x2040
    assert addressed.payload["resource"].endswith("/" + DIMM_PREFIX + "1/rank=0")


# -- stored form -------------------------------------------------------------------------


def _row(values: list[Any]) -> SimpleNamespace:
    return SimpleNamespace(_mapping=dict(zip(ERRLOG_COLUMNS, values, strict=True)))


@pytest.mark.parametrize(
    "raw",
    [
        ZEN_UMC,
        ZEN_UMC_SYND,
        smca_record(20, UC | EN | 0x0135, ipid(0x05, 0)),
        smca_record(5, EN, None),
    ],
    ids=["umc", "umc-synd", "pb", "unidentified"],
)
def test_stored_row_derives_the_same_class_and_payload(raw: dict[str, Any]) -> None:
    """The compact stored row holds the raw registers (and the DIMM, which depends on
    the platform); read back, class and payload equal the live ones."""
    live = ereport(raw)
    values = ereport_row(live, recv_ns=1, xprt="test")
    values[0] = 1
    back = row_ereport(_row(values))
    assert (back.cls, back.payload) == (live.cls, live.payload)
    stored = orjson.loads(values[ERRLOG_COLUMNS.index("payload")])
    assert set(stored) <= {RAW_MEMBER, "cpuid", "resource"}
    assert "smca_bank_type" not in stored[RAW_MEMBER]
