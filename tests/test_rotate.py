"""Log rotation (fmd.store.rotate): which rows move, archive numbering, and that
fmdump shows every record once afterwards.  SQLite always; PostgreSQL as the
live store when FMD_TEST_PG_URL is set (the archive is SQLite either way)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, insert, select, update

from fmd import states
from fmd.cli import fmdump
from fmd.paths import Paths
from fmd.store import Store, schema
from fmd.store.rotate import rotate_log
from tests.pgschema import pg_schema_url

T0 = 1_700_000_000 * 10**9
OPEN, RESOLVED = "aaaaaaaa-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002"
GONE = "aaaaaaaa-0000-0000-0000-000000000003"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store("", db_file=Paths(tmp_path / "root").db_file)
        yield s
        s.close()
        return
    with pg_schema_url() as url:
        s = Store(url, db_file=tmp_path / "x")
        try:
            yield s
        finally:
            s.close()


def _err(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "time_ns": T0 + i * 10**9,
        "recv_ns": T0 + i * 10**9,
        "ena": i,
        "class": f"ereport.test.e{i}",
        "detector": None,
        "payload": "{}",
        "state": states.STATE_DIAGNOSED,
        "committed": i <= 8,
        "injected": False,
        "xprt": "test",
    }


def _flt(i: int, case: str) -> dict[str, Any]:
    payload = {"class": "list.suspect", "uuid": case, "code": "FMD-8000-0W", "fault-list": []}
    return {
        "id": i,
        "time_ns": T0 + i * 10**9,
        "class": "list.suspect",
        "uuid": case,
        "code": "FMD-8000-0W",
        "payload": orjson.dumps(payload).decode(),
        "committed": True,
        "injected": False,
    }


def _case(uuid_: str, state: int) -> dict[str, Any]:
    return {
        "uuid": uuid_,
        "module": "m",
        "state": state,
        "flags": 0,
        "principal": None,
        "code": None,
        "diag_time_ns": None,
        "open_time_ns": T0,
        "data": "{}",
    }


def _populate(store: Store) -> None:
    """errlog 1..10 (committed up to 8): 1-2 held by an open case, 3 by a resolved
    one, 4 by a SERD engine; fltlog 1..3 of an open, a resolved and a deleted case."""
    serd = {"name": "s", "n": 2, "t": 10, "fired": False, "events": [[4, T0]]}
    with store.engine.begin() as conn:
        conn.execute(insert(schema.errlog), [_err(i) for i in range(1, 11)])
        conn.execute(insert(schema.fltlog), [_flt(1, OPEN), _flt(2, RESOLVED), _flt(3, GONE)])
        conn.execute(insert(schema.cases), [_case(OPEN, 1), _case(RESOLVED, 5)])
        conn.execute(
            insert(schema.case_events),
            [
                {"uuid": OPEN, "event_id": 1},
                {"uuid": OPEN, "event_id": 2},
                {"uuid": RESOLVED, "event_id": 3},
            ],
        )
        conn.execute(
            insert(schema.serd_engines).values(
                module="m", name="s", data=orjson.dumps(serd).decode()
            )
        )
        for log, upto in (("errlog", 8), ("fltlog", 3)):
            conn.execute(
                update(schema.log_frontier)
                .where(schema.log_frontier.c.log == log)
                .values(committed_upto=upto)
            )


def _ids(store: Store, table: Any) -> list[int]:
    with store.reader() as conn:
        return [r.id for r in conn.execute(select(table.c.id).order_by(table.c.id))]


def _archive_ids(path: Path, table: str) -> list[int]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute(f"SELECT id FROM {table} ORDER BY id")]
    finally:
        con.close()


def test_errlog_moves_only_settled_rows(store: Store, tmp_path: Path) -> None:
    """Committed errlog rows move unless an open case, a SERD engine or keep_ids holds them."""
    _populate(store)
    with store.engine.begin() as conn:
        result = rotate_log(conn, "errlog", tmp_path / "logs", now_ns=T0, keep_ids=frozenset({6}))
    assert result.path == tmp_path / "logs" / "errlog.0"
    assert (result.moved, result.shifted) == (4, 0)
    assert _archive_ids(result.path, "errlog") == [3, 5, 7, 8]
    assert _ids(store, schema.errlog) == [1, 2, 4, 6, 9, 10]
    con = sqlite3.connect(result.path)
    header = con.execute("SELECT label, version FROM log_header").fetchall()
    con.close()
    assert header == [("error", 1)]


def test_fltlog_keeps_open_cases(store: Store, tmp_path: Path) -> None:
    """Fault-log rows move when their case is resolved or gone; an open case's stay."""
    _populate(store)
    with store.engine.begin() as conn:
        result = rotate_log(conn, "fltlog", tmp_path, now_ns=T0)
    assert result.path is not None
    assert _archive_ids(result.path, "fltlog") == [2, 3]
    assert _ids(store, schema.fltlog) == [1]


