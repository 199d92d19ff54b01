"""Job versioning over HTTP: ``version`` and ``type@version`` on enqueue, the worker's
``versions``/``handlers`` declaration at fetch and in the heartbeat, and the manifest entry."""

from __future__ import annotations

from typing import Any

import httpx
from test_http_binding import V1, client, error_of

__all__ = ["client"]


async def _enqueue(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    created = await client.post(f"{V1}/jobs", json={"args": [], **body})
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()["job"]
    return job


async def _fetch(client: httpx.AsyncClient, **body: Any) -> list[str]:
    got = await client.post(f"{V1}/workers/fetch", json={"queues": ["default"], **body})
    assert got.status_code == 200, got.text
    return [j["id"] for j in got.json()["jobs"]]


async def test_versions_are_parsed_returned_and_routed(client: httpx.AsyncClient) -> None:
    v2 = await _enqueue(client, type="invoice.generate@2.0")
    assert (v2["type"], v2["version"]) == ("invoice.generate", "2.0")
    v1 = await _enqueue(client, type="invoice.generate", version="1.1")
    assert v1["version"] == "1.1"
    plain = await _enqueue(client, type="invoice.generate")
    assert "version" not in plain
    old = {"versions": {"invoice.generate": ">=1.0 <2.0"}, "count": 10, "worker_id": "old"}
    assert sorted(await _fetch(client, **old)) == sorted([v1["id"], plain["id"]])
    info = (await client.get(f"{V1}/jobs/{v2['id']}")).json()["job"]
    assert (info["state"], info["version"]) == ("available", "2.0")
    new = {"handlers": [{"type": "invoice.generate", "versions": "2.0"}], "count": 10}
    assert await _fetch(client, **new) == [v2["id"]]


async def test_a_heartbeat_declaration_routes_the_workers_fetches(
    client: httpx.AsyncClient,
) -> None:
    v3 = await _enqueue(client, type="report.build", version="3.0")
    v4 = await _enqueue(client, type="report.build", version="4.0")
    beat = await client.post(
        f"{V1}/workers/heartbeat",
        json={"worker_id": "w-ver", "handlers": [{"type": "report.build", "versions": ">=4.0"}]},
    )
    assert beat.status_code == 200, beat.text
    assert await _fetch(client, worker_id="w-ver", count=5) == [v4["id"]]
    assert await _fetch(client, worker_id="someone-else", count=5) == [v3["id"]]


async def test_bad_versions_and_ranges_name_the_field(client: httpx.AsyncClient) -> None:
    err = error_of(
        await client.post(f"{V1}/jobs", json={"type": "t", "args": [], "version": "v2"}), 400
    )
    assert err["details"]["validation_errors"][0]["path"] == "version"
    err = error_of(await client.post(f"{V1}/jobs", json={"type": "t@x", "args": []}), 400)
    assert err["details"]["validation_errors"][0]["path"] == "type"
    err = error_of(
        await client.post(
            f"{V1}/workers/fetch", json={"queues": ["default"], "versions": {"t": "~1.0"}}
        ),
        400,
    )
    assert err["details"]["validation_errors"][0]["path"] == "versions.t"


async def test_the_manifest_declares_the_extension(client: httpx.AsyncClient) -> None:
    manifest = (await client.get("/ojs/manifest")).json()
    [entry] = [e for e in manifest["extensions"]["experimental"] if e["name"] == "job-versioning"]
    assert entry["uri"] == "urn:ojs:ext:experimental:job-versioning"
    assert entry["version"] == "0.1.0"
    assert entry["declared_at"] == ["fetch", "heartbeat"]
    assert entry["canary_routing"] is False
    official = [e["uri"] for e in manifest["extensions"]["official"]]
    assert not any("versioning" in uri or "middleware" in uri for uri in official)
