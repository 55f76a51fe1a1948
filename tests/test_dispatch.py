"""Dispatch to modules and the commit frontier (fmd.dispatch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fmd.ckpt import CheckpointOp
from fmd.dispatch import Dispatcher, ModuleGoneOp
from fmd.eventq import EventItem, EventQueue
from fmd.protocol import Ereport
from fmd.store import Progress


class FakeHandle:
    """Holds event 4 in a SERD engine, as a module that consumed it would."""

    def event_state(self, event_id: int) -> int | None:
        return 2 if event_id == 4 else None


@dataclass(eq=False)
class FakeRunner:
    name: str
    handle: FakeHandle = field(default_factory=FakeHandle)
    active: bool = True
    last_seen: dict[str, int] = field(default_factory=lambda: {"errlog": 0, "fltlog": 0})
    queue: EventQueue = field(default_factory=lambda: EventQueue(1000))


@dataclass
class FakeTx:
    ranges: list[tuple[str, int, int]] = field(default_factory=list)

    states: dict[int, int] = field(default_factory=dict)
    late: list[tuple[int, int]] = field(default_factory=list)

    def commit_range(self, log: str, lo: int, hi: int, states: Any = None) -> None:
        self.ranges.append((log, lo, hi))
        self.states.update(states or {})

    def advance_states(self, updates: Any) -> None:
        self.late.extend(updates)


@dataclass
class Ckpt:
    """A checkpoint as the dispatcher sees it: a module's progress and event states."""

    module: str
    last_seen: dict[str, int]
    weight: int = 1
    events: list[Any] = field(default_factory=list)
    states: list[tuple[int, int]] = field(default_factory=list)

    def progress(self) -> Progress:
        return Progress(self.module, self.last_seen, self.states)

    def published(self) -> list[Any]:
        return self.events


def ev(cls: str, i: int) -> Ereport:
    return Ereport(cls=cls, ena=i, time_ns=i, detector=None, detector_str=None, payload={}, id=i)


def commit(d: Dispatcher, *ops: Any, tx: FakeTx | None = None) -> list[tuple[str, int, int]]:
    tx = tx or FakeTx()
    d.before_commit(tx, list(ops))  # type: ignore[arg-type]
    d.after_commit(list(ops))
    return tx.ranges


def drained(r: FakeRunner) -> list[int]:
    items = r.queue.get_batch(10_000, timeout=0) or []
    return [i.id for i in items if isinstance(i, EventItem)]


def setup() -> tuple[Dispatcher, FakeRunner, FakeRunner, FakeRunner]:
    d = Dispatcher()
    a, b, sd = FakeRunner("a"), FakeRunner("b"), FakeRunner("self")
    d.add(a, ["ereport.cpu.*"])  # type: ignore[arg-type]
    d.add(b, ["ereport.*"])  # type: ignore[arg-type]
    d.add(sd, [])  # type: ignore[arg-type]
    d.selfdiag = sd  # type: ignore[assignment]
    return d, a, b, sd


def test_event_goes_once_to_each_matching_module() -> None:
    """Each matching module gets the event exactly once; others do not."""
    d, a, b, sd = setup()
    d.dispatch("errlog", 1, ev("ereport.cpu.x", 1))
    d.dispatch("errlog", 2, ev("ereport.io.y", 2))
    assert (drained(a), drained(b), drained(sd)) == ([1], [1, 2], [])


def test_unsubscribed_events_go_to_self_diagnosis() -> None:
    """An event no module subscribes to is queued to self-diagnosis."""
    d = Dispatcher()
    sd = FakeRunner("self")
    d.add(sd, [])  # type: ignore[arg-type]
    d.selfdiag = sd  # type: ignore[assignment]
    d.dispatch("errlog", 1, ev("ereport.nobody", 1))
    assert drained(sd) == [1]
    assert d.stats["nosub"] == 1


def test_frontier_waits_for_every_module() -> None:
    """An event is committed only once every module it went to has checkpointed past it."""
    d, _a, _b, _ = setup()
    for i in (1, 2, 3):
        d.dispatch("errlog", i, ev("ereport.cpu.x", i))
    assert commit(d, Ckpt("a", {"errlog": 3})) == []
    assert commit(d, Ckpt("b", {"errlog": 1})) == [("errlog", 0, 1)]
    assert commit(d, Ckpt("b", {"errlog": 3})) == [("errlog", 1, 3)]
    assert d.committed_upto["errlog"] == 3


