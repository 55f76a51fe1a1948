"""Host error sources: what every kernel and firmware source shares.

A *source* reads one of the host's own error channels (the tracefs
tracepoints, the kernel log, ``/dev/mcelog``, EDAC counters, pstore, a
rasdaemon database) and turns what it reads into wire objects: raw
machine-check records (``{"mca": {...}}``, decoded by :mod:`fmd.hw.telemetry`)
or ereports (``{"class": "ereport...", ...}``).  This module runs each source
on a thread of its own and owns what they have in common:

* **Availability.**  :meth:`Source.probe` says why the source cannot run here
  ("no tracefs mounted", "needs root", "kernel has no /dev/mcelog"); the
  source then shows state ``unavailable`` with that reason in ``fmstat -t`` and
  ``fmadm config`` and is probed again every :data:`REPROBE_S` seconds (a
  module loaded later, a filesystem mounted later).
* **Restart safety.**  Every batch a source reads comes with the position
  after it (:class:`Position`); the events and the position are committed in
  one transaction, so a restart or a SIGKILL resumes exactly after the last
  committed batch: nothing skipped, nothing read twice.  The source waits for
  each commit before it reads on, and retries a batch the store refused.
* **Isolation.**  Whatever a device does (an I/O error, truncated records,
  garbage) and whatever a parser defect raises fails that read only: counted
  under the reason in ``fmstat -t``, logged once per window, retried after a
  pause.  A source never stops the daemon.

Sources are restartable objects: ``start()`` spawns the thread, ``stop()``
ends it (within one poll interval).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import orjson
import structlog

from fmd.errors import EventRejected
from fmd.log import exception_signature
from fmd.protocol import Ereport
from fmd.xprt import Ingest, XprtStats

log = structlog.get_logger("fmd.xprt.source")

# Source states shown by fmstat -t and fmadm config.
STATE_RUN: Final = "run"
STATE_UNAVAILABLE: Final = "unavail"
STATE_ERROR: Final = "error"

# How often an unavailable source is probed again, and how long a source whose
# read failed waits before the next try.
REPROBE_S: Final = 30.0
ERROR_BACKOFF_S: Final = 5.0
# How long a batch the store could not take waits before it is offered again.
STORE_RETRY_S: Final = 1.0


@dataclass(frozen=True)
class Position:
    """Where a source has read up to, committed with the events it produced.

    ``ident`` names what the offset counts in (a boot id, a file's device and
    inode, a database's identity; at most 128 characters), ``offset`` is a
    count in it (a sequence number, a byte offset, a row id), and ``data`` an
    optional JSON document for positions that need more (per-CPU timestamps,
    per-counter values).
    """

    ident: str
    offset: int
    data: str | None = None

    def document(self) -> Any:
        """``data`` decoded (None when absent or unreadable)."""
        if self.data is None:
            return None
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError:
            return None


@dataclass
class Batch:
    """What one read produced: wire objects, and the position after them."""

    items: list[dict[str, Any]]
    position: Position | None


class Source(ABC):
    """One host error source, read on its own thread."""

    kind: ClassVar[str] = "source"

    def __init__(
        self, ingest: Ingest, name: str, start: Position | None, *, poll: float = 1.0
    ) -> None:
        self.ingest = ingest
        self.name = name
        self.stats: XprtStats = ingest.register(name, self.kind)
        self.position = start
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what a source implements --------------------------------------------
    @abstractmethod
    def probe(self) -> str | None:
        """None when the source can run on this host, else why it cannot."""

    @abstractmethod
    def read(self) -> Iterable[Batch]:
        """Read what is new since :attr:`position`; may yield several batches.

        Called once per poll interval.  A batch's position is committed with
        its events; :attr:`position` is moved by the caller after the commit.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the source holds open (called when its thread ends)."""

    # -- life cycle -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"fmd-src-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the source is being stopped."""
        return self._stop.wait(seconds)

    def describe(self) -> dict[str, Any]:
        """State, reason and position (tests and debugging; fmd's commands show the
        state and reason from :class:`~fmd.xprt.XprtStats`)."""
        pos = self.position
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.stats.state,
            "reason": self.stats.reason,
            "position": None if pos is None else f"{pos.ident}:{pos.offset}",
        }

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                reason = self._probe()
                if reason is not None:
                    self._unavailable(reason)
                    if self._stop.wait(REPROBE_S):
                        return
                    continue
                self._set_state(STATE_RUN, "")
                self._read_until_unavailable()
        finally:
            try:
                self.close()
            except Exception as exc:  # closing is best effort
                log.warning("source_close_failed", source=self.name, error=str(exc))

    def _probe(self) -> str | None:
        try:
            return self.probe()
        except Exception as exc:
            return f"probe failed: {type(exc).__name__}: {exc}"

    def _read_until_unavailable(self) -> None:
        while not self._stop.is_set():
            try:
                for batch in self.read():
                    if not self._store(batch):
                        return
                    if self._stop.is_set():
                        return
            except Exception as exc:
                self._failed(exc)
                if self._stop.wait(ERROR_BACKOFF_S):
                    return
                reason = self._probe()
                if reason is not None:
                    self._unavailable(reason)
                    return
                continue
            if self.stats.state != STATE_RUN:
                self._set_state(STATE_RUN, "")
            if self._stop.wait(self.poll):
                return

    # -- state --------------------------------------------------------------
    def _set_state(self, state: str, reason: str) -> None:
        self.stats.state = state
        self.stats.reason = reason

    def _unavailable(self, reason: str) -> None:
        if self.stats.state != STATE_UNAVAILABLE or self.stats.reason != reason:
            log.info("source_unavailable", source=self.name, reason=reason)
        self._set_state(STATE_UNAVAILABLE, reason)

    def _failed(self, exc: BaseException) -> None:
        """A read failed: count it under its reason, log it (rate-limited), go on."""
        reason = f"read failed: {type(exc).__name__}: {exc}"
        self._set_state(STATE_ERROR, reason[:200])
        self.stats.reasons["read failed"] = self.stats.reasons.get("read failed", 0) + 1
        if self.ingest.allow_log(f"{self.name}:{exception_signature(exc)}"):
            log.error("source_read_failed", source=self.name, error=reason, exc_info=exc)

    def reject(self, reason: str, where: str = "") -> None:
        """Count input the source itself could not read (a truncated record, ...)."""
        self.stats.received += 1
        self.ingest.rejected(self.stats, EventRejected(reason), where=where)

    # -- storing ------------------------------------------------------------
    def _store(self, batch: Batch) -> bool:
        """Decode and commit one batch with its position; False when stopping."""
        events: list[Ereport] = []
        window = self.ingest.window()
        for obj in batch.items:
            try:
                ev = self.ingest.decode(orjson.dumps(obj), self.stats)
            except EventRejected:
                continue  # counted and logged by decode (duplicates too)
            except (TypeError, orjson.JSONEncodeError) as exc:
                self.reject(f"cannot encode this record: {exc}")
                continue
            if isinstance(ev, Ereport):
                if not window.merge(ev):
                    events.append(ev)
            else:
                self.reject("control events are accepted only on the socket")
        window.close()
        if not events and batch.position is None:
            return True
        position = batch.position
        offset = None
        if position is not None:
            offset = (self.name, position.ident, position.offset, position.data)
        while not self._stop.is_set():
            error = self.ingest.submit_and_wait(events, self.stats, offset)
            if error is None:
                if position is not None:
                    self.position = position
                return True
            if self.ingest.allow_log(f"{self.name}:store"):
                log.error("source_store_failed", source=self.name, error=str(error))
            self._stop.wait(STORE_RETRY_S)
        return False
