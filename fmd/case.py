"""The case state machine: what a diagnosis knows and how far it has progressed.

A case groups the ereports a diagnosis module believes share one cause, the
suspect list it convicts, and the lifecycle that follows.  This module is
pure data: it validates transitions and keeps flags, but it never logs,
dispatches ``list.*`` events or touches the database; the daemon does that
around each transition.

::

                     solve()                      close()
    +----------+     module     +--------+    agent or module     +------------+
    | UNSOLVED | -------------> | SOLVED | ---------------------> | CLOSE_WAIT |
    +----------+                +--------+                        +------------+
         |                          |                               ^       |
         |  close(): module, no     |  repair(): fmadm, before      |       | fmd, after the
         |  diagnosis possible      |  anything closed the case     |       | close callback
         +--------------------------|-------------------------------+       v
                                    |                                  +--------+
                                    v                                  | CLOSED |
                              +----------+   repair(): fmadm, or fmd   +--------+
                              | REPAIRED | <-- sees a replaced part ------+
                              +----------+
                                    |  resolve(): fmd, every resource usable again
                                    v
                              +----------+
                              | RESOLVED |
                              +----------+

* UNSOLVED -> SOLVED: the module calls ``solve()`` with at least one suspect;
  fmd convicts the suspects, logs and dispatches ``list.suspect``.
* UNSOLVED -> CLOSE_WAIT: the module closes a case it could not diagnose;
  after its close callback the case is discarded.
* SOLVED -> CLOSE_WAIT: an agent (or the module) closes a solved case once
  the faulty resources were isolated; the ISOLATED flag is set.
* SOLVED -> REPAIRED: an administrator repairs the suspects before anything
  closed the case (the reference's repair path accepts any solved case).
* CLOSE_WAIT -> CLOSED: fmd, after running the module's close callback.
* CLOSED -> REPAIRED: fmadm repaired/replaced/acquit, or fmd noticing that a
  part was replaced; only a case that was solved can be repaired.
* REPAIRED -> RESOLVED: fmd, once every resource of the case is usable again;
  the case is then discarded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import orjson

from fmd.errors import CaseStateError, ProtocolError
from fmd.states import CaseFlag, CaseState

# A case keeps the ids of its first MAX_CASE_EVENTS ereports and only counts the
# rest (``ereports``), as illumos bounds what a case holds: errors that keep
# arriving for a resource already diagnosed cost O(1) each and never grow the
# case, however long a storm lasts.
MAX_CASE_EVENTS: Final = 256

# The members of a suspect the store keeps in columns of their own (the
# ``suspects`` table); the rest go to the case's stored extras.
SUSPECT_COLUMNS: Final = ("class", "certainty", "asru", "fru", "resource", "location", "status")

_NO_FLAGS = CaseFlag(0)
# (name, bit) of every flag, for fast encoding (iterating an IntFlag is slow).
_FLAG_BITS = tuple((f.name or "", int(f)) for f in CaseFlag)
_DIRTY = int(CaseFlag.DIRTY)

TRANSITIONS: Mapping[CaseState, frozenset[CaseState]] = MappingProxyType(
    {
        # solve(): a diagnosis; close(): the module gives up without one.
        CaseState.UNSOLVED: frozenset({CaseState.SOLVED, CaseState.CLOSE_WAIT}),
        # close() after isolation; or a repair that arrives before any close.
        CaseState.SOLVED: frozenset({CaseState.CLOSE_WAIT, CaseState.REPAIRED}),
        # fmd moves the case on once the module's close callback has run.
        CaseState.CLOSE_WAIT: frozenset({CaseState.CLOSED}),
        # an administrator's repair, or a replaced part noticed by fmd.
        CaseState.CLOSED: frozenset({CaseState.REPAIRED}),
        # every resource of the case is usable again.
        CaseState.REPAIRED: frozenset({CaseState.RESOLVED}),
        # terminal: the case is discarded.
        CaseState.RESOLVED: frozenset(),
    }
)

# The flag each target state sets (CLOSE_WAIT sets ISOLATED only for a solved case).
_STATE_FLAGS: Mapping[CaseState, CaseFlag] = MappingProxyType(
    {
        CaseState.SOLVED: CaseFlag.SOLVED,
        CaseState.REPAIRED: CaseFlag.REPAIRED,
        CaseState.RESOLVED: CaseFlag.RESOLVED,
    }
)


def _names(states: Iterable[CaseState]) -> str:
    """Render a set of states for an error message, in numeric order."""
    ordered = sorted(states)
    return ", ".join(s.name for s in ordered) if ordered else "none (terminal state)"


def _json_copy(value: Any, what: str) -> Any:
    """Return a plain-JSON deep copy of ``value``; ProtocolError if it is not JSON-able."""
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{what} is not JSON-serialisable: {exc}") from None


@dataclass(slots=True, kw_only=True)
class Case:
    """One case of one module: its events, suspects, state and flags."""

    uuid: str
    module: str
    open_time_ns: int
    state: CaseState = CaseState.UNSOLVED
    principal: int | None = None
    events: list[int] = field(default_factory=list)
    serd_names: list[str] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)
    code: str | None = None
    diag_time_ns: int | None = None
    flags: CaseFlag = _NO_FLAGS
    bufs: dict[str, bytes] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    # Every ereport counted against the case, kept in ``events`` or not.
    ereports: int = 0
    # A set mirror of ``events`` so membership tests stay O(1) for cases that
    # collect many events (self-diagnosis, a resource that keeps erring).
    _event_set: set[int] = field(default_factory=set, repr=False, compare=False)
    # Events added since the daemon last saved the case (incremental persistence).
    new_events: list[int] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._event_set = set(self.events)

    # ---- queries -------------------------------------------------------

    @property
    def is_unsolved(self) -> bool:
        """True while the module may still add events and suspects."""
        return self.state is CaseState.UNSOLVED

    @property
    def is_solved(self) -> bool:
        """True once the case was solved (whatever happened after)."""
        return CaseFlag.SOLVED in self.flags

    @property
    def is_repaired(self) -> bool:
        """True once the case's suspects were repaired (REPAIRED or RESOLVED): it
        takes no more events, and its resources may be diagnosed afresh."""
        return self.state >= CaseState.REPAIRED

    @property
    def is_open(self) -> bool:
        """True until the case is closed (UNSOLVED or SOLVED)."""
        return self.state in (CaseState.UNSOLVED, CaseState.SOLVED)

    @property
    def is_closed(self) -> bool:
        """True once a close was requested (CLOSE_WAIT or any later state)."""
        return self.state >= CaseState.CLOSE_WAIT

    @property
    def dirty(self) -> bool:
        """True if the case changed since its last checkpoint."""
        # int operations: IntFlag arithmetic is slow and this is on the hot path.
        return bool(int(self.flags) & _DIRTY)

    def clear_dirty(self) -> None:
        """Mark the case clean (after the module's checkpoint was written)."""
        if int(self.flags) & _DIRTY:
            self.flags = CaseFlag(int(self.flags) & ~_DIRTY)

    def mark_dirty(self) -> None:
        """Mark the case changed.  Modules change a case through the handle
        (``case_set_data``, ``case_buf_write``, ...), which saves it; a direct
        edit of ``bufs`` or ``data`` is not saved on its own."""
        if not int(self.flags) & _DIRTY:
            self.flags = CaseFlag(int(self.flags) | _DIRTY)

    def contains_event(self, event_id: int) -> bool:
        """Return True if the case references the event (used by replay)."""
        return event_id in self._event_set

    def fault_classes(self) -> list[str]:
        """The sorted, unique classes of the suspects (the dictionary lookup key)."""
        return sorted({str(s["class"]) for s in self.suspects})

    def allowed(self) -> frozenset[CaseState]:
        """The states this case may move to next."""
        return TRANSITIONS[self.state]

    # ---- edits while UNSOLVED -----------------------------------------

    def _require_unsolved(self, action: str) -> None:
        if self.state is not CaseState.UNSOLVED:
            raise CaseStateError(
                f"case {self.uuid}: cannot {action} in state {self.state.name}; "
                "events and suspects may only be added while the case is UNSOLVED"
            )

    def add_ereport(self, event_id: int, count: int = 1) -> bool:
        """Count an event (which stands for ``count`` errors) against the case and
        keep its id unless the case holds MAX_CASE_EVENTS already; the first one
        becomes the principal.  False if the id was not added (present, or past
        the limit: then only counted).

        Allowed until the case is repaired: errors that keep arriving for a
        resource already diagnosed faulty join its case instead of opening a
        new one (the suspect list itself is fixed once the case is solved).
        """
        if self.state >= CaseState.REPAIRED:
            raise CaseStateError(
                f"case {self.uuid}: cannot add event {event_id} in state {self.state.name}; "
                "events may be added until the case is repaired"
            )
        if self.principal is None:
            self.principal = event_id
            self.mark_dirty()
        if event_id in self._event_set:
            return False
        self.ereports += count
        self.mark_dirty()
        if len(self.events) >= MAX_CASE_EVENTS:
            return False
        self.events.append(event_id)
        self._event_set.add(event_id)
        self.new_events.append(event_id)
        return True

    def add_serd(
        self, name: str, event_ids: Iterable[int], counts: Sequence[int] | None = None
    ) -> None:
        """Add the events of a fired SERD engine (``counts``: the errors each stands
        for, 1 when not given) and remember the engine's name."""
        self._require_unsolved(f"add SERD engine {name!r}")
        for i, event_id in enumerate(event_ids):
            self.add_ereport(event_id, counts[i] if counts is not None else 1)
        if name not in self.serd_names:
            self.serd_names.append(name)
            self.mark_dirty()

    def set_principal(self, event_id: int) -> None:
        """Make ``event_id`` the principal event (adding it to the case if needed)."""
        self._require_unsolved(f"set principal event {event_id}")
        self.principal = event_id
        if event_id not in self._event_set:
            self.events.append(event_id)
            self._event_set.add(event_id)
            self.new_events.append(event_id)
            self.ereports += 1
        self.mark_dirty()

    def add_suspect(self, suspect: Mapping[str, Any]) -> None:
        """Append a suspect (a JSON-able fault event dict with a string ``"class"``)."""
        self._require_unsolved("add a suspect")
        cls = suspect.get("class")
        if not isinstance(cls, str) or not cls:
            raise ProtocolError(
                f"case {self.uuid}: a suspect needs a non-empty string 'class', got {cls!r}"
            )
        self.suspects.append(_json_copy(dict(suspect), f"case {self.uuid}: suspect {cls}"))
        self.mark_dirty()

    # ---- transitions ---------------------------------------------------

    def _check_transition(self, to: CaseState) -> None:
        """Raise CaseStateError unless the case may move to ``to`` now."""
        allowed = TRANSITIONS[self.state]
        if to not in allowed:
            raise CaseStateError(
                f"case {self.uuid}: cannot move from {self.state.name} to {to.name}; "
                f"allowed from {self.state.name}: {_names(allowed)}"
            )
        if to is CaseState.SOLVED and not self.suspects:
            raise CaseStateError(
                f"case {self.uuid}: cannot solve a case with no suspects; "
                "add at least one suspect first, or close the case instead"
            )
        if to is CaseState.REPAIRED and not self.is_solved:
            raise CaseStateError(
                f"case {self.uuid}: cannot move from {self.state.name} to REPAIRED "
                "because it was closed without being solved; there is nothing to repair"
            )

    def transition(self, to: CaseState) -> None:
        """Move to state ``to``, setting its flags; CaseStateError if not allowed."""
        self._check_transition(to)
        if to is CaseState.CLOSE_WAIT and self.is_solved:
            # Closing a solved case means its faulty resources were isolated.
            self.flags |= CaseFlag.ISOLATED
        self.flags |= _STATE_FLAGS.get(to, _NO_FLAGS)
        self.state = to
        self.mark_dirty()

    def solve(self, code: str, diag_time_ns: int) -> None:
        """Record the diagnosis code and time and move UNSOLVED -> SOLVED."""
        # Checked first so that a refused solve changes nothing.
        self._check_transition(CaseState.SOLVED)
        self.code = code
        self.diag_time_ns = diag_time_ns
        self.transition(CaseState.SOLVED)

    def close(self) -> None:
        """Request that the case be closed (-> CLOSE_WAIT)."""
        self.transition(CaseState.CLOSE_WAIT)

    def repair(self) -> None:
        """Mark the case's suspects repaired (-> REPAIRED)."""
        self.transition(CaseState.REPAIRED)

    def resolve(self) -> None:
        """Mark the case resolved (-> RESOLVED); fmd then discards it."""
        self.transition(CaseState.RESOLVED)

    # ---- persistence ---------------------------------------------------

    def restore_events(self, event_ids: Iterable[int]) -> None:
        """Set the case's events from the store (they are saved apart from the record)."""
        self.events = list(dict.fromkeys(event_ids))
        self._event_set = set(self.events)
        self.new_events = []
        self.ereports = max(self.ereports, len(self.events))

    def stored_extras(self) -> dict[str, Any]:
        """What the store keeps of the case beyond its ``cases`` columns (state,
        flags, principal, code, times, ereports), its ``suspects`` rows and its
        ``case_events``: the single other source, so that nothing is kept twice."""
        return {
            "serd_names": list(self.serd_names),
            "bufs": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(self.bufs.items())},
            "data": _json_copy(self.data, f"case {self.uuid}: module data"),
            "suspects": [_suspect_extras(s) for s in self.suspects],
        }

    @classmethod
    def from_store(
        cls,
        row: Mapping[str, Any],
        suspects: Sequence[Mapping[str, Any]],
        events: Iterable[int],
        extras: Mapping[str, Any],
    ) -> Case:
        """Rebuild a case from its ``cases`` row, ``suspects`` rows, event ids and
        stored extras (older databases kept a full record there: its suspects'
        members that have columns of their own are taken from the columns).
        ProtocolError if anything is malformed."""
        uuid = str(row["uuid"])
        kept = extras.get("suspects", [])
        rebuilt: list[dict[str, Any]] = []
        for i, srow in enumerate(suspects):
            suspect = {k: srow[k] for k in SUSPECT_COLUMNS if srow.get(k) is not None}
            extra = kept[i] if isinstance(kept, list) and i < len(kept) else None
            if isinstance(extra, Mapping):
                suspect.update(_suspect_extras(extra))
            rebuilt.append(suspect)
        try:
            state = CaseState(int(row["state"])).name
            flags = [name for name, bit in _FLAG_BITS if int(row["flags"]) & bit]
        except (TypeError, ValueError):
            raise ProtocolError(f"case {uuid}: stored state or flags are not valid") from None
        record = {
            "uuid": uuid,
            "module": row["module"],
            "state": state,
            "open_time_ns": row["open_time_ns"],
            "principal": row["principal"],
            "code": row["code"],
            "diag_time_ns": row["diag_time_ns"],
            "flags": flags,
            "serd_names": extras.get("serd_names", []),
            "bufs": extras.get("bufs", {}),
            "data": extras.get("data", {}),
            "suspects": rebuilt,
            "ereports": row.get("ereports", 0),
        }
        case = cls.from_dict(record)
        case.restore_events(events)
        return case

    def to_dict(self, *, include_events: bool = True) -> dict[str, Any]:
        """A JSON-able record of the case; DIRTY is not saved, bufs are base64.

        The daemon stores the events separately (one row each, written
        incrementally), so it asks for the record without them.
        """
        saved = int(self.flags) & ~_DIRTY
        return {
            "uuid": self.uuid,
            "module": self.module,
            "state": self.state.name,
            "open_time_ns": self.open_time_ns,
            "principal": self.principal,
            "events": list(self.events) if include_events else [],
            "serd_names": list(self.serd_names),
            "suspects": _json_copy(self.suspects, f"case {self.uuid}: suspects"),
            "code": self.code,
            "diag_time_ns": self.diag_time_ns,
            "flags": [name for name, bit in _FLAG_BITS if saved & bit],
            "bufs": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(self.bufs.items())},
            "data": _json_copy(self.data, f"case {self.uuid}: module data"),
            "ereports": self.ereports,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Case:
        """Rebuild a case from :meth:`to_dict` output; ProtocolError if it is malformed."""
        uuid = record.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise ProtocolError(f"case record has no valid uuid: {dict(record)!r}")

        def bad(what: str) -> ProtocolError:
            return ProtocolError(f"case {uuid}: saved record has an invalid {what}")

        def opt_int(key: str) -> int | None:
            value = record.get(key)
            if value is None or (isinstance(value, int) and not isinstance(value, bool)):
                return value
            raise bad(key)

        module = record.get("module")
        if not isinstance(module, str):
            raise bad("module")
        try:
            state = CaseState[str(record.get("state"))]
        except KeyError:
            raise bad("state") from None
        open_time = opt_int("open_time_ns")
        if open_time is None:
            raise bad("open_time_ns")
        events = record.get("events", [])
        if not isinstance(events, list) or not all(
            isinstance(e, int) and not isinstance(e, bool) for e in events
        ):
            raise bad("events list")
        serd_names = record.get("serd_names", [])
        if not isinstance(serd_names, list) or not all(isinstance(s, str) for s in serd_names):
            raise bad("serd_names list")
        suspects = record.get("suspects", [])
        if not isinstance(suspects, list) or not all(
            isinstance(s, dict) and isinstance(s.get("class"), str) for s in suspects
        ):
            raise bad("suspects list")
        code = record.get("code")
        if code is not None and not isinstance(code, str):
            raise bad("code")
        flags = _NO_FLAGS
        raw_flags = record.get("flags", [])
        if not isinstance(raw_flags, list):
            raise bad("flags list")
        for name in raw_flags:
            try:
                flags |= CaseFlag[str(name)]
            except KeyError:
                raise bad(f"flag {name!r}") from None
        raw_bufs = record.get("bufs", {})
        if not isinstance(raw_bufs, dict):
            raise bad("bufs object")
        bufs: dict[str, bytes] = {}
        for key, value in raw_bufs.items():
            try:
                bufs[str(key)] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise bad(f"buffer {key!r}") from None
        data = record.get("data", {})
        if not isinstance(data, dict):
            raise bad("data object")
        ereports = opt_int("ereports") or 0
        return cls(
            uuid=uuid,
            module=module,
            open_time_ns=open_time,
            state=state,
            principal=opt_int("principal"),
            events=list(dict.fromkeys(events)),
            serd_names=list(serd_names),
            suspects=_json_copy(suspects, f"case {uuid}: suspects"),
            code=code,
            diag_time_ns=opt_int("diag_time_ns"),
            flags=flags & ~CaseFlag.DIRTY,
            bufs=bufs,
            data=_json_copy(data, f"case {uuid}: module data"),
            ereports=max(ereports, len(events)),
        )


def _suspect_extras(suspect: Mapping[str, Any]) -> dict[str, Any]:
    """The members of a suspect that its ``suspects`` row does not hold: those
    without a column, and FMRIs kept in object form (an fmd FMRI's string is
    lossy)."""
    return {
        k: v
        for k, v in suspect.items()
        if k not in SUSPECT_COLUMNS or not isinstance(v, str | int) or isinstance(v, bool)
    }
