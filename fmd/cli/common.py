"""What every command shares: ``-R/--root``, ``--json``, loading the daemon's
properties, and turning :class:`~fmd.errors.FmdError` into exit codes.

Exit codes follow illumos: 0 success, 1 error, 2 usage.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from fmd.config import DAEMON_PROPERTIES, Properties, parse_conf, parse_opt
from fmd.errors import FmdError
from fmd.paths import Paths, resolve_root

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def root_option(fn: F) -> F:
    """``-R/--root DIR`` (also ``$FMD_ROOT``)."""
    return click.option(
        "-R",
        "--root",
        "root",
        metavar="DIR",
        default=None,
        help="Use DIR as the root for every fmd file (default: $FMD_ROOT, / for root, "
        "else $XDG_STATE_HOME/fmd).",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def paths_for(root: str | None) -> Paths:
    return Paths(resolve_root(root))


def load_properties(paths: Paths, opts: tuple[str, ...] = ()) -> Properties:
    """The daemon's properties: defaults, then ``etc/fmd/fmd.conf``, then ``-o``."""
    conf = parse_conf(paths.conf_file, directives={"setprop"})
    sources = list(conf.setprops)
    for o in opts:
        name, value = parse_opt(o)
        sources.append((name, value, "-o"))
    return Properties.build(DAEMON_PROPERTIES, sources)


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"{prog}: {message}", err=True)
    sys.exit(code)


def handle_errors(prog: str) -> Callable[[F], F]:
    """Report FmdError as ``prog: message`` with exit code 1; likewise a file the
    user may not read (fmd's database, log and archives are readable by root and
    the ``access.group`` only)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except FmdError as exc:
                fail(prog, str(exc))
            except BrokenPipeError:
                sys.exit(EXIT_OK)
            except PermissionError as exc:
                where = f" {exc.filename}" if exc.filename else ""
                fail(
                    prog,
                    f"cannot read{where}: {exc.strerror or exc} (run as root or a user "
                    "of fmd's access.group)",
                )

        return wrapper  # type: ignore[return-value]

    return deco


def run_click(cmd: click.Command, prog: str) -> None:
    """Run a click command mapping click's usage errors to exit code 2."""
    try:
        cmd.main(prog_name=prog, standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK)
