"""The README stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from fmd.config import DAEMON_PROPERTIES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_property_is_documented_with_its_default() -> None:
    """Each daemon property appears in the README table with its type and default."""
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| (\w+ \| [^|]+) \|", README, re.M))
    for spec in DAEMON_PROPERTIES:
        default = f"`{spec.default}`" if spec.default else "(empty)"
        assert rows.get(spec.name) == f"{spec.type.value} | {default}", spec.name


def test_readme_documents_no_unknown_property() -> None:
    """The README's property table lists nothing the daemon does not know."""
    names = set(
        re.findall(
            r"^\| `([a-z_]+\.?[a-z_.]*)` \| (?:enum|string|bool|uint32|size|time)", README, re.M
        )
    )
    assert names == {s.name for s in DAEMON_PROPERTIES}


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs exactly the README's test command."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    block = re.search(r"Install the test extras.*?```sh\n(.*?)\n```", README, re.S)
    assert block is not None
    assert block.group(1).strip() in ci
