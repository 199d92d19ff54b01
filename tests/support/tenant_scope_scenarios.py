"""Tenant scoping beyond single jobs over HTTP (queue statistics, bulk routes, dead letter,
admin bulk and purge), shared by the memory and NATS suites.

Each scenario takes two clients of the same deployment (one app on memory; two replicas on
one NATS): whatever one replica wrote, the other must scope the same way. No authentication:
the tenant is the ``X-OJS-Tenant`` header.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

__all__ = ["SCENARIOS"]

V1 = "/ojs/v1"
ACME = {"X-OJS-Tenant": "acme"}
BETA = {"X-OJS-Tenant": "beta"}


async def _until(predicate: Callable[[], Awaitable[Any]], what: str, within: float = 10) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await predicate()
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _enqueue(
    client: httpx.AsyncClient, headers: dict[str, str], queue: str, **options: Any
) -> str:
    body = {"type": "scope.job", "args": [], "options": {"queue": queue, **options}}
    r = await client.post(f"{V1}/jobs", json=body, headers=headers)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["job"]["id"]
    return job_id


async def _dead(client: httpx.AsyncClient, headers: dict[str, str], queue: str) -> str:
    """A job of the header's tenant, failed once into the dead letter."""
    job_id = await _enqueue(
        client, headers, queue, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"}
    )
    r = await client.post(
        f"{V1}/workers/fetch", json={"queues": [queue], "count": 1}, headers=headers
    )
    assert [j["id"] for j in r.json()["jobs"]] == [job_id], r.text
    r = await client.post(
        f"{V1}/workers/nack",
        json={"job_id": job_id, "error": {"message": "boom", "retryable": False}},
    )
    assert r.status_code == 200, r.text
    return job_id


async def _seen(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    pick: Callable[[Any], Any],
    expected: Any,
) -> None:
    """Await ``pick(GET path)`` becoming ``expected`` (counters may lag on NATS)."""

    async def check() -> bool:
        r = await client.get(V1 + path, headers=headers)
        assert r.status_code == 200, r.text
        return bool(pick(r.json()) == expected)

    await _until(check, f"{path} showing {expected}")


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    return err


