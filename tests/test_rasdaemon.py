"""rasdaemon's database: the reader, the follower, the one-shot import, and fminject.

The databases are built with rasdaemon's own table layouts (ras-record.c: every
table ``id INTEGER PRIMARY KEY, timestamp TEXT, ...``), the current one and an
older one from before ``ppin``/``microcode``/``dev_name`` were added, with values
bound as rasdaemon binds them (64-bit registers as signed integers).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import TransportError
from fmd.hw import rasdaemon as rd
from fmd.hw.events import AER_CLASS_PREFIX, MEMORY_FAILURE_CLASS
from fmd.hw.mca import MEM_CE_CLASS, MEM_UE_CLASS
from fmd.xprts.rasdaemon import RasdaemonSource, import_database, source_name
from fmd.xprts.source import STATE_RUN
from tests.fmdproc import FmdProcess, cli
from tests.source_harness import SourceBench

# rasdaemon 0.8 (current): CREATE TABLE IF NOT EXISTS as ras-record.c builds it.
SCHEMA_CURRENT = (
    "CREATE TABLE IF NOT EXISTS mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, "
    "err_count INTEGER, err_type TEXT, err_msg TEXT, label TEXT, mc INTEGER, "
    "top_layer INTEGER, middle_layer INTEGER, lower_layer INTEGER, address INTEGER, "
    "grain INTEGER, syndrome INTEGER, driver_detail TEXT)",
    "CREATE TABLE IF NOT EXISTS aer_event (id INTEGER PRIMARY KEY, timestamp TEXT, "
    "dev_name TEXT, err_type TEXT, err_msg TEXT)",
    "CREATE TABLE IF NOT EXISTS mce_record (id INTEGER PRIMARY KEY, timestamp TEXT, "
    "mcgcap INTEGER, mcgstatus INTEGER, status INTEGER, addr INTEGER, misc INTEGER, "
    "ip INTEGER, tsc INTEGER, walltime INTEGER, ppin INTEGER, cpu INTEGER, cpuid INTEGER, "
    "apicid INTEGER, socketid INTEGER, cs INTEGER, bank INTEGER, cpuvendor INTEGER, "
    "microcode INTEGER, bank_name TEXT, error_msg TEXT, mcgstatus_msg TEXT, "
    "mcistatus_msg TEXT, mcastatus_msg TEXT, user_action TEXT, mc_location TEXT)",
    "CREATE TABLE IF NOT EXISTS memory_failure_event (id INTEGER PRIMARY KEY, "
    "timestamp TEXT, pfn TEXT, page_type TEXT, action_result TEXT)",
)
# An older rasdaemon: no ppin, microcode or dev_name, and no memory_failure_event table.
SCHEMA_OLD = (
    SCHEMA_CURRENT[0],
    "CREATE TABLE IF NOT EXISTS aer_event (id INTEGER PRIMARY KEY, timestamp TEXT, "
    "err_type TEXT, err_msg TEXT)",
    "CREATE TABLE IF NOT EXISTS mce_record (id INTEGER PRIMARY KEY, timestamp TEXT, "
    "mcgcap INTEGER, mcgstatus INTEGER, status INTEGER, addr INTEGER, misc INTEGER, "
    "ip INTEGER, tsc INTEGER, walltime INTEGER, cpu INTEGER, cpuid INTEGER, "
    "apicid INTEGER, socketid INTEGER, cs INTEGER, bank INTEGER, cpuvendor INTEGER, "
    "bank_name TEXT, error_msg TEXT, mcgstatus_msg TEXT, mcistatus_msg TEXT, "
    "mcastatus_msg TEXT, user_action TEXT, mc_location TEXT)",
)

# A corrected memory-controller read error on a Skylake-SP (mcelog#116's registers).
MCE_STATUS = 0x8C00004000010090
MCE_ADDR = 0x1EFA4C7CC40
MCE_MISC = 0x9000000200000086
SKX_CPUID = 0x50654  # family 6, model 0x55
WALLTIME = 1685541979  # 2023-05-31 14:06:19 UTC
STAMP = "2023-05-31 10:06:19 -0400"
SIM_DIMM_0_1 = (
    "hc://:product-id=fmd-sim:chassis-id=SIM0001:server-id=h/motherboard=0/chip=0/"
    "memory-controller=0/dram-channel=0/dimm=1"
)


def signed64(value: int) -> int:
    """A 64-bit register as rasdaemon binds it (sqlite3_bind_int64 of the unsigned value)."""
    return value - (1 << 64) if value >= 1 << 63 else value


class RasDb:
    """A rasdaemon database file built in a test."""

    def __init__(self, path: Path, schema: Sequence[str] = SCHEMA_CURRENT) -> None:
        self.path = path
        with self.connect() as c:
            for stmt in schema:
                c.execute(stmt)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def insert(self, table: str, **values: Any) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.connect() as c:
            c.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))

    def mce(self, n: int = 0, **over: Any) -> None:
        values = {
            "timestamp": STAMP,
            "mcgcap": 0x1000C14,
            "mcgstatus": 0,
            "status": signed64(MCE_STATUS),
            "addr": MCE_ADDR,
            "misc": signed64(MCE_MISC),
            "ip": 0,
            "tsc": 0x1000 + n,
            "walltime": WALLTIME + n,
            "cpu": 1,
            "cpuid": SKX_CPUID,
            "apicid": 1,
            "socketid": 0,
            "cs": 0,
            "bank": 13,
            "cpuvendor": 0,
            "bank_name": "iMC",
            "error_msg": "memory read error",
            **over,
        }
        self.insert("mce_record", **values)

    def mc(self, **over: Any) -> None:
        values = {
            "timestamp": STAMP,
            "err_count": 1,
            "err_type": "Corrected",
            "err_msg": "memory read error",
            "label": "CPU 0 DIMM 1",
            "mc": 0,
            "top_layer": 0,
            "middle_layer": 1,
            "lower_layer": -1,
            "address": 0x3E9F2240,
            "grain": 32,
            "syndrome": 0,
            "driver_detail": "",
            **over,
        }
        self.insert("mc_event", **values)

    def mf(self, **over: Any) -> None:
        values = {
            "timestamp": STAMP,
            "pfn": "0x3e9f2",
            "page_type": "dirty LRU page",
            "action_result": "Recovered",
            **over,
        }
        self.insert("memory_failure_event", **values)

    def aer(self, **over: Any) -> None:
        values = {
            "timestamp": STAMP,
            "dev_name": "0000:00:1c.0",
            "err_type": "Corrected",
            "err_msg": "Receiver Error",
            **over,
        }
        self.insert("aer_event", **values)


@pytest.fixture
def ras(tmp_path: Path) -> RasDb:
    return RasDb(tmp_path / "ras-mc_event.db")


def _import(bench: SourceBench, path: Path) -> dict[str, Any]:
    return import_database(bench.ingest, bench.store, path)


def _follower(bench: SourceBench, path: Path, **kw: Any) -> RasdaemonSource:
    name = source_name(path)
    return RasdaemonSource(bench.ingest, name, bench.position(name), path=path, poll=0.01, **kw)


# -- values -------------------------------------------------------------------------


def test_timestamps_are_read_with_their_utc_offset() -> None:
    """``YYYY-MM-DD HH:MM:SS +ZZZZ`` is local time: the offset is applied, whatever fmd's zone."""
    assert rd.parse_timestamp("2023-05-31 10:06:19 -0400") == WALLTIME
    assert rd.parse_timestamp("2023-05-31 19:36:19 +0530") == WALLTIME
    assert rd.parse_timestamp("2023-05-31 14:06:19 +0000") == WALLTIME
    assert rd.parse_timestamp("2023-05-31 14:06:19") == WALLTIME


