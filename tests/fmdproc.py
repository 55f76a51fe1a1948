"""Run the real fmd daemon in a temporary root for end-to-end tests.

:class:`FmdProcess` starts ``fmd -f`` as a subprocess with the current
interpreter, waits until its control socket answers, and offers helpers to
send JSON lines over the ingest socket, call the control socket, run the CLIs,
kill it (SIGKILL) or stop it (SIGTERM).  Plug-ins for tests live in
``tests/plugins`` and are copied into the root's plug-in directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from fmd.adm.client import AdmClient
from fmd.errors import AdmError
from fmd.paths import Paths

PLUGINS = Path(__file__).parent / "plugins"

# A test daemon never reads the test machine's own kernel sources (its kernel
# log, tracefs, /dev/mcelog, EDAC counters, pstore): a test that wants one
# turns it on and points it at a fake tree.
HOST_SOURCES_OFF: dict[str, str] = {
    f"xprt.{name}": "off" for name in ("tracefs", "kmsg", "mcelog", "edac", "pstore")
}


def cli(
    prog: str, *args: str, root: Path, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one of the commands (fmd, fmadm, fmdump, fmstat, fminject) in-tree."""
    cmd = [sys.executable, "-m", f"fmd.cli.{prog}", "-R", str(root)]
    if prog == "fmd":
        for k, v in HOST_SOURCES_OFF.items():
            cmd += ["-o", f"{k}={v}"]
    cmd += args
    return subprocess.run(
        cmd,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FMD_ROOT", None)
    return env


class FmdProcess:
    def __init__(
        self, root: Path, *, plugins: Sequence[str] = (), props: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.paths = Paths(root)
        self.props = dict(props or {})
        self.proc: subprocess.Popen[bytes] | None = None
        plugin_dir = self.paths.plugin_dir
        plugin_dir.mkdir(parents=True, exist_ok=True)
        for name in plugins:
            shutil.copy(PLUGINS / f"{name}.py", plugin_dir / f"{name}.py")
        self.log = root / "fmd.stderr"

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 60.0, **extra: str) -> FmdProcess:
        args = [
            sys.executable,
            "-m",
            "fmd.cli.fmd",
            "-R",
            str(self.root),
            "-f",
            "-o",
            "log.format=json",
        ]
        for k, v in {**HOST_SOURCES_OFF, **self.props, **extra}.items():
            args += ["-o", f"{k}={v}"]
        err = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, stdout=err, stderr=err, env=_env())
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fmd exited with {self.proc.returncode}: {self.stderr()}")
            if self.paths.xprt_socket.exists() or not self._socket_wanted():
                try:
                    self.adm("ping")
                    return self
                except AdmError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"fmd did not become ready: {self.stderr()}")

    def _socket_wanted(self) -> bool:
        return self.props.get("xprt.socket", "true") == "true"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to checkpoint or drain anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- talking to it ----------------------------------------------------------
    def adm(self, op: str, **args: Any) -> Any:
        with AdmClient(self.paths.adm_socket, timeout=120) as c:
            return c.call(op, **args)

    def quiesce(self, timeout: float = 120.0) -> None:
        assert self.adm("quiesce", timeout=timeout) is True

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(self.paths.xprt_socket))
        return s

    def send_lines(self, lines: Iterable[bytes | str | dict[str, Any]]) -> list[dict[str, Any]]:
        """Send lines on one connection and return one reply per line, in order."""
        data = []
        for line in lines:
            if isinstance(line, dict):
                line = orjson.dumps(line)
            elif isinstance(line, str):
                line = line.encode()
            data.append(line + b"\n")
        with self.connect() as s:

            def send() -> None:
                s.sendall(b"".join(data))
                s.shutdown(socket.SHUT_WR)

            # Write from a thread while reading, so large inputs cannot deadlock
            # on full socket buffers.
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            rfile = s.makefile("rb")
            replies = [orjson.loads(r) for r in rfile]
            sender.join()
            return replies

    def cli(
        self, prog: str, *args: str, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        return cli(prog, *args, root=self.root, input=input)

    def wait_for(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll ``done()`` until it holds (a host source reads on its own schedule)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not done within {timeout} s: {self.stderr()[-2000:]}")
            time.sleep(0.1)

    def errlog_json(self, *args: str) -> list[dict[str, Any]]:
        out = self.cli("fmdump", "-e", "--json", *args)
        assert out.returncode == 0, out.stderr
        return json_lines(out.stdout)

    def fltlog_json(self, *args: str) -> list[dict[str, Any]]:
        """Every fault-log record, message=false ones included (-a)."""
        out = self.cli("fmdump", "-a", "--json", *args)
        assert out.returncode == 0, out.stderr
        return json_lines(out.stdout)


def json_lines(text: str) -> list[dict[str, Any]]:
    """One JSON document per line.  Split on newlines only: ``str.splitlines``
    also splits on U+2028, U+0085 and other characters a JSON string may hold raw."""
    return [orjson.loads(line) for line in text.split("\n") if line]
