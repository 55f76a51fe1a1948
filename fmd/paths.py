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
    <root>/var/fm/fmd/fmd.db             the SQLite store          (0750 dir, 0640 files)
    <root>/var/fm/fmd/fmd.log            the log when detached
    <root>/var/run/fmd/{xprt,adm}.sock   sockets, fmd.pid          (0700 dir)

The modes are set explicitly (see :mod:`fmd.secure`), never left to the umask.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fmd.errors import ConfigError, FmdError
from fmd.secure import (
    CONF_DIR_MODE,
    CONF_FILE_MODE,
    RUN_DIR_MODE,
    STATE_DIR_MODE,
    check_run_dir,
    make_dir,
    open_file,
)

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
    def log_file(self) -> Path:
        """``var/fm/fmd/fmd.log``: the daemon's log when it runs detached."""
        return self.var_dir / "fmd.log"

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

    def ensure_dirs(self, gid: int | None = None) -> None:
        """Create the root and ``etc/fmd`` (0755), ``var/fm/fmd`` (0750, group
        ``gid``) and ``var/run/fmd`` (0700), and check the run directory.

        ``var/fm/fmd`` and ``var/run/fmd`` get their modes even when they exist
        (an older root, or one made under a lax umask): the state holds hardware
        details, and anyone who can reach the sockets can inject events or
        repair resources.  The run directory must be a real directory owned by
        fmd's user.  Raises :class:`~fmd.errors.FmdError` ("cannot create ...").
        """
        make_dir(self.root, CONF_DIR_MODE)
        make_dir(self.etc_dir, CONF_DIR_MODE)
        make_dir(self.var_dir, STATE_DIR_MODE, gid, fix_existing=True)
        make_dir(self.run_dir, RUN_DIR_MODE, fix_existing=True)
        check_run_dir(self.run_dir)


def _copy_new(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` (mode 0644) unless ``target`` exists; True if copied."""
    data = source.read_bytes()
    try:
        fd = open_file(target, os.O_WRONLY | os.O_EXCL, CONF_FILE_MODE)
    except FmdError:
        if os.path.lexists(target):
            return False  # created meanwhile, or a link: the operator's, left alone
        raise
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return True


def install_default_conf(paths: Paths) -> bool:
    """Give a new root the shipped, fully commented ``fmd.conf`` (True if it was
    copied) and the agents' commented ``plugins/<module>.conf`` files it lacks.

    Every line of the shipped files is a comment, so this changes no setting: it
    only puts the documented list of properties where an operator edits them.
    The copies are 0644 and their directories 0755, whatever the umask.
    """
    shipped_dir = default_etc_dirs() / "fmd"
    # The agents' example files too (all comments as well), each only if absent.
    for example in sorted((shipped_dir / "plugins").glob("*.conf")):
        target = paths.plugin_conf_dir / example.name
        if not os.path.lexists(target):
            make_dir(paths.plugin_conf_dir, CONF_DIR_MODE)
            _copy_new(example, target)
    if os.path.lexists(paths.conf_file):
        return False
    shipped = shipped_dir / "fmd.conf"
    if not shipped.is_file():
        return False
    make_dir(paths.etc_dir, CONF_DIR_MODE)
    return _copy_new(shipped, paths.conf_file)


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
