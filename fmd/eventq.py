"""Per-module event queues.

Each module owns one :class:`EventQueue`, filled by the dispatcher (on the
writer thread) and drained by the module's own thread, so a slow module never
stalls ingest.  Items are kept in dispatch order; timeouts and control calls go
to the head, as in the reference (a timer must not wait behind a backlog).

When a queue holds ``limit`` items, or events of ``max_bytes`` bytes, further
events are not kept in memory: only their ``(log, id)`` references are
remembered in an overflow list, and the module thread re-reads those events
from the store once it has caught up.  Memory stays bounded (by count and by
bytes, whatever the events' sizes) and nothing is lost, because an event is
committed only after every module it was dispatched to has checkpointed past
it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from fmd.errors import ModuleError
from fmd.protocol import Ereport

# What a queued fault-log event is counted as (list events are small and made
# by fmd's own modules; ereports carry their own size).
LIST_EVENT_SIZE: Final = 4096
# The default bound on the bytes of events one queue holds in memory.
DEFAULT_MAX_BYTES: Final = 64 << 20
# The answer to a call queued to a module that no longer runs.
NOT_RUNNING: Final = "the module is no longer running"


def _size(item: EventItem) -> int:
    ev = item.event
    return ev.size if isinstance(ev, Ereport) and ev.size else LIST_EVENT_SIZE


@dataclass(slots=True)
class EventItem:
    """An event for the module: ``log`` is ``errlog`` or ``fltlog``."""

    log: str
    id: int
    event: Any


@dataclass(slots=True)
class TimeoutItem:
    timer_id: int
    arg: Any


@dataclass(slots=True)
class CallItem:
    """Run ``fn`` on the module's thread (case operations asked by others)."""

    fn: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


Item = EventItem | TimeoutItem | CallItem


class EventQueue:
    """A bounded FIFO with an overflow list of event references."""

    def __init__(self, limit: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._limit = max(1, limit)
        self._max_bytes = max(1, max_bytes)
        # Bytes of the events in _items (timeouts and calls count nothing).
        self.bytes = 0
        self._items: deque[Item] = deque()
        self._overflow: deque[tuple[str, int]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.busy = False
        self.stats = {"enqueued": 0, "overflowed": 0, "max_len": 0}
        self.wait_ns = 0  # total time events waited in the queue (fmstat svc_t)
        self._enq_times: deque[int] = deque()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items) + len(self._overflow)

    def put_event(self, item: EventItem) -> None:
        """Append an event, or only its reference once the queue is full."""
        size = _size(item)
        with self._cond:
            full = len(self._items) >= self._limit or self.bytes + size > self._max_bytes
            if self._overflow or full:
                self._overflow.append((item.log, item.id))
                self.stats["overflowed"] += 1
            else:
                self._items.append(item)
                self.bytes += size
                self._enq_times.append(time.monotonic_ns())
            self.stats["enqueued"] += 1
            n = len(self._items) + len(self._overflow)
            if n > self.stats["max_len"]:
                self.stats["max_len"] = n
            self._cond.notify()

    def put_events(self, items: list[EventItem]) -> None:
        """Append many events at once (one lock, one wake-up)."""
        sizes = [_size(i) for i in items]
        with self._cond:
            room = 0 if self._overflow else max(0, self._limit - len(self._items))
            room = min(room, len(items))
            budget = self._max_bytes - self.bytes
            for n in range(room):
                budget -= sizes[n]
                if budget < 0:
                    room = n
                    break
            keep, spill = items[:room], items[room:]
            if spill:
                self.stats["overflowed"] += len(spill)
                self._overflow.extend((i.log, i.id) for i in spill)
            self.bytes += sum(sizes[:room])
            now = time.monotonic_ns()
            self._items.extend(keep)
            self._enq_times.extend([now] * len(keep))
            self.stats["enqueued"] += len(items)
            n = len(self._items) + len(self._overflow)
            if n > self.stats["max_len"]:
                self.stats["max_len"] = n
            self._cond.notify()

    def put_refs(self, refs: list[tuple[str, int]]) -> None:
        """Append references to events the module thread reads back from the store
        (in order, after everything queued before them)."""
        with self._cond:
            self._overflow.extend(refs)
            self.stats["enqueued"] += len(refs)
            n = len(self._items) + len(self._overflow)
            if n > self.stats["max_len"]:
                self.stats["max_len"] = n
            self._cond.notify()

    def put_front(self, item: TimeoutItem | CallItem) -> None:
        """Queue a timer or a call ahead of the events.  Once the queue is closed
        (the module stopped or is stopping) nobody will run it: a call is answered
        at once with an error instead of leaving its caller to time out."""
        with self._cond:
            if self._closed:
                if isinstance(item, CallItem):
                    item.error = ModuleError(NOT_RUNNING)
                    item.done.set()
                return
            self._items.appendleft(item)
            self._enq_times.appendleft(time.monotonic_ns())
            self._cond.notify()

    def get_batch(self, max_items: int, timeout: float | None = None) -> list[Item] | None:
        """Up to ``max_items`` items; ``[]`` on timeout; None once closed and empty."""
        with self._cond:
            while not self._items and not self._overflow:
                if self._closed:
                    return None
                if not self._cond.wait(timeout):
                    return []
            out: list[Item] = []
            now = time.monotonic_ns()
            while self._items and len(out) < max_items:
                item = self._items.popleft()
                if isinstance(item, EventItem):
                    self.bytes -= _size(item)
                out.append(item)
                self.wait_ns += now - self._enq_times.popleft()
            self.busy = True
            return out

    def take_overflow(self, max_refs: int) -> list[tuple[str, int]]:
        """References to re-read from the store, taken only when the queue is empty."""
        with self._cond:
            if self._items:
                return []
            out: list[tuple[str, int]] = []
            while self._overflow and len(out) < max_refs:
                out.append(self._overflow.popleft())
            return out

    def return_overflow(self, refs: list[tuple[str, int]]) -> None:
        """Put back references taken by :meth:`take_overflow` that could not be read."""
        with self._cond:
            self._overflow.extendleft(reversed(refs))
            self._cond.notify()

    def idle(self) -> None:
        with self._cond:
            self.busy = False
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the queue is empty and its module is not processing."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._overflow or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drop_backlog(self) -> int:
        """Shutdown: forget the events still queued (they stay uncommitted and are
        replayed at the next start); return how many.  The batch the module is
        working on finishes and is checkpointed as usual."""
        with self._cond:
            events = sum(1 for i in self._items if isinstance(i, EventItem))
            events += len(self._overflow)
            for item in self._items:
                if isinstance(item, CallItem):
                    item.error = RuntimeError("fmd is shutting down")
                    item.done.set()
            self._items.clear()
            self.bytes = 0
            self._enq_times.clear()
            self._overflow.clear()
            self._cond.notify_all()
            return events

    def drop_all(self) -> None:
        """Forget every queued item (the module failed or was unloaded)."""
        with self._cond:
            for item in self._items:
                if isinstance(item, CallItem):
                    item.error = ModuleError(NOT_RUNNING)
                    item.done.set()
            self._items.clear()
            self.bytes = 0
            self._enq_times.clear()
            self._overflow.clear()
            self.busy = False
            self._cond.notify_all()
