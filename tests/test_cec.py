"""Detection of the kernel's correctable-errors collector (fmd.hw.cec) on fake trees."""

from __future__ import annotations

import gzip
from pathlib import Path

from fmd.hw.cec import ACTIVE, INACTIVE, UNKNOWN, detect_cec

RELEASE = "6.1.0-57-amd64"


def tree(
    tmp_path: Path,
    *,
    cec_dir: bool = False,
    config: str | None = None,
    cmdline: str = "quiet",
    gz: bool = False,
) -> dict[str, Path]:
    debugfs, proc, boot = tmp_path / "debug", tmp_path / "proc", tmp_path / "boot"
    for d in (debugfs, proc, boot):
        d.mkdir()
    (proc / "cmdline").write_text(cmdline + "\n")
    if cec_dir:
        (debugfs / "ras" / "cec").mkdir(parents=True)
        (debugfs / "ras" / "cec" / "action_threshold").write_text("2\n")
        (debugfs / "ras" / "cec" / "decay_interval").write_text("86400\n")
    if config is not None:
        if gz:
            with gzip.open(proc / "config.gz", "wt") as fh:
                fh.write(config)
        else:
            (boot / f"config-{RELEASE}").write_text(config)
    return {"debugfs": debugfs, "proc": proc, "boot": boot}


def test_debugfs_directory_means_active_with_its_settings(tmp_path: Path) -> None:
    """The collector's debugfs directory says it runs, and gives its threshold and decay."""
    state = detect_cec(**tree(tmp_path, cec_dir=True), release=RELEASE)
    assert (state.state, state.action_threshold, state.decay_interval_s) == (ACTIVE, 2, 86400)


def test_built_in_and_not_disabled_is_active(tmp_path: Path) -> None:
    """CONFIG_RAS_CEC=y (from /boot or /proc/config.gz) and no ras=cec_disable: active."""
    assert detect_cec(**tree(tmp_path, config="CONFIG_RAS_CEC=y\n"), release=RELEASE).active
    other = tmp_path / "gz"
    other.mkdir()
    assert detect_cec(**tree(other, config="CONFIG_RAS_CEC=y\n", gz=True), release=RELEASE).active


def test_disabled_on_the_command_line_or_not_built(tmp_path: Path) -> None:
    """ras=cec_disable, or a kernel built without it (Debian's 6.1), means inactive."""
    off = tree(tmp_path, config="CONFIG_RAS_CEC=y\n", cmdline="quiet ras=cec_disable")
    assert detect_cec(**off, release=RELEASE).state == INACTIVE
    other = tmp_path / "b"
    other.mkdir()
    debian = tree(other, config="# CONFIG_RAS_CEC is not set\n")
    assert detect_cec(**debian, release=RELEASE).state == INACTIVE


def test_nothing_to_read_is_unknown(tmp_path: Path) -> None:
    """Without debugfs and without a kernel configuration the answer is unknown, not a guess."""
    state = detect_cec(**tree(tmp_path), release=RELEASE)
    assert (state.state, state.active) == (UNKNOWN, False)
