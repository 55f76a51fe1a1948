"""Test plug-in: raises from ``recv`` on every ``ereport.boom.*`` event."""

from __future__ import annotations

from typing import Any

from fmd.module import Plugin


class Crashy(Plugin):
    name = "crashy"
    description = "Crashing test module"
    subscriptions = ("ereport.boom.*",)

    def recv(self, hdl: Any, ev: Any) -> None:
        raise RuntimeError(f"crashy: deliberate failure on {ev.cls}")
