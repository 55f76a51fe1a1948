"""End-to-end ingest: the socket and followed-file transports of the real daemon.

Bad input is refused line by line with a reason, good lines around it are
acknowledged and stored, rejections are counted per transport and rate-limited
in the log, and a followed file is read exactly once across restarts and kills.
"""

from __future__ import annotations

import calendar
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fmd.errors import AdmError
from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e

Line = bytes | str | dict[str, Any]


def encode(lines: Iterable[Line]) -> bytes:
    out = []
    for line in lines:
        if isinstance(line, dict):
            line = orjson.dumps(line)
        elif isinstance(line, str):
            line = line.encode()
        out.append(line + b"\n")
    return b"".join(out)


def exchange(fmd: FmdProcess, *parts: bytes, pause: float = 0.0) -> list[dict[str, Any]]:
    """Write ``parts`` on one connection (``pause`` s apart) while reading every reply."""

    def send(s: socket.socket) -> None:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            s.sendall(part)
        s.shutdown(socket.SHUT_WR)

    with fmd.connect() as s:
        sender = threading.Thread(target=send, args=(s,))
        sender.start()
        replies = [orjson.loads(r) for r in s.makefile("rb")]
        sender.join()
    return replies


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def xprt_stats(fmd: FmdProcess, name: str) -> dict[str, Any]:
    for t in fmd.adm("stats")["transports"]:
        if t["name"] == name:
            return dict(t)
    raise AssertionError(f"no transport {name!r}")


def start(root: Path, fmd_factory: list[FmdProcess], **props: str) -> FmdProcess:
    fmd = FmdProcess(root, props=props)
    fmd_factory.append(fmd)
    return restart(fmd)


def restart(fmd: FmdProcess) -> FmdProcess:
    """Start fmd and wait until all its transports run.

    The control socket answers before the transports are started, and after a
    SIGKILL the stale ingest socket makes FmdProcess.start return that early.
    """
    fmd.start()
    want = 1 + len([f for f in fmd.props.get("xprt.file", "").split(",") if f])

    def running() -> bool:
        try:
            return len(fmd.adm("stats")["transports"]) == want
        except AdmError:
            return False

    wait_for("the transports", running)
    return fmd


# -- the socket ------------------------------------------------------------------

GOOD = {"class": "ereport.test.good", "n": 0}

# (line, a phrase the error must contain)
BAD: list[tuple[bytes, str]] = [
    (b'{"class": "ereport.test.x", ', "malformed JSON"),
    (b'[{"class": "ereport.test.x"}]', "not a JSON object"),
    (b'{"class": 7}', "'class' must be a string"),
    (b'{"class": "ereport.test.x", "ena": [1, 2]}', "'ena'"),
    (b'{"class": "ereport.test.x", "time": true}', "'time'"),
    (b'{"class": "ereport.test.x", "time": "last tuesday"}', "last tuesday"),
    (b'{"class": "ereport.test.x", "detector": "bogus:///x=1"}', "detector"),
    (b'{"n": 1}', "missing member 'class'"),
    (b'{"class": "fault.x"}', "does not start with 'ereport.'"),
    (b"", "empty line"),
    (b'{"class": "ereport.test.x", "s": "\xff\xfe"}', "UTF-8"),
    (orjson.dumps({"class": "ereport.test.x", "pad": "x" * 10_000}), "exceeds 4096 bytes"),
]


