"""Seeding for the admin API tests: one queue holding jobs in known states, made over HTTP
the way clients and workers make them."""

from __future__ import annotations

from typing import Any

import httpx

V1 = "/ojs/v1"


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    response = await client.post(f"{V1}{path}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _enqueue(client: httpx.AsyncClient, queue: str, n: int) -> Any:
    return await _post(
        client, "/jobs", {"type": "mail.send", "args": [n], "options": {"queue": queue}}
    )


async def seed_queue(client: httpx.AsyncClient, queue: str = "mail") -> dict[str, Any]:
    """In ``queue``: 3 available, 1 scheduled, 1 completed and 1 dead-lettered job. Returns
    their ids by state (``available`` is a list, oldest first)."""
    dead = await _post(
        client,
        "/jobs",
        {
            "type": "mail.bounce",
            "args": ["x@example.com"],
            "options": {"queue": queue, "retry": {"max_attempts": 1}},
        },
    )
    fetched = await _post(client, "/workers/fetch", {"queues": [queue], "worker_id": "w-seed"})
    assert [j["id"] for j in fetched["jobs"]] == [dead["job"]["id"]]
    await _post(
        client,
        "/workers/nack",
        {
            "job_id": dead["job"]["id"],
            "worker_id": "w-seed",
            "error": {"code": "smtp", "type": "SMTPError", "message": "mailbox full"},
        },
    )
    done = await _enqueue(client, queue, 0)
    fetched = await _post(client, "/workers/fetch", {"queues": [queue], "worker_id": "w-seed"})
    assert [j["id"] for j in fetched["jobs"]] == [done["job"]["id"]]
    await _post(client, "/workers/ack", {"job_id": done["job"]["id"], "worker_id": "w-seed"})
    available = [(await _enqueue(client, queue, n))["job"]["id"] for n in (1, 2, 3)]
    scheduled = await _post(
        client,
        "/jobs",
        {
            "type": "mail.digest",
            "args": [],
            "options": {"queue": queue, "scheduled_at": "2099-01-01T00:00:00Z"},
        },
    )
    return {
        "available": available,
        "scheduled": scheduled["job"]["id"],
        "completed": done["job"]["id"],
        "discarded": dead["job"]["id"],
    }
