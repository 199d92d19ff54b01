"""The in-memory reference backend: complete, exact and fast, but not durable.

Every operation runs without an ``await`` between its reads and its writes, so on one event loop
it is atomic without locks; that makes this the model implementation of the
:class:`~ojs_core.backend.Backend` contract that other backends are compared with, and the fake
that tests use.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import datetime

import attrs

from ojs_core.backend import (
    ActivateFn,
    AdmitFn,
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
from ojs_core.errors import DuplicateJobError, NotFoundError
from ojs_core.events import event_type_matches
from ojs_core.fairness import Dispatch
from ojs_core.lifecycle import timer_deadline
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
from ojs_core.rate_limiting import LocalRateLimits
from ojs_core.schema_registry import SchemaRecord
from ojs_core.states import JobState
from ojs_core.tenancy import TenantConfig, shard_of
from ojs_core.versioning import lane_of

from .webhooks import MemoryWebhooks

__all__ = ["MemoryBackend"]

log = logging.getLogger("ojs.memory")

S = JobState
_ReadyKey = tuple[int, int, str]
#: A ready heap's tenant shard (``""``: no tenant) and version lane (``None``: unversioned).
_Lane = tuple[str, str | None]
_TimerKey = tuple[datetime, int, str]
#: How many rate-limited candidates one claim looks past in a queue before giving up on it.
_MAX_SKIPS = 256
#: Idempotency records held before a write sweeps out the expired ones.
_IDEMPOTENCY_SWEEP = 4096


class MemoryBackend(MemoryWebhooks):
    """All state in dicts and heaps of one process; ``max_events`` bounds the event log."""

    name = "memory"
    #: The ready index is kept by version lane (see ``ActivateFn`` in ``ojs_core.backend``).
    version_lanes = True

    def __init__(self, *, max_events: int = 100_000) -> None:
        self.max_events = max_events
        self._seq = itertools.count(1)
        #: :meth:`subscribe_events` listeners; they outlive a reset, as subscribers of a
        #: shared store would.
        self._listeners: list[EventListener] = []
        #: Revisions of idempotency records: never reused, not even across a reset.
        self._idem_revisions = itertools.count(1)
        self._clear()

    def _clear(self) -> None:
        self._jobs: dict[str, Job] = {}
        #: Ready heaps by queue, then by tenant shard (``""``: jobs without a tenant) and
        #: version lane (``None``: unversioned jobs).
        self._ready: dict[str, dict[_Lane, list[_ReadyKey]]] = {}
        self._ready_key: dict[str, _ReadyKey] = {}
        self._timers: list[_TimerKey] = []
        self._timer_key: dict[str, datetime] = {}
        self._unique: dict[str, str] = {}
        self._queues: dict[str, QueueInfo] = {"default": QueueInfo(name="default")}
        self._bounds: dict[str, Backpressure] = {}
        self._counts: dict[str, Counter[JobState]] = {}
        #: Per-state counts of tagged jobs: (tenant, queue) -> counts.
        self._tcounts: dict[tuple[str, str], Counter[JobState]] = {}
        self._tenants: dict[str, TenantConfig] = {}
        #: Worker pool definitions (PoolStore, fair scheduling).
        self._pools: dict[str, PoolConfig] = {}
        self._dead: dict[str, None] = {}
        self._workflows: dict[str, Workflow] = {}
        self._schemas: dict[str, SchemaRecord] = {}
        self._crons: dict[str, CronJob] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._events: deque[Event] = deque(maxlen=self.max_events)
        self._event_seq = 0
        self._rate_limits = LocalRateLimits()
        #: Idempotency records: value, revision and when they expire (``time.monotonic``).
        self._idempotency: dict[str, tuple[bytes, int, float]] = {}
        self._clear_webhooks()

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    async def health(self) -> BackendHealth:
        """Always healthy."""
        return BackendHealth(ok=True, name=self.name, details={"jobs": len(self._jobs)})

    async def reset(self) -> None:
        """Drop everything."""
        self._clear()

    # -- rate limits (RateLimitStore) -----------------------------------------------------

    async def change_rate_limit(self, key: str, fn: RateLimitFn) -> KeyState | None:
        """Apply ``fn`` to ``key``'s state (nothing interleaves in one process)."""
        return self._rate_limits.change(key, fn)

    async def get_rate_limit(self, key: str) -> KeyState | None:
        """``key``'s state, or ``None``."""
        return await self._rate_limits.get_rate_limit(key)

    async def list_rate_limits(self) -> list[KeyState]:
        """Every key's state."""
        return await self._rate_limits.list_rate_limits()

    # -- the one write path for jobs ------------------------------------------------------

    def _store(self, old: Job | None, new: Job) -> None:
        jid = new.id
        self._jobs[jid] = new
        if old is None or old.queue != new.queue or old.state is not new.state:
            if old is not None:
                self._counts[old.queue][old.state] -= 1
            self._counts.setdefault(new.queue, Counter())[new.state] += 1
            if new.queue not in self._queues:
                self._queues[new.queue] = QueueInfo(name=new.queue, created_at=new.created_at)
        if "tenant_id" in new.meta or (old is not None and "tenant_id" in old.meta):
            self._count_tenant(old, new)
        if new.state is S.AVAILABLE:
            if old is None or old.state is not S.AVAILABLE or jid not in self._ready_key:
                key = (-new.priority, next(self._seq), jid)
                self._ready_key[jid] = key
                lanes = self._ready.setdefault(new.queue, {})
                heapq.heappush(lanes.setdefault((shard_of(new), lane_of(new)), []), key)
        else:
            self._ready_key.pop(jid, None)
        deadline = timer_deadline(new)
        if deadline is None:
            self._timer_key.pop(jid, None)
        elif self._timer_key.get(jid) != deadline:
            self._timer_key[jid] = deadline
            heapq.heappush(self._timers, (deadline, next(self._seq), jid))
        if new.dead_letter and new.state is S.DISCARDED:
            self._dead[jid] = None
        else:
            self._dead.pop(jid, None)

    # -- jobs -----------------------------------------------------------------------------

    async def insert_jobs(
        self, jobs: Sequence[Job], is_conflict: ConflictFn | None = None
    ) -> list[UniqueConflict]:
        """Insert all or nothing; see :meth:`ojs_core.backend.Backend.insert_jobs`."""
        seen: set[str] = set()
        for job in jobs:
            if job.id in self._jobs or job.id in seen:
                raise DuplicateJobError(
                    f"A job with id '{job.id}' already exists", details={"job_id": job.id}
                )
            seen.add(job.id)
        conflicts: list[UniqueConflict] = []
        holders: dict[str, Job] = {}
        for i, job in enumerate(jobs):
            key = job.unique_key
            if key is None:
                continue
            holder = holders.get(key)
            if holder is None and key in self._unique:
                holder = self._jobs.get(self._unique[key])
            if holder is not None and is_conflict is not None and is_conflict(job, holder):
                conflicts.append(UniqueConflict(index=i, existing=holder))
            holders[key] = job
        if conflicts:
            return conflicts
        for job in jobs:
            self._store(None, job)
            if job.unique_key is not None:
                self._unique[job.unique_key] = job.id
        return []

    async def get_job(self, job_id: str) -> Job | None:
        """The job or ``None``."""
        return self._jobs.get(job_id)

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Jobs in the order asked."""
        return [self._jobs.get(j) for j in job_ids]

    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        """Apply ``fn`` atomically (no concurrent writer can interleave on one event loop).

        ``fn`` gets a copy, never the stored object: see the protocol.
        """
        old = self._jobs.get(job_id)
        if old is None:
            raise NotFoundError("job", job_id)
        mine = attrs.evolve(old)
        new = fn(mine)
        if new is mine:
            return old, old
        self._store(old, new)
        return old, new

    def _count_tenant(self, old: Job | None, new: Job | None) -> None:
        if old is not None and shard_of(old):
            self._tcounts[(shard_of(old), old.queue)][old.state] -= 1
        if new is not None and shard_of(new):
            self._tcounts.setdefault((shard_of(new), new.queue), Counter())[new.state] += 1

    async def claim_jobs(
        self, queues: Sequence[str], count: int, activate: ActivateFn
    ) -> list[Job]:
        """Pop from each queue's ready heaps, left to right; see the protocol.

        Only the heaps the fetch may take from are looked at: the tenant shards
        ``activate.dispatch`` allows and the version lanes ``activate.lanes`` accepts, so a
        fetch never pops (and so never delays) another tenant's or another version's jobs.
        Across them, the highest priority first; shards tied at it are served in the
        dispatch's (weighted round-robin) order; within a shard, FIFO across its lanes."""
        admit: AdmitFn | None = getattr(activate, "admit", None)
        limited: Callable[[Job], bool] | None = getattr(activate, "limited", None)
        dispatch: Dispatch | None = getattr(activate, "dispatch", None)
        lanes_ok: Callable[[str], bool] | None = getattr(activate, "lanes", None)
        out: list[Job] = []
        claimed = 0
        for queue in dict.fromkeys(queues):
            info = self._queues.get(queue)
            if info is not None and info.paused:
                continue
            heaps = {
                lane: heap
                for lane, heap in self._ready.get(queue, {}).items()
                if (dispatch is None or dispatch.allows(lane[0]))
                and (lane[1] is None or lanes_ok is None or lanes_ok(lane[1]))
            }
            skipped: list[tuple[list[_ReadyKey], _ReadyKey]] = []
            while claimed < count and len(skipped) < _MAX_SKIPS:
                heap = self._next_heap(queue, heaps, dispatch)
                if heap is None:
                    break
                key = heapq.heappop(heap)
                job = self._jobs[key[2]]
                if admit is not None and (
                    job.rate_limit is not None or (limited is not None and limited(job))
                ):
                    await admit([job])  # never suspends here: the store is this process's
                new = activate(job)
                if new is None:
                    skipped.append((heap, key))
                    continue
                self._store(job, new)
                out.append(new)
                if new.state is S.ACTIVE:
                    claimed += 1
            for heap, key in skipped:
                heapq.heappush(heap, key)
            if claimed >= count:
                break
        return out

    def _next_heap(
        self, queue: str, heaps: dict[_Lane, list[_ReadyKey]], dispatch: Dispatch | None
    ) -> list[_ReadyKey] | None:
        """The heap to pop next: of the highest priority at the heads; when several shards
        have a job of it, the shard the dispatch serves next; in it, the oldest head."""
        heads: dict[_Lane, _ReadyKey] = {}
        for lane, heap in heaps.items():
            while heap and self._ready_key.get(heap[0][2]) != heap[0]:
                heapq.heappop(heap)  # stale entry: the job left 'available' or was re-queued
            if heap:
                heads[lane] = heap[0]
        if not heads:
            return None
        top = min(k[0] for k in heads.values())
        tied = {lane: k for lane, k in heads.items() if k[0] == top}
        shards = sorted({lane[0] for lane in tied})
        if len(shards) > 1 and dispatch is not None:
            shard = dispatch.grants((queue, -top), shards, 1)[0][0]
            tied = {lane: k for lane, k in tied.items() if lane[0] == shard}
        return heaps[min(tied, key=lambda lane: tied[lane])]

    # -- tenants (TenantStore, TenantCounts) ----------------------------------------------

    async def change_tenant(
        self, tenant_id: str, fn: TenantFn
    ) -> tuple[TenantConfig | None, TenantConfig]:
        """Apply ``fn`` to the tenant's record."""
        before = self._tenants.get(tenant_id)
        after = self._tenants[tenant_id] = fn(before)
        return before, after

    async def get_tenant(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's record, or ``None``."""
        return self._tenants.get(tenant_id)

    async def list_tenants(self) -> list[TenantConfig]:
        """Every tenant's record."""
        return list(self._tenants.values())

    async def delete_tenant(self, tenant_id: str) -> TenantConfig | None:
        """Remove and return the tenant's record."""
        return self._tenants.pop(tenant_id, None)

    # -- worker pools (PoolStore) ----------------------------------------------------------

    async def put_pool(self, pool: PoolConfig) -> None:
        """Create or replace the pool's definition."""
        self._pools[pool.name] = pool

    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's definition, or ``None``."""
        return self._pools.get(name)

    async def list_pools(self) -> list[PoolConfig]:
        """Every pool's definition."""
        return list(self._pools.values())

    async def delete_pool(self, name: str) -> PoolConfig | None:
        """Remove and return the pool's definition."""
        return self._pools.pop(name, None)

    async def tenant_counts(self, tenant_id: str, queue: str | None = None) -> dict[JobState, int]:
        """Per-state counts of the tenant's jobs."""
        total: Counter[JobState] = Counter()
        for (tenant, q), counts in self._tcounts.items():
            if tenant == tenant_id and (queue is None or q == queue):
                total.update(counts)
        return {s: max(0, total.get(s, 0)) for s in JobState}

    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Ids whose timer deadline has passed, earliest first (entries stay until re-timed)."""
        due: list[_TimerKey] = []
        while self._timers and self._timers[0][0] <= now and len(due) < limit:
            entry = heapq.heappop(self._timers)
            if self._timer_key.get(entry[2]) == entry[0]:
                due.append(entry)
        for entry in due:
            heapq.heappush(self._timers, entry)
        return [e[2] for e in due]

    async def list_jobs(self, flt: JobFilter) -> Page:
        """Filter jobs; the dead-letter listing uses its own index."""
        source = (
            (self._jobs[j] for j in self._dead) if flt.dead_letter else iter(self._jobs.values())
        )
        matches = [
            j
            for j in source
            if (flt.state is None or j.state.value == flt.state)
            and (flt.queue is None or j.queue == flt.queue)
            and (flt.type is None or j.type == flt.type)
            and (flt.dead_letter is None or j.dead_letter == flt.dead_letter)
        ]
        matches.reverse()
        return Page(items=matches[flt.offset : flt.offset + flt.limit], total=len(matches))

    async def delete_job(
        self, job_id: str, *, only_if: Callable[[Job], bool] | None = None
    ) -> bool:
        """Remove a job and every index entry pointing at it (if ``only_if`` allows)."""
        job = self._jobs.get(job_id)
        if job is None or (only_if is not None and not only_if(job)):
            return False
        del self._jobs[job_id]
        self._counts[job.queue][job.state] -= 1
        if "tenant_id" in job.meta:
            self._count_tenant(job, None)
        self._ready_key.pop(job_id, None)
        self._timer_key.pop(job_id, None)
        self._dead.pop(job_id, None)
        if job.unique_key is not None and self._unique.get(job.unique_key) == job_id:
            del self._unique[job.unique_key]
        return True

    # -- queues ---------------------------------------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        """Queues in name order."""
        return [self._queues[k] for k in sorted(self._queues)]

    async def set_queue_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Flip the paused flag, creating the queue record if needed."""
        info = self._queues.get(queue) or QueueInfo(name=queue)
        info = QueueInfo(name=queue, paused=paused, created_at=info.created_at)
        self._queues[queue] = info
        return info

    async def get_backpressure(self, queue: str) -> Backpressure | None:
        """The queue's bound (the :class:`~ojs_core.backend.QueueBounds` capability)."""
        return self._bounds.get(queue)

    async def set_backpressure(self, queue: str, bound: Backpressure | None) -> None:
        """Store or remove the queue's bound; the queue is listed from then on."""
        if queue not in self._queues:
            self._queues[queue] = QueueInfo(name=queue)
        if bound is None:
            self._bounds.pop(queue, None)
        else:
            self._bounds[queue] = bound

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts kept incrementally by :meth:`_store`: no scan."""
        counts = self._counts.get(queue, Counter())
        info = self._queues.get(queue)
        return QueueStats(
            name=queue,
            paused=bool(info and info.paused),
            counts={s: max(counts.get(s, 0), 0) for s in S},
        )

    # -- workflows ------------------------------------------------------------------------

    async def insert_workflow(self, workflow: Workflow, jobs: Sequence[Job]) -> None:
        """Store the record and its jobs in one step."""
        for job in jobs:
            if job.id in self._jobs:
                raise DuplicateJobError(f"A job with id '{job.id}' already exists")
        self._workflows[workflow.id] = workflow
        for job in jobs:
            self._store(None, job)

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The record or ``None``."""
        return self._workflows.get(workflow_id)

    async def put_schema(self, record: SchemaRecord) -> bool:
        """Store a schema unless its URI is taken."""
        if record.uri in self._schemas:
            return False
        self._schemas[record.uri] = record
        return True

    async def list_schemas(self) -> list[SchemaRecord]:
        """Every schema, in registration order."""
        return list(self._schemas.values())

    async def delete_schema(self, uri: str) -> bool:
        """Forget a schema."""
        return self._schemas.pop(uri, None) is not None

    # -- idempotency records ------------------------------------------------------------

    def _idempotency_record(self, key: str) -> tuple[bytes, int, float] | None:
        record = self._idempotency.get(key)
        if record is not None and record[2] <= time.monotonic():
            del self._idempotency[key]
            return None
        return record

    async def get_idempotency(self, key: str) -> tuple[bytes, int] | None:
        """The live record of ``key`` and its revision, or ``None``."""
        record = self._idempotency_record(key)
        return None if record is None else (record[0], record[1])

    async def put_idempotency(
        self, key: str, value: bytes, expect: int, ttl_s: float
    ) -> int | None:
        """Compare-and-swap on the revision (0: no live record); expired records are swept
        once the store holds many."""
        record = self._idempotency_record(key)
        if (0 if record is None else record[1]) != expect:
            return None
        now = time.monotonic()
        if len(self._idempotency) >= _IDEMPOTENCY_SWEEP:
            for stale in [k for k, r in self._idempotency.items() if r[2] <= now]:
                del self._idempotency[stale]
        revision = next(self._idem_revisions)
        self._idempotency[key] = (value, revision, now + ttl_s)
        return revision

    async def list_workflows(self, limit: int, offset: int) -> tuple[list[Workflow], int]:
        """Newest first (insertion order, reversed)."""
        newest = list(reversed(self._workflows.values()))
        return newest[offset : offset + limit], len(newest)

    async def delete_workflow(self, workflow_id: str) -> bool:
        """Forget a workflow record."""
        return self._workflows.pop(workflow_id, None) is not None

    async def update_workflow(
        self, workflow_id: str, fn: Callable[[Workflow], Workflow]
    ) -> tuple[Workflow, Workflow]:
        """Apply ``fn`` atomically."""
        old = self._workflows.get(workflow_id)
        if old is None:
            raise NotFoundError("workflow", workflow_id)
        new = fn(old)
        self._workflows[workflow_id] = new
        return old, new

    # -- cron -----------------------------------------------------------------------------

    async def put_cron(self, cron: CronJob) -> bool:
        """Upsert."""
        created = cron.name not in self._crons
        self._crons[cron.name] = cron
        return created

    async def get_cron(self, name: str) -> CronJob | None:
        """The entry or ``None``."""
        return self._crons.get(name)

    async def list_crons(self) -> list[CronJob]:
        """Entries by name."""
        return [self._crons[k] for k in sorted(self._crons)]

    async def delete_cron(self, name: str) -> CronJob | None:
        """Remove and return."""
        return self._crons.pop(name, None)

    async def update_cron(
        self, name: str, fn: Callable[[CronJob], CronJob]
    ) -> tuple[CronJob, CronJob]:
        """Apply ``fn`` atomically."""
        old = self._crons.get(name)
        if old is None:
            raise NotFoundError("cron job", name)
        new = fn(old)
        self._crons[name] = new
        return old, new

    # -- workers and events ---------------------------------------------------------------

    async def upsert_worker(self, fn: Callable[[WorkerInfo | None], WorkerInfo]) -> WorkerInfo:
        """Create or update from ``fn``'s result."""
        probe = fn(None)
        current = self._workers.get(probe.worker_id)
        info = probe if current is None else fn(current)
        self._workers[info.worker_id] = info
        return info

    async def get_worker(self, worker_id: str) -> WorkerInfo | None:
        """The record or ``None``."""
        return self._workers.get(worker_id)

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker seen."""
        return list(self._workers.values())

    async def delete_worker(self, worker_id: str) -> bool:
        """Forget a worker record."""
        return self._workers.pop(worker_id, None) is not None

    async def publish_events(self, events: Sequence[Event]) -> None:
        """Append to the bounded log, numbering each event."""
        from attrs import evolve

        for event in events:
            self._event_seq += 1
            numbered = evolve(event, seq=self._event_seq)
            self._events.append(numbered)
            self._webhook_intake(numbered)
            for listener in tuple(self._listeners):
                try:
                    listener(numbered)
                except Exception:  # a listener's bug must not fail the transition
                    log.exception("event listener failed")

    async def subscribe_events(self, listener: EventListener) -> Unsubscribe:
        """Call ``listener`` with every event published from now on (the
        :class:`~ojs_core.backend.EventFeed` capability, within this process)."""
        self._listeners.append(listener)

        async def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def read_events(self, flt: EventFilter) -> list[Event]:
        """Matching events after ``flt.after``, oldest first."""
        out: list[Event] = []
        # Sequence numbers in the log are dense: skip straight to the first one after ``after``.
        start = max(0, flt.after - self._events[0].seq + 1) if self._events else 0
        for event in itertools.islice(self._events, start, None):
            if event.seq <= flt.after:
                continue
            if flt.types and not any(event_type_matches(p, event.type) for p in flt.types):
                continue
            if flt.queues and event.data.get("queue") not in flt.queues:
                continue
            if flt.job_id and event.data.get("job_id") != flt.job_id:
                continue
            out.append(event)
            if len(out) >= flt.limit:
                break
        return out
