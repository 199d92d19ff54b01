"""The Worker acknowledges handlers that finish together in one write (``ojs_core.ack_batches``):
one ``ack_many`` call for a burst, each job still decided on its own (one refused ack does not
affect the others), and a stopping worker waits for the acknowledgements being written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from embed_support import Harness, eventually

from ojs_core import JobContext
from ojs_core.states import JobState


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


def count_ack_calls(h: Harness) -> list[int]:
    """Record the size of every ``ack_many`` call of the service (the real one still runs)."""
    sizes: list[int] = []
    real = h.service.ack_many

    async def counted(acks: Sequence[tuple[str, Any]], worker_id: str | None = None) -> Any:
        sizes.append(len(acks))
        return await real(acks, worker_id)

    h.service.ack_many = counted  # type: ignore[method-assign]
    return sizes


async def test_handlers_finishing_together_are_acked_in_one_write(harness: Harness) -> None:
    sizes = count_ack_calls(harness)
    release = asyncio.Event()
    started: list[str] = []

    async def handle(ctx: JobContext) -> int:
        started.append(ctx.job_id)
        await release.wait()
        return len(started)

    ids = [(await harness.client.enqueue("burst.t", [i])).id for i in range(5)]
    worker = harness.worker(concurrency=5)
    worker.register("burst.t", handle)
    worker.start()
    await eventually(lambda: len(started) == 5, what="all five running")
    release.set()
    for job_id in ids:
        await harness.wait_state(job_id, JobState.COMPLETED)
    assert sum(sizes) == 5
    assert sizes[0] == 1 or len(sizes) <= 2  # the first alone at most, the rest together
    assert max(sizes) >= 4


async def test_a_refused_ack_does_not_affect_the_others(harness: Harness) -> None:
    release = asyncio.Event()
    running: list[str] = []

    async def handle(ctx: JobContext) -> None:
        running.append(ctx.job_id)
        await release.wait()

    ids = [(await harness.client.enqueue("refuse.t", [i])).id for i in range(3)]
    worker = harness.worker(concurrency=3)
    worker.register("refuse.t", handle)
    worker.start()
    await eventually(lambda: len(running) == 3, what="all three running")
    await harness.service.cancel(ids[1])  # its ack will be refused (409)
    release.set()
    assert (await harness.wait_state(ids[0], JobState.COMPLETED)).state is JobState.COMPLETED
    assert (await harness.wait_state(ids[2], JobState.COMPLETED)).state is JobState.COMPLETED
    assert await harness.state(ids[1]) is JobState.CANCELLED


async def test_a_stopping_worker_waits_for_its_acknowledgements(harness: Harness) -> None:
    gate = asyncio.Event()
    real = harness.service.ack_many

    async def slow(acks: Sequence[tuple[str, Any]], worker_id: str | None = None) -> Any:
        await gate.wait()
        return await real(acks, worker_id)

    harness.service.ack_many = slow  # type: ignore[method-assign]
    job_id = (await harness.client.enqueue("stop.t", [])).id
    worker = harness.worker()
    worker.register("stop.t", lambda ctx: _done())
    worker.start()
    try:
        await eventually(lambda: _acking(worker), what="the ack under way")
        stopping = asyncio.ensure_future(worker.stop(grace=5))
        await asyncio.sleep(0.05)
        assert not stopping.done()  # held by the acknowledgement being written
    finally:
        gate.set()
    await stopping
    assert await harness.state(job_id) is JobState.COMPLETED


async def _done() -> None:
    return None


def _acking(worker: Any) -> bool:
    writer = worker._acks._writer
    return writer is not None and not writer.done()
