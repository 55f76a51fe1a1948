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

Exit codes: 0 ok, 1 fatal, 2 usage, 3 some records were bad (a warning names
each one and the dump goes on).
"""

from __future__ import annotations

import heapq
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from fmd.asru import repair_reason
from fmd.cli.common import (
    handle_errors,
    json_option,
    load_properties,
    paths_for,
    root_option,
    run_click,
)
from fmd.cli.fmt import fmdump_date, fmdump_date_ns
from fmd.cli.timespec import TimeSpecError, parse_time
from fmd.dictionary import default_dict_dirs
from fmd.errors import FmdError, StoreError
from fmd.protocol import utc_iso
from fmd.store import Store, queries, schema
from fmd.store.engine import create_store_engine
from fmd.store.rotate import LABELS, archive_metadata

EXIT_BAD_RECORDS = 3
_POLL_S = 1.0

_EVENTS = {
    "list.suspect": "Diagnosed",
    "list.isolated": "Isolated",
    "list.repaired": "Repaired",
    "list.updated": "Updated",
    "list.resolved": "Resolved",
}
_LOG_OF_LABEL = {label: log for log, label in LABELS.items()}
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


# -- sources ------------------------------------------------------------------


@dataclass
class Source:
    """The live store or one archive file."""

    name: str
    engine: Engine
    sqlite: bool
    live: bool
    logs: tuple[str, ...]


def open_archive(path: Path) -> Source:
    """An archive written by :func:`fmd.store.rotate.rotate_log`; StoreError if it is not one."""
    if not path.is_file():
        raise StoreError(f"{path}: no such log file")
    engine = create_store_engine(f"sqlite:///{path}", readonly=True)
    try:
        if "log_header" not in inspect(engine).get_table_names():
            raise StoreError(f"{path} is not an fmd log archive (no log_header table)")
        _, _, header = archive_metadata("errlog")
        with engine.connect() as conn:
            label = conn.execute(select(header.c.label)).scalar()
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"{path} is not an fmd log archive: {exc}") from exc
    except BaseException:
        engine.dispose()
        raise
    log = _LOG_OF_LABEL.get(str(label))
    if log is None:
        engine.dispose()
        raise StoreError(f"{path}: unknown log label {label!r}")
    return Source(str(path), engine, True, False, (log,))


def archives(log_dir: Path, log_name: str) -> list[Path]:
    """The rotated archives of a log, highest number (oldest) first."""
    found = []
    for p in log_dir.glob(f"{log_name}.*"):
        suffix = p.name[len(log_name) + 1 :]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


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

    # reading
    def _case_event_ids(self) -> list[int]:
        if self._case_ids is None:
            self._case_ids = []
            if self.live is not None:
                with self.live.engine.connect() as conn:
                    self._case_ids = queries.case_event_ids(conn, self.opts.uuids)
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
            with src.engine.connect() as conn:
                for row in conn.execute(self._query(src, log, after_id)):
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
                return payload
            problem = "payload is not a JSON object"
        self.bad += 1
        where = "" if src.live else f" in {src.name}"
        click.echo(f"fmdump: warning: skipping {log} record {row.id}{where}: {problem}", err=True)
        return None

    def ereports_of(self, uuid: str) -> list[Record]:
        """The error-log records of one case (for fault-log ``-V``)."""
        if self.live is None:
            return []
        with self.live.engine.connect() as conn:
            ids = queries.case_event_ids(conn, [uuid])
        out: list[Record] = []
        for src in [self.live, *self.errlog_archives]:
            with src.engine.connect() as conn:
                for row in conn.execute(queries.errlog_select(ids=ids, sqlite=src.sqlite)):
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
            click.echo(f"{indent}{fmdump_date(rec.time_ns):<20} {cls:<37} 0x{ena:016x}")
        else:
            click.echo(f"{fmdump_date(rec.time_ns):<20} {cls}")

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


def errlog_json(row: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """An error-log record as one JSON object (time, class, ena, detector, members)."""
    m = row._mapping
    out: dict[str, Any] = {
        "time": utc_iso(m["time_ns"]),
        "class": m["class"],
        "ena": f"0x{schema.ena_from_db(m['ena']):016x}",
    }
    if m["detector"]:
        out["detector"] = m["detector"]
    out.update(payload)
    if m["injected"]:
        out["__injected"] = True
    return out


def print_nvlist(d: dict[str, Any], indent: str = "        ") -> None:
    """``name = value`` lines in the layout of illumos nvlist_print."""
    for k, v in d.items():
        if isinstance(v, dict):
            click.echo(f"{indent}{k} = (embedded nvlist)")
            click.echo(f"{indent}nvlist version: 0")
            print_nvlist(v, indent + "    ")
            click.echo(f"{indent}(end {k})")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            click.echo(f"{indent}{k} = (array of embedded nvlists)")
            for i, x in enumerate(v):
                click.echo(f"{indent}(start {k}[{i}])")
                click.echo(f"{indent}nvlist version: 0")
                print_nvlist(x, indent + "    ")
                click.echo(f"{indent}(end {k}[{i}])")
        elif isinstance(v, list):
            click.echo(f"{indent}{k} = {' '.join(_scalar(x) for x in v)}")
        else:
            click.echo(f"{indent}{k} = {_scalar(v)}")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return str(v)


def _fmri_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    from fmd.protocol.fmri import fmri_from_obj

    try:
        return fmri_from_obj(value).to_string()
    except (FmdError, TypeError, ValueError):
        return orjson.dumps(value).decode()


def print_suspects(payload: dict[str, Any]) -> None:
    """The ``-v`` block of a list event: one paragraph per suspect."""
    faults = payload.get("fault-list")
    statuses = payload.get("fault-status")
    if not isinstance(faults, list):
        return
    for i, s in enumerate(faults):
        if not isinstance(s, dict):
            continue
        status = statuses[i] if isinstance(statuses, list) and i < len(statuses) else 0
        word = repair_reason(status if isinstance(status, int) else 0) or ""
        line = f"  {s.get('certainty', 0):>3}%  {s.get('class', '-')}"
        click.echo(f"{line}\t{word}" if word else line)
        click.echo("")
        click.echo(f"{'Problem in':>18}: {_fmri_text(s.get('resource'))}")
        click.echo(f"{'Affects':>18}: {_fmri_text(s.get('asru'))}")
        click.echo(f"{'FRU':>18}: {_fmri_text(s.get('fru'))}")
        click.echo(f"{'Location':>18}: {s.get('location') or '-'}")
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
    store: Store | None = None
    try:
        try:
            props = load_properties(paths)
            store = Store(props.get_str("store.url"), db_file=paths.db_file, readonly=True)
        except StoreError:
            if not files:
                raise
        live = (
            None
            if store is None
            else Source("live", store.engine, store.sqlite, True, ("errlog", "fltlog"))
        )
        errlog_archives = [open_archive(p) for p in archives(paths.log_dir, "errlog")]
        opened.extend(errlog_archives)
        if files:
            sources = [open_archive(f) for f in files]
            opened.extend(sources)
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
                fault_archives = [open_archive(p) for p in archives(paths.log_dir, "fltlog")]
                opened.extend(fault_archives)
                sources.extend(fault_archives)
            assert live is not None
            sources.append(live)
        dumper = Dumper(
            opts,
            sources,
            live,
            errlog_archives=errlog_archives,
            dict_dirs=[paths.dict_dir, *default_dict_dirs()],
        )
        _dump(dumper, logs)
    finally:
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
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        live = [s for s in dumper.sources if s.live]
        dumper.sources = live
        while True:
            time.sleep(_POLL_S)
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
