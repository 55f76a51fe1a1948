"""Shared fixtures: temporary roots and a running daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.fmdproc import FmdProcess

# Property tests check behaviour, not speed: on a loaded two-core CI machine one
# example may take longer than hypothesis's 200 ms default, which is no failure.
settings.register_profile("fmd", deadline=None)
settings.load_profile("fmd")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def fmd_factory(root: Path) -> Iterator[list[FmdProcess]]:
    """Daemons started by a test are stopped (or killed) when it ends."""
    started: list[FmdProcess] = []
    yield started
    for p in started:
        if p.alive():
            try:
                p.stop(30)
            except Exception:
                p.kill()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The real-kernel tests first: each kind shares one long boot, which then runs
    on one worker beside the rest of the suite instead of after it."""
    items.sort(key=lambda item: item.get_closest_marker("realkernel") is None)
