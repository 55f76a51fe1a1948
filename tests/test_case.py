"""Tests for fmd.case: the case state machine, its flags, edits and persistence."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fmd.case import TRANSITIONS, Case
from fmd.errors import CaseStateError, ProtocolError
from fmd.states import CaseFlag, CaseState

UUID = "4f7c1d52-3c8e-4b8e-9d55-0c2a3e9b1a10"
SUSPECT: dict[str, Any] = {
    "class": "fault.cpu.generic-x86.l2cache",
    "certainty": 100,
    "asru": "cpu:///cpuid=3",
    "fru": "hc:///motherboard=0/chip=0",
    "resource": "hc:///motherboard=0/chip=0/core=1/strand=0",
    "location": "CPU 3",
}


def new_case() -> Case:
    return Case(uuid=UUID, module="cpu-diagnosis", open_time_ns=1_000)


def solved_case() -> Case:
    case = new_case()
    case.add_ereport(11)
    case.add_suspect(SUSPECT)
    case.solve("GMCA-8000-47", 2_000)
    return case


S = CaseState


# ---- the table -----------------------------------------------------------


def test_transition_table_is_exactly_the_documented_one() -> None:
    """TRANSITIONS lists every state and exactly the documented successors."""
    assert dict(TRANSITIONS) == {
        S.UNSOLVED: {S.SOLVED, S.CLOSE_WAIT},
        S.SOLVED: {S.CLOSE_WAIT, S.REPAIRED},
        S.CLOSE_WAIT: {S.CLOSED},
        S.CLOSED: {S.REPAIRED},
        S.REPAIRED: {S.RESOLVED},
        S.RESOLVED: set(),
    }


def test_state_numbers_match_illumos() -> None:
    """The state values are the illumos numbers 0..5."""
    assert [(s.name, int(s)) for s in CaseState] == [
        ("UNSOLVED", 0),
        ("SOLVED", 1),
        ("CLOSE_WAIT", 2),
        ("CLOSED", 3),
        ("REPAIRED", 4),
        ("RESOLVED", 5),
    ]


# ---- edits -----------------------------------------------------------------


def test_new_case_is_unsolved_open_and_clean() -> None:
    """A new case starts UNSOLVED, open, with no flags, events or suspects."""
    case = new_case()
    assert (case.state, case.is_open, case.is_closed, case.is_solved) == (
        S.UNSOLVED,
        True,
        False,
        False,
    )
    assert (case.flags, case.events, case.suspects, case.principal) == (CaseFlag(0), [], [], None)


def test_first_ereport_becomes_principal() -> None:
    """The first event added becomes the principal; later ones do not replace it."""
    case = new_case()
    assert case.add_ereport(5) is True
    assert case.add_ereport(6) is True
    assert (case.principal, case.events) == (5, [5, 6])
    assert case.dirty is True


def test_duplicate_ereport_is_ignored() -> None:
    """Adding an event twice keeps one copy and returns False."""
    case = new_case()
    case.add_ereport(5)
    assert case.add_ereport(5) is False
    assert case.events == [5]


def test_set_principal_overrides_and_adds_event() -> None:
    """set_principal() replaces the principal and adds the event if missing."""
    case = new_case()
    case.add_ereport(5)
    case.set_principal(9)
    assert (case.principal, case.events) == (9, [5, 9])


def test_add_serd_adds_events_once_and_remembers_name() -> None:
    """add_serd() adds the engine's events (no duplicates) and records its name once."""
    case = new_case()
    case.add_ereport(2)
    case.add_serd("serd.cpu.l2", [1, 2, 3])
    case.add_serd("serd.cpu.l2", [3])
    assert (case.events, case.serd_names, case.principal) == ([2, 1, 3], ["serd.cpu.l2"], 2)


def test_contains_event() -> None:
    """contains_event() reports whether the case references an event."""
    case = new_case()
    case.add_ereport(5)
    assert (case.contains_event(5), case.contains_event(6)) == (True, False)


