"""The module API: the handle through which a module uses fmd.

One :class:`Handle` per module, used only from that module's thread.  It
offers subscriptions, typed properties, cases (open, add ereport, add SERD,
add suspect, solve, close), SERD engines, persistent buffers, timers and
statistics — the Python counterpart of illumos ``fmd_api.h``.

Every change is made in memory and marked dirty; after each batch of events
the module's runner calls :meth:`Handle.checkpoint`, which packs the changes
(the module document, dirty cases, event state changes, new ``list.*``
events, resource-cache rows) into one :class:`~fmd.ckpt.CheckpointOp`.  The
writer commits it in the same transaction that marks the consumed events
committed.
"""

from __future__ import annotations

import base64
import functools
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from fmd import states
from fmd.asru import cache_reason
from fmd.case import Case
from fmd.ckpt import CheckpointOp
from fmd.config import Properties, PropValue
from fmd.errors import ModuleApiError
from fmd.eventq import EventItem
from fmd.protocol import (
    FAULT_FAULTY,
    FAULT_REPAIRED,
    FAULT_UNUSABLE,
    Ereport,
    FmdFmri,
    Fmri,
    ListEvent,
    Suspect,
    fmri_from_obj,
    validate_pattern,
)
from fmd.serd import SerdEngine, SerdSet
from fmd.states import CaseFlag, CaseState

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fmd.clock import Clock
    from fmd.dictionary import DictionarySet
    from fmd.dispq import SubscriptionTree
    from fmd.hw.topo import Platform
    from fmd.module import ModuleRunner
    from fmd.store import Writer
    from fmd.timerq import TimerQueue

CKPT_VERSION = 1


@dataclass
class ModuleContext:
    """What the daemon shares with every handle."""

    clock: Clock
    writer: Writer
    dicts: DictionarySet
    timers: TimerQueue
    tree: SubscriptionTree[ModuleRunner]
    authority: tuple[tuple[str, str], ...]
    case_owner: Callable[[str], ModuleRunner | None]
    register_case: Callable[[str, ModuleRunner | None], None]
    save_checkpoints: bool = True
    # The machine's topology (fmd.hw.topo.Platform); None only in bare unit tests.
    platform: Any = None
    # Modules whose checkpoint could not be written (see fmd.ckpt).
    failed_checkpoints: set[str] = field(default_factory=set)
    checkpoint_failed: Callable[[str, BaseException], None] | None = None
    # Reading back a case restored lazily (its uuid only), and the module's
    # stored cases that hold an error-log event: (uuid, state) pairs.
    load_case: Callable[[str], Case | None] | None = None
    cases_holding: Callable[[int, str], list[tuple[str, int]]] | None = None


@dataclass
class Stat:
    """A module statistic (a counter or a value) shown by ``fmstat -m``."""

    name: str
    description: str
    value: int = 0

    def incr(self, n: int = 1) -> None:
        self.value += n


@dataclass
class _Outbox:
    states: dict[int, int] = field(default_factory=dict)
    published: list[ListEvent] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


