"""Tests for fmd.hw.topo: the sim, file and Linux platforms and choose_platform."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.errors import ConfigError
from fmd.hw.topo import (
    FilePlatform,
    LinuxPlatform,
    SimPlatform,
    TopoLookupError,
    TopoNode,
    choose_platform,
)
from fmd.protocol import CpuFmri, HcFmri, MemFmri, hc_fmri

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "fmd" / "topology.toml"
SIM = SimPlatform(hostname="test host")


def path(fmri: HcFmri) -> str:
    return "/".join(f"{n}={i}" for n, i in fmri.hc_list)


def by_name(nodes: Sequence[TopoNode], name: str) -> list[TopoNode]:
    return [n for n in nodes if n.fmri.hc_list[-1][0] == name]


# ---- SimPlatform ------------------------------------------------------------


def test_sim_authority() -> None:
    """The sim authority is fmd-sim, SIM0001 and the sanitised host name, in order."""
    expected = (("product-id", "fmd-sim"), ("chassis-id", "SIM0001"), ("server-id", "test-host"))
    assert expected == SIM.authority
    assert expected == SIM.nodes()[0].fmri.authority


def test_sim_node_counts() -> None:
    """The sim has 4 chips, 8 cores, 16 strands, 4 controllers, 8 channels, 16 DIMMs, 32 ranks."""
    nodes = SIM.nodes()
    counts = {
        name: len(by_name(nodes, name))
        for name in (
            "motherboard", "chip", "core", "strand",
            "memory-controller", "dram-channel", "dimm", "rank",
        )
    }  # fmt: skip
    assert counts == {
        "motherboard": 1, "chip": 4, "core": 8, "strand": 16,
        "memory-controller": 4, "dram-channel": 8, "dimm": 16, "rank": 32,
    }  # fmt: skip


def test_sim_tree_order() -> None:
    """nodes() walks depth first: chip, its cores and strands, then its memory."""
    paths = [n.path for n in SIM.nodes()[:12]]
    assert paths == [
        "motherboard=0",
        "motherboard=0/chip=0",
        "motherboard=0/chip=0/core=0",
        "motherboard=0/chip=0/core=0/strand=0",
        "motherboard=0/chip=0/core=0/strand=1",
        "motherboard=0/chip=0/core=1",
        "motherboard=0/chip=0/core=1/strand=0",
        "motherboard=0/chip=0/core=1/strand=1",
        "motherboard=0/chip=0/memory-controller=0",
        "motherboard=0/chip=0/memory-controller=0/dram-channel=0",
        "motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm=0",
        "motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm=0/rank=0",
    ]


def test_sim_chip_labels() -> None:
    """Chips are labelled CPU 0 .. CPU 3 and are their own FRU."""
    chips = by_name(SIM.nodes(), "chip")
    assert [c.label for c in chips] == ["CPU 0", "CPU 1", "CPU 2", "CPU 3"]
    assert all(c.fru == c.fmri and c.asru is None for c in chips)


def test_sim_dimm_labels_and_serials() -> None:
    """DIMM (channel h, dimm d) of chip c is CPU c DIMM 2h+d with serial SIM-c-(2h+d)."""
    for node in by_name(SIM.nodes(), "dimm"):
        hc = dict(node.fmri.hc_list)
        c, n = hc["chip"], int(hc["dram-channel"]) * 2 + int(hc["dimm"])
        assert (f"CPU {c} DIMM {n}", f"SIM-{c}-{n}") == (node.label, node.serial)
        assert MemFmri(unum=node.path, serial=f"SIM-{c}-{n}") == node.asru
        assert node.fmri == node.fru


def test_sim_rank_asru_and_fru() -> None:
    """A rank's ASRU is a mem FMRI of its path and its FRU is the DIMM."""
    rank = SIM.decode_address(0)
    assert rank is not None
    node = next(n for n in SIM.nodes() if n.fmri == rank)
    assert MemFmri(unum=node.path, serial="SIM-0-0") == node.asru
    assert path(node.fru) == "motherboard=0/chip=0/memory-controller=0/dram-channel=0/dimm=0"
    assert node.label == "CPU 0 DIMM 0"


