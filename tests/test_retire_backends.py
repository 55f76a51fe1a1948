"""The retire agent's backends: sim (the fmd store), linux (sysfs) and xen (xen-hptool),
and the parsers of the Xen tools' output."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from agents.retire import linux as linux_mod
from agents.retire.backend import (
    BackendError,
    CpuState,
    CpuTarget,
    PageOutcome,
    PageState,
    make_backend,
)
from agents.retire.linux import LinuxBackend
from agents.retire.sim import SimBackend
from agents.retire.xen import (
    PageOfflineFailed,
    XenBackend,
    parse_cpu_result,
    parse_cpu_topology,
    parse_mem_offline,
    parse_mem_online,
    parse_mem_status,
)
from fmd.errors import ConfigError, FmdError
from fmd.store import Store, hwstate
from tests.pgschema import pg_schema_url
from tests.retire_fakes import (
    FAKES,
    fake_xen_path,
    make_fake_debugfs,
    make_fake_procfs,
    make_fake_sysfs,
    offlined_pages,
    read_cpu_online,
    written_text,
    xen_calls,
    xen_state,
)


def hc(n: int) -> CpuTarget:
    return CpuTarget(cpuid=n, scheme="hc", label=f"CPU {n}")


def logical(n: int) -> CpuTarget:
    return CpuTarget(cpuid=n, scheme="cpu")


# -- sim ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL: an SQLite file, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fmd.db'}"
        return
    with pg_schema_url() as url:
        yield url


def open_store(url: str, tmp_path: Path) -> Store:
    return Store(url, db_file=tmp_path / "fmd.db")


def test_sim_state_persists_across_backends(store_url: str, tmp_path: Path) -> None:
    """Sim CPU and page changes are in the store and seen by a new backend on it."""
    store = open_store(store_url, tmp_path)
    clock = iter(range(1000, 2000))
    sim = SimBackend(store.engine, now_ns=lambda: next(clock))
    assert sim.cpu_status(hc(3)) == CpuState.ONLINE
    assert sim.page_status(0x1E9F123) == PageState.USABLE
    sim.cpu_offline(hc(3))
    sim.cpu_offline(hc(5))
    sim.cpu_online(hc(5))
    assert sim.page_retire(0x1E9F123) == PageOutcome.DONE
    store.close()

    store = open_store(store_url, tmp_path)
    again = SimBackend(store.engine)
    assert again.cpu_status(hc(3)) == CpuState.OFFLINE
    assert again.cpu_status(hc(5)) == CpuState.ONLINE
    assert again.cpu_status(logical(4)) == CpuState.ONLINE
    assert again.page_status(0x1E9F000) == PageState.RETIRED
    assert again.page_status(0x1E9E000) == PageState.USABLE
    with store.reader() as conn:
        rows = [tuple(r) for r in hwstate.hw_states(conn)]
    assert rows == [
        ("cpu", 3, "offline", 1000),
        ("cpu", 5, "online", 1002),
        ("page", 0x1E9F000, "retired", 1003),
    ]
    store.close()


def test_sim_operations_are_idempotent(store_url: str, tmp_path: Path) -> None:
    """Offlining an offline CPU or retiring a retired page again succeeds and keeps the state."""
    store = open_store(store_url, tmp_path)
    sim = SimBackend(store.engine, now_ns=lambda: 7)
    sim.cpu_offline(hc(2))
    sim.cpu_offline(hc(2))
    assert sim.page_retire(0x5000) == PageOutcome.DONE
    assert sim.page_retire(0x5FFF) == PageOutcome.DONE
    sim.page_unretire(0x5000)
    sim.page_unretire(0x5000)
    assert sim.cpu_status(hc(2)) == CpuState.OFFLINE
    assert sim.page_status(0x5000) == PageState.USABLE
    with store.reader() as conn:
        assert [tuple(r) for r in hwstate.hw_states(conn, "page")] == [
            ("page", 0x5000, "online", 7)
        ]
    store.close()


def test_sim_unknown_cpu_is_refused(tmp_path: Path) -> None:
    """A cpuid outside the simulated machine's CPUs is a non-retryable 'no such CPU N'."""
    store = open_store("", tmp_path)
    sim = SimBackend(store.engine, cpus={0, 1, 2, 3})
    for call in (sim.cpu_offline, sim.cpu_online, sim.cpu_status):
        with pytest.raises(BackendError) as exc:
            call(hc(4))
        assert exc.value.retryable is False
        assert "no such CPU 4" in exc.value.message
    sim.cpu_offline(hc(3))
    assert sim.cpu_status(hc(3)) == CpuState.OFFLINE
    store.close()


