"""EDAC error counters in sysfs: the memory source of last resort.

Where the kernel has no ``ras:mc_event`` tracepoint (or it cannot be read),
the EDAC drivers still count every memory error they handle, per DIMM, in
sysfs (``Documentation/ABI/testing/sysfs-devices-edac``)::

    <sysfs>/devices/system/edac/mc/mcN/
        ce_noinfo_count, ue_noinfo_count     errors the driver could not place
        dimmM/ or rankM/                     one per DIMM (or rank)
            dimm_ce_count, dimm_ue_count     corrected / uncorrected errors
            dimm_label                       the board's name for it ("DIMM_A1")
            dimm_location                    "channel 0 slot 1", "csrow 2 channel 1"
        csrowR/                              the legacy layout (older drivers)
            chC_ce_count, chC_dimm_label     per channel of a chip-select row
            ue_count                         per row

:class:`EdacSource` polls these counters and turns each **increase** into one
memory ereport (:func:`fmd.hw.events.edac_memory`) for that DIMM, carrying
``error_count`` = the increase, the DIMM's label, the controller index and the
location's layer numbers (in ``dimm_location``'s order, as the ``mc_event``
tracepoint gives them); a large increase is one ereport, never thousands.
Where a controller has ``dimm*``/``rank*`` directories its legacy ``csrow*``
files count the same errors again and are not read.

Counters going down::

    value > last     ereport(error_count = value - last); last = value
    value == last    nothing
    value < last     a reset (``reset_counters``, a driver reload): no ereport,
                     counted under "counter reset", last = value
    counter gone     forgotten; when it comes back it counts from zero

Start and restart (the position is committed with the events)::

    Position(ident = boot id, offset = polls, data = {"mc0/dimm3/ce": 5, ...})

* **No committed position** (fmd's first start): the first poll takes the
  counts as they are without reporting them.  They are the kernel's history
  since boot, which fmd did not witness and cannot place in time; reporting
  them at once would make a years-old error count in today's SERD window.
* **A committed position of this boot** (fmd restarted, or was killed):
  everything above the committed values is reported, so errors counted while
  fmd was down are neither lost nor reported twice.
* **A committed position of an earlier boot**: the kernel's counters restarted
  at zero with this boot, after fmd's last poll of the previous one, so every
  count since boot is new and is reported.

A counter file that cannot be read keeps its last value (a read error is not
a reset); one holding something that is not a count is rejected once, with
its path, until it reads well again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
import structlog

from fmd.hw import events
from fmd.xprt import Ingest
from fmd.xprts.source import Batch, Position, Source

log = structlog.get_logger("fmd.xprt.edac")

EDAC_MC: Final = Path("devices/system/edac/mc")
DEFAULT_SYSFS: Final = Path("/sys")
DEFAULT_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
DEFAULT_POLL_S: Final = 10.0
SOURCE: Final = "edac-sysfs"
NO_MC_REASON: Final = "no EDAC memory controllers (is an EDAC driver loaded?)"
RESET_REASON: Final = "counter reset"
CORRECTED: Final = "Corrected"
UNCORRECTED: Final = "Uncorrected"

_MC_RE: Final = re.compile(r"mc(\d+)")
_UNIT_RE: Final = re.compile(r"(dimm|rank)(\d+)")
_CSROW_RE: Final = re.compile(r"csrow(\d+)")
_CHANNEL_CE_RE: Final = re.compile(r"ch(\d+)_ce_count")
_LOCATION_RE: Final = re.compile(r"([A-Za-z][A-Za-z_-]*)\s+(-?\d+)")
_MAX_COUNT_CHARS: Final = 32
_MAX_IDENT: Final = 128  # Position.ident's limit


@dataclass(frozen=True)
class Counter:
    """One EDAC error counter file and the memory it counts for."""

    key: str  # stable name in the position: "mc0/dimm3/ce", "mc0/csrow2/ch1/ce", "mc0/ce_noinfo"
    path: Path
    mc: int
    corrected: bool
    label_path: Path | None = None
    location_path: Path | None = None
    layers: tuple[int, ...] = ()  # known from the file names (legacy csrow layout)


def parse_location(text: str) -> tuple[int, ...]:
    """The layer numbers of a ``dimm_location`` (``"channel 0 slot 1"`` -> (0, 1))."""
    return tuple(int(m.group(2)) for m in _LOCATION_RE.finditer(text))


def parse_count(text: str) -> int | None:
    """The value of a counter file, or None when it does not hold a count."""
    word = text.strip()
    if not word or len(word) > _MAX_COUNT_CHARS or not word.isascii() or not word.isdigit():
        return None
    return int(word)


def _numbered(parent: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    """The entries of ``parent`` whose whole name matches ``pattern``, by their number."""
    found = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is not None:
            found.append((int(m.groups()[-1]), entry))
    return sorted(found, key=lambda item: (item[0], item[1].name))


def discover(mc_root: Path) -> list[Counter]:
    """Every counter under ``<sysfs>/devices/system/edac/mc``, in a stable order."""
    counters: list[Counter] = []
    for mc, mc_dir in _numbered(mc_root, _MC_RE):
        units = [
            Counter(
                key=f"mc{mc}/{unit.name}/{kind}",
                path=unit / f"dimm_{kind}_count",
                mc=mc,
                corrected=kind == "ce",
                label_path=unit / "dimm_label",
                location_path=unit / "dimm_location",
            )
            for _, unit in _numbered(mc_dir, _UNIT_RE)
            for kind in ("ce", "ue")
            if (unit / f"dimm_{kind}_count").is_file()
        ]
        counters.extend(units)
        if not units:
            counters.extend(_legacy(mc, mc_dir))
        for kind, corrected in (("ce", True), ("ue", False)):
            path = mc_dir / f"{kind}_noinfo_count"
            if path.is_file():
                counters.append(Counter(f"mc{mc}/{kind}_noinfo", path, mc, corrected))
    return counters


def _legacy(mc: int, mc_dir: Path) -> list[Counter]:
    """The counters of the legacy ``csrow*`` layout of one controller."""
    counters = []
    for row, csrow in _numbered(mc_dir, _CSROW_RE):
        for channel, path in _numbered(csrow, _CHANNEL_CE_RE):
            counters.append(
                Counter(
                    key=f"mc{mc}/csrow{row}/ch{channel}/ce",
                    path=path,
                    mc=mc,
                    corrected=True,
                    label_path=csrow / f"ch{channel}_dimm_label",
                    layers=(row, channel),
                )
            )
        ue = csrow / "ue_count"
        if ue.is_file():
            counters.append(Counter(f"mc{mc}/csrow{row}/ue", ue, mc, False, layers=(row,)))
    return counters


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


class EdacSource(Source):
    """Polls the EDAC counters; see the module docstring."""

    kind: ClassVar[str] = "edac"

    def __init__(
        self,
        ingest: Ingest,
        name: str,
        start: Position | None,
        *,
        sysfs: Path = DEFAULT_SYSFS,
        boot_id: Path = DEFAULT_BOOT_ID,
        poll: float = DEFAULT_POLL_S,
    ) -> None:
        super().__init__(ingest, name, start, poll=poll)
        self.mc_root = sysfs / EDAC_MC
        self.boot_id_path = boot_id
        self._polls = start.offset if start is not None else 0
        # The counter values as of the last committed poll (None: not known yet).
        self._known: dict[str, int] | None = None
        # Counter files whose bad content has been reported (until they read well).
        self._bad: set[Path] = set()

    # -- Source -----------------------------------------------------------------
    def probe(self) -> str | None:
        try:
            self._boot_id()
        except OSError as exc:
            return f"cannot read the boot id at {self.boot_id_path}: {exc.strerror or exc}"
        if not _numbered(self.mc_root, _MC_RE):
            return NO_MC_REASON
        return None

    def read(self) -> Iterator[Batch]:
        boot = self._boot_id()
        self._polls += 1
        counters = discover(self.mc_root)
        known = self._known
        first = known is None
        if known is None:
            known = self._resume(boot)
        values = self._values(counters, known or {})
        if known is None:
            # No history of our own: take the counts as they are (see the docstring).
            log.info("edac_baseline", source=self.name, counters=len(values))
            yield Batch([], self._position(boot, values))
            self._known = values
            return
        items = []
        for counter in counters:
            value = values.get(counter.key)
            if value is None:
                continue
            last = known.get(counter.key, 0)
            if value > last:
                items.append(self._ereport(counter, last, value))
            elif value < last:
                self._reset(counter, last, value)
        if first or items or values != known:
            yield Batch(items, self._position(boot, values))
        self._known = values

    # -- reading ----------------------------------------------------------------
    def _boot_id(self) -> str:
        return self.boot_id_path.read_text().strip()[:_MAX_IDENT]

    def _resume(self, boot: str) -> dict[str, int] | None:
        """The values to compare the first poll with; None to take a fresh baseline."""
        pos = self.position
        doc = pos.document() if pos is not None else None
        if pos is None or not isinstance(doc, dict):
            if pos is not None:
                log.warning("edac_position_unreadable", source=self.name, ident=pos.ident)
            return None
        if pos.ident != boot:
            log.info("edac_new_boot", source=self.name, committed_boot=pos.ident, boot=boot)
            return {}
        return {k: v for k, v in doc.items() if isinstance(k, str) and type(v) is int and v >= 0}

    def _values(self, counters: list[Counter], known: dict[str, int]) -> dict[str, int]:
        values: dict[str, int] = {}
        for counter in counters:
            try:
                text = counter.path.read_text(errors="replace")
            except FileNotFoundError:
                continue  # gone between the listing and the read
            except OSError as exc:
                if counter.key in known:
                    values[counter.key] = known[counter.key]
                self._bad_counter(counter, f"cannot read it: {exc.strerror or exc}")
                continue
            value = parse_count(text)
            if value is None:
                if counter.key in known:
                    values[counter.key] = known[counter.key]
                self._bad_counter(
                    counter, f"holds {text.strip()[:_MAX_COUNT_CHARS]!r}, not a count"
                )
                continue
            self._bad.discard(counter.path)
            values[counter.key] = value
        return values

    def _bad_counter(self, counter: Counter, what: str) -> None:
        if counter.path not in self._bad:
            self._bad.add(counter.path)
            self.reject(f"EDAC counter {what}", where=str(counter.path))

    def _reset(self, counter: Counter, last: int, value: int) -> None:
        self.stats.reasons[RESET_REASON] = self.stats.reasons.get(RESET_REASON, 0) + 1
        if self.ingest.allow_log(f"{self.name}:reset"):
            log.info(
                "edac_counter_reset", source=self.name, counter=counter.key, was=last, now=value
            )

    def _ereport(self, counter: Counter, last: int, value: int) -> dict[str, Any]:
        layers = counter.layers
        if not layers:
            layers = parse_location(_read_text(counter.location_path) or "")
        label = _read_text(counter.label_path) or None
        return events.edac_memory(
            self.ingest.platform,
            err_type=CORRECTED if counter.corrected else UNCORRECTED,
            time=None,
            mc=counter.mc,
            layers=layers,
            label=label,
            count=value - last,
            message=f"{counter.key} went from {last} to {value}",
            source=SOURCE,
        )

    def _position(self, boot: str, values: dict[str, int]) -> Position:
        return Position(
            boot, self._polls, orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()
        )
