"""The ``hw_state`` table: the simulated CPUs and pages of the retire agent's sim
backend, which reads and writes them in short transactions of its own (not
through the event writer); fmadm, fmtopo and tests read them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, and_, select
from sqlalchemy.dialects import postgresql, sqlite

from fmd.store import schema


def hw_states(conn: Connection, kind: str | None = None) -> list[Row[Any]]:
    """Recorded simulated hardware states (``kind``, ``ident``, ``state``, ``updated_ns``),
    CPUs before pages, each by ident; only those of ``kind`` when it is given."""
    t = schema.hw_state
    q = select(t)
    if kind is not None:
        q = q.where(t.c.kind == kind)
    return list(conn.execute(q.order_by(t.c.kind, t.c.ident)).all())


def hw_state(conn: Connection, kind: str, ident: int) -> str | None:
    """The recorded state of one CPU or page, or None when it was never recorded."""
    t = schema.hw_state
    value = conn.execute(select(t.c.state).where(and_(t.c.kind == kind, t.c.ident == ident)))
    state = value.scalar()
    return None if state is None else str(state)


def set_hw_state(conn: Connection, kind: str, ident: int, state: str, now_ns: int) -> None:
    """Record the state of one CPU or page, replacing any earlier record
    (``conn`` must be inside ``engine.begin()``)."""
    # fmd's stores are SQLite or PostgreSQL; both take the same upsert.
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    stmt = insert(schema.hw_state).values(kind=kind, ident=ident, state=state, updated_ns=now_ns)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["kind", "ident"], set_={"state": state, "updated_ns": now_ns}
        )
    )
