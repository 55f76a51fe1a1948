"""Tests for fmd.xprts.mcelog: the /dev/mcelog source, on files of binary records
and on a stand-in for the kernel driver."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from fmd.hw.mce_struct import MCE_RECORD_LEN, encode_record
from fmd.xprts import mcelog as mcelog_mod
from fmd.xprts.mcelog import KernelDevice, McelogSource
from fmd.xprts.source import Position
from tests.source_harness import SourceBench
from tests.test_mce_struct import AMD, INTEL

BOOT_A = "6f1c3c2e-2b8a-4a59-9a43-0f7c1e0b5d11"
BOOT_B = "0b9d4c55-7a1e-4f0e-8e52-3d2a6c9f8e20"


def _boot(tmp_path: Path, boot: str = BOOT_A) -> Path:
    path = tmp_path / "boot_id"
    path.write_text(boot + "\n")
    return path


def _intel(cpu: int, time: int = 1_682_293_811) -> bytes:
    return encode_record({**INTEL, "extcpu": cpu, "time": time})


def _cpus(bench: SourceBench) -> list[int]:
    return [ev.payload["cpuid"] for ev in bench.ereports()]


def _source(bench: SourceBench, path: Path, tmp_path: Path, **kw: object) -> McelogSource:
    return McelogSource(
        bench.ingest,
        start=bench.position("mcelog"),
        path=path,
        boot_id_path=_boot(tmp_path),
        **kw,  # type: ignore[arg-type]
    )


# -- a file of records ------------------------------------------------------------


def test_file_of_intel_and_amd_records_with_bad_ones(tmp_path: Path) -> None:
    """Whole records are stored; finished==0 and a truncated tail are counted rejections."""
    dump = tmp_path / "mcelog.bin"
    bad = encode_record({**INTEL, "finished": 0})
    dump.write_bytes(_intel(3) + encode_record(AMD) + bad + _intel(4)[:50])
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, dump, tmp_path)
        bench.poll_once(src)
        assert _cpus(bench) == [3, 9]
        assert src.stats.reasons == {"struct mce record not finished": 1}
        # The partial tail may still be being written: it is left for one poll.
        assert bench.position("mcelog") == Position(src.position.ident, 3 * MCE_RECORD_LEN)  # type: ignore[union-attr]
        bench.poll_once(src)
        assert src.stats.reasons == {
            "struct mce record not finished": 1,
            "struct mce record truncated": 1,
        }
        pos = bench.position("mcelog")
        assert pos is not None and pos.offset == dump.stat().st_size
        times = [ev.time_ns for ev in bench.ereports()]
        assert times == [1_682_293_811 * 10**9, 1_682_293_812 * 10**9]


def test_partial_tail_completed_later_is_read_whole(tmp_path: Path) -> None:
    """A record appended in two writes is read once it is whole, not rejected."""
    dump = tmp_path / "mcelog.bin"
    record = _intel(5)
    dump.write_bytes(_intel(3) + record[:60])
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, dump, tmp_path)
        bench.poll_once(src)
        with dump.open("ab") as fh:
            fh.write(record[60:])
        bench.poll_once(src)
        bench.poll_once(src)
        assert _cpus(bench) == [3, 5]
        assert src.stats.rejected == 0


def test_kill_and_restart_reads_nothing_twice_and_skips_nothing(tmp_path: Path) -> None:
    """A batch read but not committed is read again after a restart; a committed one is not."""
    dump = tmp_path / "mcelog.bin"
    dump.write_bytes(_intel(1) + _intel(2) + _intel(3))
    db = tmp_path / "db"
    with SourceBench(db) as bench:
        src = _source(bench, dump, tmp_path)
        assert src.probe() is None
        batches = src.read()
        first = next(batches)  # read, then "killed" before its commit
        assert len(first.items) == 3
        batches.close()
    with SourceBench(db) as bench:
        src = _source(bench, dump, tmp_path)
        bench.poll_once(src)
        assert _cpus(bench) == [1, 2, 3]
    with dump.open("ab") as fh:
        fh.write(_intel(7) + _intel(8))
    with SourceBench(db) as bench:
        src = _source(bench, dump, tmp_path)
        bench.poll_once(src)
        bench.poll_once(src)
        assert _cpus(bench) == [1, 2, 3, 7, 8]
        pos = bench.position("mcelog")
        assert pos is not None and pos.offset == 5 * MCE_RECORD_LEN


def test_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    """A different file at the path (new inode) does not inherit the old offset."""
    dump = tmp_path / "mcelog.bin"
    dump.write_bytes(_intel(1) + _intel(2))
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, dump, tmp_path)
        bench.poll_once(src)
        fresh = tmp_path / "new.bin"
        fresh.write_bytes(_intel(6))
        os.replace(fresh, dump)
        bench.poll_once(src)
        assert _cpus(bench) == [1, 2, 6]


def test_saved_dump_of_an_older_record_length(tmp_path: Path) -> None:
    """record_len reads a dump written by a kernel with shorter records (88 bytes)."""
    dump = tmp_path / "mcelog.bin"
    dump.write_bytes(encode_record({**INTEL, "extcpu": 2}, 88) * 2)
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, dump, tmp_path, record_len=88)
        bench.poll_once(src)
        assert _cpus(bench) == [2, 2]


def test_source_thread_reads_the_file(tmp_path: Path) -> None:
    """Started on its thread, the source reads, commits and stops."""
    dump = tmp_path / "mcelog.bin"
    dump.write_bytes(_intel(1) + encode_record(AMD))
    with SourceBench(tmp_path / "db") as bench:
        src = _source(bench, dump, tmp_path, poll=0.02)
        bench.run_until(src, lambda: len(bench.ereports()) == 2)
        assert src.stats.state == "run"
        assert src.describe()["position"] == f"{src.position.ident}:{2 * MCE_RECORD_LEN}"  # type: ignore[union-attr]


# -- why it cannot run ------------------------------------------------------------


def test_probe_reason_when_the_device_does_not_exist(tmp_path: Path) -> None:
    """ENOENT (and a parent that is a file) mean the kernel has no /dev/mcelog."""
    with SourceBench(tmp_path / "db") as bench:
        missing = _source(bench, tmp_path / "mcelog", tmp_path)
        reason = missing.probe()
        assert reason is not None and reason.startswith(f"kernel has no {tmp_path / 'mcelog'}")
        assert "CONFIG_X86_MCELOG_LEGACY" in reason
        (tmp_path / "afile").write_text("")
        under_file = _source(bench, tmp_path / "afile" / "mcelog", tmp_path, poll=0.0)
        reason = under_file.probe()
        assert reason is not None and reason.startswith("kernel has no")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, "needs root: cannot open"),
        (errno.EPERM, "needs root: cannot open"),
        (errno.EBUSY, "another reader holds"),
        (errno.EIO, "cannot open"),
    ],
)
def test_probe_reason_from_the_open_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, expected: str
) -> None:
    """Permission and busy errors from open() become the reasons fmstat shows."""

    def refuse(path: Path) -> int:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(mcelog_mod, "open_mcelog", refuse)
    with SourceBench(tmp_path / "db") as bench:
        reason = _source(bench, Path("/dev/mcelog"), tmp_path).probe()
        assert reason is not None and reason.startswith(expected)


def test_probe_reason_for_a_device_that_is_not_mcelog(tmp_path: Path) -> None:
    """A character device that refuses the mcelog ioctls is not /dev/mcelog."""
    with SourceBench(tmp_path / "db") as bench:
        reason = _source(bench, Path("/dev/null"), tmp_path).probe()
        assert reason is not None and reason.startswith("/dev/null is not an mcelog device")


def test_probe_reason_for_a_directory(tmp_path: Path) -> None:
    """A directory at the path is neither the device nor a dump."""
    with SourceBench(tmp_path / "db") as bench:
        reason = _source(bench, tmp_path, tmp_path).probe()
        assert reason == f"{tmp_path} is neither the mcelog device nor a file of records"


# -- the kernel driver --------------------------------------------------------------


class FakeDriver:
    """What the kernel's /dev/mcelog does: full-buffer reads that consume, APEI first."""

    def __init__(self, record_len: int = MCE_RECORD_LEN, log_len: int = 32) -> None:
        self.record_len = record_len
        self.log_len = log_len
        self.buffer: list[bytes] = []
        self.apei: list[bytes] = []
        self.flags = 0
        self.ioctl_error: int | None = None
        self.read_error: int | None = None
        self.closed = 0
        self.lock = threading.Lock()


