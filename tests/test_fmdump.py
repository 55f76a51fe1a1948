"""fmdump's output formats and filters, against golden files.

A database with known rows is built directly through the store (no daemon)
and fmdump runs in-process through click's CliRunner with TZ=UTC.  Set
``FMD_UPDATE_GOLDEN=1`` to rewrite the golden files from the current output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert, update

from fmd import states
from fmd.cli import fmdump
from fmd.cli.timespec import TimeSpecError, parse_time
from fmd.paths import Paths
from fmd.store import Store, schema
from fmd.store.rotate import rotate_log
from tests.pgschema import pg_schema_url

GOLDEN = Path(__file__).parent / "golden" / "fmdump"
T0 = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC
UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "66666666-7777-8888-9999-000000000000"
DE = {
    "scheme": "fmd",
    "version": 0,
    "authority": {"product-id": "TestBox", "chassis-id": "C1", "server-id": "host1"},
    "mod-name": "eft",
    "mod-version": "1.16",
}


def _ereport(
    i: int, cls: str, offset_s: float, payload: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    return {
        "id": i,
        "time_ns": T0 + int(offset_s * 10**9) + 123456789,
        "recv_ns": T0 + int(offset_s * 10**9) + 200000000,
        "ena": schema.ena_to_db(kw.get("ena", 0x1000 + i)),
        "class": cls,
        "detector": kw.get("detector", "cpu:///cpuid=0"),
        "payload": kw.get("raw", orjson.dumps(payload).decode()),
        "state": states.STATE_DIAGNOSED,
        "committed": True,
        "injected": False,
        "xprt": "test",
    }


def _list_event(
    i: int, cls: str, uuid: str, offset_s: float, status: int, *, message: bool = True
) -> dict[str, Any]:
    time_ns = T0 + int(offset_s * 10**9)
    payload = {
        "version": 0,
        "class": cls,
        "uuid": uuid,
        "code": "FMD-8000-0W",
        "diag-time": [time_ns // 10**9, 0],
        "de": DE,
        "fault-list-sz": 1,
        "fault-list": [
            {
                "class": "defect.sunos.fmd.nosub",
                "certainty": 100,
                "asru": "cpu:///cpuid=0",
                "fru": "hc:///motherboard=0/chip=0",
                "resource": "hc:///motherboard=0/chip=0/core=0/strand=0",
                "location": "CPU 0",
                "message": message,
                "retire": True,
                "response": True,
            }
        ],
        "fault-status": [status],
        "message": message,
    }
    return {
        "id": i,
        "time_ns": time_ns,
        "class": cls,
        "uuid": uuid,
        "code": "FMD-8000-0W",
        "payload": orjson.dumps(payload).decode(),
        "committed": True,
        "injected": False,
    }


ERRLOG = [
    _ereport(1, "ereport.cpu.intel.l2cache", 0, {"status": 0x11, "bank": "L2", "misc": {"n": 3}}),
    _ereport(2, "ereport.cpu.intel.l2cache", 5, {"status": 17, "bank": "L2-B"}),
    _ereport(3, "ereport.io.pci.target", 3600, {"status": 255, "device": "pci8086,1234"}),
    _ereport(4, "ereport.io.pci.fabric", 86400 * 2, {"status": 8}, detector="dev:////pci@0"),
]
FLTLOG = [
    _list_event(1, "list.suspect", UUID_A, 10, 0x1),
    _list_event(2, "list.suspect", UUID_B, 3700, 0x1, message=False),
    _list_event(3, "list.repaired", UUID_A, 86400, 0x10),
    _list_event(4, "list.resolved", UUID_A, 86400 * 3, 0x10 | 0x4),
]


def _write(
    root: Path, errlog: list[dict[str, Any]], fltlog: list[dict[str, Any]], url: str = ""
) -> Store:
    paths = Paths(root)
    store = Store(url, db_file=paths.db_file)
    with store.engine.begin() as conn:
        if errlog:
            conn.execute(insert(schema.errlog), errlog)
        if fltlog:
            conn.execute(insert(schema.fltlog), fltlog)
        for log, rows in (("errlog", errlog), ("fltlog", fltlog)):
            if rows:
                conn.execute(
                    update(schema.log_frontier)
                    .where(schema.log_frontier.c.log == log)
                    .values(committed_upto=max(r["id"] for r in rows))
                )
    return store


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, root: Path) -> Iterator[Path]:
    """A root whose store holds ERRLOG, FLTLOG and case A with events 1 and 2; the
    postgres variant (FMD_TEST_PG_URL) names its database in etc/fmd/fmd.conf."""
    with contextlib.ExitStack() as stack:
        url = ""
        if request.param == "postgres":
            url = stack.enter_context(pg_schema_url())
            Paths(root).etc_dir.mkdir(parents=True)
            Paths(root).conf_file.write_text(f'setprop store.url "{url}"\n')
        _populate(root, url)
        yield root


@pytest.fixture
def lite_db(root: Path) -> Path:
    """The same data in the default SQLite store (for tests that rotate or append)."""
    _populate(root, "")
    return root


def _populate(root: Path, url: str) -> None:
    store = _write(root, ERRLOG, FLTLOG, url)
    with store.engine.begin() as conn:
        conn.execute(
            insert(schema.cases).values(
                uuid=UUID_A,
                module="eft",
                state=4,
                flags=0,
                principal=1,
                code="FMD-8000-0W",
                diag_time_ns=T0,
                open_time_ns=T0,
                data="{}",
            )
        )
        conn.execute(
            insert(schema.case_events),
            [{"uuid": UUID_A, "event_id": 1}, {"uuid": UUID_A, "event_id": 2}],
        )
    store.close()


def run(root: Path | None, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    argv = (["-R", str(root)] if root is not None else []) + list(args)
    result = runner.invoke(fmdump.cli, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FMD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


CASES = [
    ("fltlog.txt", ()),
    ("fltlog-v.txt", ("-v",)),
    ("fltlog-V.txt", ("-V",)),
    ("fltlog-m.txt", ("-m",)),
    ("fltlog-a.txt", ("-a",)),
    ("fltlog-u.txt", ("-u", UUID_B)),
    ("fltlog-c.txt", ("-c", "list.rep*", "-c", "list.resolved")),
    ("fltlog-n-regex.txt", ("-n", "fault-list.0.location=^CPU [0-9]$", "-c", "list.suspect")),
    ("fltlog.json", ("--json", "-a")),
    ("errlog.txt", ("-e",)),
    ("errlog-v.txt", ("-e", "-v")),
    ("errlog-V.txt", ("-e", "-V")),
    ("errlog-u.txt", ("-e", "-u", UUID_A)),
    ("errlog-c.txt", ("-e", "-c", "ereport.io.*")),
    ("errlog-n-number.txt", ("-e", "-n", "status=0x11")),
    ("errlog-n-octal.txt", ("-e", "-n", "status=0377")),
    ("errlog-n-regex.txt", ("-e", "-n", "bank=^L2-", "-n", "device=8086")),
    ("errlog-n-exists.txt", ("-e", "-n", "misc.n")),
    ("errlog-t-mdy.txt", ("-e", "-t", "11/14/2023 23:00")),
    ("errlog-t-iso.txt", ("-e", "-t", "2023-11-14T22:13:21", "-T", "2023-11-15")),
    ("errlog-t-dmy.txt", ("-e", "-T", "14Nov23 22:13:25.2")),
    ("errlog-t-mon.txt", ("-e", "-T", "Nov 14 22:13:25")),
    ("errlog.json", ("-e", "--json")),
    ("aggregate.txt", ("-A",)),
]


@pytest.mark.parametrize(("name", "args"), CASES, ids=[c[0] for c in CASES])
def test_golden(db: Path, name: str, args: tuple[str, ...]) -> None:
    """Each option combination prints exactly its golden file and exits 0."""
    code, out, err = run(db, *args)
    assert (code, err) == (0, "")
    golden(name, out)


def test_hidden_records_need_a(db: Path) -> None:
    """A message=false list event is shown only with -a (or -u)."""
    _, plain, _ = run(db)
    _, with_a, _ = run(db, "-a")
    assert UUID_B not in plain
    assert UUID_B in with_a


def test_time_today_form_filters(db: Path) -> None:
    """The hh:mm form means today: no 2023 record is at or after it."""
    code, out, _ = run(db, "-e", "-t", "00:00")
    assert (code, out.splitlines()[1:]) == (0, [])


def test_bad_record_exit_3(root: Path) -> None:
    """A payload that is not JSON is reported by id and the dump goes on with exit 3."""
    bad = _ereport(9, "ereport.bad", 1, {}, raw="{not json")
    _write(root, [ERRLOG[0], bad], []).close()
    code, out, err = run(root, "-e")
    assert code == 3
    assert "errlog record 9" in err
    assert "ereport.cpu.intel.l2cache" in out


@pytest.mark.parametrize(
    "args",
    [
        ("-t", "yesterday"),
        ("-T", "13/45/2023"),
        ("-A", "-e"),
        ("-e", "-m"),
        ("-n", "x=("),
        ("-f", "some.file"),
    ],
)
def test_usage_errors_exit_2(db: Path, args: tuple[str, ...]) -> None:
    """Bad times, bad -n patterns and conflicting options are usage errors (exit 2)."""
    code, _, err = run(db, *args)
    assert code == 2
    assert "Error" in err


def test_archive_file_operand(lite_db: Path) -> None:
    """fmdump FILE reads a rotated archive, whose header decides the log."""
    store = Store("", db_file=Paths(lite_db).db_file)
    with store.engine.begin() as conn:
        result = rotate_log(conn, "errlog", Paths(lite_db).log_dir, now_ns=T0)
    store.close()
    assert result.path is not None
    # Events 1 and 2 belong to a case that is not resolved: they stay live.
    assert result.moved == 2
    code, out, _ = run(None, str(result.path))
    assert code == 0
    golden("archive-file.txt", out)


def test_archives_and_live_once(lite_db: Path) -> None:
    """With no operand, fmdump reads the archives then the live log, each record once."""
    _, before, _ = run(lite_db, "-e")
    store = Store("", db_file=Paths(lite_db).db_file)
    with store.engine.begin() as conn:
        rotate_log(conn, "errlog", Paths(lite_db).log_dir, now_ns=T0)
    store.close()
    _, after, _ = run(lite_db, "-e")
    golden("archive-and-live.txt", after)
    assert sorted(after.splitlines()) == sorted(before.splitlines())


def test_duplicate_rows_in_archive_and_live(lite_db: Path) -> None:
    """A row left in both an archive and the live log (a rolled-back rotation) prints once."""
    store = Store("", db_file=Paths(lite_db).db_file)
    with store.engine.connect() as conn:
        trans = conn.begin()
        rotate_log(conn, "fltlog", Paths(lite_db).log_dir, now_ns=T0)
        trans.rollback()
    store.close()
    _, out, _ = run(lite_db, "-a")
    assert len(out.splitlines()) == 1 + len(FLTLOG)


# -- the time parser -------------------------------------------------------------

NOW = T0 + 86400 * 10**9 // 2  # 2023-11-15 10:13:20 UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("11/14/2023", T0 - (22 * 3600 + 13 * 60 + 20) * 10**9),
        ("11/14/23 22:13", T0 - 20 * 10**9),
        ("11/14/2023 22:13:20.5", T0 + 5 * 10**8),
        ("2023-11-14T22:13:20", T0),
        ("23-11-14", T0 - (22 * 3600 + 13 * 60 + 20) * 10**9),
        ("14Nov2023 22:13:20", T0),
        ("14nov23 22:13", T0 - 20 * 10**9),
        ("Nov 14 22:13:20", T0),
        ("10:13:20", NOW),
        ("10:13", NOW - 20 * 10**9),
        ("10:13:20.000001", NOW + 1000),
        ("5s", NOW - 5 * 10**9),
        ("3min", NOW - 180 * 10**9),
        ("2hour", NOW - 7200 * 10**9),
        ("1day", NOW - 86400 * 10**9),
        ("7ns", NOW - 7),
        ("10usec", NOW - 10_000),
        ("20ms", NOW - 20 * 10**6),
    ],
)
def test_parse_time_forms(text: str, expected: int) -> None:
    """Every form of the reference's time syntax names the expected instant (UTC here)."""
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["", "13/01/2023", "2023-02-30", "31Foo2023", "5fortnights", "25:00"]
)
def test_parse_time_rejects(text: str) -> None:
    """Malformed or impossible times raise TimeSpecError."""
    with pytest.raises(TimeSpecError):
        parse_time(text, NOW)


