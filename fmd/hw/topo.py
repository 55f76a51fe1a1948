"""Topology and FRU labels: the hc tree of this machine and the questions asked of it.

A :class:`Platform` names the hardware the way illumos libtopo does: an
authority (product-id, chassis-id, server-id) and an hc tree::

    motherboard=0
      chip=C                         FRU, label "CPU C"
        core=K
          strand=S                   ASRU cpu:///cpuid=N
        memory-controller=M
          dram-channel=H
            dimm=D                   FRU, label "CPU C DIMM n"; ASRU mem:///unum=<path>
              rank=R                 ASRU mem:///unum=<path>

Every node is a :class:`TopoNode` carrying its FMRI, ASRU, FRU, FRU label and
serial.  A core, memory controller or channel has the chip as its FRU; a rank
has its DIMM.  The mem-scheme unum is the node's hc path without authority
(``motherboard=0/chip=0/.../rank=1``), as on illumos x86.

Four platforms build the tree, and :func:`choose_platform` picks one:

``SimPlatform``    a fixed four-chip machine for tests and demonstrations.
``FilePlatform``   a TOML description (``etc/fmd/topology.toml``, schema below).
``LinuxPlatform``  discovered from sysfs: CPUs, EDAC memory controllers, DMI.
``XenPlatform``    a Xen dom0's view: the hypervisor's physical CPUs (xenpm), DMI.

The platforms share :class:`TreePlatform`, which is given chip descriptions and
an address decoder and answers every lookup from indexes built once.

TOML schema (``FilePlatform``)
------------------------------
::

    [authority]                  product-id, chassis-id (strings, required);
                                 server-id (optional, default the host name)
    [[chip]]                     id (int), label, serial (optional strings)
    [[chip.core]]                id (int), cpuids = [int, ...] (strand i has cpuids[i]),
                                 apicids = [int, ...] (optional, default the cpuids)
    [[chip.dimm]]                memory-controller (default 0), channel, dimm (ints),
                                 label, serial (optional), ranks (default 1)
    [decode.bits]                chip, memory-controller, channel, dimm, rank:
                                 lists of physical-address bit numbers, least
                                 significant first; a coordinate not listed is 0
    [[decode.range]]             start, end (inclusive), and any of chip,
                                 memory-controller, channel, dimm, rank; the
                                 coordinates a range leaves out come from the bits

With ranges, an address outside every range decodes to nothing; without
ranges the bits decode every address.  An address whose decoded rank is not
in the tree decodes to nothing.  Unknown keys, wrong types, duplicate ids,
cpuids or DIMM positions, ranges that overlap or name a missing rank raise
:class:`~fmd.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import itertools
import re
import socket
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol

from fmd.errors import ConfigError, TopoLookupError
from fmd.hw.virt import BARE_METAL, ROLE_DOM0, Virtualization
from fmd.hw.virt import detect as detect_virtualization
from fmd.hw.xen import XENPM, XenCpu, read_cpu_topology
from fmd.protocol.fmri import CpuFmri, Fmri, HcFmri, MemFmri, Pairs, hc_fmri, sanitize_authority

__all__ = [
    "PLATFORMS",
    "AddressDecoder",
    "AddressRange",
    "ChipSpec",
    "CoreSpec",
    "DimmSpec",
    "FilePlatform",
    "LinuxPlatform",
    "MemPos",
    "Platform",
    "SimPlatform",
    "TopoLookupError",
    "TopoNode",
    "TreePlatform",
    "XenPlatform",
    "choose_platform",
]

#: A memory position: (chip, memory-controller, dram-channel, dimm, rank).
MemPos = tuple[int, int, int, int, int]
_COORDS: Final[tuple[str, ...]] = ("chip", "memory-controller", "channel", "dimm", "rank")


@dataclass(frozen=True)
class TopoNode:
    """One node of the hc tree with its ASRU, FRU, FRU label and serial."""

    fmri: HcFmri
    asru: CpuFmri | MemFmri | None
    fru: HcFmri
    label: str | None
    serial: str | None = None

    @property
    def path(self) -> str:
        """The hc path without authority, e.g. ``motherboard=0/chip=1``."""
        return _path_of(self.fmri.hc_list)


class Platform(Protocol):
    """What the rest of fmd asks about the hardware; every platform implements it."""

    @property
    def authority(self) -> Pairs:
        """(name, value) pairs in order: product-id, chassis-id, server-id."""
        ...

    def nodes(self) -> Sequence[TopoNode]:
        """Every node in tree order (depth first), as fmtopo prints them."""
        ...

    def cpu_to_hc(self, cpuid: int) -> HcFmri:
        """The strand node of a logical cpuid; :class:`TopoLookupError` if unknown."""
        ...

    def apic_to_cpu(self, apicid: int) -> int:
        """The logical cpuid of an APIC id; :class:`TopoLookupError` if unknown."""
        ...

    def chip_of_cpu(self, cpuid: int) -> int:
        """The chip (socket) instance of a logical cpuid; :class:`TopoLookupError` if unknown."""
        ...

    def decode_address(self, physaddr: int) -> HcFmri | None:
        """The rank node holding a physical address, or None when it cannot be told."""
        ...

    def label_of(self, fmri: Fmri) -> str | None:
        """The FRU label of the node an hc, cpu or mem FMRI names, or None."""
        ...

    def find_by_label(self, label: str) -> list[HcFmri]:
        """The FRU nodes (chips, DIMMs) whose label matches, ignoring case and spacing."""
        ...

    @property
    def virtualization(self) -> Virtualization:
        """Whether this host is bare metal, a virtual machine or a Xen dom0."""
        ...


# ---- platform descriptions --------------------------------------------------


@dataclass(frozen=True)
class CoreSpec:
    """A core: its instance and its strands' (cpuid, apicid) in strand order."""

    core: int
    strands: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DimmSpec:
    """A DIMM at (memory-controller, channel, dimm) of its chip, with ``ranks`` ranks."""

    mc: int
    channel: int
    dimm: int
    label: str | None = None
    serial: str | None = None
    ranks: int = 1


