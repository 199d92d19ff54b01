"""The OJS data model as attrs classes: jobs, their policies and errors, workflows, cron, events.

These are plain immutable-by-convention records: every state change makes a new instance with
:func:`attrs.evolve`, so a backend can keep the previous version for compare-and-swap. The wire
form lives in :mod:`ojs_core.codec`; request parsing and validation in :mod:`ojs_core.envelope`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from .states import JobState

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "ON_LIMIT",
    "Backpressure",
    "Checkpoint",
    "CronJob",
    "Event",
    "Job",
    "JobError",
    "Progress",
    "QueueInfo",
    "QueueStats",
    "RateLimit",
    "RetryPolicy",
    "UniquePolicy",
    "Window",
    "WorkerInfo",
    "Workflow",
    "WorkflowNode",
]

DEFAULT_UNIQUE_STATES: tuple[JobState, ...] = (
    JobState.AVAILABLE,
    JobState.ACTIVE,
    JobState.SCHEDULED,
    JobState.RETRYABLE,
    JobState.PENDING,
)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a failed job is retried (OJS retry spec); defaults are the spec's defaults."""

    max_attempts: int = 3
    initial_interval_ms: int = 1000
    backoff_coefficient: float = 2.0
    max_interval_ms: int = 300_000
    jitter: bool = True
    non_retryable_errors: tuple[str, ...] = ()
    #: ``"dead_letter"`` or ``"discard"``; ``None`` until the service resolves it to its
    #: default at enqueue (``JobService(exhausted=...)``, dead letter unless configured).
    on_exhaustion: str | None = None
    backoff_strategy: str = "exponential"


@attrs.frozen(kw_only=True)
class UniquePolicy:
    """Deduplication policy: which dimensions form the key, for how long, against which states."""

    keys: tuple[str, ...] = ("type",)
    args_keys: tuple[str, ...] | None = None
    meta_keys: tuple[str, ...] | None = None
    period_ms: int | None = None
    states: tuple[JobState, ...] = DEFAULT_UNIQUE_STATES
    on_conflict: str = "reject"


@attrs.frozen(kw_only=True)
class Window:
    """At most ``limit`` job starts per ``period_ms`` (a rate window or a throttle)."""

    limit: int
    period_ms: int = 1000


#: What a job that a rate limit holds back gets (rate-limiting extension §6.2).
ON_LIMIT = ("wait", "reschedule", "drop")


@attrs.frozen(kw_only=True)
class RateLimit:
    """A job's rate-limit policy (``options.rate_limit``, rate-limiting extension §6): jobs
    sharing ``key`` (default: ``queue:<queue>``) share its counters; every limit given must
    allow a start before the job is handed to a worker."""

    key: str | None = None
    #: Jobs of the key ``active`` at once, at most (``0`` pauses the key).
    concurrency: int | None = None
    #: Starts per window (a sliding window, see ``ojs_core.rate_limit_rules``).
    rate: Window | None = None
    #: Starts evenly spaced: one per ``period_ms / limit``.
    throttle: Window | None = None
    on_limit: str = "wait"


@attrs.frozen(kw_only=True)
class JobError:
    """One failure of one attempt, as stored in ``job.error`` and ``job.errors[]``."""

    code: str = "handler_error"
    message: str = ""
    type: str | None = None
    retryable: bool | None = None
    details: dict[str, Any] | None = None
    backtrace: list[str] | None = None
    attempt: int | None = None
    occurred_at: datetime | None = None


@attrs.frozen(kw_only=True)
class Progress:
    """The progress an attempt reported (progress extension, ``ojs_core.progress``).

    ``value`` is the fraction done (0.0-1.0, never decreasing within ``attempt``; ``None``
    when only ``data`` or ``message`` was reported). ``event_at`` is when the last
    ``job.progress`` event was emitted: kept on the record so the throttle holds across
    replicas and restarts.
    """

    value: float | None = None
    data: Any = None
    message: str | None = None
    attempt: int = 0
    updated_at: datetime
    event_at: datetime | None = None

    @property
    def percentage(self) -> float | None:
        """``value`` in percent, as the official SDK reports it (two decimals)."""
        return None if self.value is None else round(self.value * 100, 2)


