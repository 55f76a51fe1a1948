"""The Linux-guest scenarios, run inside a real kernel under QEMU by test_linux_guest.py.

This program runs in the guest (the host's root over 9p, this checkout's venv),
as root, with fmd in a tmpfs root.  It cannot inject machine checks itself:
it asks the test on the host to, by printing ``@@MONITOR <HMP command>`` on
the console; the test writes the command to QEMU's monitor.  Then it waits for
fmd to store what the kernel reported.  After each scenario it prints
``@@RESULT <name> <json>`` with what it saw (fmd's answers, sysfs and procfs
readings); the tests on the host assert on those.  A failed step prints
``@@RESULT <name> {"error": ...}`` and the run goes on with the next scenario.

Order (one boot, one fmd root):

    start fmd (tracefs + kernel log, retire backend linux, offline_vcpus false)
    virtual     fmadm config / fmtopo say "virtual machine of qemu"; a CPU fault
                on vCPU 0 is left online with the reason
    restart     SIGKILL fmd, one error injected while it is down, fmd restarted
                with offline_vcpus=true: the error is stored once, nothing twice
    cpu         corrected icache errors on vCPU 1: a fault, cpu1 really offline;
                fmadm replaced brings it back; fmdump shows the lifecycle
    page        corrected memory errors on one page: a page fault, the page
                really soft-offlined (kpageflags HWPOISON, HardwareCorrupted)
    srao        an uncorrected memory error the way QEMU forwards host poison found
                by a scrub: the kernel's memory_failure runs, fmd joins its report
                to the case and does not offline the page a second time
    srar        the same consumed by a user task on vCPU 1: the kernel kills the
                task (6.1 runs no memory_failure for it), fmd retires the page
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from fmd.cli import fmadm, fmdump, fmstat, fmtopo
from fmd.hw.events import MEMORY_FAILURE_CLASS
from tests.fmdproc import FmdProcess

ROOT = Path("/mnt/fmd")
SYSFS = Path("/sys")
CHECK_INTERVAL = SYSFS / "devices/system/machinecheck/machinecheck0/check_interval"
KPAGEFLAGS = Path("/proc/kpageflags")
KPF_HWPOISON = 19
PAGE_SHIFT = 12
# Corrected L1 instruction-cache error (MCACOD 0x0151), bank 1.
ICACHE_CE = "0x9000000000000151"
# Corrected memory-controller read error (MCACOD 0x009f), ADDR and MISC valid.
MEM_CE = "0x9c0000000001009f"
# What QEMU gives a guest for host poison (target/i386/kvm/kvm.c): SRAO scrub,
# SRAR data load; MISC: physical address mode, LSB 12.
SRAO = "0xbd000000000000c0"
SRAR = "0xbd80000000000134"
MISC_PHYS = "0x8c"
MCG_RIPV_MCIP = "0x5"
MCG_EIPV_MCIP = "0x6"
MEM_BANK = 9
CE_PAGE = 0x3000_0000
SRAO_PAGE = 0x3800_0000
SRAR_PAGE = 0x3810_0000
QUIET_INTERVAL_S = 3600
SAME_SECOND_S = 1.0
WAIT_S = float(os.environ.get("FMD_GUEST_WAIT", "120"))

PROPS = {
    "xprt.tracefs": "on",
    "xprt.kmsg": "on",
    "xprt.mcelog": "off",
    "xprt.edac": "off",
    "xprt.pstore": "off",
}


T0 = time.monotonic()


def say(mark: str, text: str) -> None:
    sys.stdout.write(f"@@{mark} [{time.monotonic() - T0:.1f}] {text}\n")
    sys.stdout.flush()


def monitor(command: str) -> None:
    """Ask the test on the host to run an HMP command on QEMU's monitor."""
    say("MONITOR", command)


def run(cli: Any, *args: str) -> str:
    """One of fmd's commands, in this process (a new interpreter costs seconds here)."""
    result = CliRunner().invoke(cli, ["-R", str(ROOT), *args], catch_exceptions=False)
    return str(result.output)


