"""Hardening as root: planted links, foreign or open run directories, files fmd
creates under a lax umask, configuration and plug-ins others can write, and
modules whose dictionaries are missing."""

from __future__ import annotations

import grp
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmd.adm.client import AdmClient
from fmd.errors import ConfigError
from fmd.paths import Paths
from fmd.secure import check_trusted
from tests.fmdproc import PLUGINS, FmdProcess, _env, cli
from tests.hostile.osenv import NOBODY, needs_root, open_dir

REPO = Path(__file__).resolve().parents[2]


def said(out: subprocess.CompletedProcess[str]) -> tuple[int, list[str]]:
    """The exit code and what a command told its user: stderr without the daemon's
    JSON log lines."""
    return out.returncode, [line for line in out.stderr.splitlines() if not line.startswith("{")]


def mode(path: Path) -> int:
    """The permission bits of ``path`` (not following a link)."""
    return stat.S_IMODE(path.lstat().st_mode)


def start(root: Path, fmd_factory: list[FmdProcess], **props: str) -> FmdProcess:
    fmd = FmdProcess(root, props=props)
    fmd_factory.append(fmd)
    return fmd.start()


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"fmd {pid} did not exit"
        time.sleep(0.05)


@pytest.fixture
def detached(root: Path) -> Iterator[Paths]:
    """A root whose detached daemon, if one was started, is stopped afterwards."""
    paths = Paths(root)
    yield paths
    if paths.pid_file.exists():
        pid = int(paths.pid_file.read_text().strip() or 0)
        if pid:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)


# -- the run directory and the pid file -------------------------------------------


def test_planted_pid_symlink_is_refused(root: Path) -> None:
    """A planted var/run/fmd/fmd.pid link stops fmd with one line; its target is untouched."""
    paths = Paths(root)
    paths.run_dir.mkdir(parents=True, mode=0o700)
    victim = root / "victim"
    victim.write_text("precious\n")
    paths.pid_file.symlink_to(victim)
    out = cli("fmd", "-f", root=root)
    expected = (
        f"fmd: cannot open {paths.pid_file}: it is a symbolic link, which fmd does not "
        "follow here; remove it"
    )
    assert (1, [expected], "precious\n") == (*said(out), victim.read_text())


