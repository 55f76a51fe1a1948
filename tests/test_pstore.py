"""Tests for fmd.xprts.pstore: machine checks in the previous boot's pstore panic log."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from fmd.xprts import pstore as pstore_mod
from fmd.xprts.pstore import MAX_REMEMBERED, PstoreSource, _remember, pstore_mounted
from tests.source_harness import SourceBench

# A dmesg dump as ramoops / efi-pstore save it: header line, printk prefixes.
_HW = "mce: [Hardware Error]:"
PANIC = f"""\
Panic#1 Part1
<6>[  511.902113] EDAC MC0: Giving out device to module ie31200_edac
<0>[  512.123456] {_HW} CPU 0: Machine Check Exception: 5 Bank 4: b200000000070f0f
<0>[  512.123460] {_HW} TSC 1f0c3a9d2b4
<0>[  512.123462] {_HW} PROCESSOR 0:306c3 TIME 1690000000 SOCKET 0 APIC 0 microcode 27
<0>[  512.123465] {_HW} Run the above through 'mcelog --ascii'
<0>[  512.123470] {_HW} Machine check: Processor context corrupt
<0>[  512.123475] Kernel panic - not syncing: Fatal machine check
<0>[  512.123480] Kernel Offset: disabled
"""

# A console dump whose record has no TIME: it takes the file's time.
CONSOLE = """\
[  88.000001] mce: [Hardware Error]: CPU 5: Machine Check Exception: 5 Bank 1: b200000000000151
[  88.000002] mce: [Hardware Error]: TSC 55
[  88.000003] Kernel panic - not syncing: Fatal machine check
"""

SAVED_S = 1_690_000_500


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "pstore"
    root.mkdir()
    return root


def _write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    os.utime(path, (SAVED_S, SAVED_S))
    return path


def _source(bench: SourceBench, root: Path, **kw: Any) -> PstoreSource:
    return PstoreSource(
        bench.ingest, start=bench.position("pstore"), root=root, mountinfo=None, **kw
    )


def test_panic_block_becomes_that_boots_fatal_telemetry(tmp_path: Path) -> None:
    """The mce block in a dmesg dump is stored with its own TIME, once."""
    root = _tree(tmp_path)
    _write(root, "dmesg-efi-169000000001001", PANIC)
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, root)
        bench.poll_once(src)
        evs = bench.ereports()
        assert [(ev.payload["cpuid"], ev.payload["bank_number"]) for ev in evs] == [(0, 4)]
        assert evs[0].time_ns == 1_690_000_000 * 10**9
        assert evs[0].payload["processor_context_corrupt"] is True
        assert src.stats.rejected == 0


def test_record_without_time_takes_the_files_time(tmp_path: Path) -> None:
    """A record with no TIME line is dated when pstore saved it (the file's mtime)."""
    root = _tree(tmp_path)
    _write(root, "console-ramoops-0", CONSOLE)
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(_source(bench, root))
        evs = bench.ereports()
        assert [ev.time_ns for ev in evs] == [SAVED_S * 10**9]
        assert evs[0].payload["cpuid"] == 5


def test_each_file_is_taken_once_across_scans_and_restarts(tmp_path: Path) -> None:
    """Taken files are remembered in the committed position; a restart adds nothing."""
    root = _tree(tmp_path)
    _write(root, "dmesg-ramoops-0", PANIC)
    db = tmp_path / "db"
    with SourceBench(db) as bench:
        src = _source(bench, root)
        bench.poll_once(src)
        bench.poll_once(src)
        assert len(bench.ereports()) == 1
    with SourceBench(db) as bench:
        src = _source(bench, root)
        bench.poll_once(src)
        assert len(bench.ereports()) == 1
        _write(root, "dmesg-ramoops-1", CONSOLE)  # a new dump appears
        bench.poll_once(src)
        assert len(bench.ereports()) == 2
        pos = bench.position("pstore")
        assert pos is not None and pos.ident == "pstore" and pos.offset == 2
        assert len(pos.document()["taken"]) == 2


def test_dumps_without_a_saved_time_are_told_apart_by_content(tmp_path: Path) -> None:
    """Two same-size dumps under one name with no saved time (mtime 0) are both taken."""
    root = _tree(tmp_path)
    path = _write(root, "dmesg-ramoops-0", PANIC)
    os.utime(path, (0, 0))
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, root)
        bench.poll_once(src)
        bench.poll_once(src)
        path.write_text(PANIC.replace("CPU 0:", "CPU 2:"))
        os.utime(path, (0, 0))
        bench.poll_once(src)
        assert [ev.payload["cpuid"] for ev in bench.ereports()] == [0, 2]


