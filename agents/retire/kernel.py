"""What the running Linux kernel does to memory pages by itself, as the retire agent sees it.

Two mechanisms of the kernel take pages out of use without fmd, and the retire
agent must neither offline such a page a second time nor claim it did:

``memory_failure()`` (mm/memory-failure.c)
    the kernel's handling of a poisoned page.  Each run ends with the
    ``ras:memory_failure_event`` tracepoint, which the host sources turn into an
    ``ereport.os.linux.memory_failure`` (payload ``pfn``, ``physaddr``,
    ``page_type``, ``action_result``, ``source``).  What each result means for
    the retire agent (:data:`RETIRED_RESULTS`):

    ``Recovered``  the page is poisoned and off the allocator: retired by the kernel;
    ``Delayed``    the page is poisoned and its last user still holds it; the
                   kernel frees it to nobody (a poisoned page is never handed
                   out again): retired by the kernel;
    ``Failed``     the kernel could not isolate the page (still mapped, unknown
                   state, lost a race): fmd still retires it itself, and says so;
    ``Ignored``    the kernel does not handle this kind of page (kernel, slab,
                   high-order, unsplittable THP...): fmd still retires it itself.

the correctable-errors collector (CEC, ``drivers/ras/cec.c``)
    counts corrected DRAM errors per page and soft-offlines a page when its
    count reaches the collector's action threshold.  The soft offline goes
    through ``soft_offline_page()``, which emits no ``memory_failure_event``:
    its only traces are the kernel log line ``RAS: Soft-offlining pfn: 0x...``
    and the page's HWPOISON flag, which the linux backend reads
    (``page_status``).  :func:`resolve_cec` decides, once at load, whether the
    agent leaves the pages of corrected-error faults to the collector.

:class:`KernelPages` remembers the last :data:`KERNEL_PAGES_MAX` pages the
kernel reported on (pfn -> :class:`KernelAction`), oldest forgotten first.  It
is saved in the module's checkpoint with the boot id of the kernel that acted:
a reboot returns every page to use, so a memory from another boot is dropped
when the agent loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fmd.hw import cec
from fmd.hw.cec import CecState, detect_cec
from fmd.hw.events import MEMORY_FAILURE_CLASS, MF_RESULTS

__all__ = [
    "CEC_AUTO",
    "CEC_MODES",
    "CORRECTED_PAGE_LEAVES",
    "KERNEL_PAGES_MAX",
    "MEMORY_FAILURE_CLASS",
    "RETIRED_RESULTS",
    "KernelAction",
    "KernelPages",
    "is_corrected_page_fault",
    "resolve_cec",
]

KERNEL_PAGES_MAX: Final = 4096
"""How many pages the agent remembers the kernel's action on."""

RETIRED_RESULTS: Final = frozenset({"Recovered", "Delayed"})
"""memory_failure results after which the page is out of use (see the module docstring)."""

# The values of the agent's ``cec`` property.
CEC_AUTO: Final = "auto"
CEC_MODES: Final = (CEC_AUTO, cec.ACTIVE, cec.INACTIVE)

CORRECTED_PAGE_LEAVES: Final = ("page_ce", "page_sb", "page_ck")
"""Leaves of the page faults diagnosed from corrected errors (single-bit and
chipkill-corrected ones too): the errors the kernel's collector counts."""

# Keys of the agent's checkpoint (Handle.specific).
_SPECIFIC_PAGES: Final = "kernel_pages"
_SPECIFIC_BOOT: Final = "kernel_pages_boot"


def is_corrected_page_fault(cls: str) -> bool:
    """Was this page fault diagnosed from corrected errors (``fault.memory.*page_ce`` ...)?"""
    return cls.rsplit(".", 1)[-1] in CORRECTED_PAGE_LEAVES


@dataclass(frozen=True)
class KernelAction:
    """The kernel's last memory_failure report on one page."""

    result: str  # one of fmd.hw.events.MF_RESULTS
    page_type: str  # the kernel's words, e.g. "free buddy page"
    time_ns: int

    @property
    def retired(self) -> bool:
        """Did the kernel take the page out of use?"""
        return self.result in RETIRED_RESULTS

    def describe(self) -> str:
        """``memory_failure: Recovered, free buddy page`` (for responses and logs)."""
        kind = f", {self.page_type}" if self.page_type else ""
        return f"memory_failure: {self.result}{kind}"


