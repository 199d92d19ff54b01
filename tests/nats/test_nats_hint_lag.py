"""A fetch right after an enqueue through the same replica finds the job although nats-server
may not have counted its hint for the queue's consumer yet (seen: a no-wait pull answered "no
messages" while the hint was stored and the consumer's pending count was 1 a moment later),
and the look again that this costs is paid only then.

The lag is nats-server's; the tests make chosen no-wait pulls come back empty, as they do in
that moment, on a real server with the real hints stored."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.msg import Msg

import nats
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats import names, ready


def _pulls(monkeypatch: pytest.MonkeyPatch, miss: dict[str, int]) -> list[str]:
    """Count the no-wait pulls by consumer; the first ``miss[consumer]`` of a consumer answer
    nothing, as nats-server does before its consumer counted a message it stored."""
    real = ready.pull_now
    seen: list[str] = []

    async def pull_now(nc: Any, stream: str, consumer: str, *args: Any, **kw: Any) -> list[Msg]:
        seen.append(consumer)
        if miss.get(consumer, 0) > 0:
            miss[consumer] -= 1
            return []
        return await real(nc, stream, consumer, *args, **kw)

    monkeypatch.setattr(ready, "pull_now", pull_now)
    return seen


LEVEL0 = names.ready_consumer("lag", 0)


async def test_a_fetch_right_after_a_local_enqueue_finds_the_uncounted_hint(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})).job
    pulls = _pulls(monkeypatch, {LEVEL0: 2})
    got = await svc.fetch(["lag"], worker_id="w")
    assert [(j.id, j.state) for j in got] == [(job.id, JobState.ACTIVE)]
    assert pulls == [LEVEL0] * 3  # the miss, a second one, then the hint


async def test_an_empty_queue_answers_at_once_once_its_hint_was_pulled(
    svc: JobService, nats_url: str
) -> None:
    job = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})).job
    assert [j.id for j in await svc.fetch(["lag"], worker_id="w")] == [job.id]
    # Every pull request the server gets for the level, whatever its kind.
    spy = await nats.connect(nats_url)
    requests: list[bytes] = []

    async def heard(msg: Msg) -> None:
        requests.append(msg.data)

    try:
        await spy.subscribe(names.consumer_next_subject(names.READY_STREAM, LEVEL0), cb=heard)
        await spy.flush()
        assert await svc.fetch(["lag"], worker_id="w") == []
        await spy.flush()
        assert len(requests) == 1  # no look again: the last local hint was found
    finally:
        await spy.close()


async def test_a_fetch_that_claimed_a_job_does_not_wait_on_another_level(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})
    high = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag", "priority": 5})).job
    pulls = _pulls(monkeypatch, {LEVEL0: 1})
    got = await svc.fetch(["lag"], count=2, worker_id="w")
    assert [j.id for j in got] == [high.id]  # not held back by a look again at priority 0
    assert pulls.count(LEVEL0) == 1


async def test_a_hint_stored_long_ago_costs_no_look_again(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ojs_nats.queues.HINT_LAG_S", 0.0)  # every hint is old at once
    await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})
    pulls = _pulls(monkeypatch, {LEVEL0: 1})
    assert await svc.fetch(["lag"], worker_id="w") == []  # the lag's miss, not looked into
    assert pulls == [LEVEL0]


async def _new_hint_behind_a_stale_one(
    svc: JobService, monkeypatch: pytest.MonkeyPatch, script: dict[int, str]
) -> list[str]:
    """Enqueue a job and cancel it, then enqueue another; the no-wait pulls follow ``script``
    (by call number: ``"miss"`` answers nothing, the newer hint not counted yet; ``"older"``
    pulls one hint, the older one alone; any other call pulls for real). The ids the fetch
    got, and the newer job's id last."""
    old = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})).job
    await svc.cancel(old.id)
    new = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})).job
    real = ready.pull_now
    calls: list[int] = []

    async def pull_now(nc: Any, stream: str, consumer: str, batch: int, **kw: Any) -> list[Msg]:
        calls.append(batch)
        step = script.get(len(calls))
        if step == "miss":
            return []
        return await real(nc, stream, consumer, 1 if step == "older" else batch, **kw)

    monkeypatch.setattr(ready, "pull_now", pull_now)
    got = await svc.fetch(["lag"], worker_id="w")
    return [j.id for j in got] + [new.id]


async def test_a_stale_hint_found_first_does_not_end_the_look_again(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first pull finds only the older hint; the newer one is not counted yet next.
    *got, new = await _new_hint_behind_a_stale_one(svc, monkeypatch, {1: "older", 2: "miss"})
    assert got == [new]


async def test_a_bulk_fetch_after_a_miss_gets_every_job(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [
        (await svc.enqueue({"type": "lag.job", "args": [i], "queue": "lag"})).job for i in range(3)
    ]
    _pulls(monkeypatch, {LEVEL0: 1})
    got = await svc.fetch(["lag"], count=3, worker_id="w")
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)


async def test_an_older_hint_found_by_a_look_again_keeps_looking_for_the_new_one(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = {1: "miss", 2: "older", 3: "miss"}
    *got, new = await _new_hint_behind_a_stale_one(svc, monkeypatch, script)
    assert got == [new]
