"""The ingest transports under a stream of hostile lines with valid events interleaved:
every line is answered in order, every valid event is acknowledged and stored exactly
once, the rejections are counted, and fmd and its modules go on.

The streams come from :mod:`tests.hostile.fuzzlines` (seeded) and from hypothesis;
``bench/fuzz.py`` runs the same checks over millions of lines.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmd.xprt import CLOCK_CLASS
from tests.fmdproc import FmdProcess
from tests.hostile.fuzzlines import MARK, WireFuzzer

pytestmark = pytest.mark.e2e

SIM = {"platform": "sim", "clock": "simulated"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FmdProcess]:
    """One daemon on the sim platform with the simulated clock, shared by this module."""
    root = tmp_path_factory.mktemp("ingest") / "root"
    root.mkdir()
    fmd = FmdProcess(root, props=SIM).start()
    yield fmd
    if fmd.alive():
        fmd.stop()


def socket_stats(fmd: FmdProcess) -> dict[str, Any]:
    """The ingest socket's counters (``fmstat -t``)."""
    [stats] = [t for t in fmd.adm("stats")["transports"] if t["name"] == "socket"]
    return dict(stats)


def fmstat_dropped(fmd: FmdProcess) -> int:
    """The ingest socket's rejected lines as ``fmstat -t`` shows them (``ev_drop``)."""
    out = fmd.cli("fmstat", "-t", "--json")
    assert out.returncode == 0, out.stderr
    [row] = [r for r in orjson.loads(out.stdout) if r["module"] == "socket"]
    return int(row["ev_drop"])


def module_health(fmd: FmdProcess) -> tuple[dict[str, str], int]:
    """Each module's status, and the sum of the modules' ``fmd.ev_fail`` statistics."""
    modules = fmd.adm("config")["modules"]
    ev_fail = sum(
        int(s["value"])
        for m in modules
        for s in fmd.adm("module.stats", module=m["name"])
        if s["name"] == "fmd.ev_fail"
    )
    return {m["name"]: m["status"] for m in modules}, ev_fail


def stored_marks(fmd: FmdProcess, tag: str) -> collections.Counter[str]:
    """How many times each marker of ``tag`` is in the error log (``fmdump -e --json``)."""
    return collections.Counter(
        e[MARK]
        for e in fmd.errlog_json()
        if isinstance(e.get(MARK), str) and e[MARK].startswith(f"{tag}-")
    )


def stream(fuzzer: WireFuzzer, fuzzed: int, every: int = 3) -> tuple[list[bytes], list[int]]:
    """``fuzzed`` fuzzed lines with a valid event after every ``every``-th, and the
    indexes of the valid lines."""
    lines: list[bytes] = []
    valid: list[int] = []
    for i in range(fuzzed):
        lines.append(fuzzer.fuzz()[1])
        if i % every == 0:
            valid.append(len(lines))
            lines.append(fuzzer.valid(len(valid)))
    return lines, valid


def check_replies(replies: list[dict[str, Any]], lines: list[bytes], valid: list[int]) -> None:
    """One well-formed reply per line; every valid line acknowledged with its ENA; no
    line answered with fmd's own decoding failure."""
    assert len(replies) == len(lines)
    assert [set(replies[i]) for i in valid] == [{"ok", "ena"} for _ in valid]
    assert [replies[i]["ok"] for i in valid] == [True] * len(valid)
    shapes = {(r["ok"], type(r.get("error", "")).__name__) for r in replies}
    assert shapes <= {(True, "str"), (False, "str")}
    internal = [r["error"] for r in replies if str(r.get("error")).startswith("cannot decode")]
    assert internal == []


def check_alive(fmd: FmdProcess) -> None:
    """fmd answers, every module is active and no module item failed."""
    assert fmd.alive()
    assert fmd.adm("ping")["root"] == str(fmd.root)
    statuses, ev_fail = module_health(fmd)
    # The log lines say why, should a module have failed or raised.
    failures = [
        line[:2000]
        for line in fmd.stderr().splitlines()
        if '"module_event_failed"' in line or '"module_failed"' in line
    ]
    assert (set(statuses.values()), ev_fail, failures) == ({"active"}, 0, [])


def test_interleaved_stream_on_one_connection(daemon: FmdProcess) -> None:
    """Hostile lines among valid events on one connection: answered, counted, stored once."""
    fuzzer = WireFuzzer(801, long_lines=0, tag="one")
    lines, valid = stream(fuzzer, 2400)
    for at, size in ((100, (1 << 20) + 1), (1000, 3 << 19), (2000, 2 << 20)):
        lines.insert(at, b'{"class":"ereport.x.long","p":"' + b"x" * size + b'"}')
        valid = [i + 1 if i >= at else i for i in valid]
    before, dropped = socket_stats(daemon), fmstat_dropped(daemon)
    replies = daemon.send_lines(lines)
    check_replies(replies, lines, valid)
    rejected = sum(1 for r in replies if not r["ok"])
    assert fmstat_dropped(daemon) - dropped == rejected
    assert socket_stats(daemon)["received"] - before["received"] == len(lines)
    daemon.quiesce()
    assert stored_marks(daemon, "one") == collections.Counter(
        f"one-{n}" for n in range(1, len(valid) + 1)
    )
    acked = collections.Counter(r["ena"] for r in replies if "ena" in r)
    enas = (
        int(e["ena"], 0) if isinstance(e["ena"], str) else e["ena"] for e in daemon.errlog_json()
    )
    stored = collections.Counter(ena for ena in enas if ena in acked)
    assert stored == acked
    check_alive(daemon)


