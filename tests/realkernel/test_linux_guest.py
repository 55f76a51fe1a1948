"""fmd in a real Linux guest: Debian's kernel under QEMU, machine checks injected
through QEMU's monitor the way QEMU/KVM deliver them, one boot for all scenarios.

The guest runs tests/realkernel/guest_linux.py (read its docstring for the
order); this module boots it once, answers its ``@@MONITOR`` requests, and
checks each scenario's ``@@RESULT``.  The vCPU is Intel-flavoured (family 6,
model 85) so that the kernel grades uncorrected memory errors by their S/AR
bits, as it does for the poison QEMU forwards from the host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realkernel import harness

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.xdist_group("linux-guest"),
    pytest.mark.timeout(1500),
]

CPU_MODEL = "max,vendor=GenuineIntel,family=6,model=85,stepping=4"
# vCPU 1 tickless and free of other work: an SRAR must find a user task running there
# (taken in the kernel it is fatal, as on real hardware).
KERNEL_ARGS = "nohz_full=1 isolcpus=1 rcu_nocbs=1 irqaffinity=0"
RUN_TIMEOUT_S = 1200.0
_MONITOR = re.compile(r"@@MONITOR \[[0-9.]+\] (.*)$")

_SCRIPT = "exec $P -m tests.realkernel.guest_linux\n"


def _answer(guest: harness.Guest, line: str) -> None:
    """Run the guest's monitor requests (``@@MONITOR [t] command``) as they come."""
    m = _MONITOR.search(line)
    if m:
        guest.monitor(m.group(1).strip())


@pytest.fixture(scope="module")
def guest_run() -> Iterator[dict[str, Any]]:
    """Boot the guest once and collect every scenario's result."""
    try:
        harness.ensure_packages()
        kernel = harness.ensure_kernel()
    except harness.Unavailable as exc:
        pytest.skip(f"no QEMU guest here: {exc}")
    with tempfile.TemporaryDirectory(prefix="fmd-guest-") as tmp:
        work = Path(tmp)
        script = harness.write_script(work, _SCRIPT)
        initrd = harness.build_initramfs(kernel, script, work / "initrd.gz")
        started = time.monotonic()
        guest = harness.boot(
            kernel, initrd, work, cpu=CPU_MODEL, append=KERNEL_ARGS, on_line=_answer
        )
        code = guest.finish(RUN_TIMEOUT_S)
        wall = time.monotonic() - started
        keep = os.environ.get("FMD_GUEST_CONSOLE")
        if keep:
            Path(keep).write_text("\n".join(guest.console) + "\n")
        results: dict[str, Any] = {"_console": guest.console, "_wall_s": wall, "_code": code}
        for name, text in harness.marked(guest.console, "RESULT").items():
            results[name] = json.loads(text)
        sys.stderr.write(f"[harness] linux guest: {wall:.1f} s in all\n")
        yield results


def scenario(results: dict[str, Any], name: str) -> dict[str, Any]:
    """One scenario's result; its error and the console's tail when it failed."""
    if name not in results:
        tail = "\n".join(results["_console"][-60:])
        pytest.fail(f"the guest printed no result for {name!r}; console tail:\n{tail}")
    found: dict[str, Any] = results[name]
    if "error" in found:
        dmesg = "\n".join(found.get("dmesg", []))
        pytest.fail(
            f"{name}: {found['error']}\n{found.get('trace', '')}\nfmstat -t:\n"
            f"{found.get('fmstat_t', '')}\nguest dmesg tail:\n{dmesg}\n"
            f"fmd log tail:\n{found.get('fmd_log', '')}"
        )
    return found


def suspects(result: dict[str, Any]) -> list[dict[str, Any]]:
    return list(result["case"]["suspects"])


def test_guest_knows_it_is_virtual(guest_run: dict[str, Any]) -> None:
    """fmd in a QEMU guest says it is a virtual machine (fmadm config, fmtopo), runs the
    tracefs and kernel-log sources, and leaves a faulty vCPU online saying the physical
    fault belongs to the host."""
    r = scenario(guest_run, "virtual")
    assert r["platform"]["name"] == "linux"
    assert r["platform"]["virtualization"]["role"] == "guest"
    assert r["platform"]["virtualization"]["hypervisor"] == "qemu"
    assert any("virtual machine of qemu" in line for line in r["fmtopo_head"])
    running = {t["name"]: t["state"] for t in r["transports"]}
    assert running.get("tracefs") == "run"
    assert running.get("kmsg") == "run"
    [s] = suspects(r)
    assert s["class"] == "fault.cpu.generic-x86.l1icache"
    assert s["asru"] == "cpu:///cpuid=0"
    assert "belongs to the host" in s["note"]
    assert s["responses"][0]["detail"].startswith("left online: a virtual CPU")
    assert "belongs to the host" in r["faulty_text"]


