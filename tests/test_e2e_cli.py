"""End-to-end commands: fmd, fmadm, fminject, fmdump and fmstat against a real
daemon (or none), and the packaging of the commands in a wheel."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import orjson
import pytest

from fmd.adm.client import AdmClient
from fmd.paths import Paths
from tests.fmdproc import FmdProcess, cli

REPO = Path(__file__).resolve().parents[1]
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def start(
    root: Path, fmd_factory: list[FmdProcess], plugins: tuple[str, ...] = (), **props: str
) -> FmdProcess:
    fmd = FmdProcess(root, plugins=plugins, props=props)
    fmd_factory.append(fmd)
    return fmd.start()


def jsonl(*events: dict[str, object]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


# -- fmd ------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.e2e
def test_fmd_detaches_and_stops_on_sigterm(root: Path) -> None:
    """fmd without -f returns 0 once the daemon answers, and the daemon exits on SIGTERM."""
    paths = Paths(root)
    out = cli("fmd", "-o", "log.format=json", root=root, timeout=60)
    assert (out.returncode, out.stderr) == (0, "")
    pid = int(paths.pid_file.read_text().strip())
    try:
        assert not _gone(pid)
        with AdmClient(paths.adm_socket) as client:
            assert client.call("ping")["pid"] == pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not _gone(pid):
            assert time.monotonic() < deadline, "fmd did not exit after SIGTERM"
            time.sleep(0.05)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert not paths.pid_file.exists()
    assert '"event": "fmd_stopped"' in (paths.var_dir / "fmd.log").read_text()


@pytest.mark.e2e
def test_second_daemon_on_same_root_refused(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A second fmd on a root that has a running daemon exits 1 saying it is already running."""
    fmd = start(root, fmd_factory)
    out = cli("fmd", "-f", root=root, timeout=30)
    assert out.returncode == 1
    assert "already running" in out.stderr
    assert str(fmd.proc.pid) in out.stderr  # type: ignore[union-attr]
    assert fmd.adm("ping")["pid"] == fmd.proc.pid  # type: ignore[union-attr]
    assert fmd.paths.pid_file.read_text().strip() == str(fmd.proc.pid)  # type: ignore[union-attr]


def test_fmd_unknown_property(root: Path) -> None:
    """fmd -o with an unknown property exits 1 naming it."""
    out = cli("fmd", "-f", "-o", "bogus=1", root=root, timeout=30)
    assert out.returncode == 1
    assert "unknown property 'bogus'" in out.stderr
    assert out.stderr.startswith("fmd: ")


# -- fmadm -----------------------------------------------------------------------


def test_fmadm_config_without_daemon(root: Path) -> None:
    """fmadm config exits 1 with a message when no fmd is running."""
    out = cli("fmadm", "config", root=root)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("fmadm: fmd is not running")


# -- fminject --------------------------------------------------------------------

MIXED = (
    b'{"class": "ereport.test.a", "n": 1}\n'
    b'{"class": "ereport.test.a", "n": \n'
    b"# a comment\n"
    b"\n"
    b'{"class": "ereport.test.b", "n": 2}\n'
    b'{"class": "fault.test.b"}\n'
    b'{"class": "ereport.test.c", "n": 3}\n'
)


