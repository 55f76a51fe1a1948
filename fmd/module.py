"""Modules: the plug-in contract, loading and validation, and each module's
thread with its failure boundary.

A module is a subclass of :class:`Plugin`.  Built-in and third-party modules
are found the same way, through the ``fmd.modules`` entry-point group, plus
``*.py`` files in the plug-in directories (``<root>/usr/lib/fm/fmd/plugins``
and ``plugin.path``).  Each is validated when it loads, with a message naming
the plug-in, what was expected and what was found.

Life of a module (:class:`ModuleState`)::

    LOADING --init ok--> ACTIVE --recv/timeout/close raised--> FAILED
       |                   |
       +--init raised--> FAILED          ACTIVE --fmadm unload/shutdown--> UNLOADED

A module runs on its own thread, draining its :class:`~fmd.eventq.EventQueue`
in batches.  After each batch it checkpoints (SERD engines, buffers, cases,
progress) through the writer.

Failure boundary (``client.error``, :data:`ERROR_POLICIES`): an exception from
``recv``, ``timeout`` or a call run on the module's thread fails *that item*
by default (``event``): it is counted in the module's ``fmd.ev_fail``
statistic, logged with its traceback once per kind of failure, the cases the
event opened and left unsolved are discarded, and the module goes on with the
next event — one bad value can never disable diagnosis.  With ``unload`` the
module is marked FAILED instead (its queue dropped, its subscriptions removed,
self-diagnosis opens a ``defect.sunos.fmd.module`` case); with ``stop`` fmd
also shuts down.  An exception from ``init``, from ``fini`` or while packing a
checkpoint always fails the module: it cannot make progress.  A failed module
is loaded afresh at the next start.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from fmd.config import PropSpec
from fmd.errors import ConfigError, ModuleError
from fmd.eventq import CallItem, EventItem, EventQueue, Item, TimeoutItem
from fmd.log import Once, exception_signature
from fmd.protocol import ProtocolError, validate_pattern
from fmd.secure import check_trusted

if TYPE_CHECKING:
    from fmd.api import Handle
    from fmd.case import Case

log = structlog.get_logger("fmd.module")

ENTRY_POINT_GROUP = "fmd.modules"
# The statistic (fmstat -m) counting the events, timers and calls that raised.
EV_FAIL_STAT = "fmd.ev_fail"
EV_FAIL_DESCRIPTION = "events, timers and requests that raised and were failed alone"

# client.error: what an exception from a module's event, timer or call does.
POLICY_EVENT = "event"
POLICY_UNLOAD = "unload"
POLICY_STOP = "stop"
ERROR_POLICIES = (POLICY_EVENT, POLICY_UNLOAD, POLICY_STOP)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class Plugin:
    """Base class of every fmd module.  Override what you need.

    Class attributes describe the module; ``subscriptions`` are added to the
    ``subscribe`` lines of its ``etc/fmd/plugins/<name>.conf``, and
    ``properties`` is its typed property table (``setprop`` lines override the
    defaults).  ``dictionaries`` names the fault dictionaries its codes come
    from.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1.0"
    description: ClassVar[str] = ""
    subscriptions: ClassVar[tuple[str, ...]] = ()
    properties: ClassVar[tuple[PropSpec, ...]] = ()
    dictionaries: ClassVar[tuple[str, ...]] = ()
    # True for a response agent that must be re-sent, at start-up, the
    # diagnoses whose resources are still faulty (to retire them again).
    replay_faults: ClassVar[bool] = False

    def init(self, hdl: Handle) -> None:
        """Called once after the module's state has been restored."""

    def recv(self, hdl: Handle, event: Any) -> None:
        """An event (an :class:`~fmd.protocol.Ereport` or a ``ListEvent``) arrived."""

    def timeout(self, hdl: Handle, timer_id: int, arg: Any) -> None:
        """A timer installed with ``hdl.timer_install`` expired."""

    def close(self, hdl: Handle, case: Case) -> None:
        """One of the module's cases is being closed."""

    def gc(self, hdl: Handle) -> None:
        """Periodic garbage collection (``gc_interval``); SERD engines are aged first."""

    def fini(self, hdl: Handle) -> None:
        """The module is being unloaded or fmd is shutting down."""

    def replay_isolated(self, hdl: Handle) -> bool:
        """For a ``replay_faults`` agent, at start-up: must the faults it already
        isolated be re-sent too?  True (the default) when what it did may have
        been undone since (the host rebooted); False re-sends only what it has
        not finished acting on (see :mod:`fmd.replay`)."""
        return True


