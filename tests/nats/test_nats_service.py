"""JobService over NatsBackend against a real nats-server, with the real clock.

Timers run only when a test calls ``svc.run_timers()``; a test that waits for time to pass does
so in an ``eventually`` loop (poll every 20 ms, bounded), never with a bare sleep. Counters for
queue stats are published fire-and-forget, so stats are awaited the same way.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from nats_support import (
    drain,
    events_of,
    eventually,
    fail,
    fetch_one,
    in_seconds,
    push,
    utcnow,
)

from ojs_core.backend import EventFilter
from ojs_core.errors import (
    ConflictError,
    DuplicateJobError,
    InvalidStateTransitionError,
    NotFoundError,
    ValidationError,
)
from ojs_core.ids import uuid7
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats import NatsBackend, names

S = JobState
NO_JITTER = {"jitter": False}


# -- the basic cycle ----------------------------------------------------------------------------


async def test_enqueue_fetch_ack(svc: JobService) -> None:
    job = await push(svc, "email.send", ["a@example.com"], queue="mail")
    assert job.state is S.AVAILABLE
    assert job.attempt == 0
    stored = await svc.get(job.id)
    assert stored.state is S.AVAILABLE
    assert stored.args == ["a@example.com"]

    claimed = await fetch_one(svc, "mail", worker_id="w1")
    assert claimed.id == job.id
    assert claimed.state is S.ACTIVE
    assert claimed.attempt == 1
    assert claimed.worker_id == "w1"
    assert await svc.fetch(["mail"]) == []

    done = await svc.ack(job.id, {"sent": True}, worker_id="w1")
    assert done.state is S.COMPLETED
    assert done.result == {"sent": True}
    stored = await svc.get(job.id)
    assert stored.state is S.COMPLETED
    assert stored.result == {"sent": True}
    assert stored.completed_at is not None
    assert await svc.fetch(["mail"]) == []
    with pytest.raises(InvalidStateTransitionError):
        await svc.ack(job.id)


async def test_unknown_job_is_not_found(svc: JobService) -> None:
    with pytest.raises(NotFoundError):
        await svc.get(uuid7())
    with pytest.raises(NotFoundError):
        await svc.ack(uuid7())


async def test_concurrent_fetches_get_disjoint_jobs(svc: JobService) -> None:
    ids = {(await push(svc, args=[i])).id for i in range(60)}

    async def worker(n: int) -> list[str]:
        got: list[str] = []
        while batch := await svc.fetch(["default"], count=7, worker_id=f"w{n}"):
            assert len(batch) <= 7
            got.extend(j.id for j in batch)
        return got

    per_worker = await asyncio.gather(*(worker(n) for n in range(6)))
    claimed = [jid for got in per_worker for jid in got]
    assert sorted(claimed) == sorted(ids)
    for n, got in enumerate(per_worker):
        for job in await svc.backend.get_jobs(got):
            assert job is not None
            assert job.state is S.ACTIVE
            assert job.worker_id == f"w{n}"
            assert job.attempt == 1


# -- order ----------------------------------------------------------------------------------------


async def test_priority_order_higher_first_fifo_within_priority(svc: JobService) -> None:
    rng = random.Random(1234)
    pushed: list[tuple[int, int, str]] = []
    for i in range(60):
        prio = rng.choice([-10, 0, 0, 3, 20])
        job = await push(svc, args=[i], priority=prio)
        pushed.append((-prio, i, job.id))
    expected = [jid for _, _, jid in sorted(pushed)]

    order = [j.id for j in await svc.fetch(["default"], count=25)]
    while batch := await svc.fetch(["default"], count=1):
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
    # An empty first queue falls through to the next one; unknown queues are skipped.
    assert [j.id for j in await svc.fetch(["a", "nope", "b", "c"], count=5)] == [c1.id]
    assert await svc.fetch(["a", "b", "c"]) == []


async def test_fetch_validates_queues(svc: JobService) -> None:
    with pytest.raises(ValidationError):
        await svc.fetch([])
    with pytest.raises(ValidationError) as exc:
        await svc.fetch(["ok", "Not Valid"])
    assert exc.value.path == "queues[1]"


# -- pause / resume -------------------------------------------------------------------------------


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


async def test_pausing_an_unused_queue_then_enqueueing_keeps_it_paused(svc: JobService) -> None:
    # The first enqueue into a queue adds its priority to the queue record: that must not lose
    # the pause flag set before.
    await svc.set_paused("fresh", True)
    await push(svc, queue="fresh", priority=7)
    await push(svc, queue="fresh", priority=-7)
    assert await svc.fetch(["fresh"], count=5) == []
    assert (await svc.queue_stats("fresh")).paused
    await svc.set_paused("fresh", False)
    assert len(await svc.fetch(["fresh"], count=5)) == 2


# -- scheduled jobs -------------------------------------------------------------------------------


async def test_scheduled_job_is_not_fetchable_before_its_time(svc: JobService) -> None:
    job = await push(svc, scheduled_at=in_seconds(1.0))
    assert job.state is S.SCHEDULED
    assert job.scheduled_at is not None
    assert job.enqueued_at is None
    assert await svc.run_timers() == 0
    assert await svc.fetch(["default"]) == []
    assert (await svc.get(job.id)).state is S.SCHEDULED

    async def fetched() -> Job | None:
        await svc.run_timers()
        got = await svc.fetch(["default"])
        if got:
            # Fetched at all only once its time has come.
            assert utcnow() >= job.scheduled_at, (utcnow(), job.scheduled_at)
            return got[0]
        assert (await svc.get(job.id)).state in (S.SCHEDULED, S.AVAILABLE)
        return None

    claimed = await eventually(fetched, within=10)
    assert claimed.id == job.id
    assert claimed.state is S.ACTIVE
    assert claimed.enqueued_at is not None
    assert claimed.enqueued_at >= job.scheduled_at


async def test_delay_ms_and_past_scheduled_at(svc: JobService) -> None:
    delayed = await push(svc, delay_ms=600)
    assert delayed.state is S.SCHEDULED
    past = await push(svc, scheduled_at=in_seconds(-5))
    assert past.state is S.AVAILABLE
    assert [j.id for j in await svc.fetch(["default"], count=5)] == [past.id]

    async def promoted() -> list[Job]:
        await svc.run_timers()
        return await svc.fetch(["default"])

    got = await eventually(promoted)
    assert [j.id for j in got] == [delayed.id]
    assert delayed.scheduled_at is not None
    assert utcnow() >= delayed.scheduled_at


async def test_cancelled_scheduled_job_never_becomes_available(svc: JobService) -> None:
    job = await push(svc, delay_ms=300)
    keep = await push(svc, delay_ms=300)
    await svc.cancel(job.id)

    async def kept_promoted() -> bool:
        await svc.run_timers()
        return (await svc.get(keep.id)).state is S.AVAILABLE

    await eventually(kept_promoted)
    await svc.run_timers()
    assert (await svc.get(job.id)).state is S.CANCELLED
    assert [j.id for j in await svc.fetch(["default"], count=5)] == [keep.id]


# -- retries, exhaustion, dead letter -------------------------------------------------------------


async def test_retry_backoff_retryable_then_available(svc: JobService) -> None:
    retry = {"max_attempts": 3, "initial_interval": "PT0.4S", "backoff_coefficient": 2, **NO_JITTER}
    job = await push(svc, retry=retry)

    async def run_until_available(not_before: Any) -> Job:
        async def available() -> Job | None:
            await svc.run_timers()
            current = await svc.get(job.id)
            if current.state is S.AVAILABLE:
                assert utcnow() >= not_before
                return current
            assert current.state is S.RETRYABLE
            assert await svc.fetch(["default"]) == []
            return None

        return await eventually(available)

    await fetch_one(svc, worker_id="w")
    failed = await svc.nack(job.id, fail("first"), worker_id="w")
    assert failed.state is S.RETRYABLE
    assert failed.retry_delay_ms == 400
    assert failed.next_attempt_at is not None
    assert failed.error is not None
    assert failed.error.message == "first"
    assert failed.error.attempt == 1
    assert await svc.fetch(["default"]) == []
    assert (await svc.get(job.id)).state is S.RETRYABLE

    await run_until_available(failed.next_attempt_at)
    second = await fetch_one(svc, worker_id="w")
    assert second.attempt == 2
    again = await svc.nack(job.id, fail("second"), worker_id="w")
    assert again.state is S.RETRYABLE
    assert again.retry_delay_ms == 800

    await run_until_available(again.next_attempt_at)
    third = await fetch_one(svc, worker_id="w")
    assert third.attempt == 3
    final = await svc.nack(job.id, fail("third"), worker_id="w")
    assert final.state is S.DISCARDED
    assert not final.dead_letter
    assert [e.message for e in final.errors] == ["first", "second", "third"]
    assert (await svc.dead_letter()).total == 0
    kinds = [e.type for e in await events_of(svc, "job.retrying", "job.discarded")]
    assert kinds == ["job.retrying", "job.retrying", "job.discarded"]


async def test_a_stuck_timer_pull_does_not_hold_back_local_deadlines(svc: JobService) -> None:
    """A pull on the timer consumer whose answer never comes (its consumer deleted by a reset
    while the request was in flight) must not delay a retry that this replica knows is due."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    retry = {"max_attempts": 2, "initial_interval": "PT0.2S", **NO_JITTER}
    job = await push(svc, retry=retry)
    await fetch_one(svc, worker_id="w")
    failed = await svc.nack(job.id, fail("first"), worker_id="w")
    assert failed.state is S.RETRYABLE
    never: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    backend._timer_pull = never  # type: ignore[assignment]

    async def promoted() -> bool | None:
        # Bounded: before the fix this pass waited for the stuck pull forever.
        await asyncio.wait_for(svc.run_timers(), timeout=30)
        return True if (await svc.get(job.id)).state is S.AVAILABLE else None

    assert await eventually(promoted)
    assert not never.done()
    never.cancel()


