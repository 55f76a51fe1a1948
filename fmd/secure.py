"""Whether fmd may trust a file or directory, and how it creates its own.

fmd runs as root and executes plug-ins named by its configuration, so whoever
can write ``etc/fmd/fmd.conf``, a plug-in directory or anything above them can
run code as root.  :func:`check_trusted` applies OpenSSH's StrictModes rule
to everything fmd reads settings or code from: the file and every directory
above it, up to ``/``, must be owned by root or by fmd's own user and must not
be writable by group or others.  A directory with the sticky bit (``/tmp``)
may be writable by others when it is above the path, since the entry below it
is then checked to be owned by root or by fmd's user.  The path is checked as
written (links included, each owned by root or fmd's user) and as resolved.

fmd never relies on the umask for what it creates: every file and directory
gets its mode explicitly (``os.open`` with the mode, then ``fchmod``;
``mkdir``, then ``chmod``), and files are opened with ``O_NOFOLLOW``::

    etc/fmd, etc/fmd/plugins                        0755
    etc/fmd/fmd.conf, plugins/*.conf (copied)       0644
    var/fm/fmd                                      0750, group access.group
    var/fm/fmd/fmd.db, fmd.log, errlog.N, fltlog.N  0640, group access.group
    var/run/fmd                                     0700, fmd's user only
    var/run/fmd/fmd.pid                             0644

The group is given only where fmd may give it: as root, or when fmd's user
belongs to it (:func:`access_gid`).  Failures raise :class:`~fmd.errors.FmdError`
(:class:`~fmd.errors.ConfigError` for an untrusted path) with one line naming
the path, the problem and the fix.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from pathlib import Path
from typing import Final

from fmd.errors import ConfigError, FmdError

__all__ = [
    "CONF_DIR_MODE",
    "CONF_FILE_MODE",
    "DAEMON_UMASK",
    "PID_FILE_MODE",
    "RUN_DIR_MODE",
    "STATE_DIR_MODE",
    "STATE_FILE_MODE",
    "access_gid",
    "check_run_dir",
    "check_trusted",
    "make_dir",
    "open_file",
]

CONF_DIR_MODE: Final = 0o755
"""``etc/fmd``, ``etc/fmd/plugins``, the root and any parent fmd creates."""
CONF_FILE_MODE: Final = 0o644
"""The example ``.conf`` files copied into a new root."""
STATE_DIR_MODE: Final = 0o750
"""``var/fm/fmd``: readable by the access group only."""
STATE_FILE_MODE: Final = 0o640
"""The database, the log and the archives: they hold hardware and address details."""
RUN_DIR_MODE: Final = 0o700
"""``var/run/fmd``: whoever reaches the sockets can inject events or repair resources."""
PID_FILE_MODE: Final = 0o644
"""``var/run/fmd/fmd.pid``."""
DAEMON_UMASK: Final = 0o027
"""The daemon's umask: defence in depth only, every mode above is set explicitly."""

_GROUP_OTHER_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH
_OPEN_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC


