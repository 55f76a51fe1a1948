"""The module API (fmd.api.Handle): cases, suspects, list events, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from fmd import states
from fmd.api import Handle, ModuleContext
from fmd.ckpt import CheckpointOp
from fmd.clock import SimulatedClock
from fmd.config import Properties
from fmd.dictionary import DictionarySet, default_dict_dirs
from fmd.dispq import SubscriptionTree
from fmd.errors import CaseStateError, ModuleApiError, ModuleError
from fmd.eventq import EventQueue
from fmd.module import ModuleRunner, Plugin
from fmd.protocol import (
    FAULT_FAULTY,
    FAULT_REPAIRED,
    FAULT_UNUSABLE,
    CpuFmri,
    Ereport,
)
from fmd.states import CaseState
from fmd.timerq import TimerQueue


@dataclass
class FakeWriter:
    ops: list[CheckpointOp] = field(default_factory=list)

    def submit(self, op: CheckpointOp) -> None:
        self.ops.append(op)


class Closer(Plugin):
    name = "closer"
    closed: list[str] = []

    def close(self, hdl: Handle, case: Any) -> None:
        self.closed.append(case.uuid)


def make_handle() -> tuple[Handle, FakeWriter, SimulatedClock]:
    clock = SimulatedClock(1_000_000_000_000)
    writer = FakeWriter()
    owners: dict[str, Any] = {}
    ctx = ModuleContext(
        clock=clock,
        writer=writer,
        dicts=DictionarySet.load(default_dict_dirs()),  # type: ignore[arg-type]
        timers=TimerQueue(clock),
        tree=SubscriptionTree(),
        authority=(("server-id", "h"),),
        case_owner=owners.get,
        register_case=lambda u, r: owners.__setitem__(u, r),
    )
    hdl = Handle(ctx, "closer", "1.0", Properties.build(()), ["FMD"])
    runner = ModuleRunner(
        Closer(),
        hdl,
        EventQueue(10),
        origin="test",
        load_overflow=lambda refs: [],
        on_failure=lambda r, e: None,
    )
    hdl.runner = runner
    return hdl, writer, clock


def ereport(i: int, t: int = 0) -> Ereport:
    return Ereport(
        cls="ereport.test.x", ena=i, time_ns=t, detector=None, detector_str=None, payload={}, id=i
    )


def test_solve_convicts_every_suspect_and_logs_list_suspect() -> None:
    """Solving marks suspects FAULTY, events DIAGNOSED and publishes list.suspect with a code."""
    hdl, writer, _ = make_handle()
    case = hdl.case_open()
    hdl.case_add_ereport(case, ereport(7))
    hdl.case_add_suspect(
        case,
        hdl.create_fault("defect.sunos.fmd.nosub", 100, asru=CpuFmri(cpuid=3), location="CPU 3"),
    )
    ev = hdl.case_solve(case)
    assert (ev.cls, ev.code, ev.fault_status) == ("list.suspect", "FMD-8000-0W", [FAULT_FAULTY])
    assert ev.fault_list[0].location == "CPU 3"
    op = hdl.checkpoint({"errlog": 7, "fltlog": 0})
    assert op.states == [(7, states.STATE_DIAGNOSED)]
    assert [e.cls for e in op.list_events] == ["list.suspect"]
    _uuid, row, suspects, events = op.cases[0]
    assert (row["state"], events, suspects[0]["asru"]) == (1, [7], "cpu:///cpuid=3")
    assert op.resources[0]["fmri"] == "cpu:///cpuid=3"
    assert op.resources[0]["flags"] == FAULT_FAULTY
    assert writer.ops == [op]


def test_unknown_class_set_gets_nodiagcode() -> None:
    """A suspect list with no dictionary entry is coded FMD-8000-11."""
    hdl, _, _ = make_handle()
    case = hdl.case_open()
    hdl.case_add_suspect(case, hdl.create_fault("fault.nowhere.to.be.found"))
    assert hdl.case_solve(case).code == "FMD-8000-11"


def test_close_isolates_then_repair_and_resolve() -> None:
    """close -> list.isolated (UNUSABLE); repair -> list.repaired; then resolved on uuresolved."""
    hdl, _, _ = make_handle()
    case = hdl.case_open()
    hdl.case_add_suspect(
        case, hdl.create_fault("defect.sunos.fmd.module", 100, asru=CpuFmri(cpuid=1))
    )
    hdl.case_solve(case)
    hdl.case_close(case)
    assert case.state is CaseState.CLOSED
    assert Closer.closed[-1] == case.uuid
    hdl.case_repair(case)
    assert case.state is CaseState.REPAIRED  # still unusable: waits for the agent
    hdl.case_uuresolved(case.uuid)
    assert case.state is CaseState.RESOLVED
    op = hdl.checkpoint({"errlog": 0, "fltlog": 0})
    assert [(e.cls, e.code) for e in op.list_events] == [
        ("list.suspect", "FMD-8000-2K"),
        ("list.isolated", "FMD-8000-2K"),
        ("list.repaired", "FMD-8000-4M"),
        ("list.resolved", "FMD-8000-6U"),
    ]
    statuses = [e.fault_status[0] for e in op.list_events]
    assert statuses == [
        FAULT_FAULTY,
        FAULT_FAULTY | FAULT_UNUSABLE,
        FAULT_UNUSABLE | FAULT_REPAIRED,
        FAULT_REPAIRED,
    ]
    assert hdl.case_get(case.uuid) is None
    assert [r[1]["state"] for r in op.cases if r[1]] == [int(CaseState.RESOLVED)]


def test_repair_of_unisolated_case_resolves_at_once() -> None:
    """A repaired case whose resources were never taken out of service resolves immediately."""
    hdl, _, _ = make_handle()
    case = hdl.case_open()
    hdl.case_add_suspect(case, hdl.create_fault("defect.sunos.fmd.config"))
    hdl.case_solve(case)
    hdl.case_repair(case)
    assert case.state is CaseState.RESOLVED


def test_closing_unsolved_case_discards_it() -> None:
    """An unsolved case that is closed is deleted, with no list event."""
    hdl, _, _ = make_handle()
    case = hdl.case_open()
    hdl.case_close(case)
    op = hdl.checkpoint({"errlog": 0, "fltlog": 0})
    assert (op.case_deletes, op.list_events) == ([case.uuid], [])


def test_solve_without_suspects_is_refused() -> None:
    """A case needs a suspect before it can be solved."""
    hdl, _, _ = make_handle()
    with pytest.raises(CaseStateError, match="no suspects"):
        hdl.case_solve(hdl.case_open())


def test_bad_fault_is_a_module_api_error() -> None:
    """create_fault rejects a class that is not fault/defect/upset, naming it."""
    hdl, _, _ = make_handle()
    with pytest.raises(ModuleApiError, match=r"ereport\.bad"):
        hdl.create_fault("ereport.bad")


def test_serd_record_accepts_events_and_checkpoint_round_trips() -> None:
    """SERD records mark events ACCEPTED; the checkpoint restores engines, bufs and progress."""
    hdl, _, _ = make_handle()
    hdl.serd_create("e", 2, 100)
    assert [hdl.serd_record("e", ereport(i, i)) for i in (1, 2, 3)] == [False, False, True]
    hdl.buf_write("b", b"\x00\x01")
    op = hdl.checkpoint({"errlog": 3, "fltlog": 0})
    assert sorted(op.states) == [(1, 2), (2, 2), (3, 2)]
    assert op.doc is not None
    other, _, _ = make_handle()
    seen = other.restore(orjson.loads(op.doc), [], {n: d for n, d in op.serd if d is not None})
    assert seen == {"errlog": 3, "fltlog": 0}
    assert other.serd_fired("e") and other.buf_read("b") == b"\x00\x01"
    assert other.contains_event(2) and not other.contains_event(4)


def test_foreign_case_is_refused() -> None:
    """A module cannot operate on a case it does not own."""
    hdl, _, _ = make_handle()
    other, _, _ = make_handle()
    case = other.case_open()
    with pytest.raises(ModuleApiError, match="not one of its cases"):
        hdl.case_solve(case)


def solved_case(hdl: Handle, event_id: int) -> Any:
    """A solved case holding ``event_id``, as a stored copy (its to_dict round trip)."""
    from fmd.case import Case

    case = hdl.case_open()
    hdl.case_add_ereport(case, ereport(event_id))
    hdl.case_add_suspect(case, hdl.create_fault("defect.sunos.fmd.nosub", 100))
    hdl.case_solve(case)
    stored = Case.from_dict(orjson.loads(orjson.dumps(case.to_dict(include_events=False))))
    stored.restore_events([event_id])
    return stored


def test_diagnosed_cases_are_restored_lazily() -> None:
    """A restored case given by uuid is counted at once and read from the store only
    when the module first asks for it, once."""
    origin, _, _ = make_handle()
    stored = solved_case(origin, 5)
    hdl, _, _ = make_handle()
    loads: list[str] = []

    def load(uuid: str) -> Any:
        loads.append(uuid)
        return stored if uuid == stored.uuid else None

    hdl._ctx.load_case = load
    hdl.restore(None, [], unloaded=[stored.uuid, "gone"])
    assert hdl.open_cases == 2
    assert loads == []
    case = hdl.case_get(stored.uuid)
    assert case is stored
    assert hdl.case_get(stored.uuid) is stored
    assert hdl.case_get("gone") is None
    assert loads == [stored.uuid, "gone"]
    assert hdl.open_cases == 1
    assert hdl.case_repair(case)


def test_event_state_asks_the_store_for_unloaded_cases() -> None:
    """An event held by a case not yet read back is DIAGNOSED if the stored case is
    solved; the store is asked only about the module's unloaded cases."""
    origin, _, _ = make_handle()
    stored = solved_case(origin, 9)
    hdl, _, _ = make_handle()
    hdl._ctx.cases_holding = lambda eid, module: [(stored.uuid, 1)] if eid == 9 else []
    hdl.restore(None, [], unloaded=[stored.uuid])
    assert hdl.event_state(9) == states.STATE_DIAGNOSED
    assert hdl.event_state(10) is None