def test_checkpoints_in_the_same_transaction_count_together() -> None:
    """Two modules checkpointing in one batch commit the event in that batch."""
    d, _a, _b, _ = setup()
    d.dispatch("errlog", 1, ev("ereport.cpu.x", 1))
    assert commit(d, Ckpt("a", {"errlog": 1}), Ckpt("b", {"errlog": 1})) == [("errlog", 0, 1)]


def test_failed_module_releases_its_events() -> None:
    """A module that is gone no longer holds the frontier back."""
    d, _a, _b, _ = setup()
    d.dispatch("errlog", 1, ev("ereport.cpu.x", 1))
    assert commit(d, Ckpt("b", {"errlog": 1})) == []
    assert commit(d, ModuleGoneOp("a")) == [("errlog", 0, 1)]


def test_replay_skips_modules_that_saw_the_event() -> None:
    """At replay an event goes only to modules whose checkpoint does not cover it,
    and the state those modules gave it is recovered from their restored state."""
    d, a, b, _ = setup()
    a.last_seen["errlog"] = 5
    d.set_committed("errlog", 3)
    d.dispatch("errlog", 4, ev("ereport.cpu.x", 4), replay=True)
    d.dispatch("errlog", 6, ev("ereport.cpu.x", 6), replay=True)
    assert (drained(a), drained(b)) == ([6], [4, 6])
    assert d.stats["partials"] == 1
    tx = FakeTx()
    commit(d, Ckpt("a", {"errlog": 6}), Ckpt("b", {"errlog": 6}), tx=tx)
    assert tx.states == {4: 2}  # the state the crashed run gave it is recovered


def test_states_are_written_with_the_commit() -> None:
    """A state given before its event commits is written by the committing update;
    a state given to an event already committed is written at once."""
    d, _a, _b, _ = setup()
    for i in (1, 2):
        d.dispatch("errlog", i, ev("ereport.io.x", i))
    tx1 = FakeTx()
    assert commit(d, Ckpt("b", {"errlog": 1}, states=[(1, 2), (2, 2)]), tx=tx1) == [
        ("errlog", 0, 1)
    ]
    assert (tx1.states, tx1.late) == ({1: 2}, [])
    tx2 = FakeTx()
    commit(d, Ckpt("b", {"errlog": 2}, states=[(1, 3)]), tx=tx2)
    assert (tx2.states, tx2.late) == ({2: 2}, [(1, 3)])


def test_logs_have_independent_frontiers() -> None:
    """The error log and the fault log commit independently."""
    d, _a, _b, _ = setup()
    d.dispatch("errlog", 1, ev("ereport.io.x", 1))
    assert commit(d, Ckpt("b", {"errlog": 1, "fltlog": 0})) == [("errlog", 0, 1)]
    assert d.committed_upto == {"errlog": 1, "fltlog": 0}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ereport.cpu.x", "ereport.io.y"]), st.sets(st.sampled_from(["a", "b"]))
        ),
        min_size=1,
        max_size=30,
    )
)
def test_frontier_never_passes_an_unconsumed_event(plan: list[tuple[str, set[str]]]) -> None:
    """Whatever order modules checkpoint in, committed ids are exactly those consumed by all."""
    d, a, b, _ = setup()
    runners = {"a": a, "b": b}
    for i, (cls, _) in enumerate(plan, start=1):
        d.dispatch("errlog", i, ev(cls, i))
    got: dict[str, list[int]] = {"a": drained(a), "b": drained(b)}
    consumed = {"a": 0, "b": 0}
    for i, (_, who) in enumerate(plan, start=1):
        for name in sorted(who):
            consumed[name] = max(consumed[name], i)
            commit(d, Ckpt(name, {"errlog": consumed[name]}))
        expected = 0
        for j in range(1, len(plan) + 1):
            if all(j not in got[n] or consumed[n] >= j for n in runners):
                expected = j
            else:
                break
        assert d.committed_upto["errlog"] == expected


def test_checkpoint_of_a_failed_module_covers_nothing() -> None:
    """A checkpoint skipped because its module's earlier checkpoint failed commits nothing."""
    d, _a, _b, _ = setup()
    d.dispatch("errlog", 1, ev("ereport.io.x", 1))
    skipped = CheckpointOp(
        module="b",
        last_seen={"errlog": 1},
        doc=None,
        cases=[],
        case_deletes=[],
        states=[(1, 2)],
        list_events=[],
        resources=[],
        now_ns=0,
        failed_modules={"b"},
    )
    skipped.apply(FakeTx())  # type: ignore[arg-type]
    tx = FakeTx()
    assert commit(d, skipped, tx=tx) == []
    assert (tx.states, tx.late) == ({}, [])
