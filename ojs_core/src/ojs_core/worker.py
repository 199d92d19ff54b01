"""The in-process worker: fetch jobs, run their handlers, ack or fail them, heartbeat.

A :class:`Worker` talks to a :class:`~ojs_core.service.JobService` directly (no HTTP) and follows
the OJS worker protocol (ojs-worker-protocol.md):

* **Fetching** asks for as many jobs as there are free slots (up to ``fetch_batch``) in one
  call and long-polls (``poll_wait``) when the queues are empty, so an idle worker does not spin.
* **Handlers** are ``async def handler(ctx: JobContext) -> result``, registered per job type.
  The execution middleware chain (:attr:`Worker.middleware`) wraps every handler call.
  A returned value is stored as the job's result (ACK); an exception fails the attempt
  (``handler_error`` with the exception's class name as ``type`` and its traceback), after
  which the job's retry policy decides; a handler that runs longer than ``handler_timeout`` (or
  the job's ``timeout_ms``) is cancelled and fails with type ``timeout``; a job whose type has
  no handler fails with ``retryable: false``.
* **Heartbeats** every ``heartbeat_interval`` extend the visibility of the jobs in flight and
  carry the server's directive back: ``quiet`` stops fetching (``running`` resumes it),
  ``terminate`` stops the worker. A job that is no longer this worker's (cancelled, or
  reclaimed after a visibility timeout) has its handler cancelled and is not acked.
* **Shutdown** (:meth:`Worker.stop`, a ``terminate`` directive, or SIGTERM/SIGINT after
  :meth:`Worker.install_signal_handlers`) stops fetching, lets the jobs in flight finish for up
  to ``grace_period`` seconds while still heartbeating, then cancels the handlers still running
  and requeues their jobs (``nack`` with ``requeue: true``): nothing is lost and the interrupted
  attempt is not counted. Each heartbeat reports the worker's own ``state`` (graceful-shutdown
  extension): ``quiet`` from the moment shutdown begins (announced at once, so the server hands
  this worker no job) and ``terminate`` in the last one.

Times (heartbeat interval, grace period, error back-off) run on the worker's
:class:`~ojs_core.clock.Clock`, so tests can drive them with a
:class:`~ojs_core.clock.ManualClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from . import checkpoint as checkpoints
from . import jsonio
from . import progress as progress_ext
from .ack_batches import AckBatches
from .backend import Backend
from .client import as_service
from .clock import Clock
from .envelope import TYPE_RE, validate_queue
from .errors import ConflictError, NotFoundError, ValidationError
from .gc_tuning import tune_gc
from .ids import uuid7
from .logcontext import log_context
from .middleware import Middleware, MiddlewareChain
from .model import Checkpoint, Job, JobError
from .pools import parse_pool_name
from .queue_strategy import QueuePlan
from .service import JobService
from .tasks import cancel_and_wait
from .versioning import Declaration, VersionRange, job_version, parse_declaration

__all__ = ["ExecutionMiddleware", "Handler", "JobContext", "Worker"]

log = logging.getLogger("ojs.worker")

#: Longest a worker with free slots waits for more to free up before it fetches (seconds).
REFILL_HOLD = 0.05

#: A job handler: ``async def handler(ctx: JobContext) -> result``.
Handler = Callable[["JobContext"], Awaitable[Any]]
#: An execution middleware: ``async def mw(ctx, next) -> result``.
ExecutionMiddleware = Middleware["JobContext", Any]
H = TypeVar("H", bound=Handler)

_MAX_BACKTRACE_LINES = 50
_STRENGTH = {"running": 0, "quiet": 1, "terminate": 2}
_MAX_BACKTRACE_CHARS = 10_000


@attrs.define(eq=False)
class JobContext:
    """What a handler receives: the job as fetched and a way to heartbeat."""

    #: The job, as claimed by this worker (``state`` is ``active``).
    job: Job
    #: The id of the worker running the job.
    worker_id: str
    _worker: Worker = attrs.field(repr=False, alias="worker")
    #: A mutable store scoped to this execution, shared by the middleware and the handler
    #: (ojs-middleware.md §4.4): a trace middleware's span id for a logging one, say.
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.id

    @property
    def type(self) -> str:
        """The job's type."""
        return self.job.type

    @property
    def queue(self) -> str:
        """The queue the job was fetched from."""
        return self.job.queue

    @property
    def version(self) -> str | None:
        """The job's version (job versioning), ``None`` when unversioned."""
        return job_version(self.job)

    @property
    def args(self) -> list[Any]:
        """The job's arguments."""
        return self.job.args

    @property
    def meta(self) -> dict[str, Any]:
        """The job's metadata."""
        return self.job.meta

    @property
    def attempt(self) -> int:
        """This attempt's number; the first attempt is 1."""
        return self.job.attempt

    @property
    def parent_results(self) -> list[Any] | None:
        """Results of the workflow steps this job waited for (``None`` outside workflows)."""
        return self.job.parent_results

    async def heartbeat(self) -> str:
        """Heartbeat now (extending every in-flight job's visibility); returns the directive.

        Long handlers may call this between heartbeats. If this job was cancelled meanwhile,
        the handler is cancelled at its next ``await``.
        """
        return await self._worker.heartbeat()

    async def report_progress(
        self,
        progress: float | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        message: str | None = None,
    ) -> bool:
        """Report how far the job has got (progress extension): ``progress`` is the fraction
        done (0.0-1.0, clamped; never goes back within the attempt), ``data`` an object of
        details and ``message`` a line for humans. The report also heartbeats this job.

        Returns whether it was stored: ``False`` when the job is no longer this worker's
        (cancelled, say), which a handler may ignore, as progress is fire-and-forget.
        Invalid input raises :class:`~ojs_core.errors.ValidationError`.
        """
        body = {"progress": progress, "data": _json_copy(data, "data"), "message": message}
        service = self._worker.service
        limits = service.limits
        report = progress_ext.parse_progress(
            body, limits.max_progress_bytes, limits.max_checkpoint_bytes
        )
        outcome = await progress_ext.report_progress(service, self.job.id, report, self.worker_id)
        return outcome.accepted

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        """The checkpoint the job carried when this attempt fetched it (``None`` on a fresh
        start): resume from ``last_checkpoint.state``."""
        return self.job.checkpoint

    async def checkpoint(self, state: Any, *, step_index: int | None = None) -> Checkpoint:
        """Save ``state`` (any JSON value) as the job's checkpoint (durable-execution
        extension): if this attempt dies, the next one finds it in :attr:`last_checkpoint`.
        Raises :class:`~ojs_core.errors.ConflictError` when the job is no longer this
        attempt's, and a 413 error over ``Limits.max_checkpoint_bytes``."""
        service = self._worker.service
        request = checkpoints.parse_checkpoint(
            {
                "state": _json_copy(state, "state"),
                "step_index": step_index,
                "attempt": self.job.attempt,
            },
            service.limits.max_checkpoint_bytes,
        )
        return await checkpoints.save_checkpoint(service, self.job.id, request, self.worker_id)

    async def clear_checkpoint(self) -> bool:
        """Remove the job's checkpoint (completion removes it anyway); whether there was one."""
        return await checkpoints.delete_checkpoint(self._worker.service, self.job.id)


