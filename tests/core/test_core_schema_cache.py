"""The schema cache is refreshed by one read however many enqueues find it stale at once, and a
read that started before a registration does not fill the cache with what it missed."""

from __future__ import annotations

import asyncio

from ojs_core.schema_registry import SchemaRecord, SchemaRegistry
from ojs_memory import MemoryBackend


class CountingStore(MemoryBackend):
    """The memory backend, counting its schema listings; a listing waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def list_schemas(self) -> list[SchemaRecord]:
        self.listings += 1
        self.started.set()
        await self.gate.wait()
        return await super().list_schemas()


async def test_concurrent_stale_reads_share_one_listing() -> None:
    store = CountingStore()
    registry = SchemaRegistry(store, None, cache_s=0.0)  # always stale: every call refreshes
    store.gate.clear()
    waiting = [asyncio.ensure_future(registry.records()) for _ in range(50)]
    await store.started.wait()
    store.gate.set()
    assert all(r == [] for r in await asyncio.gather(*waiting))
    assert store.listings == 1
    await asyncio.gather(*(registry.records() for _ in range(50)))
    assert store.listings == 2  # the next stale moment reads again, once


async def test_a_read_older_than_a_change_does_not_fill_the_cache() -> None:
    store = CountingStore()
    registry = SchemaRegistry(store, None, cache_s=60.0)
    store.gate.clear()
    old = asyncio.ensure_future(registry.records())
    await store.started.wait()  # the read is under way
    registry.forget()  # a registration happened meanwhile
    store.gate.set()
    assert await old == []
    await registry.records()
    assert store.listings == 2  # the cache was not filled by the older read
    await registry.records()
    assert store.listings == 2


async def test_fresh_reads_never_join_an_older_one() -> None:
    store = CountingStore()
    registry = SchemaRegistry(store, None, cache_s=60.0)
    store.gate.clear()
    cached = asyncio.ensure_future(registry.records())
    fresh = asyncio.ensure_future(registry.records(fresh=True))
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(cached, fresh)
    assert store.listings == 2
