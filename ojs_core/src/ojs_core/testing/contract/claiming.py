"""Claiming: order (priority, FIFO, queues left to right), pause, and exclusivity under races."""

from __future__ import annotations

import asyncio
import random

import pytest

from ...backend import Backend
from ...clock import Clock
from ...errors import InvalidStateTransitionError, ValidationError
from ...service import JobService
from ...states import JobState
from ..helpers import expect_events, expect_stats, fetch_one, job_error, push
from ..interleave import InterleavingBackend, interleaving
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestClaimExclusivity", "TestClaimOrder", "TestPause"]

S = JobState


class TestClaimOrder(KitTest):
    """Which job a fetch gets: priority first, then FIFO; queues left to right."""

    async def test_empty_and_unknown_queues_give_nothing(self, service: JobService) -> None:
        """Fetching from a queue with no available job returns an empty list."""
        assert await service.fetch(["default"]) == []
        assert await service.fetch(["never-used"], count=10) == []

    async def test_fetch_returns_at_most_count(self, service: JobService) -> None:
        """``count`` bounds a fetch; the rest stay available for the next one."""
        ids = [(await push(service, args=[i])).id for i in range(5)]
        first = await service.fetch(["default"], count=3)
        assert [j.id for j in first] == ids[:3]
        second = await service.fetch(["default"], count=3)
        assert [j.id for j in second] == ids[3:]

    async def test_fifo_within_one_priority(self, service: JobService) -> None:
        """Jobs of equal priority come out in the order they were enqueued."""
        ids = [(await push(service, args=[i])).id for i in range(30)]
        got = [j.id for j in await service.fetch(["default"], count=10)]
        while batch := await service.fetch(["default"], count=7):
            got.extend(j.id for j in batch)
        assert got == ids

    async def test_priority_order_higher_first_fifo_within(self, service: JobService) -> None:
        """Across priorities the highest goes first; FIFO within each."""
        rng = random.Random(1234)
        pushed: list[tuple[int, int, str]] = []
        for i in range(80):
            prio = rng.choice([-10, 0, 0, 3, 10, 20])
            job = await push(service, args=[i], priority=prio)
            pushed.append((-prio, i, job.id))
        expected = [jid for _, _, jid in sorted(pushed)]
        order = [j.id for j in await service.fetch(["default"], count=30)]
        while batch := await service.fetch(["default"], count=1):
            order.append(batch[0].id)
        assert order == expected

    async def test_named_priorities(self, service: JobService) -> None:
        """``critical`` > ``high`` > ``normal`` (the default) > ``low``."""
        low = await push(service, priority="low")
        normal = await push(service)
        crit = await push(service, priority="critical")
        high = await push(service, priority="high")
        got = [j.id for j in await service.fetch(["default"], count=4)]
        assert got == [crit.id, high.id, normal.id, low.id]

    async def test_later_higher_priority_overtakes(self, service: JobService) -> None:
        """A higher-priority job enqueued later is still claimed first."""
        first = await push(service)
        urgent = await push(service, priority=50)
        assert (await fetch_one(service)).id == urgent.id
        assert (await fetch_one(service)).id == first.id

    async def test_requeued_job_goes_to_the_back(self, service: JobService) -> None:
        """A job that becomes available again queues behind those already waiting."""
        a = await push(service, args=["a"])
        b = await push(service, args=["b"])
        await fetch_one(service, worker_id="w")
        await service.nack(a.id, job_error(), worker_id="w", requeue=True)
        c = await push(service, args=["c"])
        got = [j.id for j in await service.fetch(["default"], count=3)]
        assert got == [b.id, a.id, c.id]

    async def test_activated_job_goes_to_the_back(self, service: JobService) -> None:
        """A pending job joins the ready index when it is activated, not when created."""
        pending = await push(service, pending=True)
        waiting = await push(service)
        await service.activate(pending.id)
        got = [j.id for j in await service.fetch(["default"], count=2)]
        assert got == [waiting.id, pending.id]

    async def test_queues_are_tried_left_to_right(self, service: JobService) -> None:
        """Earlier queues drain before later ones, whatever the priorities."""
        b1 = await push(service, queue="b", priority=100)
        a1 = await push(service, queue="a")
        a2 = await push(service, queue="a", priority=-5)
        c1 = await push(service, queue="c")
        got = [j.id for j in await service.fetch(["a", "b"], count=3)]
        assert got == [a1.id, a2.id, b1.id]
        # Empty and unknown queues are passed over.
        assert [j.id for j in await service.fetch(["a", "nope", "b", "c"], count=5)] == [c1.id]
        assert await service.fetch(["a", "b", "c"]) == []

    async def test_queue_order_is_the_callers(self, service: JobService) -> None:
        """The same queues asked in the other order give the other queue's job first."""
        x = await push(service, queue="x")
        y = await push(service, queue="y")
        assert [j.id for j in await service.fetch(["y", "x"], count=2)] == [y.id, x.id]
        assert x.id != y.id

    async def test_a_queue_named_twice_is_claimed_once(self, service: JobService) -> None:
        """Listing a queue twice does not claim its jobs twice."""
        ids = {(await push(service, queue="dup")).id for _ in range(3)}
        got = await service.fetch(["dup", "dup"], count=10)
        assert sorted(j.id for j in got) == sorted(ids)

    async def test_queues_are_separate(self, service: JobService) -> None:
        """A fetch never returns a job from a queue it did not ask for."""
        await push(service, queue="other")
        assert await service.fetch(["default"]) == []
        assert (await fetch_one(service, "other")).queue == "other"

    async def test_fetch_validates_queue_names(self, service: JobService) -> None:
        """No queues, or a malformed name, is a validation error naming the field."""
        with pytest.raises(ValidationError):
            await service.fetch([])
        with pytest.raises(ValidationError) as exc:
            await service.fetch(["ok", "Not Valid"])
        assert exc.value.path == "queues[1]"


