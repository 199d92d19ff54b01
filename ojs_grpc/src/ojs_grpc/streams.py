"""The two server-streaming RPCs (gRPC binding §10): ``StreamJobs`` and ``StreamEvents``.

``StreamJobs`` pushes jobs to a worker as they become available, without polling: it waits in
:meth:`JobService.fetch <ojs_core.service.JobService.fetch>` exactly as an HTTP long-poll does
(woken by the backend's arrival notifications, or at once by an arrival in this process). It
never holds more unacknowledged jobs for the stream than the worker's ``max_concurrent``: a
job counts until it leaves ``active`` for this worker (acked, failed, cancelled, or its
visibility timeout expired). An event about one of its jobs published in this process frees
the slot at once; while the worker has no free slot the stream also re-reads its jobs every
``slot_check_s`` (acknowledgements made through another replica). Jobs are claimed with a
visibility timeout like any fetch, so a stream that breaks loses none: a job the worker
received comes back when its timeout expires (the worker may still ack it until then); a job
claimed but never written to the stream is put back at once. The count is per stream: a
reconnecting worker starts with a fresh allowance (``docs/grpc.md``).

``StreamEvents`` is one more subscriber of the process's event fan-out
(:class:`ojs_core.fanout.EventHub`, shared with the HTTP binding's SSE and WebSocket streams).

Both re-check the caller's credentials while they live (``StreamJobs`` before each push,
``StreamEvents`` once per keepalive interval), so a revoked key or an expired token ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ojs_core.errors import OJSError, ValidationError
from ojs_core.events import EVENT_PATTERN, event_type_matches
from ojs_core.fanout import Channel, SlowConsumerError, StreamEndedError, parse_channel
from ojs_core.limits import MAX_VISIBILITY_MS, check_count
from ojs_core.model import Event, JobError
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.tenant_scope import event_visible, require_owned, require_workflow_owned

from . import convert
from ._gen import events_pb2, worker_pb2
from .auth import authorize
from .fields import bounded_id, worker_id_of
from .rpc import Context
from .settings import GrpcSettings
from .tenant import tenant_of
from .values import to_timestamp

if TYPE_CHECKING:
    from .servicer import OJSServicer

__all__ = ["JobStreams", "StreamClosedError", "stream_events"]

_VISIBILITY = "x-ojs-visibility-timeout-ms"


class StreamClosedError(OJSError):
    """A stream ended by the server: it is shutting down, or the client fell behind
    (``UNAVAILABLE``: reopen the stream, here or on another replica)."""

    code = "stream_closed"
    status = 503
    retryable = True


class _Stream:
    """One ``StreamJobs`` call: its worker, its slots and the jobs it holds."""

    def __init__(self, worker_id: str | None, slots: int) -> None:
        self.worker_id = worker_id
        self.slots = slots
        self.held: set[str] = set()
        self.hint = asyncio.Event()
        #: Whether the stream is waiting for a slot (all ``slots`` jobs unacknowledged).
        self.full = False

    def heard(self, events: Sequence[Event]) -> None:
        """Note an event about a held job (it may have left ``active``)."""
        held = self.held
        if held and any(e.data.get("job_id") in held and e.type != "job.started" for e in events):
            self.hint.set()

    async def release(self, service: JobService) -> None:
        """Forget the held jobs that are no longer ``active`` for this worker."""
        self.hint.clear()
        ids = list(self.held)
        jobs = await service.backend.get_jobs(ids)
        for job_id, job in zip(ids, jobs, strict=True):
            if job is None or job.state is not JobState.ACTIVE or job.worker_id != self.worker_id:
                self.held.discard(job_id)

    async def free(self, service: JobService, check_s: float) -> int:
        """The free slots, once there is one."""
        while True:
            if self.hint.is_set():
                await self.release(service)
            if len(self.held) < self.slots:
                self.full = False
                return self.slots - len(self.held)
            self.full = True
            with contextlib.suppress(TimeoutError):  # not wait_for: see ojs_http.webhook_runner
                async with asyncio.timeout(check_s):
                    await self.hint.wait()
            await self.release(service)


def _visibility(metadata: Any) -> int | None:
    """The optional ``x-ojs-visibility-timeout-ms`` metadata (the proto has no field)."""
    for key, value in metadata or ():
        if key == _VISIBILITY:
            if isinstance(value, str) and value.isascii() and value.isdigit():
                ms = int(value)
                if 1 <= ms <= MAX_VISIBILITY_MS:
                    return ms
            raise ValidationError(
                f"must be a number of milliseconds between 1 and {MAX_VISIBILITY_MS}",
                path=f"metadata.{_VISIBILITY}",
            )
    return None


class JobStreams:
    """Serves ``StreamJobs`` calls; :meth:`close` ends them all (shutdown)."""

    def __init__(self, service: JobService, settings: GrpcSettings) -> None:
        self.service = service
        self.settings = settings
        self._streams: set[_Stream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        # One bound method, kept: ``Observers.remove`` matches by identity.
        self._observer = self._observe
        service.observers.add(self._observer)

    def _observe(self, events: Sequence[Event]) -> None:
        for stream in self._streams:
            stream.heard(events)

    @property
    def open_streams(self) -> int:
        """Streams being served."""
        return len(self._streams)

    def holding(self) -> list[tuple[str | None, int, bool]]:
        """Each open stream's worker id, the unacknowledged jobs it holds, and whether it is
        waiting for a free slot (for tests and diagnostics)."""
        return [(s.worker_id, len(s.held), s.full) for s in self._streams]

    async def serve(
        self, servicer: OJSServicer, request: worker_pb2.StreamJobsRequest, context: Context
    ) -> None:
        """Push jobs of ``request.queues`` until the client goes away or the server stops."""
        svc = self.service
        queues = list(request.queues)
        if not queues:
            raise ValidationError("must list at least one queue", path="queues")
        if request.max_concurrent < 0:
            raise ValidationError("must be at least 1", path="max_concurrent")
        slots = request.max_concurrent or 1
        check_count(slots, svc.limits.max_fetch_count, "max_concurrent", "jobs")
        worker_id = worker_id_of(request.worker_id)
        metadata = context.invocation_metadata() or ()
        visibility = _visibility(metadata)
        tenant = tenant_of(context)  # a scoped stream is sent its tenant's jobs only
        if self._closing:
            raise StreamClosedError("the server is shutting down; reopen the stream elsewhere")
        stream = _Stream(worker_id, slots)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(stream)
        self._tasks.add(task)
        try:
            while True:
                free = await stream.free(svc, self.settings.slot_check_s)
                jobs = await svc.fetch(
                    queues,
                    free,
                    worker_id,
                    visibility,
                    wait_ms=self.settings.stream_wait_ms,
                    tenant=tenant,
                )
                # The credentials again before every push (and every idle wait): a key
                # revoked by a reload, or a token that expired, ends the stream here.
                try:
                    await authorize(servicer.authenticate, "StreamJobs", metadata)
                except BaseException:  # refused, or the check failed: none of them was sent
                    await asyncio.shield(self._put_back(jobs, worker_id))
                    raise
                for i, job in enumerate(jobs):
                    stream.held.add(job.id)
                    try:
                        await context.write(convert.job_message(job))
                    except BaseException:
                        # The jobs after this one never left: back to available at once. This
                        # one may have reached the worker: its visibility timeout decides.
                        await asyncio.shield(self._put_back(jobs[i + 1 :], worker_id))
                        raise
        except asyncio.CancelledError:
            if not self._closing:
                raise
            raise StreamClosedError(
                "the server is shutting down; reopen the stream elsewhere"
            ) from None
        finally:
            self._streams.discard(stream)
            self._tasks.discard(task)

    async def _put_back(self, jobs: Sequence[Any], worker_id: str | None) -> None:
        returned = JobError(code="cancelled", message="stream closed before delivery")
        for job in jobs:
            with contextlib.suppress(OJSError):
                await self.service.nack(job.id, returned, worker_id, requeue=True)

    def close(self) -> None:
        """End every stream (each answers ``UNAVAILABLE``), refuse new ones, and stop
        observing the service (which may outlive this server)."""
        self._closing = True
        self.service.observers.remove(self._observer)
        for task in tuple(self._tasks):
            task.cancel()


def _channels(request: events_pb2.StreamEventsRequest) -> list[Channel]:
    """The fan-out channels that carry everything the filters may select (checking every
    queue name, and the job id, once)."""
    by_queue = [parse_channel("queue:" + q, f"queues[{i}]") for i, q in enumerate(request.queues)]
    if request.job_id:
        return [parse_channel("job:" + request.job_id, "job_id")]
    return by_queue or [Channel("all")]


async def stream_events(
    servicer: OJSServicer, request: events_pb2.StreamEventsRequest, context: Context
) -> None:
    """Send the events matching every filter of ``request`` (AND), a ``stream.keepalive``
    event when idle, until the client goes away; a client that falls behind, and every stream
    at shutdown, ends with ``UNAVAILABLE`` (reopen it). A call scoped by ``x-ojs-tenant`` is
    sent only the events its tenant may see (``tenant_scope.event_visible``), and its
    ``job_id`` or ``workflow_id`` must be the tenant's (``NOT_FOUND`` otherwise)."""
    channels = _channels(request)
    queues = set(request.queues)
    types = list(request.event_types)
    for i, kind in enumerate(types):
        if not EVENT_PATTERN.match(kind):
            raise ValidationError(
                "must be an event type such as job.completed, or a prefix such as job.*",
                path=f"event_types[{i}]",
            )
    # A scoped stream (the x-ojs-tenant metadata) is sent its tenant's events only, and
    # another tenant's job or workflow is NOT_FOUND, as for the HTTP event routes.
    tenant = tenant_of(context)
    svc = servicer.service
    if request.job_id:
        await require_owned(svc, request.job_id, tenant)
    workflow_jobs: set[str] = set()
    if request.workflow_id:
        workflow_id = bounded_id(request.workflow_id, "workflow_id")
        await require_workflow_owned(svc, workflow_id, tenant)
        workflow = await svc.get_workflow(workflow_id)
        workflow_jobs = {step["job_id"] for step in workflow["steps"]}

    def wanted(event: Event) -> bool:
        if not event_visible(svc, event, tenant):
            return False
        data = event.data
        if queues and data.get("queue") not in queues:
            return False
        if types and not any(event_type_matches(t, event.type) for t in types):
            return False
        if request.job_id and data.get("job_id") != request.job_id:
            return False
        if request.workflow_id:
            ours = (
                data.get("workflow_id") == request.workflow_id
                or event.subject == request.workflow_id
                or data.get("job_id") in workflow_jobs
            )
            if not ours:
                return False
        return True

    hub = servicer.hub
    metadata = context.invocation_metadata() or ()
    keepalive_s = servicer.settings.event_keepalive_s
    sub = await hub.subscribe(channels)
    keepalives = 0
    checked = time.monotonic()
    try:
        while True:
            if time.monotonic() - checked >= keepalive_s:
                # The credentials again, once per keepalive interval: a key revoked by a
                # reload, or a token that expired, ends the stream here.
                await authorize(servicer.authenticate, "StreamEvents", metadata)
                checked = time.monotonic()
            try:
                event = await sub.next(keepalive_s)
            except SlowConsumerError:
                raise StreamClosedError(
                    "this client fell too far behind the events; reopen the stream"
                ) from None
            except StreamEndedError:
                raise StreamClosedError(
                    "the server is shutting down; reopen the stream elsewhere"
                ) from None
            if event is None:
                keepalives += 1
                alive = events_pb2.Event(id=f"keepalive-{keepalives}", type="stream.keepalive")
                to_timestamp(alive.timestamp, servicer.service.now())
                await context.write(alive)
            elif wanted(event):
                await context.write(convert.event_message(event))
    finally:
        hub.unsubscribe(sub)
