"""fmstat: the report layouts (golden files fed fixed statistics), the option rules,
and the command against a real daemon.

``FMD_UPDATE_GOLDEN=1`` rewrites the golden files instead of comparing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from fmd.cli import fmstat
from fmd.cli.fmstat import (
    fmt_size,
    fmt_time,
    global_stat_rows,
    module_rows,
    module_stat_rows,
    render_modules,
    render_serd,
    render_stats,
    render_transport_ids,
    render_transports,
    serd_rows,
    transport_id_rows,
    transport_rows,
)
from tests.fmdproc import FmdProcess
from tests.test_e2e_cpumem import HOUR, T0, icache

GOLDEN = Path(__file__).parent / "golden" / "fmstat"
SEC = 10**9


def golden(name: str, actual: str) -> str:
    """The golden file's text (rewritten from ``actual`` with FMD_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if os.environ.get("FMD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual + "\n")
    return path.read_text().removesuffix("\n")


def module(name: str, **counters: int) -> dict[str, Any]:
    base = dict.fromkeys(
        ("ev_recv", "ev_acpt", "queue", "wait_ns", "busy_ns", "svc_t_ns", "enqueued",
         "open", "opened", "solved", "bufsz", "overflowed"),
        0,
    )  # fmt: skip
    return {"name": name, "status": "active", **base, **counters}


# What the daemon's "stats" request returned 100 s after start, and 10 s later.
PREV: dict[str, Any] = {
    "uptime_ns": 100 * SEC,
    "writer": {"txns": 40, "ops": 90, "events": 120, "retries": 0, "failed_ops": 0},
    "dispatch": {"dispatched": 130, "nosub": 2, "replayed": 0, "partials": 0},
    "modules": [
        module("cpumem-diagnosis", ev_recv=100, ev_acpt=100, wait_ns=2 * SEC, busy_ns=5 * SEC,
               open=1, opened=2, solved=2, bufsz=300),
        module("fmd-self-diagnosis", ev_recv=2, ev_acpt=2, opened=1, solved=1),
        module("syslog-msgs", ev_recv=3, ev_acpt=0, busy_ns=SEC // 100, bufsz=5000),
    ],
    "transports": [
        {"name": "socket:/var/run/fmd/xprt.sock", "kind": "socket", "state": "run",
         "received": 110, "accepted": 108, "rejected": 2, "failed": 0},
        {"name": "file:/var/log/mcelog", "kind": "file", "state": "run",
         "received": 10, "accepted": 10, "rejected": 0, "failed": 0},
    ],
}  # fmt: skip
STATS: dict[str, Any] = {
    **PREV,
    "uptime_ns": 110 * SEC,
    "writer": {"txns": 45, "ops": 100, "events": 140, "retries": 1, "failed_ops": 0},
    "modules": [
        module("cpumem-diagnosis", ev_recv=120, ev_acpt=118, queue=3, wait_ns=7 * SEC,
               busy_ns=6 * SEC, svc_t_ns=108_333_333, enqueued=123, open=2, opened=3, solved=3,
               bufsz=3 << 20),
        module("fmd-self-diagnosis", ev_recv=2, ev_acpt=2, opened=1, solved=1),
        module("syslog-msgs", ev_recv=4, ev_acpt=0, busy_ns=SEC // 50, bufsz=5000),
    ],
    "transports": [
        {**PREV["transports"][0], "received": 130, "accepted": 127, "rejected": 3,
         "duplicates": 4},
        PREV["transports"][1],
        {"name": "mcelog", "kind": "mcelog", "state": "unavail", "received": 0,
         "accepted": 0, "rejected": 0, "failed": 0,
         "reason": "kernel has no /dev/mcelog (CONFIG_X86_MCELOG_LEGACY is off)"},
    ],
}  # fmt: skip
OWN_STATS = [
    {"name": "cpu_discarded", "value": 0, "description": "upsets discarded"},
    {"name": "cpu_faults", "value": 3, "description": "CPU faults diagnosed"},
]
ENGINES = [
    {"name": "serd.cpu.generic-x86.l1icache@motherboard=0/chip=3/core=0/strand=1",
     "n": 3, "t": 72 * 3600 * SEC, "count": 2, "fired": False, "delta": 3600 * SEC},
    {"name": "serd.memory.generic-x86.dimm_ce@dimm0", "n": 10, "t": 7 * 86400 * SEC,
     "count": 11, "fired": True, "delta": 1_234_567_890},
]  # fmt: skip


# -- value formats -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (72 * 3600 * SEC, "72h"),
        (600 * SEC, "10min"),
        (7 * 86400 * SEC, "1week"),
        (14 * 86400 * SEC, "2week"),
        (30 * 86400 * SEC, "1month"),
        (90 * SEC, "90s"),
        (1_500_000_000, "1500ms"),
        (1, "1ns"),
        (0, "0"),
    ],
)
def test_fmt_time_uses_largest_exact_unit(ns: int, text: str) -> None:
    """A SERD T is printed in the largest unit dividing it exactly, days written as hours."""
    assert fmt_time(ns) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0b"), (1023, "1023b"), (1024, "1.0K"), (3 << 20, "3.0M"), (5 << 30, "5.0G"), (None, "-")],
)
def test_fmt_size_scales_bytes(n: int | None, text: str) -> None:
    """Sizes are scaled to b, K, M or G with one decimal; an unknown size is '-'."""
    assert fmt_size(n) == text


