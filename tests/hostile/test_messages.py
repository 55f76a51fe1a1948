"""One clear line and a non-zero exit, never a traceback: read-only or foreign
directories, commands run by a user who cannot reach the daemon, and hostile
input to fminject."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmd.paths import Paths
from tests.fmdproc import FmdProcess, cli
from tests.hostile.osenv import NOBODY, as_nobody, needs_root, open_dir, read_only

EROFS = "Read-only file system"
EACCES = "Permission denied"
INGEST_IS_ROOTS = "the ingest socket is root's; run as root"
CONTROL_IS_ROOTS = "the control socket is root's; run as root"
NOT_IN_GROUP = "run as root or a user of fmd's access.group"


def said(out: subprocess.CompletedProcess[str]) -> tuple[int, list[str]]:
    """The exit code and what a command told its user: stderr without JSON log lines."""
    return out.returncode, [line for line in out.stderr.splitlines() if not line.startswith("{")]


@pytest.fixture
def stop_detached(root: Path) -> Iterator[None]:
    """Stops a detached daemon a test started by mistake (so a failure cannot leak one)."""
    yield
    pid_file = Paths(root).pid_file
    if pid_file.exists():
        text = pid_file.read_text().strip()
        if text:
            os.kill(int(text), 15)


# -- read-only and foreign directories --------------------------------------------

# (the directory made read-only, the directory fmd then cannot create)
READ_ONLY_CASES = [("", "etc/fmd"), ("var", "var/fm/fmd"), ("var/run", "var/run/fmd")]


@needs_root
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
@pytest.mark.parametrize(("ro", "made"), READ_ONLY_CASES, ids=["root", "var", "var-run"])
def test_read_only_directory(
    root: Path, stop_detached: None, ro: str, made: str, detach: bool
) -> None:
    """On a read-only root, var/ or var/run fmd says which directory it cannot create."""
    with read_only(root / ro):
        out = cli("fmd", *([] if detach else ["-f"]), root=root)
    assert (1, [f"fmd: cannot create {root / made}: {EROFS}"]) == said(out)


@needs_root
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_read_only_state_directory(
    root: Path, stop_detached: None, fmd_factory: list[FmdProcess], detach: bool
) -> None:
    """On a read-only var/fm/fmd fmd names the file it cannot open (log or database)."""
    fmd = FmdProcess(root).start()
    assert fmd.stop() == 0
    paths = Paths(root)
    with read_only(paths.var_dir):
        out = cli("fmd", *([] if detach else ["-f"]), root=root)
    failed = paths.log_file if detach else paths.db_file
    assert (1, [f"fmd: cannot open {failed}: {EROFS}"]) == said(out)


def test_detached_child_failure_reaches_the_command(root: Path, stop_detached: None) -> None:
    """A detached daemon that fails after forking reports its own error through the pipe."""
    Paths(root).db_file.mkdir(parents=True)
    out = cli("fmd", root=root)
    assert (1, [f"fmd: cannot open {Paths(root).db_file}: Is a directory"]) == said(out)


@needs_root
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
@pytest.mark.parametrize(
    ("owned_by_root", "made"),
    [("", "etc/fmd"), ("var", "var/fm/fmd"), ("var/run", "var/run/fmd")],
    ids=["root", "var", "var-run"],
)
def test_unwritable_directory_as_a_user(owned_by_root: str, made: str, detach: bool) -> None:
    """A user's fmd names the directory it may not create in a root, var/ or var/run."""
    with open_dir(NOBODY) as top:
        root = top / "root"
        (root / owned_by_root).mkdir(parents=True, exist_ok=True)
        os.chown(root, 0 if not owned_by_root else NOBODY, NOBODY)
        if owned_by_root == "var/run":
            os.chown(root / "var", NOBODY, NOBODY)
        out = as_nobody("fmd", *([] if detach else ["-f"]), root=root)
        expected = (1, [f"fmd: cannot create {root / made}: {EACCES}"])
        pid_file = Paths(root).pid_file
        assert not pid_file.exists()
    assert expected == said(out)


# -- commands run by a user who cannot reach the daemon -----------------------------


