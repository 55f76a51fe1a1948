"""The control requests fmd answers: what fmadm and fmstat ask the daemon.

Each request is a function of the running :class:`~fmd.daemon.Daemon` and the
request object; :func:`register_requests` puts them on the control socket.
Requests that read a module's live state (its SERD engines) run on the module's
own thread; the others read only counters that are safe to read from any thread.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Final

from fmd.adm.server import AdmServer, number_arg, str_arg
from fmd.clock import SimulatedClock
from fmd.errors import ModuleError

if TYPE_CHECKING:
    from fmd.daemon import Daemon
    from fmd.module import ModuleRunner

QUIESCE_DEFAULT_S: Final = 60.0
"""How long ``quiesce`` waits for the modules when the request does not say."""
QUIESCE_MAX_S: Final = 3600.0
"""The longest wait a ``quiesce`` request may ask for."""


def register_requests(adm: AdmServer, daemon: Daemon) -> None:
    """Register every control request of ``daemon`` on ``adm``."""
    from fmd.daemon import VERSION

    adm.register(
        "ping",
        lambda req: {"pid": os.getpid(), "version": VERSION, "root": str(daemon.paths.root)},
    )
    adm.register("config", lambda req: module_list(daemon))
    adm.register("stats", lambda req: stats(daemon))
    adm.register("module.stats", lambda req: module_stats(daemon, req))
    adm.register("serd", lambda req: serd_engines(daemon, req))
    adm.register("quiesce", lambda req: daemon.quiesce(_quiesce_timeout(req)))


def _quiesce_timeout(req: dict[str, Any]) -> float:
    """The seconds ``quiesce`` may wait (``timeout``, 0 to 1 hour)."""
    return number_arg(
        req,
        "timeout",
        "a number of seconds",
        default=QUIESCE_DEFAULT_S,
        low=0.0,
        high=QUIESCE_MAX_S,
    )


def module_list(daemon: Daemon) -> dict[str, Any]:
    """``fmadm config``: every module with its status, and the plug-ins that failed to load."""
    mods = [
        {
            "name": r.name,
            "version": r.version,
            "status": str(r.state.value),
            "description": r.description,
            "origin": r.origin,
            "error": r.error,
        }
        for r in sorted(daemon.runners.values(), key=lambda r: r.name)
    ]
    ingest = daemon.ingest
    xprts = ingest.transport_stats() if ingest else []
    sources = [
        {
            "name": t["name"],
            "kind": t["kind"],
            "state": t["state"],
            "reason": t.get("reason", ""),
            "chosen": daemon.source_choice.get(t["name"], ""),
        }
        for t in xprts
    ]
    sources += [
        {"name": name, "kind": name, "state": "off", "reason": "", "chosen": why}
        for name, why in daemon.source_choice.items()
        if name not in {t["name"] for t in xprts}
    ]
    platform = {
        "name": type(daemon.platform).__name__.removesuffix("Platform").lower(),
        "virtualization": daemon.platform.virtualization.to_json(),
        "description": daemon.platform.virtualization.describe(),
    }
    return {
        "modules": mods,
        "load_errors": list(daemon.load_errors),
        "transports": sources,
        "platform": platform,
    }


def _runner(daemon: Daemon, req: dict[str, Any]) -> ModuleRunner:
    name = str_arg(req, "module", "a module name")
    runner = daemon.runners.get(name)
    if runner is None:
        raise ModuleError(f"no module named {name!r}; see 'fmadm config'")
    return runner


def module_stats(daemon: Daemon, req: dict[str, Any]) -> list[dict[str, Any]]:
    """``fmstat -m``: a module's own statistics."""
    r = _runner(daemon, req)
    return [
        {"name": s.name, "value": s.value, "description": s.description} for s in r.handle.stats()
    ]


def serd_engines(daemon: Daemon, req: dict[str, Any]) -> list[dict[str, Any]]:
    """``fmstat -s -m``: a module's SERD engines, read on the module's thread."""
    r = _runner(daemon, req)

    def snapshot() -> list[dict[str, Any]]:
        out = []
        for eng in r.handle.serd:
            oldest = eng.events[0].time_ns if eng.events else None
            newest = eng.events[-1].time_ns if eng.events else None
            # The span of the events held: the figure compared with T.
            span = eng.events[-1].time_ns - eng.events[0].time_ns if eng.events else 0
            out.append(
                {
                    "name": eng.name,
                    "n": eng.n,
                    "t": eng.t_ns,
                    "count": eng.count,
                    "fired": eng.fired,
                    "delta": span,
                    "oldest": oldest,
                    "newest": newest,
                }
            )
        return out

    if r.active:
        result: list[dict[str, Any]] = r.call(snapshot, wait=30.0)
        return result
    return snapshot()


def stats(daemon: Daemon) -> dict[str, Any]:
    """``fmstat``: per-module, writer, dispatch and transport counters."""
    mods = []
    for r in sorted(daemon.runners.values(), key=lambda r: r.name):
        recv = r.stats["ev_recv"]
        waited = r.queue.wait_ns
        busy = r.stats["busy_ns"]
        mods.append(
            {
                "name": r.name,
                "status": str(r.state.value),
                "ev_recv": recv,
                "ev_acpt": r.handle.accepted,
                "queue": len(r.queue),
                "wait_ns": waited,
                "busy_ns": busy,
                # Mean queue wait plus module time per event (fmstat -a); the
                # busy time covers whole batches, checkpoints included.
                "svc_t_ns": (waited + busy) // recv if recv else 0,
                "enqueued": r.queue.stats["enqueued"],
                "open": r.handle.open_cases,
                "opened": r.handle.cases_opened,
                "solved": r.handle.cases_solved,
                "bufsz": r.handle.buf_size(),
                "overflowed": r.queue.stats["overflowed"],
            }
        )
    ingest = daemon.ingest
    xprts = ingest.transport_stats() if ingest else []
    return {
        "uptime_ns": time.time_ns() - daemon.started_ns,
        "clock": daemon.clock.now_ns(),
        "simulated": isinstance(daemon.clock, SimulatedClock),
        "writer": dict(daemon.writer.stats),
        "dispatch": dict(daemon.dispatcher.stats),
        "modules": mods,
        "transports": xprts,
        "store": store_health(daemon),
    }


def store_health(daemon: Daemon) -> dict[str, Any]:
    """Whether the store takes new events (``fmstat`` and ``fmadm faulty`` warn when not)."""
    report = daemon.health.report().as_dict()
    report["held_ops"] = daemon.writer.stats.get("held_ops", 0)
    report["refused_events"] = daemon.health.refused
    return report
