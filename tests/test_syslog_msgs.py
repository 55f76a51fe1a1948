"""The syslog-msgs agent (agents.syslog_msgs): list events announced to syslog and the console.

The module runs on a bare Handle (no daemon) with a simulated clock; its syslog
socket is a Unix datagram socket bound in ``tmp_path`` and its console a file.
``FMD_UPDATE_GOLDEN=1`` rewrites the golden files instead of comparing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.syslog_msgs import BUF_NAME, SyslogMsgs, console_text, msg_id
from fmd.api import Handle
from fmd.clock import SimulatedClock
from fmd.dictionary import encode_code
from fmd.protocol import ListEvent
from tests.diagnosis_util import DICTS, FakeWriter, make_handle

GOLDEN = Path(__file__).parent / "golden" / "syslog"
NOW_NS = 1_700_000_000 * 10**9  # Tue Nov 14 22:13:20 UTC 2023
UUID = "6f1c2a4e-8d3b-4c1e-9f7a-2b5d8e0c1a93"
REPAIRED_CODE = DICTS.code_for("FMD", ["list.repaired"])
_LIVE: list[Agent] = []


def golden(name: str, actual: bytes) -> bytes:
    """The golden file's content (rewritten from ``actual`` with FMD_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if os.environ.get("FMD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
    return path.read_bytes()


@pytest.fixture(autouse=True)
def unload() -> Iterator[None]:
    """Every agent made by a test is unloaded (fini closes its socket) when it ends."""
    yield
    while _LIVE:
        agent = _LIVE.pop()
        agent.plugin.fini(agent.hdl)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Syslog timestamps are local time: pin the zone to UTC for exact expectations."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@dataclass
class Agent:
    """syslog-msgs on a Handle, with its syslog socket and console file."""

    hdl: Handle
    plugin: SyslogMsgs
    writer: FakeWriter
    clock: SimulatedClock
    log: socket.socket
    console: Path

    def feed(self, ev: ListEvent) -> None:
        self.plugin.recv(self.hdl, ev)
        self.hdl.checkpoint({"errlog": 0, "fltlog": 0})

    def datagrams(self) -> list[bytes]:
        """Every datagram received on the syslog socket since the last call."""
        out = []
        while True:
            try:
                out.append(self.log.recv(65536))
            except BlockingIOError:
                return out

    def console_bytes(self) -> bytes:
        return self.console.read_bytes() if self.console.exists() else b""

    def stat(self, name: str) -> int:
        return self.hdl.stat(name).value

    def fire_summary_timer(self) -> None:
        """Deliver the rate-limit timer as the module's runner would."""
        tid = self.plugin.summary_timer
        assert tid is not None
        assert self.hdl.timer_fired(tid)
        self.plugin.timeout(self.hdl, tid, "ratelimit_window")

    def restarted(self) -> Agent:
        """A new instance of the module restored from this one's last checkpoint."""
        doc = orjson.loads(self.writer.ops[-1].doc or "{}")
        return make_agent(self.log, self.console, self.hdl.props.items(), doc)


def make_agent(
    log: socket.socket,
    console: Path,
    overrides: Any = (),
    doc: dict[str, Any] | None = None,
) -> Agent:
    plugin = SyslogMsgs()
    sources = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in overrides]
    hdl, writer = make_handle(plugin, "", sources, now_ns=NOW_NS, doc=doc)
    clock = hdl._ctx.clock
    assert isinstance(clock, SimulatedClock)
    agent = Agent(hdl, plugin, writer, clock, log, console)
    _LIVE.append(agent)
    return agent


@pytest.fixture
def log_socket(tmp_path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "log"))
    s.setblocking(False)
    yield s
    s.close()


@pytest.fixture
def agent(tmp_path: Path, log_socket: socket.socket) -> Agent:
    """The agent with syslog to the bound socket, the console on, UTC event times."""
    return make_agent(
        log_socket,
        tmp_path / "console",
        [
            ("syslog_path", str(tmp_path / "log")),
            ("console", "true"),
            ("console_path", str(tmp_path / "console")),
            ("gmt", "true"),
        ],
    )


