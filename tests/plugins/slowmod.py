"""Test plug-in: blocks on its first event until the file named by ``gate``
exists, takes ``delay`` over each event, and checks that events arrive once
each and in order of ``n``."""

from __future__ import annotations

import os
import time
from typing import Any

from fmd.config import PropSpec, PropType
from fmd.module import Plugin


class Slow(Plugin):
    name = "slow"
    description = "Slow test module"
    subscriptions = ("ereport.slow.*",)
    properties = (
        PropSpec("gate", PropType.STRING, "", "file whose creation releases recv"),
        PropSpec("delay", PropType.TIME, "0", "time taken over each event"),
    )

    def init(self, hdl: Any) -> None:
        hdl.stat("received", "events received")
        hdl.stat("next", "the n expected next")
        hdl.stat("disorder", "events out of order or repeated")
        # The n expected next survives restarts (the checkpoint keeps it).
        hdl.stat("next").value = int(hdl.specific.get("next", 0))
        self.gated = False

    def recv(self, hdl: Any, ev: Any) -> None:
        gate = hdl.prop("gate")
        deadline = time.monotonic() + 60
        while not self.gated and gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.gated = True
        delay = int(hdl.prop("delay"))
        if delay:
            time.sleep(delay / 1e9)
        hdl.stat("received").incr()
        if ev.payload.get("n") != hdl.stat("next").value:
            hdl.stat("disorder").incr()
        hdl.stat("next").value = ev.payload.get("n", -1) + 1
        hdl.specific["next"] = hdl.stat("next").value
