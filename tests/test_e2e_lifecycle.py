"""The whole fault lifecycle from the operator's side, on the real daemon with the
sim platform, once per retire backend (sim; linux against a fake sysfs tree; xen
against a fake xen-hptool): corrected icache errors on chip 3 -> the console
summary -> ``fmadm faulty`` shows "CPU 3" faulted and taken out of service and
the backend has the strand offline -> ``fmadm replaced "CPU 3"`` -> the strand is
back online, ``fmadm faulty`` is empty, and ``fmdump`` shows Diagnosed, Isolated,
Repaired and Resolved."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fmd.store import Store, hwstate
from tests.fmdproc import FmdProcess
from tests.retire_fakes import (
    fake_xen_path,
    make_fake_procfs,
    make_fake_sysfs,
    read_cpu_online,
    reboot,
    xen_calls,
)

pytestmark = pytest.mark.e2e

HOUR = 3600
T0 = 1_700_000_000
ICACHE_CE = "0x9400000000000101"  # VAL|EN, code 0x0101: l1icache, corrected
CPU = 13  # chip 3, core 0, strand 1 on the sim platform


def icache(cpu: int, t: int) -> dict[str, Any]:
    return {"mca": {"cpu": cpu, "bank": 1, "status": ICACHE_CE, "time": t}}


def conf(root: Path, module: str, lines: list[str]) -> None:
    path = root / "etc" / "fmd" / "plugins" / f"{module}.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def sim_state(root: Path) -> str:
    store = Store("", db_file=root / "var" / "fm" / "fmd" / "fmd.db", readonly=True)
    try:
        with store.reader() as conn:
            rows = {r.ident: r.state for r in hwstate.hw_states(conn, "cpu")}
    finally:
        store.close()
    return rows.get(CPU, "online")


Backend = tuple[list[str], Callable[[], str]]


def strand_unusable(fmd: FmdProcess) -> bool:
    """What fmtopo --json says of cpu 13's strand (from the resource cache)."""
    out = fmd.cli("fmtopo", "--json", "-o", "platform=sim")
    assert out.returncode == 0, out.stderr
    [node] = [n for n in json.loads(out.stdout) if n["fmri"].endswith("/chip=3/core=0/strand=1")]
    return bool(node["unusable"])