def test_sim_not_hotpluggable_cpu_is_refused(tmp_path: Path) -> None:
    """A CPU the simulation marks not hot-pluggable cannot be offlined (non-retryable)."""
    store = open_store("", tmp_path)
    sim = SimBackend(store.engine, not_hotpluggable={0})
    with pytest.raises(BackendError, match="cpu0 is not hot-pluggable") as exc:
        sim.cpu_offline(hc(0))
    assert exc.value.retryable is False
    assert sim.cpu_status(hc(0)) == CpuState.ONLINE
    store.close()


def test_sim_store_failure_is_a_backend_error(tmp_path: Path) -> None:
    """A database without the hw_state table gives a BackendError, not an SQLAlchemy error."""
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    sim = SimBackend(engine)
    with pytest.raises(BackendError, match="the fmd store failed while recording cpu1"):
        sim.cpu_offline(hc(1))
    engine.dispose()


def test_make_backend_builds_each_backend_and_rejects_bad_settings(tmp_path: Path) -> None:
    """make_backend builds sim/linux/xen and raises ConfigError for a bad name or settings."""
    store = open_store("", tmp_path)
    assert isinstance(make_backend("sim", engine=store.engine), SimBackend)
    linux = make_backend("linux", sysfs_root=str(tmp_path), page_offline="hard")
    assert isinstance(linux, LinuxBackend)
    assert linux.describe() == f"linux sysfs at {tmp_path} (pages: hard)"
    assert isinstance(make_backend("xen"), XenBackend)
    with pytest.raises(ConfigError, match="expected one of sim, linux, xen"):
        make_backend("solaris")
    with pytest.raises(ConfigError, match="needs the fmd store"):
        make_backend("sim")
    with pytest.raises(ConfigError, match="'medium'"):
        make_backend("linux", page_offline="medium")
    with pytest.raises(ConfigError, match="must be positive"):
        make_backend("xen", timeout=0)
    store.close()


def test_backend_error_is_an_fmd_error_with_a_stable_code() -> None:
    """BackendError derives from FmdError, has code EFMD_RETIRE and defaults to non-retryable."""
    err = BackendError("boom")
    assert isinstance(err, FmdError)
    assert (err.code, err.retryable, str(err)) == ("EFMD_RETIRE", False, "boom")
    assert BackendError("busy", retryable=True).retryable is True


# -- linux --------------------------------------------------------------------


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    return make_fake_sysfs(tmp_path / "sys", cpus=8)


def linux_backend(tmp_path: Path, sysfs: Path, mode: str = "soft") -> LinuxBackend:
    return LinuxBackend(
        sysfs_root=sysfs,
        procfs_root=tmp_path / "proc",
        debugfs_root=tmp_path / "debug",
        page_offline=mode,
    )


def test_linux_cpu_offline_and_online_write_and_read_back(tmp_path: Path, sysfs: Path) -> None:
    """Offlining writes 0 to cpuN/online and onlining writes 1; status reads the file."""
    backend = linux_backend(tmp_path, sysfs)
    backend.cpu_offline(hc(3))
    assert read_cpu_online(sysfs, 3) == "0"
    assert backend.cpu_status(hc(3)) == CpuState.OFFLINE
    backend.cpu_offline(hc(3))  # already offline: no error
    assert read_cpu_online(sysfs, 3) == "0"
    backend.cpu_online(logical(3))
    assert read_cpu_online(sysfs, 3) == "1"
    assert backend.cpu_status(hc(3)) == CpuState.ONLINE
    assert read_cpu_online(sysfs, 4) == "1"


