"""Job transitions as pure functions ``Job -> Job``.

Every backend applies these under compare-and-swap (see :mod:`ojs_core.backend`), so the rules
of the state machine are written once, here. Each function checks the transition table first
and raises :class:`~ojs_core.errors.InvalidStateTransitionError` (HTTP 409) when it is illegal.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import attrs

from .errors import ConflictError, InvalidStateTransitionError
from .model import Job, JobError
from .retry import decide_failure
from .states import JobState, check_transition

__all__ = [
    "DEFAULT_VISIBILITY_MS",
    "ack",
    "activate_pending",
    "cancel",
    "check_owner",
    "claim",
    "expire",
    "extend_visibility",
    "fail",
    "held_by_another",
    "on_timer",
    "prolong_visibility",
    "promote",
    "requeue",
    "retry_dead_letter",
    "retry_now",
    "slimmed",
    "timer_deadline",
]

S = JobState
#: Worker-protocol §5.2 default (the binding suggests 30 s; long jobs heartbeat either way).
DEFAULT_VISIBILITY_MS = 1_800_000
MAX_ERROR_HISTORY = 20
_ms = timedelta(milliseconds=1)


def _min(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


#: How long a terminal workflow job waits for its workflow to be advanced before a timer does it.
WORKFLOW_ADVANCE_GRACE = timedelta(seconds=2)


def _settle(job: Job) -> Job:
    """What every transition into a terminal state also does: mark a workflow job as owing its
    workflow an advance, and drop the checkpoint (durable-execution §5.2: a finished job has
    nothing to resume)."""
    changes: dict[str, Any] = {}
    if job.workflow_id is not None and job.state.terminal and not job.workflow_pending:
        changes["workflow_pending"] = True
    if job.checkpoint is not None:
        changes["checkpoint"] = None
    return attrs.evolve(job, **changes) if changes else job


def timer_deadline(job: Job) -> datetime | None:
    """When something must happen to ``job`` without a client asking, or ``None``.

    Scheduled and retryable jobs become available, active jobs hit their visibility or execution
    timeout, waiting jobs expire, terminal jobs are removed at the end of their retention.
    Backends index jobs by this value so that timers cost work only for jobs that are due.
    """
    state = job.state
    if state is S.SCHEDULED:
        return _min(job.scheduled_at, job.expires_at)
    if state is S.RETRYABLE:
        return _min(job.next_attempt_at, job.expires_at)
    if state is S.AVAILABLE or state is S.PENDING:
        return job.expires_at
    if job.workflow_pending:
        done = job.completed_at or job.cancelled_at or job.discarded_at or job.created_at
        return None if done is None else done + WORKFLOW_ADVANCE_GRACE
    if state is S.ACTIVE:
        exec_deadline = (
            job.started_at + job.timeout_ms * _ms
            if job.timeout_ms and job.started_at is not None
            else None
        )
        return _min(job.visible_until, exec_deadline)
    return job.retain_until  # terminal: when its record is removed (``ojs_core.retention``)


def claim(job: Job, now: datetime, worker_id: str | None, visibility_ms: int | None) -> Job:
    """``available -> active`` for a fetch: attempt+1, started_at, visibility deadline."""
    check_transition(job.id, job.state, S.ACTIVE, "fetch")
    vt = visibility_ms or job.visibility_timeout_ms or DEFAULT_VISIBILITY_MS
    return attrs.evolve(
        job,
        state=S.ACTIVE,
        attempt=job.attempt + 1,
        started_at=now,
        worker_id=worker_id,
        visible_until=now + vt * _ms,
        next_attempt_at=None,
        # Progress belongs to one attempt (progress §5.3): the new one starts with none.
        progress=None,
    )


def held_by_another(job: Job, worker_id: str | None) -> bool:
    """Whether ``worker_id`` names a worker other than the job's holder (a caller that names
    none, or a job that records none, is taken at its word)."""
    return bool(worker_id and job.worker_id and worker_id != job.worker_id)


def check_owner(job: Job, worker_id: str | None, details: dict[str, Any] | None = None) -> None:
    """409 when ``worker_id`` is not the job's holder (see :func:`held_by_another`)."""
    if held_by_another(job, worker_id):
        raise ConflictError(
            f"Job '{job.id}' is reserved by worker '{job.worker_id}', not '{worker_id}'",
            details=(details or {"job_id": job.id}) | {"worker_id": job.worker_id},
        )


def ack(job: Job, now: datetime, result: Any = None, worker_id: str | None = None) -> Job:
    """``active -> completed``: stores the result and clears the error."""
    check_transition(job.id, job.state, S.COMPLETED, "acknowledge")
    check_owner(job, worker_id)
    progress = job.progress
    if progress is not None:
        # A completed job is done (progress §8.1), even if its last report said 87%.
        progress = attrs.evolve(progress, value=1.0, updated_at=now)
    return _settle(
        attrs.evolve(
            job,
            state=S.COMPLETED,
            completed_at=now,
            result=result,
            error=None,
            visible_until=None,
            progress=progress,
        )
    )


