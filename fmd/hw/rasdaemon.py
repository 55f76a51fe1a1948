"""Reading rasdaemon's SQLite database: its rows as fmd wire objects.

rasdaemon (``-r``) records what it hears in one SQLite file,
``/var/lib/rasdaemon/ras-mc_event.db``: one table per kind of event, each
starting ``id INTEGER PRIMARY KEY, timestamp TEXT``.  This module opens such a
file **read only** (SQLite URI ``mode=ro``: fmd never writes to, locks for
long, or repairs another program's database) and turns the rows of the tables
fmd understands into the wire objects every source sends:

==========================  ===============================================
``mce_record``              a raw machine-check record ``{"mca": {...}}``
                            decoded by :mod:`fmd.hw.telemetry` (registers,
                            cpu, bank, vendor, family/model from ``cpuid``,
                            socket, APIC id, MCG_CAP/MCG_STATUS, and IPID,
                            SYND, PPIN where the table has those columns;
                            ``microcode`` is not read: a raw record has
                            no member for it)
``mc_event``                an EDAC memory ereport
                            (:func:`fmd.hw.events.edac_memory`)
``memory_failure_event``    the kernel's action on a page
                            (:func:`fmd.hw.events.memory_failure`)
``aer_event``               a PCIe AER ereport (:func:`fmd.hw.events.aer`)
==========================  ===============================================

What rasdaemon stores, and how it is read back:

* **Times.**  ``timestamp`` is local time with its UTC offset,
  ``YYYY-MM-DD HH:MM:SS +ZZZZ``; the offset is applied, so the time is right
  whatever zone fmd runs in (one without an offset is taken as UTC).  A
  machine-check row takes the kernel's own ``walltime`` (epoch seconds, what
  the tracepoint and the kernel log carry too, so the same record heard twice
  has one identity) and falls back to ``timestamp``.  rasdaemon writes
  ``1970-01-01 00:00:00 +0000`` when it could not tell the time: such a row is
  stored with the time fmd receives it.
* **Registers.**  rasdaemon binds 64-bit registers as signed integers, so a
  status with bit 63 set (every valid one) reads back negative; MCG_CAP,
  MCG_STATUS and ``cpuid`` are bound as 32-bit integers.  Negative values are
  taken back to their unsigned form.  ``cpuvendor`` is the kernel's
  ``X86_VENDOR_*`` number (read through :mod:`fmd.hw.cpuid`).
* **Schema drift.**  rasdaemon adds columns over time with ``ALTER TABLE ADD``
  (``ppin``, ``microcode``, ``dev_name``) and builds only the tables its
  configure options enabled.  Columns are looked up by name: an absent
  optional column is simply not read; a table without the columns a row needs
  (``status`` and ``bank`` for a machine check, ``err_type`` for EDAC and
  AER, ``pfn`` for a memory failure), or without ``id``, is skipped with the
  reason in :attr:`RasdaemonDb.problems`; a database with none of the four
  tables is refused.
* **Bad rows** (a NULL status, a pfn that is not a number, an unknown EDAC
  error type, a timestamp that is not a time) come back as :class:`DbRow`
  with ``reason`` set, never as an exception.

Everything the database itself does wrong (a missing or unreadable file, not a
SQLite file, corrupt) raises :class:`~fmd.errors.TransportError` whose message
says what and what to do; locked by a writer for longer than the busy timeout,
:class:`DatabaseBusy` (try again later).  Reads are short (a bounded chunk of
rows by primary key), so rasdaemon, which does not wait for a lock, finds its
database busy for milliseconds at most.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from fmd.errors import EventRejected, TransportError
from fmd.hw import events
from fmd.hw.cpuid import family_model as cpuid_family_model
from fmd.hw.cpuid import vendor_name
from fmd.hw.telemetry import record_from_json
from fmd.hw.topo import Platform

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
DEFAULT_PATH: Final = Path("/var/lib/rasdaemon/ras-mc_event.db")
# How long a read waits for rasdaemon to finish a write before giving up.
BUSY_TIMEOUT_S: Final = 2.0
SOURCE: Final = "rasdaemon"

MCE_TABLE: Final = "mce_record"
MC_TABLE: Final = "mc_event"
MF_TABLE: Final = "memory_failure_event"
AER_TABLE: Final = "aer_event"

_U64: Final = 1 << 64
_U32: Final = 1 << 32
# EDAC layer numbers are signed chars in the tracepoint; 255 is -1 read unsigned.
_UNUSED_LAYER: Final = -1
_UNSIGNED_UNUSED_LAYER: Final = 255

_STAMP_RE: Final = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"\s*(?:(?P<sign>[+-])(?P<hh>\d{2}):?(?P<mm>\d{2})|(?P<utc>Z|UTC|GMT))?\s*"
)
_SECONDS_PER_MINUTE: Final = 60
_SHOWN: Final = 40  # how much of a bad value a reason repeats


class DatabaseBusy(TransportError):
    """rasdaemon held its database locked for longer than the busy timeout."""

    code = "EFMD_XPRT_BUSY"


class RowRejected(Exception):
    """A row fmd cannot use because of ``column``; ``detail`` says what is wrong with it."""

    def __init__(self, column: str, detail: str) -> None:
        super().__init__(f"{column}: {detail}")
        self.column = column
        self.detail = detail


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# -- values -----------------------------------------------------------------------


def parse_timestamp(text: object) -> int | None:
    """Epoch seconds of a rasdaemon ``timestamp`` (``YYYY-MM-DD HH:MM:SS +ZZZZ``).

    None when rasdaemon did not know the time (NULL, empty, or the epoch);
    :class:`RowRejected` when the text is not a time.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise RowRejected("timestamp", f"{_show(text)} is not text")
    if not text.strip():
        return None
    m = _STAMP_RE.fullmatch(text)
    if m is None:
        raise RowRejected("timestamp", f"{_show(text)} is not YYYY-MM-DD HH:MM:SS +ZZZZ")
    zone = UTC
    if m.group("sign") is not None:
        hh, mm = int(m.group("hh")), int(m.group("mm"))
        if hh > 23 or mm > 59:
            raise RowRejected("timestamp", f"{_show(text)} has a bad UTC offset")
        offset = timedelta(minutes=hh * _SECONDS_PER_MINUTE + mm)
        zone = timezone(-offset if m.group("sign") == "-" else offset)
    try:
        year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
        when = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError as exc:
        raise RowRejected("timestamp", f"{_show(text)} is not a date ({exc})") from None
    seconds = int(when.timestamp())
    return seconds if seconds > 0 else None


