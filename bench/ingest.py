"""Ingest benchmark: acknowledged ereports per second through the socket, against plain sqlite3.

Starts the real daemon in a temporary root with the ``serd-bench`` module
(bench/plugins/serd_bench.py), streams N ereports through
``var/run/fmd/xprt.sock`` from a pipelined client (one thread sends, the main
thread reads the acknowledgements), and reports events/s from the first byte
sent to the last acknowledgement, the time the modules then need to catch up
(quiesce), and the writer's statistics.  Then it times a plain ``sqlite3``
``executemany`` of the very same rows into an equivalent table (the columns and
indexes of ``errlog``, WAL, ``synchronous=FULL``, one transaction) and prints
the ratio of the two rates.  Target: ratio >= 0.25.

    python bench/ingest.py [-n N] [--keep] [-o name=value ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from fmd import states
from fmd.adm.client import AdmClient
from fmd.errors import AdmError
from fmd.paths import Paths
from fmd.store import schema

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "plugins" / "serd_bench.py"
MODULE = "serd-bench"
TARGET = 0.25


class Daemon:
    """``fmd -f`` in a root of its own, driven over its control socket."""

    def __init__(self, root: Path, props: list[str], diagnose: bool = False) -> None:
        self.root = root
        self.paths = Paths(root)
        self.props = props
        self.diagnose = diagnose
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "fmd.stderr"

    def start(self, timeout: float = 60.0) -> None:
        self.paths.plugin_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(PLUGIN, self.paths.plugin_dir / PLUGIN.name)
        if self.diagnose:
            self.paths.plugin_conf_dir.mkdir(parents=True, exist_ok=True)
            self.paths.plugin_conf(MODULE).write_text("setprop diagnose true\n")
        args = [
            sys.executable,
            "-m",
            "fmd.cli.fmd",
            "-R",
            str(self.root),
            "-f",
            "-o",
            "log.format=json",
        ]
        for p in self.props:
            args += ["-o", p]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("FMD_ROOT", None)
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=err, stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"fmd exited with {self.proc.returncode}:\n"
                    f"{self.log.read_text(errors='replace')}"
                )
            if self.paths.xprt_socket.exists():
                try:
                    self.adm("ping")
                    return
                except AdmError:
                    pass
            time.sleep(0.05)
        raise SystemExit(f"fmd did not become ready in {timeout} s; see {self.log}")

    def adm(self, op: str, **args: Any) -> Any:
        with AdmClient(self.paths.adm_socket, timeout=900) as c:
            return c.call(op, **args)

    def stop(self, timeout: float = 300.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc


def make_blocks(n: int, detectors: int, block: int) -> list[bytes]:
    """The wire lines, prepared before timing so that the client costs little."""
    out = []
    for lo in range(0, n, block):
        out.append(
            b"".join(
                orjson.dumps(
                    {
                        "class": "ereport.bench.cpu.ce",
                        "detector": f"cpu:///cpuid={i % detectors}",
                        "seq": i,
                        "bank": i % 8,
                        "addr": 0x1000 * i,
                    }
                )
                + b"\n"
                for i in range(lo, min(lo + block, n))
            )
        )
    return out


def stream(path: Path, blocks: list[bytes], n: int) -> tuple[float, int, list[bytes]]:
    """Send every block while reading replies; return (seconds to the last ack, ok, errors)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))

    def send() -> None:
        for b in blocks:
            sock.sendall(b)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, name="bench-send", daemon=True)
    ok = 0
    errors: list[bytes] = []
    t0 = time.perf_counter()
    sender.start()
    with sock.makefile("rb") as rfile:
        for line in rfile:
            if line.startswith(b'{"ok":true'):
                ok += 1
            else:
                errors.append(line)
            if ok + len(errors) == n:
                break
    elapsed = time.perf_counter() - t0
    sender.join()
    sock.close()
    return elapsed, ok, errors