def test_linux_cpu0_without_online_file_is_not_hotpluggable(tmp_path: Path, sysfs: Path) -> None:
    """cpu0 without an online file: offlining fails (non-retryable); it is and stays online."""
    backend = linux_backend(tmp_path, sysfs)
    with pytest.raises(BackendError, match="cpu0 is not hot-pluggable") as exc:
        backend.cpu_offline(hc(0))
    assert exc.value.retryable is False
    assert backend.cpu_status(hc(0)) == CpuState.ONLINE
    backend.cpu_online(hc(0))


def test_linux_cpu0_with_hotplug_can_be_offlined(tmp_path: Path) -> None:
    """With hotplug_cpu0 the fake has cpu0/online, and cpu0 can be offlined."""
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=2, hotplug_cpu0=True)
    linux_backend(tmp_path, sysfs).cpu_offline(hc(0))
    assert read_cpu_online(sysfs, 0) == "0"


def test_linux_missing_cpu_is_no_such_cpu(tmp_path: Path, sysfs: Path) -> None:
    """A cpuid without a cpuN directory is a non-retryable 'no such CPU'."""
    backend = linux_backend(tmp_path, sysfs)
    for call in (backend.cpu_offline, backend.cpu_online, backend.cpu_status):
        with pytest.raises(BackendError, match="no such CPU 8") as exc:
            call(hc(8))
        assert exc.value.retryable is False


@pytest.mark.parametrize(
    ("code", "retryable", "text"),
    [
        (errno.EACCES, False, "permission denied writing 0 to"),
        (errno.EPERM, False, "permission denied writing 0 to"),
        (errno.EBUSY, True, "Device or resource busy; try again later"),
        (errno.EAGAIN, True, "try again later"),
        (errno.EINVAL, False, "failed: Invalid argument"),
    ],
)
def test_linux_cpu_write_errors_map_to_backend_errors(
    tmp_path: Path,
    sysfs: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    retryable: bool,
    text: str,
) -> None:
    """A failed write to cpuN/online maps errno onto retryable or not, with a clear message."""

    def fail(path: Path, value: str) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(linux_mod, "_sysfs_write", fail)
    with pytest.raises(BackendError) as exc:
        linux_backend(tmp_path, sysfs).cpu_offline(hc(2))
    assert exc.value.retryable is retryable
    assert text in exc.value.message
    if code in (errno.EACCES, errno.EPERM):
        assert exc.value.message.endswith("(fmd must run as root)")
    assert read_cpu_online(sysfs, 2) == "1"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_linux_read_only_online_file_is_permission_denied(tmp_path: Path, sysfs: Path) -> None:
    """Without root, a read-only cpuN/online gives 'permission denied (fmd must run as root)'."""
    online = sysfs / "devices" / "system" / "cpu" / "cpu1" / "online"
    online.chmod(stat.S_IRUSR)
    with pytest.raises(BackendError, match=r"permission denied .*\(fmd must run as root\)"):
        linux_backend(tmp_path, sysfs).cpu_offline(hc(1))


def test_linux_page_retire_writes_the_aligned_address_soft(tmp_path: Path, sysfs: Path) -> None:
    """Retiring writes the page-aligned address as 0x-hex to soft_offline_page only."""
    backend = linux_backend(tmp_path, sysfs)
    assert backend.page_retire(0x1E9F123) == PageOutcome.DONE
    soft = sysfs / "devices" / "system" / "memory" / "soft_offline_page"
    assert written_text(soft) == "0x1e9f000"
    assert offlined_pages(sysfs) == {"soft": 0x1E9F000}


