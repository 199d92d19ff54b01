"""Multi-tenancy across replicas: two JobServices on one NATS share the tenants' records,
limits and sharded ready index, so isolation, limits and fairness hold for the deployment."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.tenancy import CONFIG_TTL_S, TenantLimitError
from ojs_core.versioning import parse_declaration
from ojs_nats import names


async def _push(svc: JobService, tenant: str | None, queue: str, **options: Any) -> Job:
    body: dict[str, Any] = {"type": "mt.job", "args": [], "options": {"queue": queue, **options}}
    if tenant is not None:
        body["meta"] = {"tenant_id": tenant}
    return (await svc.enqueue(body)).job


async def _until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_tenant_configured_on_one_replica_binds_the_other(
    replicas: tuple[JobService, JobService],
) -> None:
    """Limits stored through one replica apply on the other (after at most the cache TTL):
    the per-tenant concurrency across both replicas, the depth at enqueue."""
    a, b = replicas
    await a.tenancy.put("acme", {"limits": {"max_concurrency": 2, "max_queue_depth": 6}})
    assert (await b.tenancy.get("acme")).max_concurrency == 2
    await asyncio.sleep(CONFIG_TTL_S)  # b's cache of the (unknown) tenant expires
    for _ in range(6):
        await _push(b, "acme", "mtx")

    async def counted() -> bool:
        # b's counter increments reach the stream a few milliseconds after its writes.
        counts = await a.tenancy.stats_counts("acme")
        return counts[JobState.AVAILABLE] == 6

    await _until(counted)
    with pytest.raises(TenantLimitError):
        await _push(a, "acme", "mtx")
    running: set[str] = set()
    peak = 0
    done: set[str] = set()

    async def worker(svc: JobService, n: int) -> None:
        nonlocal peak
        deadline = time.monotonic() + 30
        while len(done) < 6 and time.monotonic() < deadline:
            jobs = await svc.fetch(["mtx"], count=1, worker_id=f"w{n}")
            if not jobs:
                await asyncio.sleep(0.01)
                continue
            running.add(jobs[0].id)
            peak = max(peak, len(running))
            await asyncio.sleep(0.02)
            running.discard(jobs[0].id)
            await svc.ack(jobs[0].id, worker_id=f"w{n}")
            done.add(jobs[0].id)

    await asyncio.gather(*(worker(svc, n) for n, svc in enumerate([a, b] * 2)))
    assert len(done) == 6
    assert peak == 2
    view = await b.rate_limits.get("tenant:acme")
    assert view["concurrency"]["active"] == 0


async def test_scoped_fetch_on_another_replica_leaves_other_tenants_in_place(
    replicas: tuple[JobService, JobService],
) -> None:
    """A scoped worker on one replica takes only its tenant's jobs; the other tenants' jobs
    are not set aside: an unscoped fetch on the other replica gets them at once, in order."""
    a, b = replicas
    others = [await _push(a, "beta", "mts") for _ in range(5)]
    mine = await _push(a, "acme", "mts")
    got = await b.fetch(["mts"], 10, tenant="acme")
    assert [j.id for j in got] == [mine.id]
    rest = await a.fetch(["mts"], 10)
    assert [j.id for j in rest] == [j.id for j in others]


async def test_round_robin_across_replicas(replicas: tuple[JobService, JobService]) -> None:
    """A burst of one tenant does not hold back another: fetches alternating between the
    replicas serve both tenants from the start (each replica in its own rotation: bulk,
    small, bulk, small), and the stats count per tenant."""
    a, b = replicas
    for _ in range(20):
        await _push(a, "bulk", "mtr")
    small = {(await _push(b, "small", "mtr")).id for _ in range(3)}
    got: list[Job] = []
    for svc in (a, b) * 4:
        got.extend(await svc.fetch(["mtr"], 1))
    assert small <= {j.id for j in got}
    assert len(got) == 8

    async def counted() -> bool:
        stats = await b.tenancy.stats("bulk")
        return stats["jobs"]["active"] == 5 and stats["jobs"]["available"] == 15

    await _until(counted)


async def test_a_versioned_tenant_job_has_a_lane_within_its_shard(
    replicas: tuple[JobService, JobService],
) -> None:
    """A job with a version and a tenant is hinted on ``ojs.ready.<q>.<p>.v<lane>.t<tenant>``
    through a consumer of its own, recorded in the queue record (``shard_lanes``); plain,
    versioned-only and tenant-only jobs keep their subjects. A fetch through the other replica
    that does not accept the version, or is another tenant's, leaves it; the right one gets it
    at once."""
    a, b = replicas
    body: dict[str, Any] = {
        "type": "mt.ver",
        "version": "1.2",
        "args": [],
        "meta": {"tenant_id": "acme"},
        "options": {"queue": "mtv"},
    }
    job = (await a.enqueue(body)).job
    assert names.ready_subject("mtv", 0, "mt.ver@1.2", "acme") == (
        f"ojs.ready.{names.queue_token('mtv')}.100.{names.lane_token('mt.ver@1.2')}."
        f"{names.shard_token('acme')}"
    )
    assert names.ready_subject("mtv", 0) == f"ojs.ready.{names.queue_token('mtv')}.100"
    backend: Any = a.backend
    record = await backend.queues.record("mtv")
    assert record.shard_lanes == {"acme": ["0 mt.ver@1.2"]}
    assert (record.priorities, record.lanes, record.shards) == ((), (), {})
    consumer = names.ready_consumer("mtv", 0, "mt.ver@1.2", "acme")
    info = await backend.js.consumer_info(names.READY_STREAM, consumer)
    assert info.config.filter_subject == names.ready_subject("mtv", 0, "mt.ver@1.2", "acme")
    v1 = parse_declaration({"mt.ver": ">=1.0 <2.0"}, "versions")
    v2 = parse_declaration({"mt.ver": "2.0"}, "versions")
    for _ in range(3):
        assert await b.fetch(["mtv"], 5, tenant="acme", versions=v2) == []
        assert await b.fetch(["mtv"], 5, tenant="beta", versions=v1) == []
        assert await b.fetch(["mtv"], 5, versions=v2) == []
    [got] = await b.fetch(["mtv"], 1, tenant="acme", versions=v1)
    assert (got.id, got.attempt) == (job.id, 1)


async def test_the_longest_tenant_id_has_a_shard(replicas: tuple[JobService, JobService]) -> None:
    """A 128-character tenant id (the most allowed) is hashed into its subject and consumer
    name, which stay inside NATS's limits: its jobs are stored and fetched."""
    a, b = replicas
    tenant = "t" + "x" * 127
    job = await _push(a, tenant, "mt-long")
    consumer = names.ready_consumer("mt-long", 0, "invoice.generate@2.0", tenant)
    assert len(consumer) < 100
    got: list[Job] = []

    async def fetched() -> bool:
        got.extend(await b.fetch(["mt-long"], count=1, tenant=tenant))
        return bool(got)

    await _until(fetched)
    assert [j.id for j in got] == [job.id]
