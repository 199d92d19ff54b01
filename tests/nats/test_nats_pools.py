"""Worker pools across replicas on NATS: definitions in ``OJS_POOLS`` seen by every replica
(its snapshot refreshed in the background), a pool's concurrency held by six workers on two
replicas, isolation applied by a replica that learnt of the pool from the store."""

from __future__ import annotations

import asyncio
import time

from nats_fixtures import BackendFactory
from nats_support import eventually, push

from ojs_core.model import Job
from ojs_core.service import JobService


async def test_a_pool_defined_on_one_replica_governs_the_other(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    await push(b, queue="fsn-pay")
    # b has loaded its (empty) snapshot: the pool arrives through the background refresh.
    assert await b.pools.current() == {}
    await a.pools.put("fsn-payments", {"queues": ["fsn-pay"], "isolated": True})

    async def isolated() -> bool:
        return "fsn-payments" in await b.pools.current()

    await eventually(isolated, within=5, what="the other replica's snapshot has the pool")
    assert await b.fetch(["fsn-pay"], 5, "outsider") == []
    got = await b.fetch([], 5, "insider", pool="fsn-payments")
    assert [j.queue for j in got] == ["fsn-pay"]
    assert [p.name for p in await b.backend.list_pools()] == ["fsn-payments"]  # type: ignore[attr-defined]


async def test_pool_concurrency_holds_across_replicas(
    replicas: tuple[JobService, JobService],
) -> None:
    """Six workers of one pool, three on each replica, never run more than three jobs."""
    a, b = replicas
    await a.pools.put("fsn-cap", {"queues": ["fsn-cap"], "concurrency": 3})

    async def known() -> bool:
        await b.pools.reload()  # from b's watched copy of OJS_POOLS, a moment behind
        return "fsn-cap" in await b.pools.current()

    await eventually(known, within=5, what="the other replica knows the pool")
    ids = {(await push(a, queue="fsn-cap")).id for _ in range(24)}
    running: set[str] = set()
    done: set[str] = set()
    peak = 0
    deadline = time.monotonic() + 60

    async def worker(svc: JobService, n: int) -> None:
        nonlocal peak
        while len(done) < len(ids) and time.monotonic() < deadline:
            jobs = await svc.fetch([], count=1, worker_id=f"w{n}", pool="fsn-cap")
            if not jobs:
                await asyncio.sleep(0.01)
                continue
            job = jobs[0]
            assert job.pool == "fsn-cap"
            running.add(job.id)
            peak = max(peak, len(running))
            await asyncio.sleep(0.02)
            running.discard(job.id)  # before the ack: the slot is freed by the ack
            await svc.ack(job.id, worker_id=f"w{n}")
            done.add(job.id)

    await asyncio.gather(*(worker(svc, n) for n, svc in enumerate([a, b] * 3)))
    assert done == ids
    assert peak <= 3
    view = await b.rate_limits.get("pool:fsn-cap")
    assert view["concurrency"] == {"limit": 3, "active": 0, "available": 3}


async def test_an_ack_on_a_replica_that_never_fetched_frees_the_pool_slot(
    new_backend: BackendFactory,
) -> None:
    """The slot is named by the job (``Job.pool``): a replica that only acknowledges, and so
    never loaded the pools, frees it."""
    a = JobService(await new_backend())
    acker = JobService(await new_backend())
    await a.pools.put("fsn-one", {"queues": ["fsn-one"], "concurrency": 1})
    for _ in range(2):
        await push(a, queue="fsn-one")
    (first,) = await a.fetch([], 5, "w", pool="fsn-one")
    assert await a.fetch([], 5, "w", pool="fsn-one") == []
    await acker.ack(first.id, worker_id="w")

    async def second() -> list[Job]:
        return await a.fetch([], 5, "w", pool="fsn-one")

    got = await eventually(second, within=5, what="the second job once the slot was freed")
    assert len(got) == 1


async def test_a_change_through_a_replica_that_never_read_the_pools_keeps_the_others(
    replicas: tuple[JobService, JobService],
) -> None:
    """``b`` has not read ``OJS_POOLS`` when it defines a pool: its snapshot then holds every
    pool, so ``a``'s isolated queue is not served to ``b``'s outsiders meanwhile."""
    a, b = replicas
    await a.pools.put("fsn-iso", {"queues": ["fsn-iso"], "isolated": True})

    async def stored() -> bool:
        return [p.name for p in await b.backend.list_pools()] == ["fsn-iso"]  # type: ignore[attr-defined]

    await eventually(stored, within=5, what="b's watched copy has the pool")
    await push(a, queue="fsn-iso")
    await b.pools.put("fsn-general", {"queues": ["fsn-default"]})
    assert set(await b.pools.current()) == {"fsn-iso", "fsn-general"}
    assert await b.fetch(["fsn-iso"], 1, "outsider") == []
