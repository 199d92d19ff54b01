"""The job state machine: the transition table and check_transition (digest §2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core.errors import ConflictError, InvalidStateTransitionError
from ojs_core.states import (
    NON_TERMINAL,
    TERMINAL,
    TRANSITIONS,
    JobState,
    can_transition,
    check_transition,
)

S = JobState
SETTINGS = settings(max_examples=200, deadline=None)
states = st.sampled_from(list(JobState))

#: The edges digest §2 lists, written out independently of states.py.
EXPECTED_EDGES = {
    (S.SCHEDULED, S.AVAILABLE),
    (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.DISCARDED),
    (S.AVAILABLE, S.ACTIVE),
    (S.AVAILABLE, S.CANCELLED),
    (S.AVAILABLE, S.DISCARDED),
    (S.PENDING, S.AVAILABLE),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.DISCARDED),
    (S.ACTIVE, S.COMPLETED),
    (S.ACTIVE, S.RETRYABLE),
    (S.ACTIVE, S.DISCARDED),
    (S.ACTIVE, S.CANCELLED),
    (S.ACTIVE, S.AVAILABLE),
    (S.RETRYABLE, S.AVAILABLE),
    (S.RETRYABLE, S.CANCELLED),
    (S.RETRYABLE, S.DISCARDED),
    (S.DISCARDED, S.AVAILABLE),
}


def test_eight_states_with_wire_values() -> None:
    assert {s.value for s in JobState} == {
        "scheduled",
        "available",
        "pending",
        "active",
        "completed",
        "retryable",
        "cancelled",
        "discarded",
    }


def test_terminal_partition() -> None:
    assert frozenset({S.COMPLETED, S.CANCELLED, S.DISCARDED}) == TERMINAL
    assert frozenset(JobState) - TERMINAL == NON_TERMINAL
    assert not (TERMINAL & NON_TERMINAL)
    for s in JobState:
        assert s.terminal == (s in TERMINAL)


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_table_matches_spec_edges() -> None:
    actual = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert actual == EXPECTED_EDGES


def test_no_self_loops() -> None:
    for s in JobState:
        assert not can_transition(s, s)


@SETTINGS
@given(states, states)
def test_terminal_states_only_exit_is_dead_letter_retry(current: JobState, target: JobState):
    if current.terminal and can_transition(current, target):
        assert (current, target) == (S.DISCARDED, S.AVAILABLE)


@SETTINGS
@given(states)
def test_every_non_terminal_state_can_be_cancelled(state: JobState) -> None:
    assert can_transition(state, S.CANCELLED) == (not state.terminal)


@SETTINGS
@given(states, states, st.text(min_size=1, max_size=20), st.sampled_from(["", "ack", "cancel"]))
def test_check_transition_raises_exactly_off_table(current, target, job_id, action) -> None:
    legal = (current, target) in EXPECTED_EDGES
    assert can_transition(current, target) == legal
    if legal:
        assert check_transition(job_id, current, target, action) is None
        return
    with pytest.raises(InvalidStateTransitionError) as info:
        check_transition(job_id, current, target, action)
    err = info.value
    assert err.current == current.value
    assert err.attempted == target.value
    assert err.job_id == job_id
    assert isinstance(err, ConflictError)
    assert err.status == 409
    assert err.code == "conflict"
    assert err.details["current_state"] == current.value
    assert err.details["attempted_state"] == target.value
    assert err.details["job_id"] == job_id
    assert f"{current.value} -> {target.value}" in err.message


def test_invalid_transition_wire_body() -> None:
    with pytest.raises(InvalidStateTransitionError) as info:
        check_transition("j1", S.COMPLETED, S.CANCELLED, "cancel")
    body = info.value.to_wire(request_id="req-1")["error"]
    assert body["code"] == "conflict"
    assert body["retryable"] is False
    assert body["request_id"] == "req-1"
    assert body["details"]["expected_state"] == "non-terminal"
    assert "Cannot cancel job 'j1'" in body["message"]


def test_expected_state_for_ack_is_active() -> None:
    with pytest.raises(InvalidStateTransitionError) as info:
        check_transition("j1", S.AVAILABLE, S.COMPLETED)
    assert info.value.details["expected_state"] == "active"