def test_an_unknown_time_is_none_and_a_bad_one_a_rejection() -> None:
    """NULL, empty and rasdaemon's epoch placeholder mean "no time"; garbage is rejected."""
    assert [rd.parse_timestamp(v) for v in (None, "", "1970-01-01 00:00:00 +0000")] == [
        None,
        None,
        None,
    ]
    for bad in ("yesterday", "2023-13-01 00:00:00 +0000", "2023-05-31 10:06:19 +9900", 5):
        with pytest.raises(rd.RowRejected):
            rd.parse_timestamp(bad)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(-14 * 60, 14 * 60),
)
def test_timestamp_round_trip(when: datetime, offset_min: int) -> None:
    """Any time written as rasdaemon writes it (strftime %Y-%m-%d %H:%M:%S %z) reads back."""
    local = when.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=offset_min)))
    text = local.strftime("%Y-%m-%d %H:%M:%S %z")
    assert rd.parse_timestamp(text) == int(local.astimezone(UTC).timestamp())


@given(st.text(max_size=40) | st.integers() | st.none() | st.binary(max_size=8))
def test_timestamp_parser_never_raises_anything_but_a_rejection(value: object) -> None:
    """Whatever a timestamp column holds, parsing gives a time, None, or a RowRejected."""
    with contextlib.suppress(rd.RowRejected):
        rd.parse_timestamp(value)


