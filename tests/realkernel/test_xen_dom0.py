"""fmd in a real Xen dom0: Xen 4.17 and Debian's kernel as dom0 under QEMU, one boot.

Scenario 6 of the Xen work: fmd chooses the ``xen`` platform by itself, names the
hypervisor's physical CPUs (``xenpm get-cpu-topology``) rather than dom0's vCPUs,
says it is a dom0, and reads the hypervisor's telemetry from /dev/mcelog.  The
retire half of scenario 8: a CPU fault on a physical CPU makes the xen backend run
``xen-hptool cpu-offline`` and Xen really takes the CPU out; ``fmadm replaced``
brings it back.  (The hypervisor's telemetry itself does not reach dom0 in this
emulated machine yet, so the errors are given to fmd as mcelog text.)
"""

from __future__ import annotations

import json
import re
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
    pytest.mark.xdist_group("xen-dom0"),
    pytest.mark.timeout(1500),
]

RUN_TIMEOUT_S = 900.0
CPUS = 2

_SCRIPT = """mkdir -p /mnt/fmd/etc/fmd/plugins
echo "setprop backend xen" > /mnt/fmd/etc/fmd/plugins/cpumem-retire.conf
topology() { xenpm get-cpu-topology | tr '\\n\\t' '; '; }
echo "@@OUT xenpm $(topology)"
$P -m fmd.cli.fmd -R /mnt/fmd -o xprt.pstore=off || echo "@@OUT fmd_failed 1"
echo "@@OUT config $($P -m fmd.cli.fmadm -R /mnt/fmd config --json | tr -d '\\n')"
echo "@@OUT topo $($P -m fmd.cli.fmtopo -R /mnt/fmd --json)"
# Four corrected L1 icache errors on physical CPU 1, as mcelog text (the hypervisor's
# own telemetry does not reach dom0 here yet): a fault, and the xen backend asks Xen
# to take that physical CPU offline.
for i in 1 2 3 4; do printf 'CPU 1 BANK 1\\nSTATUS 0x9000000000000151\\n\\n'; done \\
    | $P -m fmd.cli.fminject -R /mnt/fmd -
for i in $(seq 60); do topology | grep -q "CPU1 " || break; sleep 1; done
echo "@@OUT offlined $(topology)"
echo "@@OUT faulty $($P -m fmd.cli.fmadm -R /mnt/fmd faulty --json | tr -d '\\n')"
$P -m fmd.cli.fmadm -R /mnt/fmd faulty
$P -m fmd.cli.fmadm -R /mnt/fmd replaced "CPU 0"
for i in $(seq 60); do topology | grep -q "CPU1 " && break; sleep 1; done
echo "@@OUT onlined $(topology)"
echo "@@OUT fmdump $($P -m fmd.cli.fmdump -R /mnt/fmd | tr '\\n' ';')"
"""


@pytest.fixture(scope="module")
def dom0_run() -> Iterator[dict[str, Any]]:
    """Boot Xen with the dom0 once and collect what fmd said there."""
    try:
        harness.ensure_packages()
        kernel = harness.ensure_kernel()
        xen = harness.ensure_xen()
    except harness.Unavailable as exc:
        pytest.skip(f"no Xen under QEMU here: {exc}")
    with tempfile.TemporaryDirectory(prefix="fmd-xen-") as tmp:
        work = Path(tmp)
        script = harness.write_script(work, _SCRIPT)
        initrd = harness.build_initramfs(kernel, script, work / "initrd.gz", xen=True)
        started = time.monotonic()
        # Two physical CPUs: each one more costs the whole boot under emulation.
        guest = harness.boot_xen(xen, kernel, initrd, work, cpus=CPUS)
        code = guest.finish(RUN_TIMEOUT_S)
        out: dict[str, Any] = {"_console": guest.console, "_code": code}
        out.update(harness.marked(guest.console, "OUT"))
        sys.stderr.write(f"[harness] xen dom0: {time.monotonic() - started:.1f} s in all\n")
        yield out


def output(run: dict[str, Any], name: str) -> str:
    if name not in run:
        tail = "\n".join(run["_console"][-60:])
        pytest.fail(f"dom0 printed no {name!r}; console tail:\n{tail}")
    return str(run[name])


def test_dom0_picks_the_xen_platform_and_names_physical_cpus(dom0_run: dict[str, Any]) -> None:
    """In a real dom0, auto chooses the xen platform, which says it is a Xen dom0 and
    whose strands are exactly the physical CPUs xenpm lists; /dev/mcelog, not tracefs,
    is the machine-check source."""
    assert "fmd_failed" not in dom0_run
    physical = sorted(int(n) for n in re.findall(r"CPU(\d+)", output(dom0_run, "xenpm")))
    assert physical == list(range(CPUS))
    config = json.loads(output(dom0_run, "config"))
    assert config["platform"]["name"] == "xen"
    assert config["platform"]["virtualization"]["role"] == "dom0"
    states = {t["name"]: t["state"] for t in config["transports"]}
    assert states["mcelog"] == "run"
    assert states["tracefs"] == "off"
    nodes = json.loads(output(dom0_run, "topo"))
    strands = sorted(n["asru"] for n in nodes if "/strand=" in n["fmri"])
    assert strands == [f"cpu:///cpuid={n}" for n in physical]


def test_a_physical_cpu_fault_is_offlined_by_the_hypervisor_and_replaced_brings_it_back(
    dom0_run: dict[str, Any],
) -> None:
    """Corrected icache errors on physical CPU 1 make one fault on cpu 1; the xen backend
    runs xen-hptool and Xen's topology no longer lists CPU1; fmadm faulty says it was taken
    out of service; fmadm replaced "CPU 0" brings CPU1 back; fmdump shows the lifecycle."""
    assert re.findall(r"CPU(\d+)", output(dom0_run, "offlined")) == ["0"]
    [case] = json.loads(output(dom0_run, "faulty"))
    [suspect] = case["suspects"]
    assert suspect["asru"] == "cpu:///cpuid=1"
    assert suspect["status"] == "faulted and taken out of service"
    assert "xen" in suspect["responses"][0]["detail"]
    assert re.findall(r"CPU(\d+)", output(dom0_run, "onlined")) == ["0", "1"]
    events = [line.split()[-1] for line in output(dom0_run, "fmdump").split(";") if line]
    assert events[1:] == ["Diagnosed", "Isolated", "Repaired", "Resolved"]
