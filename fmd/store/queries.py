"""Read-only queries over the store (start-up restore, replay, fmdump, fmadm).

Filters are turned into SQL so the database does the selecting with its
indexes; nothing here loads a whole log into Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Table,
    Text,
    and_,
    case,
    cast,
    delete,
    false,
    func,
    literal,
    null,
    or_,
    select,
)

from fmd.hw.telemetry import RAW_MEMBER as RAW_MCA_MEMBER
from fmd.states import CaseState
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


def load_positions(conn: Connection) -> dict[str, tuple[str, int, str | None]]:
    """Committed read positions of every transport: name -> (identity, offset, document)."""
    t = schema.xprt_offsets
    rows = conn.execute(select(t.c.name, t.c.ident, t.c.offset, t.c.position))
    return {r.name: (r.ident, r.offset, r.position) for r in rows}


def recent_enas(conn: Connection, limit: int) -> list[tuple[int, int]]:
    """(ENA, time) of the newest ``limit`` error-log records, oldest first."""
    t = schema.errlog
    rows = conn.execute(select(t.c.ena, t.c.time_ns).order_by(t.c.id.desc()).limit(limit)).all()
    return [(schema.ena_from_db(r.ena), r.time_ns) for r in reversed(rows)]


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


_UNSOLVED, _SOLVED, _CLOSE_WAIT, _CLOSED, _REPAIRED, _RESOLVED = (
    CaseState.UNSOLVED,
    CaseState.SOLVED,
    CaseState.CLOSE_WAIT,
    CaseState.CLOSED,
    CaseState.REPAIRED,
    CaseState.RESOLVED,
)
_CHUNK = 500
# Up to this many cases are looked up by uuid; more are found by scanning.
_FEW = 5000


def uncommitted_classes(conn: Connection, batch: int = 50_000) -> Iterator[tuple[int, str]]:
    """``(id, class)`` of the uncommitted error-log rows, in id order: what the
    start-up replay needs to route them (the rows themselves are read later)."""
    t = schema.errlog
    last = frontier(conn, "errlog")
    while True:
        rows = conn.execute(
            select(t.c.id, t.c["class"])
            .where(and_(t.c.committed.is_(False), t.c.id > last))
            .order_by(t.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        for r in rows:
            yield int(r[0]), str(r[1])
        last = rows[-1][0]


def load_cases(
    conn: Connection,
    *,
    open_only: bool = True,
    unsolved_only: bool = False,
    uuids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Cases (every ``cases`` column) with their ``suspects`` rows and event ids
    (``events``): RESOLVED ones excluded when ``open_only``, only UNSOLVED ones
    with ``unsolved_only``, only those in ``uuids`` when given."""
    c, e, s = schema.cases, schema.case_events, schema.suspects
    q = select(c)
    if open_only:
        q = q.where(c.c.state != _RESOLVED)
    if unsolved_only:
        q = q.where(c.c.state == _UNSOLVED)
    out: dict[str, dict[str, Any]] = {}
    chunks = (
        [None] if uuids is None else [uuids[i : i + _CHUNK] for i in range(0, len(uuids), _CHUNK)]
    )
    for chunk in chunks:
        sel = q if chunk is None else q.where(c.c.uuid.in_(list(chunk)))
        for r in conn.execute(sel.order_by(c.c.open_time_ns)):
            out[r.uuid] = {**r._mapping, "events": [], "suspects": []}
    keys = list(out)
    for i in range(0, len(keys), _CHUNK):
        part = keys[i : i + _CHUNK]
        for sus in conn.execute(select(s).where(s.c.uuid.in_(part)).order_by(s.c.uuid, s.c.idx)):
            out[sus.uuid]["suspects"].append(dict(sus._mapping))
        for ev in conn.execute(
            select(e.c.uuid, e.c.event_id)
            .where(e.c.uuid.in_(part))
            .order_by(e.c.uuid, e.c.event_id)
        ):
            out[ev.uuid]["events"].append(ev.event_id)
    return list(out.values())


