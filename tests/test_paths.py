"""Tests for fmd.paths: choosing the root and the layout beneath it."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from fmd import paths as paths_module
from fmd.errors import ConfigError
from fmd.paths import Paths, default_etc_dirs, resolve_root

REPO = Path(__file__).resolve().parents[1]


def test_cli_root_wins(tmp_path: Path) -> None:
    """-R beats FMD_ROOT and the uid."""
    env = {"FMD_ROOT": "/elsewhere", "HOME": "/home/u"}
    assert tmp_path == resolve_root(str(tmp_path), env, uid=0)


def test_cli_root_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative -R is taken relative to the working directory and normalised."""
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "r" == resolve_root("x/../r", {}, uid=1000)


def test_empty_cli_root_rejected() -> None:
    """-R with an empty string is an error rather than a silent fallback."""
    with pytest.raises(ConfigError, match="-R needs a directory"):
        resolve_root("", {}, uid=1000)


def test_env_root_beats_uid() -> None:
    """FMD_ROOT is used when there is no -R, even for root."""
    assert Path("/srv/fmd") == resolve_root(None, {"FMD_ROOT": "/srv/fmd/"}, uid=0)


def test_empty_env_root_ignored() -> None:
    """An empty FMD_ROOT counts as unset."""
    assert Path("/") == resolve_root(None, {"FMD_ROOT": ""}, uid=0)


def test_superuser_gets_system_root() -> None:
    """uid 0 without -R or FMD_ROOT runs on /."""
    assert Path("/") == resolve_root(None, {"HOME": "/root"}, uid=0)


def test_user_gets_xdg_state_root() -> None:
    """Another user gets $XDG_STATE_HOME/fmd."""
    env = {"XDG_STATE_HOME": "/home/u/state", "HOME": "/home/u"}
    assert Path("/home/u/state/fmd") == resolve_root(None, env, uid=1000)


@pytest.mark.parametrize("xdg", [None, "", "relative/state"])
def test_user_default_state_root(xdg: str | None) -> None:
    """Without a usable (absolute) XDG_STATE_HOME the root is ~/.local/state/fmd."""
    env = {"HOME": "/home/u"} if xdg is None else {"HOME": "/home/u", "XDG_STATE_HOME": xdg}
    assert Path("/home/u/.local/state/fmd") == resolve_root(None, env, uid=1000)


def test_uid_defaults_to_effective_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no uid given, the effective uid decides."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert Path("/") == resolve_root(None, {})


def test_layout(tmp_path: Path) -> None:
    """Every path sits where the layout says, under the root."""
    p = Paths(tmp_path)
    assert {
        "etc_dir": tmp_path / "etc/fmd",
        "conf_file": tmp_path / "etc/fmd/fmd.conf",
        "plugin_conf_dir": tmp_path / "etc/fmd/plugins",
        "topology_file": tmp_path / "etc/fmd/topology.toml",
        "var_dir": tmp_path / "var/fm/fmd",
        "db_file": tmp_path / "var/fm/fmd/fmd.db",
        "run_dir": tmp_path / "var/run/fmd",
        "xprt_socket": tmp_path / "var/run/fmd/xprt.sock",
        "adm_socket": tmp_path / "var/run/fmd/adm.sock",
        "pid_file": tmp_path / "var/run/fmd/fmd.pid",
        "plugin_dir": tmp_path / "usr/lib/fm/fmd/plugins",
        "dict_dir": tmp_path / "usr/lib/fm/dict",
    } == {
        name: getattr(p, name)
        for name in (
            "etc_dir",
            "conf_file",
            "plugin_conf_dir",
            "topology_file",
            "var_dir",
            "db_file",
            "run_dir",
            "xprt_socket",
            "adm_socket",
            "pid_file",
            "plugin_dir",
            "dict_dir",
        )
    }
    assert tmp_path / "etc/fmd/plugins/eft.conf" == p.plugin_conf("eft")


def test_system_layout() -> None:
    """On the system root the paths are the familiar absolute ones."""
    p = Paths(Path("/"))
    assert (Path("/etc/fmd/fmd.conf"), Path("/var/run/fmd/xprt.sock")) == (
        p.conf_file,
        p.xprt_socket,
    )


def test_paths_root_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative root is made absolute when Paths is built."""
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "r" == Paths(Path("r")).root


@pytest.mark.parametrize("module", ["", ".", "..", "a/b", "../etc"])
def test_plugin_conf_rejects_path_names(tmp_path: Path, module: str) -> None:
    """A module name that would escape the plugins directory is rejected."""
    with pytest.raises(ConfigError, match="is not a module name"):
        Paths(tmp_path).plugin_conf(module)


def test_paths_is_frozen(tmp_path: Path) -> None:
    """Paths cannot be changed after it is built."""
    p = Paths(tmp_path)
    with pytest.raises(AttributeError):
        p.root = Path("/")  # type: ignore[misc]


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_dirs_creates_with_modes(tmp_path: Path) -> None:
    """ensure_dirs makes the root and etc/fmd (0755), var/fm/fmd (0750) and
    var/run/fmd (0700), whatever the umask."""
    old = os.umask(0o000)
    try:
        p = Paths(tmp_path / "root")
        p.ensure_dirs()
        p.ensure_dirs()  # idempotent
    finally:
        os.umask(old)
    assert (mode(p.root), mode(p.etc_dir), mode(p.var_dir), mode(p.run_dir)) == (
        0o755,
        0o755,
        0o750,
        0o700,
    )


def test_ensure_dirs_tightens_existing_run_dir(tmp_path: Path) -> None:
    """An existing run directory open to others is made private."""
    p = Paths(tmp_path)
    p.run_dir.mkdir(parents=True)
    p.run_dir.chmod(0o777)
    p.ensure_dirs()
    assert mode(p.run_dir) == 0o700


def test_default_etc_dirs_in_checkout() -> None:
    """From a source checkout the shipped configuration is the top-level etc/."""
    assert default_etc_dirs() == REPO / "etc"
    assert (default_etc_dirs() / "fmd" / "fmd.conf").is_file()


def test_default_etc_dirs_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed without a source tree, it is <prefix>/share/fmd/etc."""
    fake = tmp_path / "site-packages" / "fmd" / "paths.py"
    monkeypatch.setattr(paths_module, "__file__", str(fake))
    monkeypatch.setattr(sys, "prefix", "/opt/venv")
    assert Path("/opt/venv/share/fmd/etc") == default_etc_dirs()


def test_new_root_gets_the_commented_fmd_conf(tmp_path: Path) -> None:
    """A root without fmd.conf receives the shipped example once; an existing one is kept."""
    from fmd.paths import install_default_conf

    paths = Paths(tmp_path)
    assert install_default_conf(paths) is True
    text = paths.conf_file.read_text()
    assert "#setprop clock native" in text
    paths.conf_file.write_text("setprop clock simulated\n")
    assert install_default_conf(paths) is False
    assert paths.conf_file.read_text() == "setprop clock simulated\n"


def test_new_root_gets_the_agents_commented_confs(tmp_path: Path) -> None:
    """The agents' example .conf files are copied into a new root; one an operator
    already wrote is kept."""
    from fmd.paths import install_default_conf

    paths = Paths(tmp_path)
    paths.plugin_conf_dir.mkdir(parents=True)
    paths.plugin_conf("syslog-msgs").write_text("setprop console true\n")
    install_default_conf(paths)
    assert "#setprop backend sim" in paths.plugin_conf("cpumem-retire").read_text()
    assert paths.plugin_conf("syslog-msgs").read_text() == "setprop console true\n"
