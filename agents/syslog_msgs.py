"""syslog-msgs: announce each diagnosis and repair to syslog and the console.

The agent receives ``list.suspect`` and ``list.repaired`` and writes the
event's operator summary (:func:`fmd.msgfmt.render_message`: SUNW-MSG-ID,
EVENT-ID, DESC, REC-ACTION ...) to two places (illumos-fma.md section 12):

* syslog (``syslogd``): one datagram per message sent straight to the syslog
  socket (``syslog_path``, ``/dev/log``) in RFC 3164 form::

      <PRI>Mmm dd hh:mm:ss fmd: [ID <n> <facility>.<level>] <summary>

  at LOG_ERR for ``list.suspect`` and LOG_NOTICE for ``list.repaired``.  The
  socket is written directly rather than through Python's ``syslog`` module
  because that module (and the C ``syslog(3)`` under it) hands the text to
  the logger as one line and many syslog daemons split or escape embedded
  newlines; a datagram of our own keeps the whole multi-line summary together
  as one record.  ``<n>`` is a stable number derived from the message code
  (CRC-32 of the code, six digits), so one kind of diagnosis can be filtered
  by its ID as on illumos.
* the console (``console``, off by default): the same summary appended to
  ``console_path`` with ``\\r\\n`` line endings, as a terminal wants them.

Life of one list event::

    not a list event / class not subscribed ---------------------> ignored
    message=false and not message_all ---------------------------> ignored
    bad version, de, code or diag-time --------------------------> counted (bad_*)
    (uuid, class) already announced -----------------------------> counted (suppressed)
    no dictionary message for the code --------------------------> counted (no_msg)
    rate limit reached in this window ---------------------------> counted (ratelimited)
    otherwise ----------------------------------------------------> written

Each (uuid, class) pair announced (or dropped by the rate limit) is kept in
the persistent buffer ``announced`` so that a list event replayed after a
restart is not announced twice.  The buffer keeps the most recent
``_MAX_ANNOUNCED`` pairs; older cases are long past the replay horizon.

The rate limit (``ratelimit`` messages per minute, 0 for none) guards the
console and the log against a storm of diagnoses.  The first message dropped
in a window arms a timer for the window's end, which then writes one line
saying how many were dropped.

Writing never fails the module: an error is counted (``log_err`` for syslog,
``msg_err`` for the console) and logged, once until a write succeeds again.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import orjson
import structlog

from fmd.config import PropSpec, PropType
from fmd.dictionary import decode_code
from fmd.errors import DictionaryError
from fmd.module import Plugin
from fmd.msgfmt import render_message
from fmd.protocol import ListEvent

if TYPE_CHECKING:
    from fmd.api import Handle

log = structlog.get_logger("agents.syslog_msgs")

SUSPECT: Final = "list.suspect"
REPAIRED: Final = "list.repaired"
LIST_VERSION: Final = 0
IDENT: Final = "fmd"
BUF_NAME: Final = "announced"
WINDOW_NS: Final = 60 * 10**9
_MAX_ANNOUNCED: Final = 4096
_SUMMARY_TIMER: Final = "ratelimit_window"

# syslog severities (RFC 3164 section 4.1.1) and their names in "[ID n f.l]".
LOG_ERR: Final = 3
LOG_NOTICE: Final = 5
_LEVEL_NAMES: Final = {LOG_ERR: "error", LOG_NOTICE: "notice"}

# Facility codes (RFC 3164) of the choices of the ``facility`` property.
FACILITIES: Final[dict[str, tuple[int, str]]] = {
    "LOG_DAEMON": (3, "daemon"),
    **{f"LOG_LOCAL{i}": (16 + i, f"local{i}") for i in range(8)},
}

_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip


def msg_id(text: str) -> int:
    """The ``[ID n ...]`` number of a message kind: six digits of CRC-32 of ``text``."""
    return zlib.crc32(text.encode()) % 1_000_000


def syslog_record(message: str, *, severity: int, facility: str, msgid: int, time_ns: int) -> bytes:
    """One RFC 3164 datagram: ``<PRI>Mmm dd hh:mm:ss fmd: [ID n fac.level] message``.

    The timestamp is local time, as RFC 3164 asks; embedded newlines are kept.
    """
    code, fac_name = FACILITIES[facility]
    tm = time.localtime(time_ns // 10**9)
    stamp = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} " + time.strftime("%H:%M:%S", tm)
    head = f"<{code * 8 + severity}>{stamp} {IDENT}: "
    tag = f"[ID {msgid} {fac_name}.{_LEVEL_NAMES[severity]}] "
    return (head + tag + message).encode("utf-8", errors="replace")


def console_text(message: str) -> bytes:
    """The console form of a message: ``\\r\\n`` line endings, a trailing one included."""
    return ("\r\n".join(message.split("\n")) + "\r\n").encode("utf-8", errors="replace")


def _problem(ev: Mapping[str, Any]) -> str | None:
    """The stat naming what is wrong with a list event, or None if it can be announced."""
    if ev.get("version", 0) != LIST_VERSION:
        return "bad_vers"
    de = ev.get("de")
    if not isinstance(de, Mapping) or de.get("scheme") != "fmd" or not de.get("mod-name"):
        return "bad_fmri"
    try:
        decode_code(str(ev.get("code") or ""))
    except DictionaryError:
        return "bad_code"
    diag_time = ev.get("diag-time")
    if not (
        isinstance(diag_time, list)
        and len(diag_time) == 2
        and all(isinstance(v, int) and v >= 0 for v in diag_time)
    ):
        return "bad_time"
    return None


class SyslogMsgs(Plugin):
    """Writes the summary of each diagnosis and repair to syslog and the console."""

    name = "syslog-msgs"
    version = "1.0"
    description = "Syslog Messaging Agent"
    subscriptions = (SUSPECT, REPAIRED)
    properties: ClassVar[tuple[PropSpec, ...]] = (
        PropSpec("syslogd", PropType.BOOL, "true", "send messages to the syslog socket"),
        PropSpec("syslog_path", PropType.STRING, "/dev/log", "the syslog datagram socket"),
        PropSpec(
            "facility",
            PropType.ENUM,
            "LOG_DAEMON",
            "syslog facility of the messages",
            choices=tuple(FACILITIES),
        ),
        PropSpec("console", PropType.BOOL, "false", "also write messages to the console"),
        PropSpec("console_path", PropType.STRING, "/dev/console", "the console device or file"),
        PropSpec("gmt", PropType.BOOL, "false", "print EVENT-TIME in UTC"),
        PropSpec("url", PropType.STRING, "", "message URL base (empty: the dictionary's)"),
        PropSpec("message_all", PropType.BOOL, "false", "also announce events with message=false"),
        PropSpec("ratelimit", PropType.UINT32, "60", "messages per minute at most (0: no limit)"),
    )

    def __init__(self) -> None:
        self._announced: dict[tuple[str, str], None] = {}
        self._sock: socket.socket | None = None
        self._log_failing = False
        self._console_failing = False
        self._window_start: int | None = None
        self._sent = 0
        self._dropped = 0
        self.summary_timer: int | None = None

    # -- lifecycle ----------------------------------------------------------
    def init(self, hdl: Handle) -> None:
        for name, what in (
            ("bad_vers", "events with an unknown version"),
            ("bad_fmri", "events with a bad diagnosis engine FMRI"),
            ("bad_code", "events with a missing or malformed message code"),
            ("bad_time", "events with a missing or bad diag-time"),
            ("log_err", "messages that could not be sent to syslog"),
            ("msg_err", "messages that could not be written to the console"),
            ("no_msg", "events whose code has no dictionary message"),
            ("suppressed", "events already announced (replayed or repeated)"),
            ("ratelimited", "messages dropped by the rate limit"),
        ):
            hdl.stat(name, what)
        saved = hdl.buf_read(BUF_NAME)
        if saved:
            pairs = orjson.loads(saved)
            self._announced = {(str(u), str(c)): None for u, c in pairs}

    def fini(self, hdl: Handle) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- events -------------------------------------------------------------
    def recv(self, hdl: Handle, event: Any) -> None:
        if not isinstance(event, ListEvent) or event.cls not in (SUSPECT, REPAIRED):
            return
        if not event.message and not hdl.prop("message_all"):
            return
        ev = event.to_json_dict()
        problem = _problem(ev)
        if problem is not None:
            hdl.stat(problem).incr()
            log.warning("list_event_invalid", module=hdl.name, uuid=event.uuid, stat=problem)
            return
        key = (event.uuid, event.cls)
        if key in self._announced:
            hdl.stat("suppressed").incr()
            return
        text = render_message(
            ev, hdl.dicts, url=str(hdl.prop("url")) or None, gmt=bool(hdl.prop("gmt"))
        )
        if text is None:
            hdl.stat("no_msg").incr()
            log.warning("message_missing", module=hdl.name, uuid=event.uuid, code=event.code)
            return
        self._remember(hdl, key)
        if not self._admit(hdl):
            hdl.stat("ratelimited").incr()
            return
        severity = LOG_ERR if event.cls == SUSPECT else LOG_NOTICE
        self._write(hdl, text, severity, msg_id(event.code))

    def timeout(self, hdl: Handle, timer_id: int, arg: Any) -> None:
        if arg == _SUMMARY_TIMER:
            self.summary_timer = None
            self._flush_dropped(hdl)

    # -- duplicates and rate limit ---------------------------------------------
    def _remember(self, hdl: Handle, key: tuple[str, str]) -> None:
        self._announced[key] = None
        while len(self._announced) > _MAX_ANNOUNCED:
            del self._announced[next(iter(self._announced))]
        hdl.buf_write(BUF_NAME, orjson.dumps([list(k) for k in self._announced]))

    def _admit(self, hdl: Handle) -> bool:
        """May one more message be written in the current rate-limit window?"""
        limit = int(hdl.prop("ratelimit"))
        if limit == 0:
            return True
        now = hdl.now_ns()
        if self._window_start is None or now - self._window_start >= WINDOW_NS:
            # The window ended without its timer having run yet: report now.
            self._flush_dropped(hdl)
            self._window_start, self._sent = now, 0
        if self._sent < limit:
            self._sent += 1
            return True
        self._dropped += 1
        if self.summary_timer is None:
            self.summary_timer = hdl.timer_install(
                self._window_start + WINDOW_NS - now, _SUMMARY_TIMER
            )
        return False

    def _flush_dropped(self, hdl: Handle) -> None:
        if self.summary_timer is not None:
            hdl.timer_remove(self.summary_timer)
            self.summary_timer = None
        if not self._dropped:
            return
        text = f"{self._dropped} fault management messages were dropped by the rate limit"
        self._dropped = 0
        self._write(hdl, text, LOG_NOTICE, msg_id("ratelimit"))

    # -- output ---------------------------------------------------------------
    def _write(self, hdl: Handle, text: str, severity: int, msgid: int) -> None:
        if hdl.prop("syslogd"):
            record = syslog_record(
                text,
                severity=severity,
                facility=str(hdl.prop("facility")),
                msgid=msgid,
                time_ns=hdl.now_ns(),
            )
            self._send_syslog(hdl, record)
        if hdl.prop("console"):
            self._write_console(hdl, console_text(text))

    def _send_syslog(self, hdl: Handle, record: bytes) -> None:
        path = str(hdl.prop("syslog_path"))
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(record, path)
        except OSError as exc:
            hdl.stat("log_err").incr()
            if not self._log_failing:
                self._log_failing = True
                log.warning("syslog_send_failed", module=hdl.name, path=path, error=str(exc))
            return
        self._log_failing = False

    def _write_console(self, hdl: Handle, data: bytes) -> None:
        path = str(hdl.prop("console_path"))
        try:
            with open(path, "ab") as f:
                f.write(data)
        except OSError as exc:
            hdl.stat("msg_err").incr()
            if not self._console_failing:
                self._console_failing = True
                log.warning("console_write_failed", module=hdl.name, path=path, error=str(exc))
            return
        self._console_failing = False
