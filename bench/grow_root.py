"""Grow a real fmd root into a large one: many outstanding faults and many events.

A root made through the real path (``fmd``, ``fminject``) holds a few page
faults of ``cpumem-diagnosis`` (each one case, its suspect, ``list.suspect`` and
``list.isolated`` records, resource-cache and response rows, a retired page)
and their ereports.  :func:`grow` copies one of those page faults as many times
as asked, each copy on a page of its own with a uuid of its own (rewriting the
uuid and the page address wherever they appear: rows, JSON documents, FMRIs),
and copies its ereports until the error log holds as many events as asked,
all committed.  The result is what a host that has run for years with a bad
DIMM looks like to a restarting fmd — made in seconds, not days.

    python -m bench.grow_root ROOT --faults 100000 --events 1000000

The root must have been made by fmd first, with at least one page fault (see
``bench/restart.py``).
"""

from __future__ import annotations

import argparse
import sqlite3
import uuid as uuidlib
from pathlib import Path

import orjson

from fmd.states import STATE_RECEIVED

PAGE = 0x1000
# Copies get pages far above anything the template used, one per copy.
BASE_PAGE = 0x40_0000_0000


def _template(db: sqlite3.Connection) -> tuple[str, int]:
    """A page-fault case of cpumem-diagnosis and its page address."""
    row = db.execute(
        "SELECT s.uuid, s.asru FROM suspects s JOIN cases c ON c.uuid = s.uuid "
        "WHERE s.class LIKE 'fault.memory.%page%' AND c.module = 'cpumem-diagnosis' "
        "ORDER BY c.diag_time_ns LIMIT 1"
    ).fetchone()
    if row is None:
        raise SystemExit("the root has no page fault of cpumem-diagnosis to copy")
    uuid, asru = row
    return uuid, int(asru.rsplit("physaddr=", 1)[1], 16)


def _rows(db: sqlite3.Connection, table: str, where: str, args: tuple[object, ...]) -> list[tuple]:
    return db.execute(f"SELECT * FROM {table} WHERE {where}", args).fetchall()


def _swap(value: object, old: tuple[str, ...], new: tuple[str, ...]) -> object:
    if isinstance(value, str):
        for a, b in zip(old, new, strict=True):
            value = value.replace(a, b)
    return value


def grow(db_path: Path, faults: int, events: int) -> None:
    """Add ``faults`` copies of a page fault and fill the error log to ``events``."""
    _grow(db_path, faults, events)


def add_uncommitted(db_path: Path, count: int) -> None:
    """Append ``count`` error-log events past the commit frontier, as a crash
    right after their acknowledgement leaves them: stored, not yet seen by any
    module.  They are copies, in turn, of the ereports the real path stored
    (compact raw machine-check records and memory errors), so a start replays
    them through decoding and the real diagnosis.
    """
    db = sqlite3.connect(db_path)
    try:
        models = db.execute(
            "SELECT * FROM errlog WHERE id <= (SELECT min(id) FROM errlog) + 1000 ORDER BY id"
        ).fetchall()
        next_err = (db.execute("SELECT max(id) FROM errlog").fetchone()[0] or 0) + 1
        cols = [r[1] for r in db.execute("PRAGMA table_info(errlog)")]
        committed, state = cols.index("committed"), cols.index("state")
        rows = []
        for i in range(count):
            row = list(models[i % len(models)])
            row[0] = next_err + i
            row[committed], row[state] = 0, STATE_RECEIVED
            rows.append(tuple(row))
        db.executemany(f"INSERT INTO errlog VALUES ({','.join('?' * len(cols))})", rows)
        db.commit()
    finally:
        db.close()


