"""Which host sources to run: the choice made from properties and what the host offers.

Each source has a property ``xprt.<name>`` (``auto``, ``on`` or ``off``).  ``on``
runs it whatever the host offers (it then shows as unavailable, with the
reason, where it cannot read); ``off`` never runs it.  ``auto`` runs the best
set for the host, and only on the linux and xen platforms as root (the sources read
root-only kernel interfaces; a sim or file platform describes another machine):

* machine checks from **tracefs** when it has the ``mce:mce_record`` event,
  else from **/dev/mcelog** (kernels with ``CONFIG_X86_MCELOG_LEGACY``); in a Xen
  dom0 (the xen platform) from /dev/mcelog, which carries the hypervisor's
  telemetry, and never from tracefs (dom0's own machine-check path is idle);
* the **kernel log** for what the chosen sources do not carry: its machine-check
  blocks only when neither of the above runs, its EDAC lines only when no
  ``ras:mc_event`` tracepoint is read, the kernel's memory-failure verdicts on
  pages only when no ``ras:memory_failure_event`` is read; the AMD decoder,
  firmware (GHES), soft-offline and thermal lines always;
* the **EDAC counters** only where neither a ``ras:mc_event`` tracepoint nor the
  kernel log is read: they are the source of last resort for memory errors (the
  counters never lose a count, but carry no address, so no page can be
  diagnosed from them; and counting both them and the EDAC lines would count
  each error twice);
* **pstore** always (it reads the previous boot's panic records once).

The same event reaching fmd through two sources anyway (both set ``on``) is
stored once (:mod:`fmd.hw.dedup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

AUTO: Final = "auto"
ON: Final = "on"
OFF: Final = "off"
SWITCHES: Final = (AUTO, ON, OFF)

TRACEFS: Final = "tracefs"
KMSG: Final = "kmsg"
MCELOG: Final = "mcelog"
EDAC: Final = "edac"
PSTORE: Final = "pstore"
SOURCES: Final = (TRACEFS, KMSG, MCELOG, EDAC, PSTORE)

# Kernel-log forms (fmd.hw.kmsg): the machine-check blocks and EDAC lines are
# the ones another source may carry already.
FORM_MCE: Final = "mce"
FORM_EDAC: Final = "edac"
FORM_MEMORY_FAILURE: Final = "memory_failure"


@dataclass(frozen=True)
class HostOffer:
    """What the host offers, as the sources' probes found it."""

    tracefs: bool = False  # a tracefs with the mce:mce_record event, usable by fmd
    mc_event: bool = False  # ... and with ras:mc_event
    memory_failure: bool = False  # ... and with ras:memory_failure_event
    dom0: bool = False  # a Xen dom0 (the xen platform): machine checks belong to Xen
    mcelog: bool = False  # /dev/mcelog, readable


@dataclass
class SourcePlan:
    """The sources to run, with the kernel-log forms to leave to other sources."""

    run: list[str] = field(default_factory=list)
    kmsg_skip: frozenset[str] = frozenset()
    why: dict[str, str] = field(default_factory=dict)


def plan_sources(switches: dict[str, str], offer: HostOffer, *, auto_ok: bool) -> SourcePlan:
    """Choose the sources (see the module docstring).

    ``switches`` maps each source to its property value; ``auto_ok`` is whether
    ``auto`` may start anything (linux platform, running as root).
    """

    def wanted(name: str, best: bool) -> bool:
        value = switches.get(name, AUTO)
        if value == ON:
            return True
        if value == OFF:
            return False
        return auto_ok and best

    plan = SourcePlan()
    # In a Xen dom0 the hypervisor takes the machine checks and forwards them to
    # /dev/mcelog; dom0's own mce:mce_record never fires.
    tracefs = wanted(TRACEFS, offer.tracefs and not offer.dom0)
    mcelog = wanted(MCELOG, offer.mcelog and (offer.dom0 or not tracefs))
    mc_event = tracefs and offer.mc_event
    kmsg = wanted(KMSG, True)
    edac = wanted(EDAC, not mc_event and not kmsg)
    pstore = wanted(PSTORE, True)
    skip = set()
    # Only a source that can really read takes lines away from the kernel log: one
    # set on where the host lacks it must not leave machine checks unheard.
    if (tracefs and offer.tracefs) or (mcelog and offer.mcelog):
        skip.add(FORM_MCE)
    if mc_event:
        skip.add(FORM_EDAC)
    if tracefs and offer.tracefs and offer.memory_failure:
        skip.add(FORM_MEMORY_FAILURE)
    # Why auto leaves a source out on this host.
    left_out = {
        TRACEFS: "Xen dom0: the hypervisor's machine checks come through /dev/mcelog"
        if offer.dom0 and offer.tracefs
        else "no tracefs with mce:mce_record here",
        MCELOG: "no /dev/mcelog here" if not offer.mcelog else "tracefs carries the machine checks",
        EDAC: "ras:mc_event or the kernel log carries the memory errors",
        KMSG: "",
        PSTORE: "",
    }
    for name, on in (
        (TRACEFS, tracefs),
        (MCELOG, mcelog),
        (KMSG, kmsg),
        (EDAC, edac),
        (PSTORE, pstore),
    ):
        if on:
            plan.run.append(name)
        plan.why[name] = _why(name, switches.get(name, AUTO), on, auto_ok, left_out[name])
    plan.kmsg_skip = frozenset(skip) if kmsg else frozenset()
    return plan


def _why(name: str, switch: str, on: bool, auto_ok: bool, left_out: str) -> str:
    if switch == ON:
        return f"xprt.{name} is on"
    if switch == OFF:
        return f"xprt.{name} is off"
    if not auto_ok:
        return "auto: only on the linux and xen platforms as root"
    return "auto: chosen for this host" if on else f"auto: {left_out}"