@pytest.mark.e2e
def test_fminject_reports_bad_lines(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fminject sends the good lines, prints each rejected one with its line number, exits 1."""
    fmd = start(root, fmd_factory)
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(MIXED)
    out = fmd.cli("fminject", str(src))
    assert out.returncode == 1
    errors = out.stderr.splitlines()
    assert len(errors) == 2, out.stderr
    assert errors[0].startswith(f"fminject: {src}:2: malformed JSON")
    assert errors[1] == f"fminject: {src}:6: class 'fault.test.b' does not start with 'ereport.'"
    assert out.stdout == "fminject: 3 of 5 events accepted\n"
    stored = fmd.errlog_json()
    assert [(e["class"], e["n"], e["__injected"]) for e in stored] == [
        ("ereport.test.a", 1, True),
        ("ereport.test.b", 2, True),
        ("ereport.test.c", 3, True),
    ]


@pytest.mark.e2e
def test_fminject_check_only_and_stdin(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fminject -n reports bad lines without sending anything; '-' reads standard input."""
    fmd = start(root, fmd_factory)
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(MIXED)
    out = fmd.cli("fminject", "-n", str(src))
    assert out.returncode == 1
    assert [line.split(":")[2] for line in out.stderr.splitlines()] == ["2", "6"]
    assert out.stdout == "fminject: 3 of 5 events are valid\n"
    assert fmd.adm("stats")["transports"][0]["received"] == 0

    good = jsonl({"class": "ereport.test.stdin", "n": 1}, {"class": "ereport.test.stdin", "n": 2})
    out = fmd.cli("fminject", "-q", "-", input=good)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert [(e["class"], e["n"]) for e in fmd.errlog_json()] == [
        ("ereport.test.stdin", 1),
        ("ereport.test.stdin", 2),
    ]


# -- fmdump ----------------------------------------------------------------------


@pytest.mark.e2e
def test_fmdump_errlog(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """fmdump -e --json has time, class, ENA, detector and payload; -c filters; works offline."""
    fmd = start(root, fmd_factory)
    events = [
        {
            "class": "ereport.test.a",
            "detector": {"scheme": "cpu", "cpuid": 5},
            "status": 17,
            "name": "x",
            "nested": {"k": [1, 2]},
        },
        {"class": "ereport.other.b", "detector": "cpu:///cpuid=3", "time": 1_700_000_000},
        {"class": "ereport.test.c.d"},
    ]
    replies = fmd.send_lines(events)
    assert [r["ok"] for r in replies] == [True] * 3

    stored = fmd.errlog_json()  # in time order: the 2023 event first
    assert [e["class"] for e in stored] == ["ereport.other.b", "ereport.test.a", "ereport.test.c.d"]
    b, a, c = stored
    assert [set(e) for e in (a, b, c)] == [
        {"time", "class", "ena", "detector", "status", "name", "nested"},
        {"time", "class", "ena", "detector"},
        {"time", "class", "ena"},
    ]
    for e, reply in zip((a, b, c), replies, strict=True):
        assert ISO_UTC.fullmatch(e["time"]), e["time"]
        assert e["ena"] == f"0x{reply['ena']:016x}"
    assert (a["class"], a["detector"], a["status"], a["name"], a["nested"]) == (
        "ereport.test.a",
        "cpu:///cpuid=5",
        17,
        "x",
        {"k": [1, 2]},
    )
    assert (b["class"], b["detector"], b["time"]) == (
        "ereport.other.b",
        "cpu:///cpuid=3",
        "2023-11-14T22:13:20.000000Z",
    )

    assert [e["class"] for e in fmd.errlog_json("-c", "ereport.test.*")] == [
        "ereport.test.a",
        "ereport.test.c.d",
    ]
    assert [e["class"] for e in fmd.errlog_json("-c", "ereport.other.*", "-c", "*.d")] == [
        "ereport.other.b",
        "ereport.test.c.d",
    ]

    assert fmd.stop() == 0
    out = fmd.cli("fmdump", "-e")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TIME", "CLASS"]
    assert [line.split()[-1] for line in lines[1:]] == [e["class"] for e in stored]


@pytest.mark.e2e
def test_fmdump_class_filter_is_case_sensitive(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """fmdump -c matches classes case-sensitively, as dispatch does."""
    fmd = start(root, fmd_factory)
    classes = ["ereport.test.a", "ereport.TEST.b", "ereport.test_c"]
    assert [r["ok"] for r in fmd.send_lines({"class": c} for c in classes)] == [True] * 3
    assert [e["class"] for e in fmd.errlog_json("-c", "ereport.test.*")] == ["ereport.test.a"]
    assert [e["class"] for e in fmd.errlog_json("-c", "ereport.test?c")] == ["ereport.test_c"]


# -- fmstat ----------------------------------------------------------------------


@pytest.mark.e2e
def test_fmstat_serd_engines(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """fmstat -s -m MODULE prints the module's SERD engines under the illumos header."""
    fmd = start(root, fmd_factory, ("serdtest",), clock="simulated")
    replies = fmd.send_lines(
        [
            {"class": "ereport.test.a"},
            {"class": "resource.fm.fmd.clock.addhrtime", "delta": 1800 * 10**9},
        ]
    )
    replies += fmd.send_lines([{"class": "ereport.test.a"}])
    assert [r["ok"] for r in replies] == [True, True, True]
    fmd.quiesce()
    out = fmd.cli("fmstat", "-s", "-m", "serd-test")
    assert out.returncode == 0, out.stderr
    layout = "%-36s %3s %5s %3s %24s %s"
    assert out.stdout.splitlines() == [
        layout % ("NAME", ">N", "T", "CNT", "DELTA", "STAT"),
        layout % ("serd.ereport.test.a", ">2", "1h", "2", "1800000000000ns", "pend"),
    ]


# -- packaging -------------------------------------------------------------------


def test_wheel_has_scripts_and_data(tmp_path: Path) -> None:
    """The wheel declares the five commands and carries the dictionary and fmd.conf."""
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "__pycache__",
            "*.egg-info",
            "build",
            "dist",
            ".*cache",
            ".hypothesis",
            "tests",
            "bench",
        ),
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    [wheel] = (tmp_path / "dist").glob("fmd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
    scripts = text.split("[console_scripts]", 1)[1].split("[", 1)[0]
    assert sorted(line.replace(" ", "") for line in scripts.splitlines() if line.strip()) == [
        f"{prog}=fmd.cli.{prog}:main"
        for prog in ("fmadm", "fmd", "fmdump", "fminject", "fmstat", "fmtopo")
    ]
    for prog in ("fmadm", "fmd", "fmdump", "fminject", "fmstat", "fmtopo"):
        assert f"fmd/cli/{prog}.py" in names
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert {
        "share/fmd/dict/FMD.dict",
        "share/fmd/dict/FMD.po",
        "share/fmd/etc/fmd/fmd.conf",
        "share/fmd/etc/fmd/plugins/cpumem-retire.conf",
        "share/fmd/etc/fmd/plugins/syslog-msgs.conf",
    } <= data
    assert "agents/retire/agent.py" in names
