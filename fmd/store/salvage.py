"""Damaged SQLite stores: the start-up integrity check, moving a corrupt file
aside, and reading what is still readable out of it.

This module owns three things:

* **What counts as damage.** :func:`is_corruption` accepts only SQLite's own
  verdicts (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) and text that is not UTF-8;
  a busy, locked, unreadable or failing disk is never mistaken for a corrupt
  file, and neither is a write-ahead log left by a crash.
* **Tolerant reading** (:class:`TolerantReader`, :func:`copy_tables`): one
  table at a time in rowid order.  When SQLite raises, a seek search (doubling
  steps, then bisection) finds the first rowid from which the table reads
  again; the rows in between are a :class:`Gap`.  Every value is checked
  against the column's type, and a row that does not fit is a :class:`BadRow`.
  ``fmdump`` uses the same reader, through :class:`ScratchCopy`, when its
  ordinary query raises.
* **The start-up procedure** for the daemon's SQLite file (the store calls
  :func:`check_at_startup` before opening it read-write, and :func:`recover`
  once migrations have created the new file)::

      fmd.db absent ─────────────────────────────────────────────► new database
      fmd.db.clean matches (dev, inode, size, mtime, ctime), no WAL ► open it
      PRAGMA quick_check says "ok" ──────────────────────────────► open it
      damaged, SQLite cannot open it as a database, or it is empty
      although fmd.db.clean says it held data:
          rename fmd.db-wal, -shm, -journal, then fmd.db, to
          fmd.db.corrupt-<UTC>[-wal|-shm|-journal]
          migrations create a new fmd.db
          copy every readable row of every fmd table, ids and values unchanged
          make the copy consistent (below), write fmd.db.corrupt-<UTC>.txt
          the store exposes the SalvageReport; the daemon warns the operator

  The stamp ``fmd.db.clean`` is written when the store closes with no WAL
  left behind, and removed as soon as the store opens again, so a crash or
  any change to the file since the clean shutdown makes the next start-up
  check it.  ``quick_check`` visits every page in b-tree order, which on a
  cold page cache is random I/O; reading the file sequentially first makes it
  several times faster (1 GB, cold cache: 2.7 s instead of 21 s; 1.9 s warm;
  0.02 s when the stamp matches).  If fmd dies during a salvage, the new
  database stays empty (one transaction) and the moved file stays as it is:
  renaming it back to ``fmd.db`` runs the salvage again.

Consistency after a salvage (what is kept and why):

* ``log_frontier`` is recomputed per log from the rows recovered: one below
  the first uncommitted id, else the largest id (never above the salvaged
  value).  The writer numbers new events from the largest id present, so a
  frontier above it would declare events not yet written committed.
* ``suspects`` and ``case_events`` rows whose case is gone are dropped.
* Ids above the largest recovered id of a log will be handed out again to new
  events.  So references to them are removed: ``case_events`` rows and the
  events held by SERD engines (an engine keeps counting what remains: fewer
  events is better than attaching future, unrelated errors to a diagnosis),
  and each module checkpoint's ``last_seen`` is lowered to that id, or after
  a crash the replay would take the new events for ones the module had
  already consumed and never deliver them.  References into holes below the
  largest id are kept: those ids are never reused, and cases keep their
  history.  A SERD engine whose saved record is not valid is dropped (its
  module would otherwise lose every engine when restoring).
* Checkpoint documents, resources, responses, transport offsets and the
  simulated hardware state are kept as read; ``fmd_migrations`` is the new
  file's own.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import structlog
from sqlalchemy import Boolean, Engine, String, Table, create_engine
from sqlalchemy.pool import StaticPool

from fmd.errors import StoreError
from fmd.store import schema

__all__ = [
    "SALVAGE_TABLES",
    "BadRow",
    "Gap",
    "MovedAside",
    "SalvageReport",
    "ScratchCopy",
    "TableRead",
    "TolerantReader",
    "check_at_startup",
    "copy_tables",
    "is_corruption",
    "move_aside",
    "recover",
    "write_clean_stamp",
]

log = structlog.get_logger("fmd.store")

# SQLite primary result codes (the low byte of an extended code).
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
_PRIMARY_CODE = 0xFF
# Raised by Python's sqlite3 module itself when a TEXT value is not UTF-8.
_UNDECODABLE = "Could not decode to UTF-8"

MIN_ROWID = -(1 << 63)
MAX_ROWID = (1 << 63) - 1
_INSERT_BATCH = 500
_PREREAD_CHUNK = 1 << 20
_QUICK_CHECK_PROBLEMS = 5
_TIMEOUT_S = 30  # waiting for a lock, as the store's own connections do
STAMP_SUFFIX = ".clean"
_STAMP_VERSION = 1
SIDECARS = ("-wal", "-shm", "-journal")
CORRUPT_INFIX = ".corrupt-"
REPORT_SUFFIX = ".txt"
_FILE_BITS = 0o666  # files fmd writes beside the database are never executable

# Every table of fmd.store.schema except fmd_migrations, parents before children.
SALVAGE_TABLES: tuple[Table, ...] = (
    schema.errlog,
    schema.fltlog,
    schema.cases,
    schema.suspects,
    schema.case_events,
    schema.resources,
    schema.checkpoints,
    schema.serd_engines,
    schema.xprt_offsets,
    schema.log_frontier,
    schema.hw_state,
    schema.responses,
)

# How the operator reads each table's rows.
NOUNS = {
    "errlog": "error-log events",
    "fltlog": "fault-log events",
    "cases": "cases",
    "suspects": "suspects",
    "case_events": "case-event links",
    "resources": "resource-cache entries",
    "checkpoints": "module checkpoints",
    "serd_engines": "SERD engines",
    "xprt_offsets": "transport offsets",
    "log_frontier": "log frontiers",
    "hw_state": "hardware-state records",
    "responses": "responses",
}
_LOGS = ("errlog", "fltlog")
# Always named in the "recovered ..." warning; other tables only when they lost rows.
_SHOWN = (*_LOGS, "cases")
_SHOWN_GAPS = 3


def is_corruption(exc: BaseException) -> bool:
    """True when ``exc`` (sqlite3 or SQLAlchemy) says the database file is damaged."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & _PRIMARY_CODE in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return True
    return str(exc).startswith(_UNDECODABLE)


