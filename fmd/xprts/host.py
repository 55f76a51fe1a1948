"""Building the host error sources from the daemon's properties.

:func:`build_sources` reads the ``xprt.*`` source properties, finds out what
the host offers (tracepoints, /dev/mcelog) without changing anything, lets
:mod:`fmd.xprts.plan` choose, and constructs each chosen source from its
committed position.  The daemon starts them with the other transports, after
replay.  Paths come from properties so that a test, or the real-kernel
harness, points the sources at a fake tree or a guest's ``/sys`` and ``/dev``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fmd.config import Properties
from fmd.hw.kmsg import ALL_FORMS, FORM_EDAC, FORM_MEMORY_FAILURE, MCE_FORMS, KmsgEvent
from fmd.hw.kmsg_text import parse_log_text
from fmd.hw.topo import Platform
from fmd.xprt import Ingest
from fmd.xprts import plan
from fmd.xprts.edac import EdacSource
from fmd.xprts.kmsg import KmsgSource
from fmd.xprts.mcelog import McelogSource
from fmd.xprts.pstore import PstoreSource
from fmd.xprts.rasdaemon import RasdaemonSource, source_name
from fmd.xprts.source import Position, Source
from fmd.xprts.tracefs import DEFAULT_ROOTS, TracefsSource, offered_tracepoints

# /proc/xen/capabilities says "control_d" in a Xen dom0: there /dev/mcelog
# carries the hypervisor's records with physical CPU numbers.
XEN_CAPABILITIES: Final = Path("/proc/xen/capabilities")
_CONTROL_DOMAIN: Final = "control_d"

MCE_RECORD: Final = "mce:mce_record"
MC_EVENT: Final = "ras:mc_event"
MEMORY_FAILURE_EVENT: Final = "ras:memory_failure_event"

Positions = Mapping[str, tuple[str, int, str | None]]


@dataclass
class HostSources:
    """The sources built, and why each source runs or not (for fmadm config)."""

    sources: list[Source]
    choice: dict[str, str]


def is_xen_dom0(capabilities: Path = XEN_CAPABILITIES) -> bool:
    """True in a Xen control domain (dom0)."""
    try:
        return _CONTROL_DOMAIN in capabilities.read_text().split()
    except OSError:
        return False


def kmsg_forms(skip: frozenset[str]) -> frozenset[str]:
    """The kernel-log forms to read when ``skip`` (plan forms) are carried elsewhere."""
    forms = set(ALL_FORMS)
    if plan.FORM_MCE in skip:
        forms -= MCE_FORMS  # the mce: blocks, the AMD decoder's and EDAC's copies
    if plan.FORM_EDAC in skip:
        forms.discard(FORM_EDAC)
    if plan.FORM_MEMORY_FAILURE in skip:
        forms.discard(FORM_MEMORY_FAILURE)  # memory_failure()'s verdicts
    return frozenset(forms)


def _panic_log_lines(platform: Platform | None) -> Callable[[str], list[dict[str, Any]]]:
    """The kernel-log parser for a pstore panic log: what it holds besides the
    machine-check blocks (read by the pstore source itself): GHES, EDAC, ..."""
    forms = ALL_FORMS - MCE_FORMS

    def parse(text: str) -> list[dict[str, Any]]:
        results = parse_log_text(text, platform=platform, forms=forms)
        return [r.obj for r in results if isinstance(r, KmsgEvent)]

    return parse


def _position(positions: Positions, name: str) -> Position | None:
    found = positions.get(name)
    return None if found is None else Position(*found)


def _path(props: Properties, name: str) -> Path:
    return Path(props.get_str(name))


def build_sources(
    ingest: Ingest,
    props: Properties,
    positions: Positions,
    *,
    auto_ok: bool,
    dom0: bool = False,
) -> HostSources:
    """The host sources the properties and the host call for (not started)."""
    switches = {name: props.get_str(f"xprt.{name}") for name in plan.SOURCES}
    tracefs_root = props.get_str("xprt.tracefs.root")
    roots = (Path(tracefs_root),) if tracefs_root else DEFAULT_ROOTS
    offered = offered_tracepoints(roots)
    mcelog_path = _path(props, "xprt.mcelog.path")
    offer = plan.HostOffer(
        tracefs=MCE_RECORD in offered,
        mc_event=MC_EVENT in offered,
        memory_failure=MEMORY_FAILURE_EVENT in offered,
        mcelog=mcelog_path.exists(),
        dom0=dom0,
    )
    chosen = plan.plan_sources(switches, offer, auto_ok=auto_ok)
    boot_id = _path(props, "xprt.bootid")
    sources: list[Source] = []
    for name in chosen.run:
        start = _position(positions, name)
        if name == plan.TRACEFS:
            sources.append(
                TracefsSource(
                    ingest,
                    start,
                    root=Path(tracefs_root) if tracefs_root else None,
                    buffer_kb=props.get_int("xprt.tracefs.buffer_kb"),
                    boot_id_path=boot_id,
                )
            )
        elif name == plan.MCELOG:
            sources.append(
                McelogSource(
                    ingest,
                    name,
                    start,
                    path=mcelog_path,
                    boot_id_path=boot_id,
                    physical_cpus=is_xen_dom0(),
                )
            )
        elif name == plan.KMSG:
            sources.append(
                KmsgSource(
                    ingest,
                    start,
                    path=_path(props, "xprt.kmsg.path"),
                    boot_id_path=boot_id,
                    forms=kmsg_forms(chosen.kmsg_skip),
                )
            )
        elif name == plan.EDAC:
            sources.append(
                EdacSource(
                    ingest,
                    name,
                    start,
                    sysfs=_path(props, "topo.sysfs"),
                    boot_id=boot_id,
                    poll=props.get_time_ns("xprt.edac.interval") / 1e9,
                )
            )
        elif name == plan.PSTORE:
            sources.append(
                PstoreSource(
                    ingest,
                    name,
                    start,
                    root=_path(props, "xprt.pstore.dir"),
                    remove=props.get_bool("xprt.pstore.remove"),
                    line_parser=_panic_log_lines(ingest.platform),
                )
            )
    choice = dict(chosen.why)
    followed = props.get_str("xprt.rasdaemon")
    if followed:
        path = Path(followed)
        name = source_name(path)
        sources.append(RasdaemonSource(ingest, name, _position(positions, name), path=path))
        choice[name] = "xprt.rasdaemon names it"
    return HostSources(sources, choice)
