"""Tests for the CPU and memory fault dictionaries: dict/GMCA, dict/AMD and dict/INTEL."""

from __future__ import annotations

import pytest

from fmd.dictionary import (
    MESSAGE_FIELDS,
    Dictionary,
    DictionarySet,
    decode_code,
    default_dict_dirs,
    encode_code,
)

CPUMEM_DICTS = ("GMCA", "AMD", "INTEL")

# The CPU fault leaves shared by gcpu.esc and intel.esc (illumos-fma.md section 3.3).
CPU_LEAVES = (
    "internal",
    "l0cache",
    "l1cache",
    "l2cache",
    "cache",
    "l0dtlb",
    "l1dtlb",
    "l2dtlb",
    "dtlb",
    "l0itlb",
    "l1itlb",
    "l2itlb",
    "itlb",
    "l0tlb",
    "l1tlb",
    "l2tlb",
    "tlb",
    "l0dcache",
    "l1dcache",
    "l2dcache",
    "dcache",
    "l0icache",
    "l1icache",
    "l2icache",
    "icache",
    "bus_interconnect",
    "bus_interconnect_memory",
    "bus_interconnect_io",
)

# Every fault class that illumos-fma.md section 3.3 names, by dictionary.
SECTION_3_3_CLASSES: dict[str, tuple[str, ...]] = {
    "GMCA": (
        *(f"fault.cpu.generic-x86.{leaf}" for leaf in CPU_LEAVES),
        "fault.cpu.generic-x86.mc",
        "fault.memory.generic-x86.page_ce",
        "fault.memory.generic-x86.page_ue",
        "fault.memory.generic-x86.dimm_ce",
        "fault.memory.generic-x86.dimm_ue",
    ),
    "INTEL": (
        *(f"fault.cpu.intel.{leaf}" for leaf in CPU_LEAVES),
        "fault.memory.intel.page_ce",
        "fault.memory.intel.page_ue",
        "fault.memory.intel.dimm_ce",
        "fault.memory.intel.dimm_ue",
        "fault.memory.intel.fbd.ch",
        "fault.memory.intel.fbd.otf",
        "fault.cpu.intel.quickpath.mem_redundant",
        "fault.cpu.intel.quickpath.interconnect",
    ),
    "AMD": (
        "fault.memory.page",
        "fault.memory.page_sb",
        "fault.memory.page_ck",
        "fault.memory.page_ue",
        "fault.memory.dimm_sb",
        "fault.memory.dimm_ck",
        "fault.memory.dimm_ue",
        "fault.cpu.amd.l2cachedata",
        "fault.cpu.amd.l2cachetag",
        "fault.cpu.amd.icachedata",
        "fault.cpu.amd.icachetag",
        "fault.cpu.amd.l1itlb",
        "fault.cpu.amd.l2itlb",
        "fault.cpu.amd.dcachedata",
    ),
}

# Page faults are retired and announced as Minor; DIMM faults are Major.
PAGE_CLASSES = (
    "fault.memory.generic-x86.page_ce",
    "fault.memory.generic-x86.page_ue",
    "fault.memory.intel.page_ce",
    "fault.memory.intel.page_ue",
    "fault.memory.page",
    "fault.memory.page_sb",
    "fault.memory.page_ck",
    "fault.memory.page_ue",
)
DIMM_CLASSES = (
    "fault.memory.generic-x86.dimm_ce",
    "fault.memory.generic-x86.dimm_ue",
    "fault.memory.intel.dimm_ce",
    "fault.memory.intel.dimm_ue",
    "fault.memory.dimm_sb",
    "fault.memory.dimm_ck",
    "fault.memory.dimm_ue",
)


@pytest.fixture(scope="module")
def dset() -> DictionarySet:
    """The dictionaries fmd loads by default."""
    return DictionarySet.load(default_dict_dirs())


def _dict(dset: DictionarySet, name: str) -> Dictionary:
    dictionary = dset.get(name)
    assert dictionary is not None, f"dictionary {name} is not loaded"
    return dictionary


def _class_code(dset: DictionarySet, name: str, cls: str) -> str:
    code = dset.lookup(name, [cls])
    assert code is not None, f"{cls} has no entry in {name}"
    return code


def test_default_dictionaries_validate_cleanly(dset: DictionarySet) -> None:
    """DictionarySet.validate() finds no problem in the default dictionary directories."""
    assert dset.validate() == []
    assert set(CPUMEM_DICTS) <= set(dset.names())


@pytest.mark.parametrize(("name", "dictid"), [("GMCA", 0x4D43), ("AMD", 0x414D), ("INTEL", 0x494E)])
def test_headers(dset: DictionarySet, name: str, dictid: int) -> None:
    """Each CPU/memory dictionary has version 1, maxkey 1 and its two-letter dictid."""
    d = _dict(dset, name)
    assert (d.name, d.version, d.maxkey, d.dictid) == (name, 1, 1, dictid)


@pytest.mark.parametrize(
    ("value", "code"),
    [(1, "GMCA-8000-1K"), (2, "GMCA-8000-21"), (3, "GMCA-8000-3W"), (25, "GMCA-8000-SL")],
)
def test_gmca_published_codes(dset: DictionarySet, value: int, code: str) -> None:
    """GMCA entries 1, 2, 3 and 25 carry the codes illumos publishes."""
    d = _dict(dset, "GMCA")
    key = d.key_for(value)
    assert key is not None
    assert d.lookup(key) == code
    assert decode_code(code) == ("GMCA", value)