def _json_copy(value: Any, path: str) -> Any:
    """``value`` as the JSON a remote worker would have sent: a copy (the handler may go on
    changing its own object) holding only JSON types, or a 400 naming ``path``."""
    if value is None:
        return None
    try:
        return jsonio.loads(jsonio.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"must be JSON-serializable ({exc})", path=path) from None


@attrs.define(eq=False)
class _InFlight:
    job: Job
    task: asyncio.Task[None] | None = None
    #: ``running`` while the handler runs, ``settling`` while the ack/nack is sent.
    phase: str = "running"
    #: Why the worker cancelled the handler: ``shutdown`` (requeue) or ``lost`` (drop).
    cancel_reason: str | None = None


def _log_failure(job: Job, error: JobError) -> None:
    """One warning per failed attempt: the job, its type and attempt, and the error."""
    message = error.message if len(error.message) <= 500 else error.message[:500] + "..."
    kind = error.type or error.code
    log.warning(
        "job %s (%s) attempt %d failed: %s: %s",
        job.id,
        job.type,
        job.attempt,
        kind,
        message,
        extra={"job_type": job.type, "attempt": job.attempt, "error_type": kind},
    )


def _error_from_exception(exc: BaseException) -> JobError:
    lines = "".join(traceback.format_exception(exc)).splitlines()[-_MAX_BACKTRACE_LINES:]
    while lines and sum(len(line) for line in lines) > _MAX_BACKTRACE_CHARS:
        lines = lines[1:]
    cls = type(exc)
    retryable = getattr(exc, "retryable", None)
    return JobError(
        code="handler_error",
        type=cls.__name__,
        message=str(exc) or cls.__name__,
        retryable=retryable if isinstance(retryable, bool) else None,
        details={"error_class": f"{cls.__module__}.{cls.__qualname__}"},
        backtrace=lines,
    )