@given(st.text(max_size=40))
def test_parse_time_raises_only_its_error(text: str) -> None:
    """Whatever the input, parse_time returns a time or raises TimeSpecError."""
    with contextlib.suppress(TimeSpecError):
        assert parse_time(text, NOW) >= 0


@given(
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(1970, 2100),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
def test_parse_time_iso_matches_mdy(mo: int, d: int, y: int, h: int, mi: int, s: int) -> None:
    """The ISO and mm/dd/yyyy forms of one instant agree."""
    iso = parse_time(f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}", NOW)
    assert iso == parse_time(f"{mo}/{d}/{y} {h}:{mi:02d}:{s:02d}", NOW)


# -- follow ----------------------------------------------------------------------


def test_follow_prints_new_rows(lite_db: Path) -> None:
    """fmdump -e -f prints the existing rows, then rows added later, and exits 0 on SIGTERM."""
    env = dict(os.environ, TZ="UTC", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with subprocess.Popen(
        [sys.executable, "-m", "fmd.cli.fmdump", "-R", str(lite_db), "-e", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        _follow(lite_db, proc)


def _follow(db: Path, proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(1 + len(ERRLOG))]
        assert lines[0].split() == ["TIME", "CLASS"]
        con = sqlite3.connect(Paths(db).db_file)
        row = _ereport(10, "ereport.follow.me", 7, {})
        con.execute(
            f"INSERT INTO errlog ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        con.commit()
        con.close()
        assert proc.stdout.readline().split()[-1] == "ereport.follow.me"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
