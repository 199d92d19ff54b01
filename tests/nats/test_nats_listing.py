"""The listing index on a real nats-server: crash points between an index entry and its
record, stale entries skipped and repaired, a replica moving a job another one wrote,
and pages deep enough to need several windows of the scan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import attrs
import pytest
from nats_support import eventually

from ojs_core.backend import JobFilter
from ojs_core.model import Job, JobError
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats import index as index_module
from ojs_nats import names
from ojs_nats.backend import NatsBackend
from ojs_nats.jetstream import direct_get_batch

BackendFactory = Callable[[], Awaitable[NatsBackend]]
S = JobState


def nats_of(svc: JobService) -> NatsBackend:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    return backend


async def entries_of(backend: NatsBackend, job_id: str, births: bool = False) -> list[str]:
    """The subjects of the index entries (or birth entries) stored for one job."""
    msgs = await direct_get_batch(
        backend.conn.nc, names.INDEX_STREAM, {"seq": 1, "next_by_subj": ">", "batch": 10_000}
    )
    out = []
    for msg in msgs:
        subject = (msg.headers or {}).get(names.DIRECT_SUBJECT, "")
        mine = (msg.data or b"").split(b" ")[0] == job_id.encode()
        if mine and names.is_birth_subject(subject) == births:
            out.append(subject)
    return sorted(out)


def subject_of(job: Job) -> str:
    return names.state_entry_subject(job.state.value, job.queue, job.type)


async def listed(svc: JobService, **flt: object) -> tuple[list[str], int]:
    page = await svc.backend.list_jobs(JobFilter(**flt))  # type: ignore[arg-type]
    return [j.id for j in page.items], page.total


async def test_every_job_has_one_entry_through_its_lifecycle(svc: JobService) -> None:
    """Insert, claim, ack and deletion each leave exactly the entry of the current state."""
    backend = nats_of(svc)
    job = (await svc.enqueue({"type": "life.job", "args": []})).job
    assert await entries_of(backend, job.id) == [subject_of(job)]
    assert await entries_of(backend, job.id, births=True) == [
        names.birth_entry_subject(job.queue, job.type)
    ]
    active = (await svc.fetch(["default"], worker_id="w"))[0]

    async def only(expected: str) -> bool:
        return await entries_of(backend, job.id) == [expected]

    await eventually(lambda: only(subject_of(active)), what="the available entry removed")
    done = await svc.ack(job.id, None, worker_id="w")
    await eventually(lambda: only(subject_of(done)), what="the active entry removed")
    assert await backend.delete_job(job.id)

    async def none_left() -> bool:
        return await entries_of(backend, job.id) == []

    await eventually(none_left, what="the completed entry removed with the job")

    async def no_birth_entry() -> bool:
        return await entries_of(backend, job.id, births=True) == []

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
    await backend.index.add(never, rec.birth)  # then "crash" before the record write
    assert await listed(svc, state="completed") == ([], 0)
    assert await listed(svc, state="available") == ([job.id], 1)
    assert await listed(svc) == ([job.id], 1)
    # Younger than the grace period: the write it announces may still land. Kept.
    assert subject_of(never) in await entries_of(backend, job.id)
    monkeypatch.setattr(index_module, "GRACE", timedelta(0))
    assert await listed(svc, state="completed") == ([], 0)

    async def removed() -> bool:  # removals leave with the connection's next write
        return await entries_of(backend, job.id) == [subject_of(job)]

    await eventually(removed, what="the entry whose record never landed removed")


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
    assert len(await entries_of(backend, old.id)) == 2  # available (stale) and active
    assert await listed(svc, state="available") == ([new.id], 1)
    assert await listed(svc, state="active") == ([old.id], 1)
    assert await listed(svc) == ([new.id, old.id], 2)

    async def repaired() -> bool:  # removals leave with the connection's next write
        return await entries_of(backend, old.id) == [subject_of(active)]

    await eventually(repaired, what="the stale available entry removed")
    assert await backend.delete_job(new.id)  # its entries stay ("lost" removals)
    assert await listed(svc, type="left.job") == ([old.id], 1)
    assert await listed(svc, state="available", type="left.job") == ([], 0)
    # A job without a record may be an insert on its way: its entries wait out the grace.
    assert await entries_of(backend, new.id) == [subject_of(new)]
    monkeypatch.setattr(index_module, "GRACE", timedelta(0))
    assert await listed(svc, type="left.job") == ([old.id], 1)
    assert await listed(svc, state="available", type="left.job") == ([], 0)

    async def all_gone() -> bool:
        entries = await entries_of(backend, new.id)
        return entries == [] and await entries_of(backend, new.id, births=True) == []

    await eventually(all_gone, what="the deleted job's entries removed after the grace")


async def test_a_replica_removes_an_entry_it_did_not_write(
    replicas: tuple[JobService, JobService],
) -> None:
    """The replica that moves a job another one wrote learns the old entry's sequence from
    the record, and removes it."""
    first, second = replicas
    job = (await first.enqueue({"type": "two.job", "args": []})).job
    other = nats_of(second)
    other.store.forget_all()
    active = (await second.fetch(["default"], worker_id="w"))[0]
    assert active.id == job.id

    async def moved() -> bool:
        return await entries_of(other, job.id) == [subject_of(active)]

    await eventually(moved, what="the available entry removed by the other replica")
    assert await listed(second, state="active") == ([job.id], 1)
    assert await listed(second, state="available") == ([], 0)

    async def seen_by_the_first() -> bool:  # its counters a few ms later (flushed in bursts)
        return await listed(first, state="active") == ([job.id], 1)

    await eventually(seen_by_the_first, what="the other replica's counters")


async def test_a_job_that_returns_to_a_state_keeps_its_entry(svc: JobService) -> None:
    """available -> active -> available (a nack with retry, promoted): the removal of the
    first available entry must not remove the second (same subject, newer sequence)."""
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
        return await entries_of(backend, job.id) == [subject_of(job)]

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


async def test_late_entries_are_listed_in_birth_order(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries written long after their job's birth go on subjects of their age class; a listing by
    state finds them, in birth order, whether page 1 is among the other entries or not."""
    backend = nats_of(svc)
    monkeypatch.setattr(index_module, "AGES", (0, 8))
    # Windows of a few sequences, so that classes are skipped and then read.
    monkeypatch.setattr(index_module, "SCAN_BATCH", 1)
    monkeypatch.setattr(index_module, "_FIRST_WINDOW", 1)
    old = [(await svc.enqueue({"type": "late.job", "args": [i]})).job for i in range(10)]
    for _ in range(4):  # the four oldest, worked off long after their births
        (job,) = await svc.fetch(["default"], worker_id="w")
        await svc.ack(job.id, None, worker_id="w")
    done = [j.id for j in old[:4]]
    for job_id in done:
        (entry,) = [e for e in await entries_of(backend, job_id) if ".completed." in e]
        assert entry.endswith(".1")
    assert await listed(svc, state="completed") == (done[::-1], 4)  # late entries only
    assert await listed(svc, state="completed", limit=2, offset=1) == (done[2:0:-1], 4)
    fresh = (await svc.enqueue({"type": "late.job", "args": []})).job
    await svc.backend.update_job(fresh.id, lambda j: attrs.evolve(j, state=S.COMPLETED))
    (entry,) = [e for e in await entries_of(backend, fresh.id) if ".completed." in e]
    assert entry.endswith(".0")
    assert await listed(svc, state="completed", limit=1) == ([fresh.id], 5)
    assert await listed(svc, state="completed", limit=3) == ([fresh.id, *done[:1:-1]], 5)
    assert await listed(svc, state="available") == ([j.id for j in old[:3:-1]], 6)


async def test_a_dead_letter_page_reads_about_a_page(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead letter is listed from the index, the latest discarded first: a page reads
    the records of about that page, not of every dead-letter job; the total counts markers."""
    backend = nats_of(svc)
    dead = []
    for i in range(30):
        job = (
            await svc.enqueue({"type": "dlq.job", "args": [i], "retry": {"max_attempts": 1}})
        ).job
        (got,) = await svc.fetch(["default"], worker_id="w")
        await svc.nack(got.id, JobError(code="boom", message="x"), worker_id="w")
        dead.append(job.id)
    await svc.retry_dead_letter(dead[-1])  # no longer dead
    read: list[int] = []
    original = backend.store.read_jobs

    async def counting(ids: list[str]) -> list[object]:
        read.append(len(ids))
        return await original(ids)  # type: ignore[return-value]

    monkeypatch.setattr(backend.store, "read_jobs", counting)
    page = await svc.dead_letter(limit=5, offset=2)
    assert [j.id for j in page.items] == dead[-4:-9:-1]
    assert page.total == 29
    assert sum(read) <= 10, read
