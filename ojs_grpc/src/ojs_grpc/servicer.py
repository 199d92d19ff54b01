"""``ojs.v1.OJSService``: every RPC a thin adapter over :class:`~ojs_core.service.JobService`.

Each RPC makes the same service call as the HTTP route doing the same operation (named in its
docstring), with the request converted by :mod:`ojs_grpc.convert`; the streaming RPCs are in
:mod:`ojs_grpc.streams`. Who may call what is :data:`ojs_grpc.auth.ACCESS`. The
``x-ojs-tenant`` metadata scopes a call as ``X-OJS-Tenant`` scopes a request
(:mod:`ojs_grpc.tenant`).
"""

from __future__ import annotations

from typing import Any

from ojs_core import jsonio
from ojs_core.envelope import parse_job_error
from ojs_core.errors import PayloadTooLargeError, ValidationError
from ojs_core.fanout import EventHub
from ojs_core.health import probe_backend
from ojs_core.limits import MAX_VISIBILITY_MS, BatchTooLargeError
from ojs_core.manifest import core_specs, official_extensions
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.tenancy import inject
from ojs_core.tenant_scope import (
    require_owned,
    require_workflow_owned,
    scoped_dead_letter,
    scoped_queue_stats,
)

from . import convert
from ._gen import (
    events_pb2,
    job_pb2,
    queue_pb2,
    service_pb2,
    service_pb2_grpc,
    worker_pb2,
    workflow_pb2,
)
from .auth import TokenAuthenticator
from .fields import bounded_id, required, worker_id_of
from .rpc import Context, rpc
from .settings import GrpcSettings
from .streams import JobStreams, stream_events
from .tenant import tenant_of
from .values import dict_to_struct, duration_ms, struct_to_dict, to_timestamp

__all__ = ["OJSServicer"]

_HEALTH = {
    "ok": service_pb2.HEALTH_STATUS_OK,
    "degraded": service_pb2.HEALTH_STATUS_DEGRADED,
    "down": service_pb2.HEALTH_STATUS_UNHEALTHY,
}
_DIRECTIVES = {
    "running": worker_pb2.WORKER_STATE_RUNNING,
    "quiet": worker_pb2.WORKER_STATE_QUIET,
    "terminate": worker_pb2.WORKER_STATE_TERMINATE,
}
_REPORTED = {v: k for k, v in _DIRECTIVES.items()}


def _page(limit: int, cursor: str, default: int, maximum: int) -> tuple[int, int]:
    """``limit`` (0: ``default``) and the offset a ``cursor`` (digits) names."""
    if limit < 0 or limit > maximum:
        raise ValidationError(f"must be between 1 and {maximum}", path="limit")
    if cursor and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 12):
        raise ValidationError("must be a cursor this server returned", path="cursor")
    return limit or default, int(cursor or 0)


