"""Start-up replays, and reading queued events back from the store.

Two replays run at start-up, after every module has restored its checkpoint
and before the transports open:

1. **Uncommitted events** (:func:`replay_uncommitted`): every fault-log and
   error-log row above the commit frontier is dispatched again, in id order, to
   the modules whose checkpoint does not cover it (see :mod:`fmd.dispatch`);
   error-log events go as references, read back by each module's thread.
2. **Faults to response agents** (:func:`queue_fault_replays`): an agent that
   sets ``Plugin.replay_faults`` is re-sent the latest ``list.suspect`` of each
   case still faulty and not yet isolated (SOLVED, CLOSE_WAIT: its action may
   not have finished before fmd stopped) and the latest ``list.repaired`` of each
   case not yet resolved (REPAIRED: its undo may have failed).  Isolated cases
   (CLOSED) are re-sent only when the agent says what it did may have been
   undone — ``Plugin.replay_isolated``, e.g. the host rebooted — so a plain
   restart re-sends only what an agent has not finished acting on.

The fault replay runs once the modules have consumed the first replay (so the
agents are asked on their own threads), and queues *references* (``("fault", fault-log id)``), not
events: the agent's own thread reads them back in batches (:func:`load_refs`),
with each suspect's current fault status, after the events queued before them
and before anything queued later.  So start-up costs one query however many
faults are outstanding, and per-module order is kept: a repair that arrives
after start-up never overtakes the replayed diagnosis it undoes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from fmd.eventq import EventItem
from fmd.protocol import ListEvent
from fmd.states import CaseState
from fmd.store import Store, queries
from fmd.store.codec import row_ereport, row_list

if TYPE_CHECKING:
    from fmd.dispatch import Dispatcher
    from fmd.module import ModuleRunner

log = structlog.get_logger("fmd.replay")

# The reference kind of a fault re-sent to a response agent (see the module doc).
FAULT_REF: Final = "fault"
LOGS: Final = ("errlog", "fltlog")
# How long an agent may take to say whether its isolated faults must be re-sent.
QUESTION_WAIT: Final = 30.0


def replay_uncommitted(store: Store, dispatcher: Dispatcher) -> int:
    """Dispatch every uncommitted event to the modules that have not consumed it;
    return how many events were replayed.

    Fault-log events are few and dispatched whole; error-log events are routed
    by class and queued as references that each module reads back on its own
    thread (:func:`load_refs`), so fmd is ready in seconds however many events
    a crash left uncommitted, and a module still sees them before anything new.
    """
    replayed = 0
    with store.reader() as conn:
        for log_name in LOGS:
            dispatcher.set_committed(log_name, queries.frontier(conn, log_name))
        for row in queries.uncommitted(conn, "fltlog"):
            try:
                ev = row_list(row)
            except Exception as exc:
                log.error("replay_decode_failed", log="fltlog", id=row.id, error=str(exc))
                continue
            dispatcher.dispatch("fltlog", row.id, ev, replay=True)
            replayed += 1
        replayed += dispatcher.replay_refs(list(queries.uncommitted_classes(conn)))
    if replayed:
        log.info(
            "replay_queued",
            events=replayed,
            partials=dispatcher.stats["partials"],
            note="the modules read the events back in the background",
        )
    return replayed


def queue_fault_replays(
    store: Store, dispatcher: Dispatcher, runners: Sequence[ModuleRunner]
) -> int:
    """Queue, to each response agent that asks for it, references to the faults it
    must be re-sent (see the module doc); return how many were queued."""
    takers = [r for r in runners if r.plugin.replay_faults and r.active]
    if not takers:
        return 0
    isolated_too: dict[str, bool] = {}
    for r in takers:
        try:
            # On the module's own thread: plug-in code never runs on two threads.
            isolated_too[r.name] = bool(r.call(_asker(r), wait=QUESTION_WAIT))
        except Exception as exc:
            log.error("replay_isolated_failed", module=r.name, error=str(exc))
            isolated_too[r.name] = True
    with store.reader() as conn:
        faults = queries.fault_replays(conn, closed=any(isolated_too.values()))
    committed = dispatcher.committed_upto["fltlog"]
    refs: dict[str, list[tuple[str, int]]] = {r.name: [] for r in takers}
    for _uuid, state, fid, classes in faults:
        cls = "list.repaired" if state == CaseState.REPAIRED else "list.suspect"
        targets = {r.name for r in dispatcher.tree.match_event(cls, classes)}
        for r in takers:
            isolated = state == CaseState.CLOSED
            if r.name not in targets or (isolated and not isolated_too[r.name]):
                continue
            # An uncommitted event the module has not consumed reaches it
            # through the ordinary replay already.
            if fid > max(committed, r.last_seen["fltlog"]):
                continue
            refs[r.name].append((FAULT_REF, fid))
    sent = 0
    for r in takers:
        if refs[r.name]:
            r.queue.put_refs(refs[r.name])
            sent += len(refs[r.name])
    if sent:
        log.info(
            "fault_replay_queued",
            events=sent,
            isolated_too=sorted(n for n, v in isolated_too.items() if v),
        )
    return sent


def _asker(runner: ModuleRunner) -> Callable[[], bool]:
    def ask() -> bool:
        return runner.plugin.replay_isolated(runner.handle)

    return ask


def load_refs(store: Store, refs: list[tuple[str, int]]) -> list[EventItem]:
    """Read queued references back from the store, in their order: error-log and
    fault-log events as they were stored, faults with their current statuses.
    A reference whose row is gone is skipped."""
    wanted: dict[str, list[int]] = {"errlog": [], "fltlog": []}
    for kind, i in refs:
        wanted["fltlog" if kind == FAULT_REF else kind].append(i)
    with store.reader() as conn:
        errs = {r.id: row_ereport(r) for r in queries.events_by_id(conn, wanted["errlog"])}
        flts: dict[int, ListEvent] = {
            r.id: row_list(r) for r in queries.events_by_id(conn, wanted["fltlog"], "fltlog")
        }
        faults = {flts[i].uuid for kind, i in refs if kind == FAULT_REF and i in flts}
        statuses = queries.suspect_statuses(conn, sorted(faults)) if faults else {}
    out: list[EventItem] = []
    for kind, i in refs:
        if kind == "errlog":
            ev: Any = errs.get(i)
        else:
            ev = flts.get(i)
            if ev is not None and kind == FAULT_REF:
                status = statuses.get(ev.uuid)
                if status is not None and len(status) == len(ev.fault_status):
                    ev = ev.model_copy(update={"fault_status": status})
        if ev is not None:
            out.append(EventItem("errlog" if kind == "errlog" else "fltlog", i, ev))
    return out
