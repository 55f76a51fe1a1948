"""``fmdump``: print the fault log, or with ``-e`` the error log, from the database.

It reads the store directly and read-only, so it works while fmd is stopped.
With no file operand it reads the rotated archives ``<log>.N`` of the log
directory (highest N first) and then the live table; with file operands only
those archives (each archive's ``log_header`` says which log it holds).

What runs where:

* In SQL (:mod:`fmd.store.queries`, the same query on the live store and on
  every archive): ``-c`` class globs, ``-t``/``-T`` time range, ``-u`` uuids
  (fault log) or the join through ``case_events`` (error log), hiding the
  ``message=false`` records unless ``-a``, and a ``-n`` prefilter: the member
  exists and, for a numeric value, equals it.
* In Python, on the rows the query returned: the ``-n`` regular-expression
  match of string members (POSIX ERE cannot run portably in SQL; Python's
  ``re.search`` is used, which accepts ERE syntax), and dropping ids already
  printed from an earlier archive (a rotation whose live delete rolled back
  leaves a row in both).

Damaged files: each source is read with one query; when SQLite reports the
file damaged part-way (or cannot open it), the rest comes from a tolerant copy
of what is still readable (:class:`fmd.store.tolerant.ScratchCopy`, the same
reader the daemon's salvage uses), on which the same query runs, and every
unreadable range or record is named on stderr.  A live database that cannot
be opened at all does not keep the archives from being printed.

Exit codes: 0 ok, 1 fatal, 2 usage, 3 some records were bad or unreadable (a
warning names each one and the dump goes on).
"""

from __future__ import annotations

import heapq
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from fmd.cli.common import (
    handle_errors,
    json_option,
    load_properties,
    paths_for,
    root_option,
    run_click,
)
from fmd.cli.fmt import fmdump_date, fmdump_date_ns
from fmd.cli.logsource import Source, archives, open_archive
from fmd.cli.recordfmt import coalesced_note, errlog_json, print_nvlist, print_suspects
from fmd.cli.timespec import TimeSpecError, parse_time
from fmd.dictionary import default_dict_dirs
from fmd.errors import StoreCorrupt, StoreError
from fmd.hw.telemetry import expand_stored
from fmd.protocol import utc_iso
from fmd.store import Store, queries, schema
from fmd.store.engine import resolve_url, sqlite_file
from fmd.store.tolerant import ScratchCopy, is_corruption, reason

EXIT_BAD_RECORDS = 3
_POLL_S = 1.0
LOG_TABLES = ("errlog", "fltlog")
T = TypeVar("T")

_EVENTS = {
    "list.suspect": "Diagnosed",
    "list.isolated": "Isolated",
    "list.repaired": "Repaired",
    "list.updated": "Updated",
    "list.resolved": "Resolved",
}
_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


# -- options ------------------------------------------------------------------


@dataclass(frozen=True)
class MemberMatch:
    """One ``-n name[=value]``: a number is compared numerically, anything else
    is a regular expression searched in string members."""

    path: tuple[str, ...]
    text: str | None
    number: int | None
    regex: re.Pattern[str] | None

    @classmethod
    def parse(cls, spec: str) -> MemberMatch:
        name, eq, value = spec.partition("=")
        path = tuple(name.split("."))
        if not name or any(not p for p in path):
            raise click.UsageError(f"-n {spec!r}: expected name[.name...][=value]")
        if not eq:
            return cls(path, None, None, None)
        number = _parse_number(value)
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise click.UsageError(f"-n {spec!r}: bad regular expression: {exc}") from None
        return cls(path, value, number, regex)

    def prefilter(self) -> queries.MemberFilter:
        return (self.path, self.number)

    def matches(self, payload: Any) -> bool:
        value = payload
        for p in self.path:
            if isinstance(value, dict) and p in value:
                value = value[p]
            elif isinstance(value, list) and p.isdigit() and int(p) < len(value):
                value = value[int(p)]
            else:
                return False
        if self.text is None:
            return True
        return any(self._one(v) for v in (value if isinstance(value, list) else [value]))

    def _one(self, value: Any) -> bool:
        if isinstance(value, bool):
            return self.text == ("true" if value else "false")
        if isinstance(value, int | float):
            return self.number is not None and value == self.number
        if isinstance(value, str) and self.regex is not None:
            return self.regex.search(value) is not None
        return False


def _parse_number(text: str) -> int | None:
    """A decimal, ``0x`` hexadecimal or ``0`` octal integer, or None."""
    if not _NUMBER.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("-")
    if digits[:2].lower() == "0x":
        return sign * int(digits, 16)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits, 8)
    return sign * int(digits)


