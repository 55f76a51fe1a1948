"""Tests for fmd.serd: SERD engine windows, firing, reset, gc, dirty flags and checkpoints."""

from __future__ import annotations

import json
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import SerdError
from fmd.serd import SerdEngine, SerdEvent, SerdSet

SEC = 1_000_000_000
HOUR = 3600 * SEC


def engine(n: int = 2, t_ns: int = 10 * SEC) -> SerdEngine:
    return SerdEngine(name="serd.test", n=n, t_ns=t_ns)


# ---- SerdEngine.record --------------------------------------------------


def test_n_zero_fires_on_first_event() -> None:
    """An engine with N=0 fires on its very first event."""
    eng = engine(n=0)
    assert eng.record(1, 5) is True
    assert eng.fired is True


def test_fires_on_n_plus_first_event_within_t() -> None:
    """With N=2 the third event within T fires; the first two do not."""
    eng = engine(n=2, t_ns=10 * SEC)
    assert [eng.record(i, i * SEC) for i in (1, 2, 3)] == [False, False, True]


def test_span_equal_to_t_fires() -> None:
    """The window is inclusive: N+1 events spanning exactly T fire."""
    eng = engine(n=1, t_ns=100)
    eng.record(1, 0)
    assert eng.record(2, 100) is True


def test_span_longer_than_t_does_not_fire() -> None:
    """N+1 events spanning more than T do not fire."""
    eng = engine(n=1, t_ns=100)
    eng.record(1, 0)
    assert eng.record(2, 101) is False
    assert eng.fired is False


def test_window_slides_keeping_at_most_n_plus_one_events() -> None:
    """Old events are discarded so the engine holds at most N+1 events."""
    eng = engine(n=2, t_ns=10)
    for i, t in enumerate([0, 100, 200, 300], start=1):
        eng.record(i, t)
    assert [ev.event_id for ev in eng.events] == [2, 3, 4]
    assert eng.count == 3


def test_slide_then_fire_when_recent_events_are_close() -> None:
    """After slow events, N+1 quick ones still fire."""
    eng = engine(n=2, t_ns=10)
    results = [eng.record(i, t) for i, t in enumerate([0, 100, 200, 201, 202], start=1)]
    assert results == [False, False, False, False, True]
    assert eng.event_ids() == [3, 4, 5]


def test_fired_engine_drops_events_and_returns_false() -> None:
    """Once fired, further events are dropped, not counted, and record returns False."""
    eng = engine(n=0)
    eng.record(1, 0)
    eng.dirty = False
    assert eng.record(2, 1) is False
    assert eng.event_ids() == [1]
    assert eng.dirty is False


def test_reset_discards_events_and_clears_fired() -> None:
    """reset() empties the engine and lets it fire again."""
    eng = engine(n=0)
    eng.record(1, 0)
    eng.reset()
    assert (eng.empty(), eng.fired, eng.count) == (True, False, 0)
    assert eng.record(2, 1) is True


def test_out_of_order_negative_delta_does_not_fire() -> None:
    """A newest-recorded event earlier than the oldest is outside the window (no fire)."""
    eng = engine(n=1, t_ns=100)
    eng.record(1, 1000)
    assert eng.record(2, 950) is False
    assert eng.event_ids() == [1, 2]


def test_out_of_order_uses_recorded_order_not_time_order() -> None:
    """The span is newest-recorded minus oldest-recorded, even when a middle event is older."""
    eng = engine(n=2, t_ns=100)
    eng.record(1, 1000)
    eng.record(2, 10)  # a late event, far in the past
    assert eng.record(3, 1050) is True


def test_negative_times_are_accepted() -> None:
    """Event times may be negative (old replayed events); only their difference matters."""
    eng = engine(n=1, t_ns=10)
    eng.record(1, -15)
    assert eng.record(2, -5) is True


def test_record_marks_dirty() -> None:
    """Recording an event marks the engine dirty."""
    eng = engine()
    assert eng.dirty is False
    eng.record(1, 0)
    assert eng.dirty is True


