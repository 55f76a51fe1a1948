"""A followed file of JSON lines (like ``tail -F``).

The transport reads complete lines from the end of what it has committed,
stores them, and commits the new read offset in the same transaction as the
events, so a restart neither skips nor re-reads a line.  The file's identity
(device and inode) is committed with the offset: if the file was replaced
(rotated) while fmd was down, reading starts at the beginning of the new file;
if it is replaced or truncated while fmd runs, the rest of the old file is
read first.  Bad lines are rejected, counted and logged, and the offset moves
past them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import structlog

from fmd.errors import EventRejected
from fmd.protocol import Ereport
from fmd.xprt import Ingest, XprtStats

log = structlog.get_logger("fmd.xprt.file")

CHUNK = 256 * 1024


def _ident(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


class FileTransport:
    """Follows one file on its own thread."""

    kind = "file"

    def __init__(
        self, ingest: Ingest, path: Path, start: tuple[str, int] | None, *, poll: float = 0.2
    ) -> None:
        self.ingest = ingest
        self.path = path
        self.name = f"file:{path}"
        self.stats: XprtStats = ingest.register(self.name, self.kind)
        self._start = start
        self._poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"fmd-xprt-{self.path.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        fh = None
        ident = ""
        offset = 0
        buf = b""
        discarding = False
        rotated = False
        while not self._stop.is_set():
            if fh is None:
                try:
                    fh = open(self.path, "rb")  # noqa: SIM115 - held across iterations
                except FileNotFoundError:
                    self.stats.state = "wait"
                    self._stop.wait(self._poll)
                    continue
                except OSError as exc:
                    self.stats.state = "error"
                    log.error("xprt_file_open_failed", path=str(self.path), error=str(exc))
                    self._stop.wait(max(self._poll, 5.0))
                    continue
                self.stats.state = "run"
                ident = _ident(os.fstat(fh.fileno()))
                offset = 0
                if self._start is not None and self._start[0] == ident:
                    offset = self._start[1]
                self._start = None
                fh.seek(offset)
                buf = b""
                discarding = False
            data = fh.read(CHUNK)
            if data:
                if discarding:
                    # Skip the rest of an over-long line already rejected.
                    nl = data.find(b"\n")
                    if nl < 0:
                        offset += len(data)
                        continue
                    offset += nl + 1
                    data = data[nl + 1 :]
                    discarding = False
                buf += data
                end = buf.rfind(b"\n")
                if end < 0:
                    if len(buf) > self.ingest.max_line:
                        # An over-long line: reject it now and skip to its end.
                        offset += len(buf)
                        self._store([buf], ident, offset)
                        buf = b""
                        discarding = True
                    continue
                lines = buf[:end].split(b"\n")
                offset += end + 1
                buf = buf[end + 1 :]
                self._store(lines, ident, offset)
                continue
            # At end of file: has it been replaced or truncated?
            if rotated:
                # The old file was read once more after the rename was seen, so
                # lines appended just before it are not lost: now move on.
                fh.close()
                fh = None
                rotated = False
                continue
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            current = os.fstat(fh.fileno())
            if st is None or _ident(st) != ident:
                rotated = True
                continue
            if current.st_size < offset + len(buf):
                log.warning("xprt_file_truncated", path=str(self.path))
                fh.close()
                fh = None
                continue
            self._stop.wait(self._poll)
        if fh is not None:
            fh.close()

    def _store(self, lines: list[bytes], ident: str, offset: int) -> None:
        events: list[Ereport] = []
        window = self.ingest.window()
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line.strip():
                continue
            try:
                ev = self.ingest.decode(line, self.stats)
            except EventRejected:
                continue
            if isinstance(ev, Ereport):
                if not window.merge(ev):
                    events.append(ev)
            else:
                self.ingest.rejected(
                    self.stats,
                    EventRejected("control events are accepted only on the socket"),
                    where=str(self.path),
                )
        window.close()
        # Wait for each commit: the committed offset must never pass a line
        # whose events failed to store.
        while not self._stop.is_set():
            error = self.ingest.submit_and_wait(
                events, self.stats, (self.name, ident, offset, None)
            )
            if error is None:
                return
            log.error("xprt_file_store_failed", path=str(self.path), error=str(error))
            self._stop.wait(1.0)
