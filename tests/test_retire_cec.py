"""The retire agent and the kernel's own page actions: pages the kernel's
memory_failure() already took out of use are not offlined again, pages of
corrected errors are left to the kernel's CEC when it is active, what the
kernel did survives a restart of the agent (not a reboot), and fmadm faulty
says the kernel retired the page.

The agent runs on its own Handle (sim platform, simulated clock) with the linux
backend on fake sysfs/procfs/debugfs trees, so that what it writes to
``soft_offline_page`` can be checked; one test runs the real daemon to show the
kernel's report reaching the agent and fmadm faulty's lines."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.retire.agent import CpumemRetire
from agents.retire.backend import PageOutcome, PageState
from agents.retire.kernel import (
    KernelAction,
    KernelPages,
    is_corrected_page_fault,
    resolve_cec,
)
from agents.retire.linux import LinuxBackend
from fmd.api import Handle
from fmd.asru import asru_status, fru_status
from fmd.cli import faulty
from fmd.hw import events
from fmd.protocol import (
    FAULT_FAULTY,
    FAULT_REPLACED,
    FAULT_UNUSABLE,
    EnaGenerator,
    Ereport,
    ListEvent,
    MemFmri,
    Suspect,
    ereport_from_json_dict,
)
from fmd.states import RESPONSE_KERNEL
from tests.diagnosis_util import T0, make_handle
from tests.fmdproc import FmdProcess
from tests.retire_fakes import (
    make_fake_debugfs,
    make_fake_procfs,
    make_fake_sysfs,
    offlined_pages,
)

SEC = 10**9
PFN = 0x1F2
ADDR = (PFN << 12) | 0x240  # a byte in page PFN
ENA = EnaGenerator()
CEC_SET = "CEC active: set by the cec property"


@dataclass
class Rig:
    """The agent on a fake Linux host: its trees, the cases it closed and resolved."""

    hdl: Handle
    plugin: CpumemRetire
    sysfs: Path
    procfs: Path
    closed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def send(self, ev: Any) -> None:
        self.plugin.recv(self.hdl, ev)

    def responses(self) -> list[tuple[int, str, bool, str]]:
        return [(r["idx"], r["action"], r["ok"], r["detail"]) for r in self.hdl._out.responses]

    def last_response(self) -> tuple[int, str, bool, str]:
        return self.responses()[-1]

    def stat(self, name: str) -> int:
        return self.hdl.stat(name).value

    def fire_timers(self, limit: int = 20) -> list[int]:
        """Run up to ``limit`` of the agent's timers, earliest first; return their
        deadlines relative to the start (the kernel waits have no end of their own)."""
        timers = self.hdl._ctx.timers
        fired = []
        for _ in range(limit):
            pending = sorted((when, tid) for when, tid in timers._heap if tid in timers._timers)
            if not pending:
                break
            when, tid = pending[0]
            _fire, arg = timers._timers.pop(tid)
            fired.append(when - T0)
            self.plugin.timeout(self.hdl, tid, arg)
        return fired

    def checkpoint(self) -> dict[str, Any]:
        """The module's checkpoint document, as a restart restores it."""
        doc: dict[str, Any] = orjson.loads(self.hdl.document({"errlog": 0, "fltlog": 0}))
        return doc


def make_rig(
    tmp_path: Path,
    props: Iterable[tuple[str, str]] = (),
    *,
    poisoned: Iterable[int] = (),
    boot: str = "boot-1",
    doc: dict[str, Any] | None = None,
) -> Rig:
    """The agent with the linux backend on fake trees under ``tmp_path`` (CEC
    inactive unless ``props`` say otherwise), restored from ``doc`` if given."""
    sysfs = tmp_path / "sys"
    if not sysfs.exists():
        make_fake_sysfs(sysfs)
    procfs = make_fake_procfs(tmp_path / "proc", poisoned, boot=boot)
    debugfs = make_fake_debugfs(tmp_path / "debug")
    overrides = [
        ("backend", "linux"),
        ("sysfs_root", str(sysfs)),
        ("procfs_root", str(procfs)),
        ("debugfs_root", str(debugfs)),
        ("boot_root", str(tmp_path / "boot")),
        ("cec", "inactive"),
        *props,
    ]
    plugin = CpumemRetire()
    hdl, _writer = make_handle(plugin, "GMCA", overrides, doc=doc)
    rig = Rig(hdl, plugin, sysfs, procfs)
    hdl.case_uuclose = rig.closed.append  # type: ignore[method-assign]
    hdl.case_uuresolved = rig.resolved.append  # type: ignore[method-assign]
    return rig


