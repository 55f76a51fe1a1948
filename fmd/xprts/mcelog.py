"""The ``/dev/mcelog`` source: the kernel's binary machine-check records.

Kernels built with ``CONFIG_X86_MCELOG_LEGACY`` and every Xen dom0 (the
xen_mcelog driver, ``CONFIG_XEN_MCE_LOG``) serve machine-check records as
binary ``struct mce`` (decoded by :mod:`fmd.hw.mce_struct`) on
``/dev/mcelog``.  The path is a constructor parameter, so tests and the
real-kernel harness point it elsewhere.  What is at the path decides the mode:

**The device** (a character device).  Opened ``O_RDONLY | O_NONBLOCK |
O_EXCL``: exclusive, so no second reader (an ``mcelog`` daemon) can take
records from under fmd, and fmd reports "another reader holds /dev/mcelog"
when one already has it.  The ``MCE_GET_RECORD_LEN`` and ``MCE_GET_LOG_LEN``
ioctls give the record and buffer lengths (both need CAP_SYS_ADMIN); the
driver only serves a read of the whole buffer (record length x log length)
at offset 0, and that read *consumes* what it returns.  The source waits in
``poll(2)`` (up to ``poll`` seconds, so that it stops promptly) and reads as
soon as the driver has records; a kernel with APEI ERST first hands out the
previous boot's saved records one per read, so it reads until the driver
returns nothing.  Each read is one batch, committed before the next read.
``MCE_GETCLEAR_FLAGS`` reporting an overflow (the kernel dropped records
because its buffer was full) is counted as a rejection with that reason.
Position: ``ident`` is ``boot:<boot id>`` (from ``boot_id_path``), ``offset``
the number of records taken from the device this boot.  Restart semantics:
the driver never hands out a record twice, so a restart reads nothing twice;
records read but not yet committed when fmd is killed (one read, the window
of one commit) are lost, because the kernel no longer has them.  That is why
each read is committed at once, before the next.

**A regular file** (a saved dump, or a test's stand-in for the device).  The
file is an append-only log of records of ``record_len`` bytes (default
:data:`~fmd.hw.mce_struct.MCE_RECORD_LEN`).  Position: ``ident`` is
``file:<device>:<inode>``, ``offset`` the byte offset read up to; a restart
resumes there, so nothing is read twice or skipped.  A replaced file, or one
shorter than the committed offset, is read from its start.  A partial record
at the end is left for the next poll (it may still be being written); if it
is still there, unchanged, at the next poll it is a truncated record: counted
as rejected and passed over.

Records whose ``finished`` flag is clear and truncated records are counted
rejections with their reason (:mod:`fmd.hw.mce_struct`).  With
``physical_cpus`` (a Xen dom0) the vendor number is read in Xen's numbering
and the ``cpu`` of each record is Xen's *physical* CPU number: the platform
fmd runs with must then be the Xen physical topology (xenpm's CPU list), not
dom0's vCPUs.

probe() says why the source cannot run: "kernel has no /dev/mcelog"
(``CONFIG_X86_MCELOG_LEGACY`` is off, or no xen_mcelog in a dom0), "needs
root" (the open or the ioctls refused), "another reader holds /dev/mcelog"
(``EBUSY``: an mcelog daemon, or another fmd, has it open).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import struct
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import structlog

from fmd.hw.cpuid import LINUX_VENDORS, XEN_VENDORS
from fmd.hw.mce_struct import (
    MAX_RECORD_LEN,
    MCE_RECORD_LEN,
    OLDEST_RECORD_LEN,
    MceReject,
    decode_records,
)
from fmd.xprt import Ingest
from fmd.xprts.source import Batch, Position, Source

log = structlog.get_logger("fmd.xprt.mcelog")

DEFAULT_PATH: Final = Path("/dev/mcelog")
DEFAULT_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")

# ioctls of asm/mce.h: _IOR('M', n, int).
MCE_GET_RECORD_LEN: Final = 0x80044D01
MCE_GET_LOG_LEN: Final = 0x80044D02
MCE_GETCLEAR_FLAGS: Final = 0x80044D03
# Bit of the flags word set when the kernel's buffer was full (MCE_OVERFLOW).
MCE_OVERFLOW_BIT: Final = 0
# The most records a driver buffer is believed to hold (sanity check).
MAX_LOG_LEN: Final = 1 << 16
# Reads per poll: the APEI path hands out one saved record per read.
MAX_READS_PER_POLL: Final = 256
# Records per batch from a file.
FILE_BATCH_RECORDS: Final = 256

MODE_DEVICE: Final = "device"
MODE_FILE: Final = "file"

_INT: Final = struct.Struct("i")
_MS: Final = 1000


def open_mcelog(path: Path) -> int:
    """Open the device (or file) at ``path`` the way the source reads it."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_EXCL | os.O_CLOEXEC)