def test_contains_and_event_ids() -> None:
    """contains() and event_ids() report the referenced event ids in recorded order."""
    eng = engine(n=5)
    eng.record(7, 0)
    eng.record(3, 1)
    assert (eng.contains(7), eng.contains(3), eng.contains(4)) == (True, True, False)
    assert eng.event_ids() == [7, 3]
    assert list(eng.events) == [SerdEvent(7, 0), SerdEvent(3, 1)]


@pytest.mark.parametrize(("n", "t_ns"), [(-1, 10), (0, 0), (0, -5), (True, 10), (1, 1.5)])
def test_bad_parameters_raise_serd_error_naming_engine(n: object, t_ns: object) -> None:
    """N < 0, T <= 0 and non-integers are refused with a message naming the engine."""
    with pytest.raises(SerdError, match=r"serd\.bad"):
        SerdEngine(name="serd.bad", n=n, t_ns=t_ns)  # type: ignore[arg-type]


# ---- gc -----------------------------------------------------------------


def test_gc_drops_events_older_than_newest_minus_t() -> None:
    """gc() forgets events older than newest - T and keeps the rest."""
    eng = engine(n=5, t_ns=100)
    for i, t in enumerate([0, 50, 120, 250, 300], start=1):
        eng.record(i, t)
    eng.dirty = False
    assert eng.gc() == 3
    assert eng.event_ids() == [4, 5]
    assert eng.dirty is True


def test_gc_keeps_event_exactly_at_horizon() -> None:
    """An event exactly T older than the newest is kept (only older ones go)."""
    eng = engine(n=5, t_ns=100)
    eng.record(1, 200)
    eng.record(2, 300)
    assert eng.gc() == 0
    assert eng.event_ids() == [1, 2]
    assert eng.dirty is True  # from record, not from gc


def test_gc_leaves_fired_engine_alone() -> None:
    """gc() does not touch an engine that has fired."""
    eng = engine(n=1, t_ns=100)
    eng.record(1, 0)
    eng.record(2, 50)
    eng.record(3, 10_000)
    eng.dirty = False
    assert eng.gc() == 0
    assert eng.event_ids() == [1, 2]
    assert eng.dirty is False


def test_gc_stops_at_first_event_inside_the_window() -> None:
    """gc() walks from the oldest and stops at the first in-window event, like the reference."""
    eng = engine(n=5, t_ns=100)
    for i, t in enumerate([0, 950, 10, 1000], start=1):
        eng.record(i, t)
    assert eng.gc() == 1
    assert eng.event_ids() == [2, 3, 4]


def test_gc_on_empty_engine_is_a_no_op() -> None:
    """gc() of an empty engine drops nothing and does not dirty it."""
    eng = engine()
    assert eng.gc() == 0
    assert eng.dirty is False


# ---- checkpoints --------------------------------------------------------


def test_engine_round_trips_through_json() -> None:
    """to_dict() is JSON-able and from_dict() restores name, N, T, fired and events."""
    eng = engine(n=1, t_ns=HOUR)
    eng.record(10, 5)
    eng.record(11, 6)
    record = json.loads(json.dumps(eng.to_dict()))
    assert record == {"name": "serd.test", "n": 1, "t": HOUR, "fired": True,
                      "events": [[10, 5], [11, 6]]}  # fmt: skip
    restored = SerdEngine.from_dict(record)
    assert (restored.name, restored.n, restored.t_ns, restored.fired) == (
        "serd.test",
        1,
        HOUR,
        True,
    )
    assert restored.events == deque([SerdEvent(10, 5), SerdEvent(11, 6)])
    assert restored.dirty is False


