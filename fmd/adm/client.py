"""The client side of the control socket, used by fmadm, fmstat and fminject."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import orjson

from fmd.errors import AdmError, DaemonNotRunning


class AdmClient:
    """One connection to a running fmd's control socket."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise DaemonNotRunning(
                f"fmd is not running (no answer on {path}): {exc.strerror or exc}"
            ) from None
        except PermissionError as exc:
            self._sock.close()
            raise AdmError(f"cannot reach fmd at {path}: {exc.strerror}") from None
        self._rfile = self._sock.makefile("rb")

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its result, or raise the daemon's error."""
        try:
            self._sock.sendall(orjson.dumps({"op": op, **args}) + b"\n")
            line = self._rfile.readline()
        except OSError as exc:
            raise AdmError(f"lost the connection to fmd: {exc}") from None
        if not line:
            raise AdmError("fmd closed the connection without answering")
        reply = orjson.loads(line)
        if not reply.get("ok"):
            raise AdmError(str(reply.get("error", "unknown error")))
        return reply.get("result")

    def close(self) -> None:
        self._rfile.close()
        self._sock.close()

    def __enter__(self) -> AdmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