def test_add_suspect_stores_a_json_copy() -> None:
    """add_suspect() stores a plain-JSON copy that later edits of the input do not change."""
    case = new_case()
    suspect = dict(SUSPECT, extra=(1, 2))
    case.add_suspect(suspect)
    suspect["certainty"] = 5
    assert case.suspects == [dict(SUSPECT, extra=[1, 2])]


def test_add_suspect_without_class_is_refused() -> None:
    """A suspect without a string "class" raises ProtocolError naming the case."""
    with pytest.raises(ProtocolError, match=UUID):
        new_case().add_suspect({"certainty": 100})


def test_add_suspect_not_json_is_refused() -> None:
    """A suspect that cannot be serialised to JSON raises ProtocolError."""
    with pytest.raises(ProtocolError, match="not JSON-serialisable"):
        new_case().add_suspect({"class": "fault.x", "bad": object()})


def test_fault_classes_are_sorted_and_unique() -> None:
    """fault_classes() is the sorted set of suspect classes."""
    case = new_case()
    for cls in ("fault.b", "fault.a", "fault.b"):
        case.add_suspect({"class": cls})
    assert case.fault_classes() == ["fault.a", "fault.b"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.add_suspect(SUSPECT),
        lambda c: c.set_principal(99),
        lambda c: c.add_serd("serd.x", [99]),
    ],
)
def test_edits_after_solve_are_refused(edit: Any) -> None:
    """Suspects, principal and SERD engines can only be added while UNSOLVED."""
    case = solved_case()
    before = case.to_dict()
    with pytest.raises(CaseStateError, match=f"case {UUID}: cannot .* in state SOLVED"):
        edit(case)
    assert case.to_dict() == before


# ---- transitions -----------------------------------------------------------


def test_events_join_a_solved_case_until_it_is_repaired() -> None:
    """Errors for a resource already diagnosed join its case while it is solved or closed."""
    case = solved_case()
    assert case.add_ereport(99) is True
    case.close()
    case.transition(S.CLOSED)
    assert case.add_ereport(100) is True
    case.repair()
    with pytest.raises(CaseStateError, match="until the case is repaired"):
        case.add_ereport(101)


def test_solve_sets_code_time_flags_and_state() -> None:
    """solve() records the code and diagnosis time and sets SOLVED and DIRTY."""
    case = solved_case()
    assert (case.state, case.code, case.diag_time_ns) == (S.SOLVED, "GMCA-8000-47", 2_000)
    assert case.flags == CaseFlag.SOLVED | CaseFlag.DIRTY
    assert (case.is_open, case.is_solved) == (True, True)


def test_solve_without_suspects_is_refused_and_changes_nothing() -> None:
    """solve() with no suspects raises CaseStateError with a clear message."""
    case = new_case()
    with pytest.raises(CaseStateError, match="no suspects; add at least one suspect"):
        case.solve("X-8000-00", 1)
    assert (case.state, case.code, case.diag_time_ns) == (S.UNSOLVED, None, None)


def test_transition_to_solved_without_suspects_is_refused() -> None:
    """The raw transition to SOLVED also requires a suspect, so no path skips the check."""
    with pytest.raises(CaseStateError, match="no suspects"):
        new_case().transition(S.SOLVED)


def test_solve_twice_is_refused() -> None:
    """Solving a solved case raises CaseStateError and keeps the first code."""
    case = solved_case()
    with pytest.raises(CaseStateError, match="from SOLVED to SOLVED"):
        case.solve("OTHER-8000-00", 5)
    assert case.code == "GMCA-8000-47"


def test_illegal_transition_message_names_case_states_and_allowed() -> None:
    """An illegal transition names the uuid, current state, requested state and allowed ones."""
    case = new_case()
    with pytest.raises(CaseStateError) as info:
        case.transition(S.REPAIRED)
    assert str(info.value) == (
        f"case {UUID}: cannot move from UNSOLVED to REPAIRED; "
        "allowed from UNSOLVED: SOLVED, CLOSE_WAIT"
    )
    assert info.value.code == "EFMD_CASE_STATE"


