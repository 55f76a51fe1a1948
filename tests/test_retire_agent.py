"""The cpumem-retire agent on its own Handle (sim platform, simulated clock) with a
scripted backend: which suspects get which action, retries and back-off, the close
of the case once everything is out of service, and the way back on repair."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.retire.agent import CpumemRetire, action_for
from agents.retire.backend import (
    BackendError,
    CpuState,
    CpuTarget,
    PageOutcome,
    PageState,
    RetireBackend,
)
from fmd.api import Handle
from fmd.hw.topo import SimPlatform
from fmd.hw.virt import ROLE_GUEST, Virtualization
from fmd.protocol import (
    FAULT_FAULTY,
    FAULT_REPLACED,
    FAULT_UNUSABLE,
    CpuFmri,
    HcFmri,
    ListEvent,
    MemFmri,
    Suspect,
)
from tests.diagnosis_util import make_handle
from tests.retire_fakes import make_fake_sysfs

PLATFORM = SimPlatform(hostname="h")
SEC = 10**9


@dataclass
class ScriptedBackend(RetireBackend):
    """Records every call; ``errors`` are raised (first in, first out) by the next calls
    of that operation; ``page_outcomes`` and ``page_states`` are returned in turn."""

    name = "scripted"
    calls: list[tuple[str, Any]] = field(default_factory=list)
    errors: dict[str, list[BackendError]] = field(default_factory=dict)
    page_outcomes: list[PageOutcome] = field(default_factory=list)
    page_states: list[PageState] = field(default_factory=list)
    offline: set[int] = field(default_factory=set)

    def _call(self, op: str, arg: Any) -> None:
        self.calls.append((op, arg))
        queued = self.errors.get(op)
        if queued:
            raise queued.pop(0)

    def cpu_offline(self, cpu: CpuTarget) -> None:
        self._call("cpu_offline", cpu)
        self.offline.add(cpu.cpuid)

    def cpu_online(self, cpu: CpuTarget) -> None:
        self._call("cpu_online", cpu)
        self.offline.discard(cpu.cpuid)

    def cpu_status(self, cpu: CpuTarget) -> CpuState:
        return CpuState.OFFLINE if cpu.cpuid in self.offline else CpuState.ONLINE

    def page_retire(self, physaddr: int) -> PageOutcome:
        self._call("page_retire", physaddr)
        return self.page_outcomes.pop(0) if self.page_outcomes else PageOutcome.DONE

    def page_unretire(self, physaddr: int) -> None:
        self._call("page_unretire", physaddr)

    def page_status(self, physaddr: int) -> PageState:
        self.calls.append(("page_status", physaddr))
        return self.page_states.pop(0) if self.page_states else PageState.PENDING

    def describe(self) -> str:
        return "scripted"


@dataclass
class Agent:
    hdl: Handle
    plugin: CpumemRetire
    backend: ScriptedBackend
    closed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def send(self, ev: ListEvent) -> None:
        self.plugin.recv(self.hdl, ev)

    def fire_timers(self) -> list[int]:
        """Run every timer the agent has installed, oldest first; return their delays."""
        timers = self.hdl._ctx.timers
        fired = []
        while True:
            pending = sorted((when, tid) for when, tid in timers._heap if tid in timers._timers)
            if not pending:
                return fired
            when, tid = pending[0]
            _fire, arg = timers._timers.pop(tid)
            fired.append(when)
            self.plugin.timeout(self.hdl, tid, arg)

    def responses(self) -> list[tuple[int, str, bool]]:
        return [(r["idx"], r["action"], r["ok"]) for r in self.hdl._out.responses]

    def stat(self, name: str) -> int:
        return self.hdl.stat(name).value


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    sysfs = make_fake_sysfs(tmp_path / "sys")
    plugin = CpumemRetire()
    hdl, _writer = make_handle(
        plugin, "GMCA", [("backend", "linux"), ("sysfs_root", str(sysfs)), ("cec", "inactive")]
    )
    backend = ScriptedBackend()
    plugin.backend = backend
    a = Agent(hdl, plugin, backend)
    hdl.case_uuclose = a.closed.append  # type: ignore[method-assign]
    hdl.case_uuresolved = a.resolved.append  # type: ignore[method-assign]
    return a


def cpu_fault(cpuid: int = 13, cls: str = "fault.cpu.generic-x86.l1icache") -> Suspect:
    strand = PLATFORM.cpu_to_hc(cpuid)
    return Suspect.model_validate(
        {
            "class": cls,
            "certainty": 100,
            "asru": CpuFmri(cpuid=cpuid),
            "resource": strand,
            "location": f"CPU {cpuid // 4}",
        }
    )


def chip_fault(chip: int, *, asru: bool = True) -> Suspect:
    chip_fmri = HcFmri(hc_list=(("motherboard", "0"), ("chip", str(chip))))
    return Suspect.model_validate(
        {
            "class": "fault.cpu.generic-x86.l2cache",
            "certainty": 100,
            "resource": chip_fmri,
            "asru": chip_fmri if asru else None,
        }
    )


def page_fault(physaddr: int = 0x12345678) -> Suspect:
    return Suspect.model_validate(
        {
            "class": "fault.memory.generic-x86.page_ce",
            "certainty": 100,
            "asru": MemFmri(unum="motherboard=0/chip=0", physaddr=physaddr),
        }
    )


def dimm_fault() -> Suspect:
    return Suspect.model_validate(
        {
            "class": "fault.memory.generic-x86.dimm_ce",
            "certainty": 100,
            "asru": MemFmri(unum="motherboard=0/chip=0/memory-controller=0/dimm=0"),
        }
    )


def list_event(
    cls: str, suspects: Iterable[Suspect], status: int = FAULT_FAULTY, uuid: str = "u-1"
) -> ListEvent:
    fault_list = list(suspects)
    return ListEvent.model_validate(
        {
            "class": cls,
            "uuid": uuid,
            "code": "GMCA-8000-Q7",
            "diag-time": 1,
            "de": {"scheme": "fmd", "mod-name": "cpumem-diagnosis"},
            "fault-list": fault_list,
            "fault-status": [status] * len(fault_list),
        }
    )


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        ("fault.cpu.generic-x86.l1icache", "cpu"),
        ("fault.cpu.generic-x86.internal", "cpu"),
        ("fault.cpu.amd.l2cachedata", "cpu"),
        ("fault.cpu.generic-x86.bus_interconnect_memory", None),
        ("fault.cpu.generic-x86.mc", None),
        ("fault.cpu.intel.quickpath.interconnect", None),
        ("fault.cpu.intel.page_ce", "page"),
        ("fault.memory.generic-x86.page_ue", "page"),
        ("fault.memory.page", "page"),
        ("fault.memory.generic-x86.dimm_ce", None),
        ("fault.memory.dimm_sb", None),
        ("defect.sunos.fmd.nosub", None),
    ],
)
def test_action_by_fault_class(cls: str, expected: str | None) -> None:
    """CPU faults offline, page faults retire; bus, memory-controller and DIMM faults
    take no action."""
    suspect = Suspect.model_validate({"class": cls, "certainty": 100})
    assert action_for(suspect) == expected


def test_retire_false_means_no_action() -> None:
    """A suspect marked retire=false is left alone."""
    suspect = cpu_fault().model_copy(update={"retire": False})
    assert action_for(suspect) is None


def test_cpu_fault_offlines_the_strand_and_closes(agent: Agent) -> None:
    """A CPU fault offlines the strand of its hc resource (physical id) and closes the case."""
    agent.send(list_event("list.suspect", [cpu_fault(13)]))
    assert agent.backend.calls == [("cpu_offline", CpuTarget(13, "hc", "CPU 3"))]
    assert agent.closed == ["u-1"]
    assert agent.responses() == [(0, "offline", True)]
    assert agent.stat("cpu_flts") == 1


class GuestPlatform(SimPlatform):
    """The sim machine, seen as a QEMU virtual machine."""

    @property
    def virtualization(self) -> Virtualization:
        return Virtualization(ROLE_GUEST, "qemu", ("CPUID hypervisor bit",))


def test_vcpu_fault_is_left_online_in_a_guest(agent: Agent) -> None:
    """In a virtual machine a CPU fault offlines nothing and the response says the
    physical fault belongs to the host."""
    agent.hdl._ctx.platform = GuestPlatform(hostname="h")
    agent.send(list_event("list.suspect", [cpu_fault(13)]))
    assert agent.backend.calls == []
    assert agent.responses() == [(0, "none", False)]
    detail = agent.hdl._out.responses[0]["detail"]
    assert "virtual CPU of this qemu virtual machine" in detail
    assert "belongs to the host" in detail
    assert agent.stat("cpu_virtual") == 1
    assert agent.closed == []


def test_vcpu_fault_is_offlined_when_offline_vcpus_is_set(tmp_path: Path) -> None:
    """offline_vcpus=true makes a guest offline its faulty virtual CPU like a real one."""
    plugin = CpumemRetire()
    sysfs = make_fake_sysfs(tmp_path / "sys")
    hdl, _writer = make_handle(
        plugin,
        "GMCA",
        [("backend", "linux"), ("sysfs_root", str(sysfs)), ("offline_vcpus", "true")],
    )
    hdl._ctx.platform = GuestPlatform(hostname="h")
    plugin.backend = backend = ScriptedBackend()
    plugin.recv(hdl, list_event("list.suspect", [cpu_fault(13)]))
    assert backend.calls == [("cpu_offline", CpuTarget(13, "hc", "CPU 3"))]


def test_page_fault_is_retired_in_a_guest(agent: Agent) -> None:
    """A guest still retires its own (guest-physical) pages."""
    agent.hdl._ctx.platform = GuestPlatform(hostname="h")
    agent.send(list_event("list.suspect", [page_fault(0x2000_0000)]))
    assert agent.backend.calls == [("page_retire", 0x2000_0000)]


def test_chip_fault_offlines_every_strand_of_the_chip(agent: Agent) -> None:
    """A fault whose resource and ASRU are a whole chip offlines its four strands."""
    agent.send(list_event("list.suspect", [chip_fault(2)]))
    assert [c[1].cpuid for c in agent.backend.calls] == [8, 9, 10, 11]
    assert agent.closed == ["u-1"]


def test_fault_without_a_cpu_asru_offlines_nothing(agent: Agent) -> None:
    """A CPU fault whose suspect names no ASRU takes nothing out of service."""
    agent.send(list_event("list.suspect", [chip_fault(2, asru=False)]))
    assert agent.backend.calls == []
    assert agent.closed == []
    assert agent.responses() == [(0, "none", False)]
    assert agent.stat("bad_flts") == 1


def test_resource_wider_than_the_asru_is_refused(agent: Agent) -> None:
    """A suspect whose resource is a chip but whose ASRU is one strand is refused:
    the agent never acts on more than the ASRU names."""
    suspect = chip_fault(2).model_copy(update={"asru": CpuFmri(cpuid=9)})
    agent.send(list_event("list.suspect", [suspect]))
    assert agent.backend.calls == []
    assert agent.stat("cpu_refused") == 1
    [detail] = [r["detail"] for r in agent.hdl._out.responses]
    assert detail.startswith(
        "refused: the resource hc:///motherboard=0/chip=2 covers cpu(s) 8, 10-11"
    )


def test_whole_machine_fault_is_refused(agent: Agent) -> None:
    """A fault naming the motherboard (every CPU) would leave no CPU online: refused."""
    board = HcFmri(hc_list=(("motherboard", "0"),))
    suspect = Suspect.model_validate(
        {
            "class": "fault.cpu.generic-x86.l2cache",
            "certainty": 100,
            "resource": board,
            "asru": board,
        }
    )
    agent.send(list_event("list.suspect", [suspect]))
    assert agent.backend.calls == []
    assert agent.closed == []
    [detail] = [r["detail"] for r in agent.hdl._out.responses]
    assert detail == "refused: offlining cpu(s) 0-15 would leave no CPU online"


def test_offline_share_is_capped_by_max_offline_pct(agent: Agent) -> None:
    """Two chips (8 of 16 CPUs) may go offline under the default 50%; a third is refused
    and the reason recorded for fmadm faulty."""
    for chip in (0, 1, 2):
        agent.send(list_event("list.suspect", [chip_fault(chip)], uuid=f"u-{chip}"))
    assert sorted(c[1].cpuid for c in agent.backend.calls) == list(range(8))
    assert agent.closed == ["u-0", "u-1"]
    assert agent.stat("cpu_refused") == 1
    refused = [r for r in agent.hdl._out.responses if not r["ok"]]
    assert [(r["uuid"], r["action"], r["detail"]) for r in refused] == [
        (
            "u-2",
            "offline",
            "refused: offlining cpu(s) 8-11 would leave 12 of 16 CPUs offline, more than "
            "max_offline_pct=50%",
        )
    ]


def test_cpus_already_offline_count_towards_the_cap(agent: Agent) -> None:
    """CPUs offline for any reason count: with 7 offline, one more strand fits under
    50% and a second does not."""
    agent.backend.offline.update(range(7))
    agent.send(list_event("list.suspect", [cpu_fault(13)], uuid="a"))
    agent.send(list_event("list.suspect", [cpu_fault(14)], uuid="b"))
    assert [c[1].cpuid for c in agent.backend.calls] == [13]
    assert agent.closed == ["a"]
    assert agent.stat("cpu_refused") == 1


def test_cpu_scheme_asru_without_topology_is_logical(agent: Agent) -> None:
    """With no hc resource the cpu-scheme ASRU is used, marked as a logical id."""
    suspect = Suspect.model_validate(
        {"class": "fault.cpu.generic-x86.l2cache", "certainty": 100, "asru": CpuFmri(cpuid=5)}
    )
    agent.send(list_event("list.suspect", [suspect]))
    assert agent.backend.calls == [("cpu_offline", CpuTarget(5, "cpu", None))]


def test_dimm_fault_takes_no_action_and_leaves_the_case_open(agent: Agent) -> None:
    """A DIMM fault is counted as needing no action; nothing was isolated, so no close."""
    agent.send(list_event("list.suspect", [dimm_fault()]))
    assert agent.backend.calls == []
    assert agent.closed == []
    assert agent.stat("nop_flts") == 1


def test_busy_cpu_is_retried_after_cpu_delay(agent: Agent) -> None:
    """A retryable error is tried again cpu_delay later; success then closes the case."""
    agent.backend.errors["cpu_offline"] = [BackendError("busy", retryable=True)]
    agent.send(list_event("list.suspect", [cpu_fault()]))
    assert agent.closed == []
    delays = agent.fire_timers()
    assert len(delays) == 1
    assert [c[0] for c in agent.backend.calls] == ["cpu_offline", "cpu_offline"]
    assert agent.closed == ["u-1"]
    assert agent.stat("retries") == 1


def test_cpu_gives_up_after_cpu_tries(agent: Agent) -> None:
    """After cpu_tries retryable failures the offline is failed: recorded, counted,
    and the case stays open."""
    agent.backend.errors["cpu_offline"] = [
        BackendError(f"busy {i}", retryable=True) for i in range(10)
    ]
    agent.send(list_event("list.suspect", [cpu_fault()]))
    agent.fire_timers()
    assert len(agent.backend.calls) == 10
    assert agent.closed == []
    assert agent.stat("cpu_fails") == 1
    assert agent.responses()[-1] == (0, "offline", False)


def test_permanent_error_fails_at_once(agent: Agent) -> None:
    """A non-retryable error (not hot-pluggable) is not retried."""
    agent.backend.errors["cpu_offline"] = [BackendError("cpu13 is not hot-pluggable")]
    agent.send(list_event("list.suspect", [cpu_fault()]))
    assert agent.fire_timers() == []
    assert agent.closed == []
    assert agent.hdl._out.responses[-1]["detail"] == "cpu13 is not hot-pluggable"


def test_page_retire_done_closes(agent: Agent) -> None:
    """A page fault retires the page at the ASRU's physaddr and closes the case."""
    agent.send(list_event("list.suspect", [page_fault(0x12345678)]))
    assert agent.backend.calls == [("page_retire", 0x12345678)]
    assert agent.closed == ["u-1"]
    assert agent.stat("page_flts") == 1


