"""syslog-msgs end to end: a CPU diagnosis on the real daemon is announced once on the
console and once to syslog, configured through ``etc/fmd/plugins/syslog-msgs.conf``."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.fmdproc import FmdProcess
from tests.test_e2e_cpumem import HOUR, T0, icache

pytestmark = pytest.mark.e2e


def test_icache_fault_is_announced_once(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Corrected icache errors on one chip give exactly one GMCA-8000-Q7 summary naming
    the case on the console and one LOG_ERR datagram on the syslog socket."""
    console = tmp_path / "console"
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind(str(tmp_path / "log"))
    log.settimeout(10)
    fmd = FmdProcess(root, props={"platform": "sim"})
    fmd_factory.append(fmd)
    fmd.paths.plugin_conf_dir.mkdir(parents=True, exist_ok=True)
    fmd.paths.plugin_conf("syslog-msgs").write_text(
        f"setprop console true\nsetprop console_path {console}\n"
        f"setprop syslog_path {tmp_path / 'log'}\n"
    )
    fmd.start()
    with log:
        assert all(r["ok"] for r in fmd.send_lines(icache(13, T0 + i * HOUR) for i in range(8)))
        fmd.quiesce()
        [suspect] = [e for e in fmd.fltlog_json() if e["class"] == "list.suspect"]
        text = console.read_bytes().decode()
        assert text.count("SUNW-MSG-ID:") == 1
        assert "SUNW-MSG-ID: GMCA-8000-Q7, TYPE: Fault, VER: 1, SEVERITY: Major\r\n" in text
        assert f"EVENT-ID: {suspect['uuid']}\r\n" in text
        datagram = log.recv(65536).decode()
        assert re.match(
            r"<27>\w{3} [ \d]\d \d\d:\d\d:\d\d fmd: \[ID \d+ daemon\.error\] ", datagram
        )
        assert datagram.split("] ", 1)[1] == text.removesuffix("\r\n").replace("\r\n", "\n")
        log.setblocking(False)
        with pytest.raises(BlockingIOError):
            log.recv(65536)
