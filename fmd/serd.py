"""SERD engines: count events in a sliding time window and trip when too many arrive.

A Soft Error Rate Discrimination engine answers one question for a diagnosis
module: "have more than N of these events arrived within T nanoseconds?".  An
engine holds *references* to stored events (the event id and its time), never
copies; the events themselves live in the event store, which is what lets
replay ask whether an event is already held by an engine.

Each engine is a two-state machine::

              record() below threshold,
              gc(), reset()
                 +------+                                          record(): event
                 |      v                                          dropped, False
               +----------+  record(): the last N+1 events   +-------+ ---+
  create() --> | COUNTING | -------------------------------> | FIRED |    |
               +----------+     span <= T; returns True      +-------+ <--+
                    ^                                            |
                    +-------------------- reset() ---------------+

* ``record()`` is called by a diagnosis module (through the module API) for
  each ereport it wants counted.  While COUNTING it keeps the most recent
  N+1 events; when those span at most T it moves to FIRED and returns True.
  While FIRED every further event is dropped and ``record()`` returns False.
* ``reset()`` is called by the module after it has moved the engine's events
  into a case, or by an administrator (``fmadm reset -s``).  It empties the
  engine and returns it to COUNTING.
* ``gc()`` is called by the daemon's periodic garbage collection.  It never
  changes the state; it only forgets COUNTING events that can no longer be
  part of a window (older than the newest event minus T).

Event times are compared in the order the events were *recorded*, not sorted
by time, exactly as the illumos engine does.  The window is measured as
``time(newest recorded) - time(oldest retained)``.  The illumos delta is an
unsigned 64-bit subtraction, so a newest event that is *earlier* than the
oldest one (a late or replayed event) yields a huge delta and the engine does
not fire.  fmd keeps that rule: a negative delta is outside the window.

Every change to an engine sets its ``dirty`` flag so the module's checkpoint
is rewritten after the dispatch that caused it.

An event may stand for several errors: a record that ingest coalesced from
identical ereports (:mod:`fmd.xprt`) carries their ``count`` and the time of
the last one.  The engine counts errors, not records: it keeps the fewest
most recent records whose counts add up to more than N, and fires when those
span at most T, from the oldest record's time to the newest one's last error.
With every count 1 this is exactly the rule above.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, KeysView, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fmd.errors import SerdError


class SerdEvent(NamedTuple):
    """A reference to a stored event: its id in the event store, its time, and
    (for a coalesced record) how many errors it stands for and the last one's time."""

    event_id: int
    time_ns: int
    errors: int = 1
    last_ns: int | None = None

    @property
    def end_ns(self) -> int:
        """The time of the last error the event stands for."""
        return self.time_ns if self.last_ns is None else self.last_ns


def _check_params(name: str, n: int, t_ns: int) -> None:
    """Refuse an N below zero or a T that is not positive, naming the engine."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SerdError(f"SERD engine {name!r}: N must be an integer >= 0, got {n!r}")
    if isinstance(t_ns, bool) or not isinstance(t_ns, int) or t_ns <= 0:
        raise SerdError(
            f"SERD engine {name!r}: T must be a positive number of nanoseconds, got {t_ns!r}"
        )


def _int_member(name: str, record: Mapping[str, Any], key: str) -> int:
    """Read an integer member of a checkpoint record, naming the engine if it is bad."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SerdError(f"SERD engine {name!r}: checkpoint {key!r} is not an integer: {value!r}")
    return value


