"""End-to-end smoke test: the real daemon stores, acknowledges and diagnoses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.fmdproc import FmdProcess


def test_ack_store_and_diagnose(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Acknowledged ereports reach the error log and a SERD module solves a case."""
    fmd = FmdProcess(root, plugins=["serdtest"]).start()
    fmd_factory.append(fmd)
    replies = fmd.send_lines({"class": "ereport.test.a", "n": i} for i in range(3))
    assert [r["ok"] for r in replies] == [True, True, True]
    fmd.quiesce()
    assert [e["n"] for e in fmd.errlog_json()] == [0, 1, 2]
    faults = fmd.fltlog_json()
    assert [f["class"] for f in faults] == ["list.suspect"]
    assert faults[0]["fault-list"][0]["class"] == "fault.test.thing"
    assert fmd.stop() == 0
    with sqlite3.connect(fmd.paths.db_file) as db:
        rows = db.execute("SELECT state, committed FROM errlog ORDER BY id").fetchall()
    assert rows == [(3, 1), (3, 1), (3, 1)]  # diagnosed and committed
