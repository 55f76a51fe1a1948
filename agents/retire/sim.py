"""The sim retire backend: simulated CPUs and pages whose state lives in the fmd store.

It owns the rows of table ``hw_state`` (written through
:func:`fmd.store.hwstate.set_hw_state`, read through
:func:`~fmd.store.hwstate.hw_state`): ``("cpu", cpuid)`` is "offline" or
"online", ``("page", page-aligned physical address)`` is "retired" or
"online".  A CPU or page with no row is online, so a fresh store describes a
healthy machine.  Each change is its own short transaction, committed before the
method returns; a new backend on the same database (after a restart) sees it.

Nothing on the host is touched, which makes this the default backend for tests,
demonstrations and hosts where fmd should diagnose without acting.

Optional simulation settings: ``cpus`` (the CPUs that exist; None means every
non-negative cpuid) and ``not_hotpluggable`` (CPUs that refuse to go offline,
as cpu0 does on many Linux machines; empty by default so that any CPU can be
retired in a simulation).

Errors: an unknown CPU or one that is not hot-pluggable raises a
non-retryable :class:`BackendError`; a database that is busy or unreachable
(SQLAlchemy ``OperationalError``) a retryable one; any other database error a
non-retryable one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import ClassVar

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from agents.retire.backend import (
    BackendError,
    CpuState,
    CpuTarget,
    PageOutcome,
    PageState,
    RetireBackend,
    check_cpuid,
    page_align,
)
from fmd.store import hwstate

log = structlog.get_logger("fmd.retire.sim")

CPU = "cpu"
PAGE = "page"
# The values stored in hw_state.state.
CPU_OFFLINE = "offline"
CPU_ONLINE = "online"
PAGE_RETIRED = "retired"
PAGE_ONLINE = "online"
# The one boot of the simulated machine (what it did is never undone).
SIM_BOOT = "sim"


class SimBackend(RetireBackend):
    """CPUs and pages that exist only as rows in the fmd store."""

    name: ClassVar[str] = "sim"

    def __init__(
        self,
        engine: Engine,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        cpus: Iterable[int] | None = None,
        not_hotpluggable: Iterable[int] = (),
    ) -> None:
        self.engine = engine
        self.now_ns = now_ns
        self.cpus = None if cpus is None else frozenset(cpus)
        self.not_hotpluggable = frozenset(not_hotpluggable)

    def boot_id(self) -> str:
        """The simulated machine never reboots: its state lives in the store."""
        return SIM_BOOT

    def describe(self) -> str:
        where = self.engine.url.render_as_string(hide_password=True)
        cpus = "any cpuid" if self.cpus is None else f"{len(self.cpus)} cpus"
        return f"sim (hw_state table in {where}; {cpus})"

    # -- CPUs ---------------------------------------------------------------

    def cpu_offline(self, cpu: CpuTarget) -> None:
        self._check_cpu(cpu)
        if cpu.cpuid in self.not_hotpluggable:
            raise BackendError(f"cpu{cpu.cpuid} is not hot-pluggable; it cannot be offlined")
        self._set(CPU, cpu.cpuid, CPU_OFFLINE)

    def cpu_online(self, cpu: CpuTarget) -> None:
        self._check_cpu(cpu)
        self._set(CPU, cpu.cpuid, CPU_ONLINE)

    def cpu_status(self, cpu: CpuTarget) -> CpuState:
        self._check_cpu(cpu)
        state = self._get(CPU, cpu.cpuid)
        return CpuState.OFFLINE if state == CPU_OFFLINE else CpuState.ONLINE

    # -- pages --------------------------------------------------------------

    def page_retire(self, physaddr: int) -> PageOutcome:
        self._set(PAGE, page_align(physaddr), PAGE_RETIRED)
        return PageOutcome.DONE

    def page_unretire(self, physaddr: int) -> None:
        self._set(PAGE, page_align(physaddr), PAGE_ONLINE)

    def page_status(self, physaddr: int) -> PageState:
        state = self._get(PAGE, page_align(physaddr))
        return PageState.RETIRED if state == PAGE_RETIRED else PageState.USABLE

    # -- the store ----------------------------------------------------------

    def _check_cpu(self, cpu: CpuTarget) -> None:
        check_cpuid(cpu)
        if self.cpus is not None and cpu.cpuid not in self.cpus:
            raise BackendError(f"no such CPU {cpu.cpuid} in the simulated machine")

    def _set(self, kind: str, ident: int, state: str) -> None:
        try:
            with self.engine.begin() as conn:
                hwstate.set_hw_state(conn, kind, ident, state, self.now_ns())
        except SQLAlchemyError as exc:
            raise _store_error(exc, f"recording {_name(kind, ident)} as {state}") from exc
        log.info("retire_backend_sim_set", kind=kind, ident=ident, state=state)

    def _get(self, kind: str, ident: int) -> str | None:
        try:
            with self.engine.connect() as conn:
                return hwstate.hw_state(conn, kind, ident)
        except SQLAlchemyError as exc:
            raise _store_error(exc, f"reading the state of {_name(kind, ident)}") from exc


def _name(kind: str, ident: int) -> str:
    return f"cpu{ident}" if kind == CPU else f"the page at {ident:#x}"


def _store_error(exc: SQLAlchemyError, doing: str) -> BackendError:
    """A database failure as a backend error; a busy or lost database is worth a retry."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return BackendError(
        f"the fmd store failed while {doing}: {reason[0] if reason else type(exc).__name__}",
        retryable=isinstance(exc, OperationalError),
    )
