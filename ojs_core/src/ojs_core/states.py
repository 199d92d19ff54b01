"""The eight job states and the one table of legal transitions between them."""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidStateTransitionError

__all__ = [
    "NON_TERMINAL",
    "TERMINAL",
    "TRANSITIONS",
    "JobState",
    "can_transition",
    "check_transition",
]


class JobState(StrEnum):
    """A job's lifecycle state (OJS core §6)."""

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    RETRYABLE = "retryable"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"

    @property
    def terminal(self) -> bool:
        """True for completed, cancelled and discarded."""
        return self in TERMINAL


S = JobState
TERMINAL: frozenset[JobState] = frozenset({S.COMPLETED, S.CANCELLED, S.DISCARDED})
NON_TERMINAL: frozenset[JobState] = frozenset(set(S) - TERMINAL)

#: Every legal edge. ``discarded -> available`` is the manual dead-letter retry;
#: ``active -> available`` is visibility expiry and nack with ``requeue``.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.SCHEDULED: frozenset({S.AVAILABLE, S.CANCELLED, S.DISCARDED}),
    S.AVAILABLE: frozenset({S.ACTIVE, S.CANCELLED, S.DISCARDED}),
    S.PENDING: frozenset({S.AVAILABLE, S.CANCELLED, S.DISCARDED}),
    S.ACTIVE: frozenset({S.COMPLETED, S.RETRYABLE, S.CANCELLED, S.DISCARDED, S.AVAILABLE}),
    S.RETRYABLE: frozenset({S.AVAILABLE, S.CANCELLED, S.DISCARDED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.DISCARDED: frozenset({S.AVAILABLE}),
}


def can_transition(current: JobState, target: JobState) -> bool:
    """Whether ``current -> target`` is in the transition table."""
    return target in TRANSITIONS[current]


def check_transition(job_id: str, current: JobState, target: JobState, action: str = "") -> None:
    """Raise :class:`InvalidStateTransitionError` unless ``current -> target`` is legal."""
    if target not in TRANSITIONS[current]:
        raise InvalidStateTransitionError(job_id, current.value, target.value, action)