@pytest.mark.parametrize(
    "record",
    [
        {"n": 1, "t": 5, "fired": False, "events": []},
        {"name": "e", "n": "1", "t": 5, "fired": False, "events": []},
        {"name": "e", "n": 1, "t": 0, "fired": False, "events": []},
        {"name": "e", "n": 1, "t": 5, "fired": "no", "events": []},
        {"name": "e", "n": 1, "t": 5, "fired": False, "events": [[1]]},
        {"name": "e", "n": 1, "t": 5, "fired": False, "events": [["a", 1]]},
        {"name": "e", "n": 1, "t": 5, "fired": False, "events": {}},
    ],
)
def test_malformed_engine_record_raises_serd_error(record: dict[str, object]) -> None:
    """A malformed checkpoint record is refused with SerdError."""
    with pytest.raises(SerdError):
        SerdEngine.from_dict(record)


# ---- SerdSet ------------------------------------------------------------


def test_set_create_twice_raises_naming_engine() -> None:
    """Creating an existing engine raises SerdError naming it."""
    serds = SerdSet()
    serds.create("serd.cpu", 2, HOUR)
    with pytest.raises(SerdError, match=r"'serd\.cpu' already exists"):
        serds.create("serd.cpu", 2, HOUR)


def test_set_create_with_bad_parameters_raises_and_adds_nothing() -> None:
    """create() with N < 0 raises SerdError naming the engine and does not add it."""
    serds = SerdSet()
    with pytest.raises(SerdError, match=r"serd\.cpu"):
        serds.create("serd.cpu", -1, HOUR)
    assert serds.exists("serd.cpu") is False


def test_set_get_missing_raises_naming_engine() -> None:
    """get(), record(), fired(), reset(), empty() and destroy() of a missing engine name it."""
    serds = SerdSet()
    for call in (
        lambda: serds.get("serd.x"),
        lambda: serds.record("serd.x", 1, 0),
        lambda: serds.fired("serd.x"),
        lambda: serds.reset("serd.x"),
        lambda: serds.empty("serd.x"),
        lambda: serds.destroy("serd.x"),
    ):
        with pytest.raises(SerdError, match=r"'serd\.x' does not exist"):
            call()


def test_set_operations_delegate_to_engine() -> None:
    """record/fired/empty/reset on the set act on the named engine."""
    serds = SerdSet()
    serds.create("a", 1, 100)
    assert serds.empty("a") is True
    assert serds.record("a", 1, 0) is False
    assert serds.record("a", 2, 10) is True
    assert serds.fired("a") is True
    serds.reset("a")
    assert (serds.fired("a"), serds.empty("a")) == (False, True)


def test_set_iterates_in_name_order() -> None:
    """Iteration yields engines sorted by name."""
    serds = SerdSet()
    for name in ("c", "a", "b"):
        serds.create(name, 1, 10)
    assert [e.name for e in serds] == ["a", "b", "c"]
    assert serds.names() == ["a", "b", "c"]
    assert len(serds) == 3
    assert "b" in serds


def test_set_destroy_removes_engine_and_marks_set_dirty() -> None:
    """destroy() removes the engine and leaves the set dirty for the next checkpoint."""
    serds = SerdSet()
    serds.create("a", 1, 10)
    serds.clear_dirty()
    serds.destroy("a")
    assert serds.exists("a") is False
    assert serds.dirty is True


def test_set_dirty_names_and_clear_dirty() -> None:
    """dirty_names() lists changed engines until clear_dirty()."""
    serds = SerdSet()
    serds.create("a", 1, 10)
    serds.create("b", 1, 10)
    assert serds.dirty_names() == ["a", "b"]
    serds.clear_dirty()
    assert (serds.dirty_names(), serds.dirty) == ([], False)
    serds.record("b", 1, 0)
    assert serds.dirty_names() == ["b"]


def test_set_contains_event_searches_every_engine() -> None:
    """contains_event() is True if any engine references the event."""
    serds = SerdSet()
    serds.create("a", 3, 10)
    serds.create("b", 3, 10)
    serds.record("b", 42, 0)
    assert (serds.contains_event(42), serds.contains_event(43)) == (True, False)