def test_rollback_keeps_live_rows(store: Store, tmp_path: Path) -> None:
    """When the caller's transaction rolls back the live rows stay (the archive may hold copies)."""
    _populate(store)
    with store.engine.connect() as conn:
        trans = conn.begin()
        rotate_log(conn, "fltlog", tmp_path, now_ns=T0)
        trans.rollback()
    assert _ids(store, schema.fltlog) == [1, 2, 3]


def test_nothing_to_move_writes_no_file(store: Store, tmp_path: Path) -> None:
    """A rotation with nothing settled writes no archive and shifts none."""
    with store.engine.begin() as conn:
        result = rotate_log(conn, "errlog", tmp_path, now_ns=T0)
    assert (result.moved, result.path, result.shifted) == (0, None, 0)
    assert list(tmp_path.glob("errlog.*")) == []


def test_archives_shift_and_oldest_is_dropped(tmp_path: Path) -> None:
    """Each rotation renames .N to .N+1; with keep=2 only .0 and .1 remain."""
    store = Store("", db_file=tmp_path / "fmd.db")
    try:
        for batch in range(3):
            with store.engine.begin() as conn:
                conn.execute(insert(schema.errlog), [_err(100 + batch)])
                conn.execute(
                    update(schema.log_frontier)
                    .where(schema.log_frontier.c.log == "errlog")
                    .values(committed_upto=100 + batch)
                )
                result = rotate_log(conn, "errlog", tmp_path, now_ns=T0, keep=2)
            assert result.moved == 1
        assert sorted(p.name for p in tmp_path.glob("errlog.*")) == ["errlog.0", "errlog.1"]
        assert _archive_ids(tmp_path / "errlog.0", "errlog") == [102]
        assert _archive_ids(tmp_path / "errlog.1", "errlog") == [101]
    finally:
        store.close()


def test_fmdump_shows_everything_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After two rotations fmdump -e and -a print every record exactly once."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    root = tmp_path / "root"
    paths = Paths(root)
    store = Store("", db_file=paths.db_file)
    _populate(store)
    runner = CliRunner()
    before = {
        a: runner.invoke(fmdump.cli, ["-R", str(root), *a]).stdout for a in (("-e",), ("-a",))
    }
    with store.engine.begin() as conn:
        rotate_log(conn, "errlog", paths.log_dir, now_ns=T0)
        rotate_log(conn, "fltlog", paths.log_dir, now_ns=T0)
    with store.engine.begin() as conn:
        conn.execute(delete(schema.case_events).where(schema.case_events.c.uuid == OPEN))
        conn.execute(update(schema.cases).where(schema.cases.c.uuid == OPEN).values(state=5))
        rotate_log(conn, "errlog", paths.log_dir, now_ns=T0)
    store.close()
    assert (paths.log_dir / "errlog.1").exists()
    for args, text_before in before.items():
        after = runner.invoke(fmdump.cli, ["-R", str(root), *args]).stdout
        lines = after.splitlines()
        assert len(lines) == len(set(lines))
        assert sorted(lines) == sorted(text_before.splitlines())
    monkeypatch.delenv("TZ")
    time.tzset()


def test_archive_of_an_older_fmd_is_read(tmp_path: Path) -> None:
    """An archive written before the error log had its count columns is still read
    by fmdump (the missing columns read as their defaults)."""
    root = tmp_path / "root"
    paths = Paths(root)
    store = Store("", db_file=paths.db_file)
    _populate(store)
    with store.engine.begin() as conn:
        result = rotate_log(conn, "errlog", paths.log_dir, now_ns=T0)
    store.close()
    assert result.path is not None
    con = sqlite3.connect(result.path)
    con.execute("ALTER TABLE errlog DROP COLUMN last_ns")
    con.execute("ALTER TABLE errlog DROP COLUMN count")
    con.commit()
    con.close()
    out = CliRunner().invoke(fmdump.cli, ["-e", "--json", str(result.path)])
    assert out.exit_code == 0, out.output
    assert [orjson.loads(line)["class"] for line in out.stdout.splitlines()] == [
        f"ereport.test.e{i}" for i in (3, 5, 6, 7, 8)
    ]
