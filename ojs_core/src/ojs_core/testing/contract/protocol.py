"""The Backend protocol's own promises, called directly: compare-and-swap, reads, listings,
claims with every kind of ``activate`` answer, queues, workers, health and reset."""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime

import attrs
import pytest

from ... import lifecycle
from ...backend import Backend, BackendHealth, EventFilter, JobFilter
from ...errors import ConflictError, NotFoundError, ValidationError
from ...ids import uuid7
from ...model import Job, WorkerInfo
from ...service import JobService
from ...states import JobState
from ..helpers import expect_stats, fetch_one, fetch_when_ready, job_error, push
from ..timecontrol import TimeControl
from ._base import KitTest
from .transitions import job_in_state

__all__ = [
    "TestClaimJobs",
    "TestCompareAndSwap",
    "TestLifecycleAndReset",
    "TestListingsAndDeletion",
    "TestQueuesAndWorkers",
    "TestReads",
]

S = JobState


class _Refused(ConflictError):
    """What the test functions raise to abort an update."""


def _bump(job: Job) -> Job:
    return attrs.evolve(job, meta={**job.meta, "n": job.meta.get("n", 0) + 1})


class TestCompareAndSwap(KitTest):
    """``update_job``: apply a pure function to the current version, atomically."""

    async def test_returns_before_and_after_and_stores_after(self, service: JobService) -> None:
        """The stored version is what the function returned."""
        job = await push(service)
        before, after = await service.backend.update_job(job.id, _bump)
        assert before == job
        assert after.meta["n"] == 1
        assert await service.get(job.id) == after

    async def test_raising_function_writes_nothing(self, service: JobService) -> None:
        """Whatever the function raises propagates, and the job is untouched."""
        job = await push(service)
        other = await push(service)

        def refuse(j: Job) -> Job:
            raise _Refused("no")

        with pytest.raises(_Refused):
            await service.backend.update_job(job.id, refuse)
        assert await service.get(job.id) == job
        got = [j.id for j in await service.fetch(["default"], count=2)]
        assert got == [job.id, other.id]

    async def test_unchanged_result_writes_nothing(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Returning the argument itself stores nothing: same version, same queue position."""
        first = await push(service)
        second = await push(service)
        before, after = await service.backend.update_job(first.id, lambda j: j)
        assert after is before
        assert before == first
        assert await service.get(first.id) == first
        assert [j.id for j in await service.fetch(["default"], count=2)] == [first.id, second.id]
        await expect_stats(ojs_time, service, "default", active=2)

    async def test_update_leaves_before_as_read(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A written update is a new object: ``before`` stays as read, the indexes follow.

        A backend that applied the result by changing its job in place would hand back one
        object twice; ``after is before`` then reads as "nothing written", and the service
        would skip the change's events and workflow steps.
        """
        job = await push(service)
        other = await push(service)
        read = copy.deepcopy(await service.get(job.id))
        now = service.now()
        before, after = await service.backend.update_job(job.id, lambda j: lifecycle.cancel(j, now))
        assert after is not before, "a written update returned one object as before and after"
        assert before == read, "update_job changed the version it had read"
        assert after.state is S.CANCELLED
        assert await service.get(job.id) == after
        assert before == read
        assert [j.id for j in await service.fetch(["default"], count=2)] == [other.id]
        await expect_stats(ojs_time, service, "default", active=1, cancelled=1)

    async def test_function_gets_a_job_the_backend_does_not_keep(self, service: JobService) -> None:
        """What ``fn`` sets on its argument never reaches the store, a cache or an index.

        ``Job`` is mutable and "no change" is signalled by identity: a backend that handed
        ``fn`` the object it keeps would let a function that sets attributes and returns its
        argument change the stored job behind the indexes' back. Returned, the argument means
        "no change" whatever was set on it; raising writes nothing either.
        """
        job = await push(service, priority=5)
        other = await push(service)
        read = copy.deepcopy(await service.get(job.id))

        def tamper(j: Job) -> Job:
            j.state = S.CANCELLED
            j.priority = -100
            j.meta = {"tampered": True}
            return j

        def tamper_then_refuse(j: Job) -> Job:
            tamper(j)
            raise _Refused("no")

        before, after = await service.backend.update_job(job.id, tamper)
        assert after is before, "a function returning its argument must mean 'no change'"
        with pytest.raises(_Refused):
            await service.backend.update_job(job.id, tamper_then_refuse)
        # The next update starts from the version stored, not from a tampered object.
        before, after = await service.backend.update_job(job.id, _bump)
        assert before == read, "fn's argument was the job the backend keeps"
        assert after == attrs.evolve(read, meta={"n": 1})
        assert await service.get(job.id) == after
        claimed = await service.fetch(["default"], count=2)
        assert [j.id for j in claimed] == [job.id, other.id]
        assert claimed[0].priority == 5
        assert claimed[0].meta == {"n": 1}

    async def test_unknown_id_is_not_found(self, service: JobService) -> None:
        """An unknown id raises NotFoundError without calling the function."""
        called: list[Job] = []

        def spy(j: Job) -> Job:
            called.append(j)
            return j

        with pytest.raises(NotFoundError):
            await service.backend.update_job(uuid7(), spy)
        assert called == []

    async def test_concurrent_updates_lose_nothing(self, service: JobService) -> None:
        """Forty concurrent increments through one backend: the counter reaches forty."""
        job = await push(service)
        await asyncio.gather(*(service.backend.update_job(job.id, _bump) for _ in range(40)))
        assert (await service.get(job.id)).meta["n"] == 40

    async def test_concurrent_updates_from_two_replicas(
        self, service: JobService, replica_service: JobService
    ) -> None:
        """Increments through two backends on one store interleave without losing one."""
        job = await push(service)
        await asyncio.gather(
            *(
                svc.backend.update_job(job.id, _bump)
                for _ in range(20)
                for svc in (service, replica_service)
            )
        )
        assert (await service.get(job.id)).meta["n"] == 40
        assert (await replica_service.get(job.id)).meta["n"] == 40

    async def test_function_sees_the_latest_version(self, service: JobService) -> None:
        """A retried function is applied to the version that won, never a stale one."""
        job = await push(service)
        seen: list[int] = []

        def record_then_bump(j: Job) -> Job:
            seen.append(j.meta.get("n", 0))
            return _bump(j)

        await asyncio.gather(
            *(service.backend.update_job(job.id, record_then_bump) for _ in range(10))
        )
        final = (await service.get(job.id)).meta["n"]
        assert final == 10
        assert set(range(10)) <= set(seen)

    async def test_updates_keep_the_indexes(self, service: JobService) -> None:
        """A job moved out of ``available`` leaves the ready index; moved in, it joins it."""
        job = await push(service)
        held = await push(service, pending=True)
        now = service.now()
        await service.backend.update_job(job.id, lambda j: lifecycle.cancel(j, now))
        assert await service.fetch(["default"]) == []
        await service.backend.update_job(held.id, lambda j: lifecycle.activate_pending(j, now))
        assert (await fetch_one(service)).id == held.id


class TestReads(KitTest):
    """``get_job`` and ``get_jobs``."""

    async def test_get_jobs_keeps_the_order_asked(self, service: JobService) -> None:
        """Results line up with the ids asked, ``None`` for unknown ones, repeats allowed."""
        a = await push(service, args=["a"])
        b = await push(service, args=["b"])
        missing = uuid7()
        got = await service.backend.get_jobs([b.id, missing, a.id, b.id])
        assert got == [b, None, a, b]
        assert await service.backend.get_jobs([]) == []

    async def test_get_job_unknown_is_none(self, service: JobService) -> None:
        """An unknown id reads as ``None``."""
        assert await service.backend.get_job(uuid7()) is None


class TestListingsAndDeletion(KitTest):
    """``list_jobs`` with the dead-letter filter, and ``delete_job``."""

    async def test_dead_letter_filter(self, service: JobService) -> None:
        """``dead_letter=True`` lists dead-lettered discarded jobs only, newest first."""
        dead = await job_in_state(service, "discarded", queue="q1")
        plain = await push(
            service, queue="q1", retry={"max_attempts": 1, "on_exhaustion": "discard"}
        )
        await fetch_one(service, "q1")
        await service.nack(plain.id, job_error())
        await job_in_state(service, "completed", queue="q2")
        page = await service.backend.list_jobs(JobFilter(dead_letter=True))
        assert [j.id for j in page.items] == [dead.id]
        assert page.total == 1
        by_queue = await service.backend.list_jobs(JobFilter(dead_letter=True, queue="q2"))
        assert by_queue.items == []
        assert by_queue.total == 0

    async def test_retried_dead_job_leaves_the_listing(self, service: JobService) -> None:
        """A dead job moved back to ``available`` is no longer listed."""
        dead = await job_in_state(service, "discarded")
        now = service.now()
        await service.backend.update_job(dead.id, lambda j: lifecycle.retry_dead_letter(j, now))
        page = await service.backend.list_jobs(JobFilter(dead_letter=True))
        assert page.total == 0

    async def test_delete_job(self, service: JobService, ojs_time: TimeControl) -> None:
        """Deleting removes the job and its index entries; deleting again says ``False``."""
        gone = await push(service, args=["gone"])
        kept = await push(service, args=["kept"])
        scheduled = await push(service, scheduled_at=ojs_time.at(0.5))
        assert await service.backend.delete_job(gone.id) is True
        assert await service.backend.delete_job(scheduled.id) is True
        assert await service.backend.delete_job(gone.id) is False
        assert await service.backend.get_job(gone.id) is None
        assert [j.id for j in await service.fetch(["default"], count=5)] == [kept.id]
        assert scheduled.scheduled_at is not None
        await ojs_time.advance_to(scheduled.scheduled_at)
        await ojs_time.run_timers()
        assert await service.backend.get_job(scheduled.id) is None
        assert scheduled.id not in await service.backend.due_jobs(ojs_time.now(), 100)
        await expect_stats(ojs_time, service, "default", active=1)


class TestClaimJobs(KitTest):
    """``claim_jobs`` with each kind of answer from ``activate``."""

    async def test_none_skips_a_job_and_keeps_its_place(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A job ``activate`` declines stays available and is offered to a later claim.

        (A store may hold a declined job back briefly, so a newer job may overtake it.)
        """
        a = await push(service, args=["a"])
        b = await push(service, args=["b"])
        now = service.now()

        def only_b(j: Job) -> Job | None:
            return lifecycle.claim(j, now, "w", 1000) if j.args == ["b"] else None

        got = await service.backend.claim_jobs(["default"], 1, only_b)
        assert [j.id for j in got] == [b.id]
        assert (await service.get(a.id)).state is S.AVAILABLE
        c = await push(service, args=["c"])
        later: list[str] = []
        while len(later) < 2:
            later.append((await fetch_when_ready(ojs_time, service)).id)
        assert sorted(later) == sorted([a.id, c.id])

    async def test_non_active_result_is_stored_but_not_counted(self, service: JobService) -> None:
        """A job ``activate`` discards is stored and returned but does not use up ``count``."""
        stale = await push(service, args=["stale"])
        fresh = await push(service, args=["fresh"])
        now = service.now()

        def expire_stale(j: Job) -> Job | None:
            if j.args == ["stale"]:
                return lifecycle.expire(j, now)
            return lifecycle.claim(j, now, "w", 1000)

        got = await service.backend.claim_jobs(["default"], 1, expire_stale)
        assert [(j.id, j.state) for j in got] == [(stale.id, S.DISCARDED), (fresh.id, S.ACTIVE)]
        assert (await service.get(stale.id)).state is S.DISCARDED
        assert await service.fetch(["default"]) == []

    async def test_claim_order_across_queues(self, service: JobService) -> None:
        """Left to right over queues; higher priority first within one."""
        b = await push(service, queue="qb", priority=9)
        a_low = await push(service, queue="qa", priority=-1)
        a_high = await push(service, queue="qa", priority=1)
        now = service.now()
        got = await service.backend.claim_jobs(
            ["qa", "qb"], 10, lambda j: lifecycle.claim(j, now, None, 1000)
        )
        assert [j.id for j in got] == [a_high.id, a_low.id, b.id]
        assert all(j.state is S.ACTIVE for j in got)
        stored = await service.backend.get_jobs([j.id for j in got])
        assert stored == got


class TestQueuesAndWorkers(KitTest):
    """Queue records and stats; worker records."""

    async def test_queue_listing(self, service: JobService) -> None:
        """``default`` plus every queue that held a job or was paused, by name."""
        assert [q.name for q in await service.queues()] == ["default"]
        await push(service, queue="zeta")
        await push(service, queue="alpha")
        await service.set_paused("mid", True)
        listed = await service.queues()
        assert [q.name for q in listed] == ["alpha", "default", "mid", "zeta"]
        assert [q.paused for q in listed] == [False, False, True, False]

    async def test_queue_stats_count_each_state(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """One job in each of the eight states: each counted once, in its own queue."""
        for state in S:
            await job_in_state(service, state.value, queue=f"st-{state.value}")
        for state in S:
            await expect_stats(ojs_time, service, f"st-{state.value}", **{state.value: 1})
        stats = await service.queue_stats("st-active")
        assert stats.name == "st-active"
        assert not stats.paused
        await expect_stats(ojs_time, service, "never-used")
        with pytest.raises(ValidationError):
            await service.queue_stats("Bad Queue")

    async def test_queue_stats_follow_transitions(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Counts move with every transition."""
        jobs = [await push(service, queue="flow") for _ in range(3)]
        await expect_stats(ojs_time, service, "flow", available=3)
        await fetch_one(service, "flow")
        await service.cancel(jobs[2].id)
        await expect_stats(ojs_time, service, "flow", available=1, active=1, cancelled=1)
        await service.ack(jobs[0].id)
        await expect_stats(ojs_time, service, "flow", available=1, completed=1, cancelled=1)

    async def test_worker_records(self, service: JobService) -> None:
        """``upsert_worker`` creates then updates from the current record."""
        backend = service.backend
        assert await backend.get_worker("w-1") is None
        now = service.now()

        def seen(w: WorkerInfo | None) -> WorkerInfo:
            base = w or WorkerInfo(worker_id="w-1", last_seen=now, hostname="h")
            return attrs.evolve(base, active_jobs=[*base.active_jobs, "j"])

        first = await backend.upsert_worker(seen)
        assert first.active_jobs == ["j"]
        second = await backend.upsert_worker(seen)
        assert second.active_jobs == ["j", "j"]
        assert await backend.get_worker("w-1") == second
        await backend.upsert_worker(lambda w: WorkerInfo(worker_id="w-2", last_seen=now))
        assert sorted(w.worker_id for w in await backend.list_workers()) == ["w-1", "w-2"]

    async def test_heartbeat_directives(self, service: JobService) -> None:
        """Directives set by an operator reach the worker; ``terminate`` is final."""
        sent = service.now()
        beat = await service.heartbeat("w", [])
        assert beat.directive == "running"
        assert beat.worker.worker_id == "w"
        assert sent <= beat.worker.last_seen <= service.now()
        await service.set_worker_directive("w", "quiet")
        assert (await service.heartbeat("w", [])).directive == "quiet"
        await service.set_worker_directive("w", "terminate")
        await service.set_worker_directive("w", "running")
        assert (await service.heartbeat("w", [])).directive == "terminate"
        with pytest.raises(ValidationError):
            await service.set_worker_directive("w", "explode")
        worker = await service.backend.get_worker("w")
        assert worker is not None
        assert worker.directive == "terminate"
        assert [w.worker_id for w in await service.backend.list_workers()] == ["w"]


class TestLifecycleAndReset(KitTest):
    """``open`` (idempotent), ``health`` and ``reset``."""

    async def test_health_and_open_again(self, backend: Backend) -> None:
        """An open backend is healthy; opening it again changes nothing."""
        health = await backend.health()
        assert isinstance(health, BackendHealth)
        assert health.ok
        assert health.error is None
        await backend.open()
        assert (await backend.health()).ok
        assert isinstance(backend.name, str)
        assert backend.name

    async def test_reset_clears_everything(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """After reset: no jobs, workflows, crons, paused queues, workers, events or timers."""
        t = ojs_time
        job = await push(service, queue="q", unique={"keys": ["type"]})
        timed = await push(service, queue="q", scheduled_at=t.at(0.5))
        dead = await job_in_state(service, "discarded", queue="dq")
        await service.set_paused("q", True)
        await service.register_cron(
            {"name": "reset-me", "expression": "@every 1s", "job_template": {"type": "c.x"}}
        )
        wf = await service.create_workflow({"type": "chain", "steps": [{"type": "w.a"}]})
        await service.heartbeat("w1", [])
        await t.until(lambda: service.events(EventFilter()), what="some event")

        await service.reset()

        for jid in (job.id, timed.id, dead.id):
            assert await service.backend.get_job(jid) is None
        assert await service.backend.get_workflow(wf["id"]) is None
        assert await service.crons() == []
        assert [(q.name, q.paused) for q in await service.queues()] == [("default", False)]
        assert not (await service.queue_stats("q")).paused
        assert sum((await service.queue_stats("q")).counts.values()) == 0
        assert await service.events(EventFilter()) == []
        assert await service.backend.list_workers() == []
        assert (await service.dead_letter()).total == 0
        assert timed.scheduled_at is not None
        await t.advance_to(timed.scheduled_at)
        assert await service.run_crons() == 0
        assert await service.run_timers() == 0
        again = await push(service, queue="q", unique={"keys": ["type"]})
        assert (await fetch_one(service, "q")).id == again.id

    async def test_times_survive_storage(self, service: JobService) -> None:
        """Timestamps come back as equal, timezone-aware UTC datetimes."""
        job = await push(service, scheduled_at="+PT1H")
        stored = await service.get(job.id)
        assert stored.scheduled_at == job.scheduled_at
        for value in (stored.created_at, stored.scheduled_at):
            assert isinstance(value, datetime)
            assert value.utcoffset() is not None
            assert value.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
