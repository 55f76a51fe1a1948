"""Reading what is still readable out of a damaged SQLite file.

This module owns two things, used by the start-up salvage
(:mod:`fmd.store.salvage`) and by ``fmdump``:

* **What counts as damage.** :func:`is_corruption` accepts only SQLite's own
  verdicts (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) and text that is not UTF-8;
  a busy, locked, unreadable or failing disk is never mistaken for a corrupt
  file, and neither is a write-ahead log left by a crash.
* **Tolerant reading** (:class:`TolerantReader`, :func:`copy_tables`,
  :class:`ScratchCopy`): one table at a time in rowid order.  When SQLite
  raises, a seek search (doubling steps, then bisection) finds the first rowid
  from which the table reads again; the rows in between are a :class:`Gap`.
  Every value is checked against the column's type, and a row that does not
  fit is a :class:`BadRow`.  ``fmdump`` runs its ordinary queries on a
  :class:`ScratchCopy` when its query on a damaged file raises.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, Engine, String, Table, create_engine
from sqlalchemy.pool import StaticPool

from fmd.store import schema

__all__ = [
    "BadRow",
    "Gap",
    "ScratchCopy",
    "TableRead",
    "TolerantReader",
    "copy_tables",
    "is_corruption",
    "reason",
    "transaction",
]

# SQLite primary result codes (the low byte of an extended code).
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
_PRIMARY_CODE = 0xFF
# Raised by Python's sqlite3 module itself when a TEXT value is not UTF-8.
_UNDECODABLE = "Could not decode to UTF-8"

MIN_ROWID = -(1 << 63)
MAX_ROWID = (1 << 63) - 1
_INSERT_BATCH = 500


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


def _selected(conn: sqlite3.Connection, table: Table) -> list[str]:
    """What to select for each column: the column, or its default when the file
    was written before the column existed (an older fmd's database)."""
    try:
        have = {str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table.name}")')}
    except sqlite3.DatabaseError:
        have = set()
    out = []
    for c in table.columns:
        default = getattr(c.server_default, "arg", None)
        if have and c.name not in have and isinstance(default, str):
            out.append(f'{default} AS "{c.name}"')
        else:
            out.append(f'"{c.name}"')
    return out


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
        names = ", ".join(_selected(conn, table))
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
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
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
                with transaction(conn):
                    self.reads = copy_tables(src, conn, tables)
            finally:
                raw.close()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.engine.dispose()
