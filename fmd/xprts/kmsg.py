"""The kernel log (``/dev/kmsg``) as a host error source.

Each ``read()`` of ``/dev/kmsg`` returns one record, ``pri,seq,usec,flags;
message`` followed by optional continuation lines (`` SUBSYSTEM=...``).  The
source reads every record the kernel still holds (it seeks to the oldest with
``SEEK_SET 0``, the kernel's convention), hands the kernel's own messages
(facility 0: user space cannot log those) to :class:`fmd.hw.kmsg.KmsgParser`,
and stores the wire objects it makes: machine checks, EDAC memory errors,
firmware (GHES) records and thermal events.  ``forms`` selects what it takes
(the daemon leaves out the machine-check forms when the tracepoint carries
them).  Reads never block (``O_NONBLOCK``: ``EAGAIN`` means nothing more now).

Position and restart::

    Position(ident=<boot id>, offset=<sequence number of the last record read>,
             data={"pending": [[seq, time_ns, message], ...]  (open multi-line records),
                   "at": <byte offset>                         (regular files only)})

* The position moves past every record read, recognised or not, and is
  committed in the same transaction as the events read before it; a restart
  (or a SIGKILL) skips the records whose sequence number is not above it.
* A record the parser holds half-read (an mce block whose last line has not
  come yet) is committed in ``pending`` and fed to the parser again after a
  restart, so it is neither lost nor stored twice.  Blocks still open when a
  read finds nothing new are closed and stored as they are.
* Another boot id (the host rebooted) means the kernel's sequence numbers
  start again: reading starts at the oldest record; the previous boot's
  pending lines are stored as they are.
* Records the kernel overwrote before fmd read them (``EPIPE``, or a gap in
  the sequence numbers of one boot) are counted under "records lost before fmd
  read them" in ``fmstat -t`` and logged; reading goes on.  A record without
  a valid header, and a record the parser cannot read, are counted rejected.

Wall times: a machine-check block's own ``TIME``, else the boot time plus the
record's microseconds since boot (``boot_ns``; by default the wall clock
minus ``CLOCK_MONOTONIC``, which the kernel's timestamps follow except across
a suspend).

For tests (and to replay a capture) ``path`` may be a regular file holding one
record per line, continuation lines starting with a space: it is read the same
way, and lines appended later are picked up.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson
import structlog

from fmd.hw.kmsg import ALL_FORMS, KmsgEvent, KmsgParser, KmsgResult, Message
from fmd.xprt import Ingest
from fmd.xprts.source import Batch, Position, Source

log = structlog.get_logger("fmd.xprt.kmsg")

DEFAULT_PATH: Final = Path("/dev/kmsg")
DEFAULT_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
# One read() returns one record; a buffer too small for it fails with EINVAL.
READ_SIZE: Final = 65536
# Records per batch (one transaction).
MAX_BATCH: Final = 512
# A file's lines are read this many bytes at a time.
_CHUNK: Final = 256 * 1024
REASON_LOST: Final = "records lost before fmd read them"
REASON_HEADER: Final = "kmsg record without a 'priority,sequence,time,flags;' header"
# Position offset before the first record of a boot (sequence numbers start at 0).
NO_SEQ: Final = -1
# A pending message in a committed position: [seq, time_ns, text].
_PENDING_FIELDS: Final = 3
_NS_PER_US: Final = 1_000

# -- records ------------------------------------------------------------------
_ESCAPE: Final = re.compile(rb"\\x([0-9a-fA-F]{2})")
# syslog facility 0 (LOG_KERN): what only the kernel itself can log.
FACILITY_KERN: Final = 0
_FACILITY_SHIFT: Final = 3
# priority, sequence number, time since boot (us), flags.
_HEADER_FIELDS: Final = 4


@dataclass(frozen=True)
class KmsgRecord:
    """One /dev/kmsg record's header and message (continuation lines dropped)."""

    priority: int
    seq: int
    usec: int
    text: str

    @property
    def facility(self) -> int:
        return self.priority >> _FACILITY_SHIFT


def parse_kmsg_record(data: bytes) -> KmsgRecord | None:
    """``pri,seq,usec,flags[,...];message`` (and `` KEY=value`` lines) -> a record; None if
    the header is not that.  The kernel's ``\\xNN`` escapes are undone."""
    first = data.split(b"\n", 1)[0]
    header, sep, message = first.partition(b";")
    if not sep:
        return None
    parts = header.split(b",")
    if len(parts) < _HEADER_FIELDS or not all(p.isdigit() and len(p) <= 20 for p in parts[:3]):
        return None
    priority, seq, usec = (int(p) for p in parts[:3])
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), message)
    return KmsgRecord(priority, seq, usec, raw.decode("utf-8", errors="replace"))


