"""What the hostile tests need from the operating system: another user, read-only
mounts, and roots that user can reach."""

from __future__ import annotations

import contextlib
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fmdproc import _env

NOBODY = 65534
"""The unprivileged user the tests run commands as."""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to run commands as another user"
)


def _open_to_others(path: Path) -> bool:
    """Whether any user may execute ``path`` (every directory above it searchable)."""
    real = Path(os.path.realpath(path))
    dirs_ok = all(os.stat(d).st_mode & stat.S_IXOTH for d in real.parents)
    return dirs_ok and os.stat(real).st_mode & (stat.S_IXOTH | stat.S_IROTH) == (
        stat.S_IXOTH | stat.S_IROTH
    )


def _interpreter() -> tuple[str, list[str]]:
    """A Python another user can run, and the extra import path it needs: this one,
    else the system's Python of the same version reading this environment's packages."""
    if _open_to_others(Path(sys.executable)):
        return sys.executable, []
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is None or not _open_to_others(Path(system)):
        pytest.skip(f"no {version} interpreter that uid {NOBODY} may run")
    return system, site.getsitepackages()


def as_nobody(
    prog: str, *args: str, root: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one of the commands in-tree as uid/gid 65534."""
    python, extra_path = _interpreter()
    cmd = [python, "-m", f"fmd.cli.{prog}", "-R", str(root), *args]
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], *extra_path])
    env["HOME"] = "/nonexistent"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
    )


@contextlib.contextmanager
def open_dir(owner: int = 0) -> Iterator[Path]:
    """A fresh directory under /tmp (0755, owned by ``owner``) that every user can
    reach, unlike pytest's private temporary directories; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fmd-hostile-", dir="/tmp"))
    try:
        path.chmod(0o755)
        os.chown(path, owner, owner)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` a read-only bind mount of itself for the duration."""
    directory.mkdir(parents=True, exist_ok=True)
    bind = subprocess.run(
        ["mount", "--bind", str(directory), str(directory)], capture_output=True, text=True
    )
    if bind.returncode != 0:
        pytest.skip(f"bind mounts are not permitted here: {bind.stderr.strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"read-only remounts are not permitted here: {remount.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)
