"""Long-lived streams: credentials are checked again while a stream lives (a revoked API key
or an expired token ends ``StreamJobs`` before its next push, and ``StreamEvents`` at its next
keepalive), and a stopped server leaves no observer on the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_support import as_role

from ojs_core.service import JobService
from ojs_grpc import GrpcServer, GrpcSettings
from ojs_grpc._gen import events_pb2, service_pb2_grpc, worker_pb2
from ojs_memory.backend import MemoryBackend


class Keys:
    """A reloadable key table: ``revoke`` is what a SIGHUP reload dropping a key does."""

    def __init__(self) -> None:
        self.roles = {"producer-key": {"producer"}, "worker-key": {"worker"}}
        self.calls = 0
        self.broken = False

    def __call__(self, token: str) -> set[str] | None:
        self.calls += 1
        if self.broken:  # a JWKS endpoint that does not answer, say
            raise RuntimeError("the authenticator failed")
        return self.roles.get(token)

    def revoke(self, key: str) -> None:
        del self.roles[key]


async def read_to_the_end(stream: Any) -> None:
    """Read ``stream`` until it ends (with an error), for at most 10 seconds."""
    async with asyncio.timeout(10):
        while True:
            await stream.read()


@pytest.fixture
async def served(backend: MemoryBackend) -> AsyncIterator[tuple[JobService, Keys, object]]:
    service = JobService(backend)
    keys = Keys()
    server = GrpcServer(service, authenticate=keys, settings=GrpcSettings(event_keepalive_s=0.05))
    port = server.add_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, keys, service_pb2_grpc.OJSServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_a_revoked_key_ends_the_job_stream_before_its_next_push(
    served: tuple[JobService, Keys, object],
) -> None:
    service, keys, stub = served
    stream = stub.StreamJobs(  # type: ignore[attr-defined]
        worker_pb2.StreamJobsRequest(queues=["rv"], worker_id="w", max_concurrent=5),
        metadata=as_role("worker"),
    )
    first = await service.enqueue({"type": "a.b", "args": [], "options": {"queue": "rv"}})
    assert (await asyncio.wait_for(stream.read(), 10)).id == first.job.id
    keys.revoke("worker-key")
    second = await service.enqueue({"type": "a.b", "args": [], "options": {"queue": "rv"}})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(stream.read(), 10)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # The job claimed for the refused stream went back at once, its attempt not used up.
    job = await service.get(second.job.id)
    assert (job.state.value, job.attempt) == ("available", 0)


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_a_failing_credential_check_puts_the_claimed_job_back(
    served: tuple[JobService, Keys, object],
) -> None:
    service, keys, stub = served
    stream = stub.StreamJobs(  # type: ignore[attr-defined]
        worker_pb2.StreamJobsRequest(queues=["br"], worker_id="w", max_concurrent=5),
        metadata=as_role("worker"),
    )
    first = await service.enqueue({"type": "a.b", "args": [], "options": {"queue": "br"}})
    assert (await asyncio.wait_for(stream.read(), 10)).id == first.job.id
    keys.broken = True
    second = await service.enqueue({"type": "a.b", "args": [], "options": {"queue": "br"}})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(stream.read(), 10)
    assert err.value.code() is grpc.StatusCode.INTERNAL
    job = await service.get(second.job.id)
    assert (job.state.value, job.attempt) == ("available", 0)


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_a_revoked_key_ends_the_event_stream_at_its_next_keepalive(
    served: tuple[JobService, Keys, object],
) -> None:
    _, keys, stub = served
    stream = stub.StreamEvents(  # type: ignore[attr-defined]
        events_pb2.StreamEventsRequest(), metadata=as_role("producer")
    )
    assert (await asyncio.wait_for(stream.read(), 10)).type == "stream.keepalive"
    keys.revoke("producer-key")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await read_to_the_end(stream)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_a_role_taken_away_ends_the_job_stream_with_permission_denied(
    served: tuple[JobService, Keys, object],
) -> None:
    service, keys, stub = served
    stream = stub.StreamJobs(  # type: ignore[attr-defined]
        worker_pb2.StreamJobsRequest(queues=["pd"], worker_id="w", max_concurrent=5),
        metadata=as_role("worker"),
    )
    first = await service.enqueue({"type": "a.b", "args": [], "options": {"queue": "pd"}})
    assert (await asyncio.wait_for(stream.read(), 10)).id == first.job.id
    keys.roles["worker-key"] = {"producer"}
    await service.enqueue({"type": "a.b", "args": [], "options": {"queue": "pd"}})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(stream.read(), 10)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_stopping_the_server_removes_its_observer(backend: MemoryBackend) -> None:
    service = JobService(backend)
    before = len(service.observers)
    server = GrpcServer(service)
    assert len(service.observers) == before + 1
    server.add_port("127.0.0.1:0")
    await server.start()
    await server.stop(0)
    assert len(service.observers) == before


def test_the_slot_re_check_is_a_slow_fallback() -> None:
    # Each re-check reads every held job: not every second by default.
    assert GrpcSettings().slot_check_s >= 5.0