def test_pending_page_is_polled_with_doubling_delays(agent: Agent) -> None:
    """A pending retire is re-checked 1s, 2s, 4s... later until the page is retired."""
    agent.backend.page_outcomes = [PageOutcome.PENDING]
    agent.backend.page_states = [PageState.PENDING, PageState.PENDING, PageState.RETIRED]
    t0 = agent.hdl.now_ns()
    agent.send(list_event("list.suspect", [page_fault()]))
    assert agent.closed == []
    deadlines = agent.fire_timers()
    assert [d - t0 for d in deadlines] == [1 * SEC, 2 * SEC, 4 * SEC]
    assert agent.closed == ["u-1"]


def test_pending_page_given_up_after_max_retries(agent: Agent) -> None:
    """After page_retire_maxretries checks the retire counts as done (page_retmax)."""
    agent.backend.page_outcomes = [PageOutcome.PENDING]
    agent.send(list_event("list.suspect", [page_fault()]))
    agent.fire_timers()
    assert [c[0] for c in agent.backend.calls].count("page_status") == 5
    assert agent.stat("page_retmax") == 1
    assert agent.closed == ["u-1"]


def test_mixed_case_closes_only_when_every_action_succeeded(agent: Agent) -> None:
    """CPU and page suspects in one case: one failure keeps the case open."""
    agent.backend.errors["page_retire"] = [BackendError("permission denied")]
    agent.send(list_event("list.suspect", [cpu_fault(), page_fault(), dimm_fault()]))
    assert agent.closed == []
    assert agent.responses() == [(0, "offline", True), (1, "retire", False)]


