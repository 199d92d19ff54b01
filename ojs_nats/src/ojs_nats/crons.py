"""Cron entries in ``OJS_CRON``: writes by compare-and-swap, listings from the watched copy.

Of several replicas firing one tick, the one whose swap advances the entry wins; every write
is also held in this replica's :class:`~ojs_nats.mirror.Mirror` at once, so a listing that
follows sees it even before the watcher does.
"""

from __future__ import annotations

from collections.abc import Callable

from ojs_core.model import CronJob

from . import names
from .connection import Connection
from .jetstream import check_size, commit
from .mirror import Mirror
from .records import CRON, RecordStore

__all__ = ["CronStore"]


class CronStore:
    """Cron entries, read through to the bucket and held in the mirror."""

    def __init__(self, conn: Connection, store: RecordStore, mirror: Mirror) -> None:
        self.conn = conn
        self.store = store
        self.mirror = mirror

    async def get(self, name: str) -> CronJob | None:
        """The stored entry or ``None``."""
        got = await self.store.get(names.CRON_BUCKET, names.name_key(name))
        if got is None:
            return None
        self.mirror.seen_cron(name, *got)
        return CRON.decode(got[0])

    async def put(self, cron: CronJob) -> bool:
        """Upsert; ``True`` if the entry is new."""
        existed = await self.get(cron.name) is not None
        data = CRON.encode(cron)
        check_size(self.conn.nc, data, None)
        revision = await self.store.kv[names.CRON_BUCKET].put(names.name_key(cron.name), data)
        self.mirror.hold_cron(cron.name, cron, revision)
        return not existed

    async def delete(self, name: str) -> CronJob | None:
        """Remove and return (``None`` if unknown)."""
        cron = await self.get(name)
        if cron is None:
            return None
        purge = (
            names.kv_subject(names.CRON_BUCKET, names.name_key(name)),
            b"",
            {names.KV_OPERATION: "PURGE", names.ROLLUP: "sub"},
        )
        (revision,) = await commit(self.conn.nc, self.conn.js, [purge])
        self.mirror.hold_cron(name, None, revision)
        return cron

    async def update(self, name: str, fn: Callable[[CronJob], CronJob]) -> tuple[CronJob, CronJob]:
        """Compare-and-swap."""
        before, after, revision = await self.store.swap_existing(
            names.CRON_BUCKET, names.name_key(name), CRON, fn, "cron job", name
        )
        self.mirror.hold_cron(name, after, revision)
        return before, after
