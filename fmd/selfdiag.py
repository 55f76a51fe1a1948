"""fmd-self-diagnosis: the module that diagnoses fmd itself.

It receives every event no other module subscribes to, and the failures of
modules.  As in the reference (§12):

* an unsubscribed class opens **one case per class**, solved at once with the
  suspect ``defect.sunos.fmd.nosub`` (FMD-8000-0W); later events of that class
  join the same case while it is open;
* a failed module opens a case with ``defect.sunos.fmd.module``
  (FMD-8000-2K) naming the module (``fmd:///module/NAME``);
* ``list.*``, ``ereport.fm.fmd.*``, ``resource.fm.*`` and
  ``resource.sysevent.*`` are dropped silently.

A module that failed (or whose configuration was invalid) is loaded afresh at
the next start; once it runs again its ``defect.sunos.fmd.module`` and
``defect.sunos.fmd.config`` cases are repaired (``list.repaired``), so that
``fmadm faulty`` shows only modules that are really out of service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fmd.api import Handle
from fmd.module import Plugin
from fmd.protocol import Ereport, FmdFmri

_SILENT = ("list.", "ereport.fm.fmd.", "resource.fm.", "resource.sysevent.", "ereport.io.ddi.")


_MODULE_DEFECTS = frozenset({"defect.sunos.fmd.module", "defect.sunos.fmd.config"})

# Unsubscribed classes self-diagnosis opens cases for (a sender inventing
# classes must not grow its state without end).
MAX_CLASSES = 1024


class SelfDiagnosis(Plugin):
    name = "fmd-self-diagnosis"
    version = "1.0"
    description = "Fault Manager Self-Diagnosis"
    dictionaries = ("FMD",)

    def init(self, hdl: Handle) -> None:
        hdl.stat("nosub", "events with no subscriber")
        hdl.stat("module", "module failures diagnosed")
        hdl.stat("config", "invalid module configuration files diagnosed")
        hdl.stat("dropped", "events dropped silently")
        hdl.stat("overflow", "unsubscribed events beyond the limit of classes")

    def recv(self, hdl: Handle, event: Any) -> None:
        cls: str = event.cls
        if cls.startswith(_SILENT) or not isinstance(event, Ereport):
            hdl.stat("dropped").incr()
            return
        hdl.stat("nosub").incr()
        by_class: dict[str, str] = hdl.specific.setdefault("nosub", {})
        uuid = by_class.get(cls)
        case = hdl.case_get(uuid) if uuid else None
        if case is not None and case.is_repaired:
            # Repaired by the operator: a later event of the class is a new problem.
            case = None
            uuid = None
        if case is not None:
            # One case per class: while it is outstanding, more events of the
            # class join it rather than producing another diagnosis (the case
            # keeps the first ones and counts the rest, fmd.case).
            hdl.case_add_ereport(case, event)
            return
        if uuid is None and len(by_class) >= MAX_CLASSES:
            # A sender inventing classes must not grow our state without end.
            hdl.stat("overflow").incr()
            return
        case = hdl.case_open({"class": cls})
        hdl.case_add_ereport(case, event)
        fmri = FmdFmri(mod_name=hdl.name, mod_version=hdl.version)
        hdl.case_add_suspect(
            case,
            hdl.create_fault("defect.sunos.fmd.nosub", 100, asru=fmri, fru=fmri, resource=fmri),
        )
        hdl.case_solve(case)
        by_class[cls] = case.uuid

    def modules_running(self, hdl: Handle, modules: Iterable[str]) -> int:
        """Repair the defect cases of modules that are running again; return how many."""
        running = set(modules)
        repaired = 0
        for case in hdl.cases():
            if case.data.get("module") not in running or not case.is_solved:
                continue
            defect = any(s["class"] in _MODULE_DEFECTS for s in case.suspects)
            if defect and hdl.case_repair(case):
                repaired += 1
        if repaired:
            hdl.stat("recovered", "defect cases repaired because their module runs again").incr(
                repaired
            )
        return repaired

    def module_failed(self, hdl: Handle, module: str, version: str, error: str) -> None:
        """Open and solve a ``defect.sunos.fmd.module`` case for a failed module."""
        hdl.stat("module").incr()
        self._defect(hdl, "defect.sunos.fmd.module", module, version, error)

    def config_error(self, hdl: Handle, module: str, version: str, error: str) -> None:
        """Open and solve a ``defect.sunos.fmd.config`` case for an invalid .conf file."""
        hdl.stat("config").incr()
        self._defect(hdl, "defect.sunos.fmd.config", module, version, error)

    @staticmethod
    def _defect(hdl: Handle, cls: str, module: str, version: str, error: str) -> None:
        case = hdl.case_open({"module": module, "error": error})
        fmri = FmdFmri(mod_name=module, mod_version=version)
        hdl.case_add_suspect(case, hdl.create_fault(cls, 100, asru=fmri, fru=fmri, resource=fmri))
        hdl.case_solve(case)
