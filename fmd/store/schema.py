"""The database tables of fmd (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Tables:

``errlog``        every ereport, in arrival order (``id``), with its state
                  (DISCARDED 0, RECEIVED 1, ACCEPTED 2, DIAGNOSED 3) and whether it
                  is ``committed`` (every module it was dispatched to has checkpointed
                  past it; uncommitted rows are replayed at start-up).
``fltlog``        every ``list.*`` event (the fault log), same commit rule.
``cases``         one row per case; ``suspects`` and ``case_events`` hang off it.
``resources``     the ASRU cache: one row per (resource FMRI, case).
``checkpoints``   one JSON document per module (buffers, private data, progress).
``serd_engines``  one row per SERD engine of a module (its N, T and event references),
                  rewritten only when the engine changes.
``xprt_offsets``  read positions of followed files and host sources, committed with
                  their events.
``log_frontier``  per log, the highest id below which everything is committed.
``hw_state``      the simulated hardware state the retire agent's sim backend keeps:
                  one row per CPU (``kind`` "cpu", ``ident`` the cpuid, ``state``
                  "offline"/"online") or page (``kind`` "page", ``ident`` the
                  page-aligned physical address, ``state`` "retired"/"online").
``responses``     what response agents did about each suspect (action, success,
                  detail), shown by ``fmadm faulty``.
``fmd_migrations`` the named migrations applied to this database.

ENAs are unsigned 64-bit values; they are stored in a signed BIGINT by two's
complement (see :func:`ena_to_db` / :func:`ena_from_db`) because PostgreSQL has
no unsigned type.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

# A log's id: BIGINT, and on SQLite INTEGER so that it is the table's rowid
# itself (a BIGINT primary key there costs a second, unique index on every row).
LogId = BigInteger().with_variant(Integer(), "sqlite")

errlog = Table(
    "errlog",
    metadata,
    Column("id", LogId, primary_key=True, autoincrement=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("recv_ns", BigInteger, nullable=False),
    Column("ena", BigInteger, nullable=False),
    Column("class", String(255), nullable=False),
    Column("detector", Text, nullable=True),
    Column("payload", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("committed", Boolean, nullable=False),
    Column("injected", Boolean, nullable=False),
    Column("xprt", Text, nullable=False),
    # A record coalesced at ingest from identical ereports: how many it stands
    # for and when the last one happened (NULL: just one).
    Column("count", Integer, nullable=False, server_default="1"),
    Column("last_ns", BigInteger, nullable=True),
)
Index("ix_errlog_time", errlog.c.time_ns)

# Column order of the tuples given to WriteTxn.insert_errlog.
ERRLOG_COLUMNS = tuple(c.name for c in errlog.columns)
Index("ix_errlog_class", errlog.c["class"])

fltlog = Table(
    "fltlog",
    metadata,
    Column("id", LogId, primary_key=True, autoincrement=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("class", String(64), nullable=False),
    Column("uuid", String(36), nullable=False),
    Column("code", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("committed", Boolean, nullable=False),
    Column("injected", Boolean, nullable=False),
)
Index("ix_fltlog_time", fltlog.c.time_ns)
Index("ix_fltlog_class", fltlog.c["class"])
Index("ix_fltlog_uuid", fltlog.c.uuid)

cases = Table(
    "cases",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("module", String(128), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("principal", BigInteger, nullable=True),
    Column("code", String(32), nullable=True),
    Column("diag_time_ns", BigInteger, nullable=True),
    Column("open_time_ns", BigInteger, nullable=False),
    # What has no column of its own (SERD engine names, buffers, module data,
    # suspects' other members), as JSON: fmd.case.Case.stored_extras.
    Column("data", Text, nullable=False),
    # Every ereport counted against the case; case_events keeps the first ones.
    Column("ereports", BigInteger, nullable=False, server_default="0"),
)
Index("ix_cases_module", cases.c.module)
Index("ix_cases_state", cases.c.state)

suspects = Table(
    "suspects",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("class", String(255), nullable=False),
    Column("certainty", SmallInteger, nullable=False),
    Column("asru", Text, nullable=True),
    Column("fru", Text, nullable=True),
    Column("resource", Text, nullable=True),
    Column("location", Text, nullable=True),
    Column("status", Integer, nullable=False),
)
Index("ix_suspects_asru", suspects.c.asru)
Index("ix_suspects_location", suspects.c.location)

case_events = Table(
    "case_events",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("event_id", BigInteger, primary_key=True, autoincrement=False),
)
Index("ix_case_events_event", case_events.c.event_id)

resources = Table(
    "resources",
    metadata,
    Column("fmri", Text, primary_key=True),
    Column("uuid", String(36), primary_key=True),
    Column("code", String(32), nullable=True),
    Column("flags", Integer, nullable=False),
    Column("reason", String(16), nullable=True),
    Column("updated_ns", BigInteger, nullable=False),
)
Index("ix_resources_uuid", resources.c.uuid)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("module", String(128), primary_key=True),
    Column("data", Text, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

serd_engines = Table(
    "serd_engines",
    metadata,
    Column("module", String(128), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("data", Text, nullable=False),
)

xprt_offsets = Table(
    "xprt_offsets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("ident", String(128), nullable=False),
    Column("offset", BigInteger, nullable=False),
    # A host source's fuller position as a JSON document (per-CPU timestamps,
    # per-counter values); NULL for followed files.
    Column("position", Text, nullable=True),
)

# The commit frontier of each log: every id <= committed_upto is committed and
# none above it is, so replay reads only the ids above it (a primary-key range)
# and no index on ``committed`` has to be maintained on every insert.
log_frontier = Table(
    "log_frontier",
    metadata,
    Column("log", String(16), primary_key=True),
    Column("committed_upto", BigInteger, nullable=False),
)

# Written only by the retire agent's sim backend (agents/retire/sim.py); a
# resource with no row is online.
hw_state = Table(
    "hw_state",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("ident", BigInteger, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

responses = Table(
    "responses",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("module", String(128), primary_key=True),
    Column("action", String(32), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

migrations = Table(
    "fmd_migrations",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("applied_ns", BigInteger, nullable=False),
)

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def ena_to_db(ena: int) -> int:
    """Map an unsigned 64-bit ENA onto a signed BIGINT."""
    return ena - _U64 if ena > _I64_MAX else ena


def ena_from_db(value: int) -> int:
    """Inverse of :func:`ena_to_db`."""
    return value + _U64 if value < 0 else value
