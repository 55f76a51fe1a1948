"""Read-only queries over the store (start-up restore, replay, fmdump, fmadm).

Filters are turned into SQL so the database does the selecting with its
indexes; nothing here loads a whole log into Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, false, or_, select

from fmd.store import schema


def glob_to_like(pattern: str) -> str:
    """Translate a shell glob (``*``, ``?``) into a LIKE pattern with ``\\`` escapes."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def class_glob(column: Any, patterns: Sequence[str], sqlite: bool) -> Any:
    """A case-sensitive shell-glob match of ``column`` against any of ``patterns``.

    SQLite's GLOB is exactly a shell glob (``*``, ``?``, ``[...]``) and can use
    the class index for a literal prefix; elsewhere LIKE (case-sensitive on
    PostgreSQL) with the glob translated.
    """
    if sqlite:
        return or_(*(column.op("GLOB")(p) for p in patterns))
    return or_(*(column.like(glob_to_like(p), escape="\\") for p in patterns))


def load_checkpoints(conn: Connection) -> dict[str, str]:
    """Every module's checkpoint document, by module name."""
    t = schema.checkpoints
    return {r.module: r.data for r in conn.execute(select(t.c.module, t.c.data))}


def load_serd(conn: Connection) -> dict[str, dict[str, str]]:
    """Every module's saved SERD engines: module -> engine name -> JSON."""
    t = schema.serd_engines
    out: dict[str, dict[str, str]] = {}
    for r in conn.execute(select(t.c.module, t.c.name, t.c.data)):
        out.setdefault(r.module, {})[r.name] = r.data
    return out


def load_offsets(conn: Connection) -> dict[str, tuple[str, int]]:
    """Committed read positions of followed files: name -> (identity, offset)."""
    t = schema.xprt_offsets
    return {r.name: (r.ident, r.offset) for r in conn.execute(select(t))}


def frontier(conn: Connection, log_name: str) -> int:
    """The commit frontier of a log: every id at or below it is committed."""
    t = schema.log_frontier
    value = conn.execute(select(t.c.committed_upto).where(t.c.log == log_name)).scalar()
    return int(value or 0)


def uncommitted(conn: Connection, log_name: str, batch: int = 5000) -> Iterator[Row[Any]]:
    """Uncommitted rows of ``errlog`` or ``fltlog`` in id order (for replay): the
    rows above the log's commit frontier, read as a primary-key range."""
    t = schema.errlog if log_name == "errlog" else schema.fltlog
    last = frontier(conn, log_name)
    while True:
        rows = conn.execute(
            select(t)
            .where(and_(t.c.committed.is_(False), t.c.id > last))
            .order_by(t.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def load_cases(conn: Connection, *, open_only: bool = True) -> list[dict[str, Any]]:
    """Cases with their suspects and event ids (RESOLVED cases excluded when open_only)."""
    c, s, e = schema.cases, schema.suspects, schema.case_events
    q = select(c)
    if open_only:
        q = q.where(c.c.state != 5)
    out: dict[str, dict[str, Any]] = {}
    for r in conn.execute(q.order_by(c.c.open_time_ns)):
        d = dict(r._mapping)
        d["suspects"] = []
        d["events"] = []
        out[r.uuid] = d
    if not out:
        return []
    for r in conn.execute(select(s).order_by(s.c.uuid, s.c.idx)):
        if r.uuid in out:
            out[r.uuid]["suspects"].append(dict(r._mapping))
    for r in conn.execute(select(e).order_by(e.c.uuid, e.c.event_id)):
        if r.uuid in out:
            out[r.uuid]["events"].append(r.event_id)
    return list(out.values())


def errlog_select(
    *,
    classes: Sequence[str] = (),
    since_ns: int | None = None,
    until_ns: int | None = None,
    ids: Sequence[int] | None = None,
    sqlite: bool = True,
) -> Select[Any]:
    """SELECT over the error log with fmdump's filters (same-letter filters OR, others AND)."""
    t = schema.errlog
    q = select(t)
    conds = []
    if classes:
        conds.append(class_glob(t.c["class"], classes, sqlite))
    if since_ns is not None:
        conds.append(t.c.time_ns >= since_ns)
    if until_ns is not None:
        conds.append(t.c.time_ns <= until_ns)
    if ids is not None:
        conds.append(t.c.id.in_(list(ids)) if ids else false())
    if conds:
        q = q.where(and_(*conds))
    return q.order_by(t.c.time_ns, t.c.id)


def fltlog_select(
    *,
    classes: Sequence[str] = (),
    uuids: Sequence[str] = (),
    since_ns: int | None = None,
    until_ns: int | None = None,
    sqlite: bool = True,
) -> Select[Any]:
    """SELECT over the fault log with fmdump's filters."""
    t = schema.fltlog
    q = select(t)
    conds = []
    if classes:
        conds.append(class_glob(t.c["class"], classes, sqlite))
    if uuids:
        conds.append(t.c.uuid.in_(list(uuids)))
    if since_ns is not None:
        conds.append(t.c.time_ns >= since_ns)
    if until_ns is not None:
        conds.append(t.c.time_ns <= until_ns)
    if conds:
        q = q.where(and_(*conds))
    return q.order_by(t.c.time_ns, t.c.id)


def events_by_id(conn: Connection, ids: Sequence[int], log_name: str = "errlog") -> list[Row[Any]]:
    """Rows of ``errlog`` or ``fltlog`` for the given ids (restoring event references)."""
    if not ids:
        return []
    t = schema.errlog if log_name == "errlog" else schema.fltlog
    out: list[Row[Any]] = []
    ids = list(ids)
    for i in range(0, len(ids), 900):
        out.extend(conn.execute(select(t).where(t.c.id.in_(ids[i : i + 900]))).all())
    return out


def resource_flags(conn: Connection) -> list[tuple[str, int]]:
    """(resource FMRI, fault-status flags) of every record in the resource cache."""
    t = schema.resources
    return [(r.fmri, r.flags) for r in conn.execute(select(t.c.fmri, t.c.flags))]


def count(conn: Connection, log_name: str) -> int:
    from sqlalchemy import func

    t = schema.errlog if log_name == "errlog" else schema.fltlog
    return int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