def baseline(db: Path, work: Path) -> tuple[float, int]:
    """Time a plain sqlite3 executemany of fmd's own errlog rows into a fresh table."""
    cols = [c.name for c in schema.errlog.columns]
    names = ", ".join(f'"{c}"' for c in cols)
    src = sqlite3.connect(db)
    rows = src.execute(f"SELECT {names} FROM errlog ORDER BY id").fetchall()
    src.close()
    # As ingest inserts them: RECEIVED and not yet committed.
    state, committed = cols.index("state"), cols.index("committed")
    fresh = []
    for r in rows:
        r = list(r)
        r[state], r[committed] = states.STATE_RECEIVED, 0
        fresh.append(tuple(r))
    path = work / "baseline.db"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    dialect = sqlite_dialect.dialect()
    conn.execute(str(CreateTable(schema.errlog).compile(dialect=dialect)))
    for ix in sorted(schema.errlog.indexes, key=lambda i: str(i.name)):
        conn.execute(str(CreateIndex(ix).compile(dialect=dialect)))
    insert = f"INSERT INTO errlog ({names}) VALUES ({', '.join('?' for _ in cols)})"
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(insert, fresh)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed, len(fresh)


def start_py_spy(fmd: Daemon, out: str) -> subprocess.Popen[bytes]:
    """Sample the daemon's GIL holder (py-spy must be installed next to this Python)."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    assert fmd.proc is not None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--gil",
            "--threads",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            out,
            "--pid",
            str(fmd.proc.pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    spy.wait(60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="ereports to send (default 200000)")
    ap.add_argument(
        "--detectors",
        type=int,
        default=4096,
        help="distinct detectors, one SERD engine each (default 4096)",
    )
    ap.add_argument("--block", type=int, default=256, help="lines per socket write")
    ap.add_argument(
        "-o",
        dest="props",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a daemon property, as for fmd -o (repeatable)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary root")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="the module also opens and solves a case per faulty detector",
    )
    ap.add_argument(
        "--py-spy",
        dest="spy",
        metavar="FILE",
        help="profile the daemon with py-spy (--gil, raw format) into "
        "FILE.ingest (until the last ack) and FILE.quiesce",
    )
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fmd-bench-"))
    root = work / "root"
    root.mkdir()
    fmd = Daemon(root, args.props, args.diagnose)
    try:
        blocks = make_blocks(args.n, args.detectors, args.block)
        fmd.start()
        spy = start_py_spy(fmd, f"{args.spy}.ingest") if args.spy else None
        elapsed, ok, errors = stream(fmd.paths.xprt_socket, blocks, args.n)
        t_ack = time.perf_counter()
        if spy is not None:
            stop_py_spy(spy)
            spy = start_py_spy(fmd, f"{args.spy}.quiesce")
        assert fmd.adm("quiesce", timeout=600) is True, "fmd did not quiesce in 600 s"
        quiesce = time.perf_counter() - t_ack
        if spy is not None:
            stop_py_spy(spy)
        stats = fmd.adm("stats")
        rc = fmd.stop()
        if errors or ok != args.n:
            print(f"error: {ok} of {args.n} acknowledged; first errors: {errors[:3]}")
            return 1
        base_s, base_n = baseline(fmd.paths.db_file, work)
        assert base_n == args.n, f"errlog holds {base_n} rows, expected {args.n}"

        rate = ok / elapsed
        base_rate = base_n / base_s
        ratio = rate / base_rate
        mod: dict[str, Any] = next((m for m in stats["modules"] if m["name"] == MODULE), {})
        print(
            f"fmd ingest        {ok} ereports acknowledged in {elapsed:.2f} s: {rate:,.0f} events/s"
        )
        print(f"quiesce           {quiesce:.2f} s after the last ack (modules caught up)")
        print(
            f"sqlite3 baseline  {base_n} rows in {base_s:.2f} s: {base_rate:,.0f} rows/s "
            "(executemany, one transaction, WAL, synchronous=FULL)"
        )
        print(
            f"ratio             {ratio:.3f} (target >= {TARGET}) "
            f"{'OK' if ratio >= TARGET else 'BELOW TARGET'}"
        )
        print(f"writer            {stats['writer']}")
        w = stats["writer"]
        if w.get("txns"):
            print(
                f"                  {w['events'] / w['txns']:.0f} events/txn, "
                f"{w['ops'] / w['txns']:.1f} ops/txn"
            )
        print(
            f"module {MODULE}  received {mod.get('ev_recv')}, accepted {mod.get('ev_acpt')}, "
            f"cases solved {mod.get('solved')}, busy {mod.get('busy_ns', 0) / 1e9:.2f} s"
            + (" (diagnosing)" if args.diagnose else " (SERD recording)")
        )
        print(f"fmd exit status   {rc}")
        return 0
    finally:
        if fmd.proc is not None:
            fmd.proc.kill()
            fmd.proc.wait()
        if args.keep:
            print(f"root kept in      {root}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