def test_set_gc_runs_every_engine() -> None:
    """SerdSet.gc() garbage-collects each engine and returns the total dropped."""
    serds = SerdSet()
    for name in ("a", "b"):
        serds.create(name, 5, 10)
        serds.record(name, 1, 0)
        serds.record(name, 2, 100)
    assert serds.gc() == 2


def test_set_round_trips_through_json() -> None:
    """SerdSet.to_dict()/from_dict() restores every engine and starts clean."""
    serds = SerdSet()
    serds.create("b", 0, 10)
    serds.create("a", 3, HOUR)
    serds.record("a", 1, 100)
    serds.record("b", 2, 200)
    restored = SerdSet.from_dict(json.loads(json.dumps(serds.to_dict())))
    assert restored.to_dict() == serds.to_dict()
    assert restored.fired("b") is True
    assert restored.dirty is False


def test_set_from_dict_rejects_mismatched_key() -> None:
    """A checkpoint whose key differs from the engine name is refused."""
    record = {"a": {"name": "b", "n": 1, "t": 5, "fired": False, "events": []}}
    with pytest.raises(SerdError, match="'a'"):
        SerdSet.from_dict(record)


# ---- properties ----------------------------------------------------------

# An operation is either ("record", time_ns) or ("reset", 0).
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.integers(min_value=-1000, max_value=1000)),
        st.tuples(st.just("reset"), st.just(0)),
    ),
    max_size=60,
)


@given(n=st.integers(0, 5), t_ns=st.integers(1, 300), ops=ops_strategy)
def test_record_matches_brute_force_model(n: int, t_ns: int, ops: list[tuple[str, int]]) -> None:
    """record() fires iff the last N+1 recorded events span 0..T; fired holds until reset."""
    eng = SerdEngine(name="p", n=n, t_ns=t_ns)
    accepted: list[tuple[int, int]] = []  # events recorded since the last reset
    fired = False
    for event_id, (op, time_ns) in enumerate(ops):
        if op == "reset":
            eng.reset()
            accepted, fired = [], False
            continue
        result = eng.record(event_id, time_ns)
        if fired:
            assert result is False
        else:
            accepted.append((event_id, time_ns))
            k = len(accepted)
            expected = k >= n + 1 and 0 <= accepted[-1][1] - accepted[k - 1 - n][1] <= t_ns
            assert result is expected
            fired = expected
        assert eng.fired is fired
        assert list(eng.events) == [SerdEvent(*ev) for ev in accepted[-(n + 1) :]]


@given(
    n=st.integers(0, 5),
    t_ns=st.integers(1, 300),
    gaps=st.lists(st.integers(0, 200), max_size=60),
)
def test_gc_never_changes_firing_for_in_order_events(n: int, t_ns: int, gaps: list[int]) -> None:
    """With non-decreasing times, running gc() after every event never changes when it fires."""
    plain = SerdEngine(name="plain", n=n, t_ns=t_ns)
    collected = SerdEngine(name="gc", n=n, t_ns=t_ns)
    now = 0
    for event_id, gap in enumerate(gaps):
        now += gap
        assert plain.record(event_id, now) is collected.record(event_id, now)
        collected.gc()
        assert plain.fired is collected.fired
        if not collected.fired:
            newest = collected.events[-1].time_ns
            assert all(ev.time_ns >= newest - t_ns for ev in collected.events)


@given(n=st.integers(0, 5), t_ns=st.integers(1, 300), times=st.lists(st.integers(-500, 500)))
def test_fired_iff_some_consecutive_window_spans_t(n: int, t_ns: int, times: list[int]) -> None:
    """Without reset, the engine ends fired iff some N+1 consecutive records span 0..T."""
    eng = SerdEngine(name="p", n=n, t_ns=t_ns)
    for event_id, time_ns in enumerate(times):
        eng.record(event_id, time_ns)
    expected = any(0 <= times[i + n] - times[i] <= t_ns for i in range(len(times) - n))
    assert eng.fired is expected