def test_file_killed_before_its_commit_is_read_again(tmp_path: Path) -> None:
    """A file read but not committed (fmd killed) is taken after the restart, whole."""
    root = _tree(tmp_path)
    path = _write(root, "dmesg-erst-7012345678901234567", PANIC)
    db = tmp_path / "db"
    with SourceBench(db) as bench:
        src = _source(bench, root, remove=True)
        assert src.probe() is None
        batches = src.read()
        assert len(next(batches).items) == 1
        batches.close()  # killed here: nothing committed, nothing removed
    assert path.exists()
    with SourceBench(db) as bench:
        bench.poll_once(_source(bench, root, remove=True))
        assert len(bench.ereports()) == 1
    assert not path.exists()


def test_remove_deletes_after_commit_and_keep_is_default(tmp_path: Path) -> None:
    """remove=True deletes a file once its events are committed; without it files stay."""
    root = _tree(tmp_path)
    kept = _write(root, "dmesg-efi-1", PANIC)
    with SourceBench(tmp_path / "db1") as bench:
        bench.poll_once(_source(bench, root))
        assert kept.exists()
    with SourceBench(tmp_path / "db2") as bench:
        bench.poll_once(_source(bench, root, remove=True))
        assert len(bench.ereports()) == 1
        assert not kept.exists()


def test_compressed_file_is_rejected_once_and_kept(tmp_path: Path) -> None:
    """A *.enc.z file is a counted rejection, taken once, never removed."""
    root = _tree(tmp_path)
    packed = _write(root, "dmesg-efi-2.enc.z", b"x\x9c\x01\x02\x03")
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, root, remove=True)
        bench.poll_once(src)
        bench.poll_once(src)
        assert src.stats.reasons == {"compressed pstore record": 1}
        assert packed.exists()
        assert bench.ereports() == []


def test_other_pstore_kinds_are_ignored(tmp_path: Path) -> None:
    """pmsg and ftrace dumps hold no kernel log: not read, not taken."""
    root = _tree(tmp_path)
    _write(root, "pmsg-ramoops-0", PANIC)
    _write(root, "ftrace-ramoops-0", PANIC)
    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(_source(bench, root))
        assert bench.ereports() == []
        assert bench.position("pstore") is None


def test_unreadable_record_text_is_counted(tmp_path: Path) -> None:
    """A machine-check record the text parser refuses is a rejection; the rest is stored."""
    root = _tree(tmp_path)
    bad = "mce: [Hardware Error]: CPU 1: Machine Check Exception: 5 Bank 2: 3200000000000151\n\n"
    _write(root, "dmesg-efi-3", bad + PANIC)
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, root)
        bench.poll_once(src)
        assert len(bench.ereports()) == 1
        assert src.stats.reasons == {"pstore machine-check record unreadable": 1}


