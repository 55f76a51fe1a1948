"""``fmdump``: print the fault log, or with ``-e`` the error log.

It reads the database directly and read-only, so it works while fmd is
stopped.  Filters (``-c`` class globs, ``-u`` uuids) become SQL.
"""

from __future__ import annotations

from typing import Any

import click
import orjson

from fmd.cli.common import (
    handle_errors,
    json_option,
    load_properties,
    paths_for,
    root_option,
    run_click,
)
from fmd.cli.fmt import fmdump_date, fmdump_date_ns
from fmd.protocol import utc_iso
from fmd.store import Store, queries, schema


def _errlog_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    out: dict[str, Any] = {
        "time": utc_iso(m["time_ns"]),
        "class": m["class"],
        "ena": f"0x{schema.ena_from_db(m['ena']):016x}",
    }
    if m["detector"]:
        out["detector"] = m["detector"]
    out.update(orjson.loads(m["payload"]))
    if m["injected"]:
        out["__injected"] = True
    return out


def _print_nvlist(d: dict[str, Any], indent: str = "        ") -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            click.echo(f"{indent}{k} = (embedded nvlist)")
            _print_nvlist(v, indent + "    ")
            click.echo(f"{indent}(end {k})")
        elif isinstance(v, list):
            click.echo(f"{indent}{k} = {' '.join(str(x) for x in v)}")
        else:
            click.echo(f"{indent}{k} = {v}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-e", "errlog", is_flag=True, help="Print the error log instead of the fault log.")
@click.option(
    "-c",
    "classes",
    multiple=True,
    metavar="GLOB",
    help="Only events whose class matches GLOB (repeatable: ORed).",
)
@click.option("-u", "uuids", multiple=True, metavar="UUID", help="Only this case (fault log).")
@click.option("-v", "verbose", is_flag=True, help="More detail (the ENA for ereports).")
@click.option("-V", "very_verbose", is_flag=True, help="Every member of every event.")
@json_option
@handle_errors("fmdump")
def cli(
    root: str | None,
    errlog: bool,
    classes: tuple[str, ...],
    uuids: tuple[str, ...],
    verbose: bool,
    very_verbose: bool,
    as_json: bool,
) -> None:
    """Display the fault management logs."""
    paths = paths_for(root)
    props = load_properties(paths)
    store = Store(props.get_str("store.url"), db_file=paths.db_file, readonly=True)
    try:
        with store.reader() as conn:
            if errlog:
                rows = conn.execute(queries.errlog_select(classes=classes, sqlite=store.sqlite))
                if not as_json:
                    click.echo(
                        f"{'TIME':<20} {'CLASS':<37} ENA"
                        if verbose and not very_verbose
                        else f"{'TIME':<20} CLASS"
                    )
                for row in rows:
                    if as_json:
                        click.echo(orjson.dumps(_errlog_json(row)).decode())
                    elif very_verbose:
                        d = _errlog_json(row)
                        click.echo(f"{fmdump_date_ns(row.time_ns)} {row._mapping['class']}")
                        click.echo("nvlist version: 0")
                        d.pop("time")
                        _print_nvlist(d)
                        click.echo("")
                    elif verbose:
                        ena = schema.ena_from_db(row.ena)
                        click.echo(
                            f"{fmdump_date(row.time_ns):<20} "
                            f"{row._mapping['class']:<37} 0x{ena:016x}"
                        )
                    else:
                        click.echo(f"{fmdump_date(row.time_ns):<20} {row._mapping['class']}")
            else:
                rows = conn.execute(
                    queries.fltlog_select(classes=classes, uuids=uuids, sqlite=store.sqlite)
                )
                if not as_json:
                    click.echo(f"{'TIME':<20} {'UUID':<36} SUNW-MSG-ID EVENT")
                for row in rows:
                    payload = orjson.loads(row.payload)
                    if as_json:
                        payload["time"] = utc_iso(row.time_ns)
                        payload["event"] = _EVENTS.get(row._mapping["class"], "")
                        click.echo(orjson.dumps(payload).decode())
                        continue
                    event = _EVENTS.get(row._mapping["class"], row._mapping["class"])
                    click.echo(
                        f"{fmdump_date(row.time_ns):<20} {row.uuid:<36} {row.code:<11} {event}"
                    )
    finally:
        store.close()


_EVENTS = {
    "list.suspect": "Diagnosed",
    "list.isolated": "Isolated",
    "list.repaired": "Repaired",
    "list.updated": "Updated",
    "list.resolved": "Resolved",
}


def main() -> None:
    run_click(cli, "fmdump")


if __name__ == "__main__":
    main()
