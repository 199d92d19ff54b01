"""Progress reports and durable checkpoints, stored on the job record (``ojs_core.progress``,
``ojs_core.checkpoint``): what a backend must keep through ``update_job`` and its reads.

Both extensions are written with ``Backend.update_job`` only, so these tests check that a
backend stores and returns the new record fields faithfully (through a visibility timeout and a
retry too) and that the rules hold over it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ...checkpoint import (
    delete_checkpoint,
    get_checkpoint,
    parse_checkpoint,
    save_checkpoint,
)
from ...errors import ConflictError, FieldTooLargeError, NotFoundError, ValidationError
from ...progress import ProgressOutcome, parse_progress, report_progress
from ...service import JobService
from ...states import JobState
from ..helpers import NO_JITTER, expect_events, fetch_one, fetch_when_ready, job_error, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestCheckpoints", "TestProgress"]

S = JobState
UNKNOWN_ID = "019b76da-a800-7231-ba09-a38ab6db3851"
#: A retry soon enough for a real-time run, without jitter.
SOON = {"max_attempts": 3, "initial_interval": "PT1S", "max_interval": "PT1S", **NO_JITTER}


async def _report(
    service: JobService, job_id: str, worker_id: str | None = "w1", **body: Any
) -> ProgressOutcome:
    report = parse_progress(body, service.limits.max_progress_bytes)
    return await report_progress(service, job_id, report, worker_id)


async def _save(
    service: JobService, job_id: str, state: Any, worker_id: str | None = "w1", **body: Any
) -> int:
    request = parse_checkpoint({"state": state, **body}, service.limits.max_checkpoint_bytes)
    return (await save_checkpoint(service, job_id, request, worker_id)).sequence


class TestProgress(KitTest):
    """Reports are clamped, never go back within an attempt, count as heartbeats, are ignored
    for jobs that are not active, start afresh per attempt and end at 1.0 on completion."""

    async def test_reports_are_stored_clamped_and_never_go_back(self, service: JobService) -> None:
        """The fraction is clamped into [0, 1] and kept at its highest; data and message are
        replaced by each report; the SDK's percentage is a fraction of 100."""
        await push(service)
        job = await fetch_one(service, worker_id="w1")
        first = await _report(service, job.id, progress=0.4, data={"rows": 40}, message="m1")
        assert first.accepted
        stored = (await service.get(job.id)).progress
        assert stored is not None
        assert (stored.value, stored.data, stored.message) == (0.4, {"rows": 40}, "m1")
        assert stored.attempt == 1
        lower = await _report(service, job.id, progress=0.1, data={"rows": 41})
        assert lower.accepted
        stored = (await service.get(job.id)).progress
        assert stored is not None
        assert (stored.value, stored.data, stored.message) == (0.4, {"rows": 41}, None)
        await _report(service, job.id, percentage=55)
        assert (await service.get(job.id)).progress.value == 0.55  # type: ignore[union-attr]
        await _report(service, job.id, progress=7)
        assert (await service.get(job.id)).progress.value == 1.0  # type: ignore[union-attr]
        assert parse_progress({"progress": -3}, 100).value == 0.0

    async def test_bad_reports_are_refused_before_anything_is_stored(
        self, service: JobService
    ) -> None:
        """Wrong types and empty reports are 400s naming the field; big data is 413."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "progress"),
            ({"progress": "half"}, "progress"),
            ({"progress": True}, "progress"),
            ({"percentage": [1]}, "percentage"),
            ({"data": [1, 2]}, "data"),
            ({"message": 3}, "message"),
        ]
        for body, path in cases:
            with pytest.raises(ValidationError) as caught:
                parse_progress(body, 1000)
            assert caught.value.path == path, body
        with pytest.raises(FieldTooLargeError) as too_big:
            parse_progress({"data": {"blob": "x" * 200}}, 100)
        assert too_big.value.status == 413
        assert too_big.value.details["limit"] == 100

    async def test_only_an_active_job_of_the_reporter_takes_a_report(
        self, service: JobService
    ) -> None:
        """Reports for waiting or finished jobs, or another worker's job, are ignored (not
        refused); an unknown job is not found."""
        waiting = await push(service)
        outcome = await _report(service, waiting.id, progress=0.5)
        assert (outcome.accepted, outcome.reason) == (False, "not_active")
        assert (await service.get(waiting.id)).progress is None
        job = await fetch_one(service, worker_id="w1")
        theirs = await _report(service, job.id, worker_id="w2", progress=0.5)
        assert (theirs.accepted, theirs.reason) == (False, "not_owner")
        assert (await service.get(job.id)).progress is None
        await service.ack(job.id, None, "w1")
        late = await _report(service, job.id, progress=0.9)
        assert (late.accepted, late.reason) == (False, "not_active")
        with pytest.raises(NotFoundError):
            await _report(service, UNKNOWN_ID, progress=0.5)

    async def test_a_report_is_a_heartbeat(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A report moves the visibility deadline as a heartbeat does, so a job that reports
        outlives its first deadline."""
        t = ojs_time
        job = await push(service, visibility_timeout_ms=1000)
        claimed = await fetch_one(service, worker_id="w1")
        first = claimed.visible_until
        assert first is not None
        await t.advance(0.5)
        outcome = await _report(service, job.id, progress=0.2)
        extended = outcome.job.visible_until
        assert extended is not None
        assert extended > first
        await t.advance_to(first)
        if t.before(extended):
            assert (await service.get(job.id)).state is S.ACTIVE
        await t.advance_to(extended)
        await t.until(
            lambda: _state_is(service, job.id, S.AVAILABLE), what="expiry after the report"
        )

    async def test_a_report_never_shortens_a_longer_deadline(self, service: JobService) -> None:
        """A worker that fetched with a long visibility keeps it through progress reports and
        checkpoint saves (they extend by the job's own timeout only when that is later)."""
        job = await push(service, visibility_timeout_ms=30_000)
        claimed = await fetch_one(service, worker_id="w1", visibility_ms=4 * 3600 * 1000)
        assert claimed.visible_until is not None
        reported = (await _report(service, job.id, progress=0.5)).job
        assert reported.visible_until == claimed.visible_until
        await _save(service, job.id, {"step": 1})
        saved = await service.get(job.id)
        assert saved.visible_until == claimed.visible_until

    async def test_each_attempt_starts_afresh_and_completion_is_whole(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A failed attempt keeps its last report; the next attempt starts without one (and
        may report less); the acknowledged job is at 1.0."""
        t = ojs_time
        await push(service, retry=SOON)
        job = await fetch_one(service, worker_id="w1")
        await _report(service, job.id, progress=0.8)
        failed = await service.nack(job.id, job_error(), "w1")
        assert failed.state is S.RETRYABLE
        assert failed.progress is not None
        assert failed.progress.value == 0.8
        assert failed.next_attempt_at is not None
        await t.advance_to(failed.next_attempt_at)
        again = await fetch_when_ready(t, service, worker_id="w1")
        assert again.id == job.id
        assert again.attempt == 2
        assert again.progress is None
        await _report(service, job.id, progress=0.3)
        assert (await service.get(job.id)).progress.value == 0.3  # type: ignore[union-attr]
        done = await service.ack(job.id, None, "w1")
        assert done.progress is not None
        assert done.progress.value == 1.0
        # A job that never reported gets no invented progress.
        await push(service)
        quiet = await fetch_one(service)
        assert (await service.ack(quiet.id)).progress is None

    async def test_progress_events_are_throttled_per_job(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Reports in quick succession yield one ``job.progress`` event; one a second later
        yields the next. Every report is stored all the same."""
        t = ojs_time
        await push(service)
        job = await fetch_one(service, worker_id="w1")
        for value in (0.1, 0.2, 0.3):
            assert (await _report(service, job.id, progress=value)).accepted
        assert (await service.get(job.id)).progress.value == 0.3  # type: ignore[union-attr]
        events = await expect_events(t, service, ["job.progress"], "job.progress", job_id=job.id)
        assert events[0].data["progress"] == 10
        assert events[0].data["value"] == 0.1
        await t.advance(1.0)
        await _report(service, job.id, progress=0.6, message="later")
        got = await expect_events(
            t, service, ["job.progress", "job.progress"], "job.progress", job_id=job.id
        )
        assert (got[1].data["progress"], got[1].data["message"]) == (60, "later")

    async def test_a_report_may_carry_a_checkpoint(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A report with ``checkpoint`` (progress spec §6.4) saves it in the same write; an
        ignored report saves nothing."""
        t = ojs_time
        waiting = await push(service)
        ignored = await _report(service, waiting.id, progress=0.1, checkpoint={"at": 0})
        assert not ignored.accepted
        assert (await service.get(waiting.id)).checkpoint is None
        job = await fetch_one(service, worker_id="w1")
        outcome = await _report(service, job.id, progress=0.5, checkpoint={"at": 50})
        saved = outcome.job.checkpoint
        assert saved is not None
        assert (saved.state, saved.sequence, saved.attempt) == ({"at": 50}, 1, 1)
        stored = await get_checkpoint(service, job.id)
        assert stored is not None
        assert stored.state == {"at": 50}
        await expect_events(t, service, ["job.checkpointed"], "job.checkpointed", job_id=job.id)
        with pytest.raises(ValidationError) as caught:
            parse_progress({"progress": 1, "checkpoint": [1]}, 1000)
        assert caught.value.path == "checkpoint"
        with pytest.raises(FieldTooLargeError) as too_big:
            parse_progress({"progress": 1, "checkpoint": {"b": "x" * 100}}, 1000, 50)
        assert too_big.value.details["path"] == "checkpoint"


async def _state_is(service: JobService, job_id: str, state: JobState) -> bool:
    return (await service.get(job_id)).state is state


class TestCheckpoints(KitTest):
    """The latest checkpoint is kept on the job, across attempts, until the job ends; only the
    active attempt writes it; sequences never repeat."""

    async def test_save_read_delete_and_sequence(self, service: JobService) -> None:
        """Each save overwrites the last and numbers it; a delete keeps the numbering."""
        await push(service)
        job = await fetch_one(service, worker_id="w1")
        assert await get_checkpoint(service, job.id) is None
        assert await _save(service, job.id, {"n": 1}) == 1
        assert await _save(service, job.id, {"n": 2}, step_index=4, metadata={"k": "v"}) == 2
        stored = await get_checkpoint(service, job.id)
        assert stored is not None
        assert (stored.state, stored.sequence, stored.step_index) == ({"n": 2}, 2, 4)
        assert (stored.metadata, stored.attempt, stored.worker_id) == ({"k": "v"}, 1, "w1")
        assert await delete_checkpoint(service, job.id) is True
        assert await get_checkpoint(service, job.id) is None
        assert await delete_checkpoint(service, job.id) is False
        assert await _save(service, job.id, None) == 3  # null is a state like any other
        again = await get_checkpoint(service, job.id)
        assert again is not None
        assert (again.state, again.sequence) == (None, 3)
        with pytest.raises(NotFoundError):
            await get_checkpoint(service, UNKNOWN_ID)
        with pytest.raises(NotFoundError):
            await delete_checkpoint(service, UNKNOWN_ID)

    async def test_only_the_active_attempt_saves(self, service: JobService) -> None:
        """A waiting job, another worker, a past attempt: 409, nothing stored. Unknown job:
        404. Over the size limit: 413 before anything is read."""
        waiting = await push(service)
        with pytest.raises(ConflictError) as not_active:
            await _save(service, waiting.id, {"n": 1})
        assert not_active.value.details["current_state"] == "available"
        job = await fetch_one(service, worker_id="w1")
        with pytest.raises(ConflictError):
            await _save(service, job.id, {"n": 1}, worker_id="w2")
        with pytest.raises(ConflictError):
            await _save(service, job.id, {"n": 1}, attempt=2)
        with pytest.raises(ConflictError):  # the official SDK's form of the attempt
            await _save(service, job.id, {"n": 1}, metadata={"attempt": "3"})
        assert (await service.get(job.id)).checkpoint is None
        assert await _save(service, job.id, {"n": 1}, metadata={"attempt": "1"}) == 1
        with pytest.raises(NotFoundError):
            await _save(service, UNKNOWN_ID, {"n": 1})
        with pytest.raises(FieldTooLargeError):
            parse_checkpoint({"state": "x" * 100}, 50)
        bad: list[tuple[dict[str, Any], str]] = [
            ({}, "state"),
            ({"state": 1, "step_index": -1}, "step_index"),
            ({"state": 1, "metadata": "m"}, "metadata"),
            ({"state": 1, "attempt": 0}, "attempt"),
        ]
        for body, path in bad:
            with pytest.raises(ValidationError) as caught:
                parse_checkpoint(body, 1000)
            assert caught.value.path == path

    async def test_a_checkpoint_survives_a_crash_and_a_retry(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """An attempt abandoned (visibility timeout) or failed leaves its checkpoint for the
        next one, which receives it with the job."""
        t = ojs_time
        job = await push(service, visibility_timeout_ms=1000, retry=SOON)
        await fetch_one(service, worker_id="w1")
        await _save(service, job.id, {"cursor": "a"})
        saved = await service.get(job.id)
        assert saved.visible_until is not None
        await t.advance_to(saved.visible_until)
        await t.until(lambda: _state_is(service, job.id, S.AVAILABLE), what="visibility expiry")
        second = await fetch_one(service, worker_id="w2")
        assert second.attempt == 2
        assert second.checkpoint is not None
        assert (second.checkpoint.state, second.checkpoint.attempt) == ({"cursor": "a"}, 1)
        with pytest.raises(ConflictError):  # the first attempt's worker is too late
            await _save(service, job.id, {"cursor": "stale"}, worker_id="w1")
        assert await _save(service, job.id, {"cursor": "b"}, worker_id="w2") == 2
        failed = await service.nack(job.id, job_error(), "w2")
        assert failed.next_attempt_at is not None
        await t.advance_to(failed.next_attempt_at)
        third = await fetch_when_ready(t, service, worker_id="w3")
        assert third.checkpoint is not None
        assert (third.checkpoint.state, third.checkpoint.sequence) == ({"cursor": "b"}, 2)

    @pytest.mark.parametrize("ending", ["ack", "cancel", "discard"])
    async def test_the_checkpoint_goes_when_the_job_ends(
        self, service: JobService, ending: str
    ) -> None:
        """Completed, cancelled or discarded: nothing left to resume, so no checkpoint."""
        job = await push(service, retry={"max_attempts": 1})
        await fetch_one(service, worker_id="w1")
        await _save(service, job.id, {"n": 1})
        if ending == "ack":
            await service.ack(job.id, None, "w1")
        elif ending == "cancel":
            await service.cancel(job.id)
        else:
            await service.nack(job.id, job_error(), "w1")
        ended = await service.get(job.id)
        assert ended.state.terminal
        assert ended.checkpoint is None
        assert ended.checkpoint_seq == 1
        assert await get_checkpoint(service, job.id) is None

    async def test_a_save_is_a_heartbeat(self, service: JobService) -> None:
        """Saving proves the worker alive: the visibility deadline moves."""
        job = await push(service, visibility_timeout_ms=60_000)
        claimed = await fetch_one(service, worker_id="w1", visibility_ms=1000)
        await _save(service, job.id, {"n": 1})
        after = await service.get(job.id)
        assert claimed.visible_until is not None
        assert after.visible_until is not None
        assert after.visible_until >= claimed.visible_until + timedelta(seconds=50)
