"""The cpumem-diagnosis module (agents.cpumem): SERD diagnosis of CPU and memory ereports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cpumem import CpumemDiagnosis, cpu_fault
from agents.diagnosis import UNKNOWN_UNUM
from fmd.dictionary import decode_code
from fmd.hw.telemetry import mca_ereport
from fmd.protocol import CpuFmri, EnaGenerator, Ereport, MemFmri
from tests.diagnosis_util import DICTS, HOUR, T0, DiagnosisEnv, make_handle

PREFIX = "ereport.cpu.generic-x86."
# chip 3, core 1, strand 0 of the simulated machine: cpuid 3*4 + 1*2 + 0.
CPUID = 14
STRAND = "motherboard=0/chip=3/core=1/strand=0"
# Chip 0, channel 0 (bit 12 clear), dimm 1 (bit 13 set): "CPU 0 DIMM 1".
DIMM1_ADDR = 0x2000
DIMM1_PATH = "motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm=1"


@dataclass
class Env(DiagnosisEnv):
    plugin: CpumemDiagnosis

    def cpu(self, leaf: str, t_ns: int, cpuid: int = CPUID, **payload: Any) -> Ereport:
        """An ereport as the decoder posts it for a CPU bank."""
        members: dict[str, Any] = {
            "error_uncorrected": leaf.endswith("_uc"),
            "overflow": False,
            "processor_context_corrupt": False,
            "severity": "UC" if leaf.endswith("_uc") else "CE",
            "bank_number": 1,
            "IA32_MCi_STATUS": 0x9000000000000000,
            "cpuid": cpuid,
        }
        members.update(payload)
        return self.ereport(PREFIX + leaf, t_ns, self.hdl.topo.cpu_to_hc(cpuid), members)

    def mem(self, physaddr: int, t_ns: int, *, ue: bool = False, resource: bool = True) -> Ereport:
        """A mem_ce/mem_ue ereport as the decoder posts it, with the rank as resource."""
        members: dict[str, Any] = {
            "physaddr": physaddr,
            "error_uncorrected": ue,
            "overflow": False,
            "processor_context_corrupt": False,
            "severity": "UC" if ue else "CE",
            "bank_number": 7,
            "cpuid": 0,
        }
        rank = self.hdl.topo.decode_address(physaddr)
        if resource and rank is not None:
            members["resource"] = rank.to_string()
        cls = PREFIX + ("mem_ue" if ue else "mem_ce")
        return self.ereport(cls, t_ns, self.hdl.topo.cpu_to_hc(0), members)


def make_env(overrides: Iterable[tuple[str, str]] = ()) -> Env:
    plugin = CpumemDiagnosis()
    hdl, writer = make_handle(plugin, "GMCA", overrides)
    return Env(hdl, writer, plugin)


# -- CPU -------------------------------------------------------------------------


def test_four_l1icache_ces_within_72h_fault_the_strand() -> None:
    """Four corrected l1icache errors within 72h give one l1icache fault on the strand."""
    env = make_env()
    for i in range(4):
        env.feed(env.cpu("l1icache", T0 + i * 20 * HOUR))
    (ev,) = env.suspects()
    (s,) = ev.fault_list
    assert s.cls == "fault.cpu.generic-x86.l1icache"
    assert decode_code(ev.code) == ("GMCA", 23)
    assert s.location == "CPU 3"
    assert s.asru == CpuFmri(cpuid=CPUID)
    assert s.asru is not None and s.asru.to_string() == f"cpu:///cpuid={CPUID}"
    assert s.fru is not None and s.fru.to_string().endswith("/motherboard=0/chip=3")
    assert s.resource is not None and s.resource.to_string().endswith("/" + STRAND)
    (case,) = env.hdl.cases()
    assert case.events == [1, 2, 3, 4]
    assert env.stat("cases_cpu") == 1


def test_three_ces_do_not_fault() -> None:
    """Three CEs are not more than N=3: no diagnosis."""
    env = make_env()
    for i in range(3):
        env.feed(env.cpu("l1icache", T0 + i * HOUR))
    assert env.suspects() == []


def test_four_ces_spread_over_more_than_72h_do_not_fault() -> None:
    """The same four CEs spread so that no four fall within 72h give no diagnosis."""
    env = make_env()
    for i in range(4):
        env.feed(env.cpu("l1icache", T0 + i * 25 * HOUR))
    assert env.suspects() == []
    assert env.hdl.cases() == []


def test_engine_is_named_per_fault_and_strand() -> None:
    """The SERD engine is serd.cpu.generic-x86.<fault leaf>@<strand path>."""
    env = make_env()
    env.feed(env.cpu("l1icache", T0))
    assert env.hdl.serd.names() == [f"serd.cpu.generic-x86.l1icache@{STRAND}"]


def test_uncorrected_dcache_faults_at_once() -> None:
    """One uncorrected data-cache error (a _uc leaf) faults the strand immediately."""
    env = make_env()
    env.feed(env.cpu("l1dcache_uc", T0))
    (ev,) = env.suspects()
    assert ev.fault_list[0].cls == "fault.cpu.generic-x86.l1dcache"
    assert decode_code(ev.code) == ("GMCA", 19)


def test_processor_context_corrupt_faults_at_once() -> None:
    """A record with processor_context_corrupt set diagnoses at once even on a CE leaf."""
    env = make_env()
    env.feed(env.cpu("l2cache", T0, processor_context_corrupt=True))
    assert env.classes() == ["fault.cpu.generic-x86.l2cache"]


def test_error_uncorrected_on_a_simple_code_faults_at_once() -> None:
    """An internal error with error_uncorrected set faults fault.cpu.generic-x86.internal."""
    env = make_env()
    env.feed(env.cpu("internal_parity", T0, error_uncorrected=True))
    assert env.classes() == ["fault.cpu.generic-x86.internal"]


def test_overflowed_ce_counts_once() -> None:
    """An overflowed CE is one count: three of them do not trip N=3."""
    env = make_env()
    for i in range(3):
        env.feed(env.cpu("l2cache", T0 + i, overflow=True))
    assert env.suspects() == []
    env.feed(env.cpu("l2cache", T0 + 3, overflow=True))
    assert env.classes() == ["fault.cpu.generic-x86.l2cache"]


def test_generic_level_cache_uses_gcache_threshold() -> None:
    """A generic-level cache error needs 13 events (gcache_n=12) within 72h."""
    env = make_env()
    for i in range(12):
        env.feed(env.cpu("cache", T0 + i))
    assert env.suspects() == []
    env.feed(env.cpu("cache", T0 + 12))
    assert env.classes() == ["fault.cpu.generic-x86.cache"]


def test_bus_fault_is_neither_retired_nor_responded_to() -> None:
    """bus_interconnect_memory faults after 11 CEs and carries retire=0, response=0."""
    env = make_env()
    for i in range(11):
        env.feed(env.cpu("bus_interconnect_memory", T0 + i))
    (ev,) = env.suspects()
    s = ev.fault_list[0]
    assert (s.cls, s.retire, s.response) == (
        "fault.cpu.generic-x86.bus_interconnect_memory",
        False,
        False,
    )
    assert decode_code(ev.code) == ("GMCA", 27)


def test_errors_after_diagnosis_join_the_open_case() -> None:
    """Later errors on a faulted strand go into its case; no second list.suspect."""
    env = make_env()
    for i in range(4):
        env.feed(env.cpu("l1icache", T0 + i))
    env.feed(env.cpu("l1icache", T0 + 10))
    env.feed(env.cpu("l2cache_uc", T0 + 11))
    assert len(env.suspects()) == 1
    (case,) = env.hdl.cases()
    assert case.events == [1, 2, 3, 4, 5, 6]
    assert env.stat("joined") == 2


def test_resource_is_diagnosed_again_after_repair() -> None:
    """Once the case is repaired and resolved, the strand can be diagnosed afresh."""
    env = make_env()
    env.feed(env.cpu("l1icache_uc", T0))
    (case,) = env.hdl.cases()
    env.hdl.case_repair(case)
    assert env.hdl.cases() == []
    env.feed(env.cpu("l1icache_uc", T0 + HOUR))
    assert len(env.suspects()) == 2


def test_other_strand_is_diagnosed_separately() -> None:
    """An open case on one strand does not absorb errors of another strand."""
    env = make_env()
    env.feed(env.cpu("l1icache_uc", T0))
    env.feed(env.cpu("l1icache_uc", T0 + 1, cpuid=CPUID + 1))
    assert [e.fault_list[0].location for e in env.suspects()] == ["CPU 3", "CPU 3"]
    assert len(env.hdl.cases()) == 2


def test_external_and_unknown_are_discarded() -> None:
    """external and unknown ereports, even uncorrected, are upsets: counted and dropped."""
    env = make_env()
    for i in range(5):
        env.feed(env.cpu("external", T0 + i, error_uncorrected=True))
        env.feed(env.cpu("unknown", T0 + i))
    assert env.suspects() == []
    assert env.hdl.serd.names() == []
    assert env.stat("upsets") == 10


def test_cpu_fault_mapping() -> None:
    """Each decoder leaf maps to its GMCA fault leaf and property group."""
    assert cpu_fault("l1icache") == ("l1icache", "cache")
    assert cpu_fault("l2dtlb_uc") == ("l2dtlb", "cache")
    assert cpu_fault("l1cache") == ("l1cache", "cache")
    assert cpu_fault("icache") == ("icache", "gcache")
    assert cpu_fault("tlb_uc") == ("tlb", "gcache")
    assert cpu_fault("bus_interconnect_io_uc") == ("bus_interconnect_io", "bus")
    assert cpu_fault("mc") == ("mc", "bus")
    assert cpu_fault("microcode_rom_parity") == ("internal", "internal")
    assert cpu_fault("internal_unclassified") == ("internal", "internal")
    assert cpu_fault("external") is None
    assert cpu_fault("unknown") is None


def test_every_mapped_fault_has_a_gmca_code() -> None:
    """Every fault class the module can name has a code in dictionary GMCA."""
    leaves = ["internal_timer", "mc"] + [
        f"{ll}{tt}{kind}"
        for ll in ("l0", "l1", "l2", "")
        for tt in ("i", "d", "")
        for kind in ("cache", "tlb")
    ]
    leaves += [f"bus_interconnect{ii}" for ii in ("", "_memory", "_io")]
    for leaf in leaves:
        fault = cpu_fault(leaf)
        assert fault is not None, leaf
        assert DICTS.lookup("GMCA", [f"fault.cpu.generic-x86.{fault[0]}"]), leaf
    for mem in ("page_ce", "page_ue", "dimm_ce", "dimm_ue"):
        assert DICTS.lookup("GMCA", [f"fault.memory.generic-x86.{mem}"]), mem


# -- memory ----------------------------------------------------------------------


def test_three_ces_on_one_page_fault_the_page() -> None:
    """Three CEs on one page (page_n=2) give page_ce naming the decoded DIMM."""
    env = make_env()
    for i in range(3):
        env.feed(env.mem(DIMM1_ADDR + 8 * i, T0 + i * HOUR))
    (ev,) = env.suspects()
    s = ev.fault_list[0]
    assert s.cls == "fault.memory.generic-x86.page_ce"
    assert decode_code(ev.code) == ("GMCA", 29)
    assert s.location == "CPU 0 DIMM 1"
    assert s.asru == MemFmri(unum=DIMM1_PATH, serial="SIM-0-1", physaddr=DIMM1_ADDR)
    assert s.fru is not None and s.fru.to_string().endswith("/" + DIMM1_PATH)
    assert env.stat("cases_page") == 1


def test_page_ce_without_resource_uses_address_decode() -> None:
    """With no resource member the DIMM comes from the platform's address decode."""
    env = make_env()
    for i in range(3):
        env.feed(env.mem(DIMM1_ADDR, T0 + i, resource=False))
    assert [e.fault_list[0].location for e in env.suspects()] == ["CPU 0 DIMM 1"]


