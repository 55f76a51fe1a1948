"""Boot a real Debian kernel under QEMU and run a script inside it with the host's fmd.

The guest is a busybox initramfs that mounts the host's root read-only over 9p
(virtio), a tmpfs on ``/mnt`` for writable state, ``/proc``, ``/sys``, ``/dev``
and tracefs, then ``chroot``s into the host's root and runs the given shell
script: the host's venv and its installed fmd run unchanged in the guest.  The
QEMU monitor is a Unix socket, so a test injects machine checks
(``mce CPU BANK STATUS MCGSTATUS ADDR MISC``) while the guest runs.

Steps (each logged with its time; a failure names the step and shows the tail
of the guest console):

1. ``packages``: qemu-system-x86, busybox-static and cpio from Debian's
   registry with ``apt-get`` when missing (root only);
2. ``kernel``: the image package ``linux-image-amd64`` depends on, fetched with
   ``apt-get download`` and extracted once into the user's cache directory
   (``$XDG_CACHE_HOME/fmd-qemu``, else ``~/.cache/fmd-qemu``);
3. ``initramfs``: busybox, the virtio/9p modules, the init script;
4. ``boot``: QEMU in pure emulation (no KVM needed), the console read line by
   line; the guest script talks to the test by printing marker lines.

Facts behind it: ../shared/reference/real-kernel-harness.md.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PACKAGES: Final = ("qemu-system-x86", "busybox-static", "cpio")
QEMU: Final = "qemu-system-x86_64"
BUSYBOX: Final = Path("/bin/busybox")
KERNEL_META: Final = "linux-image-amd64"
# Loaded in this order (each module names its dependencies in its modinfo).
MODULES: Final = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
)
# The host's root is read-only and does not change under the guest: the guest may
# cache it (loose), which makes Python's imports several times faster.
MOUNT_OPTIONS: Final = "trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000"
# A Xen dom0 also needs the hypervisor's device modules and xenfs on /proc/xen
# (the tools' hypercalls go through /proc/xen/privcmd).
XEN_MODULES: Final = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev")
XEN_INIT: Final = "mount -t xenfs xenfs /host/proc/xen || echo @@XENFS-FAILED"
XEN_PACKAGE: Final = "xen-hypervisor-4.17-amd64"
XEN_IMAGE: Final = "xen-4.17-amd64.gz"
XEN_TOOLS: Final = "xen-utils-4.17"
# The QEMU monitor's prompt.
PROMPT: Final = b"(qemu)"
# The guest prints this line when its script ends, with the script's exit code.
EXIT_MARK: Final = "@@GUEST-EXIT"
BOOT_TIMEOUT_S: Final = 240.0
# Terminal control sequences the firmware writes to the console.
_ANSI: Final = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[A-Za-z])")

_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /mods/$m.ko || echo "@@INSMOD-FAILED $m"; done
mkdir -p /host
mount -t 9p -o {mount_options} host /host || echo "@@9P-FAILED"
mount -t tmpfs tmpfs /host/mnt
mount --bind /proc /host/proc
mount --bind /sys /host/sys
mount --bind /dev /host/dev
mount -t tracefs tracefs /host/sys/kernel/tracing
{extra}
chroot /host /bin/sh {script} > /dev/console 2>&1
echo "{exit_mark} $?"
poweroff -f
"""


# Every guest script starts in this checkout with its venv's Python as $P.
_SCRIPT_HEAD = """#!/bin/sh
cd {repo}
export PYTHONPATH={repo} PYTHONDONTWRITEBYTECODE=1 HOME=/mnt
P={python}
"""
REPO: Final = Path(__file__).resolve().parents[2]


def write_script(workdir: Path, body: str) -> Path:
    """The shell script a guest runs: in this checkout (the host's root is the
    guest's), with this interpreter as ``$P``, then ``body``."""
    script = workdir / "run.sh"
    script.write_text(_SCRIPT_HEAD.format(repo=REPO, python=sys.executable) + body)
    script.chmod(0o755)
    return script


def marked(console: list[str], mark: str) -> dict[str, str]:
    """The guest's ``@@<mark> [time] name text`` lines (time optional): name -> text."""
    pattern = re.compile(rf"@@{mark} (?:\[[0-9.]+\] )?(\w+) (.*)$")
    found: dict[str, str] = {}
    for line in console:
        m = pattern.search(line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


class HarnessError(Exception):
    """A step of the harness failed; the message names it."""


class Unavailable(Exception):
    """QEMU or the packages cannot be had here (the tests skip with this reason)."""


def _log(step: str, started: float, detail: str = "") -> None:
    """One step done, with its time (on stderr, where pytest shows it on failure)."""
    sys.stderr.write(f"[harness] {step}: {time.monotonic() - started:.1f} s {detail}\n")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fmd-qemu"


def ensure_packages() -> None:
    """Install what is missing with apt-get (root only), else say why not."""
    missing = [p for p, tool in zip(PACKAGES, (QEMU, str(BUSYBOX), "cpio"), strict=True)
               if shutil.which(tool) is None and not Path(tool).exists()]  # fmt: skip
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"needs {', '.join(missing)} (apt-get as root)")
    started = time.monotonic()
    _apt_install(missing)
    _log("packages", started, " ".join(missing))