def test_family_and_model_from_cpuid() -> None:
    """CPUID leaf 1 EAX gives the family and model (extended fields where they apply)."""
    assert rd.family_model(SKX_CPUID) == (6, 0x55)
    assert rd.family_model(0xA00F11) == (0x19, 0x01)  # Zen 3
    assert rd.family_model(0) is None


def test_a_machine_check_row_is_a_raw_record() -> None:
    """Registers come back unsigned, vendor and family/model are named, walltime is the time."""
    row = {
        "id": 1,
        "timestamp": STAMP,
        "mcgcap": 0x1000C14,
        "mcgstatus": 0,
        "status": signed64(MCE_STATUS),
        "addr": MCE_ADDR,
        "misc": signed64(MCE_MISC),
        "tsc": 0x1000,
        "walltime": WALLTIME,
        "cpu": 1,
        "cpuid": SKX_CPUID,
        "apicid": 1,
        "socketid": 0,
        "bank": 13,
        "cpuvendor": 0,
        "ppin": 0,
        "ipid": None,
    }
    assert rd.mce_item(row) == {
        "mca": {
            "bank": 13,
            "status": f"0x{MCE_STATUS:x}",
            "addr": f"0x{MCE_ADDR:x}",
            "misc": f"0x{MCE_MISC:x}",
            "tsc": "0x1000",
            "mcgcap": "0x1000c14",
            "mcgstatus": "0x0",
            "cpu": 1,
            "apicid": 1,
            "socket": 0,
            "vendor": "GenuineIntel",
            "family": 6,
            "model": 0x55,
            "time": WALLTIME,
        }
    }


def test_a_machine_check_row_without_walltime_takes_its_timestamp() -> None:
    """Without walltime the row's timestamp is the record's time; SMCA registers are kept."""
    row = {"bank": 17, "status": signed64(0xDC2040000000011B), "walltime": 0}
    row |= {"timestamp": STAMP, "cpuvendor": 2, "ipid": 0x9600050F00, "synd": 0x1}
    mca = rd.mce_item(row)["mca"]
    assert (mca["time"], mca["vendor"], mca["ipid"], mca["synd"]) == (
        WALLTIME,
        "AuthenticAMD",
        "0x9600050f00",
        "0x1",
    )


