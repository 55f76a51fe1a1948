"""Whether the store can take new events: free space and storage failures.

fmd must never fill the disk it shares with the host, nor hang once the disk
is full.  :class:`StoreHealth` answers one question for the transports — may
new events be stored now? — and one for operators — what is wrong with the
store?  It follows illumos' ``log.minfree``: new ereports are refused while
the file system holding the database has less than ``log.minfree`` bytes
free, so that the room left still takes checkpoints and diagnoses, which are
never refused.

States (:class:`StoreState`)::

    OK --free < log.minfree, or a write failed with "disk full"--> FULL
    OK --the database stopped answering (connection lost)---------> UNAVAILABLE
    FULL --free >= log.minfree again, or a write succeeded--------> OK
    UNAVAILABLE --a write succeeded, or RETRY_AFTER passed--------> OK (a probe)

The free space is read with ``statvfs`` on the database's directory (SQLite
only; a PostgreSQL server keeps its own disk), at most every
:data:`CHECK_INTERVAL` seconds, so asking on every ingest chunk costs nothing.
A state change is logged once (``store_full``, ``store_unavailable``,
``store_recovered``).  Thread-safe: transports, the writer and the control
socket all ask.
"""

from __future__ import annotations

import enum
import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger("fmd.store")

CHECK_INTERVAL: Final = 0.1
# After a failed write with no free-space figure to watch (PostgreSQL, or a
# lost connection), new events are refused for this long, then let through
# again to find out whether the database is back.
RETRY_AFTER: Final = 5.0

# How a database reports a full disk: SQLite's SQLITE_FULL text, PostgreSQL's
# SQLSTATE 53100 (disk_full) text, and the operating system's ENOSPC.
_FULL_TEXTS: Final = (
    "database or disk is full",
    "no space left on device",
    "could not extend file",
    "disk full",
)


class StoreState(enum.StrEnum):
    OK = "ok"
    FULL = "full"
    UNAVAILABLE = "unavailable"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (a database or OS error, possibly wrapped) means "no space left"."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cur).lower()
        if any(t in text for t in _FULL_TEXTS):
            return True
        orig: Any = getattr(cur, "orig", None)
        cur = orig if isinstance(orig, BaseException) else (cur.__cause__ or cur.__context__)
    return False


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The store's state as the control socket reports it."""

    state: StoreState
    reason: str
    free: int | None
    minfree: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "free": self.free,
            "minfree": self.minfree,
        }


class StoreHealth:
    """Free space and write failures of the store (see the module docstring)."""

    def __init__(self, directory: Path | None, minfree: int) -> None:
        self.directory = directory
        self.minfree = minfree
        self._lock = threading.Lock()
        self._state = StoreState.OK
        self._reason = ""
        self._write_error: str | None = None  # a failing write keeps the state
        self._failed_at = 0.0
        self._free: int | None = None
        self._checked = 0.0
        self.refused = 0  # events refused because of the state

    # -- questions -----------------------------------------------------------
    def refusal(self) -> str | None:
        """Why new events cannot be stored now, or None when they can."""
        with self._lock:
            self._check_space()
            return None if self._state is StoreState.OK else self._reason

    def report(self) -> HealthReport:
        with self._lock:
            self._check_space(force=True)
            return HealthReport(self._state, self._reason, self._free, self.minfree)

    def short_of_space(self) -> bool:
        """Whether the store is not taking new events (for the WAL checkpointer)."""
        return self.state is not StoreState.OK

    @property
    def state(self) -> StoreState:
        with self._lock:
            self._check_space()
            return self._state

    # -- what the writer tells it ---------------------------------------------
    def write_failed(self, exc: BaseException, *, unavailable: bool) -> None:
        """A write failed for lack of space (or, ``unavailable``, of a database)."""
        with self._lock:
            self._failed_at = time.monotonic()
            first = str(exc).strip().splitlines()
            detail = first[0][:200] if first else type(exc).__name__
            if is_disk_full(exc):
                self._write_error = (
                    f"no space left on the store's file system ({detail}); fmd refuses new "
                    "events until space is freed"
                )
                self._set(StoreState.FULL, self._write_error)
            elif unavailable:
                self._write_error = (
                    f"the database is not answering ({detail}); fmd refuses new events until "
                    "it is back"
                )
                self._set(StoreState.UNAVAILABLE, self._write_error)

    def write_succeeded(self) -> None:
        """A transaction committed: a write failure is over."""
        if self._write_error is None:
            return
        with self._lock:
            self._write_error = None
            self._check_space(force=True)

    # -- internals (lock held) ---------------------------------------------------
    def _check_space(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        free = self._free_bytes()
        self._free = free
        if self._write_error is not None:
            space_back = (
                self._state is StoreState.FULL and free is not None and free >= self.minfree
            )
            if not space_back and now - self._failed_at < RETRY_AFTER:
                return
            self._write_error = None
        if free is not None and free < self.minfree:
            self._set(
                StoreState.FULL,
                f"no space left for new events: {_mib(free)} free on {self.directory}, "
                f"below log.minfree ({_mib(self.minfree)}); fmd refuses new events until "
                "space is freed",
            )
        else:
            self._set(StoreState.OK, "")

    def _free_bytes(self) -> int | None:
        if self.directory is None:
            return None
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _set(self, state: StoreState, reason: str) -> None:
        if state is self._state and reason == self._reason:
            return
        before = self._state
        self._state, self._reason = state, reason
        if state is StoreState.OK:
            log.warning("store_recovered", previous=before.value)
        elif before is not state:
            log.error(f"store_{state.value}", reason=reason, free=self._free)
