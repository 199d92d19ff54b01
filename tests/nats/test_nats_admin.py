"""The admin API on NATS (a real nats-server): with 3 available, 1 scheduled, 1 completed and
1 dead-lettered job in a queue, listings by state and queue name exactly those, with
pagination, and the dead letter and totals agree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from admin_support import seed_queue

from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats.backend import NatsBackend

A = "/ojs/v1/admin"


@asynccontextmanager
async def serve(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(NatsBackend(nats_url), HttpSettings(run_scheduler=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield client


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(f"{A}{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


async def test_the_admin_api_lists_a_queue_by_state_on_nats(
    nats_url: str, new_backend: Any
) -> None:
    await new_backend()  # a clean store
    async with serve(nats_url) as client:
        seeded = await seed_queue(client, "mail")
        await seed_queue(client, "other")

        page1 = await _get(client, "/jobs", state="available", queue="mail", per_page=2)
        page2 = await _get(client, "/jobs", state="available", queue="mail", per_page=2, page=2)
        assert _ids(page1) + _ids(page2) == list(reversed(seeded["available"]))
        assert page1["pagination"] == {"total": 3, "page": 1, "per_page": 2}
        assert page2["pagination"] == {"total": 3, "page": 2, "per_page": 2}
        for state in ("scheduled", "completed", "discarded"):
            body = await _get(client, "/jobs", state=state, queue="mail")
            assert _ids(body) == [seeded[state]], state
            assert body["pagination"]["total"] == 1, state
        assert (await _get(client, "/jobs", queue="mail"))["pagination"]["total"] == 6
        assert (await _get(client, "/jobs", state="available"))["pagination"]["total"] == 6

        dead = await _get(client, "/dead-letter", queue="mail")
        assert _ids(dead) == [seeded["discarded"]]
        stats = await _get(client, "/stats")
        assert (stats["jobs"]["available"], stats["jobs"]["discarded"]) == (6, 2)
        (mail,) = [q for q in (await _get(client, "/queues"))["items"] if q["name"] == "mail"]
        assert mail["counts"] == {
            "available": 3,
            "scheduled": 1,
            "pending": 0,
            "active": 0,
            "completed": 1,
            "retryable": 0,
            "cancelled": 0,
            "discarded": 1,
        }

        retried = await client.post(f"{A}/dead-letter/{seeded['discarded']}/retry")
        assert retried.status_code == 200, retried.text
        available = await _get(client, "/jobs", state="available", queue="mail")
        assert seeded["discarded"] in _ids(available)
        assert available["pagination"]["total"] == 4
        assert (await _get(client, "/jobs", state="discarded", queue="mail"))["items"] == []


async def test_workflows_are_listed_newest_first_on_nats(nats_url: str, new_backend: Any) -> None:
    await new_backend()
    async with serve(nats_url) as client:
        made = []
        for name in ("one", "two", "three"):
            response = await client.post(
                "/ojs/v1/workflows",
                json={"type": "chain", "name": name, "steps": [{"type": "s", "args": []}]},
            )
            assert response.status_code == 201, response.text
            made.append(response.json()["workflow"]["id"])
        first = await _get(client, "/workflows", per_page=2)
        assert _ids(first) == [made[2], made[1]]
        assert first["pagination"]["total"] == 3
        assert _ids(await _get(client, "/workflows", per_page=2, page=2)) == [made[0]]
