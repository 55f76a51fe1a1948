"""Damaged databases: the start-up check, moving a corrupt file aside, salvaging
what is readable, and fmdump on damaged live logs and archives."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from fmd.paths import Paths
from fmd.store import Store, schema
from fmd.store.tolerant import TolerantReader, copy_tables, is_corruption
from tests.fmdproc import FmdProcess, _env, cli

PAGE = 4096
ROWS = 3000


# -- helpers -----------------------------------------------------------------------


def marker(i: int) -> str:
    return f"marker-{i:06d}"


@dataclass(frozen=True)
class Leaf:
    """A leaf page of a table's b-tree: its number, its ancestors' and its rows' ids."""

    pageno: int
    ancestors: tuple[int, ...]
    ids: tuple[int, ...]

    @property
    def offset(self) -> int:
        return (self.pageno - 1) * PAGE


def leaves(db: Path, table: str = "errlog") -> list[Leaf]:
    """The leaf pages of ``table`` in key order (from SQLite's dbstat table)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        pages = conn.execute(
            "SELECT path, pageno, pagetype, ncell FROM dbstat WHERE name = ? ORDER BY path",
            (table,),
        ).fetchall()
        ids = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY rowid")]
    except sqlite3.OperationalError as exc:
        pytest.skip(f"this SQLite cannot list pages (dbstat): {exc}")
    finally:
        conn.close()
    by_path = {path: pageno for path, pageno, _, _ in pages}
    out, start = [], 0
    for path, pageno, kind, ncell in pages:
        if kind == "leaf":
            parents = tuple(by_path[p] for p in by_path if path.startswith(p) and p != path)
            out.append(Leaf(pageno, parents, tuple(ids[start : start + ncell])))
            start += ncell
    assert len(ids) == start
    return out


def middle_leaf(db: Path) -> Leaf:
    found = leaves(db)
    return found[len(found) // 2]


def cut_short(db: Path, leaf: Leaf) -> set[int]:
    """Truncate ``db`` at ``leaf``; the ids whose page (or an ancestor) is gone."""
    gone = leaf.pageno
    lost = {i for f in leaves(db) if max(f.pageno, *f.ancestors) >= gone for i in f.ids}
    os.truncate(db, leaf.offset)
    return lost


def smash(path: Path, offset: int, length: int = PAGE, seed: int = 8) -> None:
    """Write random bytes over ``length`` bytes of ``path`` (as the issue did)."""
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(random.Random(seed).randbytes(length))


def errlog_row(i: int, *, committed: bool = True) -> tuple[Any, ...]:
    payload = orjson.dumps({"m": marker(i)}).decode()
    return (i, i, i, i, "ereport.io.test", None, payload, 3, int(committed), 0, "test", 1, None)


def make_db(path: Path, rows: int = ROWS, *, uncommitted_from: int | None = None) -> None:
    """An fmd database whose error log holds ids 1..rows, each with its marker."""
    Store("", db_file=path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO errlog VALUES ({', '.join('?' * 13)})",
        [
            errlog_row(i, committed=uncommitted_from is None or i < uncommitted_from)
            for i in range(1, rows + 1)
        ],
    )
    upto = rows if uncommitted_from is None else uncommitted_from - 1
    conn.execute("UPDATE log_frontier SET committed_upto = ? WHERE log = 'errlog'", (upto,))
    conn.execute("COMMIT")
    conn.close()


def read_errlog(src: Path, tmp_path: Path) -> tuple[list[int], Any]:
    """Copy the readable error log of ``src`` into a new database: (ids, what was found)."""
    Store("", db_file=tmp_path / "copy.db").close()
    dst = sqlite3.connect(tmp_path / "copy.db", isolation_level=None)
    reads = copy_tables(sqlite3.connect(f"file:{src}?mode=ro", uri=True), dst, [schema.errlog])
    ids = [r[0] for r in dst.execute("SELECT id FROM errlog ORDER BY id")]
    dst.close()
    return ids, reads["errlog"]


def events(n: int, first: int = 1) -> list[dict[str, Any]]:
    return [{"class": "ereport.io.test.x", "m": marker(i)} for i in range(first, first + n)]


def fill(fmd: FmdProcess, n: int = ROWS) -> None:
    replies = fmd.send_lines(events(n))
    assert [True] * n == [r["ok"] for r in replies]
    fmd.quiesce()


def dumped(root: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """fmdump --json: exit code, records, stderr."""
    out = cli("fmdump", "--json", *args, root=root)
    return out.returncode, [orjson.loads(line) for line in out.stdout.splitlines()], out.stderr


def markers(records: list[dict[str, Any]]) -> list[int]:
    return sorted(int(r["m"][len("marker-") :]) for r in records if "m" in r)


def corrupt_files(paths: Paths) -> list[str]:
    return sorted(p.name for p in paths.var_dir.glob("fmd.db.corrupt-*"))


def said(stderr: str) -> list[str]:
    """What a command told its user (without the daemon's JSON log lines)."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


@pytest.fixture
def detached(root: Path) -> Iterator[Paths]:
    """A root whose detached daemon, if one was started, is stopped afterwards."""
    paths = Paths(root)
    yield paths
    stop_detached(paths)


def stop_detached(paths: Paths) -> None:
    """SIGTERM the detached daemon and wait until it releases its lock (store closed)."""
    try:
        fd = os.open(paths.pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        pid = int(os.read(fd, 32).decode().strip() or 0)
        if pid:
            os.kill(pid, signal.SIGTERM)
            fcntl.flock(fd, fcntl.LOCK_SH)  # granted once the daemon lets go
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def stopped_daemon(root: Path, fmd_factory: list[FmdProcess], n: int = ROWS) -> Paths:
    """A root whose daemon stored ``n`` ereports and then stopped cleanly."""
    fmd = FmdProcess(root)
    fmd_factory.append(fmd)
    fmd.start()
    fill(fmd, n)
    assert fmd.stop() == 0
    return fmd.paths


# -- the tolerant reader -------------------------------------------------------------


def test_reader_skips_a_damaged_leaf_page(tmp_path: Path) -> None:
    """A page of random bytes in the middle of a table's b-tree loses exactly its rows."""
    db = tmp_path / "fmd.db"
    make_db(db)
    leaf = middle_leaf(db)
    lost = set(leaf.ids)
    smash(db, leaf.offset)
    ids, read = read_errlog(db, tmp_path)
    assert sorted(set(range(1, ROWS + 1)) - lost) == ids
    assert [(min(lost) - 1,)] == [g.after_key for g in read.gaps]
    assert [(max(lost) + 1,)] == [g.before_key for g in read.gaps]
    assert len(lost) == read.lost
    assert [
        f"records between id {min(lost) - 1} and id {max(lost) + 1} could not be read: "
        "database disk image is malformed"
    ] == read.messages()


def test_reader_reports_rows_whose_values_do_not_fit(tmp_path: Path) -> None:
    """Rows SQLite returns but whose values are damaged are skipped one by one."""
    db = tmp_path / "fmd.db"
    make_db(db, 10)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE errlog SET class = CAST(x'ff41' AS TEXT) WHERE id = 3")
    conn.execute("UPDATE errlog SET time_ns = 'soon' WHERE id = 7")
    conn.close()
    ids, read = read_errlog(db, tmp_path)
    assert ids == [1, 2, 4, 5, 6, 8, 9, 10]
    assert read.messages() == [
        "record id 3 is damaged: class is not valid UTF-8 text",
        "record id 7 is damaged: time_ns is not an integer",
    ]


def test_reader_reads_a_truncated_file_up_to_its_end(tmp_path: Path) -> None:
    """A file cut short gives back every row stored before the cut."""
    db = tmp_path / "fmd.db"
    make_db(db)
    lost = cut_short(db, middle_leaf(db))
    ids, read = read_errlog(db, tmp_path)
    assert list(range(1, min(lost))) == ids
    assert [(min(lost) - 1,)] == [g.after_key for g in read.gaps]
    assert [g.before_rowid for g in read.gaps] == [None]


def test_reader_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A destroyed header leaves nothing readable, and says so instead of raising."""
    db = tmp_path / "fmd.db"
    make_db(db, 10)
    smash(db, 0, 100)
    ids, read = read_errlog(db, tmp_path)
    assert ids == []
    assert read.messages() == ["no records could be read: file is not a database"]


def test_only_sqlite_verdicts_count_as_damage(tmp_path: Path) -> None:
    """Busy, missing or read-only databases are never mistaken for corrupt ones."""
    db = tmp_path / "fmd.db"
    make_db(db, 10)
    locked = sqlite3.connect(db, isolation_level=None)
    locked.execute("PRAGMA journal_mode=DELETE")
    locked.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0)
    errors = []
    for conn, sql in ((other, "SELECT * FROM errlog"), (other, "SELECT * FROM nowhere")):
        try:
            conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            errors.append(is_corruption(exc))
    locked.execute("ROLLBACK")
    smash(db, 0, 100)
    try:
        other.execute("SELECT * FROM errlog").fetchall()
    except sqlite3.DatabaseError as exc:
        errors.append(is_corruption(exc))
    assert errors == [False, False, True]


def test_reader_never_returns_a_row_twice(tmp_path: Path) -> None:
    """Every damaged page of a heavily damaged table costs its rows and no others."""
    db = tmp_path / "fmd.db"
    make_db(db)
    found = leaves(db)
    hit = [found[i] for i in (1, 10, 11, 20, len(found) - 5)]
    lost = {i for leaf in hit for i in leaf.ids}
    for leaf in hit:
        smash(db, leaf.offset, seed=leaf.pageno)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.text_factory = bytes
    reader = TolerantReader(conn, schema.errlog)
    ids = [row[0] for row in reader.rows()]
    assert sorted(set(range(1, ROWS + 1)) - lost) == ids
    assert len(lost) == reader.result.lost


# -- the start-up check and the salvage -----------------------------------------------


def test_clean_close_lets_the_next_open_skip_the_check(tmp_path: Path) -> None:
    """A file unchanged since a clean close is not checked again; a changed one is."""
    db = tmp_path / "fmd.db"
    make_db(db, 10)
    seen = []
    for change in (False, False, True):  # make_db wrote to it after its stamp
        if change:
            os.utime(db, ns=(1, 1))
        with structlog.testing.capture_logs() as logs:
            Store("", db_file=db).close()
        seen.append([e["event"] for e in logs if e["event"].startswith("store_")])
    assert seen == [["store_checked"], ["store_check_skipped"], ["store_checked"]]


def test_emptied_file_is_not_taken_for_a_new_database(tmp_path: Path) -> None:
    """A database emptied since a clean shutdown is reported and moved aside."""
    db = tmp_path / "fmd.db"
    make_db(db, 10)
    Store("", db_file=db).close()
    size = db.stat().st_size
    os.truncate(db, 0)
    store = Store("", db_file=db)
    store.close()
    assert store.salvage is not None
    assert f"it is empty, but held {size} bytes when fmd last stopped" == store.salvage.problem
    assert [p.stat().st_size for p in tmp_path.glob("fmd.db.corrupt-*[0-9]Z")] == [0]


def test_salvage_keeps_ids_and_makes_the_copy_consistent(tmp_path: Path) -> None:
    """Lost top rows: frontier, checkpoints, SERD engines and case links stop pointing at
    ids the writer will hand out again; orphans go; everything else keeps its values."""
    # The rows of the last leaf page (the same layout whatever the committed flags).
    scratch = tmp_path / "scratch.db"
    make_db(scratch)
    first = min(leaves(scratch)[-1].ids)
    db = tmp_path / "fmd.db"
    make_db(db, uncommitted_from=first + 1)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO cases VALUES ('a', 'm', 1, 0, 10, NULL, NULL, 5, '{}', 0)")
    conn.executemany(
        "INSERT INTO suspects VALUES (?, 0, 'fault.x', 100, NULL, NULL, NULL, NULL, 1)",
        [("a",), ("gone",)],
    )
    conn.executemany(
        "INSERT INTO case_events VALUES (?, ?)", [("a", 10), ("a", first + 1), ("gone", 11)]
    )
    ckpt = {"version": 1, "last_seen": {"errlog": ROWS, "fltlog": 0}, "bufs": {}}
    conn.execute("INSERT INTO checkpoints VALUES ('m', ?, 1)", (orjson.dumps(ckpt).decode(),))
    held = [[10, 10], [ROWS - 1, ROWS - 1]]
    serd = {"name": "e", "n": 3, "t": 10, "fired": False, "events": held}
    conn.execute("INSERT INTO serd_engines VALUES ('m', 'e', ?)", (orjson.dumps(serd).decode(),))
    conn.execute("INSERT INTO serd_engines VALUES ('m', 'broken', '{')")
    conn.close()
    last = leaves(db)[-1]
    assert set(range(first + 1, ROWS + 1)) <= set(last.ids)  # the uncommitted rows are on it
    top = min(last.ids) - 1
    smash(db, last.offset)

    store = Store("", db_file=db)
    report = store.salvage
    with store.reader() as c:
        ids = [r[0] for r in c.exec_driver_sql("SELECT id FROM errlog ORDER BY id")]
        frontier = c.exec_driver_sql("SELECT log, committed_upto FROM log_frontier").all()
        links = c.exec_driver_sql("SELECT uuid, event_id FROM case_events").all()
        suspects = c.exec_driver_sql("SELECT uuid FROM suspects").all()
        ckpts = c.exec_driver_sql("SELECT data FROM checkpoints").all()
        engines = c.exec_driver_sql("SELECT name, data FROM serd_engines").all()
        row = c.exec_driver_sql("SELECT * FROM errlog WHERE id = 1234").one()
    store.close()

    assert report is not None
    assert list(range(1, top + 1)) == ids
    assert tuple(errlog_row(1234)) == tuple(row)
    assert {("errlog", top), ("fltlog", 0)} == set(frontier)
    assert links == [("a", 10)]
    assert suspects == [("a",)]
    assert {"errlog": top, "fltlog": 0} == orjson.loads(ckpts[0][0])["last_seen"]
    assert [(n, orjson.loads(d)["events"]) for n, d in engines] == [("e", [[10, 10]])]
    assert f"recovered {top} of about {ROWS} error-log events" in report.warnings()[1]
    assert [
        "1 suspects of cases that were lost were dropped",
        "1 case-event links of cases that were lost were dropped",
        f"1 case-event links to error-log events above id {top} (lost, and the id will be "
        "used again) were dropped",
        "1 SERD engines whose saved record was damaged were dropped",
        f"1 events held by SERD engines (error-log ids above {top}, which were lost) were "
        "removed from the engines",
        f"module m's checkpoint was rewound to the last recovered event (errlog from id "
        f"{ROWS} to {top})",
        f"the errlog commit frontier was lowered from id {first} to {top}",
    ] == report.adjustments
    assert report.report_file is not None
    table = [ln.split() for ln in report.report_file.read_text().splitlines()]
    assert [["errlog", str(top), str(ROWS - top), "0"]] == [r for r in table if r[:1] == ["errlog"]]


# -- the daemon -------------------------------------------------------------------------


def test_random_bytes_in_the_middle_are_moved_aside_and_salvaged(
    root: Path, fmd_factory: list[FmdProcess], detached: Paths
) -> None:
    """fmd moves the damaged file aside, says what it recovered, and carries on."""
    paths = stopped_daemon(root, fmd_factory)
    leaf = middle_leaf(paths.db_file)
    lost = set(leaf.ids)
    smash(paths.db_file, leaf.offset)

    out = cli("fmd", root=root)
    assert out.returncode == 0, out.stderr
    moved = corrupt_files(paths)
    warnings = said(out.stderr)
    [aside] = [m for m in moved if re.fullmatch(r"fmd\.db\.corrupt-\d{8}T\d{6}Z", m)]
    assert f"{aside}.txt" in moved
    assert warnings[0].startswith(f"fmd: warning: the database {paths.db_file} was corrupt")
    assert (
        f"fmd: warning: recovered {ROWS - len(lost)} of about {ROWS} error-log events"
        in warnings[1]
    )
    assert any(f"between id {min(lost) - 1} and id {max(lost) + 1}" in w for w in warnings)
    assert "fmd: warning: the salvage report is in" in warnings[-1]

    fmd = FmdProcess(root)
    assert [r["ok"] for r in fmd.send_lines(events(1, first=ROWS + 1))] == [True]
    fmd.quiesce()
    rc, records, err = dumped(root, "-e")
    assert (rc, err) == (0, "")
    assert sorted(set(range(1, ROWS + 2)) - lost) == markers(records)


def test_truncated_db_is_moved_aside_and_salvaged(
    root: Path, fmd_factory: list[FmdProcess], detached: Paths
) -> None:
    """A database cut short is salvaged up to the cut, not refused as malformed."""
    paths = stopped_daemon(root, fmd_factory)
    lost = cut_short(paths.db_file, middle_leaf(paths.db_file))

    out = cli("fmd", root=root)
    assert out.returncode == 0, out.stderr
    assert "was corrupt (database disk image is malformed)" in out.stderr
    fmd = FmdProcess(root)
    assert [r["ok"] for r in fmd.send_lines(events(1, first=ROWS + 1))] == [True]
    fmd.quiesce()
    rc, records, err = dumped(root, "-e")
    assert (rc, err) == (0, "")
    assert sorted(set(range(1, ROWS + 2)) - lost) == markers(records)


def test_destroyed_header_is_moved_aside_and_fmd_starts(
    root: Path, fmd_factory: list[FmdProcess], detached: Paths
) -> None:
    """A file SQLite does not recognise as a database counts as corrupt too."""
    paths = stopped_daemon(root, fmd_factory, 10)
    smash(paths.db_file, 0, 100)
    out = cli("fmd", root=root)
    assert out.returncode == 0, out.stderr
    assert "was corrupt (file is not a database)" in out.stderr
    rc, records, err = dumped(root, "-e")
    assert (rc, records, err) == (0, [], "")


def test_sigkill_with_uncommitted_events_is_not_corruption(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A write-ahead log left by a crash is checked and opened, never moved aside."""
    fmd = FmdProcess(root)
    fmd_factory.append(fmd)
    fmd.start()
    replies = fmd.send_lines(events(500))
    fmd.kill()
    assert (fmd.paths.var_dir / "fmd.db-wal").stat().st_size > 0
    fmd.start()
    fmd.quiesce()
    fmd.stop()
    fmd.start()
    fmd.stop()
    log = [orjson.loads(line) for line in fmd.stderr().splitlines() if line.startswith("{")]
    checks = [e["event"] for e in log if e["event"].startswith("store_")]
    assert (corrupt_files(fmd.paths), sum(r["ok"] for r in replies)) == ([], 500)
    assert checks == ["store_checked", "store_checked", "store_check_skipped"]
    rc, records, _ = dumped(root, "-e")
    assert (0, list(range(1, 501))) == (rc, markers(records))


# -- fmdump on damaged files ------------------------------------------------------------


@pytest.fixture
def archived(root: Path, fmd_factory: list[FmdProcess]) -> Paths:
    """A stopped daemon's root whose error log was rotated into errlog.0."""
    fmd = FmdProcess(root)
    fmd_factory.append(fmd)
    fmd.start()
    fill(fmd)
    assert fmd.cli("fmadm", "rotate", "errlog").returncode == 0
    assert fmd.stop() == 0
    return fmd.paths


@pytest.mark.parametrize("args", [(), ("-V",), ("--file",)], ids=["default", "V", "operand"])
def test_fmdump_prints_what_a_damaged_archive_still_holds(
    archived: Paths, args: tuple[str, ...]
) -> None:
    """Every readable record is printed, each unreadable range named, exit 3."""
    archive = archived.log_dir / "errlog.0"
    held = {i for leaf in leaves(archive) for i in leaf.ids}
    leaf = middle_leaf(archive)
    lost = set(leaf.ids)
    smash(archive, leaf.offset)
    expected = set(range(1, ROWS + 1)) - lost
    if args == ("--file",):
        expected &= held
        cmd = [sys.executable, "-m", "fmd.cli.fmdump", "--json", "-e", str(archive)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        rc, stdout, stderr = out.returncode, out.stdout, out.stderr
        records = [orjson.loads(line) for line in stdout.splitlines()]
    else:
        out = cli("fmdump", "-e", *args, root=archived.root)
        rc, stdout, stderr = out.returncode, out.stdout, out.stderr
        rc2, records, _ = dumped(archived.root, "-e")
        assert rc == rc2
        lines = stdout.splitlines()
        shown = [ln for ln in lines if ln.endswith("ereport.io.test.x") and ln[0] != " "]
        assert len(expected) == len(shown)
    assert rc == 3
    assert sorted(expected) == markers(records)
    assert [
        f"fmdump: {archive}: records between id {min(lost) - 1} and id {max(lost) + 1} "
        "could not be read: database disk image is malformed"
    ] == stderr.splitlines()


def test_fmdump_prints_what_a_damaged_live_log_still_holds(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fmdump on a stopped daemon's damaged database reads around the damage."""
    paths = stopped_daemon(root, fmd_factory)
    leaf = leaves(paths.db_file)[-3]
    lost = set(leaf.ids)
    smash(paths.db_file, leaf.offset)
    for args in (("-e",), ("-A",)):
        rc, records, err = dumped(root, *args)
        assert rc == 3
        assert sorted(set(range(1, ROWS + 1)) - lost) == markers(records)
        assert "Traceback" not in err
        assert f"records between id {min(lost) - 1} and id {max(lost) + 1}" in err


def test_fmdump_reads_the_archives_when_the_live_log_is_unreadable(archived: Paths) -> None:
    """A live database SQLite cannot open is reported; the archives are still printed."""
    held = sorted(i for leaf in leaves(archived.log_dir / "errlog.0") for i in leaf.ids)
    smash(archived.db_file, 0, 100)
    rc, records, err = dumped(archived.root, "-e")
    assert rc == 3
    assert held == markers(records)
    assert [f"fmdump: {archived.db_file}: cannot be read: file is not a database"] == (
        err.splitlines()
    )


def test_fmdump_skips_a_record_whose_text_is_not_utf8(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A record whose stored text is not UTF-8 is named; every other one is printed."""
    paths = stopped_daemon(root, fmd_factory, 10)
    conn = sqlite3.connect(paths.db_file, isolation_level=None)
    conn.execute("UPDATE errlog SET payload = CAST(x'7b22ff' AS TEXT) WHERE id = 4")
    conn.close()
    rc, records, err = dumped(root, "-e")
    assert rc == 3
    assert [i for i in range(1, 11) if i != 4] == markers(records)
    assert [
        f"fmdump: {paths.db_file}: record id 4 is damaged: payload is not valid UTF-8 text"
    ] == (err.splitlines())
