"""The :class:`Backend` protocol: the storage contract every OJS backend implements.

A backend stores records and keeps indexes consistent with them; it makes no OJS decisions.
Every rule - which transition is legal, how retries back off, when a workflow step may run -
lives in :mod:`ojs_core` and reaches the backend as a pure function ``Job -> Job`` that the
backend applies under compare-and-swap. A backend's job is therefore:

* persist jobs atomically and keep, derived from each job's current version,
  - a *ready index* of ``available`` jobs per queue, ordered by priority (higher first) then
    by the order they became available (FIFO);
  - a *timer index* of non-terminal jobs by :func:`ojs_core.lifecycle.timer_deadline`;
  - a *unique index* from ``job.unique_key`` to the job that holds the key;
* hand each ``available`` job to at most one claimer per attempt;
* store workflows, cron entries, queue flags, worker heartbeats and events.

Functions passed in (``fn``, ``activate``, ``is_conflict``) are pure and may be called more
than once when a compare-and-swap is retried; they raise :class:`~ojs_core.errors.OJSError` to
abort, in which case nothing is written. Backends raise
:class:`~ojs_core.errors.BackendUnavailableError` when their store cannot be reached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from .model import (
    Backpressure,
    CronJob,
    Event,
    Job,
    QueueInfo,
    QueueStats,
    WorkerInfo,
    Workflow,
)
from .rate_limit_rules import KeyState
from .states import JobState

if TYPE_CHECKING:
    from .pools import PoolConfig
    from .tenancy import TenantConfig

__all__ = [
    "ActivateFn",
    "AdmitFn",
    "Backend",
    "BackendHealth",
    "BatchUpdates",
    "ConflictFn",
    "EventFeed",
    "EventFilter",
    "EventListener",
    "IdempotencyStore",
    "JobArrivals",
    "JobFilter",
    "JobFn",
    "Page",
    "PoolStore",
    "QueueBounds",
    "RateLimitFn",
    "RateLimitStore",
    "TenantCounts",
    "TenantFn",
    "TenantStore",
    "UniqueConflict",
    "Unsubscribe",
    "WorkflowListing",
]

#: ``update_job``'s function: the next version of a job, or its argument itself for "no change".
JobFn = Callable[[Job], Job]
#: ``claim_jobs``'s function: the version to store for a candidate, or ``None`` to skip it.
#: It may carry an ``admit`` attribute (see :class:`RateLimitStore`) and a ``lanes`` one
#: (job versioning: ``lanes(lane) -> bool`` for ``ojs_core.versioning.lane_of(job)``; a
#: backend that keeps its ready index by lane and looks only into the lanes accepted sets the
#: class attribute ``version_lanes = True``; any other still routes correctly, skipping
#: candidates ``activate`` refuses one by one).
ActivateFn = Callable[[Job], "Job | None"]
#: ``activate.admit``: the service's rate-limit admission of candidates, awaited before
#: ``activate`` is called on them.
AdmitFn = Callable[[Sequence[Job]], Awaitable[None]]
#: :meth:`EventFeed.subscribe_events`'s listener: called with each event as it is appended.
EventListener = Callable[[Event], None]
#: Ends an :meth:`EventFeed.subscribe_events` subscription.
Unsubscribe = Callable[[], Awaitable[None]]
#: ``insert_jobs``'s predicate: whether the holder (second) of a unique key blocks the new job.
ConflictFn = Callable[[Job, Job], bool]


@attrs.frozen
class UniqueConflict:
    """Job ``index`` of an insert collides with ``existing``, which holds the same unique key."""

    index: int
    existing: Job


@attrs.frozen
class Page:
    """One page of a listing and the total number of matches."""

    items: list[Job]
    total: int


@attrs.frozen(kw_only=True)
class JobFilter:
    """Selects jobs for a listing, newest first; ``None`` means any. ``type`` is exact."""

    state: str | None = None
    queue: str | None = None
    type: str | None = None
    dead_letter: bool | None = None
    limit: int = 50
    offset: int = 0


@attrs.frozen(kw_only=True)
class EventFilter:
    """Selects events: after sequence ``after``, of the listed types/queues, at most ``limit``."""

    after: int = 0
    types: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    job_id: str | None = None
    limit: int = 100


@attrs.frozen(kw_only=True)
class BackendHealth:
    """Whether the store is reachable, and how long a round trip took."""

    ok: bool
    name: str
    latency_ms: float = 0.0
    error: str | None = None
    details: dict[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Backend(Protocol):
    """Storage for OJS jobs, workflows, cron entries, queues, workers and events."""

    name: str

    async def open(self) -> None:
        """Connect and create what the store needs; idempotent."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent. Data stays (unless the store is volatile)."""
        ...

    async def health(self) -> BackendHealth:
        """Probe the store without changing it."""
        ...

    async def reset(self) -> None:
        """Delete everything: jobs, workflows, cron, queues, workers, events. For tests only."""
        ...

    # -- jobs ---------------------------------------------------------------------------

    async def insert_jobs(
        self, jobs: Sequence[Job], is_conflict: ConflictFn | None = None
    ) -> list[UniqueConflict]:
        """Insert all ``jobs`` atomically, or none of them.

        For each job with a ``unique_key``, the current holder of that key (including an
        earlier job of the same batch) is passed to ``is_conflict(new, holder)``; if any call is
        true, nothing is written and the conflicts are returned. Otherwise every job is written,
        indexed, and becomes the holder of its key, and ``[]`` is returned. Raises
        :class:`~ojs_core.errors.DuplicateJobError` if a job id exists already (nothing written).
        """
        ...

    async def get_job(self, job_id: str) -> Job | None:
        """The current version of a job, or ``None``."""
        ...

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs at once, in the order asked (``None`` for unknown ids)."""
        ...

    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        """Apply ``fn`` to the current version and store the result if nothing changed meanwhile.

        On a concurrent change, re-read and re-apply. Returns ``(before, after)``: ``before`` is
        the version read, ``after`` the version stored. Raises
        :class:`~ojs_core.errors.NotFoundError` for an unknown id and whatever ``fn`` raises
        (nothing is written then).

        *Identity is the "no change" signal.* ``fn`` returns either its argument itself,
        meaning "no change" - nothing is written and ``(before, before)`` is returned - or a
        new :class:`~ojs_core.model.Job` (core's functions build it with ``attrs.evolve``),
        which is stored, indexes and all. Callers (and :class:`~ojs_core.service.JobService`)
        test ``after is before`` to learn whether anything was written. ``Job`` is a mutable
        class, so two rules keep that signal honest (the contract kit checks both):

        * ``fn`` gets a job the backend does not keep - a freshly decoded record, or a copy
          (``attrs.evolve(stored)``) of the object it holds, never that object or a cached
          one. An attribute that a (faulty) ``fn`` sets on its argument then never reaches the
          store behind the indexes' back: returned, the argument still means "no change".
        * The backend never applies a result by changing a job in place: ``before`` stays
          equal to the version read, and ``after is not before`` whenever something was
          written.

        ``fn`` itself must not mutate its argument nor the containers (``args``, ``meta``,
        ``errors``) it shares with it: versions share them, so no copy would protect them.
        """
        ...

    async def claim_jobs(
        self, queues: Sequence[str], count: int, activate: ActivateFn
    ) -> list[Job]:
        """Take up to ``count`` jobs off the ready index of ``queues``.

        Queues are tried left to right and paused queues skipped; within a queue, higher
        priority first, then FIFO. For each candidate, ``activate(job)`` returns the version to
        store: an ``active`` job (claimed), another state (for instance ``discarded`` when it
        expired: stored, but not counted), or ``None`` (leave it where it is and look further).
        Returns every version stored, in claim order. Exclusive: no job is stored as ``active``
        by two concurrent claims.
        """
        ...

    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Ids of up to ``limit`` jobs whose timer deadline is ``<= now``, earliest first.

        A returned id stays due until an update moves its deadline; callers apply
        :func:`ojs_core.lifecycle.on_timer` through :meth:`update_job`.
        """
        ...

    async def list_jobs(self, flt: JobFilter) -> Page:
        """Jobs matching ``flt`` (newest first), for the dead-letter and admin listings."""
        ...

    async def delete_job(
        self, job_id: str, *, only_if: Callable[[Job], bool] | None = None
    ) -> bool:
        """Remove a job with everything that points at it (index entries, its unique-key
        holder, its dead-letter marker), atomically with the check ``only_if`` (when given)
        on the current version: ``False`` if the job does not exist or the check fails, and
        then nothing is removed. Retention relies on the check: a job changed since it was
        read (a dead-letter retry) must survive. A removed job's id may be used again."""
        ...

    # -- queues ---------------------------------------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue that has held a job or been paused, plus ``default``."""
        ...

    async def set_queue_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Pause or resume a queue (creating its record); paused queues are never claimed from."""
        ...

    async def queue_stats(self, queue: str) -> QueueStats:
        """Per-state counts of one queue, without scanning jobs where the store allows."""
        ...

    # -- workflows ------------------------------------------------------------------------

    async def insert_workflow(self, workflow: Workflow, jobs: Sequence[Job]) -> None:
        """Write the workflow record and all its jobs atomically."""
        ...

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """A workflow record, or ``None``."""
        ...

    async def delete_workflow(self, workflow_id: str) -> bool:
        """Remove a workflow record (its jobs are removed on their own); ``False`` if it did
        not exist."""
        ...

    async def update_workflow(
        self, workflow_id: str, fn: Callable[[Workflow], Workflow]
    ) -> tuple[Workflow, Workflow]:
        """Compare-and-swap a workflow record, as :meth:`update_job` does for jobs."""
        ...

    # -- cron -----------------------------------------------------------------------------

    async def put_cron(self, cron: CronJob) -> bool:
        """Create or replace a cron entry; ``True`` if it was new."""
        ...

    async def get_cron(self, name: str) -> CronJob | None:
        """A cron entry, or ``None``."""
        ...

    async def list_crons(self) -> list[CronJob]:
        """Every cron entry, by name."""
        ...

    async def delete_cron(self, name: str) -> CronJob | None:
        """Remove and return a cron entry (``None`` if unknown)."""
        ...

    async def update_cron(
        self, name: str, fn: Callable[[CronJob], CronJob]
    ) -> tuple[CronJob, CronJob]:
        """Compare-and-swap a cron entry; the winner of a tick is the one whose swap succeeds."""
        ...

    # -- workers and events ---------------------------------------------------------------

    async def upsert_worker(self, fn: Callable[[WorkerInfo | None], WorkerInfo]) -> WorkerInfo:
        """Create or update a worker record (last seen, directive) from the function's result."""
        ...

    async def get_worker(self, worker_id: str) -> WorkerInfo | None:
        """A worker record, or ``None``."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """Every known worker."""
        ...

    async def delete_worker(self, worker_id: str) -> bool:
        """Forget a worker record; ``False`` if there was none."""
        ...

    async def publish_events(self, events: Sequence[Event]) -> None:
        """Append events; delivery is at least once, ordered per job. Never blocks a transition
        for long: a backend may buffer."""
        ...

    async def read_events(self, flt: EventFilter) -> list[Event]:
        """Recent events matching ``flt``, oldest first, each with its sequence number."""
        ...


@runtime_checkable
class JobArrivals(Protocol):
    """Optional capability: wake-ups when jobs may have become available, across processes.

    A backend shared by several processes (NATS) implements it so that a long-polling fetch
    hears of a job another process enqueued (or a timer promoted) at once instead of at its next
    poll. :class:`~ojs_core.service.JobService` takes a mark, tries to claim, and if nothing was
    there waits for an arrival after the mark (or the timeout); it still polls now and then, so a
    lost wake-up costs latency, never a job. Backends without it are polled.
    """

    async def arrivals_mark(self, queues: Sequence[str]) -> int:
        """A number that changes whenever a job may have become available in ``queues``
        (from the moment this returns)."""
        ...

    async def wait_for_arrivals(self, queues: Sequence[str], mark: int, timeout_s: float) -> None:
        """Return once :meth:`arrivals_mark` of ``queues`` differs from ``mark``, or after
        ``timeout_s``."""
        ...


@runtime_checkable
class BatchUpdates(Protocol):
    """Optional capability: many jobs' compare-and-swaps written together (a batch of acks).

    Each item is decided and stored on its own, as :meth:`Backend.update_job` would (one
    refused item never affects another); a backend implements it where writing them side by
    side is cheaper than one call each (NATS pipelines the index entries of all, then the
    records of all). Without it the service calls ``update_job`` per item.
    """

    async def update_jobs(
        self, items: Sequence[tuple[str, JobFn]]
    ) -> list[tuple[Job, Job] | BaseException]:
        """Per ``(job_id, fn)`` item, in order, what :meth:`Backend.update_job` would return
        for it, or the exception it would raise."""
        ...


@runtime_checkable
class EventFeed(Protocol):
    """Optional capability: events as they are appended to the log, from every process.

    A backend shared by several processes (NATS) implements it so that a server process hears
    the events of jobs that other processes moved, without polling the log; the HTTP binding
    holds *one* subscription per process and fans it out to its streaming clients
    (``ojs_core.fanout``). Backends without it are polled with :meth:`Backend.read_events`.

    Contract: ``listener`` is called on the event loop (never concurrently with itself) with
    each event appended after ``subscribe_events`` returned, by any process, with its ``seq``
    (the same number :meth:`Backend.read_events` gives it), in increasing ``seq``. Delivery
    is at most once and may skip events (a reconnect, a slow subscriber): a listener that sees
    ``seq`` jump reads the skipped ones from the log. A ``seq`` lower than one already seen
    means the log restarted (:meth:`Backend.reset`). ``listener`` must not block: it should
    only queue the event.
    """

    async def subscribe_events(self, listener: EventListener) -> Unsubscribe:
        """Start calling ``listener``; returns the coroutine function that stops it."""
        ...


@runtime_checkable
class WorkflowListing(Protocol):
    """Optional capability: workflows newest first, for the admin API and the dashboard.

    Without it, the admin API answers 501 for the workflow listing; a workflow is still found
    by its id.
    """

    async def list_workflows(self, limit: int, offset: int) -> tuple[list[Workflow], int]:
        """A page of workflow records, newest first, and how many there are in all."""
        ...


#: A change of one rate-limit key's state: the new state (``None`` or the state itself: no
#: change). Pure: a store may call it again after losing a compare-and-swap.
RateLimitFn = Callable[["KeyState | None"], "KeyState | None"]


@runtime_checkable
class RateLimitStore(Protocol):
    """Optional capability: rate-limit keys stored for every process sharing the store (the
    rate-limiting extension, :mod:`ojs_core.rate_limit_rules`).

    A backend with it also honours ``activate.admit`` in :meth:`Backend.claim_jobs`: the
    service's admission, awaited with the rate-limited candidates before ``activate`` is
    called on them, so a start is admitted by the shared state (one compare-and-swap per key
    and batch) before the claim that uses it. Without the capability, limits are counted per
    process.
    """

    async def change_rate_limit(self, key: str, fn: RateLimitFn) -> KeyState | None:
        """Apply ``fn`` to ``key``'s state atomically (compare-and-swap, re-applied on
        contention); the state stored afterwards."""
        ...

    async def get_rate_limit(self, key: str) -> KeyState | None:
        """``key``'s state, or ``None``."""
        ...

    async def list_rate_limits(self) -> list[KeyState]:
        """Every key's state."""
        ...


