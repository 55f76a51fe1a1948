"""Tests for fmd.dispq: the subscription tree agrees with class_match and stays consistent."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fmd.dispq import SubscriptionTree
from fmd.errors import ProtocolError
from fmd.protocol import class_match

components = st.sampled_from(["a", "b", "c"])
patterns = st.lists(components | st.just("*"), min_size=1, max_size=4).map(".".join)
classes = st.lists(components, min_size=1, max_size=5).map(".".join)
subscribers = st.sampled_from(["m1", "m2", "m3", "m4"])


def brute_force(subs: set[tuple[str, str]], cls: str) -> frozenset[str]:
    return frozenset(s for p, s in subs if class_match(p, cls))


# ---- examples -------------------------------------------------------------------


def test_literal_pattern_matches_only_itself() -> None:
    """A literal pattern matches its own class only."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("ereport.cpu.l2", "m")
    assert tree.match("ereport.cpu.l2") == {"m"}
    assert tree.match("ereport.cpu") == frozenset()
    assert tree.match("ereport.cpu.l2.x") == frozenset()


def test_trailing_star_matches_deeper_classes() -> None:
    """'a.*' matches a.b and a.b.c but not a."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("a.*", "m")
    assert tree.match("a.b") == {"m"}
    assert tree.match("a.b.c") == {"m"}
    assert tree.match("a") == frozenset()


def test_inner_star_matches_one_component() -> None:
    """'a.*.c' matches a.x.c but not a.x.y.c."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("a.*.c", "m")
    assert tree.match("a.x.c") == {"m"}
    assert tree.match("a.x.y.c") == frozenset()


def test_star_alone_matches_everything() -> None:
    """'*' matches any class."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("*", "m")
    assert tree.match("a") == {"m"}
    assert tree.match("list.suspect") == {"m"}


def test_subscriber_matched_once_through_several_patterns() -> None:
    """A subscriber with several matching patterns appears once."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    for p in ("ereport.*", "ereport.cpu.*", "*"):
        tree.subscribe(p, "m")
    tree.subscribe("ereport.cpu.l2", "n")
    assert tree.match("ereport.cpu.l2") == {"m", "n"}


def test_invalid_pattern_is_refused() -> None:
    """subscribe validates the pattern."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    with pytest.raises(ProtocolError, match="must be a whole component"):
        tree.subscribe("ereport.cpu*", "m")
    assert tree.patterns("m") == []


def test_cache_is_invalidated_by_subscribe_and_unsubscribe() -> None:
    """A cached result does not survive a change of subscriptions."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    assert tree.match("a.b") == frozenset()
    tree.subscribe("a.*", "m")
    assert tree.match("a.b") == {"m"}
    assert tree.unsubscribe("a.*", "m") is True
    assert tree.match("a.b") == frozenset()


def test_cache_is_bounded() -> None:
    """Many distinct classes do not grow the cache without bound, and results stay right."""
    tree: SubscriptionTree[str] = SubscriptionTree(cache_size=4)
    tree.subscribe("a.*", "m")
    for i in range(20):
        assert tree.match(f"a.x{i}") == {"m"}


def test_unsubscribe_reports_whether_it_removed_something() -> None:
    """unsubscribe returns False for a subscription that does not exist."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("a.b", "m")
    assert tree.unsubscribe("a.b", "n") is False
    assert tree.unsubscribe("a.c", "m") is False
    assert tree.unsubscribe("a.b", "m") is True
    assert tree.unsubscribe("a.b", "m") is False


def test_unsubscribe_keeps_shared_branches() -> None:
    """Removing one pattern leaves patterns sharing its prefix in place."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("a.b", "m")
    tree.subscribe("a.b.c", "n")
    tree.unsubscribe("a.b.c", "n")
    assert tree.match("a.b") == {"m"}
    tree.subscribe("a.b.c", "n")
    tree.unsubscribe("a.b", "m")
    assert tree.match("a.b.c") == {"n"}


