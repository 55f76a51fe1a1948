"""fmadm faulty's layouts (golden files) from a fixed daemon answer, the status
texts of the resource cache, and how fmadm operands select suspects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from fmd import asru
from fmd.adm.admin import register_admin
from fmd.adm.server import AdmServer
from fmd.cli import faulty as view
from fmd.cli.fmadm import faulty_json
from fmd.protocol import (
    FAULT_ACQUITTED,
    FAULT_DEGRADED,
    FAULT_FAULTY,
    FAULT_NOT_PRESENT,
    FAULT_REPAIRED,
    FAULT_REPLACED,
    FAULT_UNUSABLE,
)
from tests.goldens import golden

T = 1_700_000_000 * 10**9  # Nov 14 2023 22:13:20 UTC
NOW = T + 3600 * 10**9
CHIP3 = "hc://:product-id=fmd-sim:chassis-id=SIM0001:server-id=h/motherboard=0/chip=3"
DIMM = "hc://:product-id=fmd-sim:chassis-id=SIM0001:server-id=h/motherboard=0/chip=0/dimm=1"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def suspect(cls: str, bits: int, **over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "class": cls,
        "certainty": 100,
        "asru": "cpu:///cpuid=13",
        "fru": CHIP3,
        "resource": CHIP3 + "/core=0/strand=1",
        "location": "CPU 3",
        "fault-status": bits,
        "status": asru.asru_status(bits),
        "fru-status": asru.fru_status(bits),
        "responses": [],
    }
    s.update(over)
    return s


def case(uuid: str, code: str, severity: str, t: int, suspects: list[dict[str, Any]]) -> Any:
    return {
        "uuid": uuid,
        "code": code,
        "severity": severity,
        "type": "Fault",
        "time_ns": t,
        "state": "closed",
        "module": "cpumem-diagnosis",
        "injected": False,
        "invisible": False,
        "description": "A level 1 instruction cache on this CPU is faulty.  The errors it "
        "reported went past the diagnosis threshold.  See http://illumos.org/msg/"
        + code
        + " for more information.",
        "response": "The CPU thread is taken offline.",
        "impact": "The system keeps running with one CPU thread fewer.",
        "action": "Schedule a replacement, then run 'fmadm replaced \"CPU 3\"'.",
        "suspects": suspects,
    }


CPU_CASE = case(
    "3f99514d-eef8-491c-8730-259cb0d1bf12",
    "GMCA-8000-Q7",
    "Major",
    T,
    [
        suspect(
            "fault.cpu.generic-x86.l1icache",
            FAULT_FAULTY | FAULT_UNUSABLE,
            responses=[
                {"module": "cpumem-retire", "action": "offline", "ok": True, "detail": "cpu 13"}
            ],
        )
    ],
)
FAILED_CASE = case(
    "0d1f2e3c-aaaa-4bbb-8ccc-000000000001",
    "GMCA-8000-Q7",
    "Major",
    T + 10**9,
    [
        suspect(
            "fault.cpu.generic-x86.l1icache",
            FAULT_FAULTY,
            asru="cpu:///cpuid=0",
            fru=CHIP3.replace("chip=3", "chip=0"),
            location="CPU 0",
            responses=[
                {
                    "module": "cpumem-retire",
                    "action": "offline",
                    "ok": False,
                    "detail": "cpu0 is not hot-pluggable",
                }
            ],
        )
    ],
)
DIMM_CASE = case(
    "d482f935-5c8f-e9ab-9f25-d0aaafec1e6c",
    "GMCA-8000-YN",
    "Minor",
    T + 2 * 10**9,
    [
        suspect(
            "fault.memory.generic-x86.dimm_ce",
            FAULT_FAULTY,
            certainty=80,
            asru="mem:///unum=motherboard=0%2Fchip=0%2Fdimm=1",
            fru=DIMM,
            resource=DIMM,
            location="CPU 0 DIMM 1",
        )
    ],
)
ANSWER = {
    "cases": [CPU_CASE, FAILED_CASE, DIMM_CASE],
    "host": "h",
    "platform": "fmd-sim",
    "chassis-id": "SIM0001",
    "product-sn": "",
}
CASES: list[dict[str, Any]] = ANSWER["cases"]  # type: ignore[assignment]


def test_default_layout() -> None:
    """The full view: header rows, host block, Fault class/Affects/FRU with their
    status texts, a failed response, and the wrapped message texts."""
    text = "\n".join(view.render_default(ANSWER, CASES, now_ns=NOW))
    assert text == golden("fmadm", "faulty.txt", text)


def test_verbose_layout() -> None:
    """-v adds Problem in and the successful responses."""
    text = "\n".join(view.render_default(ANSWER, CASES[:1], verbose=True, now_ns=NOW))
    assert text == golden("fmadm", "faulty-v.txt", text)


def test_summary_layout() -> None:
    """-s: the dashed header and one %-15s %-37s %-14s %-9s row per case."""
    text = "\n".join(view.render_summary(CASES, now_ns=NOW))
    assert text == golden("fmadm", "faulty-s.txt", text)
    row = view.case_row(CPU_CASE, NOW)
    assert row == "Nov 14 22:13:20 3f99514d-eef8-491c-8730-259cb0d1bf12  GMCA-8000-Q7   Major"


def test_resource_layout() -> None:
    """-r: %-69s then ok/degraded/unknown/faulted; -i numbers the entries."""
    assert "\n".join(view.render_resources(CASES)) == golden(
        "fmadm", "faulty-r.txt", "\n".join(view.render_resources(CASES))
    )
    with_ids = "\n".join(view.render_resources(CASES, cache_ids=True))
    assert with_ids == golden("fmadm", "faulty-ri.txt", with_ids)


def test_fru_layout() -> None:
    """-f: one entry per FRU with the cases naming it and their certainty."""
    text = "\n".join(view.render_frus(CASES))
    assert text == golden("fmadm", "faulty-f.txt", text)


def test_grouped_layout() -> None:
    """-g: identical diagnoses are merged with "N @ max NN%"."""
    twin = dict(CPU_CASE, uuid="3f99514d-eef8-491c-8730-259cb0d1bf13")
    text = "\n".join(view.render_grouped(ANSWER, [CPU_CASE, twin], now_ns=NOW))
    assert text == golden("fmadm", "faulty-g.txt", text)
    assert "Fault class : fault.cpu.generic-x86.l1icache 2 @ max 100%" in text


def test_json_form() -> None:
    """--json: uuid, code, severity, time (ISO 8601 UTC), injected and suspects with
    class, certainty, asru, fru, resource, location and status."""
    text = orjson.dumps(faulty_json(CASES), option=orjson.OPT_INDENT_2).decode()
    assert text == golden("fmadm", "faulty.json", text)
    first = faulty_json(CASES)[0]
    assert first["time"] == "2023-11-14T22:13:20.000000Z"
    assert first["suspects"][0]["status"] == "faulted and taken out of service"


def test_old_dates_show_the_year() -> None:
    """Dates over six months old, or in the future, are printed with the year."""
    assert view.faulty_date(T, NOW) == "Nov 14 22:13:20"
    assert view.faulty_date(T, T + 200 * 86400 * 10**9) == "Nov 14 2023"
    assert view.faulty_date(NOW, T) == "Nov 14 2023"


@pytest.mark.parametrize(
    ("bits", "affects", "fru", "r"),
    [
        (0, "ok and in service", "removed", "ok"),
        (FAULT_FAULTY, "faulted but still in service", "faulty", "degraded"),
        (FAULT_FAULTY | FAULT_UNUSABLE, "faulted and taken out of service", "faulty", "faulted"),
        (
            FAULT_UNUSABLE | FAULT_REPLACED,
            "out of service, but associated components no longer faulty",
            "replaced",
            "unknown",
        ),
        (
            FAULT_FAULTY | FAULT_DEGRADED,
            "faulted but still providing degraded service",
            "faulty",
            "degraded",
        ),
        (
            FAULT_DEGRADED | FAULT_REPAIRED,
            "service degraded, but associated components no longer faulty",
            "repair attempted",
            "degraded",
        ),
        (FAULT_ACQUITTED, "ok and in service", "acquitted", "ok"),
        (
            FAULT_NOT_PRESENT | FAULT_FAULTY,
            "faulted but still in service",
            "not present",
            "degraded",
        ),
    ],
)
def test_status_texts(bits: int, affects: str, fru: str, r: str) -> None:
    """The reference's Affects and FRU status texts, and the -r state words."""
    assert (asru.asru_status(bits), asru.fru_status(bits), asru.rsrc_status(bits)) == (
        affects,
        fru,
        r,
    )