def _unsigned(name: str, value: object, width: int) -> int | None:
    """An integer column read back unsigned (rasdaemon binds them signed, ``width`` wide)."""
    n = _integer(name, value)
    if n is None:
        return None
    if n < 0:
        if n < -(width >> 1):
            raise RowRejected(name, f"{n} is out of range")
        n += width
    if n >= _U64:
        raise RowRejected(name, f"{n} is out of range")
    return n


def _integer(name: str, value: object) -> int | None:
    """An integer column's value; SQLite lets any column hold any type."""
    if value is None:
        return None
    if type(value) is int:
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise RowRejected(name, f"{_show(value)} is not an integer")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return int(text, 16) if text.startswith(("0x", "-0x")) else int(text, 10)
        except ValueError:
            pass
    raise RowRejected(name, f"{_show(value)} is not an integer")


def _text(name: str, value: object) -> str:
    """A text column's value ("" for NULL)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    raise RowRejected(name, f"{_show(value)} is not text")


def parse_pfn(value: object) -> int:
    """A memory_failure_event ``pfn`` (TEXT, ``0x...`` as rasdaemon writes it, or decimal)."""
    n = _integer("pfn", value)
    if n is None:
        raise RowRejected("pfn", "NULL")
    if n < 0 or n >= _U64 >> events.PAGE_SHIFT:
        raise RowRejected("pfn", f"{_show(value)} is out of range")
    return n


def family_model(cpuid: int) -> tuple[int, int] | None:
    """CPU family and model of a ``cpuid`` column (None for 0: not recorded)."""
    return None if cpuid <= 0 else cpuid_family_model(cpuid)


# -- rows -> wire objects ---------------------------------------------------------------

Converter = Callable[[Mapping[str, Any], Platform | None], dict[str, Any]]

# mce_record columns -> (wire member, width of the stored integer).
_MCE_REGISTERS: Final = (
    ("status", "status", _U64),
    ("addr", "addr", _U64),
    ("misc", "misc", _U64),
    ("ip", "ip", _U64),
    ("tsc", "tsc", _U64),
    ("mcgcap", "mcgcap", _U32),
    ("mcgstatus", "mcgstatus", _U32),
)
# Registers rasdaemon stores as 0 when the CPU has none (dropped then).
_MCE_OPTIONAL_REGISTERS: Final = (("ipid", "ipid"), ("synd", "synd"), ("ppin", "ppin"))
_MCE_IDS: Final = (("cpu", "cpu"), ("apicid", "apicid"), ("socketid", "socket"), ("cs", "cs"))


def mce_item(row: Mapping[str, Any], platform: Platform | None = None) -> dict[str, Any]:
    """A raw machine-check record from an ``mce_record`` row."""
    del platform  # decoded by the daemon against its platform
    mca: dict[str, Any] = {}
    bank = _integer("bank", row.get("bank"))
    if bank is None:
        raise RowRejected("bank", "NULL")
    mca["bank"] = bank
    if row.get("status") is None:
        raise RowRejected("status", "NULL")
    for column, member, width in _MCE_REGISTERS:
        value = _unsigned(column, row.get(column), width)
        if value is not None:
            mca[member] = f"0x{value:x}"
    for column, member in _MCE_OPTIONAL_REGISTERS:
        value = _unsigned(column, row.get(column), _U64)
        if value:
            mca[member] = f"0x{value:x}"
    for column, member in _MCE_IDS:
        value = _integer(column, row.get(column))
        if value is not None:
            mca[member] = value
    vendor = _integer("cpuvendor", row.get("cpuvendor"))
    name = None if vendor is None else vendor_name(vendor)
    if name is not None:
        mca["vendor"] = name
    cpuid = _unsigned("cpuid", row.get("cpuid"), _U32)
    fm = family_model(cpuid) if cpuid is not None else None
    if fm is not None:
        mca["family"], mca["model"] = fm
    walltime = _integer("walltime", row.get("walltime"))
    time = walltime if walltime is not None and walltime > 0 else None
    if time is None:
        time = parse_timestamp(row.get("timestamp"))
    if time is not None:
        mca["time"] = time
    return {"mca": mca}


def _layer(name: str, value: object) -> int:
    n = _integer(name, value)
    if n is None or n == _UNSIGNED_UNUSED_LAYER or n < 0:
        return _UNUSED_LAYER
    return n


def mc_item(row: Mapping[str, Any], platform: Platform | None = None) -> dict[str, Any]:
    """An EDAC memory ereport from an ``mc_event`` row."""
    err_type = _text("err_type", row.get("err_type"))
    if not err_type:
        raise RowRejected("err_type", "empty")
    if events.is_corrected(err_type) is None:
        raise RowRejected(
            "err_type", f"{_show(err_type)} is not Corrected, Uncorrected, Deferred, Fatal or Info"
        )
    count = _integer("err_count", row.get("err_count"))
    layers = [_layer(c, row.get(c)) for c in ("top_layer", "middle_layer", "lower_layer")]
    address = _unsigned("address", row.get("address"), _U64)
    syndrome = _unsigned("syndrome", row.get("syndrome"), _U64)
    grain = _integer("grain", row.get("grain"))
    return events.edac_memory(
        platform,
        err_type=err_type,
        time=parse_timestamp(row.get("timestamp")),
        mc=_integer("mc", row.get("mc")),
        layers=layers if any(n >= 0 for n in layers) else (),
        label=_text("label", row.get("label")) or None,
        physaddr=address,
        grain=grain if grain is not None and grain > 0 else None,
        syndrome=syndrome,
        count=count if count is not None and count > 0 else 1,
        message=_text("err_msg", row.get("err_msg")),
        detail=_text("driver_detail", row.get("driver_detail")),
        source=SOURCE,
    )


def mf_item(row: Mapping[str, Any], platform: Platform | None = None) -> dict[str, Any]:
    """A memory-failure ereport from a ``memory_failure_event`` row."""
    del platform
    return events.memory_failure(
        pfn=parse_pfn(row.get("pfn")),
        page_type=_text("page_type", row.get("page_type")),
        result=_text("action_result", row.get("action_result")),
        time=parse_timestamp(row.get("timestamp")),
        source=SOURCE,
    )


def aer_item(row: Mapping[str, Any], platform: Platform | None = None) -> dict[str, Any]:
    """A PCIe AER ereport from an ``aer_event`` row."""
    del platform
    severity = _text("err_type", row.get("err_type"))
    if not severity:
        raise RowRejected("err_type", "empty")
    return events.aer(
        dev_name=_text("dev_name", row.get("dev_name")),
        severity=severity,
        message=_text("err_msg", row.get("err_msg")),
        time=parse_timestamp(row.get("timestamp")),
        source=SOURCE,
    )


@dataclass(frozen=True)
class TableSpec:
    """What fmd reads of one rasdaemon table."""

    name: str
    # Columns without which no row of the table can be read (besides id).
    required: tuple[str, ...]
    # Columns read when the table has them.
    optional: tuple[str, ...]
    convert: Converter


TABLES: Final[tuple[TableSpec, ...]] = (
    TableSpec(
        MCE_TABLE,
        ("bank", "status"),
        (
            "timestamp", "mcgcap", "mcgstatus", "addr", "misc", "ip", "tsc", "walltime",
            "cpu", "cpuid", "apicid", "socketid", "cs", "cpuvendor", "ipid", "synd", "ppin",
        ),
        mce_item,
    ),
    TableSpec(
        MC_TABLE,
        ("err_type",),
        (
            "timestamp", "err_count", "err_msg", "label", "mc", "top_layer", "middle_layer",
            "lower_layer", "address", "grain", "syndrome", "driver_detail",
        ),
        mc_item,
    ),
    TableSpec(MF_TABLE, ("pfn",), ("timestamp", "page_type", "action_result"), mf_item),
    TableSpec(AER_TABLE, ("err_type",), ("timestamp", "dev_name", "err_msg"), aer_item),
)  # fmt: skip
TABLE_NAMES: Final = tuple(spec.name for spec in TABLES)


def convert_row(
    spec: TableSpec, row: Mapping[str, Any], platform: Platform | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(wire object, None) for a good row, (None, reason) for a bad one; never raises.

    A reason reads ``bad <column> in <table>: <what>``; its part before the colon
    is the category ``fmstat -t`` counts it under.
    """
    try:
        return spec.convert(row, platform), None
    except RowRejected as exc:
        return None, f"bad {exc.column} in {spec.name}: {exc.detail}"
    except (ValueError, TypeError, OverflowError) as exc:
        return None, f"unreadable row in {spec.name}: {type(exc).__name__}: {exc}"


