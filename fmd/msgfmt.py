"""The operator-facing summary of a list event (console, syslog, ``fmdump -m``).

One function, :func:`render_message`, fills the dictionary's
``syslog-msgs-message-template`` (from ``FMD.po``, or the code's own
dictionary when it overrides it) with the fields of a ``list.*`` event:

=============== ===============================================================
SUNW-MSG-ID     the event's ``code``
TYPE, SEVERITY  the code's ``.type`` and ``.severity`` message fields
EVENT-TIME      ``diag-time`` in date(1) form (``%a %b %d %H:%M:%S %Z %Y``)
PLATFORM        the diagnosis engine's authority ``product-id`` (or ``-``)
CSN             its ``chassis-id`` (or ``-``)
HOSTNAME        its ``server-id`` (or ``-``)
SOURCE, REV     the engine's ``mod-name`` and ``mod-version``
EVENT-ID        the case uuid
DESC ... ACTION the code's description (with the URL), response, impact, action
=============== ===============================================================

It works on the JSON form of the event as stored in the fault log, so the
daemon's syslog agent and the offline ``fmdump -m`` print the same text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fmd.dictionary import DEFAULT_MSG_URL, DictionarySet

TEMPLATE_MSGID = "syslog-msgs-message-template"
URL_MSGID = "syslog-url"

# Used when no dictionary provides the template (the layout of the reference).
DEFAULT_TEMPLATE = (
    "SUNW-MSG-ID: %s, TYPE: %s, VER: 1, SEVERITY: %s\n"
    "EVENT-TIME: %s\n"
    "PLATFORM: %s, CSN: %s, HOSTNAME: %s\n"
    "SOURCE: %s, REV: %s\n"
    "EVENT-ID: %s\n"
    "DESC: %s\n"
    "AUTO-RESPONSE: %s\n"
    "IMPACT: %s\n"
    "REC-ACTION: %s"
)
_FIELDS = 14


def event_time_text(diag_time: Any, *, gmt: bool = False) -> str:
    """``diag-time`` ([sec, usec] or integer ns) in date(1) form, local or UTC."""
    if isinstance(diag_time, list) and len(diag_time) == 2:
        seconds = float(diag_time[0]) + float(diag_time[1]) / 1e6
    elif isinstance(diag_time, int):
        seconds = diag_time / 1e9
    else:
        return "-"
    dt = (
        datetime.fromtimestamp(seconds, UTC)
        if gmt
        else datetime.fromtimestamp(seconds).astimezone()
    )
    return dt.strftime("%a %b %d %H:%M:%S %Z %Y")


def _template(dicts: DictionarySet, dict_name: str) -> str:
    for name in (dict_name, "FMD"):
        catalog = dicts.catalog(name)
        text = catalog.text(TEMPLATE_MSGID) if catalog is not None else None
        if text and text.count("%s") == _FIELDS:
            return text
    return DEFAULT_TEMPLATE


def _url(dicts: DictionarySet, dict_name: str, url: str | None) -> str:
    if url:
        return url
    catalog = dicts.catalog(dict_name)
    override = catalog.text(URL_MSGID) if catalog is not None else None
    return override or DEFAULT_MSG_URL


def render_message(
    event: Mapping[str, Any],
    dicts: DictionarySet,
    *,
    url: str | None = None,
    gmt: bool = False,
) -> str | None:
    """The multi-line summary of a list event, or None if its code has no message.

    ``url`` overrides the message URL base (else the dictionary's ``syslog-url``
    or the default).
    """
    code = str(event.get("code") or "")
    message = dicts.message(code) if code else None
    if message is None:
        return None
    dict_name = code.partition("-")[0]
    de = event.get("de")
    de_map: Mapping[str, Any] = de if isinstance(de, Mapping) else {}
    auth = de_map.get("authority")
    authority: Mapping[str, Any] = auth if isinstance(auth, Mapping) else {}

    def member(value: Any) -> str:
        return str(value) if value not in (None, "") else "-"

    fields = (
        code,
        message.type,
        message.severity,
        event_time_text(event.get("diag-time"), gmt=gmt),
        member(authority.get("product-id")),
        member(authority.get("chassis-id")),
        member(authority.get("server-id")),
        member(de_map.get("mod-name")),
        member(de_map.get("mod-version")),
        member(event.get("uuid")),
        message.description_with_url(_url(dicts, dict_name, url)),
        message.response,
        message.impact,
        message.action,
    )
    return _template(dicts, dict_name) % fields
