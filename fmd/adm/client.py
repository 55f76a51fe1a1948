"""The client side of the control socket, used by fmadm, fmstat and fminject."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path
from typing import Any

import orjson

from fmd.errors import AdmError, DaemonNotRunning


def _owner(path: Path) -> str | None:
    """The name of the user owning ``path``, or of the nearest directory above it
    this process may examine (the run directory is private to fmd's user)."""
    for candidate in (path, *path.parents):
        try:
            uid = os.stat(candidate).st_uid
        except OSError:
            continue
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"uid {uid}"
    return None


def permission_message(path: Path, what: str, exc: OSError) -> str:
    """``cannot reach fmd at PATH: Permission denied (the WHAT is root's; run as root)``."""
    owner = _owner(path)
    hint = f" (the {what} is {owner}'s; run as {owner})" if owner is not None else ""
    return f"cannot reach fmd at {path}: {exc.strerror or exc}{hint}"


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
            raise AdmError(permission_message(path, "control socket", exc)) from None
        except OSError as exc:
            self._sock.close()
            raise AdmError(f"cannot reach fmd at {path}: {exc.strerror or exc}") from None
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
        try:
            reply = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AdmError(f"fmd sent a malformed reply: {exc}") from None
        if not isinstance(reply, dict):
            raise AdmError("fmd sent a malformed reply: not a JSON object")
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