class Handle:
    """The API object passed to every :class:`~fmd.module.Plugin` callback."""

    def __init__(
        self,
        ctx: ModuleContext,
        name: str,
        version: str,
        props: Properties,
        dictionaries: list[str],
    ) -> None:
        self._ctx = ctx
        self.name = name
        self.version = version
        self.props = props
        self.dictionaries = dictionaries
        self.log = structlog.get_logger("fmd.module").bind(module=name)
        self.runner: ModuleRunner | None = None
        self.serd = SerdSet()
        self._bufs: dict[str, bytes] = {}
        self._buf_bytes = 0
        self._cases: dict[str, Case] = {}
        # Diagnosed cases restored by uuid only: each is read from the store the
        # first time the module uses it, so start-up does not grow with the
        # number of outstanding faults.
        self._unloaded: set[str] = set()
        # Cases handed to the module since the last checkpoint: only these can
        # have changed, so a checkpoint never walks every case.
        self._touched: set[str] = set()
        # Cases whose suspects (or their statuses) changed since the last checkpoint.
        self._suspects_changed: set[str] = set()
        # Cases whose record (state, flags, principal, data, bufs...) changed;
        # a touched case not in this set only gained events, which are saved
        # without rewriting its record.
        self._meta_changed: set[str] = set()
        self._timers: set[int] = set()
        self._stats: dict[str, Stat] = {}
        self._out = _Outbox()
        self._current: EventItem | None = None
        self._counted = False
        # Cases opened while handling the current event (see discard_partial).
        self._opened_now: list[str] = []
        self.specific: dict[str, Any] = {}
        self.conf_subscriptions: list[str] = []
        self.cases_opened = 0
        self.cases_solved = 0
        self.accepted = 0
        # Cases that left memory this batch (resolved) but must still be saved.
        self._saved_final: list[Case] = []

    # -- identity, properties, subscriptions, time -------------------------
    @property
    def store_engine(self) -> Engine:
        """fmd's database engine, for a module that keeps its own small table
        (the retire agent's simulated hardware); events and cases never go
        through it."""
        return self._ctx.writer.engine

    def prop(self, name: str) -> PropValue:
        """A property of this module (typed as declared)."""
        try:
            return self.props.get(name)
        except Exception as exc:
            raise ModuleApiError(f"module {self.name}: {exc}") from exc

    def subscribe(self, pattern: str) -> None:
        validate_pattern(pattern)
        assert self.runner is not None
        self._ctx.tree.subscribe(pattern, self.runner)

    def unsubscribe(self, pattern: str) -> None:
        assert self.runner is not None
        self._ctx.tree.unsubscribe(pattern, self.runner)

    @property
    def topo(self) -> Platform:
        """The machine's topology: hc tree, FRU labels, cpu and address mapping."""
        if self._ctx.platform is None:
            raise ModuleApiError(f"module {self.name}: fmd has no topology loaded")
        platform: Platform = self._ctx.platform
        return platform

    def now_ns(self) -> int:
        return self._ctx.clock.now_ns()

    @property
    def dicts(self) -> DictionarySet:
        """The fault dictionaries and message catalogs fmd loaded (read-only)."""
        return self._ctx.dicts

    @functools.cached_property
    def de_fmri(self) -> FmdFmri:
        """This module as the diagnosis engine (``de``) of its list events."""
        return FmdFmri(mod_name=self.name, mod_version=self.version, authority=self._ctx.authority)

    # -- statistics --------------------------------------------------------
    def stat(self, name: str, description: str = "") -> Stat:
        """Get or create the named statistic."""
        st = self._stats.get(name)
        if st is None:
            st = self._stats[name] = Stat(name, description)
        return st

    def stats(self) -> list[Stat]:
        return list(self._stats.values())

    # -- event bookkeeping (runner) ---------------------------------------
    def begin_event(self, item: EventItem) -> None:
        self._current = item
        self._counted = False
        self._opened_now = []

    def end_event(self) -> None:
        self._current = None
        self._opened_now = []

    def discard_partial(self) -> None:
        """The current event raised: forget the cases it opened and left unsolved,
        so that a failed event leaves no half-built case behind."""
        for uuid in self._opened_now:
            case = self._cases.get(uuid)
            if case is None or case.state is not CaseState.UNSOLVED:
                continue
            del self._cases[uuid]
            self._ctx.register_case(uuid, None)
            for pending in (self._touched, self._meta_changed, self._suspects_changed):
                pending.discard(uuid)
            self._out.deleted.append(uuid)
        self._opened_now = []

    def _event_id(self, ev: Ereport) -> int:
        if ev.id is None:
            raise ModuleApiError(f"module {self.name}: event {ev.cls} has no store id")
        return ev.id

    def _advance(self, event_id: int, state: int) -> None:
        before = self._out.states.get(event_id, states.STATE_RECEIVED)
        if before < state:
            self._out.states[event_id] = state
        current = self._current
        if current is not None and current.id == event_id and not self._counted:
            # ev_acpt: events this module accepted as they were delivered.
            self._counted = True
            self.accepted += 1

    # -- SERD engines ------------------------------------------------------
    def serd_create(self, name: str, n: int, t_ns: int) -> SerdEngine:
        return self.serd.create(name, n, t_ns)

    def serd_exists(self, name: str) -> bool:
        return self.serd.exists(name)

    def serd_destroy(self, name: str) -> None:
        self.serd.destroy(name)

    def serd_record(self, name: str, ev: Ereport) -> bool:
        """Record an ereport; True when the engine fires on it.  The event becomes ACCEPTED."""
        eid = self._event_id(ev)
        fired = self.serd.record(name, eid, ev.time_ns, ev.count, ev.last_ns)
        self._advance(eid, states.STATE_ACCEPTED)
        return fired

    def serd_fired(self, name: str) -> bool:
        return self.serd.fired(name)

    def serd_reset(self, name: str) -> None:
        self.serd.reset(name)

    def serd_empty(self, name: str) -> bool:
        return self.serd.empty(name)

    # -- persistent buffers -------------------------------------------------
    def buf_write(self, name: str, data: bytes) -> None:
        old = self._bufs.get(name)
        self._bufs[name] = bytes(data)
        self._buf_bytes += len(data) - (len(old) if old is not None else 0)

    def buf_read(self, name: str) -> bytes | None:
        return self._bufs.get(name)

    def buf_destroy(self, name: str) -> None:
        old = self._bufs.pop(name, None)
        if old is not None:
            self._buf_bytes -= len(old)

    def buf_size(self) -> int:
        """Bytes held in the module's buffers (safe to read from any thread)."""
        return self._buf_bytes

    @property
    def open_cases(self) -> int:
        """How many cases the module holds (safe to read from any thread)."""
        return len(self._cases) + len(self._unloaded)

    # -- timers --------------------------------------------------------------
    def timer_install(self, delta_ns: int, arg: Any = None) -> int:
        """Deliver ``timeout(hdl, id, arg)`` after ``delta_ns`` on fmd's clock."""
        runner = self.runner
        assert runner is not None
        tid = self._ctx.timers.install(delta_ns, runner.post_timeout, arg)
        self._timers.add(tid)
        return tid

    def timer_remove(self, timer_id: int) -> None:
        self._timers.discard(timer_id)
        self._ctx.timers.remove(timer_id)

    def timer_fired(self, timer_id: int) -> bool:
        if timer_id in self._timers:
            self._timers.discard(timer_id)
            return True
        return False

    # -- cases ---------------------------------------------------------------
    def cases(self) -> list[Case]:
        """The module's cases that are not yet resolved, oldest first."""
        for uuid in list(self._unloaded):
            self._load(uuid)
        self._touched.update(self._cases)
        return sorted(self._cases.values(), key=lambda c: c.open_time_ns)

    def case_get(self, uuid: str) -> Case | None:
        case = self._cases.get(uuid)
        if case is None and uuid in self._unloaded:
            case = self._load(uuid)
        if case is not None:
            self._touched.add(uuid)
        return case

    def _load(self, uuid: str) -> Case | None:
        """Read a lazily restored case from the store (see :meth:`restore`)."""
        self._unloaded.discard(uuid)
        loader = self._ctx.load_case
        case = loader(uuid) if loader is not None else None
        if case is None or case.module != self.name:
            self._ctx.register_case(uuid, None)
            return None
        self._cases[uuid] = case
        return case

    def case_open(self, data: dict[str, Any] | None = None) -> Case:
        case = Case(
            uuid=str(uuidlib.uuid4()),
            module=self.name,
            open_time_ns=self.now_ns(),
            data=dict(data or {}),
        )
        case.mark_dirty()
        self._cases[case.uuid] = case
        self._touched.add(case.uuid)
        self._meta_changed.add(case.uuid)
        self._ctx.register_case(case.uuid, self.runner)
        self.cases_opened += 1
        if self._current is not None:
            self._opened_now.append(case.uuid)
        return case

    def _own(self, case: Case, *, meta: bool = True) -> Case:
        if self._cases.get(case.uuid) is not case:
            raise ModuleApiError(f"module {self.name}: case {case.uuid} is not one of its cases")
        self._touched.add(case.uuid)
        if meta:
            self._meta_changed.add(case.uuid)
        return case

    def case_add_ereport(self, case: Case, ev: Ereport) -> None:
        """Add an ereport to a case (also to a solved one: it is then DIAGNOSED)."""
        eid = self._event_id(ev)
        self._own(case)
        case.add_ereport(eid, ev.count)
        self._mark_injected(case, ev)
        solved = case.is_solved
        self._advance(eid, states.STATE_DIAGNOSED if solved else states.STATE_ACCEPTED)

    def case_set_data(self, case: Case, key: str, value: Any) -> None:
        """Set a member of the case's private, persisted data (JSON-able)."""
        self._own(case).data[key] = value
        case.mark_dirty()

    def case_buf_write(self, case: Case, name: str, data: bytes) -> None:
        """Write a persistent buffer belonging to the case."""
        self._own(case).bufs[name] = bytes(data)
        case.mark_dirty()

    def case_buf_read(self, case: Case, name: str) -> bytes | None:
        return self._own(case, meta=False).bufs.get(name)

    def case_add_serd(self, case: Case, name: str) -> None:
        """Move the events of SERD engine ``name`` into the case."""
        engine = self.serd.get(name)
        self._own(case).add_serd(name, engine.event_ids(), [e.errors for e in engine.events])
        # SERD engines hold references, not the events: the event that made the
        # engine fire decides whether the case is injected.
        current = self._current
        self._mark_injected(case, current.event if current is not None else None)

    def _mark_injected(self, case: Case, ev: Any) -> None:
        """A case that takes in an injected ereport is an injected case."""
        if isinstance(ev, Ereport) and ev.injected and not case.flags & CaseFlag.INJECTED:
            case.flags |= CaseFlag.INJECTED
            self._meta_changed.add(case.uuid)

    def create_fault(
        self,
        cls: str,
        certainty: int = 100,
        *,
        asru: Fmri | None = None,
        fru: Fmri | None = None,
        resource: Fmri | None = None,
        location: str | None = None,
        message: bool = True,
        retire: bool = True,
        response: bool = True,
    ) -> Suspect:
        try:
            return Suspect.model_validate(
                {
                    "class": cls,
                    "certainty": certainty,
                    "asru": asru,
                    "fru": fru,
                    "resource": resource,
                    "location": location,
                    "message": message,
                    "retire": retire,
                    "response": response,
                }
            )
        except Exception as exc:
            raise ModuleApiError(f"module {self.name}: bad fault {cls!r}: {exc}") from exc

    def case_add_suspect(self, case: Case, suspect: Suspect) -> None:
        d = suspect.to_json_dict()
        d["status"] = 0
        self._own(case).add_suspect(d)
        self._suspects_changed.add(case.uuid)

    def case_solve(self, case: Case) -> ListEvent:
        """Convict every suspect, compute the code, log and dispatch ``list.suspect``."""
        self._own(case)
        classes = case.fault_classes()
        code = None
        for dname in self.dictionaries:
            code = self._ctx.dicts.lookup(dname, classes)
            if code:
                break
        if code is None:
            code = self._ctx.dicts.nodiagcode()
        case.solve(code, self.now_ns())
        for s in case.suspects:
            s["status"] = FAULT_FAULTY
        if all(not s.get("message", True) for s in case.suspects):
            case.flags |= CaseFlag.INVISIBLE
        for eid in case.events:
            self._advance(eid, states.STATE_DIAGNOSED)
        self.cases_solved += 1
        ev = self._list_event(case, "list.suspect", code)
        self._record_resources(case)
        return ev

    def case_close(self, case: Case) -> None:
        """Close a case: discard it if unsolved, else isolate it (``list.isolated``)."""
        self._own(case)
        if case.state is CaseState.UNSOLVED:
            case.close()
            self._ctx_close(case)
            self._discard(case, delete=True)
            return
        if case.state is not CaseState.SOLVED:
            raise ModuleApiError(
                f"module {self.name}: case {case.uuid} is {case.state.name}; only an "
                "UNSOLVED or SOLVED case can be closed"
            )
        case.close()
        self._ctx_close(case)
        case.transition(CaseState.CLOSED)
        for s in case.suspects:
            if s["status"] & FAULT_FAULTY:
                s["status"] |= FAULT_UNUSABLE
        self._list_event(case, "list.isolated", case.code or "")
        self._record_resources(case)

    def _ctx_close(self, case: Case) -> None:
        assert self.runner is not None
        self.runner.plugin.close(self, case)

    def case_repair(
        self, case: Case, reason: int = FAULT_REPAIRED, indexes: Iterable[int] | None = None
    ) -> bool:
        """Mark suspects repaired (fmadm repaired/replaced/acquit): all of them, or
        those at ``indexes``.  Returns True if anything changed.

        Once no suspect is faulty the case is REPAIRED (``list.repaired``) and,
        unless a resource is still out of service, resolved at once; while
        some stay faulty the change is announced with ``list.updated``.
        """
        self._own(case)
        if not case.is_solved or case.state >= CaseState.REPAIRED:
            return False
        wanted = set(range(len(case.suspects)) if indexes is None else indexes)
        changed = False
        for i, s in enumerate(case.suspects):
            if i in wanted and s["status"] & FAULT_FAULTY:
                s["status"] = (s["status"] & ~FAULT_FAULTY) | reason
                changed = True
        if not changed:
            return False
        if any(s["status"] & FAULT_FAULTY for s in case.suspects):
            code = self._ctx.dicts.code_for("FMD", ["list.updated"])
            case.mark_dirty()
            self._list_event(case, "list.updated", code)
            self._record_resources(case)
            return True
        case.repair()
        self._list_event(case, "list.repaired", self._ctx.dicts.code_for("FMD", ["list.repaired"]))
        self._record_resources(case)
        if not any(s["status"] & FAULT_UNUSABLE for s in case.suspects):
            self.case_resolve(case)
        return True

    def case_resolve(self, case: Case) -> None:
        """Every resource of a repaired case is usable again: ``list.resolved``."""
        self._own(case)
        for s in case.suspects:
            s["status"] &= ~FAULT_UNUSABLE
        case.resolve()
        self._list_event(case, "list.resolved", self._ctx.dicts.code_for("FMD", ["list.resolved"]))
        self._record_resources(case)
        self._discard(case, delete=False)

    def case_uuclose(self, uuid: str) -> None:
        """Close another module's case by uuid (a response agent, after isolating).

        Closing a case that is already closed (a fault replayed at start-up)
        does nothing.
        """
        self._on_owner(uuid, lambda h, c: h.case_close(c) if c.state is CaseState.SOLVED else None)

    def case_response(self, uuid: str, index: int, action: str, ok: bool, detail: str) -> None:
        """Record what a response agent did (or failed to do) about suspect ``index``
        of case ``uuid``; ``fmadm faulty`` shows it beside the suspect."""
        self._out.responses.append(
            {
                "uuid": uuid,
                "idx": int(index),
                "module": self.name,
                "action": action,
                "ok": bool(ok),
                "detail": detail[:1000],
                "updated_ns": self.now_ns(),
            }
        )

    def case_uuresolved(self, uuid: str) -> None:
        """Report that a repaired case's resources are usable again."""
        self._on_owner(
            uuid, lambda h, c: h.case_resolve(c) if c.state is CaseState.REPAIRED else None
        )

    def _on_owner(self, uuid: str, fn: Callable[[Handle, Case], None]) -> None:
        owner = self._ctx.case_owner(uuid)
        if owner is None:
            raise ModuleApiError(f"module {self.name}: no open case {uuid}")

        def run() -> None:
            case = owner.handle.case_get(uuid)
            if case is not None:
                fn(owner.handle, case)

        if owner is self.runner:
            run()
        else:
            owner.call(run)

    def _discard(self, case: Case, *, delete: bool) -> None:
        self._cases.pop(case.uuid, None)
        self._ctx.register_case(case.uuid, None)
        if delete:
            self._out.deleted.append(case.uuid)
        else:
            self._saved_final.append(case)

    def _list_event(self, case: Case, cls: str, code: str) -> ListEvent:
        # Every list event follows a change of the suspects' statuses.
        self._suspects_changed.add(case.uuid)
        suspects = [
            Suspect.from_json_dict({k: v for k, v in s.items() if k != "status"})
            for s in case.suspects
        ]
        ev = ListEvent.model_validate(
            {
                "class": cls,
                "uuid": case.uuid,
                "code": code,
                "diag-time": case.diag_time_ns or self.now_ns(),
                "de": self.de_fmri,
                "fault-list": suspects,
                "fault-status": [int(s["status"]) for s in case.suspects],
                "message": CaseFlag.INVISIBLE not in case.flags,
                "__injected": CaseFlag.INJECTED in case.flags,
            }
        )
        self._out.published.append(ev)
        return ev

    def _record_resources(self, case: Case) -> None:
        now = self.now_ns()
        for s in case.suspects:
            for key in ("asru", "fru", "resource"):
                fmri = fmri_text(s.get(key))
                if fmri:
                    self._out.resources.append(
                        {
                            "fmri": fmri,
                            "uuid": case.uuid,
                            "code": case.code,
                            "flags": int(s["status"]),
                            "reason": cache_reason(int(s["status"])),
                            "updated_ns": now,
                        }
                    )
                    break

    # -- restore and checkpoint ---------------------------------------------
    def restore(
        self,
        doc: dict[str, Any] | None,
        cases: list[Case],
        serd: dict[str, str] | None = None,
        unloaded: Iterable[str] = (),
    ) -> dict[str, int]:
        """Load the module's checkpoint, cases and SERD engines; return its progress per log.

        ``unloaded`` are the uuids of diagnosed cases restored lazily: each is
        read from the store (``ModuleContext.load_case``) when first used.
        """
        for case in cases:
            self._cases[case.uuid] = case
            self._ctx.register_case(case.uuid, self.runner)
        for uuid in unloaded:
            if uuid not in self._cases:
                self._unloaded.add(uuid)
                self._ctx.register_case(uuid, self.runner)
        if serd:
            self.serd = SerdSet.from_dict({k: orjson.loads(v) for k, v in serd.items()})
        if not doc:
            return {"errlog": 0, "fltlog": 0}
        if doc.get("version") != CKPT_VERSION:
            raise ModuleApiError(
                f"module {self.name}: checkpoint version "
                f"{doc.get('version')!r} is not {CKPT_VERSION}"
            )
        self._bufs = {k: base64.b64decode(v) for k, v in doc.get("bufs", {}).items()}
        self._buf_bytes = sum(len(v) for v in self._bufs.values())
        self.specific = dict(doc.get("specific", {}))
        self.cases_opened = int(doc.get("cases_opened", 0))
        self.cases_solved = int(doc.get("cases_solved", 0))
        seen = doc.get("last_seen", {})
        return {"errlog": int(seen.get("errlog", 0)), "fltlog": int(seen.get("fltlog", 0))}

    def event_state(self, event_id: int) -> int | None:
        """The state this module gave a stored event: DIAGNOSED if a solved case
        holds it, ACCEPTED if a case or SERD engine does, else None."""
        state = None
        for case in self._cases.values():
            if case.contains_event(event_id):
                if case.is_solved:
                    return states.STATE_DIAGNOSED
                state = states.STATE_ACCEPTED
        holding = self._ctx.cases_holding
        if self._unloaded and holding is not None:
            # A lazily restored case is as it was stored: ask the store.
            for uuid, case_state in holding(event_id, self.name):
                if uuid in self._unloaded and case_state >= CaseState.SOLVED:
                    return states.STATE_DIAGNOSED
        if state is None and self.serd.contains_event(event_id):
            state = states.STATE_ACCEPTED
        return state

    def contains_event(self, event_id: int) -> bool:
        """Is the event held by one of this module's SERD engines or cases?"""
        return self.event_state(event_id) is not None

    def _serd_changes(self) -> list[tuple[str, str | None]]:
        """The engines changed since the last checkpoint (None: destroyed)."""
        out: list[tuple[str, str | None]] = [(n, None) for n in self.serd.destroyed_names()]
        for name in self.serd.dirty_names():
            out.append((name, orjson.dumps(self.serd.get(name).to_dict()).decode()))
        return out

    def document(self, last_seen: dict[str, int]) -> str:
        return orjson.dumps(
            {
                "version": CKPT_VERSION,
                "module": self.name,
                "last_seen": last_seen,
                "bufs": {k: base64.b64encode(v).decode() for k, v in self._bufs.items()},
                "specific": self.specific,
                "cases_opened": self.cases_opened,
                "cases_solved": self.cases_solved,
            }
        ).decode()

    def checkpoint(self, last_seen: dict[str, int]) -> CheckpointOp:
        """Pack every change since the last checkpoint and hand it to the writer."""
        dirty = [
            c for c in map(self._cases.get, self._touched) if c is not None and c.dirty
        ] + self._saved_final
        out = self._out
        op = CheckpointOp(
            module=self.name,
            last_seen=last_seen,
            doc=self.document(last_seen) if self._ctx.save_checkpoints else None,
            serd=self._serd_changes() if self._ctx.save_checkpoints else [],
            cases=[
                case_record(c, c.uuid in self._suspects_changed)
                if c.uuid in self._meta_changed or c.state is CaseState.RESOLVED
                else (c.uuid, None, None, _take_new_events(c))
                for c in dirty
            ],
            case_deletes=out.deleted,
            states=list(out.states.items()),
            list_events=out.published,
            resources=out.resources,
            responses=out.responses,
            now_ns=self.now_ns(),
            failed_modules=self._ctx.failed_checkpoints,
            on_failure=self._ctx.checkpoint_failed,
        )
        for c in dirty:
            c.clear_dirty()
        self._touched.clear()
        self._suspects_changed.clear()
        self._meta_changed.clear()
        self._saved_final = []
        self.serd.clear_dirty()
        self._out = _Outbox()
        self._ctx.writer.submit(op)
        return op


