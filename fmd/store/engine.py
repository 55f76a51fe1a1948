"""Opening the database: URL resolution, SQLite pragmas, migrations on open.

SQLite runs in WAL mode so that readers (fmdump, fmadm) never block the single
writer; ``store.sync`` picks the ``synchronous`` level (``full`` fsyncs every
group commit, so an acknowledged event survives power loss).  PostgreSQL is
used when ``store.url`` names it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from fmd.errors import StoreError

_SYNC_LEVELS = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}


def resolve_url(url: str, db_file: Path) -> str:
    """The SQLAlchemy URL for ``store.url`` (empty means SQLite at ``db_file``)."""
    if url:
        return url
    return f"sqlite:///{db_file}"


def is_sqlite(url: str) -> bool:
    """True when ``url`` names an SQLite database."""
    return url.startswith("sqlite")


def create_store_engine(url: str, *, sync: str = "full", readonly: bool = False) -> Engine:
    """Create an engine for ``url`` with fmd's connection settings.

    ``readonly`` opens SQLite with ``mode=ro`` so a reader can never modify the
    logs, and fails cleanly when the database does not exist.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"store.url {url!r} is not a database URL: {exc}") from exc
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
        except (ImportError, SQLAlchemyError) as exc:
            raise StoreError(f"cannot use store.url {url!r}: {exc}") from exc
    database = parsed.database or ""
    if database in ("", ":memory:"):
        raise StoreError("store.url must name an SQLite file, not an in-memory database")
    path = Path(database)
    if readonly:
        if not path.exists():
            raise StoreError(f"no fmd database at {path} (has fmd ever run with this root?)")

        def connect_ro() -> sqlite3.Connection:
            return sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30
            )

        engine = create_engine("sqlite://", creator=connect_ro, poolclass=NullPool)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool,
        )
    level = _SYNC_LEVELS.get(sync, "FULL")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # The sqlite3 module's own transaction handling is disabled so that
        # SQLAlchemy's BEGIN/COMMIT are the only ones issued.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
            # The WAL is copied back into the database by fmd.store.wal's own
            # thread, not inside the writer's commits (see WalCheckpointer).
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.execute(f"PRAGMA synchronous={level}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def table_names(engine: Engine) -> set[str]:
    """Names of the tables present (for diagnostics and tests)."""
    return set(inspect(engine).get_table_names())