def test_repair_reason_words() -> None:
    """fmdump -v's reason for a suspect that is no longer faulty."""
    assert [
        asru.repair_reason(b)
        for b in (
            FAULT_FAULTY,
            FAULT_NOT_PRESENT,
            FAULT_REPLACED,
            FAULT_REPAIRED,
            FAULT_ACQUITTED,
            0,
        )
    ] == [None, "Removed", "Replaced", "Repair Attempted", "Acquitted", None]


def test_select_by_label_fmri_and_uuid() -> None:
    """Operands select by FRU label, by FMRI (hc with or without authority), and
    within one case when a uuid is given."""
    rows = [
        {"uuid": c["uuid"], "suspects": [dict(s, idx=i) for i, s in enumerate(c["suspects"])]}
        for c in CASES
    ]
    assert asru.select_suspects(rows, "CPU 3").by_case == {CPU_CASE["uuid"]: [0]}
    assert asru.select_suspects(rows, "hc:///motherboard=0/chip=3").by_case == {
        CPU_CASE["uuid"]: [0]
    }
    assert asru.select_suspects(rows, "cpu:///cpuid=0").by_case == {FAILED_CASE["uuid"]: [0]}
    assert not asru.select_suspects(rows, "CPU 3", FAILED_CASE["uuid"])
    assert not asru.select_suspects(rows, "CPU 9")


def test_sort_by_severity_then_time() -> None:
    """Critical before Major before Minor; then older first; then higher certainty."""
    cases = [
        {"severity": "Minor", "diag_time_ns": 1, "suspects": []},
        {"severity": "Major", "diag_time_ns": 5, "suspects": []},
        {"severity": "Critical", "diag_time_ns": 9, "suspects": []},
        {"severity": "Major", "diag_time_ns": 2, "suspects": []},
    ]
    ordered = sorted(cases, key=asru.sort_key)
    assert [(c["severity"], c["diag_time_ns"]) for c in ordered] == [
        ("Critical", 9),
        ("Major", 2),
        ("Major", 5),
        ("Minor", 1),
    ]


def test_mutating_requests_need_root_or_the_owner() -> None:
    """Repairs, rotation and module changes are refused to other users (peer
    credentials); fmadm faulty is not."""
    adm = AdmServer(path=None)  # type: ignore[arg-type]
    register_admin(adm, daemon=None)  # type: ignore[arg-type]
    stranger = adm.owner_uid + 4242 if adm.owner_uid else 4242
    for op in ("repair", "rotate", "load", "unload", "reset"):
        reply = adm.serve(orjson.dumps({"op": op}), stranger)
        assert reply["ok"] is False
        assert reply["error"].startswith(f"permission denied: '{op}' needs root")
    reply = adm.serve(orjson.dumps({"op": "faulty"}), stranger)
    assert "permission denied" not in reply.get("error", "")