def list_event(
    cls: str = "list.suspect",
    uuid: str = UUID,
    code: str = "GMCA-8000-Q7",
    *,
    message: bool = True,
) -> ListEvent:
    """A list event from cpumem-diagnosis on chip 3, strand 13."""
    return ListEvent.from_json_dict(
        {
            "class": cls,
            "uuid": uuid,
            "code": code,
            "diag-time": [1_700_000_000, 250_000],
            "de": {
                "scheme": "fmd",
                "authority": {"product-id": "sim", "chassis-id": "SN1234", "server-id": "h"},
                "mod-name": "cpumem-diagnosis",
                "mod-version": "1.0",
            },
            "fault-list": [
                {
                    "class": "fault.cpu.generic-x86.l1icache",
                    "certainty": 100,
                    "asru": "cpu:///cpuid=13",
                    "location": "CPU 3",
                    "message": message,
                }
            ],
            "fault-status": [1],
            "message": message,
        }
    )


def message_of(datagram: bytes) -> bytes:
    """The message after the ``fmd: [ID n f.l] `` tag of a syslog datagram."""
    return datagram.split(b"] ", 1)[1]


# -- what is written -----------------------------------------------------------


def test_suspect_is_one_datagram_matching_golden(agent: Agent) -> None:
    """A list.suspect gives exactly one RFC 3164 datagram holding the whole summary."""
    agent.feed(list_event())
    [datagram] = agent.datagrams()
    assert datagram == golden("list_suspect.txt", datagram)


def test_datagram_header_has_priority_time_and_id(agent: Agent) -> None:
    """The header is <PRI>, the local time, ``fmd:`` and ``[ID n daemon.error]``."""
    agent.feed(list_event())
    [datagram] = agent.datagrams()
    header = f"<27>Nov 14 22:13:20 fmd: [ID {msg_id('GMCA-8000-Q7')} daemon.error] SUNW-MSG-ID: "
    assert datagram.startswith(header.encode())


def test_suspect_at_log_err_repaired_at_log_notice(agent: Agent) -> None:
    """list.suspect is sent at LOG_ERR (PRI 27), list.repaired at LOG_NOTICE (PRI 29)."""
    agent.feed(list_event())
    agent.feed(list_event("list.repaired", code=REPAIRED_CODE))
    assert [d.split(b">", 1)[0] for d in agent.datagrams()] == [b"<27", b"<29"]


def test_facility_property_sets_priority_and_tag(tmp_path: Path, log_socket: socket.socket) -> None:
    """facility=LOG_LOCAL3 gives PRI (16+3)*8+3 = 155 and the tag ``local3.error``."""
    agent = make_agent(
        log_socket,
        tmp_path / "console",
        [("syslog_path", str(tmp_path / "log")), ("facility", "LOG_LOCAL3")],
    )
    agent.feed(list_event())
    [datagram] = agent.datagrams()
    assert datagram.startswith(b"<155>")
    assert f"[ID {msg_id('GMCA-8000-Q7')} local3.error] ".encode() in datagram


def test_console_gets_summary_with_crlf(agent: Agent) -> None:
    """The console receives the same summary with \\r\\n line endings."""
    agent.feed(list_event())
    [datagram] = agent.datagrams()
    text = message_of(datagram).decode()
    assert agent.console_bytes() == console_text(text)
    assert agent.console_bytes().count(b"\r\n") == text.count("\n") + 1
    assert b"\n" not in agent.console_bytes().replace(b"\r\n", b"")


def test_console_off_by_default(tmp_path: Path, log_socket: socket.socket) -> None:
    """Without console=true nothing is written to console_path."""
    agent = make_agent(log_socket, tmp_path / "console", [("syslog_path", str(tmp_path / "log"))])
    agent.feed(list_event())
    assert (len(agent.datagrams()), agent.console.exists()) == (1, False)


# -- what is skipped -------------------------------------------------------------


def test_message_false_is_skipped(agent: Agent) -> None:
    """An event with message=false is not announced and counts nothing."""
    agent.feed(list_event(message=False))
    assert (agent.datagrams(), agent.console_bytes(), agent.stat("suppressed")) == ([], b"", 0)


def test_message_all_announces_message_false(tmp_path: Path, log_socket: socket.socket) -> None:
    """With message_all=true an event with message=false is announced too."""
    agent = make_agent(
        log_socket,
        tmp_path / "console",
        [("syslog_path", str(tmp_path / "log")), ("message_all", "true")],
    )
    agent.feed(list_event(message=False))
    assert len(agent.datagrams()) == 1


def test_duplicate_is_suppressed(agent: Agent) -> None:
    """The same (uuid, class) twice is announced once; the repeat is counted."""
    agent.feed(list_event())
    agent.feed(list_event())
    assert (len(agent.datagrams()), agent.stat("suppressed")) == (1, 1)


def test_repair_of_announced_case_is_announced(agent: Agent) -> None:
    """list.suspect and list.repaired of one case are two announcements."""
    agent.feed(list_event())
    agent.feed(list_event("list.repaired", code=REPAIRED_CODE))
    assert (len(agent.datagrams()), agent.stat("suppressed")) == (2, 0)