def _user(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` for a uid without a name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _owner_name(uid: int) -> str:
    """The name ``chown`` takes for ``uid``."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _chain(path: Path) -> list[Path]:
    """``/``, then each directory down to ``path``, then ``path`` itself."""
    return [*reversed(path.parents), path]


def _writers(mode: int) -> tuple[str, str]:
    """Who besides the owner may write (``group and others``) and the chmod to stop it."""
    who = [w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit]
    return " and ".join(who), "".join(w[0] for w in who) + "-w"


def _violation(target: Path, action: str, component: Path, final: Path) -> str | None:
    """What makes ``component`` (``final``, the path checked, or a directory above
    it) untrustworthy; the message names ``target``, the path as the caller gave it."""
    try:
        st = os.lstat(component)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"refusing to {action} {target}: cannot examine {component}: {exc.strerror}"
    subject = "it" if component == final else f"its directory {component}"
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        mine = "root" if euid == 0 else f"root or {_user(euid)}, the user fmd runs as"
        return (
            f"refusing to {action} {target}: {subject} is owned by {_user(st.st_uid)}, "
            f"not by {mine}; run 'chown {_owner_name(euid)} {component}'"
        )
    if stat.S_ISLNK(st.st_mode):
        return None  # a link's own mode means nothing; its target is checked too
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _GROUP_OTHER_WRITE:
        return None
    if component != final and stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX:
        return None  # sticky: only the owner of the entry below may replace it
    who, fix = _writers(mode)
    return (
        f"refusing to {action} {target}: {subject} is writable by {who} "
        f"(mode {mode:04o}); run 'chmod {fix} {component}'"
    )


def check_trusted(path: Path | str, action: str = "read") -> None:
    """Raise :class:`ConfigError` unless ``path`` may be trusted (see the module docstring).

    ``action`` completes the message "refusing to <action> <path>".  A path
    that does not exist passes: there is nothing to read from it.
    """
    target = Path(os.path.abspath(path))
    if not os.path.lexists(target):
        return
    real = Path(os.path.realpath(target))
    for final in (target, real) if real != target else (target,):
        for component in _chain(final):
            problem = _violation(target, action, component, final)
            if problem is not None:
                raise ConfigError(problem)


def access_gid(group: str) -> int | None:
    """The gid fmd gives its state files: ``group``'s, when it exists and fmd may
    give it (fmd is root, or its user belongs to the group); else None."""
    if not group:
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    if os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups():
        return gid
    return None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _set_mode(path: Path, mode: int, gid: int | None) -> None:
    """Give ``path`` exactly ``mode`` (and group ``gid``) if fmd owns it; a no-op if it has them."""
    try:
        st = os.lstat(path)
        if st.st_uid != os.geteuid() or stat.S_ISLNK(st.st_mode):
            return  # not fmd's to change (a link is refused where it matters)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
        if gid is not None and st.st_gid != gid:
            os.chown(path, -1, gid)
    except OSError as exc:
        raise FmdError(f"cannot set the mode of {path}: {_reason(exc)}") from None


def make_dir(path: Path, mode: int, gid: int | None = None, *, fix_existing: bool = False) -> None:
    """Create directory ``path`` with exactly ``mode`` (and group ``gid``); missing
    parents get :data:`CONF_DIR_MODE`.

    An existing directory keeps its mode unless ``fix_existing`` (then fmd sets
    the mode when it owns the directory).  Raises :class:`FmdError`
    ``cannot create PATH: reason``.
    """
    missing: list[Path] = []
    for p in _chain(path)[::-1]:
        if os.path.isdir(p):
            break
        missing.append(p)
    for p in reversed(missing):
        want = mode if p == path else CONF_DIR_MODE
        try:
            os.mkdir(p, want)
        except FileExistsError:
            if not os.path.isdir(p):
                raise FmdError(f"cannot create {path}: {p} exists and is not a directory") from None
            continue
        except OSError as exc:
            raise FmdError(f"cannot create {path}: {_reason(exc)}") from None
        # mkdir's mode went through the umask: set it exactly.
        _set_mode(p, want, gid if p == path else None)
    if fix_existing and path not in missing:
        _set_mode(path, mode, gid)


def open_file(path: Path, flags: int, mode: int, gid: int | None = None) -> int:
    """Open (creating it if needed) the regular file ``path`` owned by fmd's user,
    without following a link, and give it exactly ``mode`` (and group ``gid``).

    ``flags`` are the access flags (``os.O_RDWR``, ``os.O_WRONLY | os.O_APPEND``,
    ``os.O_EXCL`` ...); ``O_CREAT | O_NOFOLLOW | O_CLOEXEC`` are added.  Returns
    the descriptor; raises :class:`FmdError` naming the file and the problem.
    """
    try:
        fd = os.open(path, flags | os.O_CREAT | _OPEN_FLAGS, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FmdError(
                f"cannot open {path}: it is a symbolic link, which fmd does not follow "
                "here; remove it"
            ) from None
        raise FmdError(f"cannot open {path}: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FmdError(f"cannot open {path}: it is not a regular file; remove it")
        if st.st_uid != os.geteuid():
            raise FmdError(
                f"cannot open {path}: it is owned by {_user(st.st_uid)}, not by "
                f"{_user(os.geteuid())}, the user fmd runs as; remove it"
            )
        try:
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
            if gid is not None and st.st_gid != gid:
                os.fchown(fd, -1, gid)
        except OSError as exc:
            raise FmdError(f"cannot set the mode of {path}: {_reason(exc)}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_run_dir(path: Path) -> None:
    """The run directory must be a real directory owned by fmd's user and closed
    to everyone else: fix its mode if fmd owns it, else raise :class:`FmdError`."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise FmdError(f"cannot examine {path}: {_reason(exc)}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise FmdError(
            f"{path} is {what}; fmd keeps its sockets and pid file only in a real "
            "directory of its own: remove it"
        )
    euid = os.geteuid()
    if st.st_uid != euid:
        raise FmdError(
            f"{path} belongs to {_user(st.st_uid)}, not to {_user(euid)}, the user fmd "
            "runs as; remove it or run fmd as its owner"
        )
    if stat.S_IMODE(st.st_mode) != RUN_DIR_MODE:
        try:
            os.chmod(path, RUN_DIR_MODE)
        except OSError as exc:
            raise FmdError(f"cannot set the mode of {path}: {_reason(exc)}") from None