@runtime_checkable
class QueueBounds(Protocol):
    """Optional capability: per-queue bounds (the backpressure extension).

    The bound is stored with the queue's other flags, so it holds for every process sharing
    the store. :class:`~ojs_core.service.JobService` asks for it on every enqueue, so
    :meth:`get_backpressure` must be cheap (a watched copy, as for pause flags, never a round
    trip per call). The depth is read with :meth:`Backend.queue_stats`. Without the capability
    queues are unbounded and the admin API answers 422 ``unsupported`` to a bound.
    """

    async def get_backpressure(self, queue: str) -> Backpressure | None:
        """The queue's bound, or ``None`` when it has none."""
        ...

    async def set_backpressure(self, queue: str, bound: Backpressure | None) -> None:
        """Store (``None``: remove) the queue's bound, creating the queue's record."""
        ...


@runtime_checkable
class IdempotencyStore(Protocol):
    """Optional capability: small records by key that expire (idempotency keys of the
    bulk-operations extension, ``ojs_core.bulk``).

    Values are opaque bytes (the core encodes them); a record holds for at least ``ttl_s``
    seconds after its last write, then is gone (a later read is ``None`` and a write
    expecting revision 0 creates it again). Writes are compare-and-swap on a revision, so
    every process sharing the store agrees on who reserved a key. Without the capability the
    HTTP binding answers 422 ``unsupported`` to a request that carries an idempotency key.
    """

    async def get_idempotency(self, key: str) -> tuple[bytes, int] | None:
        """The record of ``key`` and its revision (> 0), or ``None`` (never written, or
        expired)."""
        ...

    async def put_idempotency(
        self, key: str, value: bytes, expect: int, ttl_s: float
    ) -> int | None:
        """Store ``value`` under ``key`` if its revision is still ``expect`` (0: no record);
        the new revision, or ``None`` when another write came first (nothing stored)."""
        ...


