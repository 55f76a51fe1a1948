"""Test plug-in: loads fine, but the test gives it a broken .conf."""

from __future__ import annotations

from fmd.module import Plugin


class ConfBad(Plugin):
    name = "conf-bad"
    description = "Badly configured test module"
    subscriptions = ("ereport.confbad.*",)