def test_several_connections_at_once(daemon: FmdProcess) -> None:
    """Three hostile connections at once: replies in order, their events stored once."""
    results: dict[str, tuple[list[bytes], list[int], list[dict[str, Any]]]] = {}

    def client(tag: str, seed: int) -> None:
        lines, valid = stream(WireFuzzer(seed, long_lines=0, tag=tag), 800)
        results[tag] = (lines, valid, daemon.send_lines(lines))

    threads = [threading.Thread(target=client, args=(f"multi{i}", 900 + i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    daemon.quiesce()
    for tag, (lines, valid, replies) in sorted(results.items()):
        check_replies(replies, lines, valid)
        assert stored_marks(daemon, tag) == collections.Counter(
            f"{tag}-{n}" for n in range(1, len(valid) + 1)
        )
    assert sorted(results) == ["multi0", "multi1", "multi2"]
    check_alive(daemon)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)  # clock deltas past 2262: a test of their own below
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_members = st.sampled_from(
    ["class", "ena", "time", "detector", "__injected", "mca", "cpuid", "physaddr", "bank",
     "IA32_MCi_STATUS", "delta", "p"]
)  # fmt: skip
_objects = st.dictionaries(_members, _json | st.sampled_from(["ereport.x", CLOCK_CLASS]))
_lines = (
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))
    | _objects.map(lambda o: orjson.dumps(o, default=str))
    | _json.map(lambda v: orjson.dumps(v, default=str))
)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(_lines, max_size=40))
def test_hypothesis_lines_around_valid_events(daemon: FmdProcess, batch: list[bytes]) -> None:
    """Hypothesis-made lines around valid events get one reply each; valid ones acked."""
    fuzzer = WireFuzzer(0, tag="hyp")
    lines: list[bytes] = []
    valid: list[int] = []
    for line in batch:
        valid.append(len(lines))
        lines.append(fuzzer.valid(time.monotonic_ns()))
        lines.append(line)
    replies = daemon.send_lines(lines)
    check_replies(replies, lines, valid)
    assert daemon.alive()


def test_hypothesis_run_left_fmd_healthy(daemon: FmdProcess) -> None:
    """After the hypothesis batches each acked valid event is stored once; modules active."""
    daemon.quiesce()
    marks = stored_marks(daemon, "hyp")
    assert [m for m, n in marks.items() if n != 1] == []
    check_alive(daemon)


def test_followed_file_with_hostile_lines(
    root: Path, fmd_factory: list[FmdProcess], tmp_path: Path
) -> None:
    """A followed file of hostile lines: each counted, every valid event stored once."""
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b"")
    fmd = FmdProcess(root, props={**SIM, "xprt.file": str(path)})
    fmd_factory.append(fmd)
    fmd.start()
    fuzzer = WireFuzzer(802, long_lines=0, tag="file")
    lines, valid = stream(fuzzer, 1500)
    lines.insert(700, b"y" * ((1 << 20) + 10))
    with path.open("ab") as fh:
        for start in range(0, len(lines), 250):
            fh.write(b"\n".join(lines[start : start + 250]) + b"\n")
            fh.flush()
    nonblank = sum(1 for line in lines if line.rstrip(b"\r").strip())
    name = f"file:{path}"
    deadline = time.monotonic() + 60
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        [stats] = [t for t in fmd.adm("stats")["transports"] if t["name"] == name]
        if stats["accepted"] + stats["rejected"] + stats["failed"] >= nonblank:
            break
        time.sleep(0.2)
    fmd.quiesce()
    assert (stats["received"], stats["accepted"] + stats["rejected"], stats["failed"]) == (
        nonblank,
        nonblank,
        0,
    )
    assert stored_marks(fmd, "file") == collections.Counter(
        f"file-{n}" for n in range(1, len(valid) + 1)
    )
    assert len(fmd.errlog_json()) == stats["accepted"]
    check_alive(fmd)


def test_clock_delta_past_the_end_of_time_is_rejected(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A clock delta past 2262 (signed 64-bit ns) is rejected; fmd goes on storing."""
    fmd = FmdProcess(root, props=SIM)
    fmd_factory.append(fmd)
    fmd.start()
    replies = fmd.send_lines(
        [{"class": CLOCK_CLASS, "delta": 2**64 - 1}, {"class": "ereport.x.after", MARK: "t-1"}]
    )
    fmd.quiesce()
    assert [r["ok"] for r in replies] == [False, True]
    check_alive(fmd)


STRAND5 = "hc:///motherboard=0/chip=1/core=0/strand=1"  # cpuid 5 on the sim platform
L2_UC = "ereport.cpu.generic-x86.l2cache_uc"


def test_error_after_a_repair_is_diagnosed_afresh(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """An error on a CPU after its diagnosis was repaired opens a new diagnosis."""
    fmd = FmdProcess(root, props=SIM)
    fmd_factory.append(fmd)
    fmd.start()
    fmd.send_lines([{"class": L2_UC, "detector": STRAND5}])
    fmd.quiesce()
    assert fmd.adm("repair", verb="repaired", target="CPU 1")["errors"] == []
    fmd.send_lines([{"class": L2_UC, "detector": STRAND5}])
    fmd.quiesce()
    suspects = [f for f in fmd.fltlog_json() if f["class"] == "list.suspect"]
    assert len(suspects) == 2
    check_alive(fmd)


def test_generated_enas_are_unique_in_a_burst(daemon: FmdProcess) -> None:
    """Distinct ereports sent without an ENA in one burst each get an ENA of their own."""
    replies = daemon.send_lines([{"class": "ereport.x.burst", "n": i} for i in range(300)])
    enas = [r["ena"] for r in replies]
    assert len(set(enas)) == len(enas)
