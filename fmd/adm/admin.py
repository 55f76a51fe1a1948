"""The administrative control requests: ``fmadm faulty`` and the requests that
change fmd's state (repaired, replaced, acquit, flush, rotate, load, unload,
reset, import.rasdaemon).

The changing requests are registered as *mutating*: the control server
serves them only to root or to the user fmd runs as.  Each one answers only
once its change is durable: a repair runs on the thread of the module that
owns the case, which then checkpoints, and the request waits for that
checkpoint's commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fmd import asru
from fmd.adm.requests import store_health
from fmd.adm.server import AdmServer, bad_arg, bool_arg, opt_str_arg, str_arg
from fmd.ckpt import CheckpointOp
from fmd.errors import AdmError, ModuleError
from fmd.module import ModuleRunner
from fmd.states import CaseFlag, CaseState
from fmd.store.rsrc import solved_cases

if TYPE_CHECKING:
    from fmd.daemon import Daemon

_WAIT = 60.0


def register_admin(adm: AdmServer, daemon: Daemon) -> None:
    """Register ``faulty`` and the mutating administrative requests."""
    adm.register("faulty", lambda req: faulty(daemon, req))
    adm.register("repair", lambda req: repair(daemon, req), mutating=True)
    adm.register("rotate", lambda req: rotate(daemon, req), mutating=True)
    adm.register("load", lambda req: load(daemon, req), mutating=True)
    adm.register("unload", lambda req: unload(daemon, req), mutating=True)
    adm.register("reset", lambda req: reset(daemon, req), mutating=True)
    adm.register("import.rasdaemon", lambda req: import_rasdaemon(daemon, req), mutating=True)


CPU_FAULT_PREFIX: Final = "fault.cpu."


def _host(daemon: Daemon) -> dict[str, str]:
    auth = dict(daemon.platform.authority)
    return {
        "host": auth.get("server-id", ""),
        "platform": auth.get("product-id", ""),
        "chassis-id": auth.get("chassis-id", ""),
        "product-sn": auth.get("product-sn", ""),
    }


def _virtual_note(daemon: Daemon, cls: str) -> dict[str, str]:
    """``{"note": ...}`` for a CPU fault diagnosed in a virtual machine, else nothing."""
    virt = daemon.platform.virtualization
    if not virt.is_guest or not cls.startswith(CPU_FAULT_PREFIX):
        return {}
    return {
        "note": f"a virtual CPU of this {virt.hypervisor or 'unknown'} virtual machine: "
        "the physical fault, if any, belongs to the host"
    }


def faulty(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """The cases ``fmadm faulty`` shows, with their message texts, most severe first."""
    uuid = opt_str_arg(req, "uuid", "a case uuid")
    show_all = bool_arg(req, "all") or uuid is not None
    with daemon.store.reader() as conn:
        cases = solved_cases(conn, uuids=[uuid] if uuid else None)
    out = []
    for case in cases:
        msg = daemon.dicts.message(case["code"] or "")
        case["severity"] = msg.severity if msg else ""
        if not show_all and not asru.is_visible(case):
            continue
        out.append(
            {
                "uuid": case["uuid"],
                "code": case["code"],
                "severity": case["severity"],
                "type": msg.type if msg else "",
                "time_ns": case["diag_time_ns"],
                "state": CaseState(case["state"]).name.lower(),
                "module": case["module"],
                "ereports": int(case.get("ereports") or 0),
                "injected": bool(case["flags"] & CaseFlag.INJECTED),
                "invisible": bool(case["flags"] & CaseFlag.INVISIBLE),
                "description": msg.description_with_url() if msg else "",
                "response": msg.response if msg else "",
                "impact": msg.impact if msg else "",
                "action": msg.action if msg else "",
                "suspects": [
                    {
                        "class": s["class"],
                        "certainty": s["certainty"],
                        "asru": s["asru"],
                        "fru": s["fru"],
                        "resource": s["resource"],
                        "location": s["location"],
                        "fault-status": s["status"],
                        "status": asru.asru_status(s["status"]),
                        "fru-status": asru.fru_status(s["status"]),
                        **_virtual_note(daemon, str(s["class"])),
                        "responses": [
                            {
                                "module": r["module"],
                                "action": r["action"],
                                "ok": r["ok"],
                                "detail": r["detail"],
                            }
                            for r in s["responses"]
                        ],
                    }
                    for s in case["suspects"]
                ],
            }
        )
    out.sort(key=lambda c: asru.sort_key({**c, "diag_time_ns": c["time_ns"]}))
    return {"cases": out, "store": store_health(daemon), **_host(daemon)}


def _selection(daemon: Daemon, verb: str, target: str, uuid: str | None) -> asru.Selection:
    with daemon.store.reader() as conn:
        cases = [c for c in solved_cases(conn) if c["state"] < CaseState.REPAIRED]
    if verb == "acquit" and uuid is None:
        # "fmadm acquit UUID": the whole case, when the operand names one.
        case = next((c for c in cases if c["uuid"] == target.lower()), None)
        if case is not None:
            return asru.Selection({case["uuid"]: [int(s["idx"]) for s in case["suspects"]]})
    sel = asru.select_suspects(cases, target, uuid)
    if not sel and uuid is not None:
        # Two operands: the reference tries both orders.
        sel = asru.select_suspects(cases, uuid, target)
    return sel


def _on_owner(runner: ModuleRunner, uuid: str, reason: int, indexes: list[int]) -> bool:
    """Repair the suspects on the owning module's thread; wait for the commit."""

    def run() -> tuple[bool, CheckpointOp | None]:
        hdl = runner.handle
        case = hdl.case_get(uuid)
        if case is None:
            return False, None
        changed = hdl.case_repair(case, reason, indexes)
        return changed, hdl.checkpoint(dict(runner.last_seen)) if changed else None

    changed, op = runner.call(run, wait=_WAIT)
    if op is not None:
        if not op.finished.wait(_WAIT):
            raise AdmError(f"the repair of case {uuid} was not stored within {_WAIT:.0f} s")
        if op.error is not None:
            raise AdmError(f"the repair of case {uuid} could not be stored: {op.error}")
    return bool(changed)