def test_bad_lines_refused_good_lines_stored(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Each kind of bad line gets an error naming its problem; good lines between are stored."""
    fmd = start(root, fmd_factory, **{"xprt.maxline": "4k"})
    lines: list[Line] = []
    for i, (bad, _) in enumerate(BAD):
        lines += [{**GOOD, "n": i}, bad]
    lines.append({**GOOD, "n": len(BAD)})
    replies = exchange(fmd, encode(lines))

    assert len(lines) == len(replies)
    good_replies = replies[0::2]
    assert [r["ok"] for r in good_replies] == [True] * (len(BAD) + 1)
    for (bad, phrase), reply in zip(BAD, replies[1::2], strict=True):
        assert reply["ok"] is False, bad[:60]
        assert phrase in reply["error"], (bad[:60], reply)

    # An over-long line split across reads is refused, and the rest of it is
    # skipped without eating the good line that follows on the connection.
    long_line = orjson.dumps({"class": "ereport.test.x", "pad": "y" * 10_000})
    split = exchange(
        fmd, long_line[:5000], long_line[5000:] + b"\n" + encode([{**GOOD, "n": 99}]), pause=0.2
    )
    assert len(split) == 2
    assert split[0]["ok"] is False
    assert "exceeds 4096 bytes" in split[0]["error"]
    assert split[1]["ok"] is True

    assert fmd.adm("ping")["pid"] == fmd.proc.pid  # type: ignore[union-attr]
    st = xprt_stats(fmd, "socket")
    assert (st["received"], st["accepted"], st["rejected"]) == (
        len(lines) + 2,
        len(BAD) + 2,
        len(BAD) + 1,
    )
    stored = fmd.errlog_json()
    assert [e["n"] for e in stored] == [*range(len(BAD) + 1), 99]
    assert [int(e["ena"], 16) for e in stored] == [r["ena"] for r in good_replies] + [
        split[1]["ena"]
    ]
    assert {e["class"] for e in stored} == {"ereport.test.good"}


def test_event_time_and_ena(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Without ``time`` the receipt time is used; a given time (epoch or ISO) and ENA are kept."""
    fmd = start(root, fmd_factory)
    events = [
        {"class": "ereport.test.t", "k": "absent"},
        {"class": "ereport.test.t", "k": "epoch", "time": 1_700_000_000},
        {"class": "ereport.test.t", "k": "float", "time": 1_700_000_000.25},
        {"class": "ereport.test.t", "k": "iso", "time": "2024-01-02T03:04:05.123456Z"},
        {"class": "ereport.test.t", "k": "offset", "time": "2024-01-02T05:04:05+02:00"},
        {"class": "ereport.test.t", "k": "ena-int", "ena": 0x1234_5678_9ABC_DEF1},
        {"class": "ereport.test.t", "k": "ena-hex", "ena": "0xfedcba9876543211"},
    ]
    before = time.time()
    replies = exchange(fmd, encode(events))
    after = time.time()
    assert [r["ok"] for r in replies] == [True] * len(events)
    assert replies[5]["ena"] == 0x1234_5678_9ABC_DEF1
    assert replies[6]["ena"] == 0xFEDCBA9876543211

    stored = {e["k"]: e for e in fmd.errlog_json()}
    assert [int(stored[e["k"]]["ena"], 16) for e in events] == [r["ena"] for r in replies]
    assert {k: e["time"] for k, e in stored.items() if k != "absent"} == {
        "epoch": "2023-11-14T22:13:20.000000Z",
        "float": "2023-11-14T22:13:20.250000Z",
        "iso": "2024-01-02T03:04:05.123456Z",
        "offset": "2024-01-02T03:04:05.000000Z",
        "ena-int": stored["ena-int"]["time"],
        "ena-hex": stored["ena-hex"]["time"],
    }
    for k in ("absent", "ena-int", "ena-hex"):
        t = stored[k]["time"]
        assert t.endswith("Z")
        received = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
        assert before - 1 <= received <= after + 1, (k, t, before, after)


def test_clock_advance_orders_with_events(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """An event after addhrtime on the same connection is stamped with the advanced clock."""
    fmd = start(root, fmd_factory, clock="simulated")
    replies = exchange(
        fmd,
        encode(
            [
                {"class": "ereport.test.t", "k": "before"},
                {"class": "resource.fm.fmd.clock.addhrtime", "delta": 1800 * 10**9},
                {"class": "ereport.test.t", "k": "after"},
            ]
        ),
    )
    assert replies[1] == {"ok": True}
    assert [r["ok"] for r in replies] == [True] * 3
    times = {e["k"]: e["time"] for e in fmd.errlog_json()}

    def epoch_us(iso: str) -> int:
        seconds = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
        return seconds * 10**6 + int(iso[20:26])

    assert epoch_us(times["after"]) - epoch_us(times["before"]) == 1800 * 10**6


def test_flood_is_rate_limited(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Past xprt.rate/xprt.burst, lines are refused; the rest are stored; the log stays short."""
    fmd = start(root, fmd_factory, **{"xprt.rate": "100", "xprt.burst": "10"})
    replies = exchange(fmd, encode({"class": "ereport.test.flood", "n": i} for i in range(200)))
    assert len(replies) == 200
    ok = [r for r in replies if r["ok"]]
    refused = [r for r in replies if not r["ok"]]
    assert 10 <= len(ok) < 200
    assert refused
    assert all("rate limit" in r["error"] for r in refused), refused[:3]
    assert xprt_stats(fmd, "socket")["rejected"] == len(refused)

    stored = fmd.errlog_json()
    assert sorted(int(e["ena"], 16) for e in stored) == sorted(r["ena"] for r in ok)
    logged = [orjson.loads(line) for line in fmd.stderr().splitlines() if line.startswith("{")]
    rejected_lines = [e for e in logged if e.get("event") == "event_rejected"]
    assert 1 <= len(rejected_lines) <= 10


def test_two_clients_at_once(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Two clients sending at the same time each get an acknowledgement for every line."""
    fmd = start(root, fmd_factory)
    n = 500
    results: dict[str, list[dict[str, Any]]] = {}
    barrier = threading.Barrier(2)

    def client(name: str) -> None:
        data = encode({"class": f"ereport.test.{name}", "n": i} for i in range(n))
        barrier.wait()
        results[name] = exchange(fmd, data)

    threads = [threading.Thread(target=client, args=(c,)) for c in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["a", "b"]
    for name in ("a", "b"):
        assert [r["ok"] for r in results[name]] == [True] * n, name
    stored = fmd.errlog_json()
    for name in ("a", "b"):
        mine = [e for e in stored if e["class"] == f"ereport.test.{name}"]
        assert [e["n"] for e in mine] == list(range(n))
        assert [int(e["ena"], 16) for e in mine] == [r["ena"] for r in results[name]]


# -- the followed file -------------------------------------------------------------


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def ev(tag: str, n: int) -> dict[str, Any]:
    return {"class": "ereport.test.file", "tag": tag, "n": n}


def stored_tags(fmd: FmdProcess) -> list[tuple[str, int]]:
    return [(e["tag"], e["n"]) for e in fmd.errlog_json("-c", "ereport.test.file")]


def test_file_follow(root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]) -> None:
    """Appended lines are stored, partial lines once complete, bad ones skipped, a new file read."""
    path = tmp_path / "events.jsonl"
    append(path, encode([ev("a", 0), ev("a", 1)]))
    fmd = start(root, fmd_factory, **{"xprt.file": str(path)})
    name = f"file:{path}"
    wait_for("2 lines", lambda: xprt_stats(fmd, name)["accepted"] >= 2)

    # One write: a good line, a bad one, and the start of a line with no newline yet.
    partial = orjson.dumps(ev("a", 3))
    append(path, encode([ev("a", 2), "{not json", {"class": "fault.x"}]) + partial[:10])
    wait_for("the third line", lambda: xprt_stats(fmd, name)["accepted"] >= 3)
    st = xprt_stats(fmd, name)
    assert (st["accepted"], st["rejected"]) == (3, 2)
    append(path, partial[10:] + b"\n")
    wait_for("the completed line", lambda: xprt_stats(fmd, name)["accepted"] >= 4)

    # Rotation while running: the tail of the old file, then all of the new one.
    append(path, encode([ev("a", 4)]))
    os.rename(path, tmp_path / "events.jsonl.0")
    append(path, encode([ev("b", 0), ev("b", 1)]))
    wait_for("the new file", lambda: xprt_stats(fmd, name)["accepted"] >= 7)

    assert stored_tags(fmd) == [("a", i) for i in range(5)] + [("b", 0), ("b", 1)]
    st = xprt_stats(fmd, name)
    assert (st["received"], st["accepted"], st["rejected"]) == (9, 7, 2)


def test_file_overlong_line_skipped_whole(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A line over xprt.maxline written in pieces is one rejection, and its tail is skipped."""
    path = tmp_path / "events.jsonl"
    name = f"file:{path}"
    fmd = start(root, fmd_factory, **{"xprt.file": str(path), "xprt.maxline": "4k"})
    append(path, b"x" * 5000)
    wait_for("the rejection", lambda: xprt_stats(fmd, name)["rejected"] == 1)
    # The rest of the over-long line would be a valid event on its own.
    append(path, encode([ev("tail", 0), ev("ok", 1)]))
    wait_for("the good line", lambda: xprt_stats(fmd, name)["accepted"] >= 1)
    st = xprt_stats(fmd, name)
    assert (st["received"], st["accepted"], st["rejected"]) == (2, 1, 1)
    assert stored_tags(fmd) == [("ok", 1)]


def test_file_restart_resumes(root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]) -> None:
    """After a clean stop, lines written while down and after restart are each stored once."""
    path = tmp_path / "events.jsonl"
    name = f"file:{path}"
    fmd = start(root, fmd_factory, **{"xprt.file": str(path)})
    append(path, encode(ev("x", i) for i in range(3)))
    wait_for("3 lines", lambda: xprt_stats(fmd, name)["accepted"] >= 3)
    assert fmd.stop() == 0

    append(path, encode(ev("x", i) for i in range(3, 5)))
    restart(fmd)
    wait_for("the lines written while down", lambda: xprt_stats(fmd, name)["accepted"] >= 2)
    append(path, encode([ev("x", 5)]))
    wait_for("the new line", lambda: xprt_stats(fmd, name)["accepted"] >= 3)
    assert stored_tags(fmd) == [("x", i) for i in range(6)]


def test_file_sigkill_stores_each_line_once(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Killed with SIGKILL part-way through a file, fmd stores every line exactly once."""
    path = tmp_path / "events.jsonl"
    name = f"file:{path}"
    total = 10_000
    # The file ends in an incomplete line, so the kill always lands before its end
    # (usually while the later chunks are still being read and committed).
    last = orjson.dumps(ev("k", total))
    append(path, encode(ev("k", i) for i in range(total)) + last[:20])
    fmd = start(root, fmd_factory, **{"xprt.file": str(path)})
    wait_for("some lines", lambda: xprt_stats(fmd, name)["accepted"] > 0)
    fmd.kill()
    stored = [e["n"] for e in fmd.errlog_json("-c", "ereport.test.file")]
    assert stored == list(range(len(stored)))
    assert 0 < len(stored) <= total

    append(path, last[20:] + b"\n")
    restart(fmd)
    wait_for(
        "the rest of the file",
        lambda: xprt_stats(fmd, name)["accepted"] >= total + 1 - len(stored),
        timeout=60,
    )
    assert [e["n"] for e in fmd.errlog_json("-c", "ereport.test.file")] == list(range(total + 1))