def test_ces_on_many_pages_fault_the_dimm_by_serd() -> None:
    """CEs on distinct pages of one DIMM trip its engine (dimm_n=3) and fault the DIMM."""
    env = make_env([("dimm_n", "3")])
    for i in range(4):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR))
    (ev,) = env.suspects()
    s = ev.fault_list[0]
    assert s.cls == "fault.memory.generic-x86.dimm_ce"
    assert decode_code(ev.code) == ("GMCA", 31)
    assert (s.location, s.asru) == ("CPU 0 DIMM 1", MemFmri(unum=DIMM1_PATH, serial="SIM-0-1"))
    assert env.hdl.serd_exists(f"serd.memory.generic-x86.dimm_ce@{DIMM1_PATH}")


def test_faulted_page_count_faults_the_dimm_once() -> None:
    """When dimm_pages pages of one DIMM are faulted the DIMM is faulted, once; the
    faulty DIMM then covers its pages: later errors join its case."""
    env = make_env([("page_n", "0"), ("dimm_pages", "3")])
    for i in range(5):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR))
    assert env.classes() == ["fault.memory.generic-x86.page_ce"] * 3 + [
        "fault.memory.generic-x86.dimm_ce"
    ]
    assert env.stat("dimm_by_pages") == 1
    assert env.stat("under_faulty_dimm") == 2


