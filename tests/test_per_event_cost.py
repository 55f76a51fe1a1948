"""Every per-event step costs the same at the 100,000th event as at the 1,000th:
the diagnosis engines, case joins, SERD engines and ingest coalescing.

Nothing here is timed.  Each check counts the Python and C function calls
(``sys.setprofile``) a step makes over the last events of a short run and of a
run ten times longer, and asserts the work per event did not grow: a Python
loop over a case's events, a document rebuilt per event or an engine that
re-reads its history would make the long run's count grow with its length.
A scan inside one C call (``x in some_list``) is one call however long the
list, so each check also asserts that what a step searches stays bounded: a
case's kept events, a SERD engine's window, the coalescer's keys.  The same
steps' time per event over 10k and 100k events is in ``bench/per_event.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import pytest

from agents.cpumem import CpumemDiagnosis
from fmd.case import MAX_CASE_EVENTS
from fmd.coalesce import MAX_KEYS, Coalescer
from fmd.protocol import Ereport
from fmd.serd import SerdEngine
from tests.diagnosis_util import T0, make_handle
from tests.test_cpumem import Env

SHORT = 1_000
LONG = 10 * SHORT
# The tail whose calls are counted, and the growth tolerated (the dict and
# set operations of CPython do not count as calls, so small drifts come only
# from branch changes such as a case reaching its cap).
TAIL = 500
GROWTH = 1.10
MS = 10**6
CHUNK = 256


def calls_per_event(step: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Run ``step`` over ``items``; the calls per item made over the last TAIL."""
    for item in items[:-TAIL]:
        step(item)
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        for item in items[-TAIL:]:
            step(item)
    finally:
        sys.setprofile(None)
    return count / TAIL


def assert_constant(make_run: Callable[[int], tuple[Callable[[Any], object], list[Any]]]) -> None:
    """The per-event calls of a LONG run stay within GROWTH of a SHORT run's."""
    short = calls_per_event(*make_run(SHORT))
    long = calls_per_event(*make_run(LONG))
    assert long <= short * GROWTH, (
        f"{short:.1f} calls per event after {SHORT}, {long:.1f} after {LONG}"
    )


def _env() -> Env:
    plugin = CpumemDiagnosis()
    hdl, writer = make_handle(plugin, "GMCA")
    return Env(hdl, writer, plugin)


def _feed(env: Env) -> Callable[[Ereport], object]:
    return lambda ev: env.plugin.recv(env.hdl, ev)


def assert_bounded(env: Env) -> None:
    """What a step searches stays bounded: the events each case keeps, and each
    SERD engine's window."""
    for case in env.hdl.cases():
        assert len(case.events) <= MAX_CASE_EVENTS
    for engine in env.hdl.serd:
        assert len(engine.events) <= engine.n + 1


@pytest.mark.parametrize("pages", [64, 16_384])
def test_dimm_storm_costs_the_same_per_event(pages: int) -> None:
    """Corrected errors over the pages of one DIMM (its fault diagnosed early on,
    then every error counted against it): per-event work does not grow."""

    def run(n: int) -> tuple[Callable[[Any], object], list[Any]]:
        env = _env()
        envs.append(env)
        events = [env.mem(0x2000 + (i % pages) * 0x8000 * 4, T0 + i * MS) for i in range(n)]
        return _feed(env), events

    envs: list[Env] = []
    assert_constant(run)
    assert_bounded(envs[-1])
    envs[-1].hdl.checkpoint({"errlog": LONG, "fltlog": 0})
    assert [s.fault_list[0].cls for s in envs[-1].suspects()] == [
        "fault.memory.generic-x86.dimm_ce"
    ]


def test_cpu_storm_costs_the_same_per_event() -> None:
    """Corrected L1 cache errors on one strand, faulted early, joining its case
    (which keeps the first ereports and counts the rest)."""

    def run(n: int) -> tuple[Callable[[Any], object], list[Any]]:
        env = _env()
        envs.append(env)
        events = [env.cpu("l1dcache", T0 + i * MS) for i in range(n)]
        return _feed(env), events

    envs: list[Env] = []
    assert_constant(run)
    assert_bounded(envs[-1])
    [case] = envs[-1].hdl.cases()
    assert case.ereports == LONG


def test_cpu_mix_costs_the_same_per_event() -> None:
    """Errors spread over every strand and three cache levels, many cases open."""

    def run(n: int) -> tuple[Callable[[Any], object], list[Any]]:
        env = _env()
        envs.append(env)
        leaves = ("l1dcache", "l1icache", "l2cache")
        events = [env.cpu(leaves[i % 3], T0 + i * MS, cpuid=i % 16) for i in range(n)]
        return _feed(env), events

    envs: list[Env] = []
    assert_constant(run)
    assert_bounded(envs[-1])


def test_serd_engine_costs_the_same_per_event() -> None:
    """A SERD engine whose window always holds many events but never N of them
    counts each new one at constant cost, its window bounded."""

    def run(n: int) -> tuple[Callable[[Any], object], list[Any]]:
        engine = engines[0] = SerdEngine("e", 100, 50 * MS)
        times = [T0 + i * MS for i in range(n)]
        return lambda t: engine.record(t, t), times

    engines = [SerdEngine("e", 1, 1)]
    assert_constant(run)
    assert not engines[0].fired
    assert 0 < len(engines[0].events) <= engines[0].n + 1


@pytest.mark.parametrize("distinct", [64, 0])
def test_coalescing_costs_the_same_per_event(distinct: int) -> None:
    """Ingest coalescing of a storm of a few distinct ereports (merged past their
    rate), and of ever new ones (each new key forgets the oldest past MAX_KEYS),
    costs the same per event however long it runs."""

    def ereport(i: int) -> Ereport:
        return Ereport(
            cls="ereport.x",
            ena=i,
            time_ns=i,
            detector=None,
            detector_str=None,
            payload={},
            payload_text=str(i % distinct if distinct else i),
        )

    def run(n: int) -> tuple[Callable[[Any], object], list[Any]]:
        # One ereport per key and second passes, and the clock stands still: past
        # the first of each key, every one is over the rate.
        coalescer = coalescers[0] = Coalescer(1, now=lambda: 0.0)
        for i in range(MAX_KEYS):  # full from the start: every new key evicts
            coalescer.take(("ereport.filler", None, str(i), False))

        window = [coalescer.window()]

        def step(ev: Ereport) -> None:
            # A chunk of input is a window: 256 lines, as a socket read gives.
            window[0].merge(ev)
            if ev.ena % CHUNK == 0:
                window[0].close()
                window[0] = coalescer.window()

        return step, [ereport(i) for i in range(n)]

    coalescers = [Coalescer(0)]
    assert_constant(run)
    assert len(coalescers[0]._buckets) <= MAX_KEYS
    assert (coalescers[0].merged > 0) == bool(distinct)
