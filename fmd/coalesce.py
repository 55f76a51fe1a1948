"""Coalescing identical ereports at ingest: a storm stored as counts, not copies.

A solid correctable error (one bad cell read again and again, a stuck pin) can
send the same ereport thousands of times a second.  Storing each one would make
the error log, the modules' queues and diagnosis grow with the storm although
nothing new is learnt after the first few.  So, as the kernel's CMCI storm
handling and mcelog's leaky buckets do at their level, fmd lets each distinct
ereport through at up to ``xprt.coalesce`` per second (a token bucket per
ereport, burst as large as the rate); beyond that, identical ereports read in
the same chunk of input are merged into the first of them, which is stored
once with a ``count`` and the time of the last one (``last_ns``).

"Identical" means the same class, detector, payload and injected flag; the
ENA, the time and a raw record's TSC do not count.  The counts stay exact: every merged ereport is
acknowledged (after the record holding it is committed, as always), the SERD
engines count a merged record as its ``count`` errors over its time span
(:mod:`fmd.serd`), and cases count it likewise (``fmadm faulty``'s Ereports
line).  ``xprt.coalesce=0`` stores every ereport as it came.

A :class:`Coalescer` is shared by the transports; each chunk of input takes a
:class:`Window`, whose merges end when its events are handed to the writer.
At most :data:`MAX_KEYS` distinct ereports are tracked (the one seen first is
forgotten first), so memory stays bounded whatever a sender invents.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from fmd.protocol import Ereport

MAX_KEYS: Final = 4096

Key = tuple[str, str | None, str | None, bool]


def key_of(ev: Ereport) -> Key:
    """What makes two ereports identical for coalescing."""
    text = ev.key_text if ev.key_text is not None else ev.payload_text
    return ev.cls, ev.detector_str, text, ev.injected


class Coalescer:
    """Per-ereport token buckets: ``rate`` identical ereports per second pass."""

    def __init__(self, rate: int, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._now = now
        self._lock = threading.Lock()
        # key -> [tokens, last refill time]; the oldest key is forgotten first.
        self._buckets: dict[Key, list[float]] = {}
        self.merged = 0  # ereports merged into another (not stored on their own)

    def take(self, key: Key) -> bool:
        """True when this ereport may pass on its own (a token was left)."""
        now = self._now()
        rate = self.rate
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_KEYS:
                    del self._buckets[next(iter(self._buckets))]
                bucket = self._buckets[key] = [float(rate), now]
            tokens = bucket[0] + (now - bucket[1]) * rate
            if tokens > rate:
                tokens = float(rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return True
            bucket[0] = tokens
            return False

    def window(self) -> Window:
        """A window for one chunk of input."""
        return Window(self)


class Window:
    """The merges of one chunk of input (see the module doc)."""

    __slots__ = ("_coalescer", "_heads")

    def __init__(self, coalescer: Coalescer | None) -> None:
        self._coalescer = coalescer
        self._heads: dict[Key, Ereport] = {}

    def merge(self, ev: Ereport) -> bool:
        """True when ``ev`` was merged into an earlier ereport of this window (it is
        then not stored on its own); False when it is to be stored."""
        coalescer = self._coalescer
        if coalescer is None or coalescer.rate <= 0:
            return False
        key = key_of(ev)
        if coalescer.take(key):
            return False
        head = self._heads.get(key)
        if head is None:
            # Over the rate: stored, and the following identical ereports of
            # this window are merged into it.
            self._heads[key] = ev
            return False
        head.count += ev.count
        head.last_ns = max(
            head.time_ns if head.last_ns is None else head.last_ns,
            ev.time_ns if ev.last_ns is None else ev.last_ns,
        )
        head.time_ns = min(head.time_ns, ev.time_ns)
        coalescer.merged += 1
        return True

    def close(self) -> None:
        """The window's events went to the writer: nothing more merges into them."""
        self._heads.clear()
