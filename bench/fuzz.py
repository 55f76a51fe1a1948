"""The long hostile-input run of issue 8: millions of fuzzed inputs, and the figures.

    python -m bench.fuzz [--inputs N] [--valid-ratio R] [--ingest-connections C]
                         [--control-connections C] [--seed S] [--targets LIST] [--keep]

Starts the real daemon (``fmd -f``, platform ``sim``, simulated clock, with the
``serd-test`` plug-in of tests/plugins) in a root under /tmp and, at the same time:

* **ingest**: streams N fuzzed lines (:class:`tests.hostile.fuzzlines.WireFuzzer`:
  random bytes, invalid UTF-8, truncated JSON, deep nesting, huge numbers, nulls,
  raw ``{"mca": ...}`` records, detectors of every scheme, bad control events,
  over-long lines, ...) interleaved with valid ereports, each carrying a unique
  marker, over several pipelined connections to the ingest socket;
* **control**: sends N fuzzed request lines (:class:`~tests.hostile.fuzzlines.ControlFuzzer`
  with the argument values of tests/hostile/test_control_fuzz.py) pipelined over a
  few connections to the control socket, and now and then a line over the 1 MiB
  limit on a connection of its own.  ``rotate`` is left out: it legitimately moves
  stored events into archives and drops the eleventh, which would hide a lost event;
  ``quiesce`` is asked not to wait
  (timeout 0; its other arguments are fuzzed), and ``faulty``, which renders every case
  (0.1-0.2 s each once hundreds are open), is drawn at 1/50 the weight of the others.

While they run, the daemon's RSS (``VmRSS``) is sampled every second.  Afterwards
fmd must still be alive and answering; every module in ``fmadm config`` must be
``active``; the modules' ``fmd.ev_fail`` statistics are summed; the daemon is
stopped (SIGTERM) and its database read: every acknowledged event must be stored
exactly once (acknowledged ENAs against stored ENAs, and each valid event's marker).

Then **parsers**: N inputs each, in-process, to the mcelog text parser, the
injection language, the FMRI parsers and the ereport line parser; any exception
other than fmd's own error classes counts as a crash.

The table gives per target the inputs tried, accepted, rejected, crashes, module
failures, ``fmd.ev_fail`` total, acknowledged events lost and duplicated, the
largest RSS and the wall time.  Exit status 1 when any crash, module failure, lost or
duplicated event was seen.  The root is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fmd.errors import AdmError, FmdError
from fmd.hw.mcelog import ParsedMca, parse_mce_text
from fmd.hw.telemetry import record_to_json
from fmd.injlang import MAX_EVENTS, MAX_VALUE_BYTES, MAX_VALUE_ITEMS, Repeat, parse_program
from fmd.protocol import EnaGenerator, fmri_from_obj, parse_ereport_line, parse_fmri
from fmd.protocol.limits import MAX_FMRI_LEN
from fmd.store.schema import ena_from_db
from tests.fmdproc import FmdProcess
from tests.hostile.fuzzlines import (
    MARK,
    SEED_MCE,
    SEED_PROGRAMS,
    ControlFuzzer,
    WireFuzzer,
    conformance_mce,
    fmri_text,
    json_value,
    mutate_mce,
    mutate_program,
)
from tests.hostile.test_control_fuzz import LIKELY

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = 1_000_000
SEND_BLOCK = 256 * 1024
_SAMPLES = 5  # examples of each kind of anomaly kept for the report
DAEMON_NOTES: list[str] = []  # what the checks after the daemon targets found
# faulty renders every case with its messages (0.1-0.2 s once a few hundred cases are
# open): at the weight of the other ops it alone would take hours of the run.
OP_WEIGHTS = {"faulty": 0.02}
PROGRESS_EVERY = 100_000


@dataclass
class Result:
    """The figures of one target."""

    target: str
    tried: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    module_failures: int | None = None
    ev_fail: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    max_rss_kb: int | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def progress(what: str) -> None:
    """A line on stderr about how far the run is, when --progress was given."""
    if PROGRESS:
        print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


PROGRESS: list[bool] = []


# -- the daemon's memory ------------------------------------------------------------


class RssSampler:
    """Samples a process's VmRSS every second on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.max_kb = max(self.max_kb, int(line.split()[1]))
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def start(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        return self.max_kb


# -- ingest ------------------------------------------------------------------------------


@dataclass
class IngestConn:
    """What one ingest connection sent and what it was answered."""

    index: int
    fuzzed: int
    valid_every: float
    seed: int
    valid_sent: int = 0
    replies: int = 0
    accepted: int = 0
    rejected: int = 0
    valid_acked: int = 0
    not_stored: int = 0
    internal: int = 0
    enas: array[int] = field(default_factory=lambda: array("Q"))
    acked_seqs: bytearray = field(default_factory=bytearray)
    anomalies: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def tag(self) -> str:
        return f"c{self.index}"


def _ingest_conn(fmd: FmdProcess, conn: IngestConn) -> None:
    """Stream one connection's lines and check every reply against what was sent."""
    fuzzer = WireFuzzer(conn.seed, long_lines=0.0001, tag=conn.tag)
    expected: collections.deque[tuple[str | None, int]] = collections.deque()
    sock = fmd.connect()
    sock.settimeout(600)

    def send() -> None:
        block: list[bytes] = []
        size = 0
        credit = 0.0
        try:
            for _ in range(conn.fuzzed):
                credit += conn.valid_every
                while credit >= 1:
                    credit -= 1
                    line = fuzzer.valid(conn.valid_sent)
                    expected.append((None, conn.valid_sent))
                    conn.valid_sent += 1
                    block.append(line)
                    size += len(line) + 1
                kind, line = fuzzer.fuzz()
                expected.append((kind, 0))
                block.append(line)
                size += len(line) + 1
                if size >= SEND_BLOCK:
                    sock.sendall(b"\n".join(block) + b"\n")
                    block, size = [], 0
            if block:
                sock.sendall(b"\n".join(block) + b"\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            conn.error = f"send failed: {exc}"

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    conn.acked_seqs = bytearray(int(conn.fuzzed * conn.valid_every) + 2)
    with sock.makefile("rb") as replies:
        for raw in replies:
            conn.replies += 1
            if conn.replies % PROGRESS_EVERY == 0:
                progress(f"ingest connection {conn.tag}: {conn.replies} replies")
            if not expected:
                conn.anomalies.append(f"a reply for no line: {raw[:200]!r}")
                continue
            kind, seq = expected.popleft()
            reply = orjson.loads(raw)
            if reply.get("ok") is True:
                conn.accepted += 1
                if "ena" in reply:
                    conn.enas.append(reply["ena"])
                if kind is None:
                    conn.valid_acked += 1
                    if seq >= len(conn.acked_seqs):
                        conn.acked_seqs.extend(bytes(seq + 1 - len(conn.acked_seqs)))
                    conn.acked_seqs[seq] = 1
                continue
            conn.rejected += 1
            error = str(reply.get("error"))
            if error.startswith("not stored"):
                conn.not_stored += 1
            if error.startswith("cannot decode this line"):
                conn.internal += 1
            notable = kind is None or error.startswith(("cannot decode", "not stored"))
            if notable and len(conn.anomalies) < _SAMPLES:
                conn.anomalies.append(f"{kind or 'valid'} line answered {error[:200]}")
    sender.join(60)
    if expected:
        conn.anomalies.append(f"{len(expected)} lines got no reply")


def run_ingest(fmd: FmdProcess, inputs: int, connections: int, ratio: float, seed: int) -> tuple[
    Result, list[IngestConn]
]:  # fmt: skip
    """Drive the ingest socket over several connections at once."""
    start = time.monotonic()
    conns = [
        IngestConn(i, inputs // connections + (i < inputs % connections), ratio, seed * 1000 + i)
        for i in range(connections)
    ]
    threads = [threading.Thread(target=_ingest_conn, args=(fmd, c)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = Result("ingest socket")
    res.tried = sum(c.fuzzed for c in conns)
    res.accepted = sum(c.accepted for c in conns)
    res.rejected = sum(c.rejected for c in conns)
    res.wall_s = time.monotonic() - start
    valid = sum(c.valid_sent for c in conns)
    acked = sum(c.valid_acked for c in conns)
    res.notes.append(
        f"valid events interleaved: {valid}, acknowledged: {acked}; lines answered "
        f"'cannot decode' (an fmd defect): {sum(c.internal for c in conns)}, "
        f"'not stored': {sum(c.not_stored for c in conns)}"
    )
    for c in conns:
        if c.error:
            res.notes.append(f"connection {c.tag}: {c.error}")
        res.notes += [f"connection {c.tag}: {a}" for a in c.anomalies]
    return res, conns


def check_store(fmd: FmdProcess, res: Result, conns: list[IngestConn]) -> None:
    """Every acknowledged event stored once: the valid events' markers exactly, and all
    acknowledged events by number (a record coalesced from identical ereports, see
    ``xprt.coalesce``, stands for its ``count`` of them); the ENAs for information, as
    coalescing keeps only the first of each record and generated ENAs may repeat."""
    acked: collections.Counter[int] = collections.Counter()
    for c in conns:
        acked.update(c.enas)
    stored: collections.Counter[int] = collections.Counter()
    marks = {c.tag: bytearray(len(c.acked_seqs)) for c in conns}
    con = sqlite3.connect(f"file:{fmd.paths.db_file}?mode=ro", uri=True)
    columns = [d[0] for d in con.execute("SELECT * FROM errlog LIMIT 0").description]
    count = "count" if "count" in columns else "1"
    rows = coalesced = 0
    try:
        for ena, payload, n in con.execute(f"SELECT ena, payload, {count} FROM errlog"):
            rows += n
            coalesced += n > 1
            stored[ena_from_db(ena)] += 1
            if MARK in payload:
                mark = orjson.loads(payload).get(MARK)
                if isinstance(mark, str) and "-" in mark:
                    tag, _, seq = mark.partition("-")
                    counts = marks.get(tag)
                    if counts is not None and seq.isdigit() and int(seq) < len(counts):
                        counts[int(seq)] = min(255, counts[int(seq)] + n)
    finally:
        con.close()
    total = sum(acked.values())
    ena_lost = sum(max(0, n - stored[e]) for e, n in acked.items())
    mark_lost = mark_dup = 0
    for c in conns:
        counts = marks[c.tag]
        for index, was_acked in enumerate(c.acked_seqs):
            if was_acked:
                mark_lost += counts[index] == 0
                mark_dup += counts[index] > 1
    res.lost = max(total - rows, mark_lost, 0)
    res.duplicated = max(rows - total, mark_dup, 0)
    res.notes.append(
        f"acknowledged events: {total}; stored: {rows} in {sum(stored.values())} records "
        f"({coalesced} coalesced); valid markers lost {mark_lost}, duplicated {mark_dup}; "
        f"acknowledged ENAs not stored (coalesced or repeated): {ena_lost}; distinct "
        f"ENAs acknowledged: {len(acked)}"
    )


# -- control ------------------------------------------------------------------------


@dataclass
class ControlConn:
    index: int
    count: int
    seed: int
    replies: int = 0
    blank: int = 0
    slowest: float = 0.0
    ok: int = 0
    errors: int = 0
    internal: int = 0
    anomalies: list[str] = field(default_factory=list)


def _safe(req: dict[str, Any]) -> dict[str, Any]:
    """Keep a request from archiving the log or waiting (see the module docstring)."""
    if req.get("op") == "rotate":
        req["op"] = "ping"
    if req.get("op") == "quiesce":
        # While events stream in, quiesce would wait out its whole timeout.
        timeout = req.get("timeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
            req["timeout"] = 0
        req.setdefault("timeout", 0)
    return req


def _control_conn(fmd: FmdProcess, ops: list[str], conn: ControlConn) -> None:
    fuzzer = ControlFuzzer(conn.seed, ops, LIKELY, OP_WEIGHTS)
    window = 32
    sent = 0
    while sent < conn.count:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(float(os.environ.get("FUZZ_CONTROL_TIMEOUT", "300")))
        sock.connect(str(fmd.paths.adm_socket))
        rfile = sock.makefile("rb")
        try:
            while sent < conn.count:
                lines = []
                for _ in range(min(window, conn.count - sent)):
                    kind, line = fuzzer.line()
                    if kind == "request":
                        line = orjson.dumps(_safe(orjson.loads(line)))
                    lines.append(line)
                began = time.monotonic()
                # Sent from a thread while the replies are read, so that a large reply
                # cannot deadlock against a large batch on full socket buffers.
                sender = threading.Thread(
                    target=_send_quietly, args=(sock, b"\n".join(lines) + b"\n"), daemon=True
                )
                sender.start()
                sent += len(lines)
                conn.blank += sum(1 for line in lines if not line.strip())
                # The server skips blank lines without a reply.
                for _ in range(sum(1 for line in lines if line.strip())):
                    try:
                        raw = rfile.readline()
                    except TimeoutError:
                        conn.anomalies.append(
                            "no reply within 300 s to one of: "
                            + " | ".join(line[:120].decode(errors="replace") for line in lines)
                        )
                        raise
                    if not raw:
                        raise ConnectionError("the control socket closed the connection")
                    conn.replies += 1
                    if conn.replies % PROGRESS_EVERY == 0:
                        progress(f"control connection {conn.index}: {conn.replies} replies")
                    try:
                        reply = orjson.loads(raw)
                    except orjson.JSONDecodeError as exc:
                        raise ValueError(f"{exc}; the reply line: {raw[:160]!r}") from None
                    if reply.get("ok") is True:
                        conn.ok += 1
                        continue
                    conn.errors += 1
                    if str(reply.get("error")).startswith("internal error"):
                        conn.internal += 1
                        if len(conn.anomalies) < _SAMPLES:
                            conn.anomalies.append(f"internal error: {reply.get('error')!s:.200}")
                sender.join()
                took = time.monotonic() - began
                conn.slowest = max(conn.slowest, took)
                if took > 10 and len(conn.anomalies) < _SAMPLES:
                    ops = [orjson.loads(x).get("op") if x.startswith(b"{") and x.endswith(b"}")
                           and b'"op"' in x else "-" for x in lines]  # fmt: skip
                    conn.anomalies.append(f"a batch took {took:.0f} s; its ops: {ops}")
        except (OSError, ValueError) as exc:
            if len(conn.anomalies) < _SAMPLES:
                conn.anomalies.append(f"connection ended: {exc}")
        finally:
            rfile.close()
            sock.close()


def _over_long(fmd: FmdProcess, rng: random.Random) -> bool:
    """One request line over 1 MiB on a connection of its own: answered and closed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(str(fmd.paths.adm_socket))
    data = b'{"op":"ping","x":"' + b"y" * rng.randint(1 << 20, 2 << 20) + b'"}\n'
    sender = threading.Thread(target=lambda: _send_quietly(sock, data), daemon=True)
    sender.start()
    with sock.makefile("rb") as rfile:
        reply = orjson.loads(rfile.readline() or b"{}")
    sender.join(30)
    sock.close()
    return reply.get("ok") is False


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    # The server closes the connection part way through an over-long line, as it should.
    with contextlib.suppress(OSError):
        sock.sendall(data)


def run_control(fmd: FmdProcess, inputs: int, connections: int, seed: int) -> Result:
    """Drive the control socket over a few pipelined connections."""
    start = time.monotonic()
    try:
        fmd.adm("no-such-op")
        ops: list[str] = []
    except AdmError as exc:
        ops = str(exc).split("known: ", 1)[1].split(", ")
    ops = [op for op in ops if op != "rotate"]
    conns = [
        ControlConn(i, inputs // connections + (i < inputs % connections), seed * 1000 + 500 + i)
        for i in range(connections)
    ]
    threads = [threading.Thread(target=_control_conn, args=(fmd, ops, c)) for c in conns]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    long_ok = long_sent = 0
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        long_sent += 1
        long_ok += _over_long(fmd, rng)
    for t in threads:
        t.join()
    res = Result("control socket")
    res.tried = sum(c.replies + c.blank for c in conns) + long_sent
    res.accepted = sum(c.ok for c in conns)
    res.rejected = sum(c.errors for c in conns) + long_ok
    res.wall_s = time.monotonic() - start
    res.notes.append(
        f"ops fuzzed: {', '.join(ops)} (weights {OP_WEIGHTS}, else 1) and unknown ones; "
        f"'internal error' replies: "
        f"{sum(c.internal for c in conns)}; over-long lines refused: {long_ok}/{long_sent}; "
        f"blank lines (skipped by the server without a reply): {sum(c.blank for c in conns)}; "
        f"lines unanswered: {sum(c.count - c.replies - c.blank for c in conns)}; slowest "
        f"batch of {32} requests: {max(c.slowest for c in conns):.1f} s"
    )
    for c in conns:
        res.notes += [f"connection {c.index}: {a}" for a in c.anomalies]
    return res


# -- in-process parsers ------------------------------------------------------------------


def _crash(res: Result, what: str, text: object, exc: BaseException) -> None:
    res.crashes += 1
    if res.crashes <= _SAMPLES:
        res.notes.append(
            f"{type(exc).__name__}: {str(exc)[:160]} on {what} {text!r:.200}\n"
            + "".join(traceback.format_exception(exc)[-3:])
        )


def fuzz_mcelog(count: int, seed: int) -> Result:
    """mcelog text: parse_mce_text never raises; every record it returns can be sent."""
    res = Result("mcelog text parser", tried=count)
    rng = random.Random(seed)
    seeds = list(SEED_MCE) + conformance_mce(REPO)
    unencodable = 0
    start = time.monotonic()
    for _ in range(count):
        text = mutate_mce(rng, seeds)
        try:
            items = parse_mce_text(text)
        except Exception as exc:
            _crash(res, "text", text, exc)
            continue
        if items and all(isinstance(i, ParsedMca) for i in items):
            res.accepted += 1
        else:
            res.rejected += 1
        for item in items:
            if isinstance(item, ParsedMca):
                try:
                    orjson.dumps({"mca": record_to_json(item.record)})
                except Exception:
                    unencodable += 1
    res.wall_s = time.monotonic() - start
    res.notes.append(f"records that cannot be written as a wire line (a defect): {unencodable}")
    return res


def fuzz_injlang(count: int, seed: int) -> Result:
    """Injection language: parse_program never raises; accepted programs keep the limits."""
    res = Result("injection language", tried=count)
    rng = random.Random(seed)
    over = 0
    start = time.monotonic()
    for _ in range(count):
        text = mutate_program(rng, SEED_PROGRAMS)
        try:
            program, errors = parse_program(text)
        except Exception as exc:
            _crash(res, "program", text, exc)
            continue
        if errors:
            res.rejected += 1
            continue
        res.accepted += 1
        events = sum(c.count if isinstance(c, Repeat) else 1 for c in program.commands)
        sizes = [len(orjson.dumps(d.value)) for d in program.defs.values()]
        if events > MAX_EVENTS or any(s > MAX_VALUE_BYTES for s in sizes):
            over += 1
    res.wall_s = time.monotonic() - start
    res.notes.append(
        f"accepted programs beyond the limits ({MAX_EVENTS} events, {MAX_VALUE_BYTES} bytes, "
        f"{MAX_VALUE_ITEMS} members per value): {over}"
    )
    if over:
        res.crashes += over
    return res


def fuzz_fmri(count: int, seed: int) -> Result:
    """FMRIs: strings and objects parse or raise FmriError; what parses round-trips."""
    res = Result("FMRI parsers", tried=count)
    rng = random.Random(seed)
    mismatches = too_long = 0
    start = time.monotonic()
    for i in range(count):
        obj: Any = fmri_text(rng) if i % 2 == 0 else _fmri_object(rng)
        try:
            fmri = parse_fmri(obj) if isinstance(obj, str) else fmri_from_obj(obj)
        except FmdError:
            res.rejected += 1
            continue
        except Exception as exc:
            _crash(res, "FMRI", obj, exc)
            continue
        res.accepted += 1
        text = fmri.to_string()
        if len(text) > MAX_FMRI_LEN:
            too_long += 1  # only an object can name it: the string form is refused
            continue
        try:
            same = fmri_from_obj(fmri.to_dict()) == fmri and (
                fmri.scheme == "fmd" or parse_fmri(text) == fmri
            )
        except FmdError:
            same = False
        mismatches += not same
    res.wall_s = time.monotonic() - start
    res.notes.append(
        f"parsed FMRIs that do not round-trip: {mismatches}; objects accepted whose string "
        f"form is over the {MAX_FMRI_LEN}-character limit (a defect): {too_long}"
    )
    res.crashes += mismatches
    return res


def _fmri_object(rng: random.Random) -> dict[str, Any]:
    obj: dict[str, Any] = {"scheme": rng.choice(("hc", "cpu", "mem", "fmd", "x", None, 3))}
    for name in rng.sample(
        ("version", "cpuid", "serial", "unum", "physaddr", "offset", "hc-root", "hc-list",
         "hc-list-sz", "authority", "hc-specific", "mod-name", "mod-version", "bogus"),
        rng.randint(0, 4),
    ):  # fmt: skip
        obj[name] = json_value(rng, 3)
    if obj["scheme"] == "cpu" and rng.random() < 0.5:
        obj["cpuid"] = rng.choice((0, 7, 2**32 - 1, 2**32, "12", "0x1f", -1))
    if obj["scheme"] == "hc" and rng.random() < 0.5:
        obj["hc-list"] = [
            {"hc-name": rng.choice(("motherboard", "chip", "")), "hc-id": rng.choice(("0", 1))}
            for _ in range(rng.choice((0, 2, 64, 65)))
        ]
    return obj


def fuzz_ereport_lines(count: int, seed: int) -> Result:
    """Ereport lines: parse_ereport_line accepts or raises EventRejected, nothing else."""
    res = Result("ereport line parser", tried=count)
    fuzzer = WireFuzzer(seed, long_lines=0.0001)
    gen = EnaGenerator()
    start = time.monotonic()
    for _ in range(count):
        _kind, line = fuzzer.fuzz()
        try:
            parse_ereport_line(line, now_ns=1_700_000_000 * 10**9, ena_gen=gen)
            res.accepted += 1
        except FmdError:
            res.rejected += 1
        except Exception as exc:
            _crash(res, "line", line, exc)
    res.wall_s = time.monotonic() - start
    return res


PARSERS = {
    "mcelog": fuzz_mcelog,
    "injlang": fuzz_injlang,
    "fmri": fuzz_fmri,
    "ereport": fuzz_ereport_lines,
}


def _run_parser(args: tuple[str, int, int, bool]) -> Result:
    name, count, seed, show = args
    if show and not PROGRESS:
        PROGRESS.append(True)
    progress(f"parser {name}: starting {count} inputs")
    try:
        res = PARSERS[name](count, seed)
    except Exception as exc:  # a defect of this script: report it, keep the other figures
        res = Result(name, tried=count, crashes=1)
        res.notes.append(f"the run of this target failed: {exc!r:.300}")
    progress(f"parser {name}: done in {res.wall_s:.0f} s")
    return res


def run_parsers(count: int, seed: int, processes: int) -> list[Result]:
    """Every in-process parser target, ``processes`` at a time."""
    jobs = [(name, count, seed + i, bool(PROGRESS)) for i, name in enumerate(PARSERS)]
    if processes <= 1:
        return [_run_parser(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.map(_run_parser, jobs)


# -- the run -------------------------------------------------------------------------------


def module_health(fmd: FmdProcess) -> tuple[int, int, list[str]]:
    """Modules not active, the sum of their fmd.ev_fail, and what to say about them."""
    notes = []
    modules = fmd.adm("config")["modules"]
    bad = [m for m in modules if m["status"] != "active"]
    notes += [f"module {m['name']} is {m['status']}: {m.get('error')}" for m in bad]
    ev_fail = 0
    for m in modules:
        for stat in fmd.adm("module.stats", module=m["name"]):
            if stat["name"] == "fmd.ev_fail" and stat["value"]:
                ev_fail += int(stat["value"])
                notes.append(f"module {m['name']}: fmd.ev_fail = {stat['value']}")
    notes.append("modules: " + ", ".join(f"{m['name']} {m['status']}" for m in modules))
    return len(bad), ev_fail, notes


def run_daemon_targets(args: argparse.Namespace, root: Path) -> list[Result]:
    """Ingest and control at once against one daemon, then the checks."""
    fmd = FmdProcess(root, plugins=["serdtest"], props={"platform": "sim", "clock": "simulated"})
    fmd.start()
    assert fmd.proc is not None
    rss = RssSampler(fmd.proc.pid).start()
    results: list[Result] = []
    conns: list[IngestConn] = []
    threads = []
    if "ingest" in args.targets:

        def ingest() -> None:
            res, got = run_ingest(
                fmd, args.inputs, args.ingest_connections, args.valid_ratio, args.seed
            )
            results.append(res)
            conns.extend(got)

        threads.append(threading.Thread(target=ingest))
    if "control" in args.targets:
        threads.append(
            threading.Thread(
                target=lambda: results.append(
                    run_control(fmd, args.inputs, args.control_connections, args.seed)
                )
            )
        )
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    max_rss = rss.stop()
    alive = fmd.alive()
    answering = False
    failures = ev_fail = 0
    notes: list[str] = []
    if alive:
        try:
            fmd.quiesce(600)
            answering = fmd.adm("ping")["root"] == str(root)
            failures, ev_fail, notes = module_health(fmd)
            [sock] = [t for t in fmd.adm("stats")["transports"] if t["name"] == "socket"]
            notes.append(
                f"fmstat -t socket: received {sock['received']}, accepted {sock['accepted']}, "
                f"rejected {sock['rejected']}, failed {sock['failed']}"
            )
        except (AdmError, OSError) as exc:
            notes.append(f"the daemon did not answer: {exc}")
    crashed = 0 if alive and answering else 1
    if not alive:
        notes.append(f"fmd exited: {fmd.stderr()[-2000:]}")
    for res in results:
        res.crashes += crashed
        res.module_failures, res.ev_fail = failures, ev_fail
        res.max_rss_kb = max_rss
    if alive:
        rc = fmd.stop(300)
        if rc != 0:
            notes.append(f"fmd exited {rc} on SIGTERM")
    for res in results:
        if res.target == "ingest socket":
            check_store(fmd, res, conns)
            rejected = sum(c.rejected - c.not_stored for c in conns)
            res.notes.append(f"rejected replies (not counting 'not stored'): {rejected}")
    kinds = collections.Counter(
        str(orjson.loads(line).get("event"))
        for line in fmd.stderr().splitlines()
        if line.startswith("{") and '"level": "error"' in line
    )
    if kinds:
        notes.append(
            "error events in fmd's log: " + ", ".join(f"{k} x{n}" for k, n in kinds.items())
        )
    DAEMON_NOTES[:] = notes
    return results


def _kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.0f} MiB"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def print_table(results: list[Result]) -> None:
    head = ("target", "tried", "accepted", "rejected", "crashes", "mod.fail", "ev_fail",
            "lost", "dup", "max RSS", "wall s")  # fmt: skip
    rows = [head] + [
        (
            r.target,
            str(r.tried),
            str(r.accepted),
            str(r.rejected),
            str(r.crashes),
            _n(r.module_failures),
            _n(r.ev_fail),
            _n(r.lost),
            _n(r.duplicated),
            _kb(r.max_rss_kb),
            f"{r.wall_s:.0f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip
    for r in results:
        for note in r.notes:
            print(f"  {r.target}: {note}")
    for note in DAEMON_NOTES:
        print(f"  daemon: {note}")


def failed(results: list[Result]) -> bool:
    """Whether any crash, module failure, lost or duplicated event was seen."""
    return any(r.crashes or r.module_failures or r.lost or r.duplicated for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--inputs", type=int, default=DEFAULT_INPUTS, help="inputs per target")
    parser.add_argument("--valid-ratio", type=float, default=0.25,
                        help="valid events interleaved per fuzzed ingest line")  # fmt: skip
    parser.add_argument("--ingest-connections", type=int, default=4)
    parser.add_argument("--control-connections", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="for the parser targets")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--targets", default="ingest,control,parsers")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's root")
    parser.add_argument("--progress", action="store_true", help="report progress on stderr")
    args = parser.parse_args(argv)
    if args.progress:
        PROGRESS.append(True)
    args.targets = set(args.targets.split(","))
    start = time.monotonic()
    results: list[Result] = []
    root = Path(tempfile.mkdtemp(prefix="fmd-fuzz-", dir="/tmp")) / "root"
    root.mkdir()
    try:
        if args.targets & {"ingest", "control"}:
            results += run_daemon_targets(args, root)
            print_table(results)  # now, in case the parser targets fail
            print(flush=True)
        if "parsers" in args.targets:
            results += run_parsers(args.inputs, args.seed, args.processes)
    finally:
        if args.keep:
            print(f"root kept: {root}")
        else:
            shutil.rmtree(root.parent, ignore_errors=True)
    print(f"bench.fuzz: {args.inputs} inputs per target, seed {args.seed}, "
          f"{time.monotonic() - start:.0f} s in all")  # fmt: skip
    print_table(results)
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
