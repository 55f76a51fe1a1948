"""How fmdump prints one record: the JSON form of an ereport, the nvlist dump of
``-V`` (the layout of illumos ``nvlist_print``) and the suspect blocks of ``-v``."""

from __future__ import annotations

from typing import Any

import click
import orjson

from fmd.asru import repair_reason
from fmd.errors import FmdError
from fmd.protocol import fmri_from_obj, utc_iso
from fmd.store import schema


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
    count = int(m["count"] or 1)
    if count > 1 or m["last_ns"] is not None:
        # A record coalesced from identical ereports (fmd.coalesce).
        out["__count"] = count
        out["__last"] = utc_iso(int(m["last_ns"] or m["time_ns"]))
    return out


def coalesced_note(row: Any) -> str:
    """`` (xN until TIME)`` for a record that stands for N identical ereports."""
    m = row._mapping
    count = int(m["count"] or 1)
    if count <= 1:
        return ""
    return f" (x{count} until {utc_iso(int(m['last_ns'] or m['time_ns']))})"


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