def test_disabled_offline_is_suppressed(tmp_path: Path) -> None:
    """cpu_offline_enable=false: nothing is offlined, cpu_supp counts it."""
    plugin = CpumemRetire()
    hdl, _ = make_handle(
        plugin,
        "GMCA",
        [
            ("backend", "linux"),
            ("sysfs_root", str(make_fake_sysfs(tmp_path / "sys"))),
            ("cpu_offline_enable", "false"),
        ],
    )
    backend = ScriptedBackend()
    plugin.backend = backend
    plugin.recv(hdl, list_event("list.suspect", [cpu_fault()]))
    assert backend.calls == []
    assert hdl.stat("cpu_supp").value == 1


def test_repair_onlines_and_reports_resolved(agent: Agent) -> None:
    """list.repaired of an isolated case onlines the strand and reports it resolved."""
    agent.send(list_event("list.suspect", [cpu_fault()]))
    agent.send(list_event("list.repaired", [cpu_fault()], status=FAULT_UNUSABLE | FAULT_REPLACED))
    assert agent.backend.calls[-1] == ("cpu_online", CpuTarget(13, "hc", "CPU 3"))
    assert agent.resolved == ["u-1"]
    assert agent.stat("cpu_repairs") == 1


def test_repair_of_case_never_isolated_does_not_resolve(agent: Agent) -> None:
    """A repaired case with nothing out of service is resolved by fmd itself."""
    agent.send(list_event("list.repaired", [dimm_fault()], status=FAULT_REPLACED))
    assert agent.resolved == []


