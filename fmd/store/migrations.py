"""Named, ordered schema migrations, recorded in ``fmd_migrations``.

Each migration is a name and a function run inside one transaction; a
database records the names it has applied, so opening a store applies only
what is missing, in order.  A database that records a migration this version
of fmd does not know was written by a newer fmd and is refused.  New
migrations are appended to :data:`MIGRATIONS` and never edited once released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy import Connection, Engine, insert, inspect, select

from fmd.errors import StoreError
from fmd.store import schema


class Migration(NamedTuple):
    name: str
    apply: Callable[[Connection], None]


def _create(*names: str) -> Callable[[Connection], None]:
    """A migration creating the named tables (with their indexes) as defined now."""

    def apply(conn: Connection) -> None:
        tables = [schema.metadata.tables[n] for n in names]
        schema.metadata.create_all(conn, tables=tables)

    return apply


def _log_frontier(conn: Connection) -> None:
    """Record each log's commit frontier; the partial indexes it replaces go."""
    _create("log_frontier")(conn)
    for log in ("errlog", "fltlog"):
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_{log}_uncommitted")
        first = conn.exec_driver_sql(f"SELECT min(id) FROM {log} WHERE committed = FALSE").scalar()
        last = conn.exec_driver_sql(f"SELECT max(id) FROM {log}").scalar()
        upto = (first - 1) if first is not None else (last or 0)
        conn.execute(insert(schema.log_frontier).values(log=log, committed_upto=upto))


def _add_columns(conn: Connection, table: str, *columns: str) -> None:
    for column in columns:
        _add_column(conn, table, column)


def _add_column(conn: Connection, table: str, column: str) -> None:
    """Add a column of a table as it is defined now (with its server default),
    unless the table already has it (an earlier migration created the table from
    today's definition)."""
    if column in {c["name"] for c in inspect(conn).get_columns(table)}:
        return
    col = schema.metadata.tables[table].c[column]
    ddl = col.type.compile(dialect=conn.dialect)
    arg = getattr(col.server_default, "arg", None)
    default = f" DEFAULT {arg}" if isinstance(arg, str) else ""
    null = "" if col.nullable else " NOT NULL"
    conn.exec_driver_sql(f'ALTER TABLE {table} ADD COLUMN "{column}" {ddl}{null}{default}')


def _rowid_ids(conn: Connection) -> None:
    """SQLite only: rebuild each log table whose ``id`` is not yet its rowid (a
    BIGINT primary key, as older fmd created it), so that SQLite keeps one b-tree
    per row instead of the table and a unique index beside it."""
    if conn.dialect.name != "sqlite":
        return
    for name in ("errlog", "fltlog"):
        info = conn.exec_driver_sql(f"PRAGMA table_info({name})").all()
        if any(r[1] == "id" and str(r[2]).upper() == "INTEGER" for r in info):
            continue
        table = schema.metadata.tables[name]
        cols = ", ".join(f'"{c.name}"' for c in table.columns)
        conn.exec_driver_sql(f'ALTER TABLE {name} RENAME TO "{name}_old"')
        for ix in table.indexes:
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{ix.name}"')
        table.create(conn)
        conn.exec_driver_sql(f'INSERT INTO {name} ({cols}) SELECT {cols} FROM "{name}_old"')
        conn.exec_driver_sql(f'DROP TABLE "{name}_old"')


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_initial",
        _create(
            "errlog",
            "fltlog",
            "cases",
            "suspects",
            "case_events",
            "resources",
            "checkpoints",
            "xprt_offsets",
        ),
    ),
    Migration("0002_serd_engines", _create("serd_engines")),
    Migration("0003_log_frontier", lambda conn: _log_frontier(conn)),
    Migration("0004_hw_state", _create("hw_state")),
    Migration("0005_responses", _create("responses")),
    Migration("0006_case_ereports", lambda conn: _add_column(conn, "cases", "ereports")),
    Migration("0007_errlog_counts", lambda conn: _add_columns(conn, "errlog", "count", "last_ns")),
    Migration("0008_log_rowid_ids", _rowid_ids),
    Migration("0009_source_positions", lambda conn: _add_column(conn, "xprt_offsets", "position")),
)


def applied(conn: Connection) -> list[str]:
    """Names of the migrations recorded in the database, oldest first."""
    rows = conn.execute(select(schema.migrations.c.name).order_by(schema.migrations.c.name)).all()
    return [r[0] for r in rows]


def migrate(engine: Engine, now_ns: int) -> list[str]:
    """Apply every missing migration; return the names applied now."""
    schema.migrations.create(engine, checkfirst=True)
    done_now: list[str] = []
    with engine.begin() as conn:
        have = set(applied(conn))
        known = {m.name for m in MIGRATIONS}
        unknown = sorted(have - known)
        if unknown:
            raise StoreError(
                f"the database was written by a newer fmd (unknown migrations: "
                f"{', '.join(unknown)}); upgrade fmd or point store.url elsewhere"
            )
        for m in MIGRATIONS:
            if m.name in have:
                continue
            m.apply(conn)
            conn.execute(insert(schema.migrations).values(name=m.name, applied_ns=now_ns))
            done_now.append(m.name)
    return done_now