class KernelDevice:
    """An open ``/dev/mcelog``: its ioctls, readiness and whole-buffer read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _ioctl_int(self, request: int) -> int:
        out = fcntl.ioctl(self.fd, request, bytes(_INT.size))
        (value,) = _INT.unpack(out)
        return int(value)

    def record_len(self) -> int:
        return self._ioctl_int(MCE_GET_RECORD_LEN)

    def log_len(self) -> int:
        return self._ioctl_int(MCE_GET_LOG_LEN)

    def take_flags(self) -> int:
        """The driver's flags word, cleared by the reading."""
        return self._ioctl_int(MCE_GETCLEAR_FLAGS)

    def wait_readable(self, timeout_s: float) -> bool:
        """True when the driver has records (waits up to ``timeout_s``)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * _MS))))

    def read(self, size: int) -> bytes:
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


def _open_reason(path: Path, exc: OSError) -> str:
    """Why the source cannot run, from the error opening ``path``."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR, errno.ENXIO, errno.ENODEV):
        return (
            f"kernel has no {path} (CONFIG_X86_MCELOG_LEGACY is off, "
            "or no xen_mcelog driver in this Xen dom0)"
        )
    if code in (errno.EACCES, errno.EPERM):
        return f"needs root: cannot open {path} ({exc.strerror})"
    if code == errno.EBUSY:
        return f"another reader holds {path} (is the mcelog daemon running?)"
    return f"cannot open {path}: {exc.strerror or exc}"


