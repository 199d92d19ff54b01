"""A replica's snapshot of the worker pools (``ojs_core.pools.Pools``) after a change made
through it: complete even when it had never read the store, and never replaced by a read that
started before the change."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ojs_core.clock import ManualClock
from ojs_core.model import Event
from ojs_core.pools import PoolConfig, Pools
from ojs_core.service import JobService
from ojs_memory import MemoryBackend


async def test_a_put_on_a_replica_that_never_read_the_pools_keeps_the_others() -> None:
    """Two services over one store are two replicas. ``b`` has not fetched yet: its first
    change must not leave it believing its pool is the only one (the isolated queue of ``a``'s
    pool would go to outsiders until the next refresh)."""
    backend, clock = MemoryBackend(), ManualClock()
    a = JobService(backend, clock=clock)
    b = JobService(backend, clock=clock)
    await a.pools.put("payments", {"queues": ["pay"], "isolated": True})
    await a.pools.put("doomed", {"queues": ["d"]})
    await a.enqueue_batch([{"type": "t.job", "args": [], "queue": "pay"}])
    await b.pools.put("general", {"queues": ["default"]})
    assert set(await b.pools.current()) == {"payments", "doomed", "general"}
    assert await b.fetch(["pay"], 1, "outsider") == []

    c = JobService(backend, clock=clock)
    await c.pools.delete("doomed")
    assert set(await c.pools.current()) == {"payments", "general"}
    assert await c.fetch(["pay"], 1, "outsider") == []
    (job,) = await c.fetch([], 1, "insider", pool="payments")
    assert job.queue == "pay"


class _SlowListing(MemoryBackend):
    """Reads the pools at once but answers only when ``gate`` opens: a refresh in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def list_pools(self) -> list[PoolConfig]:
        pools = await super().list_pools()
        await self.gate.wait()
        return pools


async def _no_events(_events: Sequence[Event]) -> None:
    return None


async def test_a_refresh_that_read_before_a_change_does_not_undo_it() -> None:
    backend, clock = _SlowListing(), ManualClock()
    pools = Pools(backend, clock.now, _no_events, ttl_s=0.0)
    assert await pools.current() == {}
    backend.gate.clear()
    await asyncio.sleep(0.01)
    await pools.current()  # stale: a background refresh starts and reads the empty store
    refresh = pools._refresh
    assert refresh is not None
    await asyncio.sleep(0)
    await pools.put("payments", {"queues": ["pay"], "isolated": True})
    backend.gate.set()
    await refresh
    assert set(pools._snapshot) == {"payments"}
    await pools.delete("payments")
    assert pools._snapshot == {}
