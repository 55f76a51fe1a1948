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


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the daemon or a command."""
    out = stream if stream is not None else sys.stderr
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
        logger_factory=structlog.PrintLoggerFactory(out),
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