def poison(rig: Rig, *pfns: int) -> None:
    """The kernel marks ``pfns`` HWPOISON (as its soft offline does)."""
    make_fake_procfs(rig.procfs, pfns, boot=(rig.procfs / "sys/kernel/random/boot_id").read_text())


def memory_failure(
    pfn: int = PFN, result: str = "Recovered", page_type: str = "free buddy page", t: int = T0
) -> Ereport:
    """The kernel's memory_failure report, as a host source builds and fmd decodes it."""
    wire = events.memory_failure(pfn=pfn, page_type=page_type, result=result, time=None)
    wire["time"] = t // SEC
    return ereport_from_json_dict(wire, now_ns=t, ena_gen=ENA)


def page_fault(leaf: str = "page_ce", physaddr: int = ADDR) -> Suspect:
    return Suspect.model_validate(
        {
            "class": f"fault.memory.generic-x86.{leaf}",
            "certainty": 100,
            "asru": MemFmri(unum="motherboard=0/chip=0", physaddr=physaddr),
        }
    )


def list_event(
    suspects: Iterable[Suspect],
    status: int = FAULT_FAULTY,
    uuid: str = "u-1",
    cls: str = "list.suspect",
) -> ListEvent:
    fault_list = list(suspects)
    return ListEvent.model_validate(
        {
            "class": cls,
            "uuid": uuid,
            "code": "GMCA-8000-2S",
            "diag-time": T0,
            "de": {"scheme": "fmd", "mod-name": "cpumem-diagnosis"},
            "fault-list": fault_list,
            "fault-status": [status] * len(fault_list),
        }
    )


def soft_offlined(rig: Rig) -> dict[str, int]:
    return offlined_pages(rig.sysfs)


# -- memory_failure before fmd's diagnosis ---------------------------------------------


def test_page_the_kernel_recovered_is_not_offlined_again(tmp_path: Path) -> None:
    """A page the kernel's memory_failure() Recovered is not written to
    soft_offline_page; the response says the kernel retired it and the case is
    closed as for a page fmd retired."""
    rig = make_rig(tmp_path)
    rig.send(memory_failure(result="Recovered"))
    rig.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(rig) == {}
    assert rig.responses() == [
        (
            0,
            RESPONSE_KERNEL,
            True,
            "retired by the kernel (memory_failure: Recovered, free buddy page)",
        )
    ]
    assert rig.closed == ["u-1"]
    assert (rig.stat("page_kernel"), rig.stat("page_flts"), rig.stat("kernel_mf")) == (1, 0, 1)


def test_delayed_counts_as_retired_by_the_kernel(tmp_path: Path) -> None:
    """Delayed: the page is poisoned and never handed out again, so it is the
    kernel's retire too."""
    rig = make_rig(tmp_path)
    rig.send(memory_failure(result="Delayed", page_type="dirty swapcache page"))
    rig.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(rig) == {}
    assert rig.last_response()[3] == (
        "retired by the kernel (memory_failure: Delayed, dirty swapcache page)"
    )
    assert rig.closed == ["u-1"]


@pytest.mark.parametrize(
    ("result", "page_type"), [("Failed", "dirty LRU page"), ("Ignored", "kernel slab page")]
)
def test_page_the_kernel_could_not_take_is_retired_by_fmd(
    tmp_path: Path, result: str, page_type: str
) -> None:
    """After memory_failure Failed or Ignored fmd soft-offlines the page itself
    and its response says the kernel could not."""
    rig = make_rig(tmp_path)
    rig.send(memory_failure(result=result, page_type=page_type))
    rig.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}
    assert rig.responses() == [
        (
            0,
            "retire",
            True,
            f"retired page 0x{ADDR:x} (the kernel could not: memory_failure: {result}, "
            f"{page_type})",
        )
    ]
    assert rig.closed == ["u-1"]
    assert rig.stat("page_flts") == 1


