"""The single writer: one thread, one transaction per batch (group commit).

Every change to the database made by the daemon goes through :class:`Writer`.
Producers (transports, module checkpoints, the control socket) submit
:class:`WriteOp` objects; the writer thread drains as many as are waiting (up to
``max_batch`` events), applies them all inside one transaction through a
:class:`WriteTxn`, commits, and only then calls each op's ``done`` — so an
acknowledgement sent from ``done`` always follows a durable commit.

Failure policy: a transient database error (locked, connection lost) rolls the
batch back and retries it a few times with back-off; any other error is
isolated by re-applying the batch's ops one per transaction, failing only the
op that raises.  Ops must therefore be re-appliable; ids allocated in a
rolled-back transaction are handed out again.

When the store stays unwritable (its disk is full, or the database does not
come back within the quick retries), the batch is split by what its ops carry
(:attr:`WriteOp.refusable`): new input (ingest batches, clock events) fails at
once with :class:`~fmd.errors.StoreRefused`, so every client hears "no space
left" instead of hanging; module state (checkpoints, control requests) is
*held* in order and written, before anything newer, once the store takes
writes again — so a module never fails for a full disk or a dropped
connection, and nothing it did is lost.  :class:`~fmd.store.health.StoreHealth`
learns of each failure and recovery and tells the transports whether to
refuse new events.  Held ops are retried every :data:`HELD_RETRY` seconds; at
shutdown, what still cannot be written is given up (its events stay
uncommitted and are replayed at the next start).

State machine of a batch::

    draining --apply all--> applied --before_commit--> committing --ok--> done(None)
        ^                      |  error (transient, a few times)      |
        +----- back-off -------+  error (other) -> one op per txn ----+--> done(error)
                               |  store unwritable: input --> done(StoreRefused)
                               +---------------------: state --> held --(store back)--> draining
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final, Protocol

import structlog
from sqlalchemy import Connection, Engine, Table, func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from fmd.errors import StoreRefused
from fmd.states import STATE_DISCARDED, STATE_RECEIVED
from fmd.store import queries, schema
from fmd.store.health import StoreHealth, is_disk_full

log = structlog.get_logger("fmd.store")


@dataclass(frozen=True, slots=True)
class Progress:
    """What committing an op tells the commit frontier (:mod:`fmd.dispatch`).

    ``module`` has consumed its events up to ``last_seen`` (per log), or, with
    ``last_seen`` None, is gone (failed or unloaded: nothing queued to it holds
    a commit back any more).  ``states`` are error-log state changes
    ``(event id, state)`` to write with the commit of those events.
    """

    module: str
    last_seen: Mapping[str, int] | None
    states: Sequence[tuple[int, int]] = ()


# An event stored by an op, dispatched once its transaction commits:
# (log, id, the event).
Published = tuple[str, int, Any]


class WriteOp(Protocol):
    """A unit of work for the writer; ``weight`` is how many events it carries.

    ``refusable`` is True for new input (it may be refused while the store
    cannot take it; the sender is told) and False for state that must be kept
    (held until the store takes writes again).  After ``apply``, ``progress``
    and ``published`` say what the commit means to the dispatcher.
    """

    weight: int
    refusable: bool

    def apply(self, tx: WriteTxn) -> None:
        """Make this op's changes through ``tx`` (may run more than once)."""

    def done(self, error: BaseException | None) -> None:
        """Called on the writer thread after the commit (or the final failure)."""

    def progress(self) -> Progress | None:
        """A module's progress committed by this op, or None."""

    def published(self) -> Sequence[Published]:
        """The events this op stored, to dispatch after the commit."""


class Op:
    """A convenient base for write ops that store nothing to dispatch and carry no
    module progress (subclasses override what they need)."""

    weight: int = 0
    refusable: bool = False

    def apply(self, tx: WriteTxn) -> None:
        return None

    def done(self, error: BaseException | None) -> None:
        return None

    def progress(self) -> Progress | None:
        return None

    def published(self) -> Sequence[Published]:
        return ()