def record_message(record: KmsgRecord, boot_ns: int | None) -> Message:
    """A record as a parser message, its wall time from the boot time when known."""
    when = None if boot_ns is None else boot_ns + record.usec * _NS_PER_US
    return Message(record.seq, record.text, when)


# -- readers ------------------------------------------------------------------


class _Reader:
    """Records of the log, one ``bytes`` each, with the byte offset after it (files)."""

    def records(self) -> Iterator[tuple[bytes, int | None]]:
        raise NotImplementedError

    def offset(self) -> int | None:
        """The byte offset read up to (files), or None (the device)."""
        return None

    def close(self) -> None:
        raise NotImplementedError


class _DeviceReader(_Reader):
    """The /dev/kmsg character device: one record per read(); EAGAIN = nothing more."""

    def __init__(self, fd: int, path: Path, source: KmsgSource) -> None:
        self.fd = fd
        self.path = path
        self.source = source
        os.lseek(fd, 0, os.SEEK_SET)  # the oldest record the kernel still holds

    def records(self) -> Iterator[tuple[bytes, int | None]]:
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            except BrokenPipeError:
                # Records were overwritten before we read them; the next read
                # returns the oldest one left (the gap is counted from its seq).
                self.source.overrun()
                continue
            if not data:
                return
            yield data, None

    def close(self) -> None:
        os.close(self.fd)


class _FileReader(_Reader):
    """A regular file of records, one per line (continuation lines start with a space)."""

    def __init__(self, fh: IO[bytes], at: int) -> None:
        self.fh = fh
        self.at = at
        self.buf = b""
        fh.seek(at)

    def records(self) -> Iterator[tuple[bytes, int | None]]:
        while True:
            data = self.fh.read(_CHUNK)
            if not data:
                return
            self.buf += data
            end = self.buf.rfind(b"\n")
            if end < 0:
                continue
            lines, self.buf = self.buf[: end + 1], self.buf[end + 1 :]
            for raw in lines.splitlines(keepends=True):
                self.at += len(raw)
                line = raw.rstrip(b"\r\n")
                if line.strip() and not line.startswith((b" ", b"\t")):
                    yield line, self.at

    def offset(self) -> int | None:
        return self.at

    def close(self) -> None:
        self.fh.close()


