"""The daemon: start-up (restore, replay), steady state, and clean shutdown.

Start-up follows the reference (§2.5), with the store in place of the
exacct logs:

1. open the store (migrations), the dictionaries, the clock and the writer;
2. load the modules (self-diagnosis, entry points, plug-in directories) with
   their ``.conf`` files, restore each one's checkpoint and open cases, and
   call ``init``;
3. **replay**: every uncommitted fault-log and error-log row is dispatched to
   the modules whose checkpoint has not covered it (each event reaches a
   module at most once);
   Then the diagnoses whose resources must stay retired are re-sent to the
   response agents that ask for it (``Plugin.replay_faults``): a reboot
   brings CPUs back online, and a crash may have come between an agent's
   retire and the close of the case;
4. start the module threads and wait until the replay is consumed — the
   transports stay closed until then — then open the control socket and the
   transports and report readiness.

Shutdown (SIGTERM): close the transports and the control socket, let every
queue drain and every checkpoint commit, then stop the modules and the writer.
"""

from __future__ import annotations

import fcntl
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from fmd.adm.admin import register_admin
from fmd.adm.requests import register_requests
from fmd.adm.server import AdmServer
from fmd.api import Handle, ModuleContext
from fmd.case import Case
from fmd.clock import SimulatedClock, make_clock
from fmd.config import Properties, parse_conf
from fmd.dictionary import DictionarySet, default_dict_dirs
from fmd.dispatch import Dispatcher, ModuleGoneOp
from fmd.errors import ConfigError, FmdError, ModuleError
from fmd.eventq import EventItem, EventQueue
from fmd.hw.dedup import MAX_ENTRIES as MAX_DEDUP_ENTRIES
from fmd.hw.dedup import HardwareDedup
from fmd.hw.topo import LinuxPlatform, XenPlatform, choose_platform
from fmd.module import ModuleRunner, ModuleState, Plugin, PluginSource, discover, load_file
from fmd.paths import Paths, install_default_conf
from fmd.protocol import ProtocolError, validate_pattern
from fmd.replay import load_refs, queue_fault_replays, replay_uncommitted
from fmd.secure import PID_FILE_MODE, STATE_FILE_MODE, access_gid, check_trusted, open_file
from fmd.selfdiag import SelfDiagnosis
from fmd.serd import SerdSet
from fmd.store import Store, queries
from fmd.store.health import StoreHealth
from fmd.timerq import TimerQueue
from fmd.xprt import Ingest
from fmd.xprts.file import FileTransport
from fmd.xprts.host import build_sources
from fmd.xprts.socket import SocketTransport
from fmd.xprts.source import Source

log = structlog.get_logger("fmd.daemon")

VERSION = "1.2"


@dataclass(frozen=True, slots=True)
class _SavedState:
    """What the store holds for the modules: documents, SERD engines, cases."""

    docs: dict[str, str]
    serds: dict[str, dict[str, str]]
    # Cases still being built, restored whole; diagnosed ones, restored by uuid.
    cases: dict[str, list[Case]]
    lazy: dict[str, list[str]]