#: A change of one tenant's configuration: the new record. Pure (re-applied on contention).
TenantFn = Callable[["TenantConfig | None"], "TenantConfig"]


@runtime_checkable
class TenantStore(Protocol):
    """Optional capability: tenant configurations (the multi-tenancy extension,
    :mod:`ojs_core.tenancy`), stored for every process sharing the store. Without it the
    tenant admin API answers 422 ``unsupported`` and no tenant has limits."""

    async def change_tenant(
        self, tenant_id: str, fn: TenantFn
    ) -> tuple[TenantConfig | None, TenantConfig]:
        """Apply ``fn`` to the tenant's record by compare-and-swap; ``(before, after)``."""
        ...

    async def get_tenant(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's record, or ``None``."""
        ...

    async def list_tenants(self) -> list[TenantConfig]:
        """Every tenant's record."""
        ...

    async def delete_tenant(self, tenant_id: str) -> TenantConfig | None:
        """Remove and return the tenant's record (``None``: there was none)."""
        ...


@runtime_checkable
class PoolStore(Protocol):
    """Optional capability: worker pool definitions (the fair-scheduling extension,
    :mod:`ojs_core.pools`), stored for every process sharing the store. Without it the pool
    admin API answers 422 ``unsupported`` and the manifest does not declare the extension."""

    async def put_pool(self, pool: PoolConfig) -> None:
        """Create or replace the pool's definition (last writer wins)."""
        ...

    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's definition, or ``None``."""
        ...

    async def list_pools(self) -> list[PoolConfig]:
        """Every pool's definition."""
        ...

    async def delete_pool(self, name: str) -> PoolConfig | None:
        """Remove and return the pool's definition (``None``: there was none)."""
        ...


@runtime_checkable
class TenantCounts(Protocol):
    """Optional capability: per-state counts of the jobs of each tenant (jobs whose
    ``meta.tenant_id`` is set), kept with the per-queue counters, never a scan.

    A backend with it also keeps the ready index sharded by tenant and honours
    ``activate.dispatch`` (an :class:`ojs_core.fairness.Dispatch`) in
    :meth:`Backend.claim_jobs`: only the shards the dispatch allows are claimed from, and
    within a priority level the shards are served in the order of ``dispatch.grants``."""

    async def tenant_counts(self, tenant_id: str, queue: str | None = None) -> dict[JobState, int]:
        """Per-state counts of the tenant's jobs (in ``queue``, or in all queues)."""
        ...