@pytest.mark.parametrize("cpuid", range(16))
def test_sim_cpuid_mapping(cpuid: int) -> None:
    """cpuid = chip*4 + core*2 + strand, the APIC id is the cpuid, the FRU is the chip."""
    chip, core, strand = cpuid // 4, (cpuid // 2) % 2, cpuid % 2
    fmri = SIM.cpu_to_hc(cpuid)
    assert f"motherboard=0/chip={chip}/core={core}/strand={strand}" == path(fmri)
    assert cpuid == SIM.apic_to_cpu(cpuid)
    assert chip == SIM.chip_of_cpu(cpuid)
    node = next(n for n in SIM.nodes() if n.fmri == fmri)
    assert CpuFmri(cpuid=cpuid) == node.asru
    assert f"CPU {chip}" == node.label


def test_sim_unknown_cpu() -> None:
    """An unknown cpuid or APIC id raises TopoLookupError."""
    with pytest.raises(TopoLookupError, match="cpuid 16"):
        SIM.cpu_to_hc(16)
    with pytest.raises(TopoLookupError, match="APIC id 99"):
        SIM.apic_to_cpu(99)
    with pytest.raises(TopoLookupError):
        SIM.chip_of_cpu(-1)


@pytest.mark.parametrize(
    ("pa", "expected"),
    [
        (0x0, "chip=0/memory-controller=0/dram-channel=0/dimm=0/rank=0"),
        (0x1000, "chip=0/memory-controller=0/dram-channel=1/dimm=0/rank=0"),
        (0x2000, "chip=0/memory-controller=0/dram-channel=0/dimm=1/rank=0"),
        (0x4000, "chip=0/memory-controller=0/dram-channel=0/dimm=0/rank=1"),
        (0x7FFF, "chip=0/memory-controller=0/dram-channel=1/dimm=1/rank=1"),
        (0x4_0000_0000, "chip=1/memory-controller=0/dram-channel=0/dimm=0/rank=0"),
        (0xC_0000_5000, "chip=3/memory-controller=0/dram-channel=1/dimm=0/rank=1"),
        (0x10_0000_0000, "chip=0/memory-controller=0/dram-channel=0/dimm=0/rank=0"),
    ],
)
def test_sim_decode_examples(pa: int, expected: str) -> None:
    """Known addresses decode to the expected rank."""
    rank = SIM.decode_address(pa)
    assert rank is not None
    assert f"motherboard=0/{expected}" == path(rank)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_sim_decode_matches_bit_formula(pa: int) -> None:
    """Every address decodes to the rank the bit formula gives."""
    chip, ch, dimm, rank = (pa >> 34) & 3, (pa >> 12) & 1, (pa >> 13) & 1, (pa >> 14) & 1
    expected = hc_fmri(
        SIM.authority,
        ("motherboard", 0), ("chip", chip), ("memory-controller", 0),
        ("dram-channel", ch), ("dimm", dimm), ("rank", rank),
    )  # fmt: skip
    assert expected == SIM.decode_address(pa)


def test_sim_labels_lookup() -> None:
    """label_of answers for hc, cpu and mem FMRIs; find_by_label finds the FRU."""
    dimm = SIM.find_by_label("cpu 2  dimm 3")
    assert [path(f) for f in dimm] == [
        "motherboard=0/chip=2/memory-controller=0/dram-channel=1/dimm=1"
    ]
    assert SIM.label_of(dimm[0]) == "CPU 2 DIMM 3"
    assert SIM.label_of(CpuFmri(cpuid=5)) == "CPU 1"
    assert SIM.label_of(MemFmri(unum=path(dimm[0]) + "/rank=1")) == "CPU 2 DIMM 3"
    assert SIM.label_of(MemFmri(unum="CPU 2 DIMM 3")) == "CPU 2 DIMM 3"
    assert [path(f) for f in SIM.find_by_label("CPU 3")] == ["motherboard=0/chip=3"]
    assert SIM.find_by_label("CPU 9") == []
    assert SIM.label_of(hc_fmri(None, ("motherboard", 0), ("chip", 9))) is None
    assert SIM.label_of(CpuFmri(cpuid=99)) is None


def test_sim_label_of_ignores_authority() -> None:
    """label_of matches an hc FMRI by its path, whatever its authority."""
    assert SIM.label_of(hc_fmri({"product-id": "x"}, ("motherboard", 0), ("chip", 0))) == "CPU 0"


