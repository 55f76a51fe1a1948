"""Restarts with a backlog, on the real daemon: the replay runs behind open sockets
(in order, before anything new), and SIGTERM leaves what is still queued for the
next start's replay instead of waiting for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e


def slow(n: int) -> dict[str, Any]:
    return {"class": "ereport.slow.x", "n": n}


def stats(fmd: FmdProcess, module: str) -> dict[str, int]:
    return {s["name"]: int(s["value"]) for s in fmd.adm("module.stats", module=module)}


def gated(root: Path, fmd_factory: list[FmdProcess], **props: str) -> tuple[FmdProcess, Path]:
    """fmd with the slow test module, which blocks on its first event until the
    returned gate file exists."""
    gate = root.parent / "gate"
    fmd = FmdProcess(root, plugins=["slowmod"], props={"platform": "sim", **props})
    fmd.paths.plugin_conf_dir.mkdir(parents=True, exist_ok=True)
    fmd.paths.plugin_conf("slow").write_text(f"setprop gate {gate}\n")
    fmd_factory.append(fmd)
    return fmd.start(), gate


def test_replay_runs_behind_open_sockets(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """After SIGKILL with events the module never consumed, fmd answers at once
    although the module is still busy with them; new events queue behind the
    replayed ones and every event reaches the module once, in order."""
    fmd, gate = gated(root, fmd_factory)
    assert all(r["ok"] for r in fmd.send_lines(slow(n) for n in range(300)))
    fmd.kill()
    fmd.start()  # ready while the module still blocks on the first replayed event
    assert all(r["ok"] for r in fmd.send_lines(slow(n) for n in range(300, 400)))
    gate.touch()
    fmd.quiesce()
    mine = stats(fmd, "slow")
    assert (mine["received"], mine["disorder"], mine["next"]) == (400, 0, 400)


def test_sigterm_leaves_the_backlog_for_replay(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """SIGTERM with a backlog (a module taking 20 ms per event) stops after
    shutdown.wait, logs how many events are left, and the next start replays them:
    none lost, none twice, in order."""
    fmd, gate = gated(root, fmd_factory, **{"shutdown.wait": "1s"})
    gate.touch()
    fmd.paths.plugin_conf("slow").write_text(f"setprop gate {gate}\nsetprop delay 20ms\n")
    fmd.stop()
    fmd.start()
    assert all(r["ok"] for r in fmd.send_lines(slow(n) for n in range(300)))
    assert fmd.stop(60) == 0
    [left] = [
        orjson.loads(line)
        for line in fmd.stderr().splitlines()
        if "shutdown_left_for_replay" in line
    ]
    assert 0 < left["modules"]["slow"] < 300
    fmd.start()
    fmd.quiesce()
    mine = stats(fmd, "slow")
    assert (mine["received"], mine["disorder"], mine["next"]) == (left["modules"]["slow"], 0, 300)
