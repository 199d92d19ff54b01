"""Backpressure and graceful shutdown over HTTP on the memory backend: the admin route that
bounds a queue, 429 ``queue_full`` with ``Retry-After`` and the spec's headers, atomic
batches refused whole, ``OJS-Block-Timeout``, warning headers; heartbeats reporting
``quiet``/``terminate``, fetches by a draining worker, worker listings, the manifest.
``tests/nats/test_nats_flow.py`` runs the cross-replica cases on NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from test_http_binding import V1, error_of, serve

from ojs_http import HttpSettings, create_app
from ojs_sqlite import SqliteBackend

CONFIG = f"{V1}/admin/queues/{{}}/config"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve() as (_, c):
        yield c


def _job(queue: str, jtype: str = "bp.job") -> dict[str, Any]:
    return {"type": jtype, "args": [], "options": {"queue": queue}}


async def _bound(client: httpx.AsyncClient, queue: str, **fields: Any) -> dict[str, Any]:
    response = await client.put(CONFIG.format(queue), json={"backpressure": fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- backpressure ---------------------------------------------------------------------------


async def test_configure_read_and_remove_a_bound(client: httpx.AsyncClient) -> None:
    body = await _bound(client, "mail", max_depth=2, warning_threshold=0.5, retry_after_s=9)
    assert body == {
        "queue": "mail",
        "backpressure": {
            "max_depth": 2,
            "max_size_bytes": 0,
            "strategy": "reject",
            "warning_threshold": 0.5,
            "retry_after_s": 9,
        },
    }
    assert (await client.post(f"{V1}/jobs", json=_job("mail"))).status_code == 201
    read = (await client.get(CONFIG.format("mail"))).json()
    assert read["backpressure"]["max_depth"] == 2
    assert read["depth"] == 1
    queue = (await client.get(f"{V1}/admin/queues/mail")).json()
    assert queue["configuration"]["backpressure"]["max_depth"] == 2
    removed = await client.put(CONFIG.format("mail"), json={"backpressure": None})
    assert removed.json()["backpressure"]["max_depth"] == 0
    assert (await client.get(CONFIG.format("mail"))).json()["backpressure"]["max_depth"] == 0


async def test_a_full_queue_answers_429_with_the_spec_headers(client: httpx.AsyncClient) -> None:
    await _bound(client, "tight", max_depth=1, retry_after_s=7)
    assert (await client.post(f"{V1}/jobs", json=_job("tight"))).status_code == 201
    refused = await client.post(f"{V1}/jobs", json=_job("tight", "bp.refused"))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    assert refused.headers["X-OJS-Queue-Depth"] == "1"
    assert refused.headers["X-OJS-Queue-Bound"] == "1"
    err = error_of(refused, 429, "queue_full")
    assert err["retryable"] is True
    assert (err["queue"], err["depth"], err["bound"], err["strategy"]) == ("tight", 1, 1, "reject")
    assert (await client.get(CONFIG.format("tight"))).json()["depth"] == 1
    events = (await client.get(f"{V1}/events", params={"types": "backpressure.rejected"})).json()
    (event,) = events["events"]
    assert event["data"]["job_type"] == "bp.refused"


async def test_a_batch_is_refused_whole(client: httpx.AsyncClient) -> None:
    await _bound(client, "bulk", max_depth=2)
    jobs = [_job("bulk"), _job("other"), _job("bulk"), _job("bulk")]
    refused = await client.post(f"{V1}/jobs/batch", json={"jobs": jobs})
    assert refused.status_code == 429
    assert error_of(refused, 429, "queue_full")["details"]["requested"] == 3
    assert (await client.get(CONFIG.format("bulk"))).json()["depth"] == 0
    listed = (await client.get(f"{V1}/admin/jobs", params={"queue": "other"})).json()
    assert listed["pagination"]["total"] == 0
    accepted = await client.post(f"{V1}/jobs/batch", json={"jobs": jobs[:3]})
    assert accepted.status_code == 201
    assert accepted.json()["count"] == 3


async def test_warning_headers_from_the_threshold(client: httpx.AsyncClient) -> None:
    await _bound(client, "warm", max_depth=4, warning_threshold=0.5)
    first = await client.post(f"{V1}/jobs", json=_job("warm"))
    assert "X-OJS-Queue-Pressure" not in first.headers
    second = await client.post(f"{V1}/jobs", json=_job("warm"))
    assert second.status_code == 201
    assert second.headers["X-OJS-Queue-Depth"] == "2"
    assert second.headers["X-OJS-Queue-Bound"] == "4"
    assert second.headers["X-OJS-Queue-Pressure"] == "0.50"
    batch = await client.post(f"{V1}/jobs/batch", json={"jobs": [_job("warm")]})
    assert batch.headers["X-OJS-Queue-Pressure"] == "0.75"


async def test_block_timeout_header_waits_for_room(client: httpx.AsyncClient) -> None:
    await _bound(client, "slow", max_depth=1, strategy="block")
    assert (await client.post(f"{V1}/jobs", json=_job("slow"))).status_code == 201
    assert (await client.post(f"{V1}/jobs", json=_job("slow"))).status_code == 429
    timed_out = await client.post(
        f"{V1}/jobs", json=_job("slow"), headers={"OJS-Block-Timeout": "0.2"}
    )
    assert timed_out.status_code == 429
    blocked = asyncio.ensure_future(
        client.post(f"{V1}/jobs", json=_job("slow"), headers={"OJS-Block-Timeout": "10"})
    )
    await asyncio.sleep(0.2)
    assert not blocked.done()
    fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["slow"]})
    assert fetched.json()["jobs"]
    assert (await asyncio.wait_for(blocked, 10)).status_code == 201


async def test_bad_block_timeout_and_bad_bounds_are_refused(client: httpx.AsyncClient) -> None:
    bad = await client.post(f"{V1}/jobs", json=_job("q"), headers={"OJS-Block-Timeout": "soon"})
    assert bad.status_code == 400
    for fields, status in (
        ({"max_depth": 10, "strategy": "drop_oldest"}, 422),
        ({"max_size_bytes": 1024}, 422),
        ({"max_depth": -1}, 400),
        ({"max_depth": 1, "warning_threshold": 2}, 400),
    ):
        response = await client.put(CONFIG.format("q"), json={"backpressure": fields})
        assert response.status_code == status, (fields, response.text)
    not_object = await client.put(CONFIG.format("q"), json={"backpressure": 5})
    assert not_object.status_code == 400


async def test_the_manifest_declares_both_extensions(client: httpx.AsyncClient) -> None:
    official = (await client.get("/ojs/manifest")).json()["extensions"]["official"]
    by_name = {e["name"]: e for e in official}
    assert by_name["backpressure"]["uri"] == "urn:ojs:ext:backpressure"
    assert by_name["backpressure"]["strategies"] == ["reject", "block"]
    assert by_name["graceful-shutdown"]["uri"] == "urn:ojs:ext:graceful-shutdown"


async def test_a_backend_without_bounds_declares_no_backpressure(tmp_path: Any) -> None:
    backend = SqliteBackend(str(tmp_path / "ojs.db"))
    app = create_app(backend, HttpSettings(run_scheduler=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        official = (await client.get("/ojs/manifest")).json()["extensions"]["official"]
        names = {e["name"] for e in official}
        assert "backpressure" not in names
        assert "graceful-shutdown" in names
        refused = await client.put(CONFIG.format("q"), json={"backpressure": {"max_depth": 5}})
        error_of(refused, 422, "unsupported")
        assert (await client.post(f"{V1}/jobs", json=_job("q"))).status_code == 201


# -- graceful shutdown ----------------------------------------------------------------------


async def _beat(client: httpx.AsyncClient, worker: str, **body: Any) -> httpx.Response:
    return await client.post(f"{V1}/workers/heartbeat", json={"worker_id": worker, **body})


async def test_a_quiet_worker_is_handed_no_job(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{V1}/jobs", json=_job("drain"))).status_code == 201
    assert (await _beat(client, "w1", state="quiet")).status_code == 200
    fetch = {"queues": ["drain"], "worker_id": "w1"}
    assert (await client.post(f"{V1}/workers/fetch", json=fetch)).json()["jobs"] == []
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = await client.post(f"{V1}/workers/fetch", json=fetch | {"wait_ms": 300})
    assert waited.json()["jobs"] == []
    assert loop.time() - started >= 0.25  # the long-poll is honoured: no busy loop
    other = await client.post(f"{V1}/workers/fetch", json={"queues": ["drain"], "worker_id": "w2"})
    assert len(other.json()["jobs"]) == 1


async def test_worker_listings_show_the_state(client: httpx.AsyncClient) -> None:
    await _beat(client, "runner")
    await _beat(client, "leaving", state="draining")
    await _beat(client, "gone", state="terminate")
    listed = (await client.get(f"{V1}/workers")).json()["workers"]
    states = {w["worker_id"]: w["state"] for w in listed}
    assert states == {"runner": "running", "leaving": "quiet", "gone": "terminate"}
    admin = (await client.get(f"{V1}/admin/workers")).json()
    assert {w["id"]: w["state"] for w in admin["items"]} == states
    assert {w["id"]: w["reported_state"] for w in admin["items"]} == states
    assert admin["summary"]["running"] == 1
    assert admin["summary"]["quiet"] == 2


async def test_a_bad_state_is_refused(client: httpx.AsyncClient) -> None:
    response = await _beat(client, "w", state="napping")
    assert error_of(response, 400)["details"]["validation_errors"][0]["path"] == "state"
