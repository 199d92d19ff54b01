"""Queue records (pause flag, priority levels in use) and the ready consumer of each level.

A queue's record is created the first time a job of it becomes available (or it is paused).
Each priority level in use has its own durable ready consumer, created with the level; fetch
drains the levels highest first, which makes priority strict across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import attrs
import nats.js.errors
from nats.aio.msg import Msg

from ojs_core.model import Backpressure, QueueInfo
from ojs_core.timeutil import format_ts

from . import names
from .connection import Connection
from .mirror import Mirror
from .provision import ready_consumer_config
from .records import QUEUE, QueueRecord, RecordStore

__all__ = ["Queues"]


#: How long after this replica stored a hint an empty no-wait pull of its level, while no pull
#: found that hint, looks again (``Claimer._pull``: nats-server counts a stored message for a
#: consumer a moment after it acknowledged the publish).
HINT_LAG_S = 0.1


class Queues:
    """Reads and changes queue records; makes sure each priority level has its consumer."""

    def __init__(
        self, conn: Connection, store: RecordStore, mirror: Mirror, ack_wait_s: float
    ) -> None:
        self.conn = conn
        self.store = store
        self.mirror = mirror
        self.ack_wait_s = ack_wait_s
        #: Ready consumers (queue, priority, version lane, tenant shard) whose record entry
        #: and consumer this replica knows exist.
        self._ready: set[tuple[str, int, str | None, str]] = set()
        #: Levels this replica stored a hint on not yet found by a pull: when (the event
        #: loop's clock) and the newest hint's stream sequence.
        self._hinted: dict[tuple[str, int, str | None, str], tuple[float, int]] = {}

    async def record(self, queue: str) -> QueueRecord | None:
        """The queue's record: the watched copy, or a read for a queue not seen yet."""
        record = self.mirror.queues.get(queue)
        if record is None:
            got = await self.store.get(names.QUEUES_BUCKET, names.name_key(queue))
            if got is None:
                return None
            record = self.mirror.queues[queue] = QUEUE.decode(got[0])
        return record

    async def update(
        self, queue: str, change: Callable[[QueueRecord], QueueRecord | None]
    ) -> QueueRecord:
        """Compare-and-swap a queue's record (created on first use); the stored version."""
        created = QueueRecord(created_at=format_ts(datetime.now(UTC)))
        _, after, _ = await self.store.swap(
            names.QUEUES_BUCKET,
            names.name_key(queue),
            QUEUE,
            lambda record: change(record or created),
            f"queue {queue!r}",
        )
        if after is None:
            return change(created) or created  # nothing stored, nothing to store
        self.mirror.queues[queue] = after
        return after

    async def ensure_ready(
        self, queue: str, priority: int, lane: str | None = None, shard: str = ""
    ) -> None:
        """Record the priority level (of a version lane, of a tenant's shard, or both) and
        create its consumer, once per replica."""
        if (queue, priority, lane, shard) in self._ready:
            return
        entry = f"{priority} {lane}"

        def add(record: QueueRecord) -> QueueRecord | None:
            if shard and lane is not None:
                entries = record.shard_lanes.get(shard, [])
                if entry in entries:
                    return None
                return attrs.evolve(
                    record, shard_lanes={**record.shard_lanes, shard: [*entries, entry]}
                )
            if shard:
                levels = record.shards.get(shard, [])
                if priority in levels:
                    return None
                return attrs.evolve(record, shards={**record.shards, shard: [*levels, priority]})
            if lane is not None:
                if entry in record.lanes:
                    return None
                return attrs.evolve(record, lanes=(*record.lanes, entry))
            if priority in record.priorities:
                return None
            return attrs.evolve(record, priorities=(*record.priorities, priority))

        await self.update(queue, add)
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await self.conn.js.add_consumer(
                names.READY_STREAM,
                ready_consumer_config(queue, priority, self.ack_wait_s, lane, shard),
            )
        self._ready.add((queue, priority, lane, shard))

    def hinted(
        self, queue: str, priority: int, lane: str | None = None, shard: str = "", *, seq: int
    ) -> None:
        """Note that this replica stored a ready hint on this level, at stream sequence
        ``seq`` (the newest noted is kept)."""
        key = (queue, priority, lane, shard)
        _, newest = self._hinted.get(key, (0.0, 0))
        self._hinted[key] = (asyncio.get_running_loop().time(), max(seq, newest))

    def pulled(
        self, queue: str, priority: int, lane: str | None, shard: str, msgs: Sequence[Msg]
    ) -> None:
        """A pull of this level found ``msgs``: the note is done with when they reach the
        newest hint this replica stored there."""
        key = (queue, priority, lane, shard)
        noted = self._hinted.get(key)
        if noted is None:
            return
        for msg in msgs:
            with contextlib.suppress(Exception):  # not a JetStream delivery: no sequence
                if msg.metadata.sequence.stream >= noted[1]:
                    del self._hinted[key]
                    return

    def hinted_lately(
        self, queue: str, priority: int, lane: str | None = None, shard: str = ""
    ) -> bool:
        """Whether a hint this replica stored on this level in the last :data:`HINT_LAG_S`
        has not been found by a pull yet (an older note is dropped)."""
        key = (queue, priority, lane, shard)
        noted = self._hinted.get(key)
        if noted is None:
            return False
        if asyncio.get_running_loop().time() - noted[0] < HINT_LAG_S:
            return True
        del self._hinted[key]
        return False

    def unfound(self, queue: str, priority: int, lane: str | None = None, shard: str = "") -> None:
        """Drop the note of this level: pulls looked for its hint and found nothing (another
        replica took it): the next empty pull answers at once."""
        self._hinted.pop((queue, priority, lane, shard), None)

    async def recreate(
        self, queue: str, priority: int, lane: str | None = None, shard: str = ""
    ) -> None:
        """Create a level's consumer again (the server reaped it when it was idle)."""
        self._ready.discard((queue, priority, lane, shard))
        await self.ensure_ready(queue, priority, lane, shard)

    async def list(self) -> list[QueueInfo]:
        """Queues that have held a job or been paused, plus ``default``."""
        keys = await self.store.keys(names.QUEUES_BUCKET)
        got = await asyncio.gather(*(self.store.get(names.QUEUES_BUCKET, k) for k in keys))
        out = {"default": QueueInfo(name="default")}
        for key, entry in zip(keys, got, strict=True):
            if entry is not None:
                name = names.key_name(key)
                out[name] = QUEUE.decode(entry[0]).info(name)
        return [out[k] for k in sorted(out)]

    async def set_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Flip the pause flag; every replica's watcher sees it within milliseconds."""
        record = await self.update(
            queue,
            lambda r: (
                None if r.paused == paused and r.created_at else attrs.evolve(r, paused=paused)
            ),
        )
        return record.info(queue)

    async def backpressure(self, queue: str) -> Backpressure | None:
        """The queue's bound from the watched copy: no round trip, which matters because every
        enqueue asks (a read only while the watcher has not delivered the bucket yet)."""
        if await self.mirror.queues_synced():
            record = self.mirror.queues.get(queue)
        else:
            record = await self.record(queue)
        return record.backpressure if record is not None else None

    async def set_backpressure(self, queue: str, bound: Backpressure | None) -> None:
        """Store the queue's bound; every replica's watcher sees it within milliseconds."""
        await self.update(
            queue,
            lambda r: (
                None
                if r.backpressure == bound and r.created_at
                else attrs.evolve(r, backpressure=bound)
            ),
        )

    def paused(self, queue: str) -> bool:
        """The watched pause flag."""
        record = self.mirror.queues.get(queue)
        return bool(record and record.paused)

    def forget_all(self) -> None:
        """Forget which levels exist (after a reset)."""
        self._ready.clear()
        self._hinted.clear()
