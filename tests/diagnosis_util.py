"""Test scaffolding for the diagnosis engines: a sim-platform Handle, ereports, list events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fmd.api import Handle, ModuleContext
from fmd.ckpt import CheckpointOp
from fmd.clock import SimulatedClock
from fmd.config import Properties
from fmd.dictionary import DictionarySet, default_dict_dirs
from fmd.dispq import SubscriptionTree
from fmd.eventq import EventQueue
from fmd.hw.topo import SimPlatform
from fmd.module import ModuleRunner, Plugin
from fmd.protocol import Ereport, ListEvent
from fmd.timerq import TimerQueue

HOUR = 3600 * 10**9
T0 = 1_000_000 * 10**9
DICTS = DictionarySet.load(default_dict_dirs())


@dataclass
class FakeWriter:
    ops: list[CheckpointOp] = field(default_factory=list)

    def submit(self, op: CheckpointOp) -> None:
        self.ops.append(op)


@dataclass
class DiagnosisEnv:
    """A diagnosis module on its Handle, fed ereports, with what it wrote."""

    hdl: Handle
    writer: FakeWriter
    plugin: Plugin
    next_id: int = 1

    def feed(self, ev: Ereport) -> None:
        self.plugin.recv(self.hdl, ev)
        self.hdl.checkpoint({"errlog": ev.id or 0, "fltlog": 0})

    def suspects(self) -> list[ListEvent]:
        return [e for op in self.writer.ops for e in op.list_events if e.cls == "list.suspect"]

    def classes(self) -> list[str]:
        return [e.fault_list[0].cls for e in self.suspects()]

    def stat(self, name: str) -> int:
        return self.hdl.stat(name).value

    def ereport(self, cls: str, t_ns: int, detector: Any, payload: dict[str, Any]) -> Ereport:
        """An ereport with the next id (also its ENA)."""
        eid = self.next_id
        self.next_id += 1
        return Ereport(
            cls=cls,
            ena=eid,
            time_ns=t_ns,
            detector=detector,
            detector_str=detector.to_string(),
            payload=payload,
            id=eid,
        )


def make_handle(
    plugin: Plugin,
    dictionary: str,
    overrides: Iterable[tuple[str, str]] = (),
    *,
    now_ns: int = T0,
    doc: dict[str, Any] | None = None,
) -> tuple[Handle, FakeWriter]:
    """A Handle for the plug-in on the sim platform at ``now_ns``, its properties
    overridden, restored from checkpoint ``doc`` if given, the plug-in initialized on
    it; and the writer that collects its checkpoints."""
    clock = SimulatedClock(now_ns)
    writer = FakeWriter()
    owners: dict[str, Any] = {}
    ctx = ModuleContext(
        clock=clock,
        writer=writer,  # type: ignore[arg-type]
        dicts=DICTS,
        timers=TimerQueue(clock),
        tree=SubscriptionTree(),
        authority=(("server-id", "h"),),
        case_owner=owners.get,
        register_case=lambda u, r: owners.__setitem__(u, r),
        platform=SimPlatform(hostname="h"),
    )
    props = Properties.build(plugin.properties, [(k, v, "test") for k, v in overrides])
    hdl = Handle(ctx, plugin.name, plugin.version, props, [dictionary] if dictionary else [])
    hdl.runner = ModuleRunner(
        plugin,
        hdl,
        EventQueue(10),
        origin="test",
        load_overflow=lambda refs: [],
        on_failure=lambda r, e: None,
    )
    hdl.restore(doc, [])
    plugin.init(hdl)
    return hdl, writer
