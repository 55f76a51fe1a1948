"""rasdaemon's database as a source: followed while rasdaemon runs, or imported once.

:class:`RasdaemonSource` reads the rows rasdaemon recorded
(:mod:`fmd.hw.rasdaemon`: ``mce_record``, ``mc_event``,
``memory_failure_event``, ``aer_event``) in id order, table by table, and
stores them with their original times.  Two uses share it:

* **Following** (a ``setprop`` the daemon wires): polled every ``poll``
  seconds for rows rasdaemon added since the last read.
* **Importing once** (``fminject --format rasdaemon FILE``, the control request
  ``import.rasdaemon``, :func:`import_database`): the daemon runs the same
  reader over the file to its end and answers how many rows it imported, had
  imported before, and rejected.  This is how a rasdaemon user moves to fmd
  without losing history.

Restart safety and "re-running adds nothing": the position is committed in
the same transaction as the events of each batch (at most
:data:`BATCH_ROWS` rows)::

    Position(ident = the database's path (a digest when longer than 128 characters),
             offset = 0,
             data = {"last_id": {table: id}, "last_timestamp": {table: text}})

and it lives in fmd's store under the source's name, ``rasdaemon:<path>``
(:func:`source_name`).  A second import of the same file, whether the daemon
restarted or was SIGKILLed in between, starts after the last committed row of
each table and adds nothing; an import killed half-way resumes where its last
batch committed.  The follower and the import use the same name for the same
path, so importing a file fmd already follows adds nothing either (the request
is refused while the follower runs, so the two never read it at once), and
imports are serialised.

A database is known by its path: a copy of it at another path is another
database.  The per-table timestamps tell a file *replaced* at the same path
(a new rasdaemon database, or a restored one) from the one imported: when the
last imported row of a table is gone (and the table does not go beyond it) or
has another timestamp, that table is read again from its start.  A row deleted
below the newest one changes nothing.

Bad rows are counted under their reason (``fmstat -t``), logged once per
window, and passed over.  A database rasdaemon holds locked for longer than
the busy timeout is read at the next poll (counted as "database busy"); a
missing file, a file that is not a rasdaemon database, or one whose tables
all lack columns fmd needs makes the source unavailable with that reason.
Reads are read-only and short (one bounded SELECT by primary key at a time),
so the moments in which rasdaemon, which does not wait for a lock, could find
its database busy last milliseconds per poll.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
import structlog

from fmd.errors import TransportError
from fmd.hw.rasdaemon import (
    BUSY_TIMEOUT_S,
    DEFAULT_PATH,
    TABLE_NAMES,
    DatabaseBusy,
    RasdaemonDb,
)
from fmd.store import Store, queries
from fmd.xprt import Ingest
from fmd.xprts.source import Batch, Position, Source

log = structlog.get_logger("fmd.xprt.rasdaemon")

BATCH_ROWS: Final = 500
DEFAULT_POLL_S: Final = 10.0
NAME_PREFIX: Final = "rasdaemon:"
IMPORT_KIND: Final = "rasdaemon-import"
_MAX_IDENT: Final = 128
_DIGEST_CHARS: Final = 40
_BUSY: Final = "database busy"
_REPLACED: Final = "database replaced"
# Reasons a one-shot import lists (the rest are counted).
_SHOWN_REASONS: Final = 20

# One import at a time: two at once would both start from the same committed
# position and store the same rows twice.
_IMPORTS: Final = threading.Lock()

# table -> (last id read, its timestamp text)
Marks = dict[str, tuple[int, str | None]]


def source_name(path: Path) -> str:
    """The transport name (and position key) of the database at ``path``."""
    return NAME_PREFIX + str(path)


def database_ident(path: Path) -> str:
    """The position identity of the database at ``path`` (at most 128 characters)."""
    text = str(path)
    if len(text) <= _MAX_IDENT:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]


def _committed_marks(position: Position | None) -> Marks:
    """The per-table marks of a committed position (empty when none or unreadable)."""
    doc = position.document() if position is not None else None
    if not isinstance(doc, dict):
        return {}
    ids = doc.get("last_id")
    stamps = doc.get("last_timestamp")
    if not isinstance(ids, dict):
        return {}
    stamps = stamps if isinstance(stamps, dict) else {}
    marks: Marks = {}
    for table, last in ids.items():
        if isinstance(table, str) and type(last) is int and last >= 0:
            stamp = stamps.get(table)
            marks[table] = (last, stamp if isinstance(stamp, str) else None)
    return marks


class RasdaemonSource(Source):
    """Reads a rasdaemon database's new rows; see the module docstring."""

    kind: ClassVar[str] = "rasdaemon"

    def __init__(
        self,
        ingest: Ingest,
        name: str,
        start: Position | None,
        *,
        path: Path = DEFAULT_PATH,
        poll: float = DEFAULT_POLL_S,
        batch_rows: int = BATCH_ROWS,
        timeout: float = BUSY_TIMEOUT_S,
    ) -> None:
        super().__init__(ingest, name, start, poll=poll)
        # The follower owns its name even when an import registered it first
        # (import_database refuses a database a follower reads).
        self.stats.kind = self.kind
        self.path = path
        self.batch_rows = batch_rows
        self.timeout = timeout
        self.ident = database_ident(path)
        self._problems: tuple[str, ...] = ()

    # -- Source -----------------------------------------------------------------
    def probe(self) -> str | None:
        try:
            with RasdaemonDb.open(self.path, timeout=self.timeout) as db:
                self._note_problems(db)
        except DatabaseBusy:
            return None  # there; read at the next poll
        except TransportError as exc:
            return str(exc)
        return None

    def read(self) -> Iterator[Batch]:
        try:
            db = RasdaemonDb.open(self.path, timeout=self.timeout)
        except DatabaseBusy:
            self._busy()
            return
        with db:
            self._note_problems(db)
            try:
                yield from self.batches(db)
            except DatabaseBusy:
                self._busy()

    # -- reading ----------------------------------------------------------------
    def batches(self, db: RasdaemonDb, marks: Marks | None = None) -> Iterator[Batch]:
        """Batches of the rows after ``marks`` (default: where :meth:`resume` says)."""
        marks = dict(self.resume(db) if marks is None else marks)
        platform = self.ingest.platform
        for table in TABLE_NAMES:
            if table not in db.tables:
                continue
            after = marks.get(table, (0, None))[0]
            while not self.stopping:
                rows = db.rows(table, after, self.batch_rows, platform)
                if not rows:
                    break
                items = []
                for row in rows:
                    if row.item is not None:
                        items.append(row.item)
                    else:
                        self.reject(row.reason or "unreadable row", where=f"{table} id {row.id}")
                after = rows[-1].id
                marks[table] = (after, rows[-1].timestamp)
                yield Batch(items, self._position(marks))
                if len(rows) < self.batch_rows:
                    break

    def resume(self, db: RasdaemonDb) -> Marks:
        """Where each table resumes: after its committed row, or at its start if replaced."""
        marks = _committed_marks(self.position)
        for table in db.tables:
            last, stamp = marks.get(table, (0, None))
            if last == 0:
                continue
            exists, now = db.stamp_of(table, last)
            if exists and (stamp is None or now == stamp):
                continue
            if not exists and db.last_id(table) > last:
                continue  # that row was deleted; the rows after it are new
            self.stats.reasons[_REPLACED] = self.stats.reasons.get(_REPLACED, 0) + 1
            log.warning(
                "rasdaemon_table_replaced",
                source=self.name,
                table=table,
                last_id=last,
                reason="row gone" if not exists else "row changed",
            )
            marks[table] = (0, None)
        return marks

    def _position(self, marks: Marks) -> Position:
        doc = {
            "last_id": {t: m[0] for t, m in sorted(marks.items())},
            "last_timestamp": {t: m[1] for t, m in sorted(marks.items())},
        }
        return Position(self.ident, 0, orjson.dumps(doc).decode())

    def _busy(self) -> None:
        self.stats.reasons[_BUSY] = self.stats.reasons.get(_BUSY, 0) + 1

    def _note_problems(self, db: RasdaemonDb) -> None:
        problems = tuple(db.problems)
        if problems != self._problems:
            self._problems = problems
            if problems:
                log.info("rasdaemon_tables_skipped", source=self.name, problems=list(problems))

    # -- one-shot import ------------------------------------------------------------
    def import_all(self) -> dict[str, Any]:
        """Store every row after the committed position, then say what was done."""
        st = self.stats
        before = (st.accepted, st.rejected, st.duplicates, dict(st.reasons))
        with RasdaemonDb.open(self.path, timeout=self.timeout) as db:
            committed = _committed_marks(self.position)
            marks = self.resume(db)
            replaced = sorted(
                t for t in db.tables if committed.get(t, (0, None))[0] > 0 and marks[t][0] == 0
            )
            rows = sum(db.count(t) for t in db.tables)
            already = sum(db.count(t, through=marks.get(t, (0, None))[0]) for t in db.tables)
            for batch in self.batches(db, marks):
                refusal = self.ingest.health.refusal()
                if refusal is not None:
                    raise TransportError(
                        f"fmd's store takes no new events ({refusal}); the import stopped "
                        "and resumes where it stopped when run again"
                    )
                if not self._store(batch):
                    raise TransportError(
                        "fmd is stopping; the import resumes where it stopped when run again"
                    )
            problems = list(db.problems)
        # Why rows were rejected (the replaced tables are reported by name).
        reasons = {
            k: v - before[3].get(k, 0)
            for k, v in st.reasons.items()
            if v > before[3].get(k, 0) and k != _REPLACED
        }
        shown = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:_SHOWN_REASONS])
        return {
            "path": str(self.path),
            "name": self.name,
            "rows": rows,
            "already_imported": already,
            "imported": st.accepted - before[0],
            "rejected": st.rejected - before[1],
            "duplicates": st.duplicates - before[2],
            "reasons": shown,
            "problems": problems,
            "replaced_tables": replaced,
        }


