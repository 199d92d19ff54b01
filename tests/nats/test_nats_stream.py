"""Event streams on NATS: across replicas, numbered by the events stream, one subscription per
process. Real nats-server (the session fixture) and real ojs-server processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import websockets
from fault_support import V1, OjsServer, http_client
from websockets.typing import Subprotocol

from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats import names
from ojs_nats.backend import NatsBackend

sys.path.insert(0, str(Path(__file__).parent.parent / "http"))
from stream_support import SSEReader, serving

SUB = Subprotocol("ojs.v1")


async def enqueue(client: httpx.AsyncClient, queue: str) -> str:
    response = await client.post(
        f"{V1}/jobs", json={"type": "x.job", "args": [], "options": {"queue": queue}}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job"]["id"]
    return job_id


async def work(client: httpx.AsyncClient, queue: str, job_id: str) -> None:
    response = await client.post(f"{V1}/workers/fetch", json={"queues": [queue], "worker_id": "w"})
    assert [j["id"] for j in response.json()["jobs"]] == [job_id], response.text
    ack = await client.post(f"{V1}/workers/ack", json={"job_id": job_id, "worker_id": "w"})
    assert ack.status_code == 200, ack.text


async def test_a_subscriber_on_one_replica_sees_a_job_processed_through_another(
    tmp_path: Path, nats_url: str
) -> None:
    a = OjsServer(tmp_path, "--backend", nats_url)
    b = OjsServer(tmp_path, "--backend", nats_url)
    try:
        await a.ready()
        await b.ready()
        async with http_client(a.url, 10) as on_a, http_client(b.url, 10) as on_b:
            async with on_a.stream("GET", f"{V1}/events/stream?channel=queue:xr") as response:
                reader = SSEReader(response)
                assert (await reader.frame()) is not None  # subscribed on A
                job_id = await enqueue(on_b, "xr")
                await work(on_b, "xr", job_id)
                frames = await reader.events(3)
            assert [f.event for f in frames] == ["job.enqueued", "job.started", "job.completed"]
            assert {f.data["data"]["job_id"] for f in frames} == {job_id}
            ids = [int(f.id) for f in frames if f.id]
            assert ids == sorted(set(ids))
            # The numbers are the events stream's, the same on every replica: resuming on B
            # from an id A sent replays exactly the rest, and the finished job's stream ends.
            async with on_b.stream(
                "GET", f"{V1}/jobs/{job_id}/events", headers={"Last-Event-ID": frames[0].id or ""}
            ) as response:
                rest = [f for f in await SSEReader(response).rest() if f.event]
            assert [(f.id, f.event) for f in rest] == [(f.id, f.event) for f in frames[1:]]
            # The WebSocket of A hears a job of B too, with the same numbering.
            ws_url = a.url.replace("http://", "ws://") + f"{V1}/ws"
            async with websockets.connect(ws_url, subprotocols=[SUB], open_timeout=10) as ws:
                await ws.send(json.dumps({"action": "subscribe", "channel": "queue:xw"}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
                other = await enqueue(on_b, "xw")
                message = json.loads(await ws.recv())
                assert (message["type"], message["event"]) == ("event", "job.enqueued")
                assert message["data"]["data"]["job_id"] == other
                assert int(message["id"]) > int(frames[-1].id or 0)
                await work(on_b, "xw", other)
                heard = [json.loads(await ws.recv()) for _ in range(2)]
                assert [m["event"] for m in heard] == ["job.started", "job.completed"]
                assert {m["data"]["data"]["job_id"] for m in heard} == {other}
            # The replica the jobs went through counts them under their queues.
            metrics = (await on_b.get("/metrics")).text
            for queue in ("xr", "xw"):
                assert any(
                    line.startswith("ojs_job_completed_total{")
                    and f'queue="{queue}"' in line
                    and line.endswith(" 1.0")
                    for line in metrics.splitlines()
                ), metrics
    finally:
        a.stop()
        b.stop()


async def test_one_nats_subscription_per_process_whatever_the_streams(nats_url: str) -> None:
    backend = NatsBackend(nats_url)
    app = create_app(backend, HttpSettings())
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        channels = ["all", "queue:one", "queue:two"]
        async with (
            client.stream("GET", f"{V1}/events/stream?channel={channels[0]}") as s0,
            client.stream("GET", f"{V1}/events/stream?channel={channels[1]}") as s1,
            client.stream("GET", f"{V1}/events/stream?channel={channels[2]}") as s2,
        ):
            readers = [SSEReader(s) for s in (s0, s1, s2)]
            for reader in readers:
                assert (await reader.frame()) is not None
            feed = [
                s
                for s in backend.nc._subs.values()  # nats-py keeps no public list
                if s.subject == names.EVENT_FEED_SUBJECTS
            ]
            assert len(feed) == 1
            job_id = await enqueue(client, "one")
            all_, one = await readers[0].events(1), await readers[1].events(1)
            assert all_[0].id == one[0].id
            assert one[0].data["data"]["job_id"] == job_id
