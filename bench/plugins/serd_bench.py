"""Benchmark module: one SERD engine per detector for ereport.bench.*.

Each engine is N=3, T=72h (the cpumem-style defaults of reference §3.3); when
one fires the module opens a case with the engine's events, convicts
``fault.bench.unit``, solves it and resets the engine, as a diagnosis engine
would.  Like a real diagnosis engine, it does not diagnose a resource twice:
later errors from a detector already diagnosed faulty join that case (as
long as it is open) instead of opening a new one.
"""

from __future__ import annotations

from typing import Any

from fmd.module import Plugin

N = 3
T_NS = 72 * 3600 * 10**9


class SerdBench(Plugin):
    name = "serd-bench"
    description = "Ingest benchmark module (one SERD engine per detector)"
    subscriptions = ("ereport.bench.*",)

    def recv(self, hdl: Any, ev: Any) -> None:
        name = f"serd.{ev.detector_str or 'none'}"
        faulty: dict[str, str] = hdl.specific.setdefault("faulty", {})
        open_case = hdl.case_get(faulty[name]) if name in faulty else None
        if open_case is not None and open_case.is_open:
            hdl.case_add_ereport(open_case, ev)
            return
        if not hdl.serd_exists(name):
            hdl.serd_create(name, N, T_NS)
        if hdl.serd_record(name, ev):
            case = hdl.case_open()
            hdl.case_add_serd(case, name)
            hdl.case_add_suspect(case, hdl.create_fault("fault.bench.unit", 100))
            hdl.case_solve(case)
            hdl.serd_reset(name)
            faulty[name] = case.uuid