class PidLock:
    """An exclusive lock on ``fmd.pid`` so two daemons never share a root.

    The file is opened without following a link and must be a regular file
    owned by fmd's user: a planted ``fmd.pid`` link would otherwise make root
    fmd truncate whatever it points to.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_file(self.path, os.O_RDWR, PID_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FmdError(
                f"fmd is already running with this root (pid {other}, lock {self.path})"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise FmdError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(self._fd)
                self._fd = None


class Daemon:
    """One fmd instance on one root."""

    def __init__(self, paths: Paths, props: Properties) -> None:
        self.paths = paths
        self.props = props
        self.clock = make_clock(props.get_str("clock"))
        self.runners: dict[str, ModuleRunner] = {}
        self.load_errors: list[str] = []
        self.dispatcher = Dispatcher()
        self._stop = threading.Event()
        self._cases: dict[str, ModuleRunner] = {}
        self._cases_lock = threading.Lock()
        self._modules_lock = threading.Lock()
        self._transports: list[SocketTransport | FileTransport | Source] = []
        self._pidlock = PidLock(paths.pid_file)
        self.started_ns = time.time_ns()
        self.replayed = 0
        self.adm: AdmServer | None = None
        self.ingest: Ingest | None = None
        # Host source -> why it runs or not (fmd.xprts.plan), for fmadm config.
        self.source_choice: dict[str, str] = {}
        # Things the operator must hear about at start-up although fmd could
        # start (a salvaged database, ...): ``fmd`` prints each as a warning.
        self.warnings: list[str] = []

    # -- start-up ----------------------------------------------------------
    def start(self) -> None:
        # The group that may read the database, log and archives (None: fmd's own).
        self.gid = access_gid(self.props.get_str("access.group"))
        self.paths.ensure_dirs(self.gid)
        try:
            if install_default_conf(self.paths):
                log.info("conf_installed", path=str(self.paths.conf_file))
        except FmdError as exc:
            # Only a convenience: fmd runs on its defaults without the example.
            log.warning("conf_install_failed", error=str(exc))
            self.warnings.append(f"{exc} (the commented example configuration was not copied)")
        self._pidlock.acquire()
        try:
            self._start()
        except BaseException:
            self._pidlock.release()
            raise

    def _start(self) -> None:
        p = self.props
        # Settings fmd reads besides fmd.conf must be as trustworthy (fmd.secure).
        check_trusted(self.paths.topology_file, "read")
        self.dict_dirs = [self.paths.dict_dir, *default_dict_dirs()]
        self._check_dict_dir(self.paths.dict_dir)
        if not p.get_str("store.url"):
            self._create_db_file()
        self.store = Store(
            p.get_str("store.url"), db_file=self.paths.db_file, sync=p.get_str("store.sync")
        )
        if self.store.salvage is not None:
            # A corrupt database was moved aside and salvaged (fmd.store.salvage).
            self.warnings.extend(self.store.salvage.warnings())
            log.warning("store_salvaged", **self.store.salvage.log_fields())
        self.dicts = DictionarySet.load(self.dict_dirs)
        if self.dicts.get("FMD") is None:
            raise ConfigError(
                "the FMD dictionary was not found in "
                f"{', '.join(str(d) for d in self.dict_dirs)}; reinstall fmd"
            )
        db_dir = None if self.store.path is None else self.store.path.parent
        self.health = StoreHealth(db_dir, p.get_size("log.minfree"))
        self.writer = self.store.writer(
            max_batch=p.get_int("store.batch"),
            before_commit=self.dispatcher.before_commit,
            after_commit=self.dispatcher.after_commit,
            health=self.health,
        )
        self.timers = TimerQueue(self.clock)
        self.platform = choose_platform(
            p.get_str("platform"),
            topology_file=self.paths.topology_file,
            sysfs_root=Path(p.get_str("topo.sysfs")),
            is_root=os.geteuid() == 0,
            xenpm=p.get_str("topo.xenpm"),
        )
        self.ctx = ModuleContext(
            clock=self.clock,
            writer=self.writer,
            dicts=self.dicts,
            timers=self.timers,
            tree=self.dispatcher.tree,
            authority=tuple(self.platform.authority),
            platform=self.platform,
            case_owner=self.case_owner,
            register_case=self._register_case,
            save_checkpoints=p.get_bool("ckpt.save"),
            checkpoint_failed=self._checkpoint_failed,
            load_case=self._load_case,
            cases_holding=self._cases_holding,
        )
        self._load_modules()
        self._modules_running()
        self.replayed = replay_uncommitted(self.store, self.dispatcher)
        self.writer.start()
        self.timers.start()
        self.timers.install(p.get_time_ns("gc_interval"), self._gc, None, internal=True)
        for r in self.runners.values():
            if r.state is ModuleState.LOADING:
                r.start()
        # The replay is queued (as references the modules read back on their own
        # threads) ahead of anything new, so fmd opens its sockets at once and the
        # modules work through it in the background.  With the simulated clock,
        # which tests and replays advance by control events, fmd first lets the
        # modules finish, so that no timer a replayed event installs races an
        # advance of the clock.
        if isinstance(self.clock, SimulatedClock) and not self.quiesce(300.0):
            log.warning("replay_slow", note="modules still busy after 300 s; starting anyway")
        self.fault_replays = queue_fault_replays(
            self.store, self.dispatcher, list(self.runners.values())
        )
        # Transports first: once the control socket answers, fmd is fully up.
        self._start_transports()
        self.adm = AdmServer(self.paths.adm_socket)
        register_requests(self.adm, self)
        register_admin(self.adm, self)
        self.adm.start()
        # Ingest allocates many short-lived objects; the default gen-0 threshold
        # (700) makes the cyclic collector run thousands of times a second and
        # rescan everything long-lived.  Freeze what start-up built and collect
        # less often.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        log.info(
            "fmd_ready",
            root=str(self.paths.root),
            version=VERSION,
            store=self.store.safe_url,
            modules=sorted(self.runners),
            replayed=self.replayed,
            clock=p.get_str("clock"),
            platform=type(self.platform).__name__,
        )

    def _check_dict_dir(self, directory: Path) -> None:
        """The root's dictionary directory and its files must be trusted (fmd.secure)."""
        check_trusted(directory, "read dictionaries from")
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.suffix in (".dict", ".po"):
                    check_trusted(path, "read")

    def _create_db_file(self) -> None:
        """Create the SQLite database 0640 (group ``access.group``) before SQLite
        opens it, so that its ``-wal`` and ``-shm`` files get the same mode; an
        existing database and its companions are given that mode too."""
        db = self.paths.db_file
        for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
            if path is db or os.path.lexists(path):
                os.close(open_file(path, os.O_RDWR, STATE_FILE_MODE, self.gid))

    def _check_dictionaries(self, module: str, names: list[str]) -> None:
        """Refuse a module whose dictionaries fmd cannot find: its diagnoses would
        get the wrong code (ConfigError naming the module, dictionary and fix)."""
        for name in names:
            if self.dicts.get(name) is None:
                raise ConfigError(
                    f"module {module} needs the {name} dictionary, which is not in "
                    f"{', '.join(str(d) for d in self.dict_dirs)}; install {name}.dict and "
                    f"{name}.po in {self.paths.dict_dir}, or disable the module with "
                    f"-o modules.disable={module}"
                )

    def _plugin_sources(self) -> list[PluginSource]:
        dirs = [self.paths.plugin_dir]
        extra = self.props.get_str("plugin.path")
        dirs += [Path(d) for d in extra.split(":") if d]
        found, errors = discover(dirs)
        for err in errors:
            self.load_errors.append(str(err))
            log.error("module_load_failed", error=str(err))
        return [PluginSource(SelfDiagnosis, "built-in"), *found]

    def _load_modules(self) -> None:
        disabled = {
            m.strip() for m in self.props.get_str("modules.disable").split(",") if m.strip()
        }
        saved = self._saved_state()
        for src in self._plugin_sources():
            name = self.props.get_str("self.name") if src.cls is SelfDiagnosis else src.cls.name
            if name in disabled and src.cls is not SelfDiagnosis:
                continue
            self._install(src, saved)

    def _saved_state(self, module: str | None = None) -> _SavedState:
        """Checkpoint documents, SERD engines and cases, by module (or of one module)."""
        with self.store.reader() as conn:
            docs = queries.load_checkpoints(conn)
            serds = queries.load_serd(conn)
            case_rows = queries.load_cases(conn, unsolved_only=True)
            outstanding = queries.outstanding_cases(conn)
        cases_by_module: dict[str, list[Case]] = {}
        for row in case_rows:
            case = _case_of(row)
            if case is not None and (module is None or case.module == module):
                cases_by_module.setdefault(case.module, []).append(case)
        lazy: dict[str, list[str]] = {}
        for uuid, owner in outstanding:
            if module is None or owner == module:
                lazy.setdefault(owner, []).append(uuid)
        return _SavedState(docs, serds, cases_by_module, lazy)

    def _load_case(self, uuid: str) -> Case | None:
        """A case restored lazily, read from the store when its module first uses it."""
        with self.store.reader() as conn:
            rows = queries.load_cases(conn, uuids=[uuid])
        return _case_of(rows[0]) if rows else None

    def _cases_holding(self, event_id: int, module: str) -> list[tuple[str, int]]:
        with self.store.reader() as conn:
            return queries.cases_holding(conn, event_id, module)

    def _install(self, src: PluginSource, saved: _SavedState) -> ModuleRunner | None:
        """Create a module's runner, restore its state and call its init (not started)."""
        cls = src.cls
        name = self.props.get_str("self.name") if cls is SelfDiagnosis else cls.name
        if name in self.runners:
            msg = (
                f"plug-in {src.origin}: module name {name!r} is already used by "
                f"{self.runners[name].origin}"
            )
            self.load_errors.append(msg)
            log.error("module_load_failed", error=msg)
            raise ModuleError(msg)
        runner = self._make_runner(cls, name, src.origin)
        if runner is None:
            return None
        self.runners[name] = runner
        if cls is SelfDiagnosis:
            self.dispatcher.selfdiag = runner
        doc = None
        restore = self.props.get_bool("ckpt.restore")
        if restore and name in saved.docs:
            try:
                doc = orjson.loads(saved.docs[name])
            except orjson.JSONDecodeError as exc:
                log.error("checkpoint_unreadable", module=name, error=str(exc))
        try:
            runner.last_seen = runner.handle.restore(
                doc,
                saved.cases.get(name, []),
                saved.serds.get(name) if restore else None,
                unloaded=saved.lazy.get(name, ()),
            )
        except (FmdError, ValueError, KeyError, TypeError) as exc:
            log.error("checkpoint_restore_failed", module=name, error=str(exc))
            runner.handle.serd = SerdSet()
            runner.last_seen = {"errlog": 0, "fltlog": 0}
        try:
            runner.plugin.init(runner.handle)
        except Exception as exc:
            runner._fail(exc)
            return runner
        patterns = list(cls.subscriptions) + list(runner.handle.conf_subscriptions)
        self.dispatcher.add(runner, patterns)
        return runner

    # -- modules at run time (fmadm load/unload/reset) ------------------------
    def load_module(self, path: Path) -> ModuleRunner:
        """Load a plug-in file into the running daemon."""
        src = load_file(path)
        with self._modules_lock:
            runner = self._install(src, self._saved_state(src.cls.name))
            if runner is None:
                raise ModuleError(f"plug-in {path}: {self.load_errors[-1]}")
            if runner.state is ModuleState.LOADING:
                runner.start()
        log.info("module_loaded", module=runner.name, origin=src.origin)
        return runner

    def unload_module(self, name: str) -> ModuleRunner:
        """Stop a module, save its state and forget it (its cases stay in the store)."""
        with self._modules_lock:
            runner = self.runners.get(name)
            if runner is None:
                raise ModuleError(f"no module named {name!r}; see 'fmadm config'")
            if runner is self.dispatcher.selfdiag:
                raise ModuleError(f"{name} is fmd's own self-diagnosis and cannot be unloaded")
            self.dispatcher.remove(runner)
            runner.stop()
            self.writer.submit(ModuleGoneOp(name))
            with self._cases_lock:
                for uuid in [u for u, r in self._cases.items() if r is runner]:
                    del self._cases[uuid]
            del self.runners[name]
            self.writer.call(lambda tx: None)
        log.info("module_unloaded", module=name)
        return runner

    def reset_module(self, name: str) -> None:
        """Unload a module, delete its checkpoint, SERD engines and unsolved cases,
        and load it again (``fmadm reset``); its diagnoses stay."""
        runner = self.unload_module(name)
        self.writer.call(lambda tx: tx.reset_module(name))
        self.load_errors = [e for e in self.load_errors if name not in e]
        with self._modules_lock:
            src = PluginSource(type(runner.plugin), runner.origin)
            new = self._install(src, self._saved_state(name))
            if new is None:
                raise ModuleError(f"module {name} could not be loaded again after the reset")
            if new.state is ModuleState.LOADING:
                new.start()
        log.info("module_reset", module=name)

    # -- faults that must stay retired ---------------------------------------
    def _make_runner(self, cls: type[Plugin], name: str, origin: str) -> ModuleRunner | None:
        conf_path = self.paths.plugin_conf(name)
        try:
            conf = parse_conf(conf_path)
            props = Properties.build(cls.properties, conf.setprops)
            for pattern, where in conf.subscriptions:
                try:
                    validate_pattern(pattern)
                except ProtocolError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
        except ConfigError as exc:
            msg = f"module {name}: {exc}"
            self.load_errors.append(msg)
            log.error("module_config_invalid", module=name, error=str(exc))
            self._config_defect(name, cls.version, str(exc))
            return None
        dictionaries = list(cls.dictionaries) + [d for d, _ in conf.dictionaries]
        self._check_dictionaries(name, dictionaries)
        handle = Handle(self.ctx, name, cls.version, props, dictionaries)
        handle.conf_subscriptions = [p for p, _ in conf.subscriptions]
        runner = ModuleRunner(
            cls(),
            handle,
            EventQueue(self.props.get_int("client.evqlim"), self.props.get_size("client.evqmem")),
            origin=origin,
            load_overflow=self._load_overflow,
            on_failure=self._module_failed,
            error_policy=self.props.get_str("client.error"),
        )
        runner.name = name
        handle.runner = runner
        return runner

    def _modules_running(self) -> None:
        """Tell self-diagnosis which modules loaded, so that the defect cases of
        modules that failed before this start are repaired (it runs first on
        self-diagnosis's thread, before any event)."""
        sd = self.dispatcher.selfdiag
        if sd is None or not sd.active:
            return
        plugin = sd.plugin
        assert isinstance(plugin, SelfDiagnosis)
        names = [r.name for r in self.runners.values() if r.active and r is not sd]
        sd.call(lambda: plugin.modules_running(sd.handle, names))

    def _config_defect(self, module: str, version: str, error: str) -> None:
        """Report a module's invalid configuration to self-diagnosis (FMD-8000-3F)."""
        sd = self.dispatcher.selfdiag
        if sd is None or not sd.active:
            return
        plugin = sd.plugin
        assert isinstance(plugin, SelfDiagnosis)
        sd.call(lambda: plugin.config_error(sd.handle, module, version, error))

    def _start_transports(self) -> None:
        p = self.props
        ingest = Ingest(
            submit=self.writer.submit,
            clock=self.clock,
            kick_timers=self.timers.kick,
            end_of_time=self._end_of_time,
            max_line=p.get_size("xprt.maxline"),
            err_limit=p.get_int("log.errlimit"),
            err_window_ns=p.get_time_ns("log.errwindow"),
            platform=self.platform,
            health=self.health,
            coalesce=p.get_int("xprt.coalesce"),
            dedup=self._hardware_dedup(),
            # xprt.dedup_window=0 stores every copy and every form of an error.
            pair_memory=p.get_time_ns("xprt.dedup_window") > 0,
        )
        self.ingest = ingest
        with self.store.reader() as conn:
            positions = queries.load_positions(conn)
        for f in [x.strip() for x in p.get_str("xprt.file").split(",") if x.strip()]:
            path = Path(f) if os.path.isabs(f) else self.paths.root / f
            found = positions.get(f"file:{path}")
            t = FileTransport(ingest, path, None if found is None else (found[0], found[1]))
            t.start()
            self._transports.append(t)
        # The host's own error sources: auto picks them on the linux and xen platforms
        # as root (a Xen dom0 hears the hypervisor's telemetry through /dev/mcelog).
        dom0 = isinstance(self.platform, XenPlatform)
        auto_ok = isinstance(self.platform, LinuxPlatform | XenPlatform) and os.geteuid() == 0
        host = build_sources(ingest, p, positions, auto_ok=auto_ok, dom0=dom0)
        self.source_choice = host.choice
        for src in host.sources:
            src.start()
            self._transports.append(src)
        log.info("host_sources", started=[s.name for s in host.sources], choice=host.choice)
        if p.get_bool("xprt.socket"):
            s = SocketTransport(
                ingest,
                self.paths.xprt_socket,
                rate=p.get_int("xprt.rate"),
                burst=p.get_int("xprt.burst"),
            )
            s.start()
            self._transports.append(s)

    def _hardware_dedup(self) -> HardwareDedup | None:
        """The duplicate filter of kernel-logged records, primed with the newest stored."""
        window = self.props.get_time_ns("xprt.dedup_window")
        if window <= 0:
            return None
        dedup = HardwareDedup(window)
        with self.store.reader() as conn:
            n = dedup.preload(queries.recent_enas(conn, MAX_DEDUP_ENTRIES))
        log.debug("dedup_preloaded", events=n)
        return dedup

    # -- cases across modules -----------------------------------------------
    def _register_case(self, uuid: str, runner: ModuleRunner | None) -> None:
        with self._cases_lock:
            if runner is None:
                self._cases.pop(uuid, None)
            else:
                self._cases[uuid] = runner

    def case_owner(self, uuid: str) -> ModuleRunner | None:
        """The module that owns case ``uuid``, if it is loaded."""
        with self._cases_lock:
            return self._cases.get(uuid)

    # -- module failure and overflow ---------------------------------------
    def _module_failed(self, runner: ModuleRunner, exc: BaseException) -> None:
        self.dispatcher.remove(runner)
        self.writer.submit(ModuleGoneOp(runner.name))
        sd = self.dispatcher.selfdiag
        if sd is not None and sd is not runner and sd.active:
            plugin = sd.plugin
            assert isinstance(plugin, SelfDiagnosis)
            sd.call(
                lambda: plugin.module_failed(
                    sd.handle, runner.name, runner.version, runner.error or ""
                )
            )
        if self.props.get_str("client.error") == "stop":
            log.error("fmd_stopping", reason=f"module {runner.name} failed and client.error=stop")
            self.request_stop()

    def _checkpoint_failed(self, module: str, error: BaseException) -> None:
        """A module's checkpoint could not be stored: fail the module (writer thread)."""
        runner = self.runners.get(module)
        if runner is not None:
            runner.fail(ModuleError(f"its checkpoint could not be stored: {str(error)[:300]}"))

    def _load_overflow(self, refs: list[tuple[str, int]]) -> list[EventItem]:
        return load_refs(self.store, refs)

    def _gc(self, _timer_id: int, _arg: object) -> None:
        """Ask every module to drop state it no longer needs (every ``gc_interval``)."""
        for r in list(self.runners.values()):
            if r.active:
                r.call(r.gc)
        self.timers.install(self.props.get_time_ns("gc_interval"), self._gc, None, internal=True)

    def _end_of_time(self, done: Callable[[BaseException | None], None]) -> None:
        """fminject's ``endhrtime`` on the simulated clock: let the modules finish,
        advance to the last deadline they installed, and repeat until no module
        timer is left (at most 1000 rounds); then answer with ``done``."""
        clock = self.clock
        assert isinstance(clock, SimulatedClock)

        def run() -> None:
            try:
                for _ in range(1000):
                    self.quiesce(60.0)
                    last = self.timers.horizon()
                    now = clock.now_ns()
                    if last is None:
                        break
                    clock.advance(max(0, last - now))
                    self.timers.kick()
                    self.timers.wait_settled()
                self.quiesce(60.0)
                log.info("end_of_time", clock_ns=clock.now_ns())
                done(None)
            except Exception as exc:
                done(exc)

        threading.Thread(target=run, name="fmd-end-of-time", daemon=True).start()

    # -- steady state and shutdown ----------------------------------------
    def quiesce(self, timeout: float = 60.0) -> bool:
        """Wait until every queue is empty and every checkpoint is committed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in list(self.runners.values()):
                left = max(0.0, deadline - time.monotonic())
                if not r.queue.wait_idle(left):
                    return False
            if self.writer.holding:
                # The store takes no writes: the modules are idle, and what they
                # saved is held until it does (waiting for it would be in vain).
                return False
            self.writer.call(lambda tx: None, timeout=max(1.0, deadline - time.monotonic()))
            if all(len(r.queue) == 0 and not r.queue.busy for r in self.runners.values()):
                return True
        return False

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    def shutdown(self) -> None:
        log.info("fmd_stopping", reason="shutdown requested")
        for t in self._transports:
            t.stop()
        if self.adm is not None:
            self.adm.stop()
        drain = self.props.get_time_ns("shutdown.wait") / 1e9
        if not self.quiesce(drain):
            # A backlog (a storm, a long replay): what is still queued stays
            # uncommitted and is replayed at the next start; each module stops
            # after the event it is working on and checkpoints what it did.
            dropped = {r.name: r.abandon() for r in self.runners.values()}
            self.quiesce(drain)
            left = {
                name: n + self.runners[name].abandoned
                for name, n in dropped.items()
                if n + self.runners[name].abandoned
            }
            if left:
                log.warning(
                    "shutdown_left_for_replay",
                    events=sum(left.values()),
                    modules=left,
                    note="these events are replayed to these modules at the next start",
                )
        self.timers.stop()
        for r in self.runners.values():
            r.stop()
        self.writer.stop()
        self.store.close()
        self._pidlock.release()
        log.info("fmd_stopped")


def _case_of(row: dict[str, Any]) -> Case | None:
    """A case rebuilt from its stored record and events (None, logged, if unreadable)."""
    try:
        extras = orjson.loads(row["data"]) if row["data"] else {}
        if not isinstance(extras, dict):
            raise ValueError("its stored extras are not a JSON object")
        case = Case.from_store(row, row["suspects"], row["events"], extras)
    except (FmdError, ValueError, KeyError) as exc:
        log.error("case_restore_failed", uuid=row["uuid"], error=str(exc))
        return None
    return case
