"""Read the kernel's RAS tracepoints as ftrace prints them into wire objects.

One line of a tracefs ``trace`` (or ``trace_pipe``) file looks like::

    <task>-<pid> [<cpu>] <flags> <secs>.<usecs>: <event>: <fields>
    <...>-35 [001] ..... 6.773923: mce_record: CPU: 1, MCGc/s: 100010a/0, MC1: ...

The task name may hold spaces and dashes and the flags column comes and goes
with the tracer options (``irq-info``, ``record-tgid``), so the header is read
from the ``[cpu]`` column rightwards: the first ``[n]`` that is followed by a
timestamp and an event name.  The timestamp is kept in nanoseconds
(microseconds as printed, times 1000) as the reader's high-water mark.

The fields after the event name are each tracepoint's ``TP_printk`` text.
Their list and order differ between kernel versions (``mce_record`` gained
``IPID``/``SYND``, then ``PPIN`` and ``MICROCODE``, then split ``ADDR``,
``MISC`` and ``SYND`` and renamed ``PROCESSOR``/``TIME``/``SOCKET`` to
``vendor``/``CPUID``/``time``/``socket``; ``arm_event`` gained ``cpu`` and
``error``; ``aer_event`` gained ``TLP Header``), so fields are found by name
and unknown ones are ignored.  Each event becomes one wire object:

==========================  =================================================
``mce:mce_record``          a raw machine-check record (``{"mca": {...}}``)
                            for :mod:`fmd.hw.telemetry`
``ras:mc_event``            :func:`fmd.hw.events.edac_memory`
``ras:memory_failure_event``  :func:`fmd.hw.events.memory_failure`
``ras:aer_event``           :func:`fmd.hw.events.aer`
``ras:extlog_mem_event``    a memory ereport (:func:`~fmd.hw.events.edac_memory`
                            with the CPER severity, address and FRU text)
``ras:arm_event``           :func:`fmd.hw.events.arm_processor`
``ras:non_standard_event``  :func:`fmd.hw.events.firmware_section`
==========================  =================================================

Times: ``mce_record`` carries the wall time the kernel logged (``TIME``, epoch
seconds); every other event takes ``boot_ns`` (the wall time the trace clock
counts from) plus its timestamp, or no time at all (the receipt time) when the
caller cannot tell.

:func:`parse_trace_line` never raises: a line it cannot read is a
:class:`TraceFailure` with the reason (and the CPU and timestamp when the
header was readable, so that a reader can still move past it); the
``CPU:n [LOST m EVENTS]`` marker of the ring buffer is a :class:`TraceLost`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fmd.hw import events
from fmd.hw.cpuid import family_model, vendor_name
from fmd.hw.mca import ST_ADDRV, ST_MISCV
from fmd.hw.topo import Platform
from fmd.protocol import utc_iso
from fmd.protocol.limits import MAX_PHYSADDR

# What the wire objects name as their source.
SOURCE: Final = "tracefs"

# The tracepoints fmd reads: (system, event).
MCE_RECORD: Final = "mce_record"
MC_EVENT: Final = "mc_event"
MEMORY_FAILURE_EVENT: Final = "memory_failure_event"
AER_EVENT: Final = "aer_event"
EXTLOG_MEM_EVENT: Final = "extlog_mem_event"
ARM_EVENT: Final = "arm_event"
NON_STANDARD_EVENT: Final = "non_standard_event"
RAS_TRACEPOINTS: Final = (
    ("mce", MCE_RECORD),
    ("ras", MC_EVENT),
    ("ras", MEMORY_FAILURE_EVENT),
    ("ras", AER_EVENT),
    ("ras", EXTLOG_MEM_EVENT),
    ("ras", ARM_EVENT),
    ("ras", NON_STANDARD_EVENT),
)

# Longer lines are refused before any pattern runs over them (the kernel's
# sub-buffer bounds one event to about a page of text).
MAX_LINE: Final = 64 * 1024

_NS_PER_S: Final = 1_000_000_000
_NS_DIGITS: Final = 9
_U64: Final = (1 << 64) - 1
_U64_DIGITS: Final = 16
_SNIPPET: Final = 60
# fmd's times are signed 64-bit nanoseconds (to 2262-04-11).
_MAX_TIME_NS: Final = (1 << 63) - 1


# UEFI CPER severities (cper_severity_str), as arm_event prints them in numbers.
CPER_SEVERITIES: Final = {0: "recoverable", 1: "fatal", 2: "corrected", 3: "info"}
# ... and as the EDAC error type a memory ereport carries.
_CPER_TO_EDAC: Final = {
    "corrected": "Corrected",
    "info": "Info",
    "recoverable": "Uncorrected",
    "fatal": "Fatal",
}
# extlog_mem_event prints an address or mask it does not have as all ones.
_NO_ADDRESS: Final = _U64
_NO_MASK_LSB: Final = 0xFF
# PCIe AER severities as aer_event prints them (one holds a comma).
AER_SEVERITIES: Final = ("Uncorrected, non-fatal", "Corrected", "Fatal")
_AER_NO_TLP: Final = "Not available"


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """The ftrace columns of one event line, and the event's own text."""

    cpu: int
    ts_ns: int
    event: str
    body: str


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One RAS event read: where and when it was traced, and its wire object."""

    cpu: int
    ts_ns: int
    event: str
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TraceFailure:
    """A line that is not a readable RAS event; the header's facts when it had one."""

    reason: str
    cpu: int | None = None
    ts_ns: int | None = None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class TraceLost:
    """The ring buffer's ``CPU:n [LOST m EVENTS]`` marker (``count`` None: not said)."""

    cpu: int
    count: int | None


