"""The xen retire backend: physical CPUs and machine pages of a Xen host, from dom0.

In dom0 the kernel's own CPUs are virtual CPUs and its "physical" addresses are
pseudo-physical, so Linux sysfs would retire the wrong things.  This backend
drives the hypervisor through the ``xen-hptool`` program instead (path given to
the constructor, looked up on PATH by default), one command per operation::

    xen-hptool cpu-offline N     "CPU N offlined successfully"
                                 "CPU N offline failed (error E: reason)"
    xen-hptool cpu-online N      "CPU N onlined successfully" / "... online failed (...)"
    xen-hptool mem-offline MFN   "Memory mfn MFN offlined successfully, current state
                                  is [PG_OFFLINE_OFFLINED]"  (or a PENDING/FAILED state)
    xen-hptool mem-online MFN    "Memory mfn MFN onlined successfully" /
                                 "Memory is already onlined!"
    xen-hptool mem-status MFN    "Memory Status 2: [ PAGE_OFFLINED ]"
    xenpm get-cpu-topology       a "CPU core socket node" table of the online CPUs

MFN is the machine frame number in hex without a prefix: the physical address
shifted right by 12.  A page whose offlining Xen accepted but cannot finish yet
(it is owned by a domain or by Xen) comes back PENDING; Xen retires it when it
is freed.

CPU ids are *physical*: a :class:`CpuTarget` with scheme ``hc`` (resolved from
the hc topology) is accepted; one with scheme ``cpu`` names a dom0 virtual CPU
and is refused.

CPU status: xen-hptool has no status command.  ``xenpm get-cpu-topology`` lists
the online CPUs, so a CPU it lists is ONLINE and one it omits is OFFLINE.
Without a usable xenpm the backend answers the last state it set itself during
this process's life, and UNKNOWN for a CPU it never touched.

Errors (all :class:`BackendError`; nothing else escapes): the tool missing or
not executable → not retryable, "xen-hptool not found ..."; a timeout (the
constructor's ``timeout``, default 30 s) → retryable; a CPU failure reporting
errno EBUSY (16) or EAGAIN (11) → retryable; EEXIST (Xen's answer when the CPU
is already in the state asked for) → success; any other failure, a FAILED page
state, or a nonzero exit status with output we do not recognise → not
retryable, quoting the tool's message.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import structlog

from agents.retire.backend import (
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
from fmd.hw.xen import parse_cpu_topology as parse_xenpm_topology

# Where dom0's kernel tells its boot id.
DOM0_PROCFS = "/proc"

log = structlog.get_logger("fmd.retire.xen")

# XEN_SYSCTL_page_offline_op query status bits (the word mem-status prints).
PG_STATUS_OFFLINED = 0x2
PG_STATUS_ONLINE = 0x4
PG_STATUS_OFFLINE_PENDING = 0x8
PG_STATUS_BROKEN = 0x10

_RETRYABLE_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN})


@dataclass(frozen=True)
class CpuResult:
    """What ``xen-hptool cpu-offline``/``cpu-online`` reported for one CPU."""

    ok: bool
    cpuid: int
    errno: int | None = None
    reason: str = ""


def parse_cpu_result(output: str, action: str) -> CpuResult | None:
    """The outcome of ``xen-hptool cpu-<action>`` ("offline" or "online") from its
    output, or None when the output says neither success nor failure."""
    done = re.search(rf"CPU\s+(\d+)\s+{action}d\s+successfully", output)
    if done:
        return CpuResult(ok=True, cpuid=int(done.group(1)))
    failed = re.search(
        rf"CPU\s+(\d+)\s+{action}\s+failed\s*\(error\s+(-?\d+)\s*:\s*([^)]*)\)", output
    )
    if failed:
        return CpuResult(
            ok=False,
            cpuid=int(failed.group(1)),
            errno=abs(int(failed.group(2))),
            reason=failed.group(3).strip(),
        )
    return None


class PageOfflineFailed(ValueError):
    """``xen-hptool mem-offline`` said the page could not be offlined."""


def parse_mem_offline(output: str) -> PageOutcome | None:
    """The outcome of ``xen-hptool mem-offline`` from its output.

    DONE for an OFFLINED state, PENDING for a state containing PENDING; raises
    :class:`PageOfflineFailed` for a FAILED state or a failure message; None when
    the output says nothing we recognise.
    """
    state = re.search(r"current state is\s*\[([^\]]*)\]", output)
    names = set(re.findall(r"PG_OFFLINE_(\w+)", state.group(1))) if state else set()
    if any("PENDING" in n for n in names):
        return PageOutcome.PENDING
    if "FAILED" in names or re.search(r"\bfailed\b", output, re.I):
        raise PageOfflineFailed(_summary(output))
    if "OFFLINED" in names:
        return PageOutcome.DONE
    return None


def parse_mem_status(output: str) -> PageState | None:
    """The page state ``xen-hptool mem-status`` printed, from its hex status word
    or, without one, from the flag names; None when there is neither."""
    word = re.search(r"Memory\s+Status\s+(?:0x)?([0-9a-fA-F]+)\s*:", output)
    if word:
        status = int(word.group(1), 16)
        if status & PG_STATUS_OFFLINED:
            return PageState.RETIRED
        if status & PG_STATUS_OFFLINE_PENDING:
            return PageState.PENDING
        return PageState.USABLE
    flags = set(re.findall(r"\bPAGE_(OFFLINED|OFFLINE_PENDING|ONLINED)\b", output))
    if "OFFLINED" in flags:
        return PageState.RETIRED
    if "OFFLINE_PENDING" in flags:
        return PageState.PENDING
    if "ONLINED" in flags:
        return PageState.USABLE
    return None


def parse_mem_online(output: str) -> bool | None:
    """Whether ``xen-hptool mem-online`` left the page online (True), failed
    (False), or said nothing we recognise (None)."""
    if re.search(r"onlined\s+successfully|already\s+onlined", output, re.I):
        return True
    if re.search(r"\bfailed\b|\bbroken\b", output, re.I):
        return False
    return None


def parse_cpu_topology(output: str) -> set[int] | None:
    """The online CPUs listed by ``xenpm get-cpu-topology``, or None when the
    output is not that table."""
    rows = parse_xenpm_topology(output)
    return None if rows is None else {row.cpu for row in rows}


def _summary(output: str) -> str:
    """The tool's output on one line, for an error message."""
    text = "; ".join(line.strip() for line in output.splitlines() if line.strip())
    return text or "(no output)"