# ---- FilePlatform: the example ---------------------------------------------


def test_example_file_loads() -> None:
    """etc/fmd/topology.toml describes 2 chips, 8 CPUs and 4 dual-rank DIMMs."""
    plat = FilePlatform(EXAMPLE, hostname="h1")
    assert plat.authority == (
        ("product-id", "Example-1U-Server"), ("chassis-id", "EX0001234"), ("server-id", "h1"),
    )  # fmt: skip
    nodes = plat.nodes()
    assert tuple(len(by_name(nodes, n)) for n in ("chip", "core", "strand", "dimm", "rank")) == (
        2,
        4,
        8,
        4,
        8,
    )
    assert [n.label for n in by_name(nodes, "dimm")] == [
        "P1-DIMMA1",
        "P1-DIMMB1",
        "P2-DIMMA1",
        "P2-DIMMB1",
    ]
    assert [n.serial for n in by_name(nodes, "dimm")] == ["S0A1", "S0B1", "S1A1", "S1B1"]
    assert by_name(nodes, "chip")[0].serial == "PPIN-0A1B2C3D"


def test_example_file_cpus() -> None:
    """The example numbers CPUs as Linux does and maps APIC ids to them."""
    plat = FilePlatform(EXAMPLE, hostname="h1")
    assert path(plat.cpu_to_hc(4)) == "motherboard=0/chip=0/core=0/strand=1"
    assert path(plat.cpu_to_hc(3)) == "motherboard=0/chip=1/core=1/strand=0"
    assert plat.apic_to_cpu(17) == 6
    assert plat.chip_of_cpu(7) == 1
    assert plat.label_of(CpuFmri(cpuid=7)) == "CPU 1"


@pytest.mark.parametrize(
    ("pa", "expected"),
    [
        (0x0, "chip=0/memory-controller=0/dram-channel=0/dimm=0/rank=0"),
        (0x1000, "chip=0/memory-controller=0/dram-channel=1/dimm=0/rank=0"),
        (0x4_0000_2000, "chip=1/memory-controller=0/dram-channel=0/dimm=0/rank=1"),
        (0x7_FFFF_FFFF, "chip=1/memory-controller=0/dram-channel=1/dimm=0/rank=1"),
        (0x8_0000_0000, None),
    ],
)
def test_example_file_decode(pa: int, expected: str | None) -> None:
    """The example decodes by range for the chip and by bits for channel and rank."""
    rank = FilePlatform(EXAMPLE, hostname="h1").decode_address(pa)
    assert expected == (None if rank is None else path(rank).removeprefix("motherboard=0/"))


def test_file_server_id_and_no_decode(tmp_path: Path) -> None:
    """server-id may be given; without [decode] no address decodes."""
    f = tmp_path / "t.toml"
    f.write_text(
        '[authority]\nproduct-id = "p"\nchassis-id = "c"\nserver-id = "s:1"\n'
        "[[chip]]\nid = 3\n[[chip.core]]\nid = 0\ncpuids = [7]\n"
        '[[chip.dimm]]\nchannel = 0\ndimm = 0\nlabel = "D"\n'
    )
    plat = FilePlatform(f)
    assert plat.authority[2] == ("server-id", "s-1")
    assert plat.decode_address(0) is None
    assert plat.apic_to_cpu(7) == 7
    assert path(plat.cpu_to_hc(7)) == "motherboard=0/chip=3/core=0/strand=0"


# ---- FilePlatform: errors ---------------------------------------------------

