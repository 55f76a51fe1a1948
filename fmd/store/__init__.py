"""The only code that touches the database.

:class:`Store` opens the database named by ``store.url`` (SQLite under the
root by default), applies migrations, and hands out the single
:class:`~fmd.store.writer.Writer` and read-only connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from fmd.errors import StoreError
from fmd.store import migrations, queries, schema
from fmd.store.engine import create_store_engine, is_sqlite, resolve_url
from fmd.store.wal import WalCheckpointer
from fmd.store.writer import WriteOp, Writer, WriteTxn

__all__ = [
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
        self, url: str, *, db_file: Path, sync: str = "full", readonly: bool = False
    ) -> None:
        self.url = resolve_url(url, db_file)
        self.readonly = readonly
        self.sqlite = is_sqlite(self.url)
        self.engine: Engine = create_store_engine(self.url, sync=sync, readonly=readonly)
        self._wal: WalCheckpointer | None = None
        try:
            if readonly:
                with self.engine.connect() as conn:
                    if not migrations.applied(conn):
                        raise StoreError(f"{self.url} holds no fmd logs yet")
            else:
                migrations.migrate(self.engine, time.time_ns())
        except SQLAlchemyError as exc:
            self.engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise StoreError(
                f"cannot open the fmd store {self.safe_url}: {reason[0] if reason else exc}"
            ) from exc
        except BaseException:
            self.engine.dispose()
            raise

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
            self._wal = WalCheckpointer(self.engine)
            self._wal.start()
        return Writer(self.engine, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._wal is not None:
            self._wal.stop()
            self._wal = None
        self.engine.dispose()
