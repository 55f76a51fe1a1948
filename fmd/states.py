"""The numbered states and flags that events, cases and suspects carry.

They are stored in the database and sent over the control socket as numbers,
so every layer (store, module API, control requests, commands) names them from
here instead of writing the numbers.  This module imports nothing of fmd.

Error-log events (``errlog.state``), as in illumos' ``fmd_event.c``; they only
move forward, and an event still RECEIVED when it is committed becomes
DISCARDED (no module kept it)::

    RECEIVED --a module's SERD engine or case holds it--> ACCEPTED
    RECEIVED/ACCEPTED --a solved case holds it----------> DIAGNOSED
    RECEIVED --committed, nobody kept it----------------> DISCARDED

Cases (:class:`CaseState`), numbered as in illumos; the transitions and who
makes them are drawn in :mod:`fmd.case`.  :class:`CaseFlag` bits are kept
beside the state.

A suspect's fault status (``suspects.status``, ``fault-status`` of a list
event) is a set of ``FAULT_*`` bits, as in illumos' ``fmd_asru.h``.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Final

# -- error-log events -------------------------------------------------------------

STATE_DISCARDED: Final = 0
STATE_RECEIVED: Final = 1
STATE_ACCEPTED: Final = 2
STATE_DIAGNOSED: Final = 3
STATE_NAMES: Final = {
    STATE_DISCARDED: "discarded",
    STATE_RECEIVED: "received",
    STATE_ACCEPTED: "accepted",
    STATE_DIAGNOSED: "diagnosed",
}


# -- cases ------------------------------------------------------------------------


class CaseState(IntEnum):
    """The lifecycle states of a case, numbered as in illumos."""

    UNSOLVED = 0
    SOLVED = 1
    CLOSE_WAIT = 2
    CLOSED = 3
    REPAIRED = 4
    RESOLVED = 5


class CaseFlag(IntFlag):
    """Flags kept alongside the state; DIRTY means "checkpoint me"."""

    DIRTY = 0x01
    SOLVED = 0x02
    ISOLATED = 0x04
    REPAIRED = 0x08
    RESOLVED = 0x10
    INVISIBLE = 0x20
    INJECTED = 0x40


# -- suspects' fault status ---------------------------------------------------------

FAULT_FAULTY: Final = 0x1
FAULT_UNUSABLE: Final = 0x2
FAULT_NOT_PRESENT: Final = 0x4
FAULT_DEGRADED: Final = 0x8
FAULT_REPAIRED: Final = 0x10
FAULT_REPLACED: Final = 0x20
FAULT_ACQUITTED: Final = 0x40


# -- responses ----------------------------------------------------------------------

RESPONSE_KERNEL: Final = "kernel"
"""The ``action`` of a response saying that the kernel, not fmd, takes the
resource out of service (it retired the page, or fmd left the page to it):
``fmadm faulty`` shows it without ``-v``, since the status line alone would not
say who acted."""

RESPONSE_NONE: Final = "none"
"""The ``action`` of a response saying that an agent deliberately took no action
(disabled by a property, a virtual CPU left online): ``fmadm faulty`` shows its
detail alone, which says why."""
