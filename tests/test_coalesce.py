"""Coalescing identical ereports at ingest (fmd.coalesce) and SERD engines counting
a coalesced record as its errors (fmd.serd)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fmd.coalesce import Coalescer
from fmd.protocol import Ereport
from fmd.serd import SerdEngine


def ev(t: int, payload: str = '{"a":1}', cls: str = "ereport.x.y") -> Ereport:
    return Ereport(cls, ena=t, time_ns=t, detector=None, detector_str=None, payload_text=payload)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_events_within_the_rate_pass_and_the_rest_merge() -> None:
    """With rate 3/s, three identical ereports pass; in the same window the fourth is
    stored and absorbs the following ones, counting them and their last time."""
    clock = Clock()
    coalescer = Coalescer(3, now=clock)
    window = coalescer.window()
    events = [ev(t) for t in range(10)]
    stored = [e for e in events if not window.merge(e)]
    assert [e.time_ns for e in stored] == [0, 1, 2, 3]
    head = stored[-1]
    assert (head.count, head.last_ns) == (7, 9)
    assert coalescer.merged == 6


def test_different_payloads_are_never_merged() -> None:
    """Only identical ereports merge: another payload, class or detector passes."""
    coalescer = Coalescer(1, now=Clock())
    window = coalescer.window()
    events = [ev(1), ev(2), ev(3, payload='{"a":2}'), ev(4, cls="ereport.x.z")]
    assert [window.merge(e) for e in events] == [False, False, False, False]


def test_a_closed_window_merges_nothing_more_into_its_events() -> None:
    """After its window closed (the events went to the writer) a stored event is
    never changed: the next window starts a new record."""
    coalescer = Coalescer(1, now=Clock())
    first = coalescer.window()
    a, b = ev(1), ev(2)
    assert not first.merge(a) and not first.merge(b)
    first.close()
    second = coalescer.window()
    c, d = ev(3), ev(4)
    assert not second.merge(c)
    assert second.merge(d)
    assert (b.count, c.count) == (1, 2)


def test_tokens_come_back_with_time() -> None:
    """After a second without events an ereport passes on its own again."""
    clock = Clock()
    coalescer = Coalescer(2, now=clock)
    window = coalescer.window()
    assert [window.merge(ev(t)) for t in range(4)] == [False, False, False, True]
    clock.now = 1.0
    window.close()
    window = coalescer.window()
    assert window.merge(ev(5)) is False


def test_rate_zero_never_merges() -> None:
    """xprt.coalesce=0 stores every ereport on its own."""
    window = Coalescer(0, now=Clock()).window()
    assert not any(window.merge(ev(t)) for t in range(100))


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=40))
def test_serd_counts_errors_not_records(counts: list[int]) -> None:
    """An engine fed records standing for several errors fires exactly when the same
    errors fed one by one would have."""
    weighted = SerdEngine("w", 6, 10**9)
    single = SerdEngine("s", 6, 10**9)
    fired_weighted = fired_single = None
    eid = 0
    for i, n in enumerate(counts):
        if weighted.record(i, i, n, i) and fired_weighted is None:
            fired_weighted = i
        for _ in range(n):
            eid += 1
            if single.record(eid, i) and fired_single is None:
                fired_single = i
    assert fired_weighted == fired_single


def test_one_coalesced_record_can_fire_an_engine() -> None:
    """A record standing for more than N errors within T fires the engine alone, and
    is saved and restored with its count."""
    engine = SerdEngine("e", 3, 100)
    assert engine.record(1, 10, 5, 50) is True
    assert engine.count == 5
    restored = SerdEngine.from_dict(engine.to_dict())
    assert (restored.count, restored.events[0].last_ns) == (5, 50)


def test_coalesced_record_spanning_more_than_t_does_not_fire() -> None:
    """Errors spread over more than T do not fire, however many."""
    engine = SerdEngine("e", 3, 100)
    assert engine.record(1, 0, 50, 1000) is False