def test_terminal_state_message_says_none_allowed() -> None:
    """From RESOLVED nothing is allowed and the message says so."""
    case = solved_case()
    for step in (case.close, lambda: case.transition(S.CLOSED), case.repair, case.resolve):
        step()
    with pytest.raises(CaseStateError, match=r"allowed from RESOLVED: none \(terminal state\)"):
        case.close()


def test_close_unsolved_case_does_not_set_isolated() -> None:
    """Closing an unsolved case reaches CLOSE_WAIT without ISOLATED."""
    case = new_case()
    case.close()
    assert case.state is S.CLOSE_WAIT
    assert CaseFlag.ISOLATED not in case.flags
    assert (case.is_open, case.is_closed) == (False, True)


def test_close_solved_case_sets_isolated() -> None:
    """Closing a solved case sets ISOLATED."""
    case = solved_case()
    case.close()
    assert case.flags == CaseFlag.SOLVED | CaseFlag.ISOLATED | CaseFlag.DIRTY


def test_unsolved_closed_case_cannot_be_repaired() -> None:
    """A case closed without a diagnosis cannot move CLOSED -> REPAIRED."""
    case = new_case()
    case.close()
    case.transition(S.CLOSED)
    with pytest.raises(CaseStateError, match="closed without being solved"):
        case.repair()
    assert case.state is S.CLOSED


def test_full_lifecycle_sets_flags() -> None:
    """solve, close, closed, repair, resolve walks the states and accumulates flags."""
    case = solved_case()
    case.close()
    case.transition(S.CLOSED)
    case.repair()
    case.resolve()
    assert case.state is S.RESOLVED
    assert case.flags == (
        CaseFlag.SOLVED | CaseFlag.ISOLATED | CaseFlag.REPAIRED | CaseFlag.RESOLVED | CaseFlag.DIRTY
    )


def test_solved_case_can_be_repaired_before_close() -> None:
    """SOLVED -> REPAIRED is allowed (a repair that arrives before any close)."""
    case = solved_case()
    case.repair()
    assert case.state is S.REPAIRED
    assert CaseFlag.ISOLATED not in case.flags


def test_transition_marks_dirty() -> None:
    """Every transition marks the case dirty."""
    case = solved_case()
    case.clear_dirty()
    case.close()
    assert case.dirty is True


# ---- persistence -------------------------------------------------------------


def test_round_trip_through_json() -> None:
    """to_dict() is JSON-able and from_dict() restores every field but DIRTY."""
    case = solved_case()
    case.flags |= CaseFlag.INJECTED
    case.bufs["state"] = b"\x00\xffbinary"
    case.data["retries"] = 2
    record = json.loads(json.dumps(case.to_dict()))
    assert record["state"] == "SOLVED"
    assert record["flags"] == ["SOLVED", "INJECTED"]
    assert record["bufs"] == {"state": "AP9iaW5hcnk="}
    restored = Case.from_dict(record)
    case.clear_dirty()
    assert restored == case


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("uuid", ""),
        ("module", 3),
        ("state", "OPEN"),
        ("open_time_ns", None),
        ("principal", "x"),
        ("events", [1, "2"]),
        ("serd_names", [1]),
        ("suspects", [{"certainty": 1}]),
        ("code", 5),
        ("flags", ["BOGUS"]),
        ("bufs", {"b": "***"}),
        ("data", []),
    ],
)
def test_malformed_record_is_refused(key: str, value: object) -> None:
    """from_dict() raises ProtocolError when a field of the record is invalid."""
    record = solved_case().to_dict()
    record[key] = value
    with pytest.raises(ProtocolError):
        Case.from_dict(record)


# ---- the state machine against a model ------------------------------------------


