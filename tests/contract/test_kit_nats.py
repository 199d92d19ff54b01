"""The contract kit against NATS JetStream (real time: timers are message schedules).

One real nats-server (``EmbeddedNatsServer``, store in a temporary directory) serves the whole
module; every test opens its own connection and wipes the store with ``backend.reset()``. The
replica tests get a second connection to the same server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from ojs_core.backend import Backend
from ojs_core.testing import TimeMode
from ojs_core.testing.contract import *  # noqa: F403
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer

pytest_plugins = ["ojs_core.testing.plugin"]


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNatsServer(tmp_path_factory.mktemp("kit-nats") / "store", auth=False)
    url = asyncio.run(server.start())
    try:
        yield url
    finally:
        asyncio.run(server.stop())


@pytest.fixture
def ojs_time_mode() -> TimeMode:
    return "real"


@pytest.fixture
async def backend(nats_url: str) -> AsyncIterator[Backend]:
    b = NatsBackend(nats_url)
    await b.open()
    await b.reset()
    yield b
    await b.close()


@pytest.fixture
async def ojs_replica_backend(backend: Backend, nats_url: str) -> AsyncIterator[Backend]:
    b = NatsBackend(nats_url)
    await b.open()
    yield b
    await b.close()
