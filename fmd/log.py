"""Logging setup (structlog) and the rate limiter that keeps bad input from
flooding the log.

Event names are stable snake_case strings (``event_rejected``,
``module_failed``); context is bound as key/value pairs.  Output is JSON when
stderr is not a terminal (or ``log.format=json``), human-readable otherwise.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class SafeStream:
    """A text stream whose writes never raise.

    Logging is how fmd reports trouble, so it must not become trouble: when the
    log's disk is full (ENOSPC), or its file was removed from under it, a line
    that cannot be written is dropped and counted (``dropped``) instead of
    raising into whichever thread logged it — the writer, a module, a
    transport.  Writing resumes by itself once the stream accepts data again.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.dropped = 0

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self.dropped += 1
            return 0

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self.dropped += 1

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False


# The stream the daemon's log goes to (for the dropped-lines count).
current_stream: SafeStream | None = None


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the daemon or a command."""
    global current_stream
    out = SafeStream(stream if stream is not None else sys.stderr)
    current_stream = out
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class RateLimiter:
    """Allow at most ``limit`` log lines per ``window_ns`` per key.

    :meth:`allow` returns ``(True, suppressed)`` when a line may be written,
    where ``suppressed`` is how many were dropped since the last one allowed,
    so the next line can say so.
    """

    def __init__(self, limit: int, window_ns: int, now_ns: Any) -> None:
        self._limit = limit
        self._window = window_ns
        self._now = now_ns
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, int, int]] = {}  # key -> (start, count, dropped)

    def allow(self, key: str) -> tuple[bool, int]:
        now = int(self._now())
        with self._lock:
            start, count, dropped = self._state.get(key, (now, 0, 0))
            if now - start >= self._window:
                start, count = now, 0
            if self._limit and count >= self._limit:
                self._state[key] = (start, count, dropped + 1)
                return False, 0
            self._state[key] = (start, count + 1, 0)
            return True, dropped


class Once:
    """Remembers which keys were already reported, so that a recurring problem
    (the same defect hit by event after event) is logged once, not per event.

    At most ``limit`` keys are kept; past that every key counts as seen, which
    keeps memory bounded when keys are made from input.
    """

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._seen: set[object] = set()
        self._lock = threading.Lock()

    def first(self, key: object) -> bool:
        """True the first time ``key`` is given (and while room is left)."""
        with self._lock:
            if key in self._seen or len(self._seen) >= self._limit:
                return False
            self._seen.add(key)
            return True


def exception_signature(exc: BaseException) -> tuple[str, str, int]:
    """What makes two failures "the same": the exception type and the innermost
    frame of fmd's or a module's code that raised it."""
    tb = exc.__traceback__
    where, line = "?", 0
    while tb is not None:
        where, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
    return type(exc).__name__, where, line