def test_linux_page_retire_hard_mode(tmp_path: Path, sysfs: Path) -> None:
    """In hard mode the address goes to hard_offline_page only."""
    assert linux_backend(tmp_path, sysfs, "hard").page_retire(0x2345) == PageOutcome.DONE
    assert offlined_pages(sysfs) == {"hard": 0x2000}


def test_linux_soft_then_hard_falls_back_to_hard(tmp_path: Path, sysfs: Path) -> None:
    """soft-then-hard tries hard when soft fails (soft_offline_page is a directory here)."""
    soft = sysfs / "devices" / "system" / "memory" / "soft_offline_page"
    soft.unlink()
    soft.mkdir()
    assert linux_backend(tmp_path, sysfs, "soft-then-hard").page_retire(0x7003) == PageOutcome.DONE
    assert offlined_pages(sysfs) == {"hard": 0x7000}


def test_linux_soft_then_hard_uses_soft_when_it_works(tmp_path: Path, sysfs: Path) -> None:
    """soft-then-hard stops after a successful soft offline."""
    assert linux_backend(tmp_path, sysfs, "soft-then-hard").page_retire(0x7003) == PageOutcome.DONE
    assert offlined_pages(sysfs) == {"soft": 0x7000}


def test_linux_soft_failure_alone_is_an_error(tmp_path: Path, sysfs: Path) -> None:
    """In soft mode a failed soft offline is a non-retryable error naming the file."""
    soft = sysfs / "devices" / "system" / "memory" / "soft_offline_page"
    soft.unlink()
    soft.mkdir()
    with pytest.raises(BackendError) as exc:
        linux_backend(tmp_path, sysfs).page_retire(0x7003)
    assert exc.value.retryable is False
    assert exc.value.message == (
        f"soft-offlining the page at 0x7000 via {soft} failed: Is a directory"
    )
    assert offlined_pages(sysfs) == {}