# -- layouts (golden) ----------------------------------------------------------------


def test_default_view_since_start() -> None:
    """The first report shows the counters since start over the whole uptime."""
    text = render_modules(module_rows(STATS))
    assert text == golden("modules.txt", text)


def test_default_view_interval_deltas() -> None:
    """A later report shows the change over the interval; open and solve stay cumulative."""
    rows = module_rows(STATS, PREV)
    assert [(r["module"], r["ev_recv"], r["ev_acpt"], r["open"]) for r in rows] == [
        ("cpumem-diagnosis", 20, 18, 2),
        ("fmd-self-diagnosis", 0, 0, 0),
        ("syslog-msgs", 1, 0, 0),
    ]
    text = render_modules(rows)
    assert text == golden("modules_interval.txt", text)


def test_default_view_json_has_raw_numbers() -> None:
    """--json gives one object per module keyed by the column names, numbers unscaled."""
    text = orjson.dumps(module_rows(STATS, PREV), option=orjson.OPT_INDENT_2).decode()
    assert text == golden("modules.json", text)
    first = orjson.loads(text)[0]
    assert (first["bufsz"], first["wait"], first["svc_t"], first["%w"], first["%b"]) == (
        3 << 20,
        0.5,
        300.0,
        50,
        10,
    )


def test_module_stats_view() -> None:
    """-m prints the module's statistics under NAME VALUE DESCRIPTION."""
    text = render_stats(module_stat_rows(OWN_STATS, None, "cpumem-diagnosis", internal=False,
                                         nonzero=False))  # fmt: skip
    assert text == golden("module_stats.txt", text)


def test_module_stats_with_internal_and_nonzero() -> None:
    """-a -z -m adds fmd's fmd.* bookkeeping of the module and hides zero values."""
    rows = module_stat_rows(OWN_STATS, STATS, "cpumem-diagnosis", internal=True, nonzero=True)
    assert "cpu_discarded" not in [r["name"] for r in rows]
    text = render_stats(rows)
    assert text == golden("module_stats_all.txt", text)


def test_global_stats_view() -> None:
    """-a without -m prints fmd's uptime, writer and dispatch statistics."""
    text = render_stats(global_stat_rows(STATS, nonzero=False))
    assert text == golden("global_stats.txt", text)


def test_serd_view() -> None:
    """-s prints >N, T in its unit, the count, the events' span in ns and fire/pend."""
    text = render_serd(serd_rows(ENGINES))
    assert text == golden("serd.txt", text)