@attrs.frozen(kw_only=True)
class Checkpoint:
    """The latest checkpoint of a job (durable-execution extension, ``ojs_core.checkpoint``).

    ``state`` is the worker's JSON value; ``sequence`` counts saves for the job's whole life
    (it never goes back, not even after a delete); ``attempt`` and ``worker_id`` say who saved
    it. ``step_index`` and ``metadata`` carry what the official Python SDK's
    ``DurableContext`` sends (its replay log lives in ``metadata``).
    """

    state: Any = None
    sequence: int
    created_at: datetime
    attempt: int = 0
    worker_id: str | None = None
    step_index: int | None = None
    metadata: dict[str, Any] | None = None


@attrs.define(kw_only=True, slots=True)
class Job:
    """A job envelope plus its system-managed state.

    Client attributes come first, then system attributes, then fields this server keeps for its
    own bookkeeping (``visible_until``, ``unique_key``, workflow links). ``extra`` holds unknown
    top-level attributes, which OJS requires to be preserved and returned.
    """

    id: str
    type: str
    queue: str = "default"
    args: list[Any] = attrs.field(factory=list)
    meta: dict[str, Any] = attrs.field(factory=dict)
    priority: int = 0
    specversion: str = "1.0"
    timeout_ms: int | None = None
    visibility_timeout_ms: int | None = None
    scheduled_at: datetime | None = None
    expires_at: datetime | None = None
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    unique: UniquePolicy | None = None
    schema: str | None = None
    tags: list[str] = attrs.field(factory=list)
    rate_limit: RateLimit | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    state: JobState = JobState.AVAILABLE
    attempt: int = 0
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    discarded_at: datetime | None = None
    activated_at: datetime | None = None
    error: JobError | None = None
    errors: list[JobError] = attrs.field(factory=list)
    result: Any = None
    worker_id: str | None = None
    next_attempt_at: datetime | None = None
    retry_delay_ms: int | None = None
    parent_results: list[Any] | None = None
    dead_letter: bool = False
    #: Set when a workflow job reaches a terminal state and cleared once its workflow has been
    #: advanced: a crash in between leaves a timer (see ``lifecycle.timer_deadline``) that
    #: finishes the advancement, so no later step is stranded ``pending``.
    workflow_pending: bool = False
    #: The current attempt's progress (cleared when an attempt starts, 1.0 on completion).
    progress: Progress | None = None
    #: The latest checkpoint: kept across attempts, removed when the job becomes terminal.
    checkpoint: Checkpoint | None = None
    #: Checkpoints saved so far (the next one's ``sequence`` is this plus one); outlives a
    #: deleted checkpoint so that sequences never repeat.
    checkpoint_seq: int = 0

    visible_until: datetime | None = None
    #: When a terminal job is removed (its state's retention, ``ojs_core.retention``).
    retain_until: datetime | None = None
    unique_key: str | None = None
    workflow_id: str | None = None
    workflow_node: int | None = None
    #: The worker pool whose concurrency the current attempt took a slot of (fair scheduling;
    #: set by claims of a pool with a limit): leaving ``active`` frees it (``ojs_core.pools``).
    pool: str | None = None

    @property
    def max_attempts(self) -> int:
        """Total attempts allowed, including the first."""
        return self.retry.max_attempts


@attrs.define(kw_only=True, slots=True)
class WorkflowNode:
    """One job of a workflow and the condition under which it may run.

    ``trigger`` is ``"success"`` (every dependency completed; the default edge),
    ``"complete"`` (every dependency terminal) or ``"failure"`` (every dependency terminal and one
    or more failed). ``role`` tells chain steps and batch jobs from callbacks.
    """

    job_id: str
    depends_on: tuple[int, ...] = ()
    trigger: str = "success"
    role: str = "step"
    name: str | None = None


