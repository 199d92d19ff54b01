"""The bulk-operations extension over HTTP on a real nats-server: the shared scenarios
(``tests/support/bulk_scenarios.py``), and idempotency keys that hold across two server
processes sharing the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bulk_scenarios as scenarios
import httpx

from ojs_core.limits import Limits
from ojs_core.service import JobService
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats.backend import NatsBackend

BULK = scenarios.BULK


@asynccontextmanager
async def serve(
    nats_url: str, **settings: Any
) -> AsyncIterator[tuple[JobService, httpx.AsyncClient]]:
    options: dict[str, Any] = {"run_scheduler": False, **settings}
    app = create_app(NatsBackend(nats_url), HttpSettings(**options))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield app.state.service, client


async def test_enqueue_partial_and_atomic(nats_url: str, new_backend: Any) -> None:
    await new_backend()  # a clean store
    async with serve(nats_url) as (_, client):
        await scenarios.partial_enqueue(client)
        await scenarios.atomic_enqueue(client)
        await scenarios.malformed(client)


async def test_the_item_limit(nats_url: str, new_backend: Any) -> None:
    await new_backend()
    async with serve(nats_url, limits=Limits(max_batch_jobs=5)) as (_, client):
        await scenarios.over_the_limit(client, 5)


async def test_cancel_retry_delete_and_filters(nats_url: str, new_backend: Any) -> None:
    await new_backend()
    async with serve(nats_url) as (service, client):
        await scenarios.cancel_retry_delete(client, service)
        await scenarios.by_filter(client)
        await scenarios.events_and_manifest(client)


async def test_idempotency_keys_and_takeover(nats_url: str, new_backend: Any) -> None:
    await new_backend()
    async with serve(nats_url) as (service, client):
        await scenarios.takeover(client, service)
        await scenarios.idempotency(client, service)


async def test_a_key_holds_across_server_processes(nats_url: str, new_backend: Any) -> None:
    await new_backend()
    jobs = [{"type": "user.import", "args": [i], "queue": "bk-x"} for i in range(3)]
    headers = {"Idempotency-Key": "across"}
    async with serve(nats_url) as (_, one), serve(nats_url) as (_, two):
        first = await one.post(BULK, json={"jobs": jobs}, headers=headers)
        assert first.status_code == 201, first.text
        again = await two.post(BULK, json={"jobs": jobs}, headers=headers)
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        other = await two.post(BULK, json={"jobs": jobs[:2]}, headers=headers)
        assert other.status_code == 409
        fetched = await two.post(
            "/ojs/v1/workers/fetch", json={"queues": ["bk-x"], "count": 10, "worker_id": "w"}
        )
        assert len(fetched.json()["jobs"]) == 3


async def test_a_large_answer_is_kept(nats_url: str, new_backend: Any) -> None:
    """The answer to a request at the default limit (10,000 jobs) fits the store once
    compressed, so its repeat is answered from it."""
    await new_backend()
    async with serve(nats_url) as (service, client):
        n = service.bulk.max_items
        jobs = [{"type": "bulk.large", "args": [{"row": i}], "queue": "bk-big"} for i in range(n)]
        jobs[5] = {"type": "", "args": []}  # one failure, with its error, in the answer too
        headers = {"Idempotency-Key": "large"}
        first = await client.post(BULK, json={"jobs": jobs}, headers=headers)
        assert first.status_code == 207, first.text
        assert first.json()["succeeded"] == n - 1
        again = await client.post(BULK, json={"jobs": jobs}, headers=headers)
        assert again.status_code == 207
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
