"""The bulk-operations extension over HTTP, written once and run on every backend
(``tests/http/test_http_bulk.py`` on memory, ``tests/nats/test_nats_bulk.py`` on a real
nats-server). Each scenario takes an httpx client of an app whose scheduler does not run, and
the app's service (for timers and the idempotency settings)."""

from __future__ import annotations

from typing import Any

import httpx

from ojs_core.backend import IdempotencyStore
from ojs_core.service import JobService

V1 = "/ojs/v1"
BULK = f"{V1}/jobs/bulk"


async def enqueue(client: httpx.AsyncClient, queue: str, **body: Any) -> dict[str, Any]:
    payload = {"type": "bulk.test", "args": [], "options": {"queue": queue}, **body}
    response = await client.post(f"{V1}/jobs", json=payload)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()["job"]
    return job


async def state_of(client: httpx.AsyncClient, job_id: str) -> str | None:
    response = await client.get(f"{V1}/jobs/{job_id}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    state: str = response.json()["job"]["state"]
    return state


async def fetch(client: httpx.AsyncClient, queue: str, count: int = 1) -> list[dict[str, Any]]:
    response = await client.post(
        f"{V1}/workers/fetch", json={"queues": [queue], "count": count, "worker_id": "w"}
    )
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err: dict[str, Any] = response.json()["error"]
    assert err["code"] == code, err
    return err


def _path(err: dict[str, Any]) -> str:
    path: str = err["details"]["validation_errors"][0]["path"]
    return path


# -- enqueue ------------------------------------------------------------------------------------


async def partial_enqueue(client: httpx.AsyncClient) -> None:
    """All valid: 201 and one created item per job, in order; one invalid: 207 naming it,
    the others stored and fetchable; none valid: 422."""
    jobs = [
        {"type": "user.import", "args": [{"user_id": f"u_{i}"}], "queue": "bk-p"} for i in range(3)
    ]
    response = await client.post(BULK, json={"jobs": jobs})
    assert response.status_code == 201, response.text
    assert response.headers["X-OJS-Batch-Size"] == "3"
    body = response.json()
    assert (body["total"], body["succeeded"], body["failed"]) == (3, 3, 0)
    assert [item["index"] for item in body["items"]] == [0, 1, 2]
    assert {item["status"] for item in body["items"]} == {"created"}
    for item in body["items"]:
        assert await state_of(client, item["job"]["id"]) == "available"
        assert item["job"]["type"] == "user.import"

    mixed = [
        {"type": "user.import", "args": [1], "queue": "bk-m"},
        {"type": "", "args": []},
        {"type": "user.import", "args": [3], "queue": "bk-m"},
        "not an object",
    ]
    response = await client.post(BULK, json={"atomicity": "partial", "jobs": mixed})
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["total"], body["succeeded"], body["failed"]) == (4, 2, 2)
    items = body["items"]
    assert [i["status"] for i in items] == ["created", "failed", "created", "failed"]
    assert items[1]["error"]["code"] == "invalid_request"
    assert _path(items[1]["error"]) == "jobs[1].type"
    assert items[3]["error"]["code"] == "invalid_request"
    fetched = await fetch(client, "bk-m", 5)
    assert [j["args"] for j in fetched] == [[1], [3]]  # stored, in request order

    response = await client.post(BULK, json={"jobs": [{"type": "x"}, {"args": []}]})
    assert response.status_code == 422
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (0, 2)
    assert _path(body["items"][0]["error"]) == "jobs[0].args"
    assert _path(body["items"][1]["error"]) == "jobs[1].type"