def test_an_edac_row_is_a_memory_ereport() -> None:
    """mc_event keeps type, count, label, location, address, grain, syndrome and detail."""
    row = {
        "timestamp": STAMP,
        "err_count": 2,
        "err_type": "Uncorrected",
        "err_msg": "memory read error",
        "label": "DIMM_A1",
        "mc": 1,
        "top_layer": 0,
        "middle_layer": 1,
        "lower_layer": 255,
        "address": 0x3E9F2240,
        "grain": 32,
        "syndrome": 0x1F,
        "driver_detail": "rank:0",
    }
    assert rd.mc_item(row) == {
        "class": MEM_UE_CLASS,
        "edac_error_type": "Uncorrected",
        "error_count": 2,
        "source": "rasdaemon",
        "time": WALLTIME,
        "error_uncorrected": True,
        "edac_mc": 1,
        "edac_location": [0, 1, -1],
        "edac_label": "DIMM_A1",
        "physaddr": 0x3E9F2240,
        "grain": 32,
        "syndrome": 0x1F,
        "message": "memory read error",
        "driver_detail": "rank:0",
    }


def test_pfns_are_read_in_hex_and_decimal() -> None:
    """memory_failure_event.pfn is TEXT: 0x... as rasdaemon writes it, or decimal."""
    assert [rd.parse_pfn(v) for v in ("0x3e9f2", "0X10", "4096", 7)] == [0x3E9F2, 16, 4096, 7]
    for bad in (None, "page", "-1", "0x" + "f" * 20):
        with pytest.raises(rd.RowRejected):
            rd.parse_pfn(bad)


_CELL = st.none() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=20) | st.binary(max_size=4)
_CELL = _CELL | st.floats(allow_nan=True)


@given(st.sampled_from(rd.TABLES), st.dictionaries(st.text(max_size=12), _CELL, max_size=6))
def test_row_conversion_never_raises(spec: rd.TableSpec, junk: dict[str, Any]) -> None:
    """Any row content becomes a wire object or a reason naming the table, never an exception."""
    columns = ("id", *spec.required, *spec.optional)
    row = {c: junk.get(c) for c in columns} | {k: v for k, v in junk.items() if k in columns}
    item, reason = rd.convert_row(spec, row, None)
    assert (item is None) != (reason is None)
    assert reason is None or f" in {spec.name}: " in reason


# -- opening a database ---------------------------------------------------------------


def test_a_missing_file_is_a_clear_reason(tmp_path: Path) -> None:
    """No file: "no rasdaemon database at PATH"."""
    with pytest.raises(TransportError, match="no rasdaemon database at"):
        rd.RasdaemonDb.open(tmp_path / "nope.db")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    """A text file is named as not a SQLite database."""
    path = tmp_path / "x.db"
    path.write_text("mce: [Hardware Error]: CPU 0: Machine Check\n")
    with pytest.raises(TransportError, match="is not a SQLite database"):
        rd.RasdaemonDb.open(path)


def test_a_database_without_rasdaemon_tables_is_refused(tmp_path: Path) -> None:
    """A SQLite file with none of the tables fmd reads says which are missing."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(TransportError, match=r"not a rasdaemon database .*no table mce_record"):
        rd.RasdaemonDb.open(path)


def test_a_table_lacking_needed_columns_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """mce_record without status is not read (and says so); the other tables are."""
    db = RasDb(
        tmp_path / "ras.db",
        (SCHEMA_CURRENT[0], "CREATE TABLE mce_record (id INTEGER PRIMARY KEY, bank INTEGER)"),
    )
    with rd.RasdaemonDb.open(db.path) as opened:
        assert sorted(opened.tables) == ["mc_event"]
        assert "table mce_record lacks column status; not read" in opened.problems


def test_the_database_is_opened_read_only(ras: RasDb) -> None:
    """fmd never writes to rasdaemon's file: its bytes are unchanged after a read."""
    ras.mce()
    before = ras.path.read_bytes()
    with rd.RasdaemonDb.open(ras.path) as opened:
        assert [r.id for r in opened.iter_rows(rd.MCE_TABLE)] == [1]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            opened._conn.execute("DELETE FROM mce_record")
    assert ras.path.read_bytes() == before