# -- the database -------------------------------------------------------------------------


@dataclass(frozen=True)
class DbRow:
    """One row read: its wire object, or the reason it cannot be used."""

    table: str
    id: int
    timestamp: str | None
    item: dict[str, Any] | None
    reason: str | None


@dataclass(frozen=True)
class _Table:
    spec: TableSpec
    columns: tuple[str, ...]  # what is selected, "id" first
    has_timestamp: bool


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def database_error(path: Path, exc: sqlite3.Error) -> TransportError:
    """What a SQLite failure on rasdaemon's database means, in words."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return DatabaseBusy(f"{path} is locked by a writer (rasdaemon?); try again")
    if "not a database" in low or "encrypted" in low:
        return TransportError(f"{path} is not a SQLite database")
    if "malformed" in low or "corrupt" in low:
        return TransportError(f"{path} is damaged: {text}")
    if "unable to open" in low:
        return TransportError(f"cannot open {path} read-only: {text}")
    return TransportError(f"cannot read {path}: {text}")


class RasdaemonDb:
    """One rasdaemon database opened read-only; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self.tables: dict[str, _Table] = {}
        # Why tables (or the whole file) are not read: shown to the user.
        self.problems: list[str] = []

    @classmethod
    def open(cls, path: Path, *, timeout: float = BUSY_TIMEOUT_S) -> RasdaemonDb:
        """Open ``path`` read-only and learn its tables; TransportError says why not."""
        try:
            with path.open("rb") as fh:
                magic = fh.read(len(SQLITE_MAGIC))
        except FileNotFoundError:
            raise TransportError(f"no rasdaemon database at {path}") from None
        except PermissionError:
            raise TransportError(
                f"cannot read {path}: permission denied (rasdaemon's database is root's; "
                "run as root)"
            ) from None
        except IsADirectoryError:
            raise TransportError(f"{path} is a directory, not a rasdaemon database") from None
        except OSError as exc:
            raise TransportError(f"cannot read {path}: {exc.strerror or exc}") from None
        if magic != SQLITE_MAGIC:
            raise TransportError(f"{path} is not a SQLite database (rasdaemon's is)")
        uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise database_error(path, exc) from None
        db = cls(path, conn)
        try:
            db._learn_schema()
        except sqlite3.Error as exc:
            db.close()
            raise database_error(path, exc) from None
        except TransportError:
            db.close()
            raise
        return db

    def _learn_schema(self) -> None:
        names = {
            r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        for spec in TABLES:
            if spec.name not in names:
                self.problems.append(f"no table {spec.name}")
                continue
            have = {
                str(r[1]) for r in self._conn.execute(f"PRAGMA table_info({_quote(spec.name)})")
            }
            lacking = [c for c in ("id", *spec.required) if c not in have]
            if lacking:
                self.problems.append(
                    f"table {spec.name} lacks column{'s' if len(lacking) > 1 else ''} "
                    f"{', '.join(lacking)}; not read"
                )
                continue
            columns = ("id", *spec.required, *(c for c in spec.optional if c in have))
            self.tables[spec.name] = _Table(spec, columns, "timestamp" in have)
        if not self.tables:
            raise TransportError(
                f"{self.path} is not a rasdaemon database that fmd can read: "
                + "; ".join(self.problems)
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RasdaemonDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise database_error(self.path, exc) from None

    # -- reading ------------------------------------------------------------------
    def rows(
        self, table: str, after: int, limit: int, platform: Platform | None = None
    ) -> list[DbRow]:
        """Up to ``limit`` rows of ``table`` with ids above ``after``, in id order."""
        t = self.tables[table]
        cols = ", ".join(_quote(c) for c in t.columns)
        sql = f"SELECT {cols} FROM {_quote(table)} WHERE id > ? ORDER BY id LIMIT ?"
        out = []
        for raw in self._query(sql, (after, limit)):
            values = dict(zip(t.columns, raw, strict=True))
            row_id = values["id"]
            if type(row_id) is not int:
                # INTEGER PRIMARY KEY is the rowid: always an integer.
                continue
            stamp = values.get("timestamp")
            item, reason = convert_row(t.spec, values, platform)
            out.append(
                DbRow(table, row_id, stamp if isinstance(stamp, str) else None, item, reason)
            )
        return out

    def iter_rows(
        self, table: str, after: int = 0, platform: Platform | None = None, chunk: int = 500
    ) -> Iterator[DbRow]:
        """Every row of ``table`` above ``after`` in id order, read ``chunk`` rows at a time."""
        while True:
            rows = self.rows(table, after, chunk, platform)
            yield from rows
            if len(rows) < chunk:
                return
            after = rows[-1].id

    def stamp_of(self, table: str, row_id: int) -> tuple[bool, str | None]:
        """Whether row ``row_id`` exists in ``table``, and its timestamp text."""
        t = self.tables[table]
        col = "timestamp" if t.has_timestamp else "id"
        found = self._query(f"SELECT {_quote(col)} FROM {_quote(table)} WHERE id = ?", (row_id,))
        if not found:
            return False, None
        value = found[0][0] if t.has_timestamp else None
        return True, value if isinstance(value, str) else None

    def last_id(self, table: str) -> int:
        """The highest row id of ``table`` (0 when empty)."""
        found = self._query(f"SELECT max(id) FROM {_quote(table)}")
        value = found[0][0] if found else None
        return value if type(value) is int else 0

    def count(self, table: str, *, through: int | None = None) -> int:
        """How many rows ``table`` has (with ids up to ``through`` when given)."""
        if through is None:
            found = self._query(f"SELECT count(*) FROM {_quote(table)}")
        else:
            found = self._query(f"SELECT count(*) FROM {_quote(table)} WHERE id <= ?", (through,))
        return int(found[0][0]) if found else 0


def check_database(path: Path) -> tuple[int, list[tuple[str, int, str]], list[str]]:
    """Check every row of the database at ``path`` as fmd would read it (``fminject -n``).

    Returns the number of rows, the bad ones as (table, id, reason), and the
    tables not read (:attr:`RasdaemonDb.problems`).  Machine-check registers
    are checked, not decoded (that needs the daemon's platform).
    """
    rows = 0
    bad: list[tuple[str, int, str]] = []
    with RasdaemonDb.open(path) as db:
        for table in TABLE_NAMES:
            if table not in db.tables:
                continue
            for row in db.iter_rows(table):
                rows += 1
                reason = row.reason
                if row.item is not None and "mca" in row.item:
                    try:
                        record_from_json(row.item["mca"])
                    except EventRejected as exc:
                        reason = str(exc)
                if reason is not None:
                    bad.append((table, row.id, reason))
        return rows, bad, list(db.problems)
