"""The same hardware event, once: record identities, the dedup memory, and the daemon."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.hw.dedup import (
    HardwareDedup,
    identity_ena,
    is_identity_ena,
    record_identity,
)
from fmd.xprts.source import Batch, Position, Source
from tests.fmdproc import FmdProcess
from tests.source_harness import SourceBench

# What a real 6.1 kernel logged for one QEMU-injected corrected error
# (real-kernel-harness.md), once on the console and once in the tracepoint form.
KERNEL_BLOCK = """\
mce: [Hardware Error]: Machine check events logged
mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 1: 9000000000000151
mce: [Hardware Error]: TSC 0\x20
mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1795987519 SOCKET 0 APIC 1 microcode 1000065
"""
RAW = {"cpu": 1, "bank": 1, "status": "0x9000000000000151", "tsc": "0x0", "time": 1795987519}


def test_identity_needs_the_records_own_time_or_tsc() -> None:
    """A record without TIME and without a TSC has no identity (hand-written input)."""
    assert record_identity({"cpu": 1, "bank": 1, "status": "0x9000000000000151"}) is None
    assert record_identity(RAW) is not None
    assert record_identity({**RAW, "time": None, "tsc": "0x1234"}) is not None


def test_invalid_address_registers_do_not_change_the_identity() -> None:
    """ADDR and MISC count only when the status says they are valid, so a source that
    prints zeros for them and one that leaves them out name the same event."""
    with_zeros = {**RAW, "addr": "0x0", "misc": "0x0"}
    assert record_identity(with_zeros) == record_identity(RAW)
    valid = {**RAW, "status": "0x9c00000000000151", "addr": "0x1000", "misc": "0x86"}
    other = {**valid, "addr": "0x2000"}
    assert record_identity(valid) != record_identity(other)


@given(st.dictionaries(st.sampled_from([*sorted(RAW), "addr", "misc", "apicid"]), st.text()))
def test_identity_never_raises(raw: dict[str, str]) -> None:
    """Arbitrary member values give an identity or None, never an exception."""
    ident = record_identity(raw)
    assert ident is None or isinstance(ident, tuple)


def test_identity_ena_is_a_marked_format2_ena() -> None:
    """The ENA of an identity is format 2 and recognisable; other ENAs are not taken for one."""
    ena = identity_ena((1, -1, 1, 0x9000000000000151, -1, -1, 0, 1795987519))
    assert (ena & 3, is_identity_ena(ena)) == (2, True)
    assert is_identity_ena(0x1234_5678_0001) is False


def test_claim_forget_and_window() -> None:
    """A claimed event is a duplicate the second time; a forgotten one is not; events
    older than the window behind the newest are taken as new; the count is bounded."""
    d = HardwareDedup(window_ns=100, max_entries=3)
    assert (d.claim(10, 1000), d.claim(10, 1000)) == (True, False)
    d.forget([10])
    assert d.claim(10, 1000) is True
    assert d.claim(11, 800) is True  # older than the window: not remembered
    assert d.claim(11, 800) is True
    for ena in (12, 13, 14):
        d.claim(ena, 1000)
    assert len(d) == 3
    assert d.claim(10, 1000) is True  # pushed out by the bound


def test_preload_keeps_only_identity_enas() -> None:
    """Preloading from the log remembers identity ENAs and skips generated ones."""
    d = HardwareDedup()
    ena = identity_ena((1,))
    assert d.preload([(ena, 5), (0x1234_0001, 5)]) == 1
    assert d.claim(ena, 5) is False


class _Repeat(Source):
    """A source that yields the same kernel record several times."""

    kind = "test"

    def __init__(self, bench: SourceBench, copies: int) -> None:
        super().__init__(bench.ingest, "repeat", None)
        self.copies = copies

    def probe(self) -> str | None:
        return None

    def read(self) -> list[Batch]:
        return [Batch([{"mca": dict(RAW)}], Position("b", i)) for i in range(self.copies)]


def test_copies_from_a_source_are_counted_not_stored(tmp_path: Path) -> None:
    """Five copies of one kernel record make one stored ereport and four duplicates."""
    with SourceBench(tmp_path) as bench:
        bench.ingest.dedup = HardwareDedup()
        src = _Repeat(bench, 5)
        bench.poll_once(src)
        assert (len(bench.ereports()), src.stats.duplicates, src.stats.rejected) == (1, 4, 0)


@pytest.mark.e2e
def test_one_kernel_record_injected_five_times_is_one_ereport(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fminject of the same kernel block five times stores one ereport, says so, and a
    restarted fmd still knows the event (it is primed from the log)."""
    fmd = FmdProcess(root, props={"platform": "sim"})
    fmd_factory.append(fmd)
    fmd.start()
    src = tmp_path / "dmesg.txt"
    src.write_text(KERNEL_BLOCK * 5)
    out = fmd.cli("fminject", str(src))
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert out.stdout.splitlines()[-1] == (
        "fminject: 5 of 5 events accepted (4 already stored, not stored again)"
    )
    assert len(fmd.errlog_json()) == 1
    fmd.stop()
    fmd.start()
    out = fmd.cli("fminject", "-q", str(src))
    assert (out.returncode, out.stderr) == (0, "")
    stored = fmd.errlog_json()
    assert len(stored) == 1
    out = fmd.cli("fmstat", "-t", "--json")
    [row] = [r for r in orjson.loads(out.stdout) if r["module"] == "socket"]
    assert row["ev_dup"] == 5