@pytest.fixture
def locked(ras: RasDb) -> Iterator[RasDb]:
    """The database with a writer holding an exclusive lock (rasdaemon mid-write)."""
    ras.mce()
    writer = ras.connect()
    writer.execute("BEGIN EXCLUSIVE")
    try:
        yield ras
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_locked_database_is_busy_not_a_crash(locked: RasDb) -> None:
    """A database locked past the timeout raises DatabaseBusy with a reason."""
    with (
        pytest.raises(rd.DatabaseBusy, match="locked by a writer"),
        rd.RasdaemonDb.open(locked.path, timeout=0.05) as opened,
    ):
        opened.rows(rd.MCE_TABLE, 0, 10)


# -- importing -------------------------------------------------------------------------


def test_import_stores_every_kind_with_its_original_time(tmp_path: Path, ras: RasDb) -> None:
    """mce_record, mc_event, memory_failure_event and aer_event rows become ereports at
    the times rasdaemon recorded."""
    ras.mce()
    ras.mc()
    ras.mf()
    ras.aer(err_type="Uncorrected (Fatal)")
    with SourceBench(tmp_path / "st") as bench:
        result = _import(bench, ras.path)
        assert (result["rows"], result["imported"], result["rejected"]) == (4, 4, 0)
        evs = bench.ereports()
        assert sorted(ev.cls for ev in evs) == sorted(
            [MEM_CE_CLASS, MEM_CE_CLASS, MEMORY_FAILURE_CLASS, AER_CLASS_PREFIX + "fatal"]
        )
        assert {ev.time_ns for ev in evs} == {WALLTIME * 10**9}
        edac = next(
            ev for ev in evs if ev.payload.get("source") == "rasdaemon" and "edac_mc" in ev.payload
        )
        assert edac.payload["resource"] == SIM_DIMM_0_1
        mf = next(ev for ev in evs if ev.cls == MEMORY_FAILURE_CLASS)
        assert (mf.payload["pfn"], mf.payload["physaddr"]) == (0x3E9F2, 0x3E9F2000)


def test_a_second_import_adds_nothing(tmp_path: Path, ras: RasDb) -> None:
    """Run twice (with a store restart between), the import stores each row once; rows
    rasdaemon added since are imported by the next run."""
    for n in range(3):
        ras.mce(n)
    ras.mc()
    with SourceBench(tmp_path / "st") as bench:
        assert _import(bench, ras.path)["imported"] == 4
    with SourceBench(tmp_path / "st") as bench:
        again = _import(bench, ras.path)
        assert (again["imported"], again["already_imported"], again["rows"]) == (0, 4, 4)
        ras.mc(err_type="Uncorrected")
        third = _import(bench, ras.path)
        assert (third["imported"], third["already_imported"]) == (1, 4)
        assert len(bench.ereports()) == 5


def test_bad_rows_are_rejected_with_reasons_and_not_retried(tmp_path: Path, ras: RasDb) -> None:
    """Bad rows are counted with their reason; the good ones around them are stored, and a
    second import neither stores nor rejects them again."""
    ras.mce(0)
    ras.mce(1, status=None)
    ras.mc(err_type="Bogus")
    ras.mf(pfn="not a page")
    ras.mc(timestamp="yesterday")
    ras.mf()
    with SourceBench(tmp_path / "st") as bench:
        result = _import(bench, ras.path)
        assert (result["imported"], result["rejected"]) == (2, 4)
        assert result["reasons"] == {
            "bad status in mce_record": 1,
            "bad err_type in mc_event": 1,
            "bad timestamp in mc_event": 1,
            "bad pfn in memory_failure_event": 1,
        }
        again = _import(bench, ras.path)
        assert (again["imported"], again["rejected"], again["already_imported"]) == (0, 0, 6)


