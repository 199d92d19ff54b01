"""The bulk-operations extension over HTTP on the memory backend (the scenarios are shared
with the NATS suite: ``tests/support/bulk_scenarios.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bulk_scenarios as scenarios
import httpx
import pytest

from ojs_core.limits import Limits
from ojs_core.service import JobService
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend


@asynccontextmanager
async def serve(**overrides: Any) -> AsyncIterator[tuple[JobService, httpx.AsyncClient]]:
    options: dict[str, Any] = {"run_scheduler": False, **overrides}
    app = create_app(MemoryBackend(), HttpSettings(**options))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield app.state.service, client


@pytest.fixture
async def served() -> AsyncIterator[tuple[JobService, httpx.AsyncClient]]:
    async with serve() as pair:
        yield pair


Served = tuple[JobService, httpx.AsyncClient]


async def test_partial_enqueue(served: Served) -> None:
    await scenarios.partial_enqueue(served[1])


async def test_atomic_enqueue(served: Served) -> None:
    await scenarios.atomic_enqueue(served[1])


async def test_malformed_requests(served: Served) -> None:
    await scenarios.malformed(served[1])


async def test_the_item_limit() -> None:
    async with serve(limits=Limits(max_batch_jobs=5)) as (_, client):
        await scenarios.over_the_limit(client, 5)


async def test_cancel_retry_delete_by_ids(served: Served) -> None:
    await scenarios.cancel_retry_delete(served[1], served[0])


async def test_cancel_by_filter(served: Served) -> None:
    await scenarios.by_filter(served[1])


async def test_idempotency_keys(served: Served) -> None:
    await scenarios.idempotency(served[1], served[0])


async def test_a_dead_reservation_is_taken_over(served: Served) -> None:
    await scenarios.takeover(served[1], served[0])


async def test_events_manifest_and_openapi(served: Served) -> None:
    await scenarios.events_and_manifest(served[1])
