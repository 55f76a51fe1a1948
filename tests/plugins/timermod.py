"""Test plug-in: on its first event installs a one-hour timer (and a canary
one second earlier); counts expiries in the ``fired`` and ``canary`` stats."""

from __future__ import annotations

from typing import Any

from fmd.module import Plugin

HOUR_NS = 3600 * 10**9


class TimerTest(Plugin):
    name = "timer-test"
    description = "Timer test module"
    subscriptions = ("ereport.timer.*",)

    def init(self, hdl: Any) -> None:
        hdl.stat("fired", "the one-hour timer expired")
        hdl.stat("canary", "the canary timer expired")
        hdl.stat("bad_arg", "a timeout arrived with an unexpected argument")
        self.installed = False

    def recv(self, hdl: Any, ev: Any) -> None:
        if not self.installed:
            self.installed = True
            hdl.timer_install(HOUR_NS, "hour")
            hdl.timer_install(HOUR_NS - 10**9, "canary")

    def timeout(self, hdl: Any, timer_id: int, arg: Any) -> None:
        if arg == "hour":
            hdl.stat("fired").incr()
        elif arg == "canary":
            hdl.stat("canary").incr()
        else:
            hdl.stat("bad_arg").incr()
