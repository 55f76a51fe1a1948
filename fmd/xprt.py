"""The transport framework: what every ereport source shares.

A transport turns bytes from somewhere into :class:`~fmd.protocol.Ereport`
objects and hands them to :class:`Ingest`, which wraps them in an
:class:`IngestOp` for the writer.  The op's ``done`` callback runs after the
events are durably committed (or definitely failed), which is when a
transport may acknowledge them.  :class:`Ingest` also owns what transports
must agree on: per-transport counters, rate-limited logging of rejected input,
the ENA generator, raw machine-check records (decoded by
:mod:`fmd.hw.telemetry` against the platform), copies of one hardware event
(:mod:`fmd.hw.dedup`: the same record twice) and forms of one memory error
(:mod:`fmd.hw.memdedup`: its machine check, EDAC and firmware reports), both
answered as :class:`DuplicateEvent` and never stored, the DIMM of EDAC and
firmware memory reports whose source knew no platform
(:func:`fmd.hw.events.dimm_of_payload`), and the simulated-clock control event
``resource.fm.fmd.clock.addhrtime`` (member ``delta``, nanoseconds), which is
ordered with the events around it by going through the writer as well.  A
delta of -1 (fminject's ``endhrtime``) runs to the "end of time": the daemon
lets the modules finish, moves the clock to the last deadline they installed,
and repeats until no module timer is left.

Transports start only after replay has finished (the reference's "all
transports start suspended").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from fmd.clock import Clock, SimulatedClock
from fmd.coalesce import Coalescer, Window
from fmd.errors import EventRejected, StoreRefused
from fmd.hw.dedup import HardwareDedup, identity_ena, is_identity_ena, record_identity
from fmd.hw.events import dimm_of_payload
from fmd.hw.memdedup import MEMORY_CLASSES, MemoryPairing, report_of
from fmd.hw.telemetry import mca_ereport
from fmd.hw.topo import Platform
from fmd.log import Once, RateLimiter
from fmd.log import exception_signature as _signature
from fmd.protocol import EnaGenerator, Ereport, decode_line, ereport_from_decoded
from fmd.store import Op, Progress, Published, WriteTxn
from fmd.store.codec import ROW_OVERHEAD, ereport_row
from fmd.store.health import StoreHealth

log = structlog.get_logger("fmd.xprt")

CLOCK_CLASS = "resource.fm.fmd.clock.addhrtime"
# The delta of fminject's "endhrtime": advance past every installed timer.
END_OF_TIME = -1
# The latest time the store can hold (a signed 64-bit count of ns).
MAX_CLOCK_NS = (1 << 63) - 1
CONTROL_PREFIX = "resource.fm.fmd.clock."

# Transport states shown by fmstat -t: running, or refusing new events because
# the store cannot take them (see fmd.store.health).
STATE_RUN = "run"
STATE_REFUSING = "refuse"
_REFUSED = "store refused"

Done = Callable[[BaseException | None], None]
# A read position committed with a batch: (transport name, identity, offset,
# JSON document or None); see fmd.xprts.source.Position.
Offset = tuple[str, str, int, str | None]


class DuplicateEvent(EventRejected):
    """A copy of a hardware event already stored (fmd.hw.dedup), or another report
    form of a memory error already stored (fmd.hw.memdedup): answered as stored."""

    code = "EFMD_DUPLICATE"

    def __init__(self, ena: int) -> None:
        super().__init__(f"a copy of event {ena:#x}, already stored")
        self.ena = ena


@dataclass
class XprtStats:
    """Counters of one transport (shown by ``fmstat -t``)."""

    name: str
    kind: str
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    bytes: int = 0
    clients: int = 0
    duplicates: int = 0
    state: str = STATE_RUN
    # Why the transport is not running (host sources: "no tracefs mounted", ...).
    reason: str = ""
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "received": self.received,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "failed": self.failed,
            "bytes": self.bytes,
            "clients": self.clients,
            "duplicates": self.duplicates,
            "reason": self.reason,
            "reasons": dict(self.reasons),
        }


class IngestOp:
    """Ereports to store in one go; ``done`` fires after the commit."""

    __slots__ = ("_published", "events", "offset", "on_done", "rows", "weight")
    refusable = True

    def __init__(
        self,
        events: list[Ereport],
        rows: list[list[Any]],
        on_done: Done,
        offset: Offset | None = None,
    ) -> None:
        self.events = events
        self.rows = rows
        self.on_done = on_done
        self.offset = offset
        self.weight = len(events)
        self._published: list[Published] = []

    def apply(self, tx: WriteTxn) -> None:
        if self.events:
            first = tx.allocate("errlog", len(self.events))
            for i, (ev, row) in enumerate(zip(self.events, self.rows, strict=True)):
                ev.id = row[0] = first + i
            tx.insert_errlog(self.rows)
            self._published = [("errlog", ev.id, ev) for ev in self.events]  # type: ignore[misc]
            for ev in self.events:
                ev.payload_text = None  # in the row now; the modules need only the dict
        if self.offset is not None:
            tx.set_offset(*self.offset)

    def done(self, error: BaseException | None) -> None:
        self.on_done(error)

    def progress(self) -> Progress | None:
        return None

    def published(self) -> list[Published]:
        return self._published


class ClockOp(Op):
    """Advance the simulated clock once everything submitted before it is stored."""

    refusable = True

    def __init__(
        self,
        clock: SimulatedClock,
        delta_ns: int,
        kick: Callable[[], None],
        on_done: Done,
        end_of_time: Callable[[Done], None] | None = None,
    ) -> None:
        self.clock, self.delta, self.kick, self.on_done = clock, delta_ns, kick, on_done
        self.end_of_time = end_of_time

    def apply(self, tx: WriteTxn) -> None:
        return None

    def done(self, error: BaseException | None) -> None:
        if error is None and self.delta == END_OF_TIME:
            if self.end_of_time is not None:
                # Runs off the writer thread (it waits for the modules) and
                # answers the sender when every timer has run out.
                self.end_of_time(self.on_done)
                return
            error = EventRejected("this fmd cannot run to the end of time")
        if error is None:
            self.clock.advance(self.delta)
            self.kick()
        self.on_done(error)


class Ingest:
    """The daemon-side entry point shared by all transports."""

    def __init__(
        self,
        *,
        submit: Callable[[Any], None],
        clock: Clock,
        kick_timers: Callable[[], None],
        end_of_time: Callable[[Done], None] | None = None,
        max_line: int,
        err_limit: int,
        err_window_ns: int,
        platform: Platform | None = None,
        health: StoreHealth | None = None,
        coalesce: int = 0,
        dedup: HardwareDedup | None = None,
        pair_memory: bool = True,
    ) -> None:
        self._submit = submit
        # None: every record is stored as it comes (xprt.dedup_window=0).
        self.dedup = dedup
        # The report forms of one memory error, paired (fmd.hw.memdedup); None: off.
        self.pairing: MemoryPairing | None = MemoryPairing() if pair_memory else None
        self.health = health if health is not None else StoreHealth(None, 0)
        self.coalescer = Coalescer(coalesce)
        self.platform = platform
        self.clock = clock
        self._kick = kick_timers
        self._end_of_time = end_of_time
        self.max_line = max_line
        self.ena = EnaGenerator()
        self._limiter = RateLimiter(err_limit, err_window_ns, clock.now_ns)
        self._once = Once()
        self._lock = threading.Lock()
        self.transports: dict[str, XprtStats] = {}

    def window(self) -> Window:
        """A coalescing window for one chunk of input (:mod:`fmd.coalesce`)."""
        return self.coalescer.window()

    def register(self, name: str, kind: str) -> XprtStats:
        with self._lock:
            st = self.transports.get(name)
            if st is None:
                st = self.transports[name] = XprtStats(name, kind)
            return st

    # -- parsing ---------------------------------------------------------
    def decode(
        self, line: bytes, stats: XprtStats, now_ns: int | None = None
    ) -> Ereport | dict[str, Any]:
        """Parse one wire line: an Ereport, or a control event as a dict.

        ``now_ns`` is the receipt time (read from the clock when not given).
        Raises EventRejected (already counted and logged) for bad input.
        """
        stats.received += 1
        stats.bytes += len(line)
        try:
            obj = decode_line(line, self.max_line)
            cls = obj.get("class")
            if cls.__class__ is str and cls.startswith(CONTROL_PREFIX):
                return self._check_control(obj)
            now = self.clock.now_ns() if now_ns is None else now_ns
            if cls is None and "mca" in obj:
                if self.platform is None:
                    raise EventRejected("raw MCA records need a platform (topology)")
                ev = mca_ereport(obj, self.platform, now_ns=now, ena_gen=self.ena)
                if self.dedup is not None and obj.get("ena") is None:
                    self._identify(ev, obj["mca"], stats)
                memory = ev.cls in MEMORY_CLASSES
                own_time = memory and obj["mca"].get("time") is not None
            else:
                memory = cls.__class__ is str and cls in MEMORY_CLASSES
                own_time = memory and obj.get("time") is not None
                ev = ereport_from_decoded(obj, now, self.ena)
                if memory and "resource" not in ev.payload and self.platform is not None:
                    self._attribute(ev)
            # Encoded here, per line, so that a payload the store cannot take
            # fails this line alone and not the batch it would have joined.
            if ev.payload_text is None:
                ev.payload_text = orjson.dumps(ev.payload).decode()
            ev.size = len(line) + ROW_OVERHEAD
            if memory and self.pairing is not None:
                self._pair(ev, own_time, now, stats)
            return ev
        except DuplicateEvent:
            raise
        except EventRejected as exc:
            self.rejected(stats, exc)
            raise
        except Exception as exc:
            # A defect of fmd's own decoding: the sender is told, the line is
            # counted, and the rest of the stream goes on.  Logged with its
            # traceback once per kind of failure.
            if self._once.first(_signature(exc)):
                log.error(
                    "event_decode_failed",
                    xprt=stats.name,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
            wrapped = EventRejected(f"cannot decode this line: {type(exc).__name__}: {exc}")
            self.rejected(stats, wrapped)
            raise wrapped from None

    def _identify(self, ev: Ereport, raw: Any, stats: XprtStats) -> None:
        """Give a kernel-logged record its identity ENA; raise DuplicateEvent for a copy."""
        assert self.dedup is not None
        identity = record_identity(raw)
        if identity is None:
            return
        ev.ena = identity_ena(identity)
        if not self.dedup.claim(ev.ena, ev.time_ns):
            stats.duplicates += 1
            raise DuplicateEvent(ev.ena)

    def _attribute(self, ev: Ereport) -> None:
        """Name the DIMM of an EDAC or firmware memory report that came without one
        (its source knew no platform: ``fminject --format kernel``)."""
        dimm = dimm_of_payload(self.platform, ev.payload)
        if dimm is None:
            return
        text = dimm.to_string()
        ev.payload["resource"] = text
        if ev.detector is None:
            ev.detector, ev.detector_str = dimm, text

    def _pair(self, ev: Ereport, own_time: bool, now: int, stats: XprtStats) -> None:
        """Raise DuplicateEvent when ``ev`` is another form of a memory error
        already kept (fmd.hw.memdedup)."""
        assert self.pairing is not None
        report = report_of(ev, own_time=own_time, recv_ns=now)
        if report is None:
            return
        kept = self.pairing.pair(report)
        if kept is not None:
            stats.duplicates += 1
            raise DuplicateEvent(kept)

    def _check_control(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["class"] != CLOCK_CLASS:
            raise EventRejected(f"unknown control class {obj['class']!r}")
        if not isinstance(self.clock, SimulatedClock):
            raise EventRejected(f"{CLOCK_CLASS} needs the simulated clock (-o clock=simulated)")
        delta = obj.get("delta")
        if not isinstance(delta, int) or isinstance(delta, bool) or delta < END_OF_TIME:
            raise EventRejected(
                f"{CLOCK_CLASS}: 'delta' must be a non-negative integer of ns, "
                "or -1 for the end of time"
            )
        if delta > MAX_CLOCK_NS - self.clock.now_ns():
            raise EventRejected(
                f"{CLOCK_CLASS}: 'delta' {delta} would move the clock past "
                "2262-04-11, the last time fmd can store"
            )
        return obj

    def allow_log(self, key: str) -> bool:
        """True when a message about ``key`` may be logged now (rate-limited per key)."""
        ok, _ = self._limiter.allow(key)
        return ok

    def rejected(self, stats: XprtStats, exc: BaseException, where: str = "") -> None:
        stats.rejected += 1
        reason = str(exc).split(":", 1)[0][:60]
        stats.reasons[reason] = stats.reasons.get(reason, 0) + 1
        ok, suppressed = self._limiter.allow(stats.name)
        if ok:
            log.warning(
                "event_rejected",
                xprt=stats.name,
                error=str(exc),
                where=where,
                suppressed=suppressed,
            )

    # -- submission ------------------------------------------------------
    def submit(
        self,
        events: list[Ereport],
        stats: XprtStats,
        on_done: Done,
        offset: Offset | None = None,
    ) -> None:
        """Store ``events``; ``on_done(error)`` runs after the commit.

        While the store cannot take new events (its disk is full or below
        ``log.minfree``, or the database is not answering) they are refused at
        once with :class:`~fmd.errors.StoreRefused`, so the sender hears why.
        """
        refusal = self.health.refusal()
        self._show_refusal(stats, refusal)
        if refusal is not None and events:
            self._forget(events)
            n = sum(ev.count for ev in events)
            stats.failed += n
            stats.reasons[_REFUSED] = stats.reasons.get(_REFUSED, 0) + n
            self.health.refused += n
            on_done(StoreRefused(refusal))
            return
        now = self.clock.now_ns()
        rows = [ereport_row(ev, recv_ns=now, xprt=stats.name) for ev in events]

        # Coalesced records stand for several ereports each: count them all.
        n = sum(ev.count for ev in events)

        def finished(error: BaseException | None) -> None:
            if error is None:
                stats.accepted += n
            else:
                stats.failed += n
                self._forget(events)
            on_done(error)

        self._submit(IngestOp(events, rows, finished, offset))

    def submit_and_wait(
        self, events: list[Ereport], stats: XprtStats, offset: Offset | None
    ) -> BaseException | None:
        """Store ``events`` (with ``offset``) and wait for the commit; its error or None.

        For transports that must not read on before their position is committed
        (followed files, host sources).
        """
        done = threading.Event()
        result: list[BaseException | None] = []

        def finished(error: BaseException | None) -> None:
            result.append(error)
            done.set()

        self.submit(events, stats, finished, offset=offset)
        done.wait()
        return result[0]

    def _forget(self, events: list[Ereport]) -> None:
        """Records that were not stored may come again: they are not duplicates then
        (nor is another form of a memory error whose kept report was not stored)."""
        if self.dedup is not None:
            self.dedup.forget(ev.ena for ev in events if is_identity_ena(ev.ena))
        if self.pairing is not None:
            self.pairing.forget(ev.ena for ev in events if ev.cls in MEMORY_CLASSES)

    @staticmethod
    def _show_refusal(stats: XprtStats, refusal: str | None) -> None:
        if refusal is not None and stats.state == STATE_RUN:
            stats.state = STATE_REFUSING
        elif refusal is None and stats.state == STATE_REFUSING:
            stats.state = STATE_RUN

    def transport_stats(self) -> list[dict[str, Any]]:
        """Every transport's counters, its state brought up to date with the store's."""
        refusal = self.health.refusal()
        with self._lock:
            stats = list(self.transports.values())
        for st in stats:
            self._show_refusal(st, refusal)
        return [st.as_dict() for st in stats]

    def control(self, obj: dict[str, Any], on_done: Done) -> None:
        """Queue a control event in order with the events around it."""
        assert isinstance(self.clock, SimulatedClock)
        self._submit(ClockOp(self.clock, int(obj["delta"]), self._kick, on_done, self._end_of_time))