ParsedTrace = TraceRecord | TraceFailure | TraceLost


class _Bad(ValueError):
    """A field that cannot be read; the message is the reason."""


# -- the header -----------------------------------------------------------------

_CPU_COLUMN: Final = re.compile(r"\[(\d{1,6})\]")
_AFTER_CPU: Final = re.compile(
    r"\s+(?:[^\s:]{1,8}\s+)?(\d{1,20})(?:\.(\d{1,9}))?:\s+([A-Za-z_][A-Za-z0-9_]*):(?: |$)"
)
_LOST: Final = re.compile(r"CPU:(\d{1,6}) \[LOST(?: (\d{1,20}))? EVENTS\]")


def _snippet(text: str) -> str:
    return repr(text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "...")


def parse_header(line: str) -> TraceHeader | TraceLost | TraceFailure:
    """The CPU, timestamp, event name and field text of one line (never raises)."""
    text = line.rstrip("\r\n")
    if len(text) > MAX_LINE:
        return TraceFailure(f"line longer than {MAX_LINE} characters")
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return TraceFailure("not an event line (blank or a comment)")
    lost = _LOST.fullmatch(stripped)
    if lost is not None:
        count = lost.group(2)
        return TraceLost(int(lost.group(1)), None if count is None else int(count))
    for column in _CPU_COLUMN.finditer(text):
        start = column.start()
        if start > 0 and not text[start - 1].isspace():
            continue
        after = _AFTER_CPU.match(text, column.end())
        if after is None:
            continue
        secs, frac, event = after.groups()
        ts_ns = int(secs) * _NS_PER_S + (int(frac.ljust(_NS_DIGITS, "0")) if frac else 0)
        return TraceHeader(int(column.group(1)), ts_ns, event, text[after.end() :].strip())
    return TraceFailure(f"not an ftrace event line: {_snippet(stripped)}")


# -- reading fields ---------------------------------------------------------------


_HEX_DIGITS: Final = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
_DEC_DIGITS: Final = re.compile(r"-?[0-9]{1,20}")


def _hex(text: str, what: str) -> int:
    m = _HEX_DIGITS.fullmatch(text.strip())
    if m is None or len(m.group(1).lstrip("0")) > _U64_DIGITS:
        raise _Bad(f"{what}: {_snippet(text)} is not a 64-bit hex number")
    return int(m.group(1), 16)


def _dec(text: str, what: str, *, signed: bool = False) -> int:
    digits = text.strip()
    if _DEC_DIGITS.fullmatch(digits) is None or (digits.startswith("-") and not signed):
        raise _Bad(f"{what}: {_snippet(text)} is not a decimal number")
    return int(digits, 10)


def _number(text: str, what: str) -> int:
    """``%#lx`` style: ``0x``-prefixed hex, or a bare ``0``."""
    digits = text.strip()
    return _hex(digits, what) if digits[:2] in ("0x", "0X") else _dec(digits, what)


