"""The linux retire backend: CPU hotplug and memory page offlining through sysfs.

It owns these files (under the roots given to the constructor):

``<sysfs>/devices/system/cpu/cpuN/online``
    write ``0`` to offline CPU N, ``1`` to online it, then read it back to
    confirm.  The file is absent for a CPU that is not hot-pluggable (cpu0 on
    most x86 machines): such a CPU is always online and cannot be offlined.
``<sysfs>/devices/system/memory/soft_offline_page`` and ``hard_offline_page``
    write the page-aligned physical address in hex (``0x1e9f000``).  Soft
    offlining migrates the page's contents and fails rather than hurt anyone;
    hard offlining poisons the page and may kill its users.  The ``page_offline``
    mode is ``soft``, ``hard`` or ``soft-then-hard`` (hard only when soft fails).
``<procfs>/kpageflags``
    8 bytes per page frame, a little-endian u64 of flags; bit 19 (HWPOISON) set
    means the page is retired.  Read before retiring (a poisoned page is already
    retired, and writing it again may fail with EBUSY or EIO) and for status;
    when it cannot be read (not root, no such frame) a page's state is UNKNOWN.
``<procfs>/sys/kernel/random/boot_id`` and the ``btime`` line of ``<procfs>/stat``
    which boot of the kernel this is, and when it started: a reboot puts every
    page back in use and every CPU online.
``<debugfs>/hwpoison/unpoison-pfn``
    write the page frame number in decimal to unretire a page; without it
    (debugfs not mounted, no ``hwpoison_inject`` module) unretiring is not
    supported.

Every value is written the way ``echo`` does it on sysfs: open the existing
file for writing, one ``write``, close; nothing is ever created.  Both CPU
schemes are accepted: on Linux the hc topology's strand cpuid and a cpu-scheme
ASRU both name the kernel's CPU number.

Errors (all :class:`BackendError`): EACCES/EPERM → not retryable, "permission
denied (fmd must run as root)"; EBUSY/EAGAIN → retryable; a missing ``cpuN``
directory → not retryable, "no such CPU"; a missing ``online`` file when
offlining → not retryable, "cpuN is not hot-pluggable"; a missing page file →
not retryable, not supported by this kernel; anything else (EINVAL, EIO, ...)
→ not retryable, with the system's message.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import ClassVar

import structlog

from agents.retire.backend import (
    PAGE_OFFLINE_MODES,
    PAGE_SHIFT,
    BackendError,
    CpuState,
    CpuTarget,
    PageOutcome,
    PageState,
    RetireBackend,
    check_cpuid,
    page_align,
    read_boot_id,
)
from fmd.errors import ConfigError

log = structlog.get_logger("fmd.retire.linux")

KPF_HWPOISON = 19  # bit of a kpageflags word: the page is poisoned (retired)
_KPF_WORD = 8  # bytes per page frame in kpageflags


def _sysfs_write(path: Path, value: str) -> None:
    """Write ``value`` to an existing sysfs/debugfs file in one ``write`` (as ``echo`` does)."""
    data = value.encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)")


def _os_error(exc: OSError, doing: str) -> BackendError:
    """Map an OSError from ``doing`` (e.g. "writing 0 to /sys/...") onto a BackendError."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return BackendError(f"permission denied {doing} (fmd must run as root)")
    if exc.errno in (errno.EBUSY, errno.EAGAIN):
        return BackendError(f"{doing} failed: {reason}; try again later", retryable=True)
    return BackendError(f"{doing} failed: {reason}")


def read_boot_time_ns(procfs_root: str | os.PathLike[str]) -> int | None:
    """The ``btime`` line of ``<procfs>/stat`` (the boot time, epoch seconds) in ns, or None."""
    try:
        text = (Path(procfs_root) / "stat").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "btime" and fields[1].isdigit():
            return int(fields[1]) * 10**9
    return None


