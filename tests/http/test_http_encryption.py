"""Encrypted payloads pass through the HTTP binding on the memory backend byte for byte
(the scenarios are shared with the NATS suite: ``tests/support/encryption_scenarios.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import encryption_scenarios as scenarios
import httpx
import pytest

from ojs_core.service import JobService
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

Served = tuple[JobService, httpx.AsyncClient]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    options: dict[str, Any] = {"run_scheduler": False}
    app = create_app(MemoryBackend(), HttpSettings(**options))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield app.state.service, client


async def test_the_payload_survives_the_whole_life(served: Served) -> None:
    await scenarios.full_life(served[1], served[0], "enc")


async def test_batch_and_bulk_enqueue_keep_it(served: Served) -> None:
    await scenarios.batch_and_bulk(served[1], "enc-b")


async def test_the_manifest_declares_it(served: Served) -> None:
    await scenarios.manifest(served[1])