def _apt_install(packages: list[str]) -> None:
    out = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=False,
    )
    if out.returncode != 0:
        raise Unavailable(f"apt-get install {' '.join(packages)} failed: {out.stderr[-300:]}")


def _apt_extract(package: str, root: Path) -> None:
    """Download ``package`` (never a glob: it would fetch every match) into ``root``."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache_dir()))
    try:
        out = subprocess.run(
            ["apt-get", "download", package], cwd=work, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        debs = list(work.glob("*.deb"))
        if out.returncode != 0 or not debs:
            raise Unavailable(f"apt-get download {package} failed: {out.stderr[-300:]}")
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Kernel:
    """An extracted Debian kernel: its image and its module tree."""

    release: str
    vmlinuz: Path
    modules: Path


def ensure_kernel() -> Kernel:
    """The Debian kernel the meta package depends on, downloaded and extracted once."""
    started = time.monotonic()
    dep = subprocess.run(
        ["apt-cache", "depends", KERNEL_META], capture_output=True, text=True, check=False
    )
    names = [
        line.split(":", 1)[1].strip()
        for line in dep.stdout.splitlines()
        if line.strip().startswith("Depends:") and "linux-image-" in line
    ]
    if not names:
        raise Unavailable(f"apt-cache knows no {KERNEL_META}")
    package = names[0]
    release = package.removeprefix("linux-image-")
    root = cache_dir() / release
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        _apt_extract(package, root)
        _log("kernel", started, f"{package} extracted to {root}")
    return Kernel(release, vmlinuz, root / "lib" / "modules" / release)


def build_initramfs(kernel: Kernel, script: Path, out: Path, *, xen: bool = False) -> Path:
    """The initramfs (gzip'd newc cpio) that runs ``script`` in the host's root
    (as a Xen dom0's with ``xen``)."""
    modules = MODULES + XEN_MODULES if xen else MODULES
    started = time.monotonic()
    tree = Path(tempfile.mkdtemp(prefix="fmd-initramfs-"))
    try:
        for d in ("bin", "mods", "proc", "sys", "dev", "host"):
            (tree / d).mkdir()
        shutil.copy(BUSYBOX, tree / "bin" / "busybox")
        for name in modules:
            found = next(kernel.modules.rglob(f"{name}.ko"), None)
            if found is None:
                raise HarnessError(f"initramfs: module {name}.ko not in {kernel.modules}")
            shutil.copy(found, tree / "mods" / f"{name}.ko")
        init = tree / "init"
        init.write_text(
            _INIT.format(
                modules=" ".join(modules),
                extra=XEN_INIT if xen else "",
                mount_options=MOUNT_OPTIONS,
                script=script,
                exit_mark=EXIT_MARK,
            )
        )
        init.chmod(0o755)
        files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
        archive = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=files,
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        out.write_bytes(gzip.compress(archive, compresslevel=1))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    _log("initramfs", started, str(out))
    return out


def ensure_xen() -> Path:
    """The Xen hypervisor image (a multiboot ELF QEMU loads directly), fetched and
    extracted once, and Xen's tools installed on the host (dom0 runs them from the
    host's root)."""
    started = time.monotonic()
    if shutil.which("xen-hptool") is None:
        if os.geteuid() != 0:
            raise Unavailable(f"needs {XEN_TOOLS} (apt-get as root)")
        _apt_install([XEN_TOOLS])
        _log("xen tools", started, XEN_TOOLS)
    root = cache_dir() / "xen"
    image = root / "boot" / XEN_IMAGE.removesuffix(".gz")
    if not image.exists():
        _apt_extract(XEN_PACKAGE, root)
        packed = root / "boot" / XEN_IMAGE
        image.write_bytes(gzip.decompress(packed.read_bytes()))
        _log("xen", started, f"{XEN_PACKAGE} extracted to {root}")
    return image


@dataclass
class Guest:
    """A running guest: its console lines, its monitor, and its exit code."""

    proc: subprocess.Popen[bytes]
    monitor_path: Path
    console: list[str] = field(default_factory=list)
    exit_code: int | None = None
    on_line: Callable[[Guest, str], None] | None = None
    reader: threading.Thread | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip("\r\n")
            with self._lock:
                self.console.append(line)
                if EXIT_MARK in line:
                    self.exit_code = int(line.split(EXIT_MARK, 1)[1].split()[0])
                self._lock.notify_all()
            if self.on_line is not None:
                self.on_line(self, line)
        with self._lock:
            self._lock.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """The first console line (from the start) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lock:
            while True:
                for line in self.console[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.console)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and seen == len(self.console)):
                    raise HarnessError(
                        "boot: the awaited console line did not come; console tail:\n"
                        + "\n".join(self.console[-40:])
                    )
                self._lock.wait(min(left, 1.0))

    def monitor(self, command: str, timeout: float = 30.0) -> str:
        """Run one HMP command on the QEMU monitor and return what it printed.

        The answer is read until the next prompt: closing the connection before
        QEMU has read the line would lose the command."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.monitor_path))
            seen = b""
            while PROMPT not in seen:  # the banner, then the first prompt
                seen += self._recv(s, deadline, command)
            s.sendall(command.encode() + b"\r\n")
            answer = b""
            while b"\n" not in answer or not answer.rstrip().endswith(PROMPT):
                answer += self._recv(s, deadline, command)
        text = _ANSI.sub("", answer.decode(errors="replace"))
        sys.stderr.write(f"[harness] monitor: {command}\n")
        return text.rsplit(PROMPT.decode(), 1)[0].split("\n", 1)[-1].strip()

    @staticmethod
    def _recv(s: socket.socket, deadline: float, command: str) -> bytes:
        if time.monotonic() > deadline:
            raise HarnessError(f"monitor: no prompt after {command!r}")
        chunk = s.recv(65536)
        if not chunk:
            raise HarnessError(f"monitor: QEMU closed the monitor during {command!r}")
        return chunk

    def finish(self, timeout: float) -> int:
        """Wait for the guest's script to end and QEMU to exit; the script's exit code."""
        try:
            self.wait_for(lambda line: EXIT_MARK in line, timeout)
            self.proc.wait(60)
        finally:
            self.close()
        assert self.exit_code is not None
        return self.exit_code

    def close(self) -> None:
        """Stop QEMU if it still runs and release its console."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.reader is not None:
            self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def boot_xen(
    xen: Path,
    kernel: Kernel,
    initrd: Path,
    workdir: Path,
    *,
    cpus: int = 4,
    memory_mb: int = 2048,
    dom0_mb: int = 1024,
    cpu: str = "qemu64",
    xen_args: str = "",
    on_line: Callable[[Guest, str], None] | None = None,
) -> Guest:
    """Start QEMU on the Xen hypervisor with ``kernel`` as dom0 (``initrd`` its
    initramfs); dom0 runs its script at once.  Xen's console and dom0's (through
    Xen) both come out on the serial line.  ``cpu`` defaults to ``qemu64``: this
    dom0 kernel does not start under TCG with ``-cpu max``."""
    monitor = workdir / "monitor.sock"
    args = [
        QEMU, "-machine", "q35", "-cpu", cpu, "-m", str(memory_mb), "-smp", str(cpus),
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(xen),
        "-append", f"console=com1 com1=115200 dom0_mem={dom0_mb}M loglvl=all "
        f"guest_loglvl=all noreboot {xen_args}".strip(),
        "-initrd", f"{kernel.vmlinuz} console=hvc0 quiet,{initrd}",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-monitor", f"unix:{monitor},server,nowait",
    ]  # fmt: skip
    return _start(args, monitor, on_line)


def boot(
    kernel: Kernel,
    initrd: Path,
    workdir: Path,
    *,
    cpu: str = "max",
    cpus: int = 2,
    memory_mb: int = 1024,
    append: str = "",
    on_line: Callable[[Guest, str], None] | None = None,
) -> Guest:
    """Start QEMU on ``kernel`` and ``initrd``; the guest runs its script at once.

    ``cpu`` is QEMU's CPU model with its options, ``append`` more kernel
    parameters; ``on_line`` is called from the
    console reader for every line (to answer the guest's requests)."""
    monitor = workdir / "monitor.sock"
    args = [
        QEMU, "-machine", "q35", "-cpu", cpu, "-m", str(memory_mb), "-smp", str(cpus),
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet {append}".strip(),
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-monitor", f"unix:{monitor},server,nowait",
    ]  # fmt: skip
    return _start(args, monitor, on_line)


def _start(args: list[str], monitor: Path, on_line: Callable[[Guest, str], None] | None) -> Guest:
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    guest = Guest(proc, monitor, on_line=on_line)
    guest.reader = threading.Thread(target=guest._reader, daemon=True)
    guest.reader.start()
    return guest