@dataclass(frozen=True)
class ChipSpec:
    """A chip (socket): instance, FRU label, serial, cores and the DIMMs behind it."""

    chip: int
    label: str | None
    cores: tuple[CoreSpec, ...]
    dimms: tuple[DimmSpec, ...] = ()
    serial: str | None = None


@dataclass(frozen=True)
class AddressRange:
    """Physical addresses ``start``..``end`` (inclusive) and the coordinates they fix."""

    start: int
    end: int
    fixed: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class AddressDecoder:
    """Decodes a physical address to a :data:`MemPos` by ranges, then bit positions.

    ``bits`` maps a coordinate name (see ``_COORDS``) to the address bits that
    form it, least significant first.  With ranges, an address outside them
    decodes to None; a range's fixed coordinates override the bits.
    """

    bits: tuple[tuple[str, tuple[int, ...]], ...] = ()
    ranges: tuple[AddressRange, ...] = ()

    def decode(self, physaddr: int) -> MemPos | None:
        """The position of ``physaddr``, or None when no range covers it."""
        coords = {name: _gather(physaddr, bits) for name, bits in self.bits}
        if self.ranges:
            for rng in self.ranges:
                if rng.start <= physaddr <= rng.end:
                    coords.update(rng.fixed)
                    break
            else:
                return None
        chip, mc, channel, dimm, rank = (coords.get(name, 0) for name in _COORDS)
        return chip, mc, channel, dimm, rank


def _gather(value: int, bits: Iterable[int]) -> int:
    return sum(((value >> bit) & 1) << i for i, bit in enumerate(bits))


def _path_of(hc_list: Pairs) -> str:
    return "/".join(f"{name}={inst}" for name, inst in hc_list)


def _label_key(label: str) -> str:
    return " ".join(label.split()).casefold()


def _authority(product: str, chassis: str, server: str) -> Pairs:
    return (
        ("product-id", sanitize_authority(product)),
        ("chassis-id", sanitize_authority(chassis)),
        ("server-id", sanitize_authority(server)),
    )


# ---- the shared implementation ----------------------------------------------


@dataclass
class _Index:
    nodes: list[TopoNode] = field(default_factory=list)
    by_path: dict[Pairs, TopoNode] = field(default_factory=dict)
    strand: dict[int, TopoNode] = field(default_factory=dict)
    apic: dict[int, int] = field(default_factory=dict)
    chip_of: dict[int, int] = field(default_factory=dict)
    rank: dict[MemPos, HcFmri] = field(default_factory=dict)

    def add(self, node: TopoNode) -> None:
        self.nodes.append(node)
        self.by_path[node.fmri.hc_list] = node


