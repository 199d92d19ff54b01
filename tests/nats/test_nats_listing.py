"""The listing index on a real nats-server: crash points between an index entry and its
record, stale entries skipped and repaired, replicas that do not know an entry's sequence,
and pages deep enough to need several windows of the scan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import attrs
import nats.js.errors
import pytest
from nats_support import eventually

from ojs_core.backend import JobFilter
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats import index as index_module
from ojs_nats import names
from ojs_nats.backend import NatsBackend
from ojs_nats.index import birth_key_of, index_key_of

BackendFactory = Callable[[], Awaitable[NatsBackend]]
S = JobState


def nats_of(svc: JobService) -> NatsBackend:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    return backend


async def entry_keys(backend: NatsBackend, job_id: str, prefix: str = "x.*.*.*") -> list[str]:
    """The index keys stored for one job (not those whose removal marker is still there)."""
    keys = await backend.store.keys(names.JOBS_BUCKET, f"{prefix}.{job_id}")
    stream = names.kv_stream(names.JOBS_BUCKET)
    live = []
    for key in keys:
        try:
            msg = await backend.js.get_msg(stream, subject=names.kv_subject(names.JOBS_BUCKET, key))
        except nats.js.errors.NotFoundError:
            continue
        if not (msg.headers or {}).get(names.KV_OPERATION):
            live.append(key)
    return sorted(live)


async def listed(svc: JobService, **flt: object) -> tuple[list[str], int]:
    page = await svc.backend.list_jobs(JobFilter(**flt))  # type: ignore[arg-type]
    return [j.id for j in page.items], page.total


async def test_every_job_has_one_entry_through_its_lifecycle(svc: JobService) -> None:
    """Insert, claim, ack and deletion each leave exactly the entry of the current state."""
    backend = nats_of(svc)
    job = (await svc.enqueue({"type": "life.job", "args": []})).job
    assert await entry_keys(backend, job.id) == [index_key_of(job)]
    assert await entry_keys(backend, job.id, "y.*.*") == [birth_key_of(job)]
    active = (await svc.fetch(["default"], worker_id="w"))[0]

    async def only(expected: str) -> bool:
        return await entry_keys(backend, job.id) == [expected]

    await eventually(lambda: only(index_key_of(active)), what="the available entry removed")
    done = await svc.ack(job.id, None, worker_id="w")
    await eventually(lambda: only(index_key_of(done)), what="the active entry removed")
    assert await backend.delete_job(job.id)

    async def none_left() -> bool:
        return await entry_keys(backend, job.id) == []

    await eventually(none_left, what="the completed entry removed with the job")

    async def no_birth_entry() -> bool:
        return await entry_keys(backend, job.id, "y.*.*") == []

    await eventually(no_birth_entry, what="the birth entry removed with the job")


async def test_an_entry_whose_record_never_landed_is_skipped_then_removed(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash after the entry of a new state, before its record write: the job is listed in
    its stored state only; the entry goes once older than the grace period."""
    backend = nats_of(svc)
    job = (await svc.enqueue({"type": "crash.job", "args": []})).job
    rec = await backend.store.read_job(job.id)
    assert rec is not None
    never = attrs.evolve(job, state=S.COMPLETED)
    await backend.conn.commit([backend.index.entry_op(never, rec.birth)])  # then "crash"
    assert await listed(svc, state="completed") == ([], 0)
    assert await listed(svc, state="available") == ([job.id], 1)
    assert await listed(svc) == ([job.id], 1)
    # Younger than the grace period: the write it announces may still land. Kept.
    assert index_key_of(never) in await entry_keys(backend, job.id)
    monkeypatch.setattr(index_module, "GRACE", timedelta(0))
    assert await listed(svc, state="completed") == ([], 0)
    assert await entry_keys(backend, job.id) == [index_key_of(job)]


