"""``fmd``: start the fault manager daemon.

``fmd [-R root] [-f] [-o prop=value]...``.  Without ``-f`` the daemon detaches
(double fork, new session) and the command returns once the daemon is ready,
or fails with the daemon's own error message.  Logs go to stderr in the
foreground and to ``var/fm/fmd/fmd.log`` when detached.

The detached daemon reports through a pipe to the waiting command: a
``warning: ...`` line per start-up warning, then ``ok`` or ``error: ...``.
Everything that can fail before the daemon is started — the root's
directories, the log file — is done before forking, so that its error is
printed directly; anything the child meets later is written to the pipe.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TextIO

import click
import structlog

from fmd import log as fmdlog
from fmd.cli.common import EXIT_ERROR, load_properties, paths_for, root_option, run_click
from fmd.daemon import VERSION, Daemon
from fmd.errors import FmdError
from fmd.paths import Paths
from fmd.secure import DAEMON_UMASK, STATE_FILE_MODE, access_gid, open_file


def _start_failed(exc: BaseException, ready: int | None) -> int:
    """Report why the daemon could not start: to the waiting command, or on stderr."""
    message = str(exc) if isinstance(exc, FmdError) else f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, FmdError):
        structlog.get_logger("fmd").exception("fmd_start_failed")
    if ready is not None:
        try:
            os.write(ready, f"error: {message}\n".encode(errors="replace"))
        finally:
            os.close(ready)
    else:
        click.echo(f"fmd: {message}", err=True)
    return EXIT_ERROR


def _serve(daemon: Daemon, ready: int | None) -> int:
    def on_signal(signum: int, _frame: object) -> None:
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        daemon.start()
    except Exception as exc:
        return _start_failed(exc, ready)
    if ready is not None:
        os.write(ready, b"".join(f"warning: {w}\n".encode() for w in daemon.warnings) + b"ok\n")
        os.close(ready)
    else:
        for warning in daemon.warnings:
            click.echo(f"fmd: warning: {warning}", err=True)
    daemon.wait()
    daemon.shutdown()
    return 0


def _detach() -> int | None:
    """Fork into the background; in the parent, wait for readiness and exit."""
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        chunks = []
        while True:
            data = os.read(r, 4096)
            if not data:
                break
            chunks.append(data)
        os.waitpid(pid, 0)
        lines = b"".join(chunks).decode(errors="replace").strip().splitlines()
        for line in lines:
            if line.startswith("warning: "):
                click.echo(f"fmd: {line}", err=True)
        if lines and lines[-1] == "ok":
            sys.exit(0)
        answer = lines[-1] if lines else ""
        click.echo(
            f"fmd: {answer.removeprefix('error: ') or 'the daemon exited during start-up'}",
            err=True,
        )
        sys.exit(EXIT_ERROR)
    os.close(r)
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    except OSError as exc:
        _start_failed(FmdError(f"cannot detach: {exc.strerror or exc}"), w)
        os._exit(EXIT_ERROR)
    return w


def _open_log(paths: Paths, gid: int | None) -> TextIO:
    """``var/fm/fmd/fmd.log`` for appending: 0640 (group ``access.group``), no link followed."""
    fd = open_file(paths.log_file, os.O_WRONLY | os.O_APPEND, STATE_FILE_MODE, gid)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option(
    "-o",
    "opts",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a daemon property (repeatable); see etc/fmd/fmd.conf.",
)
@click.option("-V", "--version", "show_version", is_flag=True, help="Print the version.")
def cli(root: str | None, foreground: bool, opts: tuple[str, ...], show_version: bool) -> None:
    """The fault manager daemon: receives ereports, runs diagnosis and response modules."""
    if show_version:
        click.echo(f"fmd: version {VERSION}")
        return
    # Defence in depth only: everything fmd creates is given its mode explicitly.
    os.umask(DAEMON_UMASK)
    fg = foreground
    stream: TextIO | None = None
    try:
        paths = paths_for(root)
        props = load_properties(paths, opts)
        fg = fg or props.get_bool("fg")
        if not fg:
            # Before detaching, so that a read-only or foreign var/ is reported here.
            gid = access_gid(props.get_str("access.group"))
            paths.ensure_dirs(gid)
            stream = _open_log(paths, gid)
    except FmdError as exc:
        click.echo(f"fmd: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    ready = None if fg else _detach()
    try:
        fmdlog.configure(props.get_str("log.level"), props.get_str("log.format"), stream)
        daemon = Daemon(paths, props)
    except Exception as exc:
        sys.exit(_start_failed(exc, ready))
    sys.exit(_serve(daemon, ready))


def main() -> None:
    run_click(cli, "fmd")


if __name__ == "__main__":
    main()
