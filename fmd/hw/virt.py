"""Whether this host is a virtual machine, a Xen dom0 or bare metal, and how we know.

A fault manager in a guest sees virtual CPUs and guest-physical memory: a
machine check delivered to a guest (QEMU/KVM forward host poison as SRAO/SRAR
records) still names a guest page worth retiring, but a CPU error reported on
a vCPU says nothing of which physical core failed — that diagnosis belongs to
the host.  A Xen dom0 is itself a guest of the hypervisor, yet it is the
domain that manages the physical CPUs and memory.  The retire agent and the
operator's commands ask this module which of the three we are.

Evidence, each read from a file so tests can point at a fake tree::

    /sys/hypervisor/type == "xen"
        and /sys/hypervisor/uuid all zeros,
        or /proc/xen/capabilities names control_d ----------> dom0 (of xen)
        otherwise -------------------------------------------> guest (of xen)
    /proc/cpuinfo flags has "hypervisor" (CPUID.1:ECX[31]) --> guest
    DMI sys_vendor/product_name of a known hypervisor -------> guest (its name)
    none of these ------------------------------------------> bare metal

The hypervisor's name comes from Xen's own file, else from DMI (QEMU, KVM,
VMware, Hyper-V, VirtualBox, ...), else it is ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROLE_METAL: Final = "metal"
ROLE_GUEST: Final = "guest"
ROLE_DOM0: Final = "dom0"

HYPERVISOR_FLAG: Final = "hypervisor"
XEN: Final = "xen"
UNKNOWN: Final = "unknown"
_DOM0_UUID: Final = "00000000-0000-0000-0000-000000000000"
_DOM0_CAPABILITY: Final = "control_d"

# (substring of DMI sys_vendor or product_name, lower case) -> hypervisor name.
_DMI_HYPERVISORS: Final = (
    ("qemu", "qemu"),
    ("kvm", "kvm"),
    ("amazon ec2", "kvm"),
    ("google compute engine", "kvm"),
    ("vmware", "vmware"),
    ("virtualbox", "virtualbox"),
    ("innotek", "virtualbox"),
    ("microsoft corporation virtual machine", "hyper-v"),
    ("xen", "xen"),
    ("bhyve", "bhyve"),
    ("parallels", "parallels"),
    ("bochs", "bochs"),
    ("openstack", "kvm"),
)


@dataclass(frozen=True)
class Virtualization:
    """What this host is (``metal``, ``guest`` or ``dom0``), of which hypervisor,
    and the evidence that said so."""

    role: str = ROLE_METAL
    hypervisor: str | None = None
    evidence: tuple[str, ...] = ()

    @property
    def is_guest(self) -> bool:
        """True in a virtual machine whose CPUs are virtual (not in a Xen dom0)."""
        return self.role == ROLE_GUEST

    def describe(self) -> str:
        """One line for ``fmadm config`` and ``fmtopo``."""
        why = f" ({'; '.join(self.evidence)})" if self.evidence else ""
        if self.role == ROLE_GUEST:
            return f"virtual machine of {self.hypervisor or UNKNOWN}{why}"
        if self.role == ROLE_DOM0:
            hypervisor = self.hypervisor or XEN
            return f"{hypervisor} dom0: the physical CPUs and memory, through the hypervisor{why}"
        return f"bare metal{why}"

    def to_json(self) -> dict[str, object]:
        return {"role": self.role, "hypervisor": self.hypervisor, "evidence": list(self.evidence)}


BARE_METAL: Final = Virtualization()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _cpuinfo_flag(cpuinfo: Path) -> bool:
    text = _read(cpuinfo)
    if text is None:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return HYPERVISOR_FLAG in value.split()
    return False


def _dmi_hypervisor(dmi: Path) -> tuple[str, str] | None:
    """(hypervisor, what DMI said) when DMI names a known hypervisor."""
    vendor = _read(dmi / "sys_vendor") or ""
    product = _read(dmi / "product_name") or ""
    text = f"{vendor} {product}".strip().lower()
    if not text:
        return None
    for needle, name in _DMI_HYPERVISORS:
        if needle in text:
            return name, f"DMI {vendor or product!r}"
    return None


def detect(proc_root: Path | str = "/proc", sys_root: Path | str = "/sys") -> Virtualization:
    """Classify this host from the files under ``proc_root`` and ``sys_root``."""
    proc, sys = Path(proc_root), Path(sys_root)
    evidence: list[str] = []
    hyp_type = _read(sys / "hypervisor" / "type")
    if hyp_type == XEN:
        evidence.append("/sys/hypervisor/type xen")
        uuid = _read(sys / "hypervisor" / "uuid")
        caps = _read(proc / "xen" / "capabilities") or ""
        if uuid == _DOM0_UUID or _DOM0_CAPABILITY in caps.split(","):
            evidence.append("domain id 0" if uuid == _DOM0_UUID else "control_d capability")
            return Virtualization(ROLE_DOM0, XEN, tuple(evidence))
        return Virtualization(ROLE_GUEST, XEN, tuple(evidence))
    if _cpuinfo_flag(proc / "cpuinfo"):
        evidence.append("CPUID hypervisor bit")
    dmi = _dmi_hypervisor(sys / "class" / "dmi" / "id")
    if dmi is not None:
        evidence.append(dmi[1])
    if not evidence:
        return BARE_METAL
    return Virtualization(ROLE_GUEST, dmi[0] if dmi else UNKNOWN, tuple(evidence))