def test_linux_page_busy_is_retryable(
    tmp_path: Path, sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EBUSY from soft_offline_page (page not yet poisoned) is retryable."""

    def busy(path: Path, value: str) -> None:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(linux_mod, "_sysfs_write", busy)
    make_fake_procfs(tmp_path / "proc")
    with pytest.raises(BackendError) as exc:
        linux_backend(tmp_path, sysfs).page_retire(0x9000)
    assert exc.value.retryable is True


def test_linux_missing_page_files_mean_unsupported(tmp_path: Path) -> None:
    """Without the page offline files the kernel cannot offline pages (non-retryable)."""
    sysfs = tmp_path / "sys"
    (sysfs / "devices" / "system" / "memory").mkdir(parents=True)
    with pytest.raises(BackendError, match="this kernel cannot offline memory pages") as exc:
        linux_backend(tmp_path, sysfs).page_retire(0x9000)
    assert exc.value.retryable is False


def test_linux_kpageflags_gives_status_and_skips_poisoned_pages(
    tmp_path: Path, sysfs: Path
) -> None:
    """kpageflags' HWPOISON bit gives RETIRED; retiring such a page writes nothing."""
    make_fake_procfs(tmp_path / "proc", poisoned_pfns=[0x10], frames=32)
    backend = linux_backend(tmp_path, sysfs)
    assert backend.page_status(0x10ABC) == PageState.RETIRED
    assert backend.page_status(0x11000) == PageState.USABLE
    assert backend.page_status(0x40000) == PageState.UNKNOWN  # beyond the last frame
    assert backend.page_retire(0x10ABC) == PageOutcome.DONE
    assert offlined_pages(sysfs) == {}


def test_linux_poisoned_after_failed_write_is_done(
    tmp_path: Path, sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (EIO) on a page kpageflags shows poisoned counts as done."""
    state = {"poisoned": False}

    def eio(path: Path, value: str) -> None:
        make_fake_procfs(tmp_path / "proc", poisoned_pfns=[0x3], frames=8)
        state["poisoned"] = True
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    make_fake_procfs(tmp_path / "proc", frames=8)
    monkeypatch.setattr(linux_mod, "_sysfs_write", eio)
    assert linux_backend(tmp_path, sysfs).page_retire(0x3000) == PageOutcome.DONE
    assert state["poisoned"] is True


def test_linux_page_status_without_kpageflags_is_unknown(tmp_path: Path, sysfs: Path) -> None:
    """Without a readable kpageflags the page state is UNKNOWN."""
    assert linux_backend(tmp_path, sysfs).page_status(0x1000) == PageState.UNKNOWN


def test_linux_unpoison_unsupported_is_an_error(tmp_path: Path, sysfs: Path) -> None:
    """Without debugfs' hwpoison/unpoison-pfn, unretiring is a non-retryable 'not supported'."""
    with pytest.raises(BackendError, match="not supported by this kernel") as exc:
        linux_backend(tmp_path, sysfs).page_unretire(0x5000)
    assert exc.value.retryable is False


def test_linux_unpoison_writes_the_pfn_in_decimal(tmp_path: Path, sysfs: Path) -> None:
    """Unretiring writes the page frame number in decimal to hwpoison/unpoison-pfn."""
    debugfs = make_fake_debugfs(tmp_path / "debug")
    linux_backend(tmp_path, sysfs).page_unretire(0x12345)
    assert written_text(debugfs / "hwpoison" / "unpoison-pfn") == "18"


def test_linux_unpoison_of_a_usable_page_writes_nothing(tmp_path: Path, sysfs: Path) -> None:
    """Unretiring a page kpageflags shows usable succeeds without writing."""
    debugfs = make_fake_debugfs(tmp_path / "debug")
    make_fake_procfs(tmp_path / "proc", frames=64)
    linux_backend(tmp_path, sysfs).page_unretire(0x12345)
    assert written_text(debugfs / "hwpoison" / "unpoison-pfn") == ""


def test_linux_negative_address_is_refused(tmp_path: Path, sysfs: Path) -> None:
    """A negative physical address is a non-retryable error."""
    with pytest.raises(BackendError, match="invalid physical address"):
        linux_backend(tmp_path, sysfs).page_retire(-4096)


# -- xen: parsers ---------------------------------------------------------------


def test_parse_cpu_result_success_and_failure() -> None:
    """The cpu-offline/online messages parse into success or (errno, reason)."""
    ok = "Prepare to offline CPU 3\nCPU 3 offlined successfully\n"
    res = parse_cpu_result(ok, "offline")
    assert res is not None and (res.ok, res.cpuid) == (True, 3)
    busy = "Prepare to offline CPU 3\nCPU 3 offline failed (error 16: Device or resource busy)\n"
    res = parse_cpu_result(busy, "offline")
    assert res is not None
    assert (res.ok, res.cpuid, res.errno, res.reason) == (
        False,
        3,
        16,
        "Device or resource busy",
    )
    up = "Prepare to online CPU 12\nCPU 12 onlined successfully\n"
    res = parse_cpu_result(up, "online")
    assert res is not None and (res.ok, res.cpuid) == (True, 12)
    inval = "CPU 0 online failed (error 22: Invalid argument)"
    res = parse_cpu_result(inval, "online")
    assert res is not None and (res.ok, res.errno) == (False, 22)
    assert parse_cpu_result(ok, "online") is None
    assert parse_cpu_result("xc_interface_open failed\n", "offline") is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Prepare to offline MEMORY mfn 1a2b\n"
            "Memory mfn 1a2b offlined successfully, current state is [PG_OFFLINE_OFFLINED]\n",
            PageOutcome.DONE,
        ),
        (
            "Memory mfn 1a2b offlined successfully, current state is "
            "[PG_OFFLINE_OFFLINED, PG_OFFLINE_OWNED]\n",
            PageOutcome.DONE,
        ),
        (
            "Memory mfn 1a2b offlined successfully, current state is [PG_OFFLINE_OFFLINED]\n"
            "And this offlined PAGE is already marked broken before!\n",
            PageOutcome.DONE,
        ),
        (
            "Memory mfn 1a2b offlined succssefully,this page is xen page, current state is "
            "[PG_OFFLINE_PENDING, PG_OFFLINE_XENPAGE]\n",
            PageOutcome.PENDING,
        ),
        ("Prepare to offline MEMORY mfn 1a2b\n", None),
    ],
)
def test_parse_mem_offline(output: str, expected: PageOutcome | None) -> None:
    """mem-offline output: OFFLINED is done, a PENDING state pending, nothing else unknown."""
    assert parse_mem_offline(output) == expected


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            "Prepare to offline MEMORY mfn 1a2b\nMemory mfn 1a2b offline failed\n"
            "the memory is an anonymous page!\n",
            "Prepare to offline MEMORY mfn 1a2b; Memory mfn 1a2b offline failed; "
            "the memory is an anonymous page!",
        ),
        (
            "Offlining page mfn 1a2b failed, error ffffffff\n"
            "XEN_PAGE is not permitted be offlined\n",
            "Offlining page mfn 1a2b failed, error ffffffff; XEN_PAGE is not permitted be offlined",
        ),
        ("current state is [PG_OFFLINE_FAILED]\n", "current state is [PG_OFFLINE_FAILED]"),
    ],
)
def test_parse_mem_offline_failures(output: str, message: str) -> None:
    """mem-offline failures raise PageOfflineFailed carrying the tool's words on one line."""
    with pytest.raises(PageOfflineFailed) as exc:
        parse_mem_offline(output)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Querying MEMORY mfn 1a2b status\nMemory Status 2: [ PAGE_OFFLINED ]\n",
            PageState.RETIRED,
        ),
        ("Memory Status 12: [ PAGE_BROKEND   PAGE_OFFLINED ]\n", PageState.RETIRED),
        ("Memory Status 4: [ PAGE_ONLINED ]\n", PageState.USABLE),
        ("Memory Status 8: [ PAGE_OFFLINE_PENDING  PAGE_ONLINED ]\n", PageState.PENDING),
        (
            "Memory Status 0x18: [ PAGE_OFFLINE_PENDING  PAGE_BROKEND   PAGE_ONLINED ]\n",
            PageState.PENDING,
        ),
        ("Memory Status: [ PAGE_OFFLINED ]\n", PageState.RETIRED),
        ("[ PAGE_OFFLINE_PENDING  PAGE_ONLINED ]\n", PageState.PENDING),
        ("[ PAGE_ONLINED ]\n", PageState.USABLE),
        ("Querying page mfn 1a2b failed, error ffffffea\n", None),
    ],
)
def test_parse_mem_status(output: str, expected: PageState | None) -> None:
    """mem-status: the hex status word decides (OFFLINED 0x2, PENDING 0x8), else the names."""
    assert parse_mem_status(output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Prepare to online MEMORY mfn 1a2b\nMemory mfn 1a2b onlined successfully\n", True),
        ("Prepare to online MEMORY mfn 1a2b\nMemory is already onlined!\n", True),
        ("Onlining page mfn 1a2b is broken, Memory online failed\n", False),
        ("Onlining page mfn 1a2b failed, error ffffffea", False),
        ("Prepare to online MEMORY mfn 1a2b\n", None),
    ],
)
def test_parse_mem_online(output: str, expected: bool | None) -> None:
    """mem-online: onlined or already online is True, a failure False, else None."""
    assert parse_mem_online(output) is expected