async def atomic_enqueue(client: httpx.AsyncClient) -> None:
    """Atomic: one bad job refuses all (422, the culprit named, the others rolled back,
    nothing stored); a unique-key conflict the same; all good: 201."""
    jobs: list[Any] = [
        {"type": "order.validate", "args": [1], "queue": "bk-a"},
        {"type": "order.charge", "args": "not an array", "queue": "bk-a"},
        {"type": "order.fulfill", "args": [3], "queue": "bk-a"},
    ]
    response = await client.post(BULK, json={"atomicity": "atomic", "jobs": jobs})
    assert response.status_code == 422, response.text
    items = response.json()["items"]
    assert [i["status"] for i in items] == ["failed"] * 3
    assert _path(items[1]["error"]) == "jobs[1].args"
    assert items[0]["error"]["code"] == items[2]["error"]["code"] == "rolled_back"
    assert items[0]["error"]["details"]["failed_index"] == 1
    assert await fetch(client, "bk-a", 5) == []

    unique = {"keys": ["type", "args"], "on_conflict": "reject"}
    held = await enqueue(client, "bk-u", type="order.once", args=[7], unique=unique)
    jobs = [
        {"type": "order.first", "args": [1], "queue": "bk-u"},
        {"type": "order.once", "args": [7], "queue": "bk-u", "unique": unique},
    ]
    response = await client.post(BULK, json={"atomicity": "atomic", "jobs": jobs})
    assert response.status_code == 422, response.text
    items = response.json()["items"]
    assert items[1]["error"]["code"] == "duplicate"
    assert items[1]["error"]["details"]["existing_job_id"] == held["id"]
    assert items[0]["error"]["code"] == "rolled_back"
    assert [j["id"] for j in await fetch(client, "bk-u", 5)] == [held["id"]]

    # Partial mode with the same conflict: only the culprit fails.
    response = await client.post(BULK, json={"jobs": jobs})
    assert response.status_code == 207, response.text
    items = response.json()["items"]
    assert items[0]["status"] == "created"
    assert (items[1]["status"], items[1]["error"]["code"]) == ("failed", "duplicate")

    # A unique "ignore" is a duplicate item naming the existing job, and a success.
    ignore = {"keys": ["type"], "on_conflict": "ignore"}
    first = await enqueue(client, "bk-i", type="order.single", unique=ignore)
    response = await client.post(
        BULK,
        json={
            "atomicity": "atomic",
            "jobs": [
                {"type": "order.single", "args": [], "queue": "bk-i", "unique": ignore},
                {"type": "order.other", "args": [], "queue": "bk-i"},
            ],
        },
    )
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert (items[0]["status"], items[0]["job"]["id"]) == ("duplicate", first["id"])
    assert items[1]["status"] == "created"


async def malformed(client: httpx.AsyncClient) -> None:
    """Bad requests are 400 naming the field (422 for atomic changes); nothing is done."""
    cases: list[tuple[str, Any, str]] = [
        (BULK, {}, "jobs"),
        (BULK, {"jobs": []}, "jobs"),
        (BULK, {"jobs": {"type": "x"}}, "jobs"),
        (BULK, {"jobs": [{"type": "a", "args": []}], "atomicity": "all"}, "atomicity"),
        (
            BULK,
            {"jobs": [{"type": "a", "args": []}], "idempotency_key": "k" * 257},
            "idempotency_key",
        ),
        (BULK, {"jobs": [{"type": "a", "args": []}], "idempotency_key": 5}, "idempotency_key"),
        (f"{BULK}/cancel", {}, "job_ids"),
        (f"{BULK}/cancel", {"job_ids": []}, "job_ids"),
        (f"{BULK}/cancel", {"job_ids": ["a"], "filter": {"type": "t"}}, "filter"),
        (f"{BULK}/cancel", {"filter": {}}, "filter"),
        (f"{BULK}/cancel", {"filter": {"typ": "t"}}, "filter.typ"),
        (f"{BULK}/cancel", {"filter": {"state": ["active"]}}, "filter.state[0]"),
        (f"{BULK}/cancel", {"filter": {"state": ["available", 3]}}, "filter.state[1]"),
        (f"{BULK}/cancel", {"filter": {"queue": "Bad Queue"}}, "filter.queue"),
        (f"{BULK}/cancel", {"filter": {"enqueued_before": "yesterday"}}, "filter.enqueued_before"),
        (f"{BULK}/cancel", {"filter": {"priority": "1"}}, "filter.priority"),
        (f"{BULK}/retry", {"filter": {"state": ["completed"]}}, "filter.state[0]"),
        (f"{BULK}/delete", {"filter": {"type": "t"}}, "filter"),
    ]
    for url, body, path in cases:
        response = await client.post(url, json=body)
        err = _error(response, 400, "invalid_request")
        assert _path(err) == path, (url, body, err)
    response = await client.post(BULK, json=["not", "an", "object"])
    _error(response, 400, "invalid_request")
    response = await client.post(
        BULK, json={"jobs": [{"type": "a", "args": []}]}, headers={"Idempotency-Key": "k" * 257}
    )
    assert _path(_error(response, 400, "invalid_request")) == "headers.Idempotency-Key"
    for op in ("cancel", "retry", "delete"):
        response = await client.post(f"{BULK}/{op}", json={"atomicity": "atomic", "job_ids": ["x"]})
        assert _path(_error(response, 422, "unsupported")) == "atomicity"


