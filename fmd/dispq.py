"""The subscription tree: which subscribers want an event of a given class.

Patterns are split on ``.`` and stored one component per tree level; a
subscriber hangs off the node where its pattern ends.  Matching a class walks
the tree level by level, following both the literal child and the ``*`` child
at every node, with the semantics of :func:`fmd.protocol.class_match`:

* an inner ``*`` matches exactly one component;
* a ``*`` that ends a pattern matches one or more components, so while walking
  a class, every ``*`` child that ends a pattern matches the rest of the class
  whatever its depth (``a.*`` matches ``a.b`` and ``a.b.c``, not ``a``).

Results are cached per class.  Any (un)subscription drops the whole cache:
subscriptions change rarely (module load and unload), events arrive all the
time.  All methods are safe to call from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from typing import Final, Generic, TypeVar

from fmd.protocol import validate_pattern

T = TypeVar("T", bound=Hashable)

# list events whose fault-list classes are matched too, so that a subscriber
# to fault.cpu.* receives the list.suspect that names a fault.cpu.* suspect.
_LIST_EVENTS_WITH_FAULTS: Final = frozenset({"list.suspect", "list.repaired", "list.updated"})

_STAR: Final = "*"


class _Node(Generic[T]):
    """One tree level: children by component, and subscribers whose pattern ends here."""

    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.subscribers: set[T] = set()


class SubscriptionTree(Generic[T]):
    """Subscribers (modules, transports, ...) indexed by the class patterns they subscribed to."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._lock = threading.Lock()
        self._root: _Node[T] = _Node()
        self._patterns: dict[T, dict[str, None]] = {}  # subscriber -> patterns, in order
        self._cache: dict[str, frozenset[T]] = {}
        self._cache_size = cache_size

    def subscribe(self, pattern: str, subscriber: T) -> None:
        """Deliver events matching *pattern* to *subscriber* (subscribing twice is harmless).

        Raises ProtocolError if *pattern* is not a valid pattern.
        """
        validate_pattern(pattern)
        with self._lock:
            node = self._root
            for component in pattern.split("."):
                node = node.children.setdefault(component, _Node())
            node.subscribers.add(subscriber)
            self._patterns.setdefault(subscriber, {})[pattern] = None
            self._cache = {}

    def unsubscribe(self, pattern: str, subscriber: T) -> bool:
        """Drop one subscription; return False if it did not exist."""
        with self._lock:
            removed = self._remove(pattern, subscriber)
            if removed:
                self._cache = {}
            return removed

    def unsubscribe_all(self, subscriber: T) -> None:
        """Drop every subscription of *subscriber* (a module being unloaded)."""
        with self._lock:
            for pattern in list(self._patterns.get(subscriber, ())):
                self._remove(pattern, subscriber)
            self._cache = {}

    def patterns(self, subscriber: T) -> list[str]:
        """The patterns *subscriber* is subscribed to, in the order it subscribed."""
        with self._lock:
            return list(self._patterns.get(subscriber, ()))

    def match(self, cls: str) -> frozenset[T]:
        """Every subscriber with a pattern matching event class *cls*."""
        cached = self._cache.get(cls)
        if cached is not None:
            return cached
        with self._lock:
            result = self._walk(cls)
            # Bounded, so that a flood of distinct bogus classes cannot grow it.
            if len(self._cache) >= self._cache_size:
                self._cache = {}
            self._cache[cls] = result
            return result

    def match_event(self, cls: str, fault_classes: Iterable[str] = ()) -> frozenset[T]:
        """Subscribers for an event; list.suspect/repaired/updated also match their faults."""
        result = self.match(cls)
        if cls in _LIST_EVENTS_WITH_FAULTS:
            for fault_class in fault_classes:
                result = result | self.match(fault_class)
        return result

    def _walk(self, cls: str) -> frozenset[T]:
        found: set[T] = set()
        level: list[_Node[T]] = [self._root]
        for component in cls.split("."):
            below: list[_Node[T]] = []
            for node in level:
                star = node.children.get(_STAR)
                if star is not None:
                    # A pattern ending in "*" here takes this component and any deeper ones.
                    found.update(star.subscribers)
                    below.append(star)
                if component != _STAR:
                    child = node.children.get(component)
                    if child is not None:
                        below.append(child)
            if not below:
                return frozenset(found)
            level = below
        for node in level:
            found.update(node.subscribers)
        return frozenset(found)

    def _remove(self, pattern: str, subscriber: T) -> bool:
        """Remove one subscription and prune nodes left empty; the caller holds the lock."""
        mine = self._patterns.get(subscriber)
        if mine is None or pattern not in mine:
            return False
        del mine[pattern]
        if not mine:
            del self._patterns[subscriber]
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for component in pattern.split("."):
            path.append((node, component))
            node = node.children[component]
        node.subscribers.discard(subscriber)
        for parent, component in reversed(path):
            child = parent.children[component]
            if child.subscribers or child.children:
                break
            del parent.children[component]
        return True