def _install(monkeypatch: pytest.MonkeyPatch, driver: FakeDriver) -> None:
    class FakeDevice(KernelDevice):
        def __init__(self, fd: int) -> None:
            os.close(fd)
            super().__init__(-1)

        def _ioctl_int(self, request: int) -> int:
            if driver.ioctl_error is not None:
                raise OSError(driver.ioctl_error, os.strerror(driver.ioctl_error))
            if request == mcelog_mod.MCE_GET_RECORD_LEN:
                return driver.record_len
            if request == mcelog_mod.MCE_GET_LOG_LEN:
                return driver.log_len
            flags, driver.flags = driver.flags, 0
            return flags

        def wait_readable(self, timeout_s: float) -> bool:
            return bool(driver.buffer or driver.apei)

        def read(self, size: int) -> bytes:
            if driver.read_error is not None:
                raise OSError(driver.read_error, os.strerror(driver.read_error))
            if driver.apei:
                return driver.apei.pop(0)
            if size < driver.record_len * driver.log_len:
                raise OSError(errno.EINVAL, "only full reads")
            with driver.lock:
                data, driver.buffer = b"".join(driver.buffer), []
            return data

        def close(self) -> None:
            driver.closed += 1

    monkeypatch.setattr(mcelog_mod, "KernelDevice", FakeDevice)


def _device_source(
    bench: SourceBench, tmp_path: Path, boot: str = BOOT_A, **kw: object
) -> McelogSource:
    return McelogSource(
        bench.ingest,
        start=bench.position("mcelog"),
        path=Path("/dev/null"),
        boot_id_path=_boot(tmp_path, boot),
        **kw,  # type: ignore[arg-type]
    )


