"""The amd-diagnosis module (agents.amd): amd64.esc-style diagnosis of ereport.cpu.amd.*."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.amd import CPU_LEAVES, AmdDiagnosis
from agents.diagnosis import UNKNOWN_UNUM
from fmd.dictionary import decode_code
from fmd.protocol import CpuFmri, Ereport, MemFmri
from tests.diagnosis_util import DICTS, HOUR, T0, DiagnosisEnv, make_handle
from tests.fmdproc import FmdProcess

PREFIX = "ereport.cpu.amd."
# chip 2, core 0, strand 1 of the simulated machine: cpuid 2*4 + 0*2 + 1.
CPUID = 9
STRAND = "motherboard=0/chip=2/core=0/strand=1"
# Chip 0, channel 0 (bit 12 clear), dimm 1 (bit 13 set): "CPU 0 DIMM 1".
DIMM1_ADDR = 0x2000
DIMM1_PATH = "motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm=1"


@dataclass
class Env(DiagnosisEnv):
    plugin: AmdDiagnosis

    def cpu(self, leaf: str, t_ns: int, cpuid: int = CPUID, **payload: Any) -> Ereport:
        """A CPU ereport as telemetry posts it after the AMD overlay."""
        members: dict[str, Any] = {
            "error_uncorrected": False,
            "processor_context_corrupt": False,
            "bank_number": 1,
            "cpuid": cpuid,
        }
        members.update(payload)
        return self.ereport(PREFIX + leaf, t_ns, self.hdl.topo.cpu_to_hc(cpuid), members)

    def mem(self, physaddr: int, t_ns: int, *, ue: bool = False, synd: int = 0x5A,
            kind: str = "E") -> Ereport:  # fmt: skip
        """An nb.mem_ce/mem_ue ereport with the rank as resource and a syndrome."""
        members: dict[str, Any] = {
            "physaddr": physaddr,
            "error_uncorrected": ue,
            "syndrome": synd,
            "syndrome-type": kind,
            "bank_number": 4,
            "cpuid": 0,
        }
        rank = self.hdl.topo.decode_address(physaddr)
        if rank is not None:
            members["resource"] = rank.to_string()
        cls = PREFIX + ("nb.mem_ue" if ue else "nb.mem_ce")
        return self.ereport(cls, t_ns, self.hdl.topo.cpu_to_hc(0), members)


def make_env(overrides: Iterable[tuple[str, str]] = ()) -> Env:
    plugin = AmdDiagnosis()
    hdl, writer = make_handle(plugin, "AMD", overrides)
    return Env(hdl, writer, plugin)


# -- CPU -------------------------------------------------------------------------


def test_three_icache_data_errors_within_168h_fault_the_strand() -> None:
    """Three ic.data_par within 168h (N=2) give one icachedata fault, AMD-8000-7U, on CPU 2."""
    env = make_env()
    for i in range(3):
        env.feed(env.cpu("ic.data_par", T0 + i * 50 * HOUR))
    (ev,) = env.suspects()
    (s,) = ev.fault_list
    assert (s.cls, ev.code, decode_code(ev.code)) == (
        "fault.cpu.amd.icachedata",
        "AMD-8000-7U",
        ("AMD", 7),
    )
    assert s.location == "CPU 2"
    assert s.asru == CpuFmri(cpuid=CPUID)
    assert s.fru is not None and s.fru.to_string().endswith("/motherboard=0/chip=2")
    assert s.resource is not None and s.resource.to_string().endswith("/" + STRAND)
    assert env.hdl.serd.names() == [f"serd.cpu.amd.icachedata@{STRAND}"]


def test_icache_errors_spread_over_more_than_168h_do_not_fault() -> None:
    """Three ic.data_par with no three inside 168h give no diagnosis."""
    env = make_env()
    for i in range(3):
        env.feed(env.cpu("ic.data_par", T0 + i * 100 * HOUR))
    assert env.suspects() == []


def test_l2_data_uses_n3_t12h() -> None:
    """L2 data CEs need four within 12h (N=3, T=12h)."""
    env = make_env()
    for i in range(4):
        env.feed(env.cpu("bu.l2d_ecc1", T0 + i * 5 * HOUR))
    assert env.suspects() == []
    env2 = make_env()
    for i in range(4):
        env2.feed(env2.cpu("dc.inf_l2_ecc1", T0 + i * HOUR))
    assert env2.classes() == ["fault.cpu.amd.l2cachedata"]


@pytest.mark.parametrize(
    ("leaf", "fault"),
    [
        ("dc.data_ecc1_uc", "fault.cpu.amd.dcachedata"),
        ("dc.data_eccm", "fault.cpu.amd.dcachedata"),
        ("bu.l2t_par", "fault.cpu.amd.l2cachetag"),
        ("ic.stag_par", "fault.cpu.amd.icachestag"),
    ],
)
def test_uncorrectable_leaves_fault_at_once(leaf: str, fault: str) -> None:
    """An uncorrectable CPU leaf (the dc.data_ecc1_uc N=0 engine) faults on the first ereport."""
    env = make_env()
    env.feed(env.cpu(leaf, T0))
    assert env.classes() == [fault]


def test_error_uncorrected_payload_faults_at_once() -> None:
    """A CE leaf whose payload says error_uncorrected faults at once."""
    env = make_env()
    env.feed(env.cpu("dc.data_ecc1", T0, error_uncorrected=True))
    assert env.classes() == ["fault.cpu.amd.dcachedata"]


def test_errors_after_diagnosis_join_the_open_case() -> None:
    """Later errors on a faulted strand join its case; no second diagnosis."""
    env = make_env()
    for i in range(3):
        env.feed(env.cpu("ic.data_par", T0 + i))
    env.feed(env.cpu("ic.data_par", T0 + 10))
    env.feed(env.cpu("dc.data_eccm", T0 + 11))
    assert len(env.suspects()) == 1
    (case,) = env.hdl.cases()
    assert case.events == [1, 2, 3, 4, 5]
    assert env.stat("joined") == 2


def test_strand_is_diagnosed_again_after_repair() -> None:
    """Once the case is repaired and resolved the strand can be diagnosed afresh."""
    env = make_env()
    env.feed(env.cpu("dc.data_eccm", T0))
    (case,) = env.hdl.cases()
    env.hdl.case_repair(case)
    env.feed(env.cpu("dc.data_eccm", T0 + HOUR))
    assert len(env.suspects()) == 2


def test_unrecognized_leaf_is_counted_and_dropped() -> None:
    """A leaf the module does not diagnose (nb.ht_crc) is only counted."""
    env = make_env()
    env.feed(env.cpu("nb.ht_crc", T0))
    assert (env.suspects(), env.stat("unrecognized")) == ([], 1)


def test_every_fault_has_an_amd_code() -> None:
    """Every fault class the module can name has a code in dictionary AMD."""
    faults = {f"fault.cpu.amd.{fault}" for fault, _ in CPU_LEAVES.values()}
    faults |= {f"fault.memory.{m}" for m in ("page_sb", "page_ck", "page_ue")}
    faults |= {f"fault.memory.{m}" for m in ("dimm_sb", "dimm_ck", "dimm_ue")}
    for fault in sorted(faults):
        assert DICTS.lookup("AMD", [fault]), fault


# -- memory ----------------------------------------------------------------------


def test_three_single_bit_ces_on_one_page_fault_page_sb() -> None:
    """Three single-bit CEs on one page within 72h give page_sb naming the DIMM."""
    env = make_env()
    for i in range(3):
        env.feed(env.mem(DIMM1_ADDR + 8 * i, T0 + i * HOUR))
    (ev,) = env.suspects()
    (s,) = ev.fault_list
    assert s.cls == "fault.memory.page_sb"
    assert decode_code(ev.code) == ("AMD", 20)
    assert s.asru == MemFmri(unum=DIMM1_PATH, serial="SIM-0-1", physaddr=DIMM1_ADDR)
    assert s.location == "CPU 0 DIMM 1"
    assert env.hdl.serd.names() == [f"serd.memory.amd.page_sb@physaddr={DIMM1_ADDR:#x}"]


def test_multi_bit_chipkill_ces_fault_page_ck() -> None:
    """Multi-bit ChipKill CEs go through their own engine to page_ck."""
    env = make_env()
    for i in range(3):
        env.feed(env.mem(DIMM1_ADDR, T0 + i * HOUR, synd=0x1203, kind="C"))
    assert env.classes() == ["fault.memory.page_ck"]


def test_faulted_pages_past_rank_thresh_fault_the_dimm_once() -> None:
    """When a rank's faulted pages pass rank_thresh its DIMM gets one dimm_sb, which
    then covers its pages."""
    env = make_env([("page_n", "0"), ("rank_thresh", "2")])
    for i in range(5):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR))
    assert env.classes() == ["fault.memory.page_sb"] * 3 + ["fault.memory.dimm_sb"]
    assert env.stat("under_faulty_dimm") == 2


def test_pages_under_a_faulty_dimm_on_request() -> None:
    """With pages_under_dimm, pages of a faulty DIMM are still diagnosed."""
    env = make_env([("page_n", "0"), ("rank_thresh", "2"), ("pages_under_dimm", "true")])
    for i in range(5):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR))
    assert (
        env.classes()
        == ["fault.memory.page_sb"] * 3 + ["fault.memory.dimm_sb"] + ["fault.memory.page_sb"] * 2
    )


def test_mostly_chipkill_pages_give_dimm_ck() -> None:
    """A rank whose faulted pages are mostly multi-bit ChipKill gets dimm_ck."""
    env = make_env([("page_n", "0"), ("rank_thresh", "2")])
    for i in range(3):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR, synd=0x1203, kind="C"))
    assert env.classes()[-1] == "fault.memory.dimm_ck"


def test_page_faults_stop_at_twice_rank_thresh() -> None:
    """Past 2 x rank_thresh faulted pages a rank's CEs are counted and discarded."""
    env = make_env([("page_n", "0"), ("rank_thresh", "1"), ("pages_under_dimm", "true")])
    for i in range(5):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR))
    assert env.classes().count("fault.memory.page_sb") == 3
    assert env.stat("over_page_limit") == 2


