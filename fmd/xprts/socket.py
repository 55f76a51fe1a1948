"""The local ingest socket: JSON lines in, one JSON reply line per line out.

``var/run/fmd/xprt.sock`` (mode 0600) accepts any number of clients.  Each
line a client writes is answered, in order, with ``{"ok": true, "ena": N}``
once the event is durably committed, or ``{"ok": false, "error": "..."}``.
Lines are read in chunks and every chunk's good events go to the writer as one
op, so a client that pipelines gets group commit.

Flood control: a client may have at most ``MAX_INFLIGHT`` chunks awaiting
commit; past that the server stops reading from it (back-pressure), so one
client cannot starve the others or grow memory.  Over all clients, at most
``MAX_INFLIGHT_BYTES`` of input may be decoded and not yet committed; past
that no client is read from until commits catch up, so memory stays bounded
however many clients there are (and at most ``MAX_CLIENTS`` are served at
once).  With ``xprt.rate`` set, a token bucket per client rejects events
beyond the rate with an error.

Every line is answered on its own: a line that cannot be decoded or stored is
answered with its error, and the lines around it are stored and acknowledged
as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from fmd.errors import EventRejected, TransportError
from fmd.log import Once
from fmd.log import exception_signature as _signature
from fmd.protocol import Ereport
from fmd.xprt import DuplicateEvent, Ingest, XprtStats

log = structlog.get_logger("fmd.xprt.socket")

CHUNK = 64 * 1024
# Chunks read from one client but not yet acknowledged: 2 MiB, about 20000
# typical events (some tens of MB once parsed).  Enough to keep group commits
# large, small enough that one client cannot grow memory without bound.
MAX_INFLIGHT = 32
# Input bytes, over every client, decoded but not yet committed.  The parsed
# events of these bytes are what ingest holds in memory (several times the
# bytes): 16 MiB is about 100,000 typical events, plenty for group commit.
MAX_INFLIGHT_BYTES = 16 << 20
# Clients served at once; one more is told so and closed.
MAX_CLIENTS = 256


@dataclass(slots=True)
class _Chunk:
    replies: list[bytes | int]  # bytes: ready reply; int: index into segments
    segments: list[tuple[asyncio.Future[BaseException | None], list[int]]]


class _Bucket:
    def __init__(self, rate: int, burst: int) -> None:
        self.rate, self.burst = rate, max(burst, 1)
        self.tokens = float(self.burst)
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SocketTransport:
    """Serves the ingest socket on its own asyncio thread."""

    kind = "socket"

    def __init__(self, ingest: Ingest, path: Path, *, rate: int = 0, burst: int = 10000) -> None:
        self.ingest = ingest
        self.path = path
        self.rate, self.burst = rate, burst
        self.name = "socket"
        self.stats: XprtStats = ingest.register(self.name, self.kind)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # Bytes of decoded, uncommitted input (see MAX_INFLIGHT_BYTES); used
        # only on the transport's event-loop thread.
        self.inflight_bytes = 0
        self._room: asyncio.Event | None = None
        self._once = Once()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fmd-xprt-socket", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise TransportError(f"cannot serve {self.path}: {self._error}")

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), loop)
        with contextlib.suppress(Exception):  # best effort at shutdown
            fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.path.unlink(missing_ok=True)
            old = os.umask(0o177)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_unix_server(self._client, path=str(self.path), limit=CHUNK)
                )
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        log.info("xprt_started", xprt=self.name, path=str(self.path))
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stats.clients >= MAX_CLIENTS:
            await self._refuse(
                writer, f"too many clients: fmd serves at most {MAX_CLIENTS} at once"
            )
            return
        self.stats.clients += 1
        pending: asyncio.Queue[_Chunk | None] = asyncio.Queue(MAX_INFLIGHT)
        sender = asyncio.create_task(self._send(pending, writer))
        bucket = _Bucket(self.rate, self.burst) if self.rate else None
        buf = b""
        discarding = False
        maxline = self.ingest.max_line
        if self._room is None:
            self._room = asyncio.Event()
            self._room.set()
        try:
            while True:
                if self.inflight_bytes >= MAX_INFLIGHT_BYTES:
                    await self._room.wait()
                    continue
                data = await reader.read(CHUNK)
                if not data:
                    break
                buf += data
                lines = buf.split(b"\n")
                buf = lines.pop()
                if discarding and lines:
                    # The tail of an over-long line; its error was queued already.
                    lines.pop(0)
                    discarding = False
                if len(buf) > maxline and not discarding:
                    # Reject the over-long line now and skip the rest of it.
                    lines.append(buf)
                    buf = b""
                    discarding = True
                elif discarding:
                    buf = b""
                if lines:
                    await self._feed(lines, bucket, pending)
            if buf and not discarding:
                await self._feed([buf], bucket, pending)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            # A defect of fmd, not of the client's input (every line is checked
            # on its own): stop reading, but still answer what was read.
            if self._once.first(_signature(exc)):
                log.error("xprt_client_failed", xprt=self.name, error=str(exc), exc_info=exc)
        finally:
            await pending.put(None)
            await sender
            self.stats.clients -= 1

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        """Tell a client why it is not served, and close its connection."""
        self.stats.received += 1
        self.ingest.rejected(self.stats, EventRejected(reason))
        try:
            writer.write(orjson.dumps({"ok": False, "error": reason}) + b"\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, RuntimeError):
            pass

    def _hold(self, chunk: _Chunk, nbytes: int) -> None:
        """Count ``nbytes`` of input as in flight until every event of ``chunk``
        has been committed (or has failed)."""
        futures = [fut for fut, _ in chunk.segments]
        if not futures:
            return
        self.inflight_bytes += nbytes
        left = [len(futures)]

        def release(_fut: asyncio.Future[BaseException | None]) -> None:
            left[0] -= 1
            if left[0] == 0:
                self.inflight_bytes -= nbytes
                if self.inflight_bytes < MAX_INFLIGHT_BYTES and self._room is not None:
                    self._room.set()

        for fut in futures:
            fut.add_done_callback(release)
        if self.inflight_bytes >= MAX_INFLIGHT_BYTES and self._room is not None:
            self._room.clear()

    async def _feed(
        self, lines: list[bytes], bucket: _Bucket | None, pending: asyncio.Queue[_Chunk | None]
    ) -> None:
        """Decode and submit lines; after a clock control line, wait until the clock
        has moved so that the lines after it are stamped with the new time."""
        while lines:
            chunk, rest, barrier = self._chunk(lines, bucket)
            used = len(lines) - len(rest)
            self._hold(chunk, sum(len(line) + 1 for line in lines[:used]))
            lines = rest
            await pending.put(chunk)
            if barrier is not None:
                await barrier

    def _chunk(
        self, lines: list[bytes], bucket: _Bucket | None
    ) -> tuple[_Chunk, list[bytes], asyncio.Future[BaseException | None] | None]:
        """One chunk of replies for ``lines`` up to and including the first control
        line; returns the chunk, the lines left, and the control line's future."""
        loop = asyncio.get_running_loop()
        replies: list[bytes | int] = []
        segments: list[tuple[asyncio.Future[BaseException | None], list[int]]] = []
        batch: list[Ereport] = []
        enas: list[int] = []
        window = self.ingest.window()

        def flush() -> None:
            window.close()
            if not batch:
                return
            fut: asyncio.Future[BaseException | None] = loop.create_future()
            segments.append((fut, list(enas)))
            try:
                self.ingest.submit(list(batch), self.stats, _resolver(loop, fut))
            except Exception as exc:  # the batch's lines are answered with the error
                fut.set_result(exc)
            batch.clear()
            enas.clear()

        now = self.ingest.clock.now_ns()
        for index, raw in enumerate(lines):
            line = raw[:-1] if raw.endswith(b"\r") else raw
            try:
                if bucket is not None and not bucket.take():
                    self.stats.received += 1
                    exc = EventRejected(f"rate limit exceeded ({self.rate} events/s)")
                    self.ingest.rejected(self.stats, exc)
                    raise exc
                if not line or line.isspace():
                    self.stats.received += 1
                    exc = EventRejected("empty line")
                    self.ingest.rejected(self.stats, exc)
                    raise exc
                ev = self.ingest.decode(line, self.stats, now)
            except DuplicateEvent as dup:
                # Stored before (fmd.hw.dedup): acknowledged, not stored again.
                replies.append(b'{"ok":true,"duplicate":true,"ena":%d}\n' % dup.ena)
                continue
            except EventRejected as exc:
                replies.append(orjson.dumps({"ok": False, "error": str(exc)}) + b"\n")
                continue
            if isinstance(ev, Ereport):
                # A merged ereport is acknowledged with the record it joined.
                replies.append(len(segments))
                enas.append(ev.ena)
                if not window.merge(ev):
                    batch.append(ev)
            else:
                flush()
                fut = loop.create_future()
                segments.append((fut, [-1]))
                replies.append(len(segments) - 1)
                self.ingest.control(ev, _resolver(loop, fut))
                return _Chunk(replies, segments), lines[index + 1 :], fut
        flush()
        return _Chunk(replies, segments), [], None

    async def _send(
        self, pending: asyncio.Queue[_Chunk | None], writer: asyncio.StreamWriter
    ) -> None:
        broken = False
        while True:
            chunk = await pending.get()
            if chunk is None:
                break
            results: list[tuple[BaseException | None, list[int]]] = []
            for fut, enas in chunk.segments:
                results.append((await fut, enas))
            if broken:
                continue
            cursor = [0] * len(results)
            out = []
            for r in chunk.replies:
                if isinstance(r, bytes):
                    out.append(r)
                    continue
                err, enas = results[r]
                ena = enas[cursor[r]] if enas[0] != -1 else None
                cursor[r] += 1
                if err is not None:
                    out.append(orjson.dumps({"ok": False, "error": _not_stored(err)}) + b"\n")
                elif ena is None:
                    out.append(b'{"ok":true}\n')
                else:
                    out.append(b'{"ok":true,"ena":%d}\n' % ena)
            try:
                writer.write(b"".join(out))
                await writer.drain()
            except (ConnectionError, RuntimeError):
                broken = True
        try:
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, RuntimeError):
            pass


def _not_stored(err: BaseException) -> str:
    """A short reason for a client whose event could not be stored (the log has it all)."""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"not stored: {first[:200]}"


def _resolver(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[BaseException | None]
) -> Callable[[BaseException | None], None]:
    def done(error: BaseException | None) -> None:
        loop.call_soon_threadsafe(_set, fut, error)

    return done


def _set(fut: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not fut.done():
        fut.set_result(error)
