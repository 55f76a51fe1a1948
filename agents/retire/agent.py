"""cpumem-retire: the response agent that takes faulty CPUs and pages out of service.

It receives every ``list.suspect`` naming a ``fault.cpu.*`` or
``fault.memory.*`` suspect (embedded-class matching) and every
``list.repaired``/``list.updated``.  For each faulty suspect it picks an
action by fault class and ASRU:

* CPU faults (``fault.cpu.*`` except bus, interconnect, memory-controller,
  DIMM and similar faults): offline the strand(s) of the resource — one
  strand, or every strand of a core or chip — through the backend;
* page faults (``fault.memory.*page*``, ``fault.cpu.*.page_*``): retire the
  page at the ASRU's ``physaddr``;
* anything else (DIMM, bank, bus, ...) and suspects with ``retire=false``:
  no action (counted in ``nop_flts``).

Safety (what one diagnosis may take away from the host): a CPU action covers
exactly the strands of the suspect's resource, and never more than its ASRU
names (a ``cpu`` ASRU: that one strand; an hc ASRU: the strands under it); a
suspect without a CPU ASRU, or whose resource is wider than its ASRU, is
refused.  Before offlining, the agent counts the host's CPUs (from the
topology) and which are online (from the backend; a CPU whose state cannot be
told counts as offline): it never offlines the last online CPU, nor takes the
number of offline CPUs above ``max_offline_pct`` percent of them.  A refusal is
recorded as the suspect's response ("refused: ..."), so ``fmadm faulty`` says
why the CPU is still in service, and counted in ``cpu_refused``.

When the case had at least one action and every action succeeded, the agent
closes the case (``fmd_case_uuclose``): fmd marks the ASRUs unusable and logs
``list.isolated``.  A case with no action at all is left open: nothing was
taken out of service.  On repair it brings the CPUs back online and unretires
the pages, then reports the case resolved (``uuresolved``).

The kernel takes pages out of use by itself (:mod:`agents.retire.kernel`),
and the agent never offlines such a page again:

* it subscribes to ``ereport.os.linux.memory_failure`` and remembers, for the
  last 4096 pages and across restarts (in its checkpoint, for the current boot
  only), what the kernel's ``memory_failure()`` did.  A page the kernel
  Recovered or Delayed is "retired by the kernel": fmd writes nothing and the
  case is closed as if fmd had retired it.  After Failed or Ignored (the kernel
  could not) fmd retires the page itself and its response says so.  A report
  arriving while fmd's own retire of that page is pending completes it the
  same way.  Reports older than the current boot (a rasdaemon import of
  history) are counted and not remembered.
* with the kernel's correctable-errors collector active (property ``cec``:
  ``auto`` detects it at load through :func:`fmd.hw.cec.detect_cec`, linux
  backend only), the pages of faults diagnosed from corrected errors
  (``page_ce``, ``page_sb``, ``page_ck``) are left to the collector: the
  response says so (a success, not a failure), nothing is written, and the
  agent waits for the kernel — its memory_failure report, or the page's
  HWPOISON flag as the backend reads it, checked at once and then on the
  poll schedule with no limit (the collector's soft offline emits no
  memory_failure report).  The case stays open, "faulted but still in
  service", until then.  Uncorrected-error pages, and a replayed fault whose
  page was already out of service (the reboot undid it, and the collector's
  counts started over), are retired by fmd.

Per suspect, the state machine of one retire::

    start --ok--> done
      |  \\--permanent error--> failed (recorded, case stays open)
      |--kernel already retired it (memory_failure Recovered/Delayed)--> done
      |--retryable error--> retry after cpu_delay, at most cpu_tries times
      |--page pending--> poll after page_ret_mindelay, doubling up to
      |                  page_ret_maxdelay, page_retire_maxretries polls;
      |                  then given up (counted in page_retmax) and done
      '--corrected-error page, CEC active--> waiting for the kernel
            --memory_failure Recovered/Delayed, or page found poisoned--> done
            --memory_failure Failed/Ignored--> fmd retires it itself (start)

What happened is recorded per suspect with ``Handle.case_response`` so that
``fmadm faulty`` shows it, and counted in the module's statistics.  Backend
errors never escape: a failed CPU (not hot-pluggable, permission denied, tool
missing) is reported and the agent goes on.

At start-up fmd re-sends the diagnoses whose resources must stay retired
(``replay_faults``): CPUs come back online after a reboot, and a crash can
fall between a retire and the close of its case.  Every action is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

from agents.retire.backend import (
    PAGE_SHIFT,
    BackendError,
    CpuState,
    CpuTarget,
    PageOutcome,
    PageState,
    RetireBackend,
    make_backend,
    page_align,
)
from agents.retire.kernel import (
    CEC_AUTO,
    CEC_MODES,
    MEMORY_FAILURE_CLASS,
    KernelAction,
    KernelPages,
    is_corrected_page_fault,
    resolve_cec,
)
from agents.retire.linux import LinuxBackend
from fmd.api import fmri_text
from fmd.config import PropSpec, PropType
from fmd.errors import FmdError
from fmd.hw.events import MF_RESULTS
from fmd.log import Once
from fmd.module import Plugin
from fmd.protocol import (
    FAULT_FAULTY,
    FAULT_UNUSABLE,
    CpuFmri,
    Ereport,
    HcFmri,
    ListEvent,
    MemFmri,
    Pairs,
    Suspect,
)
from fmd.states import RESPONSE_KERNEL, RESPONSE_NONE

if TYPE_CHECKING:
    from fmd.api import Handle

# Leaf-class prefixes of faults that name no CPU or page to take out of service.
_NO_ACTION: Final = (
    "bus",
    "interconnect",
    "dimm",
    "bank",
    "datapath",
    "mc",
    "nb",
    "northbridge",
    "quickpath",
    "dma",
    "chip",
    "socket",
)

# A memory_failure report this long before the boot time is from an earlier boot
# (the sources' conversion of kernel timestamps may err by a little; a reboot
# takes far longer).
_BOOT_SLACK_NS: Final = 10 * 10**9


def action_for(suspect: Suspect) -> str | None:
    """``"cpu"``, ``"page"`` or None (no action) for one suspect."""
    if not suspect.retire:
        return None
    cls = suspect.cls
    leaf = cls.rsplit(".", 1)[-1]
    if leaf.startswith("page"):
        return "page"
    if cls.startswith("fault.memory."):
        return None
    if cls.startswith("fault.cpu."):
        if leaf.startswith(_NO_ACTION):
            return None
        return "cpu"
    return None


@dataclass
class _Pending:
    """The retire work of one case still in progress."""

    uuid: str
    suspects: list[Suspect] = field(default_factory=list)
    # suspect index -> "pending", "done" or "failed"
    states: dict[int, str] = field(default_factory=dict)
    timers: set[int] = field(default_factory=set)
    # Every suspect acted on was already out of service (a fault re-sent after a
    # reboot): the case is closed already and need not be closed again.
    isolated: bool = False
    # Pending page suspects left to the kernel's CEC (waiting for the kernel).
    waiting_kernel: set[int] = field(default_factory=set)


class CpumemRetire(Plugin):
    """Offlines faulty CPUs and retires faulty pages; undoes it on repair."""

    name: ClassVar[str] = "cpumem-retire"
    version: ClassVar[str] = "1.0"
    description: ClassVar[str] = "CPU/Memory Retire Agent"
    subscriptions: ClassVar[tuple[str, ...]] = (
        "fault.cpu.*",
        "fault.memory.*",
        "list.repaired",
        MEMORY_FAILURE_CLASS,
    )
    replay_faults: ClassVar[bool] = True
    properties: ClassVar[tuple[PropSpec, ...]] = (
        PropSpec(
            "backend",
            PropType.ENUM,
            "sim",
            "How CPUs and pages are taken out of service: sim (recorded in the store), "
            "linux (sysfs) or xen (xen-hptool in dom0).",
            choices=("sim", "linux", "xen"),
        ),
        PropSpec("sysfs_root", PropType.STRING, "/sys", "linux backend: where sysfs is mounted."),
        PropSpec(
            "procfs_root",
            PropType.STRING,
            "/proc",
            "linux backend: where procfs is (page flags, boot id and time, CEC detection).",
        ),
        PropSpec(
            "debugfs_root",
            PropType.STRING,
            "/sys/kernel/debug",
            "linux backend: debugfs (unpoisoning pages, CEC detection).",
        ),
        PropSpec(
            "boot_root",
            PropType.STRING,
            "/boot",
            "linux backend: where the kernel configurations (config-<release>) are, "
            "for CEC detection.",
        ),
        PropSpec(
            "page_offline",
            PropType.ENUM,
            "soft",
            "linux backend: soft_offline_page, hard_offline_page, or soft then hard.",
            choices=("soft", "hard", "soft-then-hard"),
        ),
        PropSpec(
            "cec",
            PropType.ENUM,
            CEC_AUTO,
            "Whether the kernel's correctable-errors collector (CEC) is active: then fmd "
            "leaves the pages of corrected-error faults to it.  auto detects it when the "
            "agent loads (linux backend only: under debugfs_root, procfs_root and "
            "boot_root); the statistic cec_active shows the outcome.",
            choices=CEC_MODES,
        ),
        PropSpec("xen_hptool", PropType.STRING, "xen-hptool", "xen backend: the tool to run."),
        PropSpec("xenpm", PropType.STRING, "xenpm", "xen backend: reads which CPUs are online."),
        PropSpec("cmd_timeout", PropType.TIME, "30sec", "xen backend: time limit per command."),
        PropSpec("cpu_offline_enable", PropType.BOOL, "true", "Offline CPUs found faulty."),
        PropSpec(
            "offline_vcpus",
            PropType.BOOL,
            "false",
            "In a virtual machine, offline the virtual CPUs found faulty too.  By default "
            "they are left online: a vCPU is not the faulty part, the physical one belongs "
            "to the host, and the response says so.",
        ),
        PropSpec("cpu_online_enable", PropType.BOOL, "true", "Online CPUs once repaired."),
        PropSpec("page_retire_enable", PropType.BOOL, "true", "Retire pages found faulty."),
        PropSpec("page_unretire_enable", PropType.BOOL, "true", "Unretire repaired pages."),
        PropSpec(
            "max_offline_pct",
            PropType.UINT32,
            "50",
            "The most CPUs, as a percentage of all of the host's CPUs, that may be offline "
            "after an offline; an offline that would exceed it (or leave no CPU online) is "
            "refused and the refusal shown by fmadm faulty.",
        ),
        PropSpec("cpu_tries", PropType.UINT32, "10", "Attempts to offline a busy CPU."),
        PropSpec("cpu_delay", PropType.TIME, "1sec", "Delay between CPU offline attempts."),
        PropSpec(
            "page_ret_mindelay", PropType.TIME, "1sec", "First delay before re-checking a page."
        ),
        PropSpec(
            "page_ret_maxdelay", PropType.TIME, "5min", "Longest delay between page re-checks."
        ),
        PropSpec(
            "page_retire_maxretries",
            PropType.UINT32,
            "5",
            "Re-checks of a pending page retire before giving up (0: no limit).",
        ),
    )

    _STATS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("cpu_flts", "CPU faults resolved by offlining"),
        ("cpu_repairs", "CPUs brought back online"),
        ("cpu_fails", "CPU offline or online failures"),
        ("cpu_supp", "CPU actions suppressed by configuration"),
        ("cpu_refused", "CPU offlines refused by the safety limits or the ASRU's scope"),
        ("page_flts", "page faults resolved by retiring"),
        ("page_repairs", "pages unretired"),
        ("page_fails", "page retire or unretire failures"),
        ("page_supp", "page actions suppressed by configuration"),
        ("page_retmax", "page retires given up after too many re-checks"),
        ("page_kernel", "page faults whose page the kernel had retired (not offlined again)"),
        ("page_cec", "corrected-error page faults left to the kernel's CEC"),
        ("kernel_mf", "the kernel's memory_failure reports received"),
        ("kernel_mf_bad", "memory_failure reports without a usable page or result"),
        ("kernel_mf_old", "memory_failure reports from before this boot (not remembered)"),
        ("retries", "actions tried again after a transient error"),
        ("bad_flts", "suspects whose resource could not be understood"),
        ("nop_flts", "suspects that need no action"),
    )

    def init(self, hdl: Handle) -> None:
        for name, desc in self._STATS:
            hdl.stat(name, desc)
        self.cpus = self._known_cpus(hdl)
        self.backend: RetireBackend = make_backend(
            str(hdl.prop("backend")),
            engine=hdl.store_engine if hdl.prop("backend") == "sim" else None,
            now_ns=hdl.now_ns,
            sysfs_root=str(hdl.prop("sysfs_root")),
            procfs_root=str(hdl.prop("procfs_root")),
            debugfs_root=str(hdl.prop("debugfs_root")),
            page_offline=str(hdl.prop("page_offline")),
            xen_hptool=str(hdl.prop("xen_hptool")),
            xenpm=str(hdl.prop("xenpm")),
            timeout=max(1.0, int(hdl.prop("cmd_timeout")) / 1e9),
            cpus=self.cpus,
        )
        self.pending: dict[str, _Pending] = {}
        hdl.log.info("retire_backend", backend=self.backend.describe())
        self._once = Once()
        self._init_kernel(hdl)

    def _init_kernel(self, hdl: Handle) -> None:
        """Load what the kernel did to pages (this boot only) and decide about its CEC."""
        self.boot = self.backend.boot_id()
        backend = self.backend
        self.boot_time_ns = backend.boot_time_ns() if isinstance(backend, LinuxBackend) else None
        self.kernel, dropped = KernelPages.load(hdl.specific, self.boot)
        if dropped:
            hdl.log.info("kernel_pages_dropped", reason=dropped)
        self.kernel.save(hdl.specific, self.boot)
        mode = str(hdl.prop("cec"))
        self.cec = resolve_cec(
            mode,
            str(hdl.prop("backend")),
            debugfs=str(hdl.prop("debugfs_root")),
            proc=str(hdl.prop("procfs_root")),
            boot=str(hdl.prop("boot_root")),
        )
        hdl.log.info(
            "retire_cec",
            cec=mode,
            state=self.cec.state,
            how=self.cec.how,
            action_threshold=self.cec.action_threshold,
            decay_interval_s=self.cec.decay_interval_s,
            corrected_pages="left to the kernel" if self.cec.active else "retired by fmd",
        )
        hdl.stat(
            "cec_active",
            "1: corrected-error pages are left to the kernel's CEC "
            f"(cec={mode}: {self.cec.state}, {self.cec.how})",
        ).value = int(self.cec.active)
        hdl.stat(
            "cec_threshold",
            "the CEC's action_threshold: corrected errors before it offlines a page (0: unknown)",
        ).value = self.cec.action_threshold or 0

    @staticmethod
    def _known_cpus(hdl: Handle) -> set[int] | None:
        try:
            cpus = {n.asru.cpuid for n in hdl.topo.nodes() if isinstance(n.asru, CpuFmri)}
        except Exception:
            return None
        return cpus or None

    def replay_isolated(self, hdl: Handle) -> bool:
        """Faults already isolated are re-sent at start-up only after the host
        rebooted (its boot id changed, or cannot be told): a reboot brings CPUs
        back online and pages back into use; a plain restart of fmd does not."""
        current = self.backend.boot_id()
        previous = hdl.specific.get("boot_id")
        if current is not None:
            hdl.specific["boot_id"] = current
        return current is None or previous != current

    # -- events ------------------------------------------------------------------
    def recv(self, hdl: Handle, event: Any) -> None:
        if isinstance(event, Ereport):
            if event.cls == MEMORY_FAILURE_CLASS:
                self._kernel_report(hdl, event)
            return
        if not isinstance(event, ListEvent):
            return
        if event.cls == "list.suspect":
            self._retire(hdl, event)
        elif event.cls in ("list.repaired", "list.updated"):
            self._unretire(hdl, event)

    def _retire(self, hdl: Handle, ev: ListEvent) -> None:
        work = _Pending(ev.uuid, list(ev.fault_list))
        for idx, suspect in enumerate(ev.fault_list):
            status = ev.fault_status[idx] if idx < len(ev.fault_status) else FAULT_FAULTY
            if not status & FAULT_FAULTY:
                continue
            action = action_for(suspect)
            if action is None:
                hdl.stat("nop_flts").incr()
                continue
            enabled = "cpu_offline_enable" if action == "cpu" else "page_retire_enable"
            if not hdl.prop(enabled):
                hdl.stat(f"{action}_supp").incr()
                hdl.case_response(ev.uuid, idx, RESPONSE_NONE, False, f"{enabled} is false")
                work.states[idx] = "failed"
                continue
            if action == "cpu" and not hdl.prop("offline_vcpus"):
                guest = _guest_of(hdl)
                if guest is not None:
                    hdl.stat("cpu_virtual", "faults on virtual CPUs left online").incr()
                    hdl.case_response(
                        ev.uuid,
                        idx,
                        RESPONSE_NONE,
                        False,
                        f"left online: a virtual CPU of this {guest} virtual machine; the "
                        "physical fault, if any, belongs to the host (offline_vcpus=true "
                        "offlines it)",
                    )
                    work.states[idx] = "failed"
                    continue
            work.states[idx] = "pending"
        if not work.states:
            return
        work.isolated = all(
            idx < len(ev.fault_status) and ev.fault_status[idx] & FAULT_UNUSABLE
            for idx in work.states
        )
        old = self.pending.pop(ev.uuid, None)
        if old is not None:
            for tid in old.timers:
                hdl.timer_remove(tid)
        self.pending[ev.uuid] = work
        for idx, state in list(work.states.items()):
            if state == "pending":
                self._attempt(hdl, work, ev.fault_list[idx], idx, 1)
        self._maybe_close(hdl, work)

    def _attempt(self, hdl: Handle, work: _Pending, suspect: Suspect, idx: int, n: int) -> None:
        """One try at the action of suspect ``idx``; schedules the next try if needed."""
        action = action_for(suspect)
        try:
            if action == "cpu":
                targets = self._cpu_targets(hdl, suspect)
                self._check_limits(hdl, targets)
                for target in targets:
                    self.backend.cpu_offline(target)
                hdl.stat("cpu_flts").incr()
                names = ", ".join(t.label or f"cpu {t.cpuid}" for t in targets)
                work.states[idx] = "done"
                hdl.case_response(
                    work.uuid,
                    idx,
                    "offline",
                    True,
                    f"offlined strand(s) {', '.join(str(t.cpuid) for t in targets)} ({names}) "
                    f"through {self.backend.name}",
                )
                hdl.log.info(
                    "cpu_offlined",
                    uuid=work.uuid,
                    cpus=[t.cpuid for t in targets],
                    backend=self.backend.name,
                )
                return
            physaddr = self._physaddr(suspect)
            known = self.kernel.get(page_align(physaddr) >> PAGE_SHIFT)
            if known is not None and known.retired:
                self._kernel_retired(hdl, work, idx, f"retired by the kernel ({known.describe()})")
                return
            if known is None and self._leave_to_cec(work, suspect):
                self._wait_for_kernel(hdl, work, idx, physaddr, 1)
                return
            outcome = self.backend.page_retire(physaddr)
            if outcome is PageOutcome.DONE:
                work.states[idx] = "done"
                hdl.stat("page_flts").incr()
                detail = f"retired page 0x{physaddr:x}"
                if known is not None:
                    detail += f" (the kernel could not: {known.describe()})"
                hdl.case_response(work.uuid, idx, "retire", True, detail)
                hdl.log.info("page_retired", uuid=work.uuid, physaddr=hex(physaddr))
                return
            self._poll_later(hdl, work, idx, n)
        except _Refused as exc:
            hdl.stat("cpu_refused").incr()
            work.states[idx] = "failed"
            hdl.case_response(work.uuid, idx, "offline", False, f"refused: {exc}")
            hdl.log.warning("retire_refused", uuid=work.uuid, reason=str(exc))
        except _BadResource as exc:
            hdl.stat("bad_flts").incr()
            work.states[idx] = "failed"
            hdl.case_response(work.uuid, idx, RESPONSE_NONE, False, str(exc))
            hdl.log.warning("retire_bad_resource", uuid=work.uuid, error=str(exc))
        except BackendError as exc:
            tries = int(hdl.prop("cpu_tries")) if action == "cpu" else 1
            if exc.retryable and n < tries:
                hdl.stat("retries").incr()
                delay = int(hdl.prop("cpu_delay"))
                work.timers.add(hdl.timer_install(delay, ("retry", work.uuid, idx, n + 1)))
                hdl.log.info("retire_retry", uuid=work.uuid, attempt=n, error=str(exc))
                return
            hdl.stat(f"{action}_fails").incr()
            work.states[idx] = "failed"
            verb = "offline" if action == "cpu" else "retire"
            hdl.case_response(work.uuid, idx, verb, False, str(exc))
            hdl.log.error("retire_failed", uuid=work.uuid, action=verb, error=str(exc))

    def _poll_later(self, hdl: Handle, work: _Pending, idx: int, n: int) -> None:
        limit = int(hdl.prop("page_retire_maxretries"))
        if limit and n > limit:
            # As the reference does: stop polling and count the page as handled.
            hdl.stat("page_retmax").incr()
            work.states[idx] = "done"
            hdl.case_response(
                work.uuid, idx, "retire", True, f"page retire still pending after {limit} checks"
            )
            return
        work.timers.add(hdl.timer_install(_backoff(hdl, n), ("poll", work.uuid, idx, n + 1)))

    def timeout(self, hdl: Handle, timer_id: int, arg: Any) -> None:
        kind, uuid, idx, n = arg
        work = self.pending.get(uuid)
        if work is None:
            return
        work.timers.discard(timer_id)
        if idx >= len(work.suspects) or work.states.get(idx) != "pending":
            return
        suspect = work.suspects[idx]
        if kind == "kernel":
            # The address was read from this suspect before the wait began.
            self._wait_for_kernel(hdl, work, idx, self._physaddr(suspect), n)
        elif kind == "poll":
            try:
                state = self.backend.page_status(self._physaddr(suspect))
            except (BackendError, _BadResource) as exc:
                hdl.log.warning("page_status_failed", uuid=uuid, error=str(exc))
                state = None
            if state is not None and state.value == "retired":
                work.states[idx] = "done"
                hdl.stat("page_flts").incr()
                hdl.case_response(uuid, idx, "retire", True, "page retired")
            else:
                self._poll_later(hdl, work, idx, n)
        else:
            self._attempt(hdl, work, suspect, idx, n)
        self._maybe_close(hdl, work)

    # -- the kernel's own page actions -----------------------------------------------
    def _kernel_report(self, hdl: Handle, ev: Ereport) -> None:
        """Remember what the kernel's memory_failure() did to a page; complete the
        pending retire of that page accordingly."""
        hdl.stat("kernel_mf").incr()
        parsed = _memory_failure(ev)
        if isinstance(parsed, str):
            hdl.stat("kernel_mf_bad").incr()
            if self._once.first(("kernel_mf_bad", parsed.split(":")[0])):
                hdl.log.warning("kernel_report_rejected", reason=parsed, note="logged once")
            return
        pfn, action = parsed
        if self.boot_time_ns is not None and action.time_ns < self.boot_time_ns - _BOOT_SLACK_NS:
            hdl.stat("kernel_mf_old").incr()
            hdl.log.info("kernel_report_before_boot", pfn=hex(pfn), result=action.result)
            return
        self.kernel.record(pfn, action)
        self.kernel.save(hdl.specific, self.boot)
        hdl.log.info(
            "kernel_page_action",
            pfn=hex(pfn),
            result=action.result,
            page_type=action.page_type,
            source=ev.payload.get("source"),
        )
        for work in list(self.pending.values()):
            for idx, state in list(work.states.items()):
                if state != "pending" or self._page_of(work.suspects[idx]) != pfn:
                    continue
                if action.retired:
                    detail = f"retired by the kernel ({action.describe()})"
                    self._kernel_retired(hdl, work, idx, detail)
                elif idx in work.waiting_kernel:
                    # The kernel could not: fmd retires the page itself after all.
                    work.waiting_kernel.discard(idx)
                    hdl.log.info("kernel_could_not_retire", uuid=work.uuid, pfn=hex(pfn))
                    self._attempt(hdl, work, work.suspects[idx], idx, 1)
            self._maybe_close(hdl, work)

    def _page_of(self, suspect: Suspect) -> int | None:
        """The page frame number a page suspect names; None for other suspects."""
        if action_for(suspect) != "page":
            return None
        try:
            return page_align(self._physaddr(suspect)) >> PAGE_SHIFT
        except (BackendError, _BadResource):
            return None

    def _leave_to_cec(self, work: _Pending, suspect: Suspect) -> bool:
        """Is this page the kernel's CEC to retire?  A corrected-error page of a new
        diagnosis, while the CEC is active.  A fault re-sent with its page already
        out of service (after a reboot) is not: the collector's counts started over,
        so fmd keeps the page out of service itself."""
        return self.cec.active and not work.isolated and is_corrected_page_fault(suspect.cls)

    def _kernel_retired(self, hdl: Handle, work: _Pending, idx: int, detail: str) -> None:
        work.states[idx] = "done"
        work.waiting_kernel.discard(idx)
        hdl.stat("page_kernel").incr()
        hdl.case_response(work.uuid, idx, RESPONSE_KERNEL, True, detail)
        hdl.log.info("page_retired_by_kernel", uuid=work.uuid, detail=detail)

    def _wait_for_kernel(
        self, hdl: Handle, work: _Pending, idx: int, physaddr: int, n: int
    ) -> None:
        """Leave a corrected-error page to the kernel's CEC: done if the page is
        poisoned already, else say so (first time) and look again later."""
        try:
            state = self.backend.page_status(physaddr)
        except BackendError as exc:
            hdl.log.warning("page_status_failed", uuid=work.uuid, error=str(exc))
            state = PageState.UNKNOWN
        how = f"CEC active: {self.cec.how}"
        if state is PageState.RETIRED:
            self._kernel_retired(
                hdl, work, idx, f"retired by the kernel (page 0x{physaddr:x} is poisoned; {how})"
            )
            return
        if idx not in work.waiting_kernel:
            work.waiting_kernel.add(idx)
            hdl.stat("page_cec").incr()
            hdl.case_response(
                work.uuid,
                idx,
                RESPONSE_KERNEL,
                True,
                f"left to the kernel's correctable-errors collector ({how})",
            )
            hdl.log.info("page_left_to_kernel", uuid=work.uuid, physaddr=hex(physaddr), how=how)
        # No limit: the page is the kernel's to retire, and it may take long.
        work.timers.add(hdl.timer_install(_backoff(hdl, n), ("kernel", work.uuid, idx, n + 1)))

    def _maybe_close(self, hdl: Handle, work: _Pending) -> None:
        if any(s == "pending" for s in work.states.values()):
            return
        self.pending.pop(work.uuid, None)
        if all(s == "done" for s in work.states.values()) and not work.isolated:
            try:
                hdl.case_uuclose(work.uuid)
            except FmdError as exc:
                hdl.log.warning("case_close_failed", uuid=work.uuid, error=str(exc))

    # -- repair --------------------------------------------------------------------
    def _unretire(self, hdl: Handle, ev: ListEvent) -> None:
        work = self.pending.pop(ev.uuid, None)
        if work is not None:
            for tid in work.timers:
                hdl.timer_remove(tid)
        all_ok = True
        unusable = False
        for idx, suspect in enumerate(ev.fault_list):
            status = ev.fault_status[idx] if idx < len(ev.fault_status) else 0
            if status & FAULT_FAULTY:
                continue
            unusable = unusable or bool(status & FAULT_UNUSABLE)
            action = action_for(suspect)
            if action is None:
                continue
            enabled = "cpu_online_enable" if action == "cpu" else "page_unretire_enable"
            if not hdl.prop(enabled):
                hdl.stat(f"{action}_supp").incr()
                all_ok = False
                continue
            try:
                if action == "cpu":
                    targets = self._cpu_targets(hdl, suspect)
                    for target in targets:
                        if self.backend.cpu_status(target) is not CpuState.ONLINE:
                            self.backend.cpu_online(target)
                    hdl.stat("cpu_repairs").incr()
                    hdl.case_response(
                        ev.uuid,
                        idx,
                        "online",
                        True,
                        f"onlined strand(s) {', '.join(str(t.cpuid) for t in targets)}",
                    )
                    hdl.log.info("cpu_onlined", uuid=ev.uuid, cpus=[t.cpuid for t in targets])
                else:
                    physaddr = self._physaddr(suspect)
                    self.backend.page_unretire(physaddr)
                    # Back in use: what the kernel once did to it no longer holds.
                    self.kernel.forget(page_align(physaddr) >> PAGE_SHIFT)
                    self.kernel.save(hdl.specific, self.boot)
                    hdl.stat("page_repairs").incr()
                    hdl.case_response(
                        ev.uuid, idx, "unretire", True, f"unretired page 0x{physaddr:x}"
                    )
                    hdl.log.info("page_unretired", uuid=ev.uuid, physaddr=hex(physaddr))
            except (BackendError, _BadResource) as exc:
                all_ok = False
                hdl.stat(f"{action}_fails").incr()
                verb = "online" if action == "cpu" else "unretire"
                hdl.case_response(ev.uuid, idx, verb, False, str(exc))
                hdl.log.error("unretire_failed", uuid=ev.uuid, action=verb, error=str(exc))
        if ev.cls == "list.repaired" and unusable and all_ok:
            try:
                hdl.case_uuresolved(ev.uuid)
            except FmdError as exc:
                hdl.log.warning("case_resolve_failed", uuid=ev.uuid, error=str(exc))

    # -- resources -----------------------------------------------------------------
    def _cpu_targets(self, hdl: Handle, suspect: Suspect) -> list[CpuTarget]:
        """The strands to offline: those of the hc resource (physical, via the
        topology), else the cpu-scheme ASRU (logical); never wider than the ASRU."""
        res, asru = suspect.resource, suspect.asru
        if not isinstance(asru, CpuFmri | HcFmri):
            raise _BadResource(
                f"{suspect.cls}: the ASRU {fmri_text(asru) or '(none)'} names no CPU, so "
                "nothing is taken out of service"
            )
        found: list[CpuTarget] = []
        if isinstance(res, HcFmri) and res.hc_list:
            found = _strands_under(hdl, res.hc_list, suspect.location)
        if not found and isinstance(asru, HcFmri) and asru.hc_list:
            found = _strands_under(hdl, asru.hc_list, suspect.location)
        if not found and isinstance(asru, CpuFmri):
            found = [CpuTarget(asru.cpuid, "cpu", suspect.location)]
        if not found:
            raise _BadResource(
                f"{suspect.cls}: neither a strand in the topology nor a cpu-scheme ASRU "
                f"(resource {fmri_text(res) or 'none'}, asru {fmri_text(asru) or 'none'})"
            )
        if isinstance(asru, CpuFmri):
            allowed = {asru.cpuid}
        else:
            allowed = {t.cpuid for t in _strands_under(hdl, asru.hc_list, None)}
        wider = sorted(t.cpuid for t in found if t.cpuid not in allowed)
        if wider:
            raise _Refused(
                f"the resource {fmri_text(res) or '(none)'} covers cpu(s) "
                f"{_cpu_list(wider)} that its ASRU {fmri_text(asru)} does not name"
            )
        return found

    def _check_limits(self, hdl: Handle, targets: list[CpuTarget]) -> None:
        """Refuse an offline that would leave no CPU online or more than
        ``max_offline_pct`` percent of the host's CPUs offline."""
        cpus = self.cpus
        if not cpus:
            raise _Refused(
                "fmd cannot tell how many CPUs this host has (no CPU in its topology), "
                "so it takes none offline"
            )
        wanted = {t.cpuid for t in targets}
        strangers = sorted(wanted - cpus)
        if strangers:
            raise _Refused(f"cpu(s) {_cpu_list(strangers)} are not in this host's topology")
        online = self.backend.online_cpus(cpus)
        left = online - wanted
        if not left:
            raise _Refused(
                f"offlining cpu(s) {_cpu_list(sorted(wanted))} would leave no CPU online"
            )
        pct = int(hdl.prop("max_offline_pct"))
        offline = len(cpus) - len(left)
        if offline * 100 > pct * len(cpus):
            raise _Refused(
                f"offlining cpu(s) {_cpu_list(sorted(wanted))} would leave {offline} of "
                f"{len(cpus)} CPUs offline, more than max_offline_pct={pct}%"
            )

    @staticmethod
    def _physaddr(suspect: Suspect) -> int:
        asru = suspect.asru
        if isinstance(asru, MemFmri) and asru.physaddr is not None:
            return int(asru.physaddr)
        raise _BadResource(
            f"{suspect.cls}: the ASRU {fmri_text(asru) or 'none'} has no physical address"
        )


