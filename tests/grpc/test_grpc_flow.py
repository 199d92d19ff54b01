"""The gRPC binding's operations against an in-process server, on the memory backend and on a
real nats-server: every RPC does what its HTTP route does, the streamed fetch pushes jobs
within the worker's free slots, and errors carry the OJS error in their details."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_support import Harness, as_role, error_info, field_violations
from nats_support import eventually

from ojs_grpc._gen import events_pb2, job_pb2, queue_pb2, service_pb2, worker_pb2, workflow_pb2

PRODUCER = as_role("producer")
WORKER = as_role("worker")
ADMIN = as_role("admin")


def args(*values: Any) -> list[struct_pb2.Value]:
    out = []
    for value in values:
        v = struct_pb2.Value()
        if isinstance(value, str):
            v.string_value = value
        else:
            v.number_value = value
        out.append(v)
    return out


async def enqueue(h: Harness, job_type: str = "email.send", **options: Any) -> job_pb2.Job:
    request = job_pb2.EnqueueRequest(
        type=job_type, args=args("a@example.com", 1), options=job_pb2.EnqueueOptions(**options)
    )
    response = await h.stub.Enqueue(request, metadata=PRODUCER)
    return response.job


async def test_enqueue_streamed_fetch_ack_get(harness: Harness) -> None:
    h = harness
    stream = h.stub.StreamJobs(
        worker_pb2.StreamJobsRequest(queues=["email"], worker_id="w1", max_concurrent=1),
        metadata=WORKER,
    )
    job = await enqueue(h, queue="email", tags=["t1"])
    assert job.state == job_pb2.JOB_STATE_AVAILABLE
    assert [a.string_value for a in job.args[:1]] == ["a@example.com"]
    pushed = await asyncio.wait_for(stream.read(), 10)
    assert pushed.id == job.id
    assert pushed.state == job_pb2.JOB_STATE_ACTIVE
    assert pushed.attempt == 1
    assert list(pushed.tags) == ["t1"]
    result = struct_pb2.Struct()
    result.update({"sent": True})
    acked = await h.stub.Ack(worker_pb2.AckRequest(job_id=job.id, result=result), metadata=WORKER)
    assert acked.acknowledged
    got = (await h.stub.GetJob(job_pb2.GetJobRequest(job_id=job.id), metadata=PRODUCER)).job
    assert got.state == job_pb2.JOB_STATE_COMPLETED
    assert got.result["sent"] is True
    assert got.HasField("completed_at")
    # An integral number sent as a protobuf double reads back as an integer over HTTP too.
    assert (await h.service.get(job.id)).args == ["a@example.com", 1]
    stream.cancel()


async def test_the_stream_holds_no_more_jobs_than_the_worker_has_slots(harness: Harness) -> None:
    h = harness
    ids = [(await enqueue(h, queue="slots")).id for _ in range(3)]
    stream = h.stub.StreamJobs(
        worker_pb2.StreamJobsRequest(queues=["slots"], worker_id="w2", max_concurrent=2),
        metadata=WORKER,
    )
    first = [await asyncio.wait_for(stream.read(), 10) for _ in range(2)]
    assert [j.id for j in first] == ids[:2]
    # Both slots are taken: the server's stream is waiting for a slot, holding two jobs, and
    # the third job, available all along, was not claimed for it.
    streams = h.server.servicer.job_streams
    await eventually(
        lambda: streams.holding() == [("w2", 2, True)], what="the stream waits for a slot"
    )
    assert (await h.service.get(ids[2])).state.value == "available"
    await h.stub.Ack(worker_pb2.AckRequest(job_id=first[0].id), metadata=WORKER)
    third = await asyncio.wait_for(stream.read(), 10)
    assert third.id == ids[2]
    stream.cancel()


async def test_a_broken_stream_loses_no_job(harness: Harness) -> None:
    h = harness
    stream = h.stub.StreamJobs(
        worker_pb2.StreamJobsRequest(queues=["brk"], worker_id="w3", max_concurrent=1),
        metadata=(*WORKER, ("x-ojs-visibility-timeout-ms", "300")),
    )
    job = await enqueue(h, queue="brk")
    assert (await asyncio.wait_for(stream.read(), 10)).id == job.id
    stream.cancel()

    async def back() -> bool:
        await h.service.run_timers()
        return (await h.service.get(job.id)).state.value == "available"

    await eventually(back, what="the job of the broken stream is available again")
    fetched = await h.stub.Fetch(worker_pb2.FetchRequest(queues=["brk"]), metadata=WORKER)
    assert [j.id for j in fetched.jobs] == [job.id]
    assert fetched.jobs[0].attempt == 2


async def test_nack_retries_then_dead_letter_retry_and_delete(harness: Harness) -> None:
    h = harness
    job = await enqueue(h, queue="dl", max_attempts=1)
    fetched = await h.stub.Fetch(
        worker_pb2.FetchRequest(queues=["dl"], count=5, worker_id="w4"), metadata=WORKER
    )
    assert [j.id for j in fetched.jobs] == [job.id]
    nacked = await h.stub.Nack(
        worker_pb2.NackRequest(
            job_id=job.id, error=job_pb2.JobError(code="smtp", message="refused", retryable=True)
        ),
        metadata=WORKER,
    )
    assert nacked.state == job_pb2.JOB_STATE_DISCARDED
    dead = await h.stub.ListDeadLetter(queue_pb2.ListDeadLetterRequest(), metadata=ADMIN)
    assert [j.id for j in dead.jobs] == [job.id]
    assert dead.total_count == 1
    assert dead.jobs[0].errors[0].code == "smtp"
    retried = await h.stub.RetryDeadLetter(
        queue_pb2.RetryDeadLetterRequest(job_id=job.id), metadata=ADMIN
    )
    assert retried.job.state == job_pb2.JOB_STATE_AVAILABLE
    fetched = await h.stub.Fetch(worker_pb2.FetchRequest(queues=["dl"]), metadata=WORKER)
    await h.stub.Nack(worker_pb2.NackRequest(job_id=job.id), metadata=WORKER)
    await h.stub.DeleteDeadLetter(queue_pb2.DeleteDeadLetterRequest(job_id=job.id), metadata=ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetJob(job_pb2.GetJobRequest(job_id=job.id), metadata=PRODUCER)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_batch_heartbeat_queues_and_cancel(harness: Harness) -> None:
    h = harness
    batch = await h.stub.EnqueueBatch(
        job_pb2.EnqueueBatchRequest(
            jobs=[
                job_pb2.BatchJobEntry(type="report.build", args=args(1)),
                job_pb2.BatchJobEntry(
                    type="report.build", options=job_pb2.EnqueueOptions(queue="other")
                ),
            ],
            default_options=job_pb2.EnqueueOptions(queue="reports", priority=5),
        ),
        metadata=PRODUCER,
    )
    assert batch.count == 2
    assert [(j.queue, j.priority) for j in batch.jobs] == [("reports", 5), ("other", 5)]
    fetched = await h.stub.Fetch(worker_pb2.FetchRequest(queues=["reports"]), metadata=WORKER)
    job_id = fetched.jobs[0].id
    beat = await h.stub.Heartbeat(
        worker_pb2.HeartbeatRequest(id=job_id, worker_id="w5"), metadata=WORKER
    )
    assert beat.directed_state == worker_pb2.WORKER_STATE_RUNNING
    cancelled = await h.stub.CancelJob(
        job_pb2.CancelJobRequest(job_id=batch.jobs[1].id), metadata=PRODUCER
    )
    assert cancelled.job.state == job_pb2.JOB_STATE_CANCELLED
    queues = await h.stub.ListQueues(queue_pb2.ListQueuesRequest(), metadata=PRODUCER)
    assert {"reports", "other"} <= {q.name for q in queues.queues}
    await h.stub.PauseQueue(queue_pb2.PauseQueueRequest(queue="reports"), metadata=ADMIN)
    stats = await h.stub.QueueStats(queue_pb2.QueueStatsRequest(queue="reports"), metadata=WORKER)
    assert stats.stats.paused
    assert stats.stats.active == 1
    await h.stub.ResumeQueue(queue_pb2.ResumeQueueRequest(queue="reports"), metadata=ADMIN)
    stats = await h.stub.QueueStats(queue_pb2.QueueStatsRequest(queue="reports"), metadata=WORKER)
    assert not stats.stats.paused


async def test_cron_register_list_unregister(harness: Harness) -> None:
    h = harness
    registered = await h.stub.RegisterCron(
        service_pb2.RegisterCronRequest(
            name="nightly-report",
            cron="0 3 * * *",
            timezone="Europe/Paris",
            type="report.build",
            args=args("daily"),
            options=job_pb2.EnqueueOptions(queue="reports", max_attempts=4),
        ),
        metadata=PRODUCER,
    )
    assert registered.name == "nightly-report"
    assert registered.HasField("next_run_at")
    listed = await h.stub.ListCron(service_pb2.ListCronRequest(), metadata=PRODUCER)
    [entry] = listed.entries
    assert (entry.name, entry.cron, entry.timezone, entry.type) == (
        "nightly-report",
        "0 3 * * *",
        "Europe/Paris",
        "report.build",
    )
    assert entry.options.queue == "reports"
    assert entry.options.max_attempts == 4
    assert [a.string_value for a in entry.args] == ["daily"]
    await h.stub.UnregisterCron(
        service_pb2.UnregisterCronRequest(name="nightly-report"), metadata=PRODUCER
    )
    assert not (await h.stub.ListCron(service_pb2.ListCronRequest(), metadata=PRODUCER)).entries


async def test_a_workflow_runs_its_steps_in_order(harness: Harness) -> None:
    h = harness
    created = await h.stub.CreateWorkflow(
        workflow_pb2.CreateWorkflowRequest(
            name="etl",
            steps=[
                workflow_pb2.WorkflowStep(id="extract", type="etl.extract"),
                workflow_pb2.WorkflowStep(id="load", type="etl.load", depends_on=["extract"]),
            ],
        ),
        metadata=PRODUCER,
    )
    wf = created.workflow
    assert wf.state == workflow_pb2.WORKFLOW_STATE_RUNNING
    assert [(s.id, s.state) for s in wf.steps] == [
        ("extract", workflow_pb2.WORKFLOW_STEP_STATE_PENDING),
        ("load", workflow_pb2.WORKFLOW_STEP_STATE_WAITING),
    ]
    assert list(wf.steps[1].depends_on) == ["extract"]
    for step in wf.steps:
        fetched = await h.stub.Fetch(worker_pb2.FetchRequest(queues=["default"]), metadata=WORKER)
        assert [j.id for j in fetched.jobs] == [step.job_id]
        assert fetched.jobs[0].workflow_id == wf.id
        await h.stub.Ack(worker_pb2.AckRequest(job_id=step.job_id), metadata=WORKER)
    got = await h.stub.GetWorkflow(
        workflow_pb2.GetWorkflowRequest(workflow_id=wf.id), metadata=PRODUCER
    )
    assert got.workflow.state == workflow_pb2.WORKFLOW_STATE_COMPLETED
    assert got.workflow.HasField("completed_at")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.CancelWorkflow(
            workflow_pb2.CancelWorkflowRequest(workflow_id=wf.id), metadata=PRODUCER
        )
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).reason == "conflict"


async def test_the_event_stream_filters_by_queue_and_type(harness: Harness) -> None:
    h = harness
    stream = h.stub.StreamEvents(
        events_pb2.StreamEventsRequest(queues=["watched"], event_types=["job.completed"]),
        metadata=PRODUCER,
    )
    # The subscription is live once the stream is: wait for the hub to count it.
    await eventually(lambda: h.server.hub.streams == 1, what="the event stream subscribed")
    await enqueue(h, queue="elsewhere")
    job = await enqueue(h, queue="watched")
    fetched = await h.stub.Fetch(worker_pb2.FetchRequest(queues=["watched"]), metadata=WORKER)
    await h.stub.Ack(worker_pb2.AckRequest(job_id=fetched.jobs[0].id), metadata=WORKER)
    event = await asyncio.wait_for(stream.read(), 10)
    assert (event.type, event.job_id, event.queue) == ("job.completed", job.id, "watched")
    assert event.job_type == "email.send"
    assert event.data["seq"] > 0
    stream.cancel()


async def test_system_rpcs(harness: Harness) -> None:
    h = harness
    manifest = await h.stub.Manifest(service_pb2.ManifestRequest(), metadata=WORKER)
    assert manifest.conformance_level == 4
    assert list(manifest.protocols) == ["grpc"]
    assert manifest.implementation.language == "python"
    assert "urn:ojs:spec:workflows" in manifest.extensions
    # Health is public, as GET /ojs/v1/health is.
    health = await h.stub.Health(service_pb2.HealthRequest())
    assert health.status == service_pb2.HEALTH_STATUS_OK
    assert health.details["backend"]["status"] == "ok"


async def test_client_mistakes_are_invalid_argument_with_the_field(harness: Harness) -> None:
    h = harness
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.Enqueue(job_pb2.EnqueueRequest(type="Bad Type"), metadata=PRODUCER)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err.value)
    assert (info.reason, info.domain, info.metadata["retryable"]) == (
        "invalid_request",
        "openjobspec.org",
        "false",
    )
    assert [f for f, _ in field_violations(err.value)] == ["type"]
    nan = struct_pb2.Value(number_value=float("nan"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.Enqueue(job_pb2.EnqueueRequest(type="a.b", args=[nan]), metadata=PRODUCER)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["args[0]"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.StreamJobs(
            worker_pb2.StreamJobsRequest(queues=["q"], max_concurrent=-1), metadata=WORKER
        ).read()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["max_concurrent"]


async def test_conflicts_map_to_their_status_codes(harness: Harness) -> None:
    h = harness
    unique = job_pb2.UniquePolicy(key=["type"], on_conflict=job_pb2.UNIQUE_CONFLICT_ACTION_REJECT)
    first = await enqueue(h, "once.only", unique=unique)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await enqueue(h, "once.only", unique=unique)
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(err.value).metadata["existing_job_id"] == first.id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.Ack(worker_pb2.AckRequest(job_id=first.id), metadata=WORKER)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetJob(job_pb2.GetJobRequest(job_id="nope"), metadata=PRODUCER)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(err.value).reason == "not_found"


async def test_auth_refusals_and_the_request_id(harness: Harness) -> None:
    h = harness
    request = job_pb2.GetJobRequest(job_id="x")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetJob(request)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_info(err.value).reason == "unauthorized"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetJob(request, metadata=(("authorization", "Bearer wrong"),))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.PauseQueue(queue_pb2.PauseQueueRequest(queue="q"), metadata=PRODUCER)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err.value).metadata["required_roles"] == '["admin"]'
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.Enqueue(job_pb2.EnqueueRequest(type="a.b"), metadata=WORKER)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # The binding's own metadata key is accepted too, and the request id is echoed.
    call = h.stub.Enqueue(
        job_pb2.EnqueueRequest(type="a.b"),
        metadata=(("x-ojs-api-key", "producer-key"), ("x-ojs-request-id", "req-42")),
    )
    assert (await call).job.type == "a.b"
    assert ("x-ojs-request-id", "req-42") in tuple(await call.initial_metadata())