def test_another_page_is_still_retired_by_fmd(tmp_path: Path) -> None:
    """The kernel's report on one page says nothing about its neighbour."""
    rig = make_rig(tmp_path)
    rig.send(memory_failure(pfn=PFN + 1))
    rig.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}
    assert rig.last_response()[1:3] == ("retire", True)


# -- CEC ----------------------------------------------------------------------------------


def test_cec_active_leaves_a_corrected_error_page_to_the_kernel(tmp_path: Path) -> None:
    """With the CEC active a page_ce fault writes nothing; the response (ok) says
    it is left to the kernel's collector, and the case stays open (the page is
    still in service)."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    assert soft_offlined(rig) == {}
    assert rig.responses() == [
        (0, RESPONSE_KERNEL, True, f"left to the kernel's correctable-errors collector ({CEC_SET})")
    ]
    assert rig.closed == []
    assert rig.stat("page_cec") == 1


def test_kernel_report_completes_the_page_left_to_it(tmp_path: Path) -> None:
    """When the kernel's memory_failure report on a page left to it arrives, the
    response becomes "retired by the kernel" and the case is closed."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    rig.send(memory_failure(result="Recovered", page_type="clean LRU page"))
    assert soft_offlined(rig) == {}
    assert rig.last_response() == (
        0,
        RESPONSE_KERNEL,
        True,
        "retired by the kernel (memory_failure: Recovered, clean LRU page)",
    )
    assert rig.closed == ["u-1"]
    assert rig.plugin.pending == {}


def test_page_poisoned_by_the_cec_is_found_on_a_later_check(tmp_path: Path) -> None:
    """The CEC's soft offline emits no memory_failure report: the agent looks at
    the page's HWPOISON flag after 1 s, 2 s, 4 s... and closes the case once set."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    assert rig.fire_timers(limit=2) == [1 * SEC, 2 * SEC]
    assert rig.closed == []
    poison(rig, PFN)
    assert rig.fire_timers() == [4 * SEC]
    assert rig.last_response() == (
        0,
        RESPONSE_KERNEL,
        True,
        f"retired by the kernel (page 0x{ADDR:x} is poisoned; {CEC_SET})",
    )
    assert rig.closed == ["u-1"]
    assert soft_offlined(rig) == {}


def test_page_the_cec_already_offlined_is_closed_at_once(tmp_path: Path) -> None:
    """On Intel the CEC offlines a page at its second error, usually before fmd's
    diagnosis: a page already poisoned is retired by the kernel at once."""
    rig = make_rig(tmp_path, [("cec", "active")], poisoned=[PFN])
    rig.send(list_event([page_fault("page_ce")]))
    assert rig.last_response()[1:3] == (RESPONSE_KERNEL, True)
    assert rig.last_response()[3].startswith("retired by the kernel")
    assert rig.closed == ["u-1"]


def test_kernel_failure_on_a_page_left_to_it_makes_fmd_retire_it(tmp_path: Path) -> None:
    """If the kernel reports Failed on a page left to it, fmd retires it itself."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    rig.send(memory_failure(result="Failed", page_type="unknown page"))
    assert soft_offlined(rig) == {"soft": PFN << 12}
    assert rig.last_response() == (
        0,
        "retire",
        True,
        f"retired page 0x{ADDR:x} (the kernel could not: memory_failure: Failed, unknown page)",
    )
    assert rig.closed == ["u-1"]
    rig.fire_timers()  # the wait's re-check, already installed, finds nothing to do
    assert len(rig.responses()) == 2
    assert rig.fire_timers() == []


