"""Test plug-in: counts the ``ereport.count.*`` events it receives."""

from __future__ import annotations

from typing import Any

from fmd.module import Plugin


class Counter(Plugin):
    name = "counter"
    description = "Counting test module"
    subscriptions = ("ereport.count.*",)

    def init(self, hdl: Any) -> None:
        hdl.stat("received", "events received")

    def recv(self, hdl: Any, ev: Any) -> None:
        hdl.stat("received").incr()
