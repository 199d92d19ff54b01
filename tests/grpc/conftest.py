"""Fixtures of the gRPC suite: the NATS session server and per-phase deadlines of
``tests/support/nats_fixtures.py``, and an in-process gRPC server over each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_support import KEYS, Harness, authenticate
from nats_fixtures import *  # noqa: F403

from ojs_core.backend import Backend
from ojs_core.service import JobService
from ojs_grpc import GrpcServer, GrpcSettings
from ojs_grpc._gen import service_pb2_grpc
from ojs_memory.backend import MemoryBackend
from ojs_nats.backend import NatsBackend

__all__ = ["KEYS"]


@pytest.fixture(params=["memory", "nats"])
async def backend(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[Backend]:
    """An open, empty backend: the memory one, or a connection to the session nats-server."""
    store: Backend = MemoryBackend() if request.param == "memory" else NatsBackend(nats_url)
    await store.open()
    await store.reset()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def harness(backend: Backend) -> AsyncIterator[Harness]:
    """A gRPC server with API keys on ``backend``, and a client channel to it."""
    service = JobService(backend)
    server = GrpcServer(service, authenticate=authenticate, settings=GrpcSettings(slot_check_s=0.2))
    port = server.add_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(service, server, channel, service_pb2_grpc.OJSServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(0)