class XenBackend(RetireBackend):
    """Offlines physical CPUs and machine pages through ``xen-hptool`` in dom0."""

    name: ClassVar[str] = "xen"

    def __init__(
        self,
        *,
        xen_hptool: str = "xen-hptool",
        xenpm: str = "xenpm",
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"the xen-hptool timeout must be positive, not {timeout}")
        self.xen_hptool = xen_hptool
        self.xenpm = xenpm
        self.timeout = timeout
        self.env = None if env is None else dict(env)
        # The last state this backend set per physical CPU (the status fallback).
        self._cpu_set: dict[int, CpuState] = {}

    def boot_id(self) -> str | None:
        """dom0's boot id: the hypervisor reboots with it, and a reboot brings every
        physical CPU and page back into service."""
        return read_boot_id(DOM0_PROCFS)

    def describe(self) -> str:
        return f"xen dom0 via {self.xen_hptool} (cpu status: {self.xenpm} get-cpu-topology)"

    # -- CPUs ---------------------------------------------------------------

    def cpu_offline(self, cpu: CpuTarget) -> None:
        self._hotplug(cpu, "offline", CpuState.OFFLINE)

    def cpu_online(self, cpu: CpuTarget) -> None:
        self._hotplug(cpu, "online", CpuState.ONLINE)

    def cpu_status(self, cpu: CpuTarget) -> CpuState:
        self._check_physical(cpu, "query")
        online = self._online_cpus()
        if online is not None:
            return CpuState.ONLINE if cpu.cpuid in online else CpuState.OFFLINE
        return self._cpu_set.get(cpu.cpuid, CpuState.UNKNOWN)

    def online_cpus(self, cpus: Iterable[int]) -> set[int]:
        online = self._online_cpus()
        if online is None:
            wanted = set(cpus)
            return {c for c, st in self._cpu_set.items() if st is CpuState.ONLINE and c in wanted}
        return online & set(cpus)

    def _check_physical(self, cpu: CpuTarget, action: str) -> None:
        check_cpuid(cpu)
        if cpu.scheme == "cpu":
            raise BackendError(
                f"refusing to {action} {cpu.describe()}: cpuid {cpu.cpuid} comes from a "
                "cpu-scheme ASRU, which in Xen dom0 names a dom0 virtual CPU, not a physical "
                "one; only CPUs resolved from the hc topology can be retired on Xen"
            )
        if cpu.scheme != "hc":
            raise BackendError(
                f"refusing to {action} {cpu.describe()}: unknown CPU scheme {cpu.scheme!r} "
                "(the xen backend takes physical CPUs resolved from the hc topology)"
            )

    def _hotplug(self, cpu: CpuTarget, action: str, want: CpuState) -> None:
        self._check_physical(cpu, action)
        command = f"cpu-{action}"
        rc, output = self._run(self.xen_hptool, command, str(cpu.cpuid))
        result = parse_cpu_result(output, action)
        if result is not None and result.ok and rc == 0:
            self._cpu_set[cpu.cpuid] = want
            return
        if result is not None and not result.ok:
            if result.errno == errno.EEXIST or self._already(cpu, want):
                log.info("retire_backend_cpu_unchanged", cpuid=cpu.cpuid, state=want.value)
                self._cpu_set[cpu.cpuid] = want
                return
            raise BackendError(
                f"xen-hptool {command} {cpu.cpuid} failed for {cpu.describe()}: "
                f"error {result.errno} ({result.reason})",
                retryable=result.errno in _RETRYABLE_ERRNOS,
            )
        if rc == 0:
            # The exit status is the tool's own verdict; only the wording was new.
            log.warning("retire_backend_unparsed", command=command, output=_summary(output))
            self._cpu_set[cpu.cpuid] = want
            return
        raise BackendError(
            f"xen-hptool {command} {cpu.cpuid} failed for {cpu.describe()} "
            f"(exit status {rc}): {_summary(output)}"
        )

    def _already(self, cpu: CpuTarget, want: CpuState) -> bool:
        online = self._online_cpus()
        return online is not None and (cpu.cpuid in online) == (want is CpuState.ONLINE)

    def _online_cpus(self) -> set[int] | None:
        """The online physical CPUs according to xenpm, or None when it cannot tell."""
        if self._resolve(self.xenpm) is None:
            return None
        try:
            rc, output = self._run(self.xenpm, "get-cpu-topology")
        except BackendError:
            return None
        return parse_cpu_topology(output) if rc == 0 else None

    # -- pages --------------------------------------------------------------

    def page_retire(self, physaddr: int) -> PageOutcome:
        mfn = _mfn(physaddr)
        rc, output = self._run(self.xen_hptool, "mem-offline", mfn)
        try:
            outcome = parse_mem_offline(output)
        except PageOfflineFailed as exc:
            raise BackendError(f"xen-hptool mem-offline {mfn} failed: {exc}") from exc
        if outcome is PageOutcome.PENDING:
            return outcome
        if outcome is PageOutcome.DONE and rc == 0:
            return outcome
        if outcome is None and rc == 0:
            log.warning("retire_backend_unparsed", command="mem-offline", output=_summary(output))
            return PageOutcome.DONE
        raise BackendError(
            f"xen-hptool mem-offline {mfn} failed (exit status {rc}): {_summary(output)}"
        )

    def page_unretire(self, physaddr: int) -> None:
        mfn = _mfn(physaddr)
        rc, output = self._run(self.xen_hptool, "mem-online", mfn)
        onlined = parse_mem_online(output)
        if onlined and rc == 0:
            return
        if onlined is None and rc == 0:
            log.warning("retire_backend_unparsed", command="mem-online", output=_summary(output))
            return
        raise BackendError(
            f"xen-hptool mem-online {mfn} failed (exit status {rc}): {_summary(output)}"
        )

    def page_status(self, physaddr: int) -> PageState:
        mfn = _mfn(physaddr)
        rc, output = self._run(self.xen_hptool, "mem-status", mfn)
        if rc != 0:
            raise BackendError(
                f"xen-hptool mem-status {mfn} failed (exit status {rc}): {_summary(output)}"
            )
        state = parse_mem_status(output)
        if state is None:
            log.warning("retire_backend_unparsed", command="mem-status", output=_summary(output))
            return PageState.UNKNOWN
        return state

    # -- running the tools --------------------------------------------------

    def _resolve(self, tool: str) -> str | None:
        """The tool's path: as given when it names a path, else found on PATH."""
        if os.sep in tool:
            return tool if os.path.isfile(tool) and os.access(tool, os.X_OK) else None
        path = (self.env if self.env is not None else os.environ).get("PATH")
        return shutil.which(tool, path=path)

    def _run(self, tool: str, *args: str) -> tuple[int, str]:
        """Run ``tool args...``; its exit status and its stdout and stderr, interleaved."""
        path = self._resolve(tool)
        if path is None:
            where = "" if os.sep in tool else " on PATH"
            raise BackendError(
                f"{os.path.basename(tool)} not found (looked for {tool!r}{where}); install the "
                "Xen tools or give the retire agent the tool's path"
            )
        argv = [path, *args]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.timeout,
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BackendError(
                f"{' '.join(argv)} did not finish within {self.timeout:g} s", retryable=True
            ) from exc
        except OSError as exc:
            raise BackendError(f"cannot run {path}: {exc.strerror or exc}") from exc
        output = proc.stdout.decode("utf-8", "replace")
        log.info("retire_backend_cmd", argv=argv, rc=proc.returncode, output=_summary(output))
        return proc.returncode, output


def _mfn(physaddr: int) -> str:
    """The machine frame number of the page holding ``physaddr``, in xen-hptool's hex."""
    return f"{page_align(physaddr) >> PAGE_SHIFT:x}"
