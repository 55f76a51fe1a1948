"""``fmadm``: administer the running fault manager.

This version provides ``fmadm config`` (modules and their status); it talks to
the daemon over the control socket and exits 0 only when the daemon answered.
"""

from __future__ import annotations

import click
import orjson

from fmd.adm.client import AdmClient
from fmd.cli.common import handle_errors, json_option, paths_for, root_option, run_click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-q", "quiet", is_flag=True, help="Suppress notices.")
@click.pass_context
def cli(ctx: click.Context, root: str | None, quiet: bool) -> None:
    """Fault management administration."""
    ctx.obj = {"root": root, "quiet": quiet}


@cli.command("config")
@root_option
@json_option
@click.pass_context
@handle_errors("fmadm")
def config(ctx: click.Context, root: str | None, as_json: bool) -> None:
    """List the loaded modules with their version and status."""
    paths = paths_for(root or ctx.obj["root"])
    with AdmClient(paths.adm_socket) as client:
        result = client.call("config")
    if as_json:
        click.echo(orjson.dumps(result["modules"], option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'MODULE':<24} {'VERSION':<7} {'STATUS':<6}  DESCRIPTION")
    for m in result["modules"]:
        click.echo(f"{m['name']:<24} {m['version']:<7} {m['status']:<6}  {m['description']}")
    for err in result.get("load_errors", []):
        click.echo(f"fmadm: warning: {err}", err=True)


def main() -> None:
    run_click(cli, "fmadm")


if __name__ == "__main__":
    main()