class TestPause(KitTest):
    """Paused queues accept jobs but are never claimed from."""

    async def test_paused_queue_is_skipped(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Pause, enqueue, fetch nothing from it (but from others); resume, fetch it."""
        info = await service.set_paused("slow", True)
        assert info.paused
        assert info.name == "slow"
        job = await push(service, queue="slow")
        assert job.state is S.AVAILABLE
        other = await push(service)
        assert await service.fetch(["slow"]) == []
        assert [j.id for j in await service.fetch(["slow", "default"], count=5)] == [other.id]
        assert (await service.queue_stats("slow")).paused
        assert {q.name: q.paused for q in await service.queues()}["slow"] is True
        resumed = await service.set_paused("slow", False)
        assert not resumed.paused
        assert not (await service.queue_stats("slow")).paused
        assert (await fetch_one(service, "slow")).id == job.id
        await expect_events(ojs_time, service, ["queue.paused", "queue.resumed"], "queue.*")

    async def test_pausing_an_unused_queue_lists_it(self, service: JobService) -> None:
        """A paused queue is listed (with ``default``) even before it holds a job."""
        await service.set_paused("fresh", True)
        listed = {q.name: q.paused for q in await service.queues()}
        assert listed["fresh"] is True
        assert listed["default"] is False

    async def test_a_queue_paused_before_use_stays_paused(self, service: JobService) -> None:
        """Jobs (of several priorities) enqueued into a queue paused before it held any job
        do not unpause it: the queue record they create keeps the flag."""
        await service.set_paused("fresh", True)
        await push(service, queue="fresh", priority=7)
        await push(service, queue="fresh", priority=-7)
        assert await service.fetch(["fresh"], count=5) == []
        assert (await service.queue_stats("fresh")).paused
        await service.set_paused("fresh", False)
        assert len(await service.fetch(["fresh"], count=5)) == 2

    async def test_pause_is_idempotent(self, service: JobService) -> None:
        """Pausing twice, then resuming once, leaves the queue running."""
        await service.set_paused("twice", True)
        await service.set_paused("twice", True)
        job = await push(service, queue="twice")
        assert await service.fetch(["twice"]) == []
        await service.set_paused("twice", False)
        assert (await fetch_one(service, "twice")).id == job.id

    async def test_pause_does_not_touch_other_queues(self, service: JobService) -> None:
        """Pausing one queue leaves every other queue claimable."""
        await service.set_paused("p", True)
        jobs = [await push(service, queue=q) for q in ("a", "p", "b")]
        got = await service.fetch(["a", "p", "b"], count=5)
        assert [j.id for j in got] == [jobs[0].id, jobs[2].id]

    async def test_active_jobs_of_a_paused_queue_can_finish(self, service: JobService) -> None:
        """Pausing stops claims, not the acks of jobs already claimed."""
        job = await push(service, queue="busy")
        await fetch_one(service, "busy")
        await service.set_paused("busy", True)
        assert (await service.ack(job.id, "ok")).state is S.COMPLETED


class TestClaimExclusivity(KitTest):
    """No job is handed to two claimers, however the claims interleave."""

    @pytest.fixture(params=["direct", "interleaved"])
    def racer(
        self, request: pytest.FixtureRequest, backend: Backend, ojs_clock: Clock
    ) -> JobService:
        """The service, plain or over a backend that yields before every call."""
        if request.param == "direct":
            return JobService(backend, clock=ojs_clock)
        return JobService(interleaving(backend), clock=ojs_clock)

    async def test_two_concurrent_fetches_get_disjoint_jobs(self, racer: JobService) -> None:
        """Two fetches at once split the jobs between them."""
        ids = {(await push(racer)).id for _ in range(6)}
        a, b = await asyncio.gather(
            racer.fetch(["default"], count=4, worker_id="a"),
            racer.fetch(["default"], count=4, worker_id="b"),
        )
        got_a, got_b = {j.id for j in a}, {j.id for j in b}
        assert not got_a & got_b
        assert got_a | got_b == ids
        assert len(a) + len(b) == 6

    async def test_many_fetchers_claim_each_job_once(
        self, racer: JobService, ojs_time: TimeControl
    ) -> None:
        """150 jobs, 10 looping fetchers: every job claimed exactly once, by its claimer."""
        outcomes = await racer.enqueue_batch([{"type": "r.job", "args": [i]} for i in range(150)])
        ids = [o.job.id for o in outcomes]

        async def worker(n: int) -> list[str]:
            got: list[str] = []
            while batch := await racer.fetch(["default"], count=7, worker_id=f"w{n}"):
                assert len(batch) <= 7
                got.extend(j.id for j in batch)
            return got

        per_worker = await asyncio.gather(*(worker(n) for n in range(10)))
        claimed = [jid for got in per_worker for jid in got]
        assert len(claimed) == len(set(claimed)), "a job was claimed twice"
        if isinstance(racer.backend, InterleavingBackend):
            assert sum(1 for got in per_worker if got) > 1, "the fetches did not overlap"
        assert sorted(claimed) == sorted(ids)
        stored = await racer.backend.get_jobs(claimed)
        owner = {jid: f"w{n}" for n, got in enumerate(per_worker) for jid in got}
        for job in stored:
            assert job is not None
            assert job.state is S.ACTIVE
            assert job.attempt == 1
            assert job.worker_id == owner[job.id]
        await expect_stats(ojs_time, racer, "default", active=150)

    async def test_single_claims_racing_for_few_jobs(self, racer: JobService) -> None:
        """40 one-job fetches at once for 12 jobs: 12 succeed, with 12 different jobs."""
        ids = {(await push(racer, args=[i])).id for i in range(12)}
        results = await asyncio.gather(
            *(racer.fetch(["default"], worker_id=f"w{i}") for i in range(40))
        )
        got = [j.id for r in results for j in r]
        assert len(got) == 12
        assert set(got) == ids

    async def test_claims_racing_with_enqueues(self, racer: JobService) -> None:
        """Fetchers running while jobs arrive claim each exactly once."""
        total = 60
        done = asyncio.Event()
        claimed: list[str] = []
        ids: list[str] = []

        async def producer() -> None:
            for i in range(total):
                ids.append((await push(racer, args=[i])).id)
            done.set()

        async def consumer(n: int) -> None:
            while True:
                batch = await racer.fetch(["default"], count=3, worker_id=f"c{n}")
                claimed.extend(j.id for j in batch)
                if not batch:
                    if done.is_set():
                        return
                    await asyncio.sleep(0)

        await asyncio.gather(producer(), *(consumer(n) for n in range(4)))
        claimed.extend(j.id for j in await racer.fetch(["default"], count=total))
        assert len(claimed) == len(set(claimed))
        assert sorted(claimed) == sorted(ids)

    async def test_cancel_racing_with_fetch(self, racer: JobService) -> None:
        """Cancel and fetch at once: the job ends cancelled; a fetched copy cannot be acked."""
        jobs = [await push(racer, args=[i]) for i in range(10)]
        results = await asyncio.gather(
            *(racer.cancel(j.id) for j in jobs), racer.fetch(["default"], count=10)
        )
        fetched = results[-1]
        assert isinstance(fetched, list)
        for job in await racer.backend.get_jobs([j.id for j in jobs]):
            assert job is not None
            assert job.state is S.CANCELLED
        for job in fetched:
            with pytest.raises(InvalidStateTransitionError):
                await racer.ack(job.id)

    async def test_concurrent_acks_one_wins(self, racer: JobService) -> None:
        """Two acks of one job at once: one completes it, the other is refused."""
        job = await push(racer)
        await fetch_one(racer)
        results = await asyncio.gather(
            racer.ack(job.id, "first"), racer.ack(job.id, "second"), return_exceptions=True
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, BaseException)]
        assert len(wins) == 1
        assert len(losses) == 1
        assert isinstance(losses[0], InvalidStateTransitionError)
        stored = await racer.get(job.id)
        assert stored.state is S.COMPLETED
        assert stored.result == wins[0].result

    async def test_ack_racing_with_nack(self, racer: JobService) -> None:
        """Ack and nack at once: exactly one lands and the stored job is that one's."""
        job = await push(
            racer, retry={"max_attempts": 3, "initial_interval": "PT1H", "max_interval": "PT1H"}
        )
        await fetch_one(racer)
        ack, nack = await asyncio.gather(
            racer.ack(job.id, "ok"), racer.nack(job.id, job_error()), return_exceptions=True
        )
        assert isinstance(ack, BaseException) != isinstance(nack, BaseException)
        stored = await racer.get(job.id)
        expected = S.RETRYABLE if isinstance(ack, BaseException) else S.COMPLETED
        assert stored.state is expected

    async def test_two_services_on_one_store_claim_disjoint_jobs(
        self, service: JobService, replica_service: JobService
    ) -> None:
        """Two replicas (possibly two connections to one store) never claim the same job."""
        ids = {(await push(service, args=[i])).id for i in range(40)}

        async def drain(svc: JobService, name: str) -> list[str]:
            got: list[str] = []
            while batch := await svc.fetch(["default"], count=3, worker_id=name):
                got.extend(j.id for j in batch)
            return got

        one, two = await asyncio.gather(drain(service, "one"), drain(replica_service, "two"))
        assert not set(one) & set(two)
        assert set(one) | set(two) == ids
        assert len(one) + len(two) == 40
