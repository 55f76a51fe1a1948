"""The stored form of decoded machine-check ereports: raw registers once, decoded
members derived on read, and the same payload live and read back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmd.errors import EventRejected
from fmd.hw.mca import ST_ADDRV, ST_MISCV, ST_UC, ST_VAL
from fmd.hw.telemetry import RAW_MEMBER, expand_stored, mca_ereport
from fmd.hw.topo import SimPlatform
from fmd.protocol import EnaGenerator
from fmd.store.codec import ereport_row, row_ereport
from fmd.store.schema import ERRLOG_COLUMNS
from tests.fmdproc import FmdProcess

PLATFORM = SimPlatform(hostname="h")

# A memory CE on CPU 1 whose address decodes on the sim platform to a rank.
MEM_CE = {"cpu": 1, "bank": 8, "status": "0x8c00004000010090", "addr": "0x2040", "misc": "0x86"}
L2_CE = {"cpu": 5, "bank": 2, "status": "0x940000000000010a"}

_U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@st.composite
def raw_records(draw: st.DrawFn) -> dict[str, Any]:
    """Valid raw records (VAL set) over every CPU, bank and vendor the decoder knows."""
    flags = draw(st.sampled_from([0, ST_UC, ST_ADDRV | ST_MISCV, ST_UC | ST_ADDRV | ST_MISCV]))
    code = draw(
        st.sampled_from([0x0005, 0x010A, 0x0E0F, 0x0090, 0x009F, 0x0111, 0x0800, 0x0C0F])
        | st.integers(0, 0xFFFF)
    )
    status = ST_VAL | flags | (draw(st.integers(0, 0xFFFF)) << 16) | code
    raw: dict[str, Any] = {
        "cpu": draw(st.integers(0, 15)),
        "bank": draw(st.integers(-1, 31)),
        "status": hex(status),
    }
    if draw(st.booleans()):
        raw["addr"] = hex(draw(st.integers(0, (1 << 40) - 1)))
        raw["misc"] = hex(draw(st.sampled_from([0x86, 0x8C, 0x0]) | _U64))
    if draw(st.booleans()):
        raw["mcgstatus"] = hex(draw(st.integers(0, 7)))
        raw["mcgcap"] = hex(draw(_U64))
    if draw(st.booleans()):
        raw["vendor"] = draw(st.sampled_from(["GenuineIntel", "AuthenticAMD"]))
        raw["family"] = draw(st.sampled_from([6, 0x0F, 0x10, 0x17, 0x19]))
        raw["model"] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw["tsc"] = hex(draw(_U64))
    return raw


def _row(values: list[Any]) -> SimpleNamespace:
    """A stand-in for a result row: what row_ereport reads (``_mapping``)."""
    return SimpleNamespace(_mapping=dict(zip(ERRLOG_COLUMNS, values, strict=True)))


@settings(max_examples=300, deadline=None)
@given(raw=raw_records())
def test_read_back_payload_equals_the_live_one(raw: dict[str, Any]) -> None:
    """Whatever the registers, the ereport read back from its row carries the very
    payload the modules received live, and the row holds the raw record once."""
    live = mca_ereport({"mca": raw}, PLATFORM, now_ns=1, ena_gen=EnaGenerator())
    values = ereport_row(live, recv_ns=1, xprt="test")
    values[0] = 1
    back = row_ereport(_row(values))
    assert back.payload == live.payload
    assert list(back.payload) == list(live.payload)  # the same member order
    stored = orjson.loads(values[ERRLOG_COLUMNS.index("payload")])
    assert set(stored) <= {RAW_MEMBER, "cpuid", "resource"}
    assert "compound_errorname" not in stored[RAW_MEMBER]


def test_stored_row_is_raw_registers_and_platform_members() -> None:
    """A memory CE is stored as its registers, its CPU and its rank (which depends on
    the platform that received it); everything decoded is derived on read."""
    live = mca_ereport({"mca": MEM_CE}, PLATFORM, now_ns=1, ena_gen=EnaGenerator())
    stored = orjson.loads(ereport_row(live, recv_ns=1, xprt="t")[6])
    rank = PLATFORM.decode_address(0x2040)
    assert rank is not None
    assert stored == {RAW_MEMBER: MEM_CE, "cpuid": 1, "resource": rank.to_string()}
    assert live.payload["physaddr"] == 0x2040
    assert live.payload["severity"] == "CE"
    assert RAW_MEMBER not in live.payload


def test_compact_row_is_smaller_than_the_decoded_payload() -> None:
    """The stored text of a corrected cache error is a fraction of its decoded payload."""
    live = mca_ereport({"mca": L2_CE}, PLATFORM, now_ns=1, ena_gen=EnaGenerator())
    stored_text = ereport_row(live, recv_ns=1, xprt="t")[6]
    assert len(stored_text) * 3 < len(orjson.dumps(live.payload))


def test_a_stored_record_that_no_longer_decodes_is_shown_as_stored() -> None:
    """A raw record that does not decode (VAL clear here) comes back as it was
    stored, raw registers included, instead of failing the reader."""
    stored = {RAW_MEMBER: {"bank": 1, "status": "0x140000000000010a", "cpu": 2}, "cpuid": 2}
    assert expand_stored(dict(stored)) == stored
    odd = {RAW_MEMBER: {"bank": "x", "status": 1}}
    assert expand_stored(dict(odd)) == odd


def test_payloads_without_a_raw_record_pass_unchanged() -> None:
    """Ereports fmd did not decode, and logs written before the compact form, are
    read exactly as stored."""
    old = {"compound_errorname": "GCACHEL2_ERR_ERR", "IA32_MCi_STATUS": 1, "cpuid": 3}
    assert expand_stored(old) is old
    assert expand_stored({RAW_MEMBER: "not an object"}) == {RAW_MEMBER: "not an object"}


@pytest.mark.e2e
def test_fmdump_shows_and_filters_derived_members(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fmdump -V shows the decoded members of compact records, and -n selects on
    them although the stored text does not hold them."""
    fmd = FmdProcess(root, props={"platform": "sim"}).start()
    fmd_factory.append(fmd)
    replies = fmd.send_lines([{"mca": L2_CE}, {"mca": MEM_CE}])
    assert [r.get("ok") for r in replies] == [True, True]
    fmd.quiesce()
    events = fmd.errlog_json()
    assert [e["compound_errorname"] for e in events] == ["GCACHEL2_ERR_ERR", "MC_CH0_RD_ERR"]
    assert events[1]["physaddr"] == 0x2040
    only_mem = fmd.errlog_json("-n", "physaddr=0x2040")
    assert [e["class"] for e in only_mem] == ["ereport.cpu.generic-x86.mem_ce"]
    only_l2 = fmd.errlog_json("-n", "compound_errorname=GCACHEL2_ERR_ERR")
    assert [e["class"] for e in only_l2] == ["ereport.cpu.generic-x86.l2cache"]
    verbose = fmd.cli("fmdump", "-eV").stdout
    assert "compound_errorname = GCACHEL2_ERR_ERR" in verbose


def test_a_bool_register_never_takes_an_int_records_decoding() -> None:
    """true == 1 in Python: after a record of CPU 1 is decoded (and cached), the
    same record with ``"cpu": true`` is still refused, not served from the cache."""
    first = mca_ereport({"mca": dict(L2_CE, cpu=1)}, PLATFORM, now_ns=1, ena_gen=EnaGenerator())
    assert first.payload["cpuid"] == 1
    with pytest.raises(EventRejected, match="'cpu' must be an integer"):
        mca_ereport({"mca": dict(L2_CE, cpu=True)}, PLATFORM, now_ns=1, ena_gen=EnaGenerator())
    with pytest.raises(EventRejected, match="'cpu' must be an integer"):
        mca_ereport({"mca": dict(L2_CE, cpu=1.0)}, PLATFORM, now_ns=1, ena_gen=EnaGenerator())
