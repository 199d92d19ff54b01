"""The in-process Client over a MemoryBackend driven by a ManualClock.

Each test checks what the client stored through the same JobService the HTTP binding uses;
one test compares the client's validation errors with the HTTP binding's answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from embed_support import Harness

from ojs_core import (
    Client,
    ConflictError,
    DuplicateJobError,
    JobService,
    NotFoundError,
    QueueFullError,
    RetryPolicy,
    UniquePolicy,
    ValidationError,
)
from ojs_core.client import batch, chain, group, job
from ojs_core.ids import is_uuid7
from ojs_core.model import JobError, RateLimit, Window
from ojs_core.states import JobState
from ojs_http import HttpSettings, create_app
from ojs_memory import MemoryBackend

S = JobState


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def run_one(h: Harness, queue: str = "default", result: Any = None) -> str:
    """Fetch one job with the service and ack it (a minimal worker); returns its id."""
    fetched = await h.service.fetch([queue], 1, "w-test")
    assert len(fetched) == 1
    await h.service.ack(fetched[0].id, result, "w-test")
    return fetched[0].id


# -- enqueue ------------------------------------------------------------------------------


async def test_enqueue_stores_every_option(harness: Harness) -> None:
    h = harness
    stored = await h.client.enqueue(
        "email.send",
        ["ada@example.com", {"template": "welcome"}],
        queue="mail",
        priority=10,
        tags=["onboarding"],
        meta={"tenant": "acme"},
        timeout_ms=60_000,
        visibility_timeout_ms=120_000,
        retry=RetryPolicy(max_attempts=5, initial_interval_ms=2000, jitter=False),
    )
    assert stored is not None
    assert is_uuid7(stored.id)
    assert stored.state is S.AVAILABLE
    assert stored.type == "email.send"
    assert stored.args == ["ada@example.com", {"template": "welcome"}]
    assert stored.queue == "mail"
    assert stored.priority == 10
    assert stored.tags == ["onboarding"]
    assert stored.meta == {"tenant": "acme"}
    assert stored.timeout_ms == 60_000
    assert stored.visibility_timeout_ms == 120_000
    assert stored.retry == RetryPolicy(
        max_attempts=5, initial_interval_ms=2000, jitter=False, on_exhaustion="dead_letter"
    )
    assert stored.created_at == h.clock.now()
    assert await h.client.get(stored.id) == stored


async def test_rate_limit_as_a_policy_object_or_a_dict(harness: Harness) -> None:
    h = harness
    policy = RateLimit(key="mail-api", concurrency=2, rate=Window(limit=10, period_ms=1000))
    as_object = await h.client.enqueue("mail.send", [], rate_limit=policy)
    as_dict = await h.client.enqueue(
        "mail.send",
        [],
        rate_limit={"key": "mail-api", "concurrency": 2, "rate": {"limit": 10, "period": "PT1S"}},
    )
    assert as_object is not None
    assert as_dict is not None
    assert as_object.rate_limit == policy
    assert as_dict.rate_limit == policy


async def test_partial_retry_dicts_merge_over_the_defaults(harness: Harness) -> None:
    stored = await harness.client.enqueue("a.job", retry={"max_attempts": 7})
    assert stored is not None
    assert stored.retry == RetryPolicy(max_attempts=7, on_exhaustion="dead_letter")


@pytest.mark.parametrize("delay", [30, 30.0, timedelta(seconds=30)])
async def test_delay_schedules_relative_to_the_clock(harness: Harness, delay: Any) -> None:
    h = harness
    stored = await h.client.enqueue("a.job", delay=delay)
    assert stored is not None
    assert stored.state is S.SCHEDULED
    assert stored.scheduled_at == h.clock.now() + timedelta(seconds=30)
    await h.tick(29)
    assert await h.state(stored.id) is S.SCHEDULED
    await h.tick(1)
    assert await h.state(stored.id) is S.AVAILABLE


async def test_scheduled_at_and_expires_at(harness: Harness) -> None:
    h = harness
    at = h.clock.now() + timedelta(hours=1)
    scheduled = await h.client.enqueue("a.job", scheduled_at=at)
    assert scheduled is not None
    assert scheduled.state is S.SCHEDULED
    assert scheduled.scheduled_at == at
    expiring = await h.client.enqueue("a.job", expires_at=timedelta(seconds=10))
    assert expiring is not None
    assert expiring.expires_at == h.clock.now() + timedelta(seconds=10)
    absolute = await h.client.enqueue("a.job", expires_at=at.isoformat())
    assert absolute is not None
    assert absolute.expires_at == at
    await h.tick(11)
    assert await h.state(expiring.id) is S.DISCARDED
    with pytest.raises(ValidationError) as info:
        await h.client.enqueue("a.job", scheduled_at=datetime(2030, 1, 1))  # naive
    assert info.value.path == "scheduled_at"
    with pytest.raises(ValidationError, match="not both"):
        await h.client.enqueue("a.job", delay=1, scheduled_at=at)
    with pytest.raises(ValidationError) as info:
        await h.client.enqueue("a.job", delay=-1)
    assert info.value.path == "delay"


async def test_client_supplied_id_and_pending_jobs(harness: Harness) -> None:
    h = harness
    job_id = "019b76da-a800-7231-ba09-a38ab6db3851"
    stored = await h.client.enqueue("a.job", id=job_id, pending=True)
    assert stored is not None
    assert stored.id == job_id
    assert stored.state is S.PENDING
    with pytest.raises(DuplicateJobError):
        await h.client.enqueue("a.job", id=job_id)
    activated = await h.client.activate(job_id)
    assert activated.state is S.AVAILABLE


async def test_unique_policies(harness: Harness) -> None:
    h = harness
    first = await h.client.enqueue("report.daily", [1], unique={"keys": ["args"]})
    assert first is not None
    with pytest.raises(DuplicateJobError) as info:
        await h.client.enqueue("report.daily", [1], unique={"keys": ["args"]})
    assert info.value.details["existing_job_id"] == first.id
    policy = UniquePolicy(keys=("type", "args"), on_conflict="ignore")
    again = await h.client.enqueue("report.daily", [1], unique=policy)
    assert again is not None
    assert again.id == first.id  # ignore: the existing job comes back
    other = await h.client.enqueue("report.daily", [2], unique=policy)
    assert other is not None
    assert other.id != first.id


async def test_enqueue_many_is_atomic(harness: Harness) -> None:
    h = harness
    jobs = await h.client.enqueue_many(
        [job("a.one", [1]), job("a.two", [2], queue="other"), job("a.three", delay=5)]
    )
    assert [(j.type, j.queue, j.state) for j in jobs if j] == [
        ("a.one", "default", S.AVAILABLE),
        ("a.two", "other", S.AVAILABLE),
        ("a.three", "default", S.SCHEDULED),
    ]
    with pytest.raises(ValidationError) as info:
        await h.client.enqueue_many([job("b.ok"), job("b.bad", priority=1000)])
    assert info.value.path == "jobs[1].priority"
    assert info.value.details["index"] == 1
    with pytest.raises(ValidationError):
        await h.client.enqueue_many([])
    counts = (await h.client.queue_stats("default")).counts
    assert counts[S.AVAILABLE] == 1
    assert counts[S.SCHEDULED] == 1


async def test_get_and_cancel(harness: Harness) -> None:
    h = harness
    stored = await h.client.enqueue("a.job")
    assert stored is not None
    cancelled = await h.client.cancel(stored.id)
    assert cancelled.state is S.CANCELLED
    assert (await h.client.get(stored.id)).state is S.CANCELLED
    with pytest.raises(ConflictError):
        await h.client.cancel(stored.id)
    with pytest.raises(NotFoundError):
        await h.client.get("019b76da-a800-7231-ba09-a38ab6db3851")


async def test_wait_returns_the_terminal_job(harness: Harness) -> None:
    h = harness
    stored = await h.client.enqueue("a.job")
    assert stored is not None
    waiter = asyncio.ensure_future(h.client.wait(stored.id, poll_interval=0.001))
    await run_one(h, result=42)
    done = await asyncio.wait_for(waiter, 5)
    assert (done.state, done.result) == (S.COMPLETED, 42)
    other = await h.client.enqueue("a.job")
    assert other is not None
    await h.client.cancel(other.id)
    assert (await h.client.wait(other.id)).state is S.CANCELLED


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"type": "Bad.Type"}, "type"),
        ({"type": "a.job", "queue": "no spaces"}, "queue"),
        ({"type": "a.job", "priority": 101}, "priority"),
        ({"type": "a.job", "id": "not-a-uuid"}, "id"),
        ({"type": "a.job", "retry": {"max_attempts": -1}}, "retry.max_attempts"),
        ({"type": "a.job", "retry": {"backoff_coefficient": 0.5}}, "retry.backoff_coefficient"),
        ({"type": "a.job", "unique": {"keys": ["nope"]}}, "unique.keys"),
        ({"type": "a.job", "timeout_ms": -5}, "timeout_ms"),
    ],
)
async def test_validation_matches_the_http_binding(kwargs: dict[str, Any], path: str) -> None:
    client = Client(MemoryBackend())
    with pytest.raises(ValidationError) as info:
        await client.enqueue(**kwargs)
    err = info.value
    assert err.path == path
    # The same request over HTTP gets the same code, status and message.
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False))
    body = job(**kwargs)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/ojs/v1/jobs", json=body)
    assert response.status_code == err.status
    wire = response.json()["error"]
    assert (wire["code"], wire["message"]) == (err.code, err.message)


async def test_args_must_be_a_sequence() -> None:
    with pytest.raises(ValidationError) as info:
        job("a.job", "not a list")
    assert info.value.path == "args"


async def test_client_over_a_backend_makes_its_own_service() -> None:
    backend = MemoryBackend()
    client = Client(backend)
    assert isinstance(client.service, JobService)
    assert client.service.backend is backend
    stored = await client.enqueue("a.job")
    assert stored is not None
    assert await backend.get_job(stored.id) == stored
    shared = JobService(backend)
    assert Client(shared).service is shared


# -- workflows ----------------------------------------------------------------------------


async def test_chain_runs_steps_in_order_with_parent_results(harness: Harness) -> None:
    h = harness
    wf = await h.client.chain(job("etl.extract"), job("etl.transform"), name="etl")
    assert wf["type"] == "chain"
    assert wf["name"] == "etl"
    assert wf["state"] == "running"
    assert [s["state"] for s in wf["steps"]] == ["available", "pending"]
    await run_one(h, result={"rows": 3})
    second = wf["steps"][1]["job_id"]
    assert (await h.job(second)).parent_results == [{"rows": 3}]
    await run_one(h, result="ok")
    done = await h.client.get_workflow(wf["id"])
    assert done["state"] == "completed"


async def test_group_and_nested_definitions(harness: Harness) -> None:
    h = harness
    wf = await h.client.chain(
        job("video.fetch"),
        group(job("video.encode", ["720p"]), job("video.encode", ["1080p"])),
        job("video.publish"),
    )
    states = [s["state"] for s in wf["steps"]]
    assert states == ["available", "pending", "pending", "pending"]
    await run_one(h)
    assert [s["state"] for s in (await h.client.get_workflow(wf["id"]))["steps"]] == [
        "completed",
        "available",
        "available",
        "pending",
    ]
    flat = await h.client.group(job("a.one"), job("a.two"))
    assert flat["type"] == "group"
    assert [s["state"] for s in flat["steps"]] == ["available", "available"]


async def test_batch_callbacks_and_cancel_workflow(harness: Harness) -> None:
    h = harness
    wf = await h.client.batch(
        [job("img.resize", [1]), job("img.resize", [2])],
        on_success=job("img.notify", ["ok"]),
        on_failure=job("img.notify", ["failed"]),
    )
    assert wf["type"] == "batch"
    assert set(wf["callbacks"]) == {"on_success", "on_failure"}
    await run_one(h)
    cancelled = await h.client.cancel_workflow(wf["id"])
    assert cancelled["state"] == "cancelled"
    with pytest.raises(ConflictError):
        await h.client.cancel_workflow(wf["id"])
    with pytest.raises(ValidationError):
        await h.client.batch([job("img.resize")])  # a batch needs a callback
    spec = batch([job("x.y")], on_complete=job("x.done"), name="n")
    assert spec == {
        "type": "batch",
        "jobs": [{"type": "x.y", "args": []}],
        "callbacks": {"on_complete": {"type": "x.done", "args": []}},
        "name": "n",
    }
    assert chain(job("a.b")) == {"type": "chain", "steps": [{"type": "a.b", "args": []}]}


# -- cron ---------------------------------------------------------------------------------


async def test_cron_register_fire_list_delete(harness: Harness) -> None:
    h = harness
    cron = await h.client.register_cron(
        "nightly-report", "0 3 * * *", "report.nightly", ["all"], queue="reports"
    )
    assert cron.name == "nightly-report"
    assert cron.next_run_at == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    assert [c.name for c in await h.client.list_crons()] == ["nightly-report"]
    h.clock.advance(3 * 3600)
    assert await h.service.run_crons() == 1
    fired = await h.service.fetch(["reports"], 1)
    assert [(j.type, j.args, j.meta["cron_name"]) for j in fired] == [
        ("report.nightly", ["all"], "nightly-report")
    ]
    disabled = await h.client.set_cron_enabled("nightly-report", False)
    assert disabled.enabled is False
    assert (await h.client.get_cron("nightly-report")).enabled is False
    removed = await h.client.delete_cron("nightly-report")
    assert removed.name == "nightly-report"
    assert await h.client.list_crons() == []
    with pytest.raises(NotFoundError):
        await h.client.delete_cron("nightly-report")
    with pytest.raises(ValidationError):
        await h.client.register_cron("bad", "not a cron", "a.job")


# -- queues and the dead letter -----------------------------------------------------------


async def test_queues_pause_resume_stats(harness: Harness) -> None:
    h = harness
    stored = await h.client.enqueue("a.job", queue="bulk")
    assert stored is not None
    assert "bulk" in [q.name for q in await h.client.list_queues()]
    paused = await h.client.pause("bulk")
    assert paused.paused is True
    assert await h.service.fetch(["bulk"], 10) == []
    stats = await h.client.queue_stats("bulk")
    assert stats.paused is True
    assert stats.counts[S.AVAILABLE] == 1
    assert (await h.client.resume("bulk")).paused is False
    assert [j.id for j in await h.service.fetch(["bulk"], 10)] == [stored.id]
    assert (await h.client.queue_stats("bulk")).counts[S.ACTIVE] == 1


async def test_dead_letter_list_retry_delete(harness: Harness) -> None:
    h = harness
    ids = []
    for n in range(2):
        stored = await h.client.enqueue(
            "a.fragile", [n], retry={"max_attempts": 1, "on_exhaustion": "dead_letter"}
        )
        assert stored is not None
        ids.append(stored.id)
        fetched = await h.service.fetch(["default"], 1)
        await h.service.nack(fetched[0].id, JobError(message="boom"))
    page = await h.client.dead_letter()
    assert page.total == 2
    assert {j.id for j in page.items} == set(ids)
    retried = await h.client.retry_dead_letter(ids[0], queue="second-chance", meta={"retry": 1})
    assert retried.state is S.AVAILABLE
    assert retried.attempt == 0
    assert retried.queue == "second-chance"
    assert retried.meta == {"retry": 1}
    await h.client.delete_dead_letter(ids[1])
    with pytest.raises(NotFoundError):
        await h.client.get(ids[1])
    assert (await h.client.dead_letter()).total == 0
    with pytest.raises(NotFoundError):
        await h.client.retry_dead_letter(ids[0])  # no longer in the dead letter


async def test_a_full_queue_raises_queue_full_error() -> None:
    """Backpressure: the client raises :class:`QueueFullError` (429 ``queue_full``) with the
    queue, its depth and bound, and the suggested wait."""
    client = Client(MemoryBackend())
    await client.set_queue_bound("mail", max_depth=1, retry_after_s=3)
    bound = await client.queue_bound("mail")
    assert bound is not None
    assert bound.max_depth == 1
    await client.enqueue("mail.send", queue="mail")
    with pytest.raises(QueueFullError) as exc:
        await client.enqueue("mail.send", queue="mail")
    assert (exc.value.queue, exc.value.depth, exc.value.bound) == ("mail", 1, 1)
    assert exc.value.retry_after_s == 3
    await client.set_queue_bound("mail", max_depth=0)
    assert await client.queue_bound("mail") is None
    await client.enqueue("mail.send", queue="mail")
