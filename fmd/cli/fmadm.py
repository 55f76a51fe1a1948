"""``fmadm``: administer the running fault manager.

Every subcommand talks to the daemon over its control socket; the requests
that change state (repaired, replaced, acquit, flush, rotate, load, unload,
reset) are served only to root or to the user fmd runs as.  Exit codes are
those of illumos: 0 success, 1 failure (including "fmd is not running"),
2 usage.  Notices such as ``fmadm: recorded replacement of CPU 3`` go to
standard error and are silenced by ``-q``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from fmd.adm.client import AdmClient
from fmd.cli import faulty as view
from fmd.cli.common import fail, handle_errors, json_option, paths_for, root_option, run_click
from fmd.cli.fmt import store_warning
from fmd.errors import AdmError
from fmd.protocol import utc_iso

# fmadm verb -> (request verb, what the notice says was recorded)
_NOTICES = {
    "repaired": ("repaired", "repair to"),
    "replaced": ("replaced", "replacement of"),
    "acquit": ("acquit", "acquital of"),
    "flush": ("flush", "flush of"),
}


def _call(ctx: click.Context, root: str | None, op: str, **args: Any) -> Any:
    paths = paths_for(root or ctx.obj["root"])
    with AdmClient(paths.adm_socket, timeout=120.0) as client:
        return client.call(op, **args)


def _notice(ctx: click.Context, text: str) -> None:
    if not ctx.obj["quiet"]:
        click.echo(f"fmadm: {text}", err=True)


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
    """List the loaded modules with their version and status, then the transports
    and host error sources with their state and why they run or do not."""
    result = _call(ctx, root, "config")
    if as_json:
        doc = {
            "modules": result["modules"],
            "transports": result.get("transports", []),
            "platform": result.get("platform"),
        }
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'MODULE':<24} {'VERSION':<7} {'STATUS':<6}  DESCRIPTION")
    for m in result["modules"]:
        click.echo(f"{m['name']:<24} {m['version']:<7} {m['status']:<6}  {m['description']}")
    xprts = result.get("transports", [])
    if xprts:
        click.echo("")
        click.echo(f"{'TRANSPORT':<32} {'STATE':<7}  DETAIL")
        for t in xprts:
            detail = "; ".join(x for x in (t.get("reason", ""), t.get("chosen", "")) if x)
            click.echo(f"{t['name']:<32} {t['state']:<7}  {detail}")
    platform = result.get("platform")
    if platform:
        click.echo("")
        click.echo(f"{'PLATFORM':<32} HOST")
        click.echo(f"{platform['name']:<32} {platform['description']}")
    for err in result.get("load_errors", []):
        click.echo(f"fmadm: warning: {err}", err=True)


_CASE_KEYS = ("uuid", "code", "severity", "time", "injected", "state", "module", "suspects")


def faulty_json(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``fmadm faulty --json`` form of the daemon's cases: the case members
    operators script against, ``time`` in ISO 8601 UTC, ``ereports`` (how many
    ereports were counted against the case), and every suspect member."""
    out = []
    for c in cases:
        case = {k: utc_iso(int(c["time_ns"])) if k == "time" else c[k] for k in _CASE_KEYS}
        case["ereports"] = int(c.get("ereports") or 0)
        out.append(case)
    return out


def _page(lines: list[str]) -> None:
    """Show ``lines`` through $PAGER (each case on its own page), as ``-p`` asks."""
    text = "\n".join(lines) + "\n"
    pager = os.environ.get("PAGER") or "more"
    if not sys.stdout.isatty():
        click.echo(text, nl=False)
        return
    try:
        subprocess.run(pager, shell=True, input=text.encode(), check=False)
    except OSError as exc:
        raise AdmError(f"cannot run the pager {pager!r}: {exc}") from None


