"""Tests for the tracefs source: the ftrace line parser and the private-instance reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.hw.topo import SimPlatform
from fmd.hw.tracefs import (
    RAS_TRACEPOINTS,
    TraceFailure,
    TraceLost,
    TraceRecord,
    parse_trace_line,
)
from fmd.xprts import tracefs as tracefs_source
from fmd.xprts.source import STATE_RUN
from fmd.xprts.tracefs import (
    LOST_REASON,
    REASON_NEEDS_ROOT,
    REASON_NO_EVENTS,
    REASON_NO_TRACEFS,
    TracefsSource,
    offered_tracepoints,
)
from tests.source_harness import SourceBench

# What a Debian 6.1 guest printed under QEMU for `mce 1 1 0x9000000000000151 0 0 0`
# (real-kernel-harness.md section 4).
REAL_MCE = (
    "<...>-35 [001] ..... 6.773923: mce_record: CPU: 1, MCGc/s: 100010a/0, "
    "MC1: 9000000000000151, IPID: 0000000000000000, "
    "ADDR/MISC/SYND: 0000000000000000/0000000000000000/0000000000000000, "
    "RIP: 00:<0000000000000000>, TSC: 0, PROCESSOR: 2:60fb1, TIME: 1795987519, "
    "SOCKET: 0, APIC: 1"
)
# Kernels 6.10/6.11: PPIN and MICROCODE added.
MCE_610 = (
    "  kworker/3:1-77      [003] d..1.   912.000250: mce_record: CPU: 3, MCGc/s: f000c14/5, "
    "MC8: bd80000000100134, IPID: 0000000000000000, "
    "ADDR/MISC/SYND: 00000003ab1c7400/0000000000000086/0000000000000000, "
    "RIP: 33:<00007f3c2a1b2c40>, TSC: 2f1ad9c4e1, PPIN: 5c1a2b3c4d5e6f70, "
    "PROCESSOR: 0:606a6, TIME: 1682293811, SOCKET: 1, APIC: 2c, MICROCODE: d000389"
)
# Kernels 6.12 on: registers apart, lower-case vendor/time/socket, microcode last.
MCE_612 = (
    "<idle>-0 [007] d.h2. 51.500000: mce_record: CPU: 7, MCGc/s: 100011c/0, "
    "MC17: dc2040000000011b, IPID: 0000009600050f00, ADDR: 000000000f075b20, "
    "MISC: d01a000101000000, SYND: 000000004d000000, RIP: 00:<0000000000000000>, "
    "TSC: 7b2c5e88a0, PPIN: 0, vendor: 2, CPUID: a20f10, time: 1682293811, socket: 0, "
    "APIC: e, microcode: a201009"
)
# Before 4.x: no IPID, ADDR/MISC only.
MCE_OLD = (
    "          <idle>-0     [000] d.h.  1000.000001: mce_record: CPU: 0, MCGc/s: 1000c16/0, "
    "MC2: 8c000000000000b0, ADDR/MISC: 0000000001e9f000/0000000000000000, "
    "RIP: 00:<0000000000000000>, TSC: 0, PROCESSOR: 0:206d7, TIME: 946951762, "
    "SOCKET: 0, APIC: 0"
)
MC_EVENT = (
    "     kworker/u8:2-123   [002] ..... 1234.567890: mc_event: 1 Corrected error: "
    "memory read error on CPU 0 DIMM 1 (mc:0 location:0:1:-1 address:0x3e9f2240 grain:32 "
    "syndrome:0x00000000 area:DRAM err_code:0001:0090 socket:0 ha:0 channel_mask:1 rank:0)"
)
MC_EVENT_UE = (
    "  Web Content-4411 [001] d.h1. 77.000000: mc_event: 2 Uncorrected errors: on "
    "mc#0csrow#1channel#0 or mc#0csrow#1channel#1 (mc:0 location:1:-1:-1 "
    "address:0x00000000 grain:8 syndrome:0x00000000)"
)
MEMORY_FAILURE = (
    " kworker/0:2-88 [000] ..... 99.000001: memory_failure_event: pfn 0x3e9f2: "
    "recovery action for dirty LRU page: Recovered"
)
AER_OLD = (
    "irq/26-aerdrv-120 [000] ..... 5.500000: aer_event: 0000:00:1c.0 PCIe Bus Error: "
    "severity=Corrected, Receiver Error|Bad TLP"
)
AER_NEW = (
    "irq/26-aerdrv-120 [000] ..... 5.500000: aer_event: 0000:3a:00.0 PCIe Bus Error: "
    "severity=Uncorrected, non-fatal, Poisoned TLP|Completion Timeout, "
    "TLP Header={0x4a000001,0x1000c,0x0,0x0}"
)
EXTLOG = (
    "<idle>-0 [000] d.h. 10.000000: extlog_mem_event: {3} corrected error: single-bit ECC "
    "physical addr: 000000003e9f2240 (mask lsb: 6) node:0 card:0 module:1 rank:0 "
    "FRU: 00000000-0000-0000-0000-000000000000 CPU 0 DIMM 1"
)
ARM_OLD = (
    "<idle>-0 [004] d.h. 8.000000: arm_event: affinity level: 2; MPIDR: 0000000080000100; "
    "MIDR: 00000000410fd0c0; running state: 1; PSCI state: 0"
)
ARM_NEW = (
    "<idle>-0 [001] d.h. 8.000000: arm_event: cpu: 1; error: 2; affinity level: 255; "
    "MPIDR: 0000000080000001; MIDR: 00000000410fd0c0; running state: 1; PSCI state: 0; "
    "ARM Processor Err Info data len: 4; ARM Processor Err Info raw data: 00 20 01 00; "
    "ARM Processor Err Context Info data len: 0; ARM Processor Err Context Info raw data: ; "
    "Vendor Specific Err Info data len: 0; Vendor Specific Err Info raw data: "
)
NON_STANDARD = (
    "<idle>-0 [000] d.h. 9.000000: non_standard_event: severity: 1; "
    "sec type:e8ed898d-df16-43cc-8ecc-54f060ef157f; "
    "FRU: 00000000-0000-0000-0000-000000000000 board; data len:4; raw data:01 02 03 04"
)

BOOT_NS = 1_700_000_000 * 10**9
PLATFORM = SimPlatform(hostname="h")


def record(line: str) -> TraceRecord:
    parsed = parse_trace_line(line, platform=PLATFORM, boot_ns=BOOT_NS)
    assert isinstance(parsed, TraceRecord), parsed
    return parsed


# -- the parser ----------------------------------------------------------------------


def test_real_mce_record_line() -> None:
    """The line a real 6.1 kernel traced becomes the raw record it describes."""
    parsed = record(REAL_MCE)
    assert (parsed.cpu, parsed.ts_ns, parsed.event) == (1, 6_773_923_000, "mce_record")
    # PROCESSOR 2:60fb1 is AMD family 0Fh (base family F, extended family 0)
    # model 6Bh: QEMU's qemu64 model.  Zero ADDR/MISC/SYND/IPID that STATUS
    # does not mark valid are left out, as the kernel log leaves them out.
    assert parsed.obj == {
        "mca": {
            "cpu": 1,
            "bank": 1,
            "status": "0x9000000000000151",
            "mcgcap": "0x100010a",
            "mcgstatus": "0x0",
            "tsc": "0x0",
            "vendor": "AuthenticAMD",
            "family": 0xF,
            "model": 0x6B,
            "socket": 0,
            "apicid": 1,
            "time": 1795987519,
        }
    }


def test_mce_record_with_ppin_and_microcode() -> None:
    """The 6.10 field list (PPIN, MICROCODE) is read by name; APIC is hex."""
    mca = record(MCE_610).obj["mca"]
    assert mca["bank"] == 8
    assert mca["status"] == "0xbd80000000100134"
    assert (mca["addr"], mca["misc"]) == ("0x3ab1c7400", "0x86")
    assert (mca["cs"], mca["ip"]) == (0x33, "0x7f3c2a1b2c40")
    assert mca["ppin"] == "0x5c1a2b3c4d5e6f70"
    assert (mca["vendor"], mca["family"], mca["model"]) == ("GenuineIntel", 6, 0x6A)
    assert (mca["apicid"], mca["socket"], mca["mcgstatus"]) == (0x2C, 1, "0x5")


def test_mce_record_newest_field_names() -> None:
    """Separate ADDR/MISC/SYND and lower-case vendor/CPUID/time/socket (6.12 on)."""
    mca = record(MCE_612).obj["mca"]
    assert (mca["cpu"], mca["bank"], mca["status"]) == (7, 17, "0xdc2040000000011b")
    assert mca["ipid"] == "0x9600050f00"
    assert (mca["addr"], mca["misc"], mca["synd"]) == (
        "0xf075b20",
        "0xd01a000101000000",
        "0x4d000000",
    )
    assert (mca["vendor"], mca["family"], mca["model"]) == ("AuthenticAMD", 0x19, 0x21)
    assert mca["time"] == 1682293811
    assert "ppin" not in mca and "ip" not in mca


def test_mce_record_oldest_field_list() -> None:
    """Kernels before IPID: ADDR/MISC together; registers STATUS marks valid are kept."""
    mca = record(MCE_OLD).obj["mca"]
    # 0x8c...: VAL, MISCV and ADDRV, so a zero MISC is a value, not an absence.
    assert (mca["bank"], mca["addr"], mca["misc"]) == (2, "0x1e9f000", "0x0")
    assert "ipid" not in mca and "synd" not in mca


def test_header_columns_vary() -> None:
    """Task names with spaces and dashes, no flags column, a tgid column: same header."""
    body = "pfn 0x10: recovery action for free buddy page: Ignored"
    for prefix in (
        "Web Content-1-2-4411 [003] ..... 12.000100:",
        "Web Content-4411 [003] 12.000100:",
        "   my [task]-77 (   70) [003] d.h1. 12.000100:",
    ):
        parsed = record(f"{prefix} memory_failure_event: {body}")
        assert (parsed.cpu, parsed.ts_ns) == (3, 12_000_100_000)


def test_mc_event_line() -> None:
    """An EDAC event becomes a memory ereport on the labelled DIMM, with its time."""
    obj = record(MC_EVENT).obj
    assert obj["class"] == "ereport.cpu.generic-x86.mem_ce"
    assert obj["edac_label"] == "CPU 0 DIMM 1"
    assert obj["resource"].endswith("/chip=0/memory-controller=0/dram-channel=0/dimm=1")
    assert (obj["edac_mc"], obj["edac_location"]) == (0, [0, 1, -1])
    assert (obj["physaddr"], obj["grain"], obj["syndrome"]) == (0x3E9F2240, 32, 0)
    assert obj["message"] == "memory read error"
    assert obj["driver_detail"].startswith("area:DRAM err_code:0001:0090")
    assert obj["time"] == "2023-11-14T22:33:54.567890Z"
    assert obj["source"] == "tracefs"


def test_mc_event_uncorrected_without_message_or_address() -> None:
    """An empty message, a label EDAC cannot narrow and address 0 are kept as such."""
    obj = record(MC_EVENT_UE).obj
    assert obj["class"] == "ereport.cpu.generic-x86.mem_ue"
    assert obj["error_count"] == 2
    assert obj["edac_label"] == "mc#0csrow#1channel#0 or mc#0csrow#1channel#1"
    assert "message" not in obj and "physaddr" not in obj and "resource" not in obj


def test_memory_failure_line() -> None:
    """The kernel's memory-failure action becomes the memory_failure ereport."""
    obj = record(MEMORY_FAILURE).obj
    assert obj["class"] == "ereport.os.linux.memory_failure"
    assert (obj["pfn"], obj["physaddr"]) == (0x3E9F2, 0x3E9F2000)
    assert (obj["page_type"], obj["action_result"]) == ("dirty LRU page", "Recovered")


