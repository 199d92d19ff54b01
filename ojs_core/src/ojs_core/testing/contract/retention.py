"""Retention: finished jobs are removed when their state's retention ends, with everything that
points at them; a conditional delete never undoes a newer change; the dead letter is capped;
stale worker records are forgotten; a workflow goes with its last job."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from ...errors import NotFoundError
from ...model import Job
from ...retention import Retention
from ...service import JobService
from ...states import JobState
from ..helpers import expect_stats, fetch_one, job_error, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestRetention"]

S = JobState
#: Short enough for a real-time backend to wait out.
SHORT = Retention(
    completed=timedelta(seconds=1),
    cancelled=timedelta(seconds=1),
    discarded=timedelta(seconds=1),
    dead_letter=timedelta(seconds=2),
)
TO_DLQ = {"max_attempts": 1, "on_exhaustion": "dead_letter"}


async def _completed(service: JobService, queue: str = "default", **options: Any) -> Job:
    job = await push(service, queue=queue, **options)
    fetched = await fetch_one(service, queue)
    assert fetched.id == job.id
    return await service.ack(job.id, {"ok": True})


async def _gone(service: JobService, job_id: str) -> bool:
    try:
        await service.get(job_id)
    except NotFoundError:
        return True
    return False


class TestRetention(KitTest):
    """Every finished record leaves the store when its retention ends, and nothing earlier."""

    async def test_terminal_jobs_are_stamped_with_their_states_retention(
        self, service: JobService
    ) -> None:
        """``retain_until`` is the finishing time plus the retention of the state; a job that
        is not terminal has none; ``None`` retention keeps forever."""
        done = await _completed(service)
        assert done.completed_at is not None
        assert done.retain_until == done.completed_at + timedelta(days=7)
        cancelled = await push(service)
        _, after = await service.cancel(cancelled.id)
        assert after.cancelled_at is not None
        assert after.retain_until == after.cancelled_at + timedelta(days=7)
        waiting = await push(service)
        assert waiting.retain_until is None
        service.retention = Retention.forever()
        kept = await _completed(service, "kept")
        assert kept.retain_until is None
        assert (await service.get(kept.id)).retain_until is None

    async def test_a_job_is_removed_when_its_retention_ends_not_before(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Completed, cancelled and discarded jobs go at their deadlines; stats follow."""
        service.retention = SHORT
        done = await _completed(service, "ret")
        cancelled = await push(service, queue="ret")
        await service.cancel(cancelled.id)
        discarded = await push(
            service, queue="ret", retry={"max_attempts": 1, "on_exhaustion": "discard"}
        )
        await fetch_one(service, "ret")
        await service.nack(discarded.id, job_error())
        await expect_stats(ojs_time, service, "ret", completed=1, cancelled=1, discarded=1)
        assert done.retain_until is not None
        await ojs_time.just_before(done.retain_until)
        if ojs_time.before(done.retain_until):
            assert not await _gone(service, done.id)
        await ojs_time.advance(1.0)
        for job_id in (done.id, cancelled.id, discarded.id):
            await ojs_time.until(partial(_gone, service, job_id), what=f"{job_id} removed")
        await expect_stats(ojs_time, service, "ret")

    async def test_removal_frees_the_unique_key(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A unique job whose record was removed no longer blocks a new one, even in states
        that would have conflicted."""
        service.retention = SHORT
        unique = {"keys": ["type", "args"], "states": ["completed", "available"]}
        done = await _completed(service, args=["u"], unique=unique)
        await ojs_time.advance(1.0)
        await ojs_time.until(lambda: _gone(service, done.id), what="the completed job removed")
        again = await push(service, args=["u"], unique=unique)
        assert again.id != done.id

    async def test_dead_letter_jobs_keep_their_own_retention(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Dead-letter jobs are kept for the dead-letter retention and leave the listing."""
        service.retention = SHORT
        job = await push(service, retry=TO_DLQ)
        await fetch_one(service)
        dead = await service.nack(job.id, job_error())
        assert dead.dead_letter
        assert dead.discarded_at is not None
        assert dead.retain_until == dead.discarded_at + timedelta(seconds=2)
        await ojs_time.advance(1.0)
        assert (await service.dead_letter()).total == 1
        await ojs_time.advance(1.0)
        await ojs_time.until(lambda: _gone(service, job.id), what="the dead job removed")
        assert (await service.dead_letter()).total == 0

    async def test_a_dead_letter_retry_clears_the_deadline_and_is_never_undone(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A retried job leaves the terminal state: its deadline is cleared, and a removal
        that was due for the old version cannot delete it."""
        service.retention = SHORT
        job = await push(service, retry=TO_DLQ)
        await fetch_one(service)
        dead = await service.nack(job.id, job_error())
        assert dead.retain_until is not None
        retried = await service.retry_dead_letter(job.id)
        assert retried.retain_until is None
        await ojs_time.advance_to(dead.retain_until + timedelta(milliseconds=500))
        await ojs_time.run_timers()
        assert (await service.get(job.id)).state is S.AVAILABLE

    async def test_delete_only_if_is_atomic_with_its_check(self, service: JobService) -> None:
        """``delete_job(only_if=...)`` removes nothing when the check fails."""
        job = await push(service)
        backend = service.backend
        assert not await backend.delete_job(job.id, only_if=lambda j: j.state is S.COMPLETED)
        assert (await service.get(job.id)).state is S.AVAILABLE
        assert await backend.delete_job(job.id, only_if=lambda j: j.state is S.AVAILABLE)
        assert await _gone(service, job.id)
        assert not await backend.delete_job(job.id)
        assert (await service.fetch(["default"])) == []

    async def test_a_workflow_goes_with_its_last_job(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """The workflow record is removed once every job of it was."""
        service.retention = SHORT
        workflow = await service.create_workflow(
            {
                "type": "chain",
                "steps": [{"type": "s.one", "args": []}, {"type": "s.two", "args": []}],
            }
        )
        workflow_id = workflow["id"]
        for _ in range(2):
            job = await ojs_time.until(
                lambda: service.fetch(["default"]), what="the next step available"
            )
            await service.ack(job[0].id, {"ok": True})
        await ojs_time.advance(1.0)
        await ojs_time.until(
            lambda: _workflow_gone(service, workflow_id), what="the workflow removed"
        )

    async def test_prune_caps_the_dead_letter_oldest_first(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Beyond ``dead_letter_max_count``, the oldest dead-letter jobs are removed."""
        service.retention = Retention(dead_letter_max_count=2)
        ids = []
        for _ in range(4):
            job = await push(service, retry=TO_DLQ)
            await fetch_one(service)
            await service.nack(job.id, job_error())
            ids.append(job.id)
            await ojs_time.advance(0.01)
        removed = await service.prune()
        assert removed["dead_letter"] == 2
        page = await service.dead_letter()
        assert [j.id for j in page.items] == [ids[3], ids[2]]
        assert await _gone(service, ids[0])
        assert await _gone(service, ids[1])

    async def test_prune_forgets_workers_that_stopped_heartbeating(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A worker not seen for the workers' retention is removed; a live one is kept."""
        service.retention = Retention(workers=timedelta(seconds=1))
        await service.heartbeat("old-worker")
        await ojs_time.advance(1.2)
        await service.heartbeat("live-worker")
        removed = await service.prune()
        assert removed["workers"] == 1
        assert [w.worker_id for w in await service.backend.list_workers()] == ["live-worker"]
        assert not await service.backend.delete_worker("old-worker")

    @pytest.mark.parametrize("state", ["completed", "cancelled"])
    async def test_a_removed_jobs_id_may_be_used_again(
        self, service: JobService, ojs_time: TimeControl, state: str
    ) -> None:
        """After removal the id is free: an enqueue with it is a new job."""
        service.retention = SHORT
        job = await push(service)
        if state == "completed":
            await fetch_one(service)
            await service.ack(job.id, None)
        else:
            await service.cancel(job.id)
        await ojs_time.advance(1.0)
        await ojs_time.until(lambda: _gone(service, job.id), what="the job removed")
        again = await service.enqueue({"id": job.id, "type": "test.job", "args": []})
        assert again.job.id == job.id
        assert again.job.state is S.AVAILABLE


async def _workflow_gone(service: JobService, workflow_id: str) -> bool:
    try:
        await service.get_workflow(workflow_id)
    except NotFoundError:
        return True
    return False