def test_pages_under_a_faulty_dimm_on_request() -> None:
    """With pages_under_dimm, pages of a faulty DIMM are still diagnosed."""
    env = make_env([("page_n", "0"), ("dimm_pages", "3"), ("pages_under_dimm", "true")])
    for i in range(5):
        env.feed(env.mem(DIMM1_ADDR + (i << 15), T0 + i * HOUR))
    assert (
        env.classes()
        == ["fault.memory.generic-x86.page_ce"] * 3
        + ["fault.memory.generic-x86.dimm_ce"]
        + ["fault.memory.generic-x86.page_ce"] * 2
    )


def test_uncorrected_error_faults_its_page_under_a_faulty_dimm() -> None:
    """An uncorrected error still faults its page when the DIMM is already faulty."""
    env = make_env([("page_n", "0"), ("dimm_pages", "1")])
    env.feed(env.mem(DIMM1_ADDR, T0))
    env.feed(env.mem(DIMM1_ADDR + (1 << 15), T0 + HOUR, ue=True))
    assert env.classes() == [
        "fault.memory.generic-x86.page_ce",
        "fault.memory.generic-x86.dimm_ce",
        "fault.memory.generic-x86.page_ue",
    ]


def test_memory_ue_faults_page_and_dimm_at_once() -> None:
    """One mem_ue gives page_ue and dimm_ue immediately."""
    env = make_env()
    env.feed(env.mem(DIMM1_ADDR + 0x40, T0, ue=True))
    assert env.classes() == [
        "fault.memory.generic-x86.page_ue",
        "fault.memory.generic-x86.dimm_ue",
    ]
    page, dimm = env.suspects()
    assert decode_code(page.code) == ("GMCA", 30)
    assert decode_code(dimm.code) == ("GMCA", 32)
    assert page.fault_list[0].asru == MemFmri(
        unum=DIMM1_PATH, serial="SIM-0-1", physaddr=DIMM1_ADDR
    )
    assert dimm.fault_list[0].location == "CPU 0 DIMM 1"


