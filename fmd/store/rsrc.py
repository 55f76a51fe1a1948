"""Read-only queries behind the resource cache: solved cases with their suspects
and the responses agents recorded (``fmadm faulty``, ``fmadm repaired``...).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from fmd.states import CaseState
from fmd.store import schema

_SOLVED, _RESOLVED = CaseState.SOLVED, CaseState.RESOLVED


def solved_cases(
    conn: Connection, *, uuids: list[str] | None = None, include_resolved: bool = False
) -> list[dict[str, Any]]:
    """Cases that were solved and are not yet resolved (or all solved ones),
    oldest diagnosis first, each with ``suspects`` (each with ``responses``)."""
    c, s, r = schema.cases, schema.suspects, schema.responses
    q = select(c).where(c.c.state >= _SOLVED, c.c.diag_time_ns.is_not(None))
    if not include_resolved:
        q = q.where(c.c.state != _RESOLVED)
    if uuids:
        q = q.where(c.c.uuid.in_(uuids))
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(q.order_by(c.c.diag_time_ns, c.c.uuid)):
        d = dict(row._mapping)
        d.pop("data", None)
        d["suspects"] = []
        out[row.uuid] = d
    if not out:
        return []
    keys = list(out)
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        for row in conn.execute(select(s).where(s.c.uuid.in_(chunk)).order_by(s.c.uuid, s.c.idx)):
            sus = by_key[(row.uuid, row.idx)] = {**row._mapping, "responses": []}
            out[row.uuid]["suspects"].append(sus)
        for row in conn.execute(
            select(r).where(r.c.uuid.in_(chunk)).order_by(r.c.uuid, r.c.idx, r.c.module)
        ):
            owner = by_key.get((row.uuid, row.idx))
            if owner is not None:
                owner["responses"].append(dict(row._mapping))
    return list(out.values())


def fltlog_latest(conn: Connection, uuids: list[str], cls: str) -> list[Any]:
    """The newest fault-log row of class ``cls`` of each case in ``uuids``."""
    t = schema.fltlog
    latest: dict[str, Any] = {}
    for i in range(0, len(uuids), 500):
        q = select(t).where(t.c.uuid.in_(uuids[i : i + 500]), t.c["class"] == cls).order_by(t.c.id)
        for row in conn.execute(q):
            latest[row.uuid] = row
    return list(latest.values())