def _record(job: Job, error: JobError, now: datetime) -> tuple[JobError, list[JobError]]:
    entry = attrs.evolve(
        error,
        type=error.type or error.code,
        attempt=job.attempt,
        occurred_at=now,
    )
    history = [*job.errors, entry][-MAX_ERROR_HISTORY:]
    return entry, history


def fail(
    job: Job,
    now: datetime,
    error: JobError,
    worker_id: str | None = None,
    rng: random.Random | None = None,
) -> Job:
    """``active -> retryable`` (attempts remain) or ``active -> discarded`` (the FAIL decision)."""
    check_transition(job.id, job.state, S.RETRYABLE, "fail")
    check_owner(job, worker_id)
    entry, history = _record(job, error, now)
    decision = decide_failure(job.retry, job.attempt, entry, rng)
    if decision.retry:
        return attrs.evolve(
            job,
            state=S.RETRYABLE,
            error=entry,
            errors=history,
            retry_delay_ms=decision.delay_ms,
            next_attempt_at=now + decision.delay_ms * _ms,
            visible_until=None,
        )
    return _settle(
        attrs.evolve(
            job,
            state=S.DISCARDED,
            error=entry,
            errors=history,
            completed_at=now,
            discarded_at=now,
            dead_letter=decision.dead_letter,
            visible_until=None,
        )
    )


def requeue(
    job: Job, now: datetime, error: JobError | None = None, worker_id: str | None = None
) -> Job:
    """``active -> available`` at once (nack with ``requeue``); the attempt is not consumed."""
    if job.state is not S.ACTIVE:
        # The table also has scheduled/pending/retryable/discarded -> available, but those are
        # promotion, activation and the DLQ retry, not a nack: only an active job can be requeued.
        err = InvalidStateTransitionError(job.id, job.state.value, S.AVAILABLE.value, "requeue")
        err.details["expected_state"] = S.ACTIVE.value
        raise err
    check_owner(job, worker_id)
    changes: dict[str, Any] = {}
    if error is not None:
        entry, history = _record(job, error, now)
        changes = {"error": entry, "errors": history}
    return attrs.evolve(
        job,
        state=S.AVAILABLE,
        attempt=max(job.attempt - 1, 0),
        enqueued_at=now,
        started_at=None,
        worker_id=None,
        visible_until=None,
        **changes,
    )


def cancel(job: Job, now: datetime) -> Job:
    """Any non-terminal state ``-> cancelled``; terminal jobs raise 409."""
    check_transition(job.id, job.state, S.CANCELLED, "cancel")
    return _settle(attrs.evolve(job, state=S.CANCELLED, cancelled_at=now, visible_until=None))


def promote(job: Job, now: datetime) -> Job:
    """``scheduled|retryable -> available`` once due."""
    check_transition(job.id, job.state, S.AVAILABLE, "promote")
    return attrs.evolve(job, state=S.AVAILABLE, enqueued_at=now, next_attempt_at=None)


def activate_pending(job: Job, now: datetime, parent_results: list[Any] | None = None) -> Job:
    """``pending -> available`` (the ACTIVATE operation, or a workflow step becoming ready)."""
    if job.state is not S.PENDING:
        raise ConflictError(
            f"Job '{job.id}' is {job.state.value}, not pending",
            details={"job_id": job.id, "current_state": job.state.value},
        )
    changes: dict[str, Any] = {}
    if parent_results is not None:
        changes["parent_results"] = parent_results
    return attrs.evolve(job, state=S.AVAILABLE, enqueued_at=now, activated_at=now, **changes)


def _discard_unrun(job: Job, now: datetime, error: JobError) -> Job:
    """A waiting job ``-> discarded`` before it ever ran, with ``error`` recorded."""
    return _settle(
        attrs.evolve(
            job,
            state=S.DISCARDED,
            discarded_at=now,
            error=error,
            errors=[*job.errors, error][-MAX_ERROR_HISTORY:],
            next_attempt_at=None,
        )
    )


def expire(job: Job, now: datetime) -> Job:
    """A waiting job whose ``expires_at`` passed ``-> discarded``, never executed."""
    check_transition(job.id, job.state, S.DISCARDED, "expire")
    error = JobError(
        code="expired",
        type="enqueue_ttl_expired",
        message="expires_at passed before the job started",
        retryable=False,
        attempt=job.attempt,
        occurred_at=now,
    )
    return _discard_unrun(job, now, error)


def rate_limited(job: Job, now: datetime, on_limit: str, until: datetime | None) -> Job:
    """An ``available`` job a rate limit holds back (rate-limiting extension §6.2):
    ``reschedule`` moves it to ``scheduled`` until ``until`` (when the limit should allow
    it; a second from now when that is unknown), ``drop`` discards it, never executed."""
    if on_limit == "reschedule":
        # The extension's own edge (its §6.2), outside core's table: only a claim takes it,
        # on a job it just read as available.
        check_transition(job.id, job.state, S.ACTIVE, "rate limit")
        at = until if until is not None and until > now else now + 1000 * _ms
        return attrs.evolve(job, state=S.SCHEDULED, scheduled_at=at)
    check_transition(job.id, job.state, S.DISCARDED, "rate limit")
    error = JobError(
        code="rate_limited",
        type="rate_limit_dropped",
        message="dropped by its rate limit (on_limit: drop) before it started",
        retryable=False,
        attempt=job.attempt,
        occurred_at=now,
    )
    return _discard_unrun(job, now, error)