def test_memory_errors_after_ue_join_the_open_cases() -> None:
    """A second UE on the same page joins both open cases; no new list.suspect."""
    env = make_env()
    env.feed(env.mem(DIMM1_ADDR, T0, ue=True))
    env.feed(env.mem(DIMM1_ADDR + 8, T0 + 1, ue=True))
    env.feed(env.mem(DIMM1_ADDR + (1 << 15), T0 + 2))
    assert len(env.suspects()) == 2
    assert [c.events for c in env.hdl.cases()] == [[1, 2], [1, 2, 3]]


# -- memory whose DIMM cannot be told (a virtual machine) --------------------------------

# A page of a guest's memory: nothing decodes it to a DIMM.
GUEST_PAGE = 0x20000000


def _no_dimm(physaddr: int) -> None:
    """An address decode that, like a virtual machine's, places no address on a DIMM."""
    del physaddr


def make_guest_env(monkeypatch: pytest.MonkeyPatch) -> Env:
    """The module on a platform that cannot tell the DIMM of any address."""
    env = make_env()
    monkeypatch.setattr(env.hdl.topo, "decode_address", _no_dimm)
    return env


def test_three_ces_on_a_page_without_dimm_fault_the_page_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three CEs on one page whose DIMM is unknown give one page_ce naming the page under
    the unknown unum, with no FRU or location and no DIMM engine."""
    env = make_guest_env(monkeypatch)
    for i in range(3):
        env.feed(env.mem(GUEST_PAGE + 8 * i, T0 + i * HOUR))
    (ev,) = env.suspects()
    (s,) = ev.fault_list
    asru = MemFmri(unum=UNKNOWN_UNUM, physaddr=GUEST_PAGE)
    assert (s.cls, s.asru, s.resource, s.fru, s.location) == (
        "fault.memory.generic-x86.page_ce",
        asru,
        asru,
        None,
        None,
    )
    assert decode_code(ev.code) == ("GMCA", 29)
    page_engine = f"serd.memory.generic-x86.page_ce@physaddr={GUEST_PAGE:#x}"
    assert env.hdl.serd.names() == [page_engine]  # no DIMM engine
    assert (env.stat("page_only"), env.stat("cases_page"), env.stat("mem_unresolved")) == (
        3,
        1,
        0,
    )
    assert env.hdl.specific.get("dimm_pages", {}) == {}


def test_two_ces_on_a_page_without_dimm_do_not_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two CEs are not more than page_n=2: the page's engine counts them, no fault yet."""
    env = make_guest_env(monkeypatch)
    for i in range(2):
        env.feed(env.mem(GUEST_PAGE, T0 + i * HOUR))
    assert env.suspects() == []
    assert env.hdl.serd.names() == [f"serd.memory.generic-x86.page_ce@physaddr={GUEST_PAGE:#x}"]