def test_run_dir_symlink_is_refused(root: Path, tmp_path: Path) -> None:
    """A var/run/fmd that is a link to another directory is refused, not used."""
    paths = Paths(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    paths.run_dir.parent.mkdir(parents=True)
    paths.run_dir.symlink_to(elsewhere)
    out = cli("fmd", "-f", root=root)
    expected = (
        f"fmd: {paths.run_dir} is a symbolic link; fmd keeps its sockets and pid file only "
        "in a real directory of its own: remove it"
    )
    assert (1, [expected], []) == (*said(out), list(elsewhere.iterdir()))


@needs_root
def test_run_dir_of_another_user_is_refused(root: Path) -> None:
    """A var/run/fmd owned by another user stops root fmd with one line naming the owner."""
    paths = Paths(root)
    paths.run_dir.mkdir(parents=True, mode=0o700)
    os.chown(paths.run_dir, NOBODY, NOBODY)
    code, [line] = said(cli("fmd", "-f", root=root))
    expected = (1, True)
    assert expected == (code, line.startswith(f"fmd: {paths.run_dir} belongs to "))
    assert line.endswith(
        f"(uid {NOBODY}), not to root (uid 0), the user fmd runs as; remove it or run fmd "
        "as its owner"
    )


# -- modes under a lax umask -----------------------------------------------------


@needs_root
def test_umask_000_gives_the_documented_modes(detached: Paths, tmp_path: Path) -> None:
    """Under umask 000 fmd's files get their documented modes, its state the access group."""
    paths = detached
    paths.plugin_dir.mkdir(parents=True)
    shutil.copy(PLUGINS / "counter.py", paths.plugin_dir)
    old = os.umask(0)
    try:
        out = cli("fmd", "-o", "log.format=json", root=paths.root)
    finally:
        os.umask(old)
    assert (out.returncode, out.stderr) == (0, "")
    feed = tmp_path / "ev.json"
    feed.write_text('{"class": "ereport.count.x", "n": 1}\n')
    assert cli("fminject", "-q", str(feed), root=paths.root).returncode == 0
    with AdmClient(paths.adm_socket) as client:
        assert client.call("quiesce", timeout=60) is True
    rotated = cli("fmadm", "rotate", "errlog", root=paths.root)
    assert rotated.returncode == 0, rotated.stderr
    archive = paths.log_dir / "errlog.0"
    try:
        group = grp.getgrnam("adm").gr_gid
    except KeyError:
        group = os.getegid()
    state = [paths.db_file, paths.log_file, archive]
    state += [p for p in paths.var_dir.iterdir() if p.name.startswith("fmd.db-")]
    expected = {
        paths.root: 0o755,
        paths.etc_dir: 0o755,
        paths.conf_file: 0o644,
        paths.plugin_conf_dir: 0o755,
        paths.plugin_conf("cpumem-retire"): 0o644,
        paths.var_dir: 0o750,
        paths.run_dir: 0o700,
        paths.pid_file: 0o644,
        **dict.fromkeys(state, 0o640),
    }
    assert expected == {p: mode(p) for p in expected}
    groups = {p: p.stat().st_gid for p in [paths.var_dir, *state]}
    assert dict.fromkeys(groups, group) == groups


def test_existing_state_is_made_private(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A world-readable var/fm/fmd and database of an older root get 0750 and 0640."""
    paths = Paths(root)
    paths.var_dir.mkdir(parents=True)
    paths.var_dir.chmod(0o755)
    paths.db_file.touch()
    paths.db_file.chmod(0o644)
    start(root, fmd_factory)
    expected = (0o750, 0o640)
    assert expected == (mode(paths.var_dir), mode(paths.db_file))


# -- what fmd loads must be trusted ------------------------------------------------


def test_world_writable_fmd_conf_stops_fmd(root: Path) -> None:
    """fmd refuses to start on an fmd.conf others can write, saying how to fix it."""
    paths = Paths(root)
    paths.etc_dir.mkdir(parents=True)
    paths.conf_file.write_text("setprop clock simulated\n")
    paths.conf_file.chmod(0o666)
    out = cli("fmd", "-f", root=root)
    expected = (
        f"fmd: refusing to read {paths.conf_file}: it is writable by group and others "
        f"(mode 0666); run 'chmod go-w {paths.conf_file}'"
    )
    assert (1, [expected]) == said(out)


def test_group_writable_etc_dir_stops_fmd(root: Path) -> None:
    """An fmd.conf in a directory its group can write is refused, naming the directory."""
    paths = Paths(root)
    paths.etc_dir.mkdir(parents=True)
    paths.conf_file.write_text("")
    paths.etc_dir.chmod(0o775)
    out = cli("fmd", root=root)
    expected = (
        f"fmd: refusing to read {paths.conf_file}: its directory {paths.etc_dir} is "
        f"writable by group (mode 0775); run 'chmod g-w {paths.etc_dir}'"
    )
    assert (1, [expected]) == said(out)


def _load_errors(fmd: FmdProcess) -> list[str]:
    config = fmd.adm("config")
    assert "serd-test" not in [m["name"] for m in config["modules"]]
    return list(config["load_errors"])


def test_writable_plugin_file_is_not_loaded(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """A plug-in file others can write is not loaded; fmd starts and reports why."""
    paths = Paths(root)
    paths.plugin_dir.mkdir(parents=True)
    plugin = paths.plugin_dir / "serdtest.py"
    shutil.copy(PLUGINS / "serdtest.py", plugin)
    plugin.chmod(0o666)
    fmd = start(root, fmd_factory)
    expected = (
        f"refusing to load plug-in {plugin}: it is writable by group and others "
        f"(mode 0666); run 'chmod go-w {plugin}'"
    )
    assert [expected] == _load_errors(fmd)


def test_writable_plugin_path_dir_is_not_loaded(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """No plug-in is loaded from a plugin.path directory others can write."""
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(PLUGINS / "serdtest.py", extra / "serdtest.py")
    extra.chmod(0o777)
    fmd = start(root, fmd_factory, **{"plugin.path": str(extra)})
    expected = (
        f"refusing to load plug-ins from {extra}: it is writable by group and others "
        f"(mode 0777); run 'chmod go-w {extra}'"
    )
    assert [expected] == _load_errors(fmd)


def test_writable_module_conf_keeps_the_module_out(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """A module's .conf others can write keeps that module from loading, and only it."""
    paths = Paths(root)
    paths.plugin_conf_dir.mkdir(parents=True)
    conf = paths.plugin_conf("serd-test")
    conf.write_text("setprop x 1\n")
    conf.chmod(0o646)
    fmd = FmdProcess(root, plugins=["serdtest"])
    fmd_factory.append(fmd)
    fmd.start()
    expected = (
        f"module serd-test: refusing to read {conf}: it is writable by others (mode 0646); "
        f"run 'chmod o-w {conf}'"
    )
    assert [expected] == _load_errors(fmd)


@needs_root
def test_plugin_owned_by_another_user_is_not_loaded(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Root fmd does not run a plug-in file another user owns."""
    fmd = FmdProcess(root, plugins=["serdtest"])
    plugin = fmd.paths.plugin_dir / "serdtest.py"
    os.chown(plugin, NOBODY, NOBODY)
    fmd_factory.append(fmd)
    fmd.start()
    [error] = _load_errors(fmd)
    assert error.startswith(f"refusing to load plug-in {plugin}: it is owned by ")
    assert error.endswith(f"(uid {NOBODY}), not by root; run 'chown root {plugin}'")


def test_fmadm_load_of_a_writable_file_is_refused(
    root: Path, tmp_path: Path, fmd_factory: list[FmdProcess]
) -> None:
    """fmadm load of a plug-in file others can write fails with the reason."""
    fmd = start(root, fmd_factory)
    plugin = tmp_path / "serdtest.py"
    shutil.copy(PLUGINS / "serdtest.py", plugin)
    plugin.chmod(0o666)
    out = fmd.cli("fmadm", "load", str(plugin))
    expected = (
        f"fmadm: refusing to load plug-in {plugin}: it is writable by group and others "
        f"(mode 0666); run 'chmod go-w {plugin}'"
    )
    assert (1, [expected]) == said(out)


def test_trusted_file_below_sticky_dir(tmp_path: Path) -> None:
    """A file of ours below a sticky, world-writable directory (like /tmp) is trusted."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    conf = sticky / "fmd.conf"
    conf.write_text("")
    check_trusted(conf)  # does not raise


def test_sticky_dir_itself_is_not_a_trusted_plugin_dir(tmp_path: Path) -> None:
    """A world-writable sticky directory is not trusted as a plug-in directory itself."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    with pytest.raises(ConfigError) as info:
        check_trusted(sticky, "load plug-ins from")
    expected = (
        f"refusing to load plug-ins from {sticky}: it is writable by group and others "
        f"(mode 1777); run 'chmod go-w {sticky}'"
    )
    assert expected == str(info.value)


def test_link_into_a_writable_dir_is_not_trusted(tmp_path: Path) -> None:
    """A trusted link to a file in a directory others can write is refused, naming it."""
    open_dir_ = tmp_path / "open"
    open_dir_.mkdir()
    target = open_dir_ / "real.conf"
    target.write_text("")
    open_dir_.chmod(0o777)
    link = tmp_path / "fmd.conf"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as info:
        check_trusted(link)
    expected = (
        f"refusing to read {link}: its directory {open_dir_} is writable by group and "
        f"others (mode 0777); run 'chmod go-w {open_dir_}'"
    )
    assert expected == str(info.value)


# -- dictionaries ------------------------------------------------------------------


def _fmd_with_dicts(root: Path, names: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run fmd -f on ``root`` with only ``names`` in its dictionary directory (the
    built-in directories hidden), as on a system where a package is missing."""
    dict_dir = Paths(root).dict_dir
    dict_dir.mkdir(parents=True)
    for name in names:
        for suffix in (".dict", ".po"):
            shutil.copy(REPO / "dict" / f"{name}{suffix}", dict_dir)
    code = (
        "import sys, fmd.dictionary as d; d.default_dict_dirs = lambda: []; "
        "from fmd.cli.fmd import main; sys.argv[0] = 'fmd'; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "-R", str(root), "-f", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def test_missing_gmca_dictionary_stops_fmd(root: Path) -> None:
    """Without the GMCA dictionary fmd refuses to start, naming the module and the fix."""
    out = _fmd_with_dicts(root, ["FMD", "AMD"])
    dict_dir = Paths(root).dict_dir
    expected = (
        f"fmd: module cpumem-diagnosis needs the GMCA dictionary, which is not in "
        f"{dict_dir}; install GMCA.dict and GMCA.po in {dict_dir}, or disable the module "
        "with -o modules.disable=cpumem-diagnosis"
    )
    assert (1, [expected]) == said(out)


def test_missing_dictionary_of_a_disabled_module_is_fine(
    root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """Disabling the module that needs a missing dictionary lets fmd start."""
    paths = Paths(root)
    paths.plugin_conf_dir.mkdir(parents=True)
    paths.plugin_conf("serd-test").write_text("dictionary NOSUCH\n")
    fmd = FmdProcess(root, plugins=["serdtest"], props={"modules.disable": "serd-test"})
    fmd_factory.append(fmd)
    fmd.start()
    assert "serd-test" not in [m["name"] for m in fmd.adm("config")["modules"]]


def test_conf_dictionary_line_naming_a_missing_dictionary_stops_fmd(root: Path) -> None:
    """A 'dictionary' line naming a dictionary fmd cannot find stops fmd with the fix."""
    paths = Paths(root)
    paths.plugin_conf_dir.mkdir(parents=True)
    paths.plugin_conf("serd-test").write_text("dictionary NOSUCH\n")
    FmdProcess(root, plugins=["serdtest"])  # installs the plug-in
    code, [line] = said(cli("fmd", "-f", root=root))
    prefix = (
        f"fmd: module serd-test needs the NOSUCH dictionary, which is not in {paths.dict_dir}, "
    )
    expected = (1, True)
    assert expected == (code, line.startswith(prefix))
    assert line.endswith("or disable the module with -o modules.disable=serd-test")


@needs_root
def test_root_of_another_user_is_refused_by_root_fmd(fmd_factory: list[FmdProcess]) -> None:
    """Root fmd does not read the fmd.conf of a root another user owns."""
    with open_dir(NOBODY) as top:
        root = top / "root"
        paths = Paths(root)
        paths.etc_dir.mkdir(parents=True)
        paths.conf_file.write_text("")
        for p in (root, root / "etc", paths.etc_dir, paths.conf_file):
            os.chown(p, NOBODY, NOBODY)
        code, [line] = said(cli("fmd", "-f", root=root))
    prefix = f"fmd: refusing to read {paths.conf_file}: its directory "
    expected = (1, True)
    assert expected == (code, line.startswith(prefix))