def test_aer_event_lines() -> None:
    """AER lines of old and new kernels (the severity holds a comma; TLP header kept)."""
    old = record(AER_OLD).obj
    assert (old["class"], old["device"]) == ("ereport.io.pcie.aer.ce", "0000:00:1c.0")
    assert old["message"] == "Receiver Error|Bad TLP"
    new = record(AER_NEW).obj
    assert new["class"] == "ereport.io.pcie.aer.nonfatal"
    assert new["severity"] == "Uncorrected, non-fatal"
    assert new["message"] == "Poisoned TLP|Completion Timeout"
    assert new["tlp_header"] == "{0x4a000001,0x1000c,0x0,0x0}"


def test_extlog_event_line() -> None:
    """An eMCA memory event: CPER severity, address and grain, FRU text as the label."""
    obj = record(EXTLOG).obj
    assert obj["class"] == "ereport.cpu.generic-x86.mem_ce"
    assert (obj["physaddr"], obj["grain"]) == (0x3E9F2240, 64)
    assert (obj["edac_label"], obj["cper_severity"]) == ("CPU 0 DIMM 1", "corrected")
    assert obj["resource"].endswith("/dram-channel=0/dimm=1")
    assert obj["driver_detail"] == "node:0 card:0 module:1 rank:0"


