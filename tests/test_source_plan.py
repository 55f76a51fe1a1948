"""The choice of host sources from properties and what the host offers (fmd.xprts.plan)."""

from __future__ import annotations

from fmd.xprts.plan import (
    EDAC,
    FORM_EDAC,
    FORM_MCE,
    FORM_MEMORY_FAILURE,
    KMSG,
    MCELOG,
    PSTORE,
    TRACEFS,
    HostOffer,
    plan_sources,
)

MODERN = HostOffer(tracefs=True, mc_event=True, mcelog=False)


def test_modern_kernel_reads_tracefs_and_the_rest_of_the_kernel_log() -> None:
    """tracefs with mce_record and mc_event: the kernel log keeps only what it alone carries."""
    plan = plan_sources({}, MODERN, auto_ok=True)
    assert plan.run == [TRACEFS, KMSG, PSTORE]
    assert plan.kmsg_skip == frozenset({FORM_MCE, FORM_EDAC})


def test_memory_failure_verdicts_come_from_the_tracepoint_when_it_is_read() -> None:
    """With ras:memory_failure_event read, the kernel log leaves memory_failure()'s page
    verdicts to it (one report of each, not two); without tracefs it keeps them."""
    offer = HostOffer(tracefs=True, mc_event=True, memory_failure=True)
    plan = plan_sources({}, offer, auto_ok=True)
    assert plan.kmsg_skip == frozenset({FORM_MCE, FORM_EDAC, FORM_MEMORY_FAILURE})
    plan = plan_sources({TRACEFS: "off"}, offer, auto_ok=True)
    assert FORM_MEMORY_FAILURE not in plan.kmsg_skip


def test_a_xen_dom0_reads_the_hypervisors_telemetry_from_dev_mcelog() -> None:
    """In a Xen dom0, /dev/mcelog (the hypervisor's telemetry) is the machine-check
    source even where tracefs has mce_record, which never fires in dom0."""
    offer = HostOffer(tracefs=True, mc_event=True, mcelog=True, dom0=True)
    plan = plan_sources({}, offer, auto_ok=True)
    assert plan.run == [MCELOG, KMSG, PSTORE]
    assert plan.kmsg_skip == frozenset({FORM_MCE})
    assert "Xen dom0" in plan.why[TRACEFS]


def test_without_tracefs_dev_mcelog_is_the_machine_check_source() -> None:
    """No usable tracefs but /dev/mcelog (Xen dom0, legacy kernels): /dev/mcelog, and the
    kernel log's EDAC lines since no mc_event tracepoint is read."""
    plan = plan_sources({}, HostOffer(mcelog=True), auto_ok=True)
    assert plan.run == [MCELOG, KMSG, PSTORE]
    assert plan.kmsg_skip == frozenset({FORM_MCE})


def test_kernel_log_alone_when_nothing_else_is_there() -> None:
    """Neither tracefs nor /dev/mcelog: the kernel log carries machine checks too."""
    plan = plan_sources({}, HostOffer(), auto_ok=True)
    assert (plan.run, plan.kmsg_skip) == ([KMSG, PSTORE], frozenset())


def test_edac_counters_are_the_last_resort() -> None:
    """With the kernel log off and no mc_event tracepoint, the EDAC counters run."""
    plan = plan_sources({KMSG: "off"}, HostOffer(tracefs=True), auto_ok=True)
    assert plan.run == [TRACEFS, EDAC, PSTORE]


def test_auto_starts_nothing_off_the_linux_platform_but_on_is_obeyed() -> None:
    """auto runs nothing on a sim platform or without root; on runs the source anyway."""
    assert plan_sources({}, MODERN, auto_ok=False).run == []
    plan = plan_sources({MCELOG: "on", TRACEFS: "off"}, MODERN, auto_ok=False)
    assert plan.run == [MCELOG]
    assert plan.why[MCELOG] == "xprt.mcelog is on"
    assert plan.why[TRACEFS] == "xprt.tracefs is off"


def test_a_source_forced_on_where_the_host_lacks_it_takes_nothing_from_the_kernel_log() -> None:
    """xprt.mcelog=on on a host without /dev/mcelog: the kernel log still reads machine checks."""
    plan = plan_sources({MCELOG: "on"}, HostOffer(), auto_ok=True)
    assert (plan.run, plan.kmsg_skip) == ([MCELOG, KMSG, PSTORE], frozenset())
