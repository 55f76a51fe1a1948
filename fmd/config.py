"""Typed properties: the daemon's property table, value parsing and ``.conf`` files.

One machinery serves the daemon and every module.  A table of :class:`PropSpec`
declares each property's name, type, textual default and meaning; the daemon's
table is :data:`DAEMON_PROPERTIES`, a module declares its own.  Values arrive as
text from three kinds of source, applied in order so that later ones win::

    PropSpec.default  ->  setprop lines of a .conf file  ->  -o name=value
      ("default")          ("etc/fmd/fmd.conf:12")           ("-o")

:meth:`Properties.build` parses every value with :func:`parse_value`, rejects
names the table does not declare, and freezes the result; afterwards a value and
the origin it came from can be read but never changed.

A ``.conf`` file holds ``setprop <name> <value>``, ``subscribe <pattern>`` and
``dictionary <NAME>`` lines with ``#`` comments; :func:`parse_conf` reads one
into a :class:`ConfFile` without interpreting the values.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Final

from fmd.errors import ConfigError
from fmd.secure import check_trusted

__all__ = [
    "DAEMON_PROPERTIES",
    "DIRECTIVES",
    "ConfFile",
    "PropSpec",
    "PropType",
    "PropValue",
    "Properties",
    "parse_conf",
    "parse_opt",
    "parse_value",
]

PropValue = bool | int | str
"""What a parsed property holds: BOOL gives bool; integers, TIME and SIZE give int."""


class PropType(enum.Enum):
    """The type of a property, which decides how its text is parsed."""

    BOOL = "bool"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    STRING = "string"
    TIME = "time"  # nanoseconds
    SIZE = "size"  # bytes
    ENUM = "enum"


# -- value parsing ------------------------------------------------------------

_INT_RANGES: Final[dict[PropType, tuple[int, int, str]]] = {
    PropType.INT32: (-(2**31), 2**31 - 1, "a signed 32-bit integer"),
    PropType.UINT32: (0, 2**32 - 1, "an unsigned 32-bit integer"),
    PropType.INT64: (-(2**63), 2**63 - 1, "a signed 64-bit integer"),
    PropType.UINT64: (0, 2**64 - 1, "an unsigned 64-bit integer"),
}

_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})

_NS_PER_SEC: Final = 1_000_000_000
_DAY_NS: Final = 86_400 * _NS_PER_SEC

# The illumos suffixes, plus week, month (30 days) and year (365 days).  A bare
# "m" is deliberately absent: in a SIZE it means mebibytes, and a TIME that
# silently meant minutes where the user thought milliseconds would be worse
# than an error.
TIME_SUFFIXES: Final[MappingProxyType[str, int]] = MappingProxyType(
    {
        "": 1,
        "ns": 1,
        "nsec": 1,
        "us": 1_000,
        "usec": 1_000,
        "ms": 1_000_000,
        "msec": 1_000_000,
        "s": _NS_PER_SEC,
        "sec": _NS_PER_SEC,
        "min": 60 * _NS_PER_SEC,
        "h": 3_600 * _NS_PER_SEC,
        "hour": 3_600 * _NS_PER_SEC,
        "d": _DAY_NS,
        "day": _DAY_NS,
        "week": 7 * _DAY_NS,
        "month": 30 * _DAY_NS,
        "year": 365 * _DAY_NS,
    }
)
"""Multiplier to nanoseconds for each TIME suffix (matched case-insensitively)."""

SIZE_SUFFIXES: Final[MappingProxyType[str, int]] = MappingProxyType(
    {
        "": 1,
        "b": 1,
        "k": 1 << 10,
        "kb": 1 << 10,
        "m": 1 << 20,
        "mb": 1 << 20,
        "g": 1 << 30,
        "gb": 1 << 30,
        "t": 1 << 40,
        "tb": 1 << 40,
    }
)
"""Multiplier to bytes for each SIZE suffix (matched case-insensitively)."""

# TIME and SIZE values are held in a signed 64-bit column by the store.
_SCALED_MAX: Final = 2**63 - 1

_INT_RE: Final = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|([0-9]+))")
_SCALED_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-zA-Z]*)")

_EXPECTED_TIME: Final = (
    "a time (a number with an optional suffix such as ns, us, ms, s, min, h, d, week, "
    "month or year, e.g. 500ms, 30min, 1.5h; a bare number is nanoseconds)"
)
_EXPECTED_SIZE: Final = (
    "a size (a number with an optional suffix b, k, m, g or t, powers of 1024, e.g. 64k, 1.5m)"
)
_EXPECTED_BOOL: Final = "a boolean (true/false, yes/no, on/off or 1/0)"


def _bad(spec: PropSpec, text: str, expected: str) -> ConfigError:
    return ConfigError(f"property {spec.name!r}: {text!r} is not {expected}")


def _parse_int(spec: PropSpec, text: str) -> int:
    low, high, what = _INT_RANGES[spec.type]
    m = _INT_RE.fullmatch(text.strip())
    if m is None:
        raise _bad(spec, text, f"{what} (decimal or 0x hexadecimal)")
    sign, hexdigits, decdigits = m.groups()
    try:
        value = int(hexdigits, 16) if hexdigits is not None else int(decdigits, 10)
    except ValueError:  # more digits than int() will convert: far out of range
        raise _bad(spec, text, f"{what} ({low} to {high})") from None
    if sign == "-":
        value = -value
    if not low <= value <= high:
        raise _bad(spec, text, f"{what} ({low} to {high})")
    return value


def _parse_scaled(
    spec: PropSpec, text: str, suffixes: MappingProxyType[str, int], expected: str, unit: str
) -> int:
    """Parse ``<number><suffix>`` into a whole count of ``unit``, at most 2**63-1."""
    m = _SCALED_RE.fullmatch(text.strip())
    if m is None:
        raise _bad(spec, text, expected)
    number, suffix = m.groups()
    multiplier = suffixes.get(suffix.lower())
    if multiplier is None:
        if suffixes is TIME_SUFFIXES and suffix.lower() == "m":
            expected += "; write min for minutes or ms for milliseconds"
        raise _bad(spec, text, expected)
    too_large = ConfigError(
        f"property {spec.name!r}: {text!r} is too large (at most {_SCALED_MAX} {unit})"
    )
    try:
        exact = Fraction(number) * multiplier
    except ValueError:  # more digits than Fraction will convert: far out of range
        raise too_large from None
    if exact.denominator != 1:
        raise _bad(spec, text, f"a whole number of {unit}")
    if exact.numerator > _SCALED_MAX:
        raise too_large
    return exact.numerator


def parse_value(spec: PropSpec, text: str) -> PropValue:
    """Parse ``text`` as a value of property ``spec``.

    Raises :class:`ConfigError` naming the property, the bad text and what was
    expected.  Surrounding whitespace is ignored except in STRING values.
    """
    kind = spec.type
    if kind is PropType.STRING:
        return text
    if kind is PropType.BOOL:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _bad(spec, text, _EXPECTED_BOOL)
    if kind is PropType.ENUM:
        word = text.strip()
        if word in spec.choices:
            return word
        raise _bad(spec, text, "one of: " + ", ".join(spec.choices))
    if kind is PropType.TIME:
        return _parse_scaled(spec, text, TIME_SUFFIXES, _EXPECTED_TIME, "nanoseconds")
    if kind is PropType.SIZE:
        return _parse_scaled(spec, text, SIZE_SUFFIXES, _EXPECTED_SIZE, "bytes")
    return _parse_int(spec, text)


# -- the table ----------------------------------------------------------------


@dataclass(frozen=True)
class PropSpec:
    """One declared property: its name, type, textual default and meaning.

    The default is text, parsed like any other value; a spec whose default does
    not parse, or an ENUM without choices, is rejected when the spec is made.
    """

    name: str
    type: PropType
    default: str
    description: str
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c in '=#"' for c in self.name):
            raise ConfigError(
                f"property name {self.name!r} is invalid: it must be non-empty and contain "
                "no whitespace, '=', '#' or '\"'"
            )
        if self.type is PropType.ENUM and not self.choices:
            raise ConfigError(f"property {self.name!r} is an ENUM but declares no choices")
        if self.type is not PropType.ENUM and self.choices:
            raise ConfigError(f"property {self.name!r} declares choices but is not an ENUM")
        try:
            parse_value(self, self.default)
        except ConfigError as e:
            raise ConfigError(f"default of {e.message}") from None


class Properties:
    """The parsed values of one property table; read-only once built.

    Supports ``props[name]``, ``name in props``, ``len`` and iteration over the
    names in table order.  ``get(name)`` differs from ``dict.get``: a name the
    table does not declare is an error, not ``None``.
    """

    __slots__ = ("_origins", "_specs", "_texts", "_values")

    _specs: MappingProxyType[str, PropSpec]
    _values: MappingProxyType[str, PropValue]
    _texts: MappingProxyType[str, str]
    _origins: MappingProxyType[str, str]

    def __init__(
        self,
        specs: dict[str, PropSpec],
        values: dict[str, PropValue],
        texts: dict[str, str],
        origins: dict[str, str],
    ) -> None:
        """Use :meth:`build`; this only stores what it has already checked."""
        object.__setattr__(self, "_specs", MappingProxyType(specs))
        object.__setattr__(self, "_values", MappingProxyType(values))
        object.__setattr__(self, "_texts", MappingProxyType(texts))
        object.__setattr__(self, "_origins", MappingProxyType(origins))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Properties are read-only once built")

    @classmethod
    def build(
        cls, specs: Iterable[PropSpec], sources: Iterable[tuple[str, str, str]] = ()
    ) -> Properties:
        """Parse the defaults of ``specs`` and then each ``(name, text, origin)``.

        A later source overrides an earlier one.  An unknown name, a bad value
        or a table that declares a name twice raises :class:`ConfigError`
        prefixed with the origin (``file:line``, ``-o`` or ``default``).
        """
        table: dict[str, PropSpec] = {}
        for spec in specs:
            if spec.name in table:
                raise ConfigError(f"property {spec.name!r} is declared twice in one table")
            table[spec.name] = spec
        values: dict[str, PropValue] = {}
        texts: dict[str, str] = {}
        origins: dict[str, str] = {}
        for spec in table.values():
            values[spec.name] = parse_value(spec, spec.default)
            texts[spec.name] = spec.default
            origins[spec.name] = "default"
        for name, text, origin in sources:
            spec_or_none = table.get(name)
            if spec_or_none is None:
                raise ConfigError(f"{origin}: {_unknown(name, table)}")
            try:
                values[name] = parse_value(spec_or_none, text)
            except ConfigError as e:
                raise ConfigError(f"{origin}: {e.message}") from None
            texts[name] = text
            origins[name] = origin
        return cls(table, values, texts, origins)

    # -- mapping protocol
    def __getitem__(self, name: str) -> PropValue:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Properties({dict(self._values)!r})"

    def items(self) -> Iterator[tuple[str, PropValue]]:
        """Each ``(name, value)`` in table order, for display."""
        return iter(self._values.items())

    # -- lookups
    @property
    def specs(self) -> tuple[PropSpec, ...]:
        """The table, in declaration order."""
        return tuple(self._specs.values())

    def spec(self, name: str) -> PropSpec:
        """The declaration of ``name``."""
        return self._lookup(name)

    def origin(self, name: str) -> str:
        """Where the value of ``name`` came from: ``default``, ``file:line`` or ``-o``."""
        self._lookup(name)
        return self._origins[name]

    def text(self, name: str) -> str:
        """The text the value of ``name`` was parsed from (e.g. ``72h``)."""
        self._lookup(name)
        return self._texts[name]

    def get(self, name: str) -> PropValue:
        """The parsed value of ``name``, whatever its type."""
        self._lookup(name)
        return self._values[name]

    def get_bool(self, name: str) -> bool:
        """The value of BOOL property ``name``."""
        value = self._typed(name, (PropType.BOOL,), "get_bool")
        assert isinstance(value, bool)
        return value

    def get_int(self, name: str) -> int:
        """The value of integer property ``name`` (INT32, UINT32, INT64 or UINT64)."""
        value = self._typed(name, tuple(_INT_RANGES), "get_int")
        assert isinstance(value, int)
        return value

    def get_str(self, name: str) -> str:
        """The value of STRING or ENUM property ``name``."""
        value = self._typed(name, (PropType.STRING, PropType.ENUM), "get_str")
        assert isinstance(value, str)
        return value

    def get_time_ns(self, name: str) -> int:
        """The value of TIME property ``name``, in nanoseconds."""
        value = self._typed(name, (PropType.TIME,), "get_time_ns")
        assert isinstance(value, int)
        return value

    def get_size(self, name: str) -> int:
        """The value of SIZE property ``name``, in bytes."""
        value = self._typed(name, (PropType.SIZE,), "get_size")
        assert isinstance(value, int)
        return value

    def _lookup(self, name: str) -> PropSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise ConfigError(_unknown(name, self._specs))
        return spec

    def _typed(self, name: str, types: tuple[PropType, ...], getter: str) -> PropValue:
        spec = self._lookup(name)
        if spec.type not in types:
            raise ConfigError(
                f"property {name!r} is of type {spec.type.name}; {getter}() reads "
                + " or ".join(t.name for t in types)
            )
        return self._values[name]


def _unknown(name: str, table: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.6)
    if close:
        return f"unknown property {name!r}; did you mean " + " or ".join(map(repr, close)) + "?"
    return f"unknown property {name!r}; no known property has a similar name"


# -- the daemon's property table ------------------------------------------------

_P = PropType

DAEMON_PROPERTIES: Final[tuple[PropSpec, ...]] = (
    PropSpec(
        "clock",
        _P.ENUM,
        "native",
        "How fmd keeps time. native follows the system clock. simulated starts at the "
        "time fmd starts and advances only when a resource.fm.fmd.clock.addhrtime event "
        "arrives, so that tests and replays run timers and SERD windows deterministically.",
        ("native", "simulated"),
    ),
    PropSpec(
        "platform",
        _P.ENUM,
        "auto",
        "Where fmd learns the machine's topology (CPUs, memory, FRU labels). sim is a fixed "
        "four-chip test machine; file reads etc/fmd/topology.toml; linux reads sysfs; xen "
        "asks the hypervisor for the physical CPUs (a Xen dom0, through topo.xenpm); auto "
        "picks file when that file exists, else, as root, xen in a Xen dom0 and linux "
        "elsewhere, else sim.",
        choices=("auto", "sim", "file", "linux", "xen"),
    ),
    PropSpec(
        "topo.sysfs",
        _P.STRING,
        "/sys",
        "The sysfs tree the linux platform reads (a test can point it at a fake tree).",
    ),
    PropSpec(
        "topo.xenpm",
        _P.STRING,
        "xenpm",
        "The xenpm program the xen platform runs to ask the hypervisor for its physical CPUs.",
    ),
    PropSpec(
        "store.url",
        _P.STRING,
        "",
        "Where events, cases and checkpoints are kept. Empty means the SQLite database "
        "var/fm/fmd/fmd.db under the root; otherwise an SQLAlchemy URL, for example "
        "postgresql+psycopg://user@127.0.0.1/test.",
    ),
    PropSpec(
        "store.sync",
        _P.ENUM,
        "full",
        "SQLite synchronous level. full fsyncs every group commit, so an acknowledged "
        "event survives a power loss; normal may lose the last commits on power loss but "
        "never corrupts the database; off leaves flushing to the operating system.",
        ("full", "normal", "off"),
    ),
    PropSpec(
        "store.batch",
        _P.UINT32,
        "16384",
        "The most events the store writes in one transaction (one group commit).",
    ),
    PropSpec(
        "client.evqlim",
        _P.UINT32,
        "65536",
        "Events held in memory for one module; beyond that only references are queued and "
        "the module re-reads the events from the store, so a slow module never stalls ingest.",
    ),
    PropSpec(
        "client.evqmem",
        _P.SIZE,
        "64m",
        "Bytes of events held in memory for one module; beyond that (or beyond "
        "client.evqlim events) only references are queued, so large events cannot exhaust "
        "memory.",
    ),
    PropSpec(
        "client.error",
        _P.ENUM,
        "event",
        "What to do when a module raises an unexpected exception while handling an event, a "
        "timer or a request. event fails only that item (counted in the module's fmd.ev_fail "
        "statistic and logged once per kind of failure) and the module goes on; unload marks "
        "the module failed, stops delivering events to it and reports it to self-diagnosis; "
        "stop shuts the daemon down.",
        ("event", "unload", "stop"),
    ),
    PropSpec(
        "xprt.socket",
        _P.BOOL,
        "true",
        "Serve the local ingest socket var/run/fmd/xprt.sock under the root.",
    ),
    PropSpec(
        "xprt.file",
        _P.STRING,
        "",
        "Comma-separated paths of JSON-lines files to follow, one event per line.",
    ),
    PropSpec(
        "xprt.maxline",
        _P.SIZE,
        "1m",
        "The longest event a transport accepts; a longer line is rejected.",
    ),
    PropSpec(
        "xprt.rate",
        _P.UINT32,
        "0",
        "Events per second one transport client may send before it is throttled; "
        "0 means unlimited.",
    ),
    PropSpec(
        "xprt.burst",
        _P.UINT32,
        "10000",
        "Events a transport client may send at once above xprt.rate before it is throttled.",
    ),
    PropSpec(
        "xprt.coalesce",
        _P.UINT32,
        "100",
        "Identical ereports (same class, detector and payload) beyond this many per second "
        "are stored as one record with a count and a time span, so a storm costs storage, "
        "memory and diagnosis in proportion to what is new; the counts stay exact. 0 stores "
        "every ereport on its own.",
    ),
    PropSpec(
        "xprt.dedup_window",
        _P.TIME,
        "30d",
        "A machine-check record the kernel logged (one carrying its own TIME or TSC) that "
        "arrives again within this time of the newest such record (through a second source, "
        "an import run twice) is acknowledged as a duplicate and not stored again; the "
        "duplicates are counted per transport in fmstat -t. 0 stores every copy.",
    ),
    PropSpec(
        "xprt.tracefs",
        _P.ENUM,
        "auto",
        "Read machine checks and RAS events (EDAC, memory failure, AER, ARM, firmware) from the "
        "kernel's tracepoints, in a tracefs instance of fmd's own. on runs it, off never; auto "
        "runs it when it is the best source of its "
        "events on this host (linux platform, as root; see Where errors come from in the "
        "README).",
        ("auto", "on", "off"),
    ),
    PropSpec(
        "xprt.tracefs.root",
        _P.STRING,
        "",
        "The tracefs mount to use; empty tries /sys/kernel/tracing, then "
        "/sys/kernel/debug/tracing.",
    ),
    PropSpec(
        "xprt.tracefs.buffer_kb",
        _P.UINT32,
        "256",
        "The ring buffer of fmd's tracefs instance, per CPU, in KiB.",
    ),
    PropSpec(
        "xprt.kmsg",
        _P.ENUM,
        "auto",
        "Read the kernel log (/dev/kmsg): machine-check blocks, the AMD decoder's lines, EDAC "
        "lines, firmware (GHES) sections and thermal events. on runs it, off never; auto runs it "
        "when it is the best source of its "
        "events on this host (linux platform, as root; see Where errors come from in the "
        "README).",
        ("auto", "on", "off"),
    ),
    PropSpec(
        "xprt.kmsg.path",
        _P.STRING,
        "/dev/kmsg",
        "The kernel log device the kmsg source reads.",
    ),
    PropSpec(
        "xprt.mcelog",
        _P.ENUM,
        "auto",
        "Read the binary machine-check records of /dev/mcelog (kernels with "
        "CONFIG_X86_MCELOG_LEGACY, and Xen dom0, where they carry the hypervisor's records). on "
        "runs it, off never; auto runs it when it is the best source of its "
        "events on this host (linux platform, as root; see Where errors come from in the "
        "README).",
        ("auto", "on", "off"),
    ),
    PropSpec(
        "xprt.mcelog.path",
        _P.STRING,
        "/dev/mcelog",
        "The device the mcelog source reads.",
    ),
    PropSpec(
        "xprt.edac",
        _P.ENUM,
        "auto",
        "Poll the EDAC memory controllers' per-DIMM error counters under topo.sysfs and turn "
        "increases into memory ereports. on runs it, off never; auto runs it when it is the best "
        "source of its "
        "events on this host (linux platform, as root; see Where errors come from in the "
        "README).",
        ("auto", "on", "off"),
    ),
    PropSpec(
        "xprt.edac.interval",
        _P.TIME,
        "10s",
        "How often the EDAC counters are polled.",
    ),
    PropSpec(
        "xprt.pstore",
        _P.ENUM,
        "auto",
        "Read machine-check records from the previous boot's panic logs in pstore once, at start-"
        "up and then now and then. on runs it, off never; auto runs it when it is the best source "
        "of its "
        "events on this host (linux platform, as root; see Where errors come from in the "
        "README).",
        ("auto", "on", "off"),
    ),
    PropSpec(
        "xprt.pstore.dir",
        _P.STRING,
        "/sys/fs/pstore",
        "Where pstore is mounted.",
    ),
    PropSpec(
        "xprt.pstore.remove",
        _P.BOOL,
        "false",
        "Delete a pstore file once its records are stored (pstore's backing store is small).",
    ),
    PropSpec(
        "xprt.rasdaemon",
        _P.STRING,
        "",
        "A rasdaemon database to follow (rows added to it are imported as they come, with their "
        "original times); empty follows none. fminject --format rasdaemon imports one once.",
    ),
    PropSpec(
        "xprt.bootid",
        _P.STRING,
        "/proc/sys/kernel/random/boot_id",
        "Where the host sources read the boot id that their committed positions are kept against.",
    ),
    PropSpec(
        "log.level",
        _P.ENUM,
        "info",
        "The least severe daemon log messages written.",
        ("debug", "info", "warning", "error"),
    ),
    PropSpec(
        "log.format",
        _P.ENUM,
        "auto",
        "How daemon log messages are written: json (one object per line), console (for "
        "people) or auto (console on a terminal, json otherwise).",
        ("auto", "json", "console"),
    ),
    PropSpec(
        "log.errlimit",
        _P.UINT32,
        "10",
        "The most messages about rejected events logged per transport in each "
        "log.errwindow; the rest are only counted.",
    ),
    PropSpec(
        "log.errwindow",
        _P.TIME,
        "60s",
        "The period over which log.errlimit applies.",
    ),
    PropSpec(
        "log.minfree",
        _P.SIZE,
        "2m",
        "Free space fmd keeps on the file system of its database: below it new error "
        "reports are refused (each client is told the store is full) while checkpoints and "
        "diagnoses still use the room left, and ingest resumes by itself once space returns.",
    ),
    PropSpec(
        "access.group",
        _P.STRING,
        "adm",
        "The group that may read fmd's database, log and archives (files 0640, directories "
        "0750). When the group does not exist the files keep fmd's own group; empty means "
        "fmd's own group.",
    ),
    PropSpec(
        "plugin.path",
        _P.STRING,
        "",
        "Colon-separated extra directories of plug-in .py modules, searched besides "
        "usr/lib/fm/fmd/plugins under the root.",
    ),
    PropSpec(
        "modules.disable",
        _P.STRING,
        "",
        "Comma-separated names of modules not to load.",
    ),
    PropSpec(
        "gc_interval",
        _P.TIME,
        "1d",
        "How often fmd asks each module to garbage-collect its state.",
    ),
    PropSpec(
        "ckpt.save",
        _P.BOOL,
        "true",
        "Save module checkpoints (cases, SERD engines, buffers) to the store.",
    ),
    PropSpec(
        "ckpt.restore",
        _P.BOOL,
        "true",
        "Restore module checkpoints from the store when fmd starts.",
    ),
    PropSpec(
        "shutdown.wait",
        _P.TIME,
        "10s",
        "How long a shutdown lets the modules work through the events still queued; what "
        "is left then is replayed at the next start (the log says how many).",
    ),
    PropSpec(
        "self.name",
        _P.STRING,
        "fmd-self-diagnosis",
        "The name of the built-in module that diagnoses fmd's own errors.",
    ),
    PropSpec(
        "fg",
        _P.BOOL,
        "false",
        "Stay in the foreground instead of becoming a daemon, like fmd -f.",
    ),
)
"""The daemon's single property table, set in fmd.conf and with ``fmd -o``."""