def test_sigkill_between_injections_loses_and_doubles_nothing(
    guest_run: dict[str, Any],
) -> None:
    """An error the kernel reported while fmd was killed is stored once after the restart,
    with tracefs and the kernel log both reading: nothing lost, nothing twice."""
    r = scenario(guest_run, "restart")
    assert r["after"] == r["before"] + 1
    assert r["new"] == ["ereport.cpu.generic-x86.l1icache"]
    assert len(set(r["enas"])) == len(r["enas"])


def test_cpu_fault_offlines_the_vcpu_and_replaced_brings_it_back(
    guest_run: dict[str, Any],
) -> None:
    """Corrected icache errors on vCPU 1 make one fault; with offline_vcpus the linux
    backend really offlines cpu1; fmadm replaced puts it back online; fmdump shows the
    diagnosis, isolation and repair."""
    r = scenario(guest_run, "cpu")
    [s] = suspects(r)
    assert s["class"] == "fault.cpu.generic-x86.l1icache"
    assert s["asru"] == "cpu:///cpuid=1"
    assert r["offline_after_fault"] == "0"
    assert r["online_after_replaced"] == "1"
    assert "offlined strand(s) 1" in json.dumps(s["responses"])
    uuid = r["case"]["uuid"]
    lifecycle = [line.split()[-1] for line in r["fmdump"].splitlines() if uuid in line]
    assert lifecycle == ["Diagnosed", "Isolated", "Repaired", "Resolved"]


def test_corrected_memory_errors_soft_offline_the_page(guest_run: dict[str, Any]) -> None:
    """Corrected errors on one guest page make a page fault, and the kernel really
    soft-offlines the page: HWPOISON in kpageflags, HardwareCorrupted grows."""
    r = scenario(guest_run, "page")
    [s] = suspects(r)
    assert s["class"] == "fault.memory.generic-x86.page_ce"
    assert "physaddr=0x30000000" in s["asru"]
    assert r["hwpoison"] is True
    assert r["corrupted_kb_after"] > r["corrupted_kb_before"]


def test_host_poison_found_by_a_scrub_is_left_to_the_kernel(guest_run: dict[str, Any]) -> None:
    """An SRAO error as QEMU forwards host poison: the guest kernel's memory_failure()
    takes the page; fmd diagnoses the page, records the kernel's report in the case and
    does not offline the page a second time."""
    r = scenario(guest_run, "srao")
    [s] = suspects(r)
    assert s["class"] == "fault.memory.generic-x86.page_ue"
    assert "physaddr=0x38000000" in s["asru"]
    assert r["kernel_joined"] is True
    assert r["hwpoison"] is True
    assert [(x["action"], x["ok"]) for x in s["responses"]] == [("kernel", True)]
    assert s["responses"][0]["detail"].startswith("retired by the kernel (memory_failure")
    assert stat(r["retire_stats"], "page_kernel") == 1


def test_host_poison_consumed_by_a_task_kills_it_and_retires_the_page_once(
    guest_run: dict[str, Any],
) -> None:
    """An SRAR error (poison consumed by a user task on vCPU 1, as QEMU forwards it):
    the kernel kills the task with SIGBUS and carries on; fmd diagnoses the page, not
    the CPU, and the page ends up out of use exactly once (by the kernel's
    memory_failure where it runs one, else by the retire agent)."""
    r = scenario(guest_run, "srar")
    [s] = suspects(r)
    assert s["class"] == "fault.memory.generic-x86.page_ue"
    assert "physaddr=0x38100000" in s["asru"]
    assert r["spinner_signal"] == signal.SIGBUS
    assert r["hwpoison"] is True
    assert len(s["responses"]) == 1
    expected = "kernel" if r["kernel_joined"] else "retire"
    assert (s["responses"][0]["action"], s["responses"][0]["ok"]) == (expected, True)


def stat(stats: list[dict[str, Any]], name: str) -> int:
    return next(int(x["value"]) for x in stats if x["name"] == name)