class ModuleState(enum.StrEnum):
    LOADING = "loading"
    ACTIVE = "active"
    FAILED = "failed"
    UNLOADED = "unloaded"


@dataclass(frozen=True, slots=True)
class PluginSource:
    """Where a plug-in class came from (for messages and ``fmadm config``)."""

    cls: type[Plugin]
    origin: str


def validate_plugin(cls: object, origin: str) -> type[Plugin]:
    """Check a candidate plug-in class; raise ModuleError saying what is wrong."""
    if not (inspect.isclass(cls) and issubclass(cls, Plugin)):
        raise ModuleError(
            f"plug-in {origin}: expected a subclass of fmd.module.Plugin, found {cls!r}"
        )
    if not isinstance(cls.name, str) or not _NAME_RE.match(cls.name):
        raise ModuleError(
            f"plug-in {origin}: expected 'name' to be a lower-case module name "
            f"([a-z][a-z0-9_-]*), found {cls.name!r}"
        )
    if not isinstance(cls.version, str) or not cls.version:
        raise ModuleError(
            f"plug-in {origin}: expected a non-empty 'version' string, found {cls.version!r}"
        )
    for p in cls.subscriptions:
        try:
            validate_pattern(p)
        except ProtocolError as exc:
            raise ModuleError(f"plug-in {origin}: bad subscription {p!r}: {exc}") from exc
    for spec in cls.properties:
        if not isinstance(spec, PropSpec):
            raise ModuleError(
                f"plug-in {origin}: expected 'properties' to hold PropSpec items, found {spec!r}"
            )
    return cls


def _plugins_in_module(mod: Any, origin: str) -> list[type[Plugin]]:
    explicit = getattr(mod, "fmd_module", None)
    if explicit is not None:
        return [validate_plugin(explicit, origin)]
    found = [
        obj
        for obj in vars(mod).values()
        if inspect.isclass(obj)
        and issubclass(obj, Plugin)
        and obj is not Plugin
        and obj.__module__ == mod.__name__
    ]
    if len(found) != 1:
        raise ModuleError(
            f"plug-in {origin}: expected exactly one Plugin subclass (or a 'fmd_module' "
            f"attribute), found {len(found)}"
        )
    return [validate_plugin(found[0], origin)]


def load_file(path: Path) -> PluginSource:
    """Import a plug-in from a ``.py`` file, which must be trusted (:mod:`fmd.secure`):
    a file others could write would run their code as fmd."""
    try:
        check_trusted(path, "load plug-in")
    except ConfigError as exc:
        raise ModuleError(str(exc)) from None
    modname = f"fmd_plugin_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ModuleError(f"plug-in {path}: cannot be imported as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(modname, None)
        raise ModuleError(f"plug-in {path}: import failed: {exc}") from exc
    return PluginSource(_plugins_in_module(mod, str(path))[0], str(path))


