"""Test plug-in: each ``ereport.two.*`` event opens and solves a case with two
suspects, ``fault.test.a`` on cpu 1 (FRU label "CPU 0") and ``fault.test.b`` on
cpu 5 (FRU label "CPU 1"), so repairs of one suspect at a time can be tested."""

from __future__ import annotations

from typing import Any

from fmd.module import Plugin
from fmd.protocol import CpuFmri, HcFmri


def _chip(n: int) -> HcFmri:
    return HcFmri(hc_list=(("motherboard", "0"), ("chip", str(n))))


class TwoSuspects(Plugin):
    name = "twosuspects"
    description = "Two-suspect test module"
    subscriptions = ("ereport.two.*",)

    def recv(self, hdl: Any, ev: Any) -> None:
        case = hdl.case_open()
        hdl.case_add_ereport(case, ev)
        for cls, cpuid, chip in (("fault.test.a", 1, 0), ("fault.test.b", 5, 1)):
            hdl.case_add_suspect(
                case,
                hdl.create_fault(
                    cls, 50, asru=CpuFmri(cpuid=cpuid), fru=_chip(chip), location=f"CPU {chip}"
                ),
            )
        hdl.case_solve(case)
