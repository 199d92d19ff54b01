"""The in-process client: enqueue jobs and manage workflows, cron, queues and the dead letter.

:class:`Client` builds the same request dicts an HTTP client would send and passes them to the
same :class:`~ojs_core.service.JobService` methods the HTTP binding calls, so validation, error
types and semantics are identical whichever way a job arrives. Nothing goes through HTTP.

The module-level builders :func:`job`, :func:`chain`, :func:`group` and :func:`batch` return
plain request dicts (OJS enqueue envelopes and workflow definitions); :meth:`Client.enqueue_many`
and the workflow methods take them, and they nest::

    from ojs_core.client import Client, batch, chain, group, job

    client = Client(backend)
    await client.enqueue("email.send", ["ada@example.com"], queue="mail", delay=30)
    await client.chain(job("video.fetch", [url]), group(job("video.encode", [url, "720p"]),
                                                        job("video.encode", [url, "1080p"])))

The enqueue middleware chain (:attr:`Client.middleware`) runs once per job, before the job is
stored, on the job's enqueue envelope with its ``id`` already assigned. It does not run for
workflow steps or cron templates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .backend import Backend, Page
from .clock import Clock
from .codec import converter
from .errors import OJSError, ValidationError
from .gc_tuning import tune_gc
from .ids import uuid7
from .middleware import Middleware, MiddlewareChain
from .model import (
    Backpressure,
    CronJob,
    Job,
    QueueInfo,
    QueueStats,
    RateLimit,
    RetryPolicy,
    UniquePolicy,
)
from .service import JobService
from .timeutil import format_duration, format_ts

__all__ = [
    "Client",
    "EnqueueMiddleware",
    "Envelope",
    "as_service",
    "batch",
    "chain",
    "group",
    "job",
]

#: An OJS enqueue request (the wire envelope): ``{"id", "type", "args", "queue", ...}``.
Envelope = dict[str, Any]
#: An enqueue middleware: ``async def mw(envelope, next) -> envelope | None``.
EnqueueMiddleware = Middleware[Envelope, Envelope | None]


def as_service(backend_or_service: Backend | JobService, clock: Clock | None = None) -> JobService:
    """The given :class:`JobService`, or a new one over the given backend (with ``clock``).

    Share one service between a :class:`Client` and a :class:`~ojs_core.worker.Worker` in the
    same process: its long-poll is then woken the moment the client enqueues.
    """
    if isinstance(backend_or_service, JobService):
        return backend_or_service
    return JobService(backend_or_service, clock=clock)


# -- request builders ---------------------------------------------------------------------


def _timestamp(value: datetime | str, name: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        raise ValidationError("must be a datetime or an RFC 3339 string", path=name)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("must be timezone-aware", path=name)
    return format_ts(value)


def _delay_ms(value: float | timedelta, name: str) -> int:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValidationError("must be a number of seconds or a timedelta", path=name)
    if seconds < 0:
        raise ValidationError("must not be negative", path=name)
    return round(seconds * 1000)


def _retry_request(retry: RetryPolicy | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(retry, RetryPolicy):
        return {
            "max_attempts": retry.max_attempts,
            "initial_interval_ms": retry.initial_interval_ms,
            "backoff_coefficient": retry.backoff_coefficient,
            "max_interval_ms": retry.max_interval_ms,
            "jitter": retry.jitter,
            "non_retryable_errors": list(retry.non_retryable_errors),
            "on_exhaustion": retry.on_exhaustion,
            "backoff_strategy": retry.backoff_strategy,
        }
    return dict(retry)


def _unique_request(unique: UniquePolicy | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(unique, UniquePolicy):
        out: dict[str, Any] = {
            "keys": list(unique.keys),
            "states": [s.value for s in unique.states],
            "on_conflict": unique.on_conflict,
        }
        if unique.args_keys is not None:
            out["args_keys"] = list(unique.args_keys)
        if unique.meta_keys is not None:
            out["meta_keys"] = list(unique.meta_keys)
        if unique.period_ms is not None:
            out["period_ms"] = unique.period_ms
        return out
    return dict(unique)


def job(
    type: str,
    args: Sequence[Any] = (),
    *,
    queue: str | None = None,
    priority: int | str | None = None,
    delay: float | timedelta | None = None,
    scheduled_at: datetime | str | None = None,
    expires_at: datetime | timedelta | str | None = None,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    unique: UniquePolicy | Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    timeout_ms: int | None = None,
    visibility_timeout_ms: int | None = None,
    pending: bool = False,
    id: str | None = None,
    version: str | None = None,
    rate_limit: RateLimit | Mapping[str, Any] | None = None,
) -> Envelope:
    """Build one enqueue envelope (the dict an HTTP client would POST to ``/ojs/v1/jobs``).

    ``delay`` (seconds or a :class:`~datetime.timedelta`) is relative to the moment the job is
    stored; ``scheduled_at`` is absolute (give one or the other). ``expires_at`` may be absolute
    or a :class:`~datetime.timedelta` from the moment the job is stored. ``retry`` and
    ``unique`` take the policy objects or the wire dicts (partial policies are merged over the
    defaults). ``pending`` stores the job ``pending`` until :meth:`Client.activate`.
    ``version`` (job versioning, ``major.minor``) routes the job to workers that accept it.
    ``rate_limit`` (the rate-limiting extension: ``{"key", "concurrency", "rate", "throttle",
    "on_limit"}``, or a :class:`~ojs_core.model.RateLimit`) limits when it may start.
    Values are validated when the job is enqueued, with the same rules and errors as over HTTP.
    """
    if isinstance(args, str | bytes | Mapping) or not isinstance(args, Sequence):
        raise ValidationError("must be a sequence of JSON values", path="args")
    if delay is not None and scheduled_at is not None:
        raise ValidationError("give either delay or scheduled_at, not both", path="delay")
    env: Envelope = {"type": type, "args": list(args)}
    if id is not None:
        env["id"] = id
    if queue is not None:
        env["queue"] = queue
    if priority is not None:
        env["priority"] = priority
    if delay is not None:
        env["delay_ms"] = _delay_ms(delay, "delay")
    if scheduled_at is not None:
        env["scheduled_at"] = _timestamp(scheduled_at, "scheduled_at")
    if expires_at is not None:
        if isinstance(expires_at, timedelta):
            env["expires_at"] = "+" + format_duration(_delay_ms(expires_at, "expires_at"))
        else:
            env["expires_at"] = _timestamp(expires_at, "expires_at")
    if retry is not None:
        env["retry"] = _retry_request(retry)
    if unique is not None:
        env["unique"] = _unique_request(unique)
    if tags is not None:
        env["tags"] = list(tags)
    if meta is not None:
        env["meta"] = dict(meta)
    if timeout_ms is not None:
        env["timeout_ms"] = timeout_ms
    if visibility_timeout_ms is not None:
        env["visibility_timeout_ms"] = visibility_timeout_ms
    if pending:
        env["pending"] = True
    if version is not None:
        env["version"] = version
    if rate_limit is not None:
        env["rate_limit"] = (
            converter.unstructure(rate_limit)
            if isinstance(rate_limit, RateLimit)
            else dict(rate_limit)
        )
    return env


def _named(
    spec: dict[str, Any], name: str | None, meta: Mapping[str, Any] | None
) -> dict[str, Any]:
    if name is not None:
        spec["name"] = name
    if meta is not None:
        spec["meta"] = dict(meta)
    return spec


def chain(
    *steps: Mapping[str, Any], name: str | None = None, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A chain definition: each step (a :func:`job` or a nested definition) runs after the
    previous one completed and receives its result in ``parent_results``."""
    return _named({"type": "chain", "steps": [dict(s) for s in steps]}, name, meta)


