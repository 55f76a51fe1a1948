"""Copying SQLite's write-ahead log back into the database, off the write path.

With ``wal_autocheckpoint`` left on, SQLite checkpoints inside whichever
commit makes the log pass 1000 pages, so the single writer would stall on that
I/O (and its fsyncs) while acknowledgements wait.  fmd turns automatic
checkpoints off on its connections and runs :class:`WalCheckpointer` instead:
a thread with its own connection that runs a PASSIVE checkpoint every
``interval`` seconds.  A PASSIVE checkpoint never blocks the writer or the
readers; it copies what it can, and the log is reused from the start once
everything is copied.  SQLite itself checkpoints when the last connection
closes, so a clean shutdown leaves no log behind.

The log file never shrinks by itself, though, and on a full disk it holds the
space fmd needs back.  So when the log file has grown past
``truncate_above`` bytes (32 MiB), or ``urgent()`` says the store is short of space,
the round runs a TRUNCATE checkpoint instead: it waits briefly for the writer
and readers, copies everything and truncates the log to zero bytes.  A
checkpoint that fails (the disk is full, the file went away) is logged once
per kind and tried again next round on a fresh connection; nothing ends the
thread but :meth:`WalCheckpointer.stop`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog
from sqlalchemy import Connection, Engine

log = structlog.get_logger("fmd.store")


# A log larger than this is truncated by the next round.
TRUNCATE_ABOVE: Final = 32 << 20


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` periodically on its own thread
    (TRUNCATE when the log is large or the store short of space)."""

    def __init__(
        self,
        engine: Engine,
        interval: float = 1.0,
        *,
        wal_path: Path | None = None,
        truncate_above: int = TRUNCATE_ABOVE,
        urgent: Callable[[], bool] | None = None,
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.truncations = 0
        self.wal_path = wal_path
        self.truncate_above = truncate_above
        self.urgent = urgent

    def _mode(self) -> str:
        """TRUNCATE when the log must give its space back, else PASSIVE."""
        if self.urgent is not None and self.urgent():
            return "TRUNCATE"
        if self.wal_path is not None:
            try:
                if self.wal_path.stat().st_size > self.truncate_above:
                    return "TRUNCATE"
            except OSError:
                pass
        return "PASSIVE"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fmd-wal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, log pages, pages copied)."""
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        self.checkpoints += 1
        return int(row[0]), int(row[1]), int(row[2])

    def _run(self) -> None:
        # Nothing may end this thread but stop(): a checkpoint that fails (a
        # full disk, a lost file) is logged once per kind and tried again next
        # round on a fresh connection.
        conn: Connection | None = None
        reported: set[str] = set()
        while not self._stop.wait(self._interval):
            try:
                if conn is None:
                    conn = self._engine.connect()
                mode = self._mode()
                conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").one()
                self.checkpoints += 1
                if mode == "TRUNCATE":
                    self.truncations += 1
                reported.clear()
            except Exception as exc:
                kind = type(exc).__name__ + str(exc)[:80]
                if kind not in reported and len(reported) < 16:
                    reported.add(kind)
                    log.warning("wal_checkpoint_failed", error=str(exc)[:300])
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
