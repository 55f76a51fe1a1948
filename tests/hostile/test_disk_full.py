"""A full disk: clients are told, nothing acknowledged is lost, module state is held
and written once space returns, ingest resumes by itself, and SIGTERM is prompt.

The writer is tested with ops that fail the way SQLite does on a full disk; the
daemon on a real 3 MiB tmpfs (skipped, with the reason, where mounting is not
allowed)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from fmd.errors import StoreRefused
from fmd.log import SafeStream
from fmd.store import Op, Store, WriteTxn
from fmd.store.health import StoreHealth, StoreState, is_disk_full
from tests.fmdproc import FmdProcess

FULL = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))


class _Op(Op):
    """A write op that records when it was applied, and fails while ``fail`` is set."""

    def __init__(self, name: str, log: list[str], fail: threading.Event, *, refusable: bool):
        self.name, self.log, self.fail = name, log, fail
        self.refusable = refusable
        self.weight = 1
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def apply(self, tx: WriteTxn) -> None:
        if self.fail.is_set():
            raise FULL
        self.log.append(self.name)

    def done(self, error: BaseException | None) -> None:
        self.error = error
        self.finished.set()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store("", db_file=tmp_path / "fmd.db")
    yield s
    s.close()


def test_disk_full_is_recognised_through_wrappers() -> None:
    """SQLite's "database or disk is full", ENOSPC and PostgreSQL's disk-full text all
    count as a full disk; a locked database does not."""
    assert is_disk_full(FULL)
    assert is_disk_full(OSError(28, "No space left on device"))
    assert is_disk_full(RuntimeError("could not extend file base/1/2: No space left on device"))
    locked = OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(locked)


def test_full_store_refuses_input_and_holds_state(store: Store) -> None:
    """While writes fail for lack of space, new input is refused at once with
    StoreRefused, module state is held, and once writes succeed again the held ops are
    written first, in order, and the health is back to OK."""
    health = StoreHealth(None, 0)
    writer = store.writer(health=health)
    writer.start()
    applied: list[str] = []
    fail = threading.Event()
    fail.set()
    try:
        ingest = _Op("ingest-1", applied, fail, refusable=True)
        ckpt1 = _Op("ckpt-1", applied, fail, refusable=False)
        writer.submit(ckpt1)
        writer.submit(ingest)
        assert ingest.finished.wait(10)
        assert isinstance(ingest.error, StoreRefused)
        assert "no space left" in str(ingest.error)
        assert health.state is StoreState.FULL
        deadline = time.monotonic() + 10
        while not writer.holding and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.holding
        assert not ckpt1.finished.is_set()
        ckpt2 = _Op("ckpt-2", applied, fail, refusable=False)
        writer.submit(ckpt2)
        fail.clear()
        assert ckpt2.finished.wait(10)
        assert ckpt1.error is None and ckpt2.error is None
        assert applied == ["ckpt-1", "ckpt-2"]
        assert health.state is StoreState.OK
        assert not writer.holding
    finally:
        writer.stop()


def test_stop_gives_up_held_ops(store: Store) -> None:
    """Stopping while the store is still full fails the held ops (their events stay
    uncommitted for the next start) instead of waiting for space."""
    writer = store.writer(health=StoreHealth(None, 0))
    writer.start()
    fail = threading.Event()
    fail.set()
    op = _Op("ckpt", [], fail, refusable=False)
    writer.submit(op)
    deadline = time.monotonic() + 10
    while not writer.holding and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 5
    assert isinstance(op.error, StoreRefused)


def test_minfree_refuses_before_the_disk_is_full(tmp_path: Path) -> None:
    """Below log.minfree free bytes new events are refused, with the figures."""
    health = StoreHealth(tmp_path, minfree=1 << 60)
    reason = health.refusal()
    assert reason is not None
    assert "below log.minfree" in reason
    assert health.report().state is StoreState.FULL
    assert StoreHealth(tmp_path, minfree=0).refusal() is None


class _FullStream:
    def __init__(self) -> None:
        self.fail = True
        self.text = ""

    def write(self, text: str) -> int:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.text += text
        return len(text)

    def flush(self) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")

    def isatty(self) -> bool:
        return False


def test_log_stream_never_raises() -> None:
    """A log line that cannot be written (ENOSPC) is dropped and counted, and writing
    resumes once the stream takes data again."""
    raw = _FullStream()
    stream = SafeStream(raw)  # type: ignore[arg-type]
    assert stream.write("lost\n") == 0
    stream.flush()
    assert stream.dropped == 2
    raw.fail = False
    stream.write("kept\n")
    assert raw.text == "kept\n"


# -- the real daemon on a small tmpfs -------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(fmd: FmdProcess, rounds: int = 300) -> tuple[int, list[dict[str, Any]]]:
    """Send batches of 100 events until some are refused: (events acknowledged, the
    refusals of the batch that hit the limit)."""
    acked = 0
    for i in range(rounds):
        lines = [
            {"class": "ereport.x.fill", "n": i * 100 + j, "pad": "y" * 200} for j in range(100)
        ]
        replies = fmd.send_lines(lines)
        acked += sum(1 for r in replies if r["ok"])
        refused = [r for r in replies if not r["ok"]]
        if refused:
            return acked, refused
    raise AssertionError("the disk never filled")


def stored(fmd: FmdProcess) -> int:
    out = fmd.cli("fmdump", "-e", "--json")
    assert out.returncode == 0, out.stderr
    return len(out.stdout.splitlines())


def wait_accepting(fmd: FmdProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [reply] = fmd.send_lines([{"class": "ereport.x.after"}])
        if reply["ok"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"ingest did not resume: {reply}")


ICACHE_CE = "0x9400000000000101"


def nearly_full(tmpfs: Path, fmd_factory: list[FmdProcess]) -> tuple[FmdProcess, Path]:
    """fmd (log.minfree 16k) on the tmpfs, and a 1000 KiB filler file beside its root
    (removing it gives the space back)."""
    root = tmpfs / "root"
    root.mkdir()
    fmd = FmdProcess(root, props={"platform": "sim", "log.minfree": "16k"})
    fmd_factory.append(fmd)
    fmd.start()
    filler = tmpfs / "filler"
    filler.write_bytes(b"x" * (1000 << 10))
    return fmd, filler


@pytest.mark.e2e
def test_full_disk_is_survived(tmpfs: Path, fmd_factory: list[FmdProcess]) -> None:
    """On a 3 MiB tmpfs filled to the last byte: every client hears "no space left",
    no acknowledged event is lost, the modules stay active, fmstat -t and fmadm faulty
    say the store is full, and once space returns ingest resumes by itself and
    diagnosis works; SIGTERM while full takes seconds, not a minute."""
    fmd, filler = nearly_full(tmpfs, fmd_factory)

    acked, refused = fill(fmd)
    assert acked > 0
    assert all("no space left" in r["error"] for r in refused)
    [socket] = [t for t in fmd.adm("stats")["transports"] if t["name"] == "socket"]
    assert socket["state"] == "refuse"
    faulty = fmd.cli("fmadm", "faulty")
    assert "fmadm: warning: the store is full" in faulty.stderr
    assert "fmstat: warning: the store is full" in fmd.cli("fmstat").stderr

    filler.unlink()
    wait_accepting(fmd)
    fmd.quiesce()
    assert stored(fmd) >= acked + 1
    assert {m["status"] for m in fmd.adm("config")["modules"]} == {"active"}
    fmd.send_lines(
        [
            {"mca": {"cpu": 13, "bank": 1, "status": ICACHE_CE, "time": 1700000000 + h}}
            for h in range(4)
        ]
    )
    fmd.quiesce()
    assert [f["class"] for f in fmd.fltlog_json() if f["class"] == "list.suspect"]

    started = time.monotonic()
    assert fmd.stop(30) == 0
    assert time.monotonic() - started < 15


@pytest.mark.e2e
def test_minfree_refuses_new_events_and_recovers(
    tmpfs: Path, fmd_factory: list[FmdProcess]
) -> None:
    """With less than log.minfree free, new events are refused before the disk is
    full ("below log.minfree"); freeing space lets them in again."""
    root = tmpfs / "root"
    root.mkdir()
    fmd = FmdProcess(root, props={"platform": "sim"})  # log.minfree 2m by default
    fmd_factory.append(fmd)
    fmd.start()
    filler = tmpfs / "filler"
    filler.write_bytes(b"x" * (1200 << 10))
    [reply] = fmd.send_lines([{"class": "ereport.x.one"}])
    assert reply["ok"] is False
    assert "below log.minfree" in reply["error"]
    filler.unlink()
    wait_accepting(fmd)
    assert stored(fmd) == 1


@pytest.mark.e2e
def test_sigterm_while_full_is_prompt(tmpfs: Path, fmd_factory: list[FmdProcess]) -> None:
    """SIGTERM while the disk is still full shuts down within seconds and the next start
    (with space back) has every acknowledged event."""
    fmd, filler = nearly_full(tmpfs, fmd_factory)
    acked, _ = fill(fmd)
    started = time.monotonic()
    assert fmd.stop(60) == 0
    assert time.monotonic() - started < 15
    filler.unlink()
    fmd.start()
    fmd.quiesce()
    assert stored(fmd) >= acked
