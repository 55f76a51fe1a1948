"""The EDAC sysfs counter source against fake sysfs trees: increases, resets, boots, restarts."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fmd.hw.mca import MEM_CE_CLASS, MEM_UE_CLASS
from fmd.xprts.edac import (
    NO_MC_REASON,
    RESET_REASON,
    EdacSource,
    discover,
    parse_count,
    parse_location,
)
from fmd.xprts.source import STATE_RUN, Position
from tests.source_harness import SourceBench, payloads

BOOT_A = "6b1e1f7e-0000-4000-8000-00000000000a"
BOOT_B = "6b1e1f7e-0000-4000-8000-00000000000b"
NAME = "edac"
SIM_DIMM_0_1 = (
    "hc://:product-id=fmd-sim:chassis-id=SIM0001:server-id=h/motherboard=0/chip=0/"
    "memory-controller=0/dram-channel=0/dimm=1"
)


class FakeEdac:
    """A fake ``/sys/devices/system/edac/mc`` tree and boot id file."""

    def __init__(self, base: Path, boot: str = BOOT_A) -> None:
        self.sysfs = base / "sys"
        self.mc_root = self.sysfs / "devices/system/edac/mc"
        self.mc_root.mkdir(parents=True)
        self.boot_id = base / "boot_id"
        self.boot(boot)

    def boot(self, boot: str) -> None:
        self.boot_id.write_text(boot + "\n")

    def dimm(
        self,
        mc: int,
        n: int,
        *,
        label: str = "",
        location: str = "",
        ce: int = 0,
        ue: int = 0,
        unit: str = "dimm",
    ) -> Path:
        d = self.mc_root / f"mc{mc}" / f"{unit}{n}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "dimm_label").write_text(label + "\n")
        (d / "dimm_location").write_text(location + "\n")
        (d / "size").write_text("8192\n")
        self.set(mc, n, ce=ce, ue=ue, unit=unit)
        return d

    def set(
        self, mc: int, n: int, *, ce: int | None = None, ue: int | None = None, unit: str = "dimm"
    ) -> None:
        d = self.mc_root / f"mc{mc}" / f"{unit}{n}"
        if ce is not None:
            (d / "dimm_ce_count").write_text(f"{ce}\n")
        if ue is not None:
            (d / "dimm_ue_count").write_text(f"{ue}\n")

    def noinfo(self, mc: int, *, ce: int = 0, ue: int = 0) -> None:
        d = self.mc_root / f"mc{mc}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "ce_noinfo_count").write_text(f"{ce}\n")
        (d / "ue_noinfo_count").write_text(f"{ue}\n")

    def csrow(self, mc: int, row: int, channels: dict[int, tuple[str, int]], ue: int = 0) -> None:
        d = self.mc_root / f"mc{mc}" / f"csrow{row}"
        d.mkdir(parents=True, exist_ok=True)
        for ch, (label, ce) in channels.items():
            (d / f"ch{ch}_dimm_label").write_text(label + "\n")
            (d / f"ch{ch}_ce_count").write_text(f"{ce}\n")
        (d / "ue_count").write_text(f"{ue}\n")

    def source(self, bench: SourceBench, start: Position | None = None) -> EdacSource:
        return EdacSource(
            bench.ingest, NAME, start, sysfs=self.sysfs, boot_id=self.boot_id, poll=0.01
        )


def _counts(bench: SourceBench) -> list[int]:
    return [p["error_count"] for p in payloads(bench.ereports())]


def test_probe_names_a_missing_edac_driver(tmp_path: Path) -> None:
    """Without memory controllers the source says an EDAC driver is needed."""
    fake = FakeEdac(tmp_path)
    with SourceBench(tmp_path / "db") as bench:
        assert fake.source(bench).probe() == NO_MC_REASON


def test_probe_names_an_unreadable_boot_id(tmp_path: Path) -> None:
    """Without a boot id the restart semantics cannot hold: the source says so."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0)
    fake.boot_id.unlink()
    with SourceBench(tmp_path / "db") as bench:
        reason = fake.source(bench).probe()
    assert reason is not None and reason.startswith("cannot read the boot id")


