"""Host poison as a QEMU guest's kernel reports it: trace and log lines to ereports and faults.

QEMU (and KVM) hand a guest the host's memory poison as machine checks on an
Intel vCPU with SER: an SRAO memory scrub, or an SRAR data load taken in user
mode with RIPV clear, plus a filler record (VAL|UC, code 0) on the other CPUs.
The lines below are what a Linux 6.1 guest (``-cpu max,vendor=GenuineIntel,
family=6,model=85``) printed for them, in the 6.1 ``mce_record`` and
``__print_mce`` formats; a guest's platform cannot place an address on a DIMM,
so the poisoned pages are diagnosed alone.
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.cpumem import CpumemDiagnosis
from fmd.hw.kmsg import KmsgEvent, KmsgParser, Message
from fmd.hw.telemetry import mca_ereport, record_from_json
from fmd.hw.topo import Platform
from fmd.hw.tracefs import TraceRecord, parse_trace_line
from fmd.protocol import EnaGenerator, Ereport, MemFmri, ereport_from_json_dict
from tests.diagnosis_util import T0, DiagnosisEnv, make_handle

BOOT_NS = 1_795_987_500 * 10**9
PREFIX = "ereport.cpu.generic-x86."
SRAO_PAGE = 0x20000000
SRAR_PAGE = 0x20100000
KERNEL_CS = 0x10
USER_CS = 0x33
UNKNOWN_UNUM = "unknown"

_REGS_ZERO = "0000000000000000/0000000000000000/0000000000000000"
SRAO_TRACE = (
    "<idle>-0 [000] d.h2. 41.102030: mce_record: CPU: 0, MCGc/s: 100010a/5, "
    "MC9: bd000000000000c0, IPID: 0000000000000000, "
    "ADDR/MISC/SYND: 0000000020000000/0000000000000086/0000000000000000, "
    "RIP: 10:<ffffffff8ec592eb>, TSC: 1a2b3c4d5e, PROCESSOR: 0:50654, TIME: 1795987541, "
    "SOCKET: 0, APIC: 0"
)
SRAR_TRACE = (
    "poison-211 [001] d.h1. 52.000400: mce_record: CPU: 1, MCGc/s: 100010a/6, "
    "MC9: bd80000000000134, IPID: 0000000000000000, "
    "ADDR/MISC/SYND: 0000000020100000/0000000000000086/0000000000000000, "
    "RIP: 33:<000055e3a96bb290>, TSC: 1a2b3c9999, PROCESSOR: 0:50654, TIME: 1795987552, "
    "SOCKET: 0, APIC: 1"
)
# QEMU's broadcast filler on the CPU that did not take the SRAR.
FILLER_TRACE = (
    "<idle>-0 [000] d.h2. 52.000410: mce_record: CPU: 0, MCGc/s: 100010a/5, "
    f"MC1: a000000000000000, IPID: 0000000000000000, ADDR/MISC/SYND: {_REGS_ZERO}, "
    "RIP: 10:<ffffffff8ec592eb>, TSC: 1a2b3c999a, PROCESSOR: 0:50654, TIME: 1795987552, "
    "SOCKET: 0, APIC: 0"
)
ICACHE_TRACE = (
    "<...>-35 [001] ..... 30.773923: mce_record: CPU: 1, MCGc/s: 100010a/0, "
    f"MC1: 9000000000000151, IPID: 0000000000000000, ADDR/MISC/SYND: {_REGS_ZERO}, "
    "RIP: 00:<0000000000000000>, TSC: 0, PROCESSOR: 0:50654, TIME: 1795987530, "
    "SOCKET: 0, APIC: 1"
)
SRAO_MEMORY_FAILURE = (
    "kworker/0:1-20 [000] ..... 41.200000: memory_failure_event: pfn 0x20000: "
    "recovery action for free buddy page: Recovered"
)
SRAR_LOG = [
    "mce: [Hardware Error]: Machine check events logged",
    "mce: [Hardware Error]: CPU 1: Machine Check Exception: 6 Bank 9: bd80000000000134",
    "mce: [Hardware Error]: RIP 33:<000055e3a96bb290> ",
    "mce: [Hardware Error]: TSC 1a2b3c9999 ADDR 20100000 MISC 86 ",
    "mce: [Hardware Error]: PROCESSOR 0:50654 TIME 1795987552 SOCKET 0 APIC 1 microcode 1",
]
SRAO_LOG = [
    "mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0",
    "mce: [Hardware Error]: RIP 10:<ffffffff8ec592eb> {native_safe_halt+0xb/0x20}",
    "mce: [Hardware Error]: TSC 1a2b3c4d5e ADDR 20000000 MISC 86 ",
    "mce: [Hardware Error]: PROCESSOR 0:50654 TIME 1795987541 SOCKET 0 APIC 0 microcode 1",
]


def _no_address(physaddr: int) -> None:
    """A guest's address decode: no address lies on a DIMM it can name."""
    del physaddr


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> DiagnosisEnv:
    """cpumem-diagnosis on a platform that, like a virtual machine, decodes no address."""
    plugin = CpumemDiagnosis()
    hdl, writer = make_handle(plugin, "GMCA")
    monkeypatch.setattr(hdl.topo, "decode_address", _no_address)
    return DiagnosisEnv(hdl, writer, plugin)


