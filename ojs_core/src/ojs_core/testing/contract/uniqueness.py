"""Unique jobs: the four conflict policies, ``period``, ``states``, and races on one key.

Keys are computed by core (:func:`ojs_core.unique.unique_key`); the backend keeps the index from
key to holder and asks core's predicate whether the holder blocks a new job.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ...errors import ConflictError, DuplicateJobError
from ...service import EnqueueOutcome, JobService
from ...states import JobState
from ..helpers import fetch_one, job_error, push, run_one
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestUniqueJobs", "TestUniqueRaces"]

S = JobState


def _body(
    unique: dict[str, Any],
    args: list[Any] | None = None,
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    body = {"type": "test.job", "args": args or [], "options": {"unique": unique, **options}}
    if meta is not None:
        body["meta"] = meta
    return body


class TestUniqueJobs(KitTest):
    """One holder per unique key, released when the holder leaves the listed states."""

    async def test_reject_names_the_existing_job(self, service: JobService) -> None:
        """A second job with the key is refused with the holder's id and state."""
        unique = {"keys": ["type", "args"]}
        first = await push(service, args=[1], unique=unique)
        with pytest.raises(DuplicateJobError) as exc:
            await push(service, args=[1], unique=unique)
        assert exc.value.details["existing_job_id"] == first.id
        assert exc.value.details["existing_job_state"] == "available"
        other = await push(service, args=[2], unique=unique)
        assert other.id != first.id

    async def test_ignore_returns_the_existing_job(self, service: JobService) -> None:
        """``ignore`` answers with the holder and creates nothing."""
        unique = {"keys": ["type"], "on_conflict": "ignore"}
        first = await push(service, unique=unique)
        outcome = await service.enqueue(_body(unique))
        assert not outcome.created
        assert outcome.job.id == first.id
        assert [j.id for j in await service.fetch(["default"], count=5)] == [first.id]

    async def test_replace_cancels_the_holder(self, service: JobService) -> None:
        """``replace`` cancels the holder and stores the new job as the key's holder."""
        unique = {"keys": ["type"], "on_conflict": "replace"}
        first = await push(service, args=["old"], unique=unique)
        second = await push(service, args=["new"], unique=unique)
        assert second.id != first.id
        assert (await service.get(first.id)).state is S.CANCELLED
        assert [j.args for j in await service.fetch(["default"], count=5)] == [["new"]]
        third = await push(service, args=["newer"], unique=unique)
        assert (await service.get(second.id)).state is S.CANCELLED
        assert (await service.get(third.id)).state is S.AVAILABLE

    async def test_replace_except_schedule_keeps_the_time(self, service: JobService) -> None:
        """``replace_except_schedule`` replaces the job but keeps the holder's schedule."""
        unique = {"keys": ["type"], "on_conflict": "replace_except_schedule"}
        first = await push(service, args=["old"], unique=unique, scheduled_at="+PT1H")
        second = await push(service, args=["new"], unique=unique)
        assert (await service.get(first.id)).state is S.CANCELLED
        assert second.state is S.SCHEDULED
        assert second.scheduled_at == first.scheduled_at
        assert (await service.get(second.id)).scheduled_at == first.scheduled_at

    async def test_period_bounds_the_conflict(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """With ``period``, the holder blocks only until ``created_at + period``."""
        t = ojs_time
        unique = {"keys": ["type"], "period": "PT1S"}
        first = await push(service, unique=unique)
        assert first.created_at is not None
        until = first.created_at + timedelta(seconds=1)
        await t.just_before(until)
        if t.before(until):
            with pytest.raises(DuplicateJobError):
                await push(service, unique=unique)
        await t.advance_to(until)
        second = await push(service, unique=unique)
        assert second.id != first.id
        assert (await service.get(first.id)).state is S.AVAILABLE

    async def test_states_limit_what_blocks(self, service: JobService) -> None:
        """With ``states: [available]`` an active holder no longer blocks."""
        unique = {"keys": ["type"], "states": ["available"]}
        first = await push(service, unique=unique)
        with pytest.raises(DuplicateJobError):
            await push(service, unique=unique)
        await fetch_one(service)
        second = await push(service, unique=unique)
        assert second.id != first.id

    @pytest.mark.parametrize("finish", ["completed", "cancelled", "discarded"])
    async def test_finished_holder_releases_the_key(self, service: JobService, finish: str) -> None:
        """By default only non-terminal holders block."""
        unique = {"keys": ["type"]}
        first = await push(service, unique=unique, retry={"max_attempts": 1})
        if finish == "completed":
            await run_one(service)
        elif finish == "cancelled":
            await service.cancel(first.id)
        else:
            await fetch_one(service)
            await service.nack(first.id, job_error())
        assert (await service.get(first.id)).state.value == finish
        second = await push(service, unique=unique)
        assert second.id != first.id

    async def test_new_holder_takes_over_the_key(self, service: JobService) -> None:
        """After a holder finishes, the next job with the key becomes the one that blocks."""
        unique = {"keys": ["type"]}
        await push(service, unique=unique)
        await run_one(service)
        second = await push(service, unique=unique)
        with pytest.raises(DuplicateJobError) as exc:
            await push(service, unique=unique)
        assert exc.value.details["existing_job_id"] == second.id

    @pytest.mark.parametrize("dimension", ["queue", "args", "meta"])
    async def test_key_dimensions(self, service: JobService, dimension: str) -> None:
        """Jobs differing in a key dimension do not conflict; identical ones do."""
        unique = {"keys": ["type", dimension]}
        base: dict[str, Any] = {"queue": "q1", "meta": {"tenant": "a"}}
        await service.enqueue(_body(unique, args=[1], **base))
        changed = dict(base)
        args = [1]
        if dimension == "queue":
            changed["queue"] = "q2"
        elif dimension == "args":
            args = [2]
        else:
            changed["meta"] = {"tenant": "b"}
        assert (await service.enqueue(_body(unique, args=args, **changed))).created
        with pytest.raises(DuplicateJobError):
            await service.enqueue(_body(unique, args=[1], **base))

    async def test_deleted_holder_releases_the_key(self, service: JobService) -> None:
        """Deleting the holder (dead-letter delete) frees its key."""
        unique = {"keys": ["type"], "states": ["discarded"]}
        retry = {"max_attempts": 1, "on_exhaustion": "dead_letter"}
        first = await push(service, unique=unique, retry=retry)
        await fetch_one(service)
        await service.nack(first.id, job_error())
        with pytest.raises(DuplicateJobError):
            await push(service, unique=unique)
        await service.delete_dead_letter(first.id)
        assert (await push(service, unique=unique)).id != first.id


class TestUniqueRaces(KitTest):
    """Concurrent enqueues of one key: the index admits one holder."""

    async def test_concurrent_rejects_admit_one(self, service: JobService) -> None:
        """Twelve enqueues at once with ``reject``: one created, eleven refused."""
        unique = {"keys": ["type"]}
        results = await asyncio.gather(
            *(service.enqueue(_body(unique, args=[i])) for i in range(12)),
            return_exceptions=True,
        )
        created = [r for r in results if isinstance(r, EnqueueOutcome)]
        refused = [r for r in results if isinstance(r, DuplicateJobError)]
        assert len(created) == 1
        assert len(refused) == 11
        assert all(r.details["existing_job_id"] == created[0].job.id for r in refused)
        assert [j.id for j in await service.fetch(["default"], count=20)] == [created[0].job.id]

    async def test_concurrent_ignores_agree_on_one_job(self, service: JobService) -> None:
        """Twelve enqueues at once with ``ignore``: all answer with the same single job."""
        unique = {"keys": ["type"], "on_conflict": "ignore"}
        results = await asyncio.gather(*(service.enqueue(_body(unique)) for _ in range(12)))
        assert sum(r.created for r in results) == 1
        assert len({r.job.id for r in results}) == 1
        assert len(await service.fetch(["default"], count=20)) == 1

    async def test_concurrent_replaces_leave_one_live_job(
        self, service: JobService, replica_service: JobService
    ) -> None:
        """``replace`` racing from two replicas: at most one job with the key stays live."""
        unique = {"keys": ["type"], "on_conflict": "replace"}
        results = await asyncio.gather(
            *(
                svc.enqueue(_body(unique, args=[i]))
                for i in range(8)
                for svc in (service, replica_service)
            ),
            return_exceptions=True,
        )
        ids = [r.job.id for r in results if isinstance(r, EnqueueOutcome)]
        assert ids, results
        jobs = await service.backend.get_jobs(ids)
        live = [j for j in jobs if j is not None and not j.state.terminal]
        # Each insert found the previous holder terminal, so at most one job is live; exactly
        # one unless a replacer gave up (ConflictError) after cancelling the last holder.
        gave_up = any(isinstance(r, ConflictError) for r in results)
        assert len(live) == 1 or (gave_up and not live)