def retry_dead_letter(job: Job, now: datetime, overrides: dict[str, Any] | None = None) -> Job:
    """``discarded -> available`` by hand: attempt reset to 0, history kept."""
    if job.state is not S.DISCARDED:
        raise ConflictError(
            f"Job '{job.id}' is {job.state.value}, only discarded jobs can be retried",
            details={"job_id": job.id, "current_state": job.state.value},
        )
    return attrs.evolve(
        job,
        **(overrides or {}),
        state=S.AVAILABLE,
        attempt=0,
        enqueued_at=now,
        started_at=None,
        completed_at=None,
        discarded_at=None,
        worker_id=None,
        dead_letter=False,
        next_attempt_at=None,
    )


def retry_now(job: Job, now: datetime) -> Job:
    """A retry by hand (the bulk-operations extension): a ``discarded`` job as
    :func:`retry_dead_letter` does, a ``retryable`` one without waiting for its back-off
    (attempts kept: it was not exhausted). Other states are 409."""
    if job.state is S.RETRYABLE:
        return promote(job, now)
    if job.state is not S.DISCARDED:
        raise ConflictError(
            f"Job '{job.id}' is {job.state.value}; only discarded and retryable jobs can be "
            "retried",
            details={"job_id": job.id, "current_state": job.state.value},
        )
    return retry_dead_letter(job, now)


def extend_visibility(job: Job, now: datetime, visibility_ms: int | None) -> Job:
    """Push an active job's visibility deadline to ``now + visibility`` (a heartbeat)."""
    if job.state is not S.ACTIVE:
        raise ConflictError(f"Job '{job.id}' is not active", details={"job_id": job.id})
    vt = visibility_ms or job.visibility_timeout_ms or DEFAULT_VISIBILITY_MS
    return attrs.evolve(job, visible_until=now + vt * _ms)


def slimmed(job: Job) -> Job:
    """``job`` without what only adds detail: the error history but its latest entry, the
    progress report's ``data`` and the checkpoint.

    For a state change the store refused as too large (a checkpoint or progress data close to
    the store's per-record bound, then an error recorded on a nack or a timeout): the change
    must land even so, or the job would stay ``active`` forever; the next attempt then starts
    without the checkpoint, which is less bad than never starting."""
    changes: dict[str, Any] = {"checkpoint": None, "errors": job.errors[-1:]}
    if job.progress is not None:
        changes["progress"] = attrs.evolve(job.progress, data=None)
    return attrs.evolve(job, **changes)


def prolong_visibility(job: Job, now: datetime) -> Job:
    """A sign of life that is not a heartbeat (progress, a checkpoint): push the deadline to at
    least ``now`` + the job's visibility timeout, never earlier than a fetch or heartbeat set it
    (a worker that fetched with four hours must not lose its job by reporting progress)."""
    extended = extend_visibility(job, now, None)
    old, new = job.visible_until, extended.visible_until
    return job if old is not None and new is not None and old >= new else extended


def on_timer(job: Job, now: datetime, rng: random.Random | None = None) -> Job:
    """Apply whatever is due for ``job`` at ``now``; returns ``job`` itself when nothing is."""
    state = job.state
    if state in (S.SCHEDULED, S.RETRYABLE, S.AVAILABLE, S.PENDING):
        if job.expires_at is not None and job.expires_at <= now:
            return expire(job, now)
        due = job.scheduled_at if state is S.SCHEDULED else job.next_attempt_at
        if state in (S.SCHEDULED, S.RETRYABLE) and (due is None or due <= now):
            return promote(job, now)
        return job
    if state is S.ACTIVE:
        if job.timeout_ms and job.started_at and job.started_at + job.timeout_ms * _ms <= now:
            err = JobError(
                code="timeout",
                type="timeout",
                message=f"execution exceeded timeout of {job.timeout_ms} ms",
                retryable=True,
            )
            return fail(job, now, err, rng=rng)
        if job.visible_until is not None and job.visible_until <= now:
            err = JobError(
                code="visibility_timeout",
                type="visibility_timeout",
                message="no ack, nack or heartbeat before the visibility timeout",
                retryable=True,
            )
            failed = fail(job, now, err, rng=rng)
            if failed.state is S.RETRYABLE:
                # Core §6.3 and the suite: an abandoned job goes straight back to available.
                return attrs.evolve(
                    failed,
                    state=S.AVAILABLE,
                    enqueued_at=now,
                    next_attempt_at=None,
                    retry_delay_ms=None,
                    started_at=None,
                    worker_id=None,
                )
            return failed
    return job
