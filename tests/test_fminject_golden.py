"""fminject's own output, line for line (golden files): the check of a program in
the injection language with errors, and of a valid one, with -n (no daemon)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.goldens import golden
from tests.test_injlang import REFERENCE

BAD = """\
fmridef cpu { uint8_t version; string scheme; uint32_t cpuid; };
evdef ereport.cpu.generic-x86.l2cache { uint8_t version; fmri cpu detector; };
fmri cpu cpu0 = { 1, "cpu", 300000000000 };
event ereport.cpu.generic-x86.l2cache ce = { 0, cpu0, 7 };
repeat 2 nosuch;
addhrtime 1 fortnight;
"""


def fminject(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fmd.cli.fminject", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_reports_every_error_with_its_line(tmp_path: Path) -> None:
    """-n on a program with errors: one 'fminject: FILE:LINE: message' per error, exit 1."""
    (tmp_path / "bad.inj").write_text(BAD)
    out = fminject(tmp_path, "-n", "bad.inj")
    assert out.returncode == 1
    text = (out.stdout + out.stderr).rstrip("\n")
    assert text == golden("fminject", "check-bad.txt", text)


def test_check_of_a_valid_program(tmp_path: Path) -> None:
    """-n on the reference program: every generated event is valid, exit 0."""
    (tmp_path / "l2.inj").write_text(REFERENCE)
    out = fminject(tmp_path, "-n", "l2.inj")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.rstrip("\n") == golden("fminject", "check-ok.txt", out.stdout.rstrip("\n"))
