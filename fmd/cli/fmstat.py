"""``fmstat``: report the statistics of the running fault manager.

``fmstat [-astTz] [-m module] [--json] [interval [count]]``, with the views of
illumos fmstat (illumos-fma.md section 7):

============  ================================================================
(default)     one row per module: events received and accepted, average queue
              length, service time, %wait, %busy, cases open and solved, sizes
``-m mod``    the module's own statistics (NAME VALUE DESCRIPTION); ``-a`` adds
              fmd's bookkeeping of the module (``fmd.*``)
``-a``        without ``-m``: fmd's global statistics (writer, dispatch)
``-s -m mod`` the module's SERD engines
``-t``        transports and their event counters; ``-T`` their identity
============  ================================================================

``-z`` leaves out statistics whose value is zero.  With ``interval`` the
report repeats every ``interval`` seconds, ``count`` times (default: until
interrupted); the event counters of the default and ``-t`` views are then the
change over the interval, the first report covering the time since fmd
started.  ``--json`` prints each report as one JSON list of objects keyed by
the (lower-case) column names, numbers unscaled.

The ``render_*`` and ``*_rows`` functions are pure (statistics in, rows or
text out) so the layouts are tested against golden files without a daemon.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click
import orjson

from fmd.adm.client import AdmClient
from fmd.cli.common import (
    EXIT_USAGE,
    fail,
    handle_errors,
    json_option,
    paths_for,
    root_option,
    run_click,
)
from fmd.cli.fmt import store_warning
from fmd.config import TIME_SUFFIXES

Stats = Mapping[str, Any]
Row = dict[str, Any]

MODULE_LAYOUT: Final = "%-18s %7s %7s %4s %6s %3s %3s %5s %5s %6s %6s"
MODULE_COLUMNS: Final = (
    "module", "ev_recv", "ev_acpt", "wait", "svc_t", "%w", "%b", "open", "solve", "memsz", "bufsz",
)  # fmt: skip
STAT_LAYOUT: Final = "%20s %-16s %s"
SERD_LAYOUT: Final = "%-36s %3s %5s %3s %24s %s"
XPRT_LAYOUT: Final = "%3s %-7s %7s %7s %7s %7s %7s %4s %6s %3s %3s %s"
# illumos's columns plus ev_dup: copies of hardware events already stored (fmd.hw.dedup).
XPRT_COLUMNS: Final = (
    "id", "state", "ev_send", "ev_recv", "ev_drop", "ev_lost", "ev_dup",
    "wait", "svc_t", "%w", "%b", "module",
)  # fmt: skip
XPRT_ID_LAYOUT: Final = "%3s %-5s %-24s %s"

# The units a SERD T is printed in, largest first: each parses back with the
# same suffix in a .conf file.  Days are left out so that 3 days reads 72h, as
# the rules and illumos write it.
_T_UNITS: Final = ("year", "month", "week", "h", "min", "s", "ms", "us", "ns")

# fmd's bookkeeping of one module, shown by -a -m as fmd.<name>.
MODULE_INTERNAL: Final[tuple[tuple[str, str], ...]] = (
    ("ev_recv", "events received by the module"),
    ("ev_acpt", "events accepted by the module"),
    ("wait_ns", "total time events waited in the queue (ns)"),
    ("busy_ns", "total time the module was running (ns)"),
    ("svc_t_ns", "average wait and service time per event (ns)"),
    ("queue", "events in the queue now"),
    ("enqueued", "events ever queued to the module"),
    ("overflowed", "events kept as store references (queue full)"),
    ("open", "cases held by the module"),
    ("opened", "cases opened by the module"),
    ("solved", "cases solved by the module"),
    ("bufsz", "bytes in the module's persistent buffers"),
)

GLOBAL_DESCRIPTIONS: Final[dict[str, str]] = {
    "fmd.uptime_ns": "time since fmd started (ns)",
    "fmd.writer.txns": "store transactions committed",
    "fmd.writer.ops": "operations committed (ingest batches, checkpoints)",
    "fmd.writer.events": "events committed",
    "fmd.writer.retries": "transactions retried after a busy or locked store",
    "fmd.writer.failed_ops": "operations that could not be committed",
    "fmd.dispatch.dispatched": "events queued to modules",
    "fmd.dispatch.nosub": "events no module subscribed to",
    "fmd.dispatch.replayed": "events dispatched again at startup",
    "fmd.dispatch.partials": "events replayed to only some of their modules",
}


# -- value formats -------------------------------------------------------------


def fmt_time(ns: int) -> str:
    """A SERD T in the largest unit that divides it exactly (``72h``, ``10min``, ``1week``)."""
    if ns == 0:
        return "0"
    for unit in _T_UNITS:
        size = TIME_SUFFIXES[unit]
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"  # unreachable: every whole number of ns divides by 1


def fmt_size(n: int | None) -> str:
    """A byte count scaled to b, K, M or G (``-`` when unknown)."""
    if n is None:
        return "-"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}b"


def _pct(part: int, whole: int) -> int:
    return min(100, 100 * part // whole) if whole > 0 else 0


# -- the default view ------------------------------------------------------------


def _span(stats: Stats, prev: Stats | None) -> int:
    """Nanoseconds the report covers: since the previous report, or since fmd started."""
    now = int(stats["uptime_ns"])
    return max(1, now - int(prev["uptime_ns"]) if prev is not None else now)


def module_rows(stats: Stats, prev: Stats | None = None) -> list[Row]:
    """One row per module; counters are the change since ``prev`` (or since start)."""
    before = {m["name"]: m for m in prev["modules"]} if prev is not None else {}
    span = _span(stats, prev)
    rows = []
    for m in stats["modules"]:
        b = before.get(m["name"], {})

        def delta(key: str, m: Mapping[str, Any] = m, b: Mapping[str, Any] = b) -> int:
            return int(m[key]) - int(b.get(key, 0))

        recv, waited, busy = delta("ev_recv"), delta("wait_ns"), delta("busy_ns")
        rows.append(
            {
                "module": m["name"],
                "ev_recv": recv,
                "ev_acpt": delta("ev_acpt"),
                # Little's law: total waiting time over the span is the mean queue length.
                "wait": waited / span,
                "svc_t": (waited + busy) / recv / 1e6 if recv else 0.0,
                "%w": _pct(waited, span),
                "%b": _pct(busy, span),
                "open": int(m["open"]),
                "solve": int(m["solved"]),
                "memsz": m.get("memsz"),
                "bufsz": int(m["bufsz"]),
            }
        )
    return rows


def render_modules(rows: Sequence[Row]) -> str:
    """The default view's text: header and one line per module."""
    lines = [MODULE_LAYOUT % MODULE_COLUMNS]
    for r in rows:
        lines.append(
            MODULE_LAYOUT
            % (
                r["module"],
                r["ev_recv"],
                r["ev_acpt"],
                f"{r['wait']:.1f}",
                f"{r['svc_t']:.1f}",
                r["%w"],
                r["%b"],
                r["open"],
                r["solve"],
                fmt_size(r["memsz"]),
                fmt_size(r["bufsz"]),
            )
        )
    return "\n".join(lines)