async def over_the_limit(client: httpx.AsyncClient, maximum: int) -> None:
    """Over ``Limits.max_batch_jobs`` items: 413 with the maximum, nothing enqueued."""
    jobs = [{"type": "t", "args": [], "queue": "bk-l"} for _ in range(maximum + 1)]
    response = await client.post(BULK, json={"jobs": jobs})
    err = _error(response, 413, "batch_size_exceeded")
    assert err["max_batch_size"] == maximum
    assert response.headers["X-OJS-Max-Batch-Size"] == str(maximum)
    response = await client.post(f"{BULK}/cancel", json={"job_ids": ["x"] * (maximum + 1)})
    _error(response, 413, "batch_size_exceeded")
    assert await fetch(client, "bk-l", 5) == []
    at_limit = await client.post(BULK, json={"jobs": jobs[:maximum]})
    assert at_limit.status_code == 201, at_limit.text


# -- cancel, retry, delete ------------------------------------------------------------------------


async def cancel_retry_delete(client: httpx.AsyncClient, service: JobService) -> None:
    """By ids: each job in the right state is changed, the others are skipped with a reason
    and a structured error; 200 all, 207 some, 422 none."""
    q = "bk-c"
    waiting = await enqueue(client, q)
    later = await enqueue(client, q, scheduled_at="2999-01-01T00:00:00Z")
    running = await enqueue(client, "bk-c-run")
    (active,) = await fetch(client, "bk-c-run")
    assert active["id"] == running["id"]
    unknown = "019b76da-a800-7231-ba09-a38ab6db3851"
    ids = [waiting["id"], later["id"], running["id"], unknown, 42]
    response = await client.post(f"{BULK}/cancel", json={"job_ids": ids})
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["total_matched"], body["cancelled"], body["skipped"]) == (5, 2, 3)
    items = body["items"]
    assert [i["status"] for i in items] == [
        "cancelled",
        "cancelled",
        "skipped",
        "skipped",
        "skipped",
    ]
    assert [i["job_id"] for i in items] == ids
    assert "active" in items[2]["reason"]
    assert items[2]["error"]["code"] == "conflict"
    assert items[3]["error"]["code"] == "not_found"
    assert _path(items[4]["error"]) == "job_ids[4]"
    assert await state_of(client, waiting["id"]) == "cancelled"
    assert await state_of(client, later["id"]) == "cancelled"
    assert await state_of(client, running["id"]) == "active"

    # Retry: a dead-lettered job and a retryable one come back; a completed one is skipped.
    retry = {"max_attempts": 1, "on_exhaustion": "dead_letter"}
    dead = await enqueue(client, "bk-r1", retry=retry)
    (got,) = await fetch(client, "bk-r1")
    nack = await client.post(
        f"{V1}/workers/nack", json={"job_id": got["id"], "error": {"message": "boom"}}
    )
    assert nack.json()["state"] == "discarded"
    backoff = {"max_attempts": 5, "initial_interval": "PT1H", "max_interval": "PT2H"}
    waiting_retry = await enqueue(client, "bk-r2", retry=backoff)
    (got,) = await fetch(client, "bk-r2")
    nack = await client.post(
        f"{V1}/workers/nack", json={"job_id": got["id"], "error": {"message": "later"}}
    )
    assert nack.json()["state"] == "retryable"
    done = await enqueue(client, "bk-r3")
    (got,) = await fetch(client, "bk-r3")
    ack = await client.post(f"{V1}/workers/ack", json={"job_id": got["id"]})
    assert ack.status_code == 200
    response = await client.post(
        f"{BULK}/retry", json={"job_ids": [dead["id"], waiting_retry["id"], done["id"]]}
    )
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["retried"], body["skipped"]) == (2, 1)
    assert body["items"][2]["error"]["details"]["current_state"] == "completed"
    assert await state_of(client, dead["id"]) == "available"
    assert await state_of(client, waiting_retry["id"]) == "available"
    (again,) = await fetch(client, "bk-r1")
    assert (again["id"], again["attempt"]) == (dead["id"], 1)  # attempts start over
    (again,) = await fetch(client, "bk-r2")
    assert (again["id"], again["attempt"]) == (waiting_retry["id"], 2)  # attempts kept

    # Delete: finished jobs only.
    response = await client.post(
        f"{BULK}/delete", json={"job_ids": [done["id"], waiting["id"], running["id"]]}
    )
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["deleted"], body["skipped"]) == (2, 1)
    assert await state_of(client, done["id"]) is None
    assert await state_of(client, waiting["id"]) is None
    assert await state_of(client, running["id"]) == "active"
    assert body["items"][2]["error"]["details"]["current_state"] == "active"

    none = await client.post(f"{BULK}/cancel", json={"job_ids": [running["id"]]})
    assert none.status_code == 422, none.text
    assert none.json()["items"][0]["status"] == "skipped"
    fresh = await enqueue(client, q)
    all_ok = await client.post(f"{BULK}/cancel", json={"job_ids": [fresh["id"]]})
    assert all_ok.status_code == 200, all_ok.text


