"""JobService over MemoryBackend, driven by a ManualClock.

Time only moves through ``clock.advance``; timers and cron ticks run only when a test calls
``svc.run_timers()`` / ``svc.run_crons()``. Every test runs twice: over the plain backend, and over
one that yields to the event loop before each backend call, so that operations started together
with ``asyncio.gather`` really interleave (as they would against a networked store).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import types
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import attrs
import pytest

from ojs_core.backend import EventFilter, JobFilter
from ojs_core.clock import ManualClock
from ojs_core.errors import (
    ConflictError,
    DuplicateJobError,
    InvalidStateTransitionError,
    NotFoundError,
    ValidationError,
)
from ojs_core.ids import deterministic_uuid7
from ojs_core.model import Event, Job, JobError
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts
from ojs_memory import MemoryBackend

S = JobState
NO_JITTER = {"jitter": False}


@types.coroutine
def _yield_to_loop() -> Generator[None, None, None]:
    """Give other tasks a turn (what ``asyncio.sleep(0)`` does, without any timer)."""
    yield


class InterleavingMemoryBackend(MemoryBackend):
    """A MemoryBackend whose every public coroutine first yields to the event loop.

    Each call is still atomic (the yield happens before it), but concurrent service operations
    now interleave between backend calls, like against a networked backend.
    """

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await _yield_to_loop()
            return await attr(*args, **kwargs)

        return call


BackendFactory = Callable[[], MemoryBackend]


@pytest.fixture(params=["plain", "interleaved"])
def make_backend(request: pytest.FixtureRequest) -> BackendFactory:
    if request.param == "plain":
        return MemoryBackend
    return InterleavingMemoryBackend


@pytest.fixture
def interleaved(make_backend: BackendFactory) -> bool:
    return make_backend is InterleavingMemoryBackend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def svc(make_backend: BackendFactory, clock: ManualClock) -> JobService:
    return JobService(make_backend(), clock=clock, rng=random.Random(7))


# -- helpers ------------------------------------------------------------------------------------


async def push(
    svc: JobService,
    jtype: str = "test.job",
    args: list[Any] | None = None,
    **options: Any,
) -> Job:
    body: dict[str, Any] = {"type": jtype, "args": [] if args is None else args}
    if options:
        body["options"] = options
    outcome = await svc.enqueue(body)
    assert outcome.created
    return outcome.job


async def fetch_one(svc: JobService, queue: str = "default", **kwargs: Any) -> Job:
    jobs = await svc.fetch([queue], **kwargs)
    assert len(jobs) == 1, jobs
    return jobs[0]


async def all_jobs(svc: JobService) -> list[Job]:
    return (await svc.backend.list_jobs(JobFilter(limit=100_000))).items


async def events_of(svc: JobService, *types_: str, job_id: str | None = None) -> list[Event]:
    return await svc.events(EventFilter(types=types_, job_id=job_id, limit=10_000))


def at(clock: ManualClock, seconds: float) -> str:
    return format_ts(clock.now() + timedelta(seconds=seconds))


def fail(message: str = "boom", **kw: Any) -> JobError:
    return JobError(code=kw.pop("code", "handler_error"), message=message, **kw)


async def run_job(svc: JobService, queue: str = "default", result: Any = None) -> Job:
    job = await fetch_one(svc, queue)
    return await svc.ack(job.id, result)


# -- the basic cycle ----------------------------------------------------------------------------


async def test_enqueue_fetch_ack(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc, "email.send", ["a@example.com"], queue="mail")
    assert job.state is S.AVAILABLE
    assert job.attempt == 0
    assert job.created_at == job.enqueued_at == clock.now()

    clock.advance(1)
    claimed = await fetch_one(svc, "mail", worker_id="w1")
    assert claimed.id == job.id
    assert claimed.state is S.ACTIVE
    assert claimed.attempt == 1
    assert claimed.worker_id == "w1"
    assert claimed.started_at == clock.now()
    assert await svc.fetch(["mail"]) == []

    clock.advance(2)
    done = await svc.ack(job.id, {"sent": True}, worker_id="w1")
    assert done.state is S.COMPLETED
    assert done.result == {"sent": True}
    assert done.completed_at == clock.now()
    stored = await svc.get(job.id)
    assert stored.state is S.COMPLETED
    assert stored.result == {"sent": True}
    assert await svc.fetch(["mail"]) == []


async def test_get_unknown_job_is_not_found(svc: JobService) -> None:
    with pytest.raises(NotFoundError):
        await svc.get("019b76da-a800-7231-ba09-a38ab6db3851")


# -- fetch exclusivity and order ----------------------------------------------------------------


async def test_two_concurrent_fetches_get_disjoint_jobs(svc: JobService) -> None:
    ids = {(await push(svc)).id for _ in range(6)}
    a, b = await asyncio.gather(
        svc.fetch(["default"], count=4, worker_id="a"),
        svc.fetch(["default"], count=4, worker_id="b"),
    )
    got_a, got_b = {j.id for j in a}, {j.id for j in b}
    assert not got_a & got_b
    assert got_a | got_b == ids
    assert len(a) + len(b) == 6


async def test_200_jobs_10_fetchers_each_job_claimed_exactly_once(
    svc: JobService, interleaved: bool
) -> None:
    ids = [(await push(svc, args=[i])).id for i in range(200)]

    async def worker(n: int) -> list[str]:
        got: list[str] = []
        while batch := await svc.fetch(["default"], count=7, worker_id=f"w{n}"):
            assert len(batch) <= 7
            got.extend(j.id for j in batch)
        return got

    per_worker = await asyncio.gather(*(worker(n) for n in range(10)))
    claimed = [jid for got in per_worker for jid in got]
    assert len(claimed) == 200
    assert sorted(claimed) == sorted(ids)
    for n, got in enumerate(per_worker):
        for jid in got:
            job = await svc.get(jid)
            assert job.state is S.ACTIVE
            assert job.worker_id == f"w{n}"
            assert job.attempt == 1
    if interleaved:
        assert sum(1 for got in per_worker if got) > 1  # the fetches really overlapped
    stats = await svc.queue_stats("default")
    assert stats.counts[S.ACTIVE] == 200
    assert stats.counts[S.AVAILABLE] == 0


async def test_priority_order_higher_first_fifo_within_priority(svc: JobService) -> None:
    rng = random.Random(1234)
    pushed: list[tuple[int, int, str]] = []
    for i in range(120):
        prio = rng.choice([-10, 0, 0, 3, 10, 20])
        job = await push(svc, args=[i], priority=prio)
        pushed.append((-prio, i, job.id))
    expected = [jid for _, _, jid in sorted(pushed)]

    order = [j.id for j in await svc.fetch(["default"], count=50)]
    while True:
        batch = await svc.fetch(["default"], count=1)
        if not batch:
            break
        order.append(batch[0].id)
    assert order == expected


async def test_named_priorities_order(svc: JobService) -> None:
    low = await push(svc, priority="low")
    normal = await push(svc)
    crit = await push(svc, priority="critical")
    high = await push(svc, priority="high")
    got = [j.id for j in await svc.fetch(["default"], count=4)]
    assert got == [crit.id, high.id, normal.id, low.id]


async def test_multi_queue_fetch_goes_left_to_right(svc: JobService) -> None:
    b1 = await push(svc, queue="b", priority=100)
    a1 = await push(svc, queue="a")
    a2 = await push(svc, queue="a", priority=-5)
    c1 = await push(svc, queue="c")

    got = [j.id for j in await svc.fetch(["a", "b"], count=3)]
    assert got == [a1.id, a2.id, b1.id]
    # An empty first queue falls through to the next one.
    assert [j.id for j in await svc.fetch(["a", "b", "c"], count=5)] == [c1.id]
    assert await svc.fetch(["a", "b", "c"]) == []


async def test_fetch_validates_queues(svc: JobService) -> None:
    with pytest.raises(ValidationError):
        await svc.fetch([])
    with pytest.raises(ValidationError) as exc:
        await svc.fetch(["ok", "Not Valid"])
    assert exc.value.path == "queues[1]"


# -- pause / resume -----------------------------------------------------------------------------


async def test_paused_queue_accepts_enqueue_but_is_never_fetched(svc: JobService) -> None:
    info = await svc.set_paused("slow", True)
    assert info.paused
    job = await push(svc, queue="slow")
    assert job.state is S.AVAILABLE
    other = await push(svc)

    assert await svc.fetch(["slow"]) == []
    assert [j.id for j in await svc.fetch(["slow", "default"], count=5)] == [other.id]
    assert (await svc.queue_stats("slow")).paused
    assert {q.name: q.paused for q in await svc.queues()}["slow"] is True

    await svc.set_paused("slow", False)
    assert not (await svc.queue_stats("slow")).paused
    assert (await fetch_one(svc, "slow")).id == job.id
    kinds = [e.type for e in await events_of(svc, "queue.*")]
    assert kinds == ["queue.paused", "queue.resumed"]


# -- scheduled jobs -----------------------------------------------------------------------------


async def test_scheduled_job_is_never_fetchable_early(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc, scheduled_at=at(clock, 10))
    assert job.state is S.SCHEDULED
    assert job.enqueued_at is None
    assert await svc.fetch(["default"]) == []

    clock.advance(9.999)
    assert await svc.run_timers() == 0
    assert (await svc.get(job.id)).state is S.SCHEDULED
    assert await svc.fetch(["default"]) == []

    clock.advance(ms=1)
    assert await svc.run_timers() == 1
    promoted = await svc.get(job.id)
    assert promoted.state is S.AVAILABLE
    assert promoted.enqueued_at == clock.now()
    assert (await fetch_one(svc)).id == job.id


async def test_delay_ms_and_past_scheduled_at(svc: JobService, clock: ManualClock) -> None:
    delayed = await push(svc, delay_ms=1500)
    assert delayed.state is S.SCHEDULED
    assert delayed.scheduled_at == clock.now() + timedelta(milliseconds=1500)
    past = await push(svc, scheduled_at=at(clock, -5))
    assert past.state is S.AVAILABLE
    assert [j.id for j in await svc.fetch(["default"], count=5)] == [past.id]
    clock.advance(1.5)
    await svc.run_timers()
    assert (await fetch_one(svc)).id == delayed.id


# -- retries, exhaustion, dead letter -----------------------------------------------------------


async def test_nack_backs_off_and_is_not_fetchable_until_due(
    svc: JobService, clock: ManualClock
) -> None:
    retry = {"max_attempts": 3, "initial_interval": "PT2S", "backoff_coefficient": 2, **NO_JITTER}
    job = await push(svc, retry=retry)

    await fetch_one(svc, worker_id="w")
    failed = await svc.nack(job.id, fail("first"), worker_id="w")
    assert failed.state is S.RETRYABLE
    assert failed.retry_delay_ms == 2000
    assert failed.next_attempt_at == clock.now() + timedelta(seconds=2)
    assert failed.error is not None
    assert failed.error.message == "first"
    assert failed.error.attempt == 1
    assert failed.error.occurred_at == clock.now()
    assert await svc.fetch(["default"]) == []

    clock.advance(1.999)
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.RETRYABLE
    assert await svc.fetch(["default"]) == []

    clock.advance(ms=1)
    await svc.run_timers()
    second = await fetch_one(svc, worker_id="w")
    assert second.attempt == 2
    again = await svc.nack(job.id, fail("second"), worker_id="w")
    assert again.retry_delay_ms == 4000
    assert again.next_attempt_at == clock.now() + timedelta(seconds=4)

    clock.advance(3.999)
    await svc.run_timers()
    assert await svc.fetch(["default"]) == []
    clock.advance(ms=1)
    await svc.run_timers()
    third = await fetch_one(svc, worker_id="w")
    assert third.attempt == 3

    final = await svc.nack(job.id, fail("third"), worker_id="w")
    assert final.state is S.DISCARDED
    assert not final.dead_letter
    assert [e.message for e in final.errors] == ["first", "second", "third"]
    assert [e.attempt for e in final.errors] == [1, 2, 3]
    # on_exhaustion: discard -> not in the dead-letter listing
    assert (await svc.dead_letter()).total == 0
    kinds = [e.type for e in await events_of(svc, "job.retrying", "job.discarded")]
    assert kinds == ["job.retrying", "job.retrying", "job.discarded"]


async def test_non_retryable_error_discards_at_once(svc: JobService) -> None:
    job = await push(svc, retry={"max_attempts": 5})
    await fetch_one(svc)
    out = await svc.nack(job.id, fail(retryable=False))
    assert out.state is S.DISCARDED
    assert out.attempt == 1


async def test_requeue_puts_job_back_without_consuming_an_attempt(svc: JobService) -> None:
    job = await push(svc)
    await fetch_one(svc, worker_id="w")
    back = await svc.nack(job.id, fail("shutting down"), worker_id="w", requeue=True)
    assert back.state is S.AVAILABLE
    assert back.attempt == 0
    again = await fetch_one(svc)
    assert again.attempt == 1


async def test_exhaustion_to_dead_letter_then_retry_resets_attempt(
    svc: JobService, clock: ManualClock
) -> None:
    job = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    kept = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "discard"})
    for _ in range(2):
        j = await fetch_one(svc)
        await svc.nack(j.id, fail())
    dead = await svc.get(job.id)
    assert dead.state is S.DISCARDED
    assert dead.dead_letter
    assert (await svc.get(kept.id)).state is S.DISCARDED

    page = await svc.dead_letter()
    assert [j.id for j in page.items] == [job.id]
    assert page.total == 1
    assert (await svc.dead_letter(queue="other")).total == 0

    clock.advance(5)
    retried = await svc.retry_dead_letter(job.id)
    assert retried.state is S.AVAILABLE
    assert retried.attempt == 0
    assert not retried.dead_letter
    assert retried.enqueued_at == clock.now()
    assert len(retried.errors) == 1  # history is kept
    assert (await svc.dead_letter()).total == 0
    again = await fetch_one(svc)
    assert again.id == job.id
    assert again.attempt == 1

    # Only dead-letter jobs can be retried or deleted there.
    with pytest.raises(NotFoundError):
        await svc.retry_dead_letter(kept.id)
    with pytest.raises(NotFoundError):
        await svc.delete_dead_letter(kept.id)


async def test_dead_letter_retry_with_override(svc: JobService) -> None:
    job = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    await fetch_one(svc)
    await svc.nack(job.id, fail())
    with pytest.raises(ValidationError):
        await svc.retry_dead_letter(job.id, ["not", "an", "object"])
    with pytest.raises(ValidationError):
        await svc.retry_dead_letter(job.id, {"queue": "Not A Queue"})
    assert (await svc.get(job.id)).dead_letter  # a refused override changes nothing
    out = await svc.retry_dead_letter(job.id, {"queue": "rescue", "retry": {"max_attempts": 4}})
    assert out.queue == "rescue"
    assert out.max_attempts == 4
    assert (await fetch_one(svc, "rescue")).id == job.id


async def test_dead_letter_delete(svc: JobService) -> None:
    job = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    await fetch_one(svc)
    await svc.nack(job.id, fail())
    await svc.delete_dead_letter(job.id)
    with pytest.raises(NotFoundError):
        await svc.get(job.id)
    assert (await svc.dead_letter()).total == 0
    assert (await svc.queue_stats("default")).counts[S.DISCARDED] == 0
    with pytest.raises(NotFoundError):
        await svc.delete_dead_letter(job.id)


# -- visibility, heartbeat, execution timeout, expiry -------------------------------------------


async def test_visibility_timeout_makes_job_available_again(
    svc: JobService, clock: ManualClock
) -> None:
    job = await push(svc)
    await fetch_one(svc, worker_id="w1", visibility_ms=5000)

    clock.advance(4.999)
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.ACTIVE

    clock.advance(ms=1)
    assert await svc.run_timers() == 1
    back = await svc.get(job.id)
    assert back.state is S.AVAILABLE
    assert back.worker_id is None
    assert back.error is not None
    assert back.error.type == "visibility_timeout"

    again = await fetch_one(svc, worker_id="w2")
    assert again.attempt == 2
    assert again.worker_id == "w2"


async def test_late_ack_by_previous_worker_is_a_conflict(
    svc: JobService, clock: ManualClock
) -> None:
    job = await push(svc)
    await fetch_one(svc, worker_id="w1", visibility_ms=1000)
    clock.advance(1)
    await svc.run_timers()
    await fetch_one(svc, worker_id="w2")

    with pytest.raises(ConflictError) as exc:
        await svc.ack(job.id, "late", worker_id="w1")
    assert not isinstance(exc.value, InvalidStateTransitionError)
    with pytest.raises(ConflictError):
        await svc.nack(job.id, fail(), worker_id="w1")
    still = await svc.get(job.id)
    assert still.state is S.ACTIVE
    assert still.worker_id == "w2"

    done = await svc.ack(job.id, "on time", worker_id="w2")
    assert done.state is S.COMPLETED
    assert done.result == "on time"


async def test_visibility_timeout_with_no_attempts_left_discards(
    svc: JobService, clock: ManualClock
) -> None:
    job = await push(svc, retry={"max_attempts": 1})
    await fetch_one(svc, visibility_ms=1000)
    clock.advance(1)
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.DISCARDED


async def test_heartbeat_extends_visibility(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc)
    other = await push(svc)
    await fetch_one(svc, worker_id="w1", visibility_ms=5000)
    await fetch_one(svc, worker_id="w2", visibility_ms=5000)

    clock.advance(4)
    beat = await svc.heartbeat("w1", [job.id, other.id], visibility_ms=5000)
    assert beat.directive == "running"
    assert beat.extended == [job.id]  # w2's job is not w1's to extend
    assert beat.worker.last_seen == clock.now()

    clock.advance(4)  # 8 s after the fetch, 4 s after the heartbeat
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.ACTIVE
    assert (await svc.get(other.id)).state is S.AVAILABLE

    clock.advance(1)  # 5 s after the heartbeat
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.AVAILABLE


async def test_heartbeat_directives(svc: JobService) -> None:
    assert (await svc.heartbeat("w", [])).directive == "running"
    await svc.set_worker_directive("w", "quiet")
    assert (await svc.heartbeat("w", [])).directive == "quiet"
    await svc.set_worker_directive("w", "terminate")
    await svc.set_worker_directive("w", "running")  # terminate is final
    assert (await svc.heartbeat("w", [])).directive == "terminate"
    with pytest.raises(ValidationError):
        await svc.set_worker_directive("w", "explode")


async def test_execution_timeout_makes_job_retryable(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc, timeout_ms=3000, retry={"max_attempts": 2, **NO_JITTER})
    await fetch_one(svc, visibility_ms=60_000)

    clock.advance(2.999)
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.ACTIVE

    clock.advance(ms=1)
    assert await svc.run_timers() == 1
    out = await svc.get(job.id)
    assert out.state is S.RETRYABLE
    assert out.error is not None
    assert out.error.type == "timeout"
    assert out.error.code == "timeout"
    assert out.next_attempt_at == clock.now() + timedelta(seconds=1)


async def test_expires_at_discards_on_timer(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc, expires_at=at(clock, 10))
    scheduled = await push(svc, scheduled_at=at(clock, 20), expires_at=at(clock, 10))
    clock.advance(9.999)
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.AVAILABLE

    clock.advance(ms=1)
    assert await svc.run_timers() == 2
    for jid in (job.id, scheduled.id):
        out = await svc.get(jid)
        assert out.state is S.DISCARDED
        assert out.error is not None
        assert out.error.type == "enqueue_ttl_expired"
    assert await svc.fetch(["default"]) == []
    expired = {e.data["job_id"] for e in await events_of(svc, "job.expired")}
    assert expired == {job.id, scheduled.id}


async def test_expires_at_checked_at_fetch(svc: JobService, clock: ManualClock) -> None:
    stale = await push(svc, expires_at=at(clock, 5))
    fresh = await push(svc, expires_at=at(clock, 60))
    clock.advance(5)  # no run_timers: the fetch itself must notice
    got = await svc.fetch(["default"], count=5)
    assert [j.id for j in got] == [fresh.id]
    assert (await svc.get(stale.id)).state is S.DISCARDED
    assert [e.data["job_id"] for e in await events_of(svc, "job.expired")] == [stale.id]


# -- unique jobs --------------------------------------------------------------------------------


async def test_unique_reject(svc: JobService) -> None:
    unique = {"keys": ["type", "args"]}
    first = await push(svc, args=[1], unique=unique)
    with pytest.raises(DuplicateJobError) as exc:
        await push(svc, args=[1], unique=unique)
    assert exc.value.details["existing_job_id"] == first.id
    assert exc.value.details["existing_job_state"] == "available"
    await push(svc, args=[2], unique=unique)  # different args, different key
    assert len(await all_jobs(svc)) == 2


async def test_unique_ignore_returns_existing(svc: JobService) -> None:
    unique = {"keys": ["type"], "on_conflict": "ignore"}
    first = await push(svc, unique=unique)
    outcome = await svc.enqueue({"type": "test.job", "args": [], "options": {"unique": unique}})
    assert not outcome.created
    assert outcome.job.id == first.id
    assert len(await all_jobs(svc)) == 1


async def test_unique_replace_cancels_existing(svc: JobService) -> None:
    unique = {"keys": ["type"], "on_conflict": "replace"}
    first = await push(svc, args=["old"], unique=unique)
    second = await push(svc, args=["new"], unique=unique)
    assert second.id != first.id
    assert (await svc.get(first.id)).state is S.CANCELLED
    assert [j.args for j in await svc.fetch(["default"], count=5)] == [["new"]]


async def test_unique_period_expires(svc: JobService, clock: ManualClock) -> None:
    unique = {"keys": ["type"], "period": "PT10S"}
    await push(svc, unique=unique)
    clock.advance(9.999)
    with pytest.raises(DuplicateJobError):
        await push(svc, unique=unique)
    clock.advance(ms=1)
    await push(svc, unique=unique)
    assert len(await all_jobs(svc)) == 2


async def test_unique_states_filter(svc: JobService) -> None:
    unique = {"keys": ["type"], "states": ["available"]}
    first = await push(svc, unique=unique)
    with pytest.raises(DuplicateJobError):
        await push(svc, unique=unique)
    await fetch_one(svc)  # now active: outside the listed states
    second = await push(svc, unique=unique)
    assert second.id != first.id


async def test_unique_default_states_ignore_finished_jobs(svc: JobService) -> None:
    unique = {"keys": ["type"]}
    first = await push(svc, unique=unique)
    await run_job(svc)
    assert (await svc.get(first.id)).state is S.COMPLETED
    await push(svc, unique=unique)


# -- batch enqueue ------------------------------------------------------------------------------


async def test_batch_enqueue_stores_all(svc: JobService) -> None:
    outcomes = await svc.enqueue_batch(
        [{"type": "a.one", "args": [1]}, {"type": "a.two", "args": [2], "options": {"queue": "q"}}]
    )
    assert [o.job.type for o in outcomes] == ["a.one", "a.two"]
    assert all(o.created for o in outcomes)
    assert len(await all_jobs(svc)) == 2


async def test_batch_with_one_invalid_job_stores_nothing(svc: JobService) -> None:
    with pytest.raises(ValidationError) as exc:
        await svc.enqueue_batch(
            [
                {"type": "a.ok", "args": []},
                {"type": "a.ok", "args": [], "options": {"priority": "urgent!"}},
                {"type": "a.ok", "args": []},
            ]
        )
    assert exc.value.details["index"] == 1
    assert exc.value.details["field"] == "jobs[1].options.priority"
    assert await all_jobs(svc) == []
    assert (await svc.queue_stats("default")).counts[S.AVAILABLE] == 0
    with pytest.raises(ValidationError):
        await svc.enqueue_batch([])


async def test_batch_with_unique_conflict_stores_nothing(svc: JobService) -> None:
    unique = {"keys": ["type"]}
    existing = await push(svc, "a.unique", unique=unique)
    with pytest.raises(DuplicateJobError) as exc:
        await svc.enqueue_batch(
            [
                {"type": "a.free", "args": []},
                {"type": "a.unique", "args": [], "options": {"unique": unique}},
            ]
        )
    assert exc.value.details["index"] == 1
    assert exc.value.details["existing_job_id"] == existing.id
    assert [j.id for j in await all_jobs(svc)] == [existing.id]


async def test_batch_conflict_between_its_own_jobs(svc: JobService) -> None:
    unique = {"keys": ["type"]}
    with pytest.raises(DuplicateJobError) as exc:
        await svc.enqueue_batch(
            [
                {"type": "a.same", "args": [], "options": {"unique": unique}},
                {"type": "a.same", "args": [], "options": {"unique": unique}},
            ]
        )
    assert exc.value.details["index"] == 1
    assert await all_jobs(svc) == []


# -- workflows ----------------------------------------------------------------------------------


async def test_chain_passes_parent_results_and_completes(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "type": "chain",
            "name": "pipeline",
            "steps": [
                {"type": "etl.extract", "args": [1]},
                {"type": "etl.transform", "args": []},
                {"type": "etl.load", "args": []},
            ],
        }
    )
    assert wf["state"] == "running"
    assert wf["name"] == "pipeline"
    assert [s["state"] for s in wf["steps"]] == ["available", "pending", "pending"]

    first = await fetch_one(svc)
    assert first.type == "etl.extract"
    assert await svc.fetch(["default"]) == []  # the next step waits
    await svc.ack(first.id, {"rows": 3})

    second = await fetch_one(svc)
    assert second.type == "etl.transform"
    assert second.parent_results == [{"rows": 3}]
    await svc.ack(second.id, "transformed")

    third = await fetch_one(svc)
    assert third.type == "etl.load"
    assert third.parent_results == ["transformed"]
    await svc.ack(third.id, None)

    done = await svc.get_workflow(wf["id"])
    assert done["state"] == "completed"
    assert done["steps_completed"] == 3
    assert [s["state"] for s in done["steps"]] == ["completed"] * 3
    kinds = [e.type for e in await events_of(svc, "workflow.*")]
    assert kinds == ["workflow.started", "workflow.completed"]


async def test_chain_failure_cancels_remaining_steps(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "type": "chain",
            "steps": [
                {"type": "s.one", "args": [], "options": {"retry": {"max_attempts": 1}}},
                {"type": "s.two", "args": []},
                {"type": "s.three", "args": []},
            ],
        }
    )
    job = await fetch_one(svc)
    await svc.nack(job.id, fail())
    out = await svc.get_workflow(wf["id"])
    assert out["state"] == "failed"
    assert [s["state"] for s in out["steps"]] == ["discarded", "cancelled", "cancelled"]
    assert await svc.fetch(["default"]) == []
    assert [e.type for e in await events_of(svc, "workflow.failed")] == ["workflow.failed"]


async def test_group_completes(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {"type": "group", "jobs": [{"type": "g.a", "args": []}, {"type": "g.b", "args": []}]}
    )
    assert [s["state"] for s in wf["steps"]] == ["available", "available"]
    jobs = await svc.fetch(["default"], count=2)
    await svc.ack(jobs[0].id, 1)
    assert (await svc.get_workflow(wf["id"]))["state"] == "running"
    await svc.ack(jobs[1].id, 2)
    assert (await svc.get_workflow(wf["id"]))["state"] == "completed"


async def test_group_fails_when_a_job_fails(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "type": "group",
            "jobs": [
                {"type": "g.a", "args": [], "options": {"retry": {"max_attempts": 1}}},
                {"type": "g.b", "args": []},
            ],
        }
    )
    a, b = await svc.fetch(["default"], count=2)
    await svc.nack(a.id, fail())
    assert (await svc.get_workflow(wf["id"]))["state"] == "running"  # b still runs
    await svc.ack(b.id)
    out = await svc.get_workflow(wf["id"])
    assert out["state"] == "failed"
    assert out["failed_count"] == 1


def _batch(fail_first: bool) -> dict[str, Any]:
    retry = {"retry": {"max_attempts": 1}}
    return {
        "type": "batch",
        "name": "b",
        "jobs": [
            {"type": "b.work", "args": [1], "options": retry if fail_first else {}},
            {"type": "b.work", "args": [2]},
        ],
        "callbacks": {
            "on_success": {"type": "b.success", "args": []},
            "on_failure": {"type": "b.failure", "args": []},
            "on_complete": {"type": "b.complete", "args": []},
        },
    }


def _callback_states(wf: dict[str, Any]) -> dict[str, str]:
    return {name: step["state"] for name, step in wf["callbacks"].items()}


async def test_batch_success_runs_on_success_and_on_complete(svc: JobService) -> None:
    wf = await svc.create_workflow(_batch(fail_first=False))
    assert _callback_states(wf) == {
        "on_success": "pending",
        "on_failure": "pending",
        "on_complete": "pending",
    }
    for job in await svc.fetch(["default"], count=2):
        await svc.ack(job.id, job.args[0] * 10)
    mid = await svc.get_workflow(wf["id"])
    assert _callback_states(mid) == {
        "on_success": "available",
        "on_failure": "cancelled",
        "on_complete": "available",
    }
    callbacks = await svc.fetch(["default"], count=5)
    assert sorted(j.type for j in callbacks) == ["b.complete", "b.success"]
    assert all(sorted(j.parent_results or []) == [10, 20] for j in callbacks)
    for job in callbacks:
        await svc.ack(job.id)
    assert (await svc.get_workflow(wf["id"]))["state"] == "completed"


async def test_batch_failure_runs_on_failure_and_on_complete(svc: JobService) -> None:
    wf = await svc.create_workflow(_batch(fail_first=True))
    first, second = await svc.fetch(["default"], count=2)
    await svc.nack(first.id, fail())
    # on_success can never run now; on_failure waits for every job to finish.
    assert _callback_states(await svc.get_workflow(wf["id"]))["on_success"] == "cancelled"
    assert _callback_states(await svc.get_workflow(wf["id"]))["on_failure"] == "pending"
    await svc.ack(second.id)
    assert _callback_states(await svc.get_workflow(wf["id"])) == {
        "on_success": "cancelled",
        "on_failure": "available",
        "on_complete": "available",
    }
    callbacks = await svc.fetch(["default"], count=5)
    assert sorted(j.type for j in callbacks) == ["b.complete", "b.failure"]
    for job in callbacks:
        await svc.ack(job.id)
    assert (await svc.get_workflow(wf["id"]))["state"] == "completed"


async def test_cancel_workflow(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "type": "chain",
            "steps": [{"type": "c.a", "args": []}, {"type": "c.b", "args": []}],
        }
    )
    running = await fetch_one(svc)
    out = await svc.cancel_workflow(wf["id"])
    assert out["state"] == "cancelled"
    assert [s["state"] for s in out["steps"]] == ["active", "cancelled"]
    # The running step may still finish; nothing after it starts.
    await svc.ack(running.id)
    after = await svc.get_workflow(wf["id"])
    assert after["state"] == "cancelled"
    assert [s["state"] for s in after["steps"]] == ["completed", "cancelled"]
    assert await svc.fetch(["default"]) == []
    with pytest.raises(ConflictError):
        await svc.cancel_workflow(wf["id"])
    with pytest.raises(NotFoundError):
        await svc.cancel_workflow("019b76da-a800-7231-ba09-a38ab6db3851")


async def test_dag_workflow_from_sdk_steps(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "name": "dag",
            "steps": [
                {"id": "fetch", "type": "d.fetch", "args": []},
                {"id": "left", "type": "d.left", "args": [], "depends_on": ["fetch"]},
                {"id": "right", "type": "d.right", "args": [], "depends_on": ["fetch"]},
                {"id": "join", "type": "d.join", "args": [], "depends_on": ["left", "right"]},
            ],
        }
    )
    assert wf["type"] == "dag"
    assert [s["id"] for s in wf["steps"]] == ["fetch", "left", "right", "join"]
    await run_job(svc, result="f")
    mids = await svc.fetch(["default"], count=5)
    assert sorted(j.type for j in mids) == ["d.left", "d.right"]
    for job in mids:
        await svc.ack(job.id, job.type)
    join = await fetch_one(svc)
    assert join.type == "d.join"
    assert sorted(join.parent_results or []) == ["d.left", "d.right"]
    await svc.ack(join.id)
    assert (await svc.get_workflow(wf["id"]))["state"] == "completed"


async def test_non_string_callback_type_is_ignored(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "steps": [
                {"id": "a", "type": "x.a"},
                {
                    "id": "b",
                    "type": "x.b",
                    "depends_on": ["a"],
                    "options": {"callback_type": ["on_failure"]},
                },
            ]
        }
    )
    assert "callbacks" not in wf  # b is an ordinary step, run after a succeeds
    await run_job(svc)
    assert (await fetch_one(svc)).type == "x.b"


async def test_group_completion_and_failure_emit_workflow_events(svc: JobService) -> None:
    ok = await svc.create_workflow({"type": "group", "jobs": [{"type": "g.ok", "args": []}]})
    await run_job(svc)
    bad = await svc.create_workflow(
        {
            "type": "group",
            "jobs": [{"type": "g.bad", "args": [], "options": {"retry": {"max_attempts": 1}}}],
        }
    )
    job = await fetch_one(svc)
    await svc.nack(job.id, fail())
    events = await events_of(svc, "workflow.completed", "workflow.failed")
    assert [(e.type, e.data["workflow_id"]) for e in events] == [
        ("workflow.completed", ok["id"]),
        ("workflow.failed", bad["id"]),
    ]


# -- cron ---------------------------------------------------------------------------------------

CRON = {"name": "every-minute", "expression": "* * * * *", "job_template": {"type": "c.tick"}}


async def test_cron_fires_exactly_once_per_tick(svc: JobService, clock: ManualClock) -> None:
    cron, created = await svc.register_cron(CRON)
    assert created
    tick = clock.now() + timedelta(minutes=1)
    assert cron.next_run_at == tick
    assert await svc.run_crons() == 0

    clock.advance(59.999)
    assert await svc.run_crons() == 0
    assert await all_jobs(svc) == []

    clock.advance(ms=1)
    assert await svc.run_crons() == 1
    assert await svc.run_crons() == 0  # same instant again: nothing new
    jobs = await all_jobs(svc)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.type == "c.tick"
    assert job.meta["cron_name"] == "every-minute"
    assert job.meta["cron_triggered_at"] == format_ts(tick)
    assert job.id == deterministic_uuid7(
        int(tick.timestamp() * 1000), "every-minute", format_ts(tick)
    )

    entry = await svc.get_cron("every-minute")
    assert entry.run_count == 1
    assert entry.last_run_at == tick
    assert entry.last_job_id == job.id
    assert entry.next_run_at == tick + timedelta(minutes=1)


async def test_cron_replayed_tick_is_deduplicated_by_job_id(
    svc: JobService, clock: ManualClock
) -> None:
    await svc.register_cron(CRON)
    clock.advance(60)
    assert await svc.run_crons() == 1
    job = (await all_jobs(svc))[0]
    await run_job(svc)  # not an overlap: the first job is finished
    tick = clock.now()

    # A replica with a stale view fires the same tick again: the id collides, no second job.
    await svc.backend.update_cron(
        "every-minute", lambda c: attrs.evolve(c, next_run_at=tick, last_job_id=None)
    )
    assert await svc.run_crons() == 0
    assert [j.id for j in await all_jobs(svc)] == [job.id]
    entry = await svc.get_cron("every-minute")
    assert entry.next_run_at == tick + timedelta(minutes=1)
    assert entry.last_job_id == job.id


async def test_cron_overlap_skip_while_previous_is_active(
    svc: JobService, clock: ManualClock
) -> None:
    await svc.register_cron({**CRON, "overlap_policy": "skip"})
    clock.advance(60)
    assert await svc.run_crons() == 1
    first = await fetch_one(svc)

    clock.advance(60)
    assert await svc.run_crons() == 0
    assert len(await all_jobs(svc)) == 1
    skipped = await events_of(svc, "cron.skipped")
    assert len(skipped) == 1
    assert skipped[0].data["reason"] == "overlap_skip"
    assert skipped[0].data["active_job_id"] == first.id
    entry = await svc.get_cron("every-minute")
    assert entry.next_run_at == clock.now() + timedelta(minutes=1)
    assert entry.run_count == 1

    await svc.ack(first.id)
    clock.advance(60)
    assert await svc.run_crons() == 1
    assert len(await all_jobs(svc)) == 2


async def test_two_replicas_sharing_one_backend_fire_a_tick_once(
    make_backend: BackendFactory, clock: ManualClock
) -> None:
    backend = make_backend()
    one = JobService(backend, clock=clock)
    two = JobService(backend, clock=clock)
    await one.register_cron(CRON)

    clock.advance(60)
    fired = await asyncio.gather(one.run_crons(), two.run_crons())
    assert sorted(fired) == [0, 1]
    jobs = await all_jobs(one)
    assert len(jobs) == 1
    entry = await two.get_cron("every-minute")
    assert entry.run_count == 1
    assert entry.last_job_id == jobs[0].id
    assert len(await events_of(one, "cron.triggered")) == 1

    # The next tick still sees the first job as the active previous one: skipped on both.
    clock.advance(60)
    assert await asyncio.gather(one.run_crons(), two.run_crons()) == [0, 0]
    assert len(await all_jobs(one)) == 1


async def test_cron_register_update_disable_delete(svc: JobService, clock: ManualClock) -> None:
    _, created = await svc.register_cron(CRON)
    assert created
    cron, created = await svc.register_cron({**CRON, "expression": "*/5 * * * *"})
    assert not created
    assert cron.expression == "*/5 * * * *"
    assert [c.name for c in await svc.crons()] == ["every-minute"]

    await svc.set_cron_enabled("every-minute", False)
    clock.advance(600)
    assert await svc.run_crons() == 0
    enabled = await svc.set_cron_enabled("every-minute", True)
    assert enabled.next_run_at is not None
    assert enabled.next_run_at > clock.now()

    await svc.delete_cron("every-minute")
    assert await svc.crons() == []
    with pytest.raises(NotFoundError):
        await svc.delete_cron("every-minute")
    with pytest.raises(NotFoundError):
        await svc.get_cron("every-minute")


async def test_cron_sdk_shape_and_validation(svc: JobService) -> None:
    cron, _ = await svc.register_cron(
        {"name": "sdk", "cron": "0 * * * *", "type": "c.sdk", "args": [1], "timezone": "UTC"}
    )
    assert cron.job_template["type"] == "c.sdk"
    assert cron.job_template["args"] == [1]
    for bad in (
        {"name": "x", "expression": "not cron", "job_template": {"type": "c.x"}},
        {"name": "x", "expression": "* * * * *", "job_template": {"type": "Bad Type"}},
        {"name": "x", "expression": "* * * * *", "timezone": "+02:00", "type": "c.x"},
        {"name": "x", "expression": "0 0 30 2 *", "type": "c.x"},  # February 30: never fires
        {"name": "x", "expression": "@every 0.0000000001ns", "type": "c.x"},
        {"name": "x", "expression": "* * * * *", "type": "c.x", "overlap_policy": ["skip"]},
    ):
        with pytest.raises(ValidationError):
            await svc.register_cron(bad)
    assert [c.name for c in await svc.crons()] == ["sdk"]


# -- events, stats, reset, illegal transitions --------------------------------------------------


async def test_events_carry_job_fields(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc, "ev.job", queue="events")
    await fetch_one(svc, "events", worker_id="w")
    clock.advance(1.5)
    await svc.ack(job.id, "ok")

    events = await events_of(svc, "job.*", job_id=job.id)
    assert [e.type for e in events] == ["job.enqueued", "job.started", "job.completed"]
    for e in events:
        assert e.data["job_id"] == job.id
        assert e.data["job_type"] == "ev.job"
        assert e.data["queue"] == "events"
        assert e.subject == job.id
    assert [e.data["attempt"] for e in events] == [0, 1, 1]
    assert events[1].data["worker_id"] == "w"
    assert events[2].data["duration_ms"] == 1500
    assert events[2].data["result"] == "ok"
    assert [e.seq for e in events] == sorted(e.seq for e in events)

    later = await svc.events(EventFilter(after=events[0].seq, job_id=job.id))
    assert [e.type for e in later] == ["job.started", "job.completed"]
    assert await svc.events(EventFilter(queues=("nowhere",))) == []
    assert [e.type for e in await events_of(svc, "job.completed")] == ["job.completed"]


async def test_queue_stats_counts_each_state(svc: JobService, clock: ManualClock) -> None:
    q = "stats"
    one_try = {"max_attempts": 1}
    await push(svc, queue=q, scheduled_at=at(clock, 60))  # scheduled
    done = await push(svc, queue=q)
    retrying = await push(svc, queue=q, retry={"max_attempts": 3})
    dead = await push(svc, queue=q, retry=one_try)
    active = await push(svc, queue=q)
    cancelled = await push(svc, queue=q)
    available = await push(svc, queue=q)

    await svc.cancel(cancelled.id)
    got = {j.id: j for j in await svc.fetch([q], count=4)}
    assert set(got) == {done.id, retrying.id, dead.id, active.id}
    await svc.ack(done.id)
    await svc.nack(retrying.id, fail())
    await svc.nack(dead.id, fail())

    stats = await svc.queue_stats(q)
    assert stats.name == q
    assert not stats.paused
    assert stats.counts == {
        S.SCHEDULED: 1,
        S.AVAILABLE: 1,
        S.PENDING: 0,
        S.ACTIVE: 1,
        S.COMPLETED: 1,
        S.RETRYABLE: 1,
        S.CANCELLED: 1,
        S.DISCARDED: 1,
    }
    assert (await svc.get(available.id)).state is S.AVAILABLE
    assert sum((await svc.queue_stats("default")).counts.values()) == 0
    with pytest.raises(ValidationError):
        await svc.queue_stats("Bad Queue")


async def test_reset_clears_everything(svc: JobService, clock: ManualClock) -> None:
    job = await push(svc, queue="q")
    await svc.set_paused("q", True)
    await svc.register_cron(CRON)
    wf = await svc.create_workflow({"type": "chain", "steps": [{"type": "w.a", "args": []}]})
    await svc.heartbeat("w1", [])
    assert await svc.events(EventFilter())

    await svc.reset()

    with pytest.raises(NotFoundError):
        await svc.get(job.id)
    with pytest.raises(NotFoundError):
        await svc.get_workflow(wf["id"])
    assert await svc.crons() == []
    assert await all_jobs(svc) == []
    assert [(q.name, q.paused) for q in await svc.queues()] == [("default", False)]
    assert not (await svc.queue_stats("q")).paused
    assert sum((await svc.queue_stats("q")).counts.values()) == 0
    assert await svc.events(EventFilter()) == []
    assert await svc.backend.list_workers() == []
    clock.advance(3600)
    assert await svc.run_crons() == 0
    assert await svc.run_timers() == 0
    # Usable again straight away.
    again = await push(svc, queue="q")
    assert (await fetch_one(svc, "q")).id == again.id


async def test_ack_of_an_available_job_is_an_invalid_transition(svc: JobService) -> None:
    job = await push(svc)
    with pytest.raises(InvalidStateTransitionError) as exc:
        await svc.ack(job.id)
    assert exc.value.current == "available"
    assert exc.value.attempted == "completed"
    with pytest.raises(InvalidStateTransitionError):
        await svc.nack(job.id, fail())
    assert (await svc.get(job.id)).state is S.AVAILABLE


async def test_cancel_rules(svc: JobService) -> None:
    job = await push(svc)
    before, after = await svc.cancel(job.id)
    assert before.state is S.AVAILABLE
    assert after.state is S.CANCELLED
    assert await svc.fetch(["default"]) == []
    with pytest.raises(InvalidStateTransitionError):
        await svc.cancel(job.id)
    done = await push(svc)
    await run_job(svc)
    with pytest.raises(InvalidStateTransitionError):
        await svc.cancel(done.id)
    with pytest.raises(NotFoundError):
        await svc.ack("019b76da-a800-7231-ba09-a38ab6db3851")


async def test_pending_job_activation(svc: JobService) -> None:
    job = await push(svc, pending=True)
    assert job.state is S.PENDING
    assert await svc.fetch(["default"]) == []
    _, active = await svc.activate(job.id)
    assert active.state is S.AVAILABLE
    assert (await fetch_one(svc)).id == job.id
    with pytest.raises(ConflictError):
        await svc.activate(job.id)


# -- regressions for input that used to crash (500) instead of failing validation ---------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"delay_ms": 10**30}, id="delay_ms-overflow"),
        pytest.param({"scheduled_at": "+P99999999999D"}, id="relative-time-overflow"),
        pytest.param({"retry": {"initial_interval": 1e308}}, id="interval-seconds-overflow"),
        pytest.param({"retry": {"initial_interval": -1}}, id="negative-interval-seconds"),
        pytest.param({"unique": {"on_conflict": ["reject"]}}, id="on_conflict-not-a-string"),
    ],
)
async def test_out_of_range_options_are_validation_errors(
    svc: JobService, options: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        await svc.enqueue({"type": "x.y", "args": [], "options": options})
    assert await all_jobs(svc) == []


async def test_unique_period_beyond_the_duration_bound_is_refused(svc: JobService) -> None:
    # Durations are bounded at validation (100 years): a later instant would overflow.
    with pytest.raises(ValidationError) as err:
        await push(svc, unique={"keys": ["type"], "period": "P99999999999D"})
    assert err.value.path == "options.unique.period"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"steps": [{"id": "a", "type": "x.a", "depends_on": [["a"]]}]}, id="dep"),
        pytest.param({"steps": [{"id": "a", "type": "x.a", "options": 5}]}, id="dag-options"),
        pytest.param({"type": "chain", "steps": [{"type": "x.a", "options": 5}]}, id="options"),
    ],
)
async def test_malformed_workflows_are_validation_errors(
    svc: JobService, body: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        await svc.create_workflow(body)
    assert await all_jobs(svc) == []


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"visibility_timeout_ms": 10**15}, id="visibility"),
        pytest.param({"timeout_ms": 10**15}, id="timeout"),
    ],
)
async def test_huge_job_timeouts_are_rejected_or_work(
    svc: JobService, options: dict[str, Any]
) -> None:
    try:
        job = await push(svc, **options)
    except ValidationError:
        return  # rejecting the value up front is fine
    claimed = await fetch_one(svc)
    assert claimed.id == job.id
