"""fminject on input in which nothing is recognised: an error ("no records found",
exit 1), not "0 of 0 events accepted" (no daemon needed: it stops before sending)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

XEN_BOOT = (
    "(XEN) Xen version 4.17.2 (mockbuild@) (gcc (GCC) 12.2.1) debug=n\n"
    "(XEN) checking TSC synchronization across 2 CPUs: passed.\n"
    "(XEN) Brought up 2 CPUs\n"
)


def fminject(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fmd.cli.fminject", "-R", str(cwd / "root"), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_prose_only_input_is_no_records_found(tmp_path: Path) -> None:
    """A Xen boot log with no machine check (prose with register words) is refused with
    'no records found' and exit 1, whether sending or only checking (-n)."""
    for args in (("-",), ("-n", "-")):
        out = fminject(tmp_path, *args, stdin=XEN_BOOT)
        assert (out.returncode, out.stdout) == (1, ""), out.stderr
        assert out.stderr == "fminject: <stdin>: no records found (read as mce)\n"


def test_empty_file_is_no_records_found(tmp_path: Path) -> None:
    """An empty file (read as JSON lines) is no records found too."""
    (tmp_path / "empty.json").write_text("# nothing here\n\n")
    out = fminject(tmp_path, "-n", "empty.json")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == "fminject: empty.json: no records found (read as json)\n"


def test_a_bad_record_is_reported_as_such(tmp_path: Path) -> None:
    """Input with a record that fails is not 'no records found': the record's own error."""
    out = fminject(tmp_path, "-n", "-", stdin="CPU 0 BANK 1\nSTATUS 1234\n")
    assert out.returncode == 1
    assert "no records found" not in out.stderr
    assert "VAL (bit 63) clear" in out.stderr
    assert out.stdout == "fminject: 0 of 1 events are valid\n"
