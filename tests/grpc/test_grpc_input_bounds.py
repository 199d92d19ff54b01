"""Client mistakes the gRPC binding must answer as ``INVALID_ARGUMENT`` naming the field, never
``INTERNAL``: timestamps and durations out of range, over-long ids, an envelope whose JSON is
larger than its protobuf size suggests, a non-finite backoff coefficient. On the memory backend
(the checks happen before the backend is reached)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_support import Harness, as_role, error_info, field_violations

from ojs_core.errors import NotFoundError
from ojs_grpc._gen import events_pb2, job_pb2, worker_pb2, workflow_pb2
from ojs_grpc.errors import status_of

PRODUCER = as_role("producer")
WORKER = as_role("worker")

pytestmark = pytest.mark.parametrize("backend", ["memory"], indirect=True)


async def refused(call: Any, request: Any, metadata: Any) -> grpc.aio.AioRpcError:
    """The error ``call(request)`` answers (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request, metadata=metadata)
    return err.value


def enqueue(**options: Any) -> job_pb2.EnqueueRequest:
    return job_pb2.EnqueueRequest(type="a.b", options=job_pb2.EnqueueOptions(**options))


@pytest.mark.parametrize(
    "when",
    [
        timestamp_pb2.Timestamp(seconds=10**15),
        timestamp_pb2.Timestamp(seconds=-(10**13)),
        timestamp_pb2.Timestamp(seconds=1, nanos=2_000_000_000),
    ],
)
async def test_an_out_of_range_delay_until_is_invalid_argument(
    harness: Harness, when: timestamp_pb2.Timestamp
) -> None:
    error = await refused(harness.stub.Enqueue, enqueue(delay_until=when), PRODUCER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [f for f, _ in field_violations(error)] == ["options.delay_until"]


async def test_a_huge_ttl_is_invalid_argument(harness: Harness) -> None:
    request = enqueue(ttl=duration_pb2.Duration(seconds=2**62))
    error = await refused(harness.stub.Enqueue, request, PRODUCER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [f for f, _ in field_violations(error)] == ["options.ttl"]


async def test_a_ttl_is_bounded_like_every_core_duration(harness: Harness) -> None:
    # 101 years: within datetime's range, over the core's 100-year bound on durations.
    request = enqueue(ttl=duration_pb2.Duration(seconds=101 * 365 * 86_400))
    error = await refused(harness.stub.Enqueue, request, PRODUCER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [f for f, _ in field_violations(error)] == ["options.ttl"]


@pytest.mark.parametrize("seconds", [2**40, 86_400 + 1])
async def test_heartbeat_extend_by_is_bounded_as_over_http(harness: Harness, seconds: int) -> None:
    h = harness
    job = (await h.stub.Enqueue(enqueue(queue="hb"), metadata=PRODUCER)).job
    await h.stub.Fetch(worker_pb2.FetchRequest(queues=["hb"], worker_id="w"), metadata=WORKER)
    request = worker_pb2.HeartbeatRequest(
        worker_id="w", id=job.id, extend_by=duration_pb2.Duration(seconds=seconds)
    )
    error = await refused(h.stub.Heartbeat, request, WORKER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [f for f, _ in field_violations(error)] == ["extend_by"]
    # The whole day is still allowed.
    request.extend_by.seconds = 86_400
    assert (await h.stub.Heartbeat(request, metadata=WORKER)).HasField("new_deadline")


async def test_long_ids_are_invalid_argument_not_a_broken_reply(harness: Harness) -> None:
    h = harness
    long_id = "x" * 10_000
    for call, request, metadata, path in (
        (
            h.stub.GetWorkflow,
            workflow_pb2.GetWorkflowRequest(workflow_id=long_id),
            PRODUCER,
            "workflow_id",
        ),
        (h.stub.CancelJob, job_pb2.CancelJobRequest(job_id=long_id), PRODUCER, "job_id"),
        (h.stub.GetJob, job_pb2.GetJobRequest(job_id=long_id), PRODUCER, "job_id"),
        (h.stub.Heartbeat, worker_pb2.HeartbeatRequest(worker_id="w", id=long_id), WORKER, "id"),
    ):
        error = await refused(call, request, metadata)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert [f for f, _ in field_violations(error)] == [path]


async def test_a_long_error_message_is_cut_to_fit_the_trailers(harness: Harness) -> None:
    status = status_of(NotFoundError("job", "y" * 100_000))
    assert len(status.details) <= 1000
    assert sum(len(k) + len(v) for k, v in status.trailing_metadata) < 8192
    info = error_details_pb2.ErrorInfo()
    details = status_pb2.Status.FromString(
        dict(status.trailing_metadata)["grpc-status-details-bin"]
    )
    assert details.details[0].Unpack(info)
    assert info.metadata["resource_type"] == "job"
    assert info.metadata["resource_id"].startswith("yyy")
    # An id at the length limit that names nothing is still answered NOT_FOUND, whole.
    at_limit = "z" * 256
    error = await refused(harness.stub.GetJob, job_pb2.GetJobRequest(job_id=at_limit), PRODUCER)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert at_limit in error.details()


async def test_a_long_workflow_id_of_an_event_stream_is_invalid_argument(
    harness: Harness,
) -> None:
    stream = harness.stub.StreamEvents(
        events_pb2.StreamEventsRequest(workflow_id="w" * 10_000), metadata=PRODUCER
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stream.read()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert [f for f, _ in field_violations(err.value)] == ["workflow_id"]


async def test_an_envelope_of_control_characters_is_measured_as_json(harness: Harness) -> None:
    h = harness
    limit = h.server.settings.max_envelope_bytes
    # \x01 is one byte in protobuf, six ("\u0001") in JSON: 1/5 of the limit in protobuf
    # bytes is over the limit as JSON.
    arg = struct_pb2.Value(string_value="\x01" * (limit // 5))
    request = job_pb2.EnqueueRequest(type="a.b", args=[arg])
    assert request.ByteSize() * 4 <= limit
    error = await refused(h.stub.Enqueue, request, PRODUCER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_info(error).reason == "envelope_too_large"


@pytest.mark.parametrize("coefficient", [float("nan"), float("inf")])
async def test_a_non_finite_backoff_coefficient_is_refused(
    harness: Harness, coefficient: float
) -> None:
    request = enqueue(retry=job_pb2.RetryPolicy(backoff_coefficient=coefficient))
    error = await refused(harness.stub.Enqueue, request, PRODUCER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [f for f, _ in field_violations(error)] == ["options.retry.backoff_coefficient"]


async def test_an_integer_above_2_to_the_53_is_a_double_as_documented(harness: Harness) -> None:
    # docs/grpc.md says so plainly: protobuf's Struct numbers are doubles.
    big = struct_pb2.Value(number_value=float(2**60 + 1))
    request = job_pb2.EnqueueRequest(type="a.b", args=[big])
    job = (await harness.stub.Enqueue(request, metadata=PRODUCER)).job
    assert (await harness.service.get(job.id)).args == [1.152921504606847e18]