class WriteTxn:
    """The operations available inside one writer transaction.

    Bulk writes go to the driver as plain SQL with tuples (``executemany``),
    the cheapest path through SQLAlchemy; the statements use only SQL that
    SQLite and PostgreSQL share (``INSERT ... ON CONFLICT``).  Module state is
    coalesced per transaction: when a module checkpoints several times in one
    transaction only its last document is written, and every case changed in
    the transaction is written once, all in a few ``executemany`` calls made
    by :meth:`flush`.
    """

    _sql: dict[tuple[str, str], str] = {}
    _multi: dict[tuple[str, str, int], str] = {}

    def __init__(self, conn: Connection, ids: dict[str, int]) -> None:
        self.conn = conn
        self._ids = ids
        self._dialect = conn.dialect.name
        self._mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self._ckpts: dict[str, tuple[str, int]] = {}
        self._cases: dict[
            str, tuple[Mapping[str, Any] | None, Sequence[Mapping[str, Any]] | None]
        ] = {}
        self._case_events: list[tuple[str, int]] = []
        self._serd: dict[tuple[str, str], str | None] = {}

    def _stmt(self, key: str, build: Callable[[str], str]) -> str:
        ck = (self._dialect, key)
        sql = self._sql.get(ck)
        if sql is None:
            sql = self._sql[ck] = build(self._mark)
        return sql

    def _many(self, key: str, build: Callable[[str], str], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.conn.exec_driver_sql(self._stmt(key, build), rows)

    def _insert(self, table: Table, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
        """INSERT ``rows`` (in column order) with multi-row VALUES lists.

        One statement carries up to ``_MAX_PARAMS`` parameters, so the driver
        steps the database once per few thousand rows instead of once per row:
        with SQLite every step releases and re-takes the GIL, which under load
        costs far more than the insert itself.
        """
        if not rows:
            return
        width = len(table.columns)
        start = 0
        while start < len(rows):
            # Statement sizes are powers of four, so only a handful of distinct
            # statements exist per table and the driver's statement cache holds.
            left = min(len(rows) - start, _MAX_PARAMS // width)
            size = 1
            while size * 4 <= left:
                size *= 4
            part = rows[start : start + size]
            start += size
            key = (self._dialect, f"ins_{table.name}_{tail}", size)
            sql = self._multi.get(key)
            if sql is None:
                one = "(" + ", ".join([self._mark] * width) + ")"
                sql = self._multi[key] = (
                    f'INSERT INTO "{table.name}" ({_cols(table)}) VALUES '
                    + ", ".join([one] * size)
                    + (f" {tail}" if tail else "")
                )
            self.conn.exec_driver_sql(sql, tuple(chain.from_iterable(part)))

    # -- ids -------------------------------------------------------------
    def allocate(self, log_name: str, count: int) -> int:
        """Reserve ``count`` ids in ``errlog`` or ``fltlog``; return the first."""
        first = self._ids[log_name] + 1
        self._ids[log_name] += count
        return first

    # -- logs ------------------------------------------------------------
    def insert_errlog(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert error-log rows given as sequences in ``ERRLOG_COLUMNS`` order."""
        self._insert(schema.errlog, rows)

    def insert_fltlog(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert(schema.fltlog, _tuples(schema.fltlog, rows))

    def advance_states(self, updates: Iterable[tuple[int, int]]) -> None:
        """Move errlog events forward to a new state (never backwards)."""
        by_state: dict[int, list[int]] = {}
        for eid, state in updates:
            by_state.setdefault(state, []).append(eid)
        per = _MAX_PARAMS - 2
        for state, ids in by_state.items():
            for start in range(0, len(ids), per):
                part = ids[start : start + per]
                m = self._mark
                sql = (
                    f"UPDATE errlog SET state = {m} WHERE state < {m} AND id IN "
                    f"({', '.join([m] * len(part))})"
                )
                self.conn.exec_driver_sql(sql, (state, state, *part))

    def commit_range(
        self, log_name: str, lo: int, hi: int, states: Mapping[int, int] | None = None
    ) -> None:
        """Mark ids in (lo, hi] committed and move the log's frontier to ``hi``.

        Error-log rows take their final state in the same write: ``states``
        gives it for the events a module accepted or diagnosed (runs of
        consecutive ids with one state become one range update); the other
        rows, still RECEIVED, become DISCARDED.
        """
        if hi <= lo:
            return
        if log_name == "errlog" and states:
            runs: list[list[int]] = []
            for eid in sorted(states):
                state = states[eid]
                last = runs[-1] if runs else None
                if last is not None and last[0] == state and last[2] == eid - 1:
                    last[2] = eid
                else:
                    runs.append([state, eid, eid])
            self._many(
                "commit_run",
                lambda m: (
                    f"UPDATE errlog SET committed = TRUE, state = {m} "
                    f"WHERE id >= {m} AND id <= {m} AND committed = FALSE"
                ),
                [(st, a, b) for st, a, b in runs],
            )
        if log_name == "errlog":
            sql = self._stmt(
                "commit_errlog",
                lambda m: (
                    "UPDATE errlog SET committed = TRUE, state = CASE WHEN state = "
                    f"{STATE_RECEIVED} THEN {STATE_DISCARDED} ELSE state END "
                    f"WHERE id > {m} AND id <= {m} AND committed = FALSE"
                ),
            )
        else:
            sql = self._stmt(
                "commit_fltlog",
                lambda m: (
                    f"UPDATE fltlog SET committed = TRUE WHERE id > {m} AND id <= {m} "
                    "AND committed = FALSE"
                ),
            )
        self.conn.exec_driver_sql(sql, (lo, hi))
        self.conn.exec_driver_sql(
            self._stmt(
                "frontier",
                lambda m: f"UPDATE log_frontier SET committed_upto = {m} WHERE log = {m}",
            ),
            (hi, log_name),
        )

    # -- module state ----------------------------------------------------
    def upsert(self, table: Table, values: Mapping[str, Any], keys: Sequence[str]) -> None:
        """Insert a full row or replace the one with the same key."""
        self._upsert(table, keys, _tuples(table, [values]))

    def _upsert(self, table: Table, keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows, replacing those whose ``keys`` match (keys unique in ``rows``)."""
        self._insert(table, rows, _conflict_update(table, keys))

    def save_checkpoint(self, module: str, data: str, now_ns: int) -> None:
        """Record a module's checkpoint; only the last one per transaction is written."""
        self._ckpts[module] = (data, now_ns)

    def save_serd(self, module: str, name: str, data: str | None) -> None:
        """Save one SERD engine of a module (None: it was destroyed); coalesced."""
        self._serd[(module, name)] = data

    def delete_checkpoint(self, module: str) -> None:
        """Forget a module's saved state: its document and its SERD engines."""
        self._ckpts.pop(module, None)
        self._serd = {k: v for k, v in self._serd.items() if k[0] != module}
        for table in ("checkpoints", "serd_engines"):
            self.conn.exec_driver_sql(
                self._stmt(f"delete_module_{table}", _delete_where(table, "module")), (module,)
            )

    def save_case(
        self,
        uuid: str,
        row: Mapping[str, Any] | None,
        suspects: Sequence[Mapping[str, Any]] | None,
        event_ids: Sequence[int],
    ) -> None:
        """Save a case: ``row`` or ``suspects`` None means unchanged; ``event_ids``
        are the events added since the last save."""
        if row is not None or suspects is not None:
            prev = self._cases.get(uuid)
            if prev is not None:
                row = row if row is not None else prev[0]
                suspects = suspects if suspects is not None else prev[1]
            self._cases[uuid] = (row, suspects)
        self._case_events.extend((uuid, e) for e in event_ids)

    def delete_case(self, uuid: str) -> None:
        self._cases.pop(uuid, None)
        self._case_events = [ce for ce in self._case_events if ce[0] != uuid]
        for table in ("case_events", "suspects", "cases"):
            self.conn.exec_driver_sql(
                self._stmt(f"delete_{table}", _delete_where(table, "uuid")), (uuid,)
            )

    def save_resource(self, values: Mapping[str, Any]) -> None:
        self.upsert(schema.resources, values, ["fmri", "uuid"])

    def reset_module(self, module: str) -> None:
        """Forget a module's checkpoint, SERD engines and unsolved cases (fmadm reset)."""
        self.delete_checkpoint(module)
        c = schema.cases
        unsolved = [
            r.uuid
            for r in self.conn.execute(
                select(c.c.uuid).where(c.c.module == module, c.c.diag_time_ns.is_(None))
            )
        ]
        for uuid in unsolved:
            self.delete_case(uuid)

    def save_response(self, values: Mapping[str, Any]) -> None:
        self.upsert(schema.responses, values, ["uuid", "idx", "module"])

    def set_offset(self, name: str, ident: str, offset: int, position: str | None = None) -> None:
        """Commit a transport's read position (``position``: a JSON document or None)."""
        values = {"name": name, "ident": ident, "offset": offset, "position": position}
        self.upsert(schema.xprt_offsets, values, ["name"])

    def flush(self) -> None:
        """Write the coalesced cases and checkpoints (the writer calls this last)."""
        if self._cases:
            rows = [row for row, _ in self._cases.values() if row is not None]
            self._upsert(schema.cases, ["uuid"], _tuples(schema.cases, rows))
            changed = [(u,) for u, (_, sus) in self._cases.items() if sus is not None]
            self._many(
                "suspects_delete", lambda m: f"DELETE FROM suspects WHERE uuid = {m}", changed
            )
            new_suspects = [s for _, sus in self._cases.values() if sus for s in sus]
            self._insert(schema.suspects, _tuples(schema.suspects, new_suspects))
            self._cases.clear()
        if self._case_events:
            self._insert(
                schema.case_events,
                self._case_events,
                "ON CONFLICT (uuid, event_id) DO NOTHING",
            )
            self._case_events = []
        if self._serd:
            self._many(
                "serd_delete",
                lambda m: f"DELETE FROM serd_engines WHERE module = {m} AND name = {m}",
                [key for key, data in self._serd.items() if data is None],
            )
            self._upsert(
                schema.serd_engines,
                ["module", "name"],
                [(mod, name, data) for (mod, name), data in self._serd.items() if data is not None],
            )
            self._serd.clear()
        if self._ckpts:
            rows = [{"module": k, "data": d, "updated_ns": t} for k, (d, t) in self._ckpts.items()]
            self._upsert(schema.checkpoints, ["module"], _tuples(schema.checkpoints, rows))
            self._ckpts.clear()


def _delete_where(table: str, column: str) -> Callable[[str], str]:
    return lambda mark: f"DELETE FROM {table} WHERE {column} = {mark}"


def _tuples(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    cols = [c.name for c in table.columns]
    return [tuple(r[c] for c in cols) for r in rows]


def _cols(table: Table) -> str:
    return ", ".join(f'"{c.name}"' for c in table.columns)


def _conflict_update(table: Table, keys: Sequence[str]) -> str:
    """The ON CONFLICT clause that replaces the row whose ``keys`` match."""
    rest = ", ".join(
        f'"{c.name}" = excluded."{c.name}"' for c in table.columns if c.name not in keys
    )
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {rest}"


# Parameters in one statement: below SQLite's limit (32766) and PostgreSQL's (65535).
_MAX_PARAMS = 30_000


# Database errors worth waiting out: a busy or locked SQLite file, a PostgreSQL
# connection that went away.  Anything else (read-only file system, disk I/O
# error, a missing table) fails the ops at once instead of stalling ingest.
_TRANSIENT = (
    "database is locked",
    "database is busy",
    "connection",
    "could not connect",
    "server closed",
    "terminating connection",
    "timeout",
)
# Quick retries of a transient error before the batch's input is refused and its
# state held: 0.05 + 0.1 + ... + 0.8 s, about 1.5 s (and each SQLite attempt
# may itself wait busy_timeout for a lock).
MAX_RETRIES = 5
# How often held ops are tried again while the store is unwritable.
HELD_RETRY = 1.0
_NOTHING: Final = object()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig if exc.orig is not None else exc).lower()
        return any(t in text for t in _TRANSIENT)
    return False


class Writer:
    """The writer thread.  ``before_commit`` runs last in every transaction."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 4096,
        before_commit: Callable[[WriteTxn, Sequence[WriteOp]], None] | None = None,
        after_commit: Callable[[Sequence[WriteOp]], None] | None = None,
        health: StoreHealth | None = None,
    ) -> None:
        self._engine = engine
        self.health = health if health is not None else StoreHealth(None, 0)
        # Ops kept while the store is unwritable, in submission order.
        self._held: list[WriteOp] = []
        self._max_batch = max(1, max_batch)
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._q: queue.SimpleQueue[WriteOp | None] = queue.SimpleQueue()
        self._conn: Connection | None = None
        self._thread: threading.Thread | None = None
        self._ids = self._load_ids()
        self.stats = {
            "txns": 0,
            "ops": 0,
            "events": 0,
            "retries": 0,
            "failed_ops": 0,
            "refused_ops": 0,
            "held_ops": 0,
        }

    @property
    def engine(self) -> Engine:
        """The database engine (for components that keep a small table of their own)."""
        return self._engine

    def _load_ids(self) -> dict[str, int]:
        """The last id handed out per log: the largest id stored, or the commit
        frontier if that is larger (``fmadm rotate`` may have moved every row
        out of the live table; an id must never be handed out twice)."""
        ids: dict[str, int] = {}
        with self._engine.connect() as conn:
            for table in (schema.errlog, schema.fltlog):
                top = conn.execute(select(func.max(table.c.id))).scalar() or 0
                ids[table.name] = max(int(top), queries.frontier(conn, table.name))
        return ids

    @property
    def holding(self) -> bool:
        """Whether ops are held because the store takes no writes (see the module doc)."""
        return bool(self._held)

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
        try:
            self._loop()
        finally:
            self._drop_connection()

    def _loop(self) -> None:
        stopping = False
        while True:
            if self._held:
                # Wait a little for new ops, then try the held ones again first.
                try:
                    first: Any = self._q.get(timeout=HELD_RETRY)
                except queue.Empty:
                    first = _NOTHING
            elif stopping:
                break
            else:
                first = self._q.get()
            batch: list[WriteOp] = []
            if first is None:
                stopping = True
            elif first is not _NOTHING:
                batch.append(first)
            weight = sum(op.weight for op in batch)
            while weight < self._max_batch and not stopping:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                weight += nxt.weight
            if self._held:
                # Held state goes first, in order; newer ops queue behind it.
                batch, self._held = self._held + batch, []
                self.stats["held_ops"] = 0
            if batch:
                self._write(batch)
            if stopping and self._held:
                self._give_up_held()

    def _give_up_held(self) -> None:
        """Shutdown with the store still unwritable: fail what is held (its events
        stay uncommitted, so they are replayed at the next start)."""
        held, self._held = self._held, []
        self.stats["held_ops"] = 0
        error = StoreRefused(
            f"fmd stopped while the store was unwritable: {self.health.refusal() or 'unknown'}"
        )
        log.error(
            "store_unwritable_at_shutdown",
            ops=len(held),
            note="their events were not committed and are replayed at the next start",
        )
        self.stats["failed_ops"] += len(held)
        self._finish(held, error)

    def _write(self, batch: list[WriteOp]) -> None:
        delay = 0.05
        tries = 0
        while True:
            try:
                self._transact(batch)
            except Exception as exc:
                tries += 1
                full = is_disk_full(exc)
                transient = _is_transient(exc)
                if transient and not full and tries <= MAX_RETRIES:
                    self.stats["retries"] += 1
                    log.warning("store_retry", error=str(exc)[:300], delay=delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                if full or transient:
                    self._unwritable(batch, exc)
                    return
                if len(batch) == 1:
                    # One op that fails: it fails (its client is told), nothing stalls.
                    self.stats["failed_ops"] += 1
                    log.error("store_op_failed", error=str(exc)[:500], ops=1)
                    self._finish(batch, exc)
                    return
                log.warning("store_batch_split", error=str(exc)[:300], ops=len(batch))
                for op in batch:
                    self._write([op])
                return
            self.health.write_succeeded()
            self._finish(batch, None)
            return

    def _unwritable(self, batch: list[WriteOp], exc: BaseException) -> None:
        """The store takes no writes: refuse the batch's input, hold its state."""
        self.health.write_failed(exc, unavailable=True)
        refused = [op for op in batch if op.refusable]
        held = [op for op in batch if not op.refusable]
        if refused:
            reason = self.health.refusal() or str(exc).splitlines()[0][:300]
            self.stats["refused_ops"] += len(refused)
            self._finish(refused, StoreRefused(reason))
        if held:
            if not self._held:
                log.warning(
                    "store_writes_held",
                    ops=len(held),
                    error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
                    note="module state is kept and written once the store takes writes again",
                )
            self._held.extend(held)
            self.stats["held_ops"] = len(self._held)

    def _connection(self) -> Connection:
        """The writer's own connection, kept open for the thread's life.

        Opening a database connection per transaction (SQLite: mapping the WAL
        index, reading the schema, running the pragmas) cost more than the
        writes themselves; after any error the connection is dropped and a
        fresh one made for the next attempt.
        """
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.warning("store_close_failed", exc_info=True)

    def _transact(self, batch: Sequence[WriteOp]) -> None:
        saved = dict(self._ids)
        try:
            conn = self._connection()
            with conn.begin():
                tx = WriteTxn(conn, self._ids)
                for op in batch:
                    op.apply(tx)
                tx.flush()
                if self._before_commit is not None:
                    self._before_commit(tx, batch)
        except BaseException:
            self._ids.clear()
            self._ids.update(saved)
            self._drop_connection()
            raise
        self.stats["txns"] += 1
        self.stats["ops"] += len(batch)
        self.stats["events"] += sum(op.weight for op in batch)

    def _finish(self, batch: Sequence[WriteOp], error: BaseException | None) -> None:
        # What the batch stored is dispatched before anyone hears it is done: a
        # caller that waits for the writer (quiesce, a repair) then finds the
        # events already queued to their modules.
        if error is None and self._after_commit is not None:
            try:
                self._after_commit(batch)
            except Exception:
                log.exception("store_after_commit_failed")
        for op in batch:
            try:
                op.done(error)
            except Exception:
                log.exception("store_done_callback_failed", op=type(op).__name__)


class _CallOp(Op):
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
