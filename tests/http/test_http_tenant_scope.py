"""Tenant scoping of queue statistics, the bulk routes and the dead letter on the memory
backend (the scenarios are ``tenant_scope_scenarios``; the NATS suite runs them on two
replicas)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from tenant_scope_scenarios import SCENARIOS
from test_http_binding import client

__all__ = ["client"]

Scenario = Callable[[httpx.AsyncClient, httpx.AsyncClient], Awaitable[None]]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_scenario(scenario: Scenario, client: httpx.AsyncClient) -> None:
    await scenario(client, client)


async def _dead_jobs(client: httpx.AsyncClient, tenant: str, queue: str, n: int) -> set[str]:
    """``n`` jobs of ``tenant``, each failed once into the dead letter."""
    headers = {"X-OJS-Tenant": tenant}
    options = {"queue": queue, "retry": {"max_attempts": 1, "on_exhaustion": "dead_letter"}}
    ids: set[str] = set()
    for _ in range(n):
        body = {"type": "scope.job", "args": [], "options": options}
        r = await client.post("/ojs/v1/jobs", json=body, headers=headers)
        assert r.status_code == 201, r.text
        ids.add(r.json()["job"]["id"])
    while True:
        r = await client.post(
            "/ojs/v1/workers/fetch", json={"queues": [queue], "count": 100}, headers=headers
        )
        jobs = r.json()["jobs"]
        if not jobs:
            return ids
        for job in jobs:
            nack = {"job_id": job["id"], "error": {"message": "boom", "retryable": False}}
            r = await client.post("/ojs/v1/workers/nack", json=nack)
            assert r.status_code == 200, r.text


async def test_a_scoped_dead_letter_listing_pages(client: httpx.AsyncClient) -> None:
    """A tenant with 120 dead jobs (among another tenant's) is listed 50 at a time: the first
    pages say more follow and where, the last does not; the admin listing agrees."""
    mine = await _dead_jobs(client, "acme", "dl-page", 120)
    await _dead_jobs(client, "beta", "dl-page", 30)
    headers = {"X-OJS-Tenant": "acme"}
    seen: list[str] = []
    cursor: str | None = "0"
    pages = []
    while cursor is not None:
        r = await client.get(f"/ojs/v1/dead-letter?limit=50&cursor={cursor}", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        seen.extend(j["id"] for j in body["jobs"])
        pages.append((len(body["jobs"]), body["pagination"]["has_more"]))
        cursor = body["pagination"]["next_cursor"]
    assert pages == [(50, True), (50, True), (20, False)]
    assert len(seen) == 120
    assert set(seen) == mine
    admin_pages = []
    for number in (1, 2):
        r = await client.get(
            f"/ojs/v1/admin/dead-letter?per_page=100&page={number}", headers=headers
        )
        assert r.status_code == 200, r.text
        body = r.json()
        admin_pages.append((len(body["items"]), body["pagination"]["has_more"]))
    assert admin_pages == [(100, True), (20, False)]


async def test_a_scoped_workflow_listing_pages(client: httpx.AsyncClient) -> None:
    """The scoped ``GET /ojs/v1/admin/workflows`` pages through the tenant's workflows only."""
    body = {"type": "chain", "steps": [{"type": "scope.step", "args": []}]}
    mine = []
    for i in range(5):
        r = await client.post("/ojs/v1/workflows", json=body, headers={"X-OJS-Tenant": "acme"})
        mine.append(r.json()["workflow"]["id"])
        await client.post("/ojs/v1/workflows", json=body, headers={"X-OJS-Tenant": f"t{i}"})
    seen, more = [], []
    for page in (1, 2, 3):
        r = await client.get(
            f"/ojs/v1/admin/workflows?per_page=2&page={page}", headers={"X-OJS-Tenant": "acme"}
        )
        assert r.status_code == 200, r.text
        seen.extend(w["id"] for w in r.json()["items"])
        more.append(r.json()["pagination"]["has_more"])
    assert sorted(seen) == sorted(mine)
    assert more == [True, True, False]
