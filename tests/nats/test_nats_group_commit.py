"""The group committer: concurrent writers share atomic batches without sharing their fates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ojs_nats import names
from ojs_nats.backend import NatsBackend
from ojs_nats.jetstream import GroupCommitter, Op, WrongSequenceError

BackendFactory = Callable[[], Awaitable[NatsBackend]]

STREAM = f"KV_{names.JOBS_BUCKET}"


def put(key: str, value: str, expect: int | None = None) -> Op:
    headers = {} if expect is None else {"Nats-Expected-Last-Subject-Sequence": str(expect)}
    return (f"$KV.{names.JOBS_BUCKET}.t.{key}", value.encode(), headers)


async def committer(new_backend: BackendFactory) -> GroupCommitter:
    backend = await new_backend()
    return GroupCommitter(backend.nc, backend.js, max_inflight=1)


async def test_concurrent_commits_share_batches_and_each_gets_its_sequences(
    new_backend: BackendFactory,
) -> None:
    gc = await committer(new_backend)
    results = await asyncio.gather(
        *(gc.commit(STREAM, [put(f"k{i}", "a", 0), put(f"m{i}", "b", 0)]) for i in range(300))
    )
    assert gc.batches_sent < 30  # merged: far fewer acknowledged requests than callers
    seqs = [s for r in results for s in r]
    assert len(seqs) == 600
    assert len(set(seqs)) == 600  # every op got its own stream sequence
    for r in results:
        assert r[1] == r[0] + 1  # one caller's ops stay together, in order
    backend = await new_backend()
    kv = backend._kv[names.JOBS_BUCKET]
    for i in (0, 150, 299):
        entry = await kv.get(f"t.k{i}")
        assert entry.value == b"a"


async def test_a_lost_race_fails_only_its_own_caller(new_backend: BackendFactory) -> None:
    gc = await committer(new_backend)
    (first,) = await gc.commit(STREAM, [put("x", "1", 0)])
    outcomes = await asyncio.gather(
        gc.commit(STREAM, [put("y", "1", 0)]),
        gc.commit(STREAM, [put("x", "2", 999_999)]),  # wrong expectation
        gc.commit(STREAM, [put("z", "1", 0)]),
        gc.commit(STREAM, [put("x", "3", first)]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], list)
    assert isinstance(outcomes[1], WrongSequenceError)
    assert isinstance(outcomes[2], list)
    assert isinstance(outcomes[3], list)
    kv = (await new_backend())._kv[names.JOBS_BUCKET]
    assert (await kv.get("t.x")).value == b"3"
    assert (await kv.get("t.y")).value == b"1"


async def test_writes_to_one_key_are_never_merged_into_one_batch(
    new_backend: BackendFactory,
) -> None:
    gc = await committer(new_backend)
    (rev,) = await gc.commit(STREAM, [put("c", "0", 0)])
    # Two callers with the same (stale for the second) expectation: exactly one may win, and
    # the loser must see the winner's write rather than be batched alongside it.
    outcomes = await asyncio.gather(
        gc.commit(STREAM, [put("c", "1", rev)]),
        gc.commit(STREAM, [put("c", "2", rev)]),
        return_exceptions=True,
    )
    assert sum(isinstance(o, list) for o in outcomes) == 1
    assert sum(isinstance(o, WrongSequenceError) for o in outcomes) == 1


async def test_an_oversized_commit_is_refused_before_anything_is_written(
    new_backend: BackendFactory,
) -> None:
    gc = await committer(new_backend)
    with pytest.raises(ValueError, match="at most"):
        await gc.commit(STREAM, [put(f"o{i}", "v") for i in range(1001)])