def test_an_import_of_a_replaced_database_reads_it_from_its_start(
    tmp_path: Path, ras: RasDb
) -> None:
    """A new database at the path imported before is imported whole, and says which tables
    it found replaced (not as rejected rows)."""
    ras.mc()
    ras.mc()
    with SourceBench(tmp_path / "st") as bench:
        _import(bench, ras.path)
        ras.path.unlink()
        RasDb(ras.path).mc(timestamp="2024-01-02 03:04:05 +0000")
        result = _import(bench, ras.path)
        assert (result["imported"], result["already_imported"], result["replaced_tables"]) == (
            1,
            0,
            ["mc_event"],
        )
        assert result["reasons"] == {}


def test_an_older_database_lacking_columns_and_tables_is_read(tmp_path: Path) -> None:
    """An old rasdaemon layout (no ppin, microcode, dev_name; no memory_failure_event) imports."""
    old = RasDb(tmp_path / "old.db", SCHEMA_OLD)
    old.mce()
    old.insert("aer_event", timestamp=STAMP, err_type="Corrected", err_msg="Bad TLP")
    with SourceBench(tmp_path / "st") as bench:
        result = _import(bench, old.path)
        assert (result["imported"], result["rejected"]) == (2, 0)
        assert result["problems"] == ["no table memory_failure_event"]
        aer = next(ev for ev in bench.ereports() if ev.cls.startswith(AER_CLASS_PREFIX))
        assert (aer.cls, aer.payload["device"]) == (AER_CLASS_PREFIX + "ce", "")


def test_a_database_with_only_some_tables_is_read(tmp_path: Path) -> None:
    """A database holding only mc_event (rasdaemon built without MCE) imports that table."""
    only = RasDb(tmp_path / "mc.db", (SCHEMA_CURRENT[0],))
    only.mc()
    with SourceBench(tmp_path / "st") as bench:
        result = _import(bench, only.path)
        assert result["imported"] == 1
        assert len(result["problems"]) == 3


def test_import_of_a_file_fmd_follows_is_refused(tmp_path: Path, ras: RasDb) -> None:
    """While fmd's follower reads a database, importing it is refused (never read twice)."""
    ras.mc()
    with SourceBench(tmp_path / "st") as bench:
        _follower(bench, ras.path)
        with pytest.raises(TransportError, match=r"follows .* already"):
            _import(bench, ras.path)


def test_import_of_a_locked_database_says_so(tmp_path: Path, locked: RasDb) -> None:
    """An import that finds the database locked answers why, storing nothing."""
    with SourceBench(tmp_path / "st") as bench:
        run = _follower(bench, locked.path, timeout=0.05)
        with pytest.raises(rd.DatabaseBusy):
            run.import_all()
        assert bench.ereports() == []


# -- following ------------------------------------------------------------------------


def test_the_follower_reads_rows_as_rasdaemon_adds_them(tmp_path: Path, ras: RasDb) -> None:
    """Each poll stores the rows added since the last one, once."""
    ras.mce(0)
    with SourceBench(tmp_path / "st") as bench:
        src = _follower(bench, ras.path)
        bench.poll_once(src)
        bench.poll_once(src)
        ras.mc()
        ras.mce(1)
        bench.poll_once(src)
        assert len(bench.ereports()) == 3
        pos = bench.position(src.name)
        assert pos is not None
        assert pos.document()["last_id"] == {"mc_event": 1, "mce_record": 2}


def test_kill_and_restart_of_the_follower(tmp_path: Path, ras: RasDb) -> None:
    """A follower killed after its first committed batch is followed by one that stores the
    rest: every row once, none skipped."""
    for n in range(5):
        ras.mce(n)
    ras.mc()
    with SourceBench(tmp_path / "st") as bench:
        first = _follower(bench, ras.path, batch_rows=2)
        assert first.probe() is None
        batches = first.read()
        assert first._store(next(batches))  # the first batch commits ...
        next(batches)  # ... the second is read but never stored: SIGKILL here
        batches.close()
    with SourceBench(tmp_path / "st") as bench:
        second = _follower(bench, ras.path, batch_rows=2)
        bench.poll_once(second)
        bench.poll_once(second)
        times = sorted(
            ev.time_ns // 10**9 - WALLTIME for ev in bench.ereports() if "cpuid" in ev.payload
        )
        assert times == [0, 1, 2, 3, 4]
        assert sum(1 for ev in bench.ereports() if "edac_mc" in ev.payload) == 1


