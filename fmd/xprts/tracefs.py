"""The kernel's RAS tracepoints, read from a private tracefs instance.

This is the primary host source on modern kernels (rasdaemon reads the same
tracepoints).  It owns a tracing instance of its own,
``<tracefs>/instances/<instance>`` (``fmd`` by default), created with ``mkdir``
when missing; the global buffer and every other instance are never touched.
In it the source enables each of ``mce:mce_record``, ``ras:mc_event``,
``ras:memory_failure_event``, ``ras:aer_event``, ``ras:extlog_mem_event``,
``ras:arm_event`` and ``ras:non_standard_event`` that the kernel has (the
others are skipped; :attr:`TracefsSource.enabled` and ``fmadm config`` say
which are on), sets the instance's ``buffer_size_kb`` (per CPU) and clears its
``pause-on-trace`` option so that reading never stops recording.  Lines become
wire objects through :mod:`fmd.hw.tracefs`.

Availability (:meth:`TracefsSource.probe`)::

    no <root>/instances ----------------------> "no tracefs mounted"
    EACCES/EPERM on mkdir, enable, options ---> "needs root"
    none of the events under events/ ---------> "kernel has none of the RAS tracepoints"
    boot id unreadable -----------------------> "cannot read the boot id <path>: ..."
    otherwise: instance set up, events on ----> run

The root is the ``root`` parameter, else ``/sys/kernel/tracing``, else
``/sys/kernel/debug/tracing`` (the first that has ``instances/``).

Restart safety.  The source reads each CPU's buffer *without consuming it*
(``per_cpu/cpuN/trace``, not ``trace_pipe``), so an event stays in the kernel's
ring buffer until newer ones overwrite it, whatever happens to fmd.  What fmd
has taken is a per-CPU high-water mark committed with the events (the
:class:`~fmd.xprts.source.Position`): ``ident`` is the boot id (read from
``boot_id_path``), ``offset`` counts the events taken this boot, and ``data``
is ``{"<cpu>": [ts_ns, n_taken_at_ts, written]}``: the timestamp of the last
event taken on that CPU, how many events with exactly that timestamp were
taken (ftrace prints microseconds, so several events can share one), and the
ring buffer's index of the last event seen (``overrun`` + events listed; may
be null).  A read takes, per CPU, the events after the mark; events are taken
and committed in batches, each with the marks after it.  So an event the
kernel emitted before fmd was killed was either committed before the kill or
lies after the committed mark and is read after the restart, and nothing is
taken twice.  A different boot id means a new boot: the marks are forgotten.

A CPU's buffer is read again only when its ``per_cpu/cpuN/stats`` counters
(``entries``, ``overrun``, ...) changed since the last read (without a stats
file: when the trace file's size or mtime changed; with neither, always).

Lost events.  When a buffer overran events fmd had not seen yet (the ring
buffer's ``overrun`` count passed the index of the last event fmd saw), those
events are counted in ``fmstat -t`` under :data:`LOST_REASON` and logged
(rate-limited).  The count is exact unless the kernel overwrites while a read
is under way.

Limits, by design: another reader consuming this instance's ``trace_pipe``
breaks the overrun arithmetic (nobody else should use fmd's instance); on
kernels before 5.7, opening a ``trace`` file pauses recording while it is
read (fmd reads only buffers whose counters moved, which keeps that window
short); if the kernel overwrote some of several events sharing the mark's
microsecond, later events of that microsecond can be skipped.

Event times: ``mce_record`` carries the kernel's wall time; other events get
``boot_ns + timestamp`` when the instance's ``trace_clock`` counts from boot
(``local``, the default, ``global``, ``mono``, ...), else the receipt time.
``boot_ns`` is a constructor parameter (the wall time at boot, in ns); by
default it is taken from the wall and monotonic clocks at each read.

On stop the events are disabled in the instance (unless ``keep_enabled``)
and the instance directory is kept: its buffer and overrun counters carry
over to the next start (``rmdir`` the instance to free its memory,
``buffer_size_kb`` per CPU).  A SIGKILL leaves the events enabled, so the
kernel keeps recording while fmd is down.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from fmd.hw.topo import Platform
from fmd.hw.tracefs import (
    RAS_TRACEPOINTS,
    TraceFailure,
    TraceHeader,
    TraceLost,
    parse_event,
    parse_header,
)
from fmd.xprt import Ingest
from fmd.xprts.source import Batch, Position, Source

log = structlog.get_logger("fmd.xprt.tracefs")

DEFAULT_ROOTS: Final = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
DEFAULT_INSTANCE: Final = "fmd"
# Per CPU.  RAS events are rare and small (an mce_record is about 120 bytes in
# the ring buffer): 256 KiB holds some two thousand per CPU between two polls.
DEFAULT_BUFFER_KB: Final = 256
BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
# Events committed per transaction.
BATCH_MAX: Final = 256

REASON_NO_TRACEFS: Final = "no tracefs mounted"
REASON_NEEDS_ROOT: Final = "needs root"
REASON_NO_EVENTS: Final = "kernel has none of the RAS tracepoints"
LOST_REASON: Final = "ring buffer overran unread events"

# Trace clocks that count (nano)seconds from boot without suspend time, as
# CLOCK_MONOTONIC does: boot_ns + timestamp is then the wall time.
_BOOT_CLOCKS: Final = frozenset({"local", "global", "mono", "mono_raw", "perf", "uptime"})
_DEFAULT_CLOCK: Final = "local"
_MAX_IDENT: Final = 128
_ON: Final = "1"
_OFF: Final = "0"
# stats counters whose change means a CPU's buffer changed.
_STATS_KEYS: Final = ("entries", "overrun", "commit overrun", "dropped events", "read events")
_DENIED: Final = (errno.EACCES, errno.EPERM)


def find_root(roots: tuple[Path, ...] = DEFAULT_ROOTS) -> Path | None:
    """The first of ``roots`` where tracefs is mounted (it has ``instances/``)."""
    return next((r for r in roots if (r / "instances").is_dir()), None)


def offered_tracepoints(roots: tuple[Path, ...] = DEFAULT_ROOTS) -> list[str]:
    """The RAS tracepoints this kernel has (``"system:event"``), changing nothing.

    For choosing sources before any runs: looks only at which event
    directories exist.  Empty without tracefs or without the right to look.
    """
    try:
        root = find_root(roots)
        if root is None:
            return []
        return [
            f"{system}:{event}"
            for system, event in RAS_TRACEPOINTS
            if (root / "events" / system / event).is_dir()
        ]
    except OSError:
        return []


def _create_instance(path: Path) -> None:
    """``mkdir`` in tracefs's ``instances`` directory: the kernel fills the instance in."""
    path.mkdir()