def _trace_obj(line: str, platform: Platform) -> dict[str, Any]:
    parsed = parse_trace_line(line, platform=platform, boot_ns=BOOT_NS)
    assert isinstance(parsed, TraceRecord), parsed
    return parsed.obj


def _log_objs(lines: list[str], platform: Platform) -> list[dict[str, Any]]:
    parser = KmsgParser(platform)
    results = [r for n, text in enumerate(lines, 1) for r in parser.feed(Message(n, text))]
    results += parser.flush()
    assert all(isinstance(r, KmsgEvent) for r in results), results
    return [r.obj for r in results if isinstance(r, KmsgEvent)]


def _ereport(env: DiagnosisEnv, obj: dict[str, Any]) -> Ereport:
    """The ereport fmd's ingest makes of a wire object, numbered for the module."""
    gen = EnaGenerator()
    platform = env.hdl.topo
    if "mca" in obj:
        ev = mca_ereport(obj, platform, now_ns=T0, ena_gen=gen)
    else:
        ev = ereport_from_json_dict(obj, now_ns=T0, ena_gen=gen)
    ev.id = env.next_id
    env.next_id += 1
    return ev


def test_srao_trace_line_is_mem_ue_at_its_page(env: DiagnosisEnv) -> None:
    """The guest's SRAO scrub line becomes mem_ue at 0x20000000, graded SRAO, no DIMM."""
    ev = _ereport(env, _trace_obj(SRAO_TRACE, env.hdl.topo))
    p = ev.payload
    assert (ev.cls, p["physaddr"], p["severity"]) == (PREFIX + "mem_ue", SRAO_PAGE, "SRAO")
    assert "resource" not in p


def test_srar_trace_line_keeps_cs_and_is_recoverable_mem_ue(env: DiagnosisEnv) -> None:
    """The guest's user-mode SRAR line keeps CS 0x33, stays SRAR with RIPV clear and
    becomes mem_ue at 0x20100000 instead of a data-cache fault."""
    obj = _trace_obj(SRAR_TRACE, env.hdl.topo)
    assert record_from_json(obj["mca"]).cs == USER_CS
    ev = _ereport(env, obj)
    p = ev.payload
    assert (ev.cls, p["physaddr"], p["severity"]) == (PREFIX + "mem_ue", SRAR_PAGE, "SRAR")
    assert (p["privileged"], p["compound_errorname"]) == (False, "DCACHELO_DRD_ERR")


@pytest.mark.parametrize(
    ("lines", "cs", "physaddr", "severity"),
    [(SRAR_LOG, USER_CS, SRAR_PAGE, "SRAR"), (SRAO_LOG, KERNEL_CS, SRAO_PAGE, "SRAO")],
    ids=["srar", "srao"],
)
def test_kernel_log_blocks_read_as_the_trace_lines(
    env: DiagnosisEnv, lines: list[str], cs: int, physaddr: int, severity: str
) -> None:
    """The kernel log's print of each record keeps its CS (a symbol after a kernel RIP
    is skipped) and decodes to the same mem_ue, address and grade as the trace line."""
    (obj,) = _log_objs(lines, env.hdl.topo)
    assert record_from_json(obj["mca"]).cs == cs
    ev = _ereport(env, obj)
    p = ev.payload
    assert (ev.cls, p["physaddr"], p["severity"]) == (PREFIX + "mem_ue", physaddr, severity)


def test_icache_and_filler_records_keep_their_cpu_classes(env: DiagnosisEnv) -> None:
    """The corrected icache record stays l1icache; QEMU's filler decodes as unknown."""
    icache = _ereport(env, _trace_obj(ICACHE_TRACE, env.hdl.topo))
    filler = _ereport(env, _trace_obj(FILLER_TRACE, env.hdl.topo))
    assert (icache.cls, filler.cls) == (PREFIX + "l1icache", PREFIX + "unknown")


def test_guest_diagnoses_each_poisoned_page_alone(env: DiagnosisEnv) -> None:
    """In a guest the SRAO and SRAR each fault their page at once (unum unknown, no FRU),
    the kernel's memory_failure report joins the SRAO page's case, and the filler
    faults nothing."""
    for line in (SRAO_TRACE, SRAO_MEMORY_FAILURE, SRAR_TRACE, FILLER_TRACE):
        env.feed(_ereport(env, _trace_obj(line, env.hdl.topo)))
    suspects = [ev.fault_list[0] for ev in env.suspects()]
    assert [(s.cls, s.asru, s.fru, s.location) for s in suspects] == [
        (
            "fault.memory.generic-x86.page_ue",
            MemFmri(unum=UNKNOWN_UNUM, physaddr=page),
            None,
            None,
        )
        for page in (SRAO_PAGE, SRAR_PAGE)
    ]
    stats = {name: env.stat(name) for name in ("page_only", "kernel_mf_joined", "upsets")}
    assert stats == {"page_only": 2, "kernel_mf_joined": 1, "upsets": 1}
    assert env.stat("cases_cpu") == 0