@cli.command("faulty")
@root_option
@click.option("-a", "show_all", is_flag=True, help="Also cases with no faulty resource left.")
@click.option("-f", "by_fru", is_flag=True, help="One entry per FRU.")
@click.option("-g", "grouped", is_flag=True, help="Group identical diagnoses.")
@click.option("-i", "cache_ids", is_flag=True, help="With -r: print cache ids.")
@click.option("-n", "limit", type=click.IntRange(min=1), default=None, help="At most N entries.")
@click.option("-p", "paged", is_flag=True, help="Page the output through $PAGER.")
@click.option("-r", "resources", is_flag=True, help="One line per faulty resource.")
@click.option("-s", "summary", is_flag=True, help="One line per case.")
@click.option("-u", "uuid", default=None, metavar="UUID", help="Only this case (implies -a).")
@click.option("-v", "verbose", is_flag=True, help="Full detail.")
@json_option
@click.pass_context
@handle_errors("fmadm")
def faulty(
    ctx: click.Context,
    root: str | None,
    show_all: bool,
    by_fru: bool,
    grouped: bool,
    cache_ids: bool,
    limit: int | None,
    paged: bool,
    resources: bool,
    summary: bool,
    uuid: str | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Show the resources fmd believes faulty, and the diagnoses behind them."""
    args: dict[str, Any] = {"all": show_all}
    if uuid:
        args["uuid"] = uuid
    answer = _call(ctx, root, "faulty", **args)
    warning = store_warning(answer.get("store"))
    if warning:
        click.echo(f"fmadm: {warning}", err=True)
    cases = answer["cases"]
    if limit is not None and not grouped:
        cases = cases[:limit]
    if as_json:
        click.echo(orjson.dumps(faulty_json(cases), option=orjson.OPT_INDENT_2).decode())
        return
    if resources:
        lines = view.render_resources(cases, cache_ids=cache_ids)
    elif summary:
        lines = view.render_summary(cases)
    elif by_fru:
        lines = view.render_frus(cases)
    elif grouped:
        lines = view.render_grouped(answer, cases, verbose=verbose, limit=limit)
    else:
        lines = view.render_default(answer, cases, verbose=verbose)
    if not lines:
        return
    if paged:
        _page([line if line != view.RULE else "\f" + line for line in lines])
        return
    click.echo("\n".join(lines))


def _repair(ctx: click.Context, root: str | None, verb: str, target: str, uuid: str | None) -> None:
    op, what = _NOTICES[verb]
    args: dict[str, Any] = {"verb": op, "target": target}
    if uuid:
        args["uuid"] = uuid
    try:
        result = _call(ctx, root, "repair", **args)
    except AdmError as exc:
        fail("fmadm", f"failed to record {what} {target}: {exc}")
    for err in result.get("errors", []):
        click.echo(f"fmadm: warning: {err}", err=True)
    _notice(ctx, f"recorded {what} {target}")


@cli.command("repaired")
@root_option
@click.argument("target", metavar="FMRI|LABEL")
@click.pass_context
@handle_errors("fmadm")
def repaired(ctx: click.Context, root: str | None, target: str) -> None:
    """Record that the resource was repaired."""
    _repair(ctx, root, "repaired", target, None)


@cli.command("replaced")
@root_option
@click.argument("target", metavar="FMRI|LABEL")
@click.pass_context
@handle_errors("fmadm")
def replaced(ctx: click.Context, root: str | None, target: str) -> None:
    """Record that the resource was replaced."""
    _repair(ctx, root, "replaced", target, None)


@cli.command("acquit")
@root_option
@click.argument("target", metavar="FMRI|LABEL|UUID")
@click.argument("uuid", required=False, metavar="[UUID]")
@click.pass_context
@handle_errors("fmadm")
def acquit(ctx: click.Context, root: str | None, target: str, uuid: str | None) -> None:
    """Record that the resource (in case UUID), or the whole case UUID, is not at fault."""
    _repair(ctx, root, "acquit", target, uuid)


@cli.command("flush")
@root_option
@click.argument("targets", nargs=-1, required=True, metavar="FMRI...")
@click.pass_context
@handle_errors("fmadm")
def flush(ctx: click.Context, root: str | None, targets: tuple[str, ...]) -> None:
    """Forget the faults recorded against each resource."""
    failed = False
    for target in targets:
        try:
            _call(ctx, root, "repair", verb="flush", target=target)
        except AdmError as exc:
            click.echo(f"fmadm: failed to flush {target}: {exc}", err=True)
            failed = True
            continue
        _notice(ctx, f"flushed resource history for {target}")
    if failed:
        sys.exit(1)


@cli.command("rotate")
@root_option
@click.argument("log", type=click.Choice(["errlog", "fltlog"]))
@click.pass_context
@handle_errors("fmadm")
def rotate(ctx: click.Context, root: str | None, log: str) -> None:
    """Move the settled records of a log to <log>.0 (older files shift up)."""
    result = _call(ctx, root, "rotate", log=log)
    if result["path"] is None:
        _notice(ctx, f"{log} has no settled records to rotate")
        return
    _notice(ctx, f"{log} has been rotated out and can now be archived ({result['path']})")


@cli.command("load")
@root_option
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@handle_errors("fmadm")
def load(ctx: click.Context, root: str | None, path: Path) -> None:
    """Load the plug-in module in PATH into the running fmd."""
    result = _call(ctx, root, "load", path=str(path.resolve()))
    _notice(ctx, f"loaded module {result['module']} ({result['status']})")


@cli.command("unload")
@root_option
@click.argument("module")
@click.pass_context
@handle_errors("fmadm")
def unload(ctx: click.Context, root: str | None, module: str) -> None:
    """Unload MODULE (its state is saved)."""
    _call(ctx, root, "unload", module=module)
    _notice(ctx, f"unloaded module {module}")


@cli.command("reset")
@root_option
@click.option("-s", "serd", default=None, metavar="SERD", help="Reset only this SERD engine.")
@click.argument("module")
@click.pass_context
@handle_errors("fmadm")
def reset(ctx: click.Context, root: str | None, serd: str | None, module: str) -> None:
    """Reset one SERD engine of MODULE, or the module and its saved state."""
    args: dict[str, Any] = {"module": module}
    if serd:
        args["serd"] = serd
    _call(ctx, root, "reset", **args)
    _notice(ctx, f"reset {'SERD engine ' + serd + ' of ' if serd else ''}module {module}")


def main() -> None:
    run_click(cli, "fmadm")


if __name__ == "__main__":
    main()
