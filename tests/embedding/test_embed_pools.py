"""Fair scheduling in process: a Worker declares its pool (heartbeats and fetches), so the
pool's queues and its concurrency govern it; a Worker's own strategy across its queues."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from embed_support import Harness

from ojs_core.queue_strategy import QueuePlan
from ojs_core.states import JobState
from ojs_core.worker import JobContext


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def test_a_worker_in_a_pool_is_served_the_pools_queues(harness: Harness) -> None:
    await harness.service.pools.put("emails", {"queues": ["email"], "concurrency": 5})
    worker = harness.worker("default", worker_id="e1", pool="emails")
    ran: list[str] = []

    @worker.handler("mail.send")
    async def send(ctx: JobContext) -> None:
        ran.append(ctx.queue)

    job = await harness.client.enqueue("mail.send", [], queue="email")
    assert job is not None
    assert await worker.heartbeat() == "running"
    assert (await harness.backend.get_worker("e1")).pool == "emails"  # type: ignore[union-attr]
    worker.start()
    done = await harness.wait_state(job.id, JobState.COMPLETED)
    assert ran == ["email"]
    assert done.pool == "emails"
    view = await harness.service.rate_limits.get("pool:emails")
    assert view["concurrency"]["active"] == 0


async def test_a_workers_own_strategy(harness: Harness) -> None:
    worker = harness.worker(["a", "b"], worker_id="rr", plan=QueuePlan("round-robin"))
    order: list[str] = []

    @worker.handler("t.job")
    async def run(ctx: JobContext) -> None:
        order.append(ctx.queue)

    ids = []
    for q in ("a", "a", "b", "b"):
        job = await harness.client.enqueue("t.job", [], queue=q)
        assert job is not None
        ids.append(job.id)
    worker.concurrency = 1
    worker.fetch_batch = 1
    worker.start()
    for job_id in ids:
        await harness.wait_state(job_id, JobState.COMPLETED)
    assert order == ["a", "b", "a", "b"]


def test_a_bad_pool_name_is_refused_at_once(harness: Harness) -> None:
    from ojs_core.errors import ValidationError

    with pytest.raises(ValidationError):
        harness.worker(pool="no spaces")