class LinuxBackend(RetireBackend):
    """Offlines CPUs and pages of the running Linux kernel through sysfs."""

    name: ClassVar[str] = "linux"

    def __init__(
        self,
        *,
        sysfs_root: str | os.PathLike[str] = "/sys",
        procfs_root: str | os.PathLike[str] = "/proc",
        debugfs_root: str | os.PathLike[str] = "/sys/kernel/debug",
        page_offline: str = "soft",
    ) -> None:
        if page_offline not in PAGE_OFFLINE_MODES:
            raise ConfigError(
                f"page offline mode {page_offline!r} is not one of {', '.join(PAGE_OFFLINE_MODES)}"
            )
        self.sysfs = Path(sysfs_root)
        self.procfs = Path(procfs_root)
        self.debugfs = Path(debugfs_root)
        self.page_offline = page_offline
        memory = self.sysfs / "devices" / "system" / "memory"
        self.offline_files = {
            "soft": memory / "soft_offline_page",
            "hard": memory / "hard_offline_page",
        }
        self.kpageflags = self.procfs / "kpageflags"
        self.unpoison = self.debugfs / "hwpoison" / "unpoison-pfn"

    def boot_id(self) -> str | None:
        """The running kernel's boot id: a reboot undoes CPU offlines and soft page
        offlines (and clears poison), so they are redone after one."""
        return read_boot_id(self.procfs)

    def boot_time_ns(self) -> int | None:
        """When the running kernel booted (epoch ns), or None when it cannot be told:
        what the kernel reported before then was undone by the reboot."""
        return read_boot_time_ns(self.procfs)

    def describe(self) -> str:
        return f"linux sysfs at {self.sysfs} (pages: {self.page_offline})"

    # -- CPUs ---------------------------------------------------------------

    def cpu_offline(self, cpu: CpuTarget) -> None:
        online = self._online_file(cpu)
        if online is None:
            raise BackendError(
                f"cpu{cpu.cpuid} is not hot-pluggable (no {self._cpu_dir(cpu) / 'online'}); "
                "it cannot be offlined"
            )
        self._set_online(cpu, online, "0")

    def cpu_online(self, cpu: CpuTarget) -> None:
        online = self._online_file(cpu)
        if online is None:
            return  # not hot-pluggable: always online
        self._set_online(cpu, online, "1")

    def cpu_status(self, cpu: CpuTarget) -> CpuState:
        online = self._online_file(cpu)
        if online is None:
            return CpuState.ONLINE
        return {"0": CpuState.OFFLINE, "1": CpuState.ONLINE}.get(
            self._read_online(online) or "", CpuState.UNKNOWN
        )

    def _cpu_dir(self, cpu: CpuTarget) -> Path:
        return self.sysfs / "devices" / "system" / "cpu" / f"cpu{cpu.cpuid}"

    def _online_file(self, cpu: CpuTarget) -> Path | None:
        """The CPU's ``online`` file, or None when it is not hot-pluggable."""
        check_cpuid(cpu)
        cpu_dir = self._cpu_dir(cpu)
        if not cpu_dir.is_dir():
            raise BackendError(f"no such CPU {cpu.cpuid}: {cpu_dir} does not exist")
        online = cpu_dir / "online"
        return online if online.exists() else None

    @staticmethod
    def _read_online(online: Path) -> str | None:
        try:
            return online.read_text().strip()
        except OSError:
            return None

    def _set_online(self, cpu: CpuTarget, online: Path, value: str) -> None:
        if self._read_online(online) == value:
            log.info("retire_backend_cpu_unchanged", cpuid=cpu.cpuid, online=value)
            return
        doing = f"writing {value} to {online}"
        log.info("retire_backend_write", path=str(online), value=value)
        try:
            _sysfs_write(online, value)
        except FileNotFoundError as exc:
            raise BackendError(f"cpu{cpu.cpuid} is not hot-pluggable (no {online})") from exc
        except OSError as exc:
            raise _os_error(exc, doing) from exc
        after = self._read_online(online)
        if after != value:
            want = "online" if value == "1" else "offline"
            raise BackendError(
                f"cpu{cpu.cpuid} is not {want} after {doing} (it reads {after!r})",
                retryable=True,
            )

    # -- pages --------------------------------------------------------------

    def page_retire(self, physaddr: int) -> PageOutcome:
        addr = page_align(physaddr)
        pfn = addr >> PAGE_SHIFT
        if self._poisoned(pfn):
            log.info("retire_backend_page_unchanged", physaddr=addr, state="retired")
            return PageOutcome.DONE
        modes = ["soft", "hard"] if self.page_offline == "soft-then-hard" else [self.page_offline]
        failures: list[BackendError] = []
        for mode in modes:
            path = self.offline_files[mode]
            value = f"{addr:#x}"
            log.info("retire_backend_write", path=str(path), value=value)
            try:
                _sysfs_write(path, value)
            except OSError as exc:
                if self._poisoned(pfn):
                    # Already poisoned (the kernel answers EBUSY or EIO then).
                    return PageOutcome.DONE
                doing = f"{mode}-offlining the page at {value} via {path}"
                if isinstance(exc, FileNotFoundError):
                    failures.append(
                        BackendError(f"{doing} failed: this kernel cannot offline memory pages")
                    )
                else:
                    failures.append(_os_error(exc, doing))
                continue
            log.info("retire_backend_page_offlined", physaddr=addr, mode=mode)
            return PageOutcome.DONE
        last = failures[-1]
        message = "; then ".join(f.message for f in failures)
        raise BackendError(message, retryable=last.retryable)

    def page_unretire(self, physaddr: int) -> None:
        addr = page_align(physaddr)
        pfn = addr >> PAGE_SHIFT
        if self._poisoned(pfn) is False:
            log.info("retire_backend_page_unchanged", physaddr=addr, state="usable")
            return
        log.info("retire_backend_write", path=str(self.unpoison), value=str(pfn))
        try:
            _sysfs_write(self.unpoison, str(pfn))
        except FileNotFoundError as exc:
            raise BackendError(
                f"unretiring the page at {addr:#x} is not supported by this kernel: "
                f"{self.unpoison} does not exist (it needs debugfs and the hwpoison_inject module)"
            ) from exc
        except OSError as exc:
            raise _os_error(exc, f"writing pfn {pfn} to {self.unpoison}") from exc

    def page_status(self, physaddr: int) -> PageState:
        poisoned = self._poisoned(page_align(physaddr) >> PAGE_SHIFT)
        if poisoned is None:
            return PageState.UNKNOWN
        return PageState.RETIRED if poisoned else PageState.USABLE

    def _poisoned(self, pfn: int) -> bool | None:
        """Whether kpageflags marks frame ``pfn`` HWPOISON; None when it cannot be read."""
        try:
            with self.kpageflags.open("rb") as f:
                f.seek(pfn * _KPF_WORD)
                word = f.read(_KPF_WORD)
        except OSError:
            return None
        if len(word) != _KPF_WORD:
            return None
        return bool(int.from_bytes(word, "little") >> KPF_HWPOISON & 1)