def outstanding_cases(conn: Connection) -> list[tuple[str, str]]:
    """``(uuid, module)`` of every case solved and not yet resolved: what a module
    restores lazily (its record is read when the case is first used)."""
    c = schema.cases
    q = select(c.c.uuid, c.c.module).where(c.c.state > _UNSOLVED, c.c.state != _RESOLVED)
    return [(r.uuid, r.module) for r in conn.execute(q)]


def cases_holding(conn: Connection, event_id: int, module: str) -> list[tuple[str, int]]:
    """``(uuid, state)`` of the module's stored cases that hold an error-log event."""
    c, e = schema.cases, schema.case_events
    q = (
        select(c.c.uuid, c.c.state)
        .join(e, e.c.uuid == c.c.uuid)
        .where(e.c.event_id == event_id, c.c.module == module)
    )
    return [(r.uuid, int(r.state)) for r in conn.execute(q)]


def fault_replays(conn: Connection, *, closed: bool) -> list[tuple[str, int, int, list[str]]]:
    """What the start-up replay re-sends to response agents: for each case still
    faulty — SOLVED or CLOSE_WAIT (its latest ``list.suspect``), REPAIRED (its
    latest ``list.repaired``), and CLOSED (isolated; only when ``closed``) —
    ``(uuid, state, fault-log id, fault classes)``, oldest diagnosis first.

    Three plain scans joined in Python: a join in SQL let SQLite pick a plan
    that grew with the square of the number of cases.
    """
    c, f, s = schema.cases, schema.fltlog, schema.suspects
    states = [_SOLVED, _CLOSE_WAIT, _REPAIRED] + ([_CLOSED] if closed else [])
    wanted = {
        r.uuid: (int(r.state), r.diag_time_ns or 0)
        for r in conn.execute(
            select(c.c.uuid, c.c.state, c.c.diag_time_ns).where(c.c.state.in_(states))
        )
    }
    if not wanted:
        return []
    # A few cases (a plain restart): look them up by uuid; many (a reboot): scan.
    chunks: list[list[str] | None] = [None]
    if len(wanted) <= _FEW:
        keys = list(wanted)
        chunks = [keys[i : i + _CHUNK] for i in range(0, len(keys), _CHUNK)]
    latest: dict[tuple[str, str], int] = {}
    classes: dict[str, list[str]] = {}
    for chunk in chunks:
        q = select(f.c.uuid, f.c["class"], func.max(f.c.id).label("fid")).where(
            f.c["class"].in_(("list.suspect", "list.repaired"))
        )
        qs = select(s.c.uuid, s.c["class"])
        if chunk is not None:
            q = q.where(f.c.uuid.in_(chunk))
            qs = qs.where(s.c.uuid.in_(chunk))
        for r in conn.execute(q.group_by(f.c.uuid, f.c["class"])):
            latest[(r.uuid, r[1])] = int(r.fid)
        for sus in conn.execute(qs.order_by(s.c.uuid, s.c.idx)):
            if sus.uuid in wanted:
                classes.setdefault(sus.uuid, []).append(sus[1])
    out = []
    for uuid, (state, _diag) in sorted(wanted.items(), key=lambda kv: (kv[1][1], kv[0])):
        fid = latest.get((uuid, "list.repaired" if state == _REPAIRED else "list.suspect"))
        if fid is not None:
            out.append((uuid, state, fid, classes.get(uuid, [])))
    return out


def suspect_statuses(conn: Connection, uuids: Sequence[str]) -> dict[str, list[int]]:
    """The current fault-status bits of each case's suspects, in suspect order."""
    s = schema.suspects
    out: dict[str, list[int]] = {}
    uuids = list(uuids)
    for i in range(0, len(uuids), _CHUNK):
        part = uuids[i : i + _CHUNK]
        for r in conn.execute(
            select(s.c.uuid, s.c.status).where(s.c.uuid.in_(part)).order_by(s.c.uuid, s.c.idx)
        ):
            out.setdefault(r.uuid, []).append(int(r.status))
    return out


MemberFilter = tuple[tuple[str, ...], int | None]
"""A ``-n`` prefilter: the member path, and the number it must equal (None: a
string value, matched by regular expression in Python after the query)."""


