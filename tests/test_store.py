"""The store: migrations, the single writer with group commit, and queries,
on SQLite and (when FMD_TEST_PG_URL is set) on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from fmd import states
from fmd.errors import StoreError
from fmd.store import Op, Store, WriteTxn, queries, schema
from tests.pgschema import pg_schema_url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store("", db_file=tmp_path / "fmd.db")
        yield s
        s.close()
        return
    with pg_schema_url() as url:
        s = Store(url, db_file=tmp_path / "x")
        try:
            yield s
        finally:
            s.close()


def _row(i: int, *, cls: str = "ereport.test.a", ena: int = 1, state: int = 1) -> tuple[Any, ...]:
    row = {
        "id": i,
        "time_ns": 1000 + i,
        "recv_ns": 2000 + i,
        "ena": schema.ena_to_db(ena),
        "class": cls,
        "detector": None,
        "payload": "{}",
        "state": state,
        "committed": False,
        "injected": False,
        "xprt": "test",
        "count": 1,
        "last_ns": None,
    }
    return tuple(row[c] for c in schema.ERRLOG_COLUMNS)


class _Op(Op):
    def __init__(self, fn: Any, weight: int = 1) -> None:
        self.fn = fn
        self.weight = weight
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def apply(self, tx: WriteTxn) -> None:
        self.fn(tx)

    def done(self, error: BaseException | None) -> None:
        self.error = error
        self.finished.set()


def test_migrations_are_recorded_once(store: Store) -> None:
    """Opening a store applies the named migrations once and records them."""
    with store.reader() as conn:
        from fmd.store import migrations

        assert migrations.applied(conn) == [
            "0001_initial",
            "0002_serd_engines",
            "0003_log_frontier",
            "0004_hw_state",
            "0005_responses",
            "0006_case_ereports",
            "0007_errlog_counts",
            "0008_log_rowid_ids",
            "0009_source_positions",
        ]
    again = Store(store.url, db_file=Path("/unused"))
    with again.reader() as conn:
        assert migrations.applied(conn) == [
            "0001_initial",
            "0002_serd_engines",
            "0003_log_frontier",
            "0004_hw_state",
            "0005_responses",
            "0006_case_ereports",
            "0007_errlog_counts",
            "0008_log_rowid_ids",
            "0009_source_positions",
        ]
    again.close()


def test_case_ereports_column_is_added_to_an_older_database(tmp_path: Path) -> None:
    """A database from before 0006_case_ereports gets the column (0 for old cases)."""
    db = tmp_path / "fmd.db"
    Store("", db_file=db).close()
    old = sqlite3.connect(db)
    old.execute("INSERT INTO cases (uuid, module, state, flags, open_time_ns, data) "
                "VALUES ('u', 'm', 1, 2, 1, '{}')")  # fmt: skip
    old.execute("ALTER TABLE cases DROP COLUMN ereports")
    old.execute("DELETE FROM fmd_migrations WHERE name = '0006_case_ereports'")
    old.commit()
    old.close()
    store = Store("", db_file=db)
    with store.reader() as conn:
        assert [
            tuple(r) for r in conn.execute(select(schema.cases.c.uuid, schema.cases.c.ereports))
        ] == [("u", 0)]
    store.close()


def test_log_ids_become_sqlite_rowids(tmp_path: Path) -> None:
    """An SQLite database whose log ids are BIGINT keys (an older fmd) is rebuilt with
    the id as the rowid, every row and index kept."""
    db = tmp_path / "fmd.db"
    Store("", db_file=db).close()
    old = sqlite3.connect(db)
    old.execute("DROP TABLE errlog")
    old.execute(
        "CREATE TABLE errlog (id BIGINT NOT NULL, time_ns BIGINT NOT NULL, recv_ns BIGINT "
        "NOT NULL, ena BIGINT NOT NULL, class VARCHAR(255) NOT NULL, detector TEXT, payload "
        "TEXT NOT NULL, state SMALLINT NOT NULL, committed BOOLEAN NOT NULL, injected BOOLEAN "
        "NOT NULL, xprt TEXT NOT NULL, count INTEGER DEFAULT 1 NOT NULL, last_ns BIGINT, "
        "PRIMARY KEY (id))"
    )
    old.execute(f"INSERT INTO errlog VALUES ({', '.join('?' * 13)})", _row(7))
    old.execute("DELETE FROM fmd_migrations WHERE name = '0008_log_rowid_ids'")
    old.commit()
    old.close()
    store = Store("", db_file=db)
    store.close()
    check = sqlite3.connect(db)
    assert check.execute("SELECT rowid, id FROM errlog").fetchall() == [(7, 7)]
    indexes = {r[1] for r in check.execute("PRAGMA index_list(errlog)")}
    assert indexes == {"ix_errlog_time", "ix_errlog_class"}
    check.close()


def test_newer_database_is_refused(store: Store) -> None:
    """A database recording a migration this fmd does not know is refused."""
    with store.engine.begin() as conn:
        conn.execute(insert(schema.migrations).values(name="9999_future", applied_ns=1))
    with pytest.raises(StoreError, match="newer fmd"):
        Store(store.url, db_file=Path("/unused"))


def test_writer_group_commits_and_acks_after_commit(store: Store) -> None:
    """Many ops submitted together share transactions; done runs only after the commit."""
    writer = store.writer(max_batch=10_000)
    seen_in_done: list[int] = []
    ops = []

    def make(i: int) -> _Op:
        def fn(tx: WriteTxn) -> None:
            tx.allocate("errlog", 1)
            tx.insert_errlog([_row(i)])

        op = _Op(fn)
        orig = op.done

        def done(error: BaseException | None) -> None:
            # Another connection must already see the row: the commit happened.
            with store.reader() as conn:
                seen_in_done.append(len(queries.events_by_id(conn, [i])))
            orig(error)

        op.done = done  # type: ignore[method-assign]
        return op

    for i in range(1, 201):
        op = make(i)
        ops.append(op)
        writer.submit(op)
    writer.start()
    for op in ops:
        assert op.finished.wait(30)
    writer.stop()
    assert [op.error for op in ops] == [None] * 200
    assert seen_in_done == [1] * 200
    assert writer.stats["txns"] < 200
    assert writer.last_id("errlog") == 200


def test_failing_op_is_isolated(store: Store) -> None:
    """An op that raises fails alone; the others of its batch are committed."""
    writer = store.writer()
    good = _Op(lambda tx: tx.insert_errlog([_row(1)]))
    bad = _Op(lambda tx: tx.insert_errlog([_row(1)]))  # duplicate primary key
    good2 = _Op(lambda tx: tx.insert_errlog([_row(2)]))
    for op in (good, bad, good2):
        writer.submit(op)
    writer.start()
    for op in (good, bad, good2):
        assert op.finished.wait(30)
    writer.stop()
    assert good.error is None and good2.error is None
    assert bad.error is not None
    with store.reader() as conn:
        assert queries.count(conn, "errlog") == 2


def test_states_move_forward_and_commit_discards_received(store: Store) -> None:
    """States never move backwards; committing turns RECEIVED into DISCARDED only."""
    writer = store.writer()
    writer.start()

    def fill(tx: WriteTxn) -> None:
        tx.insert_errlog([_row(i) for i in range(1, 5)])
        tx.advance_states([(2, states.STATE_ACCEPTED), (3, states.STATE_DIAGNOSED)])
        tx.advance_states([(3, states.STATE_ACCEPTED)])
        tx.commit_range("errlog", 0, 3)

    writer.call(fill)
    writer.stop()
    with store.reader() as conn:
        rows = {r.id: (r.state, r.committed) for r in conn.execute(select(schema.errlog))}
    assert rows == {
        1: (states.STATE_DISCARDED, True),
        2: (states.STATE_ACCEPTED, True),
        3: (states.STATE_DIAGNOSED, True),
        4: (states.STATE_RECEIVED, False),
    }
    with store.reader() as conn:
        assert [r.id for r in queries.uncommitted(conn, "errlog")] == [4]


def test_upserts_replace_rows(store: Store) -> None:
    """Checkpoints, cases, resources and offsets are replaced by key, not duplicated."""
    writer = store.writer()
    writer.start()

    def write(tx: WriteTxn, n: int) -> None:
        tx.save_checkpoint("m", f'{{"n": {n}}}', n)
        tx.set_offset("file:/x", "1:2", 10 * n)
        case = {
            "uuid": "u1",
            "module": "m",
            "state": 1,
            "flags": 0,
            "principal": 1,
            "code": "FMD-8000-11",
            "diag_time_ns": n,
            "open_time_ns": 1,
            "data": "{}",
            "ereports": n,
        }
        sus = [
            {
                "uuid": "u1",
                "idx": 0,
                "class": "fault.x",
                "certainty": 100,
                "asru": "a",
                "fru": "f",
                "resource": None,
                "location": "L",
                "status": n,
            }
        ]
        tx.save_case("u1", case, sus, [1, 2, n + 2])
        tx.save_resource(
            {"fmri": "a", "uuid": "u1", "code": "c", "flags": n, "reason": None, "updated_ns": n}
        )

    writer.call(lambda tx: write(tx, 1))
    writer.call(lambda tx: write(tx, 2))
    writer.stop()
    with store.reader() as conn:
        assert queries.load_checkpoints(conn) == {"m": '{"n": 2}'}
        assert queries.load_positions(conn) == {"file:/x": ("1:2", 20, None)}
        rows = conn.execute(select(schema.cases.c.uuid, schema.cases.c.diag_time_ns)).all()
        assert [tuple(r) for r in rows] == [("u1", 2)]
        assert queries.suspect_statuses(conn, ["u1"]) == {"u1": [2]}
        cases = queries.load_cases(conn)
        assert [(c["uuid"], c["events"]) for c in cases] == [("u1", [1, 2, 3, 4])]
        assert conn.execute(select(schema.resources.c.flags)).scalars().all() == [2]


def test_ena_round_trips_full_64_bits(store: Store) -> None:
    """ENAs at and above 2**63 survive the signed BIGINT column."""
    writer = store.writer()
    writer.start()
    enas = [0, 1, 2**63 - 1, 2**63, 2**64 - 1]
    writer.call(lambda tx: tx.insert_errlog([_row(i + 1, ena=e) for i, e in enumerate(enas)]))
    writer.stop()
    with store.reader() as conn:
        got = [schema.ena_from_db(r.ena) for r in conn.execute(queries.errlog_select())]
    assert got == enas


def test_class_globs_filter_in_sql(store: Store) -> None:
    """fmdump's class globs (ORed, case-sensitive) select in the database; % and _ are literal."""
    writer = store.writer()
    writer.start()
    classes = ["ereport.cpu.a", "ereport.cpu.b_c", "ereport.mem.x", "ereport.cpu%", "ereport.CPU.z"]
    writer.call(lambda tx: tx.insert_errlog([_row(i + 1, cls=c) for i, c in enumerate(classes)]))
    writer.stop()

    def sel(*globs: str) -> list[str]:
        with store.reader() as conn:
            q = queries.errlog_select(classes=globs, sqlite=store.sqlite)
            return [r._mapping["class"] for r in conn.execute(q)]

    assert sel("ereport.cpu.*") == ["ereport.cpu.a", "ereport.cpu.b_c"]
    assert sel("ereport.cpu.b?c") == ["ereport.cpu.b_c"]
    assert sel("*.x", "ereport.cpu.a") == ["ereport.cpu.a", "ereport.mem.x"]
    assert sel("ereport.cpu%") == ["ereport.cpu%"]
    assert sel("ereport.CPU.*") == ["ereport.CPU.z"]


