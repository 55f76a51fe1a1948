"""The single writer: one thread, one transaction per batch (group commit).

Every change to the database made by the daemon goes through :class:`Writer`.
Producers (transports, module checkpoints, the control socket) submit
:class:`WriteOp` objects; the writer thread drains as many as are waiting (up to
``max_batch`` events), applies them all inside one transaction through a
:class:`WriteTxn`, commits, and only then calls each op's ``done`` — so an
acknowledgement sent from ``done`` always follows a durable commit.

Failure policy: a transient database error (locked, connection lost) rolls the
batch back and retries it with back-off; any other error is isolated by
re-applying the batch's ops one per transaction, failing only the op that
raises.  Ops must therefore be re-appliable; ids allocated in a rolled-back
transaction are handed out again.

State machine of a batch::

    draining --apply all--> applied --before_commit--> committing --ok--> done(None)
        ^                      |  error (transient)                   |
        +----- back-off -------+  error (other) -> one op per txn ----+--> done(error)
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from sqlalchemy import Connection, Engine, Table, and_, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError

from fmd.store import schema

log = structlog.get_logger("fmd.store")


class WriteOp(Protocol):
    """A unit of work for the writer; ``weight`` is how many events it carries."""

    weight: int

    def apply(self, tx: WriteTxn) -> None:
        """Make this op's changes through ``tx`` (may run more than once)."""

    def done(self, error: BaseException | None) -> None:
        """Called on the writer thread after the commit (or the final failure)."""


