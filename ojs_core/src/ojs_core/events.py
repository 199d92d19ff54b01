"""Building lifecycle events from job transitions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .ids import uuid7
from .model import Event, Job
from .states import JobState
from .timeutil import format_ts, ms_between

__all__ = [
    "EVENT_PATTERN",
    "event_type_matches",
    "job_event",
    "make_event",
    "started_event",
    "transition_events",
]

S = JobState
#: An event-type filter: a type (``job.completed``), a prefix ending in ``.*`` (``job.*``: every
#: type below ``job``), or ``*`` (all). Lowercase words and dots only, so a filter never carries
#: a character a store would treat as syntax (a NATS wildcard inside a token, say).
EVENT_PATTERN = re.compile(r"^(?:\*|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*(?:\.\*)?)\Z")


def event_type_matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` is selected by ``pattern`` (see :data:`EVENT_PATTERN`)."""
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def make_event(
    event_type: str, now: datetime, data: dict[str, Any], subject: str | None = None
) -> Event:
    """A new event with a fresh ``evt_<uuidv7>`` id."""
    return Event(
        id="evt_" + uuid7(int(now.timestamp() * 1000)),
        type=event_type,
        time=now,
        subject=subject,
        data=data,
    )


def job_event(event_type: str, job: Job, now: datetime, **extra: Any) -> Event:
    """An event about ``job`` carrying the fields the events spec and the suite ask for."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "job_type": job.type,
        "queue": job.queue,
        "state": job.state.value,
        "attempt": job.attempt,
        "priority": job.priority,
    }
    tenant = job.meta.get("tenant_id")
    if tenant is not None:
        data["tenant_id"] = tenant  # multi-tenancy: per-tenant metrics and event filters
    data.update(extra)
    return make_event(event_type, now, data, subject=job.id)


def started_event(job: Job, now: datetime, worker_id: str | None) -> Event:
    """``job.started`` for a job just claimed; a first attempt carries ``queue_time_ms``, the
    time since it could first run (enqueued, or its ``scheduled_at`` if later)."""
    extra: dict[str, Any] = {"worker_id": worker_id}
    ready = job.enqueued_at
    if ready is not None and job.scheduled_at is not None and job.scheduled_at > ready:
        ready = job.scheduled_at
    if job.attempt <= 1 and ready is not None:
        extra["queue_time_ms"] = max(0, ms_between(ready, now))
    return job_event("job.started", job, now, **extra)


def transition_events(before: Job | None, after: Job, now: datetime) -> list[Event]:
    """The events implied by ``before -> after`` (``before`` is ``None`` for a new job)."""
    if before is not None and before.state is after.state:
        return []
    state = after.state
    if before is None:
        out = [job_event("job.enqueued", after, now)]
        if state is S.SCHEDULED and after.scheduled_at is not None:
            out.append(
                job_event("job.scheduled", after, now, scheduled_at=format_ts(after.scheduled_at))
            )
        return out
    if state is S.ACTIVE:
        return [started_event(after, now, after.worker_id)]
    if state is S.COMPLETED:
        duration = ms_between(after.started_at, now) if after.started_at else 0
        return [job_event("job.completed", after, now, duration_ms=duration, result=after.result)]
    err = after.error
    err_data = (
        {"code": err.code, "message": err.message, "retryable": err.retryable} if err else None
    )
    if state is S.RETRYABLE:
        nxt = format_ts(after.next_attempt_at) if after.next_attempt_at else None
        duration = ms_between(after.started_at, now) if after.started_at else 0
        return [
            job_event("job.failed", after, now, error=err_data, duration_ms=duration),
            job_event(
                "job.retrying",
                after,
                now,
                max_attempts=after.max_attempts,
                next_retry_at=nxt,
                error=err_data,
            ),
        ]
    if state is S.DISCARDED:
        if before.state is not S.ACTIVE:
            return [
                job_event(
                    "job.expired",
                    after,
                    now,
                    created_at=format_ts(after.created_at) if after.created_at else None,
                    expired_at=format_ts(now),
                )
            ]
        duration = ms_between(after.started_at, now) if after.started_at else 0
        return [
            job_event("job.failed", after, now, error=err_data, duration_ms=duration),
            job_event(
                "job.discarded",
                after,
                now,
                total_attempts=after.attempt,
                last_error=err_data,
                dead_letter=after.dead_letter,
            ),
        ]
    if state is S.CANCELLED:
        return [job_event("job.cancelled", after, now, previous_state=before.state.value)]
    if state is S.AVAILABLE and before.state is S.ACTIVE:
        return [job_event("job.requeued", after, now, error=err_data)]
    return []
