"""A fetch right after an enqueue through the same replica finds the job although nats-server
may not have counted its hint for the queue's consumer yet (seen: a no-wait pull answered "no
messages" while the hint was stored and the consumer's pending count was 1 a moment later).

The lag is nats-server's; the tests make the first no-wait pull of a fetch come back empty, as
it does in that moment, on a real server with the real hint stored."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.msg import Msg

from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats import ready


def _first_pull_empty(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next no-wait pull answer nothing, as nats-server does before its consumer
    counted a message it stored; the list counts the pulls held afterwards."""
    real_now, real_held = ready.pull_now, ready.pull_held
    missed: list[bool] = []
    held: list[int] = []

    async def pull_now(*args: Any, **kwargs: Any) -> list[Msg]:
        if not missed:
            missed.append(True)
            return []
        return await real_now(*args, **kwargs)

    async def pull_held(*args: Any, **kwargs: Any) -> list[Msg]:
        held.append(1)
        return await real_held(*args, **kwargs)

    monkeypatch.setattr(ready, "pull_now", pull_now)
    monkeypatch.setattr(ready, "pull_held", pull_held)
    return held


async def test_a_fetch_right_after_a_local_enqueue_waits_for_the_uncounted_hint(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})).job
    held = _first_pull_empty(monkeypatch)
    got = await svc.fetch(["lag"], worker_id="w")
    assert [(j.id, j.state) for j in got] == [(job.id, JobState.ACTIVE)]
    assert held == [1]


async def test_an_empty_queue_costs_no_held_pull(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = (await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})).job
    assert [j.id for j in await svc.fetch(["lag"], worker_id="w")] == [job.id]
    held = _first_pull_empty(monkeypatch)
    # Its hint was taken: the next empty pull checks once (the hint was stored a moment ago),
    # and after that an empty queue answers at once.
    assert await svc.fetch(["lag"], worker_id="w") == []
    assert await svc.fetch(["lag"], worker_id="w") == []
    assert await svc.fetch(["lag"], worker_id="w") == []
    assert len(held) <= 1


async def test_a_hint_stored_long_ago_costs_no_held_pull(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ojs_nats.queues.HINT_LAG_S", 0.0)  # every hint is old at once
    await svc.enqueue({"type": "lag.job", "args": [], "queue": "lag"})
    held = _first_pull_empty(monkeypatch)
    assert await svc.fetch(["lag"], worker_id="w") == []  # the lag's miss, not waited for
    assert held == []