class CaseMachine(RuleBasedStateMachine):
    """Drive a Case with arbitrary requests and compare it with the table."""

    def __init__(self) -> None:
        super().__init__()
        self.case = new_case()
        self.state = S.UNSOLVED
        self.ever_solved = False
        self.isolated = False
        self.suspects = 0
        self.events: list[int] = []

    @rule(event_id=st.integers(0, 20))
    def add_ereport(self, event_id: int) -> None:
        if self.state >= S.REPAIRED:
            with pytest.raises(CaseStateError):
                self.case.add_ereport(event_id)
            return
        added = self.case.add_ereport(event_id)
        assert added is (event_id not in self.events)
        if added:
            self.events.append(event_id)

    @rule(cls=st.sampled_from(["fault.a", "fault.b", "defect.c"]))
    def add_suspect(self, cls: str) -> None:
        if self.state is not S.UNSOLVED:
            with pytest.raises(CaseStateError):
                self.case.add_suspect({"class": cls})
            return
        self.case.add_suspect({"class": cls})
        self.suspects += 1

    @rule()
    def solve(self) -> None:
        if self.state is not S.UNSOLVED or self.suspects == 0:
            with pytest.raises(CaseStateError):
                self.case.solve("T-8000-00", 1)
            return
        self.case.solve("T-8000-00", 1)
        self.state, self.ever_solved = S.SOLVED, True

    @rule(to=st.sampled_from(list(CaseState)))
    def transition(self, to: CaseState) -> None:
        legal = (
            to in TRANSITIONS[self.state]
            and (to is not S.REPAIRED or self.ever_solved)
            and (to is not S.SOLVED or self.suspects > 0)
        )
        if not legal:
            with pytest.raises(CaseStateError, match=f"case {UUID}"):
                self.case.transition(to)
            return
        self.case.clear_dirty()
        self.case.transition(to)
        assert self.case.dirty
        if to is S.SOLVED:
            self.ever_solved = True
        if to is S.CLOSE_WAIT and self.ever_solved:
            self.isolated = True
        self.state = to

    @rule()
    def checkpoint_round_trip(self) -> None:
        restored = Case.from_dict(json.loads(json.dumps(self.case.to_dict())))
        assert restored.to_dict() == self.case.to_dict()
        assert restored.dirty is False

    @invariant()
    def matches_model(self) -> None:
        case = self.case
        assert case.state is self.state
        assert case.events == self.events
        assert case.principal == (self.events[0] if self.events else None)
        assert (CaseFlag.SOLVED in case.flags) is self.ever_solved
        assert (CaseFlag.ISOLATED in case.flags) is self.isolated
        assert (CaseFlag.REPAIRED in case.flags) is (self.state >= S.REPAIRED)
        assert (CaseFlag.RESOLVED in case.flags) is (self.state is S.RESOLVED)
        assert case.is_open is (self.state <= S.SOLVED)


TestCaseMachine = CaseMachine.TestCase


def test_case_keeps_its_first_events_and_counts_the_rest() -> None:
    """A case keeps the ids of its first MAX_CASE_EVENTS ereports and counts every one,
    so a storm on a diagnosed resource never grows it."""
    from fmd.case import MAX_CASE_EVENTS

    case = Case(uuid="u", module="m", open_time_ns=0)
    for eid in range(1, MAX_CASE_EVENTS + 45):
        case.add_ereport(eid)
    assert len(case.events) == MAX_CASE_EVENTS
    assert len(case.new_events) == MAX_CASE_EVENTS
    assert case.ereports == MAX_CASE_EVENTS + 44
    assert case.add_ereport(1) is False
    assert case.ereports == MAX_CASE_EVENTS + 44


def test_stored_form_restores_the_case() -> None:
    """The store's columns, suspect rows and extras rebuild the case exactly: each
    member is kept in one place only."""
    from fmd.api import case_record

    case = solved_case()
    case.suspects[0]["status"] = 1  # the module API sets it when it solves
    case.suspects[0]["retire"] = False
    case.bufs["b"] = b"\x00\x01"
    case.data["k"] = [1, 2]
    case.ereports = 7
    _uuid, row, suspects, events = case_record(case)
    assert row is not None and suspects is not None
    extras = json.loads(row["data"])
    assert "state" not in extras and "code" not in extras
    assert all("class" not in s and "status" not in s for s in extras["suspects"])
    restored = Case.from_store(row, suspects, events, extras)
    assert restored.to_dict() == case.to_dict()
