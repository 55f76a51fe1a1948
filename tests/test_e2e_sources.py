"""End-to-end: the daemon runs host sources chosen by properties and says how they fare."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.fmdproc import FmdProcess

# The kernel log records a real 6.1 kernel wrote for one corrected error
# (real-kernel-harness.md), as /dev/kmsg hands them out: priority, sequence
# number, microseconds since boot, flags; the message.
KMSG = [
    "4,900,6773900,-;mce: [Hardware Error]: Machine check events logged",
    "4,901,6773910,-;mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 1: 9000000000000151",
    "4,902,6773920,-;mce: [Hardware Error]: TSC 0 ",
    "4,903,6773930,-;mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1795987519 SOCKET 0 APIC 1"
    " microcode 1000065",
    "6,904,6774000,-;some other kernel message",
]


def xprt_rows(fmd: FmdProcess) -> dict[str, dict[str, object]]:
    out = fmd.cli("fmstat", "-t", "--json")
    assert out.returncode == 0, out.stderr
    return {str(r["module"]): r for r in orjson.loads(out.stdout)}


@pytest.mark.e2e
def test_kernel_log_source_stores_a_machine_check_once_across_a_restart(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """xprt.kmsg=on reads a kernel log, stores its machine check, and after a restart
    reads nothing twice; a source that cannot run says why in fmstat -t and fmadm config."""
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("\n".join(KMSG) + "\n")
    boot = tmp_path / "boot_id"
    boot.write_text("4a4f5e4c-1111-2222-3333-444455556666\n")
    fmd = FmdProcess(
        root,
        props={
            "platform": "sim",
            "xprt.kmsg": "on",
            "xprt.kmsg.path": str(kmsg),
            "xprt.bootid": str(boot),
            "xprt.mcelog": "on",
            "xprt.mcelog.path": str(tmp_path / "no-such-mcelog"),
        },
    )
    fmd_factory.append(fmd)
    fmd.start()
    fmd.wait_for(lambda: len(fmd.errlog_json()) == 1, timeout=20)
    [ev] = fmd.errlog_json()
    assert (ev["class"], ev["IA32_MCi_STATUS"], ev["cpuid"]) == (
        "ereport.cpu.amd.ic.data_par",
        0x9000000000000151,
        1,
    )
    rows = xprt_rows(fmd)
    assert (rows["kmsg"]["state"], rows["mcelog"]["state"]) == ("run", "unavail")
    assert str(rows["mcelog"]["reason"]).startswith("kernel has no ")
    config = fmd.cli("fmadm", "config")
    assert "kmsg" in config.stdout and "xprt.kmsg is on" in config.stdout

    fmd.kill()
    with kmsg.open("a") as fh:
        fh.write("4,905,7000000,-;mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 2: "
                 "9400000000000105\n")  # fmt: skip
        fh.write("4,906,7000010,-;mce: [Hardware Error]: PROCESSOR 2:60fb1 TIME 1795987600 "
                 "SOCKET 0 APIC 0\n")  # fmt: skip
    fmd.start()
    fmd.wait_for(lambda: len(fmd.errlog_json()) == 2, timeout=20)
    fmd.stop()
    fmd.start()
    assert [e["cpuid"] for e in fmd.errlog_json()] == [1, 0]
