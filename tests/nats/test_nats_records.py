"""A job record's stored form: the job's wire form less the fields at their defaults, read back
to the same job by this version and by the codec alone (as earlier versions read it)."""

from __future__ import annotations

import json

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from job_strategies import jobs

from ojs_core.codec import job_from_dict, job_to_wire
from ojs_core.model import Job, RetryPolicy
from ojs_core.states import JobState
from ojs_nats import records
from ojs_nats.records import decode_job, encode_job, stored_form


def _plain_job() -> Job:
    return Job(
        id="019b76da-a800-7231-ba09-a38ab6db3851",
        type="bench.noop",
        queue="deploy",
        args=[1, "user@example.com"],
        retry=RetryPolicy(on_exhaustion="dead_letter"),  # as the service resolves it
        state=JobState.ACTIVE,
        attempt=1,
    )


def test_a_plain_jobs_record_leaves_out_what_holds_the_defaults() -> None:
    job = _plain_job()
    stored = json.loads(encode_job(job, 1, 7, 9))["j"]
    for key in ("meta", "priority", "specversion", "tags", "max_attempts"):
        assert key not in stored, key
    assert stored["retry"] == {"on_exhaustion": "dead_letter"}
    assert len(encode_job(job, 1, 7, 9)) < 0.75 * len(
        json.dumps({"e": 1, "b": 7, "x": 9, "j": job_to_wire(job)}, separators=(",", ":"))
    )
    rec = decode_job(encode_job(job, 1, 7, 9), 42)
    assert (rec.job, rec.epoch, rec.revision, rec.birth, rec.entry) == (job, 1, 42, 7, 9)


def test_values_other_than_the_defaults_are_kept() -> None:
    job = attrs.evolve(
        _plain_job(),
        meta={"k": 1},
        priority=5,
        tags=["t"],
        retry=RetryPolicy(max_attempts=7, jitter=False, on_exhaustion="discard"),
    )
    stored = stored_form(job)
    assert (stored["meta"], stored["priority"], stored["tags"]) == ({"k": 1}, 5, ["t"])
    assert stored["retry"] == {"max_attempts": 7, "jitter": False, "on_exhaustion": "discard"}
    assert job_from_dict(stored) == job


def test_a_record_in_the_full_form_of_earlier_versions_reads_back() -> None:
    job = _plain_job()
    full = json.dumps({"e": 2, "b": 3, "x": 4, "j": job_to_wire(job)}).encode()
    assert decode_job(full, 5).job == job


@settings(max_examples=200, deadline=None)
@given(jobs(), st.sets(st.sampled_from(["meta", "priority", "tags", "retry", "on_exhaustion"])))
def test_every_job_reads_back_from_its_record(job: Job, at_default: set[str]) -> None:
    # Some fields at their defaults (where the stored form leaves them out), others not.
    changes: dict[str, object] = {}
    if "meta" in at_default:
        changes["meta"] = {}
    if "priority" in at_default:
        changes["priority"] = 0
    if "tags" in at_default:
        changes["tags"] = []
    if "retry" in at_default:
        exhaustion = job.retry.on_exhaustion if "on_exhaustion" in at_default else None
        changes["retry"] = RetryPolicy(on_exhaustion=exhaustion)
    job = attrs.evolve(job, **changes)  # type: ignore[arg-type]
    # Through JSON as stored, by this version and by the codec alone (earlier versions).
    assert decode_job(encode_job(job, 1), 1).job == job
    assert job_from_dict(json.loads(json.dumps(stored_form(job)))) == job


def test_the_defaults_left_out_are_pinned() -> None:
    """Records at a default hold no value for it: a changed model default would change every
    such stored job, so a change must be a decision (a migration), not an accident."""
    assert records._FIELD_DEFAULTS == {"meta": {}, "priority": 0, "specversion": "1.0", "tags": []}
    assert records._RETRY_DEFAULTS == {
        "max_attempts": 3,
        "initial_interval": "PT1S",
        "backoff_coefficient": 2.0,
        "max_interval": "PT300S",
        "jitter": True,
        "non_retryable_errors": [],
        "backoff_strategy": "exponential",
    }
