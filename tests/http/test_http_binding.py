"""The OJS HTTP binding through httpx's ASGI transport, over a MemoryBackend.

The app's lifespan runs (entered with ``app.router.lifespan_context``) but its scheduler does
not (``run_scheduler=False``), so nothing changes unless a request changes it. The transport
is built with ``raise_app_exceptions=False`` so that an unexpected exception shows up as the
500 response a real client would get, which the assertions then reject.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

OJS_TYPE = "application/openjobspec+json"
JSON_TYPE = "application/json"
GO_UA = "Go-http-client/1.1"
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
REQ_ID = re.compile(r"^req_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
UNKNOWN_ID = "019b76da-a800-7231-ba09-a38ab6db3851"
V1 = "/ojs/v1"


@asynccontextmanager
async def serve(**overrides: Any) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    options: dict[str, Any] = {"enable_reset": True, "run_scheduler": False, **overrides}
    app = create_app(MemoryBackend(), HttpSettings(**options))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield app, client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve() as (_, c):
        yield c


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["OJS-Version"] == "1.0"
    err: dict[str, Any] = response.json()["error"]
    assert isinstance(err["message"], str)
    assert isinstance(err["retryable"], bool)
    assert err["request_id"] == response.headers["X-Request-Id"]
    if code is not None:
        assert err["code"] == code, err
    return err


async def enqueue(client: httpx.AsyncClient, jtype: str = "test.job", **body: Any) -> Any:
    response = await client.post(f"{V1}/jobs", json={"type": jtype, "args": [], **body})
    assert response.status_code == 201, response.text
    return response.json()["job"]


async def fetch(client: httpx.AsyncClient, queue: str = "default", **body: Any) -> Any:
    response = await client.post(f"{V1}/workers/fetch", json={"queues": [queue], **body})
    assert response.status_code == 200, response.text
    return response.json()


async def fetch_one(client: httpx.AsyncClient, queue: str = "default", **body: Any) -> Any:
    jobs = (await fetch(client, queue, **body))["jobs"]
    assert len(jobs) == 1, jobs
    return jobs[0]


async def dead_letter_job(client: httpx.AsyncClient) -> Any:
    retry = {"max_attempts": 1, "on_exhaustion": "dead_letter"}
    job = await enqueue(client, "dlq.job", options={"queue": "dlq", "retry": retry})
    assert (await fetch_one(client, "dlq"))["id"] == job["id"]
    nack = await client.post(
        f"{V1}/workers/nack", json={"job_id": job["id"], "error": {"message": "x"}}
    )
    assert nack.json()["state"] == "discarded"
    return job


# -- jobs ---------------------------------------------------------------------------------------


async def test_enqueue_returns_201_location_and_job_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/jobs",
        json={
            "type": "email.send",
            "args": ["a@example.com", {"cc": []}],
            "meta": {"trace": "t1"},
            "custom_field": {"kept": True},
            "options": {"queue": "mail", "priority": 5, "tags": ["x"]},
        },
    )
    assert response.status_code == 201
    job = response.json()["job"]
    assert response.headers["Location"] == f"{V1}/jobs/{job['id']}"
    assert UUID7.match(job["id"])
    assert job["type"] == "email.send"
    assert job["args"] == ["a@example.com", {"cc": []}]
    assert job["meta"] == {"trace": "t1"}
    assert job["queue"] == "mail"
    assert job["priority"] == 5
    assert job["tags"] == ["x"]
    assert job["state"] == "available"
    assert job["attempt"] == 0
    assert job["max_attempts"] == 3
    assert job["specversion"] == "1.0"
    assert job["custom_field"] == {"kept": True}  # unknown attributes are preserved
    for stamp in ("created_at", "enqueued_at"):
        assert job[stamp].endswith("Z")
    # OJS: absent, not null, until they mean something.
    for absent in ("started_at", "completed_at", "error", "result", "worker_id", "errors"):
        assert absent not in job


async def test_get_and_cancel_job(client: httpx.AsyncClient) -> None:
    job = await enqueue(client)
    got = await client.get(f"{V1}/jobs/{job['id']}")
    assert got.status_code == 200
    assert got.json()["job"]["id"] == job["id"]
    assert got.json()["job"]["state"] == "available"

    cancelled = await client.delete(f"{V1}/jobs/{job['id']}")
    assert cancelled.status_code == 200
    body = cancelled.json()["job"]
    assert body["state"] == "cancelled"
    assert body["previous_state"] == "available"
    assert "cancelled_at" in body
    assert (await client.get(f"{V1}/jobs/{job['id']}")).json()["job"]["state"] == "cancelled"

    again = await client.delete(f"{V1}/jobs/{job['id']}")
    err = error_of(again, 409, "conflict")
    assert err["details"]["current_state"] == "cancelled"


async def test_unknown_job_is_404_with_hint_and_docs_url(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get(f"{V1}/jobs/{UNKNOWN_ID}"),
        await client.delete(f"{V1}/jobs/{UNKNOWN_ID}"),
        await client.post(f"{V1}/workers/ack", json={"job_id": UNKNOWN_ID}),
    ):
        err = error_of(response, 404, "not_found")
        assert err["hint"]
        assert err["docs_url"].startswith("https://")
        assert err["details"] == {"resource_type": "job", "resource_id": UNKNOWN_ID}
        assert err["retryable"] is False


async def test_unique_ignore_is_200_deduplicated_and_reject_is_409(
    client: httpx.AsyncClient,
) -> None:
    ignore = {"unique": {"keys": ["type"], "on_conflict": "ignore"}}
    first = await enqueue(client, "u.ignore", options=ignore)
    dup = await client.post(f"{V1}/jobs", json={"type": "u.ignore", "args": [], "options": ignore})
    assert dup.status_code == 200
    assert dup.json()["deduplicated"] is True
    assert dup.json()["job"]["id"] == first["id"]
    assert "Location" not in dup.headers

    reject = {"unique": {"keys": ["type"]}}
    held = await enqueue(client, "u.reject", options=reject)
    conflict = await client.post(
        f"{V1}/jobs", json={"type": "u.reject", "args": [], "options": reject}
    )
    err = error_of(conflict, 409, "duplicate")
    assert err["details"]["existing_job_id"] == held["id"]


async def test_batch_enqueue(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/jobs/batch",
        json={"jobs": [{"type": "b.one", "args": [1]}, {"type": "b.two", "args": [2]}]},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 2
    assert [j["type"] for j in body["jobs"]] == ["b.one", "b.two"]
    assert all(j["state"] == "available" for j in body["jobs"])


async def test_batch_enqueue_is_atomic(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/jobs/batch",
        json={"jobs": [{"type": "b.ok", "args": []}, {"type": "b.ok", "args": "nope"}]},
    )
    err = error_of(response, 400)
    assert err["details"]["index"] == 1
    assert err["details"]["validation_errors"][0]["path"] == "jobs[1].args"
    assert (await fetch(client))["jobs"] == []
    assert error_of(await client.post(f"{V1}/jobs/batch", json={"jobs": []}), 400)


async def test_activate_pending_job(client: httpx.AsyncClient) -> None:
    job = await enqueue(client, options={"pending": True})
    assert job["state"] == "pending"
    assert (await fetch(client))["jobs"] == []
    response = await client.post(f"{V1}/jobs/{job['id']}/activate")
    assert response.status_code == 200
    assert response.json()["job"]["state"] == "available"
    assert response.json()["job"]["previous_state"] == "pending"
    assert "activated_at" in response.json()["job"]
    error_of(await client.post(f"{V1}/jobs/{job['id']}/activate"), 409)


# -- workers ------------------------------------------------------------------------------------


async def test_fetch_shapes(client: httpx.AsyncClient) -> None:
    empty = await fetch(client)
    assert empty == {"jobs": []}

    job = await enqueue(client)
    body = await fetch(client, worker_id="w1", visibility_timeout_ms=10_000)
    assert [j["id"] for j in body["jobs"]] == [job["id"]]
    assert body["job"] == body["jobs"][0]
    claimed = body["job"]
    assert claimed["state"] == "active"
    assert claimed["attempt"] == 1
    assert claimed["worker_id"] == "w1"
    assert "started_at" in claimed

    # The binding's single-queue spelling is accepted too.
    await enqueue(client, options={"queue": "solo"})
    solo = await client.post(f"{V1}/workers/fetch", json={"queue": "solo", "count": 5})
    assert len(solo.json()["jobs"]) == 1


async def test_ack_shape(client: httpx.AsyncClient) -> None:
    job = await enqueue(client)
    await fetch_one(client, worker_id="w1")
    response = await client.post(
        f"{V1}/workers/ack", json={"job_id": job["id"], "result": {"n": 1}, "worker_id": "w1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["acknowledged"] is True
    assert body["id"] == body["job_id"] == job["id"]
    assert body["state"] == "completed"
    assert body["completed_at"].endswith("Z")
    assert body["job"]["result"] == {"n": 1}
    # Acking again is an illegal transition.
    err = error_of(await client.post(f"{V1}/workers/ack", json={"job_id": job["id"]}), 409)
    assert err["details"]["current_state"] == "completed"


async def test_ack_of_available_job_is_409(client: httpx.AsyncClient) -> None:
    job = await enqueue(client)
    err = error_of(await client.post(f"{V1}/workers/ack", json={"job_id": job["id"]}), 409)
    assert err["details"]["expected_state"] == "active"


async def test_nack_shapes(client: httpx.AsyncClient) -> None:
    job = await enqueue(client, options={"retry": {"max_attempts": 2, "jitter": False}})
    await fetch_one(client)
    response = await client.post(
        f"{V1}/workers/nack",
        json={"job_id": job["id"], "error": {"code": "handler_error", "message": "boom"}},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == body["job_id"] == job["id"]
    assert body["state"] == "retryable"
    assert body["attempt"] == 1
    assert body["max_attempts"] == 2
    assert body["retry_delay_ms"] == 1000
    assert body["next_attempt_at"].endswith("Z")
    error = body["job"]["error"]
    assert error["message"] == "boom"
    assert error["type"] == "handler_error"  # filled in when the worker sent none
    assert body["job"]["errors"][0]["attempt"] == 1
    assert "occurred_at" in body["job"]["errors"][0]

    other = await enqueue(client, "n.final", options={"retry": {"max_attempts": 5}})
    await fetch_one(client)
    final = await client.post(
        f"{V1}/workers/nack",
        json={"job_id": other["id"], "error": {"message": "no", "retryable": False}},
    )
    assert final.json()["state"] == "discarded"
    assert "discarded_at" in final.json()
    assert "next_attempt_at" not in final.json()


async def test_heartbeat_and_directives(client: httpx.AsyncClient) -> None:
    job = await enqueue(client)
    await fetch_one(client, worker_id="w1")
    beat = await client.post(
        f"{V1}/workers/heartbeat",
        json={"worker_id": "w1", "active_jobs": [job["id"]], "visibility_timeout_ms": 30_000},
    )
    assert beat.status_code == 200
    body = beat.json()
    assert body["state"] == body["directive"] == "running"
    assert body["jobs_extended"] == [job["id"]]
    assert body["server_time"].endswith("Z")

    quiet = await client.post(f"{V1}/admin/workers/w1/quiet")
    assert quiet.status_code == 200
    assert quiet.json() == {"worker_id": "w1", "directive": "quiet"}
    beat = await client.post(f"{V1}/workers/heartbeat", json={"worker_id": "w1"})
    assert beat.json()["state"] == beat.json()["directive"] == "quiet"

    await client.post(f"{V1}/admin/workers/w1/terminate")
    beat = await client.post(f"{V1}/workers/heartbeat", json={"worker_id": "w1"})
    assert beat.json()["state"] == "terminate"

    workers = (await client.get(f"{V1}/workers")).json()["workers"]
    assert [w["worker_id"] for w in workers] == ["w1"]
    error_of(await client.post(f"{V1}/admin/workers/w1/explode"), 400)
    err = error_of(await client.post(f"{V1}/workers/heartbeat", json={}), 400)
    assert err["details"]["validation_errors"][0]["path"] == "worker_id"


# -- queues and dead letter ---------------------------------------------------------------------


async def test_queues_stats_pause_resume(client: httpx.AsyncClient) -> None:
    await enqueue(client, options={"queue": "work"})
    await enqueue(client, options={"queue": "work"})
    await fetch_one(client, "work")

    queues = (await client.get(f"{V1}/queues")).json()
    by_name = {q["name"]: q for q in queues["queues"]}
    assert {"default", "work"} <= set(by_name)
    assert by_name["work"]["status"] == "active"
    assert queues["pagination"]["total"] == len(queues["queues"])

    stats = (await client.get(f"{V1}/queues/work/stats")).json()
    # openapi / conformance shape
    assert stats["queue"]["name"] == "work"
    assert stats["queue"]["available"] == 1
    assert stats["queue"]["active"] == 1
    assert stats["queue"]["paused"] is False
    # binding / SDK shape
    assert stats["name"] == "work"
    assert stats["status"] == "active"
    assert stats["stats"]["available"] == 1
    assert stats["stats"]["active"] == 1
    assert stats["stats"]["total"] == 2
    assert "computed_at" in stats

    paused = await client.post(f"{V1}/queues/work/pause")
    assert paused.status_code == 200
    assert paused.json()["queue"] == {"name": "work", "paused": True, "status": "paused"}
    assert paused.json()["status"] == "paused"
    assert "paused_at" in paused.json()
    assert (await fetch(client, "work"))["jobs"] == []
    await enqueue(client, options={"queue": "work"})  # enqueue still accepted
    stats = (await client.get(f"{V1}/queues/work/stats")).json()
    assert stats["queue"]["paused"] is True
    assert stats["status"] == "paused"

    resumed = await client.post(f"{V1}/queues/work/resume")
    assert resumed.json()["queue"]["paused"] is False
    assert "resumed_at" in resumed.json()
    assert len((await fetch(client, "work", count=5))["jobs"]) == 2
    error_of(await client.get(f"{V1}/queues/Bad%20Name/stats"), 400)


async def test_dead_letter_list_retry_delete(client: httpx.AsyncClient) -> None:
    first = await dead_letter_job(client)
    second = await dead_letter_job(client)

    listing = (await client.get(f"{V1}/dead-letter", params={"limit": 1})).json()
    assert [j["id"] for j in listing["jobs"]] == [second["id"]]  # newest first
    assert listing["pagination"]["total"] == 2
    assert listing["pagination"]["has_more"] is True
    assert listing["pagination"]["next_cursor"] == "1"
    job = listing["jobs"][0]
    assert job["state"] == "discarded"
    assert "discarded_at" in job
    assert job["error"]["message"] == "x"

    retried = await client.post(f"{V1}/dead-letter/{first['id']}/retry")
    assert retried.status_code == 200
    body = retried.json()["job"]
    assert body["state"] == "available"
    assert body["attempt"] == 0
    assert "re_enqueued_at" in body

    deleted = await client.delete(f"{V1}/dead-letter/{second['id']}")
    assert deleted.json() == {"deleted": True, "job_id": second["id"]}
    assert (await client.get(f"{V1}/dead-letter")).json()["jobs"] == []
    error_of(await client.get(f"{V1}/jobs/{second['id']}"), 404)
    error_of(await client.delete(f"{V1}/dead-letter/{second['id']}"), 404)
    error_of(await client.post(f"{V1}/dead-letter/{first['id']}/retry"), 404)


# -- cron ---------------------------------------------------------------------------------------


async def test_cron_register_both_shapes_list_get_delete(client: httpx.AsyncClient) -> None:
    openapi = {
        "name": "nightly",
        "expression": "0 3 * * *",
        "timezone": "Europe/Paris",
        "job_template": {"type": "report.build", "args": [1], "options": {"queue": "reports"}},
    }
    created = await client.post(f"{V1}/cron", json=openapi)
    assert created.status_code == 201
    assert created.headers["Location"] == f"{V1}/cron/nightly"
    cron = created.json()["cron"]
    assert cron == created.json()["cron_job"]
    assert cron["name"] == "nightly"
    assert cron["expression"] == cron["cron"] == "0 3 * * *"
    assert cron["timezone"] == "Europe/Paris"
    assert cron["type"] == "report.build"
    assert cron["next_run_at"].endswith("Z")

    updated = await client.post(f"{V1}/cron", json={**openapi, "expression": "0 4 * * *"})
    assert updated.status_code == 200
    assert updated.json()["cron"]["expression"] == "0 4 * * *"

    sdk = {"name": "sdk-style", "cron": "*/5 * * * *", "type": "sdk.tick", "args": ["a"]}
    assert (await client.post(f"{V1}/cron", json=sdk)).status_code == 201
    again = await client.post(f"{V1}/cron", json=sdk)
    assert again.status_code == 200
    assert again.json()["cron"]["job_template"] == {"type": "sdk.tick", "args": ["a"]}

    listing = (await client.get(f"{V1}/cron")).json()
    assert listing["crons"] == listing["cron_jobs"]
    assert [c["name"] for c in listing["crons"]] == ["nightly", "sdk-style"]
    assert listing["count"] == 2

    one = await client.get(f"{V1}/cron/sdk-style")
    assert one.json()["cron"]["cron"] == "*/5 * * * *"

    removed = await client.delete(f"{V1}/cron/nightly")
    assert removed.status_code == 200
    assert removed.json()["deleted"] is True
    assert [c["name"] for c in (await client.get(f"{V1}/cron")).json()["cron_jobs"]] == [
        "sdk-style"
    ]
    error_of(await client.delete(f"{V1}/cron/nightly"), 404, "not_found")
    error_of(await client.get(f"{V1}/cron/nightly"), 404, "not_found")


async def test_cron_validation(client: httpx.AsyncClient) -> None:
    bad = await client.post(
        f"{V1}/cron", json={"name": "x", "expression": "61 * * * *", "job_template": {}}
    )
    err = error_of(bad, 400)
    assert err["details"]["validation_errors"][0]["path"] == "expression"
    never = await client.post(f"{V1}/cron", json={"name": "x", "cron": "0 0 30 2 *", "type": "c.x"})
    error_of(never, 400)
    assert (await client.get(f"{V1}/cron")).json()["crons"] == []


# -- workflows ----------------------------------------------------------------------------------


def _check_workflow(response: httpx.Response, kind: str, name: str | None = None) -> Any:
    assert response.status_code == 201, response.text
    wf = response.json()["workflow"]
    assert response.headers["Location"] == f"{V1}/workflows/{wf['id']}"
    assert UUID7.match(wf["id"])
    assert wf["type"] == kind
    assert wf["state"] == "running"
    assert wf["name"] == (name or wf["id"])
    for step in wf["steps"]:
        assert isinstance(step["id"], str)
        assert isinstance(step["type"], str)
        assert UUID7.match(step["job_id"])
    return wf


async def test_workflow_chain_get_and_cancel(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/workflows",
        json={
            "type": "chain",
            "name": "etl",
            "steps": [{"type": "etl.extract", "args": []}, {"type": "etl.load", "args": []}],
        },
    )
    wf = _check_workflow(response, "chain", "etl")
    assert wf["steps_total"] == 2
    assert [s["state"] for s in wf["steps"]] == ["available", "pending"]

    job = await fetch_one(client)
    await client.post(f"{V1}/workers/ack", json={"job_id": job["id"], "result": 1})
    got = (await client.get(f"{V1}/workflows/{wf['id']}")).json()["workflow"]
    assert [s["state"] for s in got["steps"]] == ["completed", "available"]
    assert got["steps_completed"] == 1

    cancelled = await client.delete(f"{V1}/workflows/{wf['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["workflow"]["state"] == "cancelled"
    error_of(await client.delete(f"{V1}/workflows/{wf['id']}"), 409)
    error_of(await client.get(f"{V1}/workflows/{UNKNOWN_ID}"), 404)


async def test_workflow_group_and_batch(client: httpx.AsyncClient) -> None:
    group = await client.post(
        f"{V1}/workflows",
        json={"type": "group", "jobs": [{"type": "g.a", "args": []}, {"type": "g.b"}]},
    )
    wf = _check_workflow(group, "group")
    assert [s["state"] for s in wf["steps"]] == ["available", "available"]

    batch = await client.post(
        f"{V1}/workflows",
        json={
            "type": "batch",
            "name": "import",
            "jobs": [{"type": "i.row", "args": [1]}, {"type": "i.row", "args": [2]}],
            "callbacks": {"on_complete": {"type": "i.done", "args": []}},
        },
    )
    wf = _check_workflow(batch, "batch", "import")
    assert wf["steps_total"] == 2
    assert wf["callbacks"]["on_complete"]["state"] == "pending"

    no_callbacks = await client.post(
        f"{V1}/workflows", json={"type": "batch", "jobs": [{"type": "i.row"}]}
    )
    assert error_of(no_callbacks, 400, "invalid_workflow")


async def test_workflow_sdk_dag_form(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/workflows",
        json={
            "name": "sdk-batch",
            "steps": [
                {"id": "step-0", "type": "s.work", "args": [0], "depends_on": []},
                {"id": "step-1", "type": "s.work", "args": [1], "depends_on": []},
                {
                    "id": "on_complete",
                    "type": "s.done",
                    "args": [],
                    "depends_on": ["step-0", "step-1"],
                    "options": {"callback_type": "on_complete"},
                },
            ],
        },
    )
    wf = _check_workflow(response, "dag", "sdk-batch")
    assert [(s["id"], s["type"]) for s in wf["steps"]] == [
        ("step-0", "s.work"),
        ("step-1", "s.work"),
        ("on_complete", "s.done"),
    ]
    assert wf["steps"][2]["depends_on"] == ["step-0", "step-1"]
    for job in (await fetch(client, count=5))["jobs"]:
        await client.post(f"{V1}/workers/ack", json={"job_id": job["id"]})
    callback = await fetch_one(client)
    assert callback["type"] == "s.done"
    await client.post(f"{V1}/workers/ack", json={"job_id": callback["id"]})
    done = (await client.get(f"{V1}/workflows/{wf['id']}")).json()["workflow"]
    assert done["state"] == "completed"

    cycle = await client.post(
        f"{V1}/workflows",
        json={"steps": [{"id": "a", "type": "x.a", "depends_on": ["a"]}]},
    )
    error_of(cycle, 400, "invalid_workflow")


# -- events, manifest, health -------------------------------------------------------------------


async def test_events(client: httpx.AsyncClient) -> None:
    job = await enqueue(client, "ev.job", options={"queue": "ev"})
    await fetch_one(client, "ev")
    await client.post(f"{V1}/workers/ack", json={"job_id": job["id"], "result": "r"})

    body = (await client.get(f"{V1}/events", params={"queues": "ev"})).json()
    assert [e["type"] for e in body["events"]] == ["job.enqueued", "job.started", "job.completed"]
    completed = body["events"][-1]
    assert completed["data"]["job_type"] == "ev.job"
    assert completed["data"]["queue"] == "ev"
    assert completed["data"]["attempt"] == 1
    assert isinstance(completed["data"]["duration_ms"], int)
    assert completed["job_id"] == job["id"]
    assert completed["specversion"] == "1.0"
    assert body["has_more"] is False

    only = (await client.get(f"{V1}/events", params={"types": "job.completed"})).json()
    assert [e["type"] for e in only["events"]] == ["job.completed"]
    paged = (await client.get(f"{V1}/events", params={"queues": "ev", "limit": 1})).json()
    assert paged["has_more"] is True
    after = (
        await client.get(f"{V1}/events", params={"queues": "ev", "after": paged["cursor"]})
    ).json()
    assert [e["type"] for e in after["events"]] == ["job.started", "job.completed"]
    error_of(await client.get(f"{V1}/events", params={"limit": "lots"}), 400)


async def test_manifest_and_health(client: httpx.AsyncClient) -> None:
    manifest = await client.get("/ojs/manifest")
    assert manifest.status_code == 200
    body = manifest.json()
    assert body["specversion"] == "1.0"
    assert body["implementation"]["name"] == "ojs-python"
    assert body["backend"] == "memory"
    assert body["capabilities"]["workflows"] is True
    assert body["conformance_level"] == 4

    health = await client.get(f"{V1}/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["backend"]["type"] == "memory"
    assert health.json()["backend"]["status"] == "ok"


# -- headers and content negotiation ------------------------------------------------------------


async def test_ojs_version_header_on_every_response(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get(f"{V1}/health"),
        await client.get("/ojs/manifest"),
        await client.post(f"{V1}/jobs", json={"type": "h.job", "args": []}),
        await client.get(f"{V1}/jobs/{UNKNOWN_ID}"),
        await client.get("/nowhere"),
        await client.post(f"{V1}/jobs", content=b"{", headers={"Content-Type": JSON_TYPE}),
        await client.put(f"{V1}/jobs"),
        await client.get(f"{V1}/health", headers={"OJS-Version": "2.0"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 201, 404, 404, 400, 405, 422]
    for r in responses:
        assert r.headers["OJS-Version"] == "1.0"
        assert REQ_ID.match(r.headers["X-Request-Id"]) is not None
    ids = {r.headers["X-Request-Id"] for r in responses}
    assert len(ids) == len(responses)  # a fresh id per request


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    ok = await client.get(f"{V1}/health", headers={"X-Request-Id": "abc-123"})
    assert ok.headers["X-Request-Id"] == "abc-123"
    bad = await client.get(f"{V1}/jobs/{UNKNOWN_ID}", headers={"X-Request-ID": "trace-9"})
    assert bad.headers["X-Request-Id"] == "trace-9"
    assert bad.json()["error"]["request_id"] == "trace-9"


async def _content_type(client: httpx.AsyncClient, url: str, **headers: str | None) -> str:
    request = client.build_request("GET", url)
    for name, value in headers.items():
        header = name.replace("_", "-")
        if value is None:
            del request.headers[header]
        else:
            request.headers[header] = value
    response = await client.send(request)
    return response.headers["Content-Type"].split(";")[0]


async def test_auto_negotiation(client: httpx.AsyncClient) -> None:
    ok, missing = f"{V1}/health", f"{V1}/jobs/{UNKNOWN_ID}"
    for url in (ok, missing):
        # A Go client (or anyone not asking for application/json) gets the OJS type.
        assert await _content_type(client, url, Accept=None, User_Agent=GO_UA) == OJS_TYPE
        assert await _content_type(client, url, Accept="*/*", User_Agent=GO_UA) == OJS_TYPE
        assert await _content_type(client, url, Accept=OJS_TYPE, User_Agent=GO_UA) == OJS_TYPE
        # Asking for application/json, or being the httpx-based Python SDK, gets JSON.
        assert await _content_type(client, url, Accept=JSON_TYPE, User_Agent=GO_UA) == JSON_TYPE
        accept = f"{OJS_TYPE}, {JSON_TYPE};q=0.5"
        assert await _content_type(client, url, Accept=accept, User_Agent=GO_UA) == JSON_TYPE
        assert (
            await _content_type(client, url, Accept=OJS_TYPE, User_Agent="python-httpx/0.28.1")
            == JSON_TYPE
        )
    # httpx's own default User-Agent is python-httpx/...
    assert (await client.get(ok)).headers["Content-Type"].startswith(JSON_TYPE)


@pytest.mark.parametrize(("mode", "expected"), [("json", JSON_TYPE), ("openjobspec", OJS_TYPE)])
async def test_forced_content_type(mode: str, expected: str) -> None:
    async with serve(response_content_type=mode) as (_, client):
        for url in (f"{V1}/health", f"{V1}/jobs/{UNKNOWN_ID}"):
            assert await _content_type(client, url, Accept=JSON_TYPE) == expected
            assert await _content_type(client, url, Accept=None, User_Agent=GO_UA) == expected
            assert (
                await _content_type(client, url, Accept=OJS_TYPE, User_Agent="python-httpx/1")
                == expected
            )


async def test_request_content_types(client: httpx.AsyncClient) -> None:
    body = json.dumps({"type": "ct.job", "args": []}).encode()
    for ctype in (JSON_TYPE, OJS_TYPE, f"{JSON_TYPE}; charset=utf-8"):
        response = await client.post(f"{V1}/jobs", content=body, headers={"Content-Type": ctype})
        assert response.status_code == 201, ctype
    xml = await client.post(f"{V1}/jobs", content=b"<job/>", headers={"Content-Type": "text/xml"})
    err = error_of(xml, 400)
    assert "Content-Type" in err["message"]


async def test_sdk_style_bodyless_requests_with_content_type(client: httpx.AsyncClient) -> None:
    sdk = {"Content-Type": OJS_TYPE, "Accept": OJS_TYPE, "OJS-Version": "1.0"}
    job = await enqueue(client)
    got = await client.get(f"{V1}/jobs/{job['id']}", headers=sdk)
    assert got.status_code == 200
    assert (await client.get(f"{V1}/queues", headers=sdk)).status_code == 200
    assert (await client.post(f"{V1}/queues/default/pause", headers=sdk)).status_code == 200
    assert (await client.post(f"{V1}/queues/default/resume", headers=sdk)).status_code == 200
    dead = await dead_letter_job(client)
    retry = await client.post(f"{V1}/dead-letter/{dead['id']}/retry", headers=sdk)
    assert retry.status_code == 200
    cancelled = await client.delete(f"{V1}/jobs/{job['id']}", headers=sdk)
    assert cancelled.status_code == 200
    assert cancelled.json()["job"]["state"] == "cancelled"


async def test_unsupported_ojs_version_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/jobs", json={"type": "v.job", "args": []}, headers={"OJS-Version": "2.0"}
    )
    error_of(response, 422, "unsupported")
    assert (await fetch(client))["jobs"] == []  # nothing was enqueued
    ok = await client.get(f"{V1}/health", headers={"OJS-Version": "1.0"})
    assert ok.status_code == 200


# -- errors -------------------------------------------------------------------------------------


async def test_malformed_json_is_400_invalid_payload(client: httpx.AsyncClient) -> None:
    for raw in (b"{", b'{"type": "x.y", "args": [}', b"\xff\xfe", b'{"a": NaN}', b"[1e999]"):
        response = await client.post(f"{V1}/jobs", content=raw, headers={"Content-Type": JSON_TYPE})
        error_of(response, 400, "invalid_payload")
    error_of(await client.post(f"{V1}/jobs", content=b""), 400, "invalid_payload")


async def test_deeply_nested_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    response = await client.post(f"{V1}/jobs", content=raw, headers={"Content-Type": JSON_TYPE})
    error_of(response, 400, "invalid_payload")


async def test_lone_surrogate_is_400_not_500(client: httpx.AsyncClient) -> None:
    raw = b'{"type": "x.y", "args": ["\\ud800"]}'
    response = await client.post(f"{V1}/jobs", content=raw, headers={"Content-Type": JSON_TYPE})
    error_of(response, 400, "invalid_payload")
    pair = b'{"type": "x.y", "args": ["\\ud83d\\ude00"]}'  # a valid surrogate pair
    ok = await client.post(f"{V1}/jobs", content=pair, headers={"Content-Type": JSON_TYPE})
    assert ok.status_code == 201
    assert ok.json()["job"]["args"] == ["\U0001f600"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"type": "x.y", "args": [], "options": {"priority": "urgent"}}, "options.priority"),
        ({"type": "x.y", "args": {"a": 1}}, "args"),
        ({"type": 7, "args": []}, "type"),
        ({"args": []}, "type"),
        ({"type": "x.y", "args": [], "options": {"queue": "Bad Queue"}}, "options.queue"),
        ({"type": "x.y", "args": [], "options": {"tags": "t"}}, "options.tags"),
        ({"type": "x.y", "args": [], "options": {"scheduled_at": "soon"}}, "options.scheduled_at"),
        ({"type": "x.y", "args": [], "options": "fast"}, "options"),
        ({"type": "x.y", "args": [], "id": "not-a-uuid"}, "id"),
    ],
)
async def test_wrong_types_name_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], path: str
) -> None:
    err = error_of(await client.post(f"{V1}/jobs", json=body), 400)
    assert err["details"]["validation_errors"][0]["path"] == path


async def test_invalid_retry_policy_is_422_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{V1}/jobs",
        json={"type": "x.y", "args": [], "options": {"retry": {"max_attempts": -1}}},
    )
    err = error_of(response, 422)
    assert err["type"] == "validation_error"
    assert err["details"]["validation_errors"][0]["path"] == "options.retry.max_attempts"


async def test_oversize_envelope_is_413(client: httpx.AsyncClient) -> None:
    big = "x" * (1024 * 1024 + 1)
    response = await client.post(f"{V1}/jobs", json={"type": "big.job", "args": [big]})
    err = error_of(response, 413, "envelope_too_large")
    assert err["details"]["limit"] == 1024 * 1024
    batch = await client.post(
        f"{V1}/jobs/batch",
        json={"jobs": [{"type": "ok.job", "args": []}, {"type": "big.job", "args": [big]}]},
    )
    assert error_of(batch, 413, "envelope_too_large")["details"]["index"] == 1
    assert (await fetch(client))["jobs"] == []


async def test_reset_when_enabled(client: httpx.AsyncClient) -> None:
    job = await enqueue(client)
    await client.post(f"{V1}/cron", json={"name": "c", "cron": "* * * * *", "type": "c.x"})
    response = await client.post(f"{V1}/admin/reset")
    assert response.status_code == 200
    assert response.json() == {"reset": True}
    error_of(await client.get(f"{V1}/jobs/{job['id']}"), 404)
    assert (await client.get(f"{V1}/cron")).json()["crons"] == []
    assert (await client.get(f"{V1}/events")).json()["events"] == []


async def test_reset_is_404_when_disabled() -> None:
    async with serve(enable_reset=False) as (app, client):
        job = await enqueue(client)
        error_of(await client.post(f"{V1}/admin/reset"), 404, "not_found")
        assert (await client.get(f"{V1}/jobs/{job['id']}")).status_code == 200
        assert app.state.settings.enable_reset is False


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    err = error_of(await client.get(f"{V1}/nope"), 404, "not_found")
    assert err["details"]["resource_type"] == "route"
    error_of(await client.patch(f"{V1}/jobs"), 405, "method_not_allowed")


async def test_lifespan_exposes_the_service(client: httpx.AsyncClient) -> None:
    # The in-process service and the HTTP API see the same state.
    job = await enqueue(client)
    async with serve() as (app, other):
        assert (await other.get(f"{V1}/jobs/{job['id']}")).status_code == 404
        stored = await app.state.service.enqueue({"type": "in.process", "args": []})
        got = await other.get(f"{V1}/jobs/{stored.job.id}")
        assert got.json()["job"]["type"] == "in.process"


# -- fuzz: garbage never produces a 5xx ---------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    [
        "type",
        "args",
        "options",
        "queue",
        "queues",
        "priority",
        "retry",
        "unique",
        "job_id",
        "error",
        "worker_id",
        "count",
        "requeue",
        "name",
        "cron",
        "expression",
        "job_template",
        "steps",
        "jobs",
        "depends_on",
        "callbacks",
        "id",
        "meta",
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(FIELD_NAMES | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
FUZZ_ENDPOINTS = [
    f"{V1}/jobs",
    f"{V1}/jobs/batch",
    f"{V1}/workers/fetch",
    f"{V1}/workers/ack",
    f"{V1}/workers/nack",
    f"{V1}/workers/heartbeat",
    f"{V1}/cron",
    f"{V1}/workflows",
]
FUZZ_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ_SETTINGS
@given(path=st.sampled_from(FUZZ_ENDPOINTS), body=JSON_VALUES)
async def test_garbage_bodies_never_5xx(client: httpx.AsyncClient, path: str, body: Any) -> None:
    response = await client.post(path, json=body)
    assert response.status_code < 500, (path, body, response.text)
    assert response.headers["OJS-Version"] == "1.0"
    if response.status_code >= 400:
        assert isinstance(response.json()["error"]["code"], str)


# A valid request per endpoint; the fuzz replaces one field (or nested field) with junk.
VALID_BODIES: dict[str, dict[str, Any]] = {
    f"{V1}/jobs": {
        "type": "fuzz.job",
        "args": [1],
        "options": {
            "queue": "fuzz",
            "priority": 1,
            "retry": {"max_attempts": 2, "initial_interval": "PT1S"},
            "unique": {"keys": ["type", "args"], "on_conflict": "ignore", "period": "PT1M"},
            "scheduled_at": "2026-01-01T00:00:00Z",
            "tags": ["a"],
        },
    },
    f"{V1}/workers/fetch": {"queues": ["fuzz-fetch"], "count": 2, "worker_id": "w"},
    f"{V1}/workers/nack": {
        "job_id": UNKNOWN_ID,
        "error": {"code": "e", "message": "m", "retryable": True, "details": {}},
    },
    f"{V1}/cron": {
        "name": "fuzz",
        "cron": "* * * * *",
        "type": "fuzz.cron",
        "args": [],
        "timezone": "UTC",
        "overlap_policy": "skip",
    },
    f"{V1}/workflows": {
        "type": "batch",
        "name": "fuzz",
        "jobs": [{"type": "fuzz.a", "args": []}],
        "callbacks": {"on_complete": {"type": "fuzz.done", "args": [], "options": {}}},
    },
}
FUZZ_PATHS: dict[str, list[tuple[str | int, ...]]] = {
    f"{V1}/jobs": [
        ("type",),
        ("args",),
        ("args", 0),
        ("options",),
        ("options", "queue"),
        ("options", "priority"),
        ("options", "retry"),
        ("options", "retry", "max_attempts"),
        ("options", "retry", "initial_interval"),
        ("options", "unique"),
        ("options", "unique", "keys"),
        ("options", "unique", "on_conflict"),
        ("options", "unique", "period"),
        ("options", "scheduled_at"),
        ("options", "tags"),
        ("options", "rate_limit"),
        ("options", "expires_at"),
        ("meta",),
        ("id",),
    ],
    f"{V1}/workers/fetch": [("queues",), ("queues", 0), ("count",), ("worker_id",)],
    f"{V1}/workers/nack": [
        ("job_id",),
        ("error",),
        ("error", "code"),
        ("error", "retryable"),
        ("error", "details"),
        ("error", "backtrace"),
        ("requeue",),
    ],
    f"{V1}/cron": [
        ("name",),
        ("cron",),
        ("type",),
        ("args",),
        ("timezone",),
        ("overlap_policy",),
        ("options",),
        ("meta",),
        ("enabled",),
    ],
    f"{V1}/workflows": [
        ("type",),
        ("name",),
        ("jobs",),
        ("jobs", 0),
        ("jobs", 0, "options"),
        ("callbacks",),
        ("callbacks", "on_complete"),
        ("steps",),
    ],
}
TARGETS = [(endpoint, path) for endpoint, paths in FUZZ_PATHS.items() for path in paths]


def _replace(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(body))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


@FUZZ_SETTINGS
@given(target=st.sampled_from(TARGETS), value=JSON_VALUES)
async def test_junk_in_one_field_never_5xx(
    client: httpx.AsyncClient, target: tuple[str, tuple[str | int, ...]], value: Any
) -> None:
    endpoint, path = target
    body = _replace(VALID_BODIES[endpoint], path, value)
    response = await client.post(endpoint, json=body)
    assert response.status_code < 500, (endpoint, body, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json()["error"]["code"], str)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (f"{V1}/jobs", {"type": "x.y", "args": [], "options": {"delay_ms": 10**30}}),
        (f"{V1}/jobs", {"type": "x.y", "args": [], "options": {"scheduled_at": "+P99999999D"}}),
        (f"{V1}/jobs", {"type": "x.y", "args": [], "options": {"unique": {"on_conflict": []}}}),
        (f"{V1}/jobs", {"type": "x.y", "args": [], "options": {"retry": {"max_interval": 1e308}}}),
        (f"{V1}/cron", {"name": "c", "cron": "* * * * *", "type": "c.x", "overlap_policy": {}}),
        (f"{V1}/cron", {"name": "c", "cron": "@every 99999999999999999h", "type": "c.x"}),
        (f"{V1}/cron", {"name": "c", "cron": "0 0 31 2 *", "type": "c.x"}),
        (f"{V1}/workflows", {"steps": [{"id": "a", "type": "x.a", "depends_on": [{}]}]}),
        (f"{V1}/workflows", {"type": "group", "jobs": [{"type": "x.a", "options": 1}]}),
    ],
)
async def test_known_crashers_are_4xx(
    client: httpx.AsyncClient, endpoint: str, body: dict[str, Any]
) -> None:
    response = await client.post(endpoint, json=body)
    assert 400 <= response.status_code < 500, response.text
