"""Flow control: bounded queues (backpressure) and draining workers (graceful shutdown).

The backpressure tests need the optional :class:`~ojs_core.backend.QueueBounds` capability and
skip on a backend without it. The graceful-shutdown tests need only worker records, which every
backend stores.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ...backend import QueueBounds
from ...errors import QueueFullError, UnsupportedError, ValidationError
from ...service import JobService
from ...states import JobState
from ..helpers import events_of, expect_events, expect_stats, fetch_one, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestBackpressure", "TestDrainingWorkers"]

S = JobState


def _bounded(service: JobService) -> None:
    if not isinstance(service.backend, QueueBounds):
        pytest.skip("the backend does not store queue bounds (QueueBounds)")


async def _bound(service: JobService, queue: str, max_depth: int, **fields: Any) -> None:
    _bounded(service)
    await service.set_backpressure(queue, {"max_depth": max_depth, **fields})


class TestBackpressure(KitTest):
    """A bounded queue refuses what would take it over its bound, whole requests at a time."""

    async def test_queues_are_unbounded_by_default(self, service: JobService) -> None:
        """Without a bound nothing is refused, and the bound reads as ``None``."""
        _bounded(service)
        assert await service.backpressure("free") is None
        for _ in range(5):
            await push(service, queue="free")

    async def test_a_full_queue_refuses_with_nothing_stored(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """At its bound a queue refuses with ``QueueFullError`` (429 ``queue_full``) naming the
        queue, depth, bound and the suggested wait; the refused job is not stored, and
        ``backpressure.rejected`` is published."""
        await _bound(service, "tight", 2, retry_after_s=7)
        bound = await service.backpressure("tight")
        assert bound is not None
        assert (bound.max_depth, bound.strategy, bound.retry_after_s) == (2, "reject", 7)
        await push(service, "bp.one", queue="tight")
        await push(service, "bp.one", queue="tight")
        with pytest.raises(QueueFullError) as exc:
            await push(service, "bp.refused", queue="tight")
        err = exc.value
        assert (err.status, err.code, err.retryable) == (429, "queue_full", True)
        assert (err.queue, err.depth, err.bound, err.retry_after_s) == ("tight", 2, 2, 7)
        assert err.headers == {"X-OJS-Queue-Depth": "2", "X-OJS-Queue-Bound": "2"}
        await expect_stats(ojs_time, service, "tight", available=2)
        events = await expect_events(
            ojs_time, service, ["backpressure.rejected"], "backpressure.rejected"
        )
        assert events[0].data == {
            "queue": "tight",
            "depth": 2,
            "bound": 2,
            "job_type": "bp.refused",
        }

    async def test_other_queues_are_not_affected(self, service: JobService) -> None:
        """A full queue refuses only its own jobs."""
        await _bound(service, "small", 1)
        await push(service, queue="small")
        with pytest.raises(QueueFullError):
            await push(service, queue="small")
        await push(service, queue="roomy")

    async def test_active_jobs_do_not_count(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """The depth is the jobs waiting: a fetched (active) job frees its slot."""
        await _bound(service, "work", 1)
        first = await push(service, queue="work")
        with pytest.raises(QueueFullError):
            await push(service, queue="work")
        assert (await fetch_one(service, "work")).id == first.id
        await expect_stats(ojs_time, service, "work", active=1)
        await push(service, queue="work")

    async def test_scheduled_jobs_count(self, service: JobService) -> None:
        """Scheduled jobs are waiting too: they fill the queue."""
        await _bound(service, "later", 1)
        job = await push(service, queue="later", delay_until="+PT1H")
        assert job.state is S.SCHEDULED
        with pytest.raises(QueueFullError):
            await push(service, queue="later")

    async def test_a_batch_is_refused_whole(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A batch that does not fit is refused with none of its jobs stored (spec §9.3); one
        that fits is stored whole."""
        await _bound(service, "bulk", 3)
        await push(service, queue="bulk")
        jobs = [{"type": "bp.batch", "args": [i], "options": {"queue": "bulk"}} for i in range(3)]
        with pytest.raises(QueueFullError) as exc:
            await service.enqueue_batch(jobs)
        assert exc.value.details["requested"] == 3
        await expect_stats(ojs_time, service, "bulk", available=1)
        stored = await service.enqueue_batch(jobs[:2])
        assert len(stored) == 2
        await expect_stats(ojs_time, service, "bulk", available=3)

    async def test_a_batch_over_several_queues_is_refused_whole(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A batch with one job for a full queue stores nothing in the other queues."""
        await _bound(service, "full", 1)
        await push(service, queue="full")
        jobs = [
            {"type": "bp.batch", "args": [], "options": {"queue": "open"}},
            {"type": "bp.batch", "args": [], "options": {"queue": "full"}},
        ]
        with pytest.raises(QueueFullError) as exc:
            await service.enqueue_batch(jobs)
        assert exc.value.queue == "full"
        await expect_stats(ojs_time, service, "open")
        assert await service.enqueue_batch(jobs[:1])

    async def test_a_workflow_is_refused_whole(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Workflow steps (pending ones too) count against their queues' bounds."""
        await _bound(service, "flow", 2)
        chain = {
            "type": "chain",
            "steps": [
                {"type": "bp.step", "args": [], "options": {"queue": "flow"}} for _ in range(3)
            ],
        }
        with pytest.raises(QueueFullError):
            await service.create_workflow(chain)
        await expect_stats(ojs_time, service, "flow")
        chain["steps"] = chain["steps"][:2]
        await service.create_workflow(chain)
        await expect_stats(ojs_time, service, "flow", available=1, pending=1)

    async def test_concurrent_enqueues_in_one_process_never_exceed_the_bound(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Of many enqueues racing for the last slots of one queue through one service,
        exactly as many as fit are admitted."""
        await _bound(service, "race", 5)
        outcomes = await asyncio.gather(
            *(push(service, queue="race") for _ in range(20)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, QueueFullError)]
        assert len(refused) == 15, outcomes
        await expect_stats(ojs_time, service, "race", available=5)

    async def test_removing_the_bound(self, service: JobService) -> None:
        """``None`` or ``max_depth: 0`` removes the bound."""
        await _bound(service, "lift", 1)
        await push(service, queue="lift")
        assert await service.set_backpressure("lift", {"max_depth": 0}) is None
        assert await service.backpressure("lift") is None
        await push(service, queue="lift")
        await _bound(service, "lift", 1)
        with pytest.raises(QueueFullError):
            await push(service, queue="lift")
        await service.set_backpressure("lift", None)
        await push(service, queue="lift")

    async def test_a_bound_lists_its_queue(self, service: JobService) -> None:
        """Bounding an unused queue creates its record, as pausing one does."""
        await _bound(service, "ready-for-later", 10)
        assert "ready-for-later" in {q.name for q in await service.queues()}

    async def test_what_cannot_be_enforced_is_refused(self, service: JobService) -> None:
        """``drop_oldest`` and a size bound are refused (422), not stored and ignored;
        malformed fields are 400 naming the field."""
        _bounded(service)
        with pytest.raises(UnsupportedError):
            await service.set_backpressure("q", {"max_depth": 5, "strategy": "drop_oldest"})
        with pytest.raises(UnsupportedError):
            await service.set_backpressure("q", {"max_size_bytes": 1024})
        for body, path in (
            ({"max_depth": -1}, "backpressure.max_depth"),
            ({"max_depth": "5"}, "backpressure.max_depth"),
            ({"max_depth": 5, "strategy": "wait"}, "backpressure.strategy"),
            ({"max_depth": 5, "warning_threshold": 1.5}, "backpressure.warning_threshold"),
            ({"max_depth": 5, "retry_after_s": 0}, "backpressure.retry_after_s"),
        ):
            with pytest.raises(ValidationError) as exc:
                await service.set_backpressure("q", body)
            assert exc.value.path == path
        assert await service.backpressure("q") is None

    async def test_crossing_the_warning_threshold_is_published(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """The admission that takes a queue to its warning threshold publishes
        ``backpressure.warning``, once; the enqueue outcome carries the pressure."""
        await _bound(service, "warm", 4, warning_threshold=0.5)
        first = await service.enqueue({"type": "bp.w", "args": [], "options": {"queue": "warm"}})
        assert first.pressure is not None
        assert not first.pressure.warning
        second = await service.enqueue({"type": "bp.w", "args": [], "options": {"queue": "warm"}})
        assert second.pressure is not None
        assert second.pressure.warning
        assert second.pressure.ratio == 0.5
        await push(service, queue="warm")
        events = await expect_events(
            ojs_time, service, ["backpressure.warning"], "backpressure.warning"
        )
        assert events[0].data == {"queue": "warm", "depth": 2, "bound": 4}

    async def test_block_waits_for_room(self, service: JobService, ojs_time: TimeControl) -> None:
        """With the ``block`` strategy an enqueue given time waits until a slot frees."""
        await _bound(service, "wait", 1, strategy="block")
        first = await push(service, queue="wait")
        body = {"type": "bp.blocked", "args": [], "options": {"queue": "wait"}}
        with pytest.raises(QueueFullError):
            await service.enqueue(body)  # no time given: refused at once
        blocked = asyncio.ensure_future(service.enqueue(body, block_s=5.0))
        await asyncio.sleep(0.2)
        assert not blocked.done()
        await fetch_one(service, "wait")
        await service.ack(first.id)
        outcome = await asyncio.wait_for(blocked, 5.0)
        assert outcome.created
        await expect_stats(ojs_time, service, "wait", available=1, completed=1)

    async def test_block_gives_up_after_its_timeout(self, service: JobService) -> None:
        """A blocked enqueue that finds no room in time is refused."""
        await _bound(service, "stuck", 1, strategy="block")
        await push(service, queue="stuck")
        with pytest.raises(QueueFullError):
            await service.enqueue(
                {"type": "bp.x", "args": [], "options": {"queue": "stuck"}}, block_s=0.2
            )

    async def test_the_reject_strategy_does_not_block(self, service: JobService) -> None:
        """Time to wait is ignored by a queue whose strategy is ``reject``."""
        await _bound(service, "strict", 1)
        await push(service, queue="strict")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(QueueFullError):
            await service.enqueue(
                {"type": "bp.x", "args": [], "options": {"queue": "strict"}}, block_s=5.0
            )
        assert loop.time() - started < 2.0

    async def test_every_replica_enforces_a_bound(
        self, service: JobService, replica_service: JobService, ojs_time: TimeControl
    ) -> None:
        """A bound set through one replica holds for enqueues through another."""
        await _bound(service, "shared", 1)
        await push(service, queue="shared")

        async def sees_full_queue() -> bool:
            bound = await replica_service.backpressure("shared")
            return bound is not None and await replica_service.gate.depth("shared") == 1

        await ojs_time.until(sees_full_queue, what="the replica sees the bound and the depth")
        with pytest.raises(QueueFullError):
            await push(replica_service, queue="shared")


class TestDrainingWorkers(KitTest):
    """A worker that reports itself quiet (graceful shutdown) is handed no job."""

    async def test_a_quiet_worker_gets_no_job(self, service: JobService) -> None:
        """After a heartbeat with ``state: quiet`` a fetch naming the worker returns nothing;
        another worker gets the job; ``running`` again restores fetching."""
        job = await push(service, queue="drain")
        outcome = await service.heartbeat("w-quiet", [], info={"state": "quiet"})
        assert outcome.worker.state == "quiet"
        assert await service.fetch(["drain"], worker_id="w-quiet") == []
        await service.heartbeat("w-quiet", [], info={"state": "running"})
        assert (await fetch_one(service, "drain", worker_id="w-quiet")).id == job.id

    async def test_others_are_served_while_one_drains(self, service: JobService) -> None:
        """Only the draining worker is refused."""
        job = await push(service, queue="drain")
        await service.heartbeat("w-leaving", [], info={"state": "quiet"})
        assert await service.fetch(["drain"], worker_id="w-leaving") == []
        assert (await fetch_one(service, "drain", worker_id="w-staying")).id == job.id

    async def test_draining_is_quiet(self, service: JobService) -> None:
        """``draining`` (the spec's drain phase) is recorded as ``quiet``."""
        await push(service, queue="drain")
        outcome = await service.heartbeat("w-drain", [], info={"state": "draining"})
        assert outcome.worker.state == "quiet"
        assert await service.fetch(["drain"], worker_id="w-drain") == []

    async def test_a_terminated_worker_gets_no_job(self, service: JobService) -> None:
        """The final heartbeat's ``terminate`` is recorded; such a worker is handed nothing."""
        await push(service, queue="drain")
        await service.heartbeat("w-gone", [], info={"state": "terminate"})
        worker = await service.backend.get_worker("w-gone")
        assert worker is not None
        assert worker.state == "terminate"
        assert await service.fetch(["drain"], worker_id="w-gone") == []

    async def test_a_quiet_directive_also_stops_fetches(self, service: JobService) -> None:
        """A worker an operator quieted is handed nothing, even before it heartbeats."""
        job = await push(service, queue="drain")
        await service.set_worker_directive("w-told", "quiet")
        assert await service.fetch(["drain"], worker_id="w-told") == []
        await service.set_worker_directive("w-told", "running")
        assert (await fetch_one(service, "drain", worker_id="w-told")).id == job.id

    async def test_an_unknown_state_is_refused(self, service: JobService) -> None:
        """A heartbeat with a state outside the spec's is refused, nothing recorded."""
        with pytest.raises(ValidationError) as exc:
            await service.heartbeat("w-odd", [], info={"state": "sleeping"})
        assert exc.value.path == "state"
        assert await service.backend.get_worker("w-odd") is None

    async def test_a_heartbeat_without_state_is_running(self, service: JobService) -> None:
        """Workers that do not speak the extension are running whenever they heartbeat."""
        job = await push(service, queue="drain")
        await service.heartbeat("w-reused", [], info={"state": "quiet"})
        await service.heartbeat("w-reused", [])
        assert (await fetch_one(service, "drain", worker_id="w-reused")).id == job.id

    async def test_every_replica_refuses_a_quiet_worker(
        self, service: JobService, replica_service: JobService
    ) -> None:
        """A worker that went quiet through one replica gets nothing from another."""
        await push(service, queue="drain")
        await service.heartbeat("w-moved", [], info={"state": "quiet"})
        assert await replica_service.fetch(["drain"], worker_id="w-moved") == []
        assert await events_of(service, "job.started") == []