def test_failed_online_keeps_the_case_repaired_not_resolved(agent: Agent) -> None:
    """If the CPU cannot be brought back the case is not reported resolved."""
    agent.backend.offline.add(13)
    agent.backend.errors["cpu_online"] = [BackendError("permission denied")]
    agent.send(list_event("list.repaired", [cpu_fault()], status=FAULT_UNUSABLE | FAULT_REPLACED))
    assert agent.resolved == []
    assert agent.stat("cpu_fails") == 1


def test_repair_cancels_pending_retries(agent: Agent) -> None:
    """A repair arriving while an offline is being retried stops the retries."""
    agent.backend.errors["cpu_offline"] = [BackendError("busy", retryable=True)]
    agent.send(list_event("list.suspect", [cpu_fault()]))
    agent.send(list_event("list.repaired", [cpu_fault()], status=FAULT_REPLACED))
    assert agent.fire_timers() == []
    assert agent.closed == []


def test_suspect_no_longer_faulty_is_skipped(agent: Agent) -> None:
    """A replayed diagnosis whose suspect was since repaired is not retired again."""
    agent.send(list_event("list.suspect", [cpu_fault()], status=FAULT_REPLACED))
    assert agent.backend.calls == []


# -- the retire state machine under any sequence of backend answers -----------------

