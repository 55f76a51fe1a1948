"""The long hostile-input run (``bench/fuzz.py`` with its default million inputs per
target), as a test: deselected by default, run with ``pytest -m fuzz_long -s``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.fuzz import DEFAULT_INPUTS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.fuzz_long
@pytest.mark.timeout(6 * 3600)
def test_million_fuzzed_inputs_per_target() -> None:
    """A million fuzzed inputs per target: no crash, failed module, lost or doubled event."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--inputs", str(DEFAULT_INPUTS)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    print(run.stdout, run.stderr)
    assert (run.returncode, run.stderr) == (0, "")