def discover(plugin_dirs: Iterable[Path]) -> tuple[list[PluginSource], list[ModuleError]]:
    """Every plug-in from entry points and plug-in directories, and the load errors.

    A plug-in directory or file that others than root and fmd's user could write
    is not loaded (an error each, see :func:`fmd.secure.check_trusted`).
    """
    found: list[PluginSource] = []
    errors: list[ModuleError] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        origin = f"entry point {ep.name} = {ep.value}"
        try:
            found.append(PluginSource(validate_plugin(ep.load(), origin), origin))
        except ModuleError as exc:
            errors.append(exc)
        except Exception as exc:
            errors.append(ModuleError(f"plug-in {origin}: import failed: {exc}"))
    for d in plugin_dirs:
        if not d.is_dir():
            continue
        try:
            check_trusted(d, "load plug-ins from")
        except ConfigError as exc:
            errors.append(ModuleError(str(exc)))
            continue
        for path in sorted(d.glob("*.py")):
            try:
                found.append(load_file(path))
            except ModuleError as exc:
                errors.append(exc)
    return found, errors


class ModuleRunner:
    """One loaded module: its plug-in instance, handle, queue and thread."""

    def __init__(
        self,
        plugin: Plugin,
        handle: Handle,
        queue: EventQueue,
        *,
        origin: str,
        load_overflow: Callable[[list[tuple[str, int]]], list[EventItem]],
        on_failure: Callable[[ModuleRunner, BaseException], None],
        batch: int = 2048,
        error_policy: str = POLICY_EVENT,
    ) -> None:
        self.plugin = plugin
        self.handle = handle
        self.queue = queue
        self.origin = origin
        self.name = type(plugin).name
        self.version = type(plugin).version
        self.description = type(plugin).description
        self.state = ModuleState.LOADING
        self.error: str | None = None
        self.last_seen: dict[str, int] = {"errlog": 0, "fltlog": 0}
        self._load_overflow = load_overflow
        self._on_failure = on_failure
        self._batch = batch
        self._thread: threading.Thread | None = None
        self._fail_lock = threading.Lock()
        self.stats = {"ev_recv": 0, "ev_acpt": 0, "svc_ns": 0, "busy_ns": 0, "ev_fail": 0}
        self.started_ns = time.monotonic_ns()
        self.error_policy = error_policy
        self._once = Once()
        self._abandoning = threading.Event()
        self.abandoned = 0  # events of a batch given up at shutdown

    @property
    def active(self) -> bool:
        """Loaded and not failed: events may be queued to it (also while starting up)."""
        return self.state in (ModuleState.LOADING, ModuleState.ACTIVE)

    def start(self) -> None:
        self.state = ModuleState.ACTIVE
        self._thread = threading.Thread(target=self._run, name=f"fmd-mod-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.state is ModuleState.ACTIVE:
            if self._guard(lambda: self.plugin.fini(self.handle)):
                # What fini changed is saved like any batch's changes.
                self._guard(self._final_checkpoint)
            if self.state is ModuleState.ACTIVE:
                self.state = ModuleState.UNLOADED

    def _final_checkpoint(self) -> None:
        self.handle.checkpoint(dict(self.last_seen))

    def abandon(self) -> int:
        """Shutdown with a backlog: stop taking events (the batch in progress stops
        after its current event) and forget what is queued; the events stay
        uncommitted and are replayed at the next start.  Returns how many queued
        events were forgotten (the batch's rest is counted in ``abandoned``)."""
        self._abandoning.set()
        return self.queue.drop_backlog()

    def call(self, fn: Callable[[], Any], wait: float | None = None) -> Any:
        """Run ``fn`` on the module's thread; wait for its result if ``wait`` is given."""
        item = CallItem(fn)
        self.queue.put_front(item)
        if wait is None:
            return None
        if not item.done.wait(wait):
            raise ModuleError(f"module {self.name} did not answer within {wait} s")
        if item.error is not None:
            raise item.error
        return item.result

    def gc(self) -> None:
        """On the module's thread: age SERD engines, then the plug-in's own gc."""
        dropped = self.handle.serd.gc()
        if dropped:
            log.debug("module_gc", module=self.name, serd_events_dropped=dropped)
        self.plugin.gc(self.handle)

    def post_timeout(self, timer_id: int, arg: Any) -> None:
        if self.active:
            self.queue.put_front(TimeoutItem(timer_id, arg))

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        while True:
            items: list[Item] | None = self.queue.get_batch(self._batch)
            if items is None:
                return
            if not items:
                refs = self.queue.take_overflow(self._batch)
                try:
                    items = list(self._load_overflow(refs)) if refs else []
                except Exception as exc:
                    # The store could not be read: keep the references, in
                    # order, and try again shortly.
                    log.error("overflow_reload_failed", module=self.name, error=str(exc)[:300])
                    self.queue.return_overflow(refs)
                    self.queue.idle()
                    time.sleep(1.0)
                    continue
            if not self.active:
                # Failed or unloaded: nothing runs, but a caller waiting on a
                # call is answered now rather than left to time out.
                for item in items:
                    if isinstance(item, CallItem):
                        item.error = ModuleError(f"module {self.name} is not active")
                        item.done.set()
                self.queue.idle()
                continue
            t0 = time.monotonic_ns()
            try:
                for i, item in enumerate(items):
                    if self._abandoning.is_set():
                        # Shutdown: the rest of the batch stays uncommitted and
                        # is replayed at the next start.
                        self.abandoned += sum(isinstance(x, EventItem) for x in items[i:])
                        break
                    self._handle(item)
                self.handle.checkpoint(dict(self.last_seen))
            except Exception as exc:
                self._fail(exc)
                for item in items:
                    if isinstance(item, CallItem) and not item.done.is_set():
                        item.error = ModuleError(f"module {self.name} failed: {exc}")
                        item.done.set()
            finally:
                self.stats["busy_ns"] += time.monotonic_ns() - t0
                self.queue.idle()

    def _handle(self, item: Item) -> None:
        if isinstance(item, EventItem):
            self.stats["ev_recv"] += 1
            self.handle.begin_event(item)
            try:
                self.plugin.recv(self.handle, item.event)
            except Exception as exc:
                self.handle.discard_partial()
                self._item_failed(exc, f"{item.log} event {item.id} ({item.event.cls})")
            finally:
                self.handle.end_event()
            if item.id > self.last_seen[item.log]:
                self.last_seen[item.log] = item.id
        elif isinstance(item, TimeoutItem):
            if self.handle.timer_fired(item.timer_id):
                try:
                    self.plugin.timeout(self.handle, item.timer_id, item.arg)
                except Exception as exc:
                    self._item_failed(exc, f"timer {item.timer_id}")
        else:
            try:
                item.result = item.fn()
            except Exception as exc:
                item.error = exc
                if not isinstance(exc, ModuleError):
                    self._item_failed(exc, "a request run on the module's thread")
            finally:
                item.done.set()

    def _item_failed(self, exc: Exception, what: str) -> None:
        """An event, timer or call raised: fail it alone, or (by policy) the module."""
        if self.error_policy != POLICY_EVENT:
            raise exc
        self.stats["ev_fail"] += 1
        self.handle.stat(EV_FAIL_STAT, EV_FAIL_DESCRIPTION).incr()
        if self._once.first(exception_signature(exc)):
            log.error(
                "module_event_failed",
                module=self.name,
                item=what,
                error=f"{type(exc).__name__}: {exc}",
                note="this item failed alone; the module goes on (logged once per kind)",
                traceback="".join(traceback.format_exception(exc)),
            )

    def _guard(self, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except Exception as exc:
            self._fail(exc)
            return False
        return True

    def fail(self, exc: BaseException) -> None:
        """Mark the module failed from outside its thread (a checkpoint it cannot store)."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._fail_lock:
            if self.state is ModuleState.FAILED:
                return
            self.state = ModuleState.FAILED
        self.error = f"{type(exc).__name__}: {exc}"
        log.error(
            "module_failed",
            module=self.name,
            error=self.error,
            traceback="".join(traceback.format_exception(exc)),
        )
        self.queue.drop_all()
        self._on_failure(self, exc)