def test_first_start_takes_the_counts_since_boot_as_a_baseline(tmp_path: Path) -> None:
    """A fresh start reports nothing for the counts the kernel already had, and commits them."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 1, label="CPU 0 DIMM 1", location="channel 0 slot 1", ce=5, ue=1)
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
        assert bench.ereports() == []
        pos = bench.position(NAME)
        assert pos is not None
        assert (pos.ident, pos.document()) == (BOOT_A, {"mc0/dimm1/ce": 5, "mc0/dimm1/ue": 1})


def test_an_increase_is_one_ereport_for_its_dimm(tmp_path: Path) -> None:
    """5 -> 8 corrected errors is one mem_ce ereport with error_count 3 for that DIMM."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 1, label="CPU 0 DIMM 1", location="channel 0 slot 1", ce=5)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.set(0, 1, ce=8)
        bench.poll_once(src)
        evs = bench.ereports()
        assert [ev.cls for ev in evs] == [MEM_CE_CLASS]
        p = evs[0].payload
        assert (p["error_count"], p["edac_label"], p["edac_mc"], p["edac_location"]) == (
            3,
            "CPU 0 DIMM 1",
            0,
            [0, 1],
        )
        assert p["resource"] == SIM_DIMM_0_1
        assert p["source"] == "edac-sysfs"


def test_a_large_increase_is_still_one_ereport(tmp_path: Path) -> None:
    """A million new errors in one poll make one ereport carrying the count, not a million."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ue=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.set(0, 0, ue=1_000_000)
        bench.poll_once(src)
        evs = bench.ereports()
        assert [(ev.cls, ev.payload["error_count"]) for ev in evs] == [(MEM_UE_CLASS, 1_000_000)]


def test_an_unchanged_poll_commits_nothing(tmp_path: Path) -> None:
    """Polls that see the same counts write nothing (the poll count stays committed as was)."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=2)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        committed = bench.position(NAME)
        bench.poll_once(src)
        bench.poll_once(src)
        assert bench.position(NAME) == committed
        assert bench.ereports() == []


def test_a_counter_going_down_is_a_reset_not_a_storm(tmp_path: Path) -> None:
    """8 -> 2 (reset_counters) reports nothing and is counted; 2 -> 3 then reports one."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=8)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.set(0, 0, ce=2)
        bench.poll_once(src)
        assert bench.ereports() == []
        assert src.stats.reasons == {RESET_REASON: 1}
        pos = bench.position(NAME)
        assert pos is not None and pos.document() == {"mc0/dimm0/ce": 2, "mc0/dimm0/ue": 0}
        fake.set(0, 0, ce=3)
        bench.poll_once(src)
        assert _counts(bench) == [1]


def test_restart_reports_what_was_counted_while_down(tmp_path: Path) -> None:
    """A restart in the same boot reports the increase since the committed values, once."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 1, label="CPU 0 DIMM 1", ce=5)
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
    fake.set(0, 1, ce=9)  # while fmd is down
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench, bench.position(NAME))
        bench.poll_once(src)
        bench.poll_once(src)
        assert _counts(bench) == [4]


def test_kill_and_restart_reads_nothing_twice_and_skips_nothing(tmp_path: Path) -> None:
    """Counts seen by a killed source before its last commit are not reported again; the
    ones after it are reported by the next instance: the reports add up to the increase."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=0)
    fake.dimm(0, 1, ce=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.set(0, 0, ce=3)
        bench.poll_once(src)
        # More errors, then the source is killed before it polls again.
        fake.set(0, 0, ce=7)
        fake.set(0, 1, ce=2)
    with SourceBench(tmp_path / "db") as bench:
        second = fake.source(bench, bench.position(NAME))
        bench.poll_once(second)
        fake.set(0, 1, ce=5)
        bench.poll_once(second)
        found = sorted(
            (p["message"].split(" ")[0], p["error_count"]) for p in payloads(bench.ereports())
        )
        assert found == [
            ("mc0/dimm0/ce", 3),
            ("mc0/dimm0/ce", 4),
            ("mc0/dimm1/ce", 2),
            ("mc0/dimm1/ce", 3),
        ]
        total = {"mc0/dimm0/ce": 7, "mc0/dimm1/ce": 5}
        for key, want in total.items():
            assert sum(n for k, n in found if k == key) == want


def test_a_new_boot_reports_the_counts_since_boot(tmp_path: Path) -> None:
    """After a reboot the counters restarted at zero: what they hold now is new, not a reset."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=50)
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(fake.source(bench))
    fake.boot(BOOT_B)
    fake.set(0, 0, ce=3)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench, bench.position(NAME))
        bench.poll_once(src)
        assert _counts(bench) == [3]
        assert RESET_REASON not in src.stats.reasons
        pos = bench.position(NAME)
        assert pos is not None and pos.ident == BOOT_B


