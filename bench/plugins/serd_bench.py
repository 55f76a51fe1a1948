"""Benchmark module: one SERD engine per detector for ereport.bench.*.

Every ereport is recorded in its detector's engine (N=3, T=72h, the
cpumem-style defaults of reference §3.3), and the engines are checkpointed
after each batch like any module's.  When an engine fires it is reset (and
counted in the ``fired`` statistic).

With the module property ``diagnose`` set (``setprop diagnose true`` in
``etc/fmd/plugins/serd-bench.conf``, which ``bench/ingest.py --diagnose``
writes) it behaves as a diagnosis engine instead: a firing engine opens a case
with the engine's events, convicts ``fault.bench.unit`` and solves it, and
later errors from a detector already diagnosed join that case rather than
opening a new one.
"""

from __future__ import annotations

from typing import Any

from fmd.config import PropSpec, PropType
from fmd.module import Plugin

N = 3
T_NS = 72 * 3600 * 10**9


class SerdBench(Plugin):
    name = "serd-bench"
    description = "Ingest benchmark module (one SERD engine per detector)"
    subscriptions = ("ereport.bench.*",)
    properties = (
        PropSpec("diagnose", PropType.BOOL, "false", "Open and solve cases when engines fire."),
    )

    def init(self, hdl: Any) -> None:
        self.diagnose = bool(hdl.prop("diagnose"))
        hdl.stat("fired", "SERD engines that fired")

    def recv(self, hdl: Any, ev: Any) -> None:
        name = f"serd.{ev.detector_str or 'none'}"
        if self.diagnose:
            faulty: dict[str, str] = hdl.specific.setdefault("faulty", {})
            open_case = hdl.case_get(faulty[name]) if name in faulty else None
            if open_case is not None and open_case.is_open:
                hdl.case_add_ereport(open_case, ev)
                return
        if not hdl.serd_exists(name):
            hdl.serd_create(name, N, T_NS)
        if not hdl.serd_record(name, ev):
            return
        hdl.stat("fired").incr()
        if self.diagnose:
            case = hdl.case_open()
            hdl.case_add_serd(case, name)
            hdl.case_add_suspect(case, hdl.create_fault("fault.bench.unit", 100))
            hdl.case_solve(case)
            faulty[name] = case.uuid
        hdl.serd_reset(name)
