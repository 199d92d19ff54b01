"""The wire/storage form of jobs, cron entries and events (digest §1.3, §1.4, §13)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from job_strategies import jobs

from ojs_core import codec, lifecycle
from ojs_core.codec import cron_to_wire, event_to_wire, job_from_dict, job_to_wire
from ojs_core.envelope import parse_enqueue
from ojs_core.model import (
    DEFAULT_UNIQUE_STATES,
    Checkpoint,
    CronJob,
    Event,
    Job,
    JobError,
    Progress,
    RateLimit,
    RetryPolicy,
    Window,
)

SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def new_job(**options: Any) -> Job:
    return parse_enqueue({"type": "email.send", "args": ["a"], "options": options}, now=NOW)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def jobs_in_every_state() -> list[Job]:
    """Jobs reached through the real lifecycle functions, one or more per state."""
    rng = random.Random(7)
    available = new_job()
    scheduled = new_job(scheduled_at="+PT1H")
    pending = new_job(pending=True)
    active = lifecycle.claim(available, at(1), "w1", None)
    completed = lifecycle.ack(active, at(2), {"ok": True, "n": [1, 2]})
    retryable = lifecycle.fail(active, at(2), JobError(code="boom", message="x"), rng=rng)
    discarded = lifecycle.fail(
        attrs.evolve(active, retry=RetryPolicy(max_attempts=1, on_exhaustion="dead_letter")),
        at(2),
        JobError(code="boom", message="bad", details={"error_class": "E"}, backtrace=["l1"]),
    )
    cancelled = lifecycle.cancel(pending, at(3))
    expired = lifecycle.expire(scheduled, at(4))
    requeued = lifecycle.requeue(active, at(3), JobError(code="nack"))
    revived = lifecycle.retry_dead_letter(discarded, at(5))
    return [
        available,
        scheduled,
        pending,
        active,
        completed,
        retryable,
        discarded,
        cancelled,
        expired,
        requeued,
        revived,
    ]


@pytest.mark.parametrize("job", jobs_in_every_state(), ids=lambda j: j.state.value)
def test_round_trip_through_lifecycle_states(job: Job) -> None:
    wire = job_to_wire(job)
    assert job_from_dict(wire) == job
    # The wire form is plain JSON, and survives a trip through text.
    assert job_from_dict(json.loads(json.dumps(wire))) == job


def test_fresh_job_wire_form() -> None:
    job = new_job(priority=5)
    wire = job_to_wire(job)
    assert wire["id"] == job.id
    assert wire["type"] == "email.send"
    assert wire["queue"] == "default"
    assert wire["args"] == ["a"]
    assert wire["state"] == "available"
    assert wire["attempt"] == 0
    assert wire["priority"] == 5
    assert wire["max_attempts"] == 3
    assert wire["specversion"] == "1.0"
    assert wire["created_at"] == "2026-01-01T00:00:00Z"
    assert wire["enqueued_at"] == "2026-01-01T00:00:00Z"
    for absent in (
        "started_at",
        "completed_at",
        "error",
        "result",
        "worker_id",
        "scheduled_at",
        "expires_at",
        "unique",
        "rate_limit",
        "timeout_ms",
        "errors",
        "dead_letter",
        "visible_until",
        "parent_results",
        "extra",
    ):
        assert absent not in wire, absent
    assert None not in wire.values()


def test_max_attempts_follows_retry_policy() -> None:
    wire = job_to_wire(new_job(retry={"max_attempts": 9}))
    assert wire["max_attempts"] == 9
    assert wire["retry"]["max_attempts"] == 9
    assert job_from_dict(wire).extra == {}


def test_retry_policy_wire_form() -> None:
    wire = job_to_wire(new_job())
    # on_exhaustion was not chosen: absent until the service resolves it to its default.
    assert wire["retry"] == {
        "max_attempts": 3,
        "initial_interval": "PT1S",
        "backoff_coefficient": 2.0,
        "max_interval": "PT300S",
        "jitter": True,
        "non_retryable_errors": [],
        "backoff_strategy": "exponential",
    }
    chosen = job_to_wire(new_job(retry={"on_exhaustion": "discard"}))
    assert chosen["retry"]["on_exhaustion"] == "discard"


def test_extra_is_flattened() -> None:
    job = parse_enqueue({"type": "a", "args": [], "x_trace": {"id": 1}, "x_flag": None}, now=NOW)
    wire = job_to_wire(job)
    assert wire["x_trace"] == {"id": 1}
    assert "x_flag" in wire
    assert wire["x_flag"] is None
    assert "extra" not in wire
    assert job_from_dict(wire).extra == {"x_trace": {"id": 1}, "x_flag": None}


def test_unknown_field_named_extra_round_trips() -> None:
    job = parse_enqueue({"type": "a", "args": [], "extra": {"k": 1}}, now=NOW)
    assert job.extra == {"extra": {"k": 1}}
    wire = job_to_wire(job)
    assert wire["extra"] == {"k": 1}
    assert job_from_dict(wire) == job


def test_completed_job_has_result_and_no_error() -> None:
    active = lifecycle.claim(new_job(), at(1), "w", None)
    failed_once = attrs.evolve(active, error=JobError(code="x"))
    wire = job_to_wire(lifecycle.ack(failed_once, at(2), [1, 2]))
    assert wire["result"] == [1, 2]
    assert "error" not in wire
    assert wire["completed_at"] == "2026-01-01T00:00:02Z"
    assert wire["started_at"] == "2026-01-01T00:00:01Z"


def test_falsy_results_are_kept() -> None:
    active = lifecycle.claim(new_job(), at(1), "w", None)
    for value in (0, False, "", [], {}):
        assert job_to_wire(lifecycle.ack(active, at(2), value))["result"] == value


def test_error_wire_form_omits_none() -> None:
    active = lifecycle.claim(new_job(), at(1), "w", None)
    job = lifecycle.fail(active, at(2), JobError(code="boom", message="m"), rng=random.Random(0))
    wire = job_to_wire(job)
    assert wire["error"] == {
        "code": "boom",
        "message": "m",
        "type": "boom",
        "attempt": 1,
        "occurred_at": "2026-01-01T00:00:02Z",
    }
    assert wire["errors"] == [wire["error"]]
    assert wire["state"] == "retryable"
    assert "next_attempt_at" in wire
    assert "retry_delay_ms" in wire


def test_dead_letter_flag_emitted_only_when_set() -> None:
    active = lifecycle.claim(new_job(retry={"max_attempts": 1}), at(1), "w", None)
    plain = lifecycle.fail(active, at(2), JobError())
    assert "dead_letter" not in job_to_wire(plain)
    dlq = lifecycle.fail(
        attrs.evolve(active, retry=RetryPolicy(max_attempts=1, on_exhaustion="dead_letter")),
        at(2),
        JobError(),
    )
    assert job_to_wire(dlq)["dead_letter"] is True


def test_offset_timestamps_keep_their_offset() -> None:
    job = new_job(scheduled_at="2026-01-01T09:00:10+09:00")
    wire = job_to_wire(job)
    assert wire["scheduled_at"] == "2026-01-01T09:00:10+09:00"
    back = job_from_dict(wire)
    assert back.scheduled_at.utcoffset() == timedelta(hours=9)


def test_unique_and_rate_limit_wire_forms() -> None:
    job = new_job(
        unique={"keys": ["type", "args"], "args_keys": ["id"], "period": "PT1M"},
        rate_limit={"max_per_second": 4, "key": "t"},
    )
    wire = job_to_wire(job)
    assert wire["unique"] == {
        "keys": ["type", "args"],
        "args_keys": ["id"],
        "states": [s.value for s in DEFAULT_UNIQUE_STATES],
        "on_conflict": "reject",
        "period": "PT60S",
    }
    assert wire["rate_limit"] == {
        "rate": {"limit": 4, "period": "PT1S"},
        "max_per_second": 4,
        "key": "t",
    }
    assert job_from_dict(wire) == job


def test_a_policy_stored_by_an_older_version_reads_back() -> None:
    """Records written before the extension's shapes (``{limit, period_ms, key}`` as the
    ``rate``/``max_per_second`` form, any key) stay readable."""
    job = new_job()
    wire = job_to_wire(job)
    wire["rate_limit"] = {"rate": {"limit": 2, "period": "PT1S"}, "max_per_second": 2, "key": "a b"}
    back = job_from_dict(wire)
    assert back.rate_limit == RateLimit(key="a b", rate=Window(limit=2, period_ms=1000))


# --- property round trip ----------------------------------------------------------------------


@SETTINGS
@given(jobs())
def test_round_trip_property(job: Job) -> None:
    wire = job_to_wire(job)
    assert all(wire[k] is not None for k in wire if k not in job.extra)
    assert wire["max_attempts"] == job.retry.max_attempts
    assert wire["state"] == job.state.value
    for k, v in job.extra.items():
        assert wire[k] == v
    assert job_from_dict(json.loads(json.dumps(wire))) == job


# --- events and cron --------------------------------------------------------------------------


def test_event_to_wire() -> None:
    event = Event(
        id="evt_1",
        type="job.completed",
        time=NOW,
        subject="j1",
        data={"job_id": "j1", "queue": "q", "state": "completed", "other": 1},
    )
    wire = event_to_wire(event)
    assert wire == {
        "specversion": "1.0",
        "id": "evt_1",
        "type": "job.completed",
        "source": "ojs://ojs-python",
        "time": "2026-01-01T00:00:00Z",
        "timestamp": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": event.data,
        "subject": "j1",
        "job_id": "j1",
        "queue": "q",
        "state": "completed",
    }


def test_event_without_subject() -> None:
    wire = event_to_wire(Event(id="e", type="cron.triggered", time=NOW))
    assert "subject" not in wire
    assert "job_id" not in wire
    assert wire["data"] == {}


def test_cron_to_wire_union_shape() -> None:
    cron = CronJob(
        name="nightly",
        expression="0 0 * * *",
        job_template={"type": "report.build", "args": [1], "options": {"queue": "q"}},
        created_at=NOW,
        updated_at=NOW,
        next_run_at=at(86_400),
    )
    wire = cron_to_wire(cron)
    assert wire["name"] == "nightly"
    assert wire["expression"] == wire["cron"] == "0 0 * * *"
    assert wire["type"] == "report.build"
    assert wire["args"] == [1]
    assert wire["options"] == {"queue": "q"}
    assert wire["timezone"] == "UTC"
    assert wire["status"] == "active"
    assert wire["next_run_at"] == "2026-01-02T00:00:00Z"
    assert wire["last_run_at"] is None
    assert wire["created_at"] == "2026-01-01T00:00:00Z"
    assert "description" not in wire


def test_cron_to_wire_disabled() -> None:
    wire = cron_to_wire(CronJob(name="n", expression="@daily", enabled=False, description="d"))
    assert wire["status"] == "disabled"
    assert wire["enabled"] is False
    assert wire["next_run_at"] is None
    assert wire["description"] == "d"
    assert wire["args"] == []
    assert wire["type"] is None
    assert "options" not in wire
    assert "created_at" not in wire


@SETTINGS
@given(jobs(), st.booleans())
def test_fast_encoder_equals_the_generic_one(job: Job, pending: bool) -> None:
    job = attrs.evolve(job, workflow_pending=pending)
    fast = codec._job_out(job)
    assert fast == codec._job_out_reference(job)
    # and shares nothing mutable with the job
    fast["args"].append("__probe__")
    fast["meta"]["__probe__"] = 1
    assert "__probe__" not in job.args
    assert "__probe__" not in job.meta
    assert codec._job_out(job) == codec._job_out_reference(job)


def test_stored_policies_are_parsed_once_and_never_confused() -> None:
    """Decoding caches each distinct policy; JSON values equal in Python but not in JSON (1 and
    true) stay apart, and an invalid one raises every time."""
    base = job_to_wire(Job(id="019b76da-a800-7231-ba09-a38ab6db3851", type="a.b"))
    first = job_from_dict({**base, "retry": {**base["retry"], "max_attempts": 1}})
    again = job_from_dict({**base, "retry": {**base["retry"], "max_attempts": 1}})
    assert first.retry is again.retry  # one parse, shared (policies are frozen)
    assert first.retry.max_attempts == 1
    for _ in range(2):
        with pytest.raises(Exception, match="structuring Job"):
            job_from_dict({**base, "retry": {**base["retry"], "max_attempts": True}})


def test_a_client_field_named_like_a_later_job_field_stays_a_client_field() -> None:
    """Records stored before ``progress``/``checkpoint`` existed may carry a client's unknown
    top-level field of that name: it is read back as an unknown field, not as ours."""
    base = job_to_wire(Job(id="019b76da-a800-7231-ba09-a38ab6db3851", type="a.b"))
    legacy = {**base, "progress": 5, "checkpoint": {"x": 1}, "checkpoint_seq": "s"}
    job = job_from_dict(legacy)
    assert (job.progress, job.checkpoint, job.checkpoint_seq) == (None, None, 0)
    assert job.extra == {"progress": 5, "checkpoint": {"x": 1}, "checkpoint_seq": "s"}
    assert job_to_wire(job)["progress"] == 5


@pytest.mark.parametrize("state", [None, {"cursor": "c"}, [1, 2]])
def test_progress_and_checkpoint_round_trip_and_encode_alike(state: Any) -> None:
    job = Job(
        id="019b76da-a800-7231-ba09-a38ab6db3851",
        type="a.b",
        progress=Progress(value=0.25, data={"n": 1}, message="m", attempt=2, updated_at=NOW),
        checkpoint=Checkpoint(
            state=state, sequence=3, created_at=at(1), attempt=2, metadata={"k": "v"}
        ),
        checkpoint_seq=3,
    )
    wire = job_to_wire(job)
    assert wire == codec._job_out_reference(job)
    assert wire["progress"]["percentage"] == 25.0
    assert wire["checkpoint"]["state"] == state
    assert job_from_dict(json.loads(json.dumps(wire))) == job