def ereports() -> list[dict[str, Any]]:
    out = run(fmdump.cli, "-e", "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def faults() -> list[dict[str, Any]]:
    doc = json.loads(run(fmadm.cli, "faulty", "-a", "--json") or "[]")
    return list(doc)


def wait(what: str, done: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = done()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(0.5)


def inject_and_store(command: str, what: str) -> None:
    """Inject one error and wait until fmd has stored an ereport more.

    Then wait a second: the kernel polls again within milliseconds after finding an
    error, and a polled record carries no TSC, only the time in seconds, so the same
    registers logged twice within one second are taken for copies of one event."""
    count = len(ereports())
    monitor(command)
    wait(f"{what} in fmd's log", lambda: len(ereports()) > count)
    time.sleep(SAME_SECOND_S)


def inject_until_fault(cpu: int, old: set[str], most: int = 8) -> dict[str, Any]:
    """Corrected icache errors on ``cpu``, one at a time (each stored before the
    next, so no two share a second), until a case not in ``old`` appears."""
    for _ in range(most):
        inject_and_store(f"mce {cpu} 1 {ICACHE_CE} 0 0 0", "the injected icache error")
        case = new_case(old)
        if case is not None:
            return case
    raise AssertionError(f"no fault after {most} errors on cpu {cpu}")


def cpu_online(cpu: int) -> str:
    path = SYSFS / f"devices/system/cpu/cpu{cpu}/online"
    return path.read_text().strip() if path.exists() else "absent"


def hwpoison(physaddr: int) -> bool:
    with KPAGEFLAGS.open("rb") as f:
        f.seek((physaddr >> PAGE_SHIFT) * 8)
        (flags,) = struct.unpack("<Q", f.read(8))
    return bool(flags >> KPF_HWPOISON & 1)


def corrupted_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HardwareCorrupted:"):
            return int(line.split()[1])
    return -1


def retire_conf(offline_vcpus: bool) -> None:
    conf = ROOT / "etc/fmd/plugins/cpumem-retire.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "setprop backend linux\n"
        f"setprop offline_vcpus {'true' if offline_vcpus else 'false'}\n"
        "setprop cec inactive\n"
    )


def new_case(old: set[str]) -> dict[str, Any] | None:
    for case in faults():
        if case["uuid"] not in old:
            return case
    return None


# -- the scenarios ---------------------------------------------------------------------


def scenario_virtual(fmd: FmdProcess) -> dict[str, Any]:
    config = json.loads(run(fmadm.cli, "config", "--json"))
    topo_text = run(fmtopo.cli)
    case = inject_until_fault(0, {c["uuid"] for c in faults()})
    wait("the retire agent's response", lambda: _responses(case["uuid"]))
    return {
        "platform": config["platform"],
        "transports": config["transports"],
        "fmtopo_head": topo_text.splitlines()[:4],
        "case": _case(case["uuid"]),
        "faulty_text": run(fmadm.cli, "faulty"),
        "cpu0_online": cpu_online(0),
    }


def scenario_restart(fmd: FmdProcess) -> dict[str, Any]:
    before = ereports()
    fmd.kill()
    monitor(f"mce 1 1 {ICACHE_CE} 0 0 0")
    time.sleep(4)  # the kernel polls the banks every second
    retire_conf(offline_vcpus=True)
    started = time.monotonic()
    fmd.start(timeout=600)
    ready_s = time.monotonic() - started
    after = wait("the error injected while fmd was down", lambda: _more(before))
    time.sleep(3)  # give a second copy (the other source) every chance to show up
    after = ereports()
    stat = json.loads(run(fmstat.cli, "-t", "--json"))
    return {
        "before": len(before),
        "after": len(after),
        "enas": [e.get("ena") for e in after],
        "new": [e["class"] for e in after[len(before) :]],
        "fmstat_t": stat,
        "ready_s": ready_s,
    }


def _more(before: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    now = ereports()
    return now if len(now) > len(before) else None


def scenario_cpu(fmd: FmdProcess) -> dict[str, Any]:
    case = inject_until_fault(1, {c["uuid"] for c in faults()})
    wait("cpu1 offline", lambda: cpu_online(1) == "0")
    offline = cpu_online(1)
    faulty_text = run(fmadm.cli, "faulty")
    detail = _case(case["uuid"])
    label = detail["suspects"][0].get("location") or "CPU 0"
    replaced = run(fmadm.cli, "replaced", label)
    wait("cpu1 back online", lambda: cpu_online(1) == "1")
    wait("the case repaired", lambda: _state(case["uuid"]) in ("resolved", "repaired", "gone"))
    return {
        "case": detail,
        "offline_after_fault": offline,
        "faulty_text": faulty_text,
        "replaced": replaced,
        "online_after_replaced": cpu_online(1),
        "fmdump": run(fmdump.cli),
        "fmdump_v": run(fmdump.cli, "-v", "-u", case["uuid"]),
    }


def scenario_page(fmd: FmdProcess) -> dict[str, Any]:
    before_kb = corrupted_kb()
    old = {c["uuid"] for c in faults()}
    for _ in range(6):
        inject_and_store(
            f"mce 0 {MEM_BANK} {MEM_CE} 0 {CE_PAGE:#x} {MISC_PHYS}", "the injected memory error"
        )
        if new_case(old) is not None:
            break
    case = wait("a page fault", lambda: new_case(old))
    wait("the page soft-offlined", lambda: hwpoison(CE_PAGE))
    wait("the retire agent's response", lambda: _responses(case["uuid"]))
    return {
        "case": _case(case["uuid"]),
        "hwpoison": hwpoison(CE_PAGE),
        "corrupted_kb_before": before_kb,
        "corrupted_kb_after": corrupted_kb(),
        "faulty_text": run(fmadm.cli, "faulty"),
    }


def scenario_srao(fmd: FmdProcess) -> dict[str, Any]:
    old = {c["uuid"] for c in faults()}
    monitor(f"mce -b 0 {MEM_BANK} {SRAO} {MCG_RIPV_MCIP} {SRAO_PAGE:#x} {MISC_PHYS}")
    case = wait("a page fault for the SRAO error", lambda: new_case(old))
    wait("the kernel's report in the case", lambda: _kernel_joined(case["uuid"]))
    wait("the retire agent's response", lambda: _responses(case["uuid"]))
    return _uc_result(case["uuid"], SRAO_PAGE)


def scenario_srar(fmd: FmdProcess) -> dict[str, Any]:
    old = {c["uuid"] for c in faults()}
    # A task of ours running in user mode on vCPU 1, where the SRAR is taken: the
    # kernel kills it (the poisoned data was "consumed") and goes on.
    CHECK_INTERVAL.write_text(f"{QUIET_INTERVAL_S}\n")  # no more polling on vCPU 1
    spinner = subprocess.Popen(
        ["/bin/sh", "-c", "while :; do :; done"], preexec_fn=lambda: os.sched_setaffinity(0, {1})
    )
    time.sleep(2)
    monitor(f"mce -b 1 {MEM_BANK} {SRAR} {MCG_EIPV_MCIP} {SRAR_PAGE:#x} {MISC_PHYS}")
    case = wait("a page fault for the SRAR error", lambda: new_case(old))
    # Linux 6.1 kills the task for an SRAR without RIPV (QEMU's form) and leaves the
    # page alone; later kernels also run memory_failure() on it.  Either way the page
    # must end up out of use, once.
    wait("the retire agent's response", lambda: _responses(case["uuid"]))
    try:
        spinner.wait(10)
    except subprocess.TimeoutExpired:
        spinner.kill()
        spinner.wait()
    result = _uc_result(case["uuid"], SRAR_PAGE)
    result["spinner_signal"] = -spinner.returncode if spinner.returncode < 0 else 0
    return result


def _uc_result(uuid: str, page: int) -> dict[str, Any]:
    stats = json.loads(run(fmstat.cli, "-m", "cpumem-diagnosis", "--json"))
    errs = ereports()
    return {
        "case": _case(uuid),
        "kernel_joined": _kernel_joined(uuid),
        "hwpoison": hwpoison(page),
        "ereport_classes": sorted({e["class"] for e in errs}),
        "cpumem_stats": stats,
        "retire_stats": json.loads(run(fmstat.cli, "-m", "cpumem-retire", "--json")),
        "fmdump_v": run(fmdump.cli, "-V", "-u", uuid),
        "faulty_text": run(fmadm.cli, "faulty", "-u", uuid),
    }


# -- reading fmd's answers ---------------------------------------------------------------


def _case(uuid: str) -> dict[str, Any]:
    for case in faults():
        if case["uuid"] == uuid:
            return case
    raise AssertionError(f"case {uuid} not in fmadm faulty -a")


def _state(uuid: str) -> str:
    try:
        return str(_case(uuid)["state"])
    except AssertionError:
        return "gone"


def _responses(uuid: str) -> bool:
    return any(s.get("responses") for s in _case(uuid)["suspects"])


def _kernel_joined(uuid: str) -> bool:
    classes = [
        json.loads(line)["class"]
        for line in run(fmdump.cli, "-e", "--json", "-u", uuid).splitlines()
        if line.strip()
    ]
    return MEMORY_FAILURE_CLASS in classes


SCENARIOS: tuple[tuple[str, Callable[[FmdProcess], dict[str, Any]]], ...] = (
    ("virtual", scenario_virtual),
    ("restart", scenario_restart),
    ("cpu", scenario_cpu),
    ("page", scenario_page),
    ("srao", scenario_srao),
    ("srar", scenario_srar),
)


def _dmesg_tail() -> list[str]:
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[-40:]


def main() -> int:
    CHECK_INTERVAL.write_text("1\n")
    ROOT.mkdir(parents=True, exist_ok=True)
    retire_conf(offline_vcpus=False)
    fmd = FmdProcess(ROOT, props=PROPS)
    started = time.monotonic()
    fmd.start(timeout=600)
    say("STEP", f"fmd ready in {time.monotonic() - started:.1f} s")
    only = set(filter(None, os.environ.get("FMD_GUEST_ONLY", "").split(",")))
    for name, scenario in SCENARIOS:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        say("STEP", f"{name} begins")
        try:
            result = scenario(fmd)
        except Exception as exc:  # report it and go on with the next scenario
            result = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
                "dmesg": _dmesg_tail(),
                "fmd_log": fmd.stderr()[-3000:],
                "fmstat_t": run(fmstat.cli, "-t") if fmd.alive() else "",
            }
            if not fmd.alive():
                fmd.start(timeout=600)
        result["wall_s"] = round(time.monotonic() - t0, 1)
        say("RESULT", f"{name} {json.dumps(result)}")
    result = {"fmd_log_tail": fmd.stderr()[-4000:]}
    if fmd.alive():
        fmd.stop()
    say("RESULT", f"end {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
