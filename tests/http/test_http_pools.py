"""Worker pools over HTTP (fair-scheduling §6, §10.1): the admin API with its validation,
fetches governed by a worker's pool, isolation, the pool's concurrency across workers."""

from __future__ import annotations

from typing import Any

import httpx
from test_http_binding import V1, client, error_of

__all__ = ["client"]


async def _enqueue(client: httpx.AsyncClient, queue: str, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        r = await client.post(f"{V1}/jobs", json={"type": "t.job", "args": [], "queue": queue})
        assert r.status_code == 201, r.text
        ids.append(r.json()["job"]["id"])
    return ids


async def _fetch(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = await client.post(f"{V1}/workers/fetch", json=body)
    assert r.status_code == 200, r.text
    jobs: list[dict[str, Any]] = r.json()["jobs"]
    return jobs


async def test_pool_crud(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{V1}/admin/pools")).json() == {"items": []}
    body = {
        "queues": ["critical", "payments"],
        "concurrency": 20,
        "strategy": "weighted",
        "weights": {"critical": 3},
        "starvation_prevention": {"enabled": True, "rotation_interval": "PT10S"},
    }
    r = await client.put(f"{V1}/admin/pools/critical-workers", json=body)
    assert r.status_code == 201, r.text
    pool = r.json()
    assert pool["name"] == "critical-workers"
    assert pool["queues"] == ["critical", "payments"]
    assert pool["weights"] == {"critical": 3}
    assert pool["isolated"] is False
    assert pool["starvation_prevention"]["rotation_interval"] == "PT10S"
    r = await client.put(f"{V1}/admin/pools/critical-workers", json=body | {"strategy": "strict"})
    assert r.status_code == 200
    assert r.json()["created_at"] == pool["created_at"]
    got = (await client.get(f"{V1}/admin/pools/critical-workers")).json()
    assert got["strategy"] == "strict"
    (item,) = (await client.get(f"{V1}/admin/pools")).json()["items"]
    assert item["active_workers"] == 0
    assert item["active_jobs"] == 0
    events = (await client.get(f"{V1}/events", params={"types": "scheduling.*"})).json()
    assert [e["type"] for e in events["events"]] == ["scheduling.rebalanced"]
    assert events["events"][0]["data"]["previous_strategy"] == "weighted"
    r = await client.delete(f"{V1}/admin/pools/critical-workers")
    assert r.status_code == 200
    error_of(await client.get(f"{V1}/admin/pools/critical-workers"), 404)
    error_of(await client.delete(f"{V1}/admin/pools/critical-workers"), 404)


async def test_pool_validation_names_the_field(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("p", {}, "queues"),
        ("p", {"queues": []}, "queues"),
        ("p", {"queues": ["Bad Queue"]}, "queues[0]"),
        ("p", {"queues": ["a", "a"]}, "queues"),
        ("p", {"queues": ["a"], "concurrency": 0}, "concurrency"),
        ("p", {"queues": ["a"], "concurrency": "5"}, "concurrency"),
        ("p", {"queues": ["a"], "strategy": "fifo"}, "strategy"),
        ("p", {"queues": ["a"], "weights": {"b": 2}}, "weights.b"),
        ("p", {"queues": ["a"], "weights": {"a": 1.5}}, "weights.a"),
        ("p", {"queues": ["a"], "isolated": "yes"}, "isolated"),
        ("p", {"queues": ["a"], "name": "q"}, "name"),
        (
            "p",
            {"queues": ["a"], "starvation_prevention": {"rotation_interval": 5}},
            "starvation_prevention.rotation_interval",
        ),
        ("-bad", {"queues": ["a"]}, "name"),
        ("p", [1], "body"),
    ]
    for name, body, path in cases:
        r = await client.put(f"{V1}/admin/pools/{name}", json=body)
        err = error_of(r, 400)
        assert err["details"]["validation_errors"][0]["path"] == path, (body, err)


async def test_a_pools_queues_and_strategy_govern_its_workers_fetch(
    client: httpx.AsyncClient,
) -> None:
    await client.put(
        f"{V1}/admin/pools/general",
        json={"queues": ["default", "email"], "strategy": "round-robin"},
    )
    await _enqueue(client, "default", 3)
    await _enqueue(client, "email", 3)
    await _enqueue(client, "other", 1)
    # The pool's queues replace the ones the worker names (server-side precedence, §5.2).
    got = []
    for _ in range(4):
        got += [
            j["queue"]
            for j in await _fetch(
                client, {"pool": "general", "queues": ["other"], "worker_id": "g1"}
            )
        ]
    assert got == ["default", "email", "default", "email"]
    job = (await _fetch(client, {"pool": "general", "worker_id": "g1"}))[0]
    assert "pool" not in job  # a pool without a concurrency limit holds no slot
    # A worker whose heartbeat declared the pool needs not name it in its fetches.
    r = await client.post(f"{V1}/workers/heartbeat", json={"worker_id": "g2", "pool": "general"})
    assert r.status_code == 200, r.text
    jobs = await _fetch(client, {"queues": ["other"], "worker_id": "g2"})
    assert [j["queue"] for j in jobs] == ["email"]
    # ... and may not claim another one.
    r = await client.post(
        f"{V1}/workers/fetch", json={"queues": ["other"], "worker_id": "g2", "pool": "x"}
    )
    error_of(r, 409)
    (item,) = (await client.get(f"{V1}/admin/pools")).json()["items"]
    assert item["active_workers"] == 1
    r = await client.post(f"{V1}/workers/heartbeat", json={"worker_id": "g3", "pool": "-"})
    assert error_of(r, 400)["details"]["validation_errors"][0]["path"] == "pool"


async def test_an_undefined_pool_needs_queues(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{V1}/workers/fetch", json={"pool": "nobody"})
    assert error_of(r, 400)["details"]["validation_errors"][0]["path"] == "queues"
    await _enqueue(client, "default")
    assert len(await _fetch(client, {"pool": "nobody", "queues": ["default"]})) == 1


async def test_isolated_queues_go_only_to_their_pool(client: httpx.AsyncClient) -> None:
    r = await client.put(
        f"{V1}/admin/pools/payment-workers", json={"queues": ["payments"], "isolated": True}
    )
    assert r.status_code == 201
    await _enqueue(client, "payments", 2)
    await _enqueue(client, "default", 1)
    assert await _fetch(client, {"queues": ["payments"], "worker_id": "w"}) == []
    jobs = await _fetch(client, {"queues": ["payments", "default"], "worker_id": "w", "count": 5})
    assert [j["queue"] for j in jobs] == ["default"]
    jobs = await _fetch(client, {"queues": ["payments"], "pool": "other", "worker_id": "w2"})
    assert jobs == []
    jobs = await _fetch(client, {"pool": "payment-workers", "worker_id": "p1", "count": 5})
    assert [j["queue"] for j in jobs] == ["payments", "payments"]


async def test_pool_concurrency_holds_across_its_workers(client: httpx.AsyncClient) -> None:
    await client.put(f"{V1}/admin/pools/small", json={"queues": ["work"], "concurrency": 2})
    await _enqueue(client, "work", 5)
    a = await _fetch(client, {"pool": "small", "worker_id": "a", "count": 1})
    b = await _fetch(client, {"pool": "small", "worker_id": "b", "count": 5})
    assert len(a) + len(b) == 2
    assert {j["pool"] for j in a + b} == {"small"}
    assert await _fetch(client, {"pool": "small", "worker_id": "c", "count": 5}) == []
    (item,) = (await client.get(f"{V1}/admin/pools")).json()["items"]
    assert item["active_jobs"] == 2
    # A worker outside the pool is not held by the pool's limit.
    other = await _fetch(client, {"queues": ["work"], "worker_id": "x"})
    assert len(other) == 1
    # An ack frees the slot.
    r = await client.post(f"{V1}/workers/ack", json={"job_id": a[0]["id"] if a else b[0]["id"]})
    assert r.status_code == 200
    assert len(await _fetch(client, {"pool": "small", "worker_id": "c", "count": 5})) == 1
    events = (await client.get(f"{V1}/events", params={"types": "scheduling.*"})).json()
    overloaded = [e for e in events["events"] if e["type"] == "scheduling.pool_overloaded"]
    assert overloaded
    assert overloaded[0]["data"]["pool"] == "small"
    assert overloaded[0]["data"]["active_jobs"] == 2