def test_arm_event_lines() -> None:
    """ARM processor sections of old and new kernels become ereport.cpu.arm.error."""
    old = record(ARM_OLD).obj
    assert (old["class"], old["mpidr"], old["affinity_level"]) == (
        "ereport.cpu.arm.error",
        "0x80000100",
        2,
    )
    assert "cpuid" not in old
    new = record(ARM_NEW).obj
    assert (new["cpuid"], new["severity"], new["error_info"]) == (1, "corrected", "00200100")
    assert new["detector"].endswith("/strand=1")


def test_non_standard_event_line() -> None:
    """A vendor CPER section is stored as a firmware section with its raw bytes."""
    obj = record(NON_STANDARD).obj
    assert obj["class"] == "ereport.fw.cper.non_standard"
    assert (obj["severity"], obj["fru_text"], obj["raw_data"]) == ("fatal", "board", "01020304")


def test_unreadable_lines_are_reasoned_failures() -> None:
    """Garbage, bad fields and foreign events fail with a reason; the lost marker is its own."""
    assert parse_trace_line("CPU:2 [LOST 17 EVENTS]") == TraceLost(2, 17)
    assert parse_trace_line("CPU:0 [LOST EVENTS]") == TraceLost(0, None)
    junk = parse_trace_line("checking TSC synchronization: passed.")
    assert isinstance(junk, TraceFailure) and junk.cpu is None
    bad = parse_trace_line(REAL_MCE.replace("MC1: 9000000000000151", "MC1: zz"))
    assert isinstance(bad, TraceFailure)
    assert (bad.cpu, bad.ts_ns, bad.event) == (1, 6_773_923_000, "mce_record")
    assert "MC1" in bad.reason
    foreign = parse_trace_line("sh-1 [000] ..... 1.000000: sched_switch: prev_comm=sh")
    assert isinstance(foreign, TraceFailure) and "sched_switch" in foreign.reason


