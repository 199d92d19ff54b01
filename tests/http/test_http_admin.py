"""The admin API (``/ojs/v1/admin/...``) over HTTP on the memory backend: listings by state,
queue and type with pagination, totals, queues, job actions, bulk actions behind ``confirm``,
the dead letter, workers, and the admin-only access. ``tests/nats/test_nats_admin.py`` runs the
listings on NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from admin_support import seed_queue
from test_http_binding import UNKNOWN_ID, V1, error_of, serve

from ojs_core.errors import ConflictError
from ojs_core.states import JobState
from ojs_http import HttpSettings, create_app
from ojs_http.auth import ApiKeys
from ojs_memory import MemoryBackend

A = f"{V1}/admin"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve() as (_, c):
        yield c


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(f"{A}{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _field(err: dict[str, Any]) -> str:
    """The field a 400 names."""
    (problem,) = err["details"]["validation_errors"]
    field: str = problem["path"]
    return field


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


async def test_listings_by_state_and_queue_with_pagination(client: httpx.AsyncClient) -> None:
    seeded = await seed_queue(client)
    await client.post(f"{V1}/jobs", json={"type": "other", "args": [], "options": {"queue": "x"}})

    available = await _get(client, "/jobs", state="available", queue="mail")
    assert _ids(available) == list(reversed(seeded["available"]))  # newest first
    assert available["pagination"] == {"total": 3, "page": 1, "per_page": 20}
    for state in ("scheduled", "completed", "discarded"):
        body = await _get(client, "/jobs", state=state, queue="mail")
        assert _ids(body) == [seeded[state]], state
        assert body["pagination"]["total"] == 1
    everything = await _get(client, "/jobs", queue="mail")
    assert everything["pagination"]["total"] == 6

    first = await _get(client, "/jobs", queue="mail", state="available", per_page=2)
    second = await _get(client, "/jobs", queue="mail", state="available", per_page=2, page=2)
    assert _ids(first) + _ids(second) == list(reversed(seeded["available"]))
    assert second["pagination"] == {"total": 3, "page": 2, "per_page": 2}

    by_type = await _get(client, "/jobs", type="mail.digest")
    assert _ids(by_type) == [seeded["scheduled"]]
    item = by_type["items"][0]
    assert {k: item[k] for k in ("type", "queue", "state", "attempt")} == {
        "type": "mail.digest",
        "queue": "mail",
        "state": "scheduled",
        "attempt": 0,
    }


async def test_bad_listing_parameters_are_400_naming_the_field(client: httpx.AsyncClient) -> None:
    for params, path in (
        ({"state": "sleeping"}, "state"),
        ({"per_page": "1000"}, "per_page"),
        ({"page": "0"}, "page"),
        ({"queue": "BAD QUEUE!"}, "queue"),
    ):
        response = await client.get(f"{A}/jobs", params=params)
        assert _field(error_of(response, 400)) == path, params


async def test_stats_and_queues_count_every_state(client: httpx.AsyncClient) -> None:
    await seed_queue(client)
    stats = await _get(client, "/stats")
    assert stats["queues"] >= 1
    assert stats["jobs"]["available"] == 3
    assert stats["jobs"]["scheduled"] == 1
    assert stats["jobs"]["completed"] == 1
    assert stats["jobs"]["discarded"] == 1
    assert set(stats["jobs"]) == {s.value for s in JobState}
    assert set(stats["throughput"]) == {"processed_per_minute", "failed_per_minute"}

    queues = await _get(client, "/queues")
    (mail,) = [q for q in queues["items"] if q["name"] == "mail"]
    assert mail["counts"]["available"] == 3
    assert (mail["state"], mail["paused"]) == ("active", False)
    assert queues["pagination"]["total"] == len(queues["items"])

    paused = await client.post(f"{A}/queues/mail/pause")
    assert paused.json()["paused"] is True
    detail = await _get(client, "/queues/mail")
    assert (detail["state"], detail["paused"]) == ("paused", True)
    fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["mail"]})
    assert fetched.json()["jobs"] == []
    await client.post(f"{A}/queues/mail/resume")
    assert (await _get(client, "/queues/mail"))["paused"] is False


async def test_job_detail_retry_and_cancel(client: httpx.AsyncClient) -> None:
    seeded = await seed_queue(client)
    detail = await _get(client, f"/jobs/{seeded['discarded']}")
    assert detail["state"] == "discarded"
    assert detail["errors"][0]["message"] == "mailbox full"
    assert detail["metadata"]["discarded_at"] is not None
    assert detail["args"] == ["x@example.com"]

    retried = await client.post(f"{A}/jobs/{seeded['discarded']}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["job"]["state"], retried.json()["job"]["attempt"]) == ("available", 0)
    again = await client.post(f"{A}/jobs/{seeded['available'][0]}/retry")
    assert error_of(again, 409)["details"]["current_state"] == "available"

    cancelled = await client.post(f"{A}/jobs/{seeded['available'][0]}/cancel")
    assert cancelled.json()["job"]["state"] == "cancelled"
    error_of(await client.post(f"{A}/jobs/{seeded['completed']}/cancel"), 409)
    error_of(await client.get(f"{A}/jobs/{UNKNOWN_ID}"), 404)


async def test_bulk_actions_need_confirm_and_report_each_job(client: httpx.AsyncClient) -> None:
    seeded = await seed_queue(client)
    refused = await client.post(
        f"{A}/jobs/bulk/cancel", json={"filter": {"queue": "mail", "state": "available"}}
    )
    assert _field(error_of(refused, 400)) == "confirm"
    left = await _get(client, "/jobs", queue="mail", state="available")
    assert left["pagination"]["total"] == 3  # nothing was cancelled

    done = await client.post(
        f"{A}/jobs/bulk/cancel",
        json={"filter": {"queue": "mail", "state": "available"}, "confirm": True},
    )
    assert done.json() == {
        "action": "cancel",
        "matched": 3,
        "attempted": 3,
        "succeeded": 3,
        "failed": 0,
        "errors": [],
        "errors_truncated": False,
    }
    mixed = await client.post(
        f"{A}/jobs/bulk/retry", json={"filter": {"queue": "mail"}, "confirm": True}
    )
    body = mixed.json()
    assert (body["matched"], body["succeeded"], body["failed"]) == (6, 1, 5)
    assert {e["job_id"] for e in body["errors"]} == set(seeded["available"]) | {
        seeded["scheduled"],
        seeded["completed"],
    }
    deleted = await client.post(
        f"{A}/jobs/bulk/delete",
        json={"filter": {"queue": "mail", "state": "cancelled"}, "confirm": True},
    )
    assert deleted.json()["succeeded"] == 3
    assert (await _get(client, "/jobs", queue="mail"))["pagination"]["total"] == 3
    not_terminal = await client.post(
        f"{A}/jobs/bulk/delete", json={"filter": {"state": "available"}, "confirm": True}
    )
    error_of(not_terminal, 400)
    error_of(await client.post(f"{A}/jobs/bulk/explode", json={"confirm": True}), 404)


async def test_dead_letter_list_stats_retry_delete_and_purge(client: httpx.AsyncClient) -> None:
    seeded = await seed_queue(client)
    other = await seed_queue(client, "billing")
    listing = await _get(client, "/dead-letter", queue="mail")
    assert _ids(listing) == [seeded["discarded"]]
    assert listing["items"][0]["error"]["type"] == "SMTPError"
    stats = await _get(client, "/dead-letter/stats")
    assert stats["total"] == 2
    assert stats["by_queue"] == {"mail": 1, "billing": 1}
    assert stats["by_error_type"] == {"SMTPError": 2}
    assert stats["oldest_at"] <= stats["newest_at"]

    retried = await client.post(f"{A}/dead-letter/{seeded['discarded']}/retry")
    assert retried.json()["job"]["state"] == "available"
    assert (await _get(client, "/dead-letter"))["pagination"]["total"] == 1
    error_of(await client.delete(f"{A}/dead-letter"), 400)  # no confirm
    purged = await client.request("DELETE", f"{A}/dead-letter", json={"confirm": True})
    assert purged.json() == {"purged_count": 1}
    error_of(await client.get(f"{V1}/jobs/{other['discarded']}"), 404)
    error_of(await client.delete(f"{A}/dead-letter/{other['discarded']}"), 404)


async def test_purge_queue_removes_finished_jobs_only(client: httpx.AsyncClient) -> None:
    seeded = await seed_queue(client)
    no_confirm = await client.request(
        "DELETE", f"{A}/queues/mail/jobs", json={"states": ["completed"]}
    )
    error_of(no_confirm, 400)
    active = await client.request(
        "DELETE", f"{A}/queues/mail/jobs", json={"states": ["available"], "confirm": True}
    )
    error_of(active, 400)
    purged = await client.request(
        "DELETE",
        f"{A}/queues/mail/jobs",
        json={"states": ["completed", "discarded"], "confirm": True},
    )
    assert purged.json() == {"purged_count": 2, "states": ["completed", "discarded"]}
    assert (await _get(client, "/jobs", queue="mail"))["pagination"]["total"] == 4
    error_of(await client.get(f"{V1}/jobs/{seeded['completed']}"), 404)
    older = await client.request(
        "DELETE",
        f"{A}/queues/mail/jobs",
        json={"states": ["completed"], "older_than": "yesterday", "confirm": True},
    )
    error_of(older, 400)


async def test_workers_summary_and_deregistration(client: httpx.AsyncClient) -> None:
    beat = await client.post(
        f"{V1}/workers/heartbeat", json={"worker_id": "w-1", "active_jobs": []}
    )
    assert beat.status_code == 200
    await client.post(f"{V1}/workers/heartbeat", json={"worker_id": "w-2"})
    await client.post(f"{A}/workers/w-2/quiet")
    workers = await _get(client, "/workers")
    assert {w["id"]: w["state"] for w in workers["items"]} == {"w-1": "running", "w-2": "quiet"}
    assert workers["summary"] == {"total": 2, "running": 1, "quiet": 1, "stale": 0}
    assert (await _get(client, "/workers/w-1"))["active_jobs"] == 0
    error_of(await client.delete(f"{A}/workers/w-1"), 409)  # still heartbeating
    error_of(await client.get(f"{A}/workers/nobody"), 404)


async def test_admin_routes_need_the_admin_role() -> None:
    app = create_app(
        MemoryBackend(), HttpSettings(), auth=ApiKeys([("producer", "pk"), ("admin", "ak")])
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as c,
    ):
        error_of(await c.get(f"{A}/stats"), 401)
        producer = {"Authorization": "Bearer pk"}
        error_of(await c.get(f"{A}/jobs", headers=producer), 403)
        error_of(
            await c.post(f"{A}/jobs/bulk/retry", json={"confirm": True}, headers=producer), 403
        )
        ok = await c.get(f"{A}/stats", headers={"Authorization": "Bearer ak"})
        assert ok.status_code == 200


async def test_workflows_newest_first_and_cron_toggle(client: httpx.AsyncClient) -> None:
    made = []
    for name in ("first", "second"):
        response = await client.post(
            f"{V1}/workflows",
            json={
                "type": "chain",
                "name": name,
                "steps": [{"type": "step.a", "args": []}, {"type": "step.b", "args": []}],
            },
        )
        assert response.status_code == 201, response.text
        made.append(response.json()["workflow"]["id"])
    listing = await _get(client, "/workflows", per_page=1)
    assert _ids(listing) == [made[1]]
    assert listing["pagination"] == {"total": 2, "page": 1, "per_page": 1}
    (item,) = listing["items"]
    assert (item["name"], item["steps_total"], item["state"]) == ("second", 2, "running")
    assert _ids(await _get(client, "/workflows", per_page=1, page=2)) == [made[0]]

    cron = {"name": "nightly", "cron": "0 3 * * *", "job_template": {"type": "report.build"}}
    assert (await client.post(f"{V1}/cron", json=cron)).status_code == 201
    off = await client.patch(f"{A}/cron/nightly", json={"enabled": False})
    assert off.json()["cron"]["enabled"] is False
    error_of(await client.patch(f"{A}/cron/nightly", json={"enabled": "no"}), 400)


async def test_a_bulk_filter_with_an_unknown_key_changes_nothing(client: httpx.AsyncClient) -> None:
    await seed_queue(client)
    typo = await client.post(
        f"{A}/jobs/bulk/cancel", json={"filter": {"queu": "mail"}, "confirm": True}
    )
    assert _field(error_of(typo, 400)) == "filter.queu"
    wildcard = await client.post(
        f"{A}/jobs/bulk/cancel", json={"filter": {"type": "mail.*"}, "confirm": True}
    )
    assert _field(error_of(wildcard, 400)) == "filter.type"
    assert (await _get(client, "/jobs", state="available"))["pagination"]["total"] == 3


async def test_bulk_time_bounds_select_by_creation(client: httpx.AsyncClient) -> None:
    await seed_queue(client)
    # Every seeded job was created now: "until 2000" matches none of them (the spec's own
    # example of a bulk delete), "since 2000" matches all the completed ones.
    none = await client.post(
        f"{A}/jobs/bulk/delete",
        json={"filter": {"state": "completed", "until": "2000-01-01T00:00:00Z"}, "confirm": True},
    )
    assert (none.json()["matched"], none.json()["succeeded"]) == (0, 0)
    assert (await _get(client, "/jobs", state="completed"))["pagination"]["total"] == 1
    some = await client.post(
        f"{A}/jobs/bulk/delete",
        json={"filter": {"state": "completed", "since": "2000-01-01T00:00:00Z"}, "confirm": True},
    )
    assert some.json()["succeeded"] == 1
    error_of(await client.get(f"{A}/jobs", params={"since": "2000-01-01T00:00:00Z"}), 400)


async def test_a_bulk_change_leaves_a_job_that_left_the_filter() -> None:
    # A bulk cancel lists the available jobs, then a worker claims one before the cancel
    # reaches it: the cancel re-checks the filter in its compare-and-swap and refuses it.
    from ojs_core.admin import JobQuery

    async with serve() as (app, client):
        seeded = await seed_queue(client)
        service = app.state.service
        query = JobQuery(state=JobState.AVAILABLE, queue="mail")
        (claimed,) = await service.fetch(["mail"], count=1, worker_id="w-race")
        assert claimed.id == seeded["available"][0]
        with pytest.raises(ConflictError):
            await service.cancel(claimed.id, only_if=query.matches)
        assert (await service.get(claimed.id)).state is JobState.ACTIVE
        (done,) = [seeded["completed"]]
        with pytest.raises(ConflictError):
            await service.revive(done, only_if=JobQuery(queue="other").matches)
