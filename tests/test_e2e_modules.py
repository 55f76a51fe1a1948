"""End-to-end modules: loading, configuration, failure isolation, self-diagnosis,
slow modules and timers, against the real daemon."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e

HOUR_NS = 3600 * 10**9
LAYOUT = "%-24s %-7s %-6s  %s"
# The modules fmd loads by itself, plus the counter test plug-in, sorted.
BUILTINS_AND_COUNTER = [
    "amd-diagnosis",
    "counter",
    "cpumem-diagnosis",
    "cpumem-retire",
    "fmd-self-diagnosis",
    "syslog-msgs",
]


def start(
    root: Path,
    fmd_factory: list[FmdProcess],
    plugins: Iterable[str] = (),
    conf: dict[str, str] | None = None,
    **props: str,
) -> FmdProcess:
    """Start fmd with test plug-ins and their ``etc/fmd/plugins/<name>.conf`` files."""
    fmd = FmdProcess(root, plugins=list(plugins), props=props)
    fmd_factory.append(fmd)
    for name, text in (conf or {}).items():
        fmd.paths.plugin_conf_dir.mkdir(parents=True, exist_ok=True)
        fmd.paths.plugin_conf(name).write_text(text)
    return fmd.start()


def stat(fmd: FmdProcess, module: str, name: str) -> int:
    for s in fmd.adm("module.stats", module=module):
        if s["name"] == name:
            return int(s["value"])
    raise AssertionError(f"module {module} has no statistic {name!r}")


def module_row(fmd: FmdProcess, module: str) -> dict[str, Any]:
    for m in fmd.adm("stats")["modules"]:
        if m["name"] == module:
            return dict(m)
    raise AssertionError(f"no module {module!r}")


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def send(fmd: FmdProcess, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send events on one connection, reading replies while writing; all must be acked."""
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    with fmd.connect() as s:

        def write() -> None:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write)
        writer.start()
        replies = [orjson.loads(r) for r in s.makefile("rb")]
        writer.join()
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
    return replies


