"""The same memory error, once: the report forms of one error paired at ingest.

The kernel tells of one memory error in several *forms*, and fmd may hear
each of them (a tracepoint and the kernel log, two tracepoints, an import):

    mce    the machine-check record, decoded by fmd (:mod:`fmd.hw.telemetry`):
           the payload has ``IA32_MCi_STATUS``
    edac   the EDAC driver's report of it (``ras:mc_event``, the ``EDAC MCn:``
           log line, a rasdaemon ``mc_event`` row): ``edac_*`` members
    ghes   the firmware's (APEI GHES) CPER memory section, source ``ghes``, or
           an eMCA extended log (``ras:extlog_mem_event``, ``cper_severity``)

Intel hosts give mce + edac, AMD hosts the decoder's record + amd64_edac's
line, firmware-first hosts the CPER section + ghes_edac's report + the record
Linux makes up for it (below).  :mod:`fmd.hw.dedup` takes care of exact copies
of one raw record; this module pairs the *different* forms so that the memory
diagnosis (page and DIMM SERD engines) counts the error once.

Pairing (:class:`MemoryPairing`), for ``mem_ce``/``mem_ue`` ereports that name
an address (``physaddr``)::

    report R of form F, kind K (corrected or not), address A
      |
      +-- a kept report E of another form, same K, same page as A (same cache
      |   line where both give one), within PAIR_WINDOW_NS, that has not yet
      |   absorbed a report of form F
      |       --> E absorbs F; R is a duplicate of E (counted per transport,
      |           answered as stored, never stored or diagnosed)
      +-- none --> R is kept: stored, and remembered as able to absorb one
                   report of each other form

One-to-one: a kept report absorbs at most one report of each other form, so
a real repeat of the error (two machine checks and two EDAC lines on one page
in a second) is two errors, never one.  When several kept reports could
absorb R, the oldest does (the forms of successive errors come in order).
The first report of an error to arrive is the one kept, whatever its form;
what only the others said goes with them (an EDAC DIMM label, where the
machine check's address cannot be decoded to a DIMM on this platform).
Reports without an address are never paired (nothing says which error they
are); neither are reports of no known form (hand-written ereports), nor the
refined ``ereport.cpu.amd.nb.*`` classes of AMD families 0Fh/10h: those go to
another diagnosis engine than the EDAC report of the same error, and each
engine counts every error once only when it sees all of them.

Granularity: an address is compared at the coarser of the two reports'
granularities, between a cache line (64 bytes) and a page (4 KiB).  A report's
granularity is what it says (EDAC ``grain``, the CPER address mask) and never
finer than the zero low bits of its address (a decoded machine-check address
has its invalid low bits cleared already).

Time: two reports that both carry their own time (the kernel's ``TIME``, a
log line's date, a tracepoint's timestamp) are compared by it; otherwise by
the time fmd received them (a log replayed without dates: its forms arrive
together).  PAIR_WINDOW_NS is 5 s: the kernel emits the forms of one error
within milliseconds, but the times they carry are coarser (a machine-check
``TIME`` is whole seconds, a syslog date too, a kernel-log time is the boot
time plus a monotonic stamp); a real repeat of the error within the window is
still kept by the one-to-one rule.

Memory: a kept report is forgotten RETAIN_NS after it was received (the
sources that read the forms of one error poll every second and back off
5 s after a failed read), when its store fails (a later form is then stored),
once it has absorbed every other form, and past MAX_ENTRIES reports (or
MAX_PER_SLOT of one form on one page).  Restart: pairs live in memory only;
an error whose first form was stored just before a restart and whose second
form is read after it is stored twice.  The window is seconds, so that is
rare and costs one extra count, not a missed error.

Linux's made-up record: for a firmware memory section with an address, Linux
logs a machine check of its own (``apei_mce_report_mem_error``): bank -1
(printed as 255), status VAL|EN|ADDRV|MISCV with MCACOD 0x9F (memory read,
channel unknown), MISC = (2 << 6) | LSB and ADDR the section's address.  Its
real signature is lost, so it says nothing about the CPU that logged it.
Where its address is usable (Intel rules, LSB <= 12) it decodes to a memory
ereport with ``physaddr`` and pairs with the section as an ``mce`` form.  Where
it is not (an error radius wider than a page, or an AMD host, whose rules do
not read such a bank) it decodes to a gcpu ``mc`` or an unidentified SMCA
bank, which the decoder (:func:`fmd.hw.telemetry.is_firmware_record`) makes a
memory ereport without an address instead (memory, channel unknown: the diagnosis counts it as
unresolved, never as a CPU or bus fault), and it still pairs with the
section by the page of its ADDR register, the address the firmware gave.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fmd.hw.events import PAGE_SHIFT
from fmd.hw.mca import MEM_CE_CLASS, MEM_UE_CLASS
from fmd.hw.telemetry import is_firmware_record
from fmd.protocol import Ereport

FORM_MCE: Final = "mce"
FORM_EDAC: Final = "edac"
FORM_GHES: Final = "ghes"
FORMS: Final = (FORM_MCE, FORM_EDAC, FORM_GHES)

MEMORY_CLASSES: Final = frozenset({MEM_CE_CLASS, MEM_UE_CLASS})
_NS_PER_S: Final = 10**9
PAIR_WINDOW_NS: Final = 5 * _NS_PER_S
RETAIN_NS: Final = 30 * _NS_PER_S
MAX_ENTRIES: Final = 4096
MAX_PER_SLOT: Final = 16

LINE_SHIFT: Final = 6
_MAX_SHIFT: Final = PAGE_SHIFT


_SOURCE_GHES: Final = "ghes"
_SOURCE_EDAC: Final = "edac"


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def form_of(payload: Mapping[str, Any]) -> str | None:
    """The report form of a memory ereport's payload, or None for no known form."""
    if "IA32_MCi_STATUS" in payload:
        return FORM_MCE
    source = payload.get("source")
    if source == _SOURCE_GHES or "cper_severity" in payload:
        return FORM_GHES
    if source == _SOURCE_EDAC or "edac_error_type" in payload:
        return FORM_EDAC
    return None