def test_rank_directories_are_read_like_dimms(tmp_path: Path) -> None:
    """Drivers that expose rank* directories report per rank with the rank's location."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 3, unit="rank", label="DIMM_B1", location="csrow 2 channel 1", ce=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.set(0, 3, unit="rank", ce=2)
        bench.poll_once(src)
        p = payloads(bench.ereports())[0]
        assert (p["edac_location"], p["edac_label"], p["error_count"]) == ([2, 1], "DIMM_B1", 2)


def test_legacy_csrow_counters(tmp_path: Path) -> None:
    """The legacy layout: per-channel CE counts with their labels, and the row's UE count."""
    fake = FakeEdac(tmp_path)
    fake.csrow(0, 2, {0: ("DIMM_A0", 0), 1: ("DIMM_A1", 0)}, ue=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.csrow(0, 2, {0: ("DIMM_A0", 0), 1: ("DIMM_A1", 4)}, ue=1)
        bench.poll_once(src)
        got = sorted(
            (ev.cls, ev.payload.get("edac_label"), ev.payload["edac_location"])
            for ev in bench.ereports()
        )
        assert got == [(MEM_CE_CLASS, "DIMM_A1", [2, 1]), (MEM_UE_CLASS, None, [2])]


def test_csrow_files_are_not_read_beside_dimm_directories(tmp_path: Path) -> None:
    """Where dimm* directories exist the csrow files count the same errors: not read."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=1)
    fake.csrow(0, 0, {0: ("x", 1)})
    keys = [c.key for c in discover(fake.mc_root)]
    assert keys == ["mc0/dimm0/ce", "mc0/dimm0/ue"]


def test_errors_without_a_location_are_reported_for_the_controller(tmp_path: Path) -> None:
    """ce_noinfo_count rising is a memory ereport naming the controller only."""
    fake = FakeEdac(tmp_path)
    fake.dimm(1, 0)
    fake.noinfo(1, ce=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        fake.noinfo(1, ce=2)
        bench.poll_once(src)
        p = payloads(bench.ereports())[0]
        assert (p["edac_mc"], p["error_count"], "resource" in p, "edac_location" in p) == (
            1,
            2,
            False,
            False,
        )


def test_garbage_in_a_counter_is_rejected_once_and_is_not_a_reset(tmp_path: Path) -> None:
    """A counter holding garbage is rejected once (not every poll), keeps its value, and
    reads on normally afterwards; the other counters go on."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=4)
    fake.dimm(0, 1, ce=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        (fake.mc_root / "mc0/dimm0/dimm_ce_count").write_text("\x00garbage\n")
        fake.set(0, 1, ce=1)
        bench.poll_once(src)
        bench.poll_once(src)
        assert src.stats.rejected == 1
        fake.set(0, 0, ce=6)
        bench.poll_once(src)
        assert sorted(_counts(bench)) == [1, 2]
        assert RESET_REASON not in src.stats.reasons


def test_a_counter_that_comes_back_counts_from_zero(tmp_path: Path) -> None:
    """A DIMM whose counters vanish (driver unloaded) and come back counts from zero."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 0, ce=10)
    fake.dimm(0, 1, ce=0)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)
        for f in (fake.mc_root / "mc0/dimm0").iterdir():
            f.unlink()
        (fake.mc_root / "mc0/dimm0").rmdir()
        bench.poll_once(src)
        fake.dimm(0, 0, ce=2)
        bench.poll_once(src)
        assert _counts(bench) == [2]


def test_the_source_runs_on_its_thread(tmp_path: Path) -> None:
    """Started as a thread, the source shows state run and stores an increase."""
    fake = FakeEdac(tmp_path)
    fake.dimm(0, 1, label="CPU 0 DIMM 1", ce=1)
    with SourceBench(tmp_path / "db") as bench:
        src = fake.source(bench)
        bench.poll_once(src)  # the baseline
        fake.set(0, 1, ce=2)
        bench.run_until(src, lambda: len(bench.ereports()) == 1)
        assert src.stats.state == STATE_RUN
        assert _counts(bench) == [1]


@given(
    st.lists(
        st.tuples(st.sampled_from(["channel", "slot", "csrow", "branch"]), st.integers(0, 99)),
        max_size=4,
    )
)
def test_location_layers_are_the_numbers_in_order(pairs: list[tuple[str, int]]) -> None:
    """``dimm_location`` gives its numbers in order, whatever the layer names."""
    text = " ".join(f"{name} {n}" for name, n in pairs)
    assert parse_location(text) == tuple(n for _, n in pairs)


@given(st.text(max_size=40))
def test_parse_location_and_count_never_raise(text: str) -> None:
    """Arbitrary file contents give layers / a count or None, never an exception."""
    assert isinstance(parse_location(text), tuple)
    value = parse_count(text)
    assert value is None or value >= 0


def test_parse_count() -> None:
    """A counter file holds a decimal count and a newline; anything else is not a count."""
    assert [parse_count(t) for t in ("7\n", " 12 ", "-1", "0x10", "", "1e3")] == [
        7,
        12,
        None,
        None,
        None,
        None,
    ]