def test_cec_active_still_retires_uncorrected_error_pages(tmp_path: Path) -> None:
    """The CEC counts only corrected errors: a page_ue fault is retired by fmd."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}
    assert rig.responses() == [(0, "retire", True, f"retired page 0x{ADDR:x}")]
    assert rig.closed == ["u-1"]


def test_cec_inactive_retires_corrected_error_pages_as_before(tmp_path: Path) -> None:
    """Without the CEC fmd soft-offlines a page_ce page itself, as it always did."""
    rig = make_rig(tmp_path, [("cec", "inactive")])
    rig.send(list_event([page_fault("page_ce")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}
    assert rig.responses() == [(0, "retire", True, f"retired page 0x{ADDR:x}")]
    assert (rig.stat("page_cec"), rig.stat("cec_active")) == (0, 0)
    assert rig.closed == ["u-1"]


def test_replayed_isolated_fault_is_retired_by_fmd_even_with_the_cec(tmp_path: Path) -> None:
    """A fault re-sent after a reboot with its page already out of service is
    retired by fmd: the collector's counts started over with the boot."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")], status=FAULT_FAULTY | FAULT_UNUSABLE))
    assert soft_offlined(rig) == {"soft": PFN << 12}


@pytest.mark.parametrize(
    ("cls", "corrected"),
    [
        ("fault.memory.generic-x86.page_ce", True),
        ("fault.memory.intel.page_ce", True),
        ("fault.memory.page_sb", True),
        ("fault.memory.page_ck", True),
        ("fault.memory.page_ue", False),
        ("fault.memory.page", False),
        ("fault.memory.generic-x86.page_ue", False),
    ],
)
def test_which_page_faults_come_from_corrected_errors(cls: str, corrected: bool) -> None:
    """page_ce, page_sb and page_ck are corrected-error pages; page_ue and page are not."""
    assert is_corrected_page_fault(cls) == corrected


# -- pending work and the kernel's report --------------------------------------------------


def test_kernel_report_completes_a_pending_retire(tmp_path: Path) -> None:
    """A page whose retire fmd is still polling is completed by the kernel's
    Recovered report: the response says the kernel retired it."""
    rig = make_rig(tmp_path)
    rig.plugin.backend = PendingBackend(sysfs_root=rig.sysfs, procfs_root=rig.procfs)
    rig.send(list_event([page_fault("page_ue")]))
    assert rig.closed == []
    rig.send(memory_failure(result="Recovered"))
    assert rig.last_response()[1:] == (
        RESPONSE_KERNEL,
        True,
        "retired by the kernel (memory_failure: Recovered, free buddy page)",
    )
    assert rig.closed == ["u-1"]
    assert rig.fire_timers() == [1 * SEC]  # the poll already installed finds nothing to do
    assert rig.stat("page_retmax") == 0


class PendingBackend(LinuxBackend):
    """A linux backend whose page retires stay pending (as Xen's do until the page is freed)."""

    def page_retire(self, physaddr: int) -> PageOutcome:
        return PageOutcome.PENDING

    def page_status(self, physaddr: int) -> PageState:
        return PageState.PENDING


# -- restart, reboot, repair ---------------------------------------------------------------


def test_what_the_kernel_did_survives_a_restart(tmp_path: Path) -> None:
    """The kernel's action is in the agent's checkpoint: a new agent restored from
    it (same boot) does not offline the page either."""
    first = make_rig(tmp_path)
    first.send(memory_failure(result="Recovered"))
    doc = first.checkpoint()
    second = make_rig(tmp_path, doc=doc)
    second.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(second) == {}
    assert second.last_response()[3] == (
        "retired by the kernel (memory_failure: Recovered, free buddy page)"
    )


def test_a_reboot_forgets_what_the_kernel_did(tmp_path: Path) -> None:
    """After a reboot (new boot id) the page is back in use: fmd retires it."""
    first = make_rig(tmp_path)
    first.send(memory_failure(result="Recovered"))
    second = make_rig(tmp_path, doc=first.checkpoint(), boot="boot-2")
    assert len(second.plugin.kernel) == 0
    second.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(second) == {"soft": PFN << 12}