_REAL_LINES = (REAL_MCE, MCE_610, MCE_612, MCE_OLD, MC_EVENT, MC_EVENT_UE, MEMORY_FAILURE)
_MORE_LINES = (AER_OLD, AER_NEW, EXTLOG, ARM_OLD, ARM_NEW, NON_STANDARD)


@given(st.text(max_size=300))
def test_parser_never_raises_on_any_text(text: str) -> None:
    """Any text is a record, a lost marker or a failure: never an exception."""
    parsed = parse_trace_line(text, platform=PLATFORM, boot_ns=BOOT_NS)
    assert isinstance(parsed, TraceRecord | TraceFailure | TraceLost)


@given(
    st.sampled_from(_REAL_LINES + _MORE_LINES),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=40),
    st.text(max_size=30),
)
def test_parser_never_raises_on_damaged_lines(line: str, at: int, cut: int, insert: str) -> None:
    """Real lines with a stretch replaced by arbitrary text still never raise."""
    damaged = line[:at] + insert + line[at + cut :]
    parsed = parse_trace_line(damaged, platform=PLATFORM, boot_ns=BOOT_NS)
    assert isinstance(parsed, TraceRecord | TraceFailure | TraceLost)


# -- a fake tracefs ------------------------------------------------------------------

_TRACE_HEADER = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 0/0   #P:1
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


