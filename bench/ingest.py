"""Ingest benchmark: acknowledged events per second through the real path, against
plain sqlite3, with memory, storage and catch-up figures.

Starts the real daemon (``fmd -f``) in a temporary root on the sim platform
(16 CPUs, 32 DIMMs), streams events through ``var/run/fmd/xprt.sock`` from a
pipelined client (one thread writes, the main thread reads the
acknowledgements), and reports, in one run:

* **events/s**: acknowledged (durably committed) events per second, from the
  first byte sent to the last acknowledgement;
* **catch-up**: the time from the last acknowledgement until every module has
  consumed and checkpointed everything (``quiesce``);
* **peak RSS** of the daemon (``VmHWM``), the largest WAL seen while it ran,
  and the **bytes per event** of the database (file and WAL, after a clean
  stop);
* the **sqlite3 baseline**: a plain ``executemany`` of the very rows fmd
  stored, one transaction, WAL, ``synchronous=FULL``, into a table built from
  fmd's own ``errlog`` definition; and, when ingest coalesced identical
  ereports (``xprt.coalesce``), of one row per event as a naive store would
  write them.  **ratio** = fmd's events/s / the baseline's rows/s.

Modes:

``mix`` (default)  the realistic mix: 80% raw machine-check records over every
                   CPU and bank (corrected cache, TLB and bus errors), 10%
                   memory errors with addresses all over memory, 10%
                   ``ereport.io.*``, decoded by fmd and diagnosed by its real
                   modules (cpumem-diagnosis, the retire agent, syslog-msgs,
                   self-diagnosis).
``storm``          corrected memory errors on one DIMM, spread over 16,384
                   pages (default 1,000,000 of them): the storm fmd must absorb
                   at bounded cost.  Also prints the cases made.
``synthetic``      ``ereport.bench.*`` JSON to the ``serd-bench`` module
                   (bench/plugins/serd_bench.py): the easy path, as before.

    python -m bench.ingest [--mode mix|storm|synthetic] [-n N] [-o name=value ...] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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
TARGET = 0.35
T0 = 1_700_000_000

# Corrected MCi_STATUS values (VAL|EN, and MISCV|ADDRV for memory) of the mix.
CPU_ERRORS = (
    (0, "0x9400000000000105"),  # bank 0: L1 dcache
    (1, "0x9400000000000101"),  # bank 1: L1 icache
    (2, "0x940000000000010a"),  # bank 2: L2 generic
    (3, "0x9400000000000e0f"),  # bank 3: bus/interconnect
    (4, "0x9400000000000111"),  # bank 4: L1 icache TLB
)
MEM_CE = "0x8c00004000010090"
MEM_MISC = "0x86"
CPUS = 16
# The sim platform decodes chip = pa[35:34], channel = pa[12], dimm = pa[13],
# rank = pa[14]; bits 15 and up pick the page within a rank.
DIMM0 = 1 << 32
STORM_PAGES = 16_384


class Daemon:
    """``fmd -f`` in a root of its own, driven over its control socket."""

    def __init__(self, root: Path, props: list[str], synthetic: bool, diagnose: bool) -> None:
        self.root = root
        self.paths = Paths(root)
        self.props = props
        self.synthetic = synthetic
        self.diagnose = diagnose
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "fmd.stderr"

    def start(self, timeout: float = 60.0) -> None:
        if self.synthetic:
            self.paths.plugin_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(PLUGIN, self.paths.plugin_dir / PLUGIN.name)
        if self.diagnose:
            self.paths.plugin_conf_dir.mkdir(parents=True, exist_ok=True)
            self.paths.plugin_conf(MODULE).write_text("setprop diagnose true\n")
        args = [sys.executable, "-m", "fmd.cli.fmd", "-R", str(self.root), "-f"]
        for p in ["log.format=json", "log.level=warning", "platform=sim", *self.props]:
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
        with AdmClient(self.paths.adm_socket, timeout=3600) as c:
            return c.call(op, **args)

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self, timeout: float = 600.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc


# -- what is sent ---------------------------------------------------------------


# Time-stamp counters of the records (a 2 GHz clock, records 1 ms apart): real
# kernel records carry one, and it is part of what tells two of them apart
# (fmd.hw.dedup).
TSC0 = 0x1_0000_0000
TSC_STEP = 2_000_000


def mix_lines(n: int, seed: int = 1) -> Iterator[bytes]:
    """The realistic mix (see the module doc), one wire line each."""
    rng = random.Random(seed)
    for i in range(n):
        t = T0 + i // 50  # 50 events a second of error time
        r = rng.random()
        if r < 0.8:
            bank, status = CPU_ERRORS[rng.randrange(len(CPU_ERRORS))]
            mca: dict[str, Any] = {"cpu": rng.randrange(CPUS), "bank": bank, "status": status}
        elif r < 0.9:
            addr = rng.randrange(1 << 36) & ~0x3F
            mca = {"cpu": rng.randrange(CPUS), "bank": 8, "status": MEM_CE, "addr": hex(addr)}
            mca["misc"] = MEM_MISC
        else:
            yield orjson.dumps(
                {
                    "class": "ereport.io.pciex.rc.ce-msg",
                    "detector": f"hc:///motherboard=0/hostbridge=0/pciexrc={i % 4}",
                    "rc-status": rng.randrange(1 << 16),
                    "time": t,
                }
            )
            continue
        mca["time"] = t
        mca["tsc"] = hex(TSC0 + i * TSC_STEP)  # as the kernel logs it: each record its own
        yield orjson.dumps({"mca": mca})


def storm_lines(n: int) -> Iterator[bytes]:
    """Corrected memory errors on one DIMM (chip 0, channel 0, DIMM 0, rank 0),
    cycling over STORM_PAGES pages."""
    for i in range(n):
        addr = DIMM0 + (i % STORM_PAGES) * 0x8000
        mca = {"cpu": 0, "bank": 8, "status": MEM_CE, "addr": hex(addr), "misc": MEM_MISC}
        mca["time"] = T0 + i // 1000
        mca["tsc"] = hex(TSC0 + i * TSC_STEP)
        yield orjson.dumps({"mca": mca})


def synthetic_lines(n: int, detectors: int = 4096) -> Iterator[bytes]:
    """``ereport.bench.*`` JSON for the serd-bench module."""
    for i in range(n):
        yield orjson.dumps(
            {
                "class": "ereport.bench.cpu.ce",
                "detector": f"cpu:///cpuid={i % detectors}",
                "seq": i,
                "bank": i % 8,
                "addr": 0x1000 * i,
            }
        )


def blocks_of(lines: Iterator[bytes], block: int) -> list[bytes]:
    """The wire lines in blocks, prepared before timing so that the client costs little."""
    out: list[bytes] = []
    part: list[bytes] = []
    for line in lines:
        part.append(line + b"\n")
        if len(part) == block:
            out.append(b"".join(part))
            part = []
    if part:
        out.append(b"".join(part))
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


class WalWatch:
    """Samples the size of the database's WAL while fmd runs; remembers the largest."""

    def __init__(self, db: Path) -> None:
        self.wal = db.with_name(db.name + "-wal")
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(OSError):
                self.largest = max(self.largest, self.wal.stat().st_size)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.largest