async def test_only_another_replicas_reset_announcement_clears_local_state(
    svc: JobService,
) -> None:
    """A replica's own reset announcement may come back after the next requests: it must not
    drop what they cached (a near deadline here); another replica's announcement must."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    job = await push(svc, delay_ms=30_000)

    def held() -> bool:
        return any(job_id == job.id for _, job_id in backend.timers.soon)

    async def announce(payload: bytes) -> None:
        probe = await backend.nc.subscribe("ojs.control.reset")
        await backend.nc.publish("ojs.control.reset", payload)
        await probe.next_msg(timeout=5)  # delivered to every subscription of the connection
        await probe.unsubscribe()
        for _ in range(5):  # let the backend's subscription task run its callback
            await asyncio.sleep(0)

    assert held()
    await announce(backend.mirror.instance)
    assert held()
    await announce(b"another replica")
    assert not held()


async def test_requeue_puts_job_back_at_once(svc: JobService) -> None:
    job = await push(svc)
    await fetch_one(svc, worker_id="w")
    back = await svc.nack(job.id, fail("shutting down"), worker_id="w", requeue=True)
    assert back.state is S.AVAILABLE
    assert back.attempt == 0
    again = await fetch_one(svc)
    assert again.id == job.id
    assert again.attempt == 1


async def test_dead_letter_list_retry_delete(svc: JobService) -> None:
    to_retry = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    to_delete = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    discarded = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "discard"})
    for _ in range(3):
        j = await fetch_one(svc)
        await svc.nack(j.id, fail())
    dead = await svc.get(to_retry.id)
    assert dead.state is S.DISCARDED
    assert dead.dead_letter
    assert (await svc.get(discarded.id)).state is S.DISCARDED

    page = await svc.dead_letter()
    assert page.total == 2
    assert [j.id for j in page.items] == [to_delete.id, to_retry.id]  # newest first
    assert (await svc.dead_letter(queue="other")).total == 0
    assert [j.id for j in (await svc.dead_letter(limit=1, offset=1)).items] == [to_retry.id]

    retried = await svc.retry_dead_letter(to_retry.id)
    assert retried.state is S.AVAILABLE
    assert retried.attempt == 0
    assert not retried.dead_letter
    assert [j.id for j in (await svc.dead_letter()).items] == [to_delete.id]
    again = await fetch_one(svc)
    assert again.id == to_retry.id
    assert again.attempt == 1

    await svc.delete_dead_letter(to_delete.id)
    with pytest.raises(NotFoundError):
        await svc.get(to_delete.id)
    assert (await svc.dead_letter()).total == 0
    with pytest.raises(NotFoundError):
        await svc.delete_dead_letter(to_delete.id)
    with pytest.raises(NotFoundError):
        await svc.retry_dead_letter(discarded.id)

    async def stats_settled() -> bool:
        counts = (await svc.queue_stats("default")).counts
        return counts[S.DISCARDED] == 1 and counts[S.ACTIVE] == 1

    await eventually(stats_settled)


async def test_dead_letter_retry_into_another_queue(svc: JobService) -> None:
    job = await push(svc, retry={"max_attempts": 1, "on_exhaustion": "dead_letter"})
    await fetch_one(svc)
    await svc.nack(job.id, fail())
    out = await svc.retry_dead_letter(job.id, {"queue": "rescue", "retry": {"max_attempts": 4}})
    assert out.queue == "rescue"
    assert out.max_attempts == 4
    assert await svc.fetch(["default"]) == []
    assert (await fetch_one(svc, "rescue")).id == job.id


# -- visibility, heartbeat ------------------------------------------------------------------------


async def test_visibility_timeout_makes_job_available_again(svc: JobService) -> None:
    job = await push(svc)
    claimed = await fetch_one(svc, worker_id="w1", visibility_ms=400)
    assert claimed.visible_until is not None
    assert await svc.run_timers() == 0
    assert (await svc.get(job.id)).state is S.ACTIVE

    async def back() -> Job | None:
        await svc.run_timers()
        current = await svc.get(job.id)
        return current if current.state is S.AVAILABLE else None

    returned = await eventually(back)
    assert utcnow() >= claimed.visible_until
    assert returned.worker_id is None
    assert returned.error is not None
    assert returned.error.type == "visibility_timeout"

    again = await fetch_one(svc, worker_id="w2")
    assert again.attempt == 2
    assert again.worker_id == "w2"
    with pytest.raises(ConflictError) as exc:
        await svc.ack(job.id, "late", worker_id="w1")
    assert not isinstance(exc.value, InvalidStateTransitionError)
    done = await svc.ack(job.id, "on time", worker_id="w2")
    assert done.state is S.COMPLETED


async def test_heartbeat_extends_visibility(svc: JobService) -> None:
    job = await push(svc)
    other = await push(svc)
    claimed = await svc.fetch(["default"], count=2, worker_id="w1", visibility_ms=500)
    assert [j.id for j in claimed] == [job.id, other.id]
    first_deadline = claimed[0].visible_until
    assert first_deadline is not None

    beat = await svc.heartbeat("w1", [job.id], visibility_ms=2500)
    assert beat.directive == "running"
    assert beat.extended == [job.id]
    extended = await svc.get(job.id)
    assert extended.visible_until is not None
    assert extended.visible_until > first_deadline
    # Another worker cannot extend w1's job.
    assert (await svc.heartbeat("w2", [job.id], visibility_ms=60_000)).extended == []

    async def other_back() -> bool:
        await svc.run_timers()
        return (await svc.get(other.id)).state is S.AVAILABLE

    await eventually(other_back)
    await svc.run_timers()
    assert utcnow() > first_deadline
    # The heartbeated job outlived its first deadline (its timer fired and was re-armed).
    still = await svc.get(job.id)
    assert still.state is S.ACTIVE
    assert still.worker_id == "w1"

    async def job_back() -> bool:
        await svc.run_timers()
        return (await svc.get(job.id)).state is S.AVAILABLE

    await eventually(job_back)
    assert utcnow() >= extended.visible_until


async def test_heartbeat_directives(svc: JobService) -> None:
    assert (await svc.heartbeat("w", [])).directive == "running"
    await svc.set_worker_directive("w", "quiet")
    assert (await svc.heartbeat("w", [])).directive == "quiet"
    await svc.set_worker_directive("w", "terminate")
    await svc.set_worker_directive("w", "running")  # terminate is final
    assert (await svc.heartbeat("w", [])).directive == "terminate"
    assert [w.worker_id for w in await svc.backend.list_workers()] == ["w"]


WORKER_IDS = [
    "worker 1 with spaces",
    "host/pid/42\\back",
    "wörker-ünïcode-✓-日本語-😀",
    "dots.and*stars>and\ttabs\nnewline",
    "%00 $KV.OJS_JOBS.j.x",
    "é" * 128,  # 256 bytes of UTF-8
    "é" * 129,
    "😀" * 256,  # the longest id the HTTP binding takes, 1 KiB of UTF-8
]


@pytest.mark.parametrize("worker_id", WORKER_IDS, ids=range(len(WORKER_IDS)))
async def test_worker_ids_with_arbitrary_characters(svc: JobService, worker_id: str) -> None:
    job = await push(svc)
    claimed = await fetch_one(svc, worker_id=worker_id, visibility_ms=60_000)
    assert claimed.worker_id == worker_id
    beat = await svc.heartbeat(worker_id, [job.id], visibility_ms=120_000, info={"queues": ["x"]})
    assert beat.extended == [job.id]
    assert beat.directive == "running"
    assert beat.worker.worker_id == worker_id
    stored = await svc.backend.get_worker(worker_id)
    assert stored is not None
    assert stored.worker_id == worker_id
    assert stored.active_jobs == [job.id]
    assert [w.worker_id for w in await svc.backend.list_workers()] == [worker_id]
    await svc.set_worker_directive(worker_id, "quiet")
    assert (await svc.heartbeat(worker_id, [job.id])).directive == "quiet"
    done = await svc.ack(job.id, worker_id=worker_id)
    assert done.state is S.COMPLETED


# -- unique jobs ----------------------------------------------------------------------------------


async def test_unique_reject(svc: JobService) -> None:
    unique = {"keys": ["type", "args"]}
    first = await push(svc, args=[1], unique=unique)
    with pytest.raises(DuplicateJobError) as exc:
        await push(svc, args=[1], unique=unique)
    assert exc.value.details["existing_job_id"] == first.id
    assert exc.value.details["existing_job_state"] == "available"
    second = await push(svc, args=[2], unique=unique)  # different args, different key
    got = await svc.fetch(["default"], count=5)
    assert [j.id for j in got] == [first.id, second.id]


async def test_unique_ignore_returns_existing(svc: JobService) -> None:
    unique = {"keys": ["type"], "on_conflict": "ignore"}
    first = await push(svc, unique=unique)
    outcome = await svc.enqueue({"type": "test.job", "args": [], "options": {"unique": unique}})
    assert not outcome.created
    assert outcome.job.id == first.id
    assert [j.id for j in await svc.fetch(["default"], count=5)] == [first.id]


async def test_unique_replace_cancels_existing(svc: JobService) -> None:
    unique = {"keys": ["type"], "on_conflict": "replace"}
    first = await push(svc, args=["old"], unique=unique)
    second = await push(svc, args=["new"], unique=unique)
    assert second.id != first.id
    assert (await svc.get(first.id)).state is S.CANCELLED
    assert [j.id for j in await svc.fetch(["default"], count=5)] == [second.id]


async def test_unique_key_is_free_again_once_the_holder_finished(svc: JobService) -> None:
    unique = {"keys": ["type"]}
    first = await push(svc, unique=unique)
    await svc.ack((await fetch_one(svc)).id)
    second = await push(svc, unique=unique)
    assert second.id != first.id


async def test_concurrent_unique_enqueues_store_exactly_one(svc: JobService) -> None:
    unique = {"keys": ["type"]}
    body = {"type": "only.one", "args": [], "options": {"unique": unique}}
    results = await asyncio.gather(*(svc.enqueue(body) for _ in range(10)), return_exceptions=True)
    stored = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, BaseException)]
    assert len(stored) == 1, results
    assert all(isinstance(r, DuplicateJobError) for r in rejected), rejected
    assert [j.id for j in await drain(svc, ["default"], 1)] == [stored[0].job.id]


# -- batch enqueue --------------------------------------------------------------------------------


async def test_batch_enqueue_stores_all_in_order(svc: JobService) -> None:
    outcomes = await svc.enqueue_batch(
        [{"type": "a.one", "args": [i]} for i in range(5)]
        + [{"type": "a.two", "args": [], "options": {"queue": "q"}}]
    )
    assert all(o.created for o in outcomes)
    ids = [o.job.id for o in outcomes]
    assert [j.id for j in await svc.fetch(["default", "q"], count=10)] == ids


async def test_batch_with_a_duplicate_id_inside_stores_nothing(svc: JobService) -> None:
    dup, other = uuid7(), uuid7()
    with pytest.raises(DuplicateJobError):
        await svc.enqueue_batch(
            [
                {"id": dup, "type": "a.b", "args": [1]},
                {"id": other, "type": "a.b", "args": [2]},
                {"id": dup, "type": "a.b", "args": [3]},
            ]
        )
    assert await svc.backend.get_jobs([dup, other]) == [None, None]
    assert await svc.fetch(["default"], count=10) == []
    # Nothing the failed batch left behind stands in the way of the next job.
    fresh = await push(svc)
    assert (await fetch_one(svc)).id == fresh.id
    counts = (await svc.queue_stats("default")).counts
    assert counts[S.AVAILABLE] == 0


async def test_batch_with_an_existing_id_stores_nothing(svc: JobService) -> None:
    existing = await push(svc)
    new = uuid7()
    with pytest.raises(DuplicateJobError):
        await svc.enqueue_batch(
            [{"id": new, "type": "a.b", "args": []}, {"id": existing.id, "type": "a.b", "args": []}]
        )
    assert await svc.backend.get_job(new) is None
    # The refused batch announced the existing job a second time: one pull now holds two hints
    # for it, and it must still be handed out exactly once (and the fetch must not fail).
    assert [j.id for j in await svc.fetch(["default"], count=10)] == [existing.id]
    assert await svc.fetch(["default"], count=10) == []


async def test_batch_with_unique_conflict_stores_nothing(svc: JobService) -> None:
    unique = {"keys": ["type"]}
    existing = await push(svc, "a.unique", unique=unique)
    free = uuid7()
    with pytest.raises(DuplicateJobError) as exc:
        await svc.enqueue_batch(
            [
                {"id": free, "type": "a.free", "args": []},
                {"type": "a.unique", "args": [], "options": {"unique": unique}},
            ]
        )
    assert exc.value.details["index"] == 1
    assert exc.value.details["existing_job_id"] == existing.id
    assert await svc.backend.get_job(free) is None
    assert [j.id for j in await svc.fetch(["default"], count=10)] == [existing.id]


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
    assert await svc.fetch(["default"], count=10) == []


# -- workflows ------------------------------------------------------------------------------------


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
    assert [s["state"] for s in done["steps"]] == ["completed"] * 3
    kinds = [e.type for e in await events_of(svc, "workflow.*")]
    assert kinds == ["workflow.started", "workflow.completed"]


async def test_chain_failure_cancels_remaining_steps(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "type": "chain",
            "name": "failing-chain",
            "steps": [
                {"type": "s.one", "args": [], "options": {"retry": {"max_attempts": 1}}},
                {"type": "s.two", "args": []},
            ],
        }
    )
    job = await fetch_one(svc)
    await svc.nack(job.id, fail())
    out = await svc.get_workflow(wf["id"])
    assert out["state"] == "failed"
    assert [s["state"] for s in out["steps"]] == ["discarded", "cancelled"]
    assert await svc.fetch(["default"]) == []


async def test_group_completes(svc: JobService) -> None:
    wf = await svc.create_workflow(
        {
            "type": "group",
            "name": "g",
            "jobs": [{"type": "g.a", "args": []}, {"type": "g.b", "args": []}],
        }
    )
    assert [s["state"] for s in wf["steps"]] == ["available", "available"]
    jobs = await svc.fetch(["default"], count=5)
    assert sorted(j.type for j in jobs) == ["g.a", "g.b"]
    await svc.ack(jobs[0].id, 1)
    assert (await svc.get_workflow(wf["id"]))["state"] == "running"
    await svc.ack(jobs[1].id, 2)
    assert (await svc.get_workflow(wf["id"]))["state"] == "completed"


async def test_unnamed_workflow_advances(svc: JobService) -> None:
    wf = await svc.create_workflow({"type": "chain", "steps": [{"type": "u.a"}, {"type": "u.b"}]})
    await svc.ack((await fetch_one(svc)).id, 1)
    assert (await fetch_one(svc)).parent_results == [1]
    assert (await svc.get_workflow(wf["id"]))["state"] == "running"


def _batch_workflow(fail_first: bool) -> dict[str, Any]:
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


async def test_batch_workflow_success_callbacks(svc: JobService) -> None:
    wf = await svc.create_workflow(_batch_workflow(fail_first=False))
    assert set(_callback_states(wf).values()) == {"pending"}
    for job in await svc.fetch(["default"], count=2):
        await svc.ack(job.id, job.args[0] * 10)
    assert _callback_states(await svc.get_workflow(wf["id"])) == {
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


async def test_batch_workflow_failure_callbacks(svc: JobService) -> None:
    wf = await svc.create_workflow(_batch_workflow(fail_first=True))
    first, second = await svc.fetch(["default"], count=2)
    await svc.nack(first.id, fail())
    assert _callback_states(await svc.get_workflow(wf["id"]))["on_success"] == "cancelled"
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
            "name": "c",
            "steps": [{"type": "c.a", "args": []}, {"type": "c.b", "args": []}],
        }
    )
    running = await fetch_one(svc)
    out = await svc.cancel_workflow(wf["id"])
    assert out["state"] == "cancelled"
    assert [s["state"] for s in out["steps"]] == ["active", "cancelled"]
    await svc.ack(running.id)
    assert await svc.fetch(["default"]) == []
    with pytest.raises(ConflictError):
        await svc.cancel_workflow(wf["id"])


# -- stats and events -----------------------------------------------------------------------------


async def test_queue_stats_counts_each_state(svc: JobService) -> None:
    q = "stats"
    for _ in range(4):
        await push(svc, queue=q, retry={"max_attempts": 1})
    await push(svc, queue=q, delay_ms=60_000)
    a, b, c = await svc.fetch([q], count=3)
    await svc.ack(a.id)
    await svc.nack(b.id, fail())
    await svc.cancel(c.id)
    expected = {
        S.AVAILABLE: 1,
        S.SCHEDULED: 1,
        S.ACTIVE: 0,
        S.COMPLETED: 1,
        S.DISCARDED: 1,
        S.CANCELLED: 1,
        S.RETRYABLE: 0,
        S.PENDING: 0,
    }

    async def settled() -> bool:
        return (await svc.queue_stats(q)).counts == expected

    await eventually(settled, what=f"queue stats of {q!r} == {expected}")
    other = await svc.queue_stats("default")
    assert sum(other.counts.values()) == 0
    assert not other.paused


async def test_events_by_type_job_and_sequence(svc: JobService) -> None:
    jobs = [await push(svc, args=[i]) for i in range(3)]
    for _ in jobs:
        await svc.ack((await fetch_one(svc)).id, "ok")

    completed = await svc.events(EventFilter(types=("job.completed",)))
    assert [e.type for e in completed] == ["job.completed"] * 3
    assert [e.data["job_id"] for e in completed] == [j.id for j in jobs]
    assert all(e.data["result"] == "ok" for e in completed)
    seqs = [e.seq for e in completed]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3

    after = await svc.events(EventFilter(types=("job.completed",), after=seqs[0]))
    assert [e.data["job_id"] for e in after] == [jobs[1].id, jobs[2].id]
    one = await svc.events(EventFilter(job_id=jobs[2].id))
    assert [e.type for e in one] == ["job.enqueued", "job.started", "job.completed"]
    limited = await svc.events(EventFilter(types=("job.enqueued",), limit=2))
    assert len(limited) == 2
    assert await svc.events(EventFilter(types=("job.completed",), queues=("other",))) == []


# -- names ----------------------------------------------------------------------------------------

LONG_QUEUE = ("q1." + "a-b." * 40)[:127] + "z"


async def test_queue_names_with_dots_dashes_and_128_characters(svc: JobService) -> None:
    assert len(LONG_QUEUE) == 128
    queues = ["a.b", "a-b", "a.b.c", LONG_QUEUE]
    jobs = {q: await push(svc, queue=q, priority=5) for q in queues}
    low = await push(svc, queue=LONG_QUEUE, priority=-5)
    for q in queues:
        got = await svc.fetch([q], count=5, worker_id=q)
        assert [j.id for j in got] == [jobs[q].id] + ([low.id] if q == LONG_QUEUE else [])
        assert all(j.queue == q for j in got)

    # Pausing one never pauses a look-alike.
    await svc.set_paused("a.b", True)
    more = {q: await push(svc, queue=q) for q in queues}
    assert await svc.fetch(["a.b"]) == []
    assert [j.id for j in await svc.fetch(["a-b"])] == [more["a-b"].id]
    assert [j.id for j in await svc.fetch([LONG_QUEUE])] == [more[LONG_QUEUE].id]
    listed = {q.name: q.paused for q in await svc.queues()}
    assert {"a.b", "a-b", "a.b.c", LONG_QUEUE, "default"} <= set(listed)
    assert listed["a.b"] is True
    assert listed["a-b"] is False

    async def stats_ok() -> bool:
        s = await svc.queue_stats(LONG_QUEUE)
        return s.counts[S.ACTIVE] == 3 and not s.paused

    await eventually(stats_ok)
    assert (await svc.queue_stats("a.b")).paused
    with pytest.raises(ValidationError):
        await svc.fetch([LONG_QUEUE + "x"])


async def test_a_stale_hint_never_hides_an_available_job(svc: JobService) -> None:
    # A writer that dies between publishing a ready hint and writing the record leaves a hint
    # for a job that does not exist. The next fetch must still find the job behind it.
    await push(svc)
    await svc.ack((await fetch_one(svc)).id)  # the queue and its consumer exist now
    backend: Any = svc.backend
    for _ in range(3):
        await backend.js.publish(names.ready_subject("default", 0), f"{uuid7()} 1".encode())
    job = await push(svc)
    assert [j.id for j in await svc.fetch(["default"], count=1)] == [job.id]


async def test_a_refused_batch_never_hides_the_next_job(svc: JobService) -> None:
    done = await push(svc)
    await svc.ack((await fetch_one(svc)).id)
    with pytest.raises(DuplicateJobError):
        await svc.enqueue_batch(
            [{"id": uuid7(), "type": "a.b", "args": []}, {"id": done.id, "type": "a.b", "args": []}]
        )
    job = await push(svc)
    assert [j.id for j in await svc.fetch(["default"], count=1)] == [job.id]