del _P


# -- .conf files ----------------------------------------------------------------

DIRECTIVES: Final = frozenset({"setprop", "subscribe", "dictionary"})
"""Every directive a ``.conf`` file may hold."""

_DICT_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class ConfFile:
    """The directives of one ``.conf`` file, each with its ``file:line`` origin."""

    path: Path
    setprops: list[tuple[str, str, str]] = field(default_factory=list)
    """``(name, value text, origin)``, ready for :meth:`Properties.build`."""
    subscriptions: list[tuple[str, str]] = field(default_factory=list)
    """``(class pattern, origin)``."""
    dictionaries: list[tuple[str, str]] = field(default_factory=list)
    """``(dictionary name, origin)``."""


def _words(line: str, origin: str) -> list[str]:
    """Split a line into words; ``"..."`` quotes one word, ``#`` after a space ends it."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
        elif c == "#":
            break
        elif c == '"':
            chars: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ConfigError(f"{origin}: a quoted value has no closing '\"'")
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    chars.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            if i < n and not line[i].isspace():
                raise ConfigError(
                    f"{origin}: {line[i:].split()[0]!r} follows a closing '\"' without a space"
                )
            words.append("".join(chars))
        else:
            start = i
            while i < n and not line[i].isspace():
                i += 1
            word = line[start:i]
            if '"' in word:
                raise ConfigError(
                    f"{origin}: {word!r} has a '\"' inside it; quote the whole value instead"
                )
            words.append(word)
    return words


def parse_conf(path: Path | str, *, directives: Collection[str] = DIRECTIVES) -> ConfFile:
    """Read the ``.conf`` file at ``path``; a file that does not exist reads as empty.

    ``directives`` limits which directives the file may use (the daemon's
    fmd.conf allows only ``setprop``).  Values are not interpreted here.
    Raises :class:`ConfigError` naming ``file:line`` and the offending word,
    or when the file or a directory above it may be written by others than
    root and fmd's user (:func:`fmd.secure.check_trusted`): a writable
    ``fmd.conf`` would let anyone set ``plugin.path`` and run code as fmd.
    """
    path = Path(path)
    conf = ConfFile(path)
    check_trusted(path, "read")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return conf
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None

    allowed = ", ".join(d for d in sorted(DIRECTIVES) if d in directives)
    for lineno, line in enumerate(text.splitlines(), start=1):
        origin = f"{path}:{lineno}"
        words = _words(line, origin)
        if not words:
            continue
        verb, args = words[0], words[1:]
        if verb not in DIRECTIVES or verb not in directives:
            raise ConfigError(f"{origin}: unknown directive {verb!r}; expected {allowed}")
        if verb == "setprop":
            if len(args) != 2:
                raise ConfigError(
                    f"{origin}: setprop takes a name and one value, found {len(args)} "
                    "word(s); quote a value that contains spaces"
                )
            conf.setprops.append((args[0], args[1], origin))
            continue
        if len(args) != 1:
            raise ConfigError(f"{origin}: {verb} takes one argument, found {len(args)}")
        if verb == "subscribe":
            conf.subscriptions.append((args[0], origin))
        else:
            if not _DICT_NAME_RE.fullmatch(args[0]):
                raise ConfigError(
                    f"{origin}: {args[0]!r} is not a dictionary name (letters, digits, "
                    "'_', '.', '-')"
                )
            conf.dictionaries.append((args[0], origin))
    return conf


def parse_opt(text: str) -> tuple[str, str]:
    """Split the argument of ``-o name=value`` into ``(name, value)``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"-o {text!r}: expected name=value, e.g. -o store.batch=1024")
    return name, value