def test_readonly_store_needs_an_existing_database(tmp_path: Path) -> None:
    """fmdump's read-only open fails clearly when fmd has never run on the root."""
    with pytest.raises(StoreError, match="no fmd database"):
        Store("", db_file=tmp_path / "missing.db", readonly=True)


def test_readonly_store_cannot_write(tmp_path: Path) -> None:
    """A read-only SQLite store refuses writes."""
    Store("", db_file=tmp_path / "fmd.db").close()
    ro = Store("", db_file=tmp_path / "fmd.db", readonly=True)
    with pytest.raises(Exception, match="readonly"), ro.engine.begin() as conn:
        conn.execute(insert(schema.checkpoints).values(module="m", data="{}", updated_ns=1))
    ro.close()


def test_bad_url_is_a_store_error(tmp_path: Path) -> None:
    """A malformed store.url is reported as a StoreError naming it."""
    with pytest.raises(StoreError, match="not a database URL"):
        Store("not a url", db_file=tmp_path / "x")


def test_wal_is_checkpointed_outside_the_writer(tmp_path: Path) -> None:
    """Commits leave the WAL to the checkpointer, which copies every page back."""
    from fmd.store.wal import WalCheckpointer

    s = Store("", db_file=tmp_path / "fmd.db")
    writer = s.writer()
    writer.start()
    writer.call(lambda tx: tx.insert_errlog([_row(i) for i in range(1, 3001)]))
    wal = tmp_path / "fmd.db-wal"
    assert wal.stat().st_size > 0
    busy, pages, copied = WalCheckpointer(s.engine).checkpoint()
    assert (busy, copied) == (0, pages)
    assert pages > 0
    writer.stop()
    s.close()