def group(
    *jobs: Mapping[str, Any], name: str | None = None, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A group definition: every job (or nested definition) runs in parallel."""
    return _named({"type": "group", "jobs": [dict(j) for j in jobs]}, name, meta)


def batch(
    jobs: Iterable[Mapping[str, Any]],
    *,
    on_complete: Mapping[str, Any] | None = None,
    on_success: Mapping[str, Any] | None = None,
    on_failure: Mapping[str, Any] | None = None,
    name: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A batch definition: the jobs run in parallel, then the callbacks whose condition holds
    (``on_complete`` always, ``on_success`` if every job completed, ``on_failure`` if any
    failed). At least one callback is required."""
    callbacks = {
        key: dict(cb)
        for key, cb in (
            ("on_complete", on_complete),
            ("on_success", on_success),
            ("on_failure", on_failure),
        )
        if cb is not None
    }
    spec = {"type": "batch", "jobs": [dict(j) for j in jobs], "callbacks": callbacks}
    return _named(spec, name, meta)


# -- the client ---------------------------------------------------------------------------


def _renumber(exc: OJSError, old: int, new: int) -> None:
    """Rewrite ``jobs[old]`` to ``jobs[new]`` throughout a batch error."""

    def fix(value: Any) -> Any:
        return value.replace(f"jobs[{old}]", f"jobs[{new}]") if isinstance(value, str) else value

    exc.details["index"] = new
    exc.message = fix(exc.message)
    exc.args = tuple(fix(a) for a in exc.args)
    if isinstance(exc, ValidationError):
        exc.path = fix(exc.path)
    if "field" in exc.details:
        exc.details["field"] = fix(exc.details["field"])
    for item in exc.details.get("validation_errors") or []:
        if isinstance(item, dict) and "path" in item:
            item["path"] = fix(item["path"])


async def _identity(envelope: Envelope) -> Envelope | None:
    return envelope


class Client:
    """In-process OJS client over a backend (or a shared :class:`JobService`).

    Every method raises the same :class:`~ojs_core.errors.OJSError` subclasses the HTTP binding
    maps to status codes: :class:`~ojs_core.errors.ValidationError` for bad input,
    :class:`~ojs_core.errors.NotFoundError`, :class:`~ojs_core.errors.DuplicateJobError`,
    :class:`~ojs_core.errors.QueueFullError` when a bounded queue is full (backpressure; its
    ``retry_after_s`` suggests when to try again), and so on. The backend must be open
    (``await backend.open()``) before the client is used.
    """

    def __init__(
        self,
        backend_or_service: Backend | JobService,
        *,
        clock: Clock | None = None,
        middleware: MiddlewareChain[Envelope, Envelope | None] | None = None,
    ) -> None:
        self.service: JobService = as_service(backend_or_service, clock)
        tune_gc()  # a process that enqueues many jobs: see ojs_core.gc_tuning
        #: The enqueue middleware chain (see :mod:`ojs_core.middleware`).
        self.middleware: MiddlewareChain[Envelope, Envelope | None] = (
            middleware if middleware is not None else MiddlewareChain()
        )

    # -- enqueue --------------------------------------------------------------------------

    async def _apply_middleware(self, spec: Mapping[str, Any]) -> Envelope | None:
        if not isinstance(spec, Mapping):
            raise ValidationError("job must be a mapping")
        envelope: Envelope = dict(spec)
        for nested in ("meta", "options"):
            if isinstance(envelope.get(nested), Mapping):
                envelope[nested] = dict(envelope[nested])
        if envelope.get("id") is None:
            envelope["id"] = uuid7(int(self.service.now().timestamp() * 1000))
        job_id = envelope["id"]
        out = await self.middleware.run(envelope, _identity)
        if out is None:
            return None
        if not isinstance(out, Mapping):
            raise TypeError(f"enqueue middleware returned {out!r}; expected a mapping or None")
        if out.get("id") != job_id:
            raise ValidationError("enqueue middleware must not change the job id", path="id")
        return dict(out)

    async def enqueue(
        self,
        type: str,
        args: Sequence[Any] = (),
        *,
        queue: str | None = None,
        priority: int | str | None = None,
        delay: float | timedelta | None = None,
        scheduled_at: datetime | str | None = None,
        expires_at: datetime | timedelta | str | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        unique: UniquePolicy | Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
        visibility_timeout_ms: int | None = None,
        pending: bool = False,
        id: str | None = None,
        version: str | None = None,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
    ) -> Job | None:
        """Enqueue one job and return it as stored; ``None`` if enqueue middleware dropped it.

        The options are those of :func:`job`. With a unique policy whose conflict strategy is
        ``ignore``, a conflicting enqueue returns the existing job (whose ``id`` differs from
        the one requested); ``reject`` raises :class:`~ojs_core.errors.DuplicateJobError`.
        """
        spec = job(
            type,
            args,
            queue=queue,
            priority=priority,
            delay=delay,
            scheduled_at=scheduled_at,
            expires_at=expires_at,
            retry=retry,
            unique=unique,
            tags=tags,
            meta=meta,
            timeout_ms=timeout_ms,
            visibility_timeout_ms=visibility_timeout_ms,
            pending=pending,
            id=id,
            version=version,
            rate_limit=rate_limit,
        )
        return await self.enqueue_envelope(spec)

    async def enqueue_envelope(self, envelope: Mapping[str, Any]) -> Job | None:
        """Enqueue one prepared envelope (from :func:`job`, or any OJS enqueue request dict)."""
        prepared = await self._apply_middleware(envelope)
        if prepared is None:
            return None
        outcome = await self.service.enqueue(prepared)
        return outcome.job

    async def enqueue_many(self, specs: Iterable[Mapping[str, Any]]) -> list[Job | None]:
        """Enqueue several jobs atomically: all of them are stored, or none (on any error).

        ``specs`` are envelopes as built by :func:`job`. Middleware runs per job first; the
        result lists the stored jobs in order, with ``None`` where middleware dropped one.
        """
        items = list(specs)
        if not items:
            raise ValidationError("must be a non-empty array", path="jobs")
        prepared = [await self._apply_middleware(spec) for spec in items]
        kept = [i for i, env in enumerate(prepared) if env is not None]
        if not kept:
            return [None] * len(items)
        try:
            outcomes = await self.service.enqueue_batch([prepared[i] for i in kept])
        except OJSError as exc:
            index = exc.details.get("index")
            if isinstance(index, int) and 0 <= index < len(kept) and kept[index] != index:
                _renumber(exc, index, kept[index])  # name the caller's position, not ours
            raise
        out: list[Job | None] = [None] * len(items)
        for i, outcome in zip(kept, outcomes, strict=True):
            out[i] = outcome.job
        return out

    # -- single jobs ----------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job (:class:`~ojs_core.errors.NotFoundError` if unknown)."""
        return await self.service.get(job_id)

    async def wait(self, job_id: str, *, poll_interval: float = 0.05) -> Job:
        """Wait until the job is terminal (completed, cancelled or discarded) and return it.

        Polls every ``poll_interval`` seconds of real time; bound it with ``asyncio.timeout``.
        Meant for scripts and tests: a service that reacts to completions should do so in a
        handler or a workflow step instead.
        """
        while True:
            current = await self.service.get(job_id)
            if current.state.terminal:
                return current
            await asyncio.sleep(poll_interval)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished and return it; a terminal job raises
        :class:`~ojs_core.errors.ConflictError`. An active job is cancelled at once: its worker
        learns at its next heartbeat and abandons the handler."""
        _, after = await self.service.cancel(job_id)
        return after

    async def activate(self, job_id: str) -> Job:
        """Make a ``pending`` job ``available``."""
        _, after = await self.service.activate(job_id)
        return after

    # -- workflows ------------------------------------------------------------------------

    async def create_workflow(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Create a workflow from a definition (:func:`chain`, :func:`group`, :func:`batch`, or
        the ``steps[].depends_on`` graph form) and return it in its wire form."""
        return await self.service.create_workflow(dict(definition))

    async def chain(
        self,
        *steps: Mapping[str, Any],
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a chain workflow (see :func:`chain`) and return it."""
        return await self.create_workflow(chain(*steps, name=name, meta=meta))

    async def group(
        self,
        *jobs: Mapping[str, Any],
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a group workflow (see :func:`group`) and return it."""
        return await self.create_workflow(group(*jobs, name=name, meta=meta))

    async def batch(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        on_complete: Mapping[str, Any] | None = None,
        on_success: Mapping[str, Any] | None = None,
        on_failure: Mapping[str, Any] | None = None,
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a batch workflow with callbacks (see :func:`batch`) and return it."""
        definition = batch(
            jobs,
            on_complete=on_complete,
            on_success=on_success,
            on_failure=on_failure,
            name=name,
            meta=meta,
        )
        return await self.create_workflow(definition)

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """The workflow with its derived ``state`` and per-step detail."""
        return await self.service.get_workflow(workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Cancel every step that has not started (running steps may finish)."""
        return await self.service.cancel_workflow(workflow_id)

    # -- cron -----------------------------------------------------------------------------

    async def register_cron(
        self,
        name: str,
        expression: str,
        type: str,
        args: Sequence[Any] = (),
        *,
        timezone: str = "UTC",
        overlap_policy: str = "skip",
        enabled: bool = True,
        description: str | None = None,
        queue: str | None = None,
        priority: int | str | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        unique: UniquePolicy | Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
        visibility_timeout_ms: int | None = None,
    ) -> CronJob:
        """Create or replace the cron entry ``name``: enqueue ``type(args)`` on ``expression``.

        ``overlap_policy`` is ``skip`` (default), ``allow`` or ``cancel_previous``. Entries fire
        while a :class:`~ojs_core.scheduler.Scheduler` runs over the same backend.
        """
        template = job(
            type,
            args,
            queue=queue,
            priority=priority,
            retry=retry,
            unique=unique,
            tags=tags,
            meta=meta,
            timeout_ms=timeout_ms,
            visibility_timeout_ms=visibility_timeout_ms,
        )
        body: dict[str, Any] = {
            "name": name,
            "expression": expression,
            "timezone": timezone,
            "overlap_policy": overlap_policy,
            "enabled": enabled,
            "job_template": template,
        }
        if description is not None:
            body["description"] = description
        cron, _ = await self.service.register_cron(body)
        return cron

    async def list_crons(self) -> list[CronJob]:
        """Every cron entry."""
        return await self.service.crons()

    async def get_cron(self, name: str) -> CronJob:
        """One cron entry (:class:`~ojs_core.errors.NotFoundError` if unknown)."""
        return await self.service.get_cron(name)

    async def set_cron_enabled(self, name: str, enabled: bool) -> CronJob:
        """Enable or disable a cron entry."""
        return await self.service.set_cron_enabled(name, enabled)

    async def delete_cron(self, name: str) -> CronJob:
        """Remove a cron entry and return it (jobs it already enqueued stay)."""
        return await self.service.delete_cron(name)

    # -- queues ---------------------------------------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        """Every known queue."""
        return await self.service.queues()

    async def queue_stats(self, queue: str) -> QueueStats:
        """Per-state job counts of ``queue``."""
        return await self.service.queue_stats(queue)

    async def pause(self, queue: str) -> QueueInfo:
        """Pause ``queue``: enqueue still works, nothing is fetched until :meth:`resume`."""
        return await self.service.set_paused(queue, True)

    async def resume(self, queue: str) -> QueueInfo:
        """Resume a paused queue."""
        return await self.service.set_paused(queue, False)

    async def set_queue_bound(
        self,
        queue: str,
        *,
        max_depth: int,
        strategy: str = "reject",
        warning_threshold: float = 0.8,
        retry_after_s: int = 5,
    ) -> Backpressure | None:
        """Bound ``queue`` to ``max_depth`` waiting jobs (backpressure; 0 removes the bound):
        enqueues that would exceed it raise :class:`~ojs_core.errors.QueueFullError`
        (``strategy="block"`` lets an enqueue given time wait for room). Stored in the backend,
        so every process sharing it enforces the bound."""
        return await self.service.set_backpressure(
            queue,
            {
                "max_depth": max_depth,
                "strategy": strategy,
                "warning_threshold": warning_threshold,
                "retry_after_s": retry_after_s,
            },
        )

    async def queue_bound(self, queue: str) -> Backpressure | None:
        """``queue``'s bound, or ``None`` when it is unbounded."""
        return await self.service.backpressure(queue)

    # -- dead letter ----------------------------------------------------------------------

    async def dead_letter(
        self, queue: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> Page:
        """Jobs in the dead-letter queue (``retry.on_exhaustion = "dead_letter"``), newest first."""
        return await self.service.dead_letter(queue, limit, offset)

    async def retry_dead_letter(
        self,
        job_id: str,
        *,
        queue: str | None = None,
        meta: Mapping[str, Any] | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
    ) -> Job:
        """Put a dead-letter job back to ``available`` (attempts start again), optionally with
        a different queue, meta or retry policy."""
        override: dict[str, Any] = {}
        if queue is not None:
            override["queue"] = queue
        if meta is not None:
            override["meta"] = dict(meta)
        if retry is not None:
            override["retry"] = _retry_request(retry)
        return await self.service.retry_dead_letter(job_id, override or None)

    async def delete_dead_letter(self, job_id: str) -> None:
        """Remove a dead-letter job for good."""
        await self.service.delete_dead_letter(job_id)
