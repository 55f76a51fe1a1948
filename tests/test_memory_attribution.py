"""Memory errors without a usable address placed on their DIMM: by the bank's channel
and DIMM fields (fmd.hw.telemetry) and, in cpumem-diagnosis, counted against the DIMM
only (agents.cpumem, agents.diagnosis.Topology.dimm_target)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agents.cpumem import CpumemDiagnosis
from fmd.hw.events import edac_memory
from fmd.hw.telemetry import mca_ereport
from fmd.hw.topo import ChipSpec, CoreSpec, DimmSpec, SimPlatform, TreePlatform
from fmd.protocol import EnaGenerator, Ereport, MemFmri, parse_fmri
from tests.diagnosis_util import HOUR, T0, DiagnosisEnv, make_handle

PLATFORM = SimPlatform(hostname="h")
MEM_CE = "ereport.cpu.generic-x86.mem_ce"
DIMM = "motherboard=0/chip=0/memory-controller=0/dram-channel={}/dimm={}"
# Nehalem-EP (PROCESSOR 0:0x106a0 = family 6 model 1Ah): mcelog's GENMEM record for
# socket 0, channel 1, DIMM 0 (MISC[19:18] = 1, MISC[17:16] = 0), no address.
NEHALEM_MEM = {
    "cpu": 0,
    "bank": 2,
    "status": "0x88000080000000b1",
    "misc": "0x40000",
    "vendor": "GenuineIntel",
    "family": 6,
    "model": 0x1A,
}


def ereport(raw: dict[str, Any], platform: Any = PLATFORM) -> Ereport:
    """The ereport fmd makes of one raw record."""
    return mca_ereport({"mca": raw}, platform, now_ns=T0, ena_gen=EnaGenerator())


def one_dimm_per_channel() -> TreePlatform:
    """One chip, one strand, one DIMM on each of channels 0 and 1."""
    chip = ChipSpec(
        0, "CPU 0", (CoreSpec(0, ((0, 0),)),), (DimmSpec(0, 0, 0, "A0"), DimmSpec(0, 1, 0, "B0"))
    )
    return TreePlatform((("product-id", "p"), ("chassis-id", "c"), ("server-id", "h")), [chip])


# -- decoding ----------------------------------------------------------------------------


def test_nehalem_misc_names_the_dimm() -> None:
    """A Nehalem memory-controller CE without an address is a mem_ce on the DIMM that
    MISC names (channel 1, DIMM 0 of the reporting CPU's chip), with no physaddr."""
    ev = ereport(NEHALEM_MEM)
    assert ev.cls == MEM_CE
    assert (ev.payload["memory_channel"], ev.payload["memory_dimm"]) == (1, 0)
    assert ev.payload["resource"].endswith("/" + DIMM.format(1, 0))
    assert "physaddr" not in ev.payload


def test_channel_alone_names_the_only_dimm_of_the_channel() -> None:
    """With only MCACOD's channel (no DIMM field), the error is placed when the channel
    holds exactly one DIMM; where it holds two, the gcpu class stays (mc)."""
    raw = {"cpu": 0, "bank": 8, "status": "0x8800000000000091", "misc": "0x0"}
    placed = ereport(raw, one_dimm_per_channel())
    assert placed.cls == MEM_CE
    assert placed.payload["resource"].endswith("/dram-channel=1/dimm=0")
    ambiguous = ereport(raw)
    assert ambiguous.cls == "ereport.cpu.generic-x86.mc"
    assert "resource" not in ambiguous.payload


def test_unspecified_channel_places_nothing() -> None:
    """MCACOD channel 0xF (unspecified) names no DIMM, even on a one-DIMM channel."""
    ev = ereport({"cpu": 0, "bank": 8, "status": "0x880000000000009f"}, one_dimm_per_channel())
    assert ev.cls == "ereport.cpu.generic-x86.mc"
    assert "memory_channel" not in ev.payload


def test_address_decode_wins_over_the_bank_fields() -> None:
    """With a usable address, the platform's address decode (the rank) is the resource."""
    raw = {**NEHALEM_MEM, "status": "0x8c000080000000b1", "addr": "0x2040", "misc": "0x40086"}
    ev = ereport(raw)
    assert ev.payload["physaddr"] == 0x2040
    assert ev.payload["resource"].endswith("/" + DIMM.format(0, 1) + "/rank=0")


# -- diagnosis ---------------------------------------------------------------------------


@dataclass
class Env(DiagnosisEnv):
    plugin: CpumemDiagnosis

    def feed_ereport(self, ev: Ereport, t_ns: int) -> None:
        self.feed(replace(ev, id=self.next_id, ena=self.next_id, time_ns=t_ns))
        self.next_id += 1


def make_env(overrides: tuple[tuple[str, str], ...] = ()) -> Env:
    plugin = CpumemDiagnosis()
    hdl, writer = make_handle(plugin, "GMCA", overrides)
    return Env(hdl, writer, plugin)


def test_dimm_only_ces_feed_the_dimm_engine_alone() -> None:
    """Repeated address-less CEs on one DIMM trip its SERD engine (dimm_n=3: the fourth)
    and fault the DIMM; no page engine is made and no page is faulted or retired."""
    env = make_env((("dimm_n", "3"),))
    for i in range(4):
        env.feed_ereport(ereport(NEHALEM_MEM), T0 + i * HOUR)
    assert env.classes() == ["fault.memory.generic-x86.dimm_ce"]
    (suspect,) = env.suspects()[0].fault_list
    path = DIMM.format(1, 0)
    assert suspect.asru == MemFmri(unum=path, serial="SIM-0-2")
    assert suspect.location == "CPU 0 DIMM 2"
    assert env.hdl.serd.names() == [f"serd.memory.generic-x86.dimm_ce@{path}"]
    assert env.stat("dimm_only") == 4


def test_dimm_only_ue_faults_the_dimm_at_once() -> None:
    """One address-less uncorrected memory error faults its DIMM (dimm_ue), no page."""
    env = make_env()
    raw = {**NEHALEM_MEM, "status": "0xb8000080000000b1"}
    env.feed_ereport(ereport(raw), T0)
    assert env.classes() == ["fault.memory.generic-x86.dimm_ue"]


def test_errors_on_a_faulted_dimm_join_its_case() -> None:
    """Once the DIMM is faulted, its further address-less errors join the case."""
    env = make_env((("dimm_n", "0"),))
    for i in range(3):
        env.feed_ereport(ereport(NEHALEM_MEM), T0 + i)
    assert env.classes() == ["fault.memory.generic-x86.dimm_ce"]
    (case,) = env.hdl.cases()
    assert case.events == [1, 2, 3]
    assert env.stat("under_faulty_dimm") == 2


def test_edac_report_without_a_page_faults_its_dimm() -> None:
    """An EDAC report naming its DIMM by position but no page is diagnosed on the DIMM."""
    env = make_env((("dimm_n", "1"),))
    obj = edac_memory(PLATFORM, err_type="Corrected", time=None, mc=0, layers=[1, 1])
    assert "physaddr" not in obj
    payload = {k: v for k, v in obj.items() if k not in ("class", "detector")}
    for i in range(2):
        env.feed(env.ereport(obj["class"], T0 + i, parse_fmri(obj["detector"]), dict(payload)))
    assert env.classes() == ["fault.memory.generic-x86.dimm_ce"]
    assert env.suspects()[0].fault_list[0].location == "CPU 0 DIMM 3"


def test_resource_that_is_no_dimm_is_unresolved() -> None:
    """Without an address, a resource naming a chip (or nothing) places no error."""
    env = make_env((("dimm_n", "0"),))
    chip = PLATFORM.cpu_to_hc(0)
    for resource in (None, chip.to_string().rsplit("/core=", 1)[0], "not an fmri"):
        payload: dict[str, Any] = {"error_uncorrected": False}
        if resource is not None:
            payload["resource"] = resource
        env.feed(env.ereport(MEM_CE, T0, chip, payload))
    assert env.suspects() == []
    assert env.stat("mem_unresolved") == 3
