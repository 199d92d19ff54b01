"""The OJS operations, written once over any :class:`~ojs_core.backend.Backend`.

:class:`JobService` is what the HTTP binding and the in-process client call. It parses and
validates input, turns each operation into pure transitions from :mod:`ojs_core.lifecycle`
applied by the backend under compare-and-swap, then does the follow-up work every backend
shares: events, unique-key conflicts, workflow advancement, cron ticks and timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from . import lifecycle
from .activity import QueueActivity
from .backend import (
    Backend,
    BatchUpdates,
    EventFilter,
    JobArrivals,
    JobFilter,
    JobFn,
    Page,
    QueueBounds,
)
from .backpressure import Gate, parse_backpressure
from .bulk import BulkOperations
from .claiming import ClaimArgs, Claiming
from .clock import Clock, SystemClock
from .cron_entries import CronEntries
from .envelope import parse_enqueue, parse_retry, parse_worker_fields, validate_queue
from .errors import (
    ConflictError,
    NotFoundError,
    OJSError,
    PayloadTooLargeError,
    UnsupportedError,
    ValidationError,
)
from .events import EVENT_PATTERN, make_event, transition_events
from .inserting import EnqueueOutcome, Inserting
from .limits import BatchTooLargeError, Limits, check_count
from .model import (
    Backpressure,
    CronJob,
    Event,
    Job,
    JobError,
    QueueInfo,
    QueueStats,
    RetryPolicy,
    WorkerInfo,
)
from .observe import Observers
from .pools import Pools, parse_pool_name
from .queue_limits import QueueLimits
from .queue_strategy import QueuePlan, check_weights
from .rate_limiting import HeldBack, RateLimiting
from .retention import Retention, stamp
from .scheduling import Scheduler, at_capacity
from .scheduling_stats import SchedulingStats
from .schema_registry import SchemaRegistry
from .shutdown import WorkerGate, accepts_jobs, parse_worker_state
from .states import JobState
from .tenancy import DEFAULT_TENANT, Tenancy
from .timekeeping import Timekeeping, still_dead
from .tracing import JobTracer
from .unique import unique_key
from .versioning import Declaration, declaration_of, stored_declaration
from .workflow_runs import WorkflowRuns

__all__ = ["EnqueueOutcome", "HeartbeatOutcome", "JobService"]

log = logging.getLogger("ojs.service")
S = JobState
DIRECTIVES = ("running", "quiet", "terminate")


@functools.lru_cache(maxsize=1024)
def _exhausting(policy: RetryPolicy, exhausted: str) -> RetryPolicy:
    """``policy`` with ``on_exhaustion`` resolved (policies are frozen: shared, and most jobs
    carry one of a few, so the resolved ones are remembered)."""
    return attrs.evolve(policy, on_exhaustion=exhausted)


#: A long-polling fetch looks again this often: on a backend without wake-ups (the same
#: process's arrivals wake it at once), and, as a backstop for a lost wake-up, with them.
_POLL_S = 0.05
ARRIVAL_POLL_S = 1.0
#: A transition at a given time (``lifecycle.cancel``, say): the service fixes ``now`` and hands
#: the backend the resulting :data:`~ojs_core.backend.JobFn`.
TimedFn = Callable[[Job, datetime], Job]


@attrs.frozen
class HeartbeatOutcome:
    """The directive for the worker and the jobs whose visibility was extended."""

    directive: str
    extended: list[str]
    worker: WorkerInfo


class JobService:
    """Every OJS operation over one backend; safe to share between tasks and replicas."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        default_visibility_ms: int = lifecycle.DEFAULT_VISIBILITY_MS,
        limits: Limits | None = None,
        test_directives: bool = False,
        arrival_poll_s: float = ARRIVAL_POLL_S,
        retention: Retention | None = None,
        exhausted: str = "dead_letter",
        schema_validation: str = "warn",
        default_tenant: str = DEFAULT_TENANT,
        require_tenant: bool = False,
    ) -> None:
        if exhausted not in ("dead_letter", "discard"):
            raise ValueError("exhausted must be 'dead_letter' or 'discard'")
        self.backend = backend
        #: Where a job goes when its retries are exhausted, unless its retry policy says:
        #: ``dead_letter`` (kept for inspection and manual retry) or ``discard``.
        self.exhausted = exhausted
        #: How long finished records are kept (:mod:`ojs_core.retention`).
        self.retention = retention or Retention()
        self.clock: Clock = clock or SystemClock()
        self.rng = rng
        self.default_visibility_ms = default_visibility_ms
        #: How often a long-poll looks again on a backend with wake-ups (a backstop).
        self.arrival_poll_s = arrival_poll_s
        #: Per-request ceilings (see :mod:`ojs_core.limits`).
        self.limits = limits or Limits()
        #: Honour the conformance hook ``meta.test_directive`` (a job asking the worker that
        #: runs it to go quiet or terminate). Off by default: it lets whoever enqueues a job
        #: stop workers, so only a test server turns it on (see docs/security.md).
        self.test_directives = test_directives
        self.started_at = self.clock.now()
        self._job_arrived = asyncio.Event()
        self._arrivals = backend if isinstance(backend, JobArrivals) else None
        #: Called with every event batch this service publishes (:mod:`ojs_core.observe`).
        self.observers = Observers()
        #: The schema registry (``ojs_core.schema_registry``): ``schema_validation`` is what a
        #: job whose ``args`` do not match its schema gets (``strict``, ``warn`` or ``off``).
        self.schemas = SchemaRegistry(backend, self.now, mode=schema_validation)
        #: Set by :func:`ojs_core.tracing.instrument`: traces enqueues and worker runs.
        self.tracer: JobTracer | None = None
        self.activity = QueueActivity()
        self.observers.add(self.activity.observe)
        #: The rate-limiting extension (:mod:`ojs_core.rate_limiting`).
        self.rate_limits = RateLimiting(backend, self.now, self._emit)
        #: The multi-tenancy extension (:mod:`ojs_core.tenancy`); its tenants' concurrency
        #: limits are admitted with the rate limits.
        self.tenancy = Tenancy(
            backend, self.now, self._emit, default=default_tenant, require=require_tenant
        )
        self.rate_limits.providers.append(self.tenancy.admission_keys(self._load_tenants))
        #: Worker pools (fair scheduling, :mod:`ojs_core.pools`): a job leaving ``active``
        #: frees its slot of its pool's concurrency.
        self.pools = Pools(backend, self.now, self._emit)
        self.rate_limits.providers.append(self.pools.release_keys)
        #: Queue-level rate limits (rate-limiting §7.2, :mod:`ojs_core.queue_limits`).
        self.queue_limits = QueueLimits(self.rate_limits, self.now)
        #: Workflows and cron entries (:mod:`ojs_core.workflow_runs`, :mod:`ojs_core.cron_entries`).
        self.workflows = WorkflowRuns(self)
        self.cron = CronEntries(self)
        self.rate_limits.providers.append(self.queue_limits.keys)
        #: Admission into bounded queues (:mod:`ojs_core.backpressure`).
        self.gate = Gate(backend, self.now, self._emit)
        #: The backend's batched compare-and-swaps, if it has them (decided once).
        self._batch_updates: BatchUpdates | None = (
            backend if isinstance(backend, BatchUpdates) else None
        )
        #: Whether a worker may be handed jobs (graceful shutdown), cached for a second.
        self.workers_gate = WorkerGate(backend.get_worker)
        #: The bulk-operations extension (:mod:`ojs_core.bulk`).
        self.bulk = BulkOperations(self)
        #: Fair scheduling across the queues of a fetch (:mod:`ojs_core.scheduling`).
        self.scheduler = Scheduler(backend, self.now, self._emit)
        #: Dispatches per queue over the last minute (fair scheduling §10.2; per process).
        self.scheduling_stats = SchedulingStats(backend, self.now)
        self.observers.add(self.scheduling_stats.observe)
        #: The claim of FETCH (:mod:`ojs_core.claiming`), the timer and retention passes
        #: (:mod:`ojs_core.timekeeping`).
        self.claiming = Claiming(self)
        self.timekeeping = Timekeeping(self)
        #: Storing new jobs (:mod:`ojs_core.inserting`).
        self.inserting = Inserting(self)

    def now(self) -> datetime:
        """The service clock's current time."""
        return self.clock.now()

    async def _load_tenants(self, jobs: Sequence[Job]) -> None:
        await self.tenancy.load([self.tenancy.tenant_of(j) for j in jobs])

    async def _emit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.observers.notify(events)
        try:
            await self.backend.publish_events(events)
        except OJSError:
            log.warning("could not publish %d event(s)", len(events), exc_info=True)

    def _stamped(self, fn: JobFn, now: datetime) -> JobFn:
        """``fn`` with the retention deadline stamped on every job that becomes terminal (or
        cleared on one that leaves a terminal state)."""
        retention = self.retention

        def change(job: Job) -> Job:
            new = fn(job)
            return new if new is job else stamp(job, new, retention, now)

        return change

    async def _update(self, job_id: str, fn: JobFn, now: datetime) -> tuple[Job, Job]:
        """``backend.update_job`` with the retention deadline stamped (:meth:`_stamped`)."""
        change = self._stamped(fn, now)
        try:
            return await self.backend.update_job(job_id, change)
        except PayloadTooLargeError:
            # Only a state change must land whatever it costs (see lifecycle.slimmed); any
            # other write that does not fit is refused again, as it was.
            def shed(job: Job) -> Job:
                new = change(job)
                return new if new.state is job.state else lifecycle.slimmed(new)

            before, after = await self.backend.update_job(job_id, shed)
            log.warning(
                "job %s no longer fit the store: its state change was stored without its "
                "checkpoint, progress data and older errors",
                job_id,
            )
            return before, after

    async def update_job(self, job_id: str, fn: JobFn, now: datetime) -> tuple[Job, Job]:
        """Apply ``fn`` to the stored job under compare-and-swap, as every operation does
        (retention stamped); for operations written outside this class (``ojs_core.progress``,
        ``ojs_core.checkpoint``). ``after is before`` when ``fn`` changed nothing."""
        return await self._update(job_id, fn, now)

    async def emit(self, events: Sequence[Event]) -> None:
        """Publish events; a failure is logged, never raised (events are best-effort)."""
        await self._emit(events)

    async def _update_many(
        self, items: Sequence[tuple[str, JobFn]], now: datetime
    ) -> list[tuple[Job, Job] | BaseException]:
        """:meth:`_update` of each item, side by side (one backend call where the backend
        writes batches, ``BatchUpdates``); per item its outcome or the exception it raised."""
        batches = self._batch_updates
        if batches is None or len(items) < 2:
            return list(
                await asyncio.gather(
                    *(self._update(job_id, fn, now) for job_id, fn in items),
                    return_exceptions=True,
                )
            )
        outcomes = await batches.update_jobs([(i, self._stamped(fn, now)) for i, fn in items])
        for k, outcome in enumerate(outcomes):
            if isinstance(outcome, PayloadTooLargeError):  # the write alone sheds what it must
                try:
                    outcomes[k] = await self._update(*items[k], now)
                except Exception as exc:
                    outcomes[k] = exc
        return outcomes

    async def _after(self, before: Job | None, after: Job, now: datetime) -> None:
        """Follow-up of one stored transition: events, workflow advancement, wake-ups."""
        await self._emit(transition_events(before, after, now))
        await self._follow_up(before, after, now)

    async def _follow_up(self, before: Job | None, after: Job, now: datetime) -> None:
        """What a stored transition entails beyond its events (:meth:`_after`)."""
        if before is not None and (
            before.rate_limit is not None
            or before.pool is not None
            or self.tenancy.may_be_limited(before)
            or self.queue_limits.may_hold(before)
        ):
            await self.rate_limits.left_active(before, after)
        if after.state is S.AVAILABLE:
            self._job_arrived.set()
        if after.workflow_id and after.state.terminal:
            await self.advance_workflow(after.workflow_id, before)
            await self._settled(after)

    async def _settled(self, job: Job) -> None:
        """Clear a workflow job's pending-advance mark once its workflow has been advanced."""
        if not job.workflow_pending:
            return
        with contextlib.suppress(NotFoundError):
            await self._update(
                job.id,
                lambda j: attrs.evolve(j, workflow_pending=False) if j.workflow_pending else j,
                self.now(),
            )

    # -- enqueue --------------------------------------------------------------------------

    def _prepare(self, job: Job) -> Job:
        """What a job needs before it is stored: its unique key, and the exhaustion policy
        the client did not choose (the server's default)."""
        changes: dict[str, Any] = {}
        if job.unique is not None:
            changes["unique_key"] = unique_key(job, job.unique)
        if job.retry.on_exhaustion is None:
            changes["retry"] = _exhausting(job.retry, self.exhausted)
        return attrs.evolve(job, **changes) if changes else job

    async def enqueue(self, body: Any, *, block_s: float = 0.0) -> EnqueueOutcome:
        """Validate one enqueue request and store the job (PUSH).

        Into a full bounded queue, :class:`~ojs_core.errors.QueueFullError`; ``block_s`` is
        how long a queue with the ``block`` strategy may be waited for (0: not at all)."""
        now = self.now()
        return await self.enqueue_job(parse_enqueue(body, now=now), block_s=block_s)

    async def enqueue_job(self, job: Job, *, block_s: float = 0.0) -> EnqueueOutcome:
        """Store an already-parsed job, resolving unique-key conflicts by its policy."""
        outcomes = await self.inserting.insert([self._prepare(job)], block_s)
        return outcomes[0]

    async def enqueue_batch(self, bodies: Any, *, block_s: float = 0.0) -> list[EnqueueOutcome]:
        """Validate every job first, then store all of them atomically (or none): a batch
        that does not fit in a bounded queue is refused whole (``QueueFullError``)."""
        if not isinstance(bodies, list) or not bodies:
            raise ValidationError("must be a non-empty array", path="jobs")
        if len(bodies) > self.limits.max_batch_jobs:
            raise BatchTooLargeError(len(bodies), self.limits.max_batch_jobs)
        now = self.now()
        jobs: list[Job] = []
        for i, body in enumerate(bodies):
            try:
                jobs.append(self._prepare(parse_enqueue(body, now=now, path=f"jobs[{i}]")))
            except ValidationError as exc:
                exc.details.setdefault("index", i)
                if exc.path:
                    exc.details.setdefault("field", exc.path)
                raise
        return await self.inserting.insert(jobs, block_s)

    async def enqueue_jobs(
        self, jobs: Sequence[Job], *, block_s: float = 0.0
    ) -> list[EnqueueOutcome]:
        """Store already-parsed jobs atomically (or none), as a batch enqueue does."""
        return await self.inserting.insert([self._prepare(j) for j in jobs], block_s)

    # -- reading and cancelling -----------------------------------------------------------

    async def get(self, job_id: str, *, tenant: str | None = None) -> Job:
        """INFO: the job, or :class:`NotFoundError` (also when ``tenant`` does not own it)."""
        job = await self.backend.get_job(job_id)
        if job is None or not self.tenancy.owns(job, tenant):
            raise NotFoundError("job", job_id)
        return job

    async def _transition(self, job_id: str, fn: TimedFn) -> tuple[Job, Job]:
        now = self.now()
        before, after = await self._update(job_id, lambda j: fn(j, now), now)
        if after is not before:
            await self._after(before, after, now)
        return before, after

    async def transition(self, job_id: str, fn: TimedFn) -> tuple[Job, Job]:
        """Apply ``fn(job, now)`` under compare-and-swap with its follow-up (events, workflow
        advancement); for operations written outside this class (``ojs_core.bulk``)."""
        return await self._transition(job_id, fn)

    async def cancel(
        self,
        job_id: str,
        *,
        only_if: Callable[[Job], bool] | None = None,
        tenant: str | None = None,
    ) -> tuple[Job, Job]:
        """CANCEL a non-terminal job; 409 for terminal ones, and when ``only_if`` refuses the
        current version (checked in the same compare-and-swap: a bulk cancel by filter never
        cancels a job that left the filter meanwhile); 404 when ``tenant`` does not own it."""
        if tenant is not None:
            await self.get(job_id, tenant=tenant)
        return await self._transition(job_id, _guarded(lifecycle.cancel, only_if))

    async def activate(self, job_id: str) -> tuple[Job, Job]:
        """ACTIVATE a pending job."""
        return await self._transition(job_id, lifecycle.activate_pending)

    # -- worker operations ----------------------------------------------------------------

    async def fetch(
        self,
        queues: Sequence[str],
        count: int = 1,
        worker_id: str | None = None,
        visibility_ms: int | None = None,
        wait_ms: int = 0,
        tenant: str | None = None,
        held: HeldBack | None = None,
        versions: Declaration | None = None,
        plan: QueuePlan | None = None,
        pool: str | None = None,
    ) -> list[Job]:
        """FETCH: claim up to ``count`` jobs; with ``wait_ms`` wait that long for one to arrive.

        ``tenant`` (multi-tenancy): only that tenant's jobs. ``held`` learns what rate limit
        held candidates back (for response headers). ``versions`` (job versioning): only jobs
        whose version it accepts; without it, the declaration the worker's heartbeats stored,
        if any. ``plan`` (fair scheduling): the strategy across ``queues``; by default list
        order. ``pool``: the worker's pool (else the one its heartbeats declared); a defined
        pool's queues and strategy replace ``queues`` and ``plan`` (:mod:`ojs_core.pools`)."""
        if pool is not None:
            parse_pool_name(pool, "pool")
        elif not queues:
            raise ValidationError("must list at least one queue", path="queues")
        check_count(len(queues), self.limits.max_fetch_queues, "queues", "queues")
        for i, q in enumerate(queues):
            validate_queue(q, f"queues[{i}]")
        check_weights(plan, queues)
        check_count(count, self.limits.max_fetch_count, "count", "jobs")
        count = max(1, count)
        deadline = self.clock.now().timestamp() + wait_ms / 1000
        arrivals = self._arrivals
        await self.pools.current()  # this process's snapshot: no I/O after the first fetch
        while True:
            self._job_arrived.clear()
            worker = None if worker_id is None else await self.workers_gate.record(worker_id)
            route = self.pools.route(queues, plan, pool, worker)
            if not queues and route.pool is None:
                raise ValidationError(
                    f"must list at least one queue (pool '{route.pool_name}' is not defined)",
                    path="queues",
                )
            waiting_on = route.queues or tuple(queues)
            mark = (
                await arrivals.arrivals_mark(waiting_on) if arrivals is not None and wait_ms else 0
            )
            if not accepts_jobs(worker) or not route.queues or at_capacity(route.plan, worker):
                # Quiet or terminating (graceful shutdown, ojs_core.shutdown): no job, but the
                # long-poll is still honoured, so a client that fetches anyway does not spin.
                jobs = []
            else:
                declared = versions or stored_declaration(worker.versions if worker else None)
                claim = ClaimArgs(worker_id, visibility_ms, tenant, held, declared)
                jobs = await self.claiming.claim_shielded(route, count, claim)
            remaining = deadline - self.clock.now().timestamp()
            if jobs or remaining <= 0:
                return jobs
            if arrivals is not None:
                await arrivals.wait_for_arrivals(
                    waiting_on, mark, min(remaining, self.arrival_poll_s)
                )
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._job_arrived.wait(), timeout=min(remaining, _POLL_S))

    async def ack(self, job_id: str, result: Any = None, worker_id: str | None = None) -> Job:
        """ACK: ``active -> completed`` with an optional result."""
        _, after = await self._transition(
            job_id, lambda j, now: lifecycle.ack(j, now, result, worker_id)
        )
        return after

    async def ack_many(
        self, acks: Sequence[tuple[str, Any]], worker_id: str | None = None
    ) -> list[Job | OJSError]:
        """ACK many jobs at once (the batch-ack extension): ``(job_id, result)`` pairs, each
        acknowledged on its own (concurrently: each is its own compare-and-swap, so one
        refused ack never affects another). Per pair, the completed job or the error that
        refused it, in order."""
        check_count(len(acks), self.limits.max_batch_jobs, "acks", "acknowledgements")
        now = self.now()

        def acking(result: Any) -> JobFn:
            return lambda j: lifecycle.ack(j, now, result, worker_id)

        outcomes = await self._update_many(
            [(job_id, acking(result)) for job_id, result in acks], now
        )
        out: list[Job | OJSError] = []
        stored: list[tuple[Job, Job]] = []
        failure: BaseException | None = None  # not a refusal: raised once the rest is done
        for outcome in outcomes:
            if isinstance(outcome, OJSError):
                out.append(outcome)
            elif isinstance(outcome, BaseException):
                failure = failure or outcome
            else:
                out.append(outcome[1])
                if outcome[1] is not outcome[0]:
                    stored.append(outcome)
        # The events of the batch in one call, then each stored job's follow-up (slots
        # released, workflows advanced) whatever happened to the others.
        await self._emit(
            [e for before, after in stored for e in transition_events(before, after, now)]
        )
        for before, after in stored:
            await self._follow_up(before, after, now)
        if failure is not None:
            raise failure
        return out

    async def nack(
        self,
        job_id: str,
        error: JobError,
        worker_id: str | None = None,
        requeue: bool = False,
    ) -> Job:
        """FAIL: retry, discard or (``requeue``) put straight back, per the retry policy."""
        if requeue:
            fn = lambda j, now: lifecycle.requeue(j, now, error, worker_id)  # noqa: E731
        else:
            fn = lambda j, now: lifecycle.fail(j, now, error, worker_id, self.rng)  # noqa: E731
        _, after = await self._transition(job_id, fn)
        return after

    async def heartbeat(
        self,
        worker_id: str,
        active_jobs: Sequence[str] = (),
        visibility_ms: int | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> HeartbeatOutcome:
        """BEAT: record the worker, extend its jobs' visibility, return its directive."""
        check_count(len(active_jobs), self.limits.max_heartbeat_jobs, "active_jobs", "job ids")
        fields = parse_worker_fields(info or {})  # refused before anything is changed
        fields["state"] = parse_worker_state((info or {}).get("state"))
        declared = declaration_of(info or {})
        if declared is not None:  # job versioning: kept until a heartbeat declares again
            fields["versions"] = declared.to_wire()
        now = self.now()
        extended: list[str] = []
        requested: str | None = None
        for job_id in active_jobs:
            try:
                _, job = await self._update(
                    job_id,
                    lambda j: (
                        lifecycle.extend_visibility(j, now, visibility_ms)
                        if j.worker_id in (None, worker_id)
                        else j
                    ),
                    now,
                )
            except (ConflictError, NotFoundError):
                continue
            if job.state is S.ACTIVE and job.worker_id in (None, worker_id):
                extended.append(job_id)
                hint = job.meta.get("test_directive") if self.test_directives else None
                if hint in ("quiet", "terminate") and requested != "terminate":
                    requested = hint

        def touch(w: WorkerInfo | None) -> WorkerInfo:
            base = w or WorkerInfo(worker_id=worker_id, last_seen=now)
            return attrs.evolve(base, last_seen=now, active_jobs=list(active_jobs), **fields)

        worker = await self.backend.upsert_worker(touch)
        self.workers_gate.note(worker)
        directive = worker.directive
        if directive == "running" and requested:
            directive = requested
        return HeartbeatOutcome(directive=directive, extended=extended, worker=worker)

    async def set_worker_directive(self, worker_id: str, directive: str) -> WorkerInfo:
        """Tell a worker to go quiet or terminate at its next heartbeat (terminate is final)."""
        if directive not in DIRECTIVES:
            raise ValidationError("must be running, quiet or terminate", path="directive")
        now = self.now()

        def setd(w: WorkerInfo | None) -> WorkerInfo:
            base = w or WorkerInfo(worker_id=worker_id, last_seen=now)
            if base.directive == "terminate":
                return base
            return attrs.evolve(base, directive=directive)

        worker = await self.backend.upsert_worker(setd)
        self.workers_gate.note(worker)
        return worker

    # -- dead letter ----------------------------------------------------------------------

    async def dead_letter(self, queue: str | None = None, limit: int = 50, offset: int = 0) -> Page:
        """Jobs discarded into the dead-letter queue, newest first."""
        return await self.backend.list_jobs(
            JobFilter(dead_letter=True, queue=queue, limit=limit, offset=offset)
        )

    async def _dead(self, job_id: str) -> Job:
        job = await self.backend.get_job(job_id)
        if job is None or not job.dead_letter or job.state is not S.DISCARDED:
            raise NotFoundError("dead-letter job", job_id)
        return job

    async def retry_dead_letter(self, job_id: str, override: Any = None) -> Job:
        """Put a dead-letter job back to ``available`` with attempt 0."""
        await self._dead(job_id)
        changes: dict[str, Any] = {}
        if override is not None:
            if not isinstance(override, Mapping):
                raise ValidationError("must be an object", path="override")
            if override.get("queue") is not None:
                changes["queue"] = validate_queue(override["queue"], "override.queue")
            if override.get("meta") is not None:
                if not isinstance(override["meta"], Mapping):
                    raise ValidationError("must be an object", path="override.meta")
                changes["meta"] = dict(override["meta"])
            if override.get("retry") is not None:
                retry = parse_retry(override["retry"], "override.retry")
                if retry.on_exhaustion is None:
                    retry = _exhausting(retry, self.exhausted)
                changes["retry"] = retry
        _, after = await self._transition(
            job_id, lambda j, now: lifecycle.retry_dead_letter(j, now, changes)
        )
        return after

    async def revive(self, job_id: str, *, only_if: Callable[[Job], bool] | None = None) -> Job:
        """Put any discarded job (dead-lettered or not) back to ``available`` with attempt 0;
        409 for other states (cancelled is final in the core state machine) and when
        ``only_if`` refuses the current version."""
        _, after = await self._transition(job_id, _guarded(lifecycle.retry_dead_letter, only_if))
        return after

    async def delete_dead_letter(self, job_id: str) -> None:
        """Remove a dead-letter job for good."""
        await self._dead(job_id)
        if not await self.backend.delete_job(job_id, only_if=still_dead):
            raise NotFoundError("dead-letter job", job_id)

    # -- queues ---------------------------------------------------------------------------

    async def queues(self) -> list[QueueInfo]:
        """Every known queue."""
        return await self.backend.list_queues()

    async def queue_stats(self, queue: str) -> QueueStats:
        """Per-state counts of one queue."""
        validate_queue(queue, "queue")
        return self.activity.fill(await self.backend.queue_stats(queue), self.now())

    async def backpressure(self, queue: str) -> Backpressure | None:
        """The queue's bound (backpressure extension), or ``None`` when it is unbounded."""
        validate_queue(queue, "queue")
        return await self.gate.bound(queue)

    async def set_backpressure(self, queue: str, raw: Any) -> Backpressure | None:
        """Set a queue's bound from the admin API's ``backpressure`` object (``None`` or
        ``max_depth: 0`` removes it); 422 ``unsupported`` on a backend that cannot store it."""
        validate_queue(queue, "queue")
        bound = parse_backpressure(raw)
        backend = self.backend
        if not isinstance(backend, QueueBounds):
            raise UnsupportedError(f"the {backend.name} backend does not support queue bounds")
        await backend.set_backpressure(queue, bound)
        return bound

    async def set_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Pause (enqueue still accepted, nothing fetched) or resume a queue."""
        validate_queue(queue, "queue")
        info = await self.backend.set_queue_paused(queue, paused)
        now = self.now()
        kind = "queue.paused" if paused else "queue.resumed"
        await self._emit([make_event(kind, now, {"queue": queue}, subject=queue)])
        if not paused:
            self._job_arrived.set()
        return info

    # -- workflows (ojs_core.workflow_runs) -----------------------------------------------

    async def create_workflow(self, body: Any, *, tenant: str | None = None) -> dict[str, Any]:
        """Compile and store a workflow (:meth:`WorkflowRuns.create`)."""
        return await self.workflows.create(body, tenant=tenant)

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """The workflow with its derived state and per-step detail."""
        return await self.workflows.get(workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Cancel every job of the workflow that has not started (:meth:`WorkflowRuns.cancel`)."""
        return await self.workflows.cancel(workflow_id)

    async def advance_workflow(self, workflow_id: str, changed: Job | None = None) -> None:
        """Make ready steps available and cancel those that can no longer run; idempotent."""
        await self.workflows.advance(workflow_id, changed)

    # -- cron (ojs_core.cron_entries) -----------------------------------------------------

    async def register_cron(self, body: Any) -> tuple[CronJob, bool]:
        """Create or replace a cron entry; returns it and whether it was new."""
        return await self.cron.register(body)

    async def crons(self) -> list[CronJob]:
        """Every cron entry."""
        return await self.cron.list()

    async def get_cron(self, name: str) -> CronJob:
        """One cron entry, or 404."""
        return await self.cron.get(name)

    async def delete_cron(self, name: str) -> CronJob:
        """Remove a cron entry (jobs it already enqueued stay)."""
        return await self.cron.delete(name)

    async def set_cron_enabled(self, name: str, enabled: bool) -> CronJob:
        """Enable or disable a cron entry; ``next_run_at`` is recomputed on enable."""
        return await self.cron.set_enabled(name, enabled)

    async def run_crons(self) -> int:
        """Fire every cron entry that is due; returns how many fired. Safe on every replica."""
        return await self.cron.run_due()

    # -- timers and retention (ojs_core.timekeeping) --------------------------------------

    async def run_timers(self, limit: int = 500) -> int:
        """Apply every due timer (promotion, visibility, execution timeout, expiry, the end of
        a retention); returns how many changed something."""
        return await self.timekeeping.run_timers(limit)

    async def prune(self) -> dict[str, int]:
        """Apply the retention that timers do not: the dead letter's size cap and the records
        of workers that stopped heartbeating. Returns how many of each were removed."""
        return await self.timekeeping.prune()

    # -- events and admin -----------------------------------------------------------------

    async def events(self, flt: EventFilter) -> list[Event]:
        """Recent events matching the filter (the HTTP binding bounds ``flt.limit`` by
        ``limits.max_event_page``)."""
        for i, kind in enumerate(flt.types):
            if not isinstance(kind, str) or not EVENT_PATTERN.match(kind):
                raise ValidationError(
                    "must be an event type such as job.completed, or a prefix such as job.*",
                    path=f"types[{i}]",
                )
        for i, queue in enumerate(flt.queues):
            validate_queue(queue, f"queues[{i}]")
        return await self.backend.read_events(flt)

    async def reset(self) -> None:
        """Wipe all state (tests and the conformance runner)."""
        await self.backend.reset()
        self.rate_limits.reset()
        self.queue_limits.forget()
        self.schemas.forget()
        self.workers_gate.forget()
        self.tenancy.forget()
        self.scheduler.reset()
        self.scheduling_stats.reset()
        self.pools.forget()


def _guarded(fn: TimedFn, only_if: Callable[[Job], bool] | None) -> TimedFn:
    """``fn``, refused with 409 when ``only_if`` rejects the version it is applied to."""
    if only_if is None:
        return fn

    def guarded(job: Job, now: datetime) -> Job:
        if not only_if(job):
            raise ConflictError(
                f"Job '{job.id}' no longer matches the filter (it is {job.state.value})",
                details={"job_id": job.id, "current_state": job.state.value},
            )
        return fn(job, now)

    return guarded