async def by_filter(client: httpx.AsyncClient) -> None:
    """A filter selects by type, queue, state, priority, meta and time; jobs outside it stay."""
    q = "bk-f"
    target = [
        await enqueue(client, q, type="report.generate", meta={"tenant": "a"}) for _ in range(3)
    ]
    other_type = await enqueue(client, q, type="report.other", meta={"tenant": "a"})
    other_meta = await enqueue(client, q, type="report.generate", meta={"tenant": "b"})
    elsewhere = await enqueue(client, "bk-f2", type="report.generate", meta={"tenant": "a"})
    response = await client.post(
        f"{BULK}/cancel",
        json={
            "filter": {
                "type": "report.generate",
                "queue": q,
                "state": ["available", "scheduled"],
                "meta": {"tenant": "a"},
                "enqueued_before": "2999-01-01T00:00:00Z",
                "enqueued_after": "2000-01-01T00:00:00Z",
                "priority": 0,
            }
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total_matched"], body["cancelled"], body["has_more"]) == (3, 3, False)
    assert sorted(i["job_id"] for i in body["items"]) == sorted(j["id"] for j in target)
    for job in target:
        assert await state_of(client, job["id"]) == "cancelled"
    for job in (other_type, other_meta, elsewhere):
        assert await state_of(client, job["id"]) == "available"
    nothing = await client.post(
        f"{BULK}/cancel",
        json={"filter": {"type": "report.generate", "queue": q, "meta": {"tenant": "a"}}},
    )
    assert nothing.status_code == 200
    assert nothing.json()["total_matched"] == 0


async def idempotency(client: httpx.AsyncClient, service: JobService) -> None:
    """The same key and body: the stored answer, no second set of jobs; the header wins over
    the body; another body: 409; keys are per operation; an expired key runs again."""
    jobs = [
        {"type": "user.import", "args": [{"user_id": "u_100"}], "queue": "bk-k"},
        {"type": "user.import", "args": [{"user_id": "u_101"}], "queue": "bk-k"},
    ]
    headers = {"Idempotency-Key": "import-batch-42"}
    first = await client.post(BULK, json={"jobs": jobs}, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await client.post(
        BULK, json={"jobs": jobs, "idempotency_key": "ignored"}, headers=headers
    )
    # The body's key differs but the header wins: and the body (key aside) is the same.
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(await fetch(client, "bk-k", 10)) == 2

    by_body = await client.post(BULK, json={"jobs": jobs, "idempotency_key": "import-batch-42"})
    assert by_body.status_code == 201
    assert by_body.json() == first.json()

    other = await client.post(BULK, json={"jobs": jobs[:1]}, headers=headers)
    err = _error(other, 409, "conflict")
    assert err["details"]["reason"] == "key_reused"

    # The same key for another operation is another key.
    ids = [item["job"]["id"] for item in first.json()["items"]]
    cancel = await client.post(f"{BULK}/cancel", json={"job_ids": ids}, headers=headers)
    assert cancel.status_code == 422, cancel.text  # both are active now: skipped
    assert "Idempotent-Replayed" not in cancel.headers

    # A failed atomic request is kept too: its repeat gives the same 422.
    bad = {"atomicity": "atomic", "jobs": [{"type": "a", "args": [], "queue": "bk-k"}, {"type": 1}]}
    r1 = await client.post(BULK, json=bad, headers={"Idempotency-Key": "bad"})
    r2 = await client.post(BULK, json=bad, headers={"Idempotency-Key": "bad"})
    assert (r1.status_code, r2.status_code) == (422, 422)
    assert r1.json() == r2.json()

    # Expiry: with a short retention the key is forgotten and the request runs again.
    service.bulk.idempotency_ttl_s = 1.0
    short = {"jobs": [{"type": "t", "args": [], "queue": "bk-ttl"}]}
    one = await client.post(BULK, json=short, headers={"Idempotency-Key": "short"})
    assert one.status_code == 201
    store = service.backend
    assert isinstance(store, IdempotencyStore)

    from nats_support import eventually

    await eventually(
        lambda: _gone(store, "bulk.enqueue:short"), within=10, what="the key to expire"
    )
    two = await client.post(BULK, json=short, headers={"Idempotency-Key": "short"})
    assert two.status_code == 201
    assert "Idempotent-Replayed" not in two.headers
    assert two.json()["items"][0]["job"]["id"] != one.json()["items"][0]["job"]["id"]


async def _gone(store: IdempotencyStore, key: str) -> bool:
    return await store.get_idempotency(key) is None


async def takeover(client: httpx.AsyncClient, service: JobService) -> None:
    """A reservation still running is 409 (retryable); one whose request died is taken over
    once its lease ends, and the jobs the dead request stored are not enqueued again."""
    from ojs_core import idempotency

    store = service.backend
    assert isinstance(store, IdempotencyStore)
    jobs = [{"type": "t", "args": [i], "queue": "bk-t"} for i in range(3)]
    headers = {"Idempotency-Key": "crash"}
    first = await client.post(BULK, json={"jobs": jobs}, headers=headers)
    assert first.status_code == 201
    key = "bulk.enqueue:crash"
    got = await store.get_idempotency(key)
    assert got is not None
    record = idempotency._decode(got[0])
    # As if the request were still running (its answer not yet stored) ...
    running = {k: v for k, v in record.items() if k not in ("status", "body", "v")}
    running |= {"state": "pending", "lease": int(service.now().timestamp() * 1000) + 60_000}
    revision = await store.put_idempotency(key, idempotency._encode(running), got[1], 60)
    assert revision is not None
    busy = await client.post(BULK, json={"jobs": jobs}, headers=headers)
    err = _error(busy, 409, "conflict")
    assert (err["details"]["reason"], err["retryable"]) == ("in_progress", True)
    # ... and then as if its process died: the lease ends, a repeat runs it again.
    ended = idempotency._encode(running | {"lease": 0})
    assert await store.put_idempotency(key, ended, revision, 60)
    retaken = await client.post(BULK, json={"jobs": jobs}, headers=headers)
    assert retaken.status_code == 201, retaken.text
    assert "Idempotent-Replayed" not in retaken.headers
    assert [i["job"]["id"] for i in retaken.json()["items"]] == [
        i["job"]["id"] for i in first.json()["items"]
    ]
    assert len(await fetch(client, "bk-t", 10)) == 3  # not enqueued twice


async def events_and_manifest(client: httpx.AsyncClient) -> None:
    """Each bulk request emits its ``bulk.*.completed`` event; the manifest declares the
    extension; the OpenAPI document has its routes."""
    from nats_support import eventually

    async def bulk_events() -> list[dict[str, Any]]:
        response = await client.get(f"{V1}/events", params={"types": "bulk.*", "limit": 1000})
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    before = len(await bulk_events())
    response = await client.post(BULK, json={"jobs": [{"type": "t", "args": [], "queue": "bk-e"}]})
    assert response.status_code == 201
    job_id = response.json()["items"][0]["job"]["id"]
    await client.post(f"{BULK}/cancel", json={"job_ids": [job_id]})

    async def ours() -> list[dict[str, Any]] | None:
        events = await bulk_events()
        return events[before:] if len(events) >= before + 2 else None

    enq, can = await eventually(ours, within=10, what="the two bulk events")
    assert enq["type"] == "bulk.enqueue.completed"
    assert enq["data"] == {"total": 1, "succeeded": 1, "failed": 0, "atomicity": "partial"}
    assert can["type"] == "bulk.cancel.completed"
    assert can["data"] == {"total": 1, "cancelled": 1, "skipped": 0}

    manifest = (await client.get("/ojs/manifest")).json()
    declared = {e["uri"]: e for e in manifest["extensions"]["official"]}
    bulk = declared["urn:ojs:ext:bulk-operations"]
    assert bulk["version"] == "1.0.0-rc.1"
    assert bulk["max_batch_size"] >= 1000
    paths = (await client.get(f"{V1}/openapi.json")).json()["paths"]
    for suffix in ("", "/cancel", "/retry", "/delete"):
        assert "post" in paths[f"/ojs/v1/jobs/bulk{suffix}"]