def test_device_records_are_consumed_and_counted_per_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read takes the kernel's records; the position counts them under the boot id."""
    driver = FakeDriver()
    _install(monkeypatch, driver)
    db = tmp_path / "db"
    with SourceBench(db) as bench:
        src = _device_source(bench, tmp_path)
        driver.buffer = [_intel(1), encode_record(AMD)]
        bench.poll_once(src)
        assert driver.buffer == []
        assert _cpus(bench) == [1, 9]
        assert bench.position("mcelog") == Position(f"boot:{BOOT_A}", 2)
        src.close()
    with SourceBench(db) as bench:  # restart, same boot: counting goes on
        src = _device_source(bench, tmp_path)
        driver.buffer = [_intel(4)]
        bench.poll_once(src)
        assert _cpus(bench) == [1, 9, 4]
        assert bench.position("mcelog") == Position(f"boot:{BOOT_A}", 3)
        src.close()
    with SourceBench(db) as bench:  # a new boot counts from zero
        src = _device_source(bench, tmp_path, boot=BOOT_B)
        driver.buffer = [_intel(5)]
        bench.poll_once(src)
        assert bench.position("mcelog") == Position(f"boot:{BOOT_B}", 1)
        src.close()
    assert driver.closed == 3


def test_device_hands_out_saved_apei_records_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records saved by APEI ERST come one per read, then the buffer: all are taken."""
    driver = FakeDriver()
    _install(monkeypatch, driver)
    with SourceBench(tmp_path / "db") as bench:
        src = _device_source(bench, tmp_path)
        driver.apei = [_intel(6, time=1_600_000_000), _intel(7, time=1_600_000_001)]
        driver.buffer = [_intel(2)]
        bench.poll_once(src)
        assert _cpus(bench) == [6, 7, 2]
        assert bench.ereports()[0].time_ns == 1_600_000_000 * 10**9


def test_device_overflow_and_bad_records_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overflow flag and an unfinished record are rejections with reasons."""
    driver = FakeDriver()
    _install(monkeypatch, driver)
    with SourceBench(tmp_path / "db") as bench:
        src = _device_source(bench, tmp_path)
        driver.buffer = [_intel(1), encode_record({**INTEL, "finished": 0})]
        driver.flags = 1
        bench.poll_once(src)
        assert _cpus(bench) == [1]
        assert src.stats.reasons == {
            "struct mce record not finished": 1,
            "mcelog buffer overflowed": 1,
        }
        assert bench.position("mcelog") == Position(f"boot:{BOOT_A}", 2)


def test_device_nothing_ready_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When poll(2) reports nothing, no batch is produced."""
    driver = FakeDriver()
    _install(monkeypatch, driver)
    with SourceBench(tmp_path / "db") as bench:
        src = _device_source(bench, tmp_path)
        assert src.probe() is None
        assert list(src.read()) == []


def test_device_ioctl_refusal_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EPERM from the ioctls (no CAP_SYS_ADMIN) is 'needs root'; the device is let go."""
    driver = FakeDriver()
    driver.ioctl_error = errno.EPERM
    _install(monkeypatch, driver)
    with SourceBench(tmp_path / "db") as bench:
        reason = _device_source(bench, tmp_path).probe()
        assert reason == "needs root: the /dev/null ioctls need CAP_SYS_ADMIN"
        assert driver.closed == 1


def test_device_with_impossible_record_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record length no struct mce has makes the source unavailable, with the number."""
    _install(monkeypatch, FakeDriver(record_len=16))
    with SourceBench(tmp_path / "db") as bench:
        reason = _device_source(bench, tmp_path).probe()
        assert reason == "/dev/null reports record length 16: not a struct mce"


def test_device_read_error_closes_and_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed read raises (counted by the base class), lets the device go, reopens on probe."""
    driver = FakeDriver()
    _install(monkeypatch, driver)
    with SourceBench(tmp_path / "db") as bench:
        src = _device_source(bench, tmp_path)
        assert src.probe() is None
        driver.buffer = [_intel(1)]
        driver.read_error = errno.EIO
        with pytest.raises(OSError):
            list(src.read())
        assert driver.closed == 1
        driver.read_error = None
        bench.poll_once(src)
        assert _cpus(bench) == [1]


def test_xen_dom0_physical_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With physical_cpus, Xen's vendor numbers are used and the cpu is Xen's CPU number."""
    driver = FakeDriver(record_len=112)
    _install(monkeypatch, driver)
    with SourceBench(tmp_path / "db") as bench:
        src = _device_source(bench, tmp_path, physical_cpus=True)
        assert src.probe() is None
        # xen_mcelog leaves time and cpuid zero and uses Xen's vendor bit 1 for Intel.
        driver.buffer = [
            encode_record({**INTEL, "cpuvendor": 1, "time": 0, "cpuid": 0, "extcpu": 2}, 112)
        ]
        batches = list(src.read())
        mca = batches[0].items[0]["mca"]
        assert (mca["cpu"], mca["vendor"]) == (2, "GenuineIntel")
        assert "time" not in mca and "family" not in mca