def test_ue_on_a_page_without_dimm_faults_the_page_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One mem_ue whose DIMM is unknown gives page_ue at once, and no DIMM fault."""
    env = make_guest_env(monkeypatch)
    env.feed(env.mem(GUEST_PAGE + 0x40, T0, ue=True))
    (ev,) = env.suspects()
    (s,) = ev.fault_list
    assert (s.cls, s.asru) == (
        "fault.memory.generic-x86.page_ue",
        MemFmri(unum=UNKNOWN_UNUM, physaddr=GUEST_PAGE),
    )
    assert decode_code(ev.code) == ("GMCA", 30)


def test_later_errors_and_kernel_report_join_the_page_only_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a page-only page_ue, more errors on the page and the kernel's memory_failure
    report of it join that case; no second diagnosis."""
    env = make_guest_env(monkeypatch)
    env.feed(env.mem(GUEST_PAGE, T0, ue=True))
    env.feed(env.mem(GUEST_PAGE + 8, T0 + 1))
    env.feed(_memory_failure(env, GUEST_PAGE, T0 + 2))
    assert len(env.suspects()) == 1
    (case,) = env.hdl.cases()
    assert case.events == [1, 2, 3]
    assert (env.stat("joined"), env.stat("kernel_mf_joined")) == (2, 1)