class WriteTxn:
    """The operations available inside one writer transaction."""

    def __init__(self, conn: Connection, ids: dict[str, int]) -> None:
        self.conn = conn
        self._ids = ids
        self._pg = conn.dialect.name == "postgresql"

    # -- ids -------------------------------------------------------------
    def allocate(self, log_name: str, count: int) -> int:
        """Reserve ``count`` ids in ``errlog`` or ``fltlog``; return the first."""
        first = self._ids[log_name] + 1
        self._ids[log_name] += count
        return first

    # -- logs ------------------------------------------------------------
    def insert_errlog(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(schema.errlog.insert(), list(rows))

    def insert_fltlog(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(schema.fltlog.insert(), list(rows))

    def advance_states(self, updates: Iterable[tuple[int, int]]) -> None:
        """Move errlog events forward to a new state (never backwards)."""
        params = [{"b_id": i, "b_state": s} for i, s in updates]
        if not params:
            return
        t = schema.errlog
        from sqlalchemy import bindparam

        stmt = (
            update(t)
            .where(and_(t.c.id == bindparam("b_id"), t.c.state < bindparam("b_state")))
            .values(state=bindparam("b_state"))
        )
        self.conn.execute(stmt, params)

    def commit_range(self, log_name: str, lo: int, hi: int) -> None:
        """Mark ids in (lo, hi] committed; errlog rows still RECEIVED become DISCARDED."""
        if hi <= lo:
            return
        if log_name == "errlog":
            t = schema.errlog
            self.conn.execute(
                update(t)
                .where(and_(t.c.id > lo, t.c.id <= hi, t.c.committed.is_(False)))
                .values(
                    committed=True,
                    state=case(
                        (t.c.state == schema.STATE_RECEIVED, schema.STATE_DISCARDED),
                        else_=t.c.state,
                    ),
                )
            )
        else:
            t = schema.fltlog
            self.conn.execute(
                update(t)
                .where(and_(t.c.id > lo, t.c.id <= hi, t.c.committed.is_(False)))
                .values(committed=True)
            )

    # -- module state ----------------------------------------------------
    def upsert(self, table: Table, values: Mapping[str, Any], keys: Sequence[str]) -> None:
        ins = pg_insert(table) if self._pg else sqlite_insert(table)
        stmt = ins.values(**values)
        rest = {k: stmt.excluded[k] for k in values if k not in keys}
        self.conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=rest))

    def save_checkpoint(self, module: str, data: str, now_ns: int) -> None:
        self.upsert(
            schema.checkpoints,
            {"module": module, "data": data, "updated_ns": now_ns},
            ["module"],
        )

    def delete_checkpoint(self, module: str) -> None:
        self.conn.execute(delete(schema.checkpoints).where(schema.checkpoints.c.module == module))

    def save_case(
        self,
        row: Mapping[str, Any],
        suspects: Sequence[Mapping[str, Any]],
        event_ids: Sequence[int],
    ) -> None:
        """Write a case with its suspects and its events, replacing what was there."""
        uuid = row["uuid"]
        self.upsert(schema.cases, row, ["uuid"])
        self.conn.execute(delete(schema.suspects).where(schema.suspects.c.uuid == uuid))
        if suspects:
            self.conn.execute(schema.suspects.insert(), list(suspects))
        have = {
            r[0]
            for r in self.conn.execute(
                select(schema.case_events.c.event_id).where(schema.case_events.c.uuid == uuid)
            )
        }
        new = [{"uuid": uuid, "event_id": e} for e in event_ids if e not in have]
        if new:
            self.conn.execute(schema.case_events.insert(), new)

    def delete_case(self, uuid: str) -> None:
        for t in (schema.case_events, schema.suspects, schema.cases):
            self.conn.execute(delete(t).where(t.c.uuid == uuid))

    def save_resource(self, values: Mapping[str, Any]) -> None:
        self.upsert(schema.resources, values, ["fmri", "uuid"])

    def set_offset(self, name: str, ident: str, offset: int) -> None:
        self.upsert(schema.xprt_offsets, {"name": name, "ident": ident, "offset": offset}, ["name"])


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Writer:
    """The writer thread.  ``before_commit`` runs last in every transaction."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 4096,
        before_commit: Callable[[WriteTxn, Sequence[WriteOp]], None] | None = None,
        after_commit: Callable[[Sequence[WriteOp]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_batch = max(1, max_batch)
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._q: queue.SimpleQueue[WriteOp | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ids = self._load_ids()
        self.stats = {"txns": 0, "ops": 0, "events": 0, "retries": 0, "failed_ops": 0}

    def _load_ids(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return {
                "errlog": conn.execute(select(func.max(schema.errlog.c.id))).scalar() or 0,
                "fltlog": conn.execute(select(func.max(schema.fltlog.c.id))).scalar() or 0,
            }

    def last_id(self, log_name: str) -> int:
        return self._ids[log_name]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fmd-writer", daemon=True)
        self._thread.start()

    def submit(self, op: WriteOp) -> None:
        self._q.put(op)

    def stop(self) -> None:
        """Write everything already submitted, then stop the thread."""
        if self._thread is None:
            return
        self._q.put(None)
        self._thread.join()
        self._thread = None

    def call(self, fn: Callable[[WriteTxn], Any], timeout: float | None = 60.0) -> Any:
        """Run ``fn`` in a writer transaction and wait for its result (control path)."""
        op = _CallOp(fn)
        self.submit(op)
        if not op.event.wait(timeout):
            raise TimeoutError("the store writer did not answer in time")
        if op.error is not None:
            raise op.error
        return op.result

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._q.get()
            if first is None:
                break
            batch = [first]
            weight = first.weight
            while weight < self._max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                weight += nxt.weight
            self._write(batch)

    def _write(self, batch: list[WriteOp]) -> None:
        delay = 0.05
        while True:
            try:
                self._transact(batch)
            except Exception as exc:
                if _is_transient(exc):
                    self.stats["retries"] += 1
                    log.warning("store_retry", error=str(exc), delay=delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if len(batch) == 1:
                    self.stats["failed_ops"] += 1
                    log.error("store_op_failed", error=str(exc), op=type(batch[0]).__name__)
                    self._finish(batch, exc)
                    return
                log.warning("store_batch_split", error=str(exc), ops=len(batch))
                for op in batch:
                    self._write([op])
                return
            self._finish(batch, None)
            return

    def _transact(self, batch: Sequence[WriteOp]) -> None:
        saved = dict(self._ids)
        try:
            with self._engine.begin() as conn:
                tx = WriteTxn(conn, self._ids)
                for op in batch:
                    op.apply(tx)
                if self._before_commit is not None:
                    self._before_commit(tx, batch)
        except BaseException:
            self._ids.clear()
            self._ids.update(saved)
            raise
        self.stats["txns"] += 1
        self.stats["ops"] += len(batch)
        self.stats["events"] += sum(op.weight for op in batch)

    def _finish(self, batch: Sequence[WriteOp], error: BaseException | None) -> None:
        for op in batch:
            try:
                op.done(error)
            except Exception:
                log.exception("store_done_callback_failed", op=type(op).__name__)
        if error is None and self._after_commit is not None:
            try:
                self._after_commit(batch)
            except Exception:
                log.exception("store_after_commit_failed")


class _CallOp:
    weight = 0

    def __init__(self, fn: Callable[[WriteTxn], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.event = threading.Event()

    def apply(self, tx: WriteTxn) -> None:
        self.result = self.fn(tx)

    def done(self, error: BaseException | None) -> None:
        self.error = error
        self.event.set()
