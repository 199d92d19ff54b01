"""Client mistakes the gRPC binding must answer as ``INVALID_ARGUMENT`` naming the field, never
``INTERNAL``: timestamps and durations out of range, over-long ids, an envelope whose JSON is
larger than its protobuf size suggests, a non-finite backoff coefficient. On the memory backend
(the checks happen before the backend is reached)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_support import Harness, as_role, field_violations

from ojs_grpc._gen import job_pb2, worker_pb2

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