def test_qemu_filler_record_never_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU's broadcast filler (VAL|UC, EN clear, code 0) decodes as unknown: an upset
    that, however often it comes, opens no engine and no case."""
    env = make_guest_env(monkeypatch)
    registers = {"cpu": 0, "bank": 1, "status": "0xa000000000000000", "mcgstatus": "0x5",
                 "mcgcap": "0x100010a", "vendor": "GenuineIntel"}  # fmt: skip
    filler = {"mca": registers}
    repeats = 5
    for i in range(repeats):
        ev = mca_ereport(filler, env.hdl.topo, now_ns=T0 + i, ena_gen=EnaGenerator())
        assert ev.cls == PREFIX + "unknown"
        ev.id = env.next_id
        env.next_id += 1
        env.feed(ev)
    assert (env.suspects(), env.hdl.serd.names(), env.hdl.cases()) == ([], [], [])
    assert env.stat("upsets") == repeats


def test_memory_ereport_without_address_is_discarded() -> None:
    """A memory ereport without a usable physaddr (so no page, no DIMM) is counted and dropped."""
    env = make_env()
    ev = env.mem(DIMM1_ADDR, T0, ue=True)
    del ev.payload["physaddr"], ev.payload["resource"]
    env.feed(ev)
    assert env.suspects() == []
    assert env.stat("mem_unresolved") == 1


# -- the SERD model --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40 * HOUR), min_size=1, max_size=12))
def test_engine_agrees_with_serd_model(gaps: list[int]) -> None:
    """The strand is faulted iff some 4 consecutive CEs fall within 72h (N=3, T=72h)."""
    env = make_env()
    times = []
    t = T0
    for gap in gaps:
        t += gap
        times.append(t)
        env.feed(env.cpu("l2cache", t))
    expected = any(times[i + 3] - times[i] <= 72 * HOUR for i in range(len(times) - 3))
    assert len(env.suspects()) == (1 if expected else 0)


# -- the kernel's own page actions ---------------------------------------------------


def _memory_failure(env: Env, physaddr: int, t_ns: int) -> Ereport:
    payload = {"pfn": physaddr >> 12, "physaddr": physaddr, "page_type": "free buddy page",
               "action_result": "Recovered", "source": "tracefs"}  # fmt: skip
    return env.ereport("ereport.os.linux.memory_failure", t_ns, CpuFmri(cpuid=0), payload)


def test_kernel_page_action_joins_the_page_case() -> None:
    """A memory_failure report for a diagnosed page is recorded in that page's case
    and starts no diagnosis of its own."""
    env = make_env()
    for i in range(3):
        env.feed(env.mem(DIMM1_ADDR + 8 * i, T0 + i * HOUR))
    (uuid,) = env.hdl.specific["cases"].values()
    case = env.hdl.case_get(uuid)
    assert case is not None
    before = case.ereports
    kernel = _memory_failure(env, DIMM1_ADDR + 0x10, T0 + 4 * HOUR)
    env.feed(kernel)
    assert (case.ereports, case.contains_event(kernel.id or 0)) == (before + 1, True)
    assert len(env.suspects()) == 1
    assert env.stat("kernel_mf_joined") == 1


def test_kernel_page_action_without_a_case_is_only_counted() -> None:
    """A memory_failure report on a page fmd has no case for opens nothing."""
    env = make_env()
    env.feed(_memory_failure(env, 0x7000, T0))
    assert (env.suspects(), env.hdl.specific.get("cases", {}), env.stat("kernel_mf_alone")) == (
        [],
        {},
        1,
    )
