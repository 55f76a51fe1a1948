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

    def install(self, delta_ns: int, fire: Callable[[int, Any], None], arg: Any) -> int:
        """Call ``fire(timer_id, arg)`` once ``delta_ns`` has elapsed on the clock."""
        with self._cond:
            tid = next(self._ids)
            heapq.heappush(self._heap, (self._clock.now_ns() + max(0, delta_ns), tid))
            self._timers[tid] = (fire, arg)
            self._cond.notify_all()
            return tid

    def remove(self, timer_id: int) -> bool:
        with self._cond:
            return self._timers.pop(timer_id, None) is not None

    def pending(self) -> int:
        with self._cond:
            return len(self._timers)

    def horizon(self) -> int | None:
        """The latest deadline of the timers still installed, or None."""
        with self._cond:
            live = [when for when, tid in self._heap if tid in self._timers]
            return max(live) if live else None

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
                    if entry is not None:
                        due.append((tid, entry[0], entry[1]))
                if not due:
                    deadline = self._heap[0][0] if self._heap else None
                    self._clock.wait_until(self._cond, deadline)
                    continue
            for tid, fire, arg in due:
                fire(tid, arg)
