"""The batch-ack extension: ``POST /ojs/v1/workers/ack/batch`` acknowledges many jobs, each on
its own, with a per-entry outcome (200 all, 207 some, 422 none)."""

from __future__ import annotations

from typing import Any

import httpx
from test_http_binding import UNKNOWN_ID, V1, client, error_of, serve

__all__ = ["client"]


async def _active(client: httpx.AsyncClient, n: int) -> list[str]:
    for i in range(n):
        created = await client.post(f"{V1}/jobs", json={"type": "batch.ack", "args": [i]})
        assert created.status_code == 201
    fetched = await client.post(
        f"{V1}/workers/fetch", json={"queues": ["default"], "count": n, "worker_id": "w"}
    )
    ids = [j["id"] for j in fetched.json()["jobs"]]
    assert len(ids) == n
    return ids


async def test_all_acknowledged(client: httpx.AsyncClient) -> None:
    ids = await _active(client, 3)
    body = {"acks": [{"job_id": j, "result": {"n": i}} for i, j in enumerate(ids)]}
    response = await client.post(f"{V1}/workers/ack/batch", json={**body, "worker_id": "w"})
    assert response.status_code == 200
    data = response.json()
    assert (data["total"], data["succeeded"], data["failed"]) == (3, 3, 0)
    assert [item["job_id"] for item in data["items"]] == ids
    assert {item["status"] for item in data["items"]} == {"acknowledged"}
    for i, job_id in enumerate(ids):
        job = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
        assert job["state"] == "completed"
        assert job["result"] == {"n": i}


async def test_some_refused_is_207_with_the_reason_per_entry(client: httpx.AsyncClient) -> None:
    (active,) = await _active(client, 1)
    waiting = (await client.post(f"{V1}/jobs", json={"type": "t", "args": []})).json()["job"]
    acks: list[dict[str, Any]] = [
        {"job_id": active},
        {"job_id": UNKNOWN_ID},
        {"job_id": waiting["id"]},
    ]
    response = await client.post(f"{V1}/workers/ack/batch", json={"acks": acks})
    assert response.status_code == 207
    items = response.json()["items"]
    assert items[0]["status"] == "acknowledged"
    assert (items[1]["status"], items[1]["error"]["code"]) == ("failed", "not_found")
    assert (items[2]["status"], items[2]["error"]["code"]) == ("failed", "conflict")
    job = (await client.get(f"{V1}/jobs/{waiting['id']}")).json()["job"]
    assert job["state"] == "available"  # a refused entry changed nothing


async def test_none_acknowledged_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{V1}/workers/ack/batch", json={"acks": [{"job_id": UNKNOWN_ID}]})
    assert response.status_code == 422
    assert response.json()["failed"] == 1


async def test_malformed_requests_are_400_with_the_field(client: httpx.AsyncClient) -> None:
    for body, path in [
        ({}, "acks"),
        ({"acks": []}, "acks"),
        ({"acks": ["x"]}, "acks[0]"),
        ({"acks": [{"result": 1}]}, "acks[0].job_id"),
    ]:
        response = await client.post(f"{V1}/workers/ack/batch", json=body)
        err = error_of(response, 400)
        assert err["details"]["validation_errors"][0]["path"] == path


async def test_the_batch_is_bounded_and_the_manifest_declares_it() -> None:
    from ojs_core.limits import Limits

    async with serve(limits=Limits(max_batch_jobs=2)) as (_, client):
        acks = [{"job_id": UNKNOWN_ID}] * 3
        response = await client.post(f"{V1}/workers/ack/batch", json={"acks": acks})
        assert response.status_code == 400
        manifest = (await client.get("/ojs/manifest")).json()
        uris = [e["uri"] for e in manifest["extensions"]["experimental"]]
        assert "urn:ojs:ext:experimental:batch-ack" in uris