async def queue_stats_count_only_the_callers_jobs(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    """``/queues/{name}/stats`` and the admin queue views count the scoped tenant's jobs only;
    unscoped, everything."""
    for _ in range(3):
        await _enqueue(a, ACME, "scope-stats")
    await _enqueue(a, BETA, "scope-stats")

    async def counted() -> Any:
        r = await b.get(f"{V1}/queues/scope-stats/stats", headers=ACME)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["stats"]["available"] == 3 else None

    mine = await _until(counted, "acme's three jobs counted")
    assert mine["stats"]["total"] == 3
    assert mine["stats"]["throughput_per_second"] == 0
    # On NATS the per-tenant counters reach the stream a few milliseconds after the writes.
    await _seen(b, "/queues/scope-stats/stats", BETA, lambda x: x["stats"]["available"], 1)
    await _seen(b, "/queues/scope-stats/stats", {}, lambda x: x["stats"]["available"], 4)
    await _seen(b, "/admin/queues/scope-stats", BETA, lambda x: x["counts"]["available"], 1)

    def listed(body: Any) -> Any:
        return {q["name"]: q["counts"]["available"] for q in body["items"]}["scope-stats"]

    await _seen(b, "/admin/queues", ACME, listed, 3)
    await _seen(b, "/admin/stats", BETA, lambda x: x["jobs"]["available"], 1)
    bad = _error(await b.get(f"{V1}/queues/scope-stats/stats", headers={"X-OJS-Tenant": "-"}), 400)
    assert bad["details"]["validation_errors"][0]["path"] == "headers.X-OJS-Tenant"


async def bulk_routes_touch_only_the_callers_jobs(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    """``/jobs/bulk/*``: a scoped cancel by ids skips another tenant's job as not found (it
    stays available); a scoped cancel by filter cancels its own only; a scoped bulk enqueue
    tags every job; idempotency keys are per tenant."""
    mine = await _enqueue(a, ACME, "scope-bulk")
    theirs = await _enqueue(a, BETA, "scope-bulk")
    r = await b.post(f"{V1}/jobs/bulk/cancel", json={"job_ids": [mine, theirs]}, headers=ACME)
    assert r.status_code == 207, r.text
    items = r.json()["items"]
    assert items[0]["status"] == "cancelled"
    assert items[1]["status"] == "skipped"
    assert items[1]["error"]["code"] == "not_found"
    assert (await a.get(f"{V1}/jobs/{theirs}")).json()["job"]["state"] == "available"
    # By filter: only acme's available jobs of the queue.
    again = await _enqueue(a, ACME, "scope-bulk")
    r = await b.post(
        f"{V1}/jobs/bulk/cancel",
        json={"filter": {"queue": "scope-bulk", "state": ["available"]}},
        headers=ACME,
    )
    assert r.status_code == 200, r.text
    assert [i["job_id"] for i in r.json()["items"]] == [again]
    assert (await a.get(f"{V1}/jobs/{theirs}")).json()["job"]["state"] == "available"
    # A scoped bulk enqueue: every job is the caller's; a body naming another tenant is 400.
    r = await b.post(
        f"{V1}/jobs/bulk",
        json={"jobs": [{"type": "scope.a", "args": []}, {"type": "scope.b", "args": []}]},
        headers=BETA,
    )
    assert r.status_code in (200, 201), r.text
    ids = [i["job"]["id"] for i in r.json()["items"]]
    for job_id in ids:
        got = await a.get(f"{V1}/jobs/{job_id}")
        assert got.json()["job"]["meta"]["tenant_id"] == "beta"
    bad = await b.post(
        f"{V1}/jobs/bulk",
        json={"jobs": [{"type": "scope.a", "args": [], "meta": {"tenant_id": "acme"}}]},
        headers=BETA,
    )
    assert _error(bad, 400)["details"]["validation_errors"][0]["path"] == "jobs[0].meta.tenant_id"
    # The same idempotency key from two tenants: two requests, neither replays the other.
    body = {"job_ids": [theirs]}
    key = {"Idempotency-Key": "scope-key-1"}
    first = await a.post(f"{V1}/jobs/bulk/cancel", json=body, headers={**ACME, **key})
    assert first.json()["items"][0]["status"] == "skipped"
    second = await b.post(f"{V1}/jobs/bulk/cancel", json=body, headers={**BETA, **key})
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["items"][0]["status"] == "cancelled"


async def dead_letter_is_the_callers(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    """The dead letter, binding and admin routes: a scoped caller lists, counts, retries,
    deletes, bulk-retries and purges its own dead jobs only; another tenant's is 404."""
    mine = await _dead(a, ACME, "scope-dl-a")
    theirs = await _dead(a, BETA, "scope-dl-b")
    listed = (await b.get(f"{V1}/dead-letter", headers=ACME)).json()["jobs"]
    assert [j["id"] for j in listed] == [mine]
    admin_listed = (await b.get(f"{V1}/admin/dead-letter", headers=BETA)).json()["items"]
    assert [j["id"] for j in admin_listed] == [theirs]
    stats = (await b.get(f"{V1}/admin/dead-letter/stats", headers=ACME)).json()
    assert stats["total"] == 1
    assert stats["by_queue"] == {"scope-dl-a": 1}
    for url in (
        f"{V1}/dead-letter/{theirs}/retry",
        f"{V1}/admin/dead-letter/{theirs}/retry",
        f"{V1}/admin/jobs/{theirs}/retry",
    ):
        _error(await b.post(url, headers=ACME), 404)
    _error(await b.delete(f"{V1}/dead-letter/{theirs}", headers=ACME), 404)
    _error(await b.delete(f"{V1}/admin/dead-letter/{theirs}", headers=ACME), 404)
    _error(await b.post(f"{V1}/admin/jobs/{theirs}/cancel", headers=ACME), 404)
    r = await b.post(
        f"{V1}/admin/dead-letter/retry", json={"filter": {}, "confirm": True}, headers=ACME
    )
    assert r.status_code == 200, r.text
    assert r.json()["succeeded"] == 1
    assert (await a.get(f"{V1}/jobs/{mine}")).json()["job"]["state"] == "available"
    assert (await a.get(f"{V1}/jobs/{theirs}")).json()["job"]["state"] == "discarded"
    r = await b.request(
        "DELETE", f"{V1}/admin/dead-letter", json={"filter": {}, "confirm": True}, headers=ACME
    )
    assert r.json()["purged_count"] == 0
    # A retry may not move a job to another tenant through override.meta.
    moved = await b.post(
        f"{V1}/dead-letter/{theirs}/retry",
        json={"override": {"meta": {"tenant_id": "acme"}}},
        headers=BETA,
    )
    err = _error(moved, 400)
    assert err["details"]["validation_errors"][0]["path"] == "override.meta.tenant_id"
    kept = await b.post(
        f"{V1}/dead-letter/{theirs}/retry", json={"override": {"meta": {"k": 1}}}, headers=BETA
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["job"]["meta"] == {"k": 1, "tenant_id": "beta"}
    # Unscoped, the admin sees and changes everything.
    other = await _dead(a, BETA, "scope-dl-c")
    assert (await b.delete(f"{V1}/dead-letter/{other}")).status_code == 200


async def admin_bulk_and_purge_are_scoped(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    """``/admin/jobs/bulk/cancel`` and ``DELETE /admin/queues/{name}/jobs`` with a tenant touch that
    tenant's jobs only, and say so in their counts."""
    mine = await _enqueue(a, ACME, "scope-admin")
    theirs = await _enqueue(a, BETA, "scope-admin")
    r = await b.post(
        f"{V1}/admin/jobs/bulk/cancel",
        json={"filter": {"queue": "scope-admin"}, "confirm": True},
        headers=ACME,
    )
    assert r.status_code == 200, r.text
    assert r.json()["matched"] == 1
    assert r.json()["succeeded"] == 1
    assert (await a.get(f"{V1}/jobs/{mine}")).json()["job"]["state"] == "cancelled"
    assert (await a.get(f"{V1}/jobs/{theirs}")).json()["job"]["state"] == "available"
    await a.delete(f"{V1}/jobs/{theirs}", headers=BETA)
    r = await b.request(
        "DELETE",
        f"{V1}/admin/queues/scope-admin/jobs",
        json={"states": ["cancelled"], "confirm": True},
        headers=BETA,
    )
    assert r.json()["purged_count"] == 1
    _error(await a.get(f"{V1}/jobs/{theirs}"), 404)
    assert (await a.get(f"{V1}/jobs/{mine}")).status_code == 200


async def workflows_are_the_callers(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    """A workflow is its jobs' tenant's: another tenant neither reads nor cancels it."""
    body = {"type": "chain", "steps": [{"type": "scope.step", "args": []}]}
    r = await a.post(f"{V1}/workflows", json=body, headers=BETA)
    assert r.status_code == 201, r.text
    url = f"{V1}/workflows/{r.json()['workflow']['id']}"
    _error(await b.get(url, headers=ACME), 404)
    _error(await b.delete(url, headers=ACME), 404)
    assert (await b.get(url, headers=BETA)).json()["workflow"]["state"] == "running"
    assert (await b.get(url)).status_code == 200
    mine = await a.post(f"{V1}/workflows", json=body, headers=ACME)
    assert mine.status_code == 201, mine.text
    listed = await b.get(f"{V1}/admin/workflows", headers=ACME)
    assert listed.status_code == 200, listed.text
    assert [w["id"] for w in listed.json()["items"]] == [mine.json()["workflow"]["id"]]
    assert listed.json()["pagination"]["has_more"] is False
    everyone = (await b.get(f"{V1}/admin/workflows")).json()["items"]
    assert len(everyone) == 2
    assert (await b.delete(url, headers=BETA)).status_code == 200


Scenario = Callable[[httpx.AsyncClient, httpx.AsyncClient], Awaitable[None]]
SCENARIOS: list[Scenario] = [
    queue_stats_count_only_the_callers_jobs,
    bulk_routes_touch_only_the_callers_jobs,
    dead_letter_is_the_callers,
    admin_bulk_and_purge_are_scoped,
    workflows_are_the_callers,
]