@dataclass(slots=True)
class SerdEngine:
    """One SERD engine: trips on the (N+1)th event recorded within T nanoseconds."""

    name: str
    n: int
    t_ns: int
    events: deque[SerdEvent] = field(default_factory=deque)
    fired: bool = False
    dirty: bool = False
    # The errors the held events stand for (their counts added up).
    total: int = 0

    def __post_init__(self) -> None:
        _check_params(self.name, self.n, self.t_ns)
        self.total = sum(ev.errors for ev in self.events)

    @property
    def count(self) -> int:
        """The number of errors the engine currently holds."""
        return self.total

    def empty(self) -> bool:
        """Return True if the engine holds no events."""
        return not self.events

    def contains(self, event_id: int) -> bool:
        """Return True if the engine holds a reference to the event ``event_id``."""
        return any(ev.event_id == event_id for ev in self.events)

    def event_ids(self) -> list[int]:
        """The ids of the held events, oldest recorded first."""
        return [ev.event_id for ev in self.events]

    def record(
        self, event_id: int, time_ns: int, count: int = 1, last_ns: int | None = None
    ) -> bool:
        """Count one event (standing for ``count`` errors, the last at ``last_ns``);
        return True only on the call that makes the engine fire."""
        if self.fired:
            # A fired engine has done its job; the module resets it once it
            # has moved the events into a case.
            return False
        events = self.events
        events.append(SerdEvent(event_id, time_ns, count, last_ns))
        self.total += count
        # Keep the fewest most recent events that still hold more than N errors.
        while len(events) > 1 and self.total - events[0].errors > self.n:
            self.total -= events.popleft().errors
        self.dirty = True
        if self.total > self.n:
            delta = events[-1].end_ns - events[0].time_ns
            # A negative delta (newest recorded earlier than oldest) is the
            # illumos unsigned wraparound case: outside the window.
            if 0 <= delta <= self.t_ns:
                self.fired = True
                return True
        return False

    def reset(self) -> None:
        """Discard every event and clear the fired state."""
        if self.events or self.fired:
            self.dirty = True
        self.events.clear()
        self.total = 0
        self.fired = False

    def gc(self) -> int:
        """Drop leading events older than newest - T (unless fired); return how many."""
        if self.fired or not self.events:
            return 0
        horizon = self.events[-1].time_ns - self.t_ns
        dropped = 0
        # Walk from the oldest and stop at the first event inside the window,
        # as the reference does; later events are kept even if out of order.
        while self.events and self.events[0].end_ns < horizon:
            self.total -= self.events.popleft().errors
            dropped += 1
        if dropped:
            self.dirty = True
        return dropped

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able checkpoint record of the engine (dirty is not saved)."""
        return {
            "name": self.name,
            "n": self.n,
            "t": self.t_ns,
            "fired": self.fired,
            "events": [
                [ev.event_id, ev.time_ns]
                if ev.errors == 1 and ev.last_ns is None
                else [ev.event_id, ev.time_ns, ev.errors, ev.end_ns]
                for ev in self.events
            ],
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SerdEngine:
        """Rebuild an engine from :meth:`to_dict` output; SerdError if it is malformed."""
        name = record.get("name")
        if not isinstance(name, str) or not name:
            raise SerdError(f"SERD checkpoint record has no valid name: {dict(record)!r}")
        fired = record.get("fired", False)
        if not isinstance(fired, bool):
            raise SerdError(f"SERD engine {name!r}: checkpoint 'fired' is not a bool: {fired!r}")
        raw_events = record.get("events", [])
        if not isinstance(raw_events, list):
            raise SerdError(f"SERD engine {name!r}: checkpoint 'events' is not a list")
        events: deque[SerdEvent] = deque()
        for item in raw_events:
            if (
                not isinstance(item, list | tuple)
                or len(item) not in (2, 4)
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
                or (len(item) == 4 and item[2] < 1)
            ):
                raise SerdError(
                    f"SERD engine {name!r}: checkpoint event {item!r} is not "
                    "[event_id, time_ns] or [event_id, time_ns, count, last_ns]"
                )
            events.append(SerdEvent(*item))
        return cls(
            name=name,
            n=_int_member(name, record, "n"),
            t_ns=_int_member(name, record, "t"),
            events=events,
            fired=fired,
        )


class SerdSet:
    """The SERD engines of one module, keyed by engine name."""

    __slots__ = ("_destroyed", "_engines", "_membership_dirty", "_touched")

    def __init__(self) -> None:
        self._engines: dict[str, SerdEngine] = {}
        self._membership_dirty = False
        # Names of engines handed out or changed since clear_dirty(): only these
        # can be dirty, so a checkpoint never walks every engine.
        self._touched: set[str] = set()
        # Names destroyed since clear_dirty(), so their saved copies can be removed.
        self._destroyed: set[str] = set()

    def __len__(self) -> int:
        return len(self._engines)

    def __contains__(self, name: object) -> bool:
        return name in self._engines

    def __iter__(self) -> Iterator[SerdEngine]:
        """Iterate over the engines in name order."""
        for name in sorted(self._engines):
            yield self._engines[name]

    def keys(self) -> KeysView[str]:
        """The engine names, unsorted (a live view)."""
        return self._engines.keys()

    def names(self) -> list[str]:
        """The engine names, sorted."""
        return sorted(self._engines)

    def create(self, name: str, n: int, t_ns: int) -> SerdEngine:
        """Create an engine; SerdError if the name is taken or N/T are invalid."""
        if name in self._engines:
            raise SerdError(
                f"SERD engine {name!r} already exists; check serd_exists() before creating it"
            )
        engine = SerdEngine(name=name, n=n, t_ns=t_ns, dirty=True)
        self._engines[name] = engine
        self._membership_dirty = True
        self._touched.add(name)
        self._destroyed.discard(name)
        return engine

    def exists(self, name: str) -> bool:
        """Return True if an engine with this name exists."""
        return name in self._engines

    def get(self, name: str) -> SerdEngine:
        """Return the named engine; SerdError if there is none."""
        try:
            engine = self._engines[name]
        except KeyError:
            raise SerdError(
                f"SERD engine {name!r} does not exist; create it before using it"
            ) from None
        self._touched.add(name)
        return engine

    def destroy(self, name: str) -> None:
        """Remove the named engine; SerdError if there is none."""
        self.get(name)
        del self._engines[name]
        self._touched.discard(name)
        self._destroyed.add(name)
        self._membership_dirty = True

    def record(
        self, name: str, event_id: int, time_ns: int, count: int = 1, last_ns: int | None = None
    ) -> bool:
        """Record an event in the named engine; True on the call that fires it."""
        return self.get(name).record(event_id, time_ns, count, last_ns)

    def fired(self, name: str) -> bool:
        """Return True if the named engine has fired and not been reset."""
        return self.get(name).fired

    def reset(self, name: str) -> None:
        """Reset the named engine (discard its events, clear fired)."""
        self.get(name).reset()

    def empty(self, name: str) -> bool:
        """Return True if the named engine holds no events."""
        return self.get(name).empty()

    def gc(self) -> int:
        """Garbage-collect every engine; return the number of events dropped."""
        dropped = 0
        for name, engine in self._engines.items():
            n = engine.gc()
            if n:
                self._touched.add(name)
                dropped += n
        return dropped

    def contains_event(self, event_id: int) -> bool:
        """Return True if any engine holds a reference to ``event_id`` (used by replay)."""
        return any(engine.contains(event_id) for engine in self._engines.values())

    @property
    def dirty(self) -> bool:
        """True if an engine changed, or one was created or destroyed, since clear_dirty()."""
        return self._membership_dirty or any(
            self._engines[n].dirty for n in self._touched if n in self._engines
        )

    def destroyed_names(self) -> list[str]:
        """The names of the engines destroyed since the last clear_dirty(), sorted."""
        return sorted(self._destroyed)

    def dirty_names(self) -> list[str]:
        """The names of the engines changed since the last clear_dirty(), sorted."""
        return sorted(n for n in self._touched if n in self._engines and self._engines[n].dirty)

    def clear_dirty(self) -> None:
        """Mark every engine clean (after the module's checkpoint was written)."""
        self._membership_dirty = False
        for name in self._touched:
            engine = self._engines.get(name)
            if engine is not None:
                engine.dirty = False
        self._touched.clear()
        self._destroyed.clear()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able checkpoint record of every engine, keyed by name."""
        return {name: self._engines[name].to_dict() for name in sorted(self._engines)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SerdSet:
        """Rebuild a set from :meth:`to_dict` output; SerdError if it is malformed."""
        serds = cls()
        for key, value in record.items():
            if not isinstance(value, Mapping):
                raise SerdError(f"SERD engine {key!r}: checkpoint record is not an object")
            engine = SerdEngine.from_dict(value)
            if engine.name != key:
                raise SerdError(
                    f"SERD checkpoint key {key!r} holds an engine named {engine.name!r}"
                )
            serds._engines[key] = engine
        return serds
