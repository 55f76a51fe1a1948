"""The control-socket server (``var/run/fmd/adm.sock``, mode 0600).

Protocol: the client sends one JSON object per line, ``{"op": NAME, ...}``;
the server answers each with one line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": MESSAGE, "code": FmdError.code}``.  Requests marked
as mutating are served only to root or to the daemon's own user, checked with
the peer's credentials (``SO_PEERCRED``).
"""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog

from fmd.errors import AdmError, FmdError

log = structlog.get_logger("fmd.adm")

Handler = Callable[[dict[str, Any]], Any]


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


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
                for line in self.rfile:
                    if not line.strip():
                        continue
                    reply = outer.serve(line, uid)
                    try:
                        self.wfile.write(orjson.dumps(reply) + b"\n")
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return

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

    def serve(self, line: bytes, uid: int | None) -> dict[str, Any]:
        """Answer one request line (public for tests)."""
        try:
            req = orjson.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise AdmError("a request is a JSON object with a string 'op'")
            entry = self._handlers.get(req["op"])
            if entry is None:
                raise AdmError(f"unknown request {req['op']!r}; known: {', '.join(self.ops())}")
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
        except Exception as exc:
            log.exception("adm_request_failed")
            return {"ok": False, "error": f"internal error: {exc}", "code": "EFMD"}