def test_failed_checkpoint_fails_the_module_and_later_ones_are_skipped(tmp_path: Path) -> None:
    """A checkpoint the store refuses marks its module failed; its next checkpoint is skipped."""
    from fmd.ckpt import CheckpointOp

    s = Store("", db_file=tmp_path / "fmd.db")
    writer = s.writer()
    failed: set[str] = set()
    reported: list[str] = []

    def op(row: dict[str, Any] | None) -> CheckpointOp:
        cases = [("u1", row, None, [])] if row is not None else []
        return CheckpointOp(
            module="m",
            last_seen={"errlog": 0, "fltlog": 0},
            doc="{}",
            cases=cases,
            case_deletes=[],
            states=[],
            list_events=[],
            resources=[],
            now_ns=1,
            failed_modules=failed,
            on_failure=lambda m, e: reported.append(m),
        )

    bad = op(
        {
            "uuid": "u1",
            "module": "m",
            "state": None,
            "flags": 0,
            "principal": None,
            "code": None,
            "diag_time_ns": None,
            "open_time_ns": 1,
            "data": "{}",
        }
    )
    later = op(None)
    writer.submit(bad)
    writer.submit(later)
    writer.start()
    writer.stop()
    assert (failed, reported, later.skipped) == ({"m"}, ["m"], True)
    with s.reader() as conn:
        assert queries.load_checkpoints(conn) == {}
    s.close()
