"""``fmd``: start the fault manager daemon.

``fmd [-R root] [-f] [-o prop=value]...``.  Without ``-f`` the daemon detaches
(double fork, new session) and the command returns once the daemon is ready,
or fails with the daemon's own error message.  Logs go to stderr in the
foreground and to ``var/fm/fmd/fmd.log`` when detached.
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


def _serve(daemon: Daemon, ready: int | None) -> int:
    def on_signal(signum: int, _frame: object) -> None:
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        daemon.start()
    except Exception as exc:
        message = str(exc) if isinstance(exc, FmdError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, FmdError):
            structlog.get_logger("fmd").exception("fmd_start_failed")
        if ready is not None:
            os.write(ready, f"error: {message}\n".encode())
            os.close(ready)
        else:
            click.echo(f"fmd: {message}", err=True)
        return EXIT_ERROR
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
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return w


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
    try:
        paths = paths_for(root)
        props = load_properties(paths, opts)
    except FmdError as exc:
        click.echo(f"fmd: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    fg = foreground or props.get_bool("fg")
    ready: int | None = None
    stream: TextIO | None = None
    if not fg:
        paths.ensure_dirs()
        ready = _detach()
        stream = open(paths.var_dir / "fmd.log", "a", buffering=1)  # noqa: SIM115
    fmdlog.configure(props.get_str("log.level"), props.get_str("log.format"), stream)
    sys.exit(_serve(Daemon(paths, props), ready))


def main() -> None:
    run_click(cli, "fmd")


if __name__ == "__main__":
    main()