GOOD_HEAD = '[authority]\nproduct-id = "p"\nchassis-id = "c"\n'
GOOD_CHIP = "[[chip]]\nid = 0\n[[chip.core]]\nid = 0\ncpuids = [0, 1]\n"
GOOD_DIMM = "[[chip.dimm]]\nchannel = 0\ndimm = 0\nranks = 2\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[authority\n", "not valid TOML"),
        (GOOD_CHIP, r"authority: must be a table"),
        ('[authority]\nproduct-id = "p"\n' + GOOD_CHIP, r"authority\.chassis-id: is required"),
        ('colour = "red"\n' + GOOD_HEAD + GOOD_CHIP, r": colour: unknown key"),
        (GOOD_HEAD + 'colour = "red"\n' + GOOD_CHIP, r"authority\.colour: unknown key"),
        ("chip = 3\n" + GOOD_HEAD, r": chip: must be an array of tables"),
        (GOOD_HEAD, r"chip: at least one \[\[chip\]\] is required"),
        (GOOD_HEAD + "[[chip]]\nlabel = 'x'\n", r"chip\[0\]\.id: is required"),
        (GOOD_HEAD + "[[chip]]\nid = -1\n", r"chip\[0\]\.id: must be a non-negative integer"),
        (GOOD_HEAD + "[[chip]]\nid = 0\nlabel = 3\n", r"chip\[0\]\.label: must be a non-empty"),
        (GOOD_HEAD + GOOD_CHIP + GOOD_CHIP, r"chip\[1\]\.id: chip 0 is also chip\[0\]"),
        (
            GOOD_HEAD + GOOD_CHIP + "[[chip.core]]\nid = 1\ncpuids = [1]\n",
            r"chip\[0\]\.core\[1\]\.cpuids: 1 is also in chip\[0\]\.core\[0\]",
        ),
        (
            GOOD_HEAD + "[[chip]]\nid = 0\n[[chip.core]]\nid = 0\ncpuids = [0]\napicids = [1, 2]\n",
            r"chip\[0\]\.core\[0\]\.apicids: has 2 entries but cpuids has 1",
        ),
        (
            GOOD_HEAD + "[[chip]]\nid = 0\n[[chip.core]]\nid = 0\ncpuids = []\n",
            r"chip\[0\]\.core\[0\]\.cpuids: a core needs at least one strand",
        ),
        (
            GOOD_HEAD + GOOD_CHIP + GOOD_DIMM + GOOD_DIMM,
            r"chip\[0\]\.dimm\[1\]: memory-controller/channel/dimm \(0, 0, 0\) is also",
        ),
        (
            GOOD_HEAD + GOOD_CHIP + "[[chip.dimm]]\nchannel = 0\ndimm = 0\nranks = 0\n",
            r"chip\[0\]\.dimm\[0\]\.ranks: a DIMM needs at least one rank",
        ),
        (
            GOOD_HEAD + GOOD_CHIP + GOOD_DIMM + "[decode.bits]\nchip = [64]\n",
            r"decode\.bits\.chip: bit numbers must be below 64",
        ),
        (
            GOOD_HEAD + GOOD_CHIP + GOOD_DIMM + "[decode.bits]\nrow = [1]\n",
            r"decode\.bits\.row: unknown key",
        ),
        (
            GOOD_HEAD + GOOD_CHIP + GOOD_DIMM + "[[decode.range]]\nstart = 10\nend = 5\n",
            r"decode\.range\[0\]\.end: 0x5 is below start 0xa",
        ),
        (
            GOOD_HEAD + GOOD_CHIP + GOOD_DIMM + "[[decode.range]]\nstart = 0\nend = 5\nchip = 1\n",
            r"decode\.range\[0\]: no DIMM rank matches \{'chip': 1\}",
        ),
        (
            GOOD_HEAD
            + GOOD_CHIP
            + GOOD_DIMM
            + "[[decode.range]]\nstart = 0\nend = 9\n[[decode.range]]\nstart = 9\nend = 20\n",
            r"decode\.range\[1\]: overlaps decode\.range\[0\] \(0x0-0x9\)",
        ),
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    """A bad topology file raises ConfigError naming the file, the key and the problem."""
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        FilePlatform(f)
    assert str(f) in str(info.value)


def test_file_missing(tmp_path: Path) -> None:
    """A missing topology file raises ConfigError saying it cannot be read."""
    with pytest.raises(ConfigError, match="cannot read"):
        FilePlatform(tmp_path / "none.toml")


