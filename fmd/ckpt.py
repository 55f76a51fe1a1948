"""Module checkpoints: the write op that persists a module's progress.

A :class:`CheckpointOp` carries everything one module changed during one
batch of events: its checkpoint document (buffers, private data, and
``last_seen``, the last event id it consumed per log), the SERD engines that
changed (each saved as event references), the cases it changed, event state
changes, new ``list.*`` events, resource-cache rows and the responses
agents recorded.  The writer applies
it in the same transaction in which the dispatcher marks the events it covers
committed (see :mod:`fmd.dispatch`), so a crash can never separate the two.  The new
``list.*`` events get their fault-log ids here and are dispatched after the
commit through :meth:`CheckpointOp.published`; what the op commits of the
module's progress the dispatcher reads from :meth:`CheckpointOp.progress`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from fmd.protocol import ListEvent
from fmd.store import Progress, Published, WriteTxn
from fmd.store.codec import list_row

log = structlog.get_logger("fmd.ckpt")


@dataclass(slots=True)
class CheckpointOp:
    module: str
    last_seen: dict[str, int]
    doc: str | None
    # (uuid, cases row or None when only events were added, suspects or None, new events)
    cases: list[tuple[str, dict[str, Any] | None, list[dict[str, Any]] | None, list[int]]]
    case_deletes: list[str]
    states: list[tuple[int, int]]
    list_events: list[ListEvent]
    resources: list[dict[str, Any]]
    now_ns: int
    # What response agents did about suspects (fmd.api.Handle.case_response).
    responses: list[dict[str, Any]] = field(default_factory=list)
    # (engine name, JSON or None when destroyed) for the engines that changed.
    serd: list[tuple[str, str | None]] = field(default_factory=list)
    weight: int = 1
    refusable: bool = False  # module state is held, never refused (see fmd.store.writer)
    _published: list[Published] = field(default_factory=list)
    # Shared with the daemon: modules whose checkpoint failed.  A later
    # checkpoint of such a module is skipped (and covers nothing), since it
    # would commit the events whose state the failed one lost.
    failed_modules: set[str] = field(default_factory=set)
    on_failure: Callable[[str, BaseException], None] | None = None
    skipped: bool = False
    # Set once the op is committed or has finally failed (``error``), for
    # control requests that must answer only after their change is durable.
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def apply(self, tx: WriteTxn) -> None:
        self.skipped = self.module in self.failed_modules
        if self.skipped:
            self._published = []
            return
        if self.doc is not None:
            tx.save_checkpoint(self.module, self.doc, self.now_ns)
        for name, data in self.serd:
            tx.save_serd(self.module, name, data)
        for uuid, row, suspects, events in self.cases:
            tx.save_case(uuid, row, suspects, events)
        for uuid in self.case_deletes:
            tx.delete_case(uuid)
        # self.states is applied by the dispatcher's before_commit, together
        # with the commit of the events (fmd.dispatch).
        self._published = []
        if self.list_events:
            first = tx.allocate("fltlog", len(self.list_events))
            rows = []
            for i, ev in enumerate(self.list_events):
                rows.append(list_row(ev, first + i, self.now_ns))
                self._published.append(("fltlog", first + i, ev))
            tx.insert_fltlog(rows)
        for r in self.resources:
            tx.save_resource(r)
        for r in self.responses:
            tx.save_response(r)

    def progress(self) -> Progress | None:
        """The module's progress and event states; none when skipped (the checkpoint
        of a failed module covers nothing)."""
        if self.skipped:
            return None
        return Progress(self.module, self.last_seen, self.states)

    def published(self) -> list[Published]:
        return self._published

    def done(self, error: BaseException | None) -> None:
        self.error = error
        self.finished.set()
        if error is None:
            return
        log.error("checkpoint_failed", module=self.module, error=str(error)[:500])
        # The module's saved state no longer matches what it consumed: it is
        # failed, like a module that raised, so its events are released.
        self.failed_modules.add(self.module)
        if self.on_failure is not None:
            self.on_failure(self.module, error)
