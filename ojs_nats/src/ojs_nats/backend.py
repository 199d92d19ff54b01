"""The OJS backend on NATS JetStream: :class:`NatsBackend`, a facade over its parts.

Each concern lives in a module of its own and owns its state (the table is in
``docs/nats-design.md``):

============== ===========================================================================
``names``      every stream, bucket, consumer, subject, key and header
``provision``  stream, bucket and consumer configurations, created idempotently
``connection`` connect, health, close
``records``    the storage format of every record; the store, its cache, compare-and-swap
``jobs``       job and workflow writes with their hints, timers and markers; dead letter
``index``      listing index entries: written with records, read newest first by listings
``ready``      ready hints and claiming
``timers``     schedules, the local deadline heap, the fired-timer pull
``queues``     queue records and the ready consumer of each priority level
``crons``      cron entries
``mirror``     watched copies of the queue and cron buckets; the reset announcement
``stats``      counters for queue stats; the event log
``arrivals``   wake-ups of long-polling fetches across processes
``eventfeed``  the live event feed: one shared subscription per process
``webhooks``   webhook subscriptions, the event intake and the delivery queue
``jetstream``  helpers nats-py lacks: pipelined writes, atomic batches, pulls, retries
============== ===========================================================================

Errors are mapped to :class:`~ojs_core.errors.BackendUnavailableError` at this edge only
(:func:`~ojs_nats.jetstream.guard` on each protocol method).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from ojs_core.backend import (
    ActivateFn,
    BackendHealth,
    ConflictFn,
    EventFilter,
    EventListener,
    JobFilter,
    JobFn,
    Page,
    RateLimitFn,
    TenantFn,
    UniqueConflict,
    Unsubscribe,
)
from ojs_core.model import (
    Backpressure,
    CronJob,
    Event,
    Job,
    QueueInfo,
    QueueStats,
    WorkerInfo,
    Workflow,
)
from ojs_core.pools import PoolConfig
from ojs_core.rate_limit_rules import KeyState
from ojs_core.schema_registry import SchemaRecord
from ojs_core.states import JobState
from ojs_core.tenancy import TenantConfig
from ojs_core.webhook_store import EventBatch
from ojs_core.webhooks import Delivery, Subscription

from . import listing, names, provision
from .arrivals import Arrivals
from .batch_updates import update_jobs
from .connection import CONNECT_WAIT_S, MIN_SERVER_VERSION, Connection
from .crons import CronStore
from .embedded import EmbeddedNatsServer
from .eventfeed import EventFeed
from .idempotency import IdempotencyBucket
from .index import Index
from .jetstream import guard
from .jobs import JobWriter
from .mirror import Mirror
from .pools import PoolBucket
from .queues import Queues
from .ratelimits import RateLimitBucket
from .ready import Claimer
from .records import WORKER, RecordStore
from .schemas import SchemaBucket
from .stats import Counters, EventLog
from .tenants import TenantBucket
from .timers import Timers
from .webhooks import WebhookQueue

__all__ = ["MIN_SERVER_VERSION", "NatsBackend"]

#: How long closing waits for the counters' last flush.
CLOSE_FLUSH_S = 2.0


class NatsBackend:
    """OJS storage on NATS JetStream; any number of server replicas may share one NATS."""

    name = "nats"
    #: The ready index is kept by version lane (see ``ActivateFn`` in ``ojs_core.backend``).
    version_lanes = True

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        replicas: int = 1,
        ack_wait_s: float = 30.0,
        embedded: EmbeddedNatsServer | None = None,
        connect_options: dict[str, Any] | None = None,
        connect_wait_s: float = CONNECT_WAIT_S,
        monitor_url: str | None = None,
    ) -> None:
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.replicas = replicas
        self.ack_wait_s = ack_wait_s
        self.conn = Connection(
            [s if "://" in s else f"nats://{s}" for s in servers],
            embedded=embedded,
            connect_options=connect_options,
            connect_wait_s=connect_wait_s,
            monitor_url=monitor_url,
        )
        self.store = RecordStore(self.conn)
        self.store.leader_reads = replicas > 1
        self.mirror = Mirror(self.conn, self.store, on_reset=self._forget_all)
        self.queues = Queues(self.conn, self.store, self.mirror, ack_wait_s)
        self.timers = Timers(self.conn, self.store)
        self.conn.reconnected.append(self.timers.drop_pull)  # a held pull died with the link
        self.counters = Counters(self.conn)
        self.arrivals = Arrivals(self.conn, hear=self.store.hear)
        self.events = EventLog(self.conn)
        self.feed = EventFeed(self.conn)
        self.index = Index(self.conn, self.store)
        self.writer = JobWriter(
            self.conn,
            self.store,
            self.queues,
            self.timers,
            self.counters,
            self.arrivals,
            self.index,
        )
        self.claimer = Claimer(self.conn, self.store, self.queues, self.timers, self.writer)
        self.crons = CronStore(self.conn, self.store, self.mirror)
        self.schemas = SchemaBucket(self.conn, self.store)
        self.idempotency = IdempotencyBucket(self.conn, self.store)
        self.webhooks = WebhookQueue(self.conn, self.store)
        self.rate_limits = RateLimitBucket(self.store)
        self.tenants = TenantBucket(self.store)
        self.pools = PoolBucket(self.store, self.mirror)

    @property
    def servers(self) -> list[str]:
        """The NATS URLs (the embedded server's once it started)."""
        return self.conn.servers

    @property
    def embedded(self) -> EmbeddedNatsServer | None:
        """The private nats-server this backend starts and stops, if any."""
        return self.conn.embedded

    @property
    def connect_options(self) -> dict[str, Any]:
        """Options passed to ``nats.connect`` (credentials, TLS) on :meth:`open`."""
        return self.conn.connect_options

    @property
    def connected(self) -> bool:
        """``False`` while disconnected from NATS (protocol calls then fail at once)."""
        return self.conn.connected

    @property
    def nc(self) -> Client:
        """The live nats-py connection (for tests and tools)."""
        return self.conn.nc

    @property
    def js(self) -> JetStreamContext:
        """The live JetStream context (for tests and tools)."""
        return self.conn.js

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (starting the embedded server first, if any) and create streams and buckets."""
        if self.conn.is_open:
            return
        await self.conn.open()
        self.store.kv = await provision.provision(self.conn.js, self.replicas, self.ack_wait_s)
        await self.mirror.start()

    async def close(self) -> None:
        """Flush the counters, drain the connection and stop the embedded server, if any."""
        if self.conn.is_open and self.conn.connected:
            # The last few milliseconds of transitions: without them queue stats, and the
            # depth that bounded queues are checked against, would stay off after a restart.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.counters.sync(), CLOSE_FLUSH_S)
        self.conn.closing = True  # a reset announced meanwhile must not start watchers again
        await self.mirror.stop()
        self.timers.drop_pull()
        self.arrivals.forget_all()
        self.feed.forget_all()
        self.webhooks.forget_all()
        await self.conn.close()

    async def health(self) -> BackendHealth:
        """Round-trip to the server."""
        return await self.conn.health(self.name)

    @guard
    async def reset(self) -> None:
        """Delete every stream and bucket, then provision them again."""
        await provision.delete_all(self.conn.js)
        self._forget_all()
        self.store.kv = await provision.provision(self.conn.js, self.replicas, self.ack_wait_s)
        # Other replicas drop what they cached about the old streams (consumers, queues, jobs).
        await self.mirror.announce_reset()
        # Once more: what this replica's background work (a timer pass, say) cached about the
        # old streams while they were being recreated must go too.
        self._forget_all()
        await self.mirror.restart()

    def _forget_all(self) -> None:
        self.mirror.queues.clear()
        self.queues.forget_all()
        self.timers.forget_all()
        self.store.forget_all()
        self.index.forget_all()
        self.webhooks.forget_all()

    # -- jobs ------------------------------------------------------------------------------

    @guard
    async def insert_jobs(
        self, jobs: Sequence[Job], is_conflict: ConflictFn | None = None
    ) -> list[UniqueConflict]:
        """All or nothing, as one atomic batch: records, plus unique-key holders."""
        return await self.writer.insert(jobs, is_conflict)

    @guard
    async def get_job(self, job_id: str) -> Job | None:
        """The current version (direct get)."""
        rec = await self.store.read_job(job_id)
        return rec.job if rec else None

    @guard
    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs with one batched read."""
        return [r.job if r else None for r in await self.store.read_jobs(job_ids)]

    @guard
    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        """Compare-and-swap on the record's revision, retried on contention."""
        return await self.writer.update(job_id, fn)

    @guard
    async def update_jobs(
        self, items: Sequence[tuple[str, JobFn]]
    ) -> list[tuple[Job, Job] | BaseException]:
        """Many compare-and-swaps side by side (``BatchUpdates``; ``ojs_nats.batch_updates``)."""
        return await update_jobs(self.writer, items)

    @guard
    async def claim_jobs(
        self, queues: Sequence[str], count: int, activate: ActivateFn
    ) -> list[Job]:
        """Pull hints per queue, highest priority first; claim each by compare-and-swap (a
        fetch an arrival woke claims the job it was handed first, without its hint)."""
        return await self.claimer.claim(queues, count, activate, self.arrivals.take())

    @guard
    async def arrivals_mark(self, queues: Sequence[str]) -> int:
        """The arrivals heard on ``queues`` (:class:`~ojs_core.backend.JobArrivals`)."""
        return await self.arrivals.mark(queues)

    @guard
    async def wait_for_arrivals(self, queues: Sequence[str], mark: int, timeout_s: float) -> None:
        """Until a job may have become available in ``queues`` after ``mark``."""
        await self.arrivals.wait(queues, mark, timeout_s)

    @guard
    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Jobs whose timer is due; a fired timer is acked once its job is updated."""
        return await self.timers.due_jobs(now, limit)

    @guard
    async def list_jobs(self, flt: JobFilter) -> Page:
        """Newest first, from the listing index (a page costs about a page of reads; see
        ``docs/nats-design.md``); totals from the counters. The dead letter is listed from
        its ``d.`` markers."""
        return await listing.list_jobs(self.writer, self.index, self.counters, flt)

    @guard
    async def delete_job(
        self, job_id: str, *, only_if: Callable[[Job], bool] | None = None
    ) -> bool:
        """Remove a job (compare-and-swap against the version ``only_if`` checked), its
        dead-letter marker and its unique-key holder."""
        return await self.writer.delete(job_id, only_if)

    # -- queues ----------------------------------------------------------------------------

    @guard
    async def list_queues(self) -> list[QueueInfo]:
        """Queues that have held a job or been paused, plus ``default``."""
        return await self.queues.list()

    @guard
    async def set_queue_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Flip the pause flag; every replica's watcher sees it within milliseconds."""
        info = await self.queues.set_paused(queue, paused)
        if not paused:
            await self.arrivals.notify([queue], counted=False)
        return info

    @guard
    async def get_backpressure(self, queue: str) -> Backpressure | None:
        """The queue's bound (:class:`~ojs_core.backend.QueueBounds`), from the watched copy
        of ``OJS_QUEUES``: every replica enforces a bound any replica set."""
        return await self.queues.backpressure(queue)

    @guard
    async def set_backpressure(self, queue: str, bound: Backpressure | None) -> None:
        """Store the queue's bound in its ``OJS_QUEUES`` record, by compare-and-swap."""
        await self.queues.set_backpressure(queue, bound)

    @guard
    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts from the counter stream: one direct read per state, no scan."""
        counts = await self.counters.counts(queue)
        return QueueStats(name=queue, paused=self.queues.paused(queue), counts=counts)

    # -- workflows -------------------------------------------------------------------------

    @guard
    async def insert_workflow(self, workflow: Workflow, jobs: Sequence[Job]) -> None:
        """The workflow record and all its jobs in one atomic batch."""
        await self.writer.insert_workflow(workflow, jobs)

    @guard
    async def delete_workflow(self, workflow_id: str) -> bool:
        """Remove a workflow record."""
        key = names.workflow_key(workflow_id)
        if await self.store.get(names.JOBS_BUCKET, key) is None:
            return False
        return await self.store.remove(names.JOBS_BUCKET, key) is not None

    @guard
    async def list_workflows(self, limit: int, offset: int) -> tuple[list[Workflow], int]:
        """Workflow records newest first, and how many there are."""
        return await self.writer.list_workflows(limit, offset)

    @guard
    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The record or ``None``."""
        return await self.writer.get_workflow(workflow_id)

    @guard
    async def update_workflow(
        self, workflow_id: str, fn: Callable[[Workflow], Workflow]
    ) -> tuple[Workflow, Workflow]:
        """Compare-and-swap on the workflow record."""
        return await self.writer.update_workflow(workflow_id, fn)

    # -- cron ------------------------------------------------------------------------------

    @guard
    async def put_cron(self, cron: CronJob) -> bool:
        """Upsert."""
        return await self.crons.put(cron)

    @guard
    async def get_cron(self, name: str) -> CronJob | None:
        """The entry or ``None``."""
        return await self.crons.get(name)

    @guard
    async def list_crons(self) -> list[CronJob]:
        """Every entry, by name, from this replica's watched copy of the cron bucket (no
        reads): its own writes at once, other replicas' within milliseconds."""
        return await self.mirror.crons()

    @guard
    async def delete_cron(self, name: str) -> CronJob | None:
        """Remove and return."""
        return await self.crons.delete(name)

    @guard
    async def update_cron(
        self, name: str, fn: Callable[[CronJob], CronJob]
    ) -> tuple[CronJob, CronJob]:
        """Compare-and-swap; of several replicas firing one tick, one swap wins."""
        return await self.crons.update(name, fn)

    # -- rate limits (the RateLimitStore capability, ojs_nats.ratelimits) -------------------

    @guard
    async def change_rate_limit(self, key: str, fn: RateLimitFn) -> KeyState | None:
        """Change ``key``'s record by compare-and-swap; the record stored afterwards."""
        return await self.rate_limits.change(key, fn)

    @guard
    async def get_rate_limit(self, key: str) -> KeyState | None:
        """``key``'s record, or ``None``."""
        return await self.rate_limits.get(key)

    @guard
    async def list_rate_limits(self) -> list[KeyState]:
        """Every key's record."""
        return await self.rate_limits.list()

    # -- tenants (TenantStore and TenantCounts, ojs_nats.tenants and stats) -----------------

    @guard
    async def change_tenant(
        self, tenant_id: str, fn: TenantFn
    ) -> tuple[TenantConfig | None, TenantConfig]:
        """Change the tenant's record by compare-and-swap."""
        return await self.tenants.change(tenant_id, fn)

    @guard
    async def get_tenant(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's record, or ``None``."""
        return await self.tenants.get(tenant_id)

    @guard
    async def list_tenants(self) -> list[TenantConfig]:
        """Every tenant's record."""
        return await self.tenants.list()

    @guard
    async def delete_tenant(self, tenant_id: str) -> TenantConfig | None:
        """Remove and return the tenant's record."""
        return await self.tenants.delete(tenant_id)

    @guard
    async def tenant_counts(self, tenant_id: str, queue: str | None = None) -> dict[JobState, int]:
        """Per-state counts of the tenant's jobs, from the counter stream."""
        return await self.counters.tenant_counts(tenant_id, queue)

    # -- worker pools (PoolStore, ojs_nats.pools) -------------------------------------------

    @guard
    async def put_pool(self, pool: PoolConfig) -> None:
        """Create or replace the pool's record."""
        await self.pools.put(pool)

    @guard
    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's record, or ``None``."""
        return await self.pools.get(name)

    @guard
    async def list_pools(self) -> list[PoolConfig]:
        """Every pool's record."""
        return await self.pools.list()

    @guard
    async def delete_pool(self, name: str) -> PoolConfig | None:
        """Remove and return the pool's record."""
        return await self.pools.delete(name)

    # -- schemas ----------------------------------------------------------------------------

    @guard
    async def put_schema(self, record: SchemaRecord) -> bool:
        """Store a schema unless its URI is taken."""
        return await self.schemas.put(record)

    @guard
    async def list_schemas(self) -> list[SchemaRecord]:
        """Every stored schema."""
        return await self.schemas.list()

    @guard
    async def delete_schema(self, uri: str) -> bool:
        """Remove a schema."""
        return await self.schemas.delete(uri)

    # -- idempotency records (the IdempotencyStore capability, ojs_nats.idempotency) -------

    @guard
    async def get_idempotency(self, key: str) -> tuple[bytes, int] | None:
        """An idempotency record and its revision, or ``None``."""
        return await self.idempotency.get(key)

    @guard
    async def put_idempotency(
        self, key: str, value: bytes, expect: int, ttl_s: float
    ) -> int | None:
        """Compare-and-swap an idempotency record, which expires ``ttl_s`` after this write."""
        return await self.idempotency.put(key, value, expect, ttl_s)

    # -- webhooks (the WebhookStore capability, ojs_nats.webhooks) ---------------------------

    @guard
    async def put_subscription(self, subscription: Subscription) -> None:
        """Create or replace a webhook subscription."""
        await self.webhooks.put_subscription(subscription)

    @guard
    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        """A webhook subscription, or ``None``."""
        return await self.webhooks.get_subscription(subscription_id)

    @guard
    async def change_subscription(
        self, subscription_id: str, fn: Callable[[Subscription], Subscription]
    ) -> Subscription | None:
        """Change a webhook subscription by compare-and-swap; ``None`` when there is none."""
        return await self.webhooks.change_subscription(subscription_id, fn)

    @guard
    async def list_subscriptions(self) -> list[Subscription]:
        """Every webhook subscription."""
        return await self.webhooks.list_subscriptions()

    @guard
    async def delete_subscription(self, subscription_id: str) -> bool:
        """Remove a webhook subscription."""
        return await self.webhooks.delete_subscription(subscription_id)

    @guard
    async def take_webhook_events(self, limit: int) -> EventBatch:
        """Events to route, each handed to one replica until acknowledged."""
        return await self.webhooks.take_webhook_events(limit)

    @guard
    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Queue webhook deliveries, each id once."""
        await self.webhooks.add_deliveries(deliveries)

    @guard
    async def claim_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        """Due webhook deliveries claimed for this replica."""
        return await self.webhooks.claim_deliveries(now, limit)

    @guard
    async def settle_delivery(self, delivery: Delivery) -> None:
        """Record a claimed delivery's outcome."""
        await self.webhooks.settle_delivery(delivery)

    @guard
    async def list_deliveries(self, subscription_id: str, limit: int) -> list[Delivery]:
        """A subscription's recent and dead deliveries."""
        return await self.webhooks.list_deliveries(subscription_id, limit)

    @guard
    async def redeliver(self, delivery: Delivery, key: str) -> bool:
        """Queue a dead delivery again (see ``WebhookStore.redeliver``)."""
        return await self.webhooks.redeliver(delivery, key)

    # -- workers and events ----------------------------------------------------------------

    @guard
    async def upsert_worker(self, fn: Callable[[WorkerInfo | None], WorkerInfo]) -> WorkerInfo:
        """Create or update a worker record by compare-and-swap."""
        key = names.hex_key(fn(None).worker_id)
        _, after, _ = await self.store.swap(names.WORKERS_BUCKET, key, WORKER, fn, "worker record")
        assert after is not None
        return after

    @guard
    async def get_worker(self, worker_id: str) -> WorkerInfo | None:
        """The record or ``None``."""
        got = await self.store.get(names.WORKERS_BUCKET, names.hex_key(worker_id))
        return WORKER.decode(got[0]) if got else None

    @guard
    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker seen."""
        keys = await self.store.keys(names.WORKERS_BUCKET)
        found = await asyncio.gather(*(self.store.get(names.WORKERS_BUCKET, k) for k in keys))
        return [WORKER.decode(got[0]) for got in found if got is not None]

    @guard
    async def delete_worker(self, worker_id: str) -> bool:
        """Forget a worker record."""
        key = names.hex_key(worker_id)
        if await self.store.get(names.WORKERS_BUCKET, key) is None:
            return False
        return await self.store.remove(names.WORKERS_BUCKET, key) is not None

    @guard
    async def publish_events(self, events: Sequence[Event]) -> None:
        """Core-NATS publish to ``ojs.events.<type>`` (the events stream keeps them a day)."""
        await self.events.publish(events)

    @guard
    async def subscribe_events(self, listener: EventListener) -> Unsubscribe:
        """Events of every replica as they are stored (:class:`~ojs_core.backend.EventFeed`):
        one shared core-NATS subscription per process."""
        return await self.feed.subscribe(listener)

    @guard
    async def read_events(self, flt: EventFilter) -> list[Event]:
        """Read the events stream from ``after`` with an ephemeral consumer."""
        return await self.events.read(flt)
