"""Log rotation: moving the settled part of ``errlog`` or ``fltlog`` into an archive file.

``fmadm rotate errlog|fltlog`` makes the daemon call :func:`rotate_log` on the
writer thread inside a write transaction.  The steps, in order::

    1. select the rows that may leave the live log (see below), in id batches
    2. write them to <log_dir>/<log>.0.new, an SQLite file with the same table
       (and its indexes) plus a one-row ``log_header``; commit and fsync it
    3. shift <log>.N -> <log>.N+1 (the oldest, <log>.keep-1, is deleted),
       rename <log>.0.new -> <log>.0, fsync the directory
    4. delete the moved rows from the live table (the caller commits)

Which rows move:

* ``errlog``: committed (id at or below the log's commit frontier), not an
  event of a case that is still open (state below RESOLVED), not held by a
  saved SERD engine, and not in the caller's ``keep_ids`` (events the daemon
  still holds in memory, e.g. in a module's queue).
* ``fltlog``: committed, and the record's case is RESOLVED or no longer in
  ``cases``.  Every list event of an open case stays in the live log, so the
  live log alone always holds the whole history of every open case.

The archive is always SQLite, whatever the live store is.  Because the archive
is made durable before the live delete commits, a transaction that later rolls
back leaves the same rows in both places; fmdump therefore de-duplicates by id
when it reads archives together with the live log.  When nothing can move no
file is written and no archive is shifted.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
)
from sqlalchemy.pool import NullPool

from fmd.errors import StoreError
from fmd.secure import STATE_FILE_MODE, open_file
from fmd.store import queries, schema

__all__ = ["ARCHIVE_VERSION", "LABELS", "RotateResult", "archive_metadata", "rotate_log"]

ARCHIVE_VERSION = 1
# The illumos log labels, recorded in the archive so fmdump knows which log it holds.
LABELS = {"errlog": "error", "fltlog": "fault"}
_BATCH = 2000


@dataclass(frozen=True)
class RotateResult:
    """What one rotation did."""

    log_name: str
    moved: int  # rows written to the archive and deleted from the live table
    path: Path | None  # the new ``<log>.0``, or None when nothing moved
    shifted: int  # older archives renamed to the next number


def archive_metadata(log_name: str) -> tuple[MetaData, Table, Table]:
    """The tables of an archive file: the log's own table and ``log_header``."""
    md = MetaData()
    table = (schema.errlog if log_name == "errlog" else schema.fltlog).to_metadata(md)
    header = Table(
        "log_header",
        md,
        Column("label", String(16), nullable=False),
        Column("version", BigInteger, nullable=False),
        Column("hostname", Text, nullable=False),
        Column("created_ns", BigInteger, nullable=False),
        Column("source_url", Text, nullable=False),
    )
    return md, table, header


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate_log(
    conn: Connection,
    log_name: str,
    log_dir: Path,
    *,
    now_ns: int,
    keep: int = 10,
    keep_ids: frozenset[int] | set[int] = frozenset(),
    gid: int | None = None,
) -> RotateResult:
    """Move the settled rows of ``log_name`` ("errlog" or "fltlog") from the live
    table to ``<log_dir>/<log_name>.0``, keeping at most ``keep`` archives.

    The archive is created 0640 (group ``gid`` when given) before SQLite opens
    it, whatever the umask: it holds hardware and address details.

    ``conn`` must be inside the caller's write transaction; the deletes from
    the live table commit (or roll back) with it.
    """
    if log_name not in LABELS:
        raise StoreError(f"cannot rotate {log_name!r}: only errlog and fltlog are rotated")
    if keep < 1:
        raise StoreError(f"log rotation must keep at least one archive, not {keep}")
    upto = queries.frontier(conn, log_name)
    held = queries.serd_event_ids(conn) | set(keep_ids) if log_name == "errlog" else set()
    select_rows = queries.rotatable_errlog if log_name == "errlog" else queries.rotatable_fltlog

    log_dir.mkdir(parents=True, exist_ok=True)
    tmp = log_dir / f"{log_name}.0.new"
    tmp.unlink(missing_ok=True)
    os.close(open_file(tmp, os.O_RDWR | os.O_EXCL, STATE_FILE_MODE, gid))
    md, table, header = archive_metadata(log_name)
    engine = create_engine(f"sqlite:///{tmp}", poolclass=NullPool)
    moved: list[int] = []
    try:
        with engine.begin() as out:
            out.exec_driver_sql("PRAGMA synchronous=FULL")
            md.create_all(out)
            out.execute(
                insert(header).values(
                    label=LABELS[log_name],
                    version=ARCHIVE_VERSION,
                    hostname=socket.gethostname(),
                    created_ns=now_ns,
                    source_url=conn.engine.url.render_as_string(hide_password=True),
                )
            )
            after = 0
            while True:
                rows = select_rows(conn, upto, after, _BATCH)
                if not rows:
                    break
                after = int(rows[-1].id)
                batch = [dict(r._mapping) for r in rows if r.id not in held]
                if batch:
                    out.execute(insert(table), batch)
                    moved.extend(int(r["id"]) for r in batch)
    finally:
        engine.dispose()
    if not moved:
        tmp.unlink(missing_ok=True)
        return RotateResult(log_name, 0, None, 0)
    _fsync_path(tmp)

    shifted = 0
    (log_dir / f"{log_name}.{keep - 1}").unlink(missing_ok=True)
    for n in range(keep - 2, -1, -1):
        src = log_dir / f"{log_name}.{n}"
        if src.exists():
            src.rename(log_dir / f"{log_name}.{n + 1}")
            shifted += 1
    final = log_dir / f"{log_name}.0"
    tmp.rename(final)
    _fsync_path(log_dir)

    queries.delete_ids(conn, log_name, moved)
    return RotateResult(log_name, len(moved), final, shifted)
