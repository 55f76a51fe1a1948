"""``fmtopo``: print the machine's topology as fmd sees it.

``fmtopo [-R root] [-p] [-S] [-V] [--json] [-o name=value]...`` builds the
platform the daemon would use (the ``platform`` and ``topo.sysfs`` properties
from ``etc/fmd/fmd.conf`` and ``-o``) and prints every hc node in tree order,
in the illumos layout: a ``TIME UUID`` header, then one FMRI per node; ``-p``
adds the ``ASRU``, ``FRU`` and ``Label`` lines, ``-S`` the ``Present`` and
``Unusable`` lines (unusable when the resource cache in the store marks the
ASRU so), ``-V`` the node's properties.  It does not need fmd to be running.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import click
import orjson
from sqlalchemy.exc import SQLAlchemyError

from fmd.cli.common import (
    handle_errors,
    json_option,
    load_properties,
    paths_for,
    root_option,
    run_click,
)
from fmd.errors import StoreError
from fmd.hw.topo import TopoNode, choose_platform
from fmd.hw.virt import ROLE_METAL
from fmd.protocol import FAULT_UNUSABLE
from fmd.store import Store, queries


def _unusable(paths: Any, props: Any) -> set[str]:
    """ASRUs the resource cache marks unusable (empty when fmd has never run)."""
    try:
        store = Store(props.get_str("store.url"), db_file=paths.db_file, readonly=True)
    except StoreError:
        return set()
    try:
        with store.reader() as conn:
            return {fmri for fmri, flags in queries.resource_flags(conn) if flags & FAULT_UNUSABLE}
    except SQLAlchemyError as exc:
        # A damaged store: the topology is still worth printing.
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        click.echo(f"fmtopo: warning: cannot read the resource cache: {first}", err=True)
        return set()
    finally:
        store.close()


def _node_json(node: TopoNode, unusable: set[str]) -> dict[str, Any]:
    asru = node.asru.to_string() if node.asru is not None else None
    return {
        "fmri": node.fmri.to_string(),
        "asru": asru,
        "fru": node.fru.to_string(),
        "label": node.label,
        "serial": node.serial,
        "present": True,
        "unusable": asru in unusable if asru else False,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-p", "props_lines", is_flag=True, help="Print the ASRU, FRU and Label of each node.")
@click.option("-S", "status", is_flag=True, help="Print whether each node is present and usable.")
@click.option("-V", "verbose", is_flag=True, help="Print each node's properties.")
@click.option("-o", "opts", multiple=True, metavar="NAME=VALUE", help="Set a property, as fmd -o.")
@json_option
@handle_errors("fmtopo")
def cli(
    root: str | None,
    props_lines: bool,
    status: bool,
    verbose: bool,
    opts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Display the fault-management topology of this machine."""
    paths = paths_for(root)
    props = load_properties(paths, opts)
    platform = choose_platform(
        props.get_str("platform"),
        topology_file=paths.topology_file,
        sysfs_root=Path(props.get_str("topo.sysfs")),
        is_root=os.geteuid() == 0,
        xenpm=props.get_str("topo.xenpm"),
    )
    unusable = _unusable(paths, props) if (status or as_json) else set()
    nodes = platform.nodes()
    if as_json:
        click.echo(orjson.dumps([_node_json(n, unusable) for n in nodes]).decode())
        return
    click.echo(f"{'TIME':<20} UUID")
    click.echo(f"{time.strftime('%b %d %H:%M:%S'):<20} {uuid.uuid4()}")
    virt = platform.virtualization
    if virt.role != ROLE_METAL:
        click.echo(f"Host: {virt.describe()}")
    click.echo("")
    for node in nodes:
        d = _node_json(node, unusable)
        click.echo(d["fmri"])
        if props_lines:
            if d["asru"]:
                click.echo(f"\tASRU: {d['asru']}")
            click.echo(f"\tFRU: {d['fru']}")
            if node.label:
                click.echo(f"\tLabel: {node.label}")
        if status:
            click.echo("\tPresent: true")
            click.echo(f"\tUnusable: {'true' if d['unusable'] else 'false'}")
        if verbose:
            click.echo(
                "  group: protocol                      version: 1   stability: Private/Private"
            )
            click.echo(f"    resource          fmri      {d['fmri']}")
            if d["asru"]:
                click.echo(f"    ASRU              fmri      {d['asru']}")
            click.echo(f"    FRU               fmri      {d['fru']}")
            if node.label:
                click.echo(f"    label             string    {node.label}")
            if node.serial:
                click.echo(f"    serial            string    {node.serial}")
        click.echo("")


def main() -> None:
    run_click(cli, "fmtopo")


if __name__ == "__main__":
    main()