def config_rows(fmd: FmdProcess) -> list[str]:
    out = fmd.cli("fmadm", "config")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_config_lists_active_modules(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """fmadm config shows the built-in modules and the plug-ins as active, in the illumos
    layout, then the transports and host sources with why each runs or not, then the
    platform and what the host is."""
    fmd = start(root, fmd_factory, ["counter", "serdtest"])
    rows = config_rows(fmd)
    # The last row depends on the machine the test runs on (auto picks linux as root).
    platform = rows.pop()
    assert re.fullmatch(r"(sim|linux) +(bare metal|virtual machine of .*)", platform), platform
    assert rows == [
        LAYOUT % ("MODULE", "VERSION", "STATUS", "DESCRIPTION"),
        LAYOUT
        % (
            "amd-diagnosis",
            "1.0",
            "active",
            "AMD family 0Fh/10h CPU and memory diagnosis (amd64.esc rules)",
        ),
        LAYOUT % ("counter", "1.0", "active", "Counting test module"),
        LAYOUT
        % (
            "cpumem-diagnosis",
            "1.0",
            "active",
            "generic x86 CPU and memory diagnosis (gcpu.esc rules)",
        ),
        LAYOUT % ("cpumem-retire", "1.0", "active", "CPU/Memory Retire Agent"),
        LAYOUT % ("fmd-self-diagnosis", "1.0", "active", "Fault Manager Self-Diagnosis"),
        LAYOUT % ("serd-test", "1.0", "active", "SERD test module"),
        LAYOUT % ("syslog-msgs", "1.0", "active", "Syslog Messaging Agent"),
        "",
        "TRANSPORT                        STATE    DETAIL",
        "socket                           run      ",
        "tracefs                          off      xprt.tracefs is off",
        "mcelog                           off      xprt.mcelog is off",
        "kmsg                             off      xprt.kmsg is off",
        "edac                             off      xprt.edac is off",
        "pstore                           off      xprt.pstore is off",
        "",
        "PLATFORM                         HOST",
    ]


def test_failing_event_fails_alone(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """By default an event whose recv raises fails alone: it is counted in fmd.ev_fail
    (fmstat -m) and logged once, and the module stays active for the next events."""
    fmd = start(root, fmd_factory, ["counter", "crashy"])
    send(fmd, [{"class": "ereport.boom.a"}, {"class": "ereport.boom.b"}])
    fmd.quiesce()
    send(fmd, [{"class": "ereport.boom.c"}])
    fmd.quiesce()

    assert LAYOUT % ("crashy", "1.0", "active", "Crashing test module") in config_rows(fmd)
    assert stat(fmd, "crashy", "fmd.ev_fail") == 3
    assert module_row(fmd, "crashy")["ev_recv"] == 3
    out = fmd.cli("fmstat", "-m", "crashy")
    assert "fmd.ev_fail" in out.stdout and " 3 " in out.stdout
    logged = [line for line in fmd.stderr().splitlines() if "module_event_failed" in line]
    assert len(logged) == 1
    assert "deliberate failure on ereport.boom.a" in logged[0]
    assert [f for f in fmd.fltlog_json() if f["fault-list"][0]["class"].startswith("defect")] == []


def test_failed_module_runs_again_after_a_restart(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """With client.error=unload a raising module is failed; after a restart it is active
    again and its defect case is repaired, so fmadm faulty no longer lists it."""
    fmd = start(root, fmd_factory, ["crashy"], **{"client.error": "unload"})
    send(fmd, [{"class": "ereport.boom.a"}])
    fmd.quiesce()
    assert LAYOUT % ("crashy", "1.0", "failed", "Crashing test module") in config_rows(fmd)
    assert "defect.sunos.fmd.module" in fmd.cli("fmadm", "faulty").stdout
    fmd.stop()

    fmd.start()
    fmd.quiesce()
    assert LAYOUT % ("crashy", "1.0", "active", "Crashing test module") in config_rows(fmd)
    assert "defect.sunos.fmd.module" not in fmd.cli("fmadm", "faulty").stdout
    events = [(f["class"], f["fault-list"][0]["class"]) for f in fmd.fltlog_json()]
    assert events == [
        ("list.suspect", "defect.sunos.fmd.module"),
        ("list.repaired", "defect.sunos.fmd.module"),
        ("list.resolved", "defect.sunos.fmd.module"),
    ]


def test_failing_module_is_isolated(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """With client.error=unload a module whose recv raises is failed and diagnosed
    (FMD-8000-2K); the others go on."""
    fmd = start(root, fmd_factory, ["counter", "crashy"], **{"client.error": "unload"})
    send(fmd, [{"class": "ereport.count.a"}, {"class": "ereport.boom.a"}])
    fmd.quiesce()
    send(fmd, [{"class": "ereport.count.b"}, {"class": "ereport.count.c"}])
    fmd.quiesce()

    assert stat(fmd, "counter", "received") == 3
    rows = config_rows(fmd)
    assert LAYOUT % ("crashy", "1.0", "failed", "Crashing test module") in rows
    assert LAYOUT % ("counter", "1.0", "active", "Counting test module") in rows
    crashy = next(m for m in fmd.adm("config")["modules"] if m["name"] == "crashy")
    assert "deliberate failure" in crashy["error"]

    defects = [
        f for f in fmd.fltlog_json() if f["fault-list"][0]["class"] == "defect.sunos.fmd.module"
    ]
    assert [(f["class"], f["code"]) for f in defects] == [("list.suspect", "FMD-8000-2K")]
    assert defects[0]["fault-list"][0]["resource"]["mod-name"] == "crashy"
    assert defects[0]["de"]["mod-name"] == "fmd-self-diagnosis"
    assert stat(fmd, "fmd-self-diagnosis", "module") == 1


def test_invalid_plugins_are_reported(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """Plug-in files that fail validation are reported and skipped; fmd serves the rest."""
    fmd = start(root, fmd_factory, ["noplugin", "badname", "counter"])
    config = fmd.adm("config")
    assert sorted(m["name"] for m in config["modules"]) == BUILTINS_AND_COUNTER
    errors = sorted(config["load_errors"])
    assert len(errors) == 2
    assert "badname.py" in errors[0]
    assert "'Bad Name!'" in errors[0]
    assert "noplugin.py" in errors[1]
    assert "Plugin subclass" in errors[1]

    out = fmd.cli("fmadm", "config")
    assert out.returncode == 0
    assert out.stderr.count("fmadm: warning: plug-in") == 2
    send(fmd, [{"class": "ereport.count.a"}])
    fmd.quiesce()
    assert stat(fmd, "counter", "received") == 1


def test_unsubscribed_classes_one_defect_per_class(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Events nobody subscribes to give one defect.sunos.fmd.nosub case per class."""
    fmd = start(root, fmd_factory, ["counter"])
    send(
        fmd,
        [
            {"class": "ereport.nosub.a"},
            {"class": "ereport.nosub.b"},
            {"class": "ereport.nosub.a"},
            {"class": "ereport.count.x"},
            {"class": "ereport.nosub.b"},
            {"class": "ereport.nosub.a"},
        ],
    )
    fmd.quiesce()
    faults = fmd.fltlog_json()
    assert [(f["class"], f["code"], [s["class"] for s in f["fault-list"]]) for f in faults] == [
        ("list.suspect", "FMD-8000-0W", ["defect.sunos.fmd.nosub"]),
        ("list.suspect", "FMD-8000-0W", ["defect.sunos.fmd.nosub"]),
    ]
    assert faults[0]["uuid"] != faults[1]["uuid"]
    assert stat(fmd, "fmd-self-diagnosis", "nosub") == 5
    assert stat(fmd, "counter", "received") == 1


def test_conf_overrides_property_and_adds_subscription(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A module's .conf setprop overrides a declared property and subscribe adds a class."""
    conf = "# test configuration\nsetprop threshold 7\nsubscribe ereport.conf.extra.*\n"
    fmd = start(root, fmd_factory, ["confmod"], conf={"conf-test": conf})
    assert stat(fmd, "conf-test", "threshold") == 7
    send(
        fmd,
        [
            {"class": "ereport.conf.declared"},
            {"class": "ereport.conf.extra.one"},
            {"class": "ereport.conf.extra.two"},
        ],
    )
    fmd.quiesce()
    assert stat(fmd, "conf-test", "received") == 3
    assert stat(fmd, "fmd-self-diagnosis", "nosub") == 0
    assert fmd.fltlog_json() == []


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("frobnicate 3", "frobnicate"),
        ("subscribe ereport..x", "ereport..x"),
    ],
)
def test_bad_conf_line_stops_the_module(
    root: Path, fmd_factory: list[FmdProcess], line: str, found: str
) -> None:
    """A bad line in a module's .conf keeps that module from loading, with the error reported."""
    fmd = start(
        root,
        fmd_factory,
        ["confbad", "counter"],
        conf={"conf-bad": f"subscribe ereport.confbad.x\n{line}\n"},
    )
    config = fmd.adm("config")
    assert sorted(m["name"] for m in config["modules"]) == BUILTINS_AND_COUNTER
    [error] = config["load_errors"]
    assert "conf-bad.conf:2" in error
    assert found in error
    send(fmd, [{"class": "ereport.count.a"}])
    fmd.quiesce()
    assert stat(fmd, "counter", "received") == 1


def test_slow_module_does_not_stall_ingest(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """While a module is stuck in recv, 2000 events are acked; it later gets each once, in order."""
    gate = tmp_path / "gate"
    fmd = start(
        root,
        fmd_factory,
        ["slowmod", "counter"],
        conf={"slow": f'setprop gate "{gate}"\n'},
        **{"client.evqlim": "100"},
    )
    n = 2000
    try:
        replies = send(fmd, ({"class": "ereport.slow.x", "n": i} for i in range(n)))
        assert len(replies) == n
        # Still stuck on its first event: every ack came while the module was busy.
        assert stat(fmd, "slow", "received") == 0
        row = module_row(fmd, "slow")
        assert row["queue"] >= n - 100  # at most one queue-full batch was taken
        assert row["overflowed"] > 0
        # Other modules are served meanwhile.
        send(fmd, [{"class": "ereport.count.a"}])
        wait_for("the counter module", lambda: stat(fmd, "counter", "received") == 1)
    finally:
        gate.touch()
    fmd.quiesce()
    assert stat(fmd, "slow", "received") == n
    assert stat(fmd, "slow", "disorder") == 0
    assert stat(fmd, "slow", "next") == n
    assert module_row(fmd, "slow")["queue"] == 0


def test_timer_fires_on_simulated_clock(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A one-hour timer does not fire after 3599 s of simulated time and does after 3601 s."""
    fmd = start(root, fmd_factory, ["timermod"], clock="simulated")
    send(fmd, [{"class": "ereport.timer.start"}])
    fmd.quiesce()  # the timer is installed before the clock moves

    send(fmd, [{"class": "resource.fm.fmd.clock.addhrtime", "delta": HOUR_NS - 10**9}])
    # The canary (due at 3599 s) fires in the same pass that would fire the hour timer.
    wait_for("the canary timer", lambda: stat(fmd, "timer-test", "canary") == 1)
    fmd.quiesce()
    assert stat(fmd, "timer-test", "fired") == 0

    send(fmd, [{"class": "resource.fm.fmd.clock.addhrtime", "delta": 2 * 10**9}])
    wait_for("the hour timer", lambda: stat(fmd, "timer-test", "fired") == 1)
    fmd.quiesce()
    assert stat(fmd, "timer-test", "fired") == 1
    assert stat(fmd, "timer-test", "canary") == 1
    assert stat(fmd, "timer-test", "bad_arg") == 0
