"""Job transitions as pure functions (digest §2, §5, §6, §7.1, §7.2)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core import lifecycle
from ojs_core.envelope import parse_enqueue
from ojs_core.errors import ConflictError, InvalidStateTransitionError
from ojs_core.model import Job, JobError, RetryPolicy
from ojs_core.retry import backoff_ms
from ojs_core.states import NON_TERMINAL, TERMINAL, JobState

S = JobState
SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def new_job(**options: Any) -> Job:
    return parse_enqueue({"type": "email.send", "args": [], "options": options}, now=NOW)


def active_job(**options: Any) -> Job:
    return lifecycle.claim(new_job(**options), at(1), "w1", None)


def job_in(state: JobState) -> Job:
    """A job in ``state``, reached through the lifecycle functions."""
    active = active_job(retry={"max_attempts": 1})
    return {
        S.SCHEDULED: new_job(scheduled_at="+PT1H"),
        S.AVAILABLE: new_job(),
        S.PENDING: new_job(pending=True),
        S.ACTIVE: active,
        S.COMPLETED: lifecycle.ack(active, at(2)),
        S.RETRYABLE: lifecycle.fail(active_job(), at(2), JobError(), rng=random.Random(0)),
        S.CANCELLED: lifecycle.cancel(new_job(), at(2)),
        S.DISCARDED: lifecycle.fail(active, at(2), JobError()),
    }[state]


def test_job_in_builds_every_state() -> None:
    for state in JobState:
        assert job_in(state).state is state


# --- claim ------------------------------------------------------------------------------------


def test_claim() -> None:
    job = new_job()
    claimed = lifecycle.claim(job, at(1), "w1", 5000)
    assert claimed.state is S.ACTIVE
    assert claimed.attempt == 1
    assert claimed.started_at == at(1)
    assert claimed.worker_id == "w1"
    assert claimed.visible_until == at(6)
    assert claimed.next_attempt_at is None
    assert job.state is S.AVAILABLE  # the input is not mutated


def test_claim_visibility_precedence() -> None:
    job = new_job(visibility_timeout_ms=7000)
    assert lifecycle.claim(job, NOW, None, 2000).visible_until == NOW + 2000 * MS
    assert lifecycle.claim(job, NOW, None, None).visible_until == NOW + 7000 * MS
    default = lifecycle.claim(new_job(), NOW, None, None)
    assert default.visible_until == NOW + lifecycle.DEFAULT_VISIBILITY_MS * MS


def test_claim_increments_attempt_each_time() -> None:
    job = new_job(retry={"max_attempts": 5, "jitter": False})
    for n in range(1, 4):
        job = lifecycle.claim(job, at(n * 100), "w", None)
        assert job.attempt == n
        job = lifecycle.fail(job, at(n * 100 + 1), JobError())
        job = lifecycle.promote(job, job.next_attempt_at)


@pytest.mark.parametrize("state", [s for s in JobState if s is not S.AVAILABLE])
def test_claim_needs_available(state: JobState) -> None:
    with pytest.raises(InvalidStateTransitionError) as info:
        lifecycle.claim(job_in(state), at(5), "w", None)
    assert (info.value.current, info.value.attempted) == (state.value, "active")


# --- ack ---------------------------------------------------------------------------------------


def test_ack_stores_result_and_clears_error() -> None:
    job = attrs.evolve(active_job(), error=JobError(code="old"), errors=[JobError(code="old")])
    done = lifecycle.ack(job, at(2), {"sent": True}, worker_id="w1")
    assert done.state is S.COMPLETED
    assert done.completed_at == at(2)
    assert done.result == {"sent": True}
    assert done.error is None
    assert done.errors == [JobError(code="old")]  # history is kept
    assert done.visible_until is None


def test_ack_by_another_worker_conflicts() -> None:
    with pytest.raises(ConflictError) as info:
        lifecycle.ack(active_job(), at(2), worker_id="w2")
    assert not isinstance(info.value, InvalidStateTransitionError)
    assert info.value.status == 409
    # Without a worker id anyone may ack.
    assert lifecycle.ack(active_job(), at(2)).state is S.COMPLETED


@pytest.mark.parametrize("state", [s for s in JobState if s is not S.ACTIVE])
def test_ack_needs_active(state: JobState) -> None:
    with pytest.raises(InvalidStateTransitionError) as info:
        lifecycle.ack(job_in(state), at(5))
    assert info.value.attempted == "completed"


# --- fail --------------------------------------------------------------------------------------


def test_fail_with_attempts_left_is_retryable() -> None:
    job = active_job(retry={"max_attempts": 3, "jitter": False})
    failed = lifecycle.fail(job, at(2), JobError(code="boom", message="m"), worker_id="w1")
    assert failed.state is S.RETRYABLE
    assert failed.retry_delay_ms == 1000
    assert failed.next_attempt_at == at(2) + 1000 * MS
    assert failed.error is not None
    assert failed.error.code == "boom"
    assert failed.error.type == "boom"  # type defaults to the code
    assert failed.error.attempt == 1
    assert failed.error.occurred_at == at(2)
    assert failed.errors == [failed.error]
    assert failed.visible_until is None
    assert failed.completed_at is None
    assert failed.discarded_at is None


@SETTINGS
@given(st.integers(0, 2**32), st.integers(2, 10))
def test_fail_next_attempt_is_now_plus_delay(seed: int, max_attempts: int) -> None:
    job = active_job(retry={"max_attempts": max_attempts})
    failed = lifecycle.fail(job, at(2), JobError(), rng=random.Random(seed))
    assert failed.state is S.RETRYABLE
    assert failed.retry_delay_ms == backoff_ms(job.retry, 1, random.Random(seed))
    assert failed.next_attempt_at == at(2) + failed.retry_delay_ms * MS
    assert 500 <= failed.retry_delay_ms <= 1500


def test_fail_exhausted_is_discarded() -> None:
    job = active_job(retry={"max_attempts": 1})
    failed = lifecycle.fail(job, at(2), JobError(code="boom"))
    assert failed.state is S.DISCARDED
    assert failed.completed_at == at(2)
    assert failed.discarded_at == at(2)
    assert failed.dead_letter is False
    assert failed.next_attempt_at is None
    assert failed.error is not None
    assert failed.error.code == "boom"


def test_fail_exhausted_with_dead_letter() -> None:
    job = active_job(retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    failed = lifecycle.fail(job, at(2), JobError())
    assert failed.state is S.DISCARDED
    assert failed.dead_letter is True


def test_fail_non_retryable_discards_at_once() -> None:
    job = active_job(retry={"max_attempts": 10, "non_retryable_errors": ["Auth.*"]})
    err = JobError(code="handler_error", details={"error_class": "Auth.TokenExpired"})
    assert lifecycle.fail(job, at(2), err).state is S.DISCARDED
    assert lifecycle.fail(job, at(2), JobError(retryable=False)).state is S.DISCARDED


def test_fail_by_another_worker_conflicts() -> None:
    with pytest.raises(ConflictError):
        lifecycle.fail(active_job(), at(2), JobError(), worker_id="intruder")


@pytest.mark.parametrize("state", [s for s in JobState if s is not S.ACTIVE])
def test_fail_needs_active(state: JobState) -> None:
    with pytest.raises(InvalidStateTransitionError) as info:
        lifecycle.fail(job_in(state), at(5), JobError())
    assert info.value.current == state.value


def test_error_history_is_bounded() -> None:
    job = new_job(retry={"max_attempts": 100, "jitter": False, "max_interval": "PT1S"})
    t = NOW
    for n in range(lifecycle.MAX_ERROR_HISTORY + 5):
        t += timedelta(seconds=10)
        job = lifecycle.claim(job, t, "w", None)
        job = lifecycle.fail(job, t, JobError(code=f"e{n}"))
        job = lifecycle.promote(job, t + timedelta(seconds=2))
    assert len(job.errors) == lifecycle.MAX_ERROR_HISTORY
    assert job.errors[-1].code == f"e{lifecycle.MAX_ERROR_HISTORY + 4}"
    assert [e.attempt for e in job.errors] == list(range(6, lifecycle.MAX_ERROR_HISTORY + 6))


# --- requeue -----------------------------------------------------------------------------------


def test_requeue_returns_to_available_without_consuming_the_attempt() -> None:
    job = active_job()
    requeued = lifecycle.requeue(job, at(3), JobError(code="nack"))
    assert requeued.state is S.AVAILABLE
    assert requeued.enqueued_at == at(3)
    assert requeued.started_at is None
    assert requeued.worker_id is None
    assert requeued.visible_until is None
    assert requeued.error is not None
    assert requeued.error.code == "nack"
    assert requeued.errors == [requeued.error]
    again = lifecycle.claim(requeued, at(4), "w2", None)
    assert again.attempt == job.attempt


def test_requeue_without_error_keeps_history() -> None:
    requeued = lifecycle.requeue(active_job(), at(3))
    assert requeued.error is None
    assert requeued.errors == []


@pytest.mark.parametrize("state", [s for s in JobState if s is not S.ACTIVE])
def test_requeue_needs_active(state: JobState) -> None:
    # Even where the table has "-> available" (promotion, DLQ retry), a nack needs an active job.
    with pytest.raises(InvalidStateTransitionError) as info:
        lifecycle.requeue(job_in(state), at(5))
    assert (info.value.current, info.value.attempted) == (state.value, "available")
    assert info.value.details["expected_state"] == "active"


# --- cancel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(NON_TERMINAL))
def test_cancel_from_each_non_terminal_state(state: JobState) -> None:
    cancelled = lifecycle.cancel(job_in(state), at(9))
    assert cancelled.state is S.CANCELLED
    assert cancelled.cancelled_at == at(9)
    assert cancelled.completed_at is None
    assert cancelled.visible_until is None


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_cancel_terminal_is_409(state: JobState) -> None:
    job = job_in(state)
    with pytest.raises(InvalidStateTransitionError) as info:
        lifecycle.cancel(job, at(9))
    err = info.value
    assert err.status == 409
    assert err.code == "conflict"
    assert (err.current, err.attempted) == (state.value, "cancelled")
    assert err.job_id == job.id


# --- promote, activate, dead-letter retry, heartbeat -------------------------------------------


def test_promote_retryable_and_scheduled() -> None:
    for state in (S.SCHEDULED, S.RETRYABLE):
        promoted = lifecycle.promote(job_in(state), at(7))
        assert promoted.state is S.AVAILABLE
        assert promoted.enqueued_at == at(7)
        assert promoted.next_attempt_at is None


def test_activate_pending() -> None:
    activated = lifecycle.activate_pending(job_in(S.PENDING), at(3), parent_results=[1])
    assert activated.state is S.AVAILABLE
    assert activated.activated_at == activated.enqueued_at == at(3)
    assert activated.parent_results == [1]
    assert lifecycle.activate_pending(job_in(S.PENDING), at(3)).parent_results is None


@pytest.mark.parametrize("state", [s for s in JobState if s is not S.PENDING])
def test_activate_needs_pending(state: JobState) -> None:
    with pytest.raises(ConflictError) as info:
        lifecycle.activate_pending(job_in(state), at(3))
    assert info.value.details["current_state"] == state.value


def test_retry_dead_letter() -> None:
    dead = job_in(S.DISCARDED)
    revived = lifecycle.retry_dead_letter(dead, at(10), {"queue": "retry-q"})
    assert revived.state is S.AVAILABLE
    assert revived.attempt == 0
    assert revived.queue == "retry-q"
    assert revived.enqueued_at == at(10)
    assert revived.completed_at is None
    assert revived.discarded_at is None
    assert revived.dead_letter is False
    assert revived.errors == dead.errors


@pytest.mark.parametrize("state", [s for s in JobState if s is not S.DISCARDED])
def test_retry_dead_letter_needs_discarded(state: JobState) -> None:
    with pytest.raises(ConflictError):
        lifecycle.retry_dead_letter(job_in(state), at(10))


def test_extend_visibility() -> None:
    job = active_job()
    assert lifecycle.extend_visibility(job, at(20), 4000).visible_until == at(24)
    default = lifecycle.extend_visibility(job, at(20), None)
    assert default.visible_until == at(20) + lifecycle.DEFAULT_VISIBILITY_MS * MS
    with pytest.raises(ConflictError):
        lifecycle.extend_visibility(new_job(), at(20), 4000)


def test_expire_directly() -> None:
    expired = lifecycle.expire(new_job(), at(5))
    assert expired.state is S.DISCARDED
    assert expired.discarded_at == at(5)
    assert expired.completed_at is None
    assert expired.error is not None
    assert expired.error.retryable is False
    with pytest.raises(InvalidStateTransitionError):
        lifecycle.expire(job_in(S.COMPLETED), at(5))


# --- on_timer ----------------------------------------------------------------------------------


def test_on_timer_promotes_scheduled_at_due_time() -> None:
    job = new_job(scheduled_at="2026-01-01T00:00:10Z")
    assert lifecycle.on_timer(job, at(9.999)) is job
    promoted = lifecycle.on_timer(job, at(10))
    assert promoted.state is S.AVAILABLE
    assert promoted.enqueued_at == at(10)
    assert promoted.scheduled_at == at(10)


@SETTINGS
@given(st.integers(1, 10**9), st.integers(-(10**9), 10**9))
def test_on_timer_never_promotes_early(delay_ms: int, offset_ms: int) -> None:
    job = new_job(delay_ms=delay_ms)
    assert job.state is S.SCHEDULED
    now = job.scheduled_at + offset_ms * MS
    after = lifecycle.on_timer(job, now)
    if offset_ms < 0:
        assert after is job
    else:
        assert after.state is S.AVAILABLE
        assert after.enqueued_at == now


def test_on_timer_promotes_retryable_after_backoff() -> None:
    job = job_in(S.RETRYABLE)
    due = job.next_attempt_at
    assert lifecycle.on_timer(job, due - MS) is job
    assert lifecycle.on_timer(job, due).state is S.AVAILABLE


def test_on_timer_visibility_expiry_returns_to_available() -> None:
    job = lifecycle.claim(new_job(), NOW, "w1", 3000)
    assert lifecycle.on_timer(job, at(2.999)) is job
    back = lifecycle.on_timer(job, at(3))
    assert back.state is S.AVAILABLE
    assert back.enqueued_at == at(3)
    assert back.started_at is None
    assert back.worker_id is None
    assert back.visible_until is None
    assert back.next_attempt_at is None
    assert back.attempt == 1
    assert back.error is not None
    assert back.error.type == "visibility_timeout"
    assert lifecycle.claim(back, at(4), "w2", None).attempt == 2


def test_on_timer_visibility_expiry_on_last_attempt_discards() -> None:
    job = lifecycle.claim(new_job(retry={"max_attempts": 1}), NOW, "w1", 3000)
    out = lifecycle.on_timer(job, at(3))
    assert out.state is S.DISCARDED
    assert out.error is not None
    assert out.error.type == "visibility_timeout"


def test_on_timer_execution_timeout_is_retryable() -> None:
    job = lifecycle.claim(new_job(timeout_ms=2000, retry={"jitter": False}), NOW, "w1", 60_000)
    assert lifecycle.on_timer(job, at(1.999)) is job
    out = lifecycle.on_timer(job, at(2))
    assert out.state is S.RETRYABLE
    assert out.error is not None
    assert out.error.type == "timeout"
    assert out.error.code == "timeout"
    assert out.next_attempt_at == at(2) + 1000 * MS


def test_on_timer_execution_timeout_wins_over_visibility() -> None:
    job = lifecycle.claim(new_job(timeout_ms=2000), NOW, "w1", 2000)
    out = lifecycle.on_timer(job, at(5))
    assert out.error is not None
    assert out.error.type == "timeout"


@pytest.mark.parametrize("state", [S.SCHEDULED, S.AVAILABLE, S.PENDING, S.RETRYABLE])
def test_on_timer_expiry_discards_waiting_jobs(state: JobState) -> None:
    job = attrs.evolve(job_in(state), expires_at=at(30))
    assert lifecycle.on_timer(job, at(29.999)).state is (
        S.AVAILABLE if state is S.RETRYABLE else state
    )
    expired = lifecycle.on_timer(job, at(30))
    assert expired.state is S.DISCARDED
    assert expired.discarded_at == at(30)
    assert expired.completed_at is None
    assert expired.error is not None
    assert expired.error.type == "enqueue_ttl_expired"
    assert expired.next_attempt_at is None


def test_on_timer_expiry_beats_promotion() -> None:
    job = new_job(scheduled_at="+PT10S", expires_at="+PT5S")
    assert lifecycle.on_timer(job, at(10)).state is S.DISCARDED


def test_on_timer_ignores_active_job_expiry_and_terminal_jobs() -> None:
    active = attrs.evolve(active_job(), expires_at=at(0))
    assert lifecycle.on_timer(active, at(2)) is active
    for state in TERMINAL:
        job = attrs.evolve(job_in(state), expires_at=at(0))
        assert lifecycle.on_timer(job, at(10**6)) is job


# --- timer_deadline ----------------------------------------------------------------------------


def test_timer_deadline_values() -> None:
    td = lifecycle.timer_deadline
    assert td(new_job(scheduled_at="+PT10S")) == at(10)
    assert td(new_job(scheduled_at="+PT10S", expires_at="+PT5S")) == at(5)
    assert td(new_job()) is None
    assert td(new_job(expires_at="+PT5S")) == at(5)
    assert td(new_job(pending=True, expires_at="+PT6S")) == at(6)
    retryable = job_in(S.RETRYABLE)
    assert td(retryable) == retryable.next_attempt_at
    assert td(attrs.evolve(retryable, expires_at=at(0))) == at(0)
    active = lifecycle.claim(new_job(), NOW, "w", 30_000)
    assert td(active) == at(30)
    assert td(lifecycle.claim(new_job(timeout_ms=5000), NOW, "w", 30_000)) == at(5)
    assert td(lifecycle.claim(new_job(timeout_ms=50_000), NOW, "w", 30_000)) == at(30)
    for state in TERMINAL:
        assert td(job_in(state)) is None


@st.composite
def timed_jobs(draw) -> Job:
    kind = draw(st.sampled_from(["scheduled", "available", "pending", "active", "retryable"]))
    opts: dict[str, Any] = {}
    if draw(st.booleans()):
        opts["expires_at"] = f"+PT{draw(st.integers(1, 500))}S"
    if kind == "scheduled":
        opts["delay_ms"] = draw(st.integers(1, 500_000))
    if kind == "pending":
        opts["pending"] = True
    if kind in ("active", "retryable"):
        if draw(st.booleans()):
            opts["timeout_ms"] = draw(st.integers(1, 500_000))
        job = lifecycle.claim(new_job(**opts), NOW, "w", draw(st.integers(1, 500_000)))
        if kind == "retryable":
            job = lifecycle.fail(job, NOW, JobError(), rng=random.Random(draw(st.integers())))
        return job
    return new_job(**opts)


@SETTINGS
@given(timed_jobs(), st.integers(1, 10**6))
def test_timer_deadline_agrees_with_on_timer(job: Job, before_ms: int) -> None:
    deadline = lifecycle.timer_deadline(job)
    if deadline is None:
        assert lifecycle.on_timer(job, at(10**7)) is job
        return
    assert lifecycle.on_timer(job, deadline - before_ms * MS) is job
    assert lifecycle.on_timer(job, deadline) is not job


def test_retry_policy_default_applies() -> None:
    assert new_job().retry == RetryPolicy()
