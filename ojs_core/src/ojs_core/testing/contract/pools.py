"""Worker pools (the fair-scheduling extension, ``ojs_core.pools``) through
:class:`~ojs_core.service.JobService`: the records of :class:`~ojs_core.backend.PoolStore`, a
pool's queues and strategy governing its workers' fetches, isolation, and the pool's
concurrency across two replicas.

The tests skip on a backend without :class:`~ojs_core.backend.PoolStore`.
"""

from __future__ import annotations

from collections import Counter

import pytest

from ...backend import Backend, PoolStore
from ...model import Job
from ...pools import pool_key
from ...service import JobService
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestWorkerPools"]


def _needs_pools(backend: Backend) -> None:
    if not isinstance(backend, PoolStore):
        pytest.skip("the backend does not store worker pools (PoolStore)")


async def _push(service: JobService, queue: str, n: int = 1) -> list[Job]:
    outcomes = await service.enqueue_batch([{"type": "test.job", "args": [], "queue": queue}] * n)
    return [o.job for o in outcomes]


async def _sees(service: JobService, name: str, t: TimeControl) -> None:
    """Wait until ``service`` (another replica) knows the pool: a store that replicates pool
    records to each process (NATS: a bucket watcher) may take a moment."""

    async def seen() -> bool:
        await service.pools.reload()
        return name in await service.pools.current()

    await t.until(seen, what=f"the other replica sees pool {name!r}")


class TestWorkerPools(KitTest):
    """Pool records, routing, isolation and concurrency."""

    async def test_records(self, service: JobService, backend: Backend) -> None:
        """A pool is stored whole, listed, replaced and deleted (FS-004)."""
        _needs_pools(backend)
        body = {
            "queues": ["fs-a", "fs-b"],
            "concurrency": 3,
            "strategy": "weighted",
            "weights": {"fs-a": 2},
            "isolated": True,
            "starvation_prevention": {"enabled": True, "rotation_interval": "PT5S"},
        }
        pool, created = await service.pools.put("fs.pool-1", body)
        assert created
        got = await service.pools.get("fs.pool-1")
        assert got == pool
        assert got.weights == (("fs-a", 2),)
        assert got.starvation is not None
        assert got.starvation.rotation_ms == 5000
        _, created = await service.pools.put("fs.pool-1", body | {"strategy": "strict"})
        assert not created
        items = await service.pools.listing()
        assert [(i["name"], i["strategy"]) for i in items] == [("fs.pool-1", "strict")]
        await service.pools.delete("fs.pool-1")
        assert await service.pools.listing() == []

    async def test_pool_governs_the_fetch(self, service: JobService, backend: Backend) -> None:
        """A worker in a defined pool is served the pool's queues in the pool's strategy;
        its jobs record the pool only when it has a concurrency limit (a slot to free)."""
        _needs_pools(backend)
        await service.pools.put("fs-rr", {"queues": ["fs-x", "fs-y"], "strategy": "round-robin"})
        await _push(service, "fs-x", 3)
        await _push(service, "fs-y", 3)
        got: list[Job] = []
        for _ in range(4):
            got += await service.fetch(["ignored"], 1, "w1", pool="fs-rr")
        assert [j.queue for j in got] == ["fs-x", "fs-y", "fs-x", "fs-y"]
        assert {j.pool for j in got} == {None}

    async def test_isolation_across_replicas(
        self,
        service: JobService,
        replica_service: JobService,
        backend: Backend,
        ojs_time: TimeControl,
    ) -> None:
        """A queue of an isolated pool goes to that pool's workers only, on every replica
        (FS-R006)."""
        _needs_pools(backend)
        await service.pools.put("fs-iso", {"queues": ["fs-pay"], "isolated": True})
        await _push(service, "fs-pay", 2)
        await _sees(replica_service, "fs-iso", ojs_time)
        assert await replica_service.fetch(["fs-pay"], 5, "outsider") == []
        assert await replica_service.fetch(["fs-pay"], 5, "outsider", pool="other") == []
        got = await replica_service.fetch([], 5, "insider", pool="fs-iso")
        assert len(got) == 2

    async def test_concurrency_across_replicas(
        self,
        service: JobService,
        replica_service: JobService,
        backend: Backend,
        ojs_time: TimeControl,
    ) -> None:
        """A pool's concurrency caps its active jobs across all its workers on both replicas
        (FS-R001); an ack on either frees a slot."""
        _needs_pools(backend)
        await service.pools.put("fs-cap", {"queues": ["fs-cap"], "concurrency": 3})
        await _push(service, "fs-cap", 8)
        await _sees(replica_service, "fs-cap", ojs_time)
        a = await service.fetch([], 2, "a", pool="fs-cap")
        b = await replica_service.fetch([], 5, "b", pool="fs-cap")
        assert len(a) + len(b) == 3
        assert {j.pool for j in a + b} == {"fs-cap"}
        assert await service.fetch([], 5, "c", pool="fs-cap") == []
        view = await service.rate_limits.get(pool_key("fs-cap"))
        assert view["concurrency"]["active"] == 3
        await replica_service.ack((a + b)[0].id)
        more: list[Job] = []

        async def claimed() -> bool:
            more.extend(await service.fetch([], 5, "c", pool="fs-cap"))
            return bool(more)

        await ojs_time.until(claimed, what="a claim once the pool had a free slot")
        assert len(more) == 1
        listed = await service.pools.listing()
        assert listed[0]["active_jobs"] == 3

    async def test_weighted_pool_on_two_replicas(
        self,
        service: JobService,
        replica_service: JobService,
        backend: Backend,
        ojs_time: TimeControl,
    ) -> None:
        """Each replica keeps its own rotation; the sum of theirs keeps the proportions."""
        _needs_pools(backend)
        await service.pools.put(
            "fs-w", {"queues": ["fs-w1", "fs-w2"], "strategy": "weighted", "weights": {"fs-w1": 3}}
        )
        await _push(service, "fs-w1", 12)
        await _push(service, "fs-w2", 12)
        await _sees(replica_service, "fs-w", ojs_time)
        got: Counter[str] = Counter()
        for _ in range(4):
            for svc in (service, replica_service):
                got.update(j.queue for j in await svc.fetch([], 1, "w", pool="fs-w"))
        assert got == {"fs-w1": 6, "fs-w2": 2}