def test_memory_ue_faults_page_and_dimm_at_once() -> None:
    """One nb.mem_ue gives page_ue and dimm_ue immediately; a second joins both."""
    env = make_env()
    env.feed(env.mem(DIMM1_ADDR + 0x40, T0, ue=True))
    env.feed(env.mem(DIMM1_ADDR + 0x48, T0 + 1, ue=True))
    assert env.classes() == ["fault.memory.page_ue", "fault.memory.dimm_ue"]
    dimm = env.suspects()[1].fault_list[0]
    assert (dimm.location, dimm.asru) == (
        "CPU 0 DIMM 1",
        MemFmri(unum=DIMM1_PATH, serial="SIM-0-1"),
    )
    assert [c.events for c in env.hdl.cases()] == [[1, 2], [1, 2]]


def test_memory_ereport_without_address_is_discarded() -> None:
    """An nb.mem_ce with no physaddr is counted as unresolved and not diagnosed."""
    env = make_env()
    ev = env.mem(DIMM1_ADDR, T0)
    del ev.payload["physaddr"]
    env.feed(ev)
    assert (env.suspects(), env.stat("mem_unresolved")) == ([], 1)


# -- memory whose DIMM cannot be told ----------------------------------------------

# A page that nothing decodes to a DIMM.
UNPLACED_PAGE = 0x20000000


