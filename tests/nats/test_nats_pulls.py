"""Pulls over reusable reply subscriptions (``ojs_nats.pulls``), on a real nats-server: a
subscription serves pull after pull, concurrent pulls never share one, and one whose pull
gave up is never used again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

import nats
from ojs_nats.jetstream import ConsumerGoneError
from ojs_nats.pulls import pull_now


@pytest.fixture
async def work(nats_url: str) -> AsyncIterator[tuple[Client, str, str]]:
    """A connection, and a fresh stream with a durable pull consumer on it."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = "PULLS_" + uuid.uuid4().hex[:8].upper()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    await js.add_consumer(
        stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1)
    )
    try:
        yield nc, stream, stream.lower()
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def fill(nc: Client, subject: str, n: int) -> None:
    js = nc.jetstream()
    await asyncio.gather(*(js.publish(f"{subject}.m", str(i).encode()) for i in range(n)))


async def test_one_subscription_serves_pull_after_pull(work: tuple[Client, str, str]) -> None:
    nc, stream, subject = work
    await fill(nc, subject, 30)
    await pull_now(nc, stream, "c", 1)  # the pool's first subscription
    subs = len(nc._subs)
    got: list[bytes] = []
    for _ in range(20):
        got += [m.data for m in await pull_now(nc, stream, "c", 2)]
    assert len(nc._subs) == subs  # no subscription made or left behind
    assert len(got) == 29
    assert len(set(got)) == 29
    assert await pull_now(nc, stream, "c", 5) == []  # ended by "404 no messages": reusable
    assert len(nc._subs) == subs


async def test_concurrent_pulls_each_get_their_own_messages(
    work: tuple[Client, str, str],
) -> None:
    nc, stream, subject = work
    await fill(nc, subject, 100)
    results = await asyncio.gather(*(pull_now(nc, stream, "c", 10) for _ in range(10)))
    data = [m.data for msgs in results for m in msgs]
    assert len(data) == 100
    assert len(set(data)) == 100
    assert all(len(msgs) == 10 for msgs in results)


async def test_a_pull_that_gave_up_does_not_leave_its_subscription_to_the_next(
    work: tuple[Client, str, str],
) -> None:
    nc, stream, subject = work
    await pull_now(nc, stream, "c", 1)  # the pool holds one subscription now
    subs = len(nc._subs)
    await fill(nc, subject, 3)
    assert await pull_now(nc, stream, "c", 3, wait_s=0) == []  # gave up before any answer
    assert len(nc._subs) == subs - 1  # unsubscribed, not back in the pool
    # The next pull has its own subscription, so none of the abandoned answer. Which answer
    # that was is the server's race: it delivered the three to the abandoned subscription
    # (they come back after their ack wait: nothing now), or it found that pull's reply subject
    # already gone and dropped the request (then they are this pull's, delivered first now).
    got = await pull_now(nc, stream, "c", 3)
    if got:
        assert sorted(m.data for m in got) == [b"0", b"1", b"2"]
        assert all(m.metadata.num_delivered == 1 for m in got)


async def test_a_missing_consumer_is_reported(work: tuple[Client, str, str]) -> None:
    nc, stream, _ = work
    with pytest.raises(ConsumerGoneError):
        await pull_now(nc, stream, "nobody", 1)