def _is_firmware_record(payload: Mapping[str, Any]) -> bool:
    """True for the payload of the record Linux makes up for a firmware section."""
    status = _int(payload.get("IA32_MCi_STATUS"))
    return is_firmware_record(_int(payload.get("bank_number")), status)


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """What pairing knows of one memory ereport."""

    form: str
    uncorrected: bool
    address: int
    # The address's granularity: bits that do not count (LINE_SHIFT..PAGE_SHIFT).
    shift: int
    time_ns: int
    # False when the report carried no time of its own (time_ns is its receipt).
    own_time: bool
    recv_ns: int
    ena: int

    @property
    def page(self) -> int:
        return self.address >> PAGE_SHIFT


def _shift(address: int, stated: int | None) -> int:
    """The granularity of ``address``: the stated one, never finer than its zero
    low bits, within a line and a page."""
    zeros = (address & -address).bit_length() - 1 if address else _MAX_SHIFT
    shift = max(zeros, stated if stated is not None else 0)
    return min(max(shift, LINE_SHIFT), _MAX_SHIFT)


def _stated_shift(payload: Mapping[str, Any], form: str) -> int | None:
    """The granularity a report states: EDAC's grain, the CPER address mask."""
    if form == FORM_EDAC:
        grain = _int(payload.get("grain"))
        return (grain - 1).bit_length() if grain is not None and grain > 0 else None
    if form == FORM_GHES:
        mask = payload.get("cper_physical_address_mask")
        value = _int(mask)
        if isinstance(mask, str):
            try:
                value = int(mask, 16) if mask[:2].lower() == "0x" else None
            except ValueError:
                value = None
        if value:
            return (value & -value).bit_length() - 1
    return None


def report_of(ev: Ereport, *, own_time: bool, recv_ns: int) -> MemoryReport | None:
    """``ev`` as pairing sees it, or None when it cannot be paired (not a memory
    class, no known form, no address)."""
    if ev.cls not in MEMORY_CLASSES:
        return None
    payload = ev.payload
    form = form_of(payload)
    if form is None:
        return None
    address = _int(payload.get("physaddr"))
    stated: int | None = None
    if address is None and form == FORM_MCE and _is_firmware_record(payload):
        # The address the firmware gave, not usable for a page action: its page.
        address = _int(payload.get("IA32_MCi_ADDR"))
        stated = _MAX_SHIFT
    elif address is not None:
        stated = _stated_shift(payload, form)
    if address is None or address < 0:
        return None
    return MemoryReport(
        form=form,
        uncorrected=ev.cls == MEM_UE_CLASS,
        address=address,
        shift=_shift(address, stated),
        time_ns=ev.time_ns,
        own_time=own_time,
        recv_ns=recv_ns,
        ena=ev.ena,
    )


