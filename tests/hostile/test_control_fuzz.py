"""The control socket under hostile requests: every registered op with random
arguments never gets an "internal error" and never stops the daemon; request
lines are bounded."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmd.adm.server import (
    MAX_REQUEST_BYTES,
    AdmServer,
    bool_arg,
    number_arg,
    opt_str_arg,
    str_arg,
)
from fmd.errors import AdmError
from tests.fmdproc import PLUGINS, FmdProcess

# For each argument the handlers read, values they would accept (so that requests
# get past the first check and reach the code behind it); any JSON value besides.
LIKELY = {
    "timeout": [0, 0.5, 2, 3600, -1, 1e9],
    "module": ["serd-test", "cpumem-retire", "fmd-self-diagnosis", "nosuch", ""],
    "serd": ["serd.ereport.test.a", "nosuch"],
    "uuid": ["00000000-0000-0000-0000-000000000000", "nosuch"],
    "all": [True, False],
    "verb": ["repaired", "replaced", "acquit", "flush", "nosuch"],
    "target": ["CPU 3", "cpu:///cpuid=3", "hc:///motherboard=0/chip=3", "hc://", " ", "\0"],
    "log": ["errlog", "fltlog", "infolog"],
    "path": [str(PLUGINS / "serdtest.py"), "/nonexistent.py", "relative.py", "/"],
}
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def requests(ops: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A request for one of ``ops`` (or an unknown op) with random arguments."""
    known = st.fixed_dictionaries(
        {}, optional={name: st.sampled_from(v) | JSON_VALUES for name, v in LIKELY.items()}
    )
    extra = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)
    return st.builds(
        lambda op, a, b: {**b, **a, "op": op},
        st.sampled_from(ops) | st.text(max_size=10),
        known,
        extra,
    )


class Line:
    """One connection to a control socket that sends raw lines and reads replies."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(str(path))
        self.rfile = self.sock.makefile("rb")

    def ask(self, line: bytes) -> dict[str, Any]:
        self.sock.sendall(line + b"\n")
        reply: dict[str, Any] = orjson.loads(self.rfile.readline())
        return reply

    def rest(self) -> bytes:
        """What the server sends until it closes (b"" once it has closed)."""
        try:
            return self.rfile.read()
        except ConnectionResetError:
            return b""

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


# -- against the real daemon ----------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FmdProcess]:
    """One daemon (with a SERD-recording plug-in) shared by this module's tests."""
    root = tmp_path_factory.mktemp("control") / "root"
    root.mkdir()
    fmd = FmdProcess(root, plugins=["serdtest"]).start()
    yield fmd
    if fmd.alive():
        fmd.stop()


def registered_ops(fmd: FmdProcess) -> list[str]:
    """Every op the daemon registers, read from its answer to an unknown one."""
    with pytest.raises(AdmError) as info:
        fmd.adm("no-such-op")
    known = re.search(r"known: (.*)$", str(info.value))
    assert known is not None
    return known.group(1).split(", ")


def test_bad_quiesce_timeout_is_a_bad_request(daemon: FmdProcess) -> None:
    """A quiesce timeout that is not a number of seconds is answered as a bad request."""
    with pytest.raises(AdmError) as info:
        daemon.adm("quiesce", timeout="x")
    expected = "bad request: 'timeout' must be a number of seconds between 0 and 3600, not 'x'"
    assert expected == str(info.value)


def _fuzz_daemon(fmd: FmdProcess, examples: int) -> None:
    ops = registered_ops(fmd)
    conn = Line(fmd.paths.adm_socket)
    internal: list[tuple[dict[str, Any], str]] = []

    @settings(max_examples=examples, deadline=None, database=None)
    @given(req=requests(ops))
    def check(req: dict[str, Any]) -> None:
        reply = conn.ask(orjson.dumps(req))
        if not reply["ok"] and str(reply["error"]).startswith("internal error"):
            internal.append((req, reply["error"]))

    try:
        check()
    finally:
        conn.close()
    expected: tuple[list[Any], bool] = ([], True)
    assert expected == (internal, fmd.alive())
    assert fmd.adm("ping")["root"] == str(fmd.root)


def test_random_requests_never_get_internal_errors(daemon: FmdProcess) -> None:
    """Every registered op with random arguments avoids "internal error"; fmd stays up."""
    _fuzz_daemon(daemon, 300)


@pytest.mark.fuzz_long
def test_random_requests_never_get_internal_errors_long(daemon: FmdProcess) -> None:
    """The same, for many more requests."""
    _fuzz_daemon(daemon, 20_000)


