"""Watched copies of the small buckets, and the reset control message.

Every replica keeps ``OJS_QUEUES`` (pause flags and priorities), ``OJS_CRON`` and
``OJS_POOLS`` (worker pools, fair scheduling) in memory, current within milliseconds through a
bucket watcher, so that no fetch or cron pass has to read them. A replica that resets the
store announces it on :data:`names.CONTROL_RESET`; the others then forget what they cached
and start their watchers afresh.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from nats.aio.msg import Msg

from ojs_core.model import CronJob
from ojs_core.tasks import cancel_and_wait

from . import names
from .connection import Connection
from .records import CRON, QUEUE, QueueRecord, RecordStore

__all__ = ["Mirror"]

log = logging.getLogger("ojs.nats")

#: Pause before a watcher that failed (its stream deleted by a reset, say) starts again.
_WATCH_RESTART_S = 0.2
#: How long a cron listing waits for the watcher's initial values.
CRON_SYNC_WAIT_S = 10.0
#: How long a bound lookup waits for them before it reads the record instead.
QUEUE_SYNC_WAIT_S = 2.0


class Mirror:
    """In-memory copies of the queue and cron buckets, and the reset announcements."""

    def __init__(
        self,
        conn: Connection,
        store: RecordStore,
        on_reset: Callable[[], None],
    ) -> None:
        self.conn = conn
        self.store = store
        self._on_reset = on_reset
        #: Queue records by name (current within milliseconds).
        self.queues: dict[str, QueueRecord] = {}
        #: name -> (entry, revision); ``None`` marks a deletion, so that a watcher running
        #: behind this replica's own writes cannot bring an older version back.
        self._crons: dict[str, tuple[CronJob | None, int]] = {}
        self._crons_synced = asyncio.Event()
        #: Pool records as stored: name -> (value, revision); ``None`` marks a deletion.
        self._pools: dict[str, tuple[bytes | None, int]] = {}
        self._pools_synced = asyncio.Event()
        self._queues_synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        #: Tells this replica's own control messages from other replicas'.
        self.instance = uuid.uuid4().hex.encode()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for reset announcements and start the watchers."""
        await self.conn.nc.subscribe(names.CONTROL_RESET, cb=self._on_control)
        self._start()

    async def announce_reset(self) -> None:
        """Tell the other replicas that this one reset the store."""
        await self.conn.nc.publish(names.CONTROL_RESET, self.instance)

    async def restart(self) -> None:
        """Start the watchers afresh (after a reset): their consumers followed the deleted
        streams and would resume at the old sequences."""
        # Serialised: a reset and the control message it sends to this very replica both
        # restart the watchers, and neither may leave a watcher running untracked.
        async with self._lock:
            await self._stop_now()
            self._crons.clear()
            self._pools.clear()
            if not self.conn.closing:
                self._start()

    async def stop(self) -> None:
        """Stop the watchers."""
        async with self._lock:
            await self._stop_now()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._crons_synced.clear()
        self._queues_synced.clear()
        self._pools_synced.clear()
        self._tasks = [
            loop.create_task(
                self._watch(names.QUEUES_BUCKET, self._on_queue_entry, self._queues_synced)
            ),
            loop.create_task(
                self._watch(names.CRON_BUCKET, self._on_cron_entry, self._crons_synced)
            ),
            loop.create_task(self._watch(names.POOLS_BUCKET, self.hold_pool, self._pools_synced)),
        ]

    async def _stop_now(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    async def _on_control(self, msg: Msg) -> None:
        # The resetting replica has already forgotten everything; doing it again when its own
        # announcement comes back would drop what the next requests cached meanwhile (a
        # retry's local deadline, a queue's ready consumer).
        if msg.subject == names.CONTROL_RESET and msg.data != self.instance:
            self._on_reset()
            await self.restart()

    async def _watch(
        self,
        bucket: str,
        apply: Callable[[str, bytes | None, int], None],
        synced: asyncio.Event | None,
    ) -> None:
        while True:
            try:
                watcher = await self.store.kv[bucket].watchall()
                async for entry in watcher:
                    if entry is None:  # the initial values have all been delivered
                        if synced is not None:
                            synced.set()
                        continue
                    apply(entry.key, entry.value or None, entry.revision or 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("%s watcher restarting", bucket, exc_info=True)
                await asyncio.sleep(_WATCH_RESTART_S)

    # -- queues ----------------------------------------------------------------------------

    def _on_queue_entry(self, key: str, value: bytes | None, revision: int) -> None:
        name = names.key_name(key)
        if value:
            self.queues[name] = QUEUE.decode(value)
        else:
            self.queues.pop(name, None)

    async def queues_synced(self) -> bool:
        """Whether :attr:`queues` holds every queue record (the watcher delivered the initial
        values), waiting a little for it after a start; ``False`` if it did not come."""
        if self._queues_synced.is_set():
            return True
        try:
            await asyncio.wait_for(self._queues_synced.wait(), QUEUE_SYNC_WAIT_S)
        except TimeoutError:
            return False
        return True

    # -- cron ------------------------------------------------------------------------------

    def _on_cron_entry(self, key: str, value: bytes | None, revision: int) -> None:
        key = names.key_name(key)
        held = self._crons.get(key)
        if held is None or held[1] < revision:
            try:
                cron = CRON.decode(value) if value else None
            except Exception:  # one bad entry must not stop the watcher for all the others
                log.exception("cron entry %r (revision %d) cannot be read; skipped", key, revision)
                return
            self.hold_cron(key, cron, revision)

    def seen_cron(self, name: str, value: bytes, revision: int) -> None:
        """A cron entry this replica read: kept unless a newer version is held."""
        self._on_cron_entry(name, value, revision)

    def hold_cron(self, name: str, cron: CronJob | None, revision: int) -> None:
        """Keep a version of a cron entry (``None``: deleted); never replace a newer one."""
        held = self._crons.get(name)
        if held is None or held[1] < revision:
            self._crons[name] = (cron, revision)

    async def crons(self) -> list[CronJob]:
        """Every cron entry, by name, once the watcher delivered the initial values."""
        await asyncio.wait_for(self._crons_synced.wait(), CRON_SYNC_WAIT_S)
        return [cron for _, (cron, _) in sorted(self._crons.items()) if cron is not None]

    # -- worker pools --------------------------------------------------------------------

    def hold_pool(self, key: str, value: bytes | None, revision: int) -> None:
        """Keep a version of a pool record (``None``: deleted); never replace a newer one
        (the watcher may run behind this replica's own writes)."""
        name = names.key_name(key)
        held = self._pools.get(name)
        if held is None or held[1] < revision:
            self._pools[name] = (value, revision)

    async def pool_records(self) -> list[bytes] | None:
        """Every pool record, once the watcher delivered the initial values (``None`` if it
        did not within a moment: the caller reads the bucket)."""
        if not self._pools_synced.is_set():
            try:
                await asyncio.wait_for(self._pools_synced.wait(), QUEUE_SYNC_WAIT_S)
            except TimeoutError:
                return None
        return [value for _, (value, _) in sorted(self._pools.items()) if value is not None]
