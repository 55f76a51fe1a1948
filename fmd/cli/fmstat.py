"""``fmstat``: report the statistics of the running fault manager.

Views: the default module table; ``-m module`` a module's own statistics;
``-s -m module`` its SERD engines; ``-t`` the transports.  With
``interval [count]`` the report repeats (per-interval deltas for the
event counters, as on illumos).
"""

from __future__ import annotations

import time
from typing import Any

import click
import orjson

from fmd.adm.client import AdmClient
from fmd.cli.common import (
    fail,
    handle_errors,
    json_option,
    paths_for,
    root_option,
    run_click,
)

_NS_UNITS = (
    ("week", 7 * 86400 * 10**9),
    ("d", 86400 * 10**9),
    ("h", 3600 * 10**9),
    ("m", 60 * 10**9),
    ("s", 10**9),
    ("ms", 10**6),
    ("us", 10**3),
    ("ns", 1),
)


def fmt_time(ns: int) -> str:
    """A duration as illumos prints it: the largest unit that divides it (``72h``)."""
    if ns == 0:
        return "0"
    for unit, size in _NS_UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def fmt_delta(ns: int) -> str:
    """An elapsed time in its largest unit, to one decimal (``3.4s``, ``2.0h``)."""
    for unit, size in _NS_UNITS:
        if ns >= size:
            value = ns / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return "0"


def fmt_size(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}b"


def _modules(stats: dict[str, Any], prev: dict[str, Any] | None, interval: float) -> None:
    before = {m["name"]: m for m in (prev or {}).get("modules", [])}
    click.echo(
        f"{'module':<18} {'ev_recv':>7} {'ev_acpt':>7} {'wait':>4} {'svc_t':>6} "
        f"{'%w':>3} {'%b':>3} {'open':>5} {'solve':>5} {'memsz':>6} {'bufsz':>6}"
    )
    for m in stats["modules"]:
        b = before.get(m["name"], {})
        recv = m["ev_recv"] - b.get("ev_recv", 0)
        waited = m["wait_ns"] - b.get("wait_ns", 0)
        busy = m["busy_ns"] - b.get("busy_ns", 0)
        svc = (waited + busy) / recv / 1e6 if recv else 0.0
        span = interval * 1e9 if prev else max(stats["uptime_ns"], 1)
        pw = min(100, int(100 * waited / span)) if span else 0
        pb = min(100, int(100 * busy / span)) if span else 0
        click.echo(
            f"{m['name']:<18} {recv:>7} {m.get('ev_acpt', 0):>7} {m['queue']:>4} "
            f"{svc:>6.1f} {pw:>3} {pb:>3} {m['open']:>5} {m['solved']:>5} "
            f"{'-':>6} {fmt_size(m['bufsz']):>6}"
        )


def _transports(stats: dict[str, Any]) -> None:
    click.echo(
        f"{'id':<4} {'state':<5} {'ev_recv':>8} {'ev_acpt':>8} {'ev_rej':>7} "
        f"{'ev_fail':>7} {'clients':>7} name"
    )
    for i, t in enumerate(stats["transports"], start=1):
        click.echo(
            f"{i:<4} {t['state']:<5} {t['received']:>8} {t['accepted']:>8} "
            f"{t['rejected']:>7} {t['failed']:>7} {t['clients']:>7} {t['name']}"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-m", "module", metavar="MODULE", help="Statistics of one module.")
@click.option("-s", "serd", is_flag=True, help="SERD engines of the module given with -m.")
@click.option("-t", "xprt", is_flag=True, help="Transport statistics.")
@click.option("-z", "nonzero", is_flag=True, help="Omit statistics whose value is zero.")
@json_option
@click.argument("interval", type=float, required=False)
@click.argument("count", type=int, required=False)
@handle_errors("fmstat")
def cli(
    root: str | None,
    module: str | None,
    serd: bool,
    xprt: bool,
    nonzero: bool,
    as_json: bool,
    interval: float | None,
    count: int | None,
) -> None:
    """Report fault management module statistics."""
    if serd and not module:
        fail("fmstat", "-s requires -m module", 2)
    if xprt and module:
        fail("fmstat", "-t cannot be combined with -m", 2)
    paths = paths_for(root)
    prev: dict[str, Any] | None = None
    n = 0
    with AdmClient(paths.adm_socket) as client:
        while True:
            if serd:
                engines = client.call("serd", module=module)
                if as_json:
                    click.echo(orjson.dumps(engines).decode())
                else:
                    click.echo(f"{'NAME':<36} {'>N':>3} {'T':>5} {'CNT':>3} {'DELTA':>24} STAT")
                    for e in engines:
                        click.echo(
                            f"{e['name']:<36} {'>' + str(e['n']):>3} "
                            f"{fmt_time(e['t']):>5} {e['count']:>3} "
                            f"{fmt_delta(e['delta']) if e['count'] else '0':>24} "
                            f"{'fire' if e['fired'] else 'pend'}"
                        )
            elif module:
                st = client.call("module.stats", module=module)
                if nonzero:
                    st = [s for s in st if s["value"]]
                if as_json:
                    click.echo(orjson.dumps(st).decode())
                else:
                    click.echo(f"{'NAME':>20} {'VALUE':<16} DESCRIPTION")
                    for s in st:
                        click.echo(f"{s['name']:>20} {s['value']!s:<16} {s['description']}")
            else:
                stats = client.call("stats")
                if as_json:
                    click.echo(orjson.dumps(stats).decode())
                elif xprt:
                    _transports(stats)
                else:
                    _modules(stats, prev, interval or 0)
                prev = stats
            n += 1
            if interval is None or (count is not None and n >= count):
                break
            time.sleep(interval)


def main() -> None:
    run_click(cli, "fmstat")


if __name__ == "__main__":
    main()