# ---- LinuxPlatform ----------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_sysfs(root: Path, *, apic: bool = True) -> Path:
    """2 packages x 2 cores x 2 threads (cpu N and N+4 are siblings), EDAC, DMI."""
    sysfs = root / "sys"
    lines = []
    for cpu in range(8):
        pkg, core = (cpu % 4) // 2, cpu % 2
        topo = sysfs / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        write(topo / "physical_package_id", str(pkg))
        write(topo / "core_id", str(core))
        lines += [f"processor\t: {cpu}", f"apicid\t\t: {pkg * 16 + core * 2 + cpu // 4}", ""]
    write(sysfs / "devices" / "system" / "cpu" / "online", "0-7")
    (sysfs / "devices" / "system" / "cpu" / "cpufreq").mkdir()
    if apic:
        write(root / "proc" / "cpuinfo", "\n".join(lines))
    mc = sysfs / "devices" / "system" / "edac" / "mc"
    for m in range(2):
        write(mc / f"mc{m}" / "mc_name", "Fake EDAC")
        for d, (loc, label, size) in enumerate(
            [
                ("channel 0 slot 0", f"P{m + 1}-DIMMA1", "16384"),
                ("channel 1 slot 0", f"P{m + 1}-DIMMB1", "16384"),
                ("channel 1 slot 1", "", "16384"),
                ("channel 0 slot 1", "P-EMPTY", "0"),
            ]
        ):
            write(mc / f"mc{m}" / f"dimm{d}" / "dimm_location", loc)
            write(mc / f"mc{m}" / f"dimm{d}" / "dimm_label", label)
            write(mc / f"mc{m}" / f"dimm{d}" / "size", size)
    dmi = sysfs / "class" / "dmi" / "id"
    write(dmi / "product_name", "PowerEdge R640")
    write(dmi / "product_serial", "PSN1")
    write(dmi / "chassis_serial", "CSN/2")
    return sysfs


def test_linux_cpus(tmp_path: Path) -> None:
    """CPUs group by package and core; strands are numbered by cpuid within a core."""
    plat = LinuxPlatform(fake_sysfs(tmp_path), hostname="node1")
    nodes = plat.nodes()
    assert tuple(len(by_name(nodes, n)) for n in ("chip", "core", "strand")) == (2, 4, 8)
    assert path(plat.cpu_to_hc(0)) == "motherboard=0/chip=0/core=0/strand=0"
    assert path(plat.cpu_to_hc(4)) == "motherboard=0/chip=0/core=0/strand=1"
    assert path(plat.cpu_to_hc(7)) == "motherboard=0/chip=1/core=1/strand=1"
    assert plat.chip_of_cpu(2) == 1
    assert [n.label for n in by_name(nodes, "chip")] == ["CPU 0", "CPU 1"]


def test_linux_apicids(tmp_path: Path) -> None:
    """APIC ids come from cpuinfo when present, else equal the cpuid."""
    plat = LinuxPlatform(fake_sysfs(tmp_path), hostname="n")
    assert plat.apic_to_cpu(19) == 7
    assert plat.apic_to_cpu(1) == 4
    bare = LinuxPlatform(fake_sysfs(tmp_path / "b", apic=False), hostname="n")
    assert bare.apic_to_cpu(5) == 5


def test_linux_edac_dimms(tmp_path: Path) -> None:
    """EDAC DIMMs are placed by dimm_location, labelled, and empty slots left out."""
    plat = LinuxPlatform(fake_sysfs(tmp_path), hostname="n")
    dimms = by_name(plat.nodes(), "dimm")
    assert [(n.path.removeprefix("motherboard=0/"), n.label) for n in dimms] == [
        ("chip=0/memory-controller=0/dram-channel=0/dimm=0", "P1-DIMMA1"),
        ("chip=0/memory-controller=0/dram-channel=1/dimm=0", "P1-DIMMB1"),
        ("chip=0/memory-controller=0/dram-channel=1/dimm=1", "MC0 channel 1 slot 1"),
        ("chip=1/memory-controller=1/dram-channel=0/dimm=0", "P2-DIMMA1"),
        ("chip=1/memory-controller=1/dram-channel=1/dimm=0", "P2-DIMMB1"),
        ("chip=1/memory-controller=1/dram-channel=1/dimm=1", "MC1 channel 1 slot 1"),
    ]
    assert [path(f) for f in plat.find_by_label("P2-DIMMA1")] == [
        "motherboard=0/chip=1/memory-controller=1/dram-channel=0/dimm=0"
    ]
    assert len(by_name(plat.nodes(), "rank")) == 6