def monotonic_boot_ns() -> int:
    """The wall time (ns) at which CLOCK_MONOTONIC was zero: about the boot time."""
    return time.time_ns() - time.monotonic_ns()


@dataclass(frozen=True)
class _Mark:
    """What fmd has taken from one CPU's buffer (committed in the position)."""

    ts_ns: int
    taken: int
    written: int | None

    def as_json(self) -> list[int | None]:
        return [self.ts_ns, self.taken, self.written]


@dataclass
class _Scan:
    """One CPU buffer read: (wire object or None for a rejected line, mark) per event."""

    taken: list[tuple[dict[str, Any] | None, _Mark]] = field(default_factory=list)
    mark: _Mark | None = None
    lost: int = 0


def _load_marks(position: Position | None) -> dict[int, _Mark]:
    doc = None if position is None else position.document()
    marks: dict[int, _Mark] = {}
    if not isinstance(doc, dict):
        return marks
    for key, value in doc.items():
        if not (isinstance(key, str) and key.isdigit() and isinstance(value, list)):
            continue
        if not 2 <= len(value) <= 3 or not all(type(v) is int for v in value[:2]):
            continue
        written = value[2] if len(value) == 3 and type(value[2]) is int else None
        marks[int(key)] = _Mark(value[0], value[1], written)
    return marks