class TreePlatform:
    """A platform given as chip descriptions and an optional address decoder.

    Raises ``ValueError`` on duplicate chips, cores, DIMM positions, cpuids or
    APIC ids (callers reading files check first and report better).
    """

    def __init__(
        self, authority: Pairs, chips: Sequence[ChipSpec], decoder: AddressDecoder | None = None
    ) -> None:
        self._authority = authority
        self._decoder = decoder
        self._ix = _Index()
        self._build(chips)

    @property
    def authority(self) -> Pairs:
        """(name, value) pairs in order: product-id, chassis-id, server-id."""
        return self._authority

    @property
    def virtualization(self) -> Virtualization:
        """A described platform is taken as bare metal; :class:`LinuxPlatform` detects."""
        return BARE_METAL

    def _hc(self, *pairs: tuple[str, int]) -> HcFmri:
        return hc_fmri(self._authority, *pairs)

    def _build(self, chips: Sequence[ChipSpec]) -> None:
        ix = self._ix
        mb = self._hc(("motherboard", 0))
        ix.add(TopoNode(mb, None, mb, None))
        seen_chips: set[int] = set()
        for chip in sorted(chips, key=lambda c: c.chip):
            if chip.chip in seen_chips:
                raise ValueError(f"chip {chip.chip} appears twice")
            seen_chips.add(chip.chip)
            self._build_chip(chip)

    def _build_chip(self, chip: ChipSpec) -> None:
        ix = self._ix
        c = ("chip", chip.chip)
        base = (("motherboard", 0), c)
        chip_fmri = self._hc(*base)
        ix.add(TopoNode(chip_fmri, None, chip_fmri, chip.label, chip.serial))
        for core in sorted(chip.cores, key=lambda k: k.core):
            core_fmri = self._hc(*base, ("core", core.core))
            if core_fmri.hc_list in ix.by_path:
                raise ValueError(f"chip {chip.chip} core {core.core} appears twice")
            ix.add(TopoNode(core_fmri, None, chip_fmri, chip.label, chip.serial))
            for strand, (cpuid, apicid) in enumerate(core.strands):
                if cpuid in ix.strand or apicid in ix.apic:
                    raise ValueError(f"cpuid {cpuid} or APIC id {apicid} appears twice")
                fmri = self._hc(*base, ("core", core.core), ("strand", strand))
                node = TopoNode(fmri, CpuFmri(cpuid=cpuid), chip_fmri, chip.label, chip.serial)
                ix.add(node)
                ix.strand[cpuid] = node
                ix.apic[apicid] = cpuid
                ix.chip_of[cpuid] = chip.chip
        for dimm in sorted(chip.dimms, key=lambda d: (d.mc, d.channel, d.dimm)):
            mc = ("memory-controller", dimm.mc)
            ch = ("dram-channel", dimm.channel)
            for pairs in ((*base, mc), (*base, mc, ch)):
                fmri = self._hc(*pairs)
                if fmri.hc_list not in ix.by_path:
                    ix.add(TopoNode(fmri, None, chip_fmri, chip.label, chip.serial))
            dimm_fmri = self._hc(*base, mc, ch, ("dimm", dimm.dimm))
            if dimm_fmri.hc_list in ix.by_path:
                raise ValueError(f"chip {chip.chip} {_path_of(dimm_fmri.hc_list)} appears twice")
            asru = MemFmri(unum=_path_of(dimm_fmri.hc_list), serial=dimm.serial)
            ix.add(TopoNode(dimm_fmri, asru, dimm_fmri, dimm.label, dimm.serial))
            for rank in range(dimm.ranks):
                fmri = self._hc(*base, mc, ch, ("dimm", dimm.dimm), ("rank", rank))
                asru = MemFmri(unum=_path_of(fmri.hc_list), serial=dimm.serial)
                ix.add(TopoNode(fmri, asru, dimm_fmri, dimm.label, dimm.serial))
                ix.rank[(chip.chip, dimm.mc, dimm.channel, dimm.dimm, rank)] = fmri

    def nodes(self) -> Sequence[TopoNode]:
        """Every node in tree order (depth first), as fmtopo prints them."""
        return tuple(self._ix.nodes)

    def node(self, fmri: HcFmri) -> TopoNode | None:
        """The node with the same hc path as ``fmri`` (authority and serial ignored)."""
        return self._ix.by_path.get(fmri.hc_list)

    def cpu_to_hc(self, cpuid: int) -> HcFmri:
        """The strand node of a logical cpuid; :class:`TopoLookupError` if unknown."""
        try:
            return self._ix.strand[cpuid].fmri
        except KeyError:
            raise TopoLookupError(f"cpuid {cpuid} is not in the topology") from None

    def apic_to_cpu(self, apicid: int) -> int:
        """The logical cpuid of an APIC id; :class:`TopoLookupError` if unknown."""
        try:
            return self._ix.apic[apicid]
        except KeyError:
            raise TopoLookupError(f"APIC id {apicid} is not in the topology") from None

    def chip_of_cpu(self, cpuid: int) -> int:
        """The chip (socket) instance of a logical cpuid; :class:`TopoLookupError` if unknown."""
        try:
            return self._ix.chip_of[cpuid]
        except KeyError:
            raise TopoLookupError(f"cpuid {cpuid} is not in the topology") from None

    def decode_address(self, physaddr: int) -> HcFmri | None:
        """The rank node holding a physical address, or None when it cannot be told."""
        if self._decoder is None or physaddr < 0:
            return None
        pos = self._decoder.decode(physaddr)
        return None if pos is None else self._ix.rank.get(pos)

    def label_of(self, fmri: Fmri) -> str | None:
        """The FRU label of the node an hc, cpu or mem FMRI names, or None.

        A mem FMRI's unum is looked up as an hc path, else taken as a label.
        """
        if isinstance(fmri, HcFmri):
            node = self._ix.by_path.get(fmri.hc_list)
            return None if node is None else node.label
        if isinstance(fmri, CpuFmri):
            strand = self._ix.strand.get(fmri.cpuid)
            return None if strand is None else strand.label
        if isinstance(fmri, MemFmri):
            for node in self._ix.nodes:
                if node.path == fmri.unum:
                    return node.label
            return fmri.unum if self.find_by_label(fmri.unum) else None
        return None

    def find_by_label(self, label: str) -> list[HcFmri]:
        """The FRU nodes (chips, DIMMs) whose label matches, ignoring case and spacing."""
        key = _label_key(label)
        return [
            n.fmri
            for n in self._ix.nodes
            if n.fru == n.fmri and n.label is not None and _label_key(n.label) == key
        ]