def _fields(body: str, key_pattern: re.Pattern[str]) -> dict[str, str]:
    """``key: value`` pairs, keys upper-cased; later duplicates are ignored."""
    found: dict[str, str] = {}
    marks = list(key_pattern.finditer(body))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        found.setdefault(m.group(1).strip().upper(), body[m.end() : end].strip())
    return found


# "CPU: 1, MCGc/s: 100010a/0, MC1: ..." -- keys hold letters, digits, spaces and '/'.
_COMMA_KEYS: Final = re.compile(r"(?:^|, )([A-Za-z][A-Za-z0-9 /]*?): ")
# "cpu: 0; error: 2; affinity level: 255; ..." and "sec type:..." (no space).
_SEMICOLON_KEYS: Final = re.compile(r"(?:^|; )([A-Za-z][A-Za-z0-9 ]*?):")


# -- mce:mce_record ---------------------------------------------------------------

_BANK_KEY: Final = re.compile(r"MC(\d{1,3})")
_RIP: Final = re.compile(r"([0-9a-fA-F]{1,2}):<([0-9a-fA-F]{1,16})>")
# Older kernels print two or three registers under one key.
_JOINED_REGISTERS: Final = ("ADDR/MISC/SYND", "ADDR/MISC")


def _registers(fields: dict[str, str]) -> dict[str, str]:
    """``ADDR/MISC/SYND: a/m/s`` (older kernels) or ``ADDR: a, MISC: m, SYND: s``."""
    out: dict[str, str] = {n: fields[n] for n in ("ADDR", "MISC", "SYND") if n in fields}
    for joined in _JOINED_REGISTERS:
        if joined in fields:
            keys, parts = joined.split("/"), fields[joined].split("/")
            if len(parts) != len(keys):
                raise _Bad(f"{joined}: {_snippet(fields[joined])} does not hold {len(keys)} values")
            out.update(zip(keys, parts, strict=True))
    return out


def _mce_record(body: str, time: str | None) -> dict[str, Any]:
    fields = _fields(body, _COMMA_KEYS)
    mca: dict[str, Any] = {}
    bank_keys = [k for k in fields if _BANK_KEY.fullmatch(k)]
    if not bank_keys:
        raise _Bad("mce_record without an MCn: bank status")
    bank_key = bank_keys[0]
    mca["bank"] = int(bank_key[2:])
    status = _hex(fields[bank_key], bank_key)
    mca["status"] = f"{status:#x}"
    if "CPU" in fields:
        mca["cpu"] = _dec(fields["CPU"], "CPU")
    if "MCGC/S" in fields:
        cap, _, mcg_status = fields["MCGC/S"].partition("/")
        mca["mcgcap"] = f"{_hex(cap, 'MCGcap'):#x}"
        mca["mcgstatus"] = f"{_hex(mcg_status, 'MCGstatus'):#x}"
    regs = _registers(fields)
    # The kernel prints every register; the decoder reads ADDR and MISC only
    # when STATUS says they are valid, so a zero that is not is left out (as
    # the kernel log leaves it out) and a value that is shown is kept.
    for key, member, valid in (("ADDR", "addr", ST_ADDRV), ("MISC", "misc", ST_MISCV)):
        if key in regs:
            value = _hex(regs[key], key)
            if value or status & valid:
                mca[member] = f"{value:#x}"
    synd = _hex(regs["SYND"], "SYND") if "SYND" in regs else 0
    if synd:
        mca["synd"] = f"{synd:#x}"
    for key, member in (("IPID", "ipid"), ("PPIN", "ppin")):
        value = _hex(fields[key], key) if key in fields else 0
        if value:
            mca[member] = f"{value:#x}"
    if "RIP" in fields:
        rip = _RIP.fullmatch(fields["RIP"])
        if rip is None:
            raise _Bad(f"RIP: {_snippet(fields['RIP'])} is not cs:<ip>")
        cs, ip = int(rip.group(1), 16), int(rip.group(2), 16)
        if ip:
            mca["cs"] = cs
            mca["ip"] = f"{ip:#x}"
    if "TSC" in fields:
        mca["tsc"] = f"{_hex(fields['TSC'], 'TSC'):#x}"
    vendor: int | None = None
    cpuid: int | None = None
    if "PROCESSOR" in fields:
        number, sep, eax = fields["PROCESSOR"].partition(":")
        if not sep:
            raise _Bad(f"PROCESSOR: {_snippet(fields['PROCESSOR'])} is not vendor:cpuid")
        vendor, cpuid = _dec(number, "PROCESSOR vendor"), _hex(eax, "PROCESSOR cpuid")
    if "VENDOR" in fields:
        vendor = _dec(fields["VENDOR"], "vendor")
    if "CPUID" in fields:
        cpuid = _hex(fields["CPUID"], "CPUID")
    name = None if vendor is None else vendor_name(vendor)
    if name is not None:
        mca["vendor"] = name
    if cpuid:
        mca["family"], mca["model"] = family_model(cpuid)
    if "SOCKET" in fields:
        mca["socket"] = _dec(fields["SOCKET"], "SOCKET")
    if "APIC" in fields:
        mca["apicid"] = _hex(fields["APIC"], "APIC")
    walltime = _dec(fields["TIME"], "TIME") if "TIME" in fields else 0
    if 0 < walltime <= _MAX_TIME_NS // _NS_PER_S:
        mca["time"] = walltime
    elif time is not None:
        mca["time"] = time
    return {"mca": mca}


