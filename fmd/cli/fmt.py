"""Output formatting shared by the commands (dates in the illumos layouts)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

SIX_MONTHS_NS = 183 * 86400 * 10**9


def _local(time_ns: int) -> datetime:
    return datetime.fromtimestamp(time_ns / 1e9)


def fmdump_date(time_ns: int, now_ns: int | None = None) -> str:
    """``%b %d %H:%M:%S.NNNN``, or ``%b %d %Y %H:%M:%S`` for old or future times."""
    now = time.time_ns() if now_ns is None else now_ns
    dt = _local(time_ns)
    if time_ns > now or now - time_ns > SIX_MONTHS_NS:
        return dt.strftime("%b %d %Y %H:%M:%S")
    frac = (time_ns // 100_000) % 10_000
    return f"{dt.strftime('%b %d %H:%M:%S')}.{frac:04d}"


def fmdump_date_ns(time_ns: int) -> str:
    """``%b %d %Y %H:%M:%S.NNNNNNNNN`` (the ``-V`` form)."""
    return f"{_local(time_ns).strftime('%b %d %Y %H:%M:%S')}.{time_ns % 10**9:09d}"


def store_warning(store: dict[str, Any] | None) -> str | None:
    """The one-line warning the commands print when the store takes no new events
    (its disk is full or below log.minfree, or the database is not answering)."""
    if not store or store.get("state", "ok") == "ok":
        return None
    held = int(store.get("held_ops") or 0)
    tail = f"; {held} module checkpoints are held until it recovers" if held else ""
    return f"warning: the store is {store['state']}: {store.get('reason', '')}{tail}"
