"""The dead-letter queue: who lands there, listing it, retrying and deleting its jobs."""

from __future__ import annotations

from typing import Any

import pytest

from ...errors import NotFoundError, ValidationError
from ...model import Job
from ...service import JobService
from ...states import JobState
from ..helpers import expect_stats, fetch_one, job_error, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestDeadLetter"]

S = JobState
TO_DLQ = {"max_attempts": 1, "on_exhaustion": "dead_letter"}


async def _kill(service: JobService, queue: str = "default", **options: Any) -> Job:
    job = await push(service, queue=queue, retry=TO_DLQ, **options)
    await fetch_one(service, queue)
    dead = await service.nack(job.id, job_error("fatal"))
    assert dead.state is S.DISCARDED
    assert dead.dead_letter
    return dead


class TestDeadLetter(KitTest):
    """Exhausted jobs with ``on_exhaustion: dead_letter``, and nothing else, are listed."""

    async def test_only_dead_lettered_jobs_are_listed(self, service: JobService) -> None:
        """Exhausted with ``dead_letter``: listed; with ``discard``, or cancelled: not."""
        dead = await _kill(service)
        kept = await push(service, retry={"max_attempts": 1, "on_exhaustion": "discard"})
        await fetch_one(service)
        await service.nack(kept.id, job_error())
        cancelled = await push(service)
        await service.cancel(cancelled.id)
        page = await service.dead_letter()
        assert [j.id for j in page.items] == [dead.id]
        assert page.total == 1
        assert page.items[0] == await service.get(dead.id)

    async def test_exhausted_jobs_are_kept_in_the_dead_letter_unless_told(
        self, service: JobService
    ) -> None:
        """A policy that does not choose gets the service's default (``dead_letter``); an
        explicit ``discard`` is honoured; a service set to discard discards the rest."""
        unset = await push(service, retry={"max_attempts": 1})
        assert unset.retry.on_exhaustion == "dead_letter"
        await fetch_one(service)
        dead = await service.nack(unset.id, job_error())
        assert dead.state is S.DISCARDED
        assert dead.dead_letter
        service.exhausted = "discard"
        other = await push(service, retry={"max_attempts": 1})
        assert other.retry.on_exhaustion == "discard"
        await fetch_one(service)
        gone = await service.nack(other.id, job_error())
        assert not gone.dead_letter
        assert [j.id for j in (await service.dead_letter()).items] == [unset.id]

    async def test_newest_first_with_paging(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """The listing is newest first; ``limit``/``offset`` page it; ``total`` counts all."""
        ids = []
        for _ in range(4):
            ids.append((await _kill(service)).id)
            await ojs_time.advance(0.01)
        newest_first = list(reversed(ids))
        page = await service.dead_letter(limit=2)
        assert [j.id for j in page.items] == newest_first[:2]
        assert page.total == 4
        rest = await service.dead_letter(limit=2, offset=2)
        assert [j.id for j in rest.items] == newest_first[2:]
        assert (await service.dead_letter(offset=4)).items == []

    async def test_queue_filter(self, service: JobService) -> None:
        """``queue`` narrows the listing."""
        a = await _kill(service, "qa")
        b = await _kill(service, "qb")
        assert [j.id for j in (await service.dead_letter(queue="qa")).items] == [a.id]
        assert [j.id for j in (await service.dead_letter(queue="qb")).items] == [b.id]
        assert (await service.dead_letter(queue="qc")).total == 0

    async def test_retry_resets_attempts_and_requeues(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A retried job is available with attempt 0, history kept, behind waiting jobs."""
        dead = await _kill(service)
        waiting = await push(service)
        sent = service.now()
        retried = await service.retry_dead_letter(dead.id)
        assert retried.state is S.AVAILABLE
        assert retried.enqueued_at is not None
        assert sent <= retried.enqueued_at <= service.now()
        assert retried.attempt == 0
        assert not retried.dead_letter
        assert retried.discarded_at is None
        assert len(retried.errors) == 1
        assert (await service.dead_letter()).total == 0
        got = [j.id for j in await service.fetch(["default"], count=2)]
        assert got == [waiting.id, dead.id]
        again = await service.get(dead.id)
        assert again.attempt == 1
        await expect_stats(ojs_time, service, "default", active=2)

    async def test_retry_with_override(self, service: JobService) -> None:
        """An override may move the job to another queue and change its retry policy."""
        dead = await _kill(service)
        out = await service.retry_dead_letter(
            dead.id, {"queue": "rescue", "retry": {"max_attempts": 4}}
        )
        assert out.queue == "rescue"
        assert out.max_attempts == 4
        assert (await fetch_one(service, "rescue")).id == dead.id
        assert await service.fetch(["default"]) == []

    async def test_refused_override_changes_nothing(self, service: JobService) -> None:
        """An invalid override is a validation error and leaves the job dead."""
        dead = await _kill(service)
        for bad in (["not", "an", "object"], {"queue": "Not A Queue"}):
            with pytest.raises(ValidationError):
                await service.retry_dead_letter(dead.id, bad)
        assert await service.get(dead.id) == dead
        assert (await service.dead_letter()).total == 1

    async def test_delete_removes_the_job(self, service: JobService, ojs_time: TimeControl) -> None:
        """Deleting a dead job removes it everywhere: lookups, listing, stats."""
        dead = await _kill(service)
        await expect_stats(ojs_time, service, "default", discarded=1)
        await service.delete_dead_letter(dead.id)
        with pytest.raises(NotFoundError):
            await service.get(dead.id)
        assert (await service.dead_letter()).total == 0
        await expect_stats(ojs_time, service, "default")
        with pytest.raises(NotFoundError):
            await service.delete_dead_letter(dead.id)

    async def test_live_jobs_are_not_in_the_dead_letter_queue(self, service: JobService) -> None:
        """Retry and delete refuse jobs that are not dead-lettered (404)."""
        plain = await push(service, retry={"max_attempts": 1, "on_exhaustion": "discard"})
        await fetch_one(service)
        await service.nack(plain.id, job_error())
        live = await push(service)
        for jid in (plain.id, live.id):
            with pytest.raises(NotFoundError):
                await service.retry_dead_letter(jid)
            with pytest.raises(NotFoundError):
                await service.delete_dead_letter(jid)
        assert (await service.get(live.id)).state is S.AVAILABLE