class Worker:
    """Runs handlers for jobs of ``queues`` (tried left to right) with bounded concurrency.

    ``visibility_timeout_ms`` is asked for at fetch and on every heartbeat (``None``: the job's
    own or the server default). ``handler_timeout`` (seconds) caps every handler; a job's
    ``timeout_ms`` caps its own handler when shorter. ``grace_period`` is how long
    :meth:`stop` lets running handlers finish. ``clock`` defaults to the service's clock.
    """

    def __init__(
        self,
        backend_or_service: Backend | JobService,
        queues: Sequence[str] | str = ("default",),
        *,
        concurrency: int = 10,
        fetch_batch: int | None = None,
        visibility_timeout_ms: int | None = None,
        heartbeat_interval: float = 5.0,
        handler_timeout: float | None = None,
        grace_period: float = 25.0,
        poll_wait: float = 2.0,
        worker_id: str | None = None,
        labels: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        middleware: MiddlewareChain[JobContext, Any] | None = None,
        pool: str | None = None,
        plan: QueuePlan | None = None,
    ) -> None:
        self.service: JobService = as_service(backend_or_service, clock)
        self.clock: Clock = clock or self.service.clock
        names = [queues] if isinstance(queues, str) else list(queues)
        if not names:
            raise ValueError("a worker needs at least one queue")
        self.queues: list[str] = [validate_queue(q, f"queues[{i}]") for i, q in enumerate(names)]
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if fetch_batch is not None and fetch_batch < 1:
            raise ValueError("fetch_batch must be at least 1")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if handler_timeout is not None and handler_timeout <= 0:
            raise ValueError("handler_timeout must be positive")
        if grace_period < 0 or poll_wait < 0:
            raise ValueError("grace_period and poll_wait must not be negative")
        self.concurrency = concurrency
        self.fetch_batch = fetch_batch or concurrency
        self.visibility_timeout_ms = visibility_timeout_ms
        self.heartbeat_interval = heartbeat_interval
        self.handler_timeout = handler_timeout
        self.grace_period = grace_period
        self.poll_wait = poll_wait
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid7()[-12:]}"
        self.labels = dict(labels or {})
        #: Fair scheduling: the worker's pool (declared in its heartbeats and fetches; a
        #: defined pool's queues and strategy govern its fetches) and its own strategy across
        #: ``queues`` (:class:`~ojs_core.queue_strategy.QueuePlan`; default list order).
        self.pool = None if pool is None else parse_pool_name(pool, "pool")
        self.plan = plan
        #: The execution middleware chain (see :mod:`ojs_core.middleware`).
        self.middleware: MiddlewareChain[JobContext, Any] = (
            middleware if middleware is not None else MiddlewareChain()
        )
        self._handlers: dict[str, Handler] = {}
        self._versions: dict[str, str] = {}
        self._declaration: Declaration | None = None
        self._inflight: dict[str, _InFlight] = {}
        self._state = "new"
        self._directive = "running"
        self._stop_requested = False
        #: Set for the last heartbeat, sent once every job in flight is settled.
        self._terminated = False
        self._grace: float | None = None
        self._changed = asyncio.Event()
        self._force = asyncio.Event()
        self._regrace = asyncio.Event()
        self._done = asyncio.Event()
        #: Acknowledgements of handlers that finish together are written together.
        self._acks = AckBatches(self.service, self.worker_id)
        self._fetch_task: asyncio.Task[list[Job]] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._signals: list[signal.Signals] = []
        self._signal_loop: asyncio.AbstractEventLoop | None = None

    # -- handlers -------------------------------------------------------------------------

    def register(self, job_type: str, handler: Handler, *, versions: str | None = None) -> None:
        """Run ``handler`` for jobs of ``job_type`` (one handler per type).

        ``versions`` (job versioning) is the range of job versions the handler accepts, such
        as ``">=1.0 <2.0"``: the server hands this worker only jobs of those versions (and
        unversioned ones); ``None`` (the default) accepts every version."""
        if not isinstance(job_type, str) or not TYPE_RE.match(job_type):
            raise ValueError(f"invalid job type {job_type!r}")
        if job_type in self._handlers:
            raise ValueError(f"a handler for {job_type!r} is already registered")
        if not callable(handler):
            raise TypeError("a handler must be an async callable")
        if versions is not None:
            VersionRange.parse(versions, f"versions of {job_type}")  # refused now, not at fetch
            self._versions[job_type] = versions
            self._declaration = parse_declaration(self._versions, "versions")
        self._handlers[job_type] = handler

    def handler(self, job_type: str, *, versions: str | None = None) -> Callable[[H], H]:
        """Decorator form of :meth:`register`: ``@worker.handler("email.send")``."""

        def decorate(fn: H) -> H:
            self.register(job_type, fn, versions=versions)
            return fn

        return decorate

    @property
    def versions(self) -> Declaration | None:
        """The job versions this worker declares (``None`` when no handler names any)."""
        return self._declaration

    @property
    def handlers(self) -> dict[str, Handler]:
        """The registered handlers by job type (a copy)."""
        return dict(self._handlers)

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``new``, ``running``, ``quiet`` (not fetching), ``stopping`` or ``stopped``."""
        return self._state

    @property
    def directive(self) -> str:
        """The last directive from the server: ``running``, ``quiet`` or ``terminate``."""
        return self._directive

    @property
    def reported_state(self) -> str:
        """What the heartbeat reports (graceful-shutdown extension): ``running``; ``quiet``
        from the moment shutdown begins (no more fetches; the jobs in flight drain);
        ``terminate`` in the last heartbeat, once they are settled."""
        if self._terminated:
            return "terminate"
        return "quiet" if self._stop_requested else "running"

    @property
    def active_jobs(self) -> list[str]:
        """Ids of the jobs in flight."""
        return list(self._inflight)

    @property
    def fetching(self) -> bool:
        """Whether a fetch (or its long-poll) is in progress right now."""
        return self._fetch_task is not None and not self._fetch_task.done()

    # -- running --------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the worker in a background task on the running loop and return the task."""
        if self._run_task is not None:
            raise RuntimeError("the worker was already started")
        self._run_task = asyncio.get_running_loop().create_task(
            self.run(), name=f"ojs-worker-{self.worker_id}"
        )
        return self._run_task

    async def run(self) -> None:
        """Process jobs until stopped (:meth:`stop`, a signal, or a ``terminate`` directive).

        A worker runs once; it returns after shutdown has requeued whatever did not finish.
        """
        if self._state != "new":
            raise RuntimeError(f"the worker cannot run again (state {self._state})")
        self._state = "running"
        tune_gc()  # a process that runs many jobs: see ojs_core.gc_tuning
        heartbeats: asyncio.Task[None] | None = None
        try:
            await self._beat_safely()  # registration; may already carry a directive
            heartbeats = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name=f"ojs-heartbeat-{self.worker_id}"
            )
            await self._fetch_loop()
        finally:
            self._state = "stopping"
            self._stop_requested = True
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                self._force.set()
            try:
                # Announce the quiet phase at once (graceful shutdown §5.1): the server then
                # hands this worker no job, whichever replica it asks.
                await self._beat_safely()
                await self._drain()
                await self._acks.close()
            finally:
                await cancel_and_wait(heartbeats)
                self._terminated = True
                await self._beat_safely()  # report that no job is in flight any more
                self.remove_signal_handlers()
                self._state = "stopped"
                self._done.set()

    def request_stop(self, grace: float | None = None, *, force: bool = False) -> None:
        """Ask the worker to shut down without waiting for it (safe from signal handlers).

        ``grace`` overrides ``grace_period`` for this shutdown. ``force`` ends the grace period
        now: handlers still running are cancelled at once and their jobs requeued.
        """
        if grace is not None:
            self._grace = grace
            self._regrace.set()
        if force:
            self._force.set()
        self._stop_requested = True
        self._interrupt_fetch()
        self._changed.set()

    async def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully and wait until the worker has stopped.

        Fetching stops at once; jobs in flight get ``grace`` seconds (default ``grace_period``)
        to finish; handlers still running then are cancelled and their jobs requeued without
        consuming the attempt.
        """
        self.request_stop(grace)
        if self._run_task is not None:
            await self._run_task
        elif self._state == "new":
            self._state = "stopped"
            self._done.set()
        else:
            await self._done.wait()

    def install_signal_handlers(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Stop gracefully on SIGTERM/SIGINT (a second signal stops at once); Unix only.

        The handlers are removed when the worker stops.
        """
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._signals.append(sig)
        self._signal_loop = loop

    def remove_signal_handlers(self) -> None:
        """Remove the handlers :meth:`install_signal_handlers` installed."""
        loop, self._signal_loop = self._signal_loop, None
        if loop is not None and not loop.is_closed():
            for sig in self._signals:
                loop.remove_signal_handler(sig)
        self._signals = []

    def _on_signal(self, sig: signal.Signals) -> None:
        again = self._stop_requested
        log.info(
            "worker %s received %s; %s",
            self.worker_id,
            sig.name,
            "stopping at once" if again else "shutting down gracefully",
        )
        self.request_stop(force=again)

    # -- fetching -------------------------------------------------------------------------

    def _interrupt_fetch(self) -> None:
        task = self._fetch_task
        if task is not None and not task.done():
            task.cancel()

    async def _fetch_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        hold_until: float | None = None
        while not self._stop_requested:
            self._changed.clear()
            free = self.concurrency - len(self._inflight)
            if self._directive != "running" or free <= 0:
                await self._changed.wait()
                continue
            # Refill in batches: with every slot but one busy, fetching a single job per
            # finished handler would cost a fetch per job. Wait for half a batch of free
            # slots, but never longer than REFILL_HOLD: long handlers must not keep the
            # other slots idle.
            refill = max(1, min(self.fetch_batch, self.concurrency) // 2)
            if free < refill and self._inflight:
                now = loop.time()
                if hold_until is None:
                    hold_until = now + REFILL_HOLD
                if now < hold_until:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), hold_until - now)
                    continue
            hold_until = None
            task = asyncio.get_running_loop().create_task(
                self.service.fetch(
                    self.queues,
                    min(free, self.fetch_batch, self.service.limits.max_fetch_count),
                    self.worker_id,
                    visibility_ms=self.visibility_timeout_ms,
                    wait_ms=round(self.poll_wait * 1000),
                    versions=self.versions,
                    plan=self.plan,
                    pool=self.pool,
                )
            )
            self._fetch_task = task
            try:
                jobs = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                jobs = []  # interrupted by a stop request or a quiet directive
            except Exception:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                log.exception("worker %s: fetch failed; retrying in %.1fs", self.worker_id, delay)
                await self._pause(delay)
                continue
            finally:
                self._fetch_task = None
            failures = 0
            for job in jobs:
                self._spawn(job)

    async def _pause(self, seconds: float) -> None:
        """Sleep on the worker's clock; a stop request or directive change ends it early."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                t.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    def _spawn(self, job: Job) -> None:
        stale = self._inflight.get(job.id)
        if stale is not None and stale.phase == "running" and stale.task is not None:
            # Our earlier claim expired and we fetched the job again: the old run is void.
            stale.cancel_reason = "lost"
            stale.task.cancel()
        entry = _InFlight(job)
        self._inflight[job.id] = entry
        entry.task = asyncio.get_running_loop().create_task(
            self._execute(entry), name=f"ojs-job-{job.id}"
        )

    # -- executing ------------------------------------------------------------------------

    def _timeout_for(self, job: Job) -> float | None:
        limits = [t for t in (self.handler_timeout, (job.timeout_ms or 0) / 1000) if t]
        return min(limits) if limits else None

    async def _traced_invoke(self, ctx: JobContext) -> tuple[bool, Any]:
        """:meth:`_invoke`, inside the run's span when the service is traced."""
        tracer = self.service.tracer
        if tracer is None:
            return await self._invoke(ctx)
        with tracer.process(ctx.job, self.worker_id) as outcome:
            ok, value = await self._invoke(ctx)
            outcome(None if ok else value)
            return ok, value

    async def _invoke(self, ctx: JobContext) -> tuple[bool, Any]:
        """Run the middleware chain and handler; ``(True, result)`` or ``(False, JobError)``."""
        job = ctx.job
        handler = self._handlers.get(job.type)
        if handler is None:
            return False, JobError(
                code="unknown_job_type",
                type="unknown_job_type",
                message=f"worker {self.worker_id} has no handler for job type {job.type!r}",
                retryable=False,
            )

        async def terminal(c: JobContext) -> Any:
            return await handler(c)

        limit = self._timeout_for(job)
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                result = await self.middleware.run(ctx, terminal)
        except TimeoutError as exc:
            if not timer.expired():
                return False, _error_from_exception(exc)
            return False, JobError(
                code="timeout",
                type="timeout",
                message=f"handler exceeded its timeout of {limit:g} s",
                retryable=True,
                details={"timeout_kind": "execution", "limit_seconds": limit},
            )
        except Exception as exc:
            return False, _error_from_exception(exc)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            return False, JobError(
                code="invalid_result",
                type="invalid_result",
                message=f"the handler's result is not JSON-serialisable: {exc}",
                retryable=False,
            )
        return True, result

    async def _execute(self, entry: _InFlight) -> None:
        job = entry.job
        # Every line logged while the job runs (the handler's own too) carries its ids.
        with log_context(job_id=job.id, queue=job.queue, worker_id=self.worker_id):
            await self._execute_in_context(entry, job)

    async def _execute_in_context(self, entry: _InFlight, job: Job) -> None:
        ctx = JobContext(job, self.worker_id, worker=self)
        try:
            try:
                ok, value = await self._traced_invoke(ctx)
            except Exception as exc:  # not the handler's (its errors are values): ours
                log.exception("job %s: running it failed in %s", job.id, self.worker_id)
                ok, value = False, _error_from_exception(exc)
            except asyncio.CancelledError:
                entry.phase = "settling"
                reason = entry.cancel_reason
                if reason is not None:
                    # Our own cancellation, handled here: the task itself goes on normally.
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                if reason == "lost":
                    log.info(
                        "job %s is no longer held by %s; handler abandoned", job.id, self.worker_id
                    )
                    return
                await self._requeue(job)
                if reason is None:
                    raise
                return
            entry.phase = "settling"
            if not ok:
                _log_failure(job, value)
            try:
                if ok:
                    await self._acks.ack(job.id, value)
                else:
                    await self.service.nack(job.id, value, self.worker_id)
            except (ConflictError, NotFoundError) as exc:
                log.warning("job %s could not be settled by %s: %s", job.id, self.worker_id, exc)
            except Exception:
                log.exception("job %s could not be settled by %s", job.id, self.worker_id)
        finally:
            if self._inflight.get(job.id) is entry:
                del self._inflight[job.id]
            self._changed.set()

    async def _requeue(self, job: Job) -> None:
        error = JobError(
            code="shutdown",
            type="shutdown",
            message=f"worker {self.worker_id} shut down before the job finished",
            retryable=True,
        )
        try:
            await self.service.nack(job.id, error, self.worker_id, requeue=True)
        except (ConflictError, NotFoundError) as exc:
            log.warning("job %s could not be requeued by %s: %s", job.id, self.worker_id, exc)
        except Exception:
            log.exception("job %s could not be requeued by %s", job.id, self.worker_id)

    async def _drain(self) -> None:
        """Wait for jobs in flight up to the grace period, then cancel and requeue the rest."""
        started = self.clock.now()
        pending: set[asyncio.Future[Any]] = {
            e.task for e in self._inflight.values() if e.task is not None
        }
        while pending and not self._force.is_set():
            grace = self.grace_period if self._grace is None else self._grace
            left = grace - (self.clock.now() - started).total_seconds()
            if left <= 0:
                break
            self._regrace.clear()
            timer = asyncio.ensure_future(self.clock.sleep(left))
            forced = asyncio.ensure_future(self._force.wait())
            regrace = asyncio.ensure_future(self._regrace.wait())  # stop() with a new grace
            stoppers = (timer, forced, regrace)
            try:
                done, _ = await asyncio.wait(
                    pending.union(stoppers), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for t in stoppers:
                    t.cancel()
                await asyncio.gather(*stoppers, return_exceptions=True)
            pending -= done
            if timer in done:
                break
        for entry in list(self._inflight.values()):
            if entry.phase == "running" and entry.task is not None:
                entry.cancel_reason = "shutdown"
                entry.task.cancel()
        remaining = [e.task for e in self._inflight.values() if e.task is not None]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)

    # -- heartbeats -----------------------------------------------------------------------

    async def heartbeat(self) -> str:
        """Send one heartbeat now and act on the answer; returns the directive.

        Extends the visibility of every job whose handler is running. A job the server no
        longer counts as this worker's (cancelled, or reclaimed) has its handler cancelled.
        """
        ids = [jid for jid, e in self._inflight.items() if e.phase == "running"]
        info: dict[str, Any] = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "state": self.reported_state,
        }
        if self.labels:
            info["labels"] = dict(self.labels)
        if self._versions:
            info["versions"] = dict(self._versions)
        if self.pool is not None:
            info["pool"] = self.pool
        # A heartbeat names at most limits.max_heartbeat_jobs ids: a worker running more sends
        # several, and acts on the strongest directive among the answers.
        step = self.service.limits.max_heartbeat_jobs
        extended: set[str] = set()
        directive = "running"
        for start in range(0, max(len(ids), 1), step):
            outcome = await self.service.heartbeat(
                self.worker_id, ids[start : start + step], self.visibility_timeout_ms, info
            )
            extended.update(outcome.extended)
            if _STRENGTH.get(outcome.directive, 0) >= _STRENGTH.get(directive, 0):
                directive = outcome.directive
        for jid in ids:
            entry = self._inflight.get(jid)
            if jid not in extended and entry is not None and entry.phase == "running":
                entry.cancel_reason = "lost"
                if entry.task is not None:
                    entry.task.cancel()
        self._apply_directive(directive)
        return directive

    async def _beat_safely(self) -> None:
        try:
            await self.heartbeat()
        except Exception:
            log.exception("worker %s: heartbeat failed", self.worker_id)

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_interval)
            await self._beat_safely()

    def _apply_directive(self, directive: str) -> None:
        previous = self._directive
        if directive == previous or previous == "terminate":
            return  # terminate cannot be undone
        self._directive = directive
        log.info("worker %s: directive %s -> %s", self.worker_id, previous, directive)
        if directive == "terminate":
            self.request_stop()
        elif self._state in ("running", "quiet"):
            self._state = "quiet" if directive == "quiet" else "running"
            if directive == "quiet":
                self._interrupt_fetch()
            self._changed.set()
