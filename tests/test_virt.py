"""Virtualization detection (fmd.hw.virt) on fake procfs/sysfs trees: bare metal, a
KVM/QEMU guest, a Xen dom0 and a Xen guest, with the evidence each gives."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fmd.hw.topo import LinuxPlatform
from fmd.hw.virt import ROLE_DOM0, ROLE_GUEST, ROLE_METAL, Virtualization, detect

FLAGS_METAL = "fpu vme de pse tsc msr pae mce cx8 apic"


def tree(
    tmp: Path,
    *,
    flags: str = FLAGS_METAL,
    dmi: tuple[str, str] | None = None,
    xen_uuid: str | None = None,
    xen_caps: str | None = None,
) -> tuple[Path, Path]:
    proc, sys = tmp / "proc", tmp / "sys"
    proc.mkdir(parents=True, exist_ok=True)
    sys.mkdir(parents=True, exist_ok=True)
    (proc / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    if dmi is not None:
        d = sys / "class" / "dmi" / "id"
        d.mkdir(parents=True)
        (d / "sys_vendor").write_text(dmi[0] + "\n")
        (d / "product_name").write_text(dmi[1] + "\n")
    if xen_uuid is not None:
        h = sys / "hypervisor"
        h.mkdir()
        (h / "type").write_text("xen\n")
        (h / "uuid").write_text(xen_uuid + "\n")
    if xen_caps is not None:
        (proc / "xen").mkdir()
        (proc / "xen" / "capabilities").write_text(xen_caps + "\n")
    return proc, sys


def test_bare_metal(tmp_path: Path) -> None:
    """No hypervisor flag, a real vendor's DMI and no /sys/hypervisor: bare metal."""
    proc, sys = tree(tmp_path, dmi=("Dell Inc.", "PowerEdge R750"))
    virt = detect(proc, sys)
    assert virt == Virtualization(ROLE_METAL)
    assert virt.is_guest is False
    assert virt.describe() == "bare metal"


def test_qemu_guest_from_cpuid_bit_and_dmi(tmp_path: Path) -> None:
    """The CPUID hypervisor bit and QEMU's DMI make a guest of qemu, both as evidence."""
    proc, sys = tree(
        tmp_path, flags=FLAGS_METAL + " hypervisor", dmi=("QEMU", "Standard PC (Q35 + ICH9, 2009)")
    )
    virt = detect(proc, sys)
    assert (virt.role, virt.hypervisor, virt.is_guest) == (ROLE_GUEST, "qemu", True)
    assert virt.describe() == "virtual machine of qemu (CPUID hypervisor bit; DMI 'QEMU')"


def test_guest_from_the_cpuid_bit_alone(tmp_path: Path) -> None:
    """The CPUID bit without a known DMI vendor still says guest, of an unknown hypervisor."""
    proc, sys = tree(tmp_path, flags="hypervisor " + FLAGS_METAL)
    virt = detect(proc, sys)
    assert (virt.role, virt.hypervisor) == (ROLE_GUEST, "unknown")


def test_vmware_from_dmi_alone(tmp_path: Path) -> None:
    """DMI alone (a hypervisor that hides the CPUID bit) is enough."""
    proc, sys = tree(tmp_path, dmi=("VMware, Inc.", "VMware Virtual Platform"))
    assert detect(proc, sys).hypervisor == "vmware"


def test_xen_dom0_from_its_zero_uuid(tmp_path: Path) -> None:
    """Xen's type file with domain 0's all-zero uuid is a dom0, not a guest, although
    its CPUID bit is set."""
    proc, sys = tree(
        tmp_path, flags=FLAGS_METAL + " hypervisor", xen_uuid="00000000-0000-0000-0000-000000000000"
    )
    virt = detect(proc, sys)
    assert (virt.role, virt.hypervisor, virt.is_guest) == (ROLE_DOM0, "xen", False)
    assert "dom0" in virt.describe()


def test_xen_dom0_from_control_d(tmp_path: Path) -> None:
    """xenfs's capabilities naming control_d also say dom0."""
    proc, sys = tree(
        tmp_path, xen_uuid="4f2c2e1a-0000-0000-0000-000000000001", xen_caps="control_d"
    )
    assert detect(proc, sys).role == ROLE_DOM0


def test_xen_guest(tmp_path: Path) -> None:
    """A Xen domain other than dom0 is a guest of xen."""
    proc, sys = tree(tmp_path, xen_uuid="4f2c2e1a-0000-0000-0000-000000000001")
    virt = detect(proc, sys)
    assert (virt.role, virt.hypervisor) == (ROLE_GUEST, "xen")


def test_missing_trees_are_bare_metal(tmp_path: Path) -> None:
    """Nothing readable is no evidence: bare metal."""
    assert detect(tmp_path / "no-proc", tmp_path / "no-sys") == Virtualization()


@given(st.text(max_size=200))
def test_any_cpuinfo_text_is_read_without_error(text: str) -> None:
    """Whatever cpuinfo holds, detection answers (hypervisor only with the flag)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = Path(tmp) / "proc"
        proc.mkdir()
        (proc / "cpuinfo").write_text(text)
        virt = detect(proc, Path(tmp) / "sys")
        flagged = any(
            line.partition(":")[0].strip() == "flags"
            and "hypervisor" in line.partition(":")[2].split()
            for line in text.splitlines()
        )
        assert virt.is_guest == flagged


def test_linux_platform_reports_what_it_detects(tmp_path: Path) -> None:
    """The linux platform detects on its own procfs and sysfs."""
    proc, sys = tree(tmp_path, flags="hypervisor", dmi=("QEMU", "Standard PC"))
    for n in range(2):
        topo = sys / "devices" / "system" / "cpu" / f"cpu{n}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{n}\n")
    platform = LinuxPlatform(sys, cpuinfo=proc / "cpuinfo", hostname="h")
    assert platform.virtualization.hypervisor == "qemu"
    assert platform.virtualization.is_guest is True
