"""The rate-limiting extension over HTTP: a job's ``rate_limit`` in the extension's shapes,
``/ojs/v1/rate-limits`` inspection, listing and overrides, ``rate_limit_until`` in a
failure, and the manifest entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from test_http_binding import V1, client, error_of

from ojs_core.timeutil import format_ts

__all__ = ["client"]


async def _enqueue(client: httpx.AsyncClient, rate_limit: dict[str, object]) -> str:
    body = {"type": "rl.job", "args": [], "options": {"queue": "rl", "rate_limit": rate_limit}}
    created = await client.post(f"{V1}/jobs", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["job"]["id"])


async def _fetch(client: httpx.AsyncClient, count: int = 10) -> list[str]:
    got = await client.post(
        f"{V1}/workers/fetch", json={"queues": ["rl"], "count": count, "worker_id": "w"}
    )
    assert got.status_code == 200
    return [j["id"] for j in got.json()["jobs"]]


async def test_the_extension_shape_is_kept_and_enforced(client: httpx.AsyncClient) -> None:
    policy = {
        "key": "stripe:api",
        "concurrency": 2,
        "rate": {"limit": 100, "period": "PT1M"},
        "on_limit": "wait",
    }
    ids = [await _enqueue(client, policy) for _ in range(3)]
    job = (await client.get(f"{V1}/jobs/{ids[0]}")).json()["job"]
    assert job["rate_limit"]["key"] == "stripe:api"
    assert job["rate_limit"]["concurrency"] == 2
    assert job["rate_limit"]["rate"] == {"limit": 100, "period": "PT60S"}
    assert len(await _fetch(client)) == 2
    view = (await client.get(f"{V1}/rate-limits/stripe:api")).json()
    assert view["key"] == "stripe:api"
    assert view["concurrency"] == {"limit": 2, "active": 2, "available": 0}
    assert view["rate"]["limit"] == 100
    assert view["rate"]["current_count"] == 2
    assert view["waiting_count"] == 1
    listed = (await client.get(f"{V1}/rate-limits")).json()
    assert [item["key"] for item in listed["items"]] == ["stripe:api"]
    assert listed["pagination"] == {"total": 1, "page": 1, "per_page": 20}


async def test_an_override_pauses_the_key_and_delete_removes_it(
    client: httpx.AsyncClient,
) -> None:
    job_id = await _enqueue(client, {"key": "mail", "concurrency": 5})
    expires = format_ts(datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))
    put = await client.put(f"{V1}/rate-limits/mail", json={"concurrency": 0, "expires_at": expires})
    assert put.status_code == 200
    assert put.json()["override"]["concurrency"] == 0
    assert put.json()["override"]["expires_at"] == expires
    assert await _fetch(client) == []
    deleted = await client.delete(f"{V1}/rate-limits/mail")
    assert deleted.status_code == 200
    assert "override" not in deleted.json()
    assert await _fetch(client) == [job_id]


async def test_bad_requests_name_the_field(client: httpx.AsyncClient) -> None:
    error_of(await client.get(f"{V1}/rate-limits/unknown"), 404, "not_found")
    err = error_of(await client.get(f"{V1}/rate-limits/-bad"), 400)
    assert err["details"]["validation_errors"][0]["path"] == "key"
    err = error_of(await client.put(f"{V1}/rate-limits/k", json={"concurrency": -1}), 400)
    assert err["details"]["validation_errors"][0]["path"] == "concurrency"
    err = error_of(
        await client.put(f"{V1}/rate-limits/k", json={"concurrency": 1, "expires_at": "soon"}),
        400,
    )
    assert err["details"]["validation_errors"][0]["path"] == "expires_at"
    body = {
        "type": "rl.job",
        "args": [],
        "options": {"rate_limit": {"key": "a b", "concurrency": 1}},
    }
    err = error_of(await client.post(f"{V1}/jobs", json=body), 400)
    assert err["details"]["validation_errors"][0]["path"] == "options.rate_limit.key"


async def test_rate_limit_until_in_a_failure_holds_the_key(client: httpx.AsyncClient) -> None:
    first = await _enqueue(client, {"key": "partner", "concurrency": 10})
    await _enqueue(client, {"key": "partner", "concurrency": 10})
    assert await _fetch(client, 1) == [first]
    until = format_ts(datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))
    nack = await client.post(
        f"{V1}/workers/nack",
        json={
            "job_id": first,
            "worker_id": "w",
            "error": {"type": "RateLimitExceeded", "message": "429", "rate_limit_until": until},
        },
    )
    assert nack.status_code == 200, nack.text
    assert await _fetch(client) == []
    view = (await client.get(f"{V1}/rate-limits/partner")).json()
    assert view["held_until"] == until
    err = error_of(
        await client.post(
            f"{V1}/workers/nack",
            json={"job_id": first, "error": {"message": "x", "rate_limit_until": "later"}},
        ),
        400,
    )
    assert err["details"]["validation_errors"][0]["path"] == "error.rate_limit_until"


async def test_the_manifest_declares_the_extension(client: httpx.AsyncClient) -> None:
    manifest = (await client.get("/ojs/manifest")).json()
    (ext,) = [e for e in manifest["extensions"]["official"] if e.get("name") == "rate-limiting"]
    assert ext["uri"] == "urn:ojs:ext:rate-limiting"
    assert ext["version"] == "1.0.0-rc.1"
    assert ext["shared"] is True


async def test_a_held_back_fetch_says_when_to_come_back(client: httpx.AsyncClient) -> None:
    """§10.4: a fetch whose candidates a limit held back carries X-RateLimit-* (and, when it
    got nothing, Retry-After in decimal seconds)."""
    policy = {"key": "slow-api", "throttle": {"limit": 1, "period": "PT10S"}}
    await _enqueue(client, policy)
    await _enqueue(client, policy)
    first = await client.post(
        f"{V1}/workers/fetch", json={"queues": ["rl"], "count": 2, "worker_id": "w"}
    )
    assert len(first.json()["jobs"]) == 1
    assert first.headers["X-RateLimit-Key"] == "slow-api"
    assert "Retry-After" not in first.headers  # it did get a job
    second = await client.post(f"{V1}/workers/fetch", json={"queues": ["rl"], "worker_id": "w"})
    assert second.json()["jobs"] == []
    assert second.headers["X-RateLimit-Limit"] == "1"
    assert second.headers["X-RateLimit-Remaining"] == "0"
    reset = int(second.headers["X-RateLimit-Reset"])
    assert 0 < reset - datetime.now(UTC).timestamp() <= 11
    assert 0 < float(second.headers["Retry-After"]) <= 10


async def test_a_fetch_nothing_held_back_has_no_rate_limit_headers(
    client: httpx.AsyncClient,
) -> None:
    await client.post(
        f"{V1}/jobs", json={"type": "free.job", "args": [], "options": {"queue": "rl"}}
    )
    got = await client.post(f"{V1}/workers/fetch", json={"queues": ["rl"], "worker_id": "w"})
    assert len(got.json()["jobs"]) == 1
    assert not [h for h in got.headers if h.lower().startswith("x-ratelimit")]


# -- queue-level limits (§7.2) -------------------------------------------------------------


async def _enqueue_plain(client: httpx.AsyncClient, queue: str, **options: object) -> str:
    body = {"type": "q.job", "args": [], "options": {"queue": queue, **options}}
    created = await client.post(f"{V1}/jobs", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["job"]["id"])


async def _fetch_from(client: httpx.AsyncClient, queue: str, count: int = 10) -> list[str]:
    got = await client.post(
        f"{V1}/workers/fetch", json={"queues": [queue], "count": count, "worker_id": "w"}
    )
    assert got.status_code == 200
    return [j["id"] for j in got.json()["jobs"]]


async def test_a_queue_level_limit_binds_every_job_of_the_queue(
    client: httpx.AsyncClient,
) -> None:
    url = f"{V1}/admin/queues/email/rate-limit"
    assert (await client.get(url)).status_code == 404
    put = await client.put(url, json={"concurrency": 1})
    assert put.status_code == 200, put.text
    assert put.json()["queue"] == "email"
    assert put.json()["override"]["concurrency"] == 1
    ids = [await _enqueue_plain(client, "email") for _ in range(2)]
    other = await _enqueue_plain(client, "sms")  # another queue is not limited
    assert await _fetch_from(client, "email") == [ids[0]]
    assert await _fetch_from(client, "sms") == [other]
    view = (await client.get(url)).json()
    assert view["concurrency"] == {"limit": 1, "active": 1, "available": 0}
    assert view["waiting_count"] == 1
    acked = await client.post(f"{V1}/workers/ack", json={"job_id": ids[0], "worker_id": "w"})
    assert acked.status_code == 200
    assert await _fetch_from(client, "email") == [ids[1]]
    deleted = await client.delete(url)
    assert deleted.status_code == 200
    assert "override" not in deleted.json()
    assert (await client.get(url)).status_code == 404
    assert (await client.delete(url)).status_code == 404


async def test_the_queue_limit_and_the_job_limit_both_apply(client: httpx.AsyncClient) -> None:
    # The job's own key allows 5, the queue 2: the most restrictive wins. Then the queue
    # allows 5 and the job's key 1.
    url = f"{V1}/admin/queues/mixed/rate-limit"
    assert (await client.put(url, json={"concurrency": 2})).status_code == 200
    loose = {"key": "loose", "concurrency": 5}
    ids = [await _enqueue_plain(client, "mixed", rate_limit=loose) for _ in range(3)]
    assert await _fetch_from(client, "mixed") == ids[:2]
    assert (await client.put(url, json={"concurrency": 5})).status_code == 200
    strict = {"key": "strict", "concurrency": 1}
    more = [await _enqueue_plain(client, "mixed", rate_limit=strict) for _ in range(2)]
    got = await _fetch_from(client, "mixed")
    assert got == [ids[2], more[0]]


def _paths(error: dict[str, Any]) -> list[str]:
    return [e["path"] for e in error["details"]["validation_errors"]]


async def test_bad_queue_limits_name_the_field(client: httpx.AsyncClient) -> None:
    url = f"{V1}/admin/queues/email/rate-limit"
    bad = await client.put(url, json={"concurrency": -1})
    assert _paths(error_of(bad, 400)) == ["concurrency"]
    window = await client.put(url, json={"rate": {"limit": 0, "period": "PT1S"}})
    assert _paths(error_of(window, 400)) == ["rate.limit"]
    name = await client.put(f"{V1}/admin/queues/Not_A_Queue/rate-limit", json={"concurrency": 1})
    assert _paths(error_of(name, 400)) == ["name"]
    assert (await client.get(url)).status_code == 404  # nothing was written