class _OneShotImport(RasdaemonSource):
    """A RasdaemonSource run once by a control request (never started as a thread)."""

    kind: ClassVar[str] = IMPORT_KIND

    def __init__(self, ingest: Ingest, name: str, start: Position | None, *, path: Path) -> None:
        existing = ingest.transports.get(name)
        super().__init__(ingest, name, start, path=path)
        if existing is not None:
            # Keep the kind of a transport already known by this name.
            self.stats.kind = existing.kind


def import_database(ingest: Ingest, store: Store, path: Path) -> dict[str, Any]:
    """Import the rasdaemon database at ``path`` once, after what was imported before.

    Raises :class:`~fmd.errors.TransportError` when the file cannot be read
    (missing, not a rasdaemon database, locked), when fmd follows that file
    already, or when the store stops taking events.
    """
    path = Path(os.path.abspath(path))
    name = source_name(path)
    with _IMPORTS:
        existing = ingest.transports.get(name)
        if existing is not None and existing.kind == RasdaemonSource.kind:
            raise TransportError(
                f"fmd follows {path} already (source {name}); its rows are stored as they come"
            )
        with store.reader() as conn:
            found = queries.load_positions(conn).get(name)
        start = Position(*found) if found is not None else None
        run = _OneShotImport(ingest, name, start, path=path)
        result = run.import_all()
    log.info(
        "rasdaemon_imported",
        source=name,
        rows=result["rows"],
        imported=result["imported"],
        already=result["already_imported"],
        rejected=result["rejected"],
    )
    return result