class FakeTracefs:
    """A tracefs tree as the kernel shows it; ``mkdir`` of an instance fills it in."""

    def __init__(
        self, base: Path, *, cpus: int = 2, events: tuple[tuple[str, str], ...] = RAS_TRACEPOINTS
    ) -> None:
        self.root = base / "tracing"
        (self.root / "instances").mkdir(parents=True)
        self.cpus = cpus
        self.events = events
        for system, event in events:
            (self.root / "events" / system / event).mkdir(parents=True)
        self.boot_id = base / "boot_id"
        self.boot_id.write_text("6e1f9e3a-0d2c-4a5b-9a0e-6f7c8d9e0a1b\n")
        self.stats: dict[int, dict[str, int]] = {}

    @property
    def instance(self) -> Path:
        return self.root / "instances" / "fmd"

    def mkdir(self, path: Path) -> None:
        """What the kernel does on mkdir in instances/: a whole instance appears."""
        path.mkdir()
        (path / "buffer_size_kb").write_text("7 (expanded: 1408)\n")
        (path / "tracing_on").write_text("1\n")
        (path / "trace_clock").write_text("[local] global counter uptime perf mono boot\n")
        (path / "options").mkdir()
        (path / "options" / "pause-on-trace").write_text("1\n")
        for system, event in self.events:
            directory = path / "events" / system / event
            directory.mkdir(parents=True)
            (directory / "enable").write_text("0\n")
        for cpu in range(self.cpus):
            (path / "per_cpu" / f"cpu{cpu}").mkdir(parents=True)
            (path / "per_cpu" / f"cpu{cpu}" / "trace").write_text(_TRACE_HEADER)
            self.stats[cpu] = {"entries": 0, "overrun": 0}
            self._write_stats(cpu)

    def _write_stats(self, cpu: int) -> None:
        s = self.stats[cpu]
        text = (
            f"entries: {s['entries']}\noverrun: {s['overrun']}\ncommit overrun: 0\n"
            "bytes: 0\noldest event ts:     0.000000\nnow ts:  99.000000\n"
            "dropped events: 0\nread events: 0\n"
        )
        (self.instance / "per_cpu" / f"cpu{cpu}" / "stats").write_text(text)

    def emit(self, cpu: int, ts: str, event: str, body: str) -> None:
        """The kernel records one event in the CPU's buffer."""
        line = f"          <idle>-0       [{cpu:03d}] d.h1. {ts:>12}: {event}: {body}\n"
        with (self.instance / "per_cpu" / f"cpu{cpu}" / "trace").open("a") as fh:
            fh.write(line)
        self.stats[cpu]["entries"] += 1
        self._write_stats(cpu)

    def overwrite(self, cpu: int, count: int) -> None:
        """The full ring buffer drops its ``count`` oldest events for newer ones."""
        trace = self.instance / "per_cpu" / f"cpu{cpu}" / "trace"
        lines = trace.read_text().splitlines(keepends=True)
        header = [ln for ln in lines if ln.startswith("#")]
        body = [ln for ln in lines if not ln.startswith("#")]
        trace.write_text("".join(header + body[count:]))
        self.stats[cpu]["entries"] -= count
        self.stats[cpu]["overrun"] += count
        self._write_stats(cpu)

    def enabled(self) -> dict[str, str]:
        return {
            f"{s}:{e}": (self.instance / "events" / s / e / "enable").read_text().strip()
            for s, e in self.events
        }


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTracefs:
    tree = FakeTracefs(tmp_path)
    monkeypatch.setattr(tracefs_source, "_create_instance", tree.mkdir)
    return tree


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[SourceBench]:
    with SourceBench(tmp_path / "db") as b:
        yield b


def source(bench: SourceBench, fake: FakeTracefs, **kw: object) -> TracefsSource:
    return TracefsSource(
        bench.ingest,
        bench.position("tracefs"),
        root=fake.root,
        boot_id_path=fake.boot_id,
        boot_ns=BOOT_NS,
        **kw,  # type: ignore[arg-type]
    )