# ---- the simulated machine --------------------------------------------------

_SIM_DECODER: Final = AddressDecoder(
    bits=(("chip", (34, 35)), ("channel", (12,)), ("dimm", (13,)), ("rank", (14,)))
)


class SimPlatform(TreePlatform):
    """Four chips of 2 cores x 2 strands, and 8 dual-rank DIMMs per chip.

    cpuid = chip*4 + core*2 + strand and the APIC id equals the cpuid.  Chip
    labels are ``CPU c``; DIMM (channel h, dimm d) is labelled ``CPU c DIMM n``
    with n = h*2 + d and has serial ``SIM-c-n``.  Addresses decode as
    chip = pa[35:34], channel = pa[12], dimm = pa[13], rank = pa[14].
    """

    def __init__(self, hostname: str | None = None) -> None:
        chips = []
        for c in range(4):
            cores = tuple(
                CoreSpec(k, tuple((c * 4 + k * 2 + s, c * 4 + k * 2 + s) for s in range(2)))
                for k in range(2)
            )
            dimms = tuple(
                DimmSpec(0, h, d, f"CPU {c} DIMM {h * 2 + d}", f"SIM-{c}-{h * 2 + d}", ranks=2)
                for h in range(2)
                for d in range(2)
            )
            chips.append(ChipSpec(c, f"CPU {c}", cores, dimms))
        host = hostname if hostname is not None else socket.gethostname()
        super().__init__(_authority("fmd-sim", "SIM0001", host), chips, _SIM_DECODER)


# ---- a machine described in TOML ---------------------------------------------