# -- ras:mc_event -----------------------------------------------------------------

_MC_HEAD: Final = re.compile(r"(-?\d{1,10}) ([A-Za-z]+) errors?:")
_MC_TAIL: Final = " (mc:"
_MC_NAMES: Final = ("mc", "location", "address", "grain", "syndrome")


def _mc_event(body: str, platform: Platform | None, time: str | None) -> dict[str, Any]:
    head = _MC_HEAD.match(body)
    tail = body.find(_MC_TAIL)
    if head is None or tail < head.end() or not body.endswith(")"):
        raise _Bad(f"mc_event: {_snippet(body)} is not '<n> <type> error: ... (mc:...)'")
    count = _dec(head.group(1), "error count", signed=True)
    err_type = head.group(2)
    # "<msg> on <label>"; the message is empty on many drivers ("error: on ...").
    middle = body[head.end() : tail]
    on = middle.find(" on ")
    if on < 0:
        if not middle.endswith(" on"):
            raise _Bad(f"mc_event: no 'on <label>' in {_snippet(middle)}")
        on = len(middle) - len(" on")
    message = middle[1:on].strip() if on > 0 else ""
    label = middle[on + len(" on ") :].strip()
    # "mc:0 location:0:0:-1 address:0x... grain:32 syndrome:0x... <driver detail>"
    inner = body[tail + len(_MC_TAIL) - len("mc:") : -1]
    named: dict[str, str] = {}
    rest = inner
    while rest:
        token, _, after = rest.partition(" ")
        name, sep, value = token.partition(":")
        if not sep or name not in _MC_NAMES or name in named:
            break
        named[name] = value
        rest = after
        if name == _MC_NAMES[-1]:
            break
    detail = rest.strip()
    if "mc" not in named:
        raise _Bad(f"mc_event: no mc: index in {_snippet(inner)}")
    mc = _dec(named["mc"], "mc")
    layers: list[int] = []
    if "location" in named:
        layers = [_dec(p, "location", signed=True) for p in named["location"].split(":")]
    physaddr = _number(named["address"], "address") if "address" in named else None
    if physaddr is not None and physaddr > MAX_PHYSADDR:
        physaddr = None
    grain = _dec(named["grain"], "grain") if "grain" in named else None
    syndrome = _number(named["syndrome"], "syndrome") if "syndrome" in named else None
    return events.edac_memory(
        platform,
        err_type=err_type,
        time=time,
        mc=mc,
        layers=layers,
        label=label or None,
        physaddr=physaddr,
        grain=grain,
        syndrome=syndrome,
        count=max(count, 1),
        message=message,
        detail=detail,
        source=SOURCE,
    )


# -- ras:memory_failure_event -----------------------------------------------------

_MF: Final = re.compile(r"pfn (\S+): recovery action for (.+): ([A-Za-z]+)")


