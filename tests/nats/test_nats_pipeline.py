"""Pipelined publishes: many writes in flight, each with its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats.aio.msg
import nats.errors
import nats.js.errors
import pytest

from ojs_nats import names
from ojs_nats.backend import NatsBackend
from ojs_nats.jetstream import Op, Pipeline, WrongSequenceError

BackendFactory = Callable[[], Awaitable[NatsBackend]]

STREAM = f"KV_{names.JOBS_BUCKET}"


def put(key: str, value: str, expect: int | None = None) -> Op:
    headers = {} if expect is None else {"Nats-Expected-Last-Subject-Sequence": str(expect)}
    return (f"$KV.{names.JOBS_BUCKET}.t.{key}", value.encode(), headers)


async def committer(new_backend: BackendFactory) -> Pipeline:
    backend = await new_backend()
    return Pipeline(backend.nc, backend.js)


async def test_concurrent_commits_each_get_their_sequences(
    new_backend: BackendFactory,
) -> None:
    gc = await committer(new_backend)
    results = await asyncio.gather(
        *(gc.commit([put(f"k{i}", "a", 0), put(f"m{i}", "b", 0)]) for i in range(300))
    )
    seqs = [s for r in results for s in r]
    assert len(seqs) == 600
    assert len(set(seqs)) == 600  # every op got its own stream sequence
    for r in results:
        assert r[1] == r[0] + 1  # one caller's ops stay together, in order
    backend = await new_backend()
    kv = backend.store.kv[names.JOBS_BUCKET]
    for i in (0, 150, 299):
        entry = await kv.get(f"t.k{i}")
        assert entry.value == b"a"


async def test_a_lost_race_fails_only_its_own_caller(new_backend: BackendFactory) -> None:
    gc = await committer(new_backend)
    (first,) = await gc.commit([put("x", "1", 0)])
    outcomes = await asyncio.gather(
        gc.commit([put("y", "1", 0)]),
        gc.commit([put("x", "2", 999_999)]),  # wrong expectation
        gc.commit([put("z", "1", 0)]),
        gc.commit([put("x", "3", first)]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], list)
    assert isinstance(outcomes[1], WrongSequenceError)
    assert isinstance(outcomes[2], list)
    assert isinstance(outcomes[3], list)
    kv = (await new_backend()).store.kv[names.JOBS_BUCKET]
    assert (await kv.get("t.x")).value == b"3"
    assert (await kv.get("t.y")).value == b"1"


async def test_two_writes_expecting_one_revision_cannot_both_win(
    new_backend: BackendFactory,
) -> None:
    gc = await committer(new_backend)
    (rev,) = await gc.commit([put("c", "0", 0)])
    # Two writers with the same expectation: exactly one may win.
    outcomes = await asyncio.gather(
        gc.commit([put("c", "1", rev)]),
        gc.commit([put("c", "2", rev)]),
        return_exceptions=True,
    )
    assert sum(isinstance(o, list) for o in outcomes) == 1
    assert sum(isinstance(o, WrongSequenceError) for o in outcomes) == 1


async def test_an_oversized_commit_is_refused_before_anything_is_written(
    new_backend: BackendFactory,
) -> None:
    gc = await committer(new_backend)
    with pytest.raises(ValueError, match="at most"):
        await gc.commit([put(f"o{i}", "v") for i in range(1001)])


async def test_publish_each_reports_every_outcome(new_backend: BackendFactory) -> None:
    gc = await committer(new_backend)
    (rev,) = await gc.commit([put("e", "0", 0)])
    outcomes = await gc.publish_each(
        [put("e", "1", rev + 1000), put("f", "1", 0), put("e", "2", rev)]
    )
    assert isinstance(outcomes[0], WrongSequenceError)
    assert isinstance(outcomes[1], int)
    assert isinstance(outcomes[2], int)


async def test_a_publish_nobody_acknowledges_times_out(new_backend: BackendFactory) -> None:
    backend = await new_backend()
    pipe = Pipeline(backend.nc, backend.js, wait_s=0.3)
    # A subject no stream captures gets no acknowledgement... but "no responders" at once; a
    # subject captured by a stream whose leader is gone would hang: model it with a reply that
    # never comes, by publishing to a core subscriber that stays silent.
    silent = await backend.nc.subscribe("ojs.test.silent")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await pipe.publish("ojs.test.silent", b"x", {})
    finally:
        await silent.unsubscribe()
        await pipe.close()


async def test_closing_fails_the_publishes_still_waiting(new_backend: BackendFactory) -> None:
    backend = await new_backend()
    pipe = Pipeline(backend.nc, backend.js, wait_s=30)
    silent = await backend.nc.subscribe("ojs.test.silent2")
    try:
        waiting = asyncio.ensure_future(pipe.publish("ojs.test.silent2", b"x", {}))
        await silent.next_msg(timeout=5)  # it was sent, and nobody will answer
        await pipe.close()
        with pytest.raises(nats.errors.ConnectionClosedError):
            await asyncio.wait_for(waiting, 5)
    finally:
        await silent.unsubscribe()


async def test_a_service_unavailable_answer_keeps_its_error_class(
    new_backend: BackendFactory,
) -> None:
    backend = await new_backend()
    pipe = Pipeline(backend.nc, backend.js, wait_s=5)

    async def answer_503(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(b'{"error":{"code":503,"err_code":10039,"description":"unavailable"}}')

    responder = await backend.nc.subscribe("ojs.test.busy", cb=answer_503)
    try:
        with pytest.raises(nats.js.errors.ServiceUnavailableError):
            await pipe.publish("ojs.test.busy", b"x", {})
    finally:
        await responder.unsubscribe()
        await pipe.close()
