"""Test scaffolding for host sources: a real store, writer and Ingest in a directory.

A :class:`SourceBench` opens an SQLite store under a test's directory, runs its
writer thread and an :class:`~fmd.xprt.Ingest` on the sim platform, and reads
back what a source committed (ereports, its position).  Re-opening a bench on
the same directory is a restart: the committed position is what a source
constructed with :meth:`SourceBench.position` starts from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fmd.clock import SimulatedClock
from fmd.hw.topo import Platform, SimPlatform
from fmd.protocol import Ereport
from fmd.store import Store, queries, schema
from fmd.store.codec import row_ereport
from fmd.xprt import Ingest
from fmd.xprts.source import Position, Source

NOW_NS = 1_700_000_000 * 10**9


class SourceBench:
    """A store, its writer and an Ingest for driving sources directly."""

    def __init__(self, directory: Path, platform: Platform | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.store = Store("", db_file=directory / "fmd.db", sync="off")
        self.writer = self.store.writer()
        self.writer.start()
        self.clock = SimulatedClock(NOW_NS)
        self.platform = platform if platform is not None else SimPlatform(hostname="h")
        self.ingest = Ingest(
            submit=self.writer.submit,
            clock=self.clock,
            kick_timers=lambda: None,
            max_line=1 << 20,
            err_limit=100,
            err_window_ns=60 * 10**9,
            platform=self.platform,
        )

    def close(self) -> None:
        self.writer.stop()
        self.store.close()

    def __enter__(self) -> SourceBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what was committed -------------------------------------------------------
    def ereports(self) -> list[Ereport]:
        """Every stored ereport, in id order (decoded members derived as on read)."""
        t = schema.errlog
        with self.store.reader() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).all()
        return [row_ereport(r) for r in rows]

    def position(self, name: str) -> Position | None:
        """The committed position of the transport ``name``, as a Source starts from it."""
        with self.store.reader() as conn:
            found = queries.load_positions(conn).get(name)
        return None if found is None else Position(*found)

    # -- running a source ---------------------------------------------------------
    def poll_once(self, source: Source) -> None:
        """Run one read of ``source`` on this thread and commit what it yields."""
        reason = source.probe()
        assert reason is None, f"source unavailable: {reason}"
        for batch in source.read():
            assert source._store(batch)

    def run_until(self, source: Source, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run ``source`` on its thread until ``done()`` (polling), then stop it."""
        source.start()
        try:
            deadline = time.monotonic() + timeout
            while not done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"source {source.name} did not finish in {timeout} s")
                threading.Event().wait(0.02)
        finally:
            source.stop()


def payloads(evs: list[Ereport]) -> list[dict[str, Any]]:
    """The payloads of ``evs`` (test shorthand)."""
    return [ev.payload for ev in evs]