class _Reader:
    """Typed access to parsed TOML with errors naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, what: str) -> NoReturn:
        raise ConfigError(f"topology file {self.path}: {key}: {what}")

    def table(self, value: object, key: str, allowed: Iterable[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, not {type(value).__name__}")
        names = set(allowed)
        for name in value:
            if name not in names:
                where = f"{key}.{name}" if key else name
                self.fail(where, f"unknown key; expected one of {', '.join(sorted(names))}")
        return value

    def tables(self, tbl: Mapping[str, Any], key: str, where: str) -> list[Any]:
        value = tbl.get(key, [])
        if not isinstance(value, list):
            self.fail(f"{where}.{key}" if where else key, "must be an array of tables ([[...]])")
        return value

    def int_(self, tbl: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
        value = tbl.get(key, default)
        if value is None:
            self.fail(f"{where}.{key}", "is required")
        if type(value) is not int or value < 0:
            self.fail(f"{where}.{key}", f"must be a non-negative integer, not {value!r}")
        return value

    def ints(
        self, tbl: Mapping[str, Any], key: str, where: str, limit: int | None = None
    ) -> list[int]:
        value = tbl.get(key)
        if not isinstance(value, list) or not all(type(v) is int and v >= 0 for v in value):
            self.fail(f"{where}.{key}", f"must be a list of non-negative integers, not {value!r}")
        if limit is not None and any(v >= limit for v in value):
            self.fail(f"{where}.{key}", f"bit numbers must be below {limit}, not {value!r}")
        return list(value)

    def str_(
        self, tbl: Mapping[str, Any], key: str, where: str, required: bool = False
    ) -> str | None:
        value = tbl.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(
                f"{where}.{key}",
                "is required" if value is None else f"must be a non-empty string, not {value!r}",
            )
        return value


class FilePlatform(TreePlatform):
    """A machine described by a TOML file (schema in the module docstring)."""

    def __init__(self, path: Path | str, hostname: str | None = None) -> None:
        self.path = Path(path)
        rd = _Reader(self.path)
        try:
            with self.path.open("rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"topology file {self.path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"topology file {self.path}: not valid TOML: {exc}") from None
        rd.table(doc, "", ("authority", "chip", "decode"))
        auth = rd.table(
            doc.get("authority"), "authority", ("product-id", "chassis-id", "server-id")
        )
        product = rd.str_(auth, "product-id", "authority", required=True)
        chassis = rd.str_(auth, "chassis-id", "authority", required=True)
        server = rd.str_(auth, "server-id", "authority") or (
            hostname if hostname is not None else socket.gethostname()
        )
        assert product is not None and chassis is not None
        chips = self._chips(rd, doc)
        decoder = self._read_decoder(rd, doc, chips)
        super().__init__(_authority(product, chassis, server), chips, decoder)

    @staticmethod
    def _chips(rd: _Reader, doc: Mapping[str, Any]) -> list[ChipSpec]:
        chips: list[ChipSpec] = []
        cpu_seen: dict[int, str] = {}
        apic_seen: dict[int, str] = {}
        chip_seen: dict[int, str] = {}
        chip_tables = rd.tables(doc, "chip", "")
        if not chip_tables:
            rd.fail("chip", "at least one [[chip]] is required")
        for i, raw in enumerate(chip_tables):
            where = f"chip[{i}]"
            tbl = rd.table(raw, where, ("id", "label", "serial", "core", "dimm"))
            cid = rd.int_(tbl, "id", where)
            if cid in chip_seen:
                rd.fail(f"{where}.id", f"chip {cid} is also {chip_seen[cid]}")
            chip_seen[cid] = where
            cores: list[CoreSpec] = []
            core_seen: dict[int, str] = {}
            for j, craw in enumerate(rd.tables(tbl, "core", where)):
                cwhere = f"{where}.core[{j}]"
                ctbl = rd.table(craw, cwhere, ("id", "cpuids", "apicids"))
                kid = rd.int_(ctbl, "id", cwhere)
                if kid in core_seen:
                    rd.fail(f"{cwhere}.id", f"core {kid} is also {core_seen[kid]}")
                core_seen[kid] = cwhere
                cpuids = rd.ints(ctbl, "cpuids", cwhere)
                if not cpuids:
                    rd.fail(f"{cwhere}.cpuids", "a core needs at least one strand")
                apicids = rd.ints(ctbl, "apicids", cwhere) if "apicids" in ctbl else cpuids
                if len(apicids) != len(cpuids):
                    rd.fail(
                        f"{cwhere}.apicids",
                        f"has {len(apicids)} entries but cpuids has {len(cpuids)}",
                    )
                for seen, ids, name in (
                    (cpu_seen, cpuids, "cpuids"),
                    (apic_seen, apicids, "apicids"),
                ):
                    for n in ids:
                        if n in seen:
                            rd.fail(f"{cwhere}.{name}", f"{n} is also in {seen[n]}")
                        seen[n] = cwhere
                cores.append(CoreSpec(kid, tuple(zip(cpuids, apicids, strict=True))))
            dimms: list[DimmSpec] = []
            pos_seen: dict[tuple[int, int, int], str] = {}
            for j, draw in enumerate(rd.tables(tbl, "dimm", where)):
                dwhere = f"{where}.dimm[{j}]"
                dtbl = rd.table(
                    draw,
                    dwhere,
                    ("memory-controller", "channel", "dimm", "label", "serial", "ranks"),
                )
                pos = (
                    rd.int_(dtbl, "memory-controller", dwhere, 0),
                    rd.int_(dtbl, "channel", dwhere),
                    rd.int_(dtbl, "dimm", dwhere),
                )
                if pos in pos_seen:
                    rd.fail(dwhere, f"memory-controller/channel/dimm {pos} is also {pos_seen[pos]}")
                pos_seen[pos] = dwhere
                ranks = rd.int_(dtbl, "ranks", dwhere, 1)
                if ranks < 1:
                    rd.fail(f"{dwhere}.ranks", "a DIMM needs at least one rank")
                label = rd.str_(dtbl, "label", dwhere)
                dimms.append(DimmSpec(*pos, label, rd.str_(dtbl, "serial", dwhere), ranks))
            label = rd.str_(tbl, "label", where)
            chips.append(
                ChipSpec(cid, label, tuple(cores), tuple(dimms), rd.str_(tbl, "serial", where))
            )
        return chips

    @staticmethod
    def _read_decoder(
        rd: _Reader, doc: Mapping[str, Any], chips: Sequence[ChipSpec]
    ) -> AddressDecoder | None:
        if "decode" not in doc:
            return None
        dec = rd.table(doc["decode"], "decode", ("bits", "range"))
        bits: list[tuple[str, tuple[int, ...]]] = []
        if "bits" in dec:
            btbl = rd.table(dec["bits"], "decode.bits", _COORDS)
            bits = [(n, tuple(rd.ints(btbl, n, "decode.bits", 64))) for n in _COORDS if n in btbl]
        ranks = {
            (c.chip, d.mc, d.channel, d.dimm, r)
            for c in chips
            for d in c.dimms
            for r in range(d.ranks)
        }
        ranges: list[tuple[AddressRange, str]] = []
        for i, raw in enumerate(rd.tables(dec, "range", "decode")):
            where = f"decode.range[{i}]"
            tbl = rd.table(raw, where, ("start", "end", *_COORDS))
            start, end = rd.int_(tbl, "start", where), rd.int_(tbl, "end", where)
            if end < start:
                rd.fail(f"{where}.end", f"{end:#x} is below start {start:#x}")
            fixed = tuple((n, rd.int_(tbl, n, where)) for n in _COORDS if n in tbl)
            given: dict[str, int] = dict(fixed)
            if not any(
                all(given.get(n, p[k]) == p[k] for k, n in enumerate(_COORDS)) for p in ranks
            ):
                rd.fail(where, f"no DIMM rank matches {given}")
            ranges.append((AddressRange(start, end, fixed), where))
        ranges.sort(key=lambda r: r[0].start)
        for (a, aw), (b, bw) in itertools.pairwise(ranges):
            if b.start <= a.end:
                rd.fail(bw, f"overlaps {aw} ({a.start:#x}-{a.end:#x})")
        return AddressDecoder(tuple(bits), tuple(r for r, _ in ranges))


# ---- a Linux machine, from sysfs ---------------------------------------------

_CPU_DIR: Final = re.compile(r"cpu(\d+)")
_NUMBERED: Final = re.compile(r"([a-z]+)(\d+)")


def _read(path: Path) -> str | None:
    """The stripped contents of a sysfs file, or None when absent or unreadable."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return None if text is None else int(text, 0)
    except ValueError:
        return None