def sim_backend(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    return ["setprop backend sim"], lambda: sim_state(root)


def linux_backend(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=16)
    return (
        # cec inactive: the test machine's own kernel collector must not change the outcome.
        ["setprop backend linux", f"setprop sysfs_root {sysfs}", "setprop cec inactive"],
        lambda: "online" if read_cpu_online(sysfs, CPU) == "1" else "offline",
    )


def xen_backend(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    _bin, env = fake_xen_path(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def state() -> str:
        calls = [c for c in xen_calls(env) if c[0].startswith("cpu-") and c[1] == str(CPU)]
        return "offline" if calls and calls[-1][0] == "cpu-offline" else "online"

    return ["setprop backend xen"], state


@pytest.mark.parametrize("make_backend", [sim_backend, linux_backend, xen_backend])
def test_fault_isolate_replace_resolve(
    root: Path,
    tmp_path: Path,
    fmd_factory: list[FmdProcess],
    monkeypatch: pytest.MonkeyPatch,
    make_backend: Callable[[Path, Path, pytest.MonkeyPatch], Backend],
) -> None:
    """Errors on chip 3 end with CPU 3's strand offline and the case isolated; after
    'fmadm replaced "CPU 3"' the strand is online and the case resolved."""
    lines, cpu_state = make_backend(root, tmp_path, monkeypatch)
    conf(root, "cpumem-retire", lines)
    console = tmp_path / "console.txt"
    conf(
        root,
        "syslog-msgs",
        ["setprop syslogd false", "setprop console true", f"setprop console_path {console}"],
    )
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    assert all(r["ok"] for r in fmd.send_lines(icache(CPU, T0 + i * HOUR) for i in range(4)))
    fmd.quiesce()

    # The console summary, once.
    text = console.read_text().replace("\r\n", "\n")
    assert text.count("SUNW-MSG-ID: GMCA-8000-Q7, TYPE: Fault, VER: 1, SEVERITY: Major") == 1
    uuid = next(e["uuid"] for e in fmd.fltlog_json() if e["class"] == "list.suspect")
    assert f"EVENT-ID: {uuid}" in text

    # fmadm faulty: CPU 3, faulted and taken out of service; the strand is offline.
    out = fmd.cli("fmadm", "faulty")
    assert out.returncode == 0, out.stderr
    assert uuid in out.stdout
    assert 'FRU         : "CPU 3" (hc://' in out.stdout
    assert "faulted and taken out of service" in out.stdout
    cases = json.loads(fmd.cli("fmadm", "faulty", "--json").stdout)
    assert [(c["uuid"], c["code"]) for c in cases] == [(uuid, "GMCA-8000-Q7")]
    suspect = cases[0]["suspects"][0]
    assert (suspect["location"], suspect["status"], suspect["asru"]) == (
        "CPU 3",
        "faulted and taken out of service",
        f"cpu:///cpuid={CPU}",
    )
    assert cpu_state() == "offline"
    assert strand_unusable(fmd) is True

    # Replace the part.
    done = fmd.cli("fmadm", "replaced", "CPU 3")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "fmadm: recorded replacement of CPU 3"
    fmd.quiesce()
    assert cpu_state() == "online"
    assert strand_unusable(fmd) is False
    empty = fmd.cli("fmadm", "faulty")
    assert (empty.returncode, empty.stdout) == (0, "")
    events = [(e["uuid"], e["event"]) for e in fmd.fltlog_json() if e["uuid"] == uuid]
    assert [e for _, e in events] == ["Diagnosed", "Isolated", "Repaired", "Resolved"]
    plain = fmd.cli("fmdump")
    for word in ("Diagnosed", "Isolated", "Repaired", "Resolved"):
        assert f"{uuid} GMCA-8000-Q7 {word}" in plain.stdout or word in plain.stdout


def offlined_then_stopped(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> tuple[FmdProcess, Path, Path]:
    """fmd with the linux backend on a fake sysfs and procfs, stopped after offlining
    cpu 13 for icache errors; returns it with the sysfs and procfs roots."""
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=16)
    procfs = make_fake_procfs(tmp_path / "proc")
    conf(
        root,
        "cpumem-retire",
        ["setprop backend linux", f"setprop sysfs_root {sysfs}", f"setprop procfs_root {procfs}"],
    )
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    fmd.send_lines(icache(CPU, T0 + i * HOUR) for i in range(4))
    fmd.quiesce()
    assert read_cpu_online(sysfs, CPU) == "0"
    assert fmd.stop() == 0
    return fmd, sysfs, procfs


def test_retired_cpu_is_offlined_again_after_a_reboot(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A reboot (a new boot id) brings the CPU back online; the next fmd start
    offlines it again, without logging the isolation a second time."""
    fmd, sysfs, procfs = offlined_then_stopped(root, tmp_path, fmd_factory)
    (sysfs / "devices" / "system" / "cpu" / f"cpu{CPU}" / "online").write_text("1\n")
    reboot(procfs, "boot-2")
    fmd.start()
    fmd.quiesce()
    assert read_cpu_online(sysfs, CPU) == "0"
    assert [e["event"] for e in fmd.fltlog_json()] == ["Diagnosed", "Isolated"]


def test_plain_restart_resends_no_isolated_fault(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Without a reboot (same boot id), a restart of fmd does not re-send faults it
    already isolated: a CPU an operator brought back online by hand stays online."""
    fmd, sysfs, _procfs = offlined_then_stopped(root, tmp_path, fmd_factory)
    (sysfs / "devices" / "system" / "cpu" / f"cpu{CPU}" / "online").write_text("1\n")
    fmd.start()
    fmd.quiesce()
    assert read_cpu_online(sysfs, CPU) == "1"
    assert stat_value(fmd, "cpumem-retire", "cpu_flts") == 0


def test_agent_loaded_later_retires_open_diagnoses(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A diagnosis made while the retire agent was disabled is acted on (and the case
    isolated) when fmd next starts with the agent."""
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=16)
    conf(root, "cpumem-retire", ["setprop backend linux", f"setprop sysfs_root {sysfs}"])
    fmd = FmdProcess(root, props={"platform": "sim", "modules.disable": "cpumem-retire"})
    fmd_factory.append(fmd.start())
    fmd.send_lines(icache(CPU, T0 + i * HOUR) for i in range(4))
    fmd.quiesce()
    assert read_cpu_online(sysfs, CPU) == "1"
    assert fmd.stop() == 0
    fmd.props.pop("modules.disable")
    fmd.start()
    fmd.quiesce()
    assert read_cpu_online(sysfs, CPU) == "0"
    assert [e["event"] for e in fmd.fltlog_json()] == ["Diagnosed", "Isolated"]


def test_cpu_that_cannot_be_offlined_is_reported(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """CPU 0 has no hotplug file: fmadm faulty shows the fault still in service and
    why the agent could not take it out; the case is not isolated."""
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=16)
    conf(root, "cpumem-retire", ["setprop backend linux", f"setprop sysfs_root {sysfs}"])
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    fmd.send_lines(icache(0, T0 + i * HOUR) for i in range(4))
    fmd.quiesce()
    out = fmd.cli("fmadm", "faulty").stdout
    assert "faulted but still in service" in out
    assert "cpumem-retire: offline failed: cpu0 is not hot-pluggable" in out
    assert [e["event"] for e in fmd.fltlog_json()] == ["Diagnosed"]
    stats = {s["name"]: s["value"] for s in fmd.adm("module.stats", module="cpumem-retire")}
    assert stats["cpu_fails"] == 1


def test_injected_errors_make_an_injected_case(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Errors sent with fminject are marked injected, and so is the case they cause:
    fmadm faulty says "injected" on its row and in --json."""
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    lines = "".join(json.dumps(icache(CPU, T0 + i * HOUR)) + "\n" for i in range(4))
    out = fmd.cli("fminject", "-q", "-", input=lines.encode())
    assert out.returncode == 0, out.stderr
    fmd.quiesce()
    [case] = json.loads(fmd.cli("fmadm", "faulty", "--json").stdout)
    assert case["injected"] is True
    row = fmd.cli("fmadm", "faulty", "-s").stdout.splitlines()[3]
    assert row.endswith("GMCA-8000-Q7   Major     injected")


MEM_CE = "0x8c00004000010090"  # VAL|MISCV|ADDRV, memory-controller read, corrected
PAGE = 0x2040  # chip 0, channel 0, dimm 1: "CPU 0 DIMM 1"


def test_page_unretire_is_retried_at_the_next_start(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A retired page whose repair cannot be undone (no unpoison support) leaves the
    case repaired but not resolved; after a reboot clears the poison, the next fmd
    start finishes the repair and resolves the case."""
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=16)
    procfs = make_fake_procfs(tmp_path / "proc", poisoned_pfns=[PAGE >> 12])
    conf(
        root,
        "cpumem-retire",
        [
            "setprop backend linux",
            f"setprop sysfs_root {sysfs}",
            f"setprop procfs_root {procfs}",
            f"setprop debugfs_root {tmp_path / 'nodebugfs'}",
        ],
    )
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    records = [
        {"mca": {"cpu": 1, "bank": 8, "status": MEM_CE, "addr": hex(PAGE), "misc": "0x86",
                 "time": T0 + i * 60}}
        for i in range(3)
    ]  # fmt: skip
    assert all(r["ok"] for r in fmd.send_lines(records))
    fmd.quiesce()
    uuid = next(e["uuid"] for e in fmd.fltlog_json() if e["class"] == "list.suspect")
    assert fmd.cli("fmadm", "repaired", "CPU 0 DIMM 1").returncode == 0
    fmd.quiesce()
    assert [e["event"] for e in fmd.fltlog_json() if e["uuid"] == uuid] == [
        "Diagnosed",
        "Isolated",
        "Repaired",
    ]
    [case] = json.loads(fmd.cli("fmadm", "faulty", "-a", "--json").stdout)
    [response] = [r for r in case["suspects"][0]["responses"] if r["action"] == "unretire"]
    assert response["ok"] is False and "not supported by this kernel" in response["detail"]
    assert fmd.stop() == 0
    make_fake_procfs(tmp_path / "proc")  # the reboot: nothing is poisoned any more
    fmd.start()
    fmd.quiesce()
    assert [e["event"] for e in fmd.fltlog_json() if e["uuid"] == uuid][-1] == "Resolved"


def stat_value(fmd: FmdProcess, module: str, name: str) -> int:
    return next(
        int(s["value"]) for s in fmd.adm("module.stats", module=module) if s["name"] == name
    )