def _no_dimm(physaddr: int) -> None:
    """An address decode that places no address on a DIMM (no EDAC memory topology)."""
    del physaddr


def make_unplaced_env(monkeypatch: pytest.MonkeyPatch) -> Env:
    """The module on a platform that cannot tell the DIMM of any address."""
    env = make_env()
    monkeypatch.setattr(env.hdl.topo, "decode_address", _no_dimm)
    return env


def test_single_bit_ces_on_a_page_without_dimm_fault_the_page_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three single-bit CEs on a page whose DIMM is unknown give page_sb on the page under
    the unknown unum, with no FRU or location and no rank bookkeeping."""
    env = make_unplaced_env(monkeypatch)
    for i in range(3):
        env.feed(env.mem(UNPLACED_PAGE + 8 * i, T0 + i * HOUR))
    (ev,) = env.suspects()
    (s,) = ev.fault_list
    assert (s.cls, s.asru, s.fru, s.location) == (
        "fault.memory.page_sb",
        MemFmri(unum=UNKNOWN_UNUM, physaddr=UNPLACED_PAGE),
        None,
        None,
    )
    assert decode_code(ev.code) == ("AMD", 20)
    assert (env.stat("page_only"), env.hdl.specific.get("rank_pages", {})) == (3, {})


def test_ue_on_a_page_without_dimm_faults_the_page_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One nb.mem_ue whose DIMM is unknown gives page_ue at once and no DIMM fault; a
    second error on the page joins its case."""
    env = make_unplaced_env(monkeypatch)
    env.feed(env.mem(UNPLACED_PAGE + 0x40, T0, ue=True))
    env.feed(env.mem(UNPLACED_PAGE + 0x48, T0 + 1))
    assert env.classes() == ["fault.memory.page_ue"]
    assert [c.events for c in env.hdl.cases()] == [[1, 2]]


# -- end to end ------------------------------------------------------------------

IC_DATA_CE = "0x9000000000000151"  # VAL|EN, XEC 0, code 0x0151: L1 instruction read


@pytest.mark.e2e
def test_e2e_icache_data_errors_on_chip_2_give_one_amd_fault(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """IC data errors on one strand of chip 2 within 168h give one AMD-8000-7U on "CPU 2"."""
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    t0 = 1_700_000_000
    lines = [
        {
            "mca": {
                "cpu": CPUID,
                "bank": 1,
                "status": IC_DATA_CE,
                "vendor": "AuthenticAMD",
                "family": 15,
                "time": t0 + i * 3600 * 20,
            }
        }
        for i in range(6)
    ]
    assert all(r["ok"] for r in fmd.send_lines(lines))
    fmd.quiesce()
    found = [e for e in fmd.fltlog_json() if e["class"] == "list.suspect"]
    assert len(found) == 1
    suspect = found[0]["fault-list"][0]
    assert (found[0]["code"], suspect["class"], suspect["location"]) == (
        "AMD-8000-7U",
        "fault.cpu.amd.icachedata",
        "CPU 2",
    )
    assert suspect["asru"] == f"cpu:///cpuid={CPUID}"
