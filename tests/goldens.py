"""Golden files for command output: ``tests/golden/<command>/<name>``.

``FMD_UPDATE_GOLDEN=1`` rewrites the files from the actual output instead of
comparing (review the diff before committing it).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).parent / "golden"


def golden(command: str, name: str, actual: str) -> str:
    """The golden text of ``command``'s ``name`` (rewritten when FMD_UPDATE_GOLDEN=1)."""
    path = ROOT / command / name
    if os.environ.get("FMD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual + "\n")
    return path.read_text().removesuffix("\n")