@dataclass
class Options:
    """The parsed command line."""

    errlog: bool = False
    aggregate: bool = False
    verbose: bool = False
    very_verbose: bool = False
    message: bool = False
    all_records: bool = False
    follow: bool = False
    as_json: bool = False
    classes: tuple[str, ...] = ()
    uuids: tuple[str, ...] = ()
    members: tuple[MemberMatch, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None


# -- records ------------------------------------------------------------------


@dataclass(order=True)
class Record:
    time_ns: int
    log: str = field(compare=False)
    row: Any = field(compare=False)
    payload: dict[str, Any] = field(compare=False)


class Dumper:
    """Reads the selected records from the sources and prints them."""

    def __init__(
        self,
        opts: Options,
        sources: list[Source],
        live: Source | None,
        *,
        errlog_archives: list[Source],
        dict_dirs: list[Path],
    ) -> None:
        self.opts = opts
        self.sources = sources
        self.live = live
        # Where -V finds a case's ereports (the live log and the error-log archives).
        self.errlog_archives = errlog_archives
        self.dict_dirs = dict_dirs
        self.bad = 0
        self.last_id: dict[str, int] = {}
        self._case_ids: list[int] | None = None
        self._dicts: Any = None
        # Tolerant copies of damaged sources, by (source, tables), and the
        # problems already reported (a followed log is read again and again).
        self._scratch: dict[tuple[str, tuple[str, ...]], ScratchCopy] = {}
        self._reported: set[str] = set()

    # problems
    def warn(self, where: str, message: str) -> None:
        """Report one bad record or unreadable range (once) and count it (exit 3)."""
        line = f"fmdump: {where}: {message}"
        if line not in self._reported:
            self._reported.add(line)
            self.bad += 1
            click.echo(line, err=True)

    def close(self) -> None:
        """Drop the tolerant copies (``-f`` polls read damaged sources afresh)."""
        for scratch in self._scratch.values():
            scratch.close()
        self._scratch.clear()

    # reading
    def _tolerant(self, src: Source, tables: tuple[str, ...], exc: BaseException) -> Engine:
        """A copy of the readable rows of ``tables`` of ``src``, after ``exc`` said it is
        damaged; every unreadable range or row is reported."""
        key = (src.name, tables)
        scratch = self._scratch.get(key)
        if scratch is None:
            try:
                scratch = ScratchCopy(src.engine, [schema.metadata.tables[t] for t in tables])
            except (OSError, sqlite3.Error, SQLAlchemyError) as err:
                raise StoreError(
                    f"{src.name} is damaged ({reason(exc)}) and could not be read around "
                    f"the damage: {reason(err)}"
                ) from err
            self._scratch[key] = scratch
            found = False
            for name, read in scratch.reads.items():
                what = "records" if name in LOG_TABLES else f"{name} rows"
                for message in read.messages(what):
                    self.warn(src.name, message)
                    found = True
            if not found:
                self.warn(src.name, f"damaged ({reason(exc)}); every record could still be read")
        return scratch.engine

    def _tables(self, src: Source, log: str) -> tuple[str, ...]:
        """The tables the query of one log reads on ``src``."""
        if log == "errlog" and self.opts.uuids and src.live:
            return ("errlog", "case_events")
        return (log,)

    def _rows(self, src: Source, tables: tuple[str, ...], query: Any) -> Iterator[Any]:
        """The rows of ``query`` (ordered by time and id) on ``src``.

        One query normally; if SQLite finds the file damaged part-way, the rest
        comes from a tolerant copy of what is readable, after the last row
        already returned.
        """
        last: tuple[int, int] | None = None
        try:
            with src.engine.connect() as conn:
                for row in conn.execute(query):
                    last = (int(row.time_ns), int(row.id))
                    yield row
            return
        except SQLAlchemyError as exc:
            if not (src.sqlite and is_corruption(exc)):
                raise StoreError(f"{src.name}: {reason(exc)}") from exc
            engine = self._tolerant(src, tables, exc)
        with engine.connect() as conn:
            for row in conn.execute(query):
                if last is None or (int(row.time_ns), int(row.id)) > last:
                    yield row

    def _all(self, src: Source, tables: tuple[str, ...], read: Callable[[Connection], T]) -> T:
        """``read`` on ``src``, or on a tolerant copy when SQLite finds the file damaged."""
        try:
            with src.engine.connect() as conn:
                return read(conn)
        except SQLAlchemyError as exc:
            if not (src.sqlite and is_corruption(exc)):
                raise StoreError(f"{src.name}: {reason(exc)}") from exc
            engine = self._tolerant(src, tables, exc)
        with engine.connect() as conn:
            return read(conn)

    def _case_event_ids(self) -> list[int]:
        if self._case_ids is None:
            self._case_ids = []
            if self.live is not None:
                uuids = self.opts.uuids
                self._case_ids = self._all(
                    self.live, ("case_events",), lambda c: queries.case_event_ids(c, uuids)
                )
        return self._case_ids

    def _query(self, src: Source, log: str, after_id: int | None) -> Any:
        o = self.opts
        members = [m.prefilter() for m in o.members]
        common: dict[str, Any] = {
            "classes": o.classes,
            "since_ns": o.since_ns,
            "until_ns": o.until_ns,
            "members": members,
            "after_id": after_id,
            "sqlite": src.sqlite,
        }
        if log == "fltlog":
            return queries.fltlog_select(uuids=o.uuids, hidden=o.all_records, **common)
        if o.uuids and src.live:
            return queries.errlog_select(uuids=o.uuids, **common)
        if o.uuids:
            return queries.errlog_select(ids=self._case_event_ids(), **common)
        return queries.errlog_select(**common)

    def records(self, log: str, *, after_id: int | None = None) -> Iterator[Record]:
        """The matching records of one log, archives first, each id once."""
        sources = [s for s in self.sources if log in s.logs]
        seen: set[int] | None = set() if len(sources) > 1 else None
        for src in sources:
            query = self._query(src, log, after_id)
            for row in self._rows(src, self._tables(src, log), query):
                if seen is not None:
                    if row.id in seen:
                        continue
                    seen.add(row.id)
                self.last_id[log] = max(self.last_id.get(log, 0), int(row.id))
                payload = self._decode(src, log, row)
                if payload is None:
                    continue
                if self.opts.members and not any(m.matches(payload) for m in self.opts.members):
                    continue
                yield Record(int(row.time_ns), log, row, payload)

    def _decode(self, src: Source, log: str, row: Any) -> dict[str, Any] | None:
        try:
            payload = orjson.loads(row.payload)
        except orjson.JSONDecodeError as exc:
            problem = f"payload is not valid JSON ({exc})"
        else:
            if isinstance(payload, dict):
                return expand_stored(payload) if log == "errlog" else payload
            problem = "payload is not a JSON object"
        where = "" if src.live else f" in {src.name}"
        self.warn("warning", f"skipping {log} record {row.id}{where}: {problem}")
        return None

    def ereports_of(self, uuid: str) -> list[Record]:
        """The error-log records of one case (for fault-log ``-V``)."""
        if self.live is None:
            return []
        ids = self._all(self.live, ("case_events",), lambda c: queries.case_event_ids(c, [uuid]))
        out: list[Record] = []
        for src in [self.live, *self.errlog_archives]:
            query = queries.errlog_select(ids=ids, sqlite=src.sqlite)
            for row in self._rows(src, ("errlog",), query):
                if all(r.row.id != row.id for r in out):
                    payload = self._decode(src, "errlog", row)
                    if payload is not None:
                        out.append(Record(int(row.time_ns), "errlog", row, payload))
        return sorted(out)

    # printing
    def header(self) -> None:
        o = self.opts
        if o.as_json or o.aggregate or o.message:
            return
        if o.errlog:
            if o.verbose and not o.very_verbose:
                click.echo(f"{'TIME':<20} {'CLASS':<37} ENA")
            else:
                click.echo(f"{'TIME':<20} CLASS")
        elif o.very_verbose:
            click.echo(f"{'TIME':<30} {'UUID':<36} SUNW-MSG-ID")
        else:
            click.echo(f"{'TIME':<20} {'UUID':<36} SUNW-MSG-ID EVENT")

    def show(self, rec: Record) -> None:
        if rec.log == "errlog":
            self._show_ereport(rec)
        else:
            self._show_list(rec)

    def _show_ereport(self, rec: Record, indent: str = "") -> None:
        o = self.opts
        cls = rec.row._mapping["class"]
        if o.as_json:
            click.echo(orjson.dumps(errlog_json(rec.row, rec.payload)).decode())
        elif o.very_verbose and not indent:
            click.echo(f"{fmdump_date_ns(rec.time_ns)} {cls}")
            click.echo("nvlist version: 0")
            d = errlog_json(rec.row, rec.payload)
            d.pop("time")
            sec, nsec = divmod(rec.time_ns, 10**9)
            d["__ttl"] = 1
            d["__tod"] = [sec, nsec]
            print_nvlist(d)
            click.echo("")
        elif o.verbose or indent:
            ena = schema.ena_from_db(rec.row.ena)
            note = coalesced_note(rec.row)
            click.echo(f"{indent}{fmdump_date(rec.time_ns):<20} {cls:<37} 0x{ena:016x}{note}")
        else:
            click.echo(f"{fmdump_date(rec.time_ns):<20} {cls}{coalesced_note(rec.row)}")

    def _show_list(self, rec: Record) -> None:
        o = self.opts
        m = rec.row._mapping
        event = _EVENTS.get(m["class"], m["class"])
        if o.as_json:
            out = dict(rec.payload)
            out["time"] = utc_iso(rec.time_ns)
            out["event"] = event
            click.echo(orjson.dumps(out).decode())
            return
        if o.message:
            self._show_message(rec)
            return
        if o.very_verbose:
            click.echo(f"{fmdump_date_ns(rec.time_ns):<30} {m['uuid']:<36} {m['code']}")
            ereports = self.ereports_of(m["uuid"])
            if ereports:
                click.echo(f"  {'TIME':<20} {'CLASS':<37} ENA")
                for e in ereports:
                    self._show_ereport(e, indent="  ")
            click.echo("")
            click.echo("nvlist version: 0")
            print_nvlist(rec.payload)
            click.echo("")
            return
        click.echo(f"{fmdump_date(rec.time_ns):<20} {m['uuid']:<36} {m['code']:<11} {event}")
        if o.verbose:
            print_suspects(rec.payload)

    def _show_message(self, rec: Record) -> None:
        from fmd.msgfmt import render_message

        if self._dicts is None:
            from fmd.dictionary import DictionarySet

            self._dicts = DictionarySet.load(self.dict_dirs)
        text = render_message(rec.payload, self._dicts)
        if text is None:
            click.echo(
                f"fmdump: warning: no message for code {rec.row.code!r} (event {rec.row.uuid})",
                err=True,
            )
            return
        click.echo(text)
        click.echo("")


# -- the command ----------------------------------------------------------------


def _times(specs: Sequence[str], flag: str, now_ns: int) -> list[int]:
    out = []
    for s in specs:
        try:
            out.append(parse_time(s, now_ns))
        except TimeSpecError as exc:
            raise click.UsageError(f"{flag}: {exc}") from None
    return out


class _Stop(Exception):
    """SIGTERM while following."""


def _on_term(_sig: int, _frame: Any) -> None:
    raise _Stop


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-e", "errlog", is_flag=True, help="Print the error log instead of the fault log.")
@click.option(
    "-A",
    "aggregate",
    is_flag=True,
    help="Merge the fault and error logs by time (not with -e/-m/-u).",
)
@click.option("-a", "all_records", is_flag=True, help="Include message=false (hidden) records.")
@click.option(
    "-c",
    "classes",
    multiple=True,
    metavar="GLOB",
    help="Only events whose class matches GLOB (repeatable: ORed).",
)
@click.option(
    "-u",
    "uuids",
    multiple=True,
    metavar="UUID",
    help="Only this case (implies -a; with -e the case's ereports).",
)
@click.option(
    "-n",
    "names",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Only events whose member NAME (a.b.c) exists or matches VALUE: a number "
    "(dec, 0x hex, 0 octal) or a regular expression.",
)
@click.option("-t", "since", multiple=True, metavar="TIME", help="Only events at or after TIME.")
@click.option("-T", "until", multiple=True, metavar="TIME", help="Only events at or before TIME.")
@click.option("-m", "message", is_flag=True, help="Print the formatted message (fault log).")
@click.option("-v", "verbose", is_flag=True, help="More detail (suspects; the ENA for ereports).")
@click.option("-V", "very_verbose", is_flag=True, help="Every member of every event.")
@click.option("-f", "follow", is_flag=True, help="Keep printing new records (poll every second).")
@json_option
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@handle_errors("fmdump")
def cli(
    root: str | None,
    errlog: bool,
    aggregate: bool,
    all_records: bool,
    classes: tuple[str, ...],
    uuids: tuple[str, ...],
    names: tuple[str, ...],
    since: tuple[str, ...],
    until: tuple[str, ...],
    message: bool,
    verbose: bool,
    very_verbose: bool,
    follow: bool,
    as_json: bool,
    files: tuple[Path, ...],
) -> None:
    """Display the fault management logs (or the rotated log FILEs).

    \b
    TIME is local: mm/dd/yy[yy] [hh:mm[:ss]], yyyy-mm-dd[Thh:mm[:ss]],
    ddMonyy[yy] [hh:mm[:ss]], Mon dd hh:mm:ss or hh:mm[:ss] (each may end in
    .fraction), or <n><unit> ago with unit ns, us, ms, s, m(in), h(our), d(ay).
    Exit status: 0 ok, 1 fatal error, 2 usage error, 3 some records were bad.
    """
    if aggregate and (errlog or message or uuids):
        raise click.UsageError("-A cannot be combined with -e, -m or -u")
    if message and errlog:
        raise click.UsageError("-m formats fault-log messages; it cannot be used with -e")
    if files and root is not None:
        raise click.UsageError("-R cannot be used with a file operand")
    if files and follow:
        raise click.UsageError("-f follows the live logs; it cannot be used with a file operand")
    now = time.time_ns()
    after, before = _times(since, "-t", now), _times(until, "-T", now)
    opts = Options(
        errlog=errlog,
        aggregate=aggregate,
        verbose=verbose,
        very_verbose=very_verbose,
        message=message,
        all_records=all_records or bool(uuids),
        follow=follow,
        as_json=as_json,
        classes=classes,
        uuids=uuids,
        members=tuple(MemberMatch.parse(n) for n in names),
        since_ns=min(after) if after else None,
        until_ns=max(before) if before else None,
    )
    paths = paths_for(root)
    logs: tuple[str, ...] = (
        ("errlog", "fltlog") if aggregate else ("errlog",) if errlog else ("fltlog",)
    )
    opened: list[Source] = []  # archives, disposed of at the end
    problems: list[tuple[str, str]] = []  # damaged files found while opening them
    store: Store | None = None
    dumper: Dumper | None = None

    def open_all(paths_: Sequence[Path]) -> list[Source]:
        out = []
        for path in paths_:
            try:
                out.append(open_archive(path))
            except StoreCorrupt as exc:
                problems.append((str(path), str(exc)))
        opened.extend(out)
        return out

    url = ""
    try:
        try:
            props = load_properties(paths)
            url = props.get_str("store.url")
            store = Store(url, db_file=paths.db_file, readonly=True, pid_file=paths.pid_file)
        except StoreCorrupt as exc:
            # The archives may still be readable: report the live log and go on.
            db = sqlite_file(resolve_url(url, paths.db_file)) or paths.db_file
            problems.append((str(db), f"cannot be read: {reason(exc.__cause__ or exc)}"))
        except StoreError:
            if not files:
                raise
        live = None
        if store is not None:
            name = str(store.path) if store.path is not None else store.safe_url
            live = Source(name, store.engine, store.sqlite, True, ("errlog", "fltlog"))
        errlog_archives = open_all(archives(paths.log_dir, "errlog"))
        if files:
            sources = open_all(files)
            labels = sorted({s.logs[0] for s in sources})
            if not aggregate and len(labels) == 1:
                # A file's header says which log it holds, as in illumos.
                logs = (labels[0],)
                opts.errlog = labels[0] == "errlog"
            sources = [s for s in sources if s.logs[0] in logs]
        else:
            sources = []
            if "errlog" in logs:
                sources.extend(errlog_archives)
            if "fltlog" in logs:
                sources.extend(open_all(archives(paths.log_dir, "fltlog")))
            if live is not None:
                sources.append(live)
        dumper = Dumper(
            opts,
            sources,
            live,
            errlog_archives=errlog_archives,
            dict_dirs=[paths.dict_dir, *default_dict_dirs()],
        )
        for place, problem in problems:
            dumper.warn(place, problem)
        for src in sources:
            if src.damaged is not None:
                dumper.warn(src.name, src.damaged)
        _dump(dumper, logs)
    finally:
        if dumper is not None:
            dumper.close()
        for s in opened:
            s.engine.dispose()
        if store is not None:
            store.close()
    if dumper.bad:
        sys.exit(EXIT_BAD_RECORDS)


def _dump(dumper: Dumper, logs: tuple[str, ...]) -> None:
    dumper.header()
    if len(logs) == 1:
        for rec in dumper.records(logs[0]):
            dumper.show(rec)
    else:
        for rec in heapq.merge(*(dumper.records(log) for log in logs)):
            dumper.show(rec)
    if not dumper.opts.follow:
        return
    live = [s for s in dumper.sources if s.live]
    if not live:
        return  # nothing to follow (the live log could not be opened)
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        dumper.sources = live
        while True:
            time.sleep(_POLL_S)
            dumper.close()  # damaged sources are copied afresh
            fresh = [
                rec
                for log in logs
                for rec in dumper.records(log, after_id=dumper.last_id.get(log, 0))
            ]
            for rec in sorted(fresh):
                dumper.show(rec)
    except (KeyboardInterrupt, _Stop):
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    run_click(cli, "fmdump")


if __name__ == "__main__":
    main()
