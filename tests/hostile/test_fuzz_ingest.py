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

from tests.fmdproc import FmdProcess
from tests.hostile.fuzzlines import CLOCK_CLASS, MARK, WireFuzzer

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
    assert set(statuses.values()) == {"active"}
    assert ev_fail == 0


def test_interleaved_stream_on_one_connection(daemon: FmdProcess) -> None:
    """Fuzzed lines of every kind (over-long ones too) interleaved with valid events on one
    connection: one reply per line in order, every valid event acknowledged and stored once,
    each rejection counted, and fmd and its modules go on."""
    fuzzer = WireFuzzer(801, long_lines=0, tag="one")
    lines, valid = stream(fuzzer, 2400)
    for at, size in ((100, (1 << 20) + 1), (1000, 3 << 19), (2000, 2 << 20)):
        lines.insert(at, b'{"class":"ereport.x.long","p":"' + b"x" * size + b'"}')
        valid = [i + 1 if i >= at else i for i in valid]
    before = socket_stats(daemon)
    replies = daemon.send_lines(lines)
    check_replies(replies, lines, valid)
    after = socket_stats(daemon)
    rejected = sum(1 for r in replies if not r["ok"])
    assert after["rejected"] - before["rejected"] == rejected
    assert after["received"] - before["received"] == len(lines)
    daemon.quiesce()
    assert stored_marks(daemon, "one") == collections.Counter(
        f"one-{n}" for n in range(1, len(valid) + 1)
    )
    acked = collections.Counter(r["ena"] for r in replies if "ena" in r)
    stored = collections.Counter(e["ena"] for e in daemon.errlog_json() if e["ena"] in acked)
    assert stored == acked
    check_alive(daemon)


def test_several_connections_at_once(daemon: FmdProcess) -> None:
    """Three connections streaming hostile lines at the same time each get their own
    replies in order, and every valid event of each is stored once."""
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
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
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
    """Hypothesis-made lines (bytes, JSON values, objects with reserved and well-known
    members) around valid events: one reply each, and the valid ones acknowledged."""
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
    """After the hypothesis batches every acknowledged valid event is stored once and the
    modules are active."""
    daemon.quiesce()
    marks = stored_marks(daemon, "hyp")
    assert [m for m, n in marks.items() if n != 1] == []
    check_alive(daemon)


def test_followed_file_with_hostile_lines(
    root: Path, fmd_factory: list[FmdProcess], tmp_path: Path
) -> None:
    """A followed file (xprt.file) with hostile lines, an over-long one and invalid UTF-8
    among valid events: every valid event is stored once, every non-blank line counted as
    accepted or rejected, and fmd goes on."""
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
