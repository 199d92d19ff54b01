"""Acks written as a batch on NATS (``ojs_nats.batch_updates`` through ``ack_many``), on a real
nats-server: each item is decided as a write alone would decide it (refusals per item, a
stale cached version re-decided on the stored one, a job named twice acked once), the jobs
are stored with their results, and their lifecycle events are all published; a batch of
claims whose outcome stays unknown keeps the index entries its records may name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ojs_core import JobService
from ojs_core.backend import EventFilter
from ojs_core.errors import InvalidStateTransitionError, NotFoundError, OJSError
from ojs_core.model import Job
from ojs_core.states import JobState
from ojs_nats import names
from ojs_nats.backend import NatsBackend

BackendFactory = Callable[[], Awaitable[NatsBackend]]
UNKNOWN = "01900000-0000-7000-8000-000000000000"


async def active(svc: JobService, n: int, queue: str) -> list[str]:
    for i in range(n):
        await svc.enqueue({"type": "batch.t", "args": [i], "options": {"queue": queue}})
    jobs = await svc.fetch([queue], n, "w")
    assert len(jobs) == n
    return [j.id for j in jobs]


async def test_acks_of_a_batch_are_stored_with_their_results_and_events(
    new_backend: BackendFactory,
) -> None:
    backend = await new_backend()
    svc = JobService(backend)
    ids = await active(svc, 20, "bu1")
    alone: list[str] = []
    update = backend.writer.update

    async def counted(job_id: str, fn: Callable[[Job], Job]) -> tuple[Job, Job]:
        alone.append(job_id)
        return await update(job_id, fn)

    backend.writer.update = counted  # type: ignore[method-assign]
    outcomes = await svc.ack_many([(job_id, {"n": i}) for i, job_id in enumerate(ids)], "w")
    assert alone == []  # every ack went in the batch: claimed here, so known to this process
    assert all(isinstance(o, Job) and o.state is JobState.COMPLETED for o in outcomes)
    for i, job_id in enumerate(ids):
        stored = await svc.get(job_id)
        assert stored.state is JobState.COMPLETED
        assert stored.result == {"n": i}
    events = await svc.events(EventFilter(types=("job.completed",), limit=100))
    assert {e.subject for e in events} >= set(ids)


async def test_each_item_is_decided_as_a_write_alone(new_backend: BackendFactory) -> None:
    svc = JobService(await new_backend())
    first, second = await active(svc, 2, "bu2")
    waiting = (await svc.enqueue({"type": "batch.t", "args": [], "options": {"queue": "bu2"}})).job
    outcomes = await svc.ack_many(
        [(first, 1), (UNKNOWN, None), (waiting.id, None), (first, 2), (second, None)], "w"
    )
    assert isinstance(outcomes[0], Job)
    assert outcomes[0].result == 1
    assert isinstance(outcomes[1], NotFoundError)
    assert isinstance(outcomes[2], OJSError)
    assert isinstance(outcomes[3], InvalidStateTransitionError)  # acked once, by its first item
    assert isinstance(outcomes[4], Job)
    assert (await svc.get(waiting.id)).state is JobState.AVAILABLE
    assert (await svc.get(first)).result == 1


async def test_a_version_changed_by_another_replica_is_decided_on_the_stored_one(
    new_backend: BackendFactory,
) -> None:
    mine = JobService(await new_backend())
    other = JobService(await new_backend())
    ids = await active(mine, 3, "bu3")
    # Another replica writes the second job (a heartbeat extends its visibility): this
    # process's cached version of it is stale now, its compare-and-swap fails.
    beat = await other.heartbeat("w", [ids[1]], visibility_ms=600_000)
    assert beat.extended == [ids[1]]
    outcomes = await mine.ack_many([(job_id, "done") for job_id in ids], "w")
    assert all(isinstance(o, Job) for o in outcomes)
    for job_id in ids:
        stored = await other.get(job_id)
        assert stored.state is JobState.COMPLETED
        assert stored.result == "done"


async def test_a_claim_whose_outcome_stays_unknown_keeps_its_index_entry(
    new_backend: BackendFactory,
) -> None:
    """A claim written in a batch whose acknowledgement is lost and whose outcome cannot be
    settled (NATS unreachable to tell) may have landed: the index entry its record names must
    stay. (It was removed as if the write had been refused, and the claimed job then was
    missing from the listing of active jobs.)"""
    from ojs_core.backend import JobFilter
    from ojs_core.errors import BackendUnavailableError

    backend = await new_backend()
    svc = JobService(backend)
    job = (await svc.enqueue({"type": "batch.t", "args": [], "options": {"queue": "bu9"}})).job
    pipe = backend.conn.pipe
    publish_each = pipe.publish_each

    records = names.kv_subject(names.JOBS_BUCKET, "")

    async def acks_lost(ops: list[tuple[str, bytes, dict[str, str]]]) -> list[object]:
        outcomes: list[object] = list(await publish_each(ops))
        if all(subject.startswith(records) for subject, _, _ in ops):
            # The records are stored: only their acknowledgements are lost.
            return [TimeoutError("no acknowledgement")] * len(ops)
        return outcomes

    async def cannot_tell(*_: object) -> int | None:
        raise BackendUnavailableError("NATS is unreachable; a write's outcome is unknown")

    pipe.publish_each = acks_lost  # type: ignore[method-assign, assignment]
    backend.store.settle_unknown = cannot_tell  # type: ignore[method-assign, assignment]
    try:
        await svc.fetch(["bu9"], 1, "w")  # the careful path then finds it claimed
    except OJSError:
        pass
    finally:
        pipe.publish_each = publish_each  # type: ignore[method-assign]
    stored = await svc.get(job.id)
    assert stored.state is JobState.ACTIVE
    removing = backend.index._task  # the removals of index entries this process asked for
    if removing is not None:
        await removing
    page = await backend.list_jobs(JobFilter(state="active", queue="bu9", limit=10))
    assert [j.id for j in page.items] == [job.id]


async def test_an_ack_refused_in_the_batch_for_another_reason_is_decided_alone(
    new_backend: BackendFactory,
) -> None:
    """A record write the server refused with an API error (not a lost compare-and-swap) did
    not land: its ack is decided again alone, as a write alone would have retried it."""
    from nats.js.errors import ServiceUnavailableError

    backend = await new_backend()
    svc = JobService(backend)
    ids = await active(svc, 2, "bu10")
    pipe = backend.conn.pipe
    publish_each = pipe.publish_each
    records = names.kv_subject(names.JOBS_BUCKET, "")

    async def refused_once(ops: list[tuple[str, bytes, dict[str, str]]]) -> list[object]:
        if all(subject.startswith(records) for subject, _, _ in ops):
            pipe.publish_each = publish_each  # type: ignore[method-assign]
            return [ServiceUnavailableError(description="stream is busy")] * len(ops)
        return list(await publish_each(ops))

    pipe.publish_each = refused_once  # type: ignore[method-assign, assignment]
    outcomes = await svc.ack_many([(job_id, {"ok": True}) for job_id in ids], "w")
    assert all(isinstance(o, Job) and o.state is JobState.COMPLETED for o in outcomes), outcomes
    for job_id in ids:
        assert (await svc.get(job_id)).result == {"ok": True}
