"""Lifecycle events derived from job transitions (digest §10)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import attrs

from ojs_core import lifecycle
from ojs_core.envelope import parse_enqueue
from ojs_core.events import job_event, make_event, transition_events
from ojs_core.ids import is_uuid7
from ojs_core.model import Job, JobError, RetryPolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T1 = NOW + timedelta(seconds=1)
T3 = NOW + timedelta(seconds=3)


def new_job(**options) -> Job:
    return parse_enqueue({"type": "email.send", "args": [], "options": options}, now=NOW)


def types(events) -> list[str]:
    return [e.type for e in events]


def test_make_event() -> None:
    event = make_event("cron.triggered", NOW, {"cron_name": "n"})
    assert event.id.startswith("evt_")
    assert is_uuid7(event.id.removeprefix("evt_"))
    assert event.time == NOW
    assert event.subject is None
    assert event.data == {"cron_name": "n"}


def test_job_event_fields() -> None:
    job = new_job(priority=3, queue="q")
    event = job_event("job.enqueued", job, NOW, extra_field=1)
    assert event.subject == job.id
    assert event.data == {
        "job_id": job.id,
        "job_type": "email.send",
        "queue": "q",
        "state": "available",
        "attempt": 0,
        "priority": 3,
        "extra_field": 1,
    }


def test_enqueue_events() -> None:
    assert types(transition_events(None, new_job(), NOW)) == ["job.enqueued"]
    scheduled = new_job(scheduled_at="+PT5S")
    events = transition_events(None, scheduled, NOW)
    assert types(events) == ["job.enqueued", "job.scheduled"]
    assert events[1].data["scheduled_at"] == "2026-01-01T00:00:05Z"


def test_no_event_without_state_change() -> None:
    job = lifecycle.claim(new_job(), NOW, "w", None)
    assert transition_events(job, lifecycle.extend_visibility(job, T1, None), T1) == []


def test_start_and_complete() -> None:
    job = new_job()
    active = lifecycle.claim(job, T1, "w1", None)
    started = transition_events(job, active, T1)
    assert types(started) == ["job.started"]
    assert started[0].data["worker_id"] == "w1"
    assert started[0].data["attempt"] == 1
    done = lifecycle.ack(active, T3, {"ok": 1})
    completed = transition_events(active, done, T3)
    assert types(completed) == ["job.completed"]
    assert completed[0].data["duration_ms"] == 2000
    assert completed[0].data["result"] == {"ok": 1}


def test_failure_with_retry() -> None:
    active = lifecycle.claim(new_job(), T1, "w1", None)
    failed = lifecycle.fail(active, T3, JobError(code="boom", message="m"), rng=random.Random(0))
    events = transition_events(active, failed, T3)
    assert types(events) == ["job.failed", "job.retrying"]
    assert events[0].data["error"] == {"code": "boom", "message": "m", "retryable": None}
    assert events[0].data["duration_ms"] == 2000
    assert events[1].data["max_attempts"] == 3
    assert events[1].data["next_retry_at"] is not None


def test_failure_exhausted() -> None:
    job = attrs.evolve(new_job(), retry=RetryPolicy(max_attempts=1, on_exhaustion="dead_letter"))
    active = lifecycle.claim(job, T1, "w1", None)
    failed = lifecycle.fail(active, T3, JobError(code="boom"))
    events = transition_events(active, failed, T3)
    assert types(events) == ["job.failed", "job.discarded"]
    assert events[1].data["dead_letter"] is True
    assert events[1].data["total_attempts"] == 1


def test_expiry_event() -> None:
    job = new_job(expires_at="+PT1S")
    expired = lifecycle.on_timer(job, T1)
    events = transition_events(job, expired, T1)
    assert types(events) == ["job.expired"]
    assert events[0].data["expired_at"] == "2026-01-01T00:00:01Z"
    assert events[0].data["created_at"] == "2026-01-01T00:00:00Z"


def test_cancel_and_requeue_events() -> None:
    job = new_job()
    cancelled = transition_events(job, lifecycle.cancel(job, T1), T1)
    assert types(cancelled) == ["job.cancelled"]
    assert cancelled[0].data["previous_state"] == "available"
    active = lifecycle.claim(job, T1, "w", None)
    assert types(transition_events(active, lifecycle.requeue(active, T3), T3)) == ["job.requeued"]


def test_promotion_emits_nothing() -> None:
    job = new_job(scheduled_at="+PT1S")
    assert transition_events(job, lifecycle.on_timer(job, T1), T1) == []