@attrs.define(kw_only=True, slots=True)
class Workflow:
    """A chain, group, batch or dependency graph of jobs; its state is derived from its jobs."""

    id: str
    type: str
    name: str | None = None
    nodes: list[WorkflowNode]
    created_at: datetime
    cancelled_at: datetime | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(kw_only=True, slots=True)
class CronJob:
    """A recurring job definition and its firing bookkeeping."""

    name: str
    expression: str
    timezone: str = "UTC"
    overlap_policy: str = "skip"
    enabled: bool = True
    description: str | None = None
    job_template: dict[str, Any] = attrs.field(factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_job_id: str | None = None
    run_count: int = 0


@attrs.frozen(kw_only=True)
class Event:
    """A lifecycle event (CloudEvents-like envelope, OJS events spec)."""

    id: str
    type: str
    time: datetime
    subject: str | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    source: str = "ojs://ojs-python"
    seq: int = 0


@attrs.frozen(kw_only=True)
class Backpressure:
    """A queue's bound (backpressure extension, :mod:`ojs_core.backpressure`).

    ``max_depth`` is the most jobs the queue may hold waiting (``available``, ``scheduled``,
    ``retryable`` and ``pending``); 0 means unbounded. ``strategy`` is ``reject`` (refuse at
    once) or ``block`` (a request that sends ``OJS-Block-Timeout`` waits that long for room).
    ``warning_threshold`` is the fill ratio from which successful enqueues carry the pressure
    headers; ``retry_after_s`` is the ``Retry-After`` a refusal suggests. ``max_size_bytes``
    is the spec's size bound: only 0 (none) is accepted, as no backend counts bytes per queue.
    """

    max_depth: int = 0
    max_size_bytes: int = 0
    strategy: str = "reject"
    warning_threshold: float = 0.8
    retry_after_s: int = 5


@attrs.define(kw_only=True, slots=True)
class QueueInfo:
    """A queue as listed: name, whether it is paused, when it was first seen."""

    name: str
    paused: bool = False
    created_at: datetime | None = None


@attrs.define(kw_only=True, slots=True)
class QueueStats:
    """Per-state job counts of one queue, plus recent throughput."""

    name: str
    paused: bool
    counts: dict[JobState, int]
    completed_last_hour: int = 0
    failed_last_hour: int = 0
    #: Recent activity (:mod:`ojs_core.activity`): mean run time of finished attempts and mean
    #: first-attempt queue time over the last hour, and jobs finished per second over the last
    #: minute. Per process; backends leave them 0 and the service fills them in.
    avg_duration_ms: float = 0.0
    avg_wait_ms: float = 0.0
    throughput_per_second: float = 0.0


@attrs.define(kw_only=True, slots=True)
class WorkerInfo:
    """What the server knows of a worker from its heartbeats."""

    worker_id: str
    last_seen: datetime
    #: What the server asks of the worker (``running``, ``quiet``, ``terminate``).
    directive: str = "running"
    #: What the worker last reported of itself (graceful-shutdown extension): ``running``,
    #: ``quiet`` (shutting down: draining its jobs, fetching none) or ``terminate`` (gone).
    state: str = "running"
    hostname: str | None = None
    pid: int | None = None
    queues: list[str] = attrs.field(factory=list)
    concurrency: int | None = None
    labels: dict[str, Any] = attrs.field(factory=dict)
    active_jobs: list[str] = attrs.field(factory=list)
    #: The job versions it handles, by type (job-versioning extension, ``ojs_core.versioning``):
    #: declared in a heartbeat, used by its fetches that declare none.
    versions: dict[str, str] = attrs.field(factory=dict)
    #: The worker pool it belongs to (fair-scheduling extension, ``ojs_core.pools``).
    pool: str | None = None
