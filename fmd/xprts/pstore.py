"""The pstore source: machine checks in the previous boot's panic log.

When a machine check panics the host, the kernel's last messages (the
``mce: [Hardware Error]:`` block among them) are saved by pstore (ramoops,
EFI variables, APEI ERST) and appear after the reboot as files under
``/sys/fs/pstore`` (the ``root`` constructor parameter): ``dmesg-<backend>-<id>``
for the kernel log dump, ``console-<backend>-<id>`` for the console, and
``mce-<backend>-<id>``.  This source reads them once at start-up and then
every ``poll`` seconds (default five minutes; a scan is a directory listing),
so the fatal telemetry of the boot that died is diagnosed after the reboot.

Each such file is parsed with :func:`fmd.hw.mcelog.parse_mce_text`; every
machine-check record becomes a raw MCA wire record that keeps its own TIME
(the ``PROCESSOR ... TIME`` line), or else the file's modification time,
which pstore sets to the time the record was saved.  The other kernel lines
go to ``line_parser`` when one is given (the kernel-log parser, turning
EDAC / GHES / thermal lines into ereports).  A record the text parser cannot
read, a file compressed by a kernel that could not decompress it
(``*.enc.z``), a file larger than :data:`MAX_FILE_BYTES` are counted
rejections with their reason.  Files of other kinds (``pmsg-``, ``ftrace-``)
are ignored.

Each file is taken once: its identity (name, size, modification time in
nanoseconds, and a digest of the content when the backend saved no time) is
committed, in the same transaction as the file's events, in
the position's JSON document (``{"taken": [...]}``, the last
:data:`MAX_REMEMBERED`; those of files no longer present are forgotten
first).  A restart, or the next scan, skips taken files; a file killed
between its read and its commit is read again, whole.  With ``remove`` the
file is deleted once its events are committed (so the backend has room for
the next panic); a compressed file is kept for a person to look at.
Position: ``ident`` ``pstore``, ``offset`` the number of files taken.

probe() says "no pstore mounted" when ``root`` does not exist or, where
``mountinfo`` can be read, no pstore filesystem is mounted on it, and "needs
root" when the directory cannot be listed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
import structlog

from fmd.hw.mcelog import ParseFailure, parse_mce_text
from fmd.hw.telemetry import record_to_json
from fmd.xprt import Ingest
from fmd.xprts.source import Batch, Position, Source

log = structlog.get_logger("fmd.xprt.pstore")

DEFAULT_ROOT: Final = Path("/sys/fs/pstore")
DEFAULT_MOUNTINFO: Final = Path("/proc/self/mountinfo")
# A scan every five minutes: cheap, and pstore gains files only at mount time
# or when a backend records a new dump.
DEFAULT_POLL_S: Final = 300.0
# pstore file kinds that hold kernel log text of the previous boot.
PANIC_LOG_PREFIXES: Final = ("dmesg-", "console-", "mce-")
# The suffix pstore gives records it could not decompress.
COMPRESSED_SUFFIX: Final = ".enc.z"
MAX_FILE_BYTES: Final = 4 << 20
MAX_REMEMBERED: Final = 256
POSITION_IDENT: Final = "pstore"
_PSTORE_FSTYPE: Final = "pstore"
_NS_PER_S: Final = 1_000_000_000
_DIGEST_BYTES: Final = 8

LineParser = Callable[[str], Iterable[dict[str, Any]]]


def is_panic_log(name: str) -> bool:
    """True for the pstore files this source reads."""
    return name.startswith(PANIC_LOG_PREFIXES)


def file_identity(name: str, st: os.stat_result, path: str | None = None) -> str:
    """What a taken file is remembered by: name, size and modification time.

    A backend that saved no time leaves the time at zero; then a digest of
    the content (of the file at ``path``) tells two dumps of one size apart.
    """
    ident = f"{name}:{st.st_size}:{st.st_mtime_ns}"
    if st.st_mtime_ns != 0 or path is None:
        return ident
    try:
        with open(path, "rb") as fh:
            digest = hashlib.blake2b(fh.read(MAX_FILE_BYTES), digest_size=_DIGEST_BYTES)
    except OSError:
        return ident
    return f"{ident}:{digest.hexdigest()}"


def pstore_mounted(root: Path, mountinfo: Path) -> bool | None:
    """Whether a pstore filesystem is mounted on ``root`` (None: cannot tell)."""
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    wanted = {str(root), os.path.realpath(root)}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount_point = fields[4].replace("\\040", " ")
        if mount_point in wanted and right.split()[0] == _PSTORE_FSTYPE:
            return True
    return False


class PstoreSource(Source):
    """Reads machine-check records from pstore's saved panic logs, each file once."""

    kind: ClassVar[str] = "pstore"

    def __init__(
        self,
        ingest: Ingest,
        name: str = "pstore",
        start: Position | None = None,
        *,
        root: Path = DEFAULT_ROOT,
        mountinfo: Path | None = DEFAULT_MOUNTINFO,
        remove: bool = False,
        line_parser: LineParser | None = None,
        poll: float = DEFAULT_POLL_S,
    ) -> None:
        super().__init__(ingest, name, start, poll=poll)
        self.root = root
        self.mountinfo = mountinfo
        self.remove = remove
        self.line_parser = line_parser
        # Files that could not be read, counted once each per run (read again next scan).
        self._unreadable: set[str] = set()

    # -- availability -----------------------------------------------------------
    def probe(self) -> str | None:
        if not self.root.is_dir():
            return f"no pstore mounted ({self.root} does not exist)"
        if self.mountinfo is not None and pstore_mounted(self.root, self.mountinfo) is False:
            return f"no pstore mounted on {self.root}"
        try:
            os.listdir(self.root)
        except PermissionError:
            return f"needs root: cannot list {self.root}"
        except OSError as exc:
            return f"cannot list {self.root}: {exc.strerror or exc}"
        return None

    # -- reading ------------------------------------------------------------------
    def _taken(self) -> list[str]:
        pos = self.position
        doc = pos.document() if pos is not None else None
        taken = doc.get("taken") if isinstance(doc, dict) else None
        if not isinstance(taken, list):
            return []
        return [t for t in taken if isinstance(t, str)]

    def read(self) -> Generator[Batch, None, None]:
        taken = self._taken()
        seen = set(taken)
        count = self.position.offset if self.position is not None else 0
        with os.scandir(self.root) as it:
            entries = sorted((e for e in it if is_panic_log(e.name)), key=lambda e: e.name)
        present: set[str] = set()
        todo: list[tuple[os.DirEntry[str], os.stat_result, str]] = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if not stat.S_ISREG(st.st_mode):
                continue
            ident = file_identity(entry.name, st, entry.path)
            present.add(ident)
            if ident not in seen:
                todo.append((entry, st, ident))
        for entry, st, ident in todo:
            parsed = self._parse_file(entry, st)
            if parsed is None:
                continue  # unreadable now: not taken, tried again next scan
            items, removable = parsed
            taken = _remember(taken, ident, present)
            count += 1
            position = Position(POSITION_IDENT, count, orjson.dumps({"taken": taken}).decode())
            log.info("pstore_file_read", source=self.name, file=entry.name, events=len(items))
            yield Batch(items, position)
            # Resumed only once the batch is committed.
            if self.remove and removable and self.position == position:
                self._delete(Path(entry.path))
            if self.stopping:
                return

    def _parse_file(
        self, entry: os.DirEntry[str], st: os.stat_result
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """The file's wire objects and whether it may be removed; None if unreadable."""
        name = entry.name
        if name.endswith(COMPRESSED_SUFFIX):
            self.reject(
                "compressed pstore record: the kernel could not decompress it "
                "(its compression is not built in)",
                where=name,
            )
            return [], False
        if st.st_size > MAX_FILE_BYTES:
            self.reject(
                f"pstore file too large: {st.st_size} bytes (at most {MAX_FILE_BYTES})",
                where=name,
            )
            return [], False
        try:
            with open(entry.path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            key = file_identity(name, st)
            if key not in self._unreadable:
                self._unreadable.add(key)
                self.reject(f"pstore file unreadable: {exc.strerror or exc}", where=name)
            return None
        text = data.decode("utf-8", errors="replace")
        saved_s = st.st_mtime_ns // _NS_PER_S
        items: list[dict[str, Any]] = []
        for rec in parse_mce_text(text):
            if isinstance(rec, ParseFailure):
                self.reject(
                    f"pstore machine-check record unreadable: {rec.reason}",
                    where=f"{name} line {rec.line}",
                )
                continue
            mca = record_to_json(rec.record)
            if "time" not in mca and saved_s > 0:
                mca["time"] = saved_s
            items.append({"mca": mca})
        if self.line_parser is not None:
            try:
                items.extend(self.line_parser(text))
            except Exception as exc:  # a parser defect fails this file's other lines only
                self.reject(f"kernel-log parser failed: {type(exc).__name__}: {exc}", where=name)
        return items, True

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.ingest.allow_log(f"{self.name}:remove"):
                log.warning(
                    "pstore_remove_failed", source=self.name, file=str(path), error=str(exc)
                )
        else:
            log.info("pstore_file_removed", source=self.name, file=str(path))


def _remember(taken: list[str], ident: str, present: set[str]) -> list[str]:
    """``taken`` plus ``ident``, bounded: forget absent files first, then the oldest."""
    out = [*taken, ident]
    excess = len(out) - MAX_REMEMBERED
    if excess <= 0:
        return out
    absent = [t for t in out if t not in present][:excess]
    drop = set(absent)
    out = [t for t in out if t not in drop]
    return out[len(out) - MAX_REMEMBERED :] if len(out) > MAX_REMEMBERED else out