def test_parse_cpu_topology() -> None:
    """xenpm get-cpu-topology lists the online CPUs; other output is None."""
    table = "CPU\tcore\tsocket\tnode\nCPU0\t 0\t 0\t 0\nCPU1\t 0\t 0\t 0\nCPU5\t 2\t 1\t 0\n"
    assert parse_cpu_topology(table) == {0, 1, 5}
    assert parse_cpu_topology("CPU   core   socket   node\nCPU0   0   0   0\n") == {0}
    assert parse_cpu_topology("CPU\tcore\tsocket\tnode\n") == set()
    assert parse_cpu_topology("xenpm: command not found\n") is None


# -- xen: the backend with the fake tools ---------------------------------------


@pytest.fixture
def xen_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    _bin, env = fake_xen_path(tmp_path, ncpus=8)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_xen_fakes_are_executable() -> None:
    """The fake Xen tools are executable scripts (so they can be committed as such)."""
    for tool in ("xen-hptool", "xenpm"):
        assert os.access(FAKES / tool, os.X_OK), tool


def test_xen_cpu_offline_runs_xen_hptool(xen_env: dict[str, str]) -> None:
    """cpu_offline runs 'xen-hptool cpu-offline N'; xenpm then reports the CPU offline."""
    xen = XenBackend()
    xen.cpu_offline(hc(3))
    assert xen_calls(xen_env) == [["cpu-offline", "3"]]
    assert xen_state(xen_env)["offline_cpus"] == [3]
    assert xen.cpu_status(hc(3)) == CpuState.OFFLINE
    assert xen.cpu_status(hc(4)) == CpuState.ONLINE
    assert xen_calls(xen_env, "xenpm") == [["get-cpu-topology"], ["get-cpu-topology"]]
    xen.cpu_online(hc(3))
    assert xen_calls(xen_env)[-1] == ["cpu-online", "3"]
    assert xen.cpu_status(hc(3)) == CpuState.ONLINE


