"""Dispatch of committed events to modules, and the commit frontier.

The dispatcher runs on the writer thread, right after the transaction that
stored an event commits.  It matches the event's class (and, for
``list.suspect|repaired|updated``, its fault-list classes) against every
module's subscriptions and queues it once per matching module; an event that
nobody wants goes to self-diagnosis.

Commit rule (the replacement for illumos' RFMA→FMA tag rewrite): an event is
*committed* once every module it was queued to has checkpointed past it.
For each module and log the dispatcher remembers the ids queued but not yet
covered by a checkpoint; the frontier of a log is one below the smallest such
id over all modules.  In every writer transaction, :meth:`before_commit`
counts the checkpoints of that same transaction and marks the ids up to the
new frontier committed, so module state and the commit mark land atomically.
At start-up, uncommitted rows are replayed only to modules whose checkpoint
has not covered them, so each event reaches a module at most once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fmd.dispq import SubscriptionTree
from fmd.eventq import EventItem
from fmd.protocol import Ereport, ListEvent
from fmd.store import Op, Progress, WriteOp, WriteTxn

if TYPE_CHECKING:
    from fmd.module import ModuleRunner

LOGS = ("errlog", "fltlog")
_ALL = 1 << 62


class ModuleGoneOp(Op):
    """Releases everything queued to a module that failed or was unloaded."""

    def __init__(self, module: str) -> None:
        self.module = module

    def progress(self) -> Progress:
        return Progress(self.module, None)


class Dispatcher:
    def __init__(self) -> None:
        self.tree: SubscriptionTree[ModuleRunner] = SubscriptionTree()
        self.selfdiag: ModuleRunner | None = None
        self._pending: dict[str, dict[str, deque[int]]] = {}
        self.dispatched_max = dict.fromkeys(LOGS, 0)
        self.committed_upto = dict.fromkeys(LOGS, 0)
        self._staged: tuple[dict[str, dict[str, int]], dict[str, int], dict[int, int]] | None = None
        # Error-log state changes of events not yet committed (see before_commit).
        self._held: dict[int, int] = {}
        self.stats = {"dispatched": 0, "nosub": 0, "replayed": 0, "partials": 0}

    # -- membership ------------------------------------------------------
    def add(self, runner: ModuleRunner, patterns: Sequence[str]) -> None:
        self._pending.setdefault(runner.name, {log: deque() for log in LOGS})
        for p in patterns:
            self.tree.subscribe(p, runner)

    def remove(self, runner: ModuleRunner) -> None:
        self.tree.unsubscribe_all(runner)

    def pending_count(self, module: str) -> int:
        logs = self._pending.get(module)
        return sum(len(d) for d in logs.values()) if logs else 0

    # -- dispatch --------------------------------------------------------
    def targets(self, event: Ereport | ListEvent) -> list[ModuleRunner]:
        if isinstance(event, ListEvent):
            found = self.tree.match_event(event.cls, [s.cls for s in event.fault_list])
            return self._or_selfdiag([r for r in found if r.active])
        return self.class_targets(event.cls)

    def class_targets(self, cls: str) -> list[ModuleRunner]:
        """The modules an ereport of class ``cls`` goes to (self-diagnosis if none)."""
        return self._or_selfdiag([r for r in self.tree.match(cls) if r.active])

    def _or_selfdiag(self, out: list[ModuleRunner]) -> list[ModuleRunner]:
        if not out and self.selfdiag is not None and self.selfdiag.active:
            self.stats["nosub"] += 1
            out = [self.selfdiag]
        return out

    def dispatch(
        self, log: str, event_id: int, event: Ereport | ListEvent, *, replay: bool = False
    ) -> int:
        """Queue a committed event to its modules; return how many got it."""
        n = 0
        for runner in self.targets(event):
            if replay and runner.last_seen[log] >= event_id:
                if log == "errlog":
                    self._recover_state(runner, event_id)
                else:
                    self.stats["partials"] += 1
                continue
            self._pending[runner.name][log].append(event_id)
            runner.queue.put_event(EventItem(log, event_id, event))
            n += 1
        if event_id > self.dispatched_max[log]:
            self.dispatched_max[log] = event_id
        self.stats["dispatched"] += n
        if replay and n:
            self.stats["replayed"] += 1
        return n

    def replay_refs(self, rows: Sequence[tuple[int, str]]) -> int:
        """Start-up replay of uncommitted error-log events, given as ``(id, class)``
        in id order: each module that has not consumed an event is queued a
        *reference* to it, read back from the store on the module's own thread;
        for a module that has, the state it gave the event is recovered.
        Returns how many events were queued to at least one module."""
        by_class: dict[str, list[ModuleRunner]] = {}
        refs: dict[ModuleRunner, list[tuple[str, int]]] = {}
        replayed = 0
        for event_id, cls in rows:
            runners = by_class.get(cls)
            if runners is None:
                runners = by_class[cls] = self.class_targets(cls)
            n = 0
            for runner in runners:
                if runner.last_seen["errlog"] >= event_id:
                    self._recover_state(runner, event_id)
                    continue
                self._pending[runner.name]["errlog"].append(event_id)
                refs.setdefault(runner, []).append(("errlog", event_id))
                n += 1
            self.stats["dispatched"] += n
            replayed += 1 if n else 0
            if event_id > self.dispatched_max["errlog"]:
                self.dispatched_max["errlog"] = event_id
        for runner, queued in refs.items():
            runner.queue.put_refs(queued)
        self.stats["replayed"] += replayed
        return replayed

    def _recover_state(self, runner: ModuleRunner, event_id: int) -> None:
        """The module consumed the event before the crash (its checkpoint says so)
        but the commit mark was not written: recover the state it gave the event."""
        self.stats["partials"] += 1
        state = runner.handle.event_state(event_id)
        if state is not None:
            self.hold_state(event_id, state)

    def dispatch_many(self, log: str, events: list[tuple[int, Ereport | ListEvent]]) -> None:
        """Queue many committed events (in id order) with one lock per module queue."""
        per_runner: dict[ModuleRunner, list[EventItem]] = {}
        by_class: dict[str, list[ModuleRunner]] = {}
        for event_id, event in events:
            if isinstance(event, ListEvent):
                runners = self.targets(event)
            else:
                found = by_class.get(event.cls)
                if found is None:
                    found = by_class[event.cls] = self.targets(event)
                runners = found
            for runner in runners:
                items = per_runner.get(runner)
                if items is None:
                    items = per_runner[runner] = []
                items.append(EventItem(log, event_id, event))
        for runner, items in per_runner.items():
            self._pending[runner.name][log].extend(item.id for item in items)
            runner.queue.put_events(items)
            self.stats["dispatched"] += len(items)
        if events and events[-1][0] > self.dispatched_max[log]:
            self.dispatched_max[log] = events[-1][0]

    def set_committed(self, log: str, upto: int) -> None:
        """Start-up: every id <= ``upto`` is already committed."""
        self.committed_upto[log] = upto
        self.dispatched_max[log] = max(self.dispatched_max[log], upto)

    # -- event states ------------------------------------------------------
    def hold_state(self, event_id: int, state: int) -> None:
        """Remember an error-log state change until the event is committed."""
        if self._held.get(event_id, -1) < state:
            self._held[event_id] = state

    # -- writer hooks ----------------------------------------------------
    def before_commit(self, tx: WriteTxn, batch: Sequence[WriteOp]) -> None:
        progress: dict[str, dict[str, int]] = {}
        # State changes of error-log events: an event that is still uncommitted
        # gets its state in the same UPDATE that commits it (each row is
        # rewritten once); an event committed earlier is updated directly.
        held = self._held
        staged_states: dict[int, int] = {}
        late: list[tuple[int, int]] = []
        committed = self.committed_upto["errlog"]
        made = [p for p in (op.progress() for op in batch) if p is not None]
        for made_by in made:
            for eid, state in made_by.states:
                if eid <= committed:
                    late.append((eid, state))
                elif max(held.get(eid, -1), staged_states.get(eid, -1)) < state:
                    staged_states[eid] = state
        if late:
            tx.advance_states(late)
        for made_by in made:
            if made_by.last_seen is None:
                progress[made_by.module] = dict.fromkeys(LOGS, _ALL)
                continue
            mine = progress.setdefault(made_by.module, {})
            for log, upto in made_by.last_seen.items():
                mine[log] = max(mine.get(log, 0), upto)
        upto_now: dict[str, int] = {}
        for log in LOGS:
            frontier = self.dispatched_max[log]
            for name, logs in self._pending.items():
                covered = progress.get(name, {}).get(log, 0)
                for eid in logs[log]:
                    if eid > covered:
                        frontier = min(frontier, eid - 1)
                        break
            if frontier > self.committed_upto[log]:
                lo = self.committed_upto[log]
                states: dict[int, int] = {}
                if log == "errlog":
                    for source in (held, staged_states):
                        for eid, state in source.items():
                            if lo < eid <= frontier and states.get(eid, -1) < state:
                                states[eid] = state
                tx.commit_range(log, lo, frontier, states)
                upto_now[log] = frontier
        self._staged = (progress, upto_now, staged_states)

    def after_commit(self, batch: Sequence[WriteOp]) -> None:
        staged, self._staged = self._staged, None
        if staged is not None:
            progress, upto_now, staged_states = staged
            for eid, state in staged_states.items():
                self.hold_state(eid, state)
            upto = upto_now.get("errlog")
            if upto is not None and self._held:
                self._held = {e: st for e, st in self._held.items() if e > upto}
            for name, logs in progress.items():
                pend = self._pending.get(name)
                if pend is None:
                    continue
                for log, covered in logs.items():
                    dq = pend[log]
                    while dq and dq[0] <= covered:
                        dq.popleft()
            self.committed_upto.update(upto_now)
        for op in batch:
            publish = op.published()
            if publish:
                log = publish[0][0]
                self.dispatch_many(log, [(eid, ev) for _, eid, ev in publish])
