"""The conformance corpus (tests/conformance, copied unchanged from shared/conformance):
inputs from public test suites (mcelog's inputs and tests, mce-test and mce-inject
cases, a Xen console form) read by the machine-check text parser and decoded by fmd,
each checked against what its ``.expect`` file says it must decode to.

An ``.expect`` file lists ``records`` (cpu, bank, status, ``sev``, ``kind``, and for
some ``level`` and ``addr``) and ``rejects`` (records that must be refused with a
reason, default 0).  Cases marked ``"input": "none"`` were inputs fmd could not read
(the mce-inject language); their ``wanted`` sentence says what they must now give,
and :data:`WANTED` spells each sentence out as records to check.

``kind`` and ``sev`` map onto what fmd decodes: ``sev`` is the payload's ``severity``;
``kind`` is the class leaf: ``mem`` a memory class (``mem_ce``/``mem_ue``, or gcpu's
``mc`` when the DIMM cannot be told), ``cache`` a cache or TLB leaf whose architectural
level (``l0``/``l1``/``l2``) is ``level``, ``bus`` a ``bus_interconnect*`` leaf,
``internal`` one of the simple internal leaves, ``unknown`` the ``unknown`` leaf.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fmd.errors import EventRejected
from fmd.hw.mcelog import ParsedMca, parse_mce_text
from fmd.hw.telemetry import mca_ereport, record_to_json
from fmd.hw.topo import SimPlatform
from fmd.protocol import EnaGenerator, Ereport

CORPUS = Path(__file__).parent / "conformance"
CASES = sorted(CORPUS.glob("*/*.expect"))
PLATFORM = SimPlatform(hostname="h")  # 16 CPUs: every case's CPU is one of them

_CACHE_LEAF = re.compile(r"(l[012])?[id]?(cache|tlb)(_uc)?")
_INTERNAL_LEAVES = frozenset(
    {
        "unclassified",
        "microcode_rom_parity",
        "frc",
        "internal_parity",
        "internal_timer",
        "internal_unclassified",
    }
)
_MEMORY_LEAVES = frozenset({"mem_ce", "mem_ue", "mc"})


def kind_of(ev: Ereport) -> tuple[str, int | None]:
    """The corpus's kind of an ereport, and the cache level for a cache kind."""
    leaf = ev.cls.rsplit(".", 1)[1]
    if leaf in _MEMORY_LEAVES:
        return "mem", None
    match = _CACHE_LEAF.fullmatch(leaf)
    if match is not None:
        level = match.group(1)
        return "cache", None if level is None else int(level[1])
    if leaf.startswith("bus_interconnect"):
        return "bus", None
    if leaf in _INTERNAL_LEAVES:
        return "internal", None
    return leaf, None


@dataclass(frozen=True)
class Decoded:
    """What fmd made of one case: its ereports and how many records it refused."""

    ereports: list[Ereport]
    rejects: int


def decode_case(text: str) -> Decoded:
    """Parse the text, then decode every record as fmd's ingest does (via the wire form)."""
    ereports: list[Ereport] = []
    rejects = 0
    for item in parse_mce_text(text):
        if not isinstance(item, ParsedMca):
            rejects += 1
            continue
        wire = orjson.loads(orjson.dumps({"mca": record_to_json(item.record)}))
        try:
            ereports.append(mca_ereport(wire, PLATFORM, now_ns=1, ena_gen=EnaGenerator()))
        except EventRejected:
            rejects += 1
    return Decoded(ereports, rejects)


def check_record(ev: Ereport, want: dict[str, Any]) -> None:
    """One ereport against one expected record (only the members the record names)."""
    p = ev.payload
    status = int(want["status"], 16) if "status" in want else p["IA32_MCi_STATUS"]
    kind, level = kind_of(ev)
    got: dict[str, Any] = {
        "cpu": p["cpuid"],
        "bank": p["bank_number"],
        "status": p["IA32_MCi_STATUS"],
        "sev": p["severity"],
        "kind": kind,
    }
    expected: dict[str, Any] = {
        "cpu": want["cpu"],
        "bank": want["bank"],
        "status": status,
        "sev": want["sev"],
        "kind": want.get("kind", kind),
    }
    if "level" in want:
        got["level"], expected["level"] = level, want["level"]
    if "addr" in want:
        got["addr"], expected["addr"] = p.get("IA32_MCi_ADDR"), int(want["addr"], 16)
    for name, value in want.get("payload", {}).items():
        got[name], expected[name] = p.get(name), value
    assert got == expected


# The "wanted" sentence of each case the parser could not read before, as records.
WANTED: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "mceinject-corrected-yellow": (
        "1 CE above threshold, CPU 0 bank 3",
        [
            {
                "cpu": 0,
                "bank": 3,
                "sev": "CE",
                "payload": {"threshold_based_error_status": "Yellow - above threshold"},
            }
        ],
    ),
    "mcetest-corrected": (
        "2 CE: CPU 0 bank 1, CPU 1 bank 2",
        [{"cpu": 0, "bank": 1, "sev": "CE"}, {"cpu": 1, "bank": 2, "sev": "CE"}],
    ),
    "mcetest-srao_ewb": (
        "SRAO L2 explicit writeback, CPU 0 bank 2",
        [
            {
                "cpu": 0,
                "bank": 2,
                "sev": "SRAO",
                # A writeback of poisoned data with a physical address: memory at
                # that page holds the poison (fmd.hw.mca), the gcpu name stays.
                "kind": "mem",
                "payload": {
                    "compound_errorname": "GCACHEL2_EVICT_ERR",
                    "machine_check_in_progress": True,
                    "physaddr": 0x1000,
                },
            }
        ],
    ),
    "mcetest-srar_usr_dcu": (
        "SRAR data load in user mode, CPU 0 bank 2",
        [
            {
                "cpu": 0,
                "bank": 2,
                "sev": "SRAR",
                # A load of poisoned data from a physical address: a memory error.
                "kind": "mem",
                "payload": {
                    "compound_errorname": "DCACHELO_DRD_ERR",
                    "privileged": False,
                    "IA32_MCi_ADDR": 0x12345000,
                    "physaddr": 0x12345000,
                },
            }
        ],
    ),
    "mcetest-ucna": (
        "UCNA (polled), CPU 0 bank 2",
        [
            {
                "cpu": 0,
                "bank": 2,
                "sev": "UCNA",
                "payload": {"machine_check_in_progress": False},
            }
        ],
    ),
}


def test_the_corpus_is_all_here() -> None:
    """Every case has its input, expectation and source; the inject cases are all encoded."""
    assert len(CASES) == 18
    for expect in CASES:
        for suffix in (".txt", ".source"):
            assert expect.with_suffix(suffix).is_file()
    none_inputs = {p.stem for p in CASES if orjson.loads(p.read_bytes()).get("input") == "none"}
    assert none_inputs == set(WANTED)


@pytest.mark.parametrize("expect", CASES, ids=[p.stem for p in CASES])
def test_case(expect: Path) -> None:
    """fmd reads and decodes the case's input to exactly the records it expects."""
    spec = orjson.loads(expect.read_bytes())
    result = decode_case(expect.with_suffix(".txt").read_text())
    if spec.get("input") == "none":
        sentence, records = WANTED[expect.stem]
        assert spec["wanted"] == sentence
        assert spec["records"] == []
    else:
        records = spec["records"]
    assert result.rejects == spec.get("rejects", 0)
    assert len(result.ereports) == len(records)
    for ev, want in zip(result.ereports, records, strict=True):
        check_record(ev, want)