class KmsgSource(Source):
    """Reads the kernel log's error reports (see the module docstring)."""

    kind = "kmsg"

    def __init__(
        self,
        ingest: Ingest,
        start: Position | None,
        *,
        path: Path = DEFAULT_PATH,
        boot_id_path: Path = DEFAULT_BOOT_ID,
        boot_ns: int | None = None,
        forms: frozenset[str] = ALL_FORMS,
        name: str = "kmsg",
        poll: float = 1.0,
    ) -> None:
        super().__init__(ingest, name, start, poll=poll)
        self.path = path
        self.boot_id_path = boot_id_path
        self.forms = frozenset(forms)
        self._boot_ns_given = boot_ns
        self._boot_ns: int | None = boot_ns
        self._reader: _Reader | None = None
        self._parser = KmsgParser(ingest.platform, self.forms)
        self._boot = ""
        self._last_seq: int | None = None
        self._at: int | None = None
        # Results made when the reader was opened (the previous boot's records).
        self._carry: list[KmsgResult] = []
        self._moved = False

    # -- availability ---------------------------------------------------------------
    def probe(self) -> str | None:
        if self._reader is not None:
            return None
        try:
            boot = self.boot_id_path.read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            return f"cannot read the boot id ({self.boot_id_path}): {exc.strerror or exc}"
        if not boot:
            return f"the boot id file {self.boot_id_path} is empty"
        try:
            self._reader = self._open(boot)
        except FileNotFoundError:
            return f"no {self.path}"
        except PermissionError as exc:
            return f"needs root (cannot open {self.path}: {exc.strerror or exc})"
        except OSError as exc:
            return f"cannot open {self.path}: {exc.strerror or exc}"
        return None

    def _open(self, boot: str) -> _Reader:
        """Open the log and set the reading state from the committed position."""
        pos = self.position
        same_boot = pos is not None and pos.ident == boot
        doc = pos.document() if pos is not None else None
        doc = doc if isinstance(doc, dict) else {}
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISCHR(mode):
                reader: _Reader = _DeviceReader(fd, self.path, self)
                self._at = None
            elif stat.S_ISREG(mode):
                at = doc.get("at") if same_boot else None
                size = os.fstat(fd).st_size
                at = at if isinstance(at, int) and 0 <= at <= size else 0
                reader = _FileReader(os.fdopen(fd, "rb"), at)
                self._at = at
            else:
                raise OSError(errno.ENODEV, "not a character device or a regular file")
        except BaseException:
            os.close(fd)
            raise
        self._resume(boot, same_boot, pos, _pending(doc.get("pending")))
        return reader

    def _resume(
        self, boot: str, same_boot: bool, pos: Position | None, pending: list[Message]
    ) -> None:
        self._boot = boot
        if self._boot_ns_given is None:
            self._boot_ns = time.time_ns() - time.monotonic_ns()
        self._parser = KmsgParser(self.ingest.platform, self.forms)
        self._carry = []
        self._moved = False
        if same_boot and pos is not None:
            self._last_seq = pos.offset
            for msg in pending:
                self._carry.extend(self._parser.feed(msg))
            return
        self._last_seq = None
        if pos is not None:
            # Another boot: its half-read records are finished as they are.
            log.info("kmsg_new_boot", source=self.name, previous=pos.ident, boot=boot)
            previous = KmsgParser(self.ingest.platform, self.forms)
            for msg in pending:
                self._carry.extend(previous.feed(msg))
            self._carry.extend(previous.flush())
            self._moved = True

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # -- reading --------------------------------------------------------------------------
    def read(self) -> Iterable[Batch]:
        if self._reader is None:
            reason = self.probe()
            if reason is not None:
                raise OSError(errno.ENODEV, reason)
        reader = self._reader
        assert reader is not None
        try:
            yield from self._read(reader)
        except BaseException:
            # Start again from the committed position at the next probe.
            self.close()
            raise

    def _read(self, reader: _Reader) -> Iterator[Batch]:
        items: list[dict[str, Any]] = []
        self._take(self._carry, items)
        changed = bool(self._carry) or self._moved
        self._carry = []
        self._moved = False
        new = 0
        for data, at in reader.records():
            if at is not None:
                self._at = at
            record = parse_kmsg_record(data)
            if record is None:
                changed = True
                self.reject(REASON_HEADER, where=f"{self.path}: {data[:60]!r}")
                continue
            if self._last_seq is not None:
                if record.seq <= self._last_seq:
                    continue  # read before this restart
                if record.seq > self._last_seq + 1:
                    self._lost(record.seq - self._last_seq - 1)
            self._last_seq = record.seq
            changed = True
            new += 1
            if record.facility == FACILITY_KERN:
                self._take(self._parser.feed(record_message(record, self._boot_ns)), items)
            if new % MAX_BATCH == 0:
                yield Batch(items, self._position())
                items, changed = [], False
        at = reader.offset()
        if at is not None and at != self._at:
            self._at = at  # continuation lines after the last record
            changed = True
        if new == 0 and self._parser.pending():
            # Nothing came for a poll interval: what is open is all there will be.
            self._take(self._parser.flush(), items)
            changed = True
        if items or changed:
            yield Batch(items, self._position())

    def _take(self, results: Iterable[KmsgResult], items: list[dict[str, Any]]) -> None:
        for result in results:
            if isinstance(result, KmsgEvent):
                items.append(result.obj)
            else:
                self.reject(
                    f"unreadable {result.form} record: {result.reason}",
                    where=f"{self.path} record {result.line}",
                )

    def _position(self) -> Position:
        doc: dict[str, Any] = {}
        pending = self._parser.pending()
        if pending:
            doc["pending"] = [[m.line, m.time_ns, m.text] for m in pending]
        if self._at is not None:
            doc["at"] = self._at
        data = orjson.dumps(doc).decode() if doc else None
        seq = NO_SEQ if self._last_seq is None else self._last_seq
        return Position(self._boot, seq, data)

    # -- losses ---------------------------------------------------------------------------
    def overrun(self) -> None:
        """The kernel overwrote records before they were read (EPIPE)."""
        if self.ingest.allow_log(f"{self.name}:overrun"):
            log.warning("kmsg_overrun", source=self.name, path=str(self.path))

    def _lost(self, count: int) -> None:
        reasons = self.stats.reasons
        reasons[REASON_LOST] = reasons.get(REASON_LOST, 0) + count
        if self.ingest.allow_log(f"{self.name}:lost"):
            log.warning("kmsg_records_lost", source=self.name, count=count, after=self._last_seq)


def _pending(value: object) -> list[Message]:
    """The messages a committed position holds (malformed entries are left out)."""
    out: list[Message] = []
    if not isinstance(value, list):
        return out
    for entry in value:
        if (
            isinstance(entry, list)
            and len(entry) == _PENDING_FIELDS
            and type(entry[0]) is int
            and (entry[1] is None or type(entry[1]) is int)
            and isinstance(entry[2], str)
        ):
            out.append(Message(entry[0], entry[2], entry[1]))
    return out
