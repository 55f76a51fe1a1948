"""Opening the database: URL resolution, SQLite pragmas, migrations on open.

SQLite runs in WAL mode so that readers (fmdump, fmadm) never block the single
writer; ``store.sync`` picks the ``synchronous`` level (``full`` fsyncs every
group commit, so an acknowledged event survives power loss).  PostgreSQL is
used when ``store.url`` names it.

Readers open SQLite with ``mode=ro``, so they can never change the logs.  A
WAL-mode database needs its ``-shm`` index even to be read; when the reader
cannot create it (a directory it may not write, read-only media) SQLite says
"attempt to write a readonly database" or "unable to open database file".
Then, and only when nothing can be changing the file — no ``-wal`` with
content beside it, and no daemon holding the lock on ``fmd.pid`` — the file is
opened ``immutable=1``, which reads it without locks or an index.  Otherwise
the reader is told which file is in the way and what to do.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from fmd.errors import StoreError

# The WAL size kept after a complete checkpoint (see fmd.store.wal for truncation).
WAL_KEEP_BYTES = 16 << 20

_SYNC_LEVELS = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
# SQLite primary result codes (the low byte of an extended code) that mean the
# WAL index could not be created or opened.
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14
_PRIMARY_CODE = 0xFF
_TIMEOUT_S = 30


def resolve_url(url: str, db_file: Path) -> str:
    """The SQLAlchemy URL for ``store.url`` (empty means SQLite at ``db_file``)."""
    if url:
        return url
    return f"sqlite:///{db_file}"


def is_sqlite(url: str) -> bool:
    """True when ``url`` names an SQLite database."""
    return url.startswith("sqlite")


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names (None: not SQLite, or in memory)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def daemon_running(pid_file: Path) -> bool:
    """True when a daemon holds the lock on ``pid_file`` (False when it cannot be opened)."""
    try:
        fd = os.open(pid_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the shared lock taken to test
    return False


def immutable_unsafe(path: Path, pid_file: Path | None) -> str | None:
    """Why ``path`` must not be read with ``immutable=1`` (None: nothing can change it)."""
    if pid_file is not None and daemon_running(pid_file):
        return f"fmd is running (it holds the lock on {pid_file})"
    wal = path.with_name(path.name + "-wal")
    try:
        if wal.stat().st_size > 0:
            return (
                f"{wal} holds changes not yet copied into the database "
                "(fmd is running or did not stop cleanly)"
            )
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"{wal} cannot be examined ({exc.strerror})"
    return None


def readonly_uri(path: Path, pid_file: Path | None = None) -> str:
    """The SQLite URI that reads ``path`` without writing anything (see the module
    docstring); StoreError naming the file and what to do when there is none.

    ``pid_file`` is the lock of the daemon that may be writing the file.
    """
    if not path.exists():
        raise StoreError(f"no fmd database at {path} (has fmd ever run with this root?)")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise StoreError(
            f"cannot read the fmd database {path}: {exc.strerror}; run this command as a "
            "user who may read it"
        ) from None
    uri = f"file:{quote(str(path))}?mode=ro"
    failed = _index_unavailable(uri)
    if failed is None:
        return uri
    unsafe = immutable_unsafe(path, pid_file)
    if unsafe is not None:
        raise StoreError(
            f"cannot read {path} read-only: SQLite needs {path.name}-shm beside it and "
            f"cannot create it ({failed}), and {unsafe}; run this command as a user who may "
            f"write {path.parent}, or once fmd has stopped cleanly"
        )
    return uri + "&immutable=1"


def _index_unavailable(uri: str) -> str | None:
    """SQLite's complaint when it cannot set up the WAL index for a read (else None)."""
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_TIMEOUT_S)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & _PRIMARY_CODE
        # Anything else (a damaged file, ...) shows on the real connections.
        return str(exc) if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN) else None
    finally:
        conn.close()
    return None


def create_store_engine(
    url: str, *, sync: str = "full", readonly: bool = False, pid_file: Path | None = None
) -> Engine:
    """Create an engine for ``url`` with fmd's connection settings.

    ``readonly`` opens SQLite with ``mode=ro`` (or ``immutable=1``, see
    :func:`readonly_uri`; ``pid_file`` is the daemon's lock) so a reader can
    never modify the logs, and fails cleanly when the database does not exist.
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
        uri = readonly_uri(path, pid_file)

        def connect_ro() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=_TIMEOUT_S)

        engine = create_engine("sqlite://", creator=connect_ro, poolclass=NullPool)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"check_same_thread": False, "timeout": _TIMEOUT_S},
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
            # When a checkpoint has copied everything and the log starts over,
            # SQLite truncates it to this size instead of keeping its peak.
            cur.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
        cur.execute(f"PRAGMA synchronous={level}")
        cur.execute("PRAGMA busy_timeout=30000")
        if readonly:
            _compat_views(cur)
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _compat_views(cur: Any) -> None:
    """Let a read-only connection query a file written by an older fmd (an archive,
    or a database whose daemon has not yet run the newer migrations): for each
    table lacking columns added since, a TEMP view of the same name — which SQLite
    resolves before the file's own table — supplies them with their defaults."""
    from fmd.store import schema

    for table in (schema.errlog, schema.fltlog, schema.cases):
        try:
            have = [str(r[1]) for r in cur.execute(f'PRAGMA main.table_info("{table.name}")')]
        except sqlite3.DatabaseError:
            return  # a damaged file: the readers report it
        if not have:
            continue
        missing = [c for c in table.columns if c.name not in have]
        if not missing:
            continue
        parts = [f'"{name}"' for name in have]
        for c in missing:
            arg = getattr(c.server_default, "arg", None)
            parts.append(f'{arg if isinstance(arg, str) else "NULL"} AS "{c.name}"')
        cur.execute(
            f'CREATE TEMP VIEW IF NOT EXISTS "{table.name}" AS '
            f'SELECT {", ".join(parts)} FROM main."{table.name}"'
        )


def table_names(engine: Engine) -> set[str]:
    """Names of the tables present (for diagnostics and tests)."""
    return set(inspect(engine).get_table_names())
