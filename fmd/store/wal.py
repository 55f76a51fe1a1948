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
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy import Engine

log = structlog.get_logger("fmd.store")


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` periodically on its own thread."""

    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

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
        with self._engine.connect() as conn:
            while not self._stop.wait(self._interval):
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
                    self.checkpoints += 1
                except Exception as exc:  # the next round tries again
                    log.warning("wal_checkpoint_failed", error=str(exc))
