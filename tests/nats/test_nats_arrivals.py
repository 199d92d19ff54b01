"""Arrival notifications carry the records just stored, so the process whose fetch wakes
claims them without reading them back (``ojs_nats.arrivals``); a carried record that is stale
or not a record at all costs a read, never a wrong claim."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats_support import eventually

import nats
from ojs_core.ids import uuid7
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.versioning import parse_declaration
from ojs_nats import names
from ojs_nats.arrivals import Arrivals, frame, parse_count, unframe
from ojs_nats.backend import NatsBackend
from ojs_nats.records import encode_job

BackendFactory = Callable[[], Awaitable[NatsBackend]]

#: Every way a job record can be read: batched and single direct gets, and stream gets.
READS = (
    "$JS.API.DIRECT.GET.KV_OJS_JOBS",
    "$JS.API.DIRECT.GET.KV_OJS_JOBS.>",
    "$JS.API.STREAM.MSG.GET.KV_OJS_JOBS",
)


def _backend(svc: JobService) -> NatsBackend:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    return backend


async def test_a_woken_fetch_claims_the_job_without_reading_its_record(
    new_backend: BackendFactory, nats_url: str
) -> None:
    waiting = JobService(await new_backend(), arrival_poll_s=120)
    producer = JobService(await new_backend())
    await producer.enqueue({"type": "warm.up", "args": [], "queue": "carry"})
    assert len(await waiting.fetch(["carry"])) == 1
    spy = await nats.connect(nats_url)
    reads: list[str] = []

    async def seen(msg: Msg) -> None:
        reads.append(msg.subject)

    try:
        for subject in READS:
            await spy.subscribe(subject, cb=seen)
        await spy.flush()
        fetch = asyncio.ensure_future(waiting.fetch(["carry"], wait_ms=100_000))
        await eventually(lambda: _waiting(waiting), what="the long-poll waiting")
        job = (await producer.enqueue({"type": "carried", "args": [7], "queue": "carry"})).job
        got = await asyncio.wait_for(fetch, 30)
        await spy.flush()
    finally:
        await spy.close()
    assert [(j.id, j.state, j.args) for j in got] == [(job.id, JobState.ACTIVE, [7])]
    assert reads == []


async def _waiting(svc: JobService) -> bool:
    return _backend(svc).arrivals.waiting() > 0


async def test_a_stale_or_forged_carried_record_costs_a_read_not_a_wrong_claim(
    new_backend: BackendFactory,
) -> None:
    worker = JobService(await new_backend())
    producer = JobService(await new_backend())
    first = (await producer.enqueue({"type": "real", "args": [1], "queue": "forged"})).job
    second = (await producer.enqueue({"type": "real", "args": [2], "queue": "forged"})).job
    store = _backend(worker).store
    forged = attrs.evolve(first, args=["forged"])
    stored_at = _backend(producer).store.cached_job(first.id)
    assert stored_at is not None
    # A record at a revision that is not the stored one, and bytes that are no record.
    store.hear(first.id, stored_at.revision + 1000, encode_job(forged, 1))
    store.hear(second.id, 10**9, b"not a record")
    got = await worker.fetch(["forged"], count=2)
    assert sorted((j.id, j.args) for j in got) == sorted([(first.id, [1]), (second.id, [2])])
    stored = await producer.get(first.id)
    assert stored.args == [1]
    assert stored.state is JobState.ACTIVE


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[0-9a-f-]{1,36}", fullmatch=True),
            st.integers(0, 2**63),
            st.binary(max_size=64),
        ),
        max_size=8,
    )
)
def test_frames_round_trip(records: list[tuple[str, int, bytes]]) -> None:
    payload = b"".join(frame(*r) for r in records)
    assert list(unframe(payload)) == records


@given(st.binary(max_size=256))
def test_unframe_never_raises_on_arbitrary_bytes(payload: bytes) -> None:
    for job_id, revision, data in unframe(payload):
        assert isinstance(job_id, str)
        assert revision >= 0
        assert isinstance(data, bytes)


class CountingClaims(JobService):
    """Counts the claim passes of its fetches."""

    claims = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        claim = self.claiming.claim_shielded

        async def counted(*args: Any, **kwargs: Any) -> list[Job]:
            self.claims += 1
            return await claim(*args, **kwargs)

        self.claiming.claim_shielded = counted  # type: ignore[method-assign]


async def test_one_job_wakes_one_of_the_waiting_long_polls(
    new_backend: BackendFactory,
) -> None:
    # Four long-polls of one process wait on a queue; one job arrives from another process:
    # one of them is woken and claims it, the three others sleep on (no claim pass).
    waiting = CountingClaims(await new_backend(), arrival_poll_s=120)
    producer = JobService(await new_backend())
    await producer.enqueue({"type": "warm.up", "args": [], "queue": "herd"})
    assert len(await waiting.fetch(["herd"])) == 1
    fetches = [asyncio.ensure_future(waiting.fetch(["herd"], wait_ms=100_000)) for _ in range(4)]
    await eventually(lambda: _waiters(waiting, 4), what="four long-polls waiting")
    before = waiting.claims
    job = (await producer.enqueue({"type": "herd.job", "args": [], "queue": "herd"})).job
    done, pending = await asyncio.wait(fetches, return_when=asyncio.FIRST_COMPLETED, timeout=30)
    assert [j.id for f in done for j in f.result()] == [job.id]
    await eventually(lambda: _waiters(waiting, 3), what="the three others waiting again")
    assert waiting.claims - before == 1
    for fetch in pending:
        fetch.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def test_a_woken_long_poll_that_cannot_take_the_job_hands_it_on(
    new_backend: BackendFactory,
) -> None:
    # The longest waiting long-poll accepts only version 1 of the type; the job is version 2:
    # it is woken first, claims nothing, and hands the wake-up on to the one that takes it
    # (without it, that one would wait for the backstop poll, two minutes here).
    waiting = JobService(await new_backend(), arrival_poll_s=120)
    producer = JobService(await new_backend())
    await producer.enqueue({"type": "warm.up", "args": [], "queue": "handover"})
    assert len(await waiting.fetch(["handover"])) == 1
    v1 = parse_declaration({"report.build": "1.0"}, "versions")
    v2 = parse_declaration({"report.build": "2.0"}, "versions")
    old = asyncio.ensure_future(waiting.fetch(["handover"], wait_ms=100_000, versions=v1))
    await eventually(lambda: _waiters(waiting, 1), what="the first long-poll waiting")
    new = asyncio.ensure_future(waiting.fetch(["handover"], wait_ms=100_000, versions=v2))
    await eventually(lambda: _waiters(waiting, 2), what="both long-polls waiting")
    body = {"type": "report.build", "args": [], "queue": "handover", "version": "2.0"}
    job = (await producer.enqueue(body)).job
    got = await asyncio.wait_for(new, 30)
    assert [j.id for j in got] == [job.id]
    assert not old.done()
    old.cancel()
    await asyncio.gather(old, return_exceptions=True)


async def _waiters(svc: JobService, n: int) -> bool:
    return _backend(svc).arrivals.waiting() == n


def test_a_notification_without_a_count_wakes_everyone() -> None:
    assert parse_count(b"") == (None, b"")
    assert parse_count(b"x\n") == (None, b"")
    assert parse_count(b"3\n") == (3, b"")
    assert parse_count(b"2\nabc") == (2, b"abc")


async def test_a_wake_up_is_handed_on_when_its_long_poll_is_cancelled(
    new_backend: BackendFactory,
) -> None:
    # The woken long-poll is cancelled (its client went away) before it could claim: the
    # next one is woken in its place.
    waiting = CountingClaims(await new_backend(), arrival_poll_s=120)
    await waiting.enqueue({"type": "warm.up", "args": [], "queue": "gone"})
    assert len(await waiting.fetch(["gone"])) == 1
    first = asyncio.ensure_future(waiting.fetch(["gone"], wait_ms=100_000))
    await eventually(lambda: _waiters(waiting, 1), what="the first long-poll waiting")
    second = asyncio.ensure_future(waiting.fetch(["gone"], wait_ms=100_000))
    await eventually(lambda: _waiters(waiting, 2), what="both long-polls waiting")
    before = waiting.claims
    arrivals = _backend(waiting).arrivals
    arrivals._queues["gone"].wake(1)  # an arrival of one job, as heard
    first.cancel()  # before the woken long-poll runs again
    await eventually(lambda: _claimed_since(waiting, before), what="the other long-poll woken")
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)


async def _claimed_since(svc: CountingClaims, before: int) -> bool:
    return svc.claims > before


#: Pull requests for ready hints (every level, lane and shard).
HINT_PULLS = "$JS.API.CONSUMER.MSG.NEXT.OJS_READY.>"


async def _hints_left(backend: NatsBackend, queue: str) -> int:
    info = await backend.js.consumer_info(names.READY_STREAM, names.ready_consumer(queue, 0))
    return info.num_pending + info.num_ack_pending


async def test_a_woken_fetch_claims_the_job_it_is_handed_without_pulling_its_hint(
    new_backend: BackendFactory, nats_url: str
) -> None:
    # The process that stores the job hands it to its waiting long-poll, which claims it by
    # compare-and-swap alone. The hint it left is found stale by the next fetch (on the
    # stored record) and acknowledged.
    svc = JobService(await new_backend(), arrival_poll_s=120)
    await svc.enqueue({"type": "warm.up", "args": [], "queue": "named"})
    assert len(await svc.fetch(["named"])) == 1
    spy = await nats.connect(nats_url)
    pulls: list[str] = []

    async def pulled(msg: Msg) -> None:
        pulls.append(msg.subject)

    try:
        await spy.subscribe(HINT_PULLS, cb=pulled)
        await spy.flush()
        fetch = asyncio.ensure_future(svc.fetch(["named"], wait_ms=100_000))
        await eventually(lambda: _waiting(svc), what="the long-poll waiting")
        await spy.flush()
        pulls.clear()
        job = (await svc.enqueue({"type": "named.job", "args": [1], "queue": "named"})).job
        got = await asyncio.wait_for(fetch, 30)
        await spy.flush()
        assert [(j.id, j.state) for j in got] == [(job.id, JobState.ACTIVE)]
        assert pulls == []
        assert await _hints_left(_backend(svc), "named") == 1
        assert await svc.fetch(["named"]) == []  # pulls the stale hint, acks it
        await eventually(
            lambda: _no_hints(_backend(svc), "named"), what="the stale hint acknowledged"
        )
    finally:
        await spy.close()
    assert (await svc.get(job.id)).state is JobState.ACTIVE


async def test_other_processes_do_not_wake_for_a_job_handed_to_a_local_waiter(
    new_backend: BackendFactory,
) -> None:
    # Their claims would only race the handed one: the notification announces no job.
    local = CountingClaims(await new_backend(), arrival_poll_s=120)
    remote = CountingClaims(await new_backend(), arrival_poll_s=120)
    for svc in (local, remote):
        await svc.enqueue({"type": "warm.up", "args": [], "queue": "handed"})
        assert len(await svc.fetch(["handed"])) == 1
    far = asyncio.ensure_future(remote.fetch(["handed"], wait_ms=100_000))
    near = asyncio.ensure_future(local.fetch(["handed"], wait_ms=100_000))
    await eventually(lambda: _waiters(remote, 1), what="the remote long-poll waiting")
    await eventually(lambda: _waiters(local, 1), what="the local long-poll waiting")
    before = remote.claims
    arrivals = _backend(remote).arrivals
    heard = arrivals._queues["handed"].count
    job = (await local.enqueue({"type": "handed.job", "args": [], "queue": "handed"})).job
    got = await asyncio.wait_for(near, 30)
    assert [j.id for j in got] == [job.id]
    await eventually(
        lambda: arrivals._queues["handed"].count > heard, what="the notification heard"
    )
    assert remote.claims == before
    assert not far.done()
    far.cancel()
    await asyncio.gather(far, return_exceptions=True)


async def test_a_stale_looking_cached_record_is_checked_on_the_stored_one(
    new_backend: BackendFactory,
) -> None:
    # A job deleted and created again with its id starts at epoch 1 again: the version
    # cache of a replica that saw the old one must not get its new hint acked as stale.
    first = JobService(await new_backend())
    second = JobService(await new_backend())
    body = {"id": str(uuid7()), "type": "again", "args": [], "queue": "again"}
    await first.enqueue(body)
    (claimed,) = await second.fetch(["again"], worker_id="w")  # second caches it as active
    await first.ack(claimed.id, None, "w")
    assert await _backend(first).delete_job(claimed.id)
    await first.enqueue(body)  # the same id, epoch 1, available
    got = await second.fetch(["again"], worker_id="w")
    assert [j.id for j in got] == [claimed.id]


async def _no_hints(backend: NatsBackend, queue: str) -> bool:
    return await _hints_left(backend, queue) == 0


async def test_a_process_wakes_its_own_waiters_without_its_notification(
    new_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The notification never reaches the server (dropped here): the long-poll of the process
    # that stored the job is woken anyway, at once (not at the backstop poll, two minutes).
    svc = JobService(await new_backend(), arrival_poll_s=120)
    await svc.enqueue({"type": "warm.up", "args": [], "queue": "local"})
    assert len(await svc.fetch(["local"])) == 1

    async def dropped(*args: Any) -> None:
        return None

    monkeypatch.setattr(Arrivals, "_publish", staticmethod(dropped))
    fetch = asyncio.ensure_future(svc.fetch(["local"], wait_ms=100_000))
    await eventually(lambda: _waiting(svc), what="the long-poll waiting")
    job = (await svc.enqueue({"type": "local.job", "args": [], "queue": "local"})).job
    got = await asyncio.wait_for(fetch, 30)
    assert [j.id for j in got] == [job.id]


async def test_a_process_skips_its_own_notification(new_backend: BackendFactory) -> None:
    # Counted once, when sent: hearing it back would wake a second waiter for one job.
    svc = JobService(await new_backend(), arrival_poll_s=120)
    arrivals = _backend(svc).arrivals
    mark = await arrivals.mark(["own"])
    sub = arrivals._queues["own"].sub
    assert sub is not None
    heard: list[Msg] = []
    callback = sub._cb
    assert callback is not None

    async def counted(msg: Msg) -> None:
        heard.append(msg)
        await callback(msg)

    sub._cb = counted
    await svc.enqueue({"type": "own.job", "args": [], "queue": "own"})
    await eventually(lambda: heard, what="the notification heard back")
    assert await arrivals.mark(["own"]) == mark + 1


async def test_only_a_woken_fetch_takes_a_handed_job(new_backend: BackendFactory) -> None:
    # A claim of a fetch that was not woken with a job takes none: it pulls hints in order.
    backend = await new_backend()
    await backend.arrivals.mark(["order"])
    assert backend.arrivals.take() is None