def _memory_failure(body: str, time: str | None) -> dict[str, Any]:
    m = _MF.fullmatch(body)
    if m is None:
        raise _Bad(f"memory_failure_event: {_snippet(body)} is not 'pfn N: recovery action ...'")
    pfn = _number(m.group(1), "pfn")
    if pfn << events.PAGE_SHIFT > MAX_PHYSADDR:
        raise _Bad(f"memory_failure_event: pfn {pfn:#x} is beyond a 52-bit physical address")
    return events.memory_failure(
        pfn=pfn, page_type=m.group(2), result=m.group(3), time=time, source=SOURCE
    )


# -- ras:aer_event ------------------------------------------------------------------

_AER: Final = re.compile(r"(\S+) PCIe Bus Error: severity=(.*)")
_TLP: Final = ", TLP Header="


def _aer_event(body: str, time: str | None) -> dict[str, Any]:
    m = _AER.fullmatch(body)
    if m is None:
        raise _Bad(f"aer_event: {_snippet(body)} is not '<dev> PCIe Bus Error: severity=...'")
    dev, rest = m.groups()
    severity = next((s for s in AER_SEVERITIES if rest.startswith(s)), None)
    if severity is None:
        severity, _, _ = rest.partition(",")
    errors = rest[len(severity) :].removeprefix(",").strip()
    tlp = ""
    if _TLP in f", {errors}":
        errors, _, tlp = f", {errors}".partition(_TLP)
        errors = errors.removeprefix(", ").strip()
    obj = events.aer(dev_name=dev, severity=severity, message=errors, time=time, source=SOURCE)
    if tlp.strip() and tlp.strip() != _AER_NO_TLP:
        obj["tlp_header"] = tlp.strip()
    return obj


# -- ras:extlog_mem_event -----------------------------------------------------------

_EXTLOG: Final = re.compile(
    r"\{?(\d{1,10})\}? (\S+) error: (.*?) physical addr: ([0-9a-fA-F]{1,16}) "
    r"\(mask lsb: ([0-9a-fA-F]{1,2})\) (.*?)FRU: (\S+) ?(.*)"
)


def _extlog_mem_event(body: str, platform: Platform | None, time: str | None) -> dict[str, Any]:
    m = _EXTLOG.fullmatch(body)
    if m is None:
        raise _Bad(f"extlog_mem_event: {_snippet(body)} is not '{{n}} <sev> error: ...'")
    seq, severity, etype, pa_text, lsb_text, location, fru_id, fru_text = m.groups()
    pa = int(pa_text, 16)
    lsb = int(lsb_text, 16)
    obj = events.edac_memory(
        platform,
        err_type=_CPER_TO_EDAC.get(severity.lower(), severity),
        time=time,
        label=fru_text.strip() or None,
        physaddr=pa if pa != _NO_ADDRESS and pa <= MAX_PHYSADDR else None,
        grain=1 << lsb if lsb != _NO_MASK_LSB and lsb < 64 else None,
        message=etype.strip(),
        detail=location.strip(),
        source=SOURCE,
    )
    obj["cper_severity"] = severity
    obj["error_seq"] = int(seq)
    obj["fru_id"] = fru_id
    return obj


# -- ras:arm_event ------------------------------------------------------------------

# arm_event field -> (payload member, kind): hex registers, decimal numbers,
# and the raw data that __print_hex prints as space-separated bytes.
_ARM_FIELDS: Final = {
    "AFFINITY LEVEL": ("affinity_level", "dec"),
    "MPIDR": ("mpidr", "hex"),
    "MIDR": ("midr", "hex"),
    "RUNNING STATE": ("running_state", "dec"),
    "PSCI STATE": ("psci_state", "dec"),
    "ERROR COUNT": ("error_count", "dec"),
    "RAW DATA": ("error_info", "raw"),
    "ARM PROCESSOR ERR INFO RAW DATA": ("error_info", "raw"),
    "ARM PROCESSOR ERR CONTEXT INFO RAW DATA": ("context_info", "raw"),
    "VENDOR SPECIFIC ERR INFO RAW DATA": ("vendor_info", "raw"),
}


def _raw(text: str, what: str) -> str:
    data = "".join(text.split()).lower()
    if any(c not in "0123456789abcdef" for c in data):
        raise _Bad(f"{what}: {_snippet(text)} is not hex bytes")
    return data