def _grow(db_path: Path, faults: int, events: int) -> None:
    db = sqlite3.connect(db_path)
    try:
        uuid, page = _template(db)
        old = (uuid, f"{page:#x}", str(page))
        templates = {
            "cases": _rows(db, "cases", "uuid = ?", (uuid,)),
            "suspects": _rows(db, "suspects", "uuid = ?", (uuid,)),
            "resources": _rows(db, "resources", "uuid = ?", (uuid,)),
            "responses": _rows(db, "responses", "uuid = ?", (uuid,)),
            "fltlog": _rows(db, "fltlog", "uuid = ?", (uuid,)),
        }
        event_ids = [
            r[0] for r in db.execute("SELECT event_id FROM case_events WHERE uuid = ?", (uuid,))
        ]
        template_events = (
            _rows(db, "errlog", f"id IN ({','.join('?' * len(event_ids))})", tuple(event_ids))
            if event_ids
            else []
        )
        next_flt = (db.execute("SELECT max(id) FROM fltlog").fetchone()[0] or 0) + 1
        next_err = (db.execute("SELECT max(id) FROM errlog").fetchone()[0] or 0) + 1
        ckpt = orjson.loads(
            db.execute("SELECT data FROM checkpoints WHERE module = 'cpumem-diagnosis'").fetchone()[
                0
            ]
        )
        keys = ckpt.setdefault("specific", {}).setdefault("cases", {})
        out: dict[str, list[tuple]] = {
            t: [] for t in (*templates, "case_events", "errlog", "hw_state")
        }
        for i in range(faults):
            new_uuid = str(uuidlib.uuid4())
            new_page = BASE_PAGE + i * PAGE
            new = (new_uuid, f"{new_page:#x}", str(new_page))
            for table, rows in templates.items():
                for row in rows:
                    copy = tuple(_swap(v, old, new) for v in row)
                    if table == "fltlog":
                        copy = (next_flt, *copy[1:])
                        next_flt += 1
                    out[table].append(copy)
            for ev in template_events:
                out["errlog"].append((next_err, *(_swap(v, old, new) for v in ev[1:])))
                out["case_events"].append((new_uuid, next_err))
                next_err += 1
            out["hw_state"].append(("page", new_page, "retired", 0))
            keys[f"page@{new_page:#x}"] = new_uuid
        filler = db.execute("SELECT * FROM errlog ORDER BY id LIMIT 1").fetchone()
        while next_err <= events:
            out["errlog"].append((next_err, *filler[1:]))
            next_err += 1
        for table, rows in out.items():
            if rows:
                marks = ",".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        db.execute("UPDATE errlog SET committed = 1")
        db.execute("UPDATE fltlog SET committed = 1")
        for log in ("errlog", "fltlog"):
            top = db.execute(f"SELECT max(id) FROM {log}").fetchone()[0] or 0
            db.execute("UPDATE log_frontier SET committed_upto = ? WHERE log = ?", (top, log))
        db.execute(
            "UPDATE checkpoints SET data = ? WHERE module = 'cpumem-diagnosis'",
            (orjson.dumps(ckpt).decode(),),
        )
        for module in ("cpumem-retire", "syslog-msgs", "fmd-self-diagnosis", "amd-diagnosis"):
            row = db.execute("SELECT data FROM checkpoints WHERE module = ?", (module,)).fetchone()
            if row is not None:
                doc = orjson.loads(row[0])
                doc["last_seen"] = {"errlog": next_err - 1, "fltlog": next_flt - 1}
                db.execute(
                    "UPDATE checkpoints SET data = ? WHERE module = ?",
                    (orjson.dumps(doc).decode(), module),
                )
        ckpt["last_seen"] = {"errlog": next_err - 1, "fltlog": next_flt - 1}
        db.execute(
            "UPDATE checkpoints SET data = ? WHERE module = 'cpumem-diagnosis'",
            (orjson.dumps(ckpt).decode(),),
        )
        db.commit()
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--faults", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    grow(args.root / "var" / "fm" / "fmd" / "fmd.db", args.faults, args.events)


if __name__ == "__main__":
    main()
