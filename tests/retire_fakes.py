"""Fake hosts for the retire agent's backends: a sysfs/procfs/debugfs tree and Xen tools.

Linux: :func:`make_fake_sysfs` builds the files the linux backend writes.  They
are plain files, so they cannot emulate the kernel: a write simply replaces the
content (the backend opens with O_TRUNC, as ``echo >`` does), and reading
``online`` back returns what was written, which is also what the kernel shows
after a successful hotplug.  Tests therefore check what was written, through
:func:`read_cpu_online` and :func:`offlined_pages`, after each call.  Nothing
poisons pages here: :func:`make_fake_procfs` writes a ``kpageflags`` with chosen
frames already marked HWPOISON, to exercise the status and "already retired"
paths.

Xen: ``tests/fakes/xen-hptool`` and ``tests/fakes/xenpm`` print the real tools'
messages and keep the host's state in a JSON file (see their docstrings for the
environment variables that make them fail).  :func:`fake_xen_path` gives a
directory holding them and the environment to run them with;
:func:`xen_calls` and :func:`xen_state` read back what they did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FAKES = Path(__file__).resolve().parent / "fakes"
KPF_HWPOISON = 1 << 19


def make_fake_sysfs(root: Path, cpus: int = 16, hotplug_cpu0: bool = False) -> Path:
    """Create a sysfs tree at ``root`` with ``cpus`` online CPUs and the page offline files.

    Every ``cpuN/online`` holds ``"1\\n"``; cpu0 has none (it is not
    hot-pluggable) unless ``hotplug_cpu0``.  Returns ``root`` (the sysfs root).
    """
    cpu_dir = root / "devices" / "system" / "cpu"
    for n in range(cpus):
        d = cpu_dir / f"cpu{n}"
        d.mkdir(parents=True, exist_ok=True)
        if n != 0 or hotplug_cpu0:
            (d / "online").write_text("1\n")
    memory = root / "devices" / "system" / "memory"
    memory.mkdir(parents=True, exist_ok=True)
    for name in ("soft_offline_page", "hard_offline_page"):
        (memory / name).write_text("")
    return root


def make_fake_procfs(
    root: Path, poisoned_pfns: Iterable[int] = (), frames: int = 1024, boot: str = "boot-1"
) -> Path:
    """Create ``root/kpageflags`` for ``frames`` page frames, those in
    ``poisoned_pfns`` flagged HWPOISON, and the kernel's boot id ``boot``.
    Returns ``root`` (the procfs root)."""
    poisoned = set(poisoned_pfns)
    frames = max([frames, *(p + 1 for p in poisoned)])
    words = bytearray()
    for pfn in range(frames):
        flags = KPF_HWPOISON if pfn in poisoned else 0
        words += flags.to_bytes(8, "little")
    root.mkdir(parents=True, exist_ok=True)
    (root / "kpageflags").write_bytes(bytes(words))
    reboot(root, boot)
    return root


def reboot(procfs: Path, boot: str) -> None:
    """Give the fake kernel a new boot id, as a reboot does."""
    random = procfs / "sys" / "kernel" / "random"
    random.mkdir(parents=True, exist_ok=True)
    (random / "boot_id").write_text(f"{boot}\n")


def make_fake_debugfs(root: Path) -> Path:
    """Create ``root/hwpoison/unpoison-pfn`` (empty).  Returns ``root`` (the debugfs root)."""
    d = root / "hwpoison"
    d.mkdir(parents=True, exist_ok=True)
    (d / "unpoison-pfn").write_text("")
    return root


def read_cpu_online(root: Path, n: int) -> str:
    """The content of ``cpuN/online`` under sysfs ``root``, stripped."""
    return (root / "devices" / "system" / "cpu" / f"cpu{n}" / "online").read_text().strip()


def offlined_pages(root: Path) -> dict[str, int]:
    """The address last written to each page offline file under sysfs ``root``:
    ``{"soft": addr, "hard": addr}``, leaving out a file never written (or not a file)."""
    out: dict[str, int] = {}
    memory = root / "devices" / "system" / "memory"
    for mode in ("soft", "hard"):
        path = memory / f"{mode}_offline_page"
        if path.is_file() and path.read_text().strip():
            out[mode] = int(path.read_text().strip(), 16)
    return out


def written_text(path: Path) -> str:
    """The raw content of a fake file, to check the exact form written (``0x...``)."""
    return path.read_text()


def fake_xen_path(
    tmp_path: Path, *, xenpm: bool = True, ncpus: int = 16
) -> tuple[Path, dict[str, str]]:
    """A directory with the fake ``xen-hptool`` (and ``xenpm`` unless ``xenpm=False``)
    and the variables to run them with: ``PATH`` (that directory first), the log
    and state files under ``tmp_path`` and the number of CPUs.

    Apply the variables with ``monkeypatch.setenv`` or pass ``os.environ | env``
    to a subprocess.
    """
    bin_dir = tmp_path / "xen-bin"
    bin_dir.mkdir(exist_ok=True)
    tools = ["xen-hptool", "xenpm"] if xenpm else ["xen-hptool"]
    for tool in tools:
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(FAKES / tool)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_XEN_HPTOOL_LOG": str(tmp_path / "xen-hptool.log"),
        "FAKE_XEN_HPTOOL_STATE": str(tmp_path / "xen-state.json"),
        "FAKE_XEN_NCPUS": str(ncpus),
    }
    return bin_dir, env


def xen_calls(env: dict[str, str], tool: str = "xen-hptool") -> list[list[str]]:
    """The arguments of each call of ``tool`` (after its name), oldest first."""
    log = Path(env["FAKE_XEN_HPTOOL_LOG"])
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [c["args"] for c in calls if c["tool"] == tool]


def xen_state(env: dict[str, str]) -> dict[str, Any]:
    """The fake host's state file: ``ncpus``, ``offline_cpus`` and ``pages`` (mfn hex -> status)."""
    path = Path(env["FAKE_XEN_HPTOOL_STATE"])
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data
