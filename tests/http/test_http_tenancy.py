"""The multi-tenancy extension over HTTP: ``X-OJS-Tenant`` injected into ``meta.tenant_id``,
requests scoped by it (read, cancel, listing, fetch), the tenant admin API, 429
``TENANT_LIMIT_EXCEEDED`` with the spec's body, the manifest entry and per-tenant metrics."""

from __future__ import annotations

from typing import Any

import httpx
from test_http_binding import V1, client, error_of

from ojs_core.prometheus import JobMetrics
from ojs_core.service import JobService
from ojs_memory import MemoryBackend

__all__ = ["client"]

ACME = {"X-OJS-Tenant": "acme"}
BETA = {"X-OJS-Tenant": "beta"}


async def _enqueue(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    payload = {"type": "mt.job", "args": [], "options": {"queue": "mt"}, **body}
    return await client.post(f"{V1}/jobs", json=payload, headers=headers or {})


async def test_the_header_lands_in_meta_and_is_checked(client: httpx.AsyncClient) -> None:
    created = await _enqueue(client, ACME)
    assert created.status_code == 201, created.text
    assert created.json()["job"]["meta"]["tenant_id"] == "acme"
    same = await _enqueue(client, ACME, meta={"tenant_id": "acme"})
    assert same.status_code == 201
    conflict = error_of(await _enqueue(client, ACME, meta={"tenant_id": "beta"}), 400)
    assert conflict["details"]["validation_errors"][0]["path"] == "meta.tenant_id"
    bad = error_of(await _enqueue(client, {"X-OJS-Tenant": "-nope"}), 400)
    assert bad["details"]["validation_errors"][0]["path"] == "headers.X-OJS-Tenant"
    batch = await client.post(
        f"{V1}/jobs/batch",
        json={"jobs": [{"type": "mt.a", "args": []}, {"type": "mt.b", "args": []}]},
        headers=BETA,
    )
    assert batch.status_code == 201
    assert [j["meta"]["tenant_id"] for j in batch.json()["jobs"]] == ["beta", "beta"]


async def test_a_scoped_request_sees_only_its_tenant(client: httpx.AsyncClient) -> None:
    mine = (await _enqueue(client, ACME)).json()["job"]["id"]
    theirs = (await _enqueue(client, BETA)).json()["job"]["id"]
    error_of(await client.get(f"{V1}/jobs/{theirs}", headers=ACME), 404, "not_found")
    error_of(await client.delete(f"{V1}/jobs/{theirs}", headers=ACME), 404, "not_found")
    assert (await client.get(f"{V1}/jobs/{theirs}")).json()["job"]["state"] == "available"
    assert (await client.get(f"{V1}/jobs/{mine}", headers=ACME)).status_code == 200
    listed = await client.get(f"{V1}/admin/jobs", headers=ACME)
    assert [j["id"] for j in listed.json()["items"]] == [mine]
    fetched = await client.post(
        f"{V1}/workers/fetch", json={"queues": ["mt"], "count": 10}, headers=ACME
    )
    assert [j["id"] for j in fetched.json()["jobs"]] == [mine]
    cancelled = await client.delete(f"{V1}/jobs/{theirs}", headers=BETA)
    assert cancelled.json()["job"]["state"] == "cancelled"


async def test_admin_api_and_the_limit_error(client: httpx.AsyncClient) -> None:
    put = await client.put(
        f"{V1}/admin/tenants/acme",
        json={"limits": {"max_queue_depth": 1, "max_concurrency": 4}, "fairness_weight": 3},
    )
    assert put.status_code == 201, put.text
    assert put.json()["limits"]["max_queue_depth"] == 1
    again = await client.put(f"{V1}/admin/tenants/acme", json=put.json())
    assert again.status_code == 200
    limits = await client.put(
        f"{V1}/admin/tenants/acme/limits", json={"max_concurrency": 2, "reason": "incident"}
    )
    assert limits.json()["limits"]["max_concurrency"] == 2
    assert limits.json()["fairness_weight"] == 3
    assert limits.json()["reason"] == "incident"
    assert (await _enqueue(client, ACME)).status_code == 201
    refused = await _enqueue(client, ACME)
    err = error_of(refused, 429, "TENANT_LIMIT_EXCEEDED")
    assert refused.headers["Retry-After"]
    assert (err["tenant_id"], err["limit"], err["current"], err["maximum"]) == (
        "acme",
        "max_queue_depth",
        1,
        1,
    )
    listed = (await client.get(f"{V1}/admin/tenants")).json()
    assert [t["tenant_id"] for t in listed["items"]] == ["acme"]
    assert listed["items"][0]["stats"]["jobs"]["available"] == 1
    stats = (await client.get(f"{V1}/admin/tenants/acme/stats")).json()
    assert stats["limits"]["max_queue_depth"] == {"limit": 1, "current": 1}
    jobs = (await client.get(f"{V1}/admin/tenants/acme/jobs")).json()
    assert len(jobs["items"]) == 1
    assert (await client.delete(f"{V1}/admin/tenants/acme")).status_code == 200
    error_of(await client.get(f"{V1}/admin/tenants/acme"), 404, "not_found")
    error_of(await client.put(f"{V1}/admin/tenants/acme", json={"fairness_weight": 0}), 400)


async def test_the_manifest_declares_the_extension(client: httpx.AsyncClient) -> None:
    manifest = (await client.get("/ojs/manifest")).json()
    entries = {e["name"]: e for e in manifest["extensions"]["experimental"]}
    entry = entries["multi-tenancy"]
    assert entry["uri"] == "urn:ojs:ext:experimental:multi-tenancy"
    assert entry["version"] == "0.1.0"
    assert entry["isolation_model"] == "hybrid"
    official = {e["name"] for e in manifest["extensions"]["official"]}
    # Per-tenant fairness is FS-R005 of fair scheduling, declared with the pools (FS-004).
    assert "fair-scheduling" in official


async def test_metrics_carry_the_tenant_capped() -> None:
    service = JobService(MemoryBackend())
    metrics = JobMetrics(max_tenants=2)
    metrics.attach(service)
    for tenant in ("t1", "t2", "t3", "t4"):
        await service.enqueue({"type": "mt.x", "args": [], "meta": {"tenant_id": tenant}})
    await service.tenancy.put("t1", {})
    await service.fetch(["default"], 1, tenant="t1")
    await metrics.refresh(force=True)
    text = metrics.exposition().decode()
    assert 'ojs_tenant_jobs_enqueued_total{queue="default",tenant_id="t1"} 1.0' in text
    assert 'ojs_tenant_jobs_enqueued_total{queue="default",tenant_id="_other"} 2.0' in text
    assert 'ojs_tenant_jobs_active{tenant_id="t1"} 1.0' in text