def test_transport_view_deltas() -> None:
    """-t prints each transport's counters (duplicates of stored hardware events
    included), as deltas after the first report, then why a source is not running."""
    text = render_transports(transport_rows(STATS, PREV))
    assert text == golden("transports.txt", text)


def test_transport_id_view() -> None:
    """-T prints each transport's id, state, name and authority."""
    text = render_transport_ids(transport_id_rows(STATS))
    assert text == golden("transport_ids.txt", text)


# -- option rules ------------------------------------------------------------------------


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run fmstat in-process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["fmstat", *args])
    with pytest.raises(SystemExit) as exc:
        fmstat.main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-t", "-m", "x"), "fmstat: -t and -T cannot be combined with -m or -s\n"),
        (("-t", "-s", "-m", "x"), "fmstat: -t and -T cannot be combined with -m or -s\n"),
        (("-T", "-m", "x"), "fmstat: -t and -T cannot be combined with -m or -s\n"),
        (("-t", "-T"), "fmstat: -t and -T exclude each other\n"),
        (("-s",), "fmstat: -s requires -m module\n"),
        (("0",), "fmstat: interval must be a positive number of seconds, not 0\n"),
        (("1", "0"), "fmstat: count must be a positive number, not 0\n"),
    ],
)
def test_conflicting_options_are_usage_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    """Options that exclude each other exit 2 with a message saying which."""
    assert run(monkeypatch, capsys, "-R", str(tmp_path), *args) == (2, "", message)


def test_daemon_not_running_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a daemon fmstat says fmd is not running and exits 1."""
    code, out, err = run(monkeypatch, capsys, "-R", str(tmp_path))
    assert (code, out) == (1, "")
    assert err.startswith("fmstat: fmd is not running (no answer on ")


# -- against the daemon --------------------------------------------------------------------


@pytest.mark.e2e
def test_fmstat_views_on_a_running_daemon(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """After two icache errors, fmstat shows them received by cpumem-diagnosis, -m its
    statistics, -s its pending engine, and ``fmstat 1 2`` prints two reports."""
    fmd = FmdProcess(root, props={"platform": "sim"})
    fmd_factory.append(fmd)
    fmd.start()
    assert all(r["ok"] for r in fmd.send_lines(icache(13, T0 + i * HOUR) for i in range(2)))
    fmd.quiesce()

    out = fmd.cli("fmstat")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        "module             ev_recv ev_acpt wait  svc_t  %w  %b  open solve  memsz  bufsz"
    )
    cpumem = [line.split() for line in lines if line.startswith("cpumem-diagnosis ")]
    assert [(r[1], r[2], r[7], r[8], r[9]) for r in cpumem] == [("2", "2", "0", "0", "-")]
    assert {"cpumem-diagnosis", "fmd-self-diagnosis", "syslog-msgs"} <= {
        line.split()[0] for line in lines[1:]
    }

    out = fmd.cli("fmstat", "-m", "cpumem-diagnosis")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "                NAME VALUE            DESCRIPTION"

    out = fmd.cli("fmstat", "-s", "-m", "cpumem-diagnosis")
    assert out.returncode == 0, out.stderr
    layout = "%-36s %3s %5s %3s %24s %s"
    assert out.stdout.splitlines() == [
        layout % ("NAME", ">N", "T", "CNT", "DELTA", "STAT"),
        layout
        % (
            "serd.cpu.generic-x86.l1icache@motherboard=0/chip=3/core=0/strand=1",
            ">3",
            "72h",
            "2",
            f"{HOUR * 10**9}ns",
            "pend",
        ),
    ]

    out = fmd.cli("fmstat", "--json", "-s", "-m", "cpumem-diagnosis")
    assert [(e["cnt"], e["t"], e["stat"]) for e in orjson.loads(out.stdout)] == [
        (2, 72 * HOUR * 10**9, "pend")
    ]

    out = fmd.cli("fmstat", "1", "2")
    assert out.returncode == 0, out.stderr
    headers = [line for line in out.stdout.splitlines() if line.startswith("module ")]
    assert len(headers) == 2