def _arm_event(body: str, platform: Platform | None, time: str | None) -> dict[str, Any]:
    fields = _fields(body, _SEMICOLON_KEYS)
    if "MPIDR" not in fields and "MIDR" not in fields:
        raise _Bad(f"arm_event: {_snippet(body)} names no MPIDR or MIDR")
    facts: dict[str, Any] = {}
    for key, (member, kind) in _ARM_FIELDS.items():
        if key not in fields:
            continue
        if kind == "hex":
            facts[member] = f"{_hex(fields[key], key):#x}"
        elif kind == "dec":
            facts[member] = _dec(fields[key], key, signed=True)
        else:
            facts[member] = _raw(fields[key], key)
    cpu = _dec(fields["CPU"], "cpu", signed=True) if "CPU" in fields else None
    severity = "unknown"
    if "ERROR" in fields:
        severity = CPER_SEVERITIES.get(_dec(fields["ERROR"], "error", signed=True), "unknown")
    return events.arm_processor(
        platform, cpu=cpu, severity=severity, facts=facts, time=time, source=SOURCE
    )


# -- ras:non_standard_event --------------------------------------------------------


def _non_standard_event(body: str, time: str | None) -> dict[str, Any]:
    fields = _fields(body, _SEMICOLON_KEYS)
    if "SEC TYPE" not in fields:
        raise _Bad(f"non_standard_event: {_snippet(body)} names no sec type")
    payload: dict[str, Any] = {"section_type": fields["SEC TYPE"]}
    if "SEVERITY" in fields:
        number = _dec(fields["SEVERITY"], "severity", signed=True)
        payload["severity"] = CPER_SEVERITIES.get(number, "unknown")
    if "FRU" in fields:
        fru_id, _, fru_text = fields["FRU"].partition(" ")
        payload["fru_id"] = fru_id
        if fru_text.strip():
            payload["fru_text"] = fru_text.strip()
    if "DATA LEN" in fields:
        payload["length"] = _dec(fields["DATA LEN"], "data len")
    if "RAW DATA" in fields:
        payload["raw_data"] = _raw(fields["RAW DATA"], "raw data")
    return events.firmware_section("non_standard", payload, time=time, source=SOURCE)


# -- putting it together -----------------------------------------------------------

EventParser = Callable[[str, Platform | None, str | None], dict[str, Any]]

_PARSERS: Final[dict[str, EventParser]] = {
    MCE_RECORD: lambda body, _platform, time: _mce_record(body, time),
    MC_EVENT: _mc_event,
    MEMORY_FAILURE_EVENT: lambda body, _platform, time: _memory_failure(body, time),
    AER_EVENT: lambda body, _platform, time: _aer_event(body, time),
    EXTLOG_MEM_EVENT: _extlog_mem_event,
    ARM_EVENT: _arm_event,
    NON_STANDARD_EVENT: lambda body, _platform, time: _non_standard_event(body, time),
}


def event_time(boot_ns: int | None, ts_ns: int) -> str | None:
    """The wall time of a trace timestamp counted from ``boot_ns`` (None if unknown)."""
    if boot_ns is None:
        return None
    wall = boot_ns + ts_ns
    return utc_iso(wall) if 0 <= wall <= _MAX_TIME_NS else None


def parse_event(
    header: TraceHeader, *, platform: Platform | None = None, boot_ns: int | None = None
) -> TraceRecord | TraceFailure:
    """The wire object of one event whose header was read (never raises)."""
    parser = _PARSERS.get(header.event)
    if parser is None:
        return TraceFailure(
            f"{header.event} is not a RAS tracepoint fmd reads", header.cpu, header.ts_ns, None
        )
    try:
        obj = parser(header.body, platform, event_time(boot_ns, header.ts_ns))
    except (ValueError, LookupError, OverflowError) as exc:
        return TraceFailure(str(exc), header.cpu, header.ts_ns, header.event)
    return TraceRecord(header.cpu, header.ts_ns, header.event, obj)


def parse_trace_line(
    line: str, *, platform: Platform | None = None, boot_ns: int | None = None
) -> ParsedTrace:
    """One ftrace text line into a :class:`TraceRecord`, :class:`TraceLost` or failure.

    ``platform`` attributes memory events to their DIMMs; ``boot_ns`` is the
    wall time (ns) the trace clock counts from, giving events without a wall
    time of their own their time.  Never raises.
    """
    header = parse_header(line)
    if not isinstance(header, TraceHeader):
        return header
    return parse_event(header, platform=platform, boot_ns=boot_ns)