def fmri_text(value: Any) -> str | None:
    """The string form of an FMRI kept in a suspect (string or object form)."""
    if value is None or isinstance(value, str):
        return value
    return fmri_from_obj(value).to_string()


def _take_new_events(case: Case) -> list[int]:
    new, case.new_events = case.new_events, []
    return new


CaseRecord = tuple[str, dict[str, Any] | None, list[dict[str, Any]] | None, list[int]]


def case_record(case: Case, suspects_changed: bool = True) -> CaseRecord:
    """What persists a case: (uuid, cases row, suspect rows or None if unchanged,
    the events added since the last save)."""
    row = {
        "uuid": case.uuid,
        "module": case.module,
        "state": int(case.state),
        "flags": int(case.flags & ~CaseFlag.DIRTY),
        "principal": case.principal,
        "code": case.code,
        "diag_time_ns": case.diag_time_ns,
        "open_time_ns": case.open_time_ns,
        "data": orjson.dumps(case.stored_extras()).decode(),
        "ereports": case.ereports,
    }
    suspects = (
        None
        if not suspects_changed
        else [
            {
                "uuid": case.uuid,
                "idx": i,
                "class": s["class"],
                "certainty": int(s.get("certainty", 100)),
                "asru": fmri_text(s.get("asru")),
                "fru": fmri_text(s.get("fru")),
                "resource": fmri_text(s.get("resource")),
                "location": s.get("location"),
                "status": int(s.get("status", 0)),
            }
            for i, s in enumerate(case.suspects)
        ]
    )
    return case.uuid, row, suspects, _take_new_events(case)
