"""Module timers: a heap of deadlines served by one thread.

``install`` returns a timer id; when the clock reaches the deadline the
timer's module receives a timeout at the head of its queue.  With the
simulated clock, deadlines are reached only when the clock is advanced, so
tests exercise timers without sleeping.  Timers are not checkpointed: a
module re-installs what it needs when it restores its state (as in illumos).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from fmd.clock import Clock


class TimerQueue:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int]] = []
        self._timers: dict[int, tuple[Callable[[int, Any], None], Any]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        # Timers of fmd itself (gc), left out of the horizon: they re-arm forever.
        self._internal: set[int] = set()
        self._firing = 0

    def install(
        self, delta_ns: int, fire: Callable[[int, Any], None], arg: Any, *, internal: bool = False
    ) -> int:
        """Call ``fire(timer_id, arg)`` once ``delta_ns`` has elapsed on the clock."""
        with self._cond:
            tid = next(self._ids)
            heapq.heappush(self._heap, (self._clock.now_ns() + max(0, delta_ns), tid))
            self._timers[tid] = (fire, arg)
            if internal:
                self._internal.add(tid)
            self._cond.notify_all()
            return tid

    def remove(self, timer_id: int) -> bool:
        with self._cond:
            return self._timers.pop(timer_id, None) is not None

    def pending(self) -> int:
        with self._cond:
            return len(self._timers)

    def horizon(self) -> int | None:
        """The latest deadline of the modules' timers still installed, or None."""
        with self._cond:
            live = [
                when
                for when, tid in self._heap
                if tid in self._timers and tid not in self._internal
            ]
            return max(live) if live else None

    def wait_settled(self, timeout: float = 30.0) -> bool:
        """Wait until every timer that is due on the clock has been fired."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = self._clock.now_ns()
                due = any(when <= now and tid in self._timers for when, tid in self._heap)
                if not due and not self._firing:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fmd-timers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def kick(self) -> None:
        """Re-examine deadlines now (the simulated clock moved)."""
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            due: list[tuple[int, Callable[[int, Any], None], Any]] = []
            with self._cond:
                if self._stop:
                    return
                now = self._clock.now_ns()
                while self._heap and self._heap[0][0] <= now:
                    _, tid = heapq.heappop(self._heap)
                    entry = self._timers.pop(tid, None)
                    self._internal.discard(tid)
                    if entry is not None:
                        due.append((tid, entry[0], entry[1]))
                self._firing = len(due)
                if not due:
                    deadline = self._heap[0][0] if self._heap else None
                    self._clock.wait_until(self._cond, deadline)
                    continue
            try:
                for tid, fire, arg in due:
                    fire(tid, arg)
            finally:
                with self._cond:
                    self._firing = 0
                    self._cond.notify_all()