@needs_root
def test_commands_as_a_user_against_roots_daemon(fmd_factory: list[FmdProcess]) -> None:
    """A user's fminject, fmadm, fmstat and fmdump against root's daemon each say why, once."""
    with open_dir() as top:
        root = top / "root"
        root.mkdir()
        fmd = FmdProcess(root)
        fmd_factory.append(fmd)
        fmd.start()
        feed = top / "ev.json"
        feed.write_text('{"class": "ereport.io.x"}\n')
        feed.chmod(0o644)
        outs = [
            as_nobody("fminject", str(feed), root=root),
            as_nobody("fmadm", "config", root=root),
            as_nobody("fmstat", root=root),
            as_nobody("fmdump", root=root),
        ]
        fmd.stop()
    run = Paths(root).run_dir
    expected = [
        (1, [f"fminject: cannot reach fmd at {run}/xprt.sock: {EACCES} ({INGEST_IS_ROOTS})"]),
        (1, [f"fmadm: cannot reach fmd at {run}/adm.sock: {EACCES} ({CONTROL_IS_ROOTS})"]),
        (1, [f"fmstat: cannot reach fmd at {run}/adm.sock: {EACCES} ({CONTROL_IS_ROOTS})"]),
        (1, [f"fmdump: cannot read {Paths(root).db_file}: {EACCES} ({NOT_IN_GROUP})"]),
    ]
    assert expected == [said(o) for o in outs]


# -- fminject input ------------------------------------------------------------------


def fminject(root: Path, tmp_path: Path, name: str, text: str, *args: str) -> tuple[int, list[str]]:
    source = tmp_path / name
    source.write_text(text)
    out = cli("fminject", *args, str(source), root=root)
    assert "Traceback" not in out.stderr
    return said(out)


def test_null_status_is_a_missing_member(root: Path, tmp_path: Path) -> None:
    """fminject -n reports an mca record with "status": null as a missing member."""
    text = '{"mca": {"cpu": 1, "bank": 1, "status": null}}\n'
    src = tmp_path / "null.json"
    assert (1, [f"fminject: {src}:1: mca: missing member 'status'"]) == fminject(
        root, tmp_path, "null.json", text, "-n"
    )


def test_time_beyond_2262_is_a_parse_error(root: Path, tmp_path: Path) -> None:
    """An mcelog TIME past what fmd can store is an error on its line, not an overflow."""
    text = "CPU 1 BANK 2\nSTATUS 0x9400000000000101\nTIME 18446744073709551615\n"
    src = tmp_path / "t.mce"
    expected = (
        f"fminject: {src}:3: TIME value 18446744073709551615 is out of range: at most "
        "9223372036 seconds (2262-04-11 UTC)"
    )
    assert (1, [expected]) == fminject(root, tmp_path, "t.mce", text, "-n")


def test_deeply_nested_inj_value(root: Path, tmp_path: Path) -> None:
    """A value nested 100,000 deep is one error on its line."""
    text = "evdef ereport.y { uint8_t a[]; };\nevent ereport.y e = {" + "[" * 100_000 + "};\n"
    src = tmp_path / "deep.inj"
    expected = f"fminject: {src}:2: values are nested more than 32 deep"
    assert (1, [expected]) == fminject(root, tmp_path, "deep.inj", text)


def test_deeply_nested_inj_declarations(root: Path, tmp_path: Path) -> None:
    """Declarations nested through 2,000 list types stop at the ninth, with its line."""
    lines = ["listdef L0 { uint8_t a; };"]
    lines += [f"listdef L{i} {{ list L{i - 1} x; }};" for i in range(1, 2000)]
    code, said_lines = fminject(root, tmp_path, "decl.inj", "\n".join(lines) + "\n")
    src = tmp_path / "decl.inj"
    first = (
        f"fminject: {src}:9: declarations are nested more than 8 deep "
        "(list L7 already nests 8 deep)"
    )
    assert (1, first) == (code, said_lines[0])


def test_expansion_bomb_sends_nothing(root: Path, tmp_path: Path) -> None:
    """A 2 KB exponentially expanding program is refused at its line, before connecting."""
    lines = ["listdef L0 { string s; };", 'list L0 v0 = {"' + "x" * 64 + '"};']
    for i in range(1, 7):
        members = " ".join(f"list L{i - 1} m{j};" for j in range(16))
        lines.append(f"listdef L{i} {{ {members} }};")
        lines.append(f"list L{i} v{i} = {{" + ", ".join([f"v{i - 1}"] * 16) + "};")
    text = "\n".join(lines) + "\n"
    code, said_lines = fminject(root, tmp_path, "bomb.inj", text)
    src = tmp_path / "bomb.inj"
    first = (
        f"fminject: {src}:8: v3: the value holds 8464 members and elements with its "
        "definitions expanded; at most 4096"
    )
    assert (1, first, False) == (code, said_lines[0], any("not running" in x for x in said_lines))


def test_too_many_events(root: Path, tmp_path: Path) -> None:
    """A program that would send more than a million events is refused at that line."""
    text = "evdef ereport.a { uint8_t n; };\nevent ereport.a e = {1};\nrepeat 1000000 e;\ne;\n"
    src = tmp_path / "many.inj"
    expected = (
        f"fminject: {src}:4: the program sends more than 1000000 events; split it into "
        "several files"
    )
    assert (1, [expected]) == fminject(root, tmp_path, "many.inj", text)