def _guest_of(hdl: Handle) -> str | None:
    """The hypervisor's name when this host is a virtual machine (its CPUs virtual)."""
    try:
        virt = hdl.topo.virtualization
    except FmdError:
        return None
    return (virt.hypervisor or "unknown") if virt.is_guest else None


def _backoff(hdl: Handle, n: int) -> int:
    """The delay before the ``n``-th re-check of a page: page_ret_mindelay doubled
    each time, at most page_ret_maxdelay."""
    lo, hi = int(hdl.prop("page_ret_mindelay")), int(hdl.prop("page_ret_maxdelay"))
    return min(hi, lo << min(n - 1, 40))


def _memory_failure(ev: Ereport) -> tuple[int, KernelAction] | str:
    """The page and the kernel's action in a memory_failure ereport, or why they
    cannot be told (the reason starts with the name of what is wrong)."""
    payload = ev.payload
    pfn = payload.get("pfn")
    if not isinstance(pfn, int) or isinstance(pfn, bool):
        physaddr = payload.get("physaddr")
        if not isinstance(physaddr, int) or isinstance(physaddr, bool):
            return f"pfn: neither pfn nor physaddr is an integer (pfn {pfn!r})"
        pfn = physaddr >> PAGE_SHIFT
    if pfn < 0:
        return f"pfn: {pfn} is negative"
    result = payload.get("action_result")
    if result not in MF_RESULTS:
        return f"action_result: {result!r} is not one of {', '.join(MF_RESULTS)}"
    page_type = payload.get("page_type")
    return pfn, KernelAction(
        str(result), page_type if isinstance(page_type, str) else "", ev.time_ns
    )


class _BadResource(Exception):
    """A suspect whose resource names nothing the backend can act on."""


class _Refused(Exception):
    """An offline the agent will not do: wider than the ASRU, or past the safety limits."""


def _strands_under(hdl: Handle, pairs: Pairs, label: str | None) -> list[CpuTarget]:
    """The strands of the topology at or under the hc path ``pairs``."""
    want = [(n, str(i)) for n, i in pairs]
    found = []
    for node in hdl.topo.nodes():
        path = [(n, str(i)) for n, i in node.fmri.hc_list]
        strand = path[-1][0] == "strand" and isinstance(node.asru, CpuFmri)
        if strand and path[: len(want)] == want:
            assert isinstance(node.asru, CpuFmri)
            found.append(CpuTarget(node.asru.cpuid, "hc", label))
    return found


def _cpu_list(cpuids: list[int]) -> str:
    """``0-3, 8`` for [0, 1, 2, 3, 8]."""
    runs: list[list[int]] = []
    for c in cpuids:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