def _json_path(column: Any, path: Sequence[str], sqlite: bool) -> tuple[Any, Any]:
    """(value, type) expressions of a member of the JSON text in ``column``.

    On SQLite the JSON1 functions; invalid JSON yields NULL rather than an
    error (``json_valid`` guards them) so a corrupt payload reaches fmdump,
    which reports it.  On PostgreSQL the text is cast to ``jsonb``; the writer
    only ever stores valid JSON there.
    """
    if sqlite:
        parts = []
        for p in path:
            parts.append(f"[{p}]" if p.isdigit() else '."' + p.replace('"', '\\"') + '"')
        jpath = "$" + "".join(parts)
        valid = func.json_valid(column)
        value = case((valid == 1, func.json_extract(column, jpath)), else_=null())
        kind = case((valid == 1, func.json_type(column, jpath)), else_=null())
        return value, kind
    from sqlalchemy.dialects.postgresql import ARRAY, JSONB

    member = cast(column, JSONB).op("#>")(cast(literal(list(path)), ARRAY(Text)))
    return member, func.jsonb_typeof(member)


def member_filter(
    column: Any, filters: Sequence[MemberFilter], sqlite: bool, *, derived: bool = False
) -> Any:
    """``-n`` in SQL: the member exists and, for a numeric value, equals it (strings
    and arrays are let through for the caller's regular-expression check).

    With ``derived`` (the error log), records stored in compact form (raw
    machine-check registers, members derived on read: ``fmd.hw.telemetry``) are
    let through too: their decoded members are not in the stored text.
    """
    conds = []
    if derived:
        conds.append(_json_path(column, (RAW_MCA_MEMBER,), sqlite)[1].is_not(None))
    for path, number in filters:
        value, kind = _json_path(column, path, sqlite)
        if number is None:
            conds.append(kind.is_not(None))
        elif sqlite:
            conds.append(or_(value == number, kind.in_(("text", "array"))))
        else:
            from sqlalchemy.dialects.postgresql import JSONB

            conds.append(
                or_(value == cast(literal(str(number)), JSONB), kind.in_(("string", "array")))
            )
    return or_(*conds)


def visible(column: Any, sqlite: bool) -> Any:
    """Records not marked ``message=false`` (fmdump hides those without ``-a``)."""
    if sqlite:
        _, kind = _json_path(column, ("message",), sqlite)
        return func.coalesce(kind, "") != "false"
    from sqlalchemy.dialects.postgresql import JSONB

    return func.coalesce(cast(column, JSONB).op("->>")(literal("message")), "") != "false"


def case_event_ids(conn: Connection, uuids: Sequence[str]) -> list[int]:
    """The errlog ids of the events of the given cases (``fmdump -e -u``, ``-V``)."""
    t = schema.case_events
    q = select(t.c.event_id).where(t.c.uuid.in_(list(uuids))).order_by(t.c.event_id)
    return [int(r.event_id) for r in conn.execute(q)]


def _log_conds(
    t: Table,
    *,
    classes: Sequence[str],
    since_ns: int | None,
    until_ns: int | None,
    members: Sequence[MemberFilter],
    after_id: int | None,
    sqlite: bool,
) -> list[Any]:
    conds = []
    if classes:
        conds.append(class_glob(t.c["class"], classes, sqlite))
    if since_ns is not None:
        conds.append(t.c.time_ns >= since_ns)
    if until_ns is not None:
        conds.append(t.c.time_ns <= until_ns)
    if members:
        conds.append(member_filter(t.c.payload, members, sqlite, derived=t.name == "errlog"))
    if after_id is not None:
        conds.append(t.c.id > after_id)
    return conds