def _position(boot: str, offset: int, marks: dict[int, _Mark]) -> Position:
    doc = {str(cpu): mark.as_json() for cpu, mark in sorted(marks.items())}
    return Position(boot, offset, json.dumps(doc, separators=(",", ":")))


def _read_stats(path: Path) -> dict[str, int] | None:
    """A per-CPU ``stats`` file's integer counters (None when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    counters: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            counters[key.strip()] = int(value.strip())
    return counters


def _signature(stats: dict[str, int] | None, trace: Path) -> tuple[int | None, ...] | None:
    """What tells a CPU's buffer changed; None when nothing can tell (read it)."""
    if stats is not None:
        return tuple(stats.get(k) for k in _STATS_KEYS)
    st = trace.stat()
    return (st.st_size, st.st_mtime_ns) if st.st_size > 0 else None


def _is_event_line(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _write_if_changed(path: Path, value: str) -> bool:
    """Write ``value`` unless the file already holds it; True when written."""
    if path.read_text().strip() == value:
        return False
    path.write_text(value + "\n")
    return True


class TracefsSource(Source):
    """RAS tracepoints from a private tracefs instance, read without consuming."""

    kind = "tracefs"

    def __init__(
        self,
        ingest: Ingest,
        start: Position | None,
        *,
        name: str = "tracefs",
        root: Path | None = None,
        instance: str = DEFAULT_INSTANCE,
        buffer_kb: int = DEFAULT_BUFFER_KB,
        boot_id_path: Path = BOOT_ID_PATH,
        boot_ns: int | None = None,
        keep_enabled: bool = False,
        poll: float = 1.0,
    ) -> None:
        super().__init__(ingest, name, start, poll=poll)
        if not instance or "/" in instance or instance in (".", ".."):
            raise ValueError(f"tracefs instance name {instance!r} must be one path component")
        if buffer_kb <= 0:
            raise ValueError(f"tracefs buffer_kb must be positive, not {buffer_kb}")
        self.roots: tuple[Path, ...] = (root,) if root is not None else DEFAULT_ROOTS
        self.instance = instance
        self.buffer_kb = buffer_kb
        self.boot_id_path = boot_id_path
        self.boot_ns = boot_ns
        self.keep_enabled = keep_enabled
        # Which tracepoints are on ("system:event"), once probed.
        self.enabled: list[str] = []
        # Events the ring buffer overwrote before fmd saw them.
        self.lost = 0
        self.instance_dir: Path | None = None
        self._clock = _DEFAULT_CLOCK
        # Per CPU: the buffer's signature when it was last read and committed.
        self._signatures: dict[int, tuple[int | None, ...] | None] = {}
        self._signatures_boot: str | None = None

    # -- availability -----------------------------------------------------------
    def probe(self) -> str | None:
        try:
            return self._set_up()
        except PermissionError:
            return REASON_NEEDS_ROOT
        except OSError as exc:
            if exc.errno in _DENIED:
                return REASON_NEEDS_ROOT
            raise

    def _set_up(self) -> str | None:
        root = find_root(self.roots)
        if root is None:
            return REASON_NO_TRACEFS
        try:
            self._boot_id()
        except OSError as exc:
            return f"cannot read the boot id {self.boot_id_path}: {exc.strerror or exc}"
        inst = root / "instances" / self.instance
        if not inst.is_dir():
            try:
                _create_instance(inst)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno in _DENIED:
                    return REASON_NEEDS_ROOT
                return f"cannot create the tracefs instance {inst}: {exc.strerror or exc}"
        present = [
            (system, event)
            for system, event in RAS_TRACEPOINTS
            if (inst / "events" / system / event / "enable").is_file()
        ]
        if not present:
            return REASON_NO_EVENTS
        self._configure(inst)
        for system, event in present:
            _write_if_changed(inst / "events" / system / event / "enable", _ON)
        enabled = [f"{system}:{event}" for system, event in present]
        if enabled != self.enabled:
            missing = [f"{s}:{e}" for s, e in RAS_TRACEPOINTS if (s, e) not in present]
            log.info(
                "tracefs_events_enabled",
                source=self.name,
                instance=str(inst),
                events=enabled,
                missing=missing,
            )
        self.enabled = enabled
        self.instance_dir = inst
        self._clock = self._read_clock(inst)
        return None

    def _configure(self, inst: Path) -> None:
        """Buffer size, reading without pausing, recording on (only what differs)."""
        pause = inst / "options" / "pause-on-trace"
        if pause.is_file():
            _write_if_changed(pause, _OFF)
        size = inst / "buffer_size_kb"
        if size.is_file():
            # "1408", or "7 (expanded: 1408)" before the buffer was first used.
            words = size.read_text().split()
            if not words or words[0] != str(self.buffer_kb):
                size.write_text(f"{self.buffer_kb}\n")
        tracing_on = inst / "tracing_on"
        if tracing_on.is_file():
            _write_if_changed(tracing_on, _ON)

    @staticmethod
    def _read_clock(inst: Path) -> str:
        """The instance's trace clock: the ``[name]`` of ``trace_clock``."""
        try:
            text = (inst / "trace_clock").read_text()
        except FileNotFoundError:
            return _DEFAULT_CLOCK
        for word in text.split():
            if word.startswith("[") and word.endswith("]"):
                return word[1:-1]
        return _DEFAULT_CLOCK

    def _boot_id(self) -> str:
        boot = self.boot_id_path.read_text().strip()[:_MAX_IDENT]
        if not boot:
            raise OSError(errno.ENODATA, "the boot id file is empty")
        return boot

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["instance"] = None if self.instance_dir is None else str(self.instance_dir)
        out["events"] = list(self.enabled)
        out["lost"] = self.lost
        return out

    # -- reading -------------------------------------------------------------------
    def read(self) -> Iterator[Batch]:
        inst = self.instance_dir
        if inst is None:
            raise RuntimeError("the tracefs source was read before its probe succeeded")
        boot = self._boot_id()
        prior = self.position
        committed = prior if prior is not None and prior.ident == boot else None
        marks = _load_marks(committed)
        saved = dict(marks)
        offset = committed.offset if committed is not None else 0
        if boot != self._signatures_boot:
            self._signatures = {}
            self._signatures_boot = boot
        boot_ns = None
        if self._clock in _BOOT_CLOCKS:
            boot_ns = self.boot_ns if self.boot_ns is not None else monotonic_boot_ns()
        signatures: dict[int, tuple[int | None, ...] | None] = {}
        pending_lost = 0
        for cpu, cpu_dir in self._cpu_dirs(inst):
            stats = _read_stats(cpu_dir / "stats")
            signature = _signature(stats, cpu_dir / "trace")
            if signature is not None and self._signatures.get(cpu) == signature:
                continue
            signatures[cpu] = signature
            text = (cpu_dir / "trace").read_bytes().decode("utf-8", "replace")
            scan = self._scan(cpu, text, marks.get(cpu), stats, boot_ns)
            pending_lost += scan.lost
            for first in range(0, len(scan.taken), BATCH_MAX):
                chunk = scan.taken[first : first + BATCH_MAX]
                marks[cpu] = chunk[-1][1]
                offset += len(chunk)
                items = [obj for obj, _ in chunk if obj is not None]
                yield Batch(items, _position(boot, offset, marks))
                saved = dict(marks)
                self._count_lost(pending_lost)
                pending_lost = 0
            if scan.mark is not None:
                marks[cpu] = scan.mark
        if marks != saved:
            yield Batch([], _position(boot, offset, marks))
        # Reached only once every batch above was committed.
        self._count_lost(pending_lost)
        self._signatures.update(signatures)

    @staticmethod
    def _cpu_dirs(inst: Path) -> list[tuple[int, Path]]:
        found = []
        for entry in (inst / "per_cpu").iterdir():
            number = entry.name.removeprefix("cpu")
            if entry.name.startswith("cpu") and number.isdigit() and entry.is_dir():
                found.append((int(number), entry))
        return sorted(found)

    def _scan(
        self,
        cpu: int,
        text: str,
        mark: _Mark | None,
        stats: dict[str, int] | None,
        boot_ns: int | None,
    ) -> _Scan:
        """Take the events after ``mark`` from one CPU's listing (oldest first)."""
        lines = text.split("\n")
        # A line still being written has no newline yet: it is read next time.
        lines.pop()
        seen_ts, seen_n = (mark.ts_ns, mark.taken) if mark is not None else (-1, 0)
        at_mark = 0
        cur_ts, cur_n = seen_ts, seen_n
        listed = 0
        # Whether the last event line was new: a bad line after an event
        # already taken was already counted (it is not re-read as new).
        after_new = mark is None
        fresh: list[tuple[dict[str, Any] | None, int, int]] = []
        platform = self.ingest.platform
        for line in lines:
            if not _is_event_line(line):
                continue
            head = parse_header(line)
            if isinstance(head, TraceLost):
                continue  # the overrun counter carries the count
            if isinstance(head, TraceFailure):
                if after_new:
                    self.reject(head.reason, where=f"cpu{cpu}")
                continue
            listed += 1
            if head.ts_ns == seen_ts:
                at_mark += 1
            if head.ts_ns < seen_ts or (head.ts_ns == seen_ts and at_mark <= seen_n):
                after_new = False
                continue
            after_new = True
            cur_n = cur_n + 1 if head.ts_ns == cur_ts else 1
            cur_ts = head.ts_ns
            fresh.append((self._event(cpu, head, platform, boot_ns), cur_ts, cur_n))
        overrun = None if stats is None else stats.get("overrun")
        written = None if overrun is None else overrun + listed
        scan = _Scan()
        scan.taken = [(obj, _Mark(ts, n, written)) for obj, ts, n in fresh]
        if cur_ts >= 0:
            scan.mark = _Mark(cur_ts, cur_n, written)
        if overrun is not None:
            seen_index = 0 if mark is None else mark.written
            if seen_index is not None and overrun > seen_index:
                scan.lost = overrun - seen_index
        return scan

    def _event(
        self, cpu: int, head: TraceHeader, platform: Platform | None, boot_ns: int | None
    ) -> dict[str, Any] | None:
        result = parse_event(head, platform=platform, boot_ns=boot_ns)
        if isinstance(result, TraceFailure):
            self.reject(result.reason, where=f"cpu{cpu} {head.event}")
            return None
        return result.obj

    def _count_lost(self, lost: int) -> None:
        if lost <= 0:
            return
        self.lost += lost
        reasons = self.stats.reasons
        reasons[LOST_REASON] = reasons.get(LOST_REASON, 0) + lost
        if self.ingest.allow_log(f"{self.name}:lost"):
            log.warning("tracefs_events_lost", source=self.name, lost=lost, total=self.lost)

    # -- stopping --------------------------------------------------------------------
    def close(self) -> None:
        """Disable fmd's events in its instance (kept, with its buffer)."""
        inst = self.instance_dir
        if inst is None or self.keep_enabled:
            return
        for name in self.enabled:
            system, _, event = name.partition(":")
            enable = inst / "events" / system / event / "enable"
            try:
                _write_if_changed(enable, _OFF)
            except OSError as exc:
                log.warning("tracefs_disable_failed", source=self.name, event=name, error=str(exc))