_ANSWERS = st.sampled_from(["ok", "busy", "broken"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cpu_answers=st.lists(_ANSWERS, max_size=12),
    page_pending=st.booleans(),
    page_states=st.lists(st.sampled_from(["pending", "retired", "unknown"]), max_size=8),
    with_dimm=st.booleans(),
)
def test_any_backend_behaviour_ends_in_close_exactly_when_all_succeeded(
    tmp_path: Path,
    cpu_answers: list[str],
    page_pending: bool,
    page_states: list[str],
    with_dimm: bool,
) -> None:
    """Whatever the backend answers, the agent never raises, stops retrying, tries a
    CPU at most cpu_tries times, and closes the case exactly when the CPU offline
    and the page retire both ended well (a page given up after the re-checks counts
    as retired, as in the reference)."""
    plugin = CpumemRetire()
    hdl, _ = make_handle(
        plugin,
        "GMCA",
        [("backend", "linux"), ("sysfs_root", str(tmp_path / "none")), ("cec", "inactive")],
    )
    backend = ScriptedBackend()
    plugin.backend = backend
    errors = []
    for answer in cpu_answers:
        if answer == "ok":
            break
        errors.append(BackendError(answer, retryable=answer == "busy"))
    backend.errors["cpu_offline"] = list(errors)
    backend.page_outcomes = [PageOutcome.PENDING if page_pending else PageOutcome.DONE]
    backend.page_states = [PageState(s) for s in page_states]
    agent = Agent(hdl, plugin, backend)
    hdl.case_uuclose = agent.closed.append  # type: ignore[method-assign]
    suspects = [cpu_fault(), page_fault()] + ([dimm_fault()] if with_dimm else [])
    agent.send(list_event("list.suspect", suspects))
    agent.fire_timers()

    offline_tries = [c for c in backend.calls if c[0] == "cpu_offline"]
    assert 1 <= len(offline_tries) <= 10
    # The CPU succeeds if an attempt is left after the busy answers and no broken one.
    first_broken = next((i for i, e in enumerate(errors) if not e.retryable), None)
    cpu_ok = first_broken is None and len(errors) < 10
    assert agent.closed == (["u-1"] if cpu_ok else [])
    assert plugin.pending == {}
