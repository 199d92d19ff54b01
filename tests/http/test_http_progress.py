"""The progress and durable-execution extensions over HTTP (memory backend): the spec's routes,
the official SDK's routes (its doubled base path too), error bodies, roles and the manifest.

The service-level rules are the contract kit's (``ojs_core.testing.contract.progress``); the
NATS run of the routes is ``tests/nats/test_nats_progress.py``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_http_binding import UNKNOWN_ID, V1, client, error_of, serve

from ojs_core.limits import Limits

__all__ = ["client"]


async def _active(client: httpx.AsyncClient, **options: Any) -> str:
    body: dict[str, Any] = {"type": "report.build", "args": []}
    if options:
        body["options"] = options
    created = await client.post(f"{V1}/jobs", json=body)
    assert created.status_code == 201, created.text
    fetched = await client.post(
        f"{V1}/workers/fetch", json={"queues": ["default"], "worker_id": "w1"}
    )
    (job,) = fetched.json()["jobs"]
    job_id: str = job["id"]
    return job_id


async def test_put_and_get_progress_in_the_spec_shape(client: httpx.AsyncClient) -> None:
    job_id = await _active(client)
    empty = await client.get(f"{V1}/jobs/{job_id}/progress")
    assert empty.status_code == 200
    assert empty.json() == {
        "job_id": job_id,
        "state": "active",
        "progress": None,
        "percentage": None,
        "data": None,
        "message": None,
        "attempt": None,
        "updated_at": None,
    }
    assert empty.headers["Cache-Control"] == "no-cache"
    put = await client.put(
        f"{V1}/jobs/{job_id}/progress",
        json={"progress": 0.47, "data": {"rows": 47}, "worker_id": "w1"},
    )
    assert put.status_code == 200, put.text
    assert put.json()["accepted"] is True
    got = await client.get(f"{V1}/jobs/{job_id}/progress")
    body = got.json()
    assert (body["progress"], body["percentage"], body["data"]) == (0.47, 47.0, {"rows": 47})
    assert body["attempt"] == 1
    assert body["updated_at"].endswith("Z")
    assert got.headers["X-OJS-Progress"] == "0.47"
    assert "Last-Modified" in got.headers
    # The job itself carries it too.
    job = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
    assert job["progress"]["value"] == 0.47


async def test_the_sdk_form_takes_a_percentage(client: httpx.AsyncClient) -> None:
    job_id = await _active(client)
    response = await client.post(
        f"{V1}/workers/progress",
        json={"job_id": job_id, "percentage": 30, "message": "30 rows"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["progress"], response.json()["message"]) == (0.3, "30 rows")
    clamped = await client.put(f"{V1}/jobs/{job_id}/progress", json={"progress": 4})
    assert clamped.json()["progress"] == 1.0
    huge = await client.put(
        f"{V1}/jobs/{job_id}/progress",
        content=b'{"progress": 1' + b"0" * 400 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert huge.json()["progress"] == 1.0  # beyond any float: clamped, not a 500
    huge_pct = b'{"job_id": "' + job_id.encode() + b'", "percentage": 1' + b"0" * 400 + b"}"
    sdk_huge = await client.post(
        f"{V1}/workers/progress", content=huge_pct, headers={"Content-Type": "application/json"}
    )
    assert sdk_huge.json()["progress"] == 1.0
    lower = await client.post(f"{V1}/workers/progress", json={"job_id": job_id, "percentage": 10})
    assert lower.json()["progress"] == 1.0  # never goes back within the attempt


async def test_a_report_may_carry_a_checkpoint(client: httpx.AsyncClient) -> None:
    job_id = await _active(client)
    response = await client.put(
        f"{V1}/jobs/{job_id}/progress",
        json={"progress": 0.73, "checkpoint": {"last_file_index": 72}},
    )
    assert response.json()["accepted"] is True
    got = (await client.get(f"{V1}/jobs/{job_id}/checkpoint")).json()["checkpoint"]
    assert (got["state"], got["sequence"]) == ({"last_file_index": 72}, 1)
    err = error_of(
        await client.put(f"{V1}/jobs/{job_id}/progress", json={"progress": 1, "checkpoint": 3}),
        400,
    )
    assert err["details"]["validation_errors"][0]["path"] == "checkpoint"


async def test_completion_sets_progress_to_one(client: httpx.AsyncClient) -> None:
    job_id = await _active(client)
    await client.put(f"{V1}/jobs/{job_id}/progress", json={"progress": 0.87})
    acked = await client.post(f"{V1}/workers/ack", json={"job_id": job_id, "worker_id": "w1"})
    assert acked.status_code == 200
    body = (await client.get(f"{V1}/jobs/{job_id}/progress")).json()
    assert (body["state"], body["progress"]) == ("completed", 1.0)


async def test_reports_for_jobs_that_are_not_active_are_ignored(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(f"{V1}/jobs", json={"type": "t", "args": []})
    waiting = created.json()["job"]["id"]
    response = await client.put(f"{V1}/jobs/{waiting}/progress", json={"progress": 0.5})
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["reason"], body["progress"]) == (False, "not_active", None)
    job_id = await _active(client)
    theirs = await client.post(
        f"{V1}/workers/progress", json={"job_id": job_id, "percentage": 5, "worker_id": "w2"}
    )
    assert (theirs.json()["accepted"], theirs.json()["reason"]) == (False, "not_owner")


async def test_progress_errors_are_structured(client: httpx.AsyncClient) -> None:
    error_of(await client.put(f"{V1}/jobs/{UNKNOWN_ID}/progress", json={"progress": 1}), 404)
    error_of(await client.get(f"{V1}/jobs/{UNKNOWN_ID}/progress"), 404, "not_found")
    job_id = await _active(client)
    for url, body, path in [
        (f"{V1}/jobs/{job_id}/progress", {}, "progress"),
        (f"{V1}/jobs/{job_id}/progress", {"progress": "x"}, "progress"),
        (f"{V1}/jobs/{job_id}/progress", {"data": 3}, "data"),
        (f"{V1}/jobs/{job_id}/progress", {"progress": 1, "worker_id": 5}, "worker_id"),
        (f"{V1}/workers/progress", {"percentage": 5}, "job_id"),
    ]:
        method = client.put if url.endswith("/progress") and "workers" not in url else client.post
        err = error_of(await method(url, json=body), 400)
        assert err["details"]["validation_errors"][0]["path"] == path, (url, body)
    error_of(await client.put(f"{V1}/jobs/{job_id}/progress", json=[1]), 400)


async def test_progress_data_over_the_limit_is_413() -> None:
    async with serve(limits=Limits(max_progress_bytes=64)) as (_, client):
        job_id = await _active(client)
        response = await client.put(
            f"{V1}/jobs/{job_id}/progress", json={"progress": 0.1, "data": {"x": "y" * 100}}
        )
        err = error_of(response, 413, "payload_too_large")
        assert err["details"]["limit"] == 64


# -- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_checkpoint_save_read_delete(client: httpx.AsyncClient, method: str) -> None:
    job_id = await _active(client)
    url = f"{V1}/jobs/{job_id}/checkpoint"
    error_of(await client.get(url), 404, "not_found")
    saved = await client.request(method, url, json={"state": {"cursor": "c1"}, "worker_id": "w1"})
    assert saved.status_code == 200, saved.text
    receipt = saved.json()["checkpoint"]
    assert (receipt["job_id"], receipt["sequence"]) == (job_id, 1)
    assert receipt["created_at"].endswith("Z")
    second = await client.request(method, url, json={"state": {"cursor": "c2"}})
    assert second.json()["checkpoint"]["sequence"] == 2
    got = (await client.get(url)).json()["checkpoint"]
    assert (got["state"], got["sequence"], got["attempt"]) == ({"cursor": "c2"}, 2, 1)
    job = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
    assert job["checkpoint"]["state"] == {"cursor": "c2"}
    deleted = await client.delete(url)
    assert deleted.json() == {"deleted": True, "job_id": job_id}
    assert (await client.delete(url)).json()["deleted"] is False
    error_of(await client.get(url), 404, "not_found")


async def test_checkpoint_preconditions(client: httpx.AsyncClient) -> None:
    error_of(
        await client.post(f"{V1}/jobs/{UNKNOWN_ID}/checkpoint", json={"state": 1}), 404, "not_found"
    )
    waiting = (await client.post(f"{V1}/jobs", json={"type": "t", "args": []})).json()["job"]
    err = error_of(
        await client.post(f"{V1}/jobs/{waiting['id']}/checkpoint", json={"state": 1}),
        409,
        "conflict",
    )
    assert err["details"]["current_state"] == "available"
    job_id = await _active(client)
    url = f"{V1}/jobs/{job_id}/checkpoint"
    error_of(await client.post(url, json={"state": 1, "worker_id": "w2"}), 409, "conflict")
    error_of(await client.post(url, json={"state": 1, "attempt": 2}), 409, "conflict")
    for body, path in [({}, "state"), ({"state": 1, "step_index": "x"}, "step_index")]:
        err = error_of(await client.post(url, json=body), 400)
        assert err["details"]["validation_errors"][0]["path"] == path
    error_of(await client.delete(f"{V1}/jobs/{UNKNOWN_ID}/checkpoint"), 404, "not_found")


async def test_checkpoint_over_the_limit_is_413() -> None:
    async with serve(limits=Limits(max_checkpoint_bytes=100)) as (_, client):
        job_id = await _active(client)
        response = await client.post(
            f"{V1}/jobs/{job_id}/checkpoint", json={"state": {"blob": "b" * 200}}
        )
        err = error_of(response, 413, "payload_too_large")
        assert (err["details"]["limit"], err["details"]["path"]) == (100, "state")
        assert (await client.get(f"{V1}/jobs/{job_id}")).json()["job"].get("checkpoint") is None


async def test_checkpoint_is_delivered_to_the_next_attempt_and_dropped_on_completion(
    client: httpx.AsyncClient,
) -> None:
    job_id = await _active(client, retry={"max_attempts": 3, "initial_interval": "PT0S"})
    await client.post(f"{V1}/jobs/{job_id}/checkpoint", json={"state": {"done": 5}})
    nacked = await client.post(
        f"{V1}/workers/nack", json={"job_id": job_id, "error": {"message": "x"}, "requeue": True}
    )
    assert nacked.status_code == 200
    fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["default"]})
    (job,) = fetched.json()["jobs"]
    assert job["checkpoint"]["state"] == {"done": 5}
    assert job["checkpoint"]["sequence"] == 1
    await client.post(f"{V1}/workers/ack", json={"job_id": job_id})
    done = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
    assert "checkpoint" not in done
    error_of(await client.get(f"{V1}/jobs/{job_id}/checkpoint"), 404)


@pytest.mark.parametrize("prefix", [V1, f"{V1}/ojs/v1"])
async def test_the_sdk_checkpoint_routes(client: httpx.AsyncClient, prefix: str) -> None:
    job_id = await _active(client)
    resume = await client.get(f"{prefix}/checkpoints/{job_id}/resume")
    assert resume.status_code == 200
    assert resume.json() == {"job_id": job_id, "has_checkpoint": False, "checkpoint": None}
    body = {
        "state": {"step": 1},
        "step_index": 1,
        "metadata": {"_replay_log": '[{"seq": 0}]', "attempt": "1"},
    }
    saved = await client.post(f"{prefix}/checkpoints/{job_id}", json=body)
    assert saved.status_code == 200, saved.text
    resume = (await client.get(f"{prefix}/checkpoints/{job_id}/resume")).json()
    assert resume["has_checkpoint"] is True
    assert resume["checkpoint"]["metadata"]["_replay_log"] == '[{"seq": 0}]'
    assert resume["checkpoint"]["step_index"] == 1
    stale = await client.post(
        f"{prefix}/checkpoints/{job_id}", json={**body, "metadata": {"attempt": "7"}}
    )
    error_of(stale, 409, "conflict")
    deleted = await client.delete(f"{prefix}/checkpoints/{job_id}")
    assert deleted.json() == {"deleted": True, "job_id": job_id}
    error_of(await client.get(f"{prefix}/checkpoints/{UNKNOWN_ID}/resume"), 404)


async def test_manifest_declares_both_extensions(client: httpx.AsyncClient) -> None:
    manifest = (await client.get("/ojs/manifest")).json()
    official = {e["uri"]: e["version"] for e in manifest["extensions"]["official"]}
    assert official["urn:ojs:ext:progress"] == "1.0.0-rc.1"
    assert official["urn:ojs:ext:durable-execution"] == "1.0.0-rc.1"


# -- workflows -----------------------------------------------------------------------------


async def _fetch(client: httpx.AsyncClient) -> str:
    fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["default"]})
    (job,) = fetched.json()["jobs"]
    job_id: str = job["id"]
    return job_id


async def test_chain_progress_is_the_average_of_its_steps(client: httpx.AsyncClient) -> None:
    steps = [{"type": f"etl.{name}", "args": []} for name in ("extract", "transform", "load")]
    created = await client.post(f"{V1}/workflows", json={"type": "chain", "steps": steps})
    wf_id = created.json()["workflow"]["id"]
    url = f"{V1}/workflows/{wf_id}/progress"
    start = (await client.get(url)).json()
    assert (start["type"], start["progress"], start["total_steps"]) == ("chain", 0.0, 3)
    assert [s["progress"] for s in start["steps"]] == [None, None, None]
    first = await _fetch(client)
    await client.post(f"{V1}/workers/ack", json={"job_id": first})
    second = await _fetch(client)
    await client.put(
        f"{V1}/jobs/{second}/progress", json={"progress": 0.73, "data": {"records": 73}}
    )
    body = (await client.get(url)).json()
    assert body["progress"] == pytest.approx((1.0 + 0.73 + 0.0) / 3)
    assert [s["state"] for s in body["steps"]] == ["completed", "active", "pending"]
    assert [s["progress"] for s in body["steps"]] == [1.0, 0.73, None]
    assert body["steps"][1]["data"] == {"records": 73}
    assert body["completed_steps"] == 1
    error_of(await client.get(f"{V1}/workflows/{UNKNOWN_ID}/progress"), 404, "not_found")


async def test_batch_progress_is_the_share_completed(client: httpx.AsyncClient) -> None:
    batch = {
        "type": "batch",
        "jobs": [{"type": "i.row", "args": [n]} for n in range(4)],
        "callbacks": {"on_complete": {"type": "i.done", "args": []}},
    }
    wf_id = (await client.post(f"{V1}/workflows", json=batch)).json()["workflow"]["id"]
    one = await _fetch(client)
    await client.post(f"{V1}/workers/ack", json={"job_id": one})
    other = await _fetch(client)
    await client.put(f"{V1}/jobs/{other}/progress", json={"progress": 0.9})
    body = (await client.get(f"{V1}/workflows/{wf_id}/progress")).json()
    assert (body["type"], body["progress"], body["total_steps"]) == ("batch", 0.25, 4)


async def test_an_attempt_that_is_not_a_plain_number_is_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    # "²".isdigit() is true but int("²") raises: the SDK's metadata attempt is only a hint.
    job_id = await _active(client)
    body = {"state": 1, "metadata": {"attempt": "²"}}
    saved = await client.post(f"{V1}/checkpoints/{job_id}", json=body)
    assert saved.status_code == 200, saved.text
