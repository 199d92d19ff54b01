"""Encrypted payloads pass through the HTTP binding on a real nats-server byte for byte,
and read back the same from another server process (the scenarios are shared with the memory
suite: ``tests/support/encryption_scenarios.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import encryption_scenarios as scenarios
import httpx

from ojs_core.service import JobService
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats.backend import NatsBackend


@asynccontextmanager
async def serve(nats_url: str) -> AsyncIterator[tuple[JobService, httpx.AsyncClient]]:
    app = create_app(NatsBackend(nats_url), HttpSettings(run_scheduler=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield app.state.service, client


async def test_the_payload_survives_the_whole_life(nats_url: str, new_backend: Any) -> None:
    await new_backend()  # a clean store
    async with serve(nats_url) as (service, client):
        await scenarios.full_life(client, service, "enc")
        await scenarios.batch_and_bulk(client, "enc-b")
        await scenarios.manifest(client)


async def test_another_process_reads_it_back_unchanged(nats_url: str, new_backend: Any) -> None:
    await new_backend()
    async with serve(nats_url) as (_, client):
        created = await client.post(
            "/ojs/v1/jobs",
            json={"type": "t", "args": scenarios.ARGS, "meta": scenarios.META, "queue": "enc-x"},
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
    async with serve(nats_url) as (_, client):
        got = await client.get(f"/ojs/v1/jobs/{job_id}")
        scenarios.assert_untouched(got.json()["job"], got.content)
        fetched = await client.post(
            "/ojs/v1/workers/fetch", json={"queues": ["enc-x"], "worker_id": "w"}
        )
        scenarios.assert_untouched(fetched.json()["jobs"][0], fetched.content)
