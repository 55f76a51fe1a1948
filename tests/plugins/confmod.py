"""Test plug-in: a declared property and subscription, overridable by its .conf."""

from __future__ import annotations

from typing import Any

from fmd.config import PropSpec, PropType
from fmd.module import Plugin


class ConfTest(Plugin):
    name = "conf-test"
    description = "Configured test module"
    subscriptions = ("ereport.conf.declared",)
    properties = (PropSpec("threshold", PropType.INT32, "1", "a number set by the .conf"),)

    def init(self, hdl: Any) -> None:
        hdl.stat("threshold", "the value of the threshold property").value = hdl.prop("threshold")
        hdl.stat("received", "events received")

    def recv(self, hdl: Any, ev: Any) -> None:
        hdl.stat("received").incr()