def test_a_replaced_database_is_read_from_its_start(tmp_path: Path, ras: RasDb) -> None:
    """A new rasdaemon database at the same path (its rows are not the imported ones) is
    read from its first row, table by table."""
    ras.mc()
    ras.mc()
    with SourceBench(tmp_path / "st") as bench:
        src = _follower(bench, ras.path)
        bench.poll_once(src)
        ras.path.unlink()
        fresh = RasDb(ras.path)
        fresh.mc(timestamp="2024-01-02 03:04:05 +0000")
        bench.poll_once(src)
        assert len(bench.ereports()) == 3
        assert src.stats.reasons == {"database replaced": 1}


def test_a_busy_database_is_read_at_the_next_poll(tmp_path: Path, ras: RasDb) -> None:
    """A poll that finds the database locked counts it and reads the rows the next time."""
    ras.mc()
    with SourceBench(tmp_path / "st") as bench:
        src = _follower(bench, ras.path, timeout=0.05)
        writer = ras.connect()
        writer.execute("BEGIN EXCLUSIVE")
        bench.poll_once(src)
        writer.execute("ROLLBACK")
        writer.close()
        assert (bench.ereports(), src.stats.reasons) == ([], {"database busy": 1})
        bench.poll_once(src)
        assert len(bench.ereports()) == 1


def test_the_follower_is_unavailable_without_its_database(tmp_path: Path) -> None:
    """Without the file the follower says so; once it exists the follower runs and reads it."""
    path = tmp_path / "later.db"
    with SourceBench(tmp_path / "st") as bench:
        src = _follower(bench, path)
        assert src.probe() == f"no rasdaemon database at {path}"
        RasDb(path).mc()
        bench.run_until(src, lambda: len(bench.ereports()) == 1)
        assert src.stats.state == STATE_RUN


# -- fminject --format rasdaemon against a real daemon -------------------------------------


def test_fminject_imports_a_rasdaemon_database_once(tmp_path: Path, root: Path) -> None:
    """``fminject --format rasdaemon FILE`` run twice stores each row once, across a restart."""
    ras = RasDb(tmp_path / "ras-mc_event.db")
    ras.mce(0)
    ras.mce(1)
    ras.mc()
    ras.mf()
    fmd = FmdProcess(root).start()
    try:
        first = fmd.cli("fminject", "--format", "rasdaemon", str(ras.path))
        assert first.returncode == 0, first.stderr
        assert "imported 4 of 4 rows" in first.stdout
        fmd.stop()
        fmd.start()
        second = fmd.cli("fminject", "--format", "rasdaemon", str(ras.path))
        assert second.returncode == 0, second.stderr
        assert "imported 0 of 4 rows (4 imported before)" in second.stdout
        fmd.quiesce()
        evs = fmd.errlog_json()
        assert len(evs) == 4
    finally:
        if fmd.alive():
            fmd.stop()


def test_fminject_n_checks_a_database_locally(tmp_path: Path, root: Path) -> None:
    """``fminject -n`` on a SQLite file picks the rasdaemon format, names each bad row and
    exits 1; without rows it says "no records found"."""
    ras = RasDb(tmp_path / "ras.db")
    ras.mc()
    ras.mc(err_type="Bogus")
    out = cli("fminject", "-n", str(ras.path), root=root)
    assert out.returncode == 1
    assert "mc_event id 2: bad err_type in mc_event" in out.stderr
    assert out.stdout.strip() == "fminject: 1 of 2 rows are valid"
    empty = RasDb(tmp_path / "empty.db")
    out = cli("fminject", "-n", "--format", "rasdaemon", str(empty.path), root=root)
    assert (out.returncode, out.stderr.strip()) == (1, f"fminject: {empty.path}: no records found")