def read_boot_id(path: Path) -> str:
    """The boot id at ``path``, or ``unknown`` when it cannot be read."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text[:64] or "unknown"


class McelogSource(Source):
    """Reads binary machine-check records from ``/dev/mcelog`` (or a dump file)."""

    kind: ClassVar[str] = "mcelog"

    def __init__(
        self,
        ingest: Ingest,
        name: str = "mcelog",
        start: Position | None = None,
        *,
        path: Path = DEFAULT_PATH,
        boot_id_path: Path = DEFAULT_BOOT_ID,
        physical_cpus: bool = False,
        record_len: int = MCE_RECORD_LEN,
        poll: float = 1.0,
    ) -> None:
        super().__init__(ingest, name, start, poll=poll)
        self.path = path
        self.boot_id_path = boot_id_path
        self.physical_cpus = physical_cpus
        self.vendors: Mapping[int, str] = XEN_VENDORS if physical_cpus else LINUX_VENDORS
        self.file_record_len = record_len
        self.wait_s = poll
        self.mode: str | None = None
        self._device: KernelDevice | None = None
        self._record_len = record_len
        self._log_len = 0
        self._boot = ""
        self._taken = 0
        # (ident, offset, size) of a partial record at the end of a file, seen once.
        self._tail: tuple[str, int, int] | None = None

    # -- availability -----------------------------------------------------------
    def probe(self) -> str | None:
        if self._device is not None:
            return None
        try:
            fd = open_mcelog(self.path)
        except OSError as exc:
            return _open_reason(self.path, exc)
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            return f"cannot open {self.path}: {exc.strerror or exc}"
        if stat.S_ISREG(st.st_mode):
            os.close(fd)
            if not OLDEST_RECORD_LEN <= self.file_record_len <= MAX_RECORD_LEN:
                return f"record_len {self.file_record_len} is not a struct mce length"
            self.mode = MODE_FILE
            self.poll = self.wait_s
            return None
        if not stat.S_ISCHR(st.st_mode):
            os.close(fd)
            return f"{self.path} is neither the mcelog device nor a file of records"
        return self._open_device(KernelDevice(fd))

    def _open_device(self, device: KernelDevice) -> str | None:
        """Ask the driver its lengths; keep the device open when it answers."""
        try:
            record_len, log_len = device.record_len(), device.log_len()
        except OSError as exc:
            device.close()
            if exc.errno in (errno.EPERM, errno.EACCES):
                return f"needs root: the {self.path} ioctls need CAP_SYS_ADMIN"
            return f"{self.path} is not an mcelog device ({exc.strerror or exc})"
        if not OLDEST_RECORD_LEN <= record_len <= MAX_RECORD_LEN:
            device.close()
            return f"{self.path} reports record length {record_len}: not a struct mce"
        if not 0 < log_len <= MAX_LOG_LEN:
            device.close()
            return f"{self.path} reports log length {log_len}: not an mcelog buffer"
        self._device = device
        self.mode = MODE_DEVICE
        self._record_len, self._log_len = record_len, log_len
        self._boot = f"boot:{read_boot_id(self.boot_id_path)}"
        pos = self.position
        self._taken = pos.offset if pos is not None and pos.ident == self._boot else 0
        # The source waits in poll(2), not between reads.
        self.poll = 0.0
        log.info(
            "mcelog_opened",
            source=self.name,
            path=str(self.path),
            record_len=record_len,
            log_len=log_len,
            physical_cpus=self.physical_cpus,
        )
        return None

    def close(self) -> None:
        if self._device is not None:
            device, self._device = self._device, None
            device.close()

    # -- reading ------------------------------------------------------------------
    def read(self) -> Generator[Batch, None, None]:
        if self.mode == MODE_FILE:
            yield from self._read_file()
        elif self._device is not None:
            try:
                yield from self._read_device(self._device)
            except OSError:
                self.close()  # the next probe opens it again
                raise

    def _items(self, data: bytes, record_len: int, first: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for rec in decode_records(data, record_len, vendors=self.vendors, first=first):
            if isinstance(rec, MceReject):
                self.reject(rec.reason, where=f"{self.path} record {rec.index}")
            else:
                items.append(rec.wire)
        return items

    def _read_device(self, device: KernelDevice) -> Iterator[Batch]:
        if not device.wait_readable(self.wait_s):
            return
        size = self._record_len * self._log_len
        for n in range(MAX_READS_PER_POLL):
            data = device.read(size)
            if not data:
                if n == 0:
                    # Readable yet nothing to read: wait rather than spin on poll(2).
                    self.wait(self.wait_s)
                break
            first = self._taken
            self._taken += -(-len(data) // self._record_len)
            items = self._items(data, self._record_len, first)
            yield Batch(items, Position(self._boot, self._taken))
            if self.stopping:
                return
        self._check_overflow(device)

    def _check_overflow(self, device: KernelDevice) -> None:
        try:
            flags = device.take_flags()
        except OSError:
            return
        if flags & (1 << MCE_OVERFLOW_BIT):
            self.reject(
                "mcelog buffer overflowed: the kernel dropped records while its buffer was full",
                where=str(self.path),
            )

    def _read_file(self) -> Iterator[Batch]:
        with open(self.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            ident = f"file:{st.st_dev}:{st.st_ino}"
            pos = self.position
            offset = 0
            if pos is not None and pos.ident == ident and 0 <= pos.offset <= st.st_size:
                offset = pos.offset
            record_len = self.file_record_len
            while True:
                fh.seek(offset)
                data = fh.read(FILE_BATCH_RECORDS * record_len)
                whole = len(data) - len(data) % record_len
                if whole:
                    items = self._items(data[:whole], record_len, offset // record_len)
                    offset += whole
                    yield Batch(items, Position(ident, offset))
                    if self.stopping:
                        return
                    continue
                if not data:
                    self._tail = None
                    return
                tail = (ident, offset, len(data))
                if self._tail != tail:
                    self._tail = tail  # maybe still being written: look again next poll
                    return
                self._tail = None
                self.reject(
                    f"struct mce record truncated: {len(data)} of {record_len} bytes "
                    "at the end of the file",
                    where=f"{self.path} offset {offset}",
                )
                yield Batch([], Position(ident, offset + len(data)))
                return