def mce(cpu: int, status: str, time: int = 1795987519) -> str:
    return (
        f"CPU: {cpu}, MCGc/s: 100010a/0, MC1: {status}, IPID: 0000000000000000, "
        "ADDR/MISC/SYND: 0000000000000000/0000000000000000/0000000000000000, "
        f"RIP: 00:<0000000000000000>, TSC: 0, PROCESSOR: 2:60fb1, TIME: {time}, "
        f"SOCKET: 0, APIC: {cpu:x}"
    )


def mf(pfn: int) -> str:
    return f"pfn {pfn:#x}: recovery action for free buddy page: Recovered"


def pfns(bench: SourceBench) -> list[int]:
    return [ev.payload["pfn"] for ev in bench.ereports() if "pfn" in ev.payload]


# -- the source ------------------------------------------------------------------------


def test_probe_sets_up_a_private_instance(bench: SourceBench, fake: FakeTracefs) -> None:
    """Probing creates instances/fmd, enables every event, sizes the buffer, never pauses."""
    src = source(bench, fake, buffer_kb=512)
    assert src.probe() is None
    assert fake.enabled() == {f"{s}:{e}": "1" for s, e in RAS_TRACEPOINTS}
    assert src.enabled == [f"{s}:{e}" for s, e in RAS_TRACEPOINTS]
    assert (fake.instance / "buffer_size_kb").read_text() == "512\n"
    assert (fake.instance / "options" / "pause-on-trace").read_text() == "0\n"
    assert sorted(p.name for p in (fake.root / "instances").iterdir()) == ["fmd"]
    assert src.describe()["events"] == src.enabled


def test_offered_tracepoints_change_nothing(tmp_path: Path) -> None:
    """What the kernel offers is found without creating or enabling anything."""
    tree = FakeTracefs(tmp_path, events=(("mce", "mce_record"), ("ras", "aer_event")))
    assert offered_tracepoints((tmp_path / "absent", tree.root)) == [
        "mce:mce_record",
        "ras:aer_event",
    ]
    assert list((tree.root / "instances").iterdir()) == []
    assert offered_tracepoints((tmp_path / "absent",)) == []


def test_close_disables_events_and_keeps_the_instance(
    bench: SourceBench, fake: FakeTracefs
) -> None:
    """Stopping turns fmd's events off in its instance; the instance (and buffer) stay."""
    src = source(bench, fake)
    assert src.probe() is None
    src.close()
    assert set(fake.enabled().values()) == {"0"}
    assert fake.instance.is_dir()


def test_probe_skips_missing_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench: SourceBench
) -> None:
    """A kernel without some tracepoints gets the others; which are on is reported."""
    tree = FakeTracefs(tmp_path, events=(("mce", "mce_record"), ("ras", "mc_event")))
    monkeypatch.setattr(tracefs_source, "_create_instance", tree.mkdir)
    src = source(bench, tree)
    assert src.probe() is None
    assert src.enabled == ["mce:mce_record", "ras:mc_event"]