async def test_an_entry_left_behind_by_a_lost_removal_is_repaired(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash after a record write, before the old entry's removal: listings skip the old
    entry (its record is newer and in another state) and remove it."""
    backend = nats_of(svc)
    monkeypatch.setattr(backend.index, "unlink", lambda *args: None)  # removals "lost"
    old = (await svc.enqueue({"type": "left.job", "args": []})).job
    new = (await svc.enqueue({"type": "left.job", "args": []})).job
    active = (await svc.fetch(["default"], worker_id="w"))[0]
    assert active.id == old.id
    assert len(await entry_keys(backend, old.id)) == 2  # available (stale) and active
    assert await listed(svc, state="available") == ([new.id], 1)
    assert await listed(svc, state="active") == ([old.id], 1)
    assert await listed(svc) == ([new.id, old.id], 2)
    assert await entry_keys(backend, old.id) == [index_key_of(active)]
    assert await backend.delete_job(new.id)  # its entry stays ("lost" removal)
    assert await listed(svc, type="left.job") == ([old.id], 1)
    assert await listed(svc, state="available", type="left.job") == ([], 0)
    assert await entry_keys(backend, new.id) == []


async def test_a_replica_removes_an_entry_it_did_not_write(
    replicas: tuple[JobService, JobService],
) -> None:
    """The replica that moves a job another one wrote does not know the old entry's sequence:
    it reads it, and removes it only if it is older than its own write."""
    first, second = replicas
    job = (await first.enqueue({"type": "two.job", "args": []})).job
    other = nats_of(second)
    other.store.forget_all()
    active = (await second.fetch(["default"], worker_id="w"))[0]
    assert active.id == job.id

    async def moved() -> bool:
        return await entry_keys(other, job.id) == [index_key_of(active)]

    await eventually(moved, what="the available entry removed by the other replica")
    assert await listed(second, state="active") == ([job.id], 1)
    assert await listed(second, state="available") == ([], 0)

    async def seen_by_the_first() -> bool:  # its counters a few ms later (flushed in bursts)
        return await listed(first, state="active") == ([job.id], 1)

    await eventually(seen_by_the_first, what="the other replica's counters")


async def test_a_job_that_returns_to_a_state_keeps_its_entry(svc: JobService) -> None:
    """available -> active -> available (a nack with retry, promoted): the removal of the
    first available entry must not remove the second (same key, newer sequence)."""
    backend = nats_of(svc)
    job = (
        await svc.enqueue(
            {"type": "back.job", "args": [], "options": {"retry": {"max_attempts": 3}}}
        )
    ).job
    await svc.fetch(["default"], worker_id="w")
    await svc.backend.update_job(
        job.id,
        lambda j: attrs.evolve(j, state=S.AVAILABLE),
    )

    async def settled() -> bool:
        return await entry_keys(backend, job.id) == [index_key_of(attrs.evolve(job))]

    await eventually(settled, what="one available entry")
    assert await listed(svc, state="available") == ([job.id], 1)
    assert await listed(svc, state="active") == ([], 0)


@pytest.mark.deadline(120)
async def test_deep_pages_and_sparse_filters(svc: JobService) -> None:
    """Pages past several scan windows come in enqueue order; a filter that matches a few
    jobs among many finds them all."""
    jobs = []
    for start in range(0, 1500, 500):
        batch = [{"type": "deep.job", "args": [i]} for i in range(start, start + 500)]
        jobs += [o.job.id for o in await svc.enqueue_batch(batch)]
    rare = [(await svc.enqueue({"type": "rare.job", "args": [], "options": {"queue": "rq"}})).job]
    for i in range(300):
        await svc.enqueue({"type": "deep.job", "args": [i]})
    newest = list(reversed(jobs))
    for offset in (0, 450, 1200, 1450):
        ids, total = await listed(svc, type="deep.job", limit=50, offset=offset + 300)
        assert ids == newest[offset : offset + 50]
        assert total == 1800
    assert await listed(svc, type="rare.job") == ([rare[0].id], 1)
    assert await listed(svc, queue="rq", state="available") == ([rare[0].id], 1)
