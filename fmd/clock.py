"""The daemon's clock: native (the system clock) or simulated.

All time-based logic (timers, receipt times of ereports) asks a :class:`Clock`
so that tests never sleep.  The simulated clock starts at a given instant and
moves only when :meth:`SimulatedClock.advance` is called, which the daemon does
for every ``resource.fm.fmd.clock.addhrtime`` control event.  Waiters (the
timer queue) are woken on every advance, so timers due in simulated time fire
at once, in deadline order.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What every component that needs the time depends on."""

    simulated: bool

    def now_ns(self) -> int:
        """Current time in nanoseconds since the Unix epoch."""

    def wait_until(self, cond: threading.Condition, deadline_ns: int | None) -> None:
        """Block on ``cond`` (held by the caller) until notified or ``deadline_ns``."""


class NativeClock:
    """The system's real-time clock."""

    simulated = False

    def now_ns(self) -> int:
        return time.time_ns()

    def wait_until(self, cond: threading.Condition, deadline_ns: int | None) -> None:
        if deadline_ns is None:
            cond.wait()
            return
        delay = (deadline_ns - time.time_ns()) / 1e9
        if delay > 0:
            cond.wait(delay)


class SimulatedClock:
    """A clock that advances only when told to (``clock=simulated``)."""

    simulated = True

    def __init__(self, start_ns: int | None = None) -> None:
        self._now = time.time_ns() if start_ns is None else start_ns
        self._lock = threading.Lock()
        self._waiters: list[threading.Condition] = []

    def now_ns(self) -> int:
        with self._lock:
            return self._now

    def advance(self, delta_ns: int) -> int:
        """Move the clock forward by ``delta_ns`` (>= 0) and wake every waiter."""
        if delta_ns < 0:
            raise ValueError(f"cannot move the simulated clock backwards by {delta_ns} ns")
        with self._lock:
            self._now += delta_ns
            now = self._now
            waiters = list(self._waiters)
        for cond in waiters:
            with cond:
                cond.notify_all()
        return now

    def wait_until(self, cond: threading.Condition, deadline_ns: int | None) -> None:
        # Simulated time passes only through advance(), which notifies us; the
        # short real timeout only guards against a missed registration race.
        with self._lock:
            if cond not in self._waiters:
                self._waiters.append(cond)
            if deadline_ns is not None and deadline_ns <= self._now:
                return
        cond.wait(0.5)


def make_clock(kind: str) -> NativeClock | SimulatedClock:
    """Build the clock named by the ``clock`` property."""
    if kind == "simulated":
        return SimulatedClock()
    return NativeClock()