def repair(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """``fmadm repaired|replaced|acquit|flush``: mark the selected suspects."""
    verb = str_arg(req, "verb", "a repair verb", choices=list(asru.REASONS))
    target = str_arg(req, "target", "a resource FMRI, a FRU label or a case uuid").strip()
    if not target:
        raise AdmError("a resource FMRI, a FRU label or a case uuid is required")
    uuid = opt_str_arg(req, "uuid", "a case uuid")
    sel = _selection(daemon, verb, target, uuid or None)
    if not sel:
        where = f" in case {uuid}" if uuid else ""
        raise AdmError(
            f"{target} is not a suspect{where} of any diagnosis that is still open; "
            "see 'fmadm faulty -a'"
        )
    done: list[str] = []
    errors: list[str] = []
    for case_uuid, indexes in sel.by_case.items():
        runner = daemon.case_owner(case_uuid)
        if runner is None or not runner.active:
            errors.append(f"case {case_uuid}: the module that diagnosed it is not loaded")
            continue
        try:
            if _on_owner(runner, case_uuid, asru.REASONS[verb], indexes):
                done.append(case_uuid)
        except (ModuleError, AdmError) as exc:
            errors.append(f"case {case_uuid}: {exc}")
    if errors and not done:
        raise AdmError("; ".join(errors))
    return {"target": target, "cases": done, "errors": errors}


def rotate(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """``fmadm rotate errlog|fltlog``: move the settled part of a log to ``<log>.0``."""
    from fmd.store.rotate import rotate_log

    name = str_arg(req, "log", "a log name", choices=("errlog", "fltlog"))
    log_dir = daemon.paths.log_dir
    now = daemon.clock.now_ns()
    gid = daemon.gid
    result = daemon.writer.call(
        lambda tx: rotate_log(tx.conn, name, log_dir, now_ns=now, gid=gid), timeout=_WAIT
    )
    return {
        "log": name,
        "path": str(result.path) if result.path is not None else None,
        "moved": result.moved,
    }


def load(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """``fmadm load PATH``: load a plug-in file."""
    path = Path(str_arg(req, "path", "the absolute path of a plug-in file"))
    if not path.is_absolute():
        raise bad_arg("path", "the absolute path of a plug-in file", str(path))
    if not path.is_file():
        raise AdmError(f"cannot load {path}: no such file")
    runner = daemon.load_module(path)
    return {"module": runner.name, "status": str(runner.state.value)}


def unload(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """``fmadm unload MODULE``."""
    runner = daemon.unload_module(str_arg(req, "module", "a module name"))
    return {"module": runner.name}


def reset(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """``fmadm reset [-s serd] MODULE``: one SERD engine, or the module's saved state."""
    name = str_arg(req, "module", "a module name")
    serd = opt_str_arg(req, "serd", "a SERD engine name")
    runner = daemon.runners.get(name)
    if runner is None:
        raise AdmError(f"no module named {name!r}; see 'fmadm config'")
    if serd is None:
        daemon.reset_module(name)
        return {"module": name}

    def run() -> CheckpointOp:
        hdl = runner.handle
        if not hdl.serd_exists(serd):
            raise ModuleError(
                f"module {name} has no SERD engine {serd!r}; see 'fmstat -s -m {name}'"
            )
        hdl.serd_reset(serd)
        return hdl.checkpoint(dict(runner.last_seen))

    op: CheckpointOp = runner.call(run, wait=_WAIT)
    op.finished.wait(_WAIT)
    return {"module": name, "serd": serd}


def import_rasdaemon(daemon: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    """``fminject --format rasdaemon PATH``: import a rasdaemon database's new rows once."""
    from fmd.xprts.rasdaemon import import_database

    path = Path(str_arg(req, "path", "the absolute path of a rasdaemon database"))
    if not path.is_absolute():
        raise bad_arg("path", "the absolute path of a rasdaemon database", str(path))
    if daemon.ingest is None:
        raise AdmError("fmd is still starting; try again")
    return import_database(daemon.ingest, daemon.store, path)