def test_unsubscribe_all_and_patterns() -> None:
    """patterns lists a subscriber's patterns in order; unsubscribe_all removes them all."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    for p in ("ereport.cpu.*", "list.*", "ereport.cpu.*"):
        tree.subscribe(p, "m")
    tree.subscribe("list.*", "n")
    assert tree.patterns("m") == ["ereport.cpu.*", "list.*"]
    tree.unsubscribe_all("m")
    assert tree.patterns("m") == []
    assert tree.match("list.suspect") == {"n"}
    assert tree.match("ereport.cpu.x") == frozenset()


def test_match_event_adds_fault_classes_of_suspect_lists() -> None:
    """list.suspect, list.repaired and list.updated also match their fault-list classes."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("fault.cpu.*", "cpu-retire")
    tree.subscribe("list.*", "syslog")
    faults = ["fault.cpu.amd.l2cache", "fault.memory.page"]
    for cls in ("list.suspect", "list.repaired", "list.updated"):
        assert tree.match_event(cls, faults) == {"cpu-retire", "syslog"}
    for cls in ("list.isolated", "list.resolved"):
        assert tree.match_event(cls, faults) == {"syslog"}
    assert tree.match_event("ereport.cpu.x", ["fault.cpu.x"]) == frozenset()


def test_subscribers_of_any_hashable_type() -> None:
    """Subscribers may be any hashable object."""
    tree: SubscriptionTree[tuple[str, int]] = SubscriptionTree()
    tree.subscribe("a.*", ("xprt", 1))
    assert tree.match("a.b") == {("xprt", 1)}


# ---- properties -------------------------------------------------------------------


@given(st.lists(st.tuples(patterns, subscribers), max_size=12), st.lists(classes, max_size=8))
def test_match_agrees_with_class_match(subs: list[tuple[str, str]], cls_list: list[str]) -> None:
    """match(cls) is exactly the subscribers with a pattern that class_match accepts."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    for p, s in subs:
        tree.subscribe(p, s)
    for cls in cls_list:
        assert tree.match(cls) == brute_force(set(subs), cls)
        assert tree.match(cls) == brute_force(set(subs), cls)  # from the cache


class TreeMachine(RuleBasedStateMachine):
    """Random subscribe/unsubscribe sequences keep the tree equal to a brute-force model."""

    def __init__(self) -> None:
        super().__init__()
        self.tree: SubscriptionTree[str] = SubscriptionTree()
        self.model: set[tuple[str, str]] = set()

    @rule(pattern=patterns, subscriber=subscribers)
    def subscribe(self, pattern: str, subscriber: str) -> None:
        self.tree.subscribe(pattern, subscriber)
        self.model.add((pattern, subscriber))

    @rule(pattern=patterns, subscriber=subscribers)
    def unsubscribe(self, pattern: str, subscriber: str) -> None:
        removed = self.tree.unsubscribe(pattern, subscriber)
        assert removed == ((pattern, subscriber) in self.model)
        self.model.discard((pattern, subscriber))

    @rule(subscriber=subscribers)
    def unsubscribe_all(self, subscriber: str) -> None:
        self.tree.unsubscribe_all(subscriber)
        self.model = {(p, s) for p, s in self.model if s != subscriber}

    @rule(cls=classes)
    def match(self, cls: str) -> None:
        assert self.tree.match(cls) == brute_force(self.model, cls)

    @invariant()
    def patterns_agree(self) -> None:
        for s in ("m1", "m2", "m3", "m4"):
            assert set(self.tree.patterns(s)) == {p for p, t in self.model if t == s}


# The test itself: TreeMachine's docstring states the behaviour it checks.
TestTreeMachine = TreeMachine.TestCase


# ---- threads ------------------------------------------------------------------------


def test_concurrent_changes_and_matches() -> None:
    """Subscriptions changing in one thread while others match never break the tree."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("ereport.*", "steady")
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        try:
            for i in range(2000):
                tree.subscribe("ereport.cpu.*", f"m{i % 7}")
                tree.unsubscribe("ereport.cpu.*", f"m{(i + 3) % 7}")
                if i % 100 == 0:
                    tree.unsubscribe_all(f"m{i % 7}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert "steady" in tree.match("ereport.cpu.l2")
                assert tree.match("list.suspect") == frozenset()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = {"steady"} | {s for s in (f"m{i}" for i in range(7)) if tree.patterns(s)}
    assert tree.match("ereport.cpu.l2") == expected
