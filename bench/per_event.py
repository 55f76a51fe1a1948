"""Per-event cost at two sizes: the same workload at 10,000 and at 100,000
events through the real daemon, side by side.

Every per-event step of fmd (decoding, coalescing, the writer, dispatch,
diagnosis: SERD updates, case joins and membership) should cost the same at
the 100,000th event as at the 10,000th.  For each workload this runs
``fmd -f`` twice on fresh roots (sim platform, the real clock), sends the
events through the ingest socket as ``bench/ingest.py`` does, waits until
every module has caught up, and prints per event: the wall time until then and
the busy time of ``cpumem-diagnosis``, with the ratio of the large run to the
small one (1.0 is constant cost; a step linear in what it has seen shows ~10).

Workloads: ``storm`` (corrected errors over the 16,384 pages of one DIMM),
``mix`` (the realistic mix of bench/ingest.py).

    python -m bench.per_event [--small 10000] [--large 100000] [--mode storm|mix|both]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import Daemon, blocks_of, mix_lines, storm_lines, stream

MODULE = "cpumem-diagnosis"
# A ratio above this is reported as growth.
CONSTANT = 1.5


def run(mode: str, n: int) -> tuple[float, float]:
    """Seconds per event until caught up, and the diagnosis module's busy seconds
    per event, for ``n`` events of ``mode``."""
    work = Path(tempfile.mkdtemp(prefix="fmd-per-event-"))
    root = work / "root"
    root.mkdir()
    fmd = Daemon(root, [], synthetic=False, diagnose=False)
    try:
        lines = mix_lines(n) if mode == "mix" else storm_lines(n)
        blocks = blocks_of(lines, 256)
        fmd.start()
        started = time.perf_counter()
        _, ok, errors = stream(fmd.paths.xprt_socket, blocks, n)
        if ok != n:
            raise SystemExit(f"{mode}: {ok} of {n} acknowledged; first errors: {errors[:3]}")
        assert fmd.adm("quiesce", timeout=3600) is True, "fmd did not catch up in an hour"
        wall = time.perf_counter() - started
        [row] = [m for m in fmd.adm("stats")["modules"] if m["name"] == MODULE]
        fmd.stop()
        return wall / n, row["busy_ns"] / 1e9 / n
    finally:
        if fmd.proc is not None:
            fmd.proc.kill()
            fmd.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--mode", choices=("storm", "mix", "both"), default="both")
    args = ap.parse_args(argv)
    modes = ("storm", "mix") if args.mode == "both" else (args.mode,)
    grew = False
    print(f"{'workload':<10} {'figure':<28} {args.small:>10,} {args.large:>10,}  ratio")
    for mode in modes:
        small = run(mode, args.small)
        large = run(mode, args.large)
        for label, a, b in (
            ("wall time per event (us)", small[0], large[0]),
            (f"{MODULE} busy (us)", small[1], large[1]),
        ):
            ratio = b / a if a else 0.0
            grew |= ratio > CONSTANT
            print(f"{mode:<10} {label:<28} {a * 1e6:10.1f} {b * 1e6:10.1f}  {ratio:5.2f}")
    print(f"verdict: {'GROWS' if grew else 'constant'} (ratio <= {CONSTANT} counts as constant)")
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
