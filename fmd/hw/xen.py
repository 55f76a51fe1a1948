"""The physical CPUs of a Xen host as dom0 learns them from the hypervisor.

In dom0, Linux's ``/sys/devices/system/cpu`` lists dom0's *virtual* CPUs:
their number, cores and sockets say nothing of the machine.  The hypervisor
owns the physical CPUs and reports them through ``xenpm get-cpu-topology``
(sysctl ``XEN_SYSCTL_cputopoinfo``), one row per online physical CPU::

    CPU     core    socket  node
    CPU0     0       0       0
    CPU1     0       1       0

A CPU taken offline (``xen-hptool cpu-offline``) disappears from the table.
Machine-check telemetry that Xen forwards to dom0 (``/dev/mcelog``) numbers
CPUs the same way, so fault FMRIs built from this table name physical parts.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Final

from fmd.errors import ConfigError

XENPM: Final = "xenpm"
XENPM_TIMEOUT_S: Final = 30.0
_HEADER: Final = re.compile(r"^\s*CPU\s+core\s+socket\s+node\s*$", re.M)
_ROW: Final = re.compile(r"^\s*CPU(\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s*$", re.M)


@dataclass(frozen=True)
class XenCpu:
    """One online physical CPU: its number, core, socket and NUMA node."""

    cpu: int
    core: int
    socket: int
    node: int


def parse_cpu_topology(text: str) -> list[XenCpu] | None:
    """The rows of ``xenpm get-cpu-topology``, or None when ``text`` is not that table.

    A CPU whose core or socket Xen does not know (``-1``: offline or parked) is
    left out."""
    if not _HEADER.search(text):
        return None
    rows = []
    for m in _ROW.finditer(text):
        cpu, core, socket, node = (int(g) for g in m.groups())
        if core >= 0 and socket >= 0:
            rows.append(XenCpu(cpu, core, socket, max(node, 0)))
    return rows


def read_cpu_topology(xenpm: str = XENPM) -> list[XenCpu]:
    """Ask the hypervisor (through ``xenpm``) for its physical CPUs.

    Raises :class:`ConfigError` naming the command and what went wrong."""
    try:
        out = subprocess.run(
            [xenpm, "get-cpu-topology"],
            capture_output=True,
            text=True,
            timeout=XENPM_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"xen platform: cannot run {xenpm} get-cpu-topology: {exc}") from None
    rows = parse_cpu_topology(out.stdout)
    if out.returncode != 0 or not rows:
        said = (out.stderr or out.stdout).strip().splitlines()
        raise ConfigError(
            f"xen platform: {xenpm} get-cpu-topology gave no CPU table "
            f"(exit {out.returncode}: {said[-1] if said else 'no output'}); "
            "is this a Xen dom0 with xenfs mounted on /proc/xen?"
        )
    return rows
