"""Is the kernel's correctable-errors collector (CEC) at work on this host?

Linux's CEC (``drivers/ras/cec.c``, ``CONFIG_RAS_CEC``) counts corrected DRAM
errors per page itself and soft-offlines a page when its count reaches the
action threshold; the records it absorbed are hidden from the EDAC drivers and
/dev/mcelog.  A fault manager on such a host must not offline the same pages a
second time, and must expect the kernel's ``memory_failure`` reports for pages
it never saw enough errors on (linux-xen-peers.md section 4.4).

:func:`detect_cec` answers from, in order of trust:

1. debugfs: ``<debugfs>/ras/cec/`` exists only while the collector runs (it is
   not created when the kernel was booted with ``ras=cec_disable``); its
   ``action_threshold`` and ``decay_interval`` are read when present;
2. the kernel's build configuration (``/boot/config-<release>`` or
   ``/proc/config.gz``) together with the boot command line: built in and not
   disabled means active;
3. otherwise: unknown (reported as such, and treated as inactive).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CEC_CONFIG: Final = "CONFIG_RAS_CEC=y"
CEC_DISABLE_ARG: Final = "ras=cec_disable"

ACTIVE: Final = "active"
INACTIVE: Final = "inactive"
UNKNOWN: Final = "unknown"


@dataclass(frozen=True)
class CecState:
    """What was found out about the collector, and how."""

    state: str  # ACTIVE, INACTIVE or UNKNOWN
    how: str
    action_threshold: int | None = None
    decay_interval_s: int | None = None

    @property
    def active(self) -> bool:
        return self.state == ACTIVE


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory; False when it cannot be looked at (debugfs is
    root-only)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.strip(), 0) if text is not None else None
    except ValueError:
        return None


def _kernel_config(boot: Path, proc: Path, release: str) -> str | None:
    text = _read(boot / f"config-{release}")
    if text is not None:
        return text
    try:
        with gzip.open(proc / "config.gz", "rt", errors="replace") as fh:
            return fh.read()
    except (OSError, EOFError):
        return None


def detect_cec(
    *,
    debugfs: Path = Path("/sys/kernel/debug"),
    proc: Path = Path("/proc"),
    boot: Path = Path("/boot"),
    release: str | None = None,
) -> CecState:
    """Find out whether the kernel's CEC is active (see the module docstring)."""
    cec_dir = debugfs / "ras" / "cec"
    if _is_dir(cec_dir):
        return CecState(
            ACTIVE,
            f"{cec_dir} exists",
            _read_int(cec_dir / "action_threshold"),
            _read_int(cec_dir / "decay_interval"),
        )
    cmdline = _read(proc / "cmdline") or ""
    if CEC_DISABLE_ARG in cmdline.split():
        return CecState(INACTIVE, f"the kernel was booted with {CEC_DISABLE_ARG}")
    config = _kernel_config(boot, proc, release if release is not None else os.uname().release)
    if config is None:
        return CecState(UNKNOWN, "no debugfs ras/cec and no kernel configuration to read")
    if CEC_CONFIG in config.splitlines():
        if _is_dir(debugfs / "ras") or _debugfs_mounted(proc, debugfs):
            # debugfs is there but the collector's directory is not: it is off.
            return CecState(INACTIVE, f"{CEC_CONFIG} but no {cec_dir}")
        return CecState(ACTIVE, f"{CEC_CONFIG} in the kernel configuration")
    return CecState(INACTIVE, "the kernel is built without CONFIG_RAS_CEC")


def _debugfs_mounted(proc: Path, debugfs: Path) -> bool:
    mounts = _read(proc / "mounts") or ""
    return any(
        len(fields) >= 3 and fields[1] == str(debugfs) and fields[2] == "debugfs"
        for fields in (line.split() for line in mounts.splitlines())
    )