def test_a_page_left_to_the_kernel_is_waited_for_again_after_a_restart(tmp_path: Path) -> None:
    """The kernel's report read while fmd was down completes the page fault
    replayed at the next start (the case was still open)."""
    first = make_rig(tmp_path, [("cec", "active")])
    first.send(list_event([page_fault("page_ce")]))
    first.send(memory_failure(pfn=PFN + 7))  # another page, meanwhile
    second = make_rig(tmp_path, [("cec", "active")], doc=first.checkpoint())
    second.send(memory_failure(result="Recovered"))
    second.send(list_event([page_fault("page_ce")]))
    assert second.last_response()[3] == (
        "retired by the kernel (memory_failure: Recovered, free buddy page)"
    )
    assert second.closed == ["u-1"]
    assert sorted(second.plugin.kernel) == [PFN, PFN + 7]


def test_report_from_before_the_boot_is_not_remembered(tmp_path: Path) -> None:
    """A memory_failure report older than the boot (a rasdaemon import of
    history) is counted and not remembered: fmd retires the page."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text(f"cpu  1 2 3 4\nbtime {T0 // SEC + 3600}\n")
    rig = make_rig(tmp_path)
    rig.send(memory_failure(t=T0))
    assert rig.stat("kernel_mf_old") == 1
    rig.send(list_event([page_fault("page_ue")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}


def test_unretired_page_forgets_the_kernels_action(tmp_path: Path) -> None:
    """Once a repair unretires the page, a new fault on it is retired by fmd."""
    rig = make_rig(tmp_path)
    rig.send(memory_failure(result="Recovered"))
    rig.send(list_event([page_fault("page_ue")]))
    rig.send(
        list_event(
            [page_fault("page_ue")], status=FAULT_UNUSABLE | FAULT_REPLACED, cls="list.repaired"
        )
    )
    assert rig.resolved == ["u-1"]
    assert PFN not in list(rig.plugin.kernel)
    rig.send(list_event([page_fault("page_ue")], uuid="u-2"))
    assert soft_offlined(rig) == {"soft": PFN << 12}


def test_memory_is_bounded_oldest_out_first() -> None:
    """Past its limit the memory forgets the pages reported longest ago; a page
    reported again counts as new."""
    pages = KernelPages(limit=3)
    for pfn in (1, 2, 3):
        pages.record(pfn, KernelAction("Recovered", "", pfn))
    pages.record(1, KernelAction("Recovered", "", 9))
    assert pages.record(4, KernelAction("Recovered", "", 10)) == 1
    assert list(pages) == [3, 1, 4]


def test_saved_memory_with_bad_entries_keeps_the_good_ones() -> None:
    """Malformed saved entries are skipped and reported, never raised."""
    specific = {
        "kernel_pages": [[5, "Recovered", "x", 1], ["bad"], [6, "Exploded", "x", 2], 7],
        "kernel_pages_boot": "b",
    }
    pages, why = KernelPages.load(specific, "b")
    assert (list(pages), why) == ([5], "3 malformed saved entries skipped")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pfn=_JSON | st.integers(min_value=-5, max_value=1 << 40),
    result=_JSON | st.sampled_from(events.MF_RESULTS),
    page_type=_JSON,
)
def test_any_memory_failure_payload_is_remembered_or_counted_bad(
    tmp_path: Path, pfn: Any, result: Any, page_type: Any
) -> None:
    """Whatever a memory_failure payload holds, the agent never raises: the report
    is remembered or counted in kernel_mf_bad."""
    rig = make_rig(tmp_path / "h")
    ev = Ereport(
        cls=events.MEMORY_FAILURE_CLASS,
        ena=1,
        time_ns=T0,
        detector=None,
        detector_str=None,
        payload={"pfn": pfn, "action_result": result, "page_type": page_type},
        id=1,
    )
    rig.send(ev)
    assert rig.stat("kernel_mf") == 1
    assert rig.stat("kernel_mf_bad") + len(rig.plugin.kernel) == 1


# -- detection ------------------------------------------------------------------------------


def detect(tmp_path: Path, backend: str = "linux") -> tuple[Rig, list[dict[str, Any]]]:
    """The agent loaded with cec=auto on the trees under ``tmp_path``, and its log."""
    with structlog.testing.capture_logs() as logs:
        rig = make_rig(tmp_path, [("cec", "auto"), ("backend", backend)])
    return rig, [e for e in logs if e["event"] == "retire_cec"]


def test_auto_detects_the_cec_from_debugfs(tmp_path: Path) -> None:
    """debugfs ras/cec present: active, its action_threshold shown in the
    statistics, the detection logged once, and page_ce pages left to the kernel."""
    cec_dir = tmp_path / "debug" / "ras" / "cec"
    cec_dir.mkdir(parents=True)
    (cec_dir / "action_threshold").write_text("2\n")
    (cec_dir / "decay_interval").write_text("86400\n")
    rig, logs = detect(tmp_path)
    assert (rig.stat("cec_active"), rig.stat("cec_threshold")) == (1, 2)
    assert f"{cec_dir} exists" in rig.hdl.stat("cec_active").description
    assert [(e["state"], e["how"], e["decay_interval_s"]) for e in logs] == [
        ("active", f"{cec_dir} exists", 86400)
    ]
    rig.send(list_event([page_fault("page_ce")]))
    assert soft_offlined(rig) == {}
    assert rig.last_response()[3] == (
        f"left to the kernel's correctable-errors collector (CEC active: {cec_dir} exists)"
    )


def test_auto_sees_the_cec_disabled_on_the_command_line(tmp_path: Path) -> None:
    """ras=cec_disable on the kernel command line: inactive; fmd retires page_ce pages."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text("BOOT_IMAGE=/vmlinuz ro ras=cec_disable quiet\n")
    rig, logs = detect(tmp_path)
    assert [e["state"] for e in logs] == ["inactive"]
    assert rig.stat("cec_active") == 0
    rig.send(list_event([page_fault("page_ce")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}


def test_auto_reads_the_kernel_configuration(tmp_path: Path) -> None:
    """No debugfs mounted but CONFIG_RAS_CEC=y in /boot/config-<release>: active."""
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / f"config-{os.uname().release}").write_text("CONFIG_RAS=y\nCONFIG_RAS_CEC=y\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "mounts").write_text("proc /proc proc rw 0 0\n")
    rig, logs = detect(tmp_path)
    assert [(e["state"], e["how"]) for e in logs] == [
        ("active", "CONFIG_RAS_CEC=y in the kernel configuration")
    ]
    assert (rig.stat("cec_active"), rig.stat("cec_threshold")) == (1, 0)


def test_auto_without_anything_to_read_is_unknown_and_retires(tmp_path: Path) -> None:
    """Nothing to tell from: unknown, treated as inactive (fmd retires the page)."""
    rig, logs = detect(tmp_path)
    assert [e["state"] for e in logs] == ["unknown"]
    rig.send(list_event([page_fault("page_ce")]))
    assert soft_offlined(rig) == {"soft": PFN << 12}


@pytest.mark.parametrize("backend", ["sim", "xen"])
def test_auto_with_another_backend_does_not_look_at_the_host(tmp_path: Path, backend: str) -> None:
    """The sim backend acts on no kernel, and in a Xen dom0 machine checks go to the
    hypervisor: auto is inactive whatever the trees say."""
    (tmp_path / "ras" / "cec").mkdir(parents=True)
    state = resolve_cec("auto", backend, debugfs=tmp_path, proc=tmp_path, boot=tmp_path)
    assert (state.state, state.how) == (
        "inactive",
        f"the {backend} backend does not act on pages of this host's kernel",
    )


def test_unreadable_debugfs_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """debugfs is root-only: a detection that cannot read it gives unknown, not a crash."""

    def denied(**_kw: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("agents.retire.kernel.detect_cec", denied)
    state = resolve_cec("auto", "linux", debugfs=tmp_path, proc=tmp_path, boot=tmp_path)
    assert (state.state, state.how) == ("unknown", "cannot look for it: Permission denied")


# -- fmadm faulty ---------------------------------------------------------------------------


def faulty_text(rig: Rig, bits: int) -> list[str]:
    """fmadm faulty's default view of the agent's case, as the daemon would answer."""
    # The store keeps the latest response per case, suspect and module.
    latest = {(r["uuid"], r["idx"], r["module"]): r for r in rig.hdl._out.responses}
    responses = [
        {"module": r["module"], "action": r["action"], "ok": r["ok"], "detail": r["detail"]}
        for r in latest.values()
    ]
    suspect = {
        "class": "fault.memory.generic-x86.page_ce",
        "certainty": 100,
        "asru": f"mem:///unum=motherboard=0%2Fchip=0/physaddr=0x{ADDR:x}",
        "fru": "hc://:product-id=fmd-sim:server-id=h/motherboard=0/chip=0/dimm=1",
        "resource": None,
        "location": "CPU 0 DIMM 1",
        "fault-status": bits,
        "status": asru_status(bits),
        "fru-status": fru_status(bits),
        "responses": responses,
    }
    case = {
        "uuid": "u-1",
        "code": "GMCA-8000-2S",
        "severity": "Minor",
        "time_ns": T0,
        "suspects": [suspect],
    }
    return faulty.render_default({"host": "h"}, [case], now_ns=T0)


def test_fmadm_faulty_says_the_kernel_retired_the_page(tmp_path: Path) -> None:
    """Without -v fmadm faulty shows, under "faulted and taken out of service",
    that the kernel retired the page."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    rig.send(memory_failure(result="Recovered"))
    lines = faulty_text(rig, FAULT_FAULTY | FAULT_UNUSABLE)
    at = lines.index(" " * 18 + "faulted and taken out of service")
    assert lines[at + 1] == (
        " " * 18
        + "cpumem-retire: retired by the kernel (memory_failure: Recovered, free buddy page)"
    )


def test_fmadm_faulty_says_the_page_is_left_to_the_kernel(tmp_path: Path) -> None:
    """While the kernel has not acted the page is "still in service", left to the CEC."""
    rig = make_rig(tmp_path, [("cec", "active")])
    rig.send(list_event([page_fault("page_ce")]))
    lines = faulty_text(rig, FAULT_FAULTY)
    at = lines.index(" " * 18 + "faulted but still in service")
    assert lines[at + 1] == (
        " " * 18 + f"cpumem-retire: left to the kernel's correctable-errors collector ({CEC_SET})"
    )


# -- on the real daemon ------------------------------------------------------------------------


@pytest.mark.e2e
def test_daemon_leaves_the_page_to_the_cec_then_shows_the_kernel_retired_it(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """On the real daemon (linux backend on fake trees, cec=active): corrected errors
    on one page give a page_ce fault left to the kernel; the kernel's memory_failure
    report, sent as a host source would, reaches the agent, and fmadm faulty then
    shows the page faulted and taken out of service, retired by the kernel.  Nothing
    was written to soft_offline_page."""
    sysfs = make_fake_sysfs(tmp_path / "sys")
    procfs = make_fake_procfs(tmp_path / "proc")
    plugin_conf = root / "etc" / "fmd" / "plugins" / "cpumem-retire.conf"
    plugin_conf.parent.mkdir(parents=True)
    plugin_conf.write_text(
        "setprop backend linux\n"
        f"setprop sysfs_root {sysfs}\n"
        f"setprop procfs_root {procfs}\n"
        "setprop cec active\n"
    )
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    t = 1_700_000_000
    page = 0x2040  # chip 0, "CPU 0 DIMM 1"; pfn 2
    mem_ce = {"status": "0x8c00004000010090", "misc": "0x86", "addr": hex(page)}
    fmd.send_lines({"mca": {"cpu": 1, "bank": 8, "time": t + i * 60, **mem_ce}} for i in range(3))
    fmd.quiesce()
    # A page fault is message=false: fmadm faulty lists it with -a.
    waiting = fmd.cli("fmadm", "faulty", "-a")
    assert "faulted but still in service" in waiting.stdout
    assert f"cpumem-retire: left to the kernel's correctable-errors collector ({CEC_SET})" in (
        waiting.stdout
    )
    report = events.memory_failure(
        pfn=page >> 12, page_type="free buddy page", result="Recovered", time=t + 600
    )
    assert [r["ok"] for r in fmd.send_lines([report])] == [True]
    fmd.quiesce()
    done = fmd.cli("fmadm", "faulty", "-a")
    assert "faulted and taken out of service" in done.stdout
    assert (
        "cpumem-retire: retired by the kernel (memory_failure: Recovered, free buddy page)"
        in done.stdout
    )
    assert offlined_pages(sysfs) == {}