def test_duplicate_is_suppressed_across_a_restart(agent: Agent) -> None:
    """A list event replayed after a restart is not announced again (persistent buffer)."""
    agent.feed(list_event())
    assert len(agent.datagrams()) == 1
    assert orjson.loads(agent.hdl.buf_read(BUF_NAME) or b"[]") == [[UUID, "list.suspect"]]
    again = agent.restarted()
    again.feed(list_event())
    assert (again.datagrams(), again.stat("suppressed")) == ([], 1)


def test_unknown_code_counts_no_msg(agent: Agent) -> None:
    """A well-formed code without a dictionary message is counted in no_msg, not written."""
    agent.feed(list_event(code=encode_code("GMCA", 4000)))
    assert (agent.datagrams(), agent.stat("no_msg")) == ([], 1)


def test_malformed_code_counts_bad_code(agent: Agent) -> None:
    """A code that is not DICT-XXXX-XX is counted in bad_code."""
    agent.feed(list_event(code="nonsense"))
    assert (agent.datagrams(), agent.stat("bad_code"), agent.stat("no_msg")) == ([], 1, 0)


# -- rate limit ----------------------------------------------------------------------


def test_rate_limit_drops_excess_and_summarises(tmp_path: Path, log_socket: socket.socket) -> None:
    """With ratelimit=2, five cases in a minute give two messages, three counted as
    ratelimited, and one summary line when the window's timer fires."""
    agent = make_agent(
        log_socket,
        tmp_path / "console",
        [("syslog_path", str(tmp_path / "log")), ("ratelimit", "2")],
    )
    for i in range(5):
        agent.feed(list_event(uuid=f"case-{i}"))
    assert [b"EVENT-ID: case-" + str(i).encode() in d for i, d in enumerate(agent.datagrams())] == [
        True,
        True,
    ]
    assert agent.stat("ratelimited") == 3
    agent.clock.advance(60 * 10**9)
    agent.fire_summary_timer()
    [summary] = agent.datagrams()
    assert message_of(summary) == b"3 fault management messages were dropped by the rate limit"
    assert summary.startswith(b"<29>")
    agent.feed(list_event(uuid="case-5"))
    assert len(agent.datagrams()) == 1


def test_rate_limit_summary_precedes_next_window(tmp_path: Path, log_socket: socket.socket) -> None:
    """A message in a new window first reports what the last window dropped."""
    agent = make_agent(
        log_socket,
        tmp_path / "console",
        [("syslog_path", str(tmp_path / "log")), ("ratelimit", "1")],
    )
    agent.feed(list_event(uuid="a"))
    agent.feed(list_event(uuid="b"))
    agent.clock.advance(61 * 10**9)
    agent.feed(list_event(uuid="c"))
    got = [message_of(d).split(b"\n", 1)[0] for d in agent.datagrams()]
    assert got == [
        b"SUNW-MSG-ID: GMCA-8000-Q7, TYPE: Fault, VER: 1, SEVERITY: Major",
        b"1 fault management messages were dropped by the rate limit",
        b"SUNW-MSG-ID: GMCA-8000-Q7, TYPE: Fault, VER: 1, SEVERITY: Major",
    ]
    assert agent.plugin.summary_timer is None


# -- failures ------------------------------------------------------------------------


def test_missing_socket_counts_log_err(tmp_path: Path, log_socket: socket.socket) -> None:
    """With no socket at syslog_path each message counts log_err; the console still works."""
    agent = make_agent(
        log_socket,
        tmp_path / "console",
        [
            ("syslog_path", str(tmp_path / "missing")),
            ("console", "true"),
            ("console_path", str(tmp_path / "console")),
        ],
    )
    agent.feed(list_event(uuid="a"))
    agent.feed(list_event(uuid="b"))
    assert agent.stat("log_err") == 2
    assert agent.console_bytes().count(b"SUNW-MSG-ID: GMCA-8000-Q7") == 2


def test_unwritable_console_counts_msg_err(tmp_path: Path, log_socket: socket.socket) -> None:
    """A console path that cannot be opened counts msg_err; syslog still gets the message."""
    agent = make_agent(
        log_socket,
        tmp_path / "console",
        [
            ("syslog_path", str(tmp_path / "log")),
            ("console", "true"),
            ("console_path", str(tmp_path / "no-such-dir" / "console")),
        ],
    )
    agent.feed(list_event())
    assert (agent.stat("msg_err"), len(agent.datagrams())) == (1, 1)