def reason(exc: BaseException) -> str:
    """The first line of the database's own message (without SQLAlchemy's decoration)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if isinstance(orig, BaseException) else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- reading one table tolerantly -------------------------------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """Rows that could not be read, between two readable ones (None: the table's end)."""

    after_rowid: int | None
    before_rowid: int | None
    after_key: tuple[Any, ...] | None
    before_key: tuple[Any, ...] | None
    error: str
    # For a table keyed by one integer id: an id known to have existed past the
    # last readable row (the old frontier, a checkpoint), bounding a lost tail.
    tail_hint: int | None = None

    @property
    def estimate(self) -> int | None:
        """How many rows were lost here, about (None: unknown)."""
        a, b = _int_key(self.after_key), _int_key(self.before_key)
        if b is not None:
            return max(0, b - (a if a is not None else 0) - 1)
        if self.before_rowid is not None:
            start = self.after_rowid if self.after_rowid is not None else 0
            return max(0, self.before_rowid - start - 1)
        if self.tail_hint is not None:
            return max(0, self.tail_hint - (a if a is not None else 0))
        return None

    def describe(self, what: str = "records") -> str:
        """One line for the operator: where the unreadable rows are, and why."""
        a = _label(self.after_key, self.after_rowid)
        b = _label(self.before_key, self.before_rowid)
        if a and b:
            text = f"{what} between {a} and {b} could not be read"
        elif a:
            text = f"{what} after {a} could not be read"
        elif b:
            text = f"{what} before {b} could not be read"
        else:
            text = f"no {what} could be read"
        return f"{text}: {self.error}"


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row SQLite returned whose values do not fit the table (damaged content)."""

    rowid: int
    key: tuple[Any, ...] | None
    problem: str

    def describe(self, what: str = "record") -> str:
        return f"{what} {_label(self.key, self.rowid)} is damaged: {self.problem}"


def _int_key(key: tuple[Any, ...] | None) -> int | None:
    if key is not None and len(key) == 1 and isinstance(key[0], int):
        return key[0]
    return None


def _label(key: tuple[Any, ...] | None, rowid: int | None) -> str:
    if key is not None and len(key) == 1 and isinstance(key[0], int):
        return f"id {key[0]}"
    if key is not None:
        return "(" + ", ".join(str(k) for k in key) + ")"
    return f"rowid {rowid}" if rowid is not None else ""


@dataclass(slots=True)
class TableRead:
    """What reading one table found."""

    table: str
    recovered: int = 0
    gaps: list[Gap] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    duplicates: int = 0  # readable rows whose key another row already had
    error: str | None = None  # the table could not be read at all
    dropped: int = 0  # recovered rows removed again to keep the copy consistent

    @property
    def damaged(self) -> bool:
        return bool(self.gaps or self.bad or self.duplicates or self.error)

    @property
    def lost(self) -> int | None:
        """Rows that could not be recovered, about (None: unknown)."""
        if self.error is not None:
            return None
        total = len(self.bad) + self.duplicates
        for gap in self.gaps:
            n = gap.estimate
            if n is None:
                return None
            total += n
        return total

    def messages(self, what: str = "records") -> list[str]:
        """One line per unreadable range or row."""
        out = [g.describe(what) for g in self.gaps]
        out += [b.describe(what.removesuffix("s")) for b in self.bad]
        if self.duplicates:
            out.append(f"{self.duplicates} {what} repeat the key of another and were skipped")
        if self.error is not None:
            out.append(f"the {self.table} table could not be read: {self.error}")
        return out


class _BadValue(Exception):
    """A value that does not fit its column."""


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    kind: str  # "int", "bool" or "text"
    nullable: bool


def _columns(table: Table) -> tuple[_Column, ...]:
    out = []
    for c in table.columns:
        kind = (
            "text"
            if isinstance(c.type, String)
            else "bool"
            if isinstance(c.type, Boolean)
            else "int"
        )
        out.append(_Column(c.name, kind, bool(c.nullable)))
    return tuple(out)


def _convert(col: _Column, value: Any) -> Any:
    if value is None:
        if col.nullable:
            return None
        raise _BadValue(f"{col.name} is missing")
    if col.kind == "text":
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise _BadValue(f"{col.name} is not valid UTF-8 text") from None
        if isinstance(value, str):
            return value
        raise _BadValue(f"{col.name} is not text")
    if isinstance(value, int) and (col.kind == "int" or value in (0, 1)):
        return value
    raise _BadValue(f"{col.name} is not {'a boolean' if col.kind == 'bool' else 'an integer'}")


class _OutOfOrder(sqlite3.DatabaseError):
    """A scan returned a rowid not above the previous one."""


class _Failed:
    """A probe that raised."""


_FAILED = _Failed()


class TolerantReader:
    """Reads one table of a possibly damaged SQLite file in rowid order.

    ``rows()`` yields the values of every readable row in the table's column
    order, checked against the column types; :attr:`result` records the gaps
    and the bad rows.  The connection should return TEXT as bytes
    (``text_factory = bytes``) so that undecodable text is a bad row rather
    than an error that ends the scan; :func:`copy_tables` sets that up.
    """

    def __init__(self, conn: sqlite3.Connection, table: Table) -> None:
        self._conn = conn
        self._cols = _columns(table)
        names = ", ".join(f'"{c.name}"' for c in self._cols)
        self._scan = f'SELECT rowid, {names} FROM "{table.name}" WHERE rowid > ? ORDER BY rowid'
        self._probe_sql = (
            f'SELECT rowid, {names} FROM "{table.name}" WHERE rowid >= ? ORDER BY rowid LIMIT 1'
        )
        self._key_at = [i for i, c in enumerate(table.columns) if c.primary_key]
        self.result = TableRead(table.name)

    def _key(self, raw: Sequence[Any]) -> tuple[Any, ...] | None:
        try:
            return tuple(_convert(self._cols[i], raw[i]) for i in self._key_at)
        except _BadValue:
            return None

    def rows(self) -> Iterator[tuple[Any, ...]]:
        res = self.result
        after = MIN_ROWID  # the last rowid read (or given up on)
        after_key: tuple[Any, ...] | None = None
        # A gap being measured: (rowid and key of the row before it, the error).
        gap: tuple[int | None, tuple[Any, ...] | None, str] | None = None
        scan = True
        while True:
            error: str | None = None
            try:
                if scan:
                    raws: Iterable[Any] = self._conn.execute(self._scan, (after,))
                else:
                    # After a failure, one row at a time: the sqlite3 module steps
                    # one row ahead of what it returns, so the row just before a
                    # damaged one only comes out of a query that stops (LIMIT 1).
                    raws = self._conn.execute(self._probe_sql, (after + 1,)).fetchall()
                for raw in raws:
                    rowid = raw[0]
                    if not isinstance(rowid, int) or rowid <= after:
                        raise _OutOfOrder("rows out of order (damaged b-tree)")
                    after = rowid
                    values = raw[1:]
                    try:
                        row = tuple(_convert(c, v) for c, v in zip(self._cols, values, strict=True))
                    except _BadValue as bad:
                        after_key = self._key(values)
                        res.bad.append(BadRow(rowid, after_key, str(bad)))
                        self._close(gap, rowid, after_key)
                        gap = None
                        continue
                    after_key = self._key(row)
                    self._close(gap, rowid, after_key)
                    gap = None
                    res.recovered += 1
                    yield row
            except sqlite3.DatabaseError as exc:
                if not (is_corruption(exc) or isinstance(exc, _OutOfOrder)):
                    raise
                error = reason(exc)
            if error is None:
                if scan or after == MAX_ROWID:
                    break  # the scan reached the end
                scan = True  # the single row was read: scan on from it
                continue
            if scan:
                scan = False  # retry the next row alone
                continue
            # The next row cannot be read even alone: measure the gap.
            if gap is None:
                gap = (None if after == MIN_ROWID else after, after_key, error)
            found = self._next_readable(after)
            if found is None:
                break
            # (found == after + 1 only if the same seek fails and then works: skip it.)
            after = found - 1 if found > after + 1 else found
            scan = True
        self._close(gap, None, None)

    def _close(
        self,
        gap: tuple[int | None, tuple[Any, ...] | None, str] | None,
        rowid: int | None,
        key: tuple[Any, ...] | None,
    ) -> None:
        """Record a gap ending before ``rowid`` (None: at the end), unless it lost nothing."""
        if gap is not None:
            found = Gap(gap[0], rowid, gap[1], key, gap[2])
            if found.estimate != 0:
                self.result.gaps.append(found)

    def _probe(self, at: int) -> int | _Failed | None:
        """The rowid of the first row at or above ``at`` (None: there is none)."""
        try:
            row = self._conn.execute(self._probe_sql, (at,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            return _FAILED
        return None if row is None else int(row[0])

    def _next_readable(self, after: int) -> int | None:
        """The smallest rowid above ``after`` from which the table reads again (None: none)."""
        lo = max(after, 0)  # fmd's rows all have positive rowids
        step = 1
        while True:
            at = min(lo + step, MAX_ROWID)
            if not isinstance(self._probe(at), _Failed):
                break
            if at == MAX_ROWID:
                return None
            lo, step = at, step * 2
        hi = at  # probes fail at lo and succeed at hi: bisect the boundary
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if isinstance(self._probe(mid), _Failed):
                lo = mid
            else:
                hi = mid
        found = self._probe(hi)
        return found if isinstance(found, int) else None


def copy_tables(
    src: sqlite3.Connection, dst: sqlite3.Connection, tables: Sequence[Table]
) -> dict[str, TableRead]:
    """Copy every readable row of ``tables`` from ``src`` into the same (existing,
    empty) tables of ``dst``, values unchanged; return what was found per table.

    ``src`` is switched to return text as bytes and to tolerate a damaged
    schema (``writable_schema``, which also lets SQLite read a truncated file
    up to the point where it ends).  The caller holds ``dst``'s transaction.
    """
    src.text_factory = bytes
    with contextlib.suppress(sqlite3.DatabaseError):
        # (A file SQLite cannot parse at all: every table reports why below.)
        src.execute("PRAGMA writable_schema=ON")
    return {table.name: _copy_table(src, dst, table) for table in tables}


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT on a connection in autocommit mode (ROLLBACK on error)."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: Table) -> TableRead:
    reader = TolerantReader(src, table)
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    marks = ", ".join("?" for _ in table.columns)
    sql = f'INSERT OR IGNORE INTO "{table.name}" ({names}) VALUES ({marks})'
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        before = dst.total_changes
        dst.executemany(sql, batch)
        ignored = len(batch) - (dst.total_changes - before)
        reader.result.duplicates += ignored
        reader.result.recovered -= ignored
        batch.clear()

    try:
        for row in reader.rows():
            batch.append(row)
            if len(batch) >= _INSERT_BATCH:
                flush()
    except sqlite3.DatabaseError as exc:
        # Not damage (SQLite said something else, e.g. "no such table" in a
        # file written before the table existed): the table is reported unread.
        reader.result.error = reason(exc)
    if batch:
        flush()
    return reader.result


class ScratchCopy:
    """A temporary SQLite database holding the readable rows of some tables of a
    damaged one, for running the ordinary queries on what could be read.

    It is SQLite's private temporary database (file name ""): kept in memory
    while small, spilled to a file in the temporary directory that SQLite
    removes itself, even if the process is killed.
    """

    def __init__(self, source: Engine, tables: Sequence[Table]) -> None:
        conn = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self.engine: Engine = create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
        try:
            schema.metadata.create_all(self.engine, tables=list(tables))
            raw = source.raw_connection()
            try:
                src = raw.driver_connection
                assert isinstance(src, sqlite3.Connection)
                with _transaction(conn):
                    self.reads = copy_tables(src, conn, tables)
            finally:
                raw.close()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.engine.dispose()


# -- the start-up check --------------------------------------------------------


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _stamp_of(path: Path) -> dict[str, int]:
    st = path.stat()
    return {
        "version": _STAMP_VERSION,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _wal_pending(path: Path) -> bool:
    """Is there a write-ahead log or rollback journal with content beside ``path``?"""
    for suffix in ("-wal", "-journal"):
        try:
            if _sidecar(path, suffix).stat().st_size > 0:
                return True
        except FileNotFoundError:
            continue
    return False


def write_clean_stamp(path: Path) -> bool:
    """Record that ``path`` was closed cleanly (True), unless a WAL is left beside it."""
    try:
        if _wal_pending(path) or not path.is_file():
            return False
        stamp = _sidecar(path, STAMP_SUFFIX)
        tmp = _sidecar(path, STAMP_SUFFIX + ".new")
        tmp.unlink(missing_ok=True)
        with os.fdopen(_create_like(tmp, path.stat()), "wb") as f:
            f.write(orjson.dumps(_stamp_of(path)))
        tmp.replace(stamp)
    except OSError as exc:
        log.warning("store_stamp_failed", path=str(path), error=str(exc))
        return False
    return True


def _take_clean_stamp(path: Path) -> dict[str, Any] | None:
    """The stamp of the last clean close of ``path`` (None: none); it is used up."""
    stamp = _sidecar(path, STAMP_SUFFIX)
    try:
        saved = orjson.loads(stamp.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    finally:
        try:
            stamp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("store_stamp_failed", path=str(stamp), error=str(exc))
    return saved if isinstance(saved, dict) else None


def _create_like(path: Path, like: os.stat_result) -> int:
    """Create the new file ``path`` (never through a link) with the mode and group of
    ``like``; returns the descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    mode = stat.S_IMODE(like.st_mode) & _FILE_BITS
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        if os.fstat(fd).st_gid != like.st_gid:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1, like.st_gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _preread(path: Path) -> None:
    """Read the file once sequentially so quick_check finds it in the page cache."""
    try:
        with path.open("rb", buffering=0) as f:
            buf = bytearray(_PREREAD_CHUNK)
            while f.readinto(buf):
                pass
    except OSError:
        pass  # quick_check reports what matters


def _reading_uri(path: Path) -> str:
    """Read-only access for the daemon, which holds the root's lock: without a WAL
    to read, ``immutable`` also keeps SQLite from creating -wal and -shm files."""
    uri = f"file:{quote(str(path))}?mode=ro"
    return uri if _wal_pending(path) else uri + "&immutable=1"


def integrity_problem(path: Path) -> str | None:
    """Run SQLite's ``quick_check`` on ``path`` (read-only): None when it is sound,
    else what is wrong.  StoreError when the file cannot be checked for another
    reason (permissions, I/O, locks), which is not evidence of damage."""
    _preread(path)
    try:
        conn = sqlite3.connect(_reading_uri(path), uri=True, timeout=_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the fmd store {path} to check it: {exc}") from exc
    try:
        rows = conn.execute(f"PRAGMA quick_check({_QUICK_CHECK_PROBLEMS})").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            return reason(exc)
        raise StoreError(f"cannot check the fmd store {path}: {reason(exc)}") from exc
    finally:
        conn.close()
    problems = [str(r[0]) for r in rows]
    if problems == ["ok"]:
        return None
    return "quick_check: " + "; ".join(problems)


@dataclass(frozen=True, slots=True)
class MovedAside:
    """A corrupt database after it was renamed out of the way."""

    original: Path
    path: Path
    sidecars: tuple[Path, ...]
    problem: str
    when: datetime


def check_at_startup(path: Path) -> MovedAside | None:
    """Check the SQLite file the daemon is about to open; move it aside if damaged."""
    if not path.exists():
        _sidecar(path, STAMP_SUFFIX).unlink(missing_ok=True)
        return None
    stamp = _take_clean_stamp(path)
    current = _stamp_of(path)
    if stamp == current and not _wal_pending(path):
        log.info("store_check_skipped", path=str(path), reason="unchanged since a clean shutdown")
        return None
    started = time.monotonic()
    if stamp is not None and stamp.get("size", 0) > 0 and current["size"] == 0:
        # SQLite would take an empty file for a new database.
        problem: str | None = f"it is empty, but held {stamp['size']} bytes when fmd last stopped"
    else:
        problem = integrity_problem(path)
    seconds = round(time.monotonic() - started, 3)
    if problem is None:
        log.info("store_checked", path=str(path), seconds=seconds)
        return None
    log.error("store_corrupt", path=str(path), problem=problem, seconds=seconds)
    return move_aside(path, problem)


def move_aside(path: Path, problem: str, now: datetime | None = None) -> MovedAside:
    """Rename ``path`` and its sidecars to ``<name>.corrupt-<UTC time>``.

    The sidecars go first: a write-ahead log left beside a new, empty database
    would be replayed into it.
    """
    when = now or datetime.now(UTC)
    base = f"{path.name}{CORRUPT_INFIX}{when.strftime('%Y%m%dT%H%M%SZ')}"
    target = path.with_name(base)
    n = 0
    while target.exists() or target.with_name(target.name + REPORT_SUFFIX).exists():
        n += 1
        target = path.with_name(f"{base}.{n}")
    moved: list[Path] = []
    try:
        st = path.stat()
        for suffix in SIDECARS:
            side = _sidecar(path, suffix)
            if side.exists():
                side.rename(_sidecar(target, suffix))
                moved.append(_sidecar(target, suffix))
        path.rename(target)
        # The new database gets the old one's mode and group, which its -wal
        # and -shm then inherit from SQLite.
        os.close(_create_like(path, st))
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(
            f"the fmd store {path} is corrupt ({problem}) and could not be moved aside: "
            f"{exc}; move it away by hand and start fmd again"
        ) from exc
    log.warning("store_moved_aside", path=str(path), moved_to=str(target))
    return MovedAside(path, target, tuple(moved), problem, when)


# -- salvage into the new database ---------------------------------------------


@dataclass(slots=True)
class SalvageReport:
    """What a start-up salvage did: where the damaged file went, what each table
    gave back, and what was changed to keep the new database consistent."""

    original: Path
    moved: Path
    sidecars: tuple[Path, ...]
    problem: str
    when: datetime
    tables: dict[str, TableRead]
    adjustments: list[str] = field(default_factory=list)
    report_file: Path | None = None
    seconds: float = 0.0

    def _count(self, read: TableRead) -> str:
        noun = NOUNS.get(read.table, read.table)
        if read.error is not None:
            return f"no {noun} (the table could not be read)"
        lost = read.lost
        if lost is None:
            return f"{read.recovered} {noun} (an unknown number could not be read)"
        total = read.recovered + lost
        return f"{read.recovered} of {'about ' if lost else ''}{total} {noun}"

    def recovered_sentence(self) -> str:
        """What came back: the logs and the cases always, any other table that lost rows."""
        shown = [n for n, r in self.tables.items() if n in _SHOWN or r.lost != 0]
        text = "recovered " + ", ".join(self._count(self.tables[n]) for n in shown)
        if any(r.recovered for n, r in self.tables.items() if n not in shown):
            text += "; every other table was recovered in full"
        return text

    def warnings(self) -> list[str]:
        """One sentence per fact, for the operator."""
        moved = f"{self.moved}" + (
            f" (with {', '.join(p.name for p in self.sidecars)})" if self.sidecars else ""
        )
        out = [
            f"the database {self.original} was corrupt ({self.problem}); it was moved to "
            f"{moved} and a new database was created",
            self.recovered_sentence(),
        ]
        for name in _LOGS:
            read = self.tables.get(name)
            messages = read.messages(NOUNS[name]) if read is not None else []
            if messages:
                more = len(messages) - _SHOWN_GAPS
                out.append(
                    "; ".join(messages[:_SHOWN_GAPS])
                    + (f" (and {more} more, see the report)" if more > 0 else "")
                )
        out += self.adjustments
        if self.report_file is not None:
            out.append(f"the salvage report is in {self.report_file}")
        return out

    def log_fields(self) -> dict[str, Any]:
        """Structured fields for the ``store_salvaged`` event."""
        return {
            "path": str(self.original),
            "moved_to": str(self.moved),
            "problem": self.problem,
            "seconds": self.seconds,
            "recovered": {n: r.recovered for n, r in self.tables.items()},
            "lost": {n: r.lost for n, r in self.tables.items() if r.lost != 0},
            "adjustments": len(self.adjustments),
            "report": str(self.report_file) if self.report_file else None,
        }

    def text(self) -> str:
        """The report written next to the moved file."""
        lines = [
            "fmd salvage report",
            "",
            f"database:  {self.original}",
            f"moved to:  {self.moved}",
            *(f"           {p}" for p in self.sidecars),
            f"problem:   {self.problem}",
            f"time:      {self.when.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            f"duration:  {self.seconds:.3f} s",
            "",
            f"{'table':<14} {'recovered':>10} {'lost':>10} {'dropped':>8}",
        ]
        for name, r in self.tables.items():
            lost = "?" if r.lost is None else str(r.lost)
            lines.append(f"{name:<14} {r.recovered:>10} {lost:>10} {r.dropped:>8}")
        lines += ["", "lost (lost counts are estimates from the id or rowid range):"]
        details = [f"  {name}: {m}" for name, r in self.tables.items() for m in r.messages("rows")]
        lines += details or ["  nothing"]
        lines += ["", "changed to keep the new database consistent:"]
        lines += [f"  {a}" for a in self.adjustments] or ["  nothing"]
        return "\n".join(lines) + "\n"


def recover(moved: MovedAside, engine: Engine) -> SalvageReport:
    """Copy what is readable of ``moved`` into the new, migrated database of
    ``engine``, make it consistent, and write the text report beside the file."""
    started = time.monotonic()
    raw = engine.raw_connection()
    try:
        dst = raw.driver_connection
        assert isinstance(dst, sqlite3.Connection)
        try:
            src = sqlite3.connect(_reading_uri(moved.path), uri=True, timeout=_TIMEOUT_S)
        except sqlite3.Error as exc:
            src = None
            failed = reason(exc)
        # One transaction: fmd dying part-way leaves the new database empty
        # (README: how to run the salvage again).
        with _transaction(dst):
            # The migrations seeded the frontier rows; the salvaged ones replace
            # them (and are then recomputed).
            dst.execute("DELETE FROM log_frontier")
            if src is None:
                reads = {t.name: TableRead(t.name, error=failed) for t in SALVAGE_TABLES}
            else:
                try:
                    reads = copy_tables(src, dst, SALVAGE_TABLES)
                finally:
                    src.close()
            adjustments = _make_consistent(dst, reads)
    finally:
        raw.close()
    report = SalvageReport(
        original=moved.original,
        moved=moved.path,
        sidecars=moved.sidecars,
        problem=moved.problem,
        when=moved.when,
        tables=reads,
        adjustments=adjustments,
        seconds=round(time.monotonic() - started, 3),
    )
    target = moved.path.with_name(moved.path.name + REPORT_SUFFIX)
    try:
        with os.fdopen(_create_like(target, moved.path.stat()), "w") as f:
            f.write(report.text())
        report.report_file = target
    except OSError as exc:
        log.warning("store_salvage_report_failed", path=str(target), error=str(exc))
    for name, read in reads.items():
        if read.damaged or read.dropped:
            log.warning(
                "store_salvage_table",
                table=name,
                recovered=read.recovered,
                lost=read.lost,
                dropped=read.dropped,
                problems=read.messages("rows")[:5],
            )
    return report


def _scalar(dst: sqlite3.Connection, sql: str, *args: Any) -> int | None:
    row = dst.execute(sql, args).fetchone()
    return int(row[0]) if row is not None and isinstance(row[0], int) else None


def _make_consistent(dst: sqlite3.Connection, reads: dict[str, TableRead]) -> list[str]:
    """Apply the rules in the module docstring; return one sentence per change."""
    out: list[str] = []
    top = {log: _scalar(dst, f"SELECT max(id) FROM {log}") or 0 for log in _LOGS}

    # Bound the tail estimates of the logs by ids known to have existed.
    hints = {log: _known_ids(dst, log) for log in _LOGS}
    for log in _LOGS:
        read = reads.get(log)
        if read is not None and read.gaps and read.gaps[-1].before_rowid is None:
            hint = hints[log]
            if hint is not None and hint > top[log]:
                last = read.gaps[-1]
                read.gaps[-1] = Gap(
                    last.after_rowid, None, last.after_key, None, last.error, tail_hint=hint
                )

    for child in ("suspects", "case_events"):
        n = dst.execute(f"DELETE FROM {child} WHERE uuid NOT IN (SELECT uuid FROM cases)").rowcount
        if n > 0:
            reads[child].dropped += n
            out.append(f"{n} {NOUNS[child]} of cases that were lost were dropped")

    n = dst.execute("DELETE FROM case_events WHERE event_id > ?", (top["errlog"],)).rowcount
    if n > 0:
        reads["case_events"].dropped += n
        out.append(
            f"{n} {NOUNS['case_events']} to error-log events above id {top['errlog']} "
            "(lost, and the id will be used again) were dropped"
        )

    refs, bad = 0, 0
    for module, name, data in dst.execute("SELECT module, name, data FROM serd_engines").fetchall():
        record = _serd_record(data)
        if record is None:
            dst.execute("DELETE FROM serd_engines WHERE module = ? AND name = ?", (module, name))
            bad += 1
            continue
        kept = [e for e in record["events"] if e[0] <= top["errlog"]]
        if len(kept) != len(record["events"]):
            refs += len(record["events"]) - len(kept)
            record["events"] = kept
            dst.execute(
                "UPDATE serd_engines SET data = ? WHERE module = ? AND name = ?",
                (orjson.dumps(record).decode(), module, name),
            )
    if bad:
        reads["serd_engines"].dropped += bad
        out.append(f"{bad} SERD engines whose saved record was damaged were dropped")
    if refs:
        out.append(
            f"{refs} events held by SERD engines (error-log ids above {top['errlog']}, "
            "which were lost) were removed from the engines"
        )

    for module, data in dst.execute("SELECT module, data FROM checkpoints").fetchall():
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue  # the daemon reports it and starts the module afresh
        seen = doc.get("last_seen") if isinstance(doc, dict) else None
        if not isinstance(seen, dict):
            continue
        changed = []
        for log in _LOGS:
            value = seen.get(log)
            if isinstance(value, int) and value > top[log]:
                seen[log] = top[log]
                changed.append(f"{log} from id {value} to {top[log]}")
        if changed:
            dst.execute(
                "UPDATE checkpoints SET data = ? WHERE module = ?",
                (orjson.dumps(doc).decode(), module),
            )
            out.append(
                f"module {module}'s checkpoint was rewound to the last recovered event "
                f"({', '.join(changed)})"
            )

    for log in _LOGS:
        first_open = _scalar(dst, f"SELECT min(id) FROM {log} WHERE committed = 0")
        computed = first_open - 1 if first_open is not None else top[log]
        saved = _scalar(dst, "SELECT committed_upto FROM log_frontier WHERE log = ?", log)
        upto = computed if saved is None else min(saved, computed)
        dst.execute(
            "INSERT INTO log_frontier (log, committed_upto) VALUES (?, ?) "
            "ON CONFLICT (log) DO UPDATE SET committed_upto = excluded.committed_upto",
            (log, upto),
        )
        if saved is not None and saved != upto:
            out.append(f"the {log} commit frontier was lowered from id {saved} to {upto}")
    return out


def _known_ids(dst: sqlite3.Connection, log: str) -> int | None:
    """The largest id of ``log`` some recovered row says existed."""
    found = [_scalar(dst, "SELECT committed_upto FROM log_frontier WHERE log = ?", log)]
    for (data,) in dst.execute("SELECT data FROM checkpoints").fetchall():
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        seen = doc.get("last_seen") if isinstance(doc, dict) else None
        if isinstance(seen, dict) and isinstance(seen.get(log), int):
            found.append(int(seen[log]))
    if log == "errlog":
        found.append(_scalar(dst, "SELECT max(event_id) FROM case_events"))
    values = [v for v in found if v is not None]
    return max(values) if values else None


def _serd_record(data: str) -> dict[str, Any] | None:
    """A saved SERD engine as a dict whose ``events`` are [id, time] pairs, or None."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("events", []), list):
        return None
    events = record.get("events", [])
    ok = all(isinstance(e, list) and len(e) == 2 and all(type(x) is int for x in e) for e in events)
    if not ok:
        return None
    record["events"] = events
    return record
