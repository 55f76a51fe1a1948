"""Test plug-in whose module name is not a valid name (fails validation)."""

from __future__ import annotations

from fmd.module import Plugin


class BadName(Plugin):
    name = "Bad Name!"
