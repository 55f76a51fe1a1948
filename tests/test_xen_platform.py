"""The xen platform (fmd.hw.xen, XenPlatform): the hypervisor's physical CPUs from
``xenpm get-cpu-topology`` instead of dom0's virtual ones, and its choice by auto in a
Xen dom0."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import ConfigError
from fmd.hw.topo import XenPlatform, choose_platform
from fmd.hw.virt import ROLE_DOM0
from fmd.hw.xen import XenCpu, parse_cpu_topology
from fmd.protocol.fmri import CpuFmri
from tests.retire_fakes import fake_xen_path

# What xenpm printed in a Xen 4.17 dom0 under QEMU (-smp 4: four sockets).
XENPM_4_SOCKETS = """CPU\tcore\tsocket\tnode
CPU0\t 0\t 0\t 0
CPU1\t 0\t 1\t 0
CPU2\t 0\t 2\t 0
CPU3\t 0\t 3\t 0
"""


def dom0_tree(tmp: Path) -> tuple[Path, Path]:
    proc, sys = tmp / "proc", tmp / "sys"
    (sys / "hypervisor").mkdir(parents=True)
    (sys / "hypervisor" / "type").write_text("xen\n")
    (sys / "hypervisor" / "uuid").write_text("00000000-0000-0000-0000-000000000000\n")
    proc.mkdir()
    (proc / "cpuinfo").write_text("flags\t\t: fpu hypervisor\n")
    return proc, sys


def test_parse_the_real_layout() -> None:
    """The table becomes one row per online physical CPU."""
    rows = parse_cpu_topology(XENPM_4_SOCKETS)
    assert rows == [XenCpu(n, 0, n, 0) for n in range(4)]


def test_parse_leaves_out_unknown_cores_and_refuses_other_text() -> None:
    """A CPU Xen reports with core or socket -1 is left out; text without the
    header is not the table."""
    text = "CPU\tcore\tsocket\tnode\nCPU0\t 0\t 0\t 0\nCPU1\t -1\t -1\t -1\n"
    assert parse_cpu_topology(text) == [XenCpu(0, 0, 0, 0)]
    assert parse_cpu_topology("xenpm: command not found") is None


@given(st.text(max_size=300))
def test_parse_never_raises(text: str) -> None:
    """Whatever xenpm prints, parsing answers a list or None."""
    assert parse_cpu_topology(text) is None or isinstance(parse_cpu_topology(text), list)


def test_platform_names_physical_cpus_by_socket(tmp_path: Path) -> None:
    """Each socket is a chip labelled "CPU <socket>", each physical CPU a strand whose
    ASRU is its physical number; the host is a dom0."""
    proc, sys = dom0_tree(tmp_path)
    platform = XenPlatform(parse_cpu_topology(XENPM_4_SOCKETS) or [], sys, proc_root=proc)
    strand = platform.cpu_to_hc(2)
    assert strand.hc_list[1:] == (("chip", "2"), ("core", "0"), ("strand", "0"))
    assert platform.label_of(strand) == "CPU 2"
    assert platform.label_of(CpuFmri(cpuid=3)) == "CPU 3"
    assert platform.find_by_label("CPU 1")[0].hc_list[-1] == ("chip", "1")
    assert platform.virtualization.role == ROLE_DOM0


def test_choose_xen_runs_xenpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """platform=xen asks xenpm (topo.xenpm) for the CPUs."""
    _bin, env = fake_xen_path(tmp_path, ncpus=4)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _proc, sys = dom0_tree(tmp_path)
    platform = choose_platform(
        "xen", topology_file=tmp_path / "none.toml", sysfs_root=sys, is_root=True
    )
    assert isinstance(platform, XenPlatform)
    assert [n.path for n in platform.nodes() if n.fmri.hc_list[-1][0] == "strand"] == [
        "motherboard=0/chip=0/core=0/strand=0",
        "motherboard=0/chip=0/core=0/strand=1",
        "motherboard=0/chip=0/core=1/strand=0",
        "motherboard=0/chip=0/core=1/strand=1",
    ]


def test_auto_picks_xen_in_a_dom0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto, as root in a Xen dom0, is the xen platform."""
    _bin, env = fake_xen_path(tmp_path, ncpus=2)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _proc, sys = dom0_tree(tmp_path)
    platform = choose_platform(
        "auto", topology_file=tmp_path / "none.toml", sysfs_root=sys, is_root=True
    )
    assert isinstance(platform, XenPlatform)


def test_xen_without_xenpm_says_what_is_missing(tmp_path: Path) -> None:
    """Without a working xenpm the error names the command and asks whether this is a
    dom0."""
    with pytest.raises(ConfigError, match="cannot run /nonexistent/xenpm get-cpu-topology"):
        choose_platform(
            "xen",
            topology_file=tmp_path / "none.toml",
            sysfs_root=tmp_path,
            is_root=True,
            xenpm="/nonexistent/xenpm",
        )
