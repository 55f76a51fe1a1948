"""Kernel log messages into wire objects: machine checks, EDAC, GHES, thermal, retired pages.

The kernel reports hardware errors in its log in a handful of text forms, and
:class:`KmsgParser` turns the messages of those forms into the wire objects
:class:`fmd.xprt.Ingest` decodes: raw machine-check records (``{"mca": {...}}``,
decoded by :mod:`fmd.hw.telemetry` against the platform) and ereports built by
:mod:`fmd.hw.events`.  It reads *messages* (the text after a ``/dev/kmsg``
record's header, or after a ``dmesg``/``journalctl -k`` line's prefix: see
:mod:`fmd.hw.kmsg_text`) and never raises: a record it cannot read is a
:class:`KmsgFailure` naming its first line and the reason.

Forms (each can be switched off with ``forms``, e.g. the machine-check forms
when the tracepoint already carries them)::

    mce       mce: [Hardware Error]: CPU n: Machine Check[ Exception]: <mcgstatus> Bank b: <status>
              ... RIP / TSC [ADDR] [MISC] [PPIN] [SYND] [IPID] / PROCESSOR v:cpuid TIME t ...
              -> {"mca": ...} (read by fmd.hw.mcelog.parse_mce_text)
    amd       [Hardware Error]: CPU:1 (19:18:1) MC17_STATUS[Over|CE|...]: 0x...
              ... Error Addr | MCn_ADDR / PPIN / IPID, Syndrome / TSC / ... / cache level
              (the AMD decoder, drivers/edac/mce_amd.c; also the older forms without
              the family triple or the CPU, where "(node n)" names the node)  -> {"mca": ...}
    edac_mce  EDAC sbridge MC0: CPU 0: Machine Check Event: 0 Bank 7: <status>
              ... TSC / ADDR / MISC / PROCESSOR (an EDAC driver's copy)  -> {"mca": ...}
    edac      EDAC MCn: N CE|UE <msg> on <label> (<layer>:n ... page:0x.. offset:0x..
              grain:n [syndrome:0x..] [- <detail>]), and the 2.6 "CE page 0x.., offset .."
              form  -> fmd.hw.events.edac_memory
    ghes      {n}[Hardware Error]: ... (firmware-first CPER records, grouped by {n}; read
              by fmd.hw.kmsg_cper): memory sections -> edac_memory (source "ghes"); ARM
              processor sections -> ereport.cpu.arm.error; others -> firmware_section
    thermal   CPUn: Core|Package temperature above threshold, cpu clock throttled
              -> fmd.hw.events.thermal ("temperature/speed normal" is ignored)
    memory_failure
              memory_failure()'s verdict on a page (mm/memory-failure.c), which the
              ras:memory_failure_event tracepoint also carries
              -> fmd.hw.events.memory_failure (source "kmsg", kernel_action
              "memory_failure"):
                Memory failure: 0x<pfn>: recovery action for <type>: <result>
                MCE 0x<pfn>: recovery action for <type>: <result>    (about 4.1 to 4.6)
                MCE 0x<pfn>: <type> page recovery: <result>          (before that)
    page      the soft offlines (below: drivers/ras/cec.c, mm/madvise.c, sysfs), which
              no tracepoint carries  -> fmd.hw.events.memory_failure (kernel_action
              "soft_offline")

Multi-line records are assembled in *blocks*.  Each block kind has its own
opening and closing lines, and a block stays open while messages of other
kinds go by (another CPU, an EDAC line printed in the middle of the AMD
decoder's output)::

                 opening line                       closing line, a new opening line,
      (none) ----------------> open block --------> MAX_IDLE messages without a line of
                                 |    ^             its own, flush()  -----------------> emit
                                 +----+ its lines

    mce, edac_mce  open: "CPU n: Machine Check..."   close: the PROCESSOR line (always last)
    amd            open: "MCn_STATUS[...]"           close: "cache level:" / "internal:" line
    ghes {n}       open: any {n} line                close: any message that is not a GHES
                                                     line, a new header for the same {n}
    page <pfn>     open: "RAS: Soft-offlining pfn: 0x<pfn>" (the CEC), "Soft offlining pfn
                   0x<pfn> at process virtual address ..." (madvise MADV_SOFT_OFFLINE);
                   a second opening line for the pfn joins the open block
                   close: a soft-offline outcome line for the pfn (below)

Soft offlines.  ``soft_offline_page()`` emits no ``ras:memory_failure_event``
and logs nothing when it succeeds: it logs only the pages it found already
poisoned, the clean pages it invalidated, and its failures.  Its messages
changed wording over the years (``soft offline: 0x..``, ``soft_offline: 0x..``,
``soft_offline_page: 0x..``, ``get_any_page: 0x..``, and ``Soft offline: 0x..``
since 6.11).  So a soft-offline block ends as::

    "already poisoned" | "invalidated" for its pfn        -> Recovered
    any other soft-offline message for its pfn, or
      "Memory failure: 0x<pfn>: unhandlable page."        -> Failed (the kernel's words
                                                             are the report's "detail")
    "Soft offline: disabled by /proc/sys/vm/enable_soft_offline"
                                                          -> Failed, every open block
    MAX_IDLE messages without one, or flush()             -> Recovered (the page is
                                                             HWPOISON now)

A soft-offline outcome without an opening line (a soft offline asked for
through sysfs, as mcelog does) is reported on its own.  The kernel queues the
soft offline on a workqueue, so its failure comes soon after the CEC's line;
one that came only after a poll interval of silence (the source flushes
then) would follow a Recovered report of the same page, and the retire agent
keeps the latest.  The ``disabled`` message is printed once per boot: later
soft offlines fail without a word and are reported Recovered.  When the
tracefs source also hears ``ras:memory_failure_event``, a hard memory failure
is reported twice (once from each); that is harmless for this class: its
reports are recorded and remembered by the retire agent per page, never
counted by a SERD engine.

A source must not lose a block it has read half of when it is restarted:
:meth:`KmsgParser.pending` lists the messages the open blocks hold, which the
source commits with its position and feeds again after a restart.

Times: a machine-check block's own ``TIME`` (the wall clock when the kernel
logged it) is its time; everything else takes the time of its first message
(:attr:`Message.time_ns`: the source computes it from the boot time, the text
reader from the line's date), or none at all (then fmd stores the time it
received the event).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from fmd.errors import EventRejected
from fmd.hw import cpuid, events
from fmd.hw.kmsg_cper import HEADER, MAX_PAYLOAD_INT, CperRecord, clip, payload_physaddr
from fmd.hw.mca import MCG_RIPV
from fmd.hw.mcelog import ParsedMca, parse_mce_text
from fmd.hw.telemetry import record_from_json, record_to_json
from fmd.hw.topo import Platform
from fmd.protocol import CpuFmri, utc_iso
from fmd.protocol.limits import MAX_CPUID, MAX_PHYSADDR

# -- the forms -----------------------------------------------------------------
FORM_MCE: Final = "mce"
FORM_AMD: Final = "amd"
FORM_EDAC_MCE: Final = "edac_mce"
FORM_EDAC: Final = "edac"
FORM_GHES: Final = "ghes"
FORM_THERMAL: Final = "thermal"
FORM_PAGE: Final = "page"
FORM_MEMORY_FAILURE: Final = "memory_failure"
ALL_FORMS: Final = frozenset(
    {
        FORM_MCE,
        FORM_AMD,
        FORM_EDAC_MCE,
        FORM_EDAC,
        FORM_GHES,
        FORM_THERMAL,
        FORM_PAGE,
        FORM_MEMORY_FAILURE,
    }
)
# The forms that carry machine-check registers (what the MCE tracepoint also carries).
MCE_FORMS: Final = frozenset({FORM_MCE, FORM_AMD, FORM_EDAC_MCE})
# What a failure of fmd's own parsing is filed under.
FORM_PARSER: Final = "parser"

# A block is closed when this many messages went by without a line of its own
# (the kernel prints one record's lines together; a lost closing line must not
# hold a block open for ever), or when it holds this many lines.
MAX_IDLE: Final = 64
MAX_BLOCK_LINES: Final = 256
# The AMD decoder's lines before a status line that are kept (severity, node).
_MAX_PRELUDE: Final = 4
_U64: Final = (1 << 64) - 1

HW_ERR: Final = "[Hardware Error]:"

# The family the AMD decoder prints for Hygon's Dhyana (same decoder, other vendor).
_HYGON_FAMILY: Final = 0x18


@dataclass(frozen=True)
class Message:
    """One kernel log message: the text after its header or prefix.

    ``line`` is the kmsg sequence number (or a text log's 1-based line);
    ``time_ns`` the wall-clock time it was logged, when known.
    """

    line: int
    text: str
    time_ns: int | None = None


@dataclass(frozen=True)
class KmsgEvent:
    """A wire object read from the log, the line it started on and its form."""

    line: int
    form: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class KmsgFailure:
    """A record of the log that could not be read: its first line, form and why."""

    line: int
    form: str
    reason: str


KmsgResult = KmsgEvent | KmsgFailure


class _Bad(Exception):
    """A value in the current record is malformed; carries the reason."""


def _hex(text: str, what: str) -> int:
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if not digits or len(digits) > 16 or not _HEX_DIGITS.fullmatch(digits):
        raise _Bad(f"{what} {text[:40]!r} is not a 64-bit hex number")
    return int(digits, 16)


def _dec(text: str, what: str, limit: int = _U64) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20 or int(text) > limit:
        raise _Bad(f"{what} {text[:40]!r} is not a decimal number up to {limit}")
    return int(text)


def _time_of(msg: Message) -> str | None:
    return None if msg.time_ns is None else utc_iso(msg.time_ns)


_HEX_DIGITS: Final = re.compile(r"[0-9a-fA-F]+")

# -- machine-check blocks (mce: and the EDAC drivers' copies) -------------------
_MCE_HEADER: Final = re.compile(
    r"CPU (\d{1,10}): Machine Check(?: Exception| Event)?: (\S+) Bank (\d{1,3}): (\S+)\s*$"
)
_MCE_OPENING: Final = re.compile(r"CPU \d+: Machine Check\b")
_MCE_CONT: Final = re.compile(r"(?:RIP|TSC|ADDR|MISC|PPIN|SYND|IPID|PROCESSOR)\s")
_MCE_CLOSING: Final = "PROCESSOR"
# The machine-check core's own prefix (the AMD decoder's lines have none).
_MCE_PREFIX: Final = "mce:"
# An EDAC driver's copy: "EDAC <driver> MC<n>: <text>".
_EDAC_COPY: Final = re.compile(r"EDAC (\w+) MC(\d+): (.*)$")

# -- the AMD decoder --------------------------------------------------------
_SEP: Final = r"(?:\s+|#011)"  # rsyslog writes the decoder's tab as #011
_AMD_STATUS: Final = re.compile(
    r"(?:CPU:\s*(\d{1,10})" + _SEP + r")?"
    r"(?:\(([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4})\)\s+)?"
    r"MC(\d{1,3})_STATUS\[([^\]]*)\]:\s*(\S+)\s*$"
)
_AMD_ADDR: Final = re.compile(r"(?:Error Addr|MC(\d{1,3})_ADDR):\s*(\S+)\s*$")
_AMD_IPID: Final = re.compile(r"IPID:\s*(\S+?)(?:,\s*Syndrome:\s*(\S+))?\s*$")
_AMD_PPIN: Final = re.compile(r"PPIN:\s*(\S+)\s*$")
_AMD_TSC: Final = re.compile(r"TSC:\s*(\S+)\s*$")
_AMD_CLOSING: Final = re.compile(r"(?:cache level|internal):")
_AMD_NODE: Final = re.compile(r"(?:MC\d+|Northbridge) Error \(node (\d{1,4})\)")
_AMD_RESTARTABLE: Final = "software restartable"

# -- EDAC memory-controller lines -------------------------------------------
_EDAC_MC: Final = re.compile(
    r"EDAC MC(\d{1,5}): (\d{1,10}) (CE|UE) (.*?)\s*\bon (.*?) \((.*)\)\s*$"
)
_EDAC_OLD: Final = re.compile(
    r"EDAC MC(\d{1,5}): (CE|UE) page 0x([0-9a-fA-F]{1,16}), offset 0x([0-9a-fA-F]{1,16}), "
    r"grain (\d{1,10}),(?: syndrome 0x([0-9a-fA-F]{1,16}),)? row (\d{1,5}),"
    r"(?: channel (\d{1,5}),)? labels? \"([^\"]*)\":\s*(.*)$"
)
_EDAC_NOINFO: Final = re.compile(r"EDAC MC(\d{1,5}): (CE|UE) - no information available:\s*(.*)$")
_EDAC_FIELD: Final = re.compile(r"([A-Za-z_]+):(\S+)")
# EDAC's layer names (edac_layer_name[] in drivers/edac/edac_mc.c).
_EDAC_LAYERS: Final = frozenset({"branch", "channel", "slot", "csrow", "memory"})
_EDAC_TYPE: Final = {"CE": "Corrected", "UE": "Uncorrected"}

# -- thermal ------------------------------------------------------------------
_THERMAL: Final = re.compile(
    r"CPU(\d{1,10}): (Core|Package) temperature above threshold, cpu clock throttled"
    r"(?: \(total events = (\d{1,20})\))?"
)

# -- pages the kernel took out of use -------------------------------------------
# The source of the memory_failure ereports read from the log.
SOURCE_KMSG: Final = "kmsg"
# The payload's kernel_action: which kernel path acted on the page.
ACTION_MEMORY_FAILURE: Final = "memory_failure"
ACTION_SOFT_OFFLINE: Final = "soft_offline"
MF_RECOVERED: Final = "Recovered"
MF_FAILED: Final = "Failed"
# A pfn as the kernel prints it: "0x%llx", or "%#lx" (which prints 0 bare).
_PFN: Final = r"(0[xX][0-9a-fA-F]{1,16}|0)"
_MF_RESULT: Final = r"(" + "|".join(events.MF_RESULTS) + r")"
# memory_failure()'s verdict on a page (action_result() in mm/memory-failure.c).
_MF_ACTION: Final = re.compile(
    r"(?:Memory failure:|MCE) " + _PFN + r": recovery action for (.+?): " + _MF_RESULT + r"\s*$"
)
_MF_ACTION_OLD: Final = re.compile(
    r"MCE " + _PFN + r": (.+?) page recovery: " + _MF_RESULT + r"\s*$"
)
# A soft offline starts: the CEC's threshold (drivers/ras/cec.c, "RAS: " prefix)
# or an madvise(MADV_SOFT_OFFLINE) (mm/madvise.c).
_SOFT_START: Final = re.compile(
    r"(?:\bSoft-offlining pfn: |\bSoft offlining pfn )" + _PFN + r"(?:\s|$)"
)
# soft_offline_page()'s messages about one page, all kernel versions.
_SOFT_OUTCOME: Final = re.compile(
    r"\b(?:[Ss]oft[ _]offline(?:_page)?|get_any_page): " + _PFN + r":?\s+(.*?)\s*$"
)
# get_any_page()'s refusal, shared by both paths (5.13 on): a soft offline's outcome
# only (memory_failure() reports its own verdict after it).
_UNHANDLABLE: Final = re.compile(r"Memory failure: " + _PFN + r": (unhandlable page)\.?\s*$")
_SOFT_DISABLED: Final = "disabled by /proc/sys/vm/enable_soft_offline"
# What soft_offline_page() logs when the page is out of use after all.
_SOFT_SUCCESS: Final = ("already poisoned", "invalidated")
# Cheap tests before the regular expressions (most messages are none of these).
_PAGE_HINTS: Final = ("ecovery", "offlin", "get_any_page", "unhandlable")
_PAGE_FORMS: Final = frozenset({FORM_PAGE, FORM_MEMORY_FAILURE})

# -- GHES ----------------------------------------------------------------------
_GHES_TAG: Final = re.compile(r"\{(\d{1,10})\}$")


# -- blocks -----------------------------------------------------------------
@dataclass
class _Block:
    """Lines of one multi-line record being assembled."""

    form: str
    messages: list[Message] = field(default_factory=list)
    idle: int = 0

    @property
    def first(self) -> Message:
        return self.messages[0]

    def add(self, msg: Message) -> None:
        self.messages.append(msg)
        self.idle = 0


@dataclass
class _McaBlock(_Block):
    """An mce: block or an EDAC driver's copy: its header and register lines."""

    header: tuple[str, str, str, str] | None = None
    lines: list[str] = field(default_factory=list)


@dataclass
class _AmdBlock(_Block):
    """The AMD decoder's lines for one bank."""

    raw: dict[str, Any] = field(default_factory=dict)
    node: int | None = None
    error: str | None = None


@dataclass
class _PageBlock(_Block):
    """A soft offline the kernel announced, waiting for its outcome."""

    pfn: int = 0


@dataclass
class _GhesBlock(_Block):
    """One GHES record (all lines tagged {n})."""

    number: int = 0
    record: CperRecord = field(default_factory=CperRecord)


class KmsgParser:
    """Reads kernel log messages one at a time; keeps the multi-line records open.

    ``platform`` attributes memory and thermal reports (DIMM by label, CPU
    strand) and names the CPU of the AMD decoder's node-only records; without
    it they are built unattributed.  ``forms`` selects the forms read (the
    others are skipped without a word).
    """

    def __init__(self, platform: Platform | None = None, forms: Iterable[str] = ALL_FORMS) -> None:
        self.platform = platform
        self.forms = frozenset(forms)
        self._mce: _McaBlock | None = None
        self._copies: dict[str, _McaBlock] = {}
        self._amd: _AmdBlock | None = None
        # What the AMD decoder printed before a status line (its severity and
        # node lines): kept with their messages so that a restart keeps them too.
        self._amd_note = ""
        self._amd_node: int | None = None
        self._prelude = _Block(FORM_AMD)
        self._ghes: dict[int, _GhesBlock] = {}
        self._pages: dict[int, _PageBlock] = {}

    # -- the interface ----------------------------------------------------------
    def feed(self, msg: Message) -> list[KmsgResult]:
        """Read one message; what it completes (and what went stale) is returned."""
        out: list[KmsgResult] = []
        try:
            touched = self._dispatch(msg, out)
            self._age(touched, out)
        except Exception as exc:  # a defect of this parser must not stop a source
            out.append(
                KmsgFailure(
                    msg.line, FORM_PARSER, f"cannot parse this message: {type(exc).__name__}: {exc}"
                )
            )
        return out

    def flush(self) -> list[KmsgResult]:
        """Close every open block (end of input, or nothing more came for a while)."""
        out: list[KmsgResult] = []
        for block in self._blocks():
            self._close(block, out)
        self._forget_prelude()
        return out

    def pending(self) -> list[Message]:
        """The messages the open blocks hold, in log order (feed them again to resume)."""
        held = [m for block in self._blocks() for m in block.messages]
        return sorted(held + self._prelude.messages, key=lambda m: m.line)

    def _blocks(self) -> list[_Block]:
        blocks: list[_Block] = []
        if self._mce is not None:
            blocks.append(self._mce)
        blocks.extend(self._copies.values())
        if self._amd is not None:
            blocks.append(self._amd)
        blocks.extend(self._ghes.values())
        blocks.extend(self._pages.values())
        return blocks

    # -- dispatch -------------------------------------------------------------------
    def _dispatch(self, msg: Message, out: list[KmsgResult]) -> set[int]:
        """Route one message to its form; returns the ids of the blocks it touched."""
        text = msg.text
        at = text.find(HW_ERR)
        if at >= 0:
            content = text[at + len(HW_ERR) :]
            tag = _GHES_TAG.search(text, 0, at)
            if tag is not None:
                return self._ghes_line(int(tag.group(1)), content, msg, out)
            self._close_ghes(out)
            body = content.strip()
            if _MCE_OPENING.match(body) or _MCE_CONT.match(body + " "):
                if FORM_MCE in self.forms:
                    return self._mce_line(body, msg, out)
                return set()
            if FORM_AMD in self.forms and _MCE_PREFIX not in text[:at]:
                return self._amd_line(body, msg, out)
            return set()  # "mce: [Hardware Error]: Machine check events logged", ...
        self._close_ghes(out)
        if self.forms & _PAGE_FORMS and any(hint in text for hint in _PAGE_HINTS):
            return self._page_line(text, msg, out)
        if "EDAC " in text:
            return self._edac(text, msg, out)
        if FORM_THERMAL in self.forms and "temperature above threshold" in text:
            self._thermal(text, msg, out)
        return set()

    def _age(self, touched: set[int], out: list[KmsgResult]) -> None:
        for block in self._blocks():
            if id(block) in touched:
                continue
            block.idle += 1
            if block.idle > MAX_IDLE:
                self._close(block, out)
        if self._prelude.messages and id(self._prelude) not in touched:
            self._prelude.idle += 1
            if self._prelude.idle > MAX_IDLE:
                self._forget_prelude()

    def _forget_prelude(self) -> None:
        self._prelude = _Block(FORM_AMD)
        self._amd_note = ""
        self._amd_node = None

    def _close(self, block: _Block, out: list[KmsgResult]) -> None:
        """Take ``block`` out of the open ones and emit what it read."""
        if block is self._mce:
            self._mce = None
        elif block is self._amd:
            self._amd = None
        for key, copy in list(self._copies.items()):
            if copy is block:
                del self._copies[key]
        if isinstance(block, _GhesBlock) and self._ghes.get(block.number) is block:
            del self._ghes[block.number]
        if isinstance(block, _PageBlock):
            # Closed by silence: soft_offline_page() logs its failures, never its successes.
            if self._pages.get(block.pfn) is block:
                del self._pages[block.pfn]
            out.append(_soft_offline_event(block, MF_RECOVERED, ""))
            return
        try:
            if isinstance(block, _McaBlock):
                out.extend(_finish_mca(block))
            elif isinstance(block, _AmdBlock):
                out.append(self._finish_amd(block))
            elif isinstance(block, _GhesBlock):
                out.extend(self._finish_ghes(block))
        except _Bad as exc:
            out.append(KmsgFailure(block.first.line, block.form, str(exc)))

    # -- mce: blocks and EDAC copies --------------------------------------------------
    def _mce_line(self, body: str, msg: Message, out: list[KmsgResult]) -> set[int]:
        block = self._mca_line(self._mce, FORM_MCE, body, msg, out)
        self._mce = block
        if block is not None and body.startswith(_MCE_CLOSING):
            self._close(block, out)
        return set() if block is None else {id(block)}

    def _mca_line(
        self, block: _McaBlock | None, form: str, body: str, msg: Message, out: list[KmsgResult]
    ) -> _McaBlock | None:
        """Add one line to a machine-check block; returns the block now open."""
        if _MCE_OPENING.match(body):
            if block is not None:
                self._close(block, out)
            block = _McaBlock(form)
            block.add(msg)
            header = _MCE_HEADER.match(body)
            if header is None:
                block.header = ("", "", "", "")
                block.lines.append(body)
            else:
                cpu, mcg, bank, status = header.groups()
                block.header = (cpu, mcg, bank, status)
            return block
        if not _MCE_CONT.match(body + " "):
            return block
        if block is None:
            block = _McaBlock(form)
        if len(block.messages) >= MAX_BLOCK_LINES:
            return block
        block.add(msg)
        block.lines.append(body)
        return block

    def _edac(self, text: str, msg: Message, out: list[KmsgResult]) -> set[int]:
        copy = _EDAC_COPY.search(text)
        if copy is not None:
            if FORM_EDAC_MCE not in self.forms:
                return set()
            key = f"{copy.group(1)} MC{copy.group(2)}"
            body = copy.group(3).strip()
            if not (_MCE_OPENING.match(body) or _MCE_CONT.match(body + " ")):
                return set()
            old = self._copies.get(key)
            if old is not None and _MCE_OPENING.match(body):
                self._close(old, out)
                old = None
            block = self._mca_line(old, FORM_EDAC_MCE, body, msg, out)
            if block is None:
                return set()
            self._copies[key] = block
            if body.startswith(_MCE_CLOSING):
                self._close(block, out)
            return {id(block)}
        if FORM_EDAC in self.forms and "EDAC MC" in text:
            self._edac_memory(text, msg, out)
        return set()

    # -- the AMD decoder ---------------------------------------------------------------
    def _amd_line(self, body: str, msg: Message, out: list[KmsgResult]) -> set[int]:
        status = _AMD_STATUS.match(body)
        block = self._amd
        if status is not None:
            if block is not None:
                self._close(block, out)
            block = self._amd = _AmdBlock(FORM_AMD)
            block.add(msg)
            self._amd_open(block, status)
            return {id(block)}
        node = _AMD_NODE.search(body)
        if block is None:
            if _AMD_CLOSING.match(body):
                return set()
            # Printed before the status line: the severity, the node (3.x kernels).
            if node is not None:
                self._amd_node = int(node.group(1))
            else:
                self._amd_note = body
            if len(self._prelude.messages) >= _MAX_PRELUDE:
                del self._prelude.messages[0]
            self._prelude.add(msg)
            return {id(self._prelude)}
        if node is not None:
            block.node = int(node.group(1))  # printed after the status line (2.6 kernels)
        if len(block.messages) < MAX_BLOCK_LINES:
            block.add(msg)
        try:
            self._amd_register(block, body)
        except _Bad as exc:
            if block.error is None:
                block.error = str(exc)
        if _AMD_CLOSING.match(body):
            self._close(block, out)
        return {id(block)}

    def _amd_open(self, block: _AmdBlock, status: re.Match[str]) -> None:
        cpu, fam, model, _stepping, bank, _flags, value = status.groups()
        raw = block.raw
        block.node = self._amd_node
        try:
            raw["bank"] = _dec(bank, "bank")
            raw["status"] = f"0x{_hex(value, 'MC status'):x}"
            if cpu is not None:
                raw["cpu"] = _dec(cpu, "CPU")
            if fam is not None and model is not None:
                family = int(fam, 16)
                raw["family"] = family
                raw["model"] = int(model, 16)
                raw["vendor"] = cpuid.HYGON if family == _HYGON_FAMILY else cpuid.AMD
            else:
                raw["vendor"] = cpuid.AMD
        except _Bad as exc:
            block.error = str(exc)
        if _AMD_RESTARTABLE in self._amd_note:
            # The decoder says "software restartable" exactly when MCG_STATUS.RIPV is set.
            raw["mcgstatus"] = f"0x{MCG_RIPV:x}"
        self._forget_prelude()

    @staticmethod
    def _amd_register(block: _AmdBlock, body: str) -> None:
        raw = block.raw
        addr = _AMD_ADDR.match(body)
        if addr is not None:
            if addr.group(1) is not None and str(raw.get("bank")) != addr.group(1):
                raise _Bad(f"MC{addr.group(1)}_ADDR follows the status of bank {raw.get('bank')}")
            raw["addr"] = f"0x{_hex(addr.group(2), 'address'):x}"
            return
        ipid = _AMD_IPID.match(body)
        if ipid is not None:
            raw["ipid"] = f"0x{_hex(ipid.group(1), 'IPID'):x}"
            if ipid.group(2) is not None:
                raw["synd"] = f"0x{_hex(ipid.group(2), 'Syndrome'):x}"
            return
        ppin = _AMD_PPIN.match(body)
        if ppin is not None:
            raw["ppin"] = f"0x{_hex(ppin.group(1), 'PPIN'):x}"
            return
        tsc = _AMD_TSC.match(body)
        if tsc is not None:
            raw["tsc"] = f"0x{_dec(tsc.group(1), 'TSC'):x}"

    def _finish_amd(self, block: _AmdBlock) -> KmsgResult:
        first = block.first
        if block.error is not None:
            return KmsgFailure(first.line, FORM_AMD, block.error)
        raw = dict(block.raw)
        if "cpu" not in raw:
            cpu = self._cpu_of_node(block.node)
            if cpu is None:
                where = "" if block.node is None else f" (node {block.node})"
                return KmsgFailure(
                    first.line,
                    FORM_AMD,
                    f"the AMD decoder's record names no CPU{where}, and the platform "
                    "cannot tell one",
                )
            raw["cpu"] = cpu
        try:
            record = record_from_json(raw)
        except EventRejected as exc:
            return KmsgFailure(first.line, FORM_AMD, str(exc))
        obj = record_to_json(record)
        when = _time_of(first)
        if when is not None:
            obj["time"] = when
        return KmsgEvent(first.line, FORM_AMD, {"mca": obj})

    def _cpu_of_node(self, node: int | None) -> int | None:
        """The first CPU of chip ``node`` (the northbridge's errors are logged by one of them)."""
        if node is None or self.platform is None:
            return None
        want = ("chip", str(node))
        for topo in self.platform.nodes():
            pairs = topo.fmri.hc_list
            if isinstance(topo.asru, CpuFmri) and len(pairs) > 1 and tuple(pairs[1]) == want:
                return topo.asru.cpuid
        return None

    # -- EDAC memory-controller lines ---------------------------------------------------
    def _edac_memory(self, text: str, msg: Message, out: list[KmsgResult]) -> None:
        try:
            obj = self._edac_object(text, msg)
        except _Bad as exc:
            out.append(KmsgFailure(msg.line, FORM_EDAC, str(exc)))
            return
        if obj is not None:
            out.append(KmsgEvent(msg.line, FORM_EDAC, obj))

    def _edac_object(self, text: str, msg: Message) -> dict[str, Any] | None:
        when = _time_of(msg)
        line = _EDAC_MC.search(text)
        if line is not None:
            mc, count, kind, message, label, body = line.groups()
            fields_text, _, detail = body.partition(" - ")
            names: list[str] = []
            layers: list[int] = []
            values: dict[str, str] = {}
            for name, value in _EDAC_FIELD.findall(fields_text):
                if name in _EDAC_LAYERS and name not in names:
                    names.append(name)
                    layers.append(_signed(value, name))
                else:
                    values.setdefault(name, value)
            physaddr = None
            if "page" in values:
                page = _hex(values["page"], "page")
                offset = _hex(values["offset"], "offset") if "offset" in values else 0
                physaddr = (page << events.PAGE_SHIFT) | offset
            obj = events.edac_memory(
                self.platform,
                err_type=_EDAC_TYPE[kind],
                time=when,
                mc=_dec(mc, "MC"),
                layers=layers,
                label=clip(label.strip()),
                physaddr=payload_physaddr(physaddr),
                grain=_dec(values["grain"], "grain") if "grain" in values else None,
                syndrome=_hex(values["syndrome"], "syndrome") if "syndrome" in values else None,
                count=_dec(count, "error count"),
                message=clip(message.strip()),
                detail=clip(detail.strip()),
                layer_names=names,
            )
            if names:
                obj["edac_layer_names"] = names
            return obj
        old = _EDAC_OLD.search(text)
        if old is not None:
            mc, kind, page_hex, offset_hex, grain, synd, row, channel, label, detail = old.groups()
            layers = [_dec(row, "row")] + ([] if channel is None else [_dec(channel, "channel")])
            obj = events.edac_memory(
                self.platform,
                err_type=_EDAC_TYPE[kind],
                time=when,
                mc=_dec(mc, "MC"),
                layers=layers,
                label=clip(label.strip()),
                physaddr=payload_physaddr(
                    (int(page_hex, 16) << events.PAGE_SHIFT) | int(offset_hex, 16)
                ),
                grain=_dec(grain, "grain"),
                syndrome=None if synd is None else int(synd, 16),
                detail=clip(detail.strip()),
                layer_names=["csrow", "channel"][: len(layers)],
            )
            obj["edac_layer_names"] = ["csrow", "channel"][: len(layers)]
            return obj
        noinfo = _EDAC_NOINFO.search(text)
        if noinfo is not None:
            mc, kind, detail = noinfo.groups()
            return events.edac_memory(
                self.platform,
                err_type=_EDAC_TYPE[kind],
                time=when,
                mc=_dec(mc, "MC"),
                message="no information available",
                detail=clip(detail.strip()),
            )
        return None

    # -- thermal ---------------------------------------------------------------------------
    def _thermal(self, text: str, msg: Message, out: list[KmsgResult]) -> None:
        found = _THERMAL.search(text)
        if found is None:
            return
        cpu, scope, total = found.groups()
        if int(cpu) > MAX_CPUID:
            out.append(KmsgFailure(msg.line, FORM_THERMAL, f"CPU {cpu} is not a logical CPU id"))
            return
        obj = events.thermal(self.platform, cpu=int(cpu), scope=scope.lower(), time=_time_of(msg))
        if total is not None:
            obj["total_events"] = min(int(total), MAX_PAYLOAD_INT)
        out.append(KmsgEvent(msg.line, FORM_THERMAL, obj))

    # -- pages the kernel took out of use ------------------------------------------------------
    def _page_line(self, text: str, msg: Message, out: list[KmsgResult]) -> set[int]:
        """A memory_failure() verdict, or the start or outcome of a soft offline."""
        try:
            return self._page_message(text, msg, out)
        except _Bad as exc:
            out.append(KmsgFailure(msg.line, FORM_PAGE, str(exc)))
            return set()

    def _page_message(self, text: str, msg: Message, out: list[KmsgResult]) -> set[int]:
        found = _MF_ACTION.search(text)
        old_wording = found is None
        if found is None:
            found = _MF_ACTION_OLD.search(text)
        if found is not None:
            if FORM_MEMORY_FAILURE not in self.forms:
                return set()  # ras:memory_failure_event carries the same verdict
            pfn_text, page_type, result = found.groups()
            if old_wording:
                page_type = f"{page_type} page"  # "dirty LRU" -> "dirty LRU page", as later
            obj = events.memory_failure(
                pfn=_pfn(pfn_text),
                page_type=clip(page_type.strip()),
                result=result,
                time=_time_of(msg),
                source=SOURCE_KMSG,
            )
            obj["kernel_action"] = ACTION_MEMORY_FAILURE
            out.append(KmsgEvent(msg.line, FORM_PAGE, obj))
            return set()
        if FORM_PAGE not in self.forms:
            return set()
        start = _SOFT_START.search(text)
        if start is not None:
            pfn = _pfn(start.group(1))
            block = self._pages.get(pfn)
            if block is None:
                block = self._pages[pfn] = _PageBlock(FORM_PAGE, pfn=pfn)
            if len(block.messages) < MAX_BLOCK_LINES:
                block.add(msg)
            return {id(block)}
        if _SOFT_DISABLED in text:
            for block in list(self._pages.values()):
                del self._pages[block.pfn]
                out.append(_soft_offline_event(block, MF_FAILED, "soft offline disabled"))
            return set()
        outcome = _SOFT_OUTCOME.search(text)
        if outcome is None:
            outcome = _UNHANDLABLE.search(text)
            if outcome is None or _pfn(outcome.group(1)) not in self._pages:
                return set()  # memory_failure() says the same in its verdict
        pfn, words = _pfn(outcome.group(1)), outcome.group(2)
        result = MF_RECOVERED if any(w in words for w in _SOFT_SUCCESS) else MF_FAILED
        block = self._pages.pop(pfn, None)
        if block is None:
            # A soft offline asked for without a log line (sysfs soft_offline_page).
            block = _PageBlock(FORM_PAGE, pfn=pfn)
            block.add(msg)
        out.append(_soft_offline_event(block, result, words))
        return set()

    # -- GHES ---------------------------------------------------------------------------------
    def _close_ghes(self, out: list[KmsgResult]) -> None:
        for block in list(self._ghes.values()):
            self._close(block, out)

    def _ghes_line(
        self, number: int, content: str, msg: Message, out: list[KmsgResult]
    ) -> set[int]:
        if FORM_GHES not in self.forms:
            return set()
        body = content.strip()
        block = self._ghes.get(number)
        if block is not None and HEADER.match(body):
            self._close(block, out)  # a new record that reuses the number
            block = None
        if block is None:
            block = self._ghes[number] = _GhesBlock(FORM_GHES, number=number)
        if len(block.messages) < MAX_BLOCK_LINES:
            block.add(msg)
            block.record.add(body)
        return {id(block)}

    def _finish_ghes(self, block: _GhesBlock) -> list[KmsgResult]:
        first = block.first
        objs = block.record.wire_objects(self.platform, _time_of(first))
        if not objs:
            return [
                KmsgFailure(first.line, FORM_GHES, "the firmware (GHES) record holds no section")
            ]
        return [KmsgEvent(first.line, FORM_GHES, obj) for obj in objs]


def _finish_mca(block: _McaBlock) -> list[KmsgResult]:
    """A machine-check block's raw record (read by the mcelog text parser)."""
    first = block.first
    if block.header is None:
        return [
            KmsgFailure(
                first.line,
                block.form,
                "machine-check lines without their 'CPU n: Machine Check' line "
                "(the start of the record was not read)",
            )
        ]
    cpu, mcg, bank, status = block.header
    if not cpu:
        return [
            KmsgFailure(
                first.line, block.form, f"unreadable machine-check line {block.lines[0][:80]!r}"
            )
        ]
    mcg_value = _hex(mcg, "MCG status")
    status_value = _hex(status, "bank status")
    # The canonical mcelog tokens for the header; the register lines as logged.
    text = "\n".join(
        [f"CPU {cpu} BANK {bank}", f"MCGSTATUS {mcg_value:x} STATUS {status_value:x}", *block.lines]
    )
    out: list[KmsgResult] = []
    for parsed in parse_mce_text(text):
        if isinstance(parsed, ParsedMca):
            obj = record_to_json(parsed.record)
            if "time" not in obj:
                when = _time_of(first)
                if when is not None:
                    obj["time"] = when
            out.append(KmsgEvent(first.line, block.form, {"mca": obj}))
        else:
            out.append(KmsgFailure(first.line, block.form, parsed.reason))
    return out


def _signed(text: str, what: str) -> int:
    negative = text.startswith("-")
    value = _dec(text[1:] if negative else text, what, limit=MAX_PAYLOAD_INT)
    return -value if negative else value


def _pfn(text: str) -> int:
    """A page frame number the kernel printed, within a 52-bit physical address."""
    pfn = _hex(text, "pfn")
    if pfn << events.PAGE_SHIFT > MAX_PHYSADDR:
        raise _Bad(f"pfn {pfn:#x} is beyond a 52-bit physical address")
    return pfn


def _soft_offline_event(block: _PageBlock, result: str, detail: str) -> KmsgEvent:
    """The memory_failure ereport of a soft offline: timed and numbered by its first line."""
    first = block.first
    obj = events.memory_failure(
        pfn=block.pfn, page_type="", result=result, time=_time_of(first), source=SOURCE_KMSG
    )
    obj["kernel_action"] = ACTION_SOFT_OFFLINE
    if detail:
        obj["detail"] = clip(detail)
    return KmsgEvent(first.line, FORM_PAGE, obj)