def same_error(a: MemoryReport, b: MemoryReport, window_ns: int = PAIR_WINDOW_NS) -> bool:
    """True when reports ``a`` and ``b`` (of one kind) may be forms of one error:
    the same address at the coarser granularity, within the window."""
    shift = max(a.shift, b.shift)
    if a.address >> shift != b.address >> shift:
        return False
    if a.own_time and b.own_time:
        return abs(a.time_ns - b.time_ns) <= window_ns
    return abs(a.recv_ns - b.recv_ns) <= window_ns


# A slot: the kept reports of one form, of one kind, on one page.
_Slot = tuple[bool, int, str]


@dataclass(eq=False, slots=True)
class _Kept:
    report: MemoryReport
    seq: int
    absorbed: set[str] = field(default_factory=set)
    live: bool = True

    @property
    def slot(self) -> _Slot:
        r = self.report
        return (r.uncorrected, r.page, r.form)


class MemoryPairing:
    """Kept memory reports that may still absorb another form of their error."""

    def __init__(
        self,
        window_ns: int = PAIR_WINDOW_NS,
        retain_ns: int = RETAIN_NS,
        max_entries: int = MAX_ENTRIES,
        max_per_slot: int = MAX_PER_SLOT,
    ) -> None:
        self.window_ns = window_ns
        self.retain_ns = max(retain_ns, window_ns)
        self.max_entries = max(1, max_entries)
        self.max_per_slot = max(1, max_per_slot)
        self.paired = 0
        self._lock = threading.Lock()
        self._slots: dict[_Slot, deque[_Kept]] = {}
        # Every kept report in arrival order (some no longer live): for expiry.
        self._order: deque[_Kept] = deque()
        self._seq = 0
        self._newest_recv = 0

    def __len__(self) -> int:
        """How many kept reports may still absorb another form."""
        with self._lock:
            return sum(len(slot) for slot in self._slots.values())

    def pair(self, report: MemoryReport) -> int | None:
        """None when ``report`` is the first of its error (kept and remembered);
        else the ENA of the kept report it is another form of."""
        with self._lock:
            if report.recv_ns > self._newest_recv:
                self._newest_recv = report.recv_ns
            self._expire()
            found = self._match(report)
            if found is not None:
                found.absorbed.add(report.form)
                self.paired += 1
                if len(found.absorbed) == len(FORMS) - 1:
                    self._drop(found)  # every other form absorbed: it can take no more
                return found.report.ena
            self._keep(report)
            return None

    def forget(self, enas: Iterable[int]) -> None:
        """Forget kept reports whose storing failed: a later form is stored instead."""
        gone = set(enas)
        if not gone:
            return
        with self._lock:
            for kept in self._order:
                if kept.live and kept.report.ena in gone:
                    self._drop(kept)

    # -- inside the lock ------------------------------------------------------------
    def _match(self, report: MemoryReport) -> _Kept | None:
        best: _Kept | None = None
        for form in FORMS:
            if form == report.form:
                continue
            slot = self._slots.get((report.uncorrected, report.page, form))
            if not slot:
                continue
            for kept in slot:  # oldest first
                if best is not None and kept.seq > best.seq:
                    break
                if report.form not in kept.absorbed and same_error(
                    kept.report, report, self.window_ns
                ):
                    best = kept
                    break
        return best

    def _keep(self, report: MemoryReport) -> None:
        self._seq += 1
        kept = _Kept(report, self._seq)
        key = kept.slot
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = deque()
        slot.append(kept)
        if len(slot) > self.max_per_slot:
            slot.popleft().live = False
        self._order.append(kept)
        self._expire()

    def _expire(self) -> None:
        horizon = self._newest_recv - self.retain_ns
        order = self._order
        while order and (len(order) > self.max_entries or order[0].report.recv_ns < horizon):
            kept = order.popleft()
            if kept.live:
                self._drop(kept)

    def _drop(self, kept: _Kept) -> None:
        """Take a live kept report out of its slot (a live one is always in it)."""
        kept.live = False
        key = kept.slot
        slot = self._slots[key]
        if slot[0] is kept:
            slot.popleft()
        else:
            slot.remove(kept)
        if not slot:
            del self._slots[key]