def test_cases_reads_every_unloaded_case() -> None:
    """cases() returns the lazily restored cases too."""
    origin, _, _ = make_handle()
    stored = solved_case(origin, 3)
    hdl, _, _ = make_handle()
    hdl._ctx.load_case = lambda uuid: stored
    hdl.restore(None, [], unloaded=[stored.uuid])
    assert [c.uuid for c in hdl.cases()] == [stored.uuid]


def test_a_call_to_a_stopped_module_is_answered_at_once() -> None:
    """A request that races with ``unload`` (queued after the module's thread has
    stopped) gets an error right away instead of waiting out its timeout."""
    hdl, _, _ = make_handle()
    runner = hdl.runner
    assert runner is not None
    runner.start()
    assert runner.call(lambda: 42, wait=30) == 42
    runner.stop()
    with pytest.raises(ModuleError, match="no longer running"):
        runner.call(lambda: 42, wait=30)


def test_a_call_to_a_failed_module_is_answered_at_once() -> None:
    """Calls queued to a module that has failed are answered with an error, not
    dropped for their callers to time out."""
    hdl, _, _ = make_handle()
    runner = hdl.runner
    assert runner is not None
    runner.start()
    runner.fail(RuntimeError("broken"))
    with pytest.raises(ModuleError, match="not active"):
        runner.call(lambda: 42, wait=30)
    runner.stop()
