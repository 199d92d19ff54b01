"""Arrival notifications carry the records just stored, so the process whose fetch wakes
claims them without reading them back (``ojs_nats.arrivals``); a carried record that is stale
or not a record at all costs a read, never a wrong claim."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import attrs
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats_support import eventually

import nats
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats.arrivals import frame, unframe
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