def test_line_parser_hook_adds_other_kernel_lines(tmp_path: Path) -> None:
    """A kernel-log parser given as line_parser contributes its ereports; a failing one is
    counted and does not lose the machine-check records."""
    root = _tree(tmp_path)
    _write(root, "dmesg-efi-4", PANIC)
    seen: list[str] = []

    def edac(text: str) -> Iterable[dict[str, Any]]:
        seen.append(text)
        return [{"class": "ereport.fm.test.edac", "time": 1_690_000_001, "detector": "hc:///"}]

    with SourceBench(tmp_path / "db") as bench:
        bench.poll_once(_source(bench, root, line_parser=edac))
        assert seen == [PANIC]
        assert sorted(ev.cls for ev in bench.ereports())[-1] == "ereport.fm.test.edac"
        assert len(bench.ereports()) == 2

    def broken(text: str) -> Iterable[dict[str, Any]]:
        raise ValueError("parser defect")

    with SourceBench(tmp_path / "db2") as bench:
        src = _source(bench, root, line_parser=broken)
        bench.poll_once(src)
        assert len(bench.ereports()) == 1
        assert src.stats.reasons == {"kernel-log parser failed": 1}


def test_unreadable_file_is_counted_once_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be read now is not taken: counted once, read at a later scan."""
    root = _tree(tmp_path)
    _write(root, "dmesg-efi-5", PANIC)
    real_open = open
    refuse = [True]

    def flaky_open(path: Any, *args: Any, **kw: Any) -> Any:
        if refuse[0] and str(path).endswith("dmesg-efi-5"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kw)

    monkeypatch.setattr(pstore_mod, "open", flaky_open, raising=False)
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, root)
        bench.poll_once(src)
        bench.poll_once(src)
        assert src.stats.reasons == {"pstore file unreadable": 1}
        assert bench.ereports() == []
        refuse[0] = False
        bench.poll_once(src)
        assert len(bench.ereports()) == 1


def test_probe_reasons(tmp_path: Path) -> None:
    """No directory, or no pstore filesystem on it, is 'no pstore mounted'."""
    with SourceBench(tmp_path / "db") as bench:
        missing = PstoreSource(bench.ingest, root=tmp_path / "nope", mountinfo=None)
        assert missing.probe() == f"no pstore mounted ({tmp_path / 'nope'} does not exist)"
        root = _tree(tmp_path)
        mountinfo = tmp_path / "mountinfo"
        mountinfo.write_text(
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
            f"31 22 0:27 / {tmp_path / 'elsewhere'} rw - pstore pstore rw\n"
        )
        unmounted = PstoreSource(bench.ingest, root=root, mountinfo=mountinfo)
        assert unmounted.probe() == f"no pstore mounted on {root}"
        with mountinfo.open("a") as fh:
            fh.write(f"32 22 0:28 / {root} rw,nosuid,nodev,noexec - pstore pstore rw\n")
        mounted = PstoreSource(bench.ingest, root=root, mountinfo=mountinfo)
        assert mounted.probe() is None
        unknown = PstoreSource(bench.ingest, root=root, mountinfo=tmp_path / "no-mountinfo")
        assert unknown.probe() is None


def test_pstore_mounted_reads_escaped_mount_points(tmp_path: Path) -> None:
    """Mount points with spaces are written \\040 in mountinfo."""
    root = tmp_path / "a dir"
    info = tmp_path / "mountinfo"
    info.write_text(f"40 1 0:30 / {str(root).replace(' ', chr(92) + '040')} rw - pstore none rw\n")
    assert pstore_mounted(root, info) is True


def test_taken_list_is_bounded_absent_files_forgotten_first() -> None:
    """Past MAX_REMEMBERED, identities of files no longer present go first."""
    taken = [f"f{i}" for i in range(MAX_REMEMBERED)]
    present = {f"f{i}" for i in range(0, MAX_REMEMBERED, 2)} | {"new"}
    out = _remember(taken, "new", present)
    assert len(out) == MAX_REMEMBERED
    assert "f1" not in out and "f0" in out and out[-1] == "new"
    everything_present = set(taken) | {"new"}
    out = _remember(taken, "new", everything_present)
    assert len(out) == MAX_REMEMBERED and out[0] == "f1"
