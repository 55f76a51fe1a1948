"""Conversion between events and database rows (errlog and fltlog)."""

from __future__ import annotations

from typing import Any

import orjson

from fmd import states
from fmd.hw.telemetry import expand_stored
from fmd.protocol import Ereport, ListEvent, parse_fmri_cached
from fmd.store import schema

# What an ereport costs to hold beyond its payload and detector text (the
# object, its class string and ids), for memory accounting.
ROW_OVERHEAD = 256


def ereport_row(ev: Ereport, *, recv_ns: int, xprt: str) -> list[Any]:
    """The errlog row of an ereport, in ``schema.ERRLOG_COLUMNS`` order.

    The first item is the id, ``ev.id`` (None until the writer assigns it).
    """
    text = ev.payload_text
    return [
        ev.id,
        ev.time_ns,
        recv_ns,
        schema.ena_to_db(ev.ena),
        ev.cls,
        ev.detector_str,
        text if text is not None else orjson.dumps(ev.payload).decode(),
        states.STATE_RECEIVED,
        False,
        ev.injected,
        xprt,
        ev.count,
        ev.last_ns,
    ]


def row_ereport(row: Any) -> Ereport:
    """Rebuild an ereport from its errlog row."""
    m = row._mapping
    det = m["detector"]
    text = m["payload"]
    return Ereport(
        cls=m["class"],
        ena=schema.ena_from_db(m["ena"]),
        time_ns=m["time_ns"],
        detector=parse_fmri_cached(det) if det else None,
        detector_str=det,
        payload=expand_stored(orjson.loads(text)),
        injected=bool(m["injected"]),
        id=m["id"],
        size=len(text) + len(det or "") + ROW_OVERHEAD,
        count=m["count"],
        last_ns=m["last_ns"],
    )


def list_row(ev: ListEvent, event_id: int, time_ns: int | None = None) -> dict[str, Any]:
    """The fltlog row of a list event, logged at ``time_ns`` (default: its diag-time)."""
    return {
        "id": event_id,
        "time_ns": ev.diag_time_ns if time_ns is None else time_ns,
        "class": ev.cls,
        "uuid": ev.uuid,
        "code": ev.code,
        "payload": orjson.dumps(ev.to_json_dict()).decode(),
        "committed": False,
        "injected": ev.injected,
    }


def row_list(row: Any) -> ListEvent:
    """Rebuild a list event from its fltlog row."""
    return ListEvent.from_json_dict(orjson.loads(row._mapping["payload"]))