def _numbered(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    """Subdirectories ``<prefix>N`` of ``directory`` as (N, path), by N."""
    out = []
    if directory.is_dir():
        for entry in directory.iterdir():
            m = _NUMBERED.fullmatch(entry.name)
            if m and m.group(1) == prefix and entry.is_dir():
                out.append((int(m.group(2)), entry))
    return sorted(out)


def _cpuinfo_apicids(path: Path) -> dict[int, int]:
    """processor -> apicid from /proc/cpuinfo (x86 only; empty elsewhere)."""
    text = _read(path) or ""
    out: dict[int, int] = {}
    cpu: int | None = None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name == "processor" and value.isdigit():
            cpu = int(value)
        elif name == "apicid" and value.isdigit() and cpu is not None:
            out[cpu] = int(value)
    return out


class LinuxPlatform(TreePlatform):
    """The machine as Linux sysfs shows it.

    * CPUs: ``devices/system/cpu/cpuN/topology/{physical_package_id,core_id}``;
      strands are numbered by cpuid within a core; a CPU without topology
      (offline) is left out.  APIC ids come from ``cpuinfo`` (default
      ``<sysfs_root>/../proc/cpuinfo``), else equal the cpuid.
    * Memory: EDAC ``devices/system/edac/mc/mcX/dimmY`` (or ``rankY``) with
      ``dimm_location`` (``channel 0 slot 1``, ``csrow 2 channel 1``) and
      ``dimm_label``; legacy ``csrowY/chZ_dimm_label`` when there are none.
      EDAC does not say which socket a controller serves: the controllers are
      shared out over the chips in order (mcX goes to the X*chips//mcs'th
      chip); ``memory-controller`` keeps the EDAC number X.  DIMMs of size 0
      are empty slots and left out.  Without a label a DIMM is called
      ``MCX <dimm_location>``.  EDAC knows no serials or rank counts: one rank.
    * Identity: ``class/dmi/id/product_name``, ``chassis_serial`` (else
      ``product_serial``; both need root), server-id the host name.
    * Virtualization: :func:`fmd.hw.virt.detect` on the same procfs and sysfs
      (a guest's CPUs are virtual; a Xen dom0's are not the physical ones).
    * Address decode is not available from sysfs in general (it lives in the
      EDAC drivers), so :meth:`decode_address` always returns None.
    """

    def __init__(
        self,
        sysfs_root: Path | str = "/sys",
        *,
        cpuinfo: Path | str | None = None,
        hostname: str | None = None,
    ) -> None:
        self.sysfs_root = Path(sysfs_root)
        root = self.sysfs_root
        info = Path(cpuinfo) if cpuinfo is not None else root.parent / "proc" / "cpuinfo"
        chips = self._chips(root, _cpuinfo_apicids(info))
        dmi = root / "class" / "dmi" / "id"
        product = _read(dmi / "product_name") or "unknown"
        chassis = _read(dmi / "chassis_serial") or _read(dmi / "product_serial") or "unknown"
        host = hostname if hostname is not None else socket.gethostname()
        super().__init__(_authority(product, chassis, host), chips, None)
        self._virt = detect_virtualization(info.parent, root)

    @property
    def virtualization(self) -> Virtualization:
        """Detected from procfs and sysfs (:mod:`fmd.hw.virt`)."""
        return self._virt

    @staticmethod
    def _chips(root: Path, apicids: Mapping[int, int]) -> list[ChipSpec]:
        cpu_dir = root / "devices" / "system" / "cpu"
        cores: dict[tuple[int, int], list[int]] = {}
        if cpu_dir.is_dir():
            for entry in cpu_dir.iterdir():
                m = _CPU_DIR.fullmatch(entry.name)
                if not m:
                    continue
                pkg = _read_int(entry / "topology" / "physical_package_id")
                core = _read_int(entry / "topology" / "core_id")
                if pkg is None or core is None:
                    continue
                cores.setdefault((max(pkg, 0), max(core, 0)), []).append(int(m.group(1)))
        if not cores:
            raise ConfigError(
                f"no CPU topology under {cpu_dir}: is sysfs mounted there? "
                "Use the sim or file platform otherwise"
            )
        if len(set(apicids.values())) != len(apicids):
            apicids = {}  # duplicates (some hypervisors): not usable as a key
        packages = sorted({pkg for pkg, _ in cores})
        dimms = _edac_dimms(root / "devices" / "system" / "edac" / "mc", len(packages))
        return [
            ChipSpec(
                pkg,
                f"CPU {pkg}",
                tuple(
                    CoreSpec(core, tuple((c, apicids.get(c, c)) for c in sorted(cpus)))
                    for (p, core), cpus in sorted(cores.items())
                    if p == pkg
                ),
                tuple(dimms.get(n, ())),
            )
            for n, pkg in enumerate(packages)
        ]


class XenPlatform(TreePlatform):
    """A Xen host's physical machine, as its dom0 sees it.

    * CPUs: the hypervisor's physical CPUs (:func:`fmd.hw.xen.read_cpu_topology`,
      ``xenpm get-cpu-topology``), a socket a chip labelled ``CPU <socket>``, not
      dom0's virtual CPUs; APIC ids are taken equal to the CPU numbers (the
      telemetry Xen forwards names CPUs by number).  CPUs offline at start-up
      are not in the tree.
    * Memory: dom0 runs no EDAC driver for the machine's memory controllers:
      no DIMMs, and memory errors are diagnosed on their page.
    * Identity: DMI under ``sysfs_root`` as on the linux platform (dom0 reads
      the machine's own tables).
    """

    def __init__(
        self,
        cpus: Sequence[XenCpu],
        sysfs_root: Path | str = "/sys",
        *,
        proc_root: Path | str = "/proc",
        hostname: str | None = None,
    ) -> None:
        root = Path(sysfs_root)
        dmi = root / "class" / "dmi" / "id"
        product = _read(dmi / "product_name") or "unknown"
        chassis = _read(dmi / "chassis_serial") or _read(dmi / "product_serial") or "unknown"
        host = hostname if hostname is not None else socket.gethostname()
        cores: dict[tuple[int, int], list[int]] = {}
        for c in cpus:
            cores.setdefault((c.socket, c.core), []).append(c.cpu)
        chips = [
            ChipSpec(
                pkg,
                f"CPU {pkg}",
                tuple(
                    CoreSpec(core, tuple((n, n) for n in sorted(members)))
                    for (p, core), members in sorted(cores.items())
                    if p == pkg
                ),
                (),
            )
            for pkg in sorted({pkg for pkg, _ in cores})
        ]
        super().__init__(_authority(product, chassis, host), chips, None)
        self._virt = detect_virtualization(proc_root, root)

    @property
    def virtualization(self) -> Virtualization:
        """Detected as on the linux platform: a dom0 when Xen says so."""
        return self._virt


def _location(text: str | None) -> dict[str, int]:
    words = (text or "").split()
    return {w: int(n) for w, n in zip(words[::2], words[1::2], strict=False) if n.isdigit()}


def _edac_dimms(mc_dir: Path, nchips: int) -> dict[int, list[DimmSpec]]:
    """chip index -> its DIMMs, from the EDAC controllers under ``mc_dir``."""
    mcs = _numbered(mc_dir, "mc")
    out: dict[int, list[DimmSpec]] = {}
    for order, (mc, mc_path) in enumerate(mcs):
        found: dict[tuple[int, int], tuple[str, int]] = {}
        entries = _numbered(mc_path, "dimm") + _numbered(mc_path, "rank")
        for y, path in entries:
            if _read_int(path / "size") == 0:
                continue
            loc_text = _read(path / "dimm_location")
            loc = _location(loc_text)
            channel = loc.get("channel", 0)
            dimm = loc.get("slot", loc.get("dimm", loc.get("csrow", y)))
            label = _read(path / "dimm_label") or f"MC{mc} {loc_text or f'dimm {y}'}"
            old = found.get((channel, dimm))
            found[(channel, dimm)] = (label, 1 if old is None else old[1] + 1)
        if not entries:
            for y, path in _numbered(mc_path, "csrow"):
                if _read_int(path / "size_mb") == 0:
                    continue
                for z in range(8):
                    label_file = path / f"ch{z}_dimm_label"
                    if label_file.exists():
                        label = _read(label_file) or f"MC{mc} csrow {y} channel {z}"
                        found[(z, y)] = (label, 1)
        chip = order * nchips // len(mcs)
        out.setdefault(chip, []).extend(
            DimmSpec(mc, ch, d, label, None, ranks) for (ch, d), (label, ranks) in found.items()
        )
    return out


# ---- choosing one ------------------------------------------------------------

PLATFORMS: Final = ("sim", "file", "linux", "xen")


def choose_platform(
    name: str,
    *,
    topology_file: Path,
    sysfs_root: Path,
    is_root: bool,
    hostname: str | None = None,
    xenpm: str = XENPM,
) -> Platform:
    """Build the platform ``name`` (``sim``, ``file``, ``linux`` or ``xen``), or choose one.

    With ``name`` empty or ``auto``: ``file`` when ``topology_file`` exists,
    else, running as root on Linux, ``xen`` in a Xen dom0 and ``linux``
    elsewhere, else ``sim``.
    """
    chosen = name.strip().lower()
    proc_root = sysfs_root.parent / "proc"
    if chosen in ("", "auto"):
        if topology_file.exists():
            chosen = "file"
        elif is_root and sys.platform.startswith("linux"):
            dom0 = detect_virtualization(proc_root, sysfs_root).role == ROLE_DOM0
            chosen = "xen" if dom0 else "linux"
        else:
            chosen = "sim"
    builders: dict[str, Callable[[], TreePlatform]] = {
        "sim": lambda: SimPlatform(hostname),
        "file": lambda: FilePlatform(topology_file, hostname),
        "linux": lambda: LinuxPlatform(sysfs_root, hostname=hostname),
        "xen": lambda: XenPlatform(
            read_cpu_topology(xenpm), sysfs_root, proc_root=proc_root, hostname=hostname
        ),
    }
    if chosen not in builders:
        raise ConfigError(
            f"unknown topology platform {name!r}: expected auto, {', '.join(PLATFORMS)}"
        )
    return builders[chosen]()