# -- NAME VALUE DESCRIPTION views -----------------------------------------------------


def module_stat_rows(
    own: Sequence[Stats], stats: Stats | None, module: str, *, internal: bool, nonzero: bool
) -> list[Row]:
    """``-m``: the module's statistics, after fmd's ``fmd.*`` ones when ``internal``."""
    rows: list[Row] = []
    if internal and stats is not None:
        [m] = [m for m in stats["modules"] if m["name"] == module] or [{}]
        rows += [
            {"name": f"fmd.{key}", "value": m[key], "description": what}
            for key, what in MODULE_INTERNAL
            if key in m
        ]
    rows += [{"name": s["name"], "value": s["value"], "description": s["description"]} for s in own]
    return [r for r in rows if r["value"]] if nonzero else rows


def global_stat_rows(stats: Stats, *, nonzero: bool) -> list[Row]:
    """``-a`` without ``-m``: fmd's own statistics (uptime, writer, dispatch)."""
    values: list[tuple[str, Any]] = [("fmd.uptime_ns", stats["uptime_ns"])]
    for group in ("writer", "dispatch"):
        values += [(f"fmd.{group}.{k}", v) for k, v in stats.get(group, {}).items()]
    rows = [
        {"name": n, "value": v, "description": GLOBAL_DESCRIPTIONS.get(n, "")} for n, v in values
    ]
    return [r for r in rows if r["value"]] if nonzero else rows


