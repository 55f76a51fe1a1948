"""The only code that touches the database.

:class:`Store` opens the database named by ``store.url`` (SQLite under the
root by default), applies migrations, and hands out the single
:class:`~fmd.store.writer.Writer` and read-only connections.

An SQLite file opened read-write (by the daemon) is checked first and, when
damaged, moved aside and salvaged into a new one (:mod:`fmd.store.salvage`);
:attr:`Store.salvage` then says what was recovered.  Closing it cleanly
leaves a stamp that lets the next start-up skip the check while the file is
unchanged.  PostgreSQL is opened as it is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from fmd.errors import StoreCorrupt, StoreError
from fmd.store import migrations, queries, schema
from fmd.store.engine import create_store_engine, is_sqlite, resolve_url, sqlite_file
from fmd.store.health import StoreHealth
from fmd.store.salvage import (
    MovedAside,
    SalvageReport,
    check_at_startup,
    move_aside,
    recover,
    write_clean_stamp,
)
from fmd.store.tolerant import is_corruption, reason
from fmd.store.wal import WalCheckpointer
from fmd.store.writer import Op, Progress, Published, WriteOp, Writer, WriteTxn

__all__ = [
    "Op",
    "Progress",
    "Published",
    "SalvageReport",
    "Store",
    "WriteOp",
    "WriteTxn",
    "Writer",
    "queries",
    "schema",
]


class Store:
    """A database opened for fmd: migrations applied unless read-only."""

    def __init__(
        self,
        url: str,
        *,
        db_file: Path,
        sync: str = "full",
        readonly: bool = False,
        pid_file: Path | None = None,
    ) -> None:
        self.url = resolve_url(url, db_file)
        self.readonly = readonly
        self.sqlite = is_sqlite(self.url)
        # The SQLite file (None for PostgreSQL).
        self.path: Path | None = sqlite_file(self.url) if self.sqlite else None
        # Set when a damaged SQLite file was moved aside and salvaged on open.
        self.salvage: SalvageReport | None = None
        self._wal: WalCheckpointer | None = None
        self._stamp_on_close = False
        checked = self.path is not None and not readonly
        moved = check_at_startup(self.path) if checked and self.path is not None else None
        self.engine: Engine = create_store_engine(
            self.url, sync=sync, readonly=readonly, pid_file=pid_file
        )
        try:
            if readonly:
                with self.engine.connect() as conn:
                    if not migrations.applied(conn):
                        raise StoreError(f"{self.url} holds no fmd logs yet")
            else:
                self._migrate(moved, sync)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            cls = StoreCorrupt if is_corruption(exc) else StoreError
            raise cls(f"cannot open the fmd store {self.safe_url}: {reason(exc)}") from exc
        except BaseException:
            self.engine.dispose()
            raise
        self._stamp_on_close = checked

    def _migrate(self, moved: MovedAside | None, sync: str) -> None:
        """Apply migrations; salvage a file moved aside into the new database.

        A file that passed (or skipped) the check but that SQLite still finds
        damaged is moved aside here and salvaged the same way.
        """
        try:
            migrations.migrate(self.engine, time.time_ns())
        except SQLAlchemyError as exc:
            if moved is not None or self.path is None or not is_corruption(exc):
                raise
            self.engine.dispose()
            moved = move_aside(self.path, reason(exc))
            self.engine = create_store_engine(self.url, sync=sync)
            migrations.migrate(self.engine, time.time_ns())
        if moved is not None:
            self.salvage = recover(moved, self.engine)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A connection for reads; on SQLite it never blocks the writer (WAL)."""
        with self.engine.connect() as conn:
            yield conn

    def writer(self, **kwargs: object) -> Writer:
        """The single writer; on SQLite it also starts the WAL checkpointer."""
        if self.sqlite and not self.readonly and self._wal is None:
            health = kwargs.get("health")
            wal = None if self.path is None else self.path.with_name(self.path.name + "-wal")
            self._wal = WalCheckpointer(
                self.engine,
                wal_path=wal,
                # Short of space: give the log's space back at once.
                urgent=health.short_of_space if isinstance(health, StoreHealth) else None,
            )
            self._wal.start()
        return Writer(self.engine, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._wal is not None:
            self._wal.stop()
            self._wal = None
        self.engine.dispose()
        if self._stamp_on_close and self.path is not None:
            # Only once every connection is gone: SQLite has then copied the
            # WAL into the file and removed it (else no stamp is written).
            write_clean_stamp(self.path)
            self._stamp_on_close = False