def test_xen_cpu_offline_of_offline_cpu_succeeds(xen_env: dict[str, str]) -> None:
    """Offlining an already offline CPU (Xen's EEXIST) succeeds."""
    xen = XenBackend()
    xen.cpu_offline(hc(5))
    xen.cpu_offline(hc(5))
    assert xen_calls(xen_env) == [["cpu-offline", "5"], ["cpu-offline", "5"]]
    assert xen_state(xen_env)["offline_cpus"] == [5]


def test_xen_cpu_busy_is_retryable(
    xen_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cpu-offline failing with error 16 (EBUSY) is a retryable error quoting the tool."""
    monkeypatch.setenv("FAKE_XEN_HPTOOL_FAIL_CPU", "3:16")
    with pytest.raises(BackendError) as exc:
        XenBackend().cpu_offline(hc(3))
    assert exc.value.retryable is True
    assert exc.value.message == (
        "xen-hptool cpu-offline 3 failed for CPU 3: error 16 (Device or resource busy)"
    )


def test_xen_cpu_einval_is_not_retryable(xen_env: dict[str, str]) -> None:
    """cpu-offline of CPU 0 (Xen's EINVAL) is a non-retryable error."""
    with pytest.raises(BackendError, match=r"error 22 \(Invalid argument\)") as exc:
        XenBackend().cpu_offline(hc(0))
    assert exc.value.retryable is False


def test_xen_refuses_cpu_scheme_targets(xen_env: dict[str, str]) -> None:
    """A cpu-scheme (logical, dom0 vcpu) target is refused without running anything."""
    xen = XenBackend()
    for call in (xen.cpu_offline, xen.cpu_online, xen.cpu_status):
        with pytest.raises(BackendError, match="names a dom0 virtual CPU") as exc:
            call(logical(2))
        assert exc.value.retryable is False
    assert xen_calls(xen_env) == []
    assert xen_calls(xen_env, "xenpm") == []


def test_xen_cpu_status_without_xenpm_uses_the_last_state_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without xenpm, CPU status is what this backend last set, else UNKNOWN."""
    _bin, env = fake_xen_path(tmp_path, xenpm=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    xen = XenBackend(xenpm=str(tmp_path / "no-such-xenpm"))
    assert xen.cpu_status(hc(2)) == CpuState.UNKNOWN
    xen.cpu_offline(hc(2))
    assert xen.cpu_status(hc(2)) == CpuState.OFFLINE
    xen.cpu_online(hc(2))
    assert xen.cpu_status(hc(2)) == CpuState.ONLINE


def test_xen_page_retire_uses_the_mfn(xen_env: dict[str, str]) -> None:
    """page_retire runs 'mem-offline <physaddr >> 12 in hex>' and returns DONE."""
    xen = XenBackend()
    assert xen.page_retire(0x1A2B123) == PageOutcome.DONE
    assert xen_calls(xen_env) == [["mem-offline", "1a2b"]]
    assert xen.page_status(0x1A2B000) == PageState.RETIRED
    assert xen.page_retire(0x1A2B000) == PageOutcome.DONE  # already offlined
    xen.page_unretire(0x1A2B000)
    assert xen.page_status(0x1A2B000) == PageState.USABLE
    xen.page_unretire(0x1A2B000)  # "Memory is already onlined!"
    assert xen_calls(xen_env) == [
        ["mem-offline", "1a2b"],
        ["mem-status", "1a2b"],
        ["mem-offline", "1a2b"],
        ["mem-online", "1a2b"],
        ["mem-status", "1a2b"],
        ["mem-online", "1a2b"],
    ]


def test_xen_page_pending(xen_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A page Xen can only offline later gives PENDING, and mem-status says pending."""
    monkeypatch.setenv("FAKE_XEN_HPTOOL_PENDING_MFNS", "beef")
    xen = XenBackend()
    assert xen.page_retire(0xBEEF000) == PageOutcome.PENDING
    assert xen.page_status(0xBEEF000) == PageState.PENDING


def test_xen_page_failed(xen_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A page Xen fails to offline is a non-retryable error quoting the tool."""
    monkeypatch.setenv("FAKE_XEN_HPTOOL_FAILED_MFNS", "42")
    with pytest.raises(BackendError) as exc:
        XenBackend().page_retire(0x42000)
    assert exc.value.retryable is False
    assert exc.value.message == (
        "xen-hptool mem-offline 42 failed: "
        "Prepare to offline MEMORY mfn 42; Memory mfn 42 offline failed"
    )


def test_xen_missing_tool_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without xen-hptool every operation raises a non-retryable 'xen-hptool not found'."""
    monkeypatch.setenv("PATH", str(tmp_path))
    xen = XenBackend()
    for call in (lambda: xen.cpu_offline(hc(1)), lambda: xen.page_retire(0x1000)):
        with pytest.raises(
            BackendError, match=r"^xen-hptool not found \(looked for 'xen-hptool' on PATH\)"
        ) as exc:
            call()
        assert exc.value.retryable is False
    xen = XenBackend(xen_hptool=str(tmp_path / "sbin" / "xen-hptool"))
    with pytest.raises(BackendError, match=r"^xen-hptool not found"):
        xen.page_status(0x1000)


def test_xen_timeout_is_retryable(tmp_path: Path) -> None:
    """A tool that runs past the timeout gives a retryable error."""
    slow = tmp_path / "slow-hptool"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    with pytest.raises(BackendError, match=r"did not finish within 0.2 s") as exc:
        XenBackend(xen_hptool=str(slow), timeout=0.2).cpu_offline(hc(1))
    assert exc.value.retryable is True


def test_xen_env_argument_runs_the_tools_with_it(tmp_path: Path) -> None:
    """The env constructor argument is the environment the tools run in (and their PATH)."""
    _bin, env = fake_xen_path(tmp_path)
    xen = XenBackend(env=os.environ | env)
    xen.cpu_offline(hc(7))
    assert xen_calls(env) == [["cpu-offline", "7"]]
    assert xen.describe() == "xen dom0 via xen-hptool (cpu status: xenpm get-cpu-topology)"