def errlog_select(
    *,
    classes: Sequence[str] = (),
    since_ns: int | None = None,
    until_ns: int | None = None,
    ids: Sequence[int] | None = None,
    uuids: Sequence[str] = (),
    members: Sequence[MemberFilter] = (),
    after_id: int | None = None,
    sqlite: bool = True,
) -> Select[Any]:
    """SELECT over the error log with fmdump's filters (same-letter filters OR, others AND).

    ``uuids`` keeps the events of those cases (a join with ``case_events``);
    ``ids`` keeps the given event ids (the same selection for a rotated
    archive, which has no ``case_events``); ``after_id`` the rows added since
    a ``-f`` poll.
    """
    t = schema.errlog
    q = select(t)
    conds = _log_conds(
        t,
        classes=classes,
        since_ns=since_ns,
        until_ns=until_ns,
        members=members,
        after_id=after_id,
        sqlite=sqlite,
    )
    if ids is not None:
        conds.append(t.c.id.in_(list(ids)) if ids else false())
    if uuids:
        ce = schema.case_events
        conds.append(t.c.id.in_(select(ce.c.event_id).where(ce.c.uuid.in_(list(uuids)))))
    if conds:
        q = q.where(and_(*conds))
    return q.order_by(t.c.time_ns, t.c.id)


def fltlog_select(
    *,
    classes: Sequence[str] = (),
    uuids: Sequence[str] = (),
    since_ns: int | None = None,
    until_ns: int | None = None,
    members: Sequence[MemberFilter] = (),
    hidden: bool = True,
    after_id: int | None = None,
    sqlite: bool = True,
) -> Select[Any]:
    """SELECT over the fault log with fmdump's filters; ``hidden=False`` leaves out
    the ``message=false`` records."""
    t = schema.fltlog
    q = select(t)
    conds = _log_conds(
        t,
        classes=classes,
        since_ns=since_ns,
        until_ns=until_ns,
        members=members,
        after_id=after_id,
        sqlite=sqlite,
    )
    if uuids:
        conds.append(t.c.uuid.in_(list(uuids)))
    if not hidden:
        conds.append(visible(t.c.payload, sqlite))
    if conds:
        q = q.where(and_(*conds))
    return q.order_by(t.c.time_ns, t.c.id)


def rotatable_errlog(conn: Connection, upto: int, after: int, batch: int) -> list[Row[Any]]:
    """Committed errlog rows with ids in (after, upto] that no open case holds
    (a case whose state is below RESOLVED), at most ``batch`` of them, by id."""
    t, ce, c = schema.errlog, schema.case_events, schema.cases
    held = select(ce.c.event_id).join(c, c.c.uuid == ce.c.uuid).where(c.c.state < _RESOLVED)
    q = (
        select(t)
        .where(and_(t.c.id > after, t.c.id <= upto, t.c.id.not_in(held)))
        .order_by(t.c.id)
        .limit(batch)
    )
    return list(conn.execute(q).all())


def rotatable_fltlog(conn: Connection, upto: int, after: int, batch: int) -> list[Row[Any]]:
    """Committed fltlog rows with ids in (after, upto] whose case is resolved or
    gone, at most ``batch`` of them, by id."""
    t, c = schema.fltlog, schema.cases
    open_cases = select(c.c.uuid).where(c.c.state < _RESOLVED)
    q = (
        select(t)
        .where(and_(t.c.id > after, t.c.id <= upto, t.c.uuid.not_in(open_cases)))
        .order_by(t.c.id)
        .limit(batch)
    )
    return list(conn.execute(q).all())


def serd_event_ids(conn: Connection) -> set[int]:
    """Every errlog id some saved SERD engine still holds (``events`` of each
    engine's JSON record, see :meth:`fmd.serd.SerdEngine.to_dict`)."""
    import orjson

    out: set[int] = set()
    for r in conn.execute(select(schema.serd_engines.c.data)):
        try:
            record = orjson.loads(r.data)
        except orjson.JSONDecodeError:
            continue
        events = record.get("events") if isinstance(record, dict) else None
        for item in events if isinstance(events, list) else ():
            if isinstance(item, list) and item and isinstance(item[0], int):
                out.add(item[0])
    return out


def delete_ids(conn: Connection, log_name: str, ids: Sequence[int]) -> None:
    """Delete rows of ``errlog`` or ``fltlog`` by id (log rotation)."""
    t = schema.errlog if log_name == "errlog" else schema.fltlog
    ids = list(ids)
    for i in range(0, len(ids), 900):
        conn.execute(delete(t).where(t.c.id.in_(ids[i : i + 900])))


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