class KernelPages:
    """The pages the kernel acted on (pfn -> :class:`KernelAction`), bounded, oldest out first."""

    def __init__(self, limit: int = KERNEL_PAGES_MAX) -> None:
        self.limit = limit
        self._pages: dict[int, KernelAction] = {}

    def __len__(self) -> int:
        return len(self._pages)

    def __iter__(self) -> Iterator[int]:
        return iter(self._pages)

    def get(self, pfn: int) -> KernelAction | None:
        return self._pages.get(pfn)

    def record(self, pfn: int, action: KernelAction) -> int:
        """Remember ``action`` as the latest on ``pfn``; return how many old pages
        were forgotten to stay within the limit."""
        self._pages.pop(pfn, None)  # re-inserted last: the newest
        self._pages[pfn] = action
        dropped = 0
        while len(self._pages) > self.limit:
            del self._pages[next(iter(self._pages))]
            dropped += 1
        return dropped

    def forget(self, pfn: int) -> None:
        """The page is back in use (unretired): the kernel's old action no longer holds."""
        self._pages.pop(pfn, None)

    def clear(self) -> None:
        self._pages.clear()

    # -- the checkpoint -----------------------------------------------------------
    def save(self, specific: dict[str, Any], boot: str | None) -> None:
        """Store the pages (oldest first) and the boot they belong to in ``specific``."""
        specific[_SPECIFIC_PAGES] = [
            [pfn, a.result, a.page_type, a.time_ns] for pfn, a in self._pages.items()
        ]
        specific[_SPECIFIC_BOOT] = boot

    @classmethod
    def load(
        cls, specific: Mapping[str, Any], boot: str | None, limit: int = KERNEL_PAGES_MAX
    ) -> tuple[KernelPages, str | None]:
        """The pages saved in ``specific``, and why some were not taken (None: all were).

        Nothing is taken from another boot than ``boot`` (when both are known):
        the reboot put those pages back in use.  Malformed entries are skipped.
        """
        pages = cls(limit)
        saved_boot = specific.get(_SPECIFIC_BOOT)
        entries = specific.get(_SPECIFIC_PAGES) or []
        if not isinstance(entries, list):
            return pages, f"the saved kernel pages are a {type(entries).__name__}, not a list"
        if entries and boot is not None and saved_boot is not None and saved_boot != boot:
            return pages, f"the host rebooted (boot {saved_boot} then {boot})"
        bad = 0
        for entry in entries:
            action = _entry(entry)
            if action is None:
                bad += 1
                continue
            pages.record(action[0], action[1])
        return pages, (f"{bad} malformed saved entries skipped" if bad else None)


def _entry(entry: object) -> tuple[int, KernelAction] | None:
    if not isinstance(entry, list) or len(entry) != 4:
        return None
    pfn, result, page_type, time_ns = entry
    if not (isinstance(pfn, int) and pfn >= 0 and isinstance(time_ns, int)):
        return None
    if result not in MF_RESULTS or not isinstance(page_type, str):
        return None
    return pfn, KernelAction(result, page_type, time_ns)


def resolve_cec(
    mode: str,
    backend: str,
    *,
    debugfs: str | os.PathLike[str],
    proc: str | os.PathLike[str],
    boot: str | os.PathLike[str],
) -> CecState:
    """What the agent takes the kernel's CEC to be, and why.

    ``mode`` ``active`` or ``inactive`` is taken as set.  ``auto`` asks
    :func:`fmd.hw.cec.detect_cec` under the given roots, but only for the linux
    backend: the sim backend acts on no kernel, and in a Xen dom0 the machine
    checks go to the hypervisor, never through dom0's collector.  A tree that
    cannot be read (debugfs is root-only) gives ``unknown``, treated as inactive:
    fmd then retires the pages itself, as without a collector.
    """
    if mode == cec.ACTIVE:
        return CecState(cec.ACTIVE, "set by the cec property")
    if mode == cec.INACTIVE:
        return CecState(cec.INACTIVE, "set by the cec property")
    if backend != "linux":
        return CecState(
            cec.INACTIVE, f"the {backend} backend does not act on pages of this host's kernel"
        )
    try:
        return detect_cec(debugfs=Path(debugfs), proc=Path(proc), boot=Path(boot))
    except OSError as exc:
        return CecState(cec.UNKNOWN, f"cannot look for it: {exc.strerror or exc}")