def test_linux_legacy_csrows(tmp_path: Path) -> None:
    """Without dimmY directories, csrowY/chZ_dimm_label name the DIMMs."""
    sysfs = tmp_path / "sys"
    write(sysfs / "devices/system/cpu/cpu0/topology/physical_package_id", "0")
    write(sysfs / "devices/system/cpu/cpu0/topology/core_id", "0")
    csrow = sysfs / "devices/system/edac/mc/mc0/csrow1"
    write(csrow / "size_mb", "4096")
    write(csrow / "ch0_dimm_label", "DIMM_A0")
    write(csrow / "ch1_dimm_label", "")
    plat = LinuxPlatform(sysfs, hostname="n")
    assert [
        (n.path.removeprefix("motherboard=0/"), n.label) for n in by_name(plat.nodes(), "dimm")
    ] == [
        ("chip=0/memory-controller=0/dram-channel=0/dimm=1", "DIMM_A0"),
        ("chip=0/memory-controller=0/dram-channel=1/dimm=1", "MC0 csrow 1 channel 1"),
    ]


def test_linux_identity_and_no_decode(tmp_path: Path) -> None:
    """DMI gives product-id and chassis-id (sanitised); addresses never decode."""
    plat = LinuxPlatform(fake_sysfs(tmp_path), hostname="node 1")
    assert plat.authority == (
        ("product-id", "PowerEdge-R640"), ("chassis-id", "CSN-2"), ("server-id", "node-1"),
    )  # fmt: skip
    assert plat.decode_address(0x1000) is None


def test_linux_chassis_falls_back(tmp_path: Path) -> None:
    """Without chassis_serial the product serial is the chassis-id; without DMI, unknown."""
    sysfs = fake_sysfs(tmp_path)
    (sysfs / "class/dmi/id/chassis_serial").unlink()
    assert LinuxPlatform(sysfs, hostname="n").authority[1] == ("chassis-id", "PSN1")
    (sysfs / "class/dmi/id/product_serial").unlink()
    (sysfs / "class/dmi/id/product_name").unlink()
    assert LinuxPlatform(sysfs, hostname="n").authority[:2] == (
        ("product-id", "unknown"),
        ("chassis-id", "unknown"),
    )


def test_linux_no_cpus(tmp_path: Path) -> None:
    """A sysfs root with no CPU topology raises ConfigError naming the directory."""
    with pytest.raises(ConfigError, match="no CPU topology under"):
        LinuxPlatform(tmp_path / "sys")


# ---- choose_platform ----------------------------------------------------------


def test_choose_file_when_it_exists(tmp_path: Path) -> None:
    """By default the topology file wins when it exists."""
    plat = choose_platform("", topology_file=EXAMPLE, sysfs_root=fake_sysfs(tmp_path), is_root=True)
    assert isinstance(plat, FilePlatform)


def test_choose_linux_as_root(tmp_path: Path) -> None:
    """Without a file, root on Linux gets the Linux platform, others the sim."""
    missing = tmp_path / "none.toml"
    sysfs = fake_sysfs(tmp_path)
    as_root = choose_platform("auto", topology_file=missing, sysfs_root=sysfs, is_root=True)
    expected = LinuxPlatform if sys.platform.startswith("linux") else SimPlatform
    assert isinstance(as_root, expected)
    as_user = choose_platform("", topology_file=missing, sysfs_root=sysfs, is_root=False)
    assert isinstance(as_user, SimPlatform)


def test_choose_explicit(tmp_path: Path) -> None:
    """An explicit name is obeyed whatever exists."""
    sysfs = fake_sysfs(tmp_path)
    for name, expected in (("sim", SimPlatform), ("linux", LinuxPlatform), ("FILE", FilePlatform)):
        plat = choose_platform(name, topology_file=EXAMPLE, sysfs_root=sysfs, is_root=False)
        assert isinstance(plat, expected)


def test_choose_errors(tmp_path: Path) -> None:
    """An unknown name, or file with no file, raises ConfigError."""
    with pytest.raises(ConfigError, match="unknown topology platform 'solaris'"):
        choose_platform("solaris", topology_file=EXAMPLE, sysfs_root=tmp_path, is_root=False)
    with pytest.raises(ConfigError, match="cannot read"):
        choose_platform(
            "file", topology_file=tmp_path / "none.toml", sysfs_root=tmp_path, is_root=False
        )