def render_stats(rows: Sequence[Row]) -> str:
    lines = [STAT_LAYOUT % ("NAME", "VALUE", "DESCRIPTION")]
    lines += [STAT_LAYOUT % (r["name"], r["value"], r["description"]) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# -- SERD engines ---------------------------------------------------------------------


def serd_rows(engines: Sequence[Stats]) -> list[Row]:
    """``-s``: each engine's N, T (ns), count, span of its events (ns) and state."""
    return [
        {
            "name": e["name"],
            "n": e["n"],
            "t": e["t"],
            "cnt": e["count"],
            "delta": e["delta"],
            "stat": "fire" if e["fired"] else "pend",
        }
        for e in engines
    ]


def render_serd(rows: Sequence[Row]) -> str:
    lines = [SERD_LAYOUT % ("NAME", ">N", "T", "CNT", "DELTA", "STAT")]
    lines += [
        SERD_LAYOUT
        % (r["name"], f">{r['n']}", fmt_time(r["t"]), r["cnt"], f"{r['delta']}ns", r["stat"])
        for r in rows
    ]
    return "\n".join(lines)


# -- transports -----------------------------------------------------------------------


def transport_rows(stats: Stats, prev: Stats | None = None) -> list[Row]:
    """``-t``: each transport's event counters (changes since ``prev``, or since start).

    fmd's transports only receive, and store events without a queue of their
    own, so ev_send, wait, svc_t, %w and %b are zero.
    """
    before = {t["name"]: t for t in prev["transports"]} if prev is not None else {}
    rows = []
    for i, t in enumerate(stats["transports"], start=1):
        b = before.get(t["name"], {})
        rows.append(
            {
                "id": i,
                "state": t["state"],
                "ev_send": 0,
                "ev_recv": int(t["received"]) - int(b.get("received", 0)),
                "ev_drop": int(t["rejected"]) - int(b.get("rejected", 0)),
                "ev_lost": int(t["failed"]) - int(b.get("failed", 0)),
                "ev_dup": int(t.get("duplicates", 0)) - int(b.get("duplicates", 0)),
                "wait": 0.0,
                "svc_t": 0.0,
                "%w": 0,
                "%b": 0,
                "module": t["name"],
                "reason": t.get("reason", ""),
            }
        )
    return rows


def render_transports(rows: Sequence[Row]) -> str:
    """The table, then why each transport that is not running is not."""
    lines = [XPRT_LAYOUT % XPRT_COLUMNS]
    lines += [
        XPRT_LAYOUT % tuple(f"{r[c]:.1f}" if c in ("wait", "svc_t") else r[c] for c in XPRT_COLUMNS)
        for r in rows
    ]
    lines += [f"{r['module']}: {r['state']}: {r['reason']}" for r in rows if r.get("reason")]
    return "\n".join(lines)


def transport_id_rows(stats: Stats) -> list[Row]:
    """``-T``: each transport's id, state, name and authority (fmd's own: none)."""
    return [
        {"id": i, "state": t["state"], "module": t["name"], "authority": t.get("authority")}
        for i, t in enumerate(stats["transports"], start=1)
    ]


def render_transport_ids(rows: Sequence[Row]) -> str:
    lines = [XPRT_ID_LAYOUT % ("id", "state", "module", "authority")]
    lines += [
        XPRT_ID_LAYOUT % (r["id"], r["state"], r["module"], r["authority"] or "-") for r in rows
    ]
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------


def _report(
    client: AdmClient,
    prev: Stats | None,
    *,
    module: str | None,
    serd: bool,
    xprt: bool,
    xprt_ids: bool,
    internal: bool,
    nonzero: bool,
) -> tuple[list[Row], str, Stats | None]:
    """One report: its rows, its text, and the statistics the next deltas start from."""
    if serd:
        rows = serd_rows(client.call("serd", module=module))
        return rows, render_serd(rows), prev
    if module is not None:
        stats = client.call("stats") if internal else None
        own = client.call("module.stats", module=module)
        rows = module_stat_rows(own, stats, module, internal=internal, nonzero=nonzero)
        return rows, render_stats(rows), prev
    stats = client.call("stats")
    if xprt:
        rows = transport_rows(stats, prev)
        return rows, render_transports(rows), stats
    if xprt_ids:
        rows = transport_id_rows(stats)
        return rows, render_transport_ids(rows), stats
    if internal:
        rows = global_stat_rows(stats, nonzero=nonzero)
        return rows, render_stats(rows), stats
    rows = module_rows(stats, prev)
    return rows, render_modules(rows), stats


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-a", "internal", is_flag=True, help="Also fmd's internal statistics.")
@click.option("-m", "module", metavar="MODULE", help="Statistics of one module.")
@click.option("-s", "serd", is_flag=True, help="SERD engines of the module given with -m.")
@click.option("-t", "xprt", is_flag=True, help="Transport statistics.")
@click.option("-T", "xprt_ids", is_flag=True, help="Transport identities.")
@click.option("-z", "nonzero", is_flag=True, help="Omit statistics whose value is zero.")
@json_option
@click.argument("interval", type=float, required=False)
@click.argument("count", type=int, required=False)
@handle_errors("fmstat")
def cli(
    root: str | None,
    internal: bool,
    module: str | None,
    serd: bool,
    xprt: bool,
    xprt_ids: bool,
    nonzero: bool,
    as_json: bool,
    interval: float | None,
    count: int | None,
) -> None:
    """Report fault management module statistics, every INTERVAL seconds COUNT times."""
    if serd and module is None:
        fail("fmstat", "-s requires -m module", EXIT_USAGE)
    if (xprt or xprt_ids) and (module is not None or serd):
        fail("fmstat", "-t and -T cannot be combined with -m or -s", EXIT_USAGE)
    if xprt and xprt_ids:
        fail("fmstat", "-t and -T exclude each other", EXIT_USAGE)
    if interval is not None and interval <= 0:
        fail(
            "fmstat", f"interval must be a positive number of seconds, not {interval:g}", EXIT_USAGE
        )
    if count is not None and count <= 0:
        fail("fmstat", f"count must be a positive number, not {count}", EXIT_USAGE)
    paths = paths_for(root)
    prev: Stats | None = None
    n = 0
    try:
        with AdmClient(paths.adm_socket) as client:
            warning = store_warning(client.call("stats").get("store"))
            if warning:
                click.echo(f"fmstat: {warning}", err=True)
            while True:
                rows, text, prev = _report(
                    client,
                    prev,
                    module=module,
                    serd=serd,
                    xprt=xprt,
                    xprt_ids=xprt_ids,
                    internal=internal,
                    nonzero=nonzero,
                )
                click.echo(orjson.dumps(rows).decode() if as_json else text)
                n += 1
                if interval is None or (count is not None and n >= count):
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        # Interrupting a repeating report is how it is meant to end.
        return


def main() -> None:
    run_click(cli, "fmstat")


if __name__ == "__main__":
    main()
