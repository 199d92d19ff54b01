"""Worker pool definitions (the fair-scheduling extension) in ``OJS_POOLS``: one record per
pool, so every replica routes fetches by the same pools. Listings are served from the
replica's watched copy of the bucket (:class:`~ojs_nats.mirror.Mirror`), so the core's
snapshot refresh (at most once a second, ``ojs_core.pools.SNAPSHOT_TTL_S``) costs no I/O.

A pool name is stored under :func:`~ojs_nats.names.name_key`; the record is
:meth:`~ojs_core.pools.PoolConfig.to_store` as JSON. A ``PUT`` replaces the record whole (last
writer wins), so no compare-and-swap is needed beyond the store's own.
"""

from __future__ import annotations

import asyncio

from ojs_core import jsonio
from ojs_core.pools import PoolConfig

from . import names
from .mirror import Mirror
from .records import Codec, RecordStore

__all__ = ["PoolBucket"]


class _PoolCodec(Codec[PoolConfig]):
    def __init__(self) -> None:
        super().__init__(PoolConfig)

    def encode(self, value: object) -> bytes:
        assert isinstance(value, PoolConfig)
        return jsonio.dumps(value.to_store())

    def decode(self, data: bytes) -> PoolConfig:
        return PoolConfig.from_store(jsonio.loads(data))


_CODEC = _PoolCodec()


class PoolBucket:
    """The :class:`~ojs_core.backend.PoolStore` of the NATS backend."""

    def __init__(self, store: RecordStore, mirror: Mirror) -> None:
        self.store = store
        self.mirror = mirror

    async def put(self, pool: PoolConfig) -> None:
        """Create or replace the pool's record (held in the watched copy at once)."""
        key = names.name_key(pool.name)
        _, _, revision = await self.store.swap(
            names.POOLS_BUCKET, key, _CODEC, lambda _: pool, f"pool {pool.name!r}"
        )
        self.mirror.hold_pool(key, _CODEC.encode(pool), revision)

    async def get(self, name: str) -> PoolConfig | None:
        """The pool's record, or ``None``."""
        got = await self.store.get(names.POOLS_BUCKET, names.name_key(name))
        return None if got is None else _CODEC.decode(got[0])

    async def list(self) -> list[PoolConfig]:
        """Every pool's record: from the watched copy (the bucket when it is not synced)."""
        records = await self.mirror.pool_records()
        if records is not None:
            return [_CODEC.decode(r) for r in records]
        keys = await self.store.keys(names.POOLS_BUCKET)
        got = await asyncio.gather(*(self.store.get(names.POOLS_BUCKET, k) for k in keys))
        return [_CODEC.decode(g[0]) for g in got if g is not None]

    async def delete(self, name: str) -> PoolConfig | None:
        """Remove and return the pool's record."""
        key = names.name_key(name)
        got = await self.store.get(names.POOLS_BUCKET, key)
        if got is None:
            return None
        revision = await self.store.remove(names.POOLS_BUCKET, key)
        if revision is not None:
            self.mirror.hold_pool(key, None, revision)
        return _CODEC.decode(got[0])
