"""The root directory fmd runs under, and every file and directory beneath it.

Everything fmd reads or writes lives under one root, as illumos fmd does with
``-R``: ``/`` for the system daemon, a private per-user directory otherwise, or
any directory a test names.  The layout below the root is fixed here and only
here::

    <root>/etc/fmd/fmd.conf              daemon properties
    <root>/etc/fmd/plugins/<mod>.conf    module properties and subscriptions
    <root>/etc/fmd/topology.toml         topology and FRU labels
    <root>/usr/lib/fm/fmd/plugins/       plug-in modules (.py)
    <root>/usr/lib/fm/dict/              fault dictionaries
    <root>/var/fm/fmd/fmd.db             the SQLite store          (0755 dir)
    <root>/var/run/fmd/{xprt,adm}.sock   sockets, fmd.pid          (0700 dir)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fmd.errors import ConfigError

__all__ = ["Paths", "default_etc_dirs", "resolve_root"]


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalised (``..`` removed) without following links."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def resolve_root(
    cli_root: str | None,
    env: Mapping[str, str] = os.environ,
    uid: int | None = None,
) -> Path:
    """Choose the root: ``-R``, else ``$FMD_ROOT``, else ``/`` for root, else a per-user one.

    The per-user root is ``$XDG_STATE_HOME/fmd``, or ``~/.local/state/fmd`` when
    that variable is unset, empty or relative (as the XDG specification says).
    ``uid`` defaults to the effective user id.  The result is always absolute.
    """
    if cli_root is not None:
        if not cli_root:
            raise ConfigError("-R needs a directory; it was given an empty string")
        return _absolute(cli_root)
    env_root = env.get("FMD_ROOT")
    if env_root:
        return _absolute(env_root)
    if uid is None:
        uid = os.geteuid()
    if uid == 0:
        return Path("/")
    state = env.get("XDG_STATE_HOME", "")
    if state and os.path.isabs(state):
        return _absolute(Path(state) / "fmd")
    home = env.get("HOME") or os.path.expanduser("~")
    return _absolute(Path(home) / ".local" / "state" / "fmd")


@dataclass(frozen=True)
class Paths:
    """The layout under one root; building it touches nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", _absolute(self.root))

    @property
    def etc_dir(self) -> Path:
        """``etc/fmd``: the daemon's configuration."""
        return self.root / "etc" / "fmd"

    @property
    def conf_file(self) -> Path:
        """``etc/fmd/fmd.conf``: the daemon's ``setprop`` lines."""
        return self.etc_dir / "fmd.conf"

    @property
    def plugin_conf_dir(self) -> Path:
        """``etc/fmd/plugins``: one ``<module>.conf`` per module."""
        return self.etc_dir / "plugins"

    def plugin_conf(self, module: str) -> Path:
        """``etc/fmd/plugins/<module>.conf``."""
        if not module or module in (".", "..") or "/" in module or "\0" in module:
            raise ConfigError(f"{module!r} is not a module name (it must be a plain file name)")
        return self.plugin_conf_dir / f"{module}.conf"

    @property
    def topology_file(self) -> Path:
        """``etc/fmd/topology.toml``: the topology and FRU labels."""
        return self.etc_dir / "topology.toml"

    @property
    def var_dir(self) -> Path:
        """``var/fm/fmd``: persistent state."""
        return self.root / "var" / "fm" / "fmd"

    @property
    def db_file(self) -> Path:
        """``var/fm/fmd/fmd.db``: the SQLite store (when ``store.url`` is empty)."""
        return self.var_dir / "fmd.db"

    @property
    def log_dir(self) -> Path:
        """``var/fm/fmd``: where rotated logs (``errlog.N``, ``fltlog.N``) are kept."""
        return self.var_dir

    @property
    def run_dir(self) -> Path:
        """``var/run/fmd``: sockets and the pid file, private to the daemon's user."""
        return self.root / "var" / "run" / "fmd"

    @property
    def xprt_socket(self) -> Path:
        """``var/run/fmd/xprt.sock``: the local ingest socket."""
        return self.run_dir / "xprt.sock"

    @property
    def adm_socket(self) -> Path:
        """``var/run/fmd/adm.sock``: the control socket fmadm and fmstat use."""
        return self.run_dir / "adm.sock"

    @property
    def pid_file(self) -> Path:
        """``var/run/fmd/fmd.pid``."""
        return self.run_dir / "fmd.pid"

    @property
    def plugin_dir(self) -> Path:
        """``usr/lib/fm/fmd/plugins``: plug-in modules found by file."""
        return self.root / "usr" / "lib" / "fm" / "fmd" / "plugins"

    @property
    def dict_dir(self) -> Path:
        """``usr/lib/fm/dict``: fault dictionaries."""
        return self.root / "usr" / "lib" / "fm" / "dict"

    def ensure_dirs(self) -> None:
        """Create ``etc/fmd``, ``var/fm/fmd`` (0755) and ``var/run/fmd`` (0700).

        The run directory is set to 0700 even when it already exists: anyone who
        can reach the sockets can inject events or repair resources.
        """
        for directory in (self.etc_dir, self.var_dir):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)  # mkdir's mode is filtered by the umask


def install_default_conf(paths: Paths) -> bool:
    """Give a new root the shipped, fully commented ``fmd.conf`` (True if it was
    copied) and the agents' commented ``plugins/<module>.conf`` files it lacks.

    Every line of the shipped files is a comment, so this changes no setting: it
    only puts the documented list of properties where an operator edits them.
    """
    shipped_dir = default_etc_dirs() / "fmd"
    # The agents' example files too (all comments as well), each only if absent.
    for example in sorted((shipped_dir / "plugins").glob("*.conf")):
        target = paths.plugin_conf_dir / example.name
        if not target.exists():
            paths.plugin_conf_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.write_bytes(example.read_bytes())
    if paths.conf_file.exists():
        return False
    shipped = shipped_dir / "fmd.conf"
    if not shipped.is_file():
        return False
    paths.etc_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    paths.conf_file.write_bytes(shipped.read_bytes())
    return True


def default_etc_dirs() -> Path:
    """Where the shipped example configuration lives (holding ``fmd/fmd.conf``).

    The source tree's top-level ``etc/`` when running from a checkout, else
    ``<sys.prefix>/share/fmd/etc``.
    """
    source_etc = Path(__file__).resolve().parents[1] / "etc"
    # Check for etc/fmd, not just etc/: an installed package's parents[1] is
    # site-packages, where some unrelated distribution may have put an etc/.
    if (source_etc / "fmd").is_dir():
        return source_etc
    return Path(sys.prefix) / "share" / "fmd" / "etc"