class OJSServicer(service_pb2_grpc.OJSServiceServicer):
    """The RPCs of ``ojs.v1.OJSService`` over ``service``; ``hub`` is the process's event
    fan-out (shared with the HTTP binding's streams when both are served)."""

    def __init__(
        self,
        service: JobService,
        hub: EventHub,
        settings: GrpcSettings,
        authenticate: TokenAuthenticator | None = None,
    ) -> None:
        self.service = service
        self.hub = hub
        self.settings = settings
        self.authenticate = authenticate
        self.job_streams = JobStreams(service, settings)

    def _check_size(self, body: Any, index: int | None = None) -> None:
        """Refuse a job larger than ``max_envelope_bytes`` as JSON (as HTTP measures it).
        Always measured: the protobuf size is no bound on it (a control character is one
        byte in protobuf and six, ``\\u0001``, in JSON)."""
        limit = self.settings.max_envelope_bytes
        size = len(jsonio.dumps(body, default=str))
        if size > limit:
            where = f"jobs[{index}] " if index is not None else ""
            raise PayloadTooLargeError(
                f"{where}envelope is {size} bytes; the limit is {limit}",
                details={"size": size, "limit": limit}
                | ({"index": index} if index is not None else {}),
            )

    # -- system ---------------------------------------------------------------------------

    @rpc
    async def Manifest(
        self, request: service_pb2.ManifestRequest, context: Context
    ) -> service_pb2.ManifestResponse:
        """GET /ojs/manifest."""
        svc = self.service
        registry = svc.schemas
        # The core specifications, then the core's extensions (the HTTP-only ones, progress
        # and the like, are not served here).
        extensions = [
            e["uri"] for e in (*core_specs(), *official_extensions(svc.backend, registry))
        ]
        return service_pb2.ManifestResponse(
            ojs_version="1.0",
            implementation=service_pb2.Implementation(
                name=self.settings.implementation_name,
                version=self.settings.implementation_version,
                language="python",
            ),
            conformance_level=4,
            protocols=list(self.settings.protocols),
            backend=svc.backend.name,
            extensions=extensions,
            schema_validation=registry.available and registry.mode != "off",
        )

    @rpc
    async def Health(
        self, request: service_pb2.HealthRequest, context: Context
    ) -> service_pb2.HealthResponse:
        """GET /ojs/v1/health: ``OK``, ``DEGRADED`` (slow backend) or ``UNHEALTHY``."""
        svc = self.service
        probe = await probe_backend(svc.backend)
        out = service_pb2.HealthResponse(status=_HEALTH[probe.status])
        to_timestamp(out.timestamp, svc.now())
        backend: dict[str, Any] = {
            "type": svc.backend.name,
            "status": probe.status,
            "latency_ms": probe.latency_ms,
        }
        if probe.error:
            backend["error"] = probe.error
        uptime = int((svc.now() - svc.started_at).total_seconds())
        dict_to_struct(
            out.details,
            {
                "backend": backend,
                "version": self.settings.implementation_version,
                "uptime_seconds": uptime,
            },
        )
        return out

    # -- jobs -----------------------------------------------------------------------------

    @rpc
    async def Enqueue(
        self, request: job_pb2.EnqueueRequest, context: Context
    ) -> job_pb2.EnqueueResponse:
        """POST /ojs/v1/jobs (a unique ``ignore`` answers the existing job)."""
        options = request.options if request.HasField("options") else None
        body = convert.enqueue_body(request.type, request.args, options, self.service.now())
        body = inject(body, tenant_of(context), "options")
        self._check_size(body)
        outcome = await self.service.enqueue(body)
        out = job_pb2.EnqueueResponse()
        convert.job_message(outcome.job, out.job)
        return out

    @rpc
    async def EnqueueBatch(
        self, request: job_pb2.EnqueueBatchRequest, context: Context
    ) -> job_pb2.EnqueueBatchResponse:
        """POST /ojs/v1/jobs/batch: all jobs or none (``errors`` stays empty)."""
        svc = self.service
        if not request.jobs:
            raise ValidationError("must be a non-empty array", path="jobs")
        if len(request.jobs) > svc.limits.max_batch_jobs:
            raise BatchTooLargeError(len(request.jobs), svc.limits.max_batch_jobs)
        now = svc.now()
        defaults = request.default_options
        tenant = tenant_of(context)
        bodies = []
        for i, entry in enumerate(request.jobs):
            options = convert.merged_options(defaults, entry.options)
            body = convert.enqueue_body(entry.type, entry.args, options, now, f"jobs[{i}]")
            body = inject(body, tenant, f"jobs[{i}].options")
            self._check_size(body, i)
            bodies.append(body)
        outcomes = await svc.enqueue_batch(bodies)
        out = job_pb2.EnqueueBatchResponse(count=len(outcomes))
        for outcome in outcomes:
            convert.job_message(outcome.job, out.jobs.add())
        return out

    @rpc
    async def GetJob(
        self, request: job_pb2.GetJobRequest, context: Context
    ) -> job_pb2.GetJobResponse:
        """GET /ojs/v1/jobs/{id}."""
        job = await self.service.get(required(request.job_id, "job_id"), tenant=tenant_of(context))
        out = job_pb2.GetJobResponse()
        convert.job_message(job, out.job)
        return out

    @rpc
    async def CancelJob(
        self, request: job_pb2.CancelJobRequest, context: Context
    ) -> job_pb2.CancelJobResponse:
        """DELETE /ojs/v1/jobs/{id} (``reason`` is not stored: the core has no field for it)."""
        _, job = await self.service.cancel(
            required(request.job_id, "job_id"), tenant=tenant_of(context)
        )
        out = job_pb2.CancelJobResponse()
        convert.job_message(job, out.job)
        return out

    # -- workers --------------------------------------------------------------------------

    @rpc
    async def Fetch(
        self, request: worker_pb2.FetchRequest, context: Context
    ) -> worker_pb2.FetchResponse:
        """POST /ojs/v1/workers/fetch without a long-poll (``StreamJobs`` is the waiting form)."""
        if request.count < 0:
            raise ValidationError("must be at least 1", path="count")
        jobs = await self.service.fetch(
            list(request.queues),
            request.count or 1,
            worker_id_of(request.worker_id),
            tenant=tenant_of(context),
        )
        out = worker_pb2.FetchResponse()
        for job in jobs:
            convert.job_message(job, out.jobs.add())
        return out

    @rpc
    async def Ack(self, request: worker_pb2.AckRequest, context: Context) -> worker_pb2.AckResponse:
        """POST /ojs/v1/workers/ack."""
        result = struct_to_dict(request.result, "result") if request.HasField("result") else None
        await self.service.ack(required(request.job_id, "job_id"), result)
        return worker_pb2.AckResponse(acknowledged=True)

    @rpc
    async def Nack(
        self, request: worker_pb2.NackRequest, context: Context
    ) -> worker_pb2.NackResponse:
        """POST /ojs/v1/workers/nack: retried or discarded by the job's retry policy."""
        raw: dict[str, Any] = {}
        if request.HasField("error"):
            error = request.error
            raw = {"code": error.code or "handler_error", "message": error.message}
            # proto3 cannot tell "false" from "not sent": only ``true`` is taken as said, and
            # the retry policy (non_retryable_errors) decides otherwise, as the Go servers do.
            if error.retryable:
                raw["retryable"] = True
            if error.backtrace:
                raw["backtrace"] = error.backtrace
            if error.HasField("details"):
                raw["details"] = struct_to_dict(error.details, "error.details")
        job = await self.service.nack(required(request.job_id, "job_id"), parse_job_error(raw))
        out = worker_pb2.NackResponse(state=convert.job_message(job).state)
        if job.state is JobState.RETRYABLE and job.next_attempt_at is not None:
            to_timestamp(out.next_attempt_at, job.next_attempt_at)
        return out

    @rpc
    async def Heartbeat(
        self, request: worker_pb2.HeartbeatRequest, context: Context
    ) -> worker_pb2.HeartbeatResponse:
        """POST /ojs/v1/workers/heartbeat for one job (``id``), answering the directive."""
        worker_id = required(worker_id_of(request.worker_id) or "", "worker_id")
        visibility = None
        if request.HasField("extend_by"):
            # As over HTTP (``visibility_timeout_ms``): 1 ms to one day.
            visibility = duration_ms(request.extend_by, "extend_by", maximum=MAX_VISIBILITY_MS)
            if visibility < 1:
                raise ValidationError(
                    f"must be between 1 and {MAX_VISIBILITY_MS} ms", path="extend_by"
                )
        info: dict[str, Any] = {}
        if request.current_state:
            if request.current_state not in _REPORTED:
                raise ValidationError("is not a known worker state", path="current_state")
            info["state"] = _REPORTED[request.current_state]
        jobs = [request.id] if bounded_id(request.id, "id") else []
        outcome = await self.service.heartbeat(worker_id, jobs, visibility, info)
        out = worker_pb2.HeartbeatResponse(directed_state=_DIRECTIVES[outcome.directive])
        if request.id and request.id in outcome.extended:
            job = await self.service.get(request.id)
            if job.visible_until is not None:
                to_timestamp(out.new_deadline, job.visible_until)
        return out

    @rpc
    async def StreamJobs(self, request: worker_pb2.StreamJobsRequest, context: Context) -> None:
        """The streamed fetch (:class:`ojs_grpc.streams.JobStreams`)."""
        await self.job_streams.serve(self, request, context)

    @rpc
    async def StreamEvents(self, request: events_pb2.StreamEventsRequest, context: Context) -> None:
        """GET /ojs/v1/events/stream as ``Event`` messages (``streams.stream_events``)."""
        await stream_events(self, request, context)

    # -- queues and dead letter -----------------------------------------------------------

    @rpc
    async def ListQueues(
        self, request: queue_pb2.ListQueuesRequest, context: Context
    ) -> queue_pb2.ListQueuesResponse:
        """GET /ojs/v1/queues (``available_count`` is not filled: ``QueueStats`` has it)."""
        limit, offset = _page(request.limit, request.cursor, 1000, 10_000)
        queues = await self.service.queues()
        out = queue_pb2.ListQueuesResponse()
        for q in queues[offset : offset + limit]:
            info = out.queues.add(name=q.name, paused=q.paused)
            if q.created_at is not None:
                to_timestamp(info.created_at, q.created_at)
        if offset + limit < len(queues):
            out.next_cursor = str(offset + limit)
        return out

    @rpc
    async def QueueStats(
        self, request: queue_pb2.QueueStatsRequest, context: Context
    ) -> queue_pb2.QueueStatsResponse:
        """GET /ojs/v1/queues/{name}/stats (``dead``: the queue's discarded jobs)."""
        stats = await scoped_queue_stats(
            self.service, required(request.queue, "queue"), tenant_of(context)
        )
        counts = stats.counts
        return queue_pb2.QueueStatsResponse(
            queue=stats.name,
            stats=queue_pb2.QueueStatistics(
                available=counts.get(JobState.AVAILABLE, 0),
                active=counts.get(JobState.ACTIVE, 0),
                scheduled=counts.get(JobState.SCHEDULED, 0),
                retryable=counts.get(JobState.RETRYABLE, 0),
                dead=counts.get(JobState.DISCARDED, 0),
                completed_last_hour=stats.completed_last_hour,
                failed_last_hour=stats.failed_last_hour,
                avg_duration_ms=stats.avg_duration_ms,
                avg_wait_ms=stats.avg_wait_ms,
                throughput_per_second=stats.throughput_per_second,
                paused=stats.paused,
            ),
        )

    @rpc
    async def PauseQueue(
        self, request: queue_pb2.PauseQueueRequest, context: Context
    ) -> queue_pb2.PauseQueueResponse:
        """POST /ojs/v1/queues/{name}/pause."""
        await self.service.set_paused(required(request.queue, "queue"), True)
        return queue_pb2.PauseQueueResponse()

    @rpc
    async def ResumeQueue(
        self, request: queue_pb2.ResumeQueueRequest, context: Context
    ) -> queue_pb2.ResumeQueueResponse:
        """POST /ojs/v1/queues/{name}/resume."""
        await self.service.set_paused(required(request.queue, "queue"), False)
        return queue_pb2.ResumeQueueResponse()

    @rpc
    async def ListDeadLetter(
        self, request: queue_pb2.ListDeadLetterRequest, context: Context
    ) -> queue_pb2.ListDeadLetterResponse:
        """GET /ojs/v1/dead-letter, newest first."""
        limit, offset = _page(request.limit, request.cursor, 50, 1000)
        found = await scoped_dead_letter(
            self.service, request.queue or None, limit, offset, tenant_of(context)
        )
        out = queue_pb2.ListDeadLetterResponse(total_count=found.total)
        for job in found.jobs:
            convert.job_message(job, out.jobs.add())
        if found.more:
            out.next_cursor = str(offset + limit)
        return out

    @rpc
    async def RetryDeadLetter(
        self, request: queue_pb2.RetryDeadLetterRequest, context: Context
    ) -> queue_pb2.RetryDeadLetterResponse:
        """POST /ojs/v1/dead-letter/{id}/retry."""
        job_id = required(request.job_id, "job_id")
        await require_owned(self.service, job_id, tenant_of(context), "dead-letter job")
        job = await self.service.retry_dead_letter(job_id)
        out = queue_pb2.RetryDeadLetterResponse()
        convert.job_message(job, out.job)
        return out

    @rpc
    async def DeleteDeadLetter(
        self, request: queue_pb2.DeleteDeadLetterRequest, context: Context
    ) -> queue_pb2.DeleteDeadLetterResponse:
        """DELETE /ojs/v1/dead-letter/{id}."""
        job_id = required(request.job_id, "job_id")
        await require_owned(self.service, job_id, tenant_of(context), "dead-letter job")
        await self.service.delete_dead_letter(job_id)
        return queue_pb2.DeleteDeadLetterResponse()

    # -- cron -----------------------------------------------------------------------------

    @rpc
    async def RegisterCron(
        self, request: service_pb2.RegisterCronRequest, context: Context
    ) -> service_pb2.RegisterCronResponse:
        """POST /ojs/v1/cron (an existing name is replaced)."""
        cron, _ = await self.service.register_cron(convert.cron_body(request))
        out = service_pb2.RegisterCronResponse(name=cron.name)
        if cron.next_run_at is not None:
            to_timestamp(out.next_run_at, cron.next_run_at)
        return out

    @rpc
    async def UnregisterCron(
        self, request: service_pb2.UnregisterCronRequest, context: Context
    ) -> service_pb2.UnregisterCronResponse:
        """DELETE /ojs/v1/cron/{name}."""
        await self.service.delete_cron(required(request.name, "name"))
        return service_pb2.UnregisterCronResponse()

    @rpc
    async def ListCron(
        self, request: service_pb2.ListCronRequest, context: Context
    ) -> service_pb2.ListCronResponse:
        """GET /ojs/v1/cron."""
        now = self.service.now()
        crons = await self.service.crons()
        return service_pb2.ListCronResponse(entries=[convert.cron_entry(c, now) for c in crons])

    # -- workflows ------------------------------------------------------------------------

    @rpc
    async def CreateWorkflow(
        self, request: workflow_pb2.CreateWorkflowRequest, context: Context
    ) -> workflow_pb2.CreateWorkflowResponse:
        """POST /ojs/v1/workflows (a graph of steps joined by ``depends_on``)."""
        body = convert.workflow_body(request, self.service.now())
        workflow = await self.service.create_workflow(body, tenant=tenant_of(context))
        return workflow_pb2.CreateWorkflowResponse(workflow=convert.workflow_message(workflow))

    @rpc
    async def GetWorkflow(
        self, request: workflow_pb2.GetWorkflowRequest, context: Context
    ) -> workflow_pb2.GetWorkflowResponse:
        """GET /ojs/v1/workflows/{id}."""
        workflow_id = required(request.workflow_id, "workflow_id")
        await require_workflow_owned(self.service, workflow_id, tenant_of(context))
        workflow = await self.service.get_workflow(workflow_id)
        return workflow_pb2.GetWorkflowResponse(workflow=convert.workflow_message(workflow))

    @rpc
    async def CancelWorkflow(
        self, request: workflow_pb2.CancelWorkflowRequest, context: Context
    ) -> workflow_pb2.CancelWorkflowResponse:
        """DELETE /ojs/v1/workflows/{id} (``reason`` is not stored)."""
        workflow_id = required(request.workflow_id, "workflow_id")
        await require_workflow_owned(self.service, workflow_id, tenant_of(context))
        workflow = await self.service.cancel_workflow(workflow_id)
        return workflow_pb2.CancelWorkflowResponse(workflow=convert.workflow_message(workflow))