# -- the server alone, with stub handlers ------------------------------------------------


def _stubs() -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Handlers that use their arguments the ways the real ones do, carelessly too."""
    return {
        "typed": lambda r: (
            str_arg(r, "module", "a module name", choices=("a", "b")),
            opt_str_arg(r, "uuid", "a case uuid"),
            number_arg(r, "timeout", "a number of seconds", default=1.0, low=0.0, high=10.0),
            bool_arg(r, "all"),
        ),
        "index": lambda r: r["module"] + 1,
        "convert": lambda r: int(r.get("timeout")) + float(r.get("n", "x")),
        "echo": lambda r: r,
    }


@pytest.fixture
def server(tmp_path: Path) -> AdmServer:
    adm = AdmServer(tmp_path / "adm.sock")
    for op, handler in _stubs().items():
        adm.register(op, handler)
    return adm


@settings(max_examples=500, deadline=None, database=None)
@given(req=requests(list(_stubs())))
def test_serve_never_answers_internal_error_to_bad_arguments(req: dict[str, Any]) -> None:
    """Handlers' ValueError, TypeError and KeyError are bad requests, never internal errors."""
    adm = AdmServer(Path("/nonexistent/adm.sock"))
    for op, handler in _stubs().items():
        adm.register(op, handler)
    reply = adm.serve(orjson.dumps(req), uid=0)
    error = "" if reply["ok"] else str(reply["error"])
    expected = (False, True)
    assert expected == (error.startswith("internal error"), adm.encode(reply).endswith(b"\n"))


@settings(max_examples=300, deadline=None, database=None)
@given(line=st.binary(max_size=200))
def test_serve_answers_any_bytes(line: bytes) -> None:
    """Any bytes at all get a reply that is not an internal error."""
    adm = AdmServer(Path("/nonexistent/adm.sock"))
    reply = adm.serve(line, uid=0)
    expected = (False, False)
    assert expected == (reply["ok"], str(reply["error"]).startswith("internal error"))


def test_unknown_exception_is_still_an_internal_error(server: AdmServer) -> None:
    """A handler's own bug is logged and answered "internal error", not hidden."""

    def broken(req: dict[str, Any]) -> Any:
        raise RuntimeError("boom")

    server.register("broken", broken)
    expected = {"ok": False, "error": "internal error: boom", "code": "EFMD"}
    assert expected == server.serve(b'{"op": "broken"}', uid=0)


def test_typed_argument_messages(server: AdmServer) -> None:
    """The typed helpers name the argument, what it must be and what it was."""
    cases = [
        b'{"op": "typed"}',
        b'{"op": "typed", "module": "c"}',
        b'{"op": "typed", "module": "a", "uuid": 7}',
        b'{"op": "typed", "module": "a", "timeout": true}',
        b'{"op": "typed", "module": "a", "all": "yes"}',
    ]
    expected = [
        "bad request: 'module' is required (a module name)",
        "bad request: 'module' must be one of a, b, not 'c'",
        "bad request: 'uuid' must be a case uuid (a string of at most 4096 characters), not 7",
        "bad request: 'timeout' must be a number of seconds between 0 and 10, not true",
        "bad request: 'all' must be true or false, not 'yes'",
    ]
    assert expected == [server.serve(c, uid=0)["error"] for c in cases]


def test_request_line_over_the_limit_is_refused_and_closed(server: AdmServer) -> None:
    """A line over 1 MiB gets an error and a close; exactly 1 MiB is served; serving goes on."""
    server.start()
    try:
        exact = b'{"op": "echo"}'.ljust(MAX_REQUEST_BYTES)
        ok = Line(server.path)
        first = ok.ask(exact)["ok"]
        ok.close()
        long = Line(server.path)
        sender = threading.Thread(
            target=lambda: _send_quietly(long.sock, b"x" * (2 * MAX_REQUEST_BYTES)), daemon=True
        )
        sender.start()
        reply = orjson.loads(long.rfile.readline())
        rest = long.rest()
        sender.join(30)
        long.close()
        after = Line(server.path)
        again = after.ask(b'{"op": "echo"}')["ok"]
        after.close()
    finally:
        server.stop()
    expected_error = f"request line longer than {MAX_REQUEST_BYTES} bytes; closing the connection"
    assert (True, False, expected_error, b"", True) == (
        first,
        reply["ok"],
        reply["error"],
        rest,
        again,
    )


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    # The server closes the connection part way, as it should.
    with contextlib.suppress(OSError):
        sock.sendall(data)
