"""Events are tenant-scoped too: with ``X-OJS-Tenant`` the event poll, the SSE streams and
the WebSocket carry only that tenant's events; another tenant's job stream is 404. A real
server on a loopback port (``stream_support.serving``), clients httpx and ``websockets``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import websockets
from stream_support import SSEReader
from test_http_stream import client, receive, server

__all__ = ["client", "server"]

V1 = "/ojs/v1"
ACME = {"X-OJS-Tenant": "acme"}
BETA = {"X-OJS-Tenant": "beta"}


async def _enqueue(client: httpx.AsyncClient, headers: dict[str, str], queue: str) -> str:
    body = {"type": "ev.job", "args": [], "options": {"queue": queue}}
    r = await client.post(f"{V1}/jobs", json=body, headers=headers)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["job"]["id"]
    return job_id


async def test_the_event_poll_is_scoped(client: httpx.AsyncClient) -> None:
    mine = await _enqueue(client, ACME, "evq")
    await _enqueue(client, BETA, "evq")
    untagged = await _enqueue(client, {}, "evq")
    params = {"types": "job.enqueued"}
    got = (await client.get(f"{V1}/events", params=params, headers=ACME)).json()
    assert [e["data"]["job_id"] for e in got["events"]] == [mine]
    everyone = (await client.get(f"{V1}/events", params=params)).json()["events"]
    assert len(everyone) == 3
    assert got["cursor"] == str(everyone[-1]["seq"])  # the cursor moves past the others
    assert untagged in [e["data"]["job_id"] for e in everyone]


async def test_the_streams_are_scoped(server: str, client: httpx.AsyncClient) -> None:
    theirs = await _enqueue(client, BETA, "evs")
    r = await client.get(f"{V1}/jobs/{theirs}/events", headers=ACME)
    assert r.status_code == 404, r.text
    async with client.stream(
        "GET", f"{V1}/queues/evs/events", headers={**ACME, "Last-Event-ID": "0"}
    ) as response:
        reader = SSEReader(response)
        mine = await _enqueue(client, ACME, "evs")
        (frame,) = await reader.events(1)
        assert frame.data["data"]["job_id"] == mine  # beta's enqueue, earlier, was skipped
    url = server.replace("http://", "ws://") + f"{V1}/ws"
    async with websockets.connect(url, additional_headers=ACME, open_timeout=10) as ws:
        await ws.send(json.dumps({"action": "subscribe", "channel": "queue:evw"}))
        assert (await receive(ws, "ping"))["type"] == "subscribed"
        await _enqueue(client, BETA, "evw")
        mine = await _enqueue(client, ACME, "evw")
        message: dict[str, Any] = await receive(ws, "ping")
        assert message["data"]["data"]["job_id"] == mine
    async with websockets.connect(
        url, additional_headers={"X-OJS-Tenant": "-"}, open_timeout=10
    ) as ws:
        error = json.loads(await ws.recv())
        assert error["code"] == "invalid_request"
        assert error["details"]["validation_errors"][0]["path"] == "headers.X-OJS-Tenant"
