"""The control-socket server (``var/run/fmd/adm.sock``, mode 0600).

Protocol: the client sends one JSON object per line, ``{"op": NAME, ...}``;
the server answers each with one line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": MESSAGE, "code": FmdError.code}``.  Requests marked
as mutating are served only to root or to the daemon's own user, checked with
the peer's credentials (``SO_PEERCRED``).

A request line holds at most :data:`MAX_REQUEST_BYTES`; a longer one is
answered with an error and the connection is closed, so no client can make fmd
buffer without bound.  Handlers read their arguments through the typed helpers
below (:func:`str_arg`, :func:`opt_str_arg`, :func:`number_arg`,
:func:`bool_arg`), which answer ``bad request: 'timeout' must be ..., not
'x'``.  A ``ValueError``, ``TypeError`` or ``KeyError`` a handler still raises
is a bad request too; any other exception is logged with its traceback and
answered ``internal error``.
"""

from __future__ import annotations

import math
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from fmd.errors import AdmError, FmdError

log = structlog.get_logger("fmd.adm")

Handler = Callable[[dict[str, Any]], Any]

MAX_REQUEST_BYTES: Final = 1 << 20
"""The longest request line (without its newline) the control socket reads."""
MAX_ARG_CHARS: Final = 4096
"""The longest string argument: a module name, an FMRI, a path."""
_SHOWN_CHARS: Final = 60  # how much of a bad value an error message repeats


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# -- request arguments -----------------------------------------------------------


def _show(value: object) -> str:
    """A bad value as the error message repeats it: Python-quoted strings, JSON else."""
    text = repr(value) if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def bad_arg(name: str, expected: str, value: object) -> AdmError:
    """``bad request: 'NAME' must be EXPECTED, not VALUE``."""
    return AdmError(f"bad request: {name!r} must be {expected}, not {_show(value)}")


def str_arg(req: dict[str, Any], name: str, what: str, *, choices: Collection[str] = ()) -> str:
    """The required string argument ``name`` (``what`` describes it; one of ``choices``
    when given)."""
    value = opt_str_arg(req, name, what)
    if value is None:
        raise AdmError(f"bad request: {name!r} is required ({what})")
    if choices and value not in choices:
        raise bad_arg(name, f"one of {', '.join(choices)}", value)
    return value


def opt_str_arg(req: dict[str, Any], name: str, what: str) -> str | None:
    """The optional string argument ``name``: None when absent or null."""
    value = req.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ARG_CHARS or "\0" in value:
        raise bad_arg(name, f"{what} (a string of at most {MAX_ARG_CHARS} characters)", value)
    return value


def number_arg(
    req: dict[str, Any], name: str, what: str, *, default: float, low: float, high: float
) -> float:
    """The numeric argument ``name`` between ``low`` and ``high``, ``default`` when absent."""
    value = req.get(name)
    if value is None:
        return default
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise bad_arg(name, f"{what} between {low:g} and {high:g}", value)
    return float(value)


def bool_arg(req: dict[str, Any], name: str, *, default: bool = False) -> bool:
    """The boolean argument ``name``, ``default`` when absent or null."""
    value = req.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_arg(name, "true or false", value)
    return value


# -- the server ------------------------------------------------------------------


class AdmServer:
    """Dispatches control requests to registered handlers on worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self.owner_uid = os.geteuid()

    def register(self, op: str, handler: Handler, *, mutating: bool = False) -> None:
        self._handlers[op] = (handler, mutating)

    def ops(self) -> list[str]:
        return sorted(self._handlers)

    def start(self) -> None:
        outer = self

        class _Req(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                uid = peer_uid(self.request)
                while True:
                    line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
                    if not line:
                        return
                    too_long = len(line) > MAX_REQUEST_BYTES and not line.endswith(b"\n")
                    if too_long:
                        log.warning("adm_request_too_long", limit=MAX_REQUEST_BYTES, uid=uid)
                        reply = outer.too_long_reply()
                    elif not line.strip():
                        continue
                    else:
                        reply = outer.serve(line, uid)
                    try:
                        self.wfile.write(outer.encode(reply))
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if too_long:
                        return  # the rest of that line is never read

        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            server = socketserver.ThreadingUnixStreamServer(str(self.path), _Req)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fmd-adm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)

    @staticmethod
    def too_long_reply() -> dict[str, Any]:
        """The answer to a request line over :data:`MAX_REQUEST_BYTES`."""
        return {
            "ok": False,
            "error": f"request line longer than {MAX_REQUEST_BYTES} bytes; closing the connection",
            "code": AdmError.code,
        }

    @staticmethod
    def encode(reply: dict[str, Any]) -> bytes:
        """One reply line; a result JSON cannot hold becomes an internal error."""
        try:
            return orjson.dumps(reply) + b"\n"
        except orjson.JSONEncodeError as exc:
            log.error("adm_reply_unencodable", error=str(exc))
            return (
                orjson.dumps({"ok": False, "error": f"internal error: {exc}", "code": "EFMD"})
                + b"\n"
            )

    def serve(self, line: bytes, uid: int | None) -> dict[str, Any]:
        """Answer one request line (public for tests)."""
        op: object = None
        try:
            req = orjson.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise AdmError("a request is a JSON object with a string 'op'")
            op = req["op"][:_SHOWN_CHARS]
            entry = self._handlers.get(req["op"])
            if entry is None:
                raise AdmError(
                    f"unknown request {_show(req['op'])}; known: {', '.join(self.ops())}"
                )
            handler, mutating = entry
            if mutating and uid not in (0, self.owner_uid):
                raise AdmError(
                    f"permission denied: {req['op']!r} needs root or the user "
                    f"fmd runs as (uid {self.owner_uid})"
                )
            return {"ok": True, "result": handler(req)}
        except orjson.JSONDecodeError as exc:
            return {"ok": False, "error": f"malformed request: {exc}", "code": AdmError.code}
        except FmdError as exc:
            return {"ok": False, "error": str(exc), "code": exc.code}
        except (ValueError, TypeError, KeyError) as exc:
            # A value the handler could not use: the request's fault, not fmd's.
            what = f"missing member {exc}" if isinstance(exc, KeyError) else str(exc)
            log.info("adm_bad_request", op=op, error=f"{type(exc).__name__}: {what}")
            return {"ok": False, "error": f"bad request: {what}", "code": AdmError.code}
        except Exception as exc:
            log.exception("adm_request_failed", op=op)
            return {"ok": False, "error": f"internal error: {exc}", "code": "EFMD"}