def test_amd_icachedata_is_amd_8000_7u(dset: DictionarySet) -> None:
    """fault.cpu.amd.icachedata is AMD value 7, published as AMD-8000-7U."""
    assert _dict(dset, "AMD").entries[("fault.cpu.amd.icachedata",)] == 7
    assert _class_code(dset, "AMD", "fault.cpu.amd.icachedata") == "AMD-8000-7U"


def test_reference_numbers(dset: DictionarySet) -> None:
    """The numbers the reference gives for GMCA and AMD are the ones in the dictionaries."""
    gmca = {
        "fault.cpu.generic-x86." + k: v
        for k, v in {
            "internal": 1,
            "l0cache": 2,
            "l1cache": 3,
            "l2cache": 4,
            "cache": 5,
            "icache": 25,
            "bus_interconnect": 26,
            "bus_interconnect_memory": 27,
            "bus_interconnect_io": 28,
        }.items()
    }
    gmca |= {
        "fault.memory.generic-x86." + k: v
        for k, v in {
            "page_ce": 29,
            "page_ue": 30,
            "dimm_ce": 31,
            "dimm_ue": 32,
        }.items()
    }
    amd = {
        "fault.memory.page": 1,
        "fault.memory.dimm_sb": 2,
        "fault.memory.dimm_ck": 3,
        "fault.memory.dimm_ue": 4,
        "fault.cpu.amd.l2cachedata": 5,
        "fault.cpu.amd.icachedata": 7,
    }
    for name, expected in (("GMCA", gmca), ("AMD", amd)):
        entries = _dict(dset, name).entries
        assert {cls: entries.get((cls,)) for cls in expected} == expected


def test_gmca_cpu_family_is_complete(dset: DictionarySet) -> None:
    """GMCA numbers the 28 generic-x86 CPU classes 1..28 in the illumos order."""
    entries = _dict(dset, "GMCA").entries
    numbers = {leaf: entries.get((f"fault.cpu.generic-x86.{leaf}",)) for leaf in CPU_LEAVES}
    assert numbers == {leaf: i for i, leaf in enumerate(CPU_LEAVES, start=1)}


def test_intel_cpu_family_mirrors_gmca(dset: DictionarySet) -> None:
    """INTEL numbers its 28 CPU classes like GMCA, so the same leaf has the same value."""
    gmca = _dict(dset, "GMCA").entries
    intel = _dict(dset, "INTEL").entries
    for leaf in CPU_LEAVES:
        assert intel[(f"fault.cpu.intel.{leaf}",)] == gmca[(f"fault.cpu.generic-x86.{leaf}",)]


@pytest.mark.parametrize(
    ("name", "cls"),
    [(name, cls) for name, classes in SECTION_3_3_CLASSES.items() for cls in classes],
)
def test_section_3_3_class_has_a_code(dset: DictionarySet, name: str, cls: str) -> None:
    """Every fault class named in section 3.3 looks up to a code of its dictionary."""
    code = _class_code(dset, name, cls)
    assert code.startswith(f"{name}-")
    assert dset.code_for(name, [cls]) == code


@pytest.mark.parametrize("name", CPUMEM_DICTS)
def test_every_code_has_all_six_fields(dset: DictionarySet, name: str) -> None:
    """Every code of GMCA, AMD and INTEL has six non-empty message fields, type Fault."""
    catalog = dset.catalog(name)
    assert catalog is not None
    codes = _dict(dset, name).codes()
    assert set(catalog.codes()) == set(codes)
    for code in codes:
        assert catalog.missing_fields(code) == [], code
        message = dset.message(code)
        assert message is not None
        assert all(getattr(message, f).strip() for f in MESSAGE_FIELDS), code
        assert message.type == "Fault"
        assert message.severity in {"Minor", "Major", "Critical"}
        assert message.description.count("%s") == 1
        assert "fmadm" in message.action or message.severity == "Minor", code


def test_severities_of_pages_dimms_and_cpus(dset: DictionarySet) -> None:
    """Page faults are Minor; DIMM faults and CPU cache/TLB faults are Major."""

    def severity(name: str, cls: str) -> str:
        message = dset.message(_class_code(dset, name, cls))
        assert message is not None
        return message.severity

    lookups = {cls: name for name, classes in SECTION_3_3_CLASSES.items() for cls in classes}
    for cls in PAGE_CLASSES:
        assert severity(lookups[cls], cls) == "Minor", cls
    for cls in DIMM_CLASSES:
        assert severity(lookups[cls], cls) == "Major", cls
    for leaf in CPU_LEAVES:
        assert severity("GMCA", f"fault.cpu.generic-x86.{leaf}") == "Major"
        assert severity("INTEL", f"fault.cpu.intel.{leaf}") == "Major"


def test_gmca_l2cache_message(dset: DictionarySet) -> None:
    """GMCA-8000-47 (l2cache) is a Major fault about a level 2 cache, and the CPU is offlined."""
    assert encode_code("GMCA", 4) == "GMCA-8000-47"
    message = dset.message("GMCA-8000-47")
    assert message is not None
    assert (message.type, message.severity) == ("Fault", "Major")
    assert "level 2 cache" in message.description
    assert "offline" in message.response
    assert 'fmadm replaced "<FRU label>"' in message.action
    url = message.description_with_url()
    assert "http://illumos.org/msg/GMCA-8000-47" in url
