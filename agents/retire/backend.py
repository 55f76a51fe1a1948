"""The hypercall backend of the retire agent: how a CPU or a page is taken out of service.

The agent decides *what* to retire; a :class:`RetireBackend` does it on one kind
of host and answers what state a CPU or page is in.  Three backends exist, and
:func:`make_backend` builds one by name:

``sim``    (default) the state lives in fmd's store (table ``hw_state``), so
           tests, demonstrations and fmadm see it; nothing on the host changes.
``linux``  sysfs CPU hotplug and the memory soft/hard offline files.
``xen``    dom0 on Xen: ``xen-hptool`` on *physical* CPUs and machine frames.

Every method is idempotent (offlining an offline CPU or retiring a retired page
succeeds) and raises nothing but :class:`BackendError`, whose ``retryable``
says whether the agent should try again later.  Per resource::

    CPU:   ONLINE --cpu_offline--> OFFLINE --cpu_online--> ONLINE
    page:  USABLE --page_retire--> RETIRED            (PageOutcome.DONE)
                              \\--> PENDING --(the hypervisor frees it)--> RETIRED
           RETIRED/PENDING --page_unretire--> USABLE

A status the backend cannot determine is ``UNKNOWN``; it is never an error.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from sqlalchemy import Engine

from fmd.errors import ConfigError, RetireBackendError
from fmd.protocol.limits import MAX_PHYSADDR, PHYSADDR_BITS

__all__ = [
    "BACKEND_NAMES",
    "PAGE_MASK",
    "PAGE_OFFLINE_MODES",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "BackendError",
    "CpuState",
    "CpuTarget",
    "PageOutcome",
    "PageState",
    "RetireBackend",
    "check_cpuid",
    "make_backend",
    "page_align",
    "read_boot_id",
]

BackendError = RetireBackendError
"""Raised by every backend operation; ``retryable`` says whether to try again."""

BACKEND_NAMES = ("sim", "linux", "xen")
PAGE_OFFLINE_MODES = ("soft", "hard", "soft-then-hard")

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT  # 4 KiB: the unit Linux and Xen retire memory in
PAGE_MASK = ~(PAGE_SIZE - 1)


class CpuState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class PageState(StrEnum):
    USABLE = "usable"
    RETIRED = "retired"
    PENDING = "pending"  # retirement asked for; takes effect when the page is freed
    UNKNOWN = "unknown"


class PageOutcome(StrEnum):
    DONE = "done"
    PENDING = "pending"


@dataclass(frozen=True)
class CpuTarget:
    """A CPU to act on, as the agent resolved it from a suspect's ASRU."""

    cpuid: int
    """The id the backend acts on."""
    scheme: str
    """``"hc"`` (resolved from the hc topology: a physical CPU) or ``"cpu"``
    (a cpu-scheme ASRU: the logical id the running kernel uses)."""
    label: str | None = None
    """For messages, e.g. ``"CPU 3"``."""

    def describe(self) -> str:
        """How messages name this CPU: its label if any, else ``cpuN``."""
        return self.label or f"cpu{self.cpuid}"


def page_align(physaddr: int) -> int:
    """The address of the 4 KiB page holding byte ``physaddr``.

    Raises a non-retryable :class:`BackendError` for a negative address or one
    beyond the 52 bits x86-64 can address.
    """
    if physaddr < 0:
        raise BackendError(f"invalid physical address {physaddr:#x}: it is negative")
    if physaddr > MAX_PHYSADDR:
        raise BackendError(
            f"invalid physical address {physaddr:#x}: beyond the {PHYSADDR_BITS} bits "
            "a physical address can have"
        )
    return physaddr & PAGE_MASK


def check_cpuid(cpu: CpuTarget) -> None:
    """Refuse a negative cpuid with a non-retryable :class:`BackendError`."""
    if cpu.cpuid < 0:
        raise BackendError(f"invalid cpuid {cpu.cpuid} for {cpu.describe()}")


class RetireBackend(ABC):
    """Takes CPUs and pages out of service and back, and reports their state."""

    name: ClassVar[str]

    @abstractmethod
    def cpu_offline(self, cpu: CpuTarget) -> None:
        """Take ``cpu`` offline; succeed if it already is."""

    @abstractmethod
    def cpu_online(self, cpu: CpuTarget) -> None:
        """Bring ``cpu`` back online; succeed if it already is."""

    @abstractmethod
    def cpu_status(self, cpu: CpuTarget) -> CpuState:
        """Whether ``cpu`` is online, offline, or that cannot be told."""

    def online_cpus(self, cpus: Iterable[int]) -> set[int]:
        """Which of ``cpus`` are online now (a CPU whose state cannot be told is
        not counted as online: the safety limits stay on the safe side)."""
        online = set()
        for cpuid in cpus:
            try:
                if self.cpu_status(CpuTarget(cpuid, "hc")) is CpuState.ONLINE:
                    online.add(cpuid)
            except BackendError:
                continue
        return online

    @abstractmethod
    def page_retire(self, physaddr: int) -> PageOutcome:
        """Retire the page holding byte address ``physaddr``; DONE if it already is."""

    @abstractmethod
    def page_unretire(self, physaddr: int) -> None:
        """Return the page holding ``physaddr`` to service; succeed if it is usable."""

    @abstractmethod
    def page_status(self, physaddr: int) -> PageState:
        """The state of the page holding ``physaddr``."""

    @abstractmethod
    def describe(self) -> str:
        """One line naming the backend and its settings, for logs and fmadm."""

    def boot_id(self) -> str | None:
        """What identifies the current boot of the host whose CPUs and pages this
        backend changes: what it did lasts until that changes.  None: unknown
        (everything is redone at each start)."""
        return None


def read_boot_id(procfs_root: str | Path) -> str | None:
    """The kernel's boot id (``<procfs>/sys/kernel/random/boot_id``), or None."""
    try:
        text = (Path(procfs_root) / "sys" / "kernel" / "random" / "boot_id").read_text()
    except OSError:
        return None
    return text.strip() or None


def make_backend(
    name: str,
    *,
    engine: Engine | None = None,
    now_ns: Callable[[], int] = time.time_ns,
    sysfs_root: str = "/sys",
    procfs_root: str = "/proc",
    debugfs_root: str = "/sys/kernel/debug",
    page_offline: str = "soft",
    xen_hptool: str = "xen-hptool",
    xenpm: str = "xenpm",
    timeout: float = 30.0,
    cpus: set[int] | None = None,
) -> RetireBackend:
    """Build the backend called ``name`` ("sim", "linux" or "xen") from the agent's settings.

    Each backend takes only the settings it uses.  Raises :class:`ConfigError`
    for an unknown name, a bad ``page_offline`` mode, a sim backend without
    ``engine`` or a timeout that is not positive.
    """
    # Imported here: the implementations import this module.
    if name == "sim":
        from agents.retire.sim import SimBackend

        if engine is None:
            raise ConfigError("the sim retire backend needs the fmd store (no engine was given)")
        return SimBackend(engine, now_ns=now_ns, cpus=cpus)
    if name == "linux":
        from agents.retire.linux import LinuxBackend

        return LinuxBackend(
            sysfs_root=sysfs_root,
            procfs_root=procfs_root,
            debugfs_root=debugfs_root,
            page_offline=page_offline,
        )
    if name == "xen":
        from agents.retire.xen import XenBackend

        return XenBackend(xen_hptool=xen_hptool, xenpm=xenpm, timeout=timeout)
    raise ConfigError(
        f"unknown retire backend {name!r}: expected one of {', '.join(BACKEND_NAMES)}"
    )
