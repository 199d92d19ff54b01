"""Multi-tenancy over gRPC: the ``x-ojs-tenant`` metadata scopes a call as ``X-OJS-Tenant``
scopes an HTTP request (enqueue, read, cancel, fetch, the streamed fetch, queue statistics,
the dead letter), on the memory backend and on a real nats-server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_support import Harness, as_role, field_violations
from nats_support import eventually

from ojs_grpc._gen import events_pb2, job_pb2, queue_pb2, worker_pb2, workflow_pb2

ADMIN = as_role("admin")
ACME = (*ADMIN, ("x-ojs-tenant", "acme"))
BETA = (*ADMIN, ("x-ojs-tenant", "beta"))


async def enqueue(
    h: Harness, metadata: tuple[tuple[str, str], ...], queue: str, **options: object
) -> job_pb2.Job:
    request = job_pb2.EnqueueRequest(
        type="mt.job",
        options=job_pb2.EnqueueOptions(queue=queue, **options),  # type: ignore[arg-type]
    )
    return (await h.stub.Enqueue(request, metadata=metadata)).job


async def test_enqueue_tags_and_reads_are_scoped(harness: Harness) -> None:
    h = harness
    mine = await enqueue(h, ACME, "mt-g")
    theirs = await enqueue(h, BETA, "mt-g")
    assert mine.meta["tenant_id"] == "acme"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.GetJob(job_pb2.GetJobRequest(job_id=theirs.id), metadata=ACME)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.CancelJob(job_pb2.CancelJobRequest(job_id=theirs.id), metadata=ACME)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    got = await h.stub.GetJob(job_pb2.GetJobRequest(job_id=theirs.id), metadata=ADMIN)
    assert got.job.state == job_pb2.JOB_STATE_AVAILABLE
    fetched = await h.stub.Fetch(
        worker_pb2.FetchRequest(queues=["mt-g"], count=10, worker_id="w"), metadata=ACME
    )
    assert [j.id for j in fetched.jobs] == [mine.id]


async def test_bad_or_conflicting_tenant_is_invalid_argument(harness: Harness) -> None:
    h = harness
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enqueue(h, (*ADMIN, ("x-ojs-tenant", "-bad")), "mt-g")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value)[0][0] == "metadata.x-ojs-tenant"
    meta = struct_pb2.Struct()
    meta.update({"tenant_id": "beta"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enqueue(h, ACME, "mt-g", meta=meta)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value)[0][0] == "options.meta.tenant_id"


async def test_queue_stats_count_the_callers_jobs(harness: Harness) -> None:
    h = harness
    for _ in range(2):
        await enqueue(h, ACME, "mt-s")
    await enqueue(h, BETA, "mt-s")

    async def available(metadata: tuple[tuple[str, str], ...]) -> int:
        stats = await h.stub.QueueStats(
            queue_pb2.QueueStatsRequest(queue="mt-s"), metadata=metadata
        )
        return int(stats.stats.available)

    async def settled() -> bool:  # per-tenant counters lag their writes a little on NATS
        return await available(ACME) == 2 and await available(BETA) == 1

    await eventually(settled)
    assert await available(ADMIN) == 3


async def _dead(h: Harness, metadata: tuple[tuple[str, str], ...], queue: str) -> str:
    job = await enqueue(h, metadata, queue, max_attempts=1)
    fetched = await h.stub.Fetch(
        worker_pb2.FetchRequest(queues=[queue], count=1, worker_id="w"), metadata=metadata
    )
    assert [j.id for j in fetched.jobs] == [job.id]
    error = job_pb2.JobError(code="boom", message="boom")
    await h.stub.Nack(worker_pb2.NackRequest(job_id=job.id, error=error), metadata=ADMIN)
    return job.id


async def test_dead_letter_is_the_callers(harness: Harness) -> None:
    h = harness
    mine = await _dead(h, ACME, "mt-d1")
    theirs = await _dead(h, BETA, "mt-d2")
    listed = await h.stub.ListDeadLetter(queue_pb2.ListDeadLetterRequest(), metadata=ACME)
    assert [j.id for j in listed.jobs] == [mine]
    for call, request in (
        (h.stub.RetryDeadLetter, queue_pb2.RetryDeadLetterRequest(job_id=theirs)),
        (h.stub.DeleteDeadLetter, queue_pb2.DeleteDeadLetterRequest(job_id=theirs)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=ACME)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await h.stub.DeleteDeadLetter(queue_pb2.DeleteDeadLetterRequest(job_id=mine), metadata=ACME)
    everyone = await h.stub.ListDeadLetter(queue_pb2.ListDeadLetterRequest(), metadata=ADMIN)
    assert [j.id for j in everyone.jobs] == [theirs]


async def test_a_scoped_stream_is_sent_its_tenants_jobs_only(harness: Harness) -> None:
    h = harness
    theirs = await enqueue(h, BETA, "mt-st")
    stream = h.stub.StreamJobs(
        worker_pb2.StreamJobsRequest(queues=["mt-st"], worker_id="w1", max_concurrent=5),
        metadata=ACME,
    )
    mine = await enqueue(h, ACME, "mt-st")
    pushed = await asyncio.wait_for(stream.read(), 10)
    assert pushed.id == mine.id
    stream.cancel()
    got = await h.stub.GetJob(job_pb2.GetJobRequest(job_id=theirs.id), metadata=ADMIN)
    assert got.job.state == job_pb2.JOB_STATE_AVAILABLE


async def test_a_workflow_is_its_tenants(harness: Harness) -> None:
    h = harness
    created = await h.stub.CreateWorkflow(
        workflow_pb2.CreateWorkflowRequest(
            name="wf", steps=[workflow_pb2.WorkflowStep(id="one", type="mt.step")]
        ),
        metadata=BETA,
    )
    wf_id = created.workflow.id
    for call, request in (
        (h.stub.GetWorkflow, workflow_pb2.GetWorkflowRequest(workflow_id=wf_id)),
        (h.stub.CancelWorkflow, workflow_pb2.CancelWorkflowRequest(workflow_id=wf_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=ACME)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    got = await h.stub.GetWorkflow(
        workflow_pb2.GetWorkflowRequest(workflow_id=wf_id), metadata=BETA
    )
    assert got.workflow.state == workflow_pb2.WORKFLOW_STATE_RUNNING
    job = await h.stub.GetJob(
        job_pb2.GetJobRequest(job_id=got.workflow.steps[0].job_id), metadata=BETA
    )
    assert job.job.meta["tenant_id"] == "beta"


async def test_a_scoped_event_stream_is_sent_its_tenants_events_only(harness: Harness) -> None:
    """``StreamEvents`` honours ``x-ojs-tenant``: another tenant's events are not sent, and
    following another tenant's job or workflow is NOT_FOUND (as over HTTP)."""
    h = harness
    stream = h.stub.StreamEvents(
        events_pb2.StreamEventsRequest(queues=["mt-ev"], event_types=["job.enqueued"]),
        metadata=ACME,
    )
    await eventually(lambda: h.server.hub.streams == 1, what="the event stream subscribed")
    await enqueue(h, BETA, "mt-ev")
    mine = await enqueue(h, ACME, "mt-ev")
    event = await asyncio.wait_for(stream.read(), 10)
    assert event.job_id == mine.id  # beta's job.enqueued, published first, was not sent
    stream.cancel()
    theirs = await enqueue(h, BETA, "mt-ev")
    created = await h.stub.CreateWorkflow(
        workflow_pb2.CreateWorkflowRequest(
            name="wf", steps=[workflow_pb2.WorkflowStep(id="one", type="mt.step")]
        ),
        metadata=BETA,
    )
    for request in (
        events_pb2.StreamEventsRequest(job_id=theirs.id),
        events_pb2.StreamEventsRequest(workflow_id=created.workflow.id),
    ):
        follow = h.stub.StreamEvents(request, metadata=ACME)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(follow.read(), 10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
