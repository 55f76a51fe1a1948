"""Reading the logs without write access: fmdump as a user who may read the
database but not write its directory, and fmdump on read-only media."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fmd.errors import StoreError
from fmd.paths import Paths
from fmd.store.engine import immutable_unsafe, readonly_uri
from tests.fmdproc import FmdProcess, cli
from tests.hostile.osenv import as_nobody, needs_root, open_dir, read_only

EVENTS = 20


def events(n: int = EVENTS, first: int = 0) -> list[dict[str, Any]]:
    return [{"class": "ereport.io.test.ro", "n": i} for i in range(first, first + n)]


def numbers(stdout: str) -> list[int]:
    return sorted(orjson.loads(line)["n"] for line in stdout.splitlines())


def open_to_others(paths: Paths) -> None:
    """Let every user read the database and search the directories above it (the
    tests' stand-in for access.group), without letting them write anything."""
    for d in (paths.root / "var", paths.root / "var" / "fm", paths.var_dir):
        d.chmod(0o755)
    for f in paths.var_dir.glob("fmd.db*"):
        f.chmod(0o644)


def listing(paths: Paths) -> list[str]:
    return sorted(p.name for p in paths.var_dir.iterdir())


@pytest.fixture
def shared_root(fmd_factory: list[FmdProcess]) -> Iterator[FmdProcess]:
    """A daemon (not started) in a root every user can reach, with a stored log."""
    with open_dir() as top:
        fmd = FmdProcess(top / "root")
        fmd_factory.append(fmd)
        yield fmd


def stored(fmd: FmdProcess) -> FmdProcess:
    fmd.start()
    assert [r["ok"] for r in fmd.send_lines(events())] == [True] * EVENTS
    fmd.quiesce()
    return fmd


@needs_root
def test_fmdump_as_another_user_on_a_stopped_daemons_db(shared_root: FmdProcess) -> None:
    """A user who may read fmd.db but not write its directory reads every record,
    and leaves nothing behind."""
    fmd = stored(shared_root)
    assert fmd.stop() == 0
    open_to_others(fmd.paths)
    before = listing(fmd.paths)
    out = as_nobody("fmdump", "-e", "--json", root=fmd.root)
    assert (out.returncode, out.stderr) == (0, "")
    assert list(range(EVENTS)) == numbers(out.stdout)
    assert before == listing(fmd.paths)


@needs_root
def test_fmdump_as_another_user_while_fmd_runs(shared_root: FmdProcess) -> None:
    """While fmd runs, its -shm index is shared read-only with other readers."""
    fmd = stored(shared_root)
    open_to_others(fmd.paths)
    out = as_nobody("fmdump", "-e", "--json", root=fmd.root)
    assert (out.returncode, out.stderr) == (0, "")
    assert list(range(EVENTS)) == numbers(out.stdout)


@needs_root
def test_fmdump_as_another_user_after_a_crash(shared_root: FmdProcess) -> None:
    """After SIGKILL the events still in the write-ahead log are shown too; without a
    readable -shm fmdump refuses with one line naming the log that is in the way."""
    fmd = stored(shared_root)
    fmd.kill()
    open_to_others(fmd.paths)
    wal = fmd.paths.var_dir / "fmd.db-wal"
    assert wal.stat().st_size > 0
    out = as_nobody("fmdump", "-e", "--json", root=fmd.root)
    assert (out.returncode, out.stderr) == (0, "")
    assert list(range(EVENTS)) == numbers(out.stdout)

    (fmd.paths.var_dir / "fmd.db-shm").chmod(0o600)
    out = as_nobody("fmdump", "-e", root=fmd.root)
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith(f"fmdump: cannot read {fmd.paths.db_file} read-only:")
    assert f"{wal} holds changes not yet copied into the database" in line


@needs_root
def test_fmdump_on_read_only_media(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A stopped daemon's logs on a read-only file system are read whole."""
    fmd = FmdProcess(root)
    fmd_factory.append(fmd)
    stored(fmd)
    assert fmd.stop() == 0
    before = listing(fmd.paths)
    with read_only(fmd.paths.var_dir):
        out = cli("fmdump", "-e", "--json", root=root)
        assert (out.returncode, out.stderr) == (0, "")
        assert list(range(EVENTS)) == numbers(out.stdout)
        assert before == listing(fmd.paths)


@needs_root
def test_read_only_media_after_a_crash_is_refused_clearly(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A write-ahead log SQLite cannot index on read-only media is not ignored."""
    fmd = FmdProcess(root)
    fmd_factory.append(fmd)
    stored(fmd)
    fmd.kill()
    (fmd.paths.var_dir / "fmd.db-shm").unlink()
    with read_only(fmd.paths.var_dir):
        out = cli("fmdump", "-e", root=root)
    assert out.returncode == 1
    assert "fmd.db-wal holds changes not yet copied into the database" in out.stderr
    assert "Traceback" not in out.stderr


def test_immutable_is_refused_while_fmd_holds_its_lock(tmp_path: Path) -> None:
    """A database whose daemon holds fmd.pid is never read without locks."""
    db, pid = tmp_path / "fmd.db", tmp_path / "fmd.pid"
    db.write_bytes(b"")
    pid.write_text("1\n")
    assert immutable_unsafe(db, pid) is None
    fd = os.open(pid, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert f"fmd is running (it holds the lock on {pid})" == immutable_unsafe(db, pid)
    finally:
        os.close(fd)
    (tmp_path / "fmd.db-wal").write_bytes(b"x")
    assert "fmd.db-wal holds changes" in (immutable_unsafe(db, None) or "")


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    """Reading a database that does not exist names it instead of creating it."""
    with pytest.raises(StoreError) as info:
        readonly_uri(tmp_path / "fmd.db")
    assert f"no fmd database at {tmp_path / 'fmd.db'}" in str(info.value)
    assert list(tmp_path.iterdir()) == []
