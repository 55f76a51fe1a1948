"""Building the host sources from properties (fmd.xprts.host) against fake trees."""

from __future__ import annotations

from pathlib import Path

from fmd.config import DAEMON_PROPERTIES, Properties
from fmd.hw.kmsg import ALL_FORMS, FORM_EDAC, MCE_FORMS
from fmd.xprts.host import build_sources, is_xen_dom0, kmsg_forms
from fmd.xprts.kmsg import KmsgSource
from fmd.xprts.pstore import PstoreSource
from fmd.xprts.rasdaemon import source_name
from fmd.xprts.tracefs import TracefsSource
from tests.source_harness import SourceBench


def props(**values: str) -> Properties:
    return Properties.build(
        DAEMON_PROPERTIES, [(k.replace("__", "."), v, "test") for k, v in values.items()]
    )


def fake_tracefs(root: Path, *events: str) -> Path:
    (root / "instances").mkdir(parents=True)
    for ev in events:
        system, name = ev.split(":")
        (root / "events" / system / name).mkdir(parents=True)
    return root


def test_auto_on_a_modern_kernel_picks_tracefs_and_trims_the_kernel_log(tmp_path: Path) -> None:
    """With mce_record and mc_event offered, auto runs tracefs, the kernel log without the
    machine-check and EDAC forms, and pstore; the EDAC poller and /dev/mcelog stay off."""
    root = fake_tracefs(tmp_path / "tracing", "mce:mce_record", "ras:mc_event")
    with SourceBench(tmp_path / "db") as bench:
        p = props(
            xprt__tracefs__root=str(root),
            xprt__mcelog__path=str(tmp_path / "none"),
            xprt__pstore__dir=str(tmp_path / "pstore"),
        )
        host = build_sources(bench.ingest, p, {}, auto_ok=True)
        kinds = {type(s).__name__: s for s in host.sources}
        assert sorted(kinds) == ["KmsgSource", "PstoreSource", "TracefsSource"]
        kmsg = kinds["KmsgSource"]
        assert isinstance(kmsg, KmsgSource) and isinstance(kinds["TracefsSource"], TracefsSource)
        assert kmsg.forms == ALL_FORMS - MCE_FORMS - {FORM_EDAC}
        assert (
            host.choice["edac"] == "auto: ras:mc_event or the kernel log carries the memory errors"
        )
        assert host.choice["mcelog"] == "auto: no /dev/mcelog here"


def test_auto_off_the_linux_platform_builds_nothing_but_a_followed_database(
    tmp_path: Path,
) -> None:
    """auto starts nothing when not allowed; a named rasdaemon database is always followed."""
    with SourceBench(tmp_path / "db") as bench:
        db = tmp_path / "ras-mc_event.db"
        host = build_sources(bench.ingest, props(xprt__rasdaemon=str(db)), {}, auto_ok=False)
        assert [s.name for s in host.sources] == [source_name(db)]


def test_pstore_source_reads_the_other_kernel_lines_of_a_panic_log(tmp_path: Path) -> None:
    """The pstore source is given the kernel-log parser for what is not a machine check."""
    with SourceBench(tmp_path / "db") as bench:
        host = build_sources(bench.ingest, props(xprt__pstore="on"), {}, auto_ok=False)
        [pstore] = host.sources
        assert isinstance(pstore, PstoreSource) and pstore.line_parser is not None
        text = "[  5.0] CPU3: Package temperature above threshold, cpu clock throttled\n"
        [obj] = pstore.line_parser(text)
        assert obj["class"] == "ereport.cpu.generic-x86.thermal"


def test_kmsg_forms_and_dom0_detection(tmp_path: Path) -> None:
    """Forms carried elsewhere are left out; a control domain is told by its capabilities."""
    assert kmsg_forms(frozenset()) == ALL_FORMS
    caps = tmp_path / "capabilities"
    caps.write_text("control_d\n")
    assert (is_xen_dom0(caps), is_xen_dom0(tmp_path / "none")) == (True, False)