def test_probe_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench: SourceBench) -> None:
    """No tracefs, no permission to create the instance, no RAS tracepoints: each said."""
    tree = FakeTracefs(tmp_path)
    bare = TracefsSource(bench.ingest, None, root=tmp_path / "empty", boot_id_path=tree.boot_id)
    assert bare.probe() == REASON_NO_TRACEFS

    def denied(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(tracefs_source, "_create_instance", denied)
    assert source(bench, tree).probe() == REASON_NEEDS_ROOT

    none = FakeTracefs(tmp_path / "none", events=())
    monkeypatch.setattr(tracefs_source, "_create_instance", none.mkdir)
    assert source(bench, none).probe() == REASON_NO_EVENTS


def test_events_stored_once_and_new_ones_picked_up(bench: SourceBench, fake: FakeTracefs) -> None:
    """Each event is stored once however often the buffers are read; new ones follow."""
    src = source(bench, fake)
    fake.mkdir(fake.instance)
    fake.emit(0, "6.773923", "mce_record", mce(0, "9000000000000151"))
    fake.emit(1, "7.000000", "memory_failure_event", mf(0x100))
    fake.emit(0, "8.000000", "mc_event", MC_EVENT.split("mc_event: ", 1)[1])
    bench.poll_once(src)
    bench.poll_once(src)
    # Per CPU in buffer order: the machine check and the EDAC event of CPU 0, then CPU 1.
    mce_ev, edac_ev, mf_ev = bench.ereports()
    assert (mce_ev.payload["cpuid"], mce_ev.payload["bank_number"]) == (0, 1)
    assert (edac_ev.cls, mf_ev.cls) == (
        "ereport.cpu.generic-x86.mem_ce",
        "ereport.os.linux.memory_failure",
    )
    assert (edac_ev.time_ns, mf_ev.time_ns) == (BOOT_NS + 8 * 10**9, BOOT_NS + 7 * 10**9)
    fake.emit(1, "9.000000", "memory_failure_event", mf(0x101))
    bench.poll_once(src)
    assert pfns(bench) == [0x100, 0x101]
    assert len(bench.ereports()) == 4
    position = bench.position("tracefs")
    assert position is not None
    assert position.ident == fake.boot_id.read_text().strip()
    assert orjson.loads(position.data or "null") == {
        "0": [8_000_000_000, 1, 2],
        "1": [9_000_000_000, 1, 2],
    }


def test_mce_record_decoded_by_the_platform(bench: SourceBench, fake: FakeTracefs) -> None:
    """The real trace line reaches the store as a decoded machine-check ereport."""
    src = source(bench, fake)
    fake.mkdir(fake.instance)
    fake.emit(1, "6.773923", "mce_record", REAL_MCE.split("mce_record: ", 1)[1])
    bench.poll_once(src)
    [ev] = bench.ereports()
    assert ev.cls.startswith("ereport.cpu.")
    assert ev.payload["cpuid"] == 1
    assert ev.time_ns == 1795987519 * 10**9


def test_same_microsecond_events_across_a_restart(tmp_path: Path, fake: FakeTracefs) -> None:
    """Events sharing the mark's timestamp: the ones taken are skipped, later ones read."""
    fake.mkdir(fake.instance)
    for pfn in (1, 2):
        fake.emit(0, "5.000001", "memory_failure_event", mf(pfn))
    with SourceBench(tmp_path / "db") as first:
        first.poll_once(source(first, fake))
        assert pfns(first) == [1, 2]
    fake.emit(0, "5.000001", "memory_failure_event", mf(3))
    fake.emit(0, "5.000002", "memory_failure_event", mf(4))
    with SourceBench(tmp_path / "db") as second:
        second.poll_once(source(second, fake))
        assert pfns(second) == [1, 2, 3, 4]


def test_kill_between_batches_then_restart(
    tmp_path: Path, fake: FakeTracefs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after one committed batch: the restart reads the rest once, skips nothing."""
    monkeypatch.setattr(tracefs_source, "BATCH_MAX", 2)
    fake.mkdir(fake.instance)
    for i in range(5):
        fake.emit(0, f"10.00000{i}", "memory_failure_event", mf(0x10 + i))
    fake.emit(1, "10.500000", "memory_failure_event", mf(0x20))
    with SourceBench(tmp_path / "db") as first:
        src = source(first, fake)
        assert src.probe() is None
        batches = src.read()
        assert src._store(next(batches))
        # SIGKILL here: the second batch was read but never committed.
        next(batches)
        assert pfns(first) == [0x10, 0x11]
    # The kernel goes on recording while fmd is down.
    fake.emit(0, "11.000000", "memory_failure_event", mf(0x15))
    with SourceBench(tmp_path / "db") as second:
        second.poll_once(source(second, fake))
        assert pfns(second) == [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20]
        second.poll_once(source(second, fake))
        assert len(pfns(second)) == 7


def test_boot_id_change_forgets_the_marks(bench: SourceBench, fake: FakeTracefs) -> None:
    """After a reboot the buffers restart at low timestamps: they are read from the start."""
    src = source(bench, fake)
    fake.mkdir(fake.instance)
    fake.emit(0, "500.000000", "memory_failure_event", mf(1))
    bench.poll_once(src)
    # Reboot: a new boot id, a fresh instance whose clock starts again.
    fake.boot_id.write_text("0b7d1c2e-3f4a-4b5c-8d6e-7f8091a2b3c4\n")
    (fake.instance / "per_cpu" / "cpu0" / "trace").write_text(_TRACE_HEADER)
    fake.stats[0] = {"entries": 0, "overrun": 0}
    fake.emit(0, "2.000000", "memory_failure_event", mf(2))
    bench.poll_once(src)
    assert pfns(bench) == [1, 2]
    position = bench.position("tracefs")
    assert position is not None and position.ident.startswith("0b7d1c2e")


def test_overrun_counts_unread_events_as_lost(tmp_path: Path, fake: FakeTracefs) -> None:
    """Events the ring buffer overwrote before fmd read them are counted, once."""
    fake.mkdir(fake.instance)
    for i in range(3):
        fake.emit(0, f"1.00000{i}", "memory_failure_event", mf(i))
    with SourceBench(tmp_path / "db") as first:
        src = source(first, fake)
        first.poll_once(src)
        # Five more arrive; the buffer holds four, so 3 seen and 1 unseen go.
        for i in range(3, 8):
            fake.emit(0, f"2.00000{i}", "memory_failure_event", mf(i))
        fake.overwrite(0, 4)
        first.poll_once(src)
        assert pfns(first) == [0, 1, 2, 4, 5, 6, 7]
        assert (src.lost, src.stats.reasons[LOST_REASON]) == (1, 1)
        first.poll_once(src)
        assert src.lost == 1
    with SourceBench(tmp_path / "db") as second:
        again = source(second, fake)
        second.poll_once(again)
        assert again.lost == 0
        assert len(pfns(second)) == 7


def test_unchanged_buffers_are_not_reparsed(
    bench: SourceBench, fake: FakeTracefs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU whose stats counters did not move is not read again."""
    src = source(bench, fake)
    fake.mkdir(fake.instance)
    fake.emit(0, "1.000000", "memory_failure_event", mf(1))
    bench.poll_once(src)
    headers: list[str] = []
    real = tracefs_source.parse_header

    def counting(line: str) -> object:
        headers.append(line)
        return real(line)

    monkeypatch.setattr(tracefs_source, "parse_header", counting)
    bench.poll_once(src)
    assert headers == []
    fake.emit(1, "2.000000", "memory_failure_event", mf(2))
    bench.poll_once(src)
    assert len(headers) == 1
    assert pfns(bench) == [1, 2]


def test_garbage_line_counted_once(bench: SourceBench, fake: FakeTracefs) -> None:
    """A line that is no event is rejected when first read, not on every later read."""
    src = source(bench, fake)
    fake.mkdir(fake.instance)
    fake.emit(0, "1.000000", "memory_failure_event", mf(1))
    trace = fake.instance / "per_cpu" / "cpu0" / "trace"
    trace.write_text(trace.read_text() + "garbage that is no event\n")
    bench.poll_once(src)
    assert src.stats.rejected == 1
    fake.emit(0, "2.000000", "memory_failure_event", mf(2))
    bench.poll_once(src)
    assert src.stats.rejected == 1
    assert pfns(bench) == [1, 2]


def test_bad_event_moves_the_mark_and_is_counted(bench: SourceBench, fake: FakeTracefs) -> None:
    """An event whose fields cannot be read is rejected with its reason, once."""
    src = source(bench, fake)
    fake.mkdir(fake.instance)
    fake.emit(0, "1.000000", "mce_record", "CPU: 0, MC1: not-hex")
    fake.emit(0, "2.000000", "memory_failure_event", mf(9))
    bench.poll_once(src)
    fake.emit(0, "3.000000", "memory_failure_event", mf(10))
    bench.poll_once(src)
    assert pfns(bench) == [9, 10]
    assert src.stats.rejected == 1


def test_runs_on_its_thread(bench: SourceBench, fake: FakeTracefs) -> None:
    """Started as the daemon starts it, the source runs, stores, and disables on stop."""
    src = source(bench, fake, poll=0.01)
    fake.mkdir(fake.instance)
    fake.emit(1, "3.000000", "aer_event", AER_OLD.split("aer_event: ", 1)[1])
    bench.run_until(src, lambda: len(bench.ereports()) == 1)
    assert src.stats.state == STATE_RUN
    assert bench.ereports()[0].cls == "ereport.io.pcie.aer.ce"
    assert set(fake.enabled().values()) == {"0"}