# -- the baseline -------------------------------------------------------------------


def baseline(db: Path, work: Path, *, per_event: bool) -> tuple[float, int]:
    """Time a plain sqlite3 executemany of fmd's own errlog rows into a fresh table;
    ``per_event`` writes each coalesced record once per event it stands for."""
    cols = [c.name for c in schema.errlog.columns]
    names = ", ".join(f'"{c}"' for c in cols)
    src = sqlite3.connect(db)
    rows = src.execute(f"SELECT {names} FROM errlog ORDER BY id").fetchall()
    src.close()
    # As ingest inserts them: RECEIVED and not yet committed.
    ids, state, committed = cols.index("id"), cols.index("state"), cols.index("committed")
    count, last = cols.index("count"), cols.index("last_ns")
    fresh = []
    next_id = 1
    for r in rows:
        copies = int(r[count]) if per_event else 1
        for _ in range(copies):
            row = list(r)
            row[ids] = next_id
            next_id += 1
            row[state], row[committed] = states.STATE_RECEIVED, 0
            if per_event:
                row[count], row[last] = 1, None
            fresh.append(tuple(row))
    path = work / "baseline.db"
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
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


# -- py-spy ----------------------------------------------------------------------------


def start_py_spy(fmd: Daemon, out: str) -> subprocess.Popen[bytes]:
    """Sample the daemon's GIL holder (py-spy must be installed next to this Python)."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    assert fmd.proc is not None
    options = ["--gil", "--threads", "--rate", "200", "--format", "raw"]
    return subprocess.Popen(
        [exe, "record", *options, "--output", out, "--pid", str(fmd.proc.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    spy.wait(60)


# -- the run -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("mix", "storm", "synthetic"), default="mix")
    ap.add_argument("-n", type=int, help="events to send (default: 200000; storm 1000000)")
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
        "--diagnose", action="store_true", help="synthetic: serd-bench also solves cases"
    )
    ap.add_argument(
        "--py-spy",
        dest="spy",
        metavar="FILE",
        help="profile the daemon with py-spy (--gil, raw format) into "
        "FILE.ingest (until the last ack) and FILE.quiesce",
    )
    args = ap.parse_args(argv)
    n = args.n or (1_000_000 if args.mode == "storm" else 200_000)

    work = Path(tempfile.mkdtemp(prefix="fmd-bench-"))
    root = work / "root"
    root.mkdir()
    synthetic = args.mode == "synthetic"
    fmd = Daemon(root, args.props, synthetic, args.diagnose)
    lines = {"mix": mix_lines, "storm": storm_lines, "synthetic": synthetic_lines}[args.mode]
    try:
        blocks = blocks_of(lines(n), args.block)
        fmd.start()
        wal = WalWatch(fmd.paths.db_file)
        spy = start_py_spy(fmd, f"{args.spy}.ingest") if args.spy else None
        elapsed, ok, errors = stream(fmd.paths.xprt_socket, blocks, n)
        t_ack = time.perf_counter()
        if spy is not None:
            stop_py_spy(spy)
            spy = start_py_spy(fmd, f"{args.spy}.quiesce")
        assert fmd.adm("quiesce", timeout=3600) is True, "fmd did not catch up in an hour"
        catch_up = time.perf_counter() - t_ack
        if spy is not None:
            stop_py_spy(spy)
        stats = fmd.adm("stats")
        faulty = fmd.adm("faulty", all=True)["cases"]
        peak = fmd.peak_rss_mb()
        rc = fmd.stop()
        largest_wal = wal.stop()
        if errors or ok != n:
            print(f"error: {ok} of {n} acknowledged; first errors: {errors[:3]}")
            return 1
        db = fmd.paths.db_file
        size = db.stat().st_size + sum(
            Path(f"{db}{s}").stat().st_size for s in ("-wal",) if Path(f"{db}{s}").exists()
        )
        con = sqlite3.connect(db)
        rows = con.execute("SELECT count(*) FROM errlog").fetchone()[0]
        con.close()
        base_s, base_n = baseline(db, work, per_event=False)
        rate = ok / elapsed
        base_rate = base_n / base_s
        print(f"mode              {args.mode}, {n} events, properties {args.props or 'default'}")
        print(
            f"fmd ingest        {ok} events acknowledged in {elapsed:.2f} s: {rate:,.0f} events/s"
        )
        print(f"catch-up          {catch_up:.2f} s after the last ack (every module caught up)")
        print(f"stored            {rows} error-log records ({ok / max(rows, 1):.1f} events each)")
        print(f"peak RSS          {peak:.0f} MB")
        print(f"storage           {size / ok:.0f} bytes per event ({size / 2**20:.1f} MiB)")
        print(f"largest WAL       {largest_wal / 2**20:.1f} MiB")
        print(
            f"sqlite3 baseline  {base_n} rows in {base_s:.2f} s: {base_rate:,.0f} rows/s "
            "(the rows fmd stored; executemany, one transaction, WAL, synchronous=FULL)"
        )
        print(f"ratio             {rate / base_rate:.3f} (target >= {TARGET})")
        if rows != ok:
            per_s, per_n = baseline(db, work, per_event=True)
            per_rate = per_n / per_s
            print(
                f"naive baseline    {per_n} rows (one per event) in {per_s:.2f} s: "
                f"{per_rate:,.0f} rows/s; ratio {rate / per_rate:.3f}"
            )
        w = stats["writer"]
        if w.get("txns"):
            print(
                f"writer            {w['txns']} transactions, {w['events'] / w['txns']:.0f} "
                f"events/txn, {w['ops'] / w['txns']:.1f} ops/txn"
            )
        kinds: dict[str, int] = {}
        for case in faulty:
            for s in case["suspects"]:
                kinds[s["class"]] = kinds.get(s["class"], 0) + 1
        print(f"cases             {len(faulty)}: {kinds}")
        for m in stats["modules"]:
            print(
                f"  {m['name']:<22} received {m['ev_recv']}, busy {m['busy_ns'] / 1e9:.1f} s, "
                f"open {m['open']}"
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
